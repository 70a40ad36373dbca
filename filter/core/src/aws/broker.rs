//! The credential broker: who fetches temporary AWS credentials and when, and what becomes of the
//! requests that arrive before any exist.
//!
//! Every worker has a [`Broker`]; all of them share one [`SharedStore`] (Envoy's shared data for the
//! wasm host). The credentials and a refresh lock live in the store, so one fetch serves every worker:
//! a worker starts a fetch only when its compare-and-swap on the lock lands, nobody retries before
//! the lock's back-off has passed, and a failure is recorded there for every worker's waiting
//! requests to report.
//!
//! The whole loop is here ([`on_tick`], [`on_reply`]): a host only implements [`Dispatcher`] (make
//! an HTTP call, reach its broker, hand decided requests to their streams) and calls the two on its
//! timer and on each call's reply.

use crate::aws::credentials::HttpCall;
use crate::aws::credentials::{
    self, CachedCredentials, FetchOutcome, FetchStep, Freshness, Provider, RefreshLock,
};
use crate::errors::ApiFormat;
use std::collections::HashMap;

/// Storage every worker sees, with versions for compare-and-swap.
pub trait SharedStore {
    /// The value under `key` and its version.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if `version` is `None` or still the current one; false if another writer won.
    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> bool;
}

/// Consecutive failed fetches after which waiting requests are answered 503 rather than kept
/// waiting: one failure (a start-up race, a lost call) is retried within a second.
pub const FAILURES_BEFORE_GIVING_UP: u32 = 2;
/// The longest a request waits for credentials.
pub const MAX_WAIT_MS: u64 = 10_000;

fn lock_key(key: &str) -> String {
    format!("{key}/lock")
}

/// Credentials under `key` that may still sign a request now.
pub fn usable_credentials(
    store: &dyn SharedStore,
    key: &str,
    now_ms: u64,
) -> Option<CachedCredentials> {
    let bytes = store.get(key).0?;
    CachedCredentials::decode(&bytes).filter(|c| c.freshness(now_ms / 1000) != Freshness::Unusable)
}

fn read_lock(store: &dyn SharedStore, key: &str) -> Option<RefreshLock> {
    store
        .get(&lock_key(key))
        .0
        .map(|bytes| RefreshLock::decode(&bytes))
}

/// Records a failed fetch: the back-off starts, and waiting requests learn the reason.
pub fn record_failure(store: &dyn SharedStore, key: &str, now_ms: u64, error: String) {
    let lock = read_lock(store, key).unwrap_or_default();
    store.set(&lock_key(key), &lock.failed(now_ms, error).encode(), None);
}

/// One call of a fetch: which credentials it is for and where the fetch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub key: String,
    pub provider: Provider,
    pub step: FetchStep,
}

/// A request waiting for credentials to be signed (the pipeline's translated request: the broker
/// only holds it).
#[derive(Debug)]
pub struct ParkedRequest<R> {
    pub key: String,
    pub region: String,
    pub upstream: R,
    pub format: ApiFormat,
    pub since_ms: u64,
}

/// What to do with a waiting request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Sign(CachedCredentials),
    /// Give up, with a reason safe to show the caller.
    Fail(String),
}

/// What a fetch's reply came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Not a call of this broker's.
    Unknown,
    /// Credentials stored for every worker, expiring at this Unix time.
    Stored {
        provider: &'static str,
        expiration_unix: u64,
    },
    /// The fetch goes on with another call (IMDS takes three).
    Next(Fetch),
    /// Recorded as a failure.
    Failed(String),
}

impl Reply {
    /// Logs what a reply meant for the credentials, the same way on every host.
    pub fn log(&self, now_ms: u64) {
        match self {
            Reply::Stored {
                provider,
                expiration_unix,
            } => {
                log::info!(
                    "ai gateway: fetched credentials from {provider} (expire in {} s)",
                    expiration_unix.saturating_sub(now_ms / 1000)
                );
            }
            Reply::Failed(error) => log::warn!("ai gateway: credential refresh failed: {error}"),
            Reply::Unknown | Reply::Next(_) => {}
        }
    }
}

/// One worker's requests waiting for credentials, and its fetches in flight.
#[derive(Debug)]
pub struct Broker<R> {
    waiting: HashMap<u64, ParkedRequest<R>>,
    /// Calls in flight, by token, with the order they went out in.
    fetches: HashMap<u64, (u64, Fetch)>,
    dispatched_count: u64,
}

/// Calls in flight at once: one per credential key at most (each holds its key's refresh lock);
/// beyond this, calls whose answer never came (Envoy dropped them with their configuration) go,
/// oldest first, rather than staying in the map for good.
const MAX_FETCHES_IN_FLIGHT: usize = 64;

impl<R> Default for Broker<R> {
    fn default() -> Self {
        Broker {
            waiting: HashMap::new(),
            fetches: HashMap::new(),
            dispatched_count: 0,
        }
    }
}

impl<R> Broker<R> {
    /// The fetches this worker should start now: credentials that are missing or due for refresh,
    /// whose refresh lock this worker has just taken.
    pub fn due_fetches(
        &self,
        store: &dyn SharedStore,
        providers: &[(String, Provider)],
        now_ms: u64,
    ) -> Vec<Fetch> {
        let mut due = Vec::new();
        for (key, provider) in providers {
            let freshness = store
                .get(key)
                .0
                .and_then(|bytes| CachedCredentials::decode(&bytes))
                .map_or(Freshness::Unusable, |c| c.freshness(now_ms / 1000));
            if freshness == Freshness::Fresh {
                continue;
            }
            let (bytes, version) = store.get(&lock_key(key));
            let lock = bytes.map(|b| RefreshLock::decode(&b)).unwrap_or_default();
            // Compare-and-swap: only the worker whose write lands starts the fetch.
            if lock.is_free(now_ms)
                && store.set(&lock_key(key), &lock.taken(now_ms).encode(), version)
            {
                due.push(Fetch {
                    key: key.clone(),
                    provider: provider.clone(),
                    step: FetchStep::Start,
                });
            }
        }
        due
    }

    /// The host dispatched `fetch`'s call; its reply will come back with `token`.
    pub fn dispatched(&mut self, token: u64, fetch: Fetch) {
        if self.fetches.len() >= MAX_FETCHES_IN_FLIGHT {
            if let Some(oldest) = self
                .fetches
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(token, _)| *token)
            {
                self.fetches.remove(&oldest);
            }
        }
        self.dispatched_count += 1;
        self.fetches.insert(token, (self.dispatched_count, fetch));
    }

    /// The reply to call `token` (status `None`: the call failed without a response).
    pub fn on_reply(
        &mut self,
        store: &dyn SharedStore,
        token: u64,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Reply {
        let Some((_, fetch)) = self.fetches.remove(&token) else {
            return Reply::Unknown;
        };
        match credentials::on_response(&fetch.provider, &fetch.step, status, body) {
            Ok(FetchOutcome::Done(fetched)) => {
                store.set(&fetch.key, &fetched.encode(), None);
                store.set(
                    &lock_key(&fetch.key),
                    &RefreshLock::succeeded().encode(),
                    None,
                );
                Reply::Stored {
                    provider: fetch.provider.name(),
                    expiration_unix: fetched.expiration_unix,
                }
            }
            Ok(FetchOutcome::Next(step)) => Reply::Next(Fetch { step, ..fetch }),
            Err(error) => {
                record_failure(store, &fetch.key, now_ms, error.clone());
                Reply::Failed(error)
            }
        }
    }

    /// Holds a request until [`Broker::take_decided`] decides about it.
    pub fn park(&mut self, stream: u64, request: ParkedRequest<R>) {
        self.waiting.insert(stream, request);
    }

    /// The waiting requests that can be signed now, or must fail; the others keep waiting.
    pub fn take_decided(
        &mut self,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Vec<(u64, ParkedRequest<R>, Verdict)> {
        let decided: Vec<(u64, Verdict)> = self
            .waiting
            .iter()
            .filter_map(
                |(stream, parked)| match usable_credentials(store, &parked.key, now_ms) {
                    Some(credentials) => Some((*stream, Verdict::Sign(credentials))),
                    None if has_failed(store, parked, now_ms) => {
                        Some((*stream, Verdict::Fail(failure_reason(store, &parked.key))))
                    }
                    None => None,
                },
            )
            .collect();
        decided
            .into_iter()
            .filter_map(|(stream, verdict)| {
                self.waiting
                    .remove(&stream)
                    .map(|parked| (stream, parked, verdict))
            })
            .collect()
    }

    /// Takes a request back out of this broker: a host whose workers share one broker moves it there.
    pub fn unpark(&mut self, stream: u64) -> Option<ParkedRequest<R>> {
        self.waiting.remove(&stream)
    }

    /// A request that ended while waiting: it must never be resumed, as hosts reuse stream ids.
    pub fn forget(&mut self, stream: u64) {
        self.waiting.remove(&stream);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// A waiting request fails once fetching its credentials has failed repeatedly, or after the wait limit.
fn has_failed<R>(store: &dyn SharedStore, parked: &ParkedRequest<R>, now_ms: u64) -> bool {
    now_ms.saturating_sub(parked.since_ms) >= MAX_WAIT_MS
        || read_lock(store, &parked.key)
            .is_some_and(|lock| lock.failures >= FAILURES_BEFORE_GIVING_UP)
}

fn failure_reason(store: &dyn SharedStore, key: &str) -> String {
    read_lock(store, key)
        .and_then(|lock| lock.last_error)
        .unwrap_or_else(|| "the credential endpoint did not answer in time".to_owned())
}

/// A waiting request with what was decided for it: the stream it belongs to, the request, the verdict.
pub type Decided<R> = (u64, ParkedRequest<R>, Verdict);

/// What the broker's loop needs from a host: its calls, and no decision.
///
/// The broker is reached through [`Dispatcher::with_broker`] for one step at a time and never held
/// while a host call runs, so a host whose calls can re-enter the module (a callout that fails
/// inline) never finds it taken.
pub trait Dispatcher<R> {
    /// Runs `step` on this worker's broker; `None` if the host cannot lend it now (it is in use).
    fn with_broker<T>(&mut self, step: impl FnOnce(&mut Broker<R>) -> T) -> Option<T>;
    /// Sends `call` with the credential fetch's timeout: the token its reply will come back
    /// with, or why it could not be sent.
    fn send(&mut self, call: &HttpCall) -> Result<u64, String>;
    /// Hands each decided request to its stream, to be signed and resumed or answered.
    fn serve(&mut self, decided: Vec<Decided<R>>);
}

/// The timer's work: start the fetches that are due (first fetch, refresh ahead of expiry, retry
/// after back-off), then serve the waiting requests that can be decided.
pub fn on_tick<R>(
    host: &mut impl Dispatcher<R>,
    store: &dyn SharedStore,
    providers: &[(String, Provider)],
    now_ms: u64,
) {
    let Some(due) = host.with_broker(|broker| broker.due_fetches(store, providers, now_ms)) else {
        return;
    };
    for fetch in due {
        dispatch(host, store, fetch, now_ms);
    }
    serve_decided(host, store, now_ms);
}

/// The reply to call `token` (status `None`: the call failed without a response): credentials
/// stored, the next call of a fetch made, or a failure recorded; then the waiting requests served.
pub fn on_reply<R>(
    host: &mut impl Dispatcher<R>,
    store: &dyn SharedStore,
    token: u64,
    status: Option<u16>,
    body: &[u8],
    now_ms: u64,
) {
    let Some(reply) =
        host.with_broker(|broker| broker.on_reply(store, token, status, body, now_ms))
    else {
        return;
    };
    reply.log(now_ms);
    match reply {
        Reply::Unknown => return,
        Reply::Next(fetch) => dispatch(host, store, fetch, now_ms),
        Reply::Stored { .. } | Reply::Failed(_) => {}
    }
    serve_decided(host, store, now_ms);
}

/// Makes one call of a fetch; a call the host cannot send counts as a failed fetch (the back-off
/// applies, and waiting requests learn why once failures repeat).
fn dispatch<R>(host: &mut impl Dispatcher<R>, store: &dyn SharedStore, fetch: Fetch, now_ms: u64) {
    let call = credentials::call_for(&fetch.provider, &fetch.step);
    match host.send(&call) {
        Ok(token) => {
            // A broker the host cannot lend leaves the call untracked: its reply is ignored and the
            // lock's timeout lets a later tick retry.
            let _ = host.with_broker(|broker| broker.dispatched(token, fetch));
        }
        Err(reason) => {
            let error = format!(
                "cannot call the {} cluster {:?} ({reason})",
                fetch.provider.name(),
                call.cluster
            );
            record_failure(store, &fetch.key, now_ms, error);
        }
    }
}

fn serve_decided<R>(host: &mut impl Dispatcher<R>, store: &dyn SharedStore, now_ms: u64) {
    let decided = host
        .with_broker(|broker| broker.take_decided(store, now_ms))
        .unwrap_or_default();
    if !decided.is_empty() {
        host.serve(decided);
    }
}

//! Fetched credentials in the native host. Every worker is a thread of one process, so the core's
//! broker is shared by all of them behind a lock, over a process-wide store: one fetch serves every
//! worker, as in the wasm host, where Envoy's shared data plays the store.
//!
//! The fetches run on the main thread, as callouts of the backend stage's configuration, so that no
//! request's end cancels them. HTTP filters have no timers: one ticker thread wakes each such
//! configuration every [`TICK`] through its scheduler, to start the fetches that are due (first
//! fetch, refresh ahead of expiry, retry after back-off) and to decide about waiting requests. A
//! waiting request parks with a scheduler of its own, which the main thread fires once the broker
//! has decided about it; the request is then signed (or answered) on its own worker.

use crate::abi::{
    self, EnvoyConfigPtr, EnvoyFilterPtr, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader,
    SchedulerPtr,
};
use crate::host::now_ms;
use bedrock_gateway_core::aws::broker::{
    self, Broker, Decided, Dispatcher, ParkedRequest, SharedStore, Verdict,
};
use bedrock_gateway_core::aws::credentials::{self, HttpCall, Provider};
use bedrock_gateway_core::gateway::UpstreamRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

/// How often the fetches and the waiting requests are looked at.
const TICK: Duration = Duration::from_millis(100);

/// A scheduler pointer, which Envoy lets any thread commit.
#[derive(Clone, Copy)]
struct Scheduler(SchedulerPtr);
// SAFETY: Envoy's schedulers may be committed from any thread; deletion happens under the lock of
// the map that holds them, so no thread commits a deleted one.
unsafe impl Send for Scheduler {}

/// Values by key, with the version each write bumps.
type VersionedValues = HashMap<String, (Vec<u8>, u32)>;

static VALUES: LazyLock<Mutex<VersionedValues>> = LazyLock::new(Mutex::default);
static BROKER: LazyLock<Mutex<Broker<UpstreamRequest>>> = LazyLock::new(Mutex::default);
/// Each waiting request's scheduler, by stream id.
static WAITING: LazyLock<Mutex<HashMap<u64, Scheduler>>> = LazyLock::new(Mutex::default);
/// Decisions made on the main thread, collected by each request on its worker.
static DECIDED: LazyLock<Mutex<HashMap<u64, Decision>>> = LazyLock::new(Mutex::default);

/// A waiting request and what the broker decided for it.
type Decision = (ParkedRequest<UpstreamRequest>, Verdict);
/// The configurations' schedulers the ticker wakes, by fetcher id.
static TICKED: LazyLock<Mutex<HashMap<u64, Scheduler>>> = LazyLock::new(Mutex::default);
static NEXT_FETCHER: AtomicU64 = AtomicU64::new(1);
static TICKER: Once = Once::new();

/// A panic elsewhere must not wedge the credentials: a poisoned lock's data is still consistent,
/// as every critical section here is a single map operation.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The broker's store: the process's memory, with versions for its compare-and-swap.
pub struct ProcessStore;

impl SharedStore for ProcessStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        lock(&VALUES)
            .get(key)
            .map_or((None, None), |(value, version)| {
                (Some(value.clone()), Some(*version))
            })
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> bool {
        let mut values = lock(&VALUES);
        let current = values.get(key).map(|(_, v)| *v);
        if version.is_some() && version != current {
            return false;
        }
        values.insert(
            key.to_owned(),
            (value.to_vec(), current.map_or(1, |v| v.wrapping_add(1))),
        );
        true
    }
}

/// Holds a request until its credentials arrive (or cannot); `filter` is its stream on this worker.
pub fn park(stream: u64, filter: EnvoyFilterPtr, parked: ParkedRequest<UpstreamRequest>) {
    // SAFETY: called from one of the stream's hooks, with its valid filter pointer.
    let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
    lock(&WAITING).insert(stream, Scheduler(scheduler));
    lock(&BROKER).park(stream, parked);
}

/// The decision the main thread made for a waiting request, taken once.
pub fn take_decision(stream: u64) -> Option<Decision> {
    lock(&DECIDED).remove(&stream)
}

/// A stream that waited has ended or been decided: nothing may resume it any more.
pub fn forget(stream: u64) {
    lock(&BROKER).forget(stream);
    // Out of WAITING first: `MainThread::serve` files a decision only for a stream still waiting (under
    // WAITING's lock), so none can be filed after the DECIDED entry goes.
    if let Some(scheduler) = lock(&WAITING).remove(&stream) {
        // SAFETY: created by `park` and removed from the map under its lock: deleted once, never committed after.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler.0) };
    }
    lock(&DECIDED).remove(&stream);
}

/// The main thread's side of one backend-stage configuration that uses fetched credentials.
pub struct Fetcher {
    id: u64,
    config: EnvoyConfigPtr,
    scheduler: Scheduler,
    providers: Vec<(String, Provider)>,
}

impl Fetcher {
    /// Called on the main thread when the configuration loads.
    pub fn start(config: EnvoyConfigPtr, providers: Vec<(String, Provider)>) -> Fetcher {
        // SAFETY: the configuration pointer Envoy passed to the configuration hook.
        let scheduler = Scheduler(unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config)
        });
        let id = NEXT_FETCHER.fetch_add(1, Ordering::Relaxed);
        lock(&TICKED).insert(id, scheduler);
        TICKER.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("ai-gateway-credentials".into())
                .spawn(|| loop {
                    std::thread::sleep(TICK);
                    for scheduler in lock(&TICKED).values() {
                        // SAFETY: live schedulers (they leave the map before they are deleted).
                        unsafe {
                            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                                scheduler.0,
                                0,
                            )
                        };
                    }
                });
            if let Err(error) = spawned {
                log::error!("ai gateway: cannot start the credential ticker: {error}");
            }
        });
        Fetcher {
            id,
            config,
            scheduler,
            providers,
        }
    }

    /// The ticker's event, on the main thread: start due fetches, decide about waiting requests.
    pub fn on_tick(&self) {
        broker::on_tick(
            &mut MainThread(self),
            &ProcessStore,
            &self.providers,
            now_ms(),
        );
    }

    /// A fetch's reply, on the main thread.
    pub fn on_callout_done(
        &self,
        callout_id: u64,
        succeeded: bool,
        headers: &[EnvoyHttpHeader],
        body: &[u8],
    ) {
        let status = succeeded
            .then(|| {
                // SAFETY: Envoy's header buffers, valid for the hook that handed them over.
                headers
                    .iter()
                    .find(|h| unsafe { h.key.as_slice() } == b":status")
                    .and_then(|h| {
                        std::str::from_utf8(unsafe { h.value.as_slice() })
                            .ok()?
                            .parse()
                            .ok()
                    })
            })
            .flatten();
        let token = self.token(callout_id);
        broker::on_reply(
            &mut MainThread(self),
            &ProcessStore,
            token,
            status,
            body,
            now_ms(),
        );
    }

    /// Callouts of different configurations may share ids: the broker sees them tagged with ours.
    fn token(&self, callout_id: u64) -> u64 {
        (self.id << 40) ^ callout_id
    }
}

/// The broker's host calls, made on the main thread for one configuration.
struct MainThread<'a>(&'a Fetcher);

impl Dispatcher<UpstreamRequest> for MainThread<'_> {
    fn with_broker<T>(
        &mut self,
        step: impl FnOnce(&mut Broker<UpstreamRequest>) -> T,
    ) -> Option<T> {
        Some(step(&mut lock(&BROKER)))
    }

    fn send(&mut self, call: &HttpCall) -> Result<u64, String> {
        let headers: Vec<ModuleHttpHeader> = call
            .headers
            .iter()
            .map(|(name, value)| ModuleHttpHeader {
                key: ModuleBuffer::of(name.as_bytes()),
                value: ModuleBuffer::of(value.as_bytes()),
            })
            .collect();
        let body = call
            .body
            .as_deref()
            .map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        let mut callout_id = 0u64;
        // SAFETY: the configuration pointer is alive while its fetcher is; every buffer outlives the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0.config,
                &mut callout_id,
                ModuleBuffer::of(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                body,
                credentials::FETCH_TIMEOUT_MS,
            )
        };
        if result == abi::CALLOUT_INIT_SUCCESS {
            Ok(self.0.token(callout_id))
        } else {
            Err(format!("callout result {result}"))
        }
    }

    /// Files each decision for its stream's worker and wakes the stream there.
    fn serve(&mut self, decided: Vec<Decided<UpstreamRequest>>) {
        let waiting = lock(&WAITING);
        let mut decisions = lock(&DECIDED);
        for (stream, parked, verdict) in decided {
            // A stream that ended meanwhile was forgotten: its decision would stay here for good.
            if let Some(scheduler) = waiting.get(&stream) {
                decisions.insert(stream, (parked, verdict));
                // SAFETY: a live scheduler (it leaves the map before it is deleted); any thread may commit.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(
                        scheduler.0,
                        stream,
                    )
                };
            }
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        if lock(&TICKED).remove(&self.id).is_some() {
            // SAFETY: out of the ticker's map under its lock, so never committed again; deleted once.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                    self.scheduler.0,
                )
            };
        }
    }
}

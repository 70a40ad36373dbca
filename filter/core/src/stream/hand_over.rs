//! What the two stages of one request hand each other on their worker.
//!
//! The routing stage (downstream) and the backend stage (upstream) of a request are different
//! filters with no shared state, but Envoy runs both on the worker thread of the downstream
//! request. So each worker keeps one [`HandOver`], which the host lends through
//! [`super::Host::hand_over`] (the threading is the host's to know), keyed by the stream key the
//! routing stage writes ([`super::STREAM_KEY_HEADER`]):
//! - the caller's request as the first try received it: Envoy hands a failover's later tries the
//!   request as the previous try's upstream filters left it (the Bedrock path, the translated and
//!   signed body, the routing header gone), so each later try translates the kept copy again for
//!   its own backend;
//! - the usage summary the backend stage computed, which the routing stage publishes where access
//!   logs read it (they read the downstream filter's state).
//!
//! The routing stage takes both when the response ends; the maps are bounded in case a stream
//! ends without that.

use crate::report::UsageSummary;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// The caller's request as the first try received it.
#[derive(Debug)]
pub struct CallerRequest {
    pub method: String,
    pub path: String,
    /// The routing header's value: the model the caller asked for.
    pub model: String,
    pub anthropic_beta: Option<String>,
    pub body: Vec<u8>,
}

/// Requests in flight on one worker far exceed what fails over at once; beyond this the oldest go.
const KEPT_FIRST_TRIES: usize = 256;
/// Summaries of streams cut before the routing stage saw their end are never collected.
const MAX_PENDING_SUMMARIES: usize = 4096;

/// One worker's hand-over state. Each method borrows its map only for itself and calls nothing
/// else, so a borrow can never be refused in practice; if one were, the hand-over is skipped.
#[derive(Debug, Default)]
pub struct HandOver {
    first_tries: RefCell<VecDeque<(String, Rc<CallerRequest>)>>,
    summaries: RefCell<HashMap<String, UsageSummary>>,
    /// How many summaries have been left on this worker: a stage watching for its own looks it up
    /// only when this moved, not on every chunk of a stream.
    summaries_left: Cell<u64>,
}

impl HandOver {
    /// Keeps the first try's request for the retries; the caller goes on with the kept copy.
    pub fn keep_first_try(&self, key: &str, request: CallerRequest) -> Rc<CallerRequest> {
        let request = Rc::new(request);
        if let Ok(mut tries) = self.first_tries.try_borrow_mut() {
            tries.retain(|(id, _)| id != key);
            if tries.len() >= KEPT_FIRST_TRIES {
                tries.pop_front();
            }
            tries.push_back((key.to_owned(), Rc::clone(&request)));
        }
        request
    }

    /// The request the first try under `key` kept.
    pub fn first_try(&self, key: &str) -> Option<Rc<CallerRequest>> {
        self.first_tries
            .try_borrow()
            .ok()?
            .iter()
            .find(|(id, _)| id == key)
            .map(|(_, request)| Rc::clone(request))
    }

    /// Leaves the backend stage's usage summary for the routing stage of the request under `key`.
    pub fn leave_summary(&self, key: String, summary: UsageSummary) {
        if let Ok(mut summaries) = self.summaries.try_borrow_mut() {
            if summaries.len() >= MAX_PENDING_SUMMARIES {
                summaries.clear();
            }
            summaries.insert(key, summary);
            self.summaries_left
                .set(self.summaries_left.get().wrapping_add(1));
        }
    }

    /// How many summaries have been left on this worker so far (see `summaries_left`).
    pub fn summaries_left(&self) -> u64 {
        self.summaries_left.get()
    }

    /// The summary left under `key`, taken (once).
    pub fn take_summary(&self, key: &str) -> Option<UsageSummary> {
        self.summaries.try_borrow_mut().ok()?.remove(key)
    }

    /// The request under `key` has ended: its first try is dropped, its summary taken (once).
    pub fn finish(&self, key: &str) -> Option<UsageSummary> {
        if let Ok(mut tries) = self.first_tries.try_borrow_mut() {
            tries.retain(|(id, _)| id != key);
        }
        self.take_summary(key)
    }

    /// Entries held, for tests of the bounds.
    pub fn held(&self) -> (usize, usize) {
        (
            self.first_tries.try_borrow().map_or(0, |t| t.len()),
            self.summaries.try_borrow().map_or(0, |s| s.len()),
        )
    }
}

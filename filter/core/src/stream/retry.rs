//! The tries after the first through a failover (composite) cluster.
//!
//! Envoy hands a retry the request as the previous try's upstream filters left it: the Bedrock
//! path, the translated and signed body, the routing header gone. So the first try leaves what the
//! caller sent here, and each later try translates that again for its own backend. Upstream
//! filters run on the worker thread of their downstream request, so a thread-local map keyed by
//! Envoy's `x-request-id` is enough; the routing stage forgets the entry when the response ends,
//! and the map keeps at most [`KEPT`] entries in case a stream ends without one.

use std::cell::RefCell;
use std::collections::VecDeque;
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
const KEPT: usize = 256;

thread_local! {
    static FIRST_TRIES: RefCell<VecDeque<(String, Rc<CallerRequest>)>> = const { RefCell::new(VecDeque::new()) };
}

/// Keeps the first try's request for the retries; the caller goes on with the kept copy.
pub fn keep(request_id: &str, request: CallerRequest) -> Rc<CallerRequest> {
    let request = Rc::new(request);
    FIRST_TRIES.with(|tries| {
        let mut tries = tries.borrow_mut();
        tries.retain(|(id, _)| id != request_id);
        if tries.len() >= KEPT {
            tries.pop_front();
        }
        tries.push_back((request_id.to_owned(), Rc::clone(&request)));
    });
    request
}

pub fn get(request_id: &str) -> Option<Rc<CallerRequest>> {
    FIRST_TRIES.with(|tries| {
        tries
            .borrow()
            .iter()
            .find(|(id, _)| id == request_id)
            .map(|(_, request)| Rc::clone(request))
    })
}

pub fn forget(request_id: &str) {
    FIRST_TRIES.with(|tries| tries.borrow_mut().retain(|(id, _)| id != request_id));
}

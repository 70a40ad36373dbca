//! Titan Text Embeddings and Nova Multimodal Embeddings embed one text per InvokeModel, while
//! OpenAI's callers send lists.
//!
//! For a list, the backend stage does not send its own request: it makes one call per input,
//! each signed (or carrying the API key) for the backend like any request, through the backend's
//! *calls cluster*, the twin of its cluster without the gateway's filter (a call through the
//! backend's own cluster would run this stage again, re-entering it while it dispatches). At most
//! [`CONCURRENCY`] calls are in flight; the answers are put back together in input order, and
//! the first failure answers the caller on its own: never a partial list.

use super::Host;
use crate::api::embeddings;
use crate::aws::credentials::HttpCall;
use crate::errors::{ErrorKind, GatewayError};
use crate::headers::HeaderSnapshot;
use crate::translated::TranslatedBody;
use std::borrow::Cow;

/// Calls in flight per batch: enough to hide Bedrock's latency, few enough not to meet its
/// per-account request rate with one caller's list.
pub const CONCURRENCY: usize = 8;
/// How long one input may take.
pub const PART_TIMEOUT_MS: u64 = 60_000;

/// How one call ended.
pub struct PartAnswer<'a> {
    /// `None` when the call got no response (reset, timeout, no healthy upstream).
    pub status: Option<u16>,
    /// `x-amzn-errortype`: only Bedrock's own errors carry it.
    pub error_type: Option<Cow<'a, str>>,
    /// `x-amzn-bedrock-input-token-count`: Nova's only token count.
    pub input_tokens: Option<u64>,
    pub body: &'a [u8],
}

impl<'a> PartAnswer<'a> {
    /// A call's answer as the host received it: its response headers (none when it got no
    /// response) and body.
    pub fn read(headers: &'a HeaderSnapshot, body: &'a [u8]) -> PartAnswer<'a> {
        PartAnswer {
            status: headers.get(":status").and_then(|s| s.parse().ok()),
            error_type: headers.get("x-amzn-errortype"),
            input_tokens: headers
                .get("x-amzn-bedrock-input-token-count")
                .and_then(|n| n.parse().ok()),
            body,
        }
    }
}

pub enum Progress {
    /// More answers are due.
    Waiting,
    /// The caller's answer: the whole list, or the first failure.
    Done(Result<TranslatedBody, GatewayError>),
}

pub struct EmbeddingsBatch {
    /// Each input's call, signed; taken when it is sent.
    calls: Vec<Option<HttpCall>>,
    next: usize,
    /// (call token, input index)
    in_flight: Vec<(u64, usize)>,
    answers: Vec<Option<(Vec<u8>, Option<u64>)>>,
    family: embeddings::Family,
    model: String,
    base64: bool,
}

impl EmbeddingsBatch {
    /// A batch of ready calls, one per input in input order, answered as `model`.
    pub fn new(
        calls: Vec<HttpCall>,
        family: embeddings::Family,
        model: String,
        base64: bool,
    ) -> Self {
        let answers = vec![None; calls.len()];
        Self {
            calls: calls.into_iter().map(Some).collect(),
            next: 0,
            in_flight: Vec::new(),
            answers,
            family,
            model,
            base64,
        }
    }

    /// Sends calls until [`CONCURRENCY`] are in flight or none are left to send.
    pub fn dispatch(&mut self, host: &mut impl Host) -> Result<(), GatewayError> {
        while self.in_flight.len() < CONCURRENCY {
            let index = self.next;
            let Some(call) = self.calls.get_mut(index).and_then(Option::take) else {
                break;
            };
            let Some(token) = host.dispatch_call(&call, PART_TIMEOUT_MS) else {
                return Err(GatewayError::new(
                    503,
                    ErrorKind::Unavailable,
                    format!(
                        "The gateway could not call Bedrock for input {index} of {}.",
                        self.answers.len()
                    ),
                ));
            };
            self.in_flight.push((token, index));
            self.next += 1;
        }
        Ok(())
    }

    /// Takes one call's answer; sends the next call, or says the batch is over.
    pub fn on_answer(
        &mut self,
        host: &mut impl Host,
        token: u64,
        answer: &PartAnswer<'_>,
    ) -> Progress {
        let Some(position) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return Progress::Waiting;
        };
        let (_, index) = self.in_flight.swap_remove(position);
        let total = self.answers.len();
        match answer.status {
            Some(200) => {
                if let Some(slot) = self.answers.get_mut(index) {
                    *slot = Some((answer.body.to_vec(), answer.input_tokens));
                }
            }
            Some(status) => return Progress::Done(Err(part_error(status, answer, index, total))),
            None => {
                let error = GatewayError::upstream(format!(
                    "Bedrock did not answer input {index} of {total} (connection reset, timeout or no healthy upstream)."
                ));
                return Progress::Done(Err(error));
            }
        }
        if let Err(error) = self.dispatch(host) {
            return Progress::Done(Err(error));
        }
        if !self.in_flight.is_empty() || self.next < self.answers.len() {
            return Progress::Waiting;
        }
        let parts: Vec<(Vec<u8>, Option<u64>)> =
            self.answers.iter_mut().filter_map(Option::take).collect();
        if parts.len() != total {
            return Progress::Done(Err(GatewayError::upstream(
                "An input of the batch got no embedding.",
            )));
        }
        Progress::Done(embeddings::batch_response(
            &parts,
            self.family,
            &self.model,
            self.base64,
        ))
    }
}

/// One input's failure, as the caller's one error: Bedrock's own (which carries its error type)
/// mapped as for any request, or the gateway's refusal of that call (no credentials, say).
fn part_error(status: u16, answer: &PartAnswer<'_>, index: usize, total: usize) -> GatewayError {
    let message = crate::bedrock::error_message(answer.body);
    let mut error = match answer.error_type.as_deref() {
        Some(error_type) => GatewayError::from_bedrock(
            status,
            Some(crate::bedrock::error_type_name(error_type)),
            &message,
        ),
        None => GatewayError::for_status(status, message),
    };
    error.message = format!("Input {index} of {total}: {}", error.message);
    error
}

//! What the gateway does with each request and response, over a small [`Host`] interface.
//!
//! Two stages, two filters in Envoy (see the README's architecture section):
//! - [`routing::RoutingStream`], downstream: reads the body's `model` into `x-ai-eg-model` so Envoy's
//!   routes pick the backend's cluster, and answers Envoy's own replies in the caller's API format;
//! - [`backend::BackendStream`], upstream on each Bedrock cluster: translates, signs (or parks the
//!   request until credentials arrive) and translates the response back, chunk by chunk when streamed;
//! - [`sts::StsStream`], upstream of STS: moves the IRSA token Envoy injected into the form body.
//!
//! [`batch`] is the backend stage's fan-out of a Titan embeddings list into one call per input.
//!
//! Each host (proxy-wasm, dynamic module) turns its callbacks into these calls and implements
//! [`Host`] over its own API; everything that decides anything lives here and is tested with a fake
//! host (`tests/stream.rs`).

pub mod backend;
pub mod batch;
pub mod hand_over;
pub mod routing;
pub mod sts;

use crate::aws::credentials::HttpCall;
use crate::errors::{ApiFormat, ErrorKind, GatewayError};
use crate::gateway;
use crate::headers::HeaderSnapshot;
use crate::report::{MetricLabels, Sample, UsageSummary};
use hand_over::HandOver;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The three stages one build serves; the host learns which from its configuration's name (the
/// wasm `root_id`, the dynamic module's `filter_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Routing,
    Backend,
    Sts,
}

impl Stage {
    pub const ROUTING_NAME: &'static str = "ai_gateway";
    pub const BACKEND_NAME: &'static str = "ai_gateway_backend";
    pub const STS_NAME: &'static str = "ai_gateway_sts";

    /// The stage a configuration names; `None` for any other name, which a host refuses to load
    /// rather than guess.
    pub fn from_name(name: &[u8]) -> Option<Stage> {
        [
            (Self::ROUTING_NAME, Stage::Routing),
            (Self::BACKEND_NAME, Stage::Backend),
            (Self::STS_NAME, Stage::Sts),
        ]
        .into_iter()
        .find(|(known, _)| known.as_bytes() == name)
        .map(|(_, stage)| stage)
    }
}

/// What the host does after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Pass the headers or data on.
    Continue,
    /// Hold them: headers until the body has been read, body data until its end (the host buffers
    /// it), a request until its credentials arrive, or for good after a local reply.
    Pause,
}

/// Which direction's headers or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What counting a request needs from the proxy: a clock, metrics and the stages' hand-over. None
/// of it touches the stream, so it serves after Envoy is done with the stream too.
pub trait Recorder {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// Adds to a counter or records a histogram value for a request's labels.
    fn record_metric(&mut self, labels: &MetricLabels, sample: Sample);
    /// This worker's [`HandOver`]: one per thread that runs both stages of a request (Envoy runs
    /// a request's downstream and upstream filters on its worker thread).
    fn hand_over(&self) -> Rc<HandOver>;
}

/// What the stages need from the proxy, for the stream a hook was called for.
pub trait Host: Recorder {
    /// All headers of one side, read at once.
    fn headers(&self, side: Side) -> HeaderSnapshot;
    /// One header; bytes that are not UTF-8 are decoded lossily.
    fn header(&self, side: Side, name: &str) -> Option<String>;
    /// Sets a header, or removes it (`None`); an error if the host did not.
    fn set_header(
        &mut self,
        side: Side,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostCallFailed>;
    /// The body this hook was called for: all of it once a paused body has ended, else this chunk.
    fn body(&mut self, side: Side) -> Vec<u8>;
    /// Replaces what [`Host::body`] returned; an error if the host did not.
    fn replace_body(&mut self, side: Side, value: &[u8]) -> Result<(), HostCallFailed>;
    /// Answers the caller with a JSON body instead of proxying.
    fn send_json(&mut self, status: u16, body: &[u8]);
    /// Makes Envoy pick the route again from the request headers as they are now.
    fn clear_route_cache(&mut self);
    /// The upstream cluster's name (upstream filters only).
    fn cluster_name(&self) -> Option<String>;
    /// Why Envoy answered a request itself (`response.code_details`).
    fn response_code_details(&self) -> Option<String>;
    /// Leaves a request's usage where access logs and rate limits read it.
    fn record_usage(&mut self, summary: &UsageSummary);
    /// Sends an HTTP request through an Envoy cluster for this stream; the answer comes back to
    /// the stream's `on_call_answer` with the returned token. `None`: Envoy refused to send it.
    fn dispatch_call(&mut self, call: &HttpCall, timeout_ms: u64) -> Option<u64>;
}

/// A host call that did not take effect, with what it was (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCallFailed(pub String);

/// The request could not be rewritten as the gateway means to send it (translated, signed,
/// without the caller's credentials): it is refused, never sent as it stands.
pub fn request_not_rewritten(failed: &HostCallFailed) -> GatewayError {
    log::error!("ai gateway: {}; the request is refused", failed.0);
    GatewayError::new(
        500,
        ErrorKind::Internal,
        "The gateway could not rewrite the request for its backend; it was not sent.",
    )
}

/// A response edit the host refused: the response has begun, so it goes on as the host holds it,
/// and the failure is logged here, once for every kind of response edit.
pub(crate) fn log_response_edit(result: Result<(), HostCallFailed>) {
    if let Err(failed) = result {
        log::error!(
            "ai gateway: {}; the response goes on without this edit",
            failed.0
        );
    }
}

/// Answers the caller in its API's error format; the stream then holds.
pub fn reply_with_error(host: &mut impl Host, error: &GatewayError, format: ApiFormat) -> Flow {
    send_json(host, error.status, &error.to_json(format))
}

/// The answer when a hook cannot have the worker's state (its signer, its broker) because another
/// hook holds it. Hooks do not nest, so this should never be sent; if it is, the caller is told to
/// retry rather than the host panicking or passing the request on unsigned.
pub fn reply_busy(host: &mut impl Host) -> Flow {
    let error = GatewayError::new(
        503,
        ErrorKind::Unavailable,
        "The gateway is busy; retry the request.",
    );
    let path = host.header(Side::Request, ":path").unwrap_or_default();
    reply_with_error(host, &error, format_for_path(&path))
}

fn send_json(host: &mut impl Host, status: u16, body: &[u8]) -> Flow {
    host.send_json(status, body);
    Flow::Pause
}

/// The header in which the routing stage tells the backend stage which request it serves: the key of
/// the per-worker state handed between them (the failover's first try, the usage summary). The
/// routing stage always writes it, replacing any copy a caller sent, so a caller cannot point its
/// request at another's state as it could with its own `x-request-id`; the backend stage removes it
/// before AWS.
pub const STREAM_KEY_HEADER: &str = "x-ai-eg-stream-key";

/// A key no other request on this worker holds: a counter, never reused within the process (or
/// the wasm VM), whose state is the only place the key is looked up.
pub(crate) fn new_stream_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Request trailers would reach a stage after the body it acts on has been passed on (neither
/// stage sees an end of stream): a request carrying them is refused rather than forwarded as the
/// caller sent it, untranslated and unsigned.
pub fn trailers_refused() -> GatewayError {
    GatewayError::invalid_request(
        "Request trailers are not accepted: send the request without trailers.",
    )
}

/// Errors for paths the gateway does not serve take the format their prefix suggests.
pub fn format_for_path(path: &str) -> ApiFormat {
    if path.starts_with("/anthropic/") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

/// Callers' own credentials must never reach AWS: the headers they always travel in, and the
/// ones the configuration names as carrying callers' keys (`key_headers`).
pub(crate) fn strip_caller_credentials(
    host: &mut impl Host,
    headers: &HeaderSnapshot,
    key_headers: &[String],
) -> Result<(), HostCallFailed> {
    for (name, _) in headers.iter() {
        let configured = key_headers
            .iter()
            .any(|key| name.eq_ignore_ascii_case(key.as_bytes()));
        if configured || gateway::is_caller_credential_header(name) {
            host.set_header(
                Side::Request,
                &String::from_utf8_lossy(name).to_ascii_lowercase(),
                None,
            )?;
        }
    }
    Ok(())
}

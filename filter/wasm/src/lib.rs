//! The proxy-wasm host: the adapter between Envoy's proxy-wasm ABI and the gateway's core
//! (`bedrock_gateway_core::stream`). One module, three stages, chosen by the plugin's `root_id`:
//! `ai_gateway` (downstream, the routing stage), `ai_gateway_backend` (upstream of each Bedrock
//! cluster, the backend stage) and `ai_gateway_sts` (upstream of STS). Each hook hands the core a
//! [`WasmHost`] for its stream; the root context keeps the worker's state (signer, credential broker,
//! metric ids), makes the broker's HTTP calls on its timer and resumes the requests it decides about.
//!
//! Host calls go through `calls`, straight over the ABI: the SDK's trait helpers `unwrap()` host
//! errors and its `hostcalls` panic on statuses they do not expect, and a panic would kill this
//! worker's VM. Only the HTTP calls go through `hostcalls`, which files them with the SDK's
//! dispatcher for their replies. Built for `wasm32-wasip1`;
//! natively this crate is empty, except in its unit tests, which run it against a fake host.

#![cfg(any(target_arch = "wasm32", test))]

mod calls;
#[cfg(test)]
mod fake_host;
#[cfg(test)]
mod tests;

use bedrock_gateway_core::aws::broker::{self, Broker, Decided, Dispatcher, SharedStore};
use bedrock_gateway_core::aws::credentials::{self, HttpCall, Provider};
use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::gateway::UpstreamRequest;
use bedrock_gateway_core::headers::HeaderSnapshot;
use bedrock_gateway_core::report::{
    Kind, MetricLabels, Sample, SpanAttributes, SpanValue, UsageSummary,
};
use bedrock_gateway_core::stream::backend::{self, BackendStream, Settled, Worker};
use bedrock_gateway_core::stream::batch::PartAnswer;
use bedrock_gateway_core::stream::hand_over::HandOver;
use bedrock_gateway_core::stream::routing::RoutingStream;
use bedrock_gateway_core::stream::sts::StsStream;
use bedrock_gateway_core::stream::{reply_busy, Flow, Host, HostCallFailed, Recorder, Side, Stage};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How often each worker checks the shared credentials and its waiting requests.
const CREDENTIAL_TICK: Duration = Duration::from_millis(100);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(GatewayRoot { context_id, ..GatewayRoot::default() })
    });
}}

#[derive(Default)]
struct GatewayRoot {
    context_id: u32,
    config: Option<Arc<Config>>,
    /// `None` until a configuration names a known stage.
    stage: Option<Stage>,
    worker: Rc<RefCell<Worker>>,
    /// The fetched-credential providers of the configuration, with their shared-data keys.
    providers: Vec<(String, Provider)>,
}

impl Context for GatewayRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status =
            header_value(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok());
        let body =
            calls::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default();
        broker::on_reply(
            &mut self.dispatcher(),
            &EnvoySharedData,
            u64::from(token_id),
            status,
            &body,
            now_millis(),
        );
    }
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let root_id = calls::property(&["plugin_root_id"]).unwrap_or_default();
        let Some(stage) = Stage::from_name(&root_id) else {
            log::error!(
                "ai gateway: unknown root_id {:?}",
                String::from_utf8_lossy(&root_id)
            );
            return false;
        };
        self.stage = Some(stage);
        let bytes = match calls::buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Some(bytes) => bytes,
            None => {
                log::error!("ai gateway: the plugin configuration is missing");
                return false;
            }
        };
        match Config::parse(&bytes, &|key| std::env::var(key).ok()) {
            Ok(config) => {
                if stage == Stage::Backend {
                    self.providers = config.fetched_providers();
                    if !self.providers.is_empty() {
                        // Credentials are fetched before the first request needs them, and refreshed
                        // ahead of expiry; the tick also serves requests that wait for them.
                        if let Err(status) = calls::set_tick_period(CREDENTIAL_TICK) {
                            log::error!(
                                "ai gateway: cannot start the credential timer: {status:?}"
                            );
                            return false;
                        }
                    }
                }
                self.config = Some(Arc::new(config));
                true
            }
            Err(error) => {
                log::error!("ai gateway: {error}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        broker::on_tick(
            &mut self.dispatcher(),
            &EnvoySharedData,
            &self.providers,
            now_millis(),
        );
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone();
        match self.stage? {
            Stage::Backend => Some(Box::new(BackendFilter {
                stream: BackendStream::new(u64::from(context_id), config),
                worker: Rc::clone(&self.worker),
            })),
            Stage::Sts => Some(Box::new(StsFilter(StsStream::default()))),
            Stage::Routing => Some(Box::new(RoutingFilter(RoutingStream::new(config)))),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---- Credentials shared by the workers --------------------------------------------------

/// Envoy's shared data, which every worker's VM sees: the broker's store.
struct EnvoySharedData;

impl SharedStore for EnvoySharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        calls::shared_data(key)
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> bool {
        match calls::set_shared_data(key, value, version) {
            Ok(()) => true,
            Err(Status::CasMismatch) => false,
            Err(status) => {
                log::error!("ai gateway: cannot write shared data {key}: {status:?}");
                false
            }
        }
    }
}

fn now_millis() -> u64 {
    calls::now_millis()
}

impl GatewayRoot {
    fn dispatcher(&self) -> RootDispatcher<'_> {
        RootDispatcher {
            root_context_id: self.context_id,
            worker: &self.worker,
        }
    }
}

/// The broker's host calls, made from the backend stage's root context on this worker.
struct RootDispatcher<'a> {
    root_context_id: u32,
    worker: &'a RefCell<Worker>,
}

impl Dispatcher<UpstreamRequest> for RootDispatcher<'_> {
    fn with_broker<T>(
        &mut self,
        step: impl FnOnce(&mut Broker<UpstreamRequest>) -> T,
    ) -> Option<T> {
        let mut worker = self.worker.try_borrow_mut().ok()?;
        Some(step(&mut worker.broker))
    }

    fn send(&mut self, call: &HttpCall) -> Result<u64, String> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let timeout = Duration::from_millis(credentials::FETCH_TIMEOUT_MS);
        // Calls must be attributed to the root context, whichever stream was active last.
        let _ = calls::set_effective_context(self.root_context_id);
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            timeout,
        )
        .map(u64::from)
        .map_err(|status| format!("{status:?}"))
    }

    /// Signs (or answers) each decided request on its stream, then resumes those signed, with the
    /// worker no longer borrowed: resuming runs Envoy's filter chain, which may call into this VM.
    fn serve(&mut self, decided: Vec<Decided<UpstreamRequest>>) {
        let mut resumable = Vec::new();
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            for (stream, parked, verdict) in decided {
                // The stream may be gone (client disconnected): then there is nothing to resume.
                let Ok(context_id) = u32::try_from(stream) else {
                    continue;
                };
                if calls::set_effective_context(context_id).is_err() {
                    continue;
                }
                let settled =
                    backend::settle(&mut WasmHost::new(0), &parked, &verdict, &mut worker.signer);
                if settled == Settled::Resume {
                    resumable.push(context_id);
                }
            }
        }
        for context_id in resumable {
            if calls::set_effective_context(context_id).is_ok() {
                if let Err(status) = calls::resume_request() {
                    log::warn!("ai gateway: cannot resume a request: {status:?}");
                }
            }
        }
        let _ = calls::set_effective_context(self.root_context_id);
    }
}

// ---- The stages' streams: each hook hands the core a host for this stream ----------------

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

struct RoutingFilter(RoutingStream);

impl Context for RoutingFilter {}

impl HttpContext for RoutingFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)]
        if request_header("x-ai-eg-test-panic").is_some() {
            panic!("fault injected by x-ai-eg-test-panic");
        }
        action(
            self.0
                .on_request_headers(&mut WasmHost::new(0), end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.0
                .on_request_body(&mut WasmHost::new(body_size), end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.0.on_request_trailers(&mut WasmHost::new(0)))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(&mut WasmHost::new(0)))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.0
                .on_response_body(&mut WasmHost::new(body_size), end_of_stream),
        )
    }
}

struct BackendFilter {
    stream: BackendStream,
    worker: Rc<RefCell<Worker>>,
}

impl Context for BackendFilter {
    /// Envoy is done with the stream (proxy-wasm's `on_done`, as the filter is destroyed; an
    /// upstream filter whose stream was cut gets no other hook).
    fn on_done(&mut self) -> bool {
        self.stream.on_stream_complete(&mut WasmHost::new(0));
        true
    }

    /// One input of this stream's embeddings batch came back.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // A call that got no response arrives with no headers: no status.
        let headers = header_snapshot(MapType::HttpCallResponseHeaders);
        let body =
            calls::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default();
        let answer = PartAnswer::read(&headers, &body);
        let mut host = WasmHost::new(0);
        self.stream
            .on_call_answer(&mut host, u64::from(token_id), &answer);
    }
}

impl Drop for BackendFilter {
    fn drop(&mut self) {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            self.stream.on_destroy(&mut worker);
        }
    }
}

impl HttpContext for BackendFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut host = WasmHost::new(0);
        let Ok(mut worker) = self.worker.try_borrow_mut() else {
            return action(reply_busy(&mut host));
        };
        action(self.stream.on_request_headers(
            &mut host,
            &mut worker,
            &EnvoySharedData,
            end_of_stream,
        ))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut host = WasmHost::new(body_size);
        let Ok(mut worker) = self.worker.try_borrow_mut() else {
            return action(reply_busy(&mut host));
        };
        action(
            self.stream
                .on_request_body(&mut host, &mut worker, &EnvoySharedData, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers(&mut WasmHost::new(0)))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut host = WasmHost::new(0);
        action(self.stream.on_response_headers(&mut host, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut host = WasmHost::new(body_size);
        action(self.stream.on_response_body(&mut host, end_of_stream))
    }
}

struct StsFilter(StsStream);

impl Context for StsFilter {}

impl HttpContext for StsFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(
            self.0
                .on_request_headers(&mut WasmHost::new(0), end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.0
                .on_request_body(&mut WasmHost::new(body_size), end_of_stream),
        )
    }
}

/// The core's view of the stream a hook runs for: proxy-wasm acts on the current context.
struct WasmHost {
    /// The size of the body the hook was called with.
    body_size: usize,
}

impl WasmHost {
    fn new(body_size: usize) -> Self {
        WasmHost { body_size }
    }
}

fn map_type(side: Side) -> MapType {
    match side {
        Side::Request => MapType::HttpRequestHeaders,
        Side::Response => MapType::HttpResponseHeaders,
    }
}

fn buffer_type(side: Side) -> BufferType {
    match side {
        Side::Request => BufferType::HttpRequestBody,
        Side::Response => BufferType::HttpResponseBody,
    }
}

impl Recorder for WasmHost {
    fn now_ms(&self) -> u64 {
        now_millis()
    }

    /// Metrics are defined once per VM and series (each series keeps its ids), on the worker:
    /// proxy-wasm allows it at any time.
    fn record_metric(&mut self, labels: &MetricLabels, sample: Sample) {
        let kind = match sample.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        };
        let Some(id) = labels
            .id(0, &sample, |name| {
                calls::define_metric(kind, name).ok().map(u64::from)
            })
            .and_then(|id| u32::try_from(id).ok())
        else {
            return;
        };
        let _ = match sample.kind {
            Kind::Counter => {
                calls::increment_metric(id, i64::try_from(sample.value).unwrap_or(i64::MAX))
            }
            Kind::Histogram => calls::record_metric(id, sample.value),
        };
    }

    fn hand_over(&self) -> Rc<HandOver> {
        HAND_OVER.with(Rc::clone)
    }
}

impl Host for WasmHost {
    fn headers(&self, side: Side) -> HeaderSnapshot {
        header_snapshot(map_type(side))
    }

    fn header(&self, side: Side, name: &str) -> Option<String> {
        header_value(map_type(side), name)
    }

    fn set_header(
        &mut self,
        side: Side,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostCallFailed> {
        calls::set_header(map_type(side), name, value).map_err(|status| {
            HostCallFailed(format!(
                "Envoy refused to set the {side:?} header {name}: {status:?}"
            ))
        })
    }

    fn body(&mut self, side: Side) -> Vec<u8> {
        calls::buffer(buffer_type(side), 0, self.body_size).unwrap_or_default()
    }

    fn replace_body(&mut self, side: Side, value: &[u8]) -> Result<(), HostCallFailed> {
        let buffer = buffer_type(side);
        calls::set_buffer(buffer, 0, self.body_size, value).map_err(|status| {
            HostCallFailed(format!(
                "Envoy refused to replace the {buffer:?} buffer: {status:?}"
            ))
        })
    }

    fn send_json(&mut self, status: u16, body: &[u8]) {
        if let Err(status) =
            calls::send_local_response(status, &[("content-type", "application/json")], body)
        {
            log::error!("ai gateway: could not send a local reply: {status:?}");
        }
    }

    fn clear_route_cache(&mut self) {
        if let Err(status) = calls::call_foreign_function("clear_route_cache") {
            log::warn!("ai gateway: clear_route_cache failed: {status:?}");
        }
    }

    fn cluster_name(&self) -> Option<String> {
        // In an upstream filter the cluster is known: Envoy exposes it as `xds.cluster_name`.
        let cluster = calls::property(&["xds", "cluster_name"])?;
        Some(String::from_utf8_lossy(&cluster).into_owned())
    }

    fn response_code_details(&self) -> Option<String> {
        let details = calls::property(&["response", "code_details"])?;
        Some(String::from_utf8_lossy(&details).into_owned())
    }

    /// Filter state of the downstream stream: `wasm.ai_gateway.usage` (JSON) and each
    /// `llmRequestCosts` key's value (`wasm.ai_gateway.<metadataKey>`), for access logs
    /// (`%FILTER_STATE(wasm.ai_gateway.usage:PLAIN)%`) and rate-limit costs. Each is a host call.
    fn record_usage(&mut self, summary: &UsageSummary) {
        // One path segment: the SDK joins segments with NUL, and the key must read `wasm.ai_gateway.usage`.
        let costs = summary.costs.iter().map(|(key, value)| {
            (
                Cow::Owned(format!("ai_gateway.{key}")),
                Cow::Owned(value.to_string()),
            )
        });
        let span = summary
            .span
            .iter()
            .flat_map(SpanAttributes::entries)
            .map(|(key, value)| {
                let value = match value {
                    SpanValue::Text(text) => text,
                    SpanValue::Number(n) => n.to_string(),
                };
                (Cow::Owned(format!("ai_gateway.{key}")), Cow::Owned(value))
            });
        // Borrowed: the summary is the request's biggest figure, and needs no copy to be written.
        let usage = (
            Cow::Borrowed("ai_gateway.usage"),
            Cow::Borrowed(summary.json.as_str()),
        );
        for (name, value) in std::iter::once(usage).chain(costs).chain(span) {
            if let Err(status) = calls::set_property(&[name.as_ref()], value.as_bytes()) {
                log::debug!("ai gateway: cannot record {name} in filter state: {status:?}");
            }
        }
    }

    /// The SDK files the call under the context whose hook is running, which gets the answer.
    fn dispatch_call(&mut self, call: &HttpCall, timeout_ms: u64) -> Option<u64> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            Duration::from_millis(timeout_ms),
        ) {
            Ok(token) => Some(u64::from(token)),
            Err(status) => {
                log::warn!(
                    "ai gateway: cannot call the cluster {:?}: {status:?}",
                    call.cluster
                );
                None
            }
        }
    }
}

thread_local! {
    /// The VM's hand-over between the stages: every stage's context of a worker lives in this one
    /// VM (they share its `vm_id`), and a VM runs on one thread.
    static HAND_OVER: Rc<HandOver> = Rc::default();
}

// ---- Host helpers ------------------------------------------------------------------------

/// One header value; bytes that are not UTF-8 (a caller controls them) are decoded lossily, and
/// any status but Ok means "no usable value".
fn header_value(map: MapType, name: &str) -> Option<String> {
    calls::header_value(map, name).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// A whole header map in one host call (see `headers`); any status but Ok means "no headers".
fn header_snapshot(map: MapType) -> HeaderSnapshot {
    calls::header_pairs(map).map_or_else(HeaderSnapshot::default, HeaderSnapshot::parse)
}

#[cfg(feature = "fault-injection")]
fn request_header(name: &str) -> Option<String> {
    header_value(MapType::HttpRequestHeaders, name)
}

//! The proxy-wasm glue. One module, two stages, chosen by the plugin's `root_id`:
//!
//! - `ai_gateway` (downstream HTTP filter): reads the body's `model`, puts it in
//!   `x-ai-eg-model` and clears the route cache so Envoy's routes pick the backend cluster.
//!   Envoy re-picks the route lazily, when the router runs, so this stage cannot know the
//!   backend itself; it also turns "no route for this model" into an API error.
//! - `ai_gateway_backend` (upstream HTTP filter on each Bedrock cluster): knows its cluster,
//!   so it applies that backend's settings: translation, model override, host, SigV4,
//!   and translates the response back.
//!
//! Host calls go through `proxy_wasm::hostcalls` directly: the SDK's trait helpers
//! `unwrap()` host errors, and a panic would kill this worker's VM. Built for `wasm32-wasip1`
//! only; natively this crate is empty.

#![cfg(target_arch = "wasm32")]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use bedrock_gateway_core::config::{Backend, BackendCredentials, Config};
use bedrock_gateway_core::broker::{self, Broker, Fetch, ParkedRequest, Reply, SharedStore, Verdict};
use bedrock_gateway_core::credentials::{self, Provider};
use bedrock_gateway_core::errors::{ApiFormat, ErrorKind, GatewayError};
use bedrock_gateway_core::gateway::{self, CallerHeaders, Endpoint, MODEL_HEADER, ResponsePlan, ResponseTranslation, UpstreamHead};
use bedrock_gateway_core::headers::HeaderSnapshot;
use bedrock_gateway_core::report::{self, Sample, UsageSummary};
use bedrock_gateway_core::sigv4::Signer;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

const BACKEND_ROOT_ID: &str = "ai_gateway_backend";
const STS_ROOT_ID: &str = "ai_gateway_sts";
/// How often each worker checks the shared credentials and its waiting requests.
const CREDENTIAL_TICK: Duration = Duration::from_millis(100);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(GatewayRoot { context_id, ..GatewayRoot::default() })
    });
}}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Routing,
    Backend,
    Sts,
}

#[derive(Default)]
struct GatewayRoot {
    context_id: u32,
    config: Option<Rc<Config>>,
    stage: Stage,
    signer: Rc<RefCell<Signer>>,
    broker: Rc<RefCell<Broker>>,
    metrics: Rc<RefCell<MetricIds>>,
    /// The fetched-credential providers of the configuration, with their shared-data keys.
    providers: Vec<(String, Provider)>,
}

impl Context for GatewayRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let status = header_value(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let now_ms = now_millis();
        let reply = match self.broker.try_borrow_mut() {
            Ok(mut broker) => broker.on_reply(&EnvoySharedData, u64::from(token_id), status, &body, now_ms),
            Err(_) => return,
        };
        match reply {
            Reply::Unknown => return,
            Reply::Stored { provider, expiration_unix } => {
                log::info!("ai gateway: fetched credentials from {provider} (expire in {} s)", expiration_unix.saturating_sub(now_ms / 1000));
            }
            Reply::Next(fetch) => self.dispatch_fetch(fetch, now_ms),
            Reply::Failed(error) => log::warn!("ai gateway: credential refresh failed: {error}"),
        }
        self.serve_waiting_requests(now_ms);
    }
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().unwrap_or_default();
        self.stage = match root_id.as_slice() {
            id if id == BACKEND_ROOT_ID.as_bytes() => Stage::Backend,
            id if id == STS_ROOT_ID.as_bytes() => Stage::Sts,
            _ => Stage::Routing,
        };
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, plugin_configuration_size) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log::error!("ai gateway: the plugin configuration is missing");
                return false;
            }
        };
        match Config::parse(&bytes, &|key| std::env::var(key).ok()) {
            Ok(config) => {
                if self.stage == Stage::Backend {
                    self.providers = config.fetched_providers();
                    if !self.providers.is_empty() {
                        // Credentials are fetched before the first request needs them, and refreshed
                        // ahead of expiry; the tick also serves requests that wait for them.
                        if let Err(status) = hostcalls::set_tick_period(CREDENTIAL_TICK) {
                            log::error!("ai gateway: cannot start the credential timer: {status:?}");
                            return false;
                        }
                    }
                }
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                log::error!("ai gateway: {error}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now_ms = now_millis();
        let due = match self.broker.try_borrow() {
            Ok(broker) => broker.due_fetches(&EnvoySharedData, &self.providers, now_ms),
            Err(_) => return,
        };
        for fetch in due {
            self.dispatch_fetch(fetch, now_ms);
        }
        self.serve_waiting_requests(now_ms);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.stage {
            Stage::Backend => Some(Box::new(BackendStream {
                context_id,
                config: self.config.clone(),
                signer: Rc::clone(&self.signer),
                broker: Rc::clone(&self.broker),
                metrics: Rc::clone(&self.metrics),
                measurement: None,
                endpoint: None,
                backend: None,
                anthropic_beta: None,
                request_headers: HeaderSnapshot::default(),
                plan: None,
                upstream_status: None,
                translation: None,
                answered_locally: false,
            })),
            Stage::Sts => Some(Box::new(StsStream { token: None })),
            Stage::Routing => Some(Box::new(RoutingStream {
                config: self.config.clone(),
                endpoint: None,
                requested_model: None,
                request_id: None,
                replacement: None,
            })),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---- Metrics ------------------------------------------------------------------------------

/// Envoy metric ids by name, per worker VM. Names carry their labels as `;key=value` pairs,
/// which the Envoy config's `stats_tags` turn into Prometheus labels (model ids hold dots, so
/// the usual dot-separated tags cannot delimit them).
///
/// Ids are kept per label set, then per (metric, suffix), so a request's report looks its label
/// set up once and builds no names. A label set has a dozen metrics at most: they are found by
/// comparing names, which costs less than hashing them (`make bench-instructions`: 2,500
/// instructions fewer per request than a HashMap).
#[derive(Default)]
struct MetricIds(HashMap<String, Vec<MetricId>>);

/// A metric's id, by its name and the suffix its labels end with.
type MetricId = ((&'static str, &'static str), u32);

/// A label set's metric ids.
struct LabelledMetrics<'a> {
    labels: &'a str,
    ids: &'a mut Vec<MetricId>,
}

impl MetricIds {
    fn labelled<'a>(&'a mut self, labels: &'a str) -> Option<LabelledMetrics<'a>> {
        // Not `entry(labels.to_owned())`: that would copy the labels on every request.
        if !self.0.contains_key(labels) {
            self.0.insert(labels.to_owned(), Vec::new());
        }
        self.0.get_mut(labels).map(|ids| LabelledMetrics { labels, ids })
    }
}

impl LabelledMetrics<'_> {
    fn id(&mut self, kind: MetricType, name: &'static str, suffix: &'static str) -> Option<u32> {
        if let Some((_, id)) = self.ids.iter().find(|(key, _)| *key == (name, suffix)) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &report::stat_name(name, self.labels, suffix)).ok()?;
        self.ids.push(((name, suffix), id));
        Some(id)
    }

    fn add(&mut self, name: &'static str, suffix: &'static str, value: u64) {
        if let Some(id) = self.id(MetricType::Counter, name, suffix) {
            let _ = hostcalls::increment_metric(id, i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    fn record(&mut self, name: &'static str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name, "") {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// Usage summaries from the backend stage (upstream filter) to the routing stage (downstream),
/// by request id. Both stages share this VM and worker thread, but not their filter state, and
/// access logs read the downstream one.
const MAX_PENDING_SUMMARIES: usize = 4096;

thread_local! {
    static USAGE_SUMMARIES: RefCell<HashMap<String, UsageSummary>> = RefCell::new(HashMap::new());
}

fn hand_over_summary(request_id: String, summary: UsageSummary) {
    USAGE_SUMMARIES.with(|summaries| {
        if let Ok(mut summaries) = summaries.try_borrow_mut() {
            // Streams cut before the routing stage sees their end never collect theirs.
            if summaries.len() >= MAX_PENDING_SUMMARIES {
                summaries.clear();
            }
            summaries.insert(request_id, summary);
        }
    });
}

fn take_summary(request_id: &str) -> Option<UsageSummary> {
    USAGE_SUMMARIES.with(|summaries| summaries.try_borrow_mut().ok()?.remove(request_id))
}

/// What one request measured, reported when its response ends.
struct RequestMeasurement {
    /// Envoy's `x-request-id`, read with the request: an upstream filter cannot read request
    /// headers while the response flows.
    request_id: Option<String>,
    model: String,
    labels: String,
    started_ms: u64,
    first_content_ms: Option<u64>,
}

// ---- Credentials shared by the workers --------------------------------------------------

/// Envoy's shared data, which every worker's VM sees: the broker's store.
struct EnvoySharedData;

impl SharedStore for EnvoySharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> bool {
        match hostcalls::set_shared_data(key, Some(value), version) {
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
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GatewayRoot {
    /// Makes the call the broker asked for; a call Envoy refuses counts as a failed fetch.
    fn dispatch_fetch(&mut self, fetch: Fetch, now_ms: u64) {
        let call = credentials::call_for(&fetch.provider, &fetch.step);
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let timeout = Duration::from_millis(credentials::FETCH_TIMEOUT_MS);
        // Calls must be attributed to the root context, whichever stream was active last.
        let _ = hostcalls::set_effective_context(self.context_id);
        match hostcalls::dispatch_http_call(&call.cluster, headers, call.body.as_deref(), vec![], timeout) {
            Ok(token) => {
                // Untracked, the reply is ignored and the lock's timeout lets the next tick retry.
                if let Ok(mut broker) = self.broker.try_borrow_mut() {
                    broker.dispatched(u64::from(token), fetch);
                }
            }
            Err(status) => {
                let error = format!("cannot call the {} cluster {:?} ({status:?})", fetch.provider.name(), call.cluster);
                broker::record_failure(&EnvoySharedData, &fetch.key, now_ms, error);
            }
        }
    }

    /// Signs and resumes waiting requests whose credentials arrived; fails those that cannot get any.
    fn serve_waiting_requests(&mut self, now_ms: u64) {
        let decided = match self.broker.try_borrow_mut() {
            Ok(mut broker) => broker.take_decided(&EnvoySharedData, now_ms),
            Err(_) => return,
        };
        for (stream, parked, verdict) in decided {
            // The stream may be gone (client disconnected): then there is nothing to resume.
            let Ok(context_id) = u32::try_from(stream) else { continue };
            if hostcalls::set_effective_context(context_id).is_err() {
                continue;
            }
            match verdict {
                Verdict::Sign(credentials) => {
                    let signature =
                        parked.upstream.sign(&credentials.credentials(), &parked.region, &mut self.signer.borrow_mut(), now_ms / 1000);
                    apply_signature(&signature);
                    if let Err(status) = hostcalls::resume_http_request() {
                        log::warn!("ai gateway: cannot resume a request: {status:?}");
                    }
                }
                Verdict::Fail(reason) => {
                    let error = GatewayError::new(503, ErrorKind::Unavailable, format!("AWS credentials are not available: {reason}"));
                    reply_with_error(&error, parked.format);
                }
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

fn apply_signature(signature: &gateway::Signature) {
    set_request_header("authorization", Some(&signature.authorization));
    set_request_header("x-amz-date", Some(&signature.amz_date));
    // Callers' x-amz-* headers were removed by the routing stage: only a token needs writing.
    if let Some(token) = signature.security_token.as_deref() {
        set_request_header("x-amz-security-token", Some(token));
    }
}

// ---- Downstream: pick the route ----------------------------------------------------------

struct RoutingStream {
    config: Option<Rc<Config>>,
    endpoint: Option<Endpoint>,
    requested_model: Option<String>,
    /// Envoy's `x-request-id`, under which the backend stage leaves the usage summary.
    request_id: Option<String>,
    /// The caller-format body replacing an Envoy local reply (no route, body too large, ...).
    replacement: Option<Vec<u8>>,
}

impl Context for RoutingStream {}

impl HttpContext for RoutingStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = header_snapshot(MapType::HttpRequestHeaders);
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)]
        if headers.contains("x-ai-eg-test-panic") {
            panic!("fault injected by x-ai-eg-test-panic");
        }
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let models = self.config.as_ref().map_or(&[][..], |c| c.models.as_slice());
        if let Some(answer) = gateway::answer_locally(&method, &path, models) {
            return send_json(answer.status, &answer.body);
        }
        let endpoint = match Endpoint::classify(&method, &path) {
            None => {
                // Only the gateway's own endpoints may reach a Bedrock cluster: a caller's own
                // routing header on any other path must not select one.
                if headers.contains(MODEL_HEADER) {
                    set_request_header(MODEL_HEADER, None);
                    clear_route_cache();
                }
                return Action::Continue;
            }
            Some(Ok(endpoint)) => endpoint,
            Some(Err(error)) => return reply_with_error(&error, format_for_path(&path)),
        };
        self.endpoint = Some(endpoint);
        if let Some(error) = headers.get("content-type").and_then(|c| gateway::check_content_type(&c).err()) {
            return reply_with_error(&error, endpoint.format());
        }
        if let Some(error) = headers.get("content-encoding").and_then(|e| gateway::check_content_encoding(&e).err()) {
            return reply_with_error(&error, endpoint.format());
        }
        strip_caller_credentials(&headers);
        self.request_id = headers.get("x-request-id").map(Cow::into_owned);
        if end_of_stream {
            let error = GatewayError::invalid_request("The request body is empty; expected a JSON object.");
            return reply_with_error(&error, endpoint.format());
        }
        // Hold the headers until the body shows which model, and so which route, it is for.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(endpoint) = self.endpoint else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = read_buffer(BufferType::HttpRequestBody, body_size);
        let model = match gateway::requested_model(&body) {
            Ok(model) => model,
            Err(error) => return reply_with_error(&error, endpoint.format()),
        };
        set_request_header(MODEL_HEADER, Some(&model));
        clear_route_cache();
        self.requested_model = Some(model.into_owned());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(endpoint) = self.endpoint else {
            return Action::Continue;
        };
        // Replies Envoy makes itself (no route, body over the buffer limit, Bedrock unreachable)
        // are plain text; callers of the gateway's endpoints get their API's error format.
        let status = response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        if status < 400 {
            // Successes were translated by the backend stage; the property lookup below costs.
            return Action::Continue;
        }
        let details = hostcalls::get_property(vec!["response", "code_details"]).ok().flatten().unwrap_or_default();
        let details = String::from_utf8_lossy(&details);
        let is_json = response_header("content-type").is_some_and(|c| c.starts_with("application/json"));
        let Some(error) = gateway::local_reply_error(&details, status, is_json, self.requested_model.as_deref()) else {
            return Action::Continue;
        };
        set_response_header(":status", Some(&error.status.to_string()));
        set_response_header("content-type", Some("application/json"));
        set_response_header("content-length", None);
        self.replacement = Some(error.to_json(endpoint.format()));
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if end_of_stream && self.endpoint.is_some() {
            if let Some(request_id) = self.request_id.take() {
                record_usage_for_access_log(&request_id);
            }
        }
        let Some(replacement) = self.replacement.as_ref() else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        replace_buffer(BufferType::HttpResponseBody, body_size, replacement);
        Action::Continue
    }
}

/// Puts the backend stage's usage summary into this (downstream) stream's filter state:
/// `wasm.ai_gateway.usage` (JSON), `wasm.ai_gateway.total_tokens` and `wasm.ai_gateway.cost`,
/// for access logs (`%FILTER_STATE(wasm.ai_gateway.usage:PLAIN)%`) and rate-limit costs.
fn record_usage_for_access_log(request_id: &str) {
    let Some(summary) = take_summary(request_id) else {
        return;
    };
    let total = summary.total_tokens.to_string();
    let cost = summary.cost.to_string();
    // One path segment: the SDK joins segments with NUL, and the key must read `wasm.ai_gateway.usage`.
    for (name, value) in [("ai_gateway.usage", summary.json.as_str()), ("ai_gateway.total_tokens", total.as_str()), ("ai_gateway.cost", cost.as_str())] {
        if let Err(status) = hostcalls::set_property(vec![name], Some(value.as_bytes())) {
            log::debug!("ai gateway: cannot record {name} in filter state: {status:?}");
        }
    }
}

// ---- Upstream: translate and sign for this cluster's backend -----------------------------

struct BackendStream {
    context_id: u32,
    config: Option<Rc<Config>>,
    signer: Rc<RefCell<Signer>>,
    broker: Rc<RefCell<Broker>>,
    metrics: Rc<RefCell<MetricIds>>,
    measurement: Option<RequestMeasurement>,
    endpoint: Option<Endpoint>,
    backend: Option<Rc<Backend>>,
    anthropic_beta: Option<String>,
    /// The request headers as they arrived, until the body phase has rewritten them.
    request_headers: HeaderSnapshot,
    plan: Option<ResponsePlan>,
    /// Bedrock's status, which the translated response keeps unless the translation fails.
    upstream_status: Option<u16>,
    translation: Option<ResponseTranslation>,
    answered_locally: bool,
}

impl Context for BackendStream {}

impl Drop for BackendStream {
    // A request that ends while waiting for credentials must not be resumed later.
    fn drop(&mut self) {
        if let Ok(mut broker) = self.broker.try_borrow_mut() {
            broker.forget(u64::from(self.context_id));
        }
    }
}

impl HttpContext for BackendStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = header_snapshot(MapType::HttpRequestHeaders);
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let Some(Ok(endpoint)) = Endpoint::classify(&method, &path) else {
            // The routing stage only sends its endpoints here; anything else is refused, never proxied unsigned.
            self.answered_locally = true;
            let error = GatewayError::new(404, ErrorKind::NotFound, format!("{path} is not served by this gateway."));
            return reply_with_error(&error, format_for_path(&path));
        };
        // In an upstream filter the cluster is known: Envoy exposes it as `xds.cluster_name`.
        let cluster = hostcalls::get_property(vec!["xds", "cluster_name"]).ok().flatten().unwrap_or_default();
        let cluster = String::from_utf8_lossy(&cluster);
        let Some(backend) = self.config.as_ref().and_then(|c| c.backend(&cluster)) else {
            log::error!("ai gateway: cluster {cluster:?} has no backend in the plugin configuration");
            self.endpoint = Some(endpoint);
            return self.reply_with_error(&GatewayError::new(
                500,
                ErrorKind::Upstream,
                "The gateway has no backend configured for the route this model took.",
            ));
        };
        self.backend = Some(Rc::clone(backend));
        self.endpoint = Some(endpoint);
        if endpoint.format() == ApiFormat::Anthropic {
            self.anthropic_beta = headers.get("anthropic-beta").map(Cow::into_owned);
            // Anthropic's own headers mean nothing to Bedrock: the beta flags travel in the body.
            for header in ["anthropic-beta", "anthropic-version"] {
                if headers.contains(header) {
                    set_request_header(header, None);
                }
            }
        }
        let model = headers.get(MODEL_HEADER).map(Cow::into_owned).unwrap_or_default();
        self.measurement = Some(RequestMeasurement {
            request_id: headers.get("x-request-id").map(Cow::into_owned),
            labels: report::labels(&model, &backend.name),
            model,
            started_ms: now_millis(),
            first_content_ms: None,
        });
        // The internal routing header never reaches AWS (the routing stage removed callers' credentials).
        set_request_header(MODEL_HEADER, None);
        self.request_headers = headers;
        if end_of_stream {
            return self.handle_request_body(&[]);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.endpoint.is_none() || self.answered_locally {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = read_buffer(BufferType::HttpRequestBody, body_size);
        self.handle_request_body(&body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(plan) = self.plan.as_ref().filter(|_| !self.answered_locally) else {
            return Action::Continue;
        };
        let headers = header_snapshot(MapType::HttpResponseHeaders);
        self.upstream_status = headers.get(":status").and_then(|s| s.parse().ok());
        let status = self.upstream_status.unwrap_or(502);
        let error_type = headers.get("x-amzn-errortype");
        let request_id = headers
            .get("x-amzn-requestid")
            .or_else(|| self.measurement.as_ref().and_then(|m| m.request_id.as_deref()).map(Cow::Borrowed))
            .unwrap_or(Cow::Borrowed("gateway"));
        let max_frame = self
            .config
            .as_ref()
            .map_or(bedrock_gateway_core::eventstream::DEFAULT_MAX_FRAME_LEN, |c| c.max_stream_frame_bytes);
        let input_tokens = headers.get("x-amzn-bedrock-input-token-count").and_then(|t| t.parse().ok());
        let head = UpstreamHead { status, error_type: error_type.as_deref(), request_id: &request_id, input_tokens };
        let translation = ResponseTranslation::for_response(plan, head, max_frame);
        if end_of_stream {
            // No body follows, so no body callback would translate it: answer from here.
            let (status, translated) = translation.translate_bodiless();
            self.report(status, translated.usage);
            self.answered_locally = true;
            return send_json(status, &translated.body);
        }
        if headers.get("content-type").as_deref() != Some(translation.content_type()) {
            set_response_header("content-type", Some(translation.content_type()));
        }
        let streaming = translation.is_streaming();
        self.translation = Some(translation);
        if streaming {
            set_response_header("content-length", None);
            set_response_header("cache-control", Some("no-cache"));
            Action::Continue
        } else {
            // Hold the headers: the status and the length change once the whole body is translated.
            Action::Pause
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(translation) = self.translation.as_mut() else {
            return Action::Continue;
        };
        if translation.is_streaming() {
            let chunk = read_buffer(BufferType::HttpResponseBody, body_size);
            let sse = translation.push_stream_chunk(&chunk, end_of_stream);
            replace_buffer(BufferType::HttpResponseBody, body_size, &sse);
            if let Some(measurement) = self.measurement.as_mut().filter(|m| m.first_content_ms.is_none()) {
                if translation.first_content_emitted() {
                    measurement.first_content_ms = Some(now_millis());
                }
            }
            if end_of_stream {
                let usage = translation.stream_usage();
                self.report(200, usage);
            }
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = read_buffer(BufferType::HttpResponseBody, body_size);
        let (status, translated) = translation.translate_body(&body);
        if Some(status) != self.upstream_status {
            set_response_header(":status", Some(&status.to_string()));
        }
        // The headers were held for this: the caller gets a length rather than a chunked body.
        set_response_header("content-length", Some(&translated.body.len().to_string()));
        replace_buffer(BufferType::HttpResponseBody, body_size, &translated.body);
        self.report(status, translated.usage);
        Action::Continue
    }
}

impl BackendStream {
    /// Counts the request's tokens, status and timings, and leaves a usage summary in filter
    /// state (`wasm.ai_gateway.usage`) for access logs.
    fn report(&mut self, status: u16, usage: Option<bedrock_gateway_core::translated::TokenUsage>) {
        let Some(measurement) = self.measurement.take() else { return };
        let now_ms = now_millis();
        let Ok(mut all_metrics) = self.metrics.try_borrow_mut() else { return };
        let Some(mut metrics) = all_metrics.labelled(&measurement.labels) else { return };
        let usage = usage.unwrap_or_default();
        let timings = report::Timings { started_ms: measurement.started_ms, first_content_ms: measurement.first_content_ms, ended_ms: now_ms };
        report::samples(status, &usage, &timings, |sample| match sample {
            Sample::Counter { name, suffix, value } => metrics.add(name, suffix, value),
            Sample::Histogram { name, value } => metrics.record(name, value),
        });
        drop(all_metrics);
        let (Some(request_id), Some(config)) = (measurement.request_id, self.config.as_ref()) else { return };
        let backend = self.backend.as_ref().map_or("", |b| b.name.as_str());
        hand_over_summary(request_id, report::usage_summary(&measurement.model, backend, status, &usage, &config.cost));
    }

    fn handle_request_body(&mut self, body: &[u8]) -> Action {
        let Some(backend) = self.backend.as_ref() else {
            return Action::Continue;
        };
        let Some(endpoint) = self.endpoint else {
            return Action::Continue;
        };
        let now_ms = now_millis();
        let headers = CallerHeaders { anthropic_beta: self.anthropic_beta.as_deref() };
        let upstream = match gateway::prepare(endpoint, body, headers, backend, now_ms / 1000) {
            Ok(upstream) => upstream,
            Err(error) => return self.reply_with_error(&error),
        };
        // Each header write is a host call: the ones that would change nothing are skipped.
        let caller = std::mem::take(&mut self.request_headers);
        set_request_header(":path", Some(&upstream.path));
        set_request_header(":authority", Some(&upstream.host));
        if caller.get("content-type").as_deref() != Some("application/json") {
            set_request_header("content-type", Some("application/json"));
        }
        if caller.get("accept").as_deref() != Some(upstream.accept) {
            set_request_header("accept", Some(upstream.accept));
        }
        // The response is translated, so it must come back uncompressed; the body written here
        // has no encoding either (the routing stage let only `identity` through).
        for header in ["accept-encoding", "content-encoding"] {
            if caller.contains(header) {
                set_request_header(header, None);
            }
        }
        set_request_header("content-length", Some(&upstream.body.len().to_string()));
        replace_buffer(BufferType::HttpRequestBody, body.len(), &upstream.body);
        self.plan = Some(upstream.plan.clone());

        let credentials = match &backend.credentials {
            BackendCredentials::Static(keys) => Some(Cow::Borrowed(keys)),
            BackendCredentials::Fetched(provider) => {
                broker::usable_credentials(&EnvoySharedData, &BackendCredentials::cache_key(provider), now_ms)
                    .map(|c| Cow::Owned(c.credentials()))
            }
        };
        if let Some(credentials) = credentials {
            let signature = upstream.sign(&credentials, &backend.region, &mut self.signer.borrow_mut(), now_ms / 1000);
            apply_signature(&signature);
            return Action::Continue;
        }
        // No usable credentials yet: this worker's timer signs and resumes the request when they arrive.
        if let BackendCredentials::Fetched(provider) = &backend.credentials {
            let parked = ParkedRequest {
                key: BackendCredentials::cache_key(provider),
                region: backend.region.clone(),
                format: upstream.plan.format,
                upstream,
                since_ms: now_ms,
            };
            if let Ok(mut broker) = self.broker.try_borrow_mut() {
                broker.park(u64::from(self.context_id), parked);
                return Action::Pause;
            }
        }
        self.reply_with_error(&GatewayError::new(503, ErrorKind::Unavailable, "AWS credentials are not available."))
    }

    fn reply_with_error(&mut self, error: &GatewayError) -> Action {
        self.answered_locally = true;
        reply_with_error(error, self.endpoint.map_or(ApiFormat::OpenAi, Endpoint::format))
    }
}

// ---- Upstream of STS: the IRSA token goes into the form body ------------------------------

/// On the STS cluster, after `credential_injector` has put the current web identity token
/// (read by Envoy from the projected token file) into a header: moves it into the
/// AssumeRoleWithWebIdentity form, where STS expects it.
struct StsStream {
    token: Option<String>,
}

impl Context for StsStream {}

impl HttpContext for StsStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.token = request_header(credentials::WEB_IDENTITY_TOKEN_HEADER);
        set_request_header(credentials::WEB_IDENTITY_TOKEN_HEADER, None);
        if self.token.is_none() || end_of_stream {
            return Action::Continue;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(token) = self.token.as_deref() else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let form = read_buffer(BufferType::HttpRequestBody, body_size);
        let body = credentials::with_web_identity_token(&form, token);
        set_request_header("content-length", Some(&body.len().to_string()));
        replace_buffer(BufferType::HttpRequestBody, body_size, &body);
        Action::Continue
    }
}

// ---- Host helpers ------------------------------------------------------------------------

/// Errors for paths the filter does not serve take the format their prefix suggests.
fn format_for_path(path: &str) -> ApiFormat {
    if path.starts_with("/anthropic/") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

fn reply_with_error(error: &GatewayError, format: ApiFormat) -> Action {
    send_json(error.status, &error.to_json(format))
}

fn send_json(status: u16, body: &[u8]) -> Action {
    if let Err(status) = hostcalls::send_http_response(u32::from(status), vec![("content-type", "application/json")], Some(body)) {
        log::error!("ai gateway: could not send a local reply: {status:?}");
    }
    Action::Pause
}

/// Callers' own credentials must never reach AWS.
fn strip_caller_credentials(headers: &HeaderSnapshot) {
    for (name, _) in headers.iter() {
        if gateway::is_caller_credential_header(name) {
            set_request_header(&String::from_utf8_lossy(name).to_ascii_lowercase(), None);
        }
    }
}

/// Makes Envoy pick the route again from the headers as they are now.
fn clear_route_cache() {
    if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
        log::warn!("ai gateway: clear_route_cache failed: {status:?}");
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: MapType, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> Status;
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
}

/// One header value. The SDK's `get_map_value` panics when the host answers anything but Ok or
/// NotFound (an upstream filter's request headers during its response, say) and unwraps UTF-8,
/// which a caller controls: here both simply mean "no usable value", and bytes are decoded lossily.
fn header_value(map: MapType, name: &str) -> Option<String> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host only writes the two out-parameters.
    let status = unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    if status != Status::Ok {
        return None;
    }
    // SAFETY: an Ok answer, taken once.
    let bytes = unsafe { take_host_buffer(data, size) };
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A whole header map in one host call (see `headers`). Like `header_value`, and unlike the
/// SDK's `get_map_bytes`, any status but Ok means "no headers" rather than a panic.
fn header_snapshot(map: MapType) -> HeaderSnapshot {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host only writes the two out-parameters.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != Status::Ok {
        return HeaderSnapshot::default();
    }
    // SAFETY: an Ok answer, taken once.
    HeaderSnapshot::parse(unsafe { take_host_buffer(data, size) })
}

/// Takes ownership of an answer the host wrote into memory it allocated through this module's
/// `proxy_on_memory_allocate` (exported by the SDK); null means an empty answer.
///
/// # Safety
/// `data`/`size` must be what a host call just returned with status Ok, taken only once.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: per this function's contract, `size` bytes at `data` were allocated by this
    // module's allocator and handed over to us.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

fn request_header(name: &str) -> Option<String> {
    header_value(MapType::HttpRequestHeaders, name)
}

fn response_header(name: &str) -> Option<String> {
    header_value(MapType::HttpResponseHeaders, name)
}

fn set_request_header(name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        log::warn!("ai gateway: could not set request header {name}: {status:?}");
    }
}

fn set_response_header(name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value) {
        log::warn!("ai gateway: could not set response header {name}: {status:?}");
    }
}

fn read_buffer(buffer: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(buffer, 0, size).ok().flatten().unwrap_or_default()
}

fn replace_buffer(buffer: BufferType, size: usize, value: &[u8]) {
    if let Err(status) = hostcalls::set_buffer(buffer, 0, size, value) {
        log::warn!("ai gateway: could not replace the {buffer:?} buffer: {status:?}");
    }
}

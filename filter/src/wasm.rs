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
//! `unwrap()` host errors, and a panic would kill this worker's VM.

use crate::config::{Backend, Config};
use crate::errors::{ApiFormat, ErrorKind, GatewayError};
use crate::gateway::{self, CallerHeaders, Endpoint, ResponsePlan, ResponseTranslation, UpstreamHead};
use crate::sigv4::Signer;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// The header Envoy's routes match to pick a backend cluster.
const MODEL_HEADER: &str = "x-ai-eg-model";
const BACKEND_ROOT_ID: &str = "ai_gateway_backend";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GatewayRoot::default()) });
}}

#[derive(Default)]
struct GatewayRoot {
    config: Option<Rc<Config>>,
    is_backend_stage: bool,
    signer: Rc<RefCell<Signer>>,
}

impl Context for GatewayRoot {}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().unwrap_or_default();
        self.is_backend_stage = root_id == BACKEND_ROOT_ID.as_bytes();
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, plugin_configuration_size) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log::error!("ai gateway: the plugin configuration is missing");
                return false;
            }
        };
        match Config::parse(&bytes, &|key| std::env::var(key).ok()) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                log::error!("ai gateway: {error}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.is_backend_stage {
            Some(Box::new(BackendStream {
                config: self.config.clone(),
                signer: Rc::clone(&self.signer),
                endpoint: None,
                backend: None,
                anthropic_beta: None,
                plan: None,
                translation: None,
                answered_locally: false,
            }))
        } else {
            Some(Box::new(RoutingStream {
                config: self.config.clone(),
                endpoint: None,
                requested_model: None,
                rewrite_not_found: false,
            }))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---- Downstream: pick the route ----------------------------------------------------------

struct RoutingStream {
    config: Option<Rc<Config>>,
    endpoint: Option<Endpoint>,
    requested_model: Option<String>,
    rewrite_not_found: bool,
}

impl Context for RoutingStream {}

impl HttpContext for RoutingStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let method = request_header(":method").unwrap_or_default();
        let path = request_header(":path").unwrap_or_default();
        let models = self.config.as_ref().map_or(&[][..], |c| c.models.as_slice());
        if let Some(answer) = gateway::answer_locally(&method, &path, models) {
            return send_json(answer.status, &answer.body);
        }
        let endpoint = match Endpoint::classify(&method, &path) {
            None => return Action::Continue,
            Some(Ok(endpoint)) => endpoint,
            Some(Err(error)) => return reply_with_error(&error, format_for_path(&path)),
        };
        self.endpoint = Some(endpoint);
        strip_caller_credentials();
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
        if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
            log::warn!("ai gateway: clear_route_cache failed: {status:?}");
        }
        self.requested_model = Some(model.into_owned());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.requested_model.is_none() {
            return Action::Continue;
        }
        // The catch-all route answers models no route matches with a direct response.
        let details = hostcalls::get_property(vec!["response", "code_details"]).ok().flatten();
        if details.as_deref() == Some(b"direct_response".as_slice()) {
            self.rewrite_not_found = true;
            set_response_header("content-type", Some("application/json"));
            set_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.rewrite_not_found {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let model = self.requested_model.as_deref().unwrap_or_default();
        let format = self.endpoint.map_or(ApiFormat::OpenAi, Endpoint::format);
        replace_buffer(BufferType::HttpResponseBody, body_size, &GatewayError::model_not_found(model).to_json(format));
        Action::Continue
    }
}

// ---- Upstream: translate and sign for this cluster's backend -----------------------------

struct BackendStream {
    config: Option<Rc<Config>>,
    signer: Rc<RefCell<Signer>>,
    endpoint: Option<Endpoint>,
    backend: Option<Backend>,
    anthropic_beta: Option<String>,
    plan: Option<ResponsePlan>,
    translation: Option<ResponseTranslation>,
    answered_locally: bool,
}

impl Context for BackendStream {}

impl HttpContext for BackendStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let method = request_header(":method").unwrap_or_default();
        let path = request_header(":path").unwrap_or_default();
        let Some(Ok(endpoint)) = Endpoint::classify(&method, &path) else {
            return Action::Continue;
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
        self.backend = Some(backend.clone());
        self.endpoint = Some(endpoint);
        self.anthropic_beta = request_header("anthropic-beta");
        // Anthropic's own headers mean nothing to Bedrock: the beta flags travel in the body.
        for header in ["anthropic-beta", "anthropic-version"] {
            set_request_header(header, None);
        }
        // Internal routing headers and callers' credentials never reach AWS.
        set_request_header(MODEL_HEADER, None);
        strip_caller_credentials();
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

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = self.plan.as_ref().filter(|_| !self.answered_locally) else {
            return Action::Continue;
        };
        let status = response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(502);
        let error_type = response_header("x-amzn-errortype");
        let request_id = response_header("x-amzn-requestid")
            .or_else(|| request_header("x-request-id"))
            .unwrap_or_else(|| "gateway".to_owned());
        let max_frame = self
            .config
            .as_ref()
            .map_or(crate::eventstream::DEFAULT_MAX_FRAME_LEN, |c| c.max_stream_frame_bytes);
        let input_tokens = response_header("x-amzn-bedrock-input-token-count").and_then(|t| t.parse().ok());
        let head = UpstreamHead { status, error_type: error_type.as_deref(), request_id: &request_id, input_tokens };
        let translation = ResponseTranslation::for_response(plan, head, max_frame);
        set_response_header("content-type", Some(translation.content_type()));
        set_response_header("content-length", None);
        let streaming = translation.is_streaming();
        self.translation = Some(translation);
        if streaming {
            set_response_header("cache-control", Some("no-cache"));
            Action::Continue
        } else {
            // Hold the headers: the status may change once the whole body is translated.
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
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = read_buffer(BufferType::HttpResponseBody, body_size);
        let (status, translated) = translation.translate_body(&body);
        set_response_header(":status", Some(&status.to_string()));
        replace_buffer(BufferType::HttpResponseBody, body_size, &translated);
        Action::Continue
    }
}

impl BackendStream {
    fn handle_request_body(&mut self, body: &[u8]) -> Action {
        let Some(backend) = self.backend.as_ref() else {
            return Action::Continue;
        };
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let Some(endpoint) = self.endpoint else {
            return Action::Continue;
        };
        let headers = CallerHeaders { anthropic_beta: self.anthropic_beta.as_deref() };
        let prepared = gateway::prepare(endpoint, body, headers, backend, &mut self.signer.borrow_mut(), now);
        let upstream = match prepared {
            Ok(upstream) => upstream,
            Err(error) => return self.reply_with_error(&error),
        };
        set_request_header(":path", Some(&upstream.path));
        set_request_header(":authority", Some(&upstream.host));
        set_request_header("authorization", Some(&upstream.authorization));
        set_request_header("x-amz-date", Some(&upstream.amz_date));
        set_request_header("x-amz-security-token", upstream.security_token.as_deref());
        set_request_header("content-type", Some("application/json"));
        set_request_header("accept", Some(upstream.accept));
        // The response is translated, so it must come back uncompressed.
        set_request_header("accept-encoding", None);
        set_request_header("content-length", Some(&upstream.body.len().to_string()));
        replace_buffer(BufferType::HttpRequestBody, body.len(), &upstream.body);
        self.plan = Some(upstream.plan);
        Action::Continue
    }

    fn reply_with_error(&mut self, error: &GatewayError) -> Action {
        self.answered_locally = true;
        reply_with_error(error, self.endpoint.map_or(ApiFormat::OpenAi, Endpoint::format))
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
fn strip_caller_credentials() {
    let Ok(headers) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
        return;
    };
    for (name, _) in headers {
        let lower = name.to_ascii_lowercase();
        if lower == "authorization"
            || lower == "proxy-authorization"
            || lower == "x-api-key"
            || lower.starts_with("x-amz-")
            || (lower.starts_with("x-ai-eg-") && lower != MODEL_HEADER)
        {
            set_request_header(&lower, None);
        }
    }
}

fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name).ok().flatten()
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

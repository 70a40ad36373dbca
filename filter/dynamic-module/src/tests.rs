//! The adapter against a fake Envoy (`fake_envoy`): the exported hooks called as Envoy calls them,
//! and what the module asked of Envoy through its callbacks checked: headers read and written,
//! bodies replaced, local replies (which re-enter the stream's hooks, as Envoy's do), metrics
//! defined at load, and nothing secret logged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::abi::{self, EnvoyBuffer};
use crate::fake_envoy::{FakeConfig, FakeStream, LOGS};
use serde_json::{json, Value};
use std::ffi::c_void;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// The module records through the newest configuration that published metrics, a process-wide
/// choice: tests run one at a time, so that one reading what was recorded finds its own.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn plugin_json() -> String {
    json!({
        "models": ["llama"],
        "backends": {
            "bedrock": {
                "schema": "converse",
                "region": "us-east-1",
                "credentials": {
                    "source": "inline",
                    "access_key_id": "AKIDEXAMPLE",
                    "secret_access_key": SECRET
                },
                "model_name_override": "us.meta.llama3-2-1b-instruct-v1:0"
            }
        },
        "metric_series": {"llama": ["bedrock"]}
    })
    .to_string()
}

/// A loaded configuration of one stage, destroyed (as Envoy destroys it) when dropped.
struct Loaded {
    envoy: Box<FakeConfig>,
    module: *const c_void,
}

impl Loaded {
    fn stage(name: &str, json: &str) -> Option<Loaded> {
        let envoy = Box::<FakeConfig>::default();
        let module = crate::envoy_dynamic_module_on_http_filter_config_new(
            envoy.ptr(),
            buffer(name.as_bytes()),
            buffer(json.as_bytes()),
        );
        (!module.is_null()).then_some(Loaded { envoy, module })
    }

    /// A backend-stage stream of the chat request as the routing stage leaves it (the caller's key
    /// gone, the model header set), through the cluster `bedrock`.
    fn routed_stream(&self) -> Stream {
        let mut headers = chat_request();
        headers.retain(|(name, _)| *name != "authorization");
        headers.push(("x-ai-eg-model", "llama"));
        let mut stream = self.stream(&headers);
        stream.envoy.cluster = Some("bedrock".into());
        stream
    }

    /// A stream of this configuration, with the request's headers.
    fn stream(&self, headers: &[(&str, &str)]) -> Stream {
        let mut envoy = Box::new(FakeStream {
            request_headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..FakeStream::default()
        });
        let module = crate::envoy_dynamic_module_on_http_filter_new(self.module, envoy.ptr());
        assert!(!module.is_null());
        envoy.module_filter = Some(module);
        Stream { envoy, module }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        crate::envoy_dynamic_module_on_http_filter_config_destroy(self.module);
    }
}

struct Stream {
    envoy: Box<FakeStream>,
    module: *const c_void,
}

impl Stream {
    fn request_headers(&mut self, end_of_stream: bool) -> u32 {
        let envoy = self.envoy.ptr();
        crate::envoy_dynamic_module_on_http_filter_request_headers(
            envoy,
            self.module,
            end_of_stream,
        )
    }

    fn request_body(&mut self, body: &[u8]) -> u32 {
        self.envoy.request_body[0] = body.to_vec();
        let envoy = self.envoy.ptr();
        crate::envoy_dynamic_module_on_http_filter_request_body(envoy, self.module, true)
    }

    fn sent_json(&self) -> (u32, Value) {
        let (status, headers, body) = self.envoy.sent.clone().expect("a local reply");
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        (status, serde_json::from_slice(&body).unwrap())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        crate::envoy_dynamic_module_on_http_filter_destroy(self.module);
    }
}

fn buffer(bytes: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: bytes.as_ptr(),
        length: bytes.len(),
    }
}

fn chat_request() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-the-callers-own"),
    ]
}

fn chat_body() -> Vec<u8> {
    json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}]})
        .to_string()
        .into_bytes()
}

#[test]
fn a_configuration_names_a_known_stage_and_parses_or_is_refused() {
    let _serial = serial();
    assert!(Loaded::stage("ai_gateway", &plugin_json()).is_some());
    assert!(Loaded::stage("ai_gateway_backend", &plugin_json()).is_some());
    assert!(Loaded::stage("ai_gateway_sts", &plugin_json()).is_some());
    assert!(
        Loaded::stage("ai_gateway_extra", &plugin_json()).is_none(),
        "unknown stage"
    );
    assert!(Loaded::stage("ai_gateway", "{").is_none(), "invalid JSON");
    assert!(
        Loaded::stage("ai_gateway", r#"{"backends": {}}"#).is_none(),
        "no backends"
    );
}

#[test]
fn the_routing_stage_defines_its_metrics_while_loading() {
    let _serial = serial();
    let routing = Loaded::stage("ai_gateway", &plugin_json()).unwrap();
    let defined = routing.envoy.defined.lock().unwrap().clone();
    let names: Vec<&str> = defined.iter().map(|(name, _)| name.as_str()).collect();
    // The series `metric_series` names, defined up front (Envoy refuses definitions later).
    for token_type in ["input", "output", "cached_input", "cache_creation_input"] {
        let series = format!(
            "gen_ai.client.token.usage;operation=chat;provider=aws.bedrock;request_model=llama;\
             response_model=us.meta.llama3-2-1b-instruct-v1:0;backend=bedrock;token_type={token_type}"
        );
        assert!(names.contains(&series.as_str()), "{series} in {names:?}");
    }
    assert!(
        defined.iter().any(|(_, labels)| !labels.is_empty()),
        "the labelled fallbacks: {defined:?}"
    );
}

#[test]
fn the_routing_stage_holds_the_headers_routes_by_the_body_and_drops_the_callers_key() {
    let _serial = serial();
    let routing = Loaded::stage("ai_gateway", &plugin_json()).unwrap();
    let mut stream = routing.stream(&chat_request());
    assert_eq!(stream.request_headers(false), abi::HEADERS_STOP_ITERATION);
    assert_eq!(
        stream.envoy.header("authorization"),
        None,
        "the caller's key never goes on"
    );
    assert!(stream.envoy.header("x-ai-eg-stream-key").is_some());
    assert_eq!(stream.request_body(&chat_body()), abi::BODY_CONTINUE);
    assert_eq!(stream.envoy.header("x-ai-eg-model"), Some("llama"));
    assert_eq!(
        stream.envoy.route_cache_cleared, 1,
        "the route is picked again"
    );
    assert!(stream.envoy.sent.is_none());
}

#[test]
fn a_local_reply_re_enters_the_streams_hooks_without_harm() {
    let _serial = serial();
    let routing = Loaded::stage("ai_gateway", &plugin_json()).unwrap();
    let mut stream = routing.stream(&chat_request());
    // A bodiless chat request is refused from the headers hook; Envoy runs the stream's
    // local-reply and response hooks inside `send_response`, while that hook is still running.
    assert_eq!(stream.request_headers(true), abi::HEADERS_STOP_ITERATION);
    let (status, body) = stream.sent_json();
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

#[test]
fn the_backend_stage_translates_signs_and_never_logs_the_secret() {
    let _serial = serial();
    let backend = Loaded::stage("ai_gateway_backend", &plugin_json()).unwrap();
    let mut stream = backend.routed_stream();
    assert_eq!(stream.request_headers(false), abi::HEADERS_STOP_ITERATION);
    assert_eq!(stream.request_body(&chat_body()), abi::BODY_CONTINUE);
    let envoy = &stream.envoy;
    assert_eq!(
        envoy.header(":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    );
    let authorization = envoy.header("authorization").unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{authorization}"
    );
    let sent: Value = serde_json::from_slice(&envoy.request_body[0]).unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "Hi", "{sent}");
    assert_eq!(
        envoy.header("content-length"),
        Some(envoy.request_body[0].len().to_string().as_str())
    );
    assert_eq!(envoy.header("x-ai-eg-model"), None);
    let logs = LOGS.with(|logs| logs.borrow().join("\n"));
    assert!(!logs.contains(SECRET), "{logs}");
}

#[test]
fn a_header_envoy_refuses_to_write_refuses_the_request() {
    let _serial = serial();
    let backend = Loaded::stage("ai_gateway_backend", &plugin_json()).unwrap();
    let mut stream = backend.routed_stream();
    stream.envoy.refused_headers = vec!["authorization".into()];
    stream.request_headers(false);
    assert_eq!(
        stream.request_body(&chat_body()),
        abi::BODY_STOP_ITERATION_AND_BUFFER,
        "an unsigned request must not go on"
    );
    let (status, body) = stream.sent_json();
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "server_error", "{body}");
}

#[test]
fn a_backend_without_a_configured_cluster_is_answered_not_proxied() {
    let _serial = serial();
    let backend = Loaded::stage("ai_gateway_backend", &plugin_json()).unwrap();
    let mut stream = backend.stream(&chat_request());
    stream.envoy.cluster = Some("some-other-cluster".into());
    assert_eq!(stream.request_headers(false), abi::HEADERS_STOP_ITERATION);
    let (status, _) = stream.sent_json();
    assert_eq!(status, 500);
}

/// An upstream filter whose stream is cut mid-way gets no hook but `destroy` (no filter pointer):
/// the request is counted there, failed with 499, through the configuration's metrics.
#[test]
fn a_stream_cut_mid_way_is_counted_when_envoy_destroys_the_filter() {
    use bedrock_gateway_core::bedrock::eventstream::encode_frame;
    let _serial = serial();
    let routing = Loaded::stage("ai_gateway", &plugin_json()).unwrap();
    let backend = Loaded::stage("ai_gateway_backend", &plugin_json()).unwrap();
    let mut stream = backend.routed_stream();
    assert_eq!(stream.request_headers(false), abi::HEADERS_STOP_ITERATION);
    let body =
        json!({"model": "llama", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(
        stream.request_body(body.to_string().as_bytes()),
        abi::BODY_CONTINUE
    );
    let event = |kind: &str, payload: &str| {
        encode_frame(
            &[(":event-type", kind), (":message-type", "event")],
            payload.as_bytes(),
        )
    };
    stream.envoy.response_headers = vec![
        (":status".into(), "200".into()),
        (
            "content-type".into(),
            "application/vnd.amazon.eventstream".into(),
        ),
    ];
    stream.envoy.response_body[0] = [
        event("messageStart", r#"{"role":"assistant"}"#),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
        ),
    ]
    .concat();
    let envoy = stream.envoy.ptr();
    assert_eq!(
        crate::envoy_dynamic_module_on_http_filter_response_headers(envoy, stream.module, false),
        abi::HEADERS_CONTINUE
    );
    assert_eq!(
        crate::envoy_dynamic_module_on_http_filter_response_body(envoy, stream.module, false),
        abi::BODY_CONTINUE
    );
    let cut = || {
        let defined = routing.envoy.defined.lock().unwrap().clone();
        let recorded = routing.envoy.recorded.lock().unwrap().clone();
        recorded
            .iter()
            .filter(|(id, values, _)| {
                defined.get(id - 1).is_some_and(|(name, _)| {
                    name.starts_with("gen_ai.server.request.duration")
                        && (name.contains("error_type=499") || values.iter().any(|v| v == "499"))
                })
            })
            .count()
    };
    assert_eq!(cut(), 0, "not while it runs");
    drop(stream);
    assert_eq!(cut(), 1, "counted once, as cut");
}

//! Both stages end to end against a fake host: what they read, write, answer, hold, sign and
//! report, hook by hook, as Envoy would call them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use bedrock_gateway_core::aws::broker::{Reply, SharedStore};
use bedrock_gateway_core::aws::credentials::HttpCall;
use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::headers::HeaderSnapshot;
use bedrock_gateway_core::report::{self, Extra, MetricLabels, Sample, UsageSummary};
use bedrock_gateway_core::stream::backend::{self, BackendStream, Settled, Worker};
use bedrock_gateway_core::stream::batch::{self, PartAnswer};
use bedrock_gateway_core::stream::hand_over::{CallerRequest, HandOver};
use bedrock_gateway_core::stream::routing::RoutingStream;
use bedrock_gateway_core::stream::sts::StsStream;
use bedrock_gateway_core::stream::{reply_busy, Flow, Host, HostCallFailed, Recorder, Side, Stage};
use common::{frame_bytes, parse_sse, FakeStore};
use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::Arc;

const LLAMA: &str = "us.meta.llama3-2-1b-instruct-v1:0";
/// 2030-01-01T00:00:00Z is when the fetched credentials expire; the clock is an hour before.
const NOW_MS: u64 = (1_893_456_000 - 3600) * 1000;

#[derive(Default)]
struct FakeHost {
    request_headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    request_body: Vec<u8>,
    response_body: Vec<u8>,
    sent: Option<(u16, Value)>,
    route_cache_cleared: usize,
    cluster: Option<String>,
    code_details: Option<String>,
    usage: Vec<UsageSummary>,
    metrics: Vec<(String, Sample)>,
    /// Calls the stream made through Envoy, with their tokens.
    calls: Vec<(u64, HttpCall)>,
    /// Header writes (`"request authorization"`) and body replacements (`"request body"`) this
    /// host refuses, as Envoy can.
    refused_edits: Vec<&'static str>,
}

impl FakeHost {
    fn refuse(&self, side: Side, what: &str) -> Result<(), HostCallFailed> {
        let edit = format!(
            "{} {what}",
            if side == Side::Request {
                "request"
            } else {
                "response"
            }
        );
        match self.refused_edits.contains(&edit.as_str()) {
            true => Err(HostCallFailed(format!("refused {edit}"))),
            false => Ok(()),
        }
    }

    fn request(method: &str, path: &str, extra: &[(&str, &str)], body: Value) -> Self {
        let mut headers = vec![
            (":method", method),
            (":path", path),
            ("content-type", "application/json"),
            ("x-request-id", "req-1"),
        ];
        // The routing stage's key for the request, as the backend stage finds it.
        if path.starts_with("/v1/")
            || path.starts_with("/model/")
            || path.starts_with("/anthropic/")
        {
            headers.push(("x-ai-eg-stream-key", "key-1"));
        }
        headers.extend_from_slice(extra);
        FakeHost {
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            request_body: serde_json::to_vec(&body).unwrap(),
            ..FakeHost::default()
        }
    }

    fn map(&self, side: Side) -> &Vec<(String, String)> {
        match side {
            Side::Request => &self.request_headers,
            Side::Response => &self.response_headers,
        }
    }

    fn get(&self, side: Side, name: &str) -> Option<&str> {
        self.map(side)
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn respond(&mut self, status: u16, content_type: &str, body: Vec<u8>) {
        self.response_headers = vec![
            (":status".into(), status.to_string()),
            ("content-type".into(), content_type.into()),
        ];
        self.response_body = body;
    }

    /// The sum of the samples of metric `name` whose extra labels read `extra`.
    fn sum(&self, name: &str, extra: &str) -> u64 {
        self.metrics
            .iter()
            .filter(|(_, s)| s.name == name && s.extra.to_string() == extra)
            .map(|(_, s)| s.value)
            .sum()
    }
}

thread_local! {
    static HAND_OVER: Rc<HandOver> = Rc::default();
}

impl Recorder for FakeHost {
    fn now_ms(&self) -> u64 {
        NOW_MS
    }

    fn record_metric(&mut self, labels: &MetricLabels, sample: Sample) {
        self.metrics.push((labels.suffix.clone(), sample));
    }

    /// One per test thread, as the hosts keep one per worker thread: the stages of a test's
    /// request find each other's state, other tests' requests never do.
    fn hand_over(&self) -> Rc<HandOver> {
        HAND_OVER.with(Rc::clone)
    }
}

impl Host for FakeHost {
    fn headers(&self, side: Side) -> HeaderSnapshot {
        HeaderSnapshot::from_pairs(
            self.map(side)
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
    }

    fn header(&self, side: Side, name: &str) -> Option<String> {
        self.get(side, name).map(str::to_owned)
    }

    fn set_header(
        &mut self,
        side: Side,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostCallFailed> {
        self.refuse(side, name)?;
        let map = match side {
            Side::Request => &mut self.request_headers,
            Side::Response => &mut self.response_headers,
        };
        map.retain(|(k, _)| k != name);
        if let Some(value) = value {
            map.push((name.to_owned(), value.to_owned()));
        }
        Ok(())
    }

    fn body(&mut self, side: Side) -> Vec<u8> {
        match side {
            Side::Request => self.request_body.clone(),
            Side::Response => self.response_body.clone(),
        }
    }

    fn replace_body(&mut self, side: Side, value: &[u8]) -> Result<(), HostCallFailed> {
        self.refuse(side, "body")?;
        match side {
            Side::Request => self.request_body = value.to_vec(),
            Side::Response => self.response_body = value.to_vec(),
        }
        Ok(())
    }

    fn send_json(&mut self, status: u16, body: &[u8]) {
        assert!(self.sent.is_none(), "a stream answers at most once");
        self.sent = Some((status, serde_json::from_slice(body).unwrap()));
    }

    fn clear_route_cache(&mut self) {
        self.route_cache_cleared += 1;
    }

    fn cluster_name(&self) -> Option<String> {
        self.cluster.clone()
    }

    fn response_code_details(&self) -> Option<String> {
        self.code_details.clone()
    }

    fn record_usage(&mut self, summary: &UsageSummary) {
        self.usage.push(summary.clone());
    }

    fn dispatch_call(&mut self, call: &HttpCall, _timeout_ms: u64) -> Option<u64> {
        let token = 100 + self.calls.len() as u64;
        self.calls.push((token, call.clone()));
        Some(token)
    }
}

fn config() -> Arc<Config> {
    Arc::new(Config::parse(config_json().to_string().as_bytes(), &|_| None).unwrap())
}

fn config_json() -> Value {
    json!({
        "backends": {
            "static": {"schema": "converse", "region": "us-east-1", "calls_cluster": "static~calls",
                       "credentials": {"source": "inline", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret"}},
            "pod": {"schema": "converse", "region": "eu-west-1", "calls_cluster": "pod~calls", "credentials": {"source": "pod_identity", "cluster": "agent"}},
            "west": {"schema": "anthropic", "region": "us-west-2", "model_name_override": "us.anthropic.claude-x-v1:0",
                     "credentials": {"source": "inline", "access_key_id": "AKIDWEST", "secret_access_key": "secret"}},
            "keyed": {"schema": "converse", "region": "us-east-1", "calls_cluster": "keyed~calls", "credentials": {"source": "api_key", "key": "ABSKdemo"}},
            "injected": {"schema": "converse", "region": "us-east-1", "calls_cluster": "injected~calls", "credentials": {"source": "api_key", "injected_by_envoy": true}}
        },
        "failover": {"static>west": ["static", "west"]},
        "models": [LLAMA]
    })
}

/// The routing stage of a request whose backend stage a test runs: its request phase, then (once
/// the backend stage is done) its response phase, on this thread.
struct Downstream {
    routing: RoutingStream,
    host: FakeHost,
}

impl Downstream {
    fn start() -> Self {
        Self::of("/v1/chat/completions", chat(false))
    }

    /// The routing stage of a request of `body` to `path`.
    fn of(path: &str, body: Value) -> Self {
        let mut host = FakeHost::request("POST", path, &[], body);
        let mut routing = RoutingStream::new(Some(config()));
        routing.on_request_headers(&mut host, false);
        routing.on_request_body(&mut host, true);
        Downstream { routing, host }
    }

    /// Gives `upstream` the key the routing stage wrote for this request.
    fn hand_key_to(&self, upstream: &mut FakeHost) {
        let key = self.host.get(Side::Request, "x-ai-eg-stream-key").unwrap();
        upstream
            .set_header(Side::Request, "x-ai-eg-stream-key", Some(key))
            .unwrap();
    }

    fn finish(mut self) -> FakeHost {
        self.host.respond(200, "application/json", Vec::new());
        self.routing.on_response_headers(&mut self.host);
        self.routing.on_response_body(&mut self.host, true);
        self.host
    }
}

/// The backend stage of `host`'s request through `cluster`, sent on, with Bedrock's 200 and an
/// event stream's headers in.
fn streaming(
    host: &mut FakeHost,
    cluster: &str,
    worker: &mut Worker,
    store: &FakeStore,
) -> BackendStream {
    let (mut stream, flow) = backend_request(host, cluster, worker, store);
    assert_eq!(flow, Flow::Continue);
    host.respond(200, "application/vnd.amazon.eventstream", Vec::new());
    stream.on_response_headers(host, false);
    stream
}

fn chat(stream: bool) -> Value {
    json!({"model": LLAMA, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]})
}

/// The backend stage's request phase, as Envoy calls it after the routing stage picked `cluster`.
fn backend_request(
    host: &mut FakeHost,
    cluster: &str,
    worker: &mut Worker,
    store: &FakeStore,
) -> (BackendStream, Flow) {
    host.cluster = Some(cluster.into());
    host.request_headers
        .push(("x-ai-eg-model".into(), LLAMA.into()));
    let mut stream = BackendStream::new(7, Some(config()));
    assert_eq!(
        stream.on_request_headers(host, worker, store, false),
        Flow::Pause,
        "headers wait for the body"
    );
    let flow = stream.on_request_body(host, worker, store, true);
    (stream, flow)
}

#[test]
fn the_routing_stage_routes_by_the_body_model_without_the_callers_credentials() {
    let mut host = FakeHost::request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-caller"), ("x-amz-date", "x")],
        chat(false),
    );
    let mut stream = RoutingStream::new(Some(config()));
    assert_eq!(stream.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        host.get(Side::Request, "authorization"),
        None,
        "the caller's key never reaches AWS"
    );
    assert_eq!(host.get(Side::Request, "x-amz-date"), None);
    assert_eq!(
        stream.on_request_body(&mut host, false),
        Flow::Pause,
        "the body is read whole"
    );
    assert_eq!(stream.on_request_body(&mut host, true), Flow::Continue);
    assert_eq!(host.get(Side::Request, "x-ai-eg-model"), Some(LLAMA));
    assert_eq!(
        host.route_cache_cleared, 1,
        "the route is picked again from the model header"
    );
    assert!(host.sent.is_none());
}

/// With callers authenticated by Envoy (api_key_auth, jwt_authn after the routing stage), their keys
/// are left for those filters, a caller's own copy of the caller header is removed before they set
/// it, and the backend stage removes both before AWS and names the caller in the usage summary.
#[test]
fn callers_authenticated_by_envoy_are_named_and_their_keys_still_never_reach_aws() {
    let mut json = config_json();
    json["caller_header"] = json!("x-ai-gateway-caller");
    let config = Arc::new(Config::parse(json.to_string().as_bytes(), &|_| None).unwrap());
    let headers = [
        ("authorization", "Bearer sk-demo-bob"),
        ("x-api-key", "sk-demo-bob"),
        ("x-ai-gateway-caller", "alice"),
        ("x-request-id", "req-callers"),
    ];
    let mut downstream = FakeHost::request("POST", "/v1/chat/completions", &headers, chat(false));
    let mut routing = RoutingStream::new(Some(Arc::clone(&config)));
    assert_eq!(
        routing.on_request_headers(&mut downstream, false),
        Flow::Pause
    );
    assert_eq!(
        downstream.get(Side::Request, "authorization"),
        Some("Bearer sk-demo-bob"),
        "left for Envoy's api_key_auth"
    );
    assert_eq!(
        downstream.get(Side::Request, "x-ai-gateway-caller"),
        None,
        "a caller cannot name itself"
    );
    routing.on_request_body(&mut downstream, true);

    // What api_key_auth (with hide_credentials false) leaves for the upstream: the key and the caller it found.
    let mut upstream = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        ..FakeHost::default()
    };
    upstream
        .request_headers
        .push(("x-ai-gateway-caller".into(), "bob".into()));
    upstream.cluster = Some("static".into());
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut backend = BackendStream::new(11, Some(config));
    assert_eq!(
        backend.on_request_headers(&mut upstream, &mut worker, &store, false),
        Flow::Pause
    );
    assert_eq!(
        backend.on_request_body(&mut upstream, &mut worker, &store, true),
        Flow::Continue
    );
    assert!(upstream
        .get(Side::Request, "authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 "));
    assert_eq!(upstream.get(Side::Request, "x-api-key"), None);
    assert_eq!(
        upstream.get(Side::Request, "x-ai-gateway-caller"),
        Some("bob"),
        "the access log reads it from the same headers"
    );
    upstream.respond(200, "application/json", br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2}}"#.to_vec());
    backend.on_response_headers(&mut upstream, false);
    backend.on_response_body(&mut upstream, true);
    downstream.respond(200, "application/json", Vec::new());
    routing.on_response_headers(&mut downstream);
    routing.on_response_body(&mut downstream, true);
    assert!(
        downstream
            .usage
            .iter()
            .any(|u| u.json.contains("\"caller\":\"bob\"")),
        "{:?}",
        downstream.usage
    );
}

#[test]
fn the_routing_stage_answers_what_needs_no_backend() {
    let mut models = FakeHost::request("GET", "/v1/models", &[], Value::Null);
    assert_eq!(
        RoutingStream::new(Some(config())).on_request_headers(&mut models, true),
        Flow::Pause
    );
    let (status, body) = models.sent.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], LLAMA);

    let mut empty = FakeHost::request("POST", "/anthropic/v1/messages", &[], Value::Null);
    assert_eq!(
        RoutingStream::new(Some(config())).on_request_headers(&mut empty, true),
        Flow::Pause
    );
    let (status, body) = empty.sent.unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        body["type"], "error",
        "Anthropic's error format under /anthropic: {body}"
    );

    let mut no_model =
        FakeHost::request("POST", "/v1/chat/completions", &[], json!({"messages": []}));
    let mut stream = RoutingStream::new(Some(config()));
    stream.on_request_headers(&mut no_model, false);
    assert_eq!(stream.on_request_body(&mut no_model, true), Flow::Pause);
    let (status, body) = no_model.sent.unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("model"),
        "{body}"
    );

    // Paths under the APIs' prefixes that the gateway does not serve are named in the caller's format.
    for (path, format_key) in [
        ("/v1/completions", "error"),
        ("/anthropic/v1/complete", "type"),
    ] {
        let mut unserved = FakeHost::request(
            "POST",
            path,
            &[("x-ai-eg-model", LLAMA)],
            json!({"model": LLAMA}),
        );
        assert_eq!(
            RoutingStream::new(Some(config())).on_request_headers(&mut unserved, false),
            Flow::Pause
        );
        let (status, body) = unserved.sent.unwrap();
        assert_eq!(status, 404);
        assert!(body.get(format_key).is_some(), "{body}");
        assert!(
            body.to_string()
                .contains(&format!("does not serve POST {path}")),
            "{body}"
        );
    }

    // Elsewhere a caller's own routing header must not pick a Bedrock cluster.
    let mut other = FakeHost::request("GET", "/healthz", &[("x-ai-eg-model", LLAMA)], Value::Null);
    assert_eq!(
        RoutingStream::new(Some(config())).on_request_headers(&mut other, true),
        Flow::Continue
    );
    assert_eq!(other.get(Side::Request, "x-ai-eg-model"), None);
    assert_eq!(other.route_cache_cleared, 1);
}

#[test]
fn envoys_own_replies_reach_callers_in_their_format() {
    let mut host = FakeHost::request(
        "POST",
        "/anthropic/v1/messages",
        &[],
        json!({"model": "nope", "max_tokens": 5, "messages": []}),
    );
    let mut stream = RoutingStream::new(Some(config()));
    stream.on_request_headers(&mut host, false);
    stream.on_request_body(&mut host, true);
    host.respond(404, "text/plain", b"route not found".to_vec());
    host.code_details = Some("route_not_found".into());
    assert_eq!(stream.on_response_headers(&mut host), Flow::Continue);
    assert_eq!(
        host.get(Side::Response, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        stream.on_response_body(&mut host, false),
        Flow::Pause,
        "the replacement waits for the end"
    );
    assert_eq!(stream.on_response_body(&mut host, true), Flow::Continue);
    let body: Value = serde_json::from_slice(&host.response_body).unwrap();
    assert_eq!(body["type"], "error");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "names the model: {body}"
    );
}

#[test]
fn the_backend_stage_translates_signs_and_translates_back() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let downstream = Downstream::start();
    let mut host = FakeHost::request(
        "POST",
        "/v1/chat/completions",
        &[("accept-encoding", "gzip")],
        chat(false),
    );
    downstream.hand_key_to(&mut host);
    let (mut stream, flow) = backend_request(&mut host, "static", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        host.get(Side::Request, ":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    );
    assert_eq!(
        host.get(Side::Request, ":authority"),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    let authorization = host.get(Side::Request, "authorization").unwrap();
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20291231/us-east-1/bedrock/aws4_request"
        ),
        "{authorization}"
    );
    assert_eq!(
        host.get(Side::Request, "x-ai-eg-model"),
        None,
        "the routing header stays inside the gateway"
    );
    assert_eq!(
        host.get(Side::Request, "accept-encoding"),
        None,
        "the response must come back uncompressed"
    );
    let sent: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(
        sent["messages"][0]["content"][0]["text"], "Hi",
        "a Converse body: {sent}"
    );
    assert_eq!(
        host.get(Side::Request, "content-length"),
        Some(host.request_body.len().to_string().as_str())
    );

    let converse = json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}}, "stopReason": "end_turn",
                          "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}});
    host.respond(
        200,
        "application/json",
        serde_json::to_vec(&converse).unwrap(),
    );
    assert_eq!(
        stream.on_response_headers(&mut host, false),
        Flow::Pause,
        "headers wait for the translated length"
    );
    assert_eq!(stream.on_response_body(&mut host, false), Flow::Pause);
    assert_eq!(stream.on_response_body(&mut host, true), Flow::Continue);
    let answer: Value = serde_json::from_slice(&host.response_body).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
    assert_eq!(answer["usage"]["total_tokens"], 5);
    assert_eq!(
        host.get(Side::Response, "content-length"),
        Some(host.response_body.len().to_string().as_str())
    );

    assert_eq!(
        host.metrics
            .iter()
            .filter(|(_, s)| s.name == report::REQUEST_DURATION && s.extra == Extra::None)
            .count(),
        1
    );
    assert_eq!(host.sum(report::TOKEN_USAGE, ";token_type=input"), 3);
    assert_eq!(host.sum(report::TOKEN_USAGE, ";token_type=output"), 2);
    assert!(host
        .metrics
        .iter()
        .all(|(labels, _)| labels.contains("us.meta.llama3-2-1b") && labels.contains("static")));

    // The routing stage of the same request, on the same thread, puts the summary where access logs read it.
    let downstream = downstream.finish();
    let [summary] = downstream.usage.as_slice() else {
        panic!("one summary: {:?}", downstream.usage)
    };
    assert_eq!(summary.total_tokens, 5);
    let summary: Value = serde_json::from_str(&summary.json).unwrap();
    assert_eq!(
        (summary["backend"].as_str(), summary["status"].as_u64()),
        (Some("static"), Some(200))
    );
}

#[test]
fn streamed_responses_are_translated_chunk_by_chunk() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(true));
    let (mut stream, flow) = backend_request(&mut host, "static", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        host.get(Side::Request, ":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse-stream")
    );
    host.respond(200, "application/vnd.amazon.eventstream", Vec::new());
    assert_eq!(
        stream.on_response_headers(&mut host, false),
        Flow::Continue,
        "streams are never held"
    );
    assert_eq!(
        host.get(Side::Response, "content-type"),
        Some("text/event-stream")
    );

    let frames = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "Hel"}}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "lo"}}}),
        json!({"event": "messageStop", "payload": {"stopReason": "end_turn"}}),
        json!({"event": "metadata", "payload": {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {"latencyMs": 1}}}),
    ];
    let bytes: Vec<u8> = frames.iter().flat_map(frame_bytes).collect();
    // The first chunk ends inside the third frame: its text must wait, the first delta must not.
    let cut = frame_bytes(&frames[0]).len() + frame_bytes(&frames[1]).len() + 5;
    host.response_body = bytes[..cut].to_vec();
    assert_eq!(stream.on_response_body(&mut host, false), Flow::Continue);
    let first = parse_sse(&host.response_body);
    assert_eq!(
        first.last().unwrap()["choices"][0]["delta"]["content"],
        "Hel"
    );
    host.response_body = bytes[cut..].to_vec();
    assert_eq!(stream.on_response_body(&mut host, true), Flow::Continue);
    let rest = parse_sse(&host.response_body);
    assert_eq!(rest[0]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(rest.last().unwrap(), "[DONE]");
    assert_eq!(host.sum(report::TOKEN_USAGE, ";token_type=output"), 2);
    assert!(host
        .metrics
        .iter()
        .any(|(_, s)| s.name == report::TIME_TO_FIRST_TOKEN));
}

/// Codex hangs up as soon as `response.completed` arrives, before Bedrock's body ends: the
/// request is counted, and its usage published for access logs and the budgets' charge, when the
/// caller's stream has its last event, not when a body end that never comes would be seen.
#[test]
fn a_stream_is_counted_and_charged_at_its_last_event_though_the_caller_hangs_up_there() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let responses = json!({"model": LLAMA, "stream": true, "input": "Hi"});
    let downstream = Downstream::of("/v1/responses", responses.clone());
    let mut host = FakeHost::request("POST", "/v1/responses", &[], responses);
    downstream.hand_key_to(&mut host);
    let Downstream {
        mut routing,
        host: mut downstream_host,
    } = downstream;
    let mut stream = streaming(&mut host, "static", &mut worker, &store);
    let frames = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "Hello"}}}),
        json!({"event": "messageStop", "payload": {"stopReason": "end_turn"}}),
    ];
    host.response_body = frames.iter().flat_map(frame_bytes).collect();
    stream.on_response_body(&mut host, false);
    assert_eq!(
        host.sum(report::TOKEN_USAGE, ";token_type=output"),
        0,
        "not before the usage event"
    );
    downstream_host.respond(200, "text/event-stream", host.response_body.clone());
    routing.on_response_headers(&mut downstream_host);
    routing.on_response_body(&mut downstream_host, false);
    assert!(downstream_host.usage.is_empty());

    let usage = json!({"event": "metadata", "payload": {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {"latencyMs": 1}}});
    host.response_body = frame_bytes(&usage);
    stream.on_response_body(&mut host, false);
    let events = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(events.contains("event: response.completed"), "{events}");
    assert_eq!(host.sum(report::TOKEN_USAGE, ";token_type=output"), 2);
    downstream_host.response_body = host.response_body.clone();
    routing.on_response_body(&mut downstream_host, false);
    assert_eq!(
        downstream_host.usage.len(),
        1,
        "published before the body's end"
    );
    assert_eq!(downstream_host.usage[0].total_tokens, 5);

    // Had the body ended after all, nothing is counted or published twice.
    host.response_body.clear();
    stream.on_response_body(&mut host, true);
    assert_eq!(host.sum(report::TOKEN_USAGE, ";token_type=output"), 2);
    downstream_host.response_body.clear();
    routing.on_response_body(&mut downstream_host, true);
    assert_eq!(downstream_host.usage.len(), 1);
}

/// A stream Bedrock fails mid-way (an exception frame after a 200) ends with an error event; the
/// request counts as failed with that error's status, not as the 200 its response began with.
#[test]
fn a_stream_failing_mid_way_is_counted_with_its_errors_status() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(true));
    let mut stream = streaming(&mut host, "static", &mut worker, &store);
    let frames = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "Hel"}}}),
        json!({"exception": "throttlingException", "payload": {"message": "Too many tokens"}}),
    ];
    host.response_body = frames.iter().flat_map(frame_bytes).collect();
    stream.on_response_body(&mut host, false);
    let events = parse_sse(&host.response_body);
    assert!(events.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("throttlingException"));
    let durations: Vec<_> = host
        .metrics
        .iter()
        .filter(|(_, s)| s.name == report::REQUEST_DURATION)
        .map(|(_, s)| s.extra.to_string())
        .collect();
    assert_eq!(
        durations,
        [";error_type=429"],
        "counted at the error event, as failed"
    );
}

/// An Anthropic stream reports its input at its start: that usage so far is published as the
/// stream runs, reading as cut (499), so an answer interrupted before its end (the routing stage is
/// done before the backend stage hears of a cut) is still charged it; its end's summary replaces it.
#[test]
fn a_running_streams_usage_so_far_is_published_for_the_budgets() {
    use base64::Engine as _;
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let messages = json!({"model": LLAMA, "stream": true, "max_tokens": 10,
                          "messages": [{"role": "user", "content": "Hi"}]});
    let routed = Downstream::of("/anthropic/v1/messages", messages.clone());
    let mut host = FakeHost::request("POST", "/anthropic/v1/messages", &[], messages);
    routed.hand_key_to(&mut host);
    let Downstream {
        mut routing,
        host: mut downstream,
    } = routed;
    let mut stream = streaming(&mut host, "west", &mut worker, &store);
    downstream.respond(200, "text/event-stream", Vec::new());
    routing.on_response_headers(&mut downstream);
    let chunk = |event: Value| {
        let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        frame_bytes(&json!({"event": "chunk", "payload": {"bytes": bytes}}))
    };
    let mut relay = |events: &[Value], end: bool| {
        host.response_body = events.iter().cloned().flat_map(chunk).collect();
        stream.on_response_body(&mut host, end);
        downstream.response_body = host.response_body.clone();
        routing.on_response_body(&mut downstream, end);
        downstream.usage.last().map(|u| {
            (
                u.json.clone(),
                u.total_tokens,
                downstream.usage.len(),
                u.span.is_some(),
            )
        })
    };
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude", "content": [], "stop_reason": null,
        "usage": {"input_tokens": 12, "output_tokens": 1}}});
    let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}});
    let (json, total, _, traced) = relay(
        &[
            start,
            json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}),
        ],
        false,
    )
    .expect("published as it runs");
    assert_eq!(total, 13);
    assert!(json.contains("\"status\":499"), "{json}");
    assert!(
        !traced,
        "no span attributes until the end: an error type would outlive a success"
    );
    assert_eq!(
        relay(&[delta], false).map(|(_, total, published, _)| (total, published)),
        Some((13, 1)),
        "nothing new: not published again"
    );
    let (json, total, _, _) = relay(&[json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        json!({"type": "message_stop"})], true).unwrap();
    assert_eq!(total, 16);
    assert!(json.contains("\"status\":200"), "{json}");
    assert_eq!(
        host.sum(report::TOKEN_USAGE, ";token_type=input"),
        12,
        "counted once, at the end"
    );
}

/// A stream cut before its last event (the caller hung up, or Bedrock's connection broke) gets
/// no further hook but the stream's end: it is counted there, failed, with the tokens its events
/// had reported, and leaves no summary the routing stage, already done, would never take.
#[test]
fn a_stream_cut_before_its_end_is_counted_as_failed_when_the_stream_ends() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(true));
    let mut stream = streaming(&mut host, "static", &mut worker, &store);
    let frames = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "Hel"}}}),
    ];
    host.response_body = frames.iter().flat_map(frame_bytes).collect();
    stream.on_response_body(&mut host, false);
    assert!(host.metrics.is_empty(), "not counted while it runs");
    let held = host.hand_over().held().1;

    stream.on_stream_complete(&mut host);
    let durations: Vec<_> = host
        .metrics
        .iter()
        .filter(|(_, s)| s.name == report::REQUEST_DURATION)
        .map(|(_, s)| s.extra.to_string())
        .collect();
    assert_eq!(durations, [";error_type=499"]);
    assert_eq!(host.hand_over().held().1, held, "no summary left behind");
    stream.on_stream_complete(&mut host);
    assert_eq!(
        host.metrics
            .iter()
            .filter(|(_, s)| s.name == report::REQUEST_DURATION)
            .count(),
        1,
        "counted once"
    );

    // A stream that reached its end is not counted again when it ends.
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (mut stream, _) = backend_request(&mut host, "static", &mut worker, &store);
    let answer = json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
                        "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
    host.respond(
        200,
        "application/json",
        serde_json::to_vec(&answer).unwrap(),
    );
    stream.on_response_headers(&mut host, false);
    stream.on_response_body(&mut host, true);
    let counted = host.metrics.len();
    assert!(counted > 0);
    stream.on_stream_complete(&mut host);
    assert_eq!(host.metrics.len(), counted);
}

#[test]
fn each_attempt_through_a_composite_cluster_is_translated_and_signed_for_its_backend() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let downstream = Downstream::start();
    let mut first = FakeHost::request(
        "POST",
        "/v1/chat/completions",
        &[("x-envoy-attempt-count", "1")],
        chat(false),
    );
    downstream.hand_key_to(&mut first);
    let (_, flow) = backend_request(&mut first, "static>west", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        first.get(Side::Request, ":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    );
    assert!(first
        .get(Side::Request, "authorization")
        .unwrap()
        .contains("/us-east-1/bedrock/aws4_request"));
    assert_eq!(
        first.get(Side::Request, "x-envoy-attempt-count"),
        None,
        "Envoy's count is not sent to AWS"
    );

    // Envoy retries with the headers and body as the first try's filters left them.
    for attempt in ["2", "3"] {
        let mut retry = FakeHost {
            request_headers: first.request_headers.clone(),
            request_body: first.request_body.clone(),
            ..FakeHost::default()
        };
        retry
            .request_headers
            .push(("x-envoy-attempt-count".into(), attempt.into()));
        retry.cluster = Some("static>west".into());
        let mut stream = BackendStream::new(8, Some(config()));
        assert_eq!(
            stream.on_request_headers(&mut retry, &mut worker, &store, false),
            Flow::Pause
        );
        assert_eq!(
            stream.on_request_body(&mut retry, &mut worker, &store, true),
            Flow::Continue
        );
        // The fallback backend's region, credentials, model override and schema.
        assert_eq!(
            retry.get(Side::Request, ":path"),
            Some("/model/us.anthropic.claude-x-v1%3A0/converse"),
            "try {attempt}"
        );
        assert_eq!(
            retry.get(Side::Request, ":authority"),
            Some("bedrock-runtime.us-west-2.amazonaws.com")
        );
        assert!(retry
            .get(Side::Request, "authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDWEST/"));
        let sent: Value = serde_json::from_slice(&retry.request_body).unwrap();
        assert_eq!(
            sent["messages"][0]["content"][0]["text"], "Hi",
            "translated again from the caller's body: {sent}"
        );
    }

    // The routing stage forgets the first try when the response ends; a retry then has nothing to start from.
    downstream.finish();
    let mut late = FakeHost {
        request_headers: first.request_headers.clone(),
        ..FakeHost::default()
    };
    late.request_headers
        .push(("x-envoy-attempt-count".into(), "2".into()));
    late.cluster = Some("static>west".into());
    assert_eq!(
        BackendStream::new(9, Some(config())).on_request_headers(
            &mut late,
            &mut worker,
            &store,
            false
        ),
        Flow::Pause
    );
    assert_eq!(late.sent.map(|(status, _)| status), Some(502));
}

#[test]
fn a_bedrock_api_key_is_sent_as_a_bearer_token_and_nothing_is_signed() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut keyed = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (_, flow) = backend_request(&mut keyed, "keyed", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        keyed.get(Side::Request, ":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    );
    assert_eq!(
        keyed.get(Side::Request, "authorization"),
        Some("Bearer ABSKdemo")
    );
    assert_eq!(keyed.get(Side::Request, "x-amz-date"), None);

    // Injected by Envoy after this stage: the stage leaves Authorization to it.
    let mut injected = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (_, flow) = backend_request(&mut injected, "injected", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(injected.get(Side::Request, "authorization"), None);
    assert_eq!(injected.get(Side::Request, "x-amz-date"), None);
}

#[test]
fn bedrocks_own_api_passes_through_re_signed() {
    let path = "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse";
    let caller = [
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDCALLER/20291231/us-east-1/bedrock/aws4_request, ...",
        ),
        ("x-amz-date", "20291231T000000Z"),
        ("x-amz-security-token", "caller-token"),
    ];
    let body = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 5}});
    // The routing stage routes by the path's model at once, and drops the caller's signature.
    let mut downstream = FakeHost::request("POST", path, &caller, body.clone());
    let mut routing = RoutingStream::new(Some(config()));
    assert_eq!(
        routing.on_request_headers(&mut downstream, false),
        Flow::Continue,
        "no need to wait for the body"
    );
    assert_eq!(downstream.get(Side::Request, "x-ai-eg-model"), Some(LLAMA));
    for header in ["authorization", "x-amz-date", "x-amz-security-token"] {
        assert_eq!(downstream.get(Side::Request, header), None, "{header}");
    }
    assert_eq!(
        routing.on_request_body(&mut downstream, true),
        Flow::Continue
    );
    let mut bad = FakeHost::request("POST", "/model/a%2/converse", &[], body.clone());
    assert_eq!(
        RoutingStream::new(Some(config())).on_request_headers(&mut bad, false),
        Flow::Pause
    );
    let (status, error) = bad.sent.unwrap();
    assert_eq!(
        (status, error["__type"].as_str()),
        (400, Some("ValidationException")),
        "Bedrock's error shape: {error}"
    );

    // The backend stage signs the body as it is, for the path's model (or the backend's override).
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        ..FakeHost::default()
    };
    host.cluster = Some("static".into());
    let mut stream = BackendStream::new(10, Some(config()));
    assert_eq!(
        stream.on_request_headers(&mut host, &mut worker, &store, false),
        Flow::Pause
    );
    assert_eq!(
        stream.on_request_body(&mut host, &mut worker, &store, true),
        Flow::Continue
    );
    assert_eq!(host.get(Side::Request, ":path"), Some(path));
    assert_eq!(
        serde_json::from_slice::<Value>(&host.request_body).unwrap(),
        body,
        "the body is Bedrock's already"
    );
    assert!(host
        .get(Side::Request, "authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));

    // Bedrock's reply goes back as it came, its tokens counted.
    let reply = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5},"metrics":{"latencyMs":9}}"#;
    host.respond(200, "application/json", reply.to_vec());
    stream.on_response_headers(&mut host, false);
    stream.on_response_body(&mut host, true);
    assert_eq!(host.response_body, reply.to_vec());
    assert_eq!(
        host.sum(report::TOKEN_USAGE, ";token_type=input")
            + host.sum(report::TOKEN_USAGE, ";token_type=output"),
        5
    );
    assert!(
        host.metrics[0].0.contains(";operation=chat;"),
        "Converse is a chat: {:?}",
        host.metrics[0]
    );

    // Its errors too, status and body.
    let mut host = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        ..FakeHost::default()
    };
    host.cluster = Some("static".into());
    let mut stream = BackendStream::new(11, Some(config()));
    stream.on_request_headers(&mut host, &mut worker, &store, false);
    stream.on_request_body(&mut host, &mut worker, &store, true);
    let throttled = br#"{"message":"Too many requests, please wait before trying again."}"#;
    host.respond(429, "application/json", throttled.to_vec());
    host.response_headers.push((
        "x-amzn-errortype".into(),
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/".into(),
    ));
    stream.on_response_headers(&mut host, false);
    stream.on_response_body(&mut host, true);
    assert_eq!(host.response_body, throttled.to_vec());
    assert_eq!(host.get(Side::Response, ":status"), Some("429"));
}

const TITAN: &str = "amazon.titan-embed-text-v2:0";

/// The backend stage with a Titan list of `inputs`, on `cluster`; returns the body phase's flow.
fn titan_list(
    cluster: &str,
    inputs: usize,
    worker: &mut Worker,
    store: &FakeStore,
) -> (BackendStream, FakeHost, Flow) {
    let texts: Vec<String> = (0..inputs).map(|i| format!("text {i}")).collect();
    let mut host = FakeHost::request(
        "POST",
        "/v1/embeddings",
        &[],
        json!({"model": TITAN, "input": texts, "dimensions": 256}),
    );
    host.cluster = Some(cluster.into());
    host.request_headers
        .push(("x-ai-eg-model".into(), TITAN.into()));
    let mut stream = BackendStream::new(20, Some(config()));
    assert_eq!(
        stream.on_request_headers(&mut host, worker, store, false),
        Flow::Pause
    );
    let flow = stream.on_request_body(&mut host, worker, store, true);
    (stream, host, flow)
}

fn batch(inputs: usize, worker: &mut Worker, store: &FakeStore) -> (BackendStream, FakeHost) {
    let (stream, host, flow) = titan_list("static", inputs, worker, store);
    assert_eq!(flow, Flow::Pause, "the request itself is never sent");
    (stream, host)
}

/// Which input a call is for, from its body.
fn input_of(call: &HttpCall) -> usize {
    call_body(call)["inputText"]
        .as_str()
        .unwrap()
        .trim_start_matches("text ")
        .parse()
        .unwrap()
}

fn call_body(call: &HttpCall) -> Value {
    serde_json::from_slice(call.body.as_deref().unwrap()).unwrap()
}

fn header<'a>(call: &'a HttpCall, name: &str) -> Option<&'a str> {
    call.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_titan_list_becomes_one_call_per_input_answered_in_input_order() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let (mut stream, mut host) = batch(20, &mut worker, &store);
    assert_eq!(
        host.calls.len(),
        batch::CONCURRENCY,
        "at most {} in flight",
        batch::CONCURRENCY
    );
    let first = &host.calls[0].1;
    assert_eq!(
        first.cluster, "static~calls",
        "through the twin cluster, without this stage"
    );
    assert_eq!(
        header(first, ":path"),
        Some("/model/amazon.titan-embed-text-v2%3A0/invoke")
    );
    assert_eq!(header(first, ":method"), Some("POST"));
    assert_eq!(
        header(first, ":authority"),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    assert_eq!(
        call_body(first),
        json!({"inputText": "text 0", "normalize": true, "dimensions": 256})
    );
    // Each call is signed for the backend, over its own body.
    let signatures: Vec<&str> = host
        .calls
        .iter()
        .map(|(_, c)| header(c, "authorization").unwrap())
        .collect();
    assert!(signatures.iter().all(|a| a.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20291231/us-east-1/bedrock/aws4_request"
    )));
    assert_eq!(
        signatures
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        signatures.len(),
        "one signature per body"
    );
    assert!(header(first, "x-amz-date").is_some());

    // Answers arrive newest first, not in input order; each one sends the next input.
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 20 {
        let pending: Vec<(u64, HttpCall)> = host
            .calls
            .iter()
            .filter(|(t, _)| !answered.contains(t))
            .cloned()
            .collect();
        assert!(
            !pending.is_empty() && pending.len() <= batch::CONCURRENCY,
            "{} in flight",
            pending.len()
        );
        let (token, call) = pending.last().cloned().unwrap();
        let index = input_of(&call);
        let body = format!(
            r#"{{"embedding":[{index}.5],"inputTextTokenCount":{}}}"#,
            index + 1
        );
        let flow = stream.on_call_answer(
            &mut host,
            token,
            &PartAnswer {
                status: Some(200),
                input_tokens: None,
                error_type: None,
                body: body.as_bytes(),
            },
        );
        answered.insert(token);
        if answered.len() < 20 {
            assert_eq!(flow, Flow::Pause);
            assert!(host.sent.is_none(), "no answer before the last input's");
        }
    }
    assert_eq!(host.calls.len(), 20, "one call per input");
    let (status, body) = host.sent.clone().unwrap();
    assert_eq!(status, 200);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 20);
    for (index, item) in data.iter().enumerate() {
        assert_eq!(item["index"], index);
        assert_eq!(
            item["embedding"],
            json!([index as f64 + 0.5]),
            "input {index}'s own vector in its place"
        );
    }
    assert_eq!(body["usage"]["prompt_tokens"], (1..=20).sum::<u64>());
    assert_eq!(
        host.metrics
            .iter()
            .filter(|(_, s)| s.name == report::REQUEST_DURATION && s.extra == Extra::None)
            .count(),
        1,
        "the batch counts as one request"
    );
    assert!(host.metrics[0].0.contains(";operation=embeddings;"));
    assert_eq!(
        host.sum(report::TOKEN_USAGE, ";token_type=input"),
        (1..=20).sum::<u64>()
    );
}

#[test]
fn one_failed_input_fails_the_batch_with_one_error_and_no_partial_list() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let (mut stream, mut host) = batch(5, &mut worker, &store);
    let ok = br#"{"embedding":[0.1],"inputTextTokenCount":1}"#;
    assert_eq!(
        stream.on_call_answer(
            &mut host,
            100,
            &PartAnswer {
                status: Some(200),
                input_tokens: None,
                error_type: None,
                body: ok
            }
        ),
        Flow::Pause
    );
    let throttled = PartAnswer {
        status: Some(429),
        input_tokens: None,
        error_type: Some("ThrottlingException:http://internal.amazon.com/".into()),
        body: br#"{"message":"Too many requests"}"#,
    };
    assert_eq!(
        stream.on_call_answer(&mut host, 103, &throttled),
        Flow::Pause
    );
    let (status, error) = host.sent.clone().unwrap();
    assert_eq!(status, 429);
    assert_eq!(
        error["error"]["message"],
        "Input 3 of 5: Bedrock ThrottlingException: Too many requests"
    );
    assert_eq!(error["error"]["type"], "rate_limit_error");
    // The calls still in flight come back to a stream that has answered: nothing more is sent.
    assert_eq!(
        stream.on_call_answer(
            &mut host,
            101,
            &PartAnswer {
                status: Some(200),
                input_tokens: None,
                error_type: None,
                body: ok
            }
        ),
        Flow::Continue
    );

    // No answer at all (reset, timeout), and the gateway's own refusal of a call.
    let (mut stream, mut host) = batch(2, &mut worker, &store);
    stream.on_call_answer(
        &mut host,
        101,
        &PartAnswer {
            status: None,
            input_tokens: None,
            error_type: None,
            body: b"",
        },
    );
    let (status, error) = host.sent.clone().unwrap();
    assert_eq!(status, 502);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer input 1 of 2"),
        "{error}"
    );
    let (mut stream, mut host) = batch(2, &mut worker, &store);
    let refused = br#"{"__type":"ServiceUnavailableException","message":"AWS credentials are not available: the agent is down"}"#;
    stream.on_call_answer(
        &mut host,
        100,
        &PartAnswer {
            status: Some(503),
            input_tokens: None,
            error_type: None,
            body: refused,
        },
    );
    let (status, error) = host.sent.clone().unwrap();
    assert_eq!(status, 503);
    assert_eq!(
        error["error"]["message"],
        "Input 0 of 2: AWS credentials are not available: the agent is down",
        "not blamed on Bedrock"
    );
}

#[test]
fn a_titan_lists_calls_carry_each_backends_credentials() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let (_, keyed, _) = titan_list("keyed", 2, &mut worker, &store);
    assert_eq!(keyed.calls.len(), 2);
    assert!(keyed.calls.iter().all(
        |(_, c)| header(c, "authorization") == Some("Bearer ABSKdemo")
            && header(c, "x-amz-date").is_none()
    ));
    let (_, injected, _) = titan_list("injected", 2, &mut worker, &store);
    assert!(
        injected
            .calls
            .iter()
            .all(|(_, c)| c.cluster == "injected~calls" && header(c, "authorization").is_none()),
        "Envoy injects the key"
    );

    // Fetched credentials that are not there yet: a list cannot wait as one request does.
    let (_, mut waiting, flow) = titan_list("pod", 2, &mut worker, &store);
    assert_eq!(flow, Flow::Pause);
    assert!(waiting.calls.is_empty());
    let (status, error) = waiting.sent.take().unwrap();
    assert_eq!(status, 503);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not available yet"),
        "{error}"
    );
    // Once fetched, a list is signed with them, session token included.
    let providers = config().fetched_providers();
    for fetch in worker.broker.due_fetches(&store, &providers, NOW_MS) {
        worker.broker.dispatched(1, fetch);
    }
    let reply = br#"{"AccessKeyId":"ASIAPOD","SecretAccessKey":"s","Token":"session-token","Expiration":"2030-01-01T00:00:00Z"}"#;
    assert!(matches!(
        worker.broker.on_reply(&store, 1, Some(200), reply, NOW_MS),
        Reply::Stored { .. }
    ));
    let (_, signed, flow) = titan_list("pod", 2, &mut worker, &store);
    assert_eq!((flow, signed.calls.len()), (Flow::Pause, 2));
    for (_, call) in &signed.calls {
        assert!(header(call, "authorization")
            .unwrap()
            .contains("Credential=ASIAPOD/20291231/eu-west-1/bedrock/aws4_request"));
        assert_eq!(header(call, "x-amz-security-token"), Some("session-token"));
    }

    // A backend without a calls cluster (a hand-written configuration) says why.
    let mut config = config_json();
    config["backends"]["static"]
        .as_object_mut()
        .unwrap()
        .remove("calls_cluster");
    let mut host = FakeHost::request(
        "POST",
        "/v1/embeddings",
        &[],
        json!({"model": TITAN, "input": ["a", "b"]}),
    );
    host.cluster = Some("static".into());
    let mut stream = BackendStream::new(
        22,
        Some(Arc::new(
            Config::parse(config.to_string().as_bytes(), &|_| None).unwrap(),
        )),
    );
    stream.on_request_headers(&mut host, &mut worker, &store, false);
    stream.on_request_body(&mut host, &mut worker, &store, true);
    let (status, error) = host.sent.unwrap();
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send the inputs one by one"),
        "{error}"
    );
}

#[test]
fn a_cluster_without_a_backend_is_refused_in_the_callers_format() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/anthropic/v1/messages", &[], json!({}));
    host.cluster = Some("unknown".into());
    let mut stream = BackendStream::new(1, Some(config()));
    assert_eq!(
        stream.on_request_headers(&mut host, &mut worker, &store, false),
        Flow::Pause
    );
    let (status, body) = host.sent.take().unwrap();
    assert_eq!((status, body["type"].as_str()), (500, Some("error")));
    assert_eq!(
        stream.on_request_body(&mut host, &mut worker, &store, true),
        Flow::Continue,
        "nothing more is done"
    );
    assert_eq!(
        host.get(Side::Request, "authorization"),
        None,
        "never signed"
    );
}

const POD_IDENTITY_KEY: &str = "ai_gateway/credentials/pod_identity/agent/v1/credentials";

#[test]
fn a_request_waits_for_fetched_credentials_and_is_signed_with_them() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (_stream, flow) = backend_request(&mut host, "pod", &mut worker, &store);
    assert_eq!(flow, Flow::Pause, "parked until credentials arrive");
    assert_eq!(host.get(Side::Request, "authorization"), None);
    assert_eq!(worker.broker.waiting(), 1);

    // The host's timer: the broker asks for a fetch, the agent answers.
    let providers = config().fetched_providers();
    let [fetch] =
        <[_; 1]>::try_from(worker.broker.due_fetches(&store, &providers, NOW_MS)).unwrap();
    worker.broker.dispatched(1, fetch);
    let reply = br#"{"AccessKeyId":"ASIAFETCHED","SecretAccessKey":"s","Token":"session-token","Expiration":"2030-01-01T00:00:00Z"}"#;
    assert!(matches!(
        worker.broker.on_reply(&store, 1, Some(200), reply, NOW_MS),
        Reply::Stored { .. }
    ));
    let decided = worker.broker.take_decided(&store, NOW_MS);
    let [(7, parked, verdict)] = decided.as_slice() else {
        panic!("stream 7 decided: {decided:?}")
    };
    assert_eq!(
        backend::settle(&mut host, parked, verdict, &mut worker.signer),
        Settled::Resume
    );
    let authorization = host.get(Side::Request, "authorization").unwrap();
    assert!(
        authorization.contains("Credential=ASIAFETCHED/20291231/eu-west-1/bedrock/aws4_request"),
        "{authorization}"
    );
    assert_eq!(
        host.get(Side::Request, "x-amz-security-token"),
        Some("session-token")
    );

    // The next request finds them and is signed at once.
    let mut next = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (_, flow) = backend_request(&mut next, "pod", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert!(next
        .get(Side::Request, "authorization")
        .unwrap()
        .contains("ASIAFETCHED"));
    assert!(store.get(POD_IDENTITY_KEY).0.is_some());
}

#[test]
fn a_waiting_request_fails_with_the_reason_or_is_forgotten_when_it_ends() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request(
        "POST",
        "/anthropic/v1/messages",
        &[],
        json!({"model": LLAMA, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    let (mut stream, flow) = backend_request(&mut host, "pod", &mut worker, &store);
    assert_eq!(flow, Flow::Pause);
    let providers = config().fetched_providers();
    for (token, now_ms) in [(1, NOW_MS), (2, NOW_MS + 60_000)] {
        for fetch in worker.broker.due_fetches(&store, &providers, now_ms) {
            worker.broker.dispatched(token, fetch);
        }
        assert!(matches!(
            worker
                .broker
                .on_reply(&store, token, Some(403), b"denied", now_ms),
            Reply::Failed(_)
        ));
    }
    let decided = worker.broker.take_decided(&store, NOW_MS + 60_000);
    let [(_, parked, verdict)] = decided.as_slice() else {
        panic!("decided: {decided:?}")
    };
    assert_eq!(
        backend::settle(&mut host, parked, verdict, &mut worker.signer),
        Settled::Answered
    );
    let (status, body) = host.sent.take().unwrap();
    assert_eq!(
        (status, body["type"].as_str()),
        (503, Some("error")),
        "Anthropic's format: {body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("403"),
        "the reason is given: {body}"
    );

    // Another request parks, then its client goes away before credentials come.
    let mut other = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let mut gone = BackendStream::new(8, Some(config()));
    other.cluster = Some("pod".into());
    gone.on_request_headers(&mut other, &mut worker, &store, false);
    gone.on_request_body(&mut other, &mut worker, &store, true);
    assert_eq!(worker.broker.waiting(), 1);
    gone.on_destroy(&mut worker);
    stream.on_destroy(&mut worker);
    assert_eq!(
        worker.broker.waiting(),
        0,
        "an ended stream is never resumed"
    );
}

#[test]
fn the_sts_stage_moves_the_injected_token_into_the_form() {
    let mut host = FakeHost {
        request_headers: vec![("x-ai-eg-web-identity-token".into(), "jwt.token".into())],
        request_body: b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15".to_vec(),
        ..FakeHost::default()
    };
    let mut stream = StsStream::default();
    assert_eq!(stream.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        host.get(Side::Request, "x-ai-eg-web-identity-token"),
        None,
        "the header never leaves Envoy"
    );
    assert_eq!(stream.on_request_body(&mut host, true), Flow::Continue);
    let form = String::from_utf8(host.request_body.clone()).unwrap();
    assert!(form.ends_with("&WebIdentityToken=jwt.token"), "{form}");
    assert_eq!(
        host.get(Side::Request, "content-length"),
        Some(form.len().to_string().as_str())
    );
}

// ---- Fail closed: each way a request could pass without the gateway's rules ----------------

/// A config whose `static` backend carries options (a guardrail and metadata), with `extra`
/// members merged into the plugin configuration.
fn config_with(extra: Value) -> Arc<Config> {
    let mut json = config_json();
    json["backends"]["static"]["guardrail"] = json!({"identifier": "gr-operator", "version": "1"});
    json["backends"]["static"]["request_metadata"] = json!({"team": "platform"});
    for (key, value) in extra.as_object().unwrap() {
        json[key] = value.clone();
    }
    Arc::new(Config::parse(json.to_string().as_bytes(), &|_| None).unwrap())
}

#[test]
fn request_trailers_are_refused_by_both_stages_in_the_callers_format() {
    // The routing stage holds an OpenAI body for its model; trailers arrive instead of its end.
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let mut routing = RoutingStream::new(Some(config()));
    assert_eq!(routing.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(routing.on_request_body(&mut host, false), Flow::Pause);
    assert_eq!(routing.on_request_trailers(&mut host), Flow::Pause);
    let (status, error) = host.sent.take().unwrap();
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("trailers"));

    // Bedrock's own API streams its body on at once: the trailers reach the backend stage too.
    let mut host = FakeHost::request("POST", "/model/x/converse", &[], json!({}));
    let mut routing = RoutingStream::new(Some(config()));
    assert_eq!(routing.on_request_headers(&mut host, false), Flow::Continue);
    assert_eq!(routing.on_request_trailers(&mut host), Flow::Pause);
    assert_eq!(host.sent.take().unwrap().1["__type"], "ValidationException");

    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut upstream = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    upstream.cluster = Some("static".into());
    upstream
        .request_headers
        .push(("x-ai-eg-model".into(), LLAMA.into()));
    let mut backend = BackendStream::new(20, Some(config()));
    assert_eq!(
        backend.on_request_headers(&mut upstream, &mut worker, &store, false),
        Flow::Pause
    );
    assert_eq!(
        backend.on_request_body(&mut upstream, &mut worker, &store, false),
        Flow::Pause
    );
    assert_eq!(backend.on_request_trailers(&mut upstream), Flow::Pause);
    assert_eq!(upstream.sent.as_ref().unwrap().0, 400);
    assert_eq!(
        upstream.get(Side::Request, "authorization"),
        None,
        "never signed"
    );
}

#[test]
fn a_callers_request_id_keys_no_state_and_its_own_stream_key_is_replaced() {
    let forged = [("x-request-id", "same-id"), ("x-ai-eg-stream-key", "7")];
    let mut keys = Vec::new();
    for _ in 0..2 {
        let mut host = FakeHost::request("POST", "/v1/chat/completions", &forged, chat(false));
        RoutingStream::new(Some(config())).on_request_headers(&mut host, false);
        let written: Vec<_> = host
            .request_headers
            .iter()
            .filter(|(k, _)| k == "x-ai-eg-stream-key")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(written.len(), 1, "one key, the gateway's");
        assert_ne!(written[0], "7");
        keys.push(written[0].clone());
    }
    assert_ne!(
        keys[0], keys[1],
        "two requests with one x-request-id keep apart"
    );

    // The backend stage removes the key before AWS (but on a failover route, whose next try
    // needs it to find the first try's request).
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (_, flow) = backend_request(&mut host, "static", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(host.get(Side::Request, "x-ai-eg-stream-key"), None);
}

#[test]
fn claim_headers_cannot_be_forged_and_configured_key_headers_never_reach_aws() {
    let config = config_with(json!({
        "caller_header": "x-ai-gateway-caller",
        "identity_headers": ["x-team"],
        "key_headers": ["x-gateway-key"],
    }));
    let sent = [
        ("x-team", "admins"),
        ("x-ai-gateway-caller", "root"),
        ("x-gateway-key", "sk-caller"),
    ];
    let mut downstream = FakeHost::request("POST", "/v1/chat/completions", &sent, chat(false));
    let mut routing = RoutingStream::new(Some(Arc::clone(&config)));
    routing.on_request_headers(&mut downstream, false);
    assert_eq!(
        downstream.get(Side::Request, "x-team"),
        None,
        "a claim header is jwt_authn's to write"
    );
    assert_eq!(downstream.get(Side::Request, "x-ai-gateway-caller"), None);
    assert_eq!(
        downstream.get(Side::Request, "x-gateway-key"),
        Some("sk-caller"),
        "left for Envoy's api_key_auth"
    );
    routing.on_request_body(&mut downstream, true);

    let mut upstream = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        cluster: Some("static".into()),
        ..FakeHost::default()
    };
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut backend = BackendStream::new(21, Some(config));
    backend.on_request_headers(&mut upstream, &mut worker, &store, false);
    assert_eq!(
        backend.on_request_body(&mut upstream, &mut worker, &store, true),
        Flow::Continue
    );
    assert_eq!(upstream.get(Side::Request, "x-gateway-key"), None);

    // Without Envoy's authentication, the routing stage removes a configured key header itself.
    let config = config_with(json!({"key_headers": ["x-gateway-key"]}));
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &sent, chat(false));
    RoutingStream::new(Some(config)).on_request_headers(&mut host, false);
    assert_eq!(host.get(Side::Request, "x-gateway-key"), None);
}

/// Bedrock's own API through the `static` backend (with options), as both stages handle it.
fn bedrock_api_request(path: &str, extra: &[(&str, &str)], body: Value) -> (FakeHost, Flow) {
    let config = config_with(json!({}));
    let mut downstream = FakeHost::request("POST", path, extra, body);
    let mut routing = RoutingStream::new(Some(Arc::clone(&config)));
    if routing.on_request_headers(&mut downstream, false) == Flow::Pause {
        return (downstream, Flow::Pause);
    }
    let mut upstream = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        cluster: Some("static".into()),
        ..FakeHost::default()
    };
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut backend = BackendStream::new(22, Some(config));
    backend.on_request_headers(&mut upstream, &mut worker, &store, false);
    let flow = backend.on_request_body(&mut upstream, &mut worker, &store, true);
    (upstream, flow)
}

#[test]
fn the_backends_guardrail_and_options_apply_to_bedrocks_own_api() {
    let own_guardrail = json!({
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "guardrailConfig": {"guardrailIdentifier": "gr-callers-own", "guardrailVersion": "1"},
        "serviceTier": {"type": "flex"},
    });
    let (host, flow) = bedrock_api_request("/model/x/converse", &[], own_guardrail);
    assert_eq!(flow, Flow::Continue);
    let sent: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(
        sent["guardrailConfig"],
        json!({"guardrailIdentifier": "gr-operator", "guardrailVersion": "1"}),
        "the operator's guardrail replaces the caller's"
    );
    assert_eq!(sent["requestMetadata"], json!({"team": "platform"}));
    assert_eq!(
        sent["serviceTier"],
        json!({"type": "flex"}),
        "the caller's own tier stays"
    );
    assert_eq!(sent["messages"][0]["content"][0]["text"], "Hi");

    let (host, _) = bedrock_api_request("/model/x/converse-stream", &[], json!({"messages": []}));
    let sent: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(
        sent["guardrailConfig"]["guardrailIdentifier"],
        "gr-operator"
    );

    // InvokeModel takes them as headers, replacing a caller's own.
    let caller = [("x-amzn-bedrock-guardrailidentifier", "gr-callers-own")];
    let (host, flow) = bedrock_api_request("/model/x/invoke", &caller, json!({"prompt": "Hi"}));
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        host.get(Side::Request, "x-amzn-bedrock-guardrailidentifier"),
        Some("gr-operator")
    );
    assert_eq!(
        host.get(Side::Request, "x-amzn-bedrock-request-metadata"),
        Some(r#"{"team":"platform"}"#)
    );

    // A body that is not a JSON object cannot carry the guardrail: refused, not forwarded.
    let (host, flow) = bedrock_api_request("/model/x/converse", &[], json!([1, 2]));
    assert_eq!(flow, Flow::Pause);
    assert_eq!(host.sent.unwrap().1["__type"], "ValidationException");
}

#[test]
fn a_trailing_slash_on_a_bedrock_path_keeps_its_model() {
    let (host, flow) = bedrock_api_request("/model/x/converse/", &[], json!({"messages": []}));
    assert_eq!(flow, Flow::Continue);
    assert_eq!(host.get(Side::Request, ":path"), Some("/model/x/converse"));
}

#[test]
fn bedrocks_errors_reach_callers_without_the_accounts_identifiers() {
    let denied = br#"{"message":"User: arn:aws:sts::123456789012:assumed-role/gateway/s is not authorized to perform: bedrock:InvokeModel"}"#;
    for path in ["/v1/chat/completions", "/model/x/converse"] {
        let (mut worker, store) = (Worker::default(), FakeStore::default());
        let body = if path.starts_with("/v1") {
            chat(false)
        } else {
            json!({"messages": []})
        };
        let mut host = FakeHost::request("POST", path, &[], body);
        let (mut stream, _) = backend_request(&mut host, "static", &mut worker, &store);
        host.respond(403, "application/json", denied.to_vec());
        host.response_headers.push((
            "x-amzn-errortype".into(),
            "AccessDeniedException:http://internal".into(),
        ));
        stream.on_response_headers(&mut host, false);
        stream.on_response_body(&mut host, true);
        let body = String::from_utf8(host.response_body.clone()).unwrap();
        assert!(
            !body.contains("123456789012") && !body.contains("arn:aws"),
            "{path}: {body}"
        );
        assert!(
            body.contains("is not authorized to perform"),
            "{path}: {body}"
        );
    }
}

#[test]
fn a_backend_stage_without_a_translation_refuses_rather_than_forwards() {
    // Its request headers never came (or were for nothing it serves): the body is not passed on.
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let mut stream = BackendStream::new(23, Some(config()));
    assert_eq!(
        stream.on_request_body(&mut host, &mut worker, &store, true),
        Flow::Pause
    );
    assert_eq!(host.sent.as_ref().unwrap().0, 500);
    assert_eq!(host.get(Side::Request, "authorization"), None);
}

/// With callers authenticated by Envoy and a failover route, the first try removes callers'
/// credentials from the headers the next try shares, but not the key it finds its request by.
#[test]
fn a_failover_retry_finds_its_request_when_callers_are_authenticated() {
    let mut json = config_json();
    json["caller_header"] = json!("x-ai-gateway-caller");
    let config = Arc::new(Config::parse(json.to_string().as_bytes(), &|_| None).unwrap());
    let mut downstream = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let mut routing = RoutingStream::new(Some(Arc::clone(&config)));
    routing.on_request_headers(&mut downstream, false);
    routing.on_request_body(&mut downstream, true);
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut first = FakeHost {
        request_headers: downstream.request_headers.clone(),
        request_body: downstream.request_body.clone(),
        cluster: Some("static>west".into()),
        ..FakeHost::default()
    };
    first
        .request_headers
        .push(("x-envoy-attempt-count".into(), "1".into()));
    let mut stream = BackendStream::new(30, Some(Arc::clone(&config)));
    stream.on_request_headers(&mut first, &mut worker, &store, false);
    assert_eq!(
        stream.on_request_body(&mut first, &mut worker, &store, true),
        Flow::Continue
    );
    let mut retry = FakeHost {
        request_headers: first.request_headers.clone(),
        request_body: first.request_body.clone(),
        cluster: Some("static>west".into()),
        ..FakeHost::default()
    };
    retry
        .request_headers
        .push(("x-envoy-attempt-count".into(), "2".into()));
    let mut stream = BackendStream::new(31, Some(config));
    stream.on_request_headers(&mut retry, &mut worker, &store, false);
    assert_eq!(
        stream.on_request_body(&mut retry, &mut worker, &store, true),
        Flow::Continue
    );
    assert!(retry.sent.is_none(), "{:?}", retry.sent);
    assert_eq!(
        retry.get(Side::Request, ":path"),
        Some("/model/us.anthropic.claude-x-v1%3A0/converse")
    );
}

#[test]
fn a_configuration_names_one_of_three_stages_or_none() {
    assert_eq!(Stage::from_name(b"ai_gateway"), Some(Stage::Routing));
    assert_eq!(
        Stage::from_name(b"ai_gateway_backend"),
        Some(Stage::Backend)
    );
    assert_eq!(Stage::from_name(b"ai_gateway_sts"), Some(Stage::Sts));
    for unknown in [&b""[..], b"ai_gateway_", b"AI_GATEWAY", b"noop_routing"] {
        assert_eq!(Stage::from_name(unknown), None, "{unknown:?}");
    }
}

#[test]
fn a_busy_worker_answers_retry_in_the_callers_format() {
    for (path, shape) in [
        ("/v1/chat/completions", "/error/type"),
        ("/anthropic/v1/messages", "/error/type"),
    ] {
        let mut host = FakeHost::request("POST", path, &[], chat(false));
        assert_eq!(reply_busy(&mut host), Flow::Pause);
        let (status, body) = host.sent.clone().unwrap();
        assert_eq!(status, 503);
        assert!(body.pointer(shape).is_some(), "{body}");
        assert_eq!(
            body.pointer("/error/message").and_then(Value::as_str),
            Some("The gateway is busy; retry the request.")
        );
    }
    let mut host = FakeHost::request("POST", "/anthropic/v1/messages", &[], chat(false));
    reply_busy(&mut host);
    assert_eq!(
        host.sent.unwrap().1["type"],
        "error",
        "Anthropic's error envelope"
    );
}

#[test]
fn the_hand_over_keeps_a_first_try_until_its_request_ends_and_a_summary_once() {
    let hand_over = HandOver::default();
    let request = |body: &[u8]| CallerRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        model: "m".into(),
        anthropic_beta: None,
        body: body.to_vec(),
    };
    hand_over.keep_first_try("1", request(b"first"));
    hand_over.keep_first_try("1", request(b"again"));
    assert_eq!(
        hand_over.first_try("1").unwrap().body,
        b"again",
        "one entry per key"
    );
    assert!(hand_over.first_try("2").is_none());
    let summary = UsageSummary {
        json: "{}".into(),
        total_tokens: 3,
        cost: 3,
        costs: Vec::new(),
        span: None,
    };
    hand_over.leave_summary("1".into(), summary.clone());
    assert_eq!(hand_over.held(), (1, 1));
    assert_eq!(hand_over.finish("1"), Some(summary));
    assert_eq!(hand_over.finish("1"), None, "taken once");
    assert!(
        hand_over.first_try("1").is_none(),
        "the first try goes with its request"
    );
    for key in 0..300 {
        hand_over.keep_first_try(&key.to_string(), request(b""));
    }
    assert_eq!(hand_over.held().0, 256, "bounded, the oldest first out");
    assert!(hand_over.first_try("0").is_none() && hand_over.first_try("299").is_some());
}

/// Every request-side edit the stages make, each refused in turn: the request is answered 500 in
/// the caller's format and never continues half-rewritten (unsigned, untranslated, or with the
/// caller's credentials).
#[test]
fn a_request_edit_the_host_refuses_refuses_the_request() {
    let edits = [
        "request authorization",
        "request x-amz-date",
        "request :path",
        "request :authority",
        "request content-length",
        "request body",
        "request x-ai-eg-model",
        "request accept-encoding",
    ];
    for edit in edits {
        let (mut worker, store) = (Worker::default(), FakeStore::default());
        let mut host = FakeHost::request(
            "POST",
            "/v1/chat/completions",
            &[("accept-encoding", "gzip")],
            chat(false),
        );
        host.refused_edits = vec![edit];
        host.cluster = Some("static".into());
        host.request_headers
            .push(("x-ai-eg-model".into(), LLAMA.into()));
        let mut stream = BackendStream::new(7, Some(config()));
        let mut flow = stream.on_request_headers(&mut host, &mut worker, &store, false);
        if flow == Flow::Pause && host.sent.is_none() {
            flow = stream.on_request_body(&mut host, &mut worker, &store, true);
        }
        assert_eq!(flow, Flow::Pause, "{edit}: the request must not go on");
        let (status, body) = host
            .sent
            .clone()
            .unwrap_or_else(|| panic!("{edit}: no answer"));
        assert_eq!(status, 500, "{edit}");
        assert_eq!(body["error"]["type"], "server_error", "{edit}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("was not sent"),
            "{edit}: {body}"
        );
    }

    // The routing stage: a caller's credential it cannot remove, or a route it cannot set.
    for edit in [
        "request authorization",
        "request x-ai-eg-model",
        "request x-ai-eg-stream-key",
    ] {
        let mut host = FakeHost::request(
            "POST",
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-caller")],
            chat(false),
        );
        host.refused_edits = vec![edit];
        let mut routing = RoutingStream::new(Some(config()));
        let mut flow = routing.on_request_headers(&mut host, false);
        if host.sent.is_none() {
            flow = routing.on_request_body(&mut host, true);
        }
        assert_eq!(flow, Flow::Pause, "{edit}");
        assert_eq!(
            host.sent.as_ref().map(|(status, _)| *status),
            Some(500),
            "{edit}"
        );
    }
}

#[test]
fn a_response_edit_the_host_refuses_is_logged_and_the_response_goes_on() {
    let (mut worker, store) = (Worker::default(), FakeStore::default());
    let mut host = FakeHost::request("POST", "/v1/chat/completions", &[], chat(false));
    let (mut stream, flow) = backend_request(&mut host, "static", &mut worker, &store);
    assert_eq!(flow, Flow::Continue);
    host.refused_edits = vec!["response body"];
    let converse = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}
    });
    host.respond(
        200,
        "application/json",
        serde_json::to_vec(&converse).unwrap(),
    );
    assert_eq!(stream.on_response_headers(&mut host, false), Flow::Pause);
    assert_eq!(stream.on_response_body(&mut host, true), Flow::Continue);
    assert!(
        host.sent.is_none(),
        "nothing is answered twice once Bedrock answered"
    );
}

#[test]
fn a_calls_answer_is_read_from_its_headers() {
    let headers = HeaderSnapshot::from_pairs([
        (&b":status"[..], &b"429"[..]),
        (
            b"x-amzn-errortype",
            b"ThrottlingException:http://internal.amazon.com/",
        ),
        (b"x-amzn-bedrock-input-token-count", b"12"),
    ]);
    let answer = PartAnswer::read(&headers, b"{}");
    assert_eq!(answer.status, Some(429));
    assert_eq!(
        answer.error_type.as_deref(),
        Some("ThrottlingException:http://internal.amazon.com/")
    );
    assert_eq!(answer.input_tokens, Some(12));
    let none = HeaderSnapshot::default();
    let unanswered = PartAnswer::read(&none, b"");
    assert_eq!(
        (unanswered.status, unanswered.input_tokens),
        (None, None),
        "no response"
    );
}

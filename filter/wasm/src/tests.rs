//! The adapter against a fake proxy-wasm host (`fake_host`), natively: the SDK's own entry points
//! called as Envoy calls them, and what the filter asked of the host checked (headers, bodies,
//! local replies, HTTP calls, shared data, resumed streams), including the credential broker's
//! whole loop through the root context's timer and call replies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::fake_host::{self, FakeContext};
use proxy_wasm::types::Action;
use serde_json::{json, Value};
use std::sync::{Mutex, PoisonError};

extern "C" {
    fn proxy_on_context_create(context_id: u32, root_context_id: u32);
    fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool;
    fn proxy_on_tick(context_id: u32);
    fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: bool)
        -> Action;
    fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: bool) -> Action;
    fn proxy_on_response_headers(
        context_id: u32,
        num_headers: usize,
        end_of_stream: bool,
    ) -> Action;
    fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: bool) -> Action;
    fn proxy_on_done(context_id: u32) -> bool;
    fn proxy_on_http_call_response(
        context_id: u32,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    );
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn plugin_json(credentials: Value) -> String {
    json!({
        "models": ["llama"],
        "backends": {
            "bedrock": {
                "schema": "converse",
                "region": "us-east-1",
                "credentials": credentials,
                "model_name_override": "us.meta.llama3-2-1b-instruct-v1:0"
            }
        }
    })
    .to_string()
}

fn inline_keys() -> Value {
    json!({"source": "inline", "access_key_id": "AKIDEXAMPLE", "secret_access_key": SECRET})
}

/// The VM's start, on this test's thread (the SDK's dispatcher is per thread). Its first call also
/// installs the SDK's process-wide logger, which two threads at once would both try to do (the
/// second `unwrap` panics across the ABI and aborts): one thread at a time.
fn start_vm() {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    crate::_initialize();
}

/// A root context of stage `root_id`, configured; whether the filter accepted the configuration.
fn configure(root: u32, root_id: &str, config: &str) -> bool {
    start_vm();
    fake_host::with(|proxy| {
        proxy.root_ids.insert(root, root_id.into());
        proxy
            .plugin_configuration
            .insert(root, config.as_bytes().to_vec());
        proxy.current = root;
    });
    // SAFETY: the SDK's entry points, called on this thread as the host calls them.
    unsafe {
        proxy_on_context_create(root, 0);
        proxy_on_configure(root, config.len())
    }
}

/// A stream of `root` with `context`'s request; the actions of its header and body hooks.
fn request(root: u32, id: u32, context: FakeContext, body: &[u8]) -> (Action, Option<Action>) {
    let headers = context.request_headers.len();
    fake_host::with(|proxy| {
        proxy.contexts.insert(id, context);
        proxy.current = id;
    });
    // SAFETY: as above.
    let on_headers = unsafe {
        proxy_on_context_create(id, root);
        proxy_on_request_headers(id, headers, false)
    };
    if on_headers != Action::Pause || stream(id).local_reply.is_some() {
        return (on_headers, None);
    }
    fake_host::with(|proxy| {
        proxy.current = id;
        proxy.contexts.get_mut(&id).unwrap().request_body = body.to_vec();
    });
    // SAFETY: as above.
    let on_body = unsafe { proxy_on_request_body(id, body.len(), true) };
    (on_headers, Some(on_body))
}

fn stream(id: u32) -> FakeContext {
    fake_host::with(|proxy| proxy.contexts.get(&id).cloned().unwrap_or_default())
}

fn header<'a>(context: &'a FakeContext, name: &str) -> Option<&'a str> {
    context
        .request_headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn chat_request(extra: &[(&str, &str)], cluster: Option<&str>) -> FakeContext {
    let mut headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    headers.dedup();
    FakeContext {
        request_headers: headers,
        cluster: cluster.map(str::to_owned),
        ..FakeContext::default()
    }
}

fn chat_body() -> Vec<u8> {
    json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}]})
        .to_string()
        .into_bytes()
}

#[test]
fn a_root_id_names_a_known_stage_and_the_configuration_parses_or_is_refused() {
    let config = plugin_json(inline_keys());
    assert!(configure(1, "ai_gateway", &config));
    assert!(configure(2, "ai_gateway_backend", &config));
    assert!(configure(3, "ai_gateway_sts", &config));
    assert!(
        !configure(4, "ai_gateway_typo", &config),
        "an unknown stage is refused"
    );
    assert!(!configure(5, "ai_gateway", "{"), "invalid JSON is refused");
}

#[test]
fn the_routing_stage_holds_the_headers_routes_by_the_body_and_drops_the_callers_key() {
    assert!(configure(10, "ai_gateway", &plugin_json(inline_keys())));
    let request_with_key = chat_request(&[("authorization", "Bearer sk-callers-own")], None);
    let (on_headers, on_body) = request(10, 11, request_with_key, &chat_body());
    assert_eq!(
        (on_headers, on_body),
        (Action::Pause, Some(Action::Continue))
    );
    let context = stream(11);
    assert_eq!(
        header(&context, "authorization"),
        None,
        "the caller's key never goes on"
    );
    assert_eq!(header(&context, "x-ai-eg-model"), Some("llama"));
    assert!(header(&context, "x-ai-eg-stream-key").is_some());
    assert_eq!(context.route_cache_cleared, 1, "the route is picked again");
}

#[test]
fn the_backend_stage_translates_signs_and_never_logs_the_secret() {
    assert!(configure(
        20,
        "ai_gateway_backend",
        &plugin_json(inline_keys())
    ));
    let routed = chat_request(&[("x-ai-eg-model", "llama")], Some("bedrock"));
    assert_eq!(
        request(20, 21, routed, &chat_body()),
        (Action::Pause, Some(Action::Continue))
    );
    let context = stream(21);
    assert_eq!(
        header(&context, ":path"),
        Some("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    );
    let authorization = header(&context, "authorization").unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{authorization}"
    );
    let sent: Value = serde_json::from_slice(&context.request_body).unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "Hi", "{sent}");
    assert_eq!(header(&context, "x-ai-eg-model"), None);
    let logs = fake_host::with(|proxy| proxy.logs.join("\n"));
    assert!(!logs.contains(SECRET), "{logs}");
}

#[test]
fn a_header_the_host_refuses_to_write_refuses_the_request() {
    assert!(configure(
        40,
        "ai_gateway_backend",
        &plugin_json(inline_keys())
    ));
    fake_host::with(|proxy| proxy.refused_headers = vec!["authorization".into()]);
    let routed = chat_request(&[("x-ai-eg-model", "llama")], Some("bedrock"));
    let (_, on_body) = request(40, 41, routed, &chat_body());
    assert_eq!(
        on_body,
        Some(Action::Pause),
        "an unsigned request must not go on"
    );
    let (status, body) = stream(41).local_reply.unwrap();
    assert_eq!(status, 500);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
}

#[test]
fn fetched_credentials_are_fetched_on_the_timer_and_the_waiting_request_is_signed_and_resumed() {
    let config = plugin_json(json!({"source": "pod_identity", "cluster": "agent"}));
    assert!(configure(30, "ai_gateway_backend", &config));
    assert!(
        fake_host::with(|proxy| proxy.tick_period_ms).is_some(),
        "the timer is started"
    );
    let routed = chat_request(&[("x-ai-eg-model", "llama")], Some("bedrock"));
    let (_, on_body) = request(30, 31, routed, &chat_body());
    assert_eq!(
        on_body,
        Some(Action::Pause),
        "no credentials yet: the request waits"
    );
    assert_eq!(header(&stream(31), "authorization"), None);

    fake_host::with(|proxy| proxy.current = 30);
    // SAFETY: as above.
    unsafe { proxy_on_tick(30) };
    let (token, from, cluster) = fake_host::with(|proxy| {
        let (token, context, cluster, _, _) = proxy.calls.last().cloned().unwrap();
        (token, context, cluster)
    });
    assert_eq!(
        (from, cluster.as_str()),
        (30, "agent"),
        "the root context calls the agent"
    );

    let credentials = br#"{"AccessKeyId":"ASIAFETCHED","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#;
    fake_host::with(|proxy| {
        let root = proxy.contexts.entry(30).or_default();
        root.call_response_headers = vec![(":status".into(), "200".into())];
        root.call_response_body = credentials.to_vec();
    });
    // SAFETY: as above.
    unsafe { proxy_on_http_call_response(30, token, 1, credentials.len(), 0) };
    let context = stream(31);
    let authorization = header(&context, "authorization").unwrap_or_default();
    assert!(
        authorization.contains("Credential=ASIAFETCHED/"),
        "{authorization}"
    );
    assert_eq!(header(&context, "x-amz-security-token"), Some("t"));
    assert_eq!(context.resumed, 1, "signed, then resumed");
    assert!(
        fake_host::with(|proxy| proxy.shared.keys().any(|k| k.contains("pod_identity"))),
        "stored where every worker reads it"
    );
}

/// An upstream filter whose stream is cut mid-way (the caller hung up, or Bedrock's connection
/// broke) gets no hook but proxy-wasm's `on_done`: the request is counted there, failed with 499.
#[test]
fn a_stream_cut_mid_way_is_counted_when_the_host_is_done_with_it() {
    use bedrock_gateway_core::bedrock::eventstream::encode_frame;
    assert!(configure(
        40,
        "ai_gateway_backend",
        &plugin_json(inline_keys())
    ));
    let routed = chat_request(&[("x-ai-eg-model", "llama")], Some("bedrock"));
    let body =
        json!({"model": "llama", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(
        request(40, 41, routed, body.to_string().as_bytes()),
        (Action::Pause, Some(Action::Continue))
    );
    let event = |kind: &str, payload: &str| {
        encode_frame(
            &[(":event-type", kind), (":message-type", "event")],
            payload.as_bytes(),
        )
    };
    let frames = [
        event("messageStart", r#"{"role":"assistant"}"#),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
        ),
    ]
    .concat();
    let size = frames.len();
    fake_host::with(|proxy| {
        proxy.current = 41;
        let context = proxy.contexts.get_mut(&41).unwrap();
        context.response_headers = vec![
            (":status".into(), "200".into()),
            (
                "content-type".into(),
                "application/vnd.amazon.eventstream".into(),
            ),
        ];
        context.response_body = frames;
    });
    // SAFETY: the SDK's entry points, called on this thread as the host calls them.
    unsafe {
        assert_eq!(proxy_on_response_headers(41, 2, false), Action::Continue);
        assert_eq!(proxy_on_response_body(41, size, false), Action::Continue);
    }
    let cut = |proxy: &fake_host::FakeProxy| {
        proxy
            .metrics
            .iter()
            .enumerate()
            .filter(|(_, (_, name))| {
                name.starts_with("gen_ai.server.request.duration")
                    && name.contains("error_type=499")
            })
            .map(|(at, _)| u32::try_from(at + 1).unwrap())
            .filter(|id| proxy.recorded.iter().any(|(recorded, _)| recorded == id))
            .count()
    };
    assert_eq!(fake_host::with(|proxy| cut(proxy)), 0, "not while it runs");
    // SAFETY: as above.
    assert!(unsafe { proxy_on_done(41) });
    let (counted, names) = fake_host::with(|proxy| {
        let names: Vec<String> = proxy.metrics.iter().map(|(_, n)| n.clone()).collect();
        (cut(proxy), names)
    });
    assert_eq!(counted, 1, "{names:?}");
}

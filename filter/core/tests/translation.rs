//! Golden fixtures for the OpenAI <-> Converse translations, plus error cases.
//! Streams are framed by AWS's `aws-smithy-eventstream` and fed to the translator split
//! at many offsets: the SSE output must not depend on where chunks break.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use bedrock_gateway_core::api::openai::{self, ChatStreamTranslator, ResponseContext};
use bedrock_gateway_core::aws::sigv4::{Credentials, Signer};
use bedrock_gateway_core::bedrock::eventstream::FrameTranslator;
use bedrock_gateway_core::config::{Backend, BackendCredentials, Schema};
use bedrock_gateway_core::errors::ApiFormat;
use bedrock_gateway_core::gateway::{
    self, CallerHeaders, Endpoint, ResponseKind, ResponsePlan, ResponseTranslation, UpstreamHead,
};
use bedrock_gateway_core::translated::TokenUsage;
use common::{frame_bytes, parse_sse, push_in_pieces};
use serde_json::{json, Value};
use std::path::Path;

fn fixtures(kind: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut cases: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!cases.is_empty(), "no fixtures in {dir:?}");
    cases
}

fn context(value: &Value) -> ResponseContext {
    ResponseContext {
        id: value["id"].as_str().unwrap().into(),
        model: value["model"].as_str().unwrap().into(),
        created: value["created"].as_u64().unwrap(),
    }
}

#[test]
fn chat_requests_translate_to_converse() {
    for (name, case) in fixtures("chat_request") {
        let body = serde_json::to_vec(&case["openai"]).unwrap();
        let request = openai::parse_request(&body).unwrap();
        let converse = openai::to_converse(&request).unwrap();
        let produced: Value =
            serde_json::from_slice(&serde_json::to_vec(&converse).unwrap()).unwrap();
        assert_eq!(produced, case["converse"], "fixture {name}");
    }
}

#[test]
fn converse_responses_translate_to_chat_completions() {
    for (name, case) in fixtures("chat_response") {
        let body = serde_json::to_vec(&case["converse"]).unwrap();
        let produced = openai::from_converse_response(&body, &context(&case["context"])).unwrap();
        let produced: Value = serde_json::from_slice(&produced.body).unwrap();
        assert_eq!(produced, case["openai"], "fixture {name}");
    }
}

fn translate_stream(case: &Value, cuts: &[usize]) -> Vec<Value> {
    let bytes: Vec<u8> = case["frames"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(frame_bytes)
        .collect();
    let mut translator = ChatStreamTranslator::new(
        &context(&case["context"]),
        case["include_usage"].as_bool().unwrap(),
        1 << 20,
    );
    let sse = push_in_pieces(&bytes, cuts, |chunk, end| translator.push(chunk, end));
    assert!(translator.is_finished());
    parse_sse(&sse)
}

#[test]
fn converse_streams_translate_to_sse_chunks_however_split() {
    for (name, case) in fixtures("chat_stream") {
        let expected = case["sse"].as_array().unwrap().clone();
        assert_eq!(
            translate_stream(&case, &[]),
            expected,
            "fixture {name} in one chunk"
        );
        let total: usize = case["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| frame_bytes(f).len())
            .sum();
        for cut in (0..total).step_by(3) {
            assert_eq!(
                translate_stream(&case, &[cut]),
                expected,
                "fixture {name} split at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..total).collect();
        assert_eq!(
            translate_stream(&case, &every_byte),
            expected,
            "fixture {name} byte by byte"
        );
    }
}

#[test]
fn deltas_are_emitted_as_soon_as_their_frame_completes() {
    let case = &fixtures("chat_stream")
        .into_iter()
        .find(|(n, _)| n == "text_with_usage.json")
        .unwrap()
        .1;
    let frames: Vec<Vec<u8>> = case["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(frame_bytes)
        .collect();
    let mut translator = ChatStreamTranslator::new(&context(&case["context"]), true, 1 << 20);
    // messageStart alone yields the role chunk; half of the next frame yields nothing yet.
    assert_eq!(parse_sse(&translator.push(&frames[0], false)).len(), 1);
    let (head, tail) = frames[1].split_at(frames[1].len() / 2);
    assert!(translator.push(head, false).is_empty());
    let delta = parse_sse(&translator.push(tail, false));
    assert_eq!(delta[0]["choices"][0]["delta"]["content"], "Hel");
}

#[test]
fn corrupt_frames_end_the_stream_with_an_error_event() {
    let mut frame =
        frame_bytes(&json!({"event": "messageStart", "payload": {"role": "assistant"}}));
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    let mut translator = ChatStreamTranslator::new(
        &ResponseContext {
            id: "x".into(),
            model: "m".into(),
            created: 0,
        },
        false,
        1 << 20,
    );
    let events = parse_sse(&translator.push(&frame, false));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["error"]["type"], "server_error");
    assert!(events[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CRC"));
    // Nothing more after the error, not even [DONE].
    assert!(translator.push(b"more bytes", true).is_empty());
}

#[test]
fn invalid_requests_are_rejected_with_clear_messages() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("[1,2]", "Invalid chat completion request"),
        ("{\"model\":\"m\"}", "missing field `messages`"),
        ("{\"model\":\"m\",\"messages\":[]}", "at least one message"),
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "unknown variant `wizard`"),
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "at least one user or assistant"),
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", "audio input is not supported"),
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "`temperature` must be between"),
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"many\"}", "invalid type"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{not json"}}]}]}"#, "tool_calls[0].function.arguments is not valid JSON"),
        (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}"#, "image URLs are not fetched by the gateway"),
        (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]}"#, "image type \"image/tiff\" is not supported"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, "`n` greater than 1"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#, "`logprobs`"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"modalities":["text","audio"]}"#, "Audio output"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":0.5}"#, "frequency_penalty"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"50256":-100}}"#, "`logit_bias`"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","content":"r"}]}"#, "needs `tool_call_id`"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a"}}}"#, "json_schema.schema` is required"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#, "not supported"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}"#, "`reasoning_effort` must be"),
        (r#"{"model":"anthropic.claude-x","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high","max_tokens":1000}"#, "must be larger"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"retrieval"}]}"#, "only function tools"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required"}"#, "`tools` is empty"),
        (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}"#, "file ids are not supported"),
        (r#"{"model":"m","messages":[{"role":"function","content":"x","name":"f"}]}"#, "deprecated `function` role"),
    ];
    for (body, expected) in cases {
        let error = openai::parse_request(body.as_bytes())
            .and_then(|r| openai::to_converse(&r).map(|_| ()))
            .unwrap_err();
        assert_eq!(error.status, 400, "{body}");
        assert!(
            error.message.contains(expected),
            "{body}: {}",
            error.message
        );
        let rendered: Value = serde_json::from_slice(&error.to_openai_json()).unwrap();
        assert_eq!(rendered["error"]["type"], "invalid_request_error");
    }
}

#[test]
fn the_routing_stage_reads_only_a_valid_model() {
    assert_eq!(
        gateway::requested_model(br#"{"messages":[1,2],"model":"a.b-v1:0"}"#).unwrap(),
        "a.b-v1:0"
    );
    for (body, expected) in [
        (&b"not json"[..], "not a valid JSON object"),
        (b"{}", "no `model`"),
        (br#"{"model":""}"#, "must not be empty"),
        (br#"{"model":".."}"#, "relative path"),
        (br#"{"model":"a b"}"#, "character"),
        (br#"{"model":"a%2Fb"}"#, "character"),
        (b"{\"model\":\"a\\u0000b\"}", "character"),
        (br#"{"model":7}"#, "invalid type"),
    ] {
        let error = gateway::requested_model(body).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.message.contains(expected),
            "{:?}: {}",
            String::from_utf8_lossy(body),
            error.message
        );
    }
}

fn backend(model_name_override: Option<&str>, session_token: Option<&str>) -> Backend {
    Backend {
        name: "bedrock".into(),
        schema: Schema::Converse,
        region: "eu-west-1".into(),
        host: "bedrock-runtime.eu-west-1.amazonaws.com".into(),
        credentials: BackendCredentials::Static(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: session_token.map(str::to_owned),
        }),
        model_name_override: model_name_override.map(str::to_owned),
        anthropic_beta: Default::default(),
        options: Default::default(),
        calls_cluster: None,
        hosted_tools: Default::default(),
        prompt_caching: Default::default(),
        api_prefix: "/openai/v1".into(),
    }
}

#[test]
fn prepared_requests_target_the_backend_and_its_override() {
    let body = br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let eu_backend = backend(
        Some("arn:aws:bedrock:eu-west-1:1:inference-profile/eu.x-v1:0"),
        Some("tok"),
    );
    let upstream = gateway::prepare(
        Endpoint::ChatCompletions,
        body,
        CallerHeaders::default(),
        &eu_backend,
        1_795_000_000,
    )
    .unwrap();
    let BackendCredentials::Static(keys) = &eu_backend.credentials else {
        panic!("static keys")
    };
    let signature = upstream.sign(keys, &eu_backend.region, &mut Signer::new(), 1_795_000_000);
    assert_eq!(upstream.path, "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Ainference-profile%2Feu.x-v1%3A0/converse-stream");
    assert_eq!(upstream.host, "bedrock-runtime.eu-west-1.amazonaws.com");
    assert_eq!(upstream.accept, "application/vnd.amazon.eventstream");
    assert_eq!(signature.security_token.as_deref(), Some("tok"));
    assert!(signature.authorization.contains(
        "/eu-west-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token,"
    ));
    assert_eq!(signature.amz_date, "20261118T110640Z");
    assert_eq!(upstream.plan.requested_model, "alias");
    assert_eq!(
        upstream.plan.kind,
        ResponseKind::OpenAiChat {
            stream: true,
            include_usage: true,
            web_search: false,
        }
    );
    let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(
        sent,
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    );

    let plain = gateway::prepare(
        Endpoint::ChatCompletions,
        br#"{"model":"us.meta.llama3-2-1b-instruct-v1:0","messages":[{"role":"user","content":"hi"}]}"#,
        CallerHeaders::default(),
        &backend(None, None),
        1_795_000_000,
    )
    .unwrap();
    assert_eq!(
        plain.path,
        "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    );
    assert_eq!(plain.accept, "application/json");
    let BackendCredentials::Static(keys) = &backend(None, None).credentials else {
        panic!("static keys")
    };
    assert!(plain
        .sign(keys, "eu-west-1", &mut Signer::new(), 1_795_000_000)
        .security_token
        .is_none());
}

#[test]
fn inference_profiles_as_model_ids_keep_prompt_caching() {
    let body = br#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"long rules","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"hi"}]}"#;
    for profile in [
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "eu.amazon.nova-pro-v1:0",
        "apac.anthropic.claude-3-5-sonnet-20241022-v2:0",
    ] {
        let upstream = gateway::prepare(
            Endpoint::ChatCompletions,
            body,
            CallerHeaders::default(),
            &backend(Some(profile), None),
            1_795_000_000,
        )
        .unwrap();
        let encoded = profile.replace(':', "%3A").replace('/', "%2F");
        assert_eq!(upstream.path, format!("/model/{encoded}/converse"));
        let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
        assert_eq!(
            sent["system"],
            json!([{"text": "long rules"}, {"cachePoint": {"type": "default"}}]),
            "{profile}"
        );
    }
}

#[test]
fn anthropic_betas_on_converse_go_to_claude_only() {
    let body = br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let beta = CallerHeaders {
        anthropic_beta: Some("interleaved-thinking-2025-05-14, claude-code-20250219"),
        bedrock_model: None,
        bedrock_service_tier: None,
    };
    let claude = backend(Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0"), None);
    let upstream = gateway::prepare(
        Endpoint::AnthropicMessages,
        body,
        beta,
        &claude,
        1_795_000_000,
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(
        sent["additionalModelRequestFields"]["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14"])
    );
    assert_eq!(
        upstream.dropped_betas.as_deref(),
        Some("claude-code-20250219")
    );

    let llama = backend(Some("us.meta.llama3-2-1b-instruct-v1:0"), None);
    let upstream = gateway::prepare(
        Endpoint::AnthropicMessages,
        body,
        beta,
        &llama,
        1_795_000_000,
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert!(sent.get("additionalModelRequestFields").is_none());
    assert_eq!(
        upstream.dropped_betas.as_deref(),
        Some("interleaved-thinking-2025-05-14,claude-code-20250219")
    );
    let none = gateway::prepare(
        Endpoint::AnthropicMessages,
        body,
        CallerHeaders::default(),
        &llama,
        1_795_000_000,
    )
    .unwrap();
    assert_eq!(none.dropped_betas, None);
}

fn head(status: u16, error_type: Option<&str>) -> UpstreamHead<'_> {
    UpstreamHead {
        status,
        error_type,
        request_id: "rid",
        input_tokens: None,
        output_tokens: None,
    }
}

fn plan(stream: bool) -> ResponsePlan {
    ResponsePlan {
        format: ApiFormat::OpenAi,
        kind: ResponseKind::OpenAiChat {
            stream,
            include_usage: false,
            web_search: false,
        },
        requested_model: "m".into(),
        created: 1,
        echo: String::new(),
        tool_names: Default::default(),
        rerank: None,
    }
}

#[test]
fn bedrock_errors_become_openai_errors_with_the_right_status() {
    // (Bedrock status, x-amzn-errortype, body, expected status, expected OpenAI error type)
    type Case<'a> = (u16, Option<&'a str>, &'a [u8], u16, &'a str);
    let cases: &[Case<'_>] = &[
        (
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests"}"#,
            429,
            "rate_limit_error",
        ),
        (
            403,
            Some("AccessDeniedException"),
            br#"{"message":"no access"}"#,
            403,
            "permission_error",
        ),
        (
            403,
            Some("UnrecognizedClientException"),
            br#"{"Message":"bad token"}"#,
            403,
            "authentication_error",
        ),
        (
            400,
            Some("ValidationException"),
            br#"{"message":"The provided model identifier is invalid."}"#,
            400,
            "invalid_request_error",
        ),
        (
            404,
            Some("ResourceNotFoundException"),
            br#"{"message":"gone"}"#,
            404,
            "not_found_error",
        ),
        (
            500,
            Some("InternalServerException"),
            b"<html>oops</html>",
            500,
            "server_error",
        ),
        (503, None, b"", 503, "server_error"),
    ];
    for (status, error_type, body, expected_status, expected_type) in cases {
        let translation =
            ResponseTranslation::for_response(&plan(true), head(*status, *error_type), 1 << 20);
        assert!(!translation.is_streaming(), "errors are never streamed");
        let (out_status, out) = translation.translate_body(body);
        assert_eq!(out.usage, None, "errors report no usage");
        let out: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(out_status, *expected_status);
        assert_eq!(
            out["error"]["type"], *expected_type,
            "{status} {error_type:?}"
        );
        assert!(!out["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, out) =
        ResponseTranslation::for_response(&plan(false), head(429, Some("ThrottlingException")), 1)
            .translate_body(br#"{"message":"Too many requests"}"#);
    let out: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(status, 429);
    assert_eq!(
        out["error"]["message"],
        "Bedrock ThrottlingException: Too many requests"
    );
    assert_eq!(out["error"]["code"], "ThrottlingException");
}

#[test]
fn unusable_success_bodies_become_502() {
    for body in [&b"{}"[..], b"not json", br#"{"output":{}}"#] {
        let (status, out) = ResponseTranslation::for_response(&plan(false), head(200, None), 1)
            .translate_body(body);
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(body));
        let out: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(out["error"]["type"], "server_error");
    }
}

#[test]
fn bodiless_answers_are_errors_in_the_callers_format() {
    // A bare error status translates as an error with an empty body would.
    let (status, out) =
        ResponseTranslation::for_response(&plan(false), head(503, None), 1).translate_bodiless();
    let out: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(status, 503);
    assert_eq!(out["error"]["type"], "server_error");
    // A 200 that ends with its headers is not a success: neither a reply nor a stream began.
    let (status, out) =
        ResponseTranslation::for_response(&plan(false), head(200, None), 1).translate_bodiless();
    assert_eq!(status, 502);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.body).unwrap()["error"]["type"],
        "server_error"
    );
    let (status, out) = ResponseTranslation::for_response(&plan(true), head(200, None), 1 << 20)
        .translate_bodiless();
    let out: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(status, 502);
    assert_eq!(out["error"]["type"], "server_error");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .contains("before sending any event"));
    let anthropic_stream = ResponsePlan {
        format: ApiFormat::Anthropic,
        kind: ResponseKind::AnthropicMessage { stream: true },
        requested_model: "m".into(),
        created: 1,
        echo: String::new(),
        tool_names: Default::default(),
        rerank: None,
    };
    let (status, out) =
        ResponseTranslation::for_response(&anthropic_stream, head(200, None), 1 << 20)
            .translate_bodiless();
    let out: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(status, 502);
    assert_eq!(out["type"], "error");
    assert_eq!(out["error"]["type"], "api_error");
}

#[test]
fn json_strings_are_escaped_like_serde_json() {
    for text in [
        "plain",
        "quote \" backslash \\ newline \n tab \t",
        "\u{0}\u{1f}\u{7f} ✓ 😀",
        "",
    ] {
        let mut ours = String::new();
        bedrock_gateway_core::json::push_json_string(&mut ours, text);
        assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), text);
    }
}

#[test]
fn model_listing_is_answered_locally_in_both_formats() {
    use bedrock_gateway_core::config::ModelInfo;
    let models = vec![
        ModelInfo {
            id: "a:0".into(),
            created: 1_700_000_000,
            owned_by: None,
            display_name: None,
        },
        ModelInfo {
            id: "arn:aws:bedrock:us-east-1:1:inference-profile/b".into(),
            created: 0,
            owned_by: Some("me".into()),
            display_name: Some("B".into()),
        },
    ];
    let list = gateway::answer_locally("GET", "/v1/models", &models).unwrap();
    let list: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(
        list,
        json!({"object": "list", "data": [
            {"id": "a:0", "object": "model", "created": 1_700_000_000, "owned_by": "aws-bedrock"},
            {"id": "arn:aws:bedrock:us-east-1:1:inference-profile/b", "object": "model", "created": 0, "owned_by": "me"},
        ]})
    );
    let one = gateway::answer_locally(
        "GET",
        "/v1/models/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fb",
        &models,
    )
    .unwrap();
    assert_eq!(one.status, 200);
    let anthropic_list =
        gateway::answer_locally("GET", "/anthropic/v1/models?limit=20", &models).unwrap();
    let anthropic_list: Value = serde_json::from_slice(&anthropic_list.body).unwrap();
    assert_eq!(
        anthropic_list["data"][0],
        json!({"type": "model", "id": "a:0", "display_name": "a:0", "created_at": "2023-11-14T22:13:20Z"})
    );
    assert_eq!(
        anthropic_list["last_id"],
        "arn:aws:bedrock:us-east-1:1:inference-profile/b"
    );
    let missing = gateway::answer_locally("GET", "/anthropic/v1/models/nope", &models).unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&missing.body).unwrap()["error"]["type"],
        "not_found_error"
    );
    assert_eq!(
        gateway::answer_locally("POST", "/v1/models", &models)
            .unwrap()
            .status,
        405
    );
    assert!(gateway::answer_locally("GET", "/v1/modelsx", &models).is_none());
    assert!(gateway::answer_locally("GET", "/v1/chat/completions", &models).is_none());
}

#[test]
fn embeddings_requests_and_responses() {
    use bedrock_gateway_core::api::embeddings::{self, Family};
    let (titan, family) = embeddings::prepare(
        br#"{"model":"alias","input":["only one"],"dimensions":256,"encoding_format":"base64"}"#,
        "amazon.titan-embed-text-v2:0",
    )
    .unwrap();
    assert_eq!(family, Family::Titan);
    assert!(titan.base64);
    assert_eq!(
        serde_json::from_slice::<Value>(&titan.body).unwrap(),
        json!({"inputText": "only one", "normalize": true, "dimensions": 256})
    );

    let (cohere, family) = embeddings::prepare(
        br#"{"model":"c","input":["a","b"]}"#,
        "cohere.embed-english-v3",
    )
    .unwrap();
    assert_eq!(family, Family::Cohere);
    assert_eq!(
        serde_json::from_slice::<Value>(&cohere.body).unwrap(),
        json!({"texts": ["a", "b"], "input_type": "search_document"})
    );

    // A list for Titan: one body per input, in order, each with the caller's options.
    let (batch, _) = embeddings::prepare(
        br#"{"model":"t","input":["a","b","c"],"dimensions":512}"#,
        "amazon.titan-embed-text-v2:0",
    )
    .unwrap();
    let bodies: Vec<Value> = batch
        .batch
        .unwrap()
        .bodies
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["a", "b", "c"].map(|t| json!({"inputText": t, "normalize": true, "dimensions": 512}))
    );
    assert!(batch.body.is_empty(), "no request of its own");
    let answers: Vec<(Vec<u8>, Option<u64>)> = [
        r#"{"embedding":[0.5],"inputTextTokenCount":2}"#,
        r#"{"embedding":[1.0],"inputTextTokenCount":3}"#,
    ]
    .map(|a| (a.as_bytes().to_vec(), Some(99)))
    .to_vec();
    let joined = embeddings::batch_response(&answers, Family::Titan, "t", true).unwrap();
    assert_eq!(
        joined.usage,
        Some(TokenUsage {
            input: 5,
            ..TokenUsage::default()
        }),
        "the inputs' counts summed (Titan's own, before the header's)"
    );
    let joined: Value = serde_json::from_slice(&joined.body).unwrap();
    assert_eq!(
        (
            joined["data"][0]["index"].clone(),
            joined["data"][1]["index"].clone()
        ),
        (json!(0), json!(1))
    );
    assert_eq!(
        joined["data"][0]["embedding"], "AAAAPw==",
        "base64 as for one input"
    );
    assert_eq!(joined["usage"]["total_tokens"], 5);
    assert_eq!(
        embeddings::batch_response(&[(b"{}".to_vec(), None)], Family::Titan, "t", false)
            .unwrap_err()
            .status,
        502
    );

    // Cohere Embed v4: one call, `output_dimension`, vectors by type.
    let (cohere_v4, family) = embeddings::prepare(
        br#"{"model":"c4","input":["a","b"],"dimensions":256}"#,
        "cohere.embed-v4:0",
    )
    .unwrap();
    assert_eq!(family, Family::CohereV4);
    assert!(cohere_v4.batch.is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&cohere_v4.body).unwrap(),
        json!({"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 256})
    );
    let answered = embeddings::response(
        br#"{"id":"x","response_type":"embeddings_by_type","embeddings":{"float":[[0.25],[0.5]]},"texts":["a","b"]}"#,
        Family::CohereV4,
        "c4",
        false,
        Some(2),
    )
    .unwrap();
    let answered: Value = serde_json::from_slice(&answered.body).unwrap();
    assert_eq!(answered["data"][1]["embedding"], json!([0.5]));

    // Nova Multimodal Embeddings: one text per call, like Titan; its count only in the header.
    let (nova, family) = embeddings::prepare(
        br#"{"model":"n","input":["a","b"],"dimensions":384}"#,
        "amazon.nova-2-multimodal-embeddings-v1:0",
    )
    .unwrap();
    assert_eq!(family, Family::Nova);
    let nova = nova.batch.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&nova.bodies[1]).unwrap(),
        json!({"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 384, "text": {"truncationMode": "END", "value": "b"}}})
    );
    let nova_answers = [
        (
            br#"{"embeddings":[{"embeddingType":"TEXT","embedding":[0.5]}]}"#.to_vec(),
            Some(2),
        ),
        (
            br#"{"embeddings":[{"embeddingType":"TEXT","embedding":[1.0]}]}"#.to_vec(),
            Some(4),
        ),
    ];
    let joined = embeddings::batch_response(&nova_answers, Family::Nova, "n", false).unwrap();
    assert_eq!(
        joined.usage.map(|u| u.input),
        Some(6),
        "the headers' counts summed"
    );
    let joined: Value = serde_json::from_slice(&joined.body).unwrap();
    assert_eq!(joined["data"][1]["embedding"], json!([1.0]));
    let one = embeddings::response(
        br#"{"embeddings":[{"embeddingType":"TEXT","embedding":[0.5]}]}"#,
        Family::Nova,
        "n",
        false,
        Some(7),
    )
    .unwrap();
    assert_eq!(one.usage.map(|u| u.input), Some(7));

    let ninety_seven: Vec<String> = (0..97).map(|i| format!("text {i}")).collect();
    let too_many = serde_json::to_vec(&json!({"model": "t", "input": ninety_seven})).unwrap();
    for (body, model, expected) in [
        (
            &too_many[..],
            "amazon.titan-embed-text-v2:0",
            "at most 96 inputs",
        ),
        (
            &too_many[..],
            "cohere.embed-english-v3",
            "at most 96 inputs",
        ),
        (
            br#"{"model":"t","input":["a","b"],"dimensions":300}"#,
            "amazon.titan-embed-text-v2:0",
            "[256, 512, 1024]",
        ),
        (
            br#"{"model":"c4","input":"a","dimensions":300}"#,
            "cohere.embed-v4:0",
            "[256, 512, 1024, 1536]",
        ),
        (
            br#"{"model":"n","input":"a","dimensions":512}"#,
            "amazon.nova-2-multimodal-embeddings-v1:0",
            "[256, 384, 1024, 3072]",
        ),
        (
            &too_many[..],
            "amazon.nova-2-multimodal-embeddings-v1:0",
            "at most 96 inputs",
        ),
        (
            br#"{"model":"t","input":["a",""]}"#,
            "amazon.titan-embed-text-v2:0",
            "non-empty",
        ),
        (
            br#"{"model":"t","input":"a","dimensions":300}"#,
            "amazon.titan-embed-text-v2:0",
            "[256, 512, 1024]",
        ),
        (
            br#"{"model":"c","input":"a","dimensions":512}"#,
            "cohere.embed-english-v3",
            "cannot change",
        ),
        (
            br#"{"model":"t","input":[1,2,3]}"#,
            "amazon.titan-embed-text-v2:0",
            "token arrays",
        ),
        (
            br#"{"model":"t","input":""}"#,
            "amazon.titan-embed-text-v2:0",
            "non-empty",
        ),
        (
            br#"{"model":"t","input":"a","encoding_format":"int8"}"#,
            "amazon.titan-embed-text-v2:0",
            "float or base64",
        ),
        (
            br#"{"model":"m","input":"a"}"#,
            "us.meta.llama3-2-1b-instruct-v1:0",
            "not an embedding model",
        ),
    ] {
        let error = embeddings::prepare(body, model).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.message.contains(expected), "{}", error.message);
    }

    let floats = embeddings::response(
        br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#,
        Family::Titan,
        "alias",
        false,
        None,
    )
    .unwrap();
    assert_eq!(
        floats.usage,
        Some(TokenUsage {
            input: 3,
            ..TokenUsage::default()
        }),
        "Titan reports its own count"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&floats.body).unwrap(),
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}], "model": "alias", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    );
    let encoded = embeddings::response(
        br#"{"embeddings":{"float":[[1.0],[0.5]]}}"#,
        Family::Cohere,
        "c",
        true,
        Some(4),
    )
    .unwrap();
    assert_eq!(
        encoded.usage,
        Some(TokenUsage {
            input: 4,
            ..TokenUsage::default()
        }),
        "Cohere's count comes from the header"
    );
    let encoded: Value = serde_json::from_slice(&encoded.body).unwrap();
    assert_eq!(
        encoded["data"][1]["embedding"], "AAAAPw==",
        "0.5f32 little-endian, base64"
    );
    assert_eq!(encoded["usage"]["prompt_tokens"], 4);
    assert_eq!(
        embeddings::response(b"{}", Family::Titan, "t", false, None)
            .unwrap_err()
            .status,
        502
    );
}

#[test]
fn usage_is_read_from_every_kind_of_response_and_weighed() {
    use bedrock_gateway_core::config::CostWeights;
    let chat = ResponseTranslation::for_response(&plan(false), head(200, None), 1 << 20);
    let converse = br#"{"output":{"message":{"content":[{"text":"x"}]}},"usage":{"inputTokens":3,"outputTokens":5,"totalTokens":20,"cacheReadInputTokens":10,"cacheWriteInputTokens":2}}"#;
    let (status, translated) = chat.translate_body(converse);
    assert_eq!(status, 200);
    let usage = translated.usage.unwrap();
    assert_eq!(
        usage,
        TokenUsage {
            input: 3,
            output: 5,
            cache_read: 10,
            cache_write: 2
        }
    );
    assert_eq!(usage.total(), 20);
    let weights = CostWeights {
        input: 1.0,
        output: 4.0,
        cache_read: 0.1,
        cache_write: 1.25,
    };
    assert_eq!(weights.of(&usage), 3 + 20 + 1 + 3);
    assert_eq!(CostWeights::default().of(&usage), 20);

    let anthropic_plan = ResponsePlan {
        format: ApiFormat::Anthropic,
        kind: ResponseKind::AnthropicMessage { stream: false },
        requested_model: "m".into(),
        created: 1,
        echo: String::new(),
        tool_names: Default::default(),
        rerank: None,
    };
    let message = br#"{"content":[],"usage":{"input_tokens":7,"output_tokens":2,"cache_read_input_tokens":4}}"#;
    let (_, translated) = ResponseTranslation::for_response(&anthropic_plan, head(200, None), 1)
        .translate_body(message);
    assert_eq!(
        translated.usage,
        Some(TokenUsage {
            input: 7,
            output: 2,
            cache_read: 4,
            cache_write: 0
        })
    );
    let without_usage = br#"{"content":[]}"#;
    let (_, translated) = ResponseTranslation::for_response(&anthropic_plan, head(200, None), 1)
        .translate_body(without_usage);
    assert_eq!(translated.usage, None);
}

#[test]
fn envoys_local_replies_get_caller_format_errors() {
    use bedrock_gateway_core::gateway::local_reply_error;
    assert_eq!(
        local_reply_error("direct_response", 404, true, Some("m"))
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        local_reply_error("request_payload_too_large", 413, false, None)
            .unwrap()
            .status,
        413
    );
    assert_eq!(
        local_reply_error("request_rate_limited", 429, false, None)
            .unwrap()
            .kind,
        bedrock_gateway_core::errors::ErrorKind::RateLimited
    );
    assert_eq!(
        local_reply_error(
            "upstream_reset_before_response_started{connection_failure}",
            503,
            false,
            None
        )
        .unwrap()
        .status,
        502
    );
    assert!(
        local_reply_error("via_upstream", 500, false, None).is_none(),
        "Bedrock's own answers are translated by the backend stage"
    );
    use bedrock_gateway_core::errors::ErrorKind;
    let missing = local_reply_error("missing_api_key", 401, false, None).unwrap();
    assert_eq!(
        (missing.status, missing.kind),
        (401, ErrorKind::Authentication)
    );
    assert_eq!(
        local_reply_error("unkonwn_api_key", 401, false, None)
            .unwrap()
            .message,
        "Incorrect API key provided."
    );
    let expired =
        local_reply_error("jwt_authn_access_denied{Jwt_is_expired}", 401, false, None).unwrap();
    assert_eq!(
        (expired.status, expired.message.as_str()),
        (401, "Authentication failed: Jwt is expired.")
    );
    let denied = local_reply_error(
        "rbac_access_denied_matched_policy[none]",
        403,
        false,
        Some("anthropic.claude-x"),
    )
    .unwrap();
    assert_eq!(
        (denied.status, denied.kind),
        (403, ErrorKind::PermissionDenied)
    );
    assert!(
        denied.message.contains("\"anthropic.claude-x\""),
        "names the model: {}",
        denied.message
    );
    assert!(
        local_reply_error("some_filter_reply", 403, true, None).is_none(),
        "JSON replies are already in shape"
    );
    for (content_type, ok) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("text/plain", false),
        ("multipart/form-data; boundary=x", false),
        ("", true),
    ] {
        assert_eq!(
            bedrock_gateway_core::gateway::check_content_type(content_type).is_ok(),
            ok,
            "{content_type}"
        );
    }
    for (encoding, ok) in [
        ("", true),
        ("identity", true),
        (" Identity ", true),
        ("gzip", false),
        ("br", false),
        ("gzip, identity", false),
    ] {
        let checked = bedrock_gateway_core::gateway::check_content_encoding(encoding);
        assert_eq!(checked.is_ok(), ok, "{encoding}");
        if let Err(error) = checked {
            assert_eq!(error.status, 415);
            assert!(error.message.contains("uncompressed"), "{}", error.message);
        }
    }
}

/// An agent's conversation gets cache points where its next turn can reuse the prompt, on models
/// that cache prompts, when the backend's policy is `auto` and the caller placed none.
#[test]
fn prompt_caching_auto_places_cache_points_agents_do_not_ask_for() {
    use bedrock_gateway_core::config::PromptCaching;
    let agent_turn = json!({
        "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Fix the bug."},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "fn main() {}"}
        ],
        "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]
    });
    let prepared = |policy: PromptCaching, body: &Value| {
        let mut backend = backend(None, None);
        backend.prompt_caching = policy;
        let upstream = gateway::prepare(
            Endpoint::ChatCompletions,
            body.to_string().as_bytes(),
            CallerHeaders::default(),
            &backend,
            0,
        )
        .unwrap();
        serde_json::from_slice::<Value>(&upstream.body).unwrap()
    };
    let sent = prepared(PromptCaching::Auto, &agent_turn);
    assert_eq!(
        sent["system"].as_array().unwrap().last().unwrap(),
        &json!({"cachePoint": {"type": "default"}})
    );
    assert_eq!(
        sent["toolConfig"]["tools"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        &json!({"cachePoint": {"type": "default"}})
    );
    let last = sent["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(
        last.as_array().unwrap().last().unwrap(),
        &json!({"cachePoint": {"type": "default"}})
    );
    assert!(
        last[0].get("toolResult").is_some(),
        "after the turn's own content"
    );

    let count = |v: &Value| v.to_string().matches("cachePoint").count();
    assert_eq!(
        count(&prepared(PromptCaching::Caller, &agent_turn)),
        0,
        "off by default"
    );
    let mut llama = agent_turn.clone();
    llama["model"] = json!("us.meta.llama3-2-1b-instruct-v1:0");
    assert_eq!(
        count(&prepared(PromptCaching::Auto, &llama)),
        0,
        "never on a model that refuses them"
    );
    let mut own = agent_turn.clone();
    own["messages"][1]["content"] =
        json!([{"type": "text", "text": "Fix the bug.", "cache_control": {"type": "ephemeral"}}]);
    assert_eq!(
        count(&prepared(PromptCaching::Auto, &own)),
        1,
        "a caller's own cache points are left as they are"
    );
    assert!(bedrock_gateway_core::bedrock::caches_prompts(
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"
    ));
    assert!(bedrock_gateway_core::bedrock::caches_prompts(
        "global.anthropic.claude-haiku-4-5-20251001-v1:0"
    ));
    assert!(!bedrock_gateway_core::bedrock::caches_prompts(
        "anthropic.claude-3-5-sonnet-20241022-v2:0"
    ));
}

/// OpenAI's `web_search_options` is Nova's web grounding; its web citations come back as
/// `url_citation` annotations over the text they support, whole and streamed.
#[test]
fn web_search_is_nova_grounding_and_its_citations_are_url_annotations() {
    let body = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"news?"}}],"web_search_options":{{}}}}"#
        )
    };
    let nova = gateway::prepare(
        Endpoint::ChatCompletions,
        body("us.amazon.nova-premier-v1:0").as_bytes(),
        CallerHeaders::default(),
        &backend(None, None),
        1_795_000_000,
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&nova.body).unwrap();
    assert_eq!(
        sent["toolConfig"],
        json!({"tools": [{"systemTool": {"name": "nova_grounding"}}]})
    );
    assert!(matches!(
        nova.plan.kind,
        ResponseKind::OpenAiChat {
            web_search: true,
            ..
        }
    ));
    // Nova caches prompts, but a system tool alone defines nothing to cache after the tools.
    let caching = Backend {
        prompt_caching: bedrock_gateway_core::config::PromptCaching::Auto,
        ..backend(None, None)
    };
    let cached = gateway::prepare(
        Endpoint::ChatCompletions,
        body("us.amazon.nova-premier-v1:0").as_bytes(),
        CallerHeaders::default(),
        &caching,
        1_795_000_000,
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&cached.body).unwrap();
    assert_eq!(
        sent["toolConfig"],
        json!({"tools": [{"systemTool": {"name": "nova_grounding"}}]})
    );
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"cachePoint": {"type": "default"}})
    );
    let llama = gateway::prepare(
        Endpoint::ChatCompletions,
        body("us.meta.llama3-2-1b-instruct-v1:0").as_bytes(),
        CallerHeaders::default(),
        &backend(None, None),
        1_795_000_000,
    )
    .unwrap_err();
    assert_eq!(llama.status, 400);
    assert!(
        llama
            .message
            .contains("only Amazon Nova models search the web"),
        "{}",
        llama.message
    );

    let web = json!({"title": "Example News", "location": {"web": {"url": "https://example.com/a", "domain": "example.com"}}});
    let reply = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Héllo. "},
            {"citationsContent": {"content": [{"text": "It rained."}], "citations": [web]}}
        ]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    });
    let context = ResponseContext {
        id: "1".into(),
        model: "nova".into(),
        created: 1,
    };
    let translated =
        openai::from_converse_response(&serde_json::to_vec(&reply).unwrap(), &context).unwrap();
    let completion: Value = serde_json::from_slice(&translated.body).unwrap();
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], "Héllo. It rained.");
    let expected = json!([{"type": "url_citation", "url_citation": {
        "start_index": 7, "end_index": 17, "url": "https://example.com/a", "title": "Example News"}}]);
    assert_eq!(
        message["annotations"], expected,
        "character offsets, not bytes"
    );

    let frames: Vec<u8> = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "Héllo. "}}}),
        json!({"event": "contentBlockStop", "payload": {"contentBlockIndex": 0}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 1, "delta": {"text": "It rained."}}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 1, "delta": {"citation": web}}}),
        json!({"event": "contentBlockStop", "payload": {"contentBlockIndex": 1}}),
        json!({"event": "messageStop", "payload": {"stopReason": "end_turn"}}),
    ]
    .iter()
    .flat_map(frame_bytes)
    .collect();
    let mut annotating = ChatStreamTranslator::annotating(&context, false, true, 1 << 20);
    let chunks = parse_sse(&annotating.push(&frames, true));
    let annotations: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("annotations"))
        .collect();
    assert_eq!(annotations, vec![&expected]);
    let mut plain = ChatStreamTranslator::new(&context, false, 1 << 20);
    let unannotated = parse_sse(&plain.push(&frames, true));
    assert!(
        unannotated
            .iter()
            .all(|c| c["choices"][0]["delta"].get("annotations").is_none()),
        "without web search nothing is counted or annotated"
    );
}

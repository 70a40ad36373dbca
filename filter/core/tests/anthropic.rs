//! Anthropic Messages on InvokeModel: body rewriting, CountTokens wrapping, and the stream
//! translator fed frames written by AWS's `aws-smithy-eventstream`, split anywhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use bedrock_gateway_core::api::anthropic;
use bedrock_gateway_core::api::anthropic::invoke::AnthropicStreamTranslator;
use bedrock_gateway_core::bedrock::betas::BetaPolicy;
use bedrock_gateway_core::bedrock::eventstream::FrameTranslator;
use common::push_in_pieces;
use serde_json::{json, Value};

#[test]
fn invoke_body_keeps_every_other_member_byte_for_byte() {
    let body = br#"{"model":"anthropic.claude-3-5-sonnet-20241022-v2:0","max_tokens":1024,"stream":true,
  "messages":[{"role":"user","content":"h\u00e9llo"}],  "temperature" : 0.50,"tools":[{"name":"t","input_schema":{"type":"object"}}],"new_feature":{"x":[1,2.0e3]}}"#;
    let invoke = anthropic::invoke::prepare_invoke(body, None, &BetaPolicy::default()).unwrap();
    assert_eq!(invoke.model, "anthropic.claude-3-5-sonnet-20241022-v2:0");
    assert!(invoke.stream);
    assert_eq!(
        String::from_utf8(invoke.body).unwrap(),
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1024,"messages":[{"role":"user","content":"h\u00e9llo"}],"temperature":0.50,"tools":[{"name":"t","input_schema":{"type":"object"}}],"new_feature":{"x":[1,2.0e3]}}"#
    );
}

#[test]
fn beta_header_and_body_flags_merge_and_a_callers_version_is_kept() {
    let body = br#"{"model":"m","max_tokens":1,"messages":[],"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a"]}"#;
    let invoke = anthropic::invoke::prepare_invoke(
        body,
        Some(" b , a,,c ,x"),
        &BetaPolicy::new(&["a", "b", "c"], &[]),
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&invoke.body).unwrap();
    assert_eq!(sent["anthropic_beta"], json!(["a", "b", "c"]));
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert!(!invoke.stream);
    assert_eq!(invoke.dropped_betas.as_deref(), Some("x"));
}

#[test]
fn invalid_messages_requests_are_explained() {
    for (body, expected) in [
        (
            &br#"{"max_tokens":1,"messages":[]}"#[..],
            "model: Field required",
        ),
        (
            br#"{"model":"m","messages":[]}"#,
            "max_tokens: Field required",
        ),
        (
            br#"{"model":"m","max_tokens":0,"messages":[]}"#,
            "greater than or equal to 1",
        ),
        (
            br#"{"model":"m","max_tokens":"9","messages":[]}"#,
            "max_tokens: Input should be a valid integer",
        ),
        (
            br#"{"model":"m","max_tokens":9}"#,
            "messages: Field required",
        ),
        (
            br#"{"model":"m","max_tokens":9,"messages":{}}"#,
            "messages: Input should be a valid list",
        ),
        (
            br#"{"model":"m","max_tokens":9,"messages":[],"stream":"yes"}"#,
            "stream: Input should be a valid boolean",
        ),
        (
            br#"{"model":"m","max_tokens":9,"messages":[],"anthropic_beta":"x"}"#,
            "anthropic_beta",
        ),
        (
            br#"{"model":"m","model":"n","max_tokens":9,"messages":[]}"#,
            "duplicate field",
        ),
        (b"[]", "not a valid JSON object"),
        (b"  ", "empty"),
    ] {
        let error =
            anthropic::invoke::prepare_invoke(body, None, &BetaPolicy::default()).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.message.contains(expected),
            "{}: {}",
            String::from_utf8_lossy(body),
            error.message
        );
        let rendered: Value = serde_json::from_slice(&error.to_anthropic_json()).unwrap();
        assert_eq!(rendered["type"], "error");
        assert_eq!(rendered["error"]["type"], "invalid_request_error");
    }
}

#[test]
fn count_tokens_wraps_an_invoke_body_as_base64() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let count = anthropic::invoke::prepare_count_tokens(
        body,
        Some("beta-1,beta-2"),
        &BetaPolicy::new(&["beta-1"], &[]),
    )
    .unwrap();
    assert_eq!(count.model, "m");
    assert_eq!(count.dropped_betas.as_deref(), Some("beta-2"));
    let wrapped: Value = serde_json::from_slice(&count.body).unwrap();
    let encoded = wrapped["input"]["invokeModel"]["body"].as_str().unwrap();
    let inner: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        inner,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1, "anthropic_beta": ["beta-1"], "messages": [{"role": "user", "content": "hi"}]})
    );
    assert_eq!(
        anthropic::invoke::count_tokens_response(br#"{"inputTokens":42}"#).unwrap(),
        br#"{"input_tokens":42}"#
    );
    assert_eq!(
        anthropic::invoke::count_tokens_response(b"{}")
            .unwrap_err()
            .status,
        502
    );
}

#[test]
fn plain_responses_report_the_requested_model() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
    let rewritten: Value = serde_json::from_slice(
        &anthropic::invoke::rewrite_message_model(body, "my-alias")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(rewritten["model"], "my-alias");
    assert_eq!(rewritten["content"][0]["text"], "hi");
    assert_eq!(
        anthropic::invoke::rewrite_message_model(b"oops", "m")
            .unwrap_err()
            .status,
        502
    );
}

fn chunk_frame(event: &Value) -> Vec<u8> {
    let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(event.to_string()), "p": "abcd"});
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String("chunk".into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

fn exception_frame(kind: &str, message: &str) -> Vec<u8> {
    let message = Message::new(json!({ "message": message }).to_string().into_bytes())
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

fn bedrock_stream() -> Vec<Value> {
    vec![
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hé \"there\"\n"}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}),
        json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":9,"outputTokenCount":3,"invocationLatency":5,"firstByteLatency":2}}),
    ]
}

fn parse_sse(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

fn translate(bytes: &[u8], cuts: &[usize]) -> Vec<(String, Value)> {
    let mut translator = AnthropicStreamTranslator::new("alias-model", 1 << 20);
    let out = push_in_pieces(bytes, cuts, |chunk, end| translator.push(chunk, end));
    assert!(translator.is_finished());
    parse_sse(&out)
}

#[test]
fn stream_chunks_become_anthropic_events_however_split() {
    let events = bedrock_stream();
    let bytes: Vec<u8> = events.iter().flat_map(chunk_frame).collect();
    let mut expected: Vec<(String, Value)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    expected[0].1["message"]["model"] = json!("alias-model");
    expected[5].1 = json!({"type": "message_stop"});
    assert_eq!(translate(&bytes, &[]), expected);
    for cut in 0..bytes.len() {
        assert_eq!(translate(&bytes, &[cut]), expected, "split at {cut}");
    }
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(translate(&bytes, &every_byte), expected);
}

#[test]
fn exceptions_and_truncation_end_the_stream_with_an_error_event() {
    let events = bedrock_stream();
    let mut bytes: Vec<u8> = events[..3].iter().flat_map(chunk_frame).collect();
    bytes.extend(exception_frame("throttlingException", "Too many tokens"));
    bytes.extend(chunk_frame(&events[3]));
    let out = translate(&bytes, &[]);
    assert_eq!(out.len(), 4, "nothing after the error");
    assert_eq!(out[3].0, "error");
    assert_eq!(
        out[3].1,
        json!({"type":"error","error":{"type":"rate_limit_error","message":"Bedrock throttlingException: Too many tokens"}})
    );

    let truncated: Vec<u8> = events[..3].iter().flat_map(chunk_frame).collect();
    let out = translate(&truncated, &[]);
    assert_eq!(out.last().unwrap().1["error"]["type"], "api_error");
    assert!(out.last().unwrap().1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ended before"));
}

#[test]
fn unreadable_chunks_end_the_stream_with_an_error_event() {
    let message = Message::new(br#"{"bytes":"%%%not base64"}"#.to_vec())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String("chunk".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut bytes = Vec::new();
    write_message_to(&message, &mut bytes).unwrap();
    let out = translate(&bytes, &[]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "error");
    assert!(out[0].1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unreadable chunk"));
}

// ---- Anthropic Messages on Converse -------------------------------------------------------

use bedrock_gateway_core::api::anthropic::converse::ConverseToAnthropicStream;

#[test]
fn messages_translate_to_converse() {
    let body = br#"{
      "model": "us.meta.llama3-2-1b-instruct-v1:0", "max_tokens": 300, "temperature": 0.2, "top_p": 0.8, "top_k": 40,
      "stop_sequences": ["END"], "metadata": {"user_id": "u"},
      "system": [{"type": "text", "text": "Sys A"}, {"type": "text", "text": "Sys B", "cache_control": {"type": "ephemeral"}}],
      "thinking": {"type": "enabled", "budget_tokens": 1024},
      "tools": [{"name": "t1", "description": "d", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
      "tool_choice": {"type": "any"},
      "messages": [
        {"role": "user", "content": [
          {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
          {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
          {"type": "document", "name": "spec.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
        ]},
        {"role": "assistant", "content": [
          {"type": "thinking", "thinking": "hmm", "signature": "s1"},
          {"type": "redacted_thinking", "data": "enc"},
          {"type": "tool_use", "id": "toolu_1", "name": "t1", "input": {"a": [1, 2]}}
        ]},
        {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [{"type": "text", "text": "boom"}]}
        ]},
        {"role": "user", "content": "and now?"}
      ]
    }"#;
    let request = anthropic::converse::parse(body).unwrap();
    let converse = anthropic::converse::to_converse(&request, true).unwrap();
    let produced: Value = serde_json::from_slice(&serde_json::to_vec(&converse).unwrap()).unwrap();
    assert_eq!(
        produced,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "look"}, {"cachePoint": {"type": "default"}},
                    {"image": {"format": "webp", "source": {"bytes": "UklGRg=="}}},
                    {"document": {"format": "pdf", "name": "spec", "source": {"bytes": "JVBE"}}}
                ]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s1"}}},
                    {"reasoningContent": {"redactedContent": "enc"}},
                    {"toolUse": {"toolUseId": "toolu_1", "name": "t1", "input": {"a": [1, 2]}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "toolu_1", "content": [{"text": "boom"}], "status": "error"}},
                    {"text": "and now?"}
                ]}
            ],
            "system": [{"text": "Sys A"}, {"text": "Sys B"}, {"cachePoint": {"type": "default"}}],
            "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.8, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "t1", "description": "d", "inputSchema": {"json": {"type": "object"}}}}, {"cachePoint": {"type": "default"}}],
                "toolChoice": {"any": {}}
            },
            "additionalModelRequestFields": {"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024}}
        })
    );
}

#[test]
fn converse_replies_become_anthropic_messages() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[
        {"reasoningContent":{"reasoningText":{"text":"think","signature":"sig"}}},
        {"text":"Hi \"there\""},
        {"toolUse":{"toolUseId":"tu1","name":"f","input":{"x":1}}}]}},
      "stopReason":"tool_use","usage":{"inputTokens":7,"outputTokens":3,"totalTokens":20,"cacheReadInputTokens":10}}"#;
    let translated = anthropic::converse::from_converse_response(body, "req-1", "llama").unwrap();
    let usage = bedrock_gateway_core::translated::TokenUsage {
        input: 7,
        output: 3,
        cache_read: 10,
        cache_write: 0,
    };
    assert_eq!(
        translated.usage,
        Some(usage),
        "the usage for metrics comes from the same parse"
    );
    let message: Value = serde_json::from_slice(&translated.body).unwrap();
    assert_eq!(
        message,
        json!({
            "id": "msg_req-1", "type": "message", "role": "assistant", "model": "llama",
            "content": [
                {"type": "thinking", "thinking": "think", "signature": "sig"},
                {"type": "text", "text": "Hi \"there\""},
                {"type": "tool_use", "id": "tu1", "name": "f", "input": {"x": 1}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10}
        })
    );
}

fn converse_frame(event: &str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

#[test]
fn converse_streams_become_the_anthropic_event_sequence_however_split() {
    let frames = [
        converse_frame("messageStart", json!({"role": "assistant"})),
        converse_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}}),
        ),
        converse_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sg"}}}),
        ),
        converse_frame("contentBlockStop", json!({"contentBlockIndex": 0})),
        converse_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
        ),
        converse_frame("contentBlockStop", json!({"contentBlockIndex": 1})),
        converse_frame(
            "contentBlockStart",
            json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tu", "name": "f"}}}),
        ),
        converse_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"x\":"}}}),
        ),
        converse_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "1}"}}}),
        ),
        converse_frame("contentBlockStop", json!({"contentBlockIndex": 2})),
        converse_frame("messageStop", json!({"stopReason": "tool_use"})),
        converse_frame(
            "metadata",
            json!({"usage": {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}}),
        ),
    ];
    let bytes: Vec<u8> = frames.concat();
    let expected = vec![
        (
            "message_start".to_owned(),
            json!({"type": "message_start", "message": {"id": "msg_r", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        (
            "content_block_start".to_owned(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        (
            "content_block_delta".to_owned(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        ),
        (
            "content_block_delta".to_owned(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sg"}}),
        ),
        (
            "content_block_stop".to_owned(),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start".to_owned(),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta".to_owned(),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        ),
        (
            "content_block_stop".to_owned(),
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start".to_owned(),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "tu", "name": "f", "input": {}}}),
        ),
        (
            "content_block_delta".to_owned(),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"x\":"}}),
        ),
        (
            "content_block_delta".to_owned(),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        ),
        (
            "content_block_stop".to_owned(),
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta".to_owned(),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 4, "output_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
        ),
        ("message_stop".to_owned(), json!({"type": "message_stop"})),
    ];
    let run = |cuts: &[usize]| {
        let mut translator = ConverseToAnthropicStream::new("r", "m", 1 << 20);
        let out = push_in_pieces(&bytes, cuts, |chunk, end| translator.push(chunk, end));
        assert!(translator.is_finished());
        parse_sse(&out)
    };
    assert_eq!(run(&[]), expected);
    for cut in (0..bytes.len()).step_by(5) {
        assert_eq!(run(&[cut]), expected, "split at {cut}");
    }
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(run(&every_byte), expected);
}

#[test]
fn converse_stream_exceptions_become_an_anthropic_error_event() {
    let mut bytes = converse_frame("messageStart", json!({"role": "assistant"}));
    bytes.extend(converse_frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "x"}}),
    ));
    bytes.extend(exception_frame("serviceUnavailableException", "busy"));
    let mut translator = ConverseToAnthropicStream::new("r", "m", 1 << 20);
    let events = parse_sse(&translator.push(&bytes, true));
    let (name, error) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
}

/// Claude Code's request shapes (golden fixtures `anthropic_invoke/`): what Bedrock receives
/// after the beta flags it refuses are dropped and the fields only they allow are removed.
#[test]
fn claude_code_requests_become_bodies_bedrock_accepts() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic_invoke");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for path in paths {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let body = serde_json::to_vec(&case["request"]).unwrap();
        let policy = match case.get("policy") {
            Some(raw) => serde_json::from_value::<
                bedrock_gateway_core::bedrock::betas::RawBetaPolicy,
            >(raw.clone())
            .unwrap()
            .resolve()
            .unwrap(),
            None => BetaPolicy::default(),
        };
        let invoke =
            anthropic::invoke::prepare_invoke(&body, case["anthropic-beta"].as_str(), &policy)
                .unwrap();
        let produced: Value = serde_json::from_slice(&invoke.body).unwrap();
        let dropped = invoke.dropped_betas.map_or(Value::Null, Value::String);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let mut updated = case.clone();
            updated["invoke_body"] = produced;
            updated["dropped"] = dropped;
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&updated).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        assert_eq!(produced, case["invoke_body"], "fixture {}", path.display());
        assert_eq!(dropped, case["dropped"], "fixture {}", path.display());
    }
}

#[test]
fn document_citations_go_to_converse_and_come_back_as_anthropic_citations() {
    let body = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[
        {"type":"document","source":{"type":"text","media_type":"text/plain","data":"The grass is green. The sky is blue."},"title":"Colours","citations":{"enabled":true}},
        {"type":"text","text":"What colour is the grass?"}]}]}"#;
    let request = anthropic::converse::parse(body.as_bytes()).unwrap();
    let converse = anthropic::converse::to_converse(&request, true).unwrap();
    let produced: Value = serde_json::from_slice(&serde_json::to_vec(&converse).unwrap()).unwrap();
    assert_eq!(
        produced["messages"][0]["content"][0],
        json!({"document": {"format": "txt", "name": "Colours", "source": {"bytes": "VGhlIGdyYXNzIGlzIGdyZWVuLiBUaGUgc2t5IGlzIGJsdWUu"}, "citations": {"enabled": true}}})
    );

    let reply = br#"{"output":{"message":{"role":"assistant","content":[{"citationsContent":{"content":[{"text":"The grass is green."}],"citations":[{"title":"Colours","sourceContent":[{"text":"The grass is green."}],"location":{"documentChar":{"documentIndex":0,"start":0,"end":20}}}]}}]}},"stopReason":"end_turn","usage":{"inputTokens":9,"outputTokens":4,"totalTokens":13}}"#;
    let translated = anthropic::converse::from_converse_response(reply, "id", "m").unwrap();
    let message: Value = serde_json::from_slice(&translated.body).unwrap();
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "The grass is green.", "citations": [{"type": "char_location",
            "cited_text": "The grass is green.", "document_index": 0, "document_title": "Colours",
            "start_char_index": 0, "end_char_index": 20}]}])
    );
    // The same answer for OpenAI's callers keeps its text (OpenAI has no document citations).
    let openai = bedrock_gateway_core::bedrock::ConverseReply::parse(reply).unwrap();
    assert_eq!(
        openai.message.content[0].text.as_deref(),
        Some("The grass is green.")
    );
}

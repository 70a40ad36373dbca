//! Property-based fuzzing (proptest; nightly-only `cargo fuzz` is unavailable here) of everything
//! that reads untrusted bytes: the event-stream decoder, every request translator, the stream
//! translators and the configuration parser. Nothing may panic, request errors are always 4xx,
//! and stream output is always well-formed SSE. `make fuzz` runs many more cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use bedrock_gateway_core::api::anthropic;
use bedrock_gateway_core::api::anthropic::converse::ConverseToAnthropicStream;
use bedrock_gateway_core::api::anthropic::invoke::AnthropicStreamTranslator;
use bedrock_gateway_core::api::embeddings;
use bedrock_gateway_core::api::openai::{self, ChatStreamTranslator, ResponseContext};
use bedrock_gateway_core::api::responses::{self, ResponsesContext, ResponsesStreamTranslator};
use bedrock_gateway_core::bedrock::eventstream::FrameTranslator;
use bedrock_gateway_core::bedrock::eventstream::{encode_frame, Decoder};
use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::gateway;
use common::push_in_pieces;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "tool_calls",
    "tool_call_id",
    "function",
    "arguments",
    "name",
    "parameters",
    "image_url",
    "url",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "include_usage",
    "thinking",
    "budget_tokens",
    "system",
    "tool_choice",
    "input",
    "id",
    "tool_use_id",
    "is_error",
    "source",
    "data",
    "media_type",
    "cache_control",
    "response_format",
    "json_schema",
    "schema",
    "temperature",
    "top_p",
    "stop",
    "n",
    "reasoning_effort",
    "thinking_blocks",
    "signature",
    "file",
    "file_data",
    "dimensions",
    "encoding_format",
    "anthropic_version",
    "anthropic_beta",
    "input_schema",
    "backends",
    "schema",
    "region",
    "credentials",
    "source",
    "cluster",
    "models",
    "delta",
    "contentBlockIndex",
    "toolUse",
    "reasoningContent",
    "stopReason",
    "usage",
    "inputTokens",
    "bytes",
    "start",
    "toolUseId",
    "message",
];
const STRINGS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "text",
    "image_url",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "function",
    "auto",
    "required",
    "none",
    "any",
    "json_schema",
    "json_object",
    "base64",
    "us.meta.llama3-2-1b-instruct-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "data:image/png;base64,AAAA",
    "{\"a\":1}",
    "{broken",
    "",
    "..",
    "low",
    "converse",
    "anthropic",
    "us-east-1",
    "environment",
    "inline",
    "pod_identity",
    "\u{0}\u{ffff}",
    "😀",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..7).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// Mostly-valid request bodies: a JSON object with a model and messages, fields mutated at random.
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), json_value()).prop_map(|(messages, extra)| {
            let mut body = json!({"model": "us.meta.llama3-2-1b-instruct-v1:0", "max_tokens": 16, "messages": messages});
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            body.to_string().into_bytes()
        }),
        // Responses API shapes: `input` items of any kind.
        (json_value(), json_value()).prop_map(|(input, extra)| {
            let mut body = json!({"model": "us.anthropic.claude-x", "input": input, "reasoning": {"effort": "low"}});
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            body.to_string().into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn backend() -> bedrock_gateway_core::config::Backend {
    let json = br#"{"backends":{"b":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"s"}}}}"#;
    Config::parse(json, &|_| None)
        .unwrap()
        .backend("b")
        .unwrap()
        .as_ref()
        .clone()
}

fn frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop::sample::select(
            &[
                "messageStart",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata",
                "chunk",
                "other",
            ][..],
        ),
        prop::bool::weighted(0.1),
        prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64)
        ],
    )
        .prop_map(|(event, exception, payload)| {
            if exception {
                encode_frame(
                    &[
                        (":message-type", "exception"),
                        (":exception-type", "throttlingException"),
                    ],
                    &payload,
                )
            } else {
                encode_frame(
                    &[(":message-type", "event"), (":event-type", event)],
                    &payload,
                )
            }
        });
    prop::collection::vec(frame, 0..12).prop_map(|frames| frames.concat())
}

fn assert_valid_sse(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("SSE output is UTF-8");
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("every event has data");
        assert!(
            data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok(),
            "event data is JSON: {data}"
        );
    }
}

/// Arbitrary cut points made into ascending offsets within a body of `len` bytes.
fn cuts_within(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

fn responses_context() -> ResponsesContext {
    ResponsesContext {
        id: "r".into(),
        model: "m".into(),
        created: 0,
        echo: "\"store\":false".into(),
        tools: Default::default(),
        include_reasoning: true,
    }
}

fn feed(bytes: &[u8], cuts: &[usize], push: impl FnMut(&[u8], bool) -> Vec<u8>) -> Vec<u8> {
    push_in_pieces(bytes, &cuts_within(bytes.len(), cuts), push)
}

proptest! {
    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut decoder = Decoder::new(1 << 16);
        let mut start = 0;
        for cut in cuts_within(bytes.len(), &cuts).into_iter().chain(std::iter::once(bytes.len())) {
            if decoder.decode(&bytes[start..cut], &mut |_| {}).is_err() {
                break;
            }
            start = cut;
        }
    }

    #[test]
    fn well_formed_frames_decode_the_same_however_split(stream in frames(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut whole = Vec::new();
        Decoder::default().decode(&stream, &mut |f| whole.push((f.headers.event_type.map(str::to_owned), f.payload.to_vec()))).unwrap();
        let mut split = Vec::new();
        let mut decoder = Decoder::default();
        feed(&stream, &cuts, |chunk, _| {
            decoder.decode(chunk, &mut |f| split.push((f.headers.event_type.map(str::to_owned), f.payload.to_vec()))).unwrap();
            Vec::new()
        });
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn request_translators_never_panic_and_only_refuse_with_4xx(body in request_body()) {
        let backend = backend();
        for endpoint in [gateway::Endpoint::ChatCompletions, gateway::Endpoint::Responses, gateway::Endpoint::AnthropicMessages, gateway::Endpoint::Embeddings,
                         gateway::Endpoint::Bedrock(bedrock_gateway_core::bedrock::Operation::ConverseStream)] {
            if let Err(error) = gateway::prepare(endpoint, &body, gateway::CallerHeaders { anthropic_beta: Some("a,b"), bedrock_model: Some("m"), bedrock_service_tier: None }, &backend, 1_800_000_000) {
                prop_assert!((400..500).contains(&error.status), "{endpoint:?}: {error:?}");
            }
        }
        for result in [
            anthropic::invoke::prepare_invoke(&body, Some("x"), &Default::default()).map(|_| ()),
            anthropic::invoke::prepare_count_tokens(&body, None, &Default::default()).map(|_| ()),
            anthropic::converse::count_tokens_body(&body).map(|_| ()),
            embeddings::prepare(&body, "cohere.embed-english-v3").map(|_| ()),
            gateway::requested_model(&body).map(|_| ()),
        ] {
            if let Err(error) = result {
                prop_assert!((400..500).contains(&error.status), "{error:?}");
            }
        }
        let _ = openai::parse_request(&body).map(|r| openai::to_converse(&r).map(|c| serde_json::to_vec(&c)));
    }

    #[test]
    fn response_translators_never_panic(body in request_body()) {
        let context = ResponseContext { id: "r".into(), model: "m".into(), created: 0 };
        let _ = openai::from_converse_response(&body, &context);
        let _ = responses::from_converse_response(&body, &responses_context());
        let _ = anthropic::invoke::rewrite_message_model(&body, "m");
        let _ = anthropic::invoke::count_tokens_response(&body);
        let _ = anthropic::converse::from_converse_response(&body, "r", "m");
        let _ = embeddings::response(&body, embeddings::Family::Cohere, "m", true, Some(1));
        let _ = embeddings::response(&body, embeddings::Family::Titan, "m", false, None);
    }

    #[test]
    fn stream_translators_never_panic_and_emit_valid_sse(stream in frames(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let context = ResponseContext { id: "r".into(), model: "m".into(), created: 0 };
        let mut chat = ChatStreamTranslator::new(&context, true, 1 << 16);
        assert_valid_sse(&feed(&stream, &cuts, |c, end| chat.push(c, end)));
        let mut invoke = AnthropicStreamTranslator::new("m", 1 << 16);
        assert_valid_sse(&feed(&stream, &cuts, |c, end| invoke.push(c, end)));
        let mut converse = ConverseToAnthropicStream::new("r", "m", 1 << 16);
        assert_valid_sse(&feed(&stream, &cuts, |c, end| converse.push(c, end)));
        let mut responses = ResponsesStreamTranslator::new(responses_context(), 1 << 16);
        assert_valid_sse(&feed(&stream, &cuts, |c, end| responses.push(c, end)));
        // Bedrock's own stream passes through unchanged, whatever it holds.
        let mut observer = bedrock_gateway_core::api::bedrock_runtime::StreamObserver::new(1 << 16);
        prop_assert_eq!(feed(&stream, &cuts, |c, _| { observer.observe(c); c.to_vec() }), stream.clone());
        prop_assert!(chat.is_finished() && invoke.is_finished() && converse.is_finished() && responses.is_finished(), "every stream ends");
    }

    #[test]
    fn config_parser_never_panics(body in request_body()) {
        let _ = Config::parse(&body, &|key| (key == "AWS_ACCESS_KEY_ID").then(|| "a".to_owned()));
    }
}

//! Criterion micro-benchmarks of the filter's pure parts, natively: regressions show without Envoy.
//!   cargo bench -p bedrock-gateway-filter --bench pure

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

use bedrock_gateway_core::api::anthropic;
use bedrock_gateway_core::aws::sigv4::Signer;
use bedrock_gateway_core::bedrock::eventstream::encode_frame;
use bedrock_gateway_core::config::{BackendCredentials, Config};
use bedrock_gateway_core::errors::ApiFormat;
use bedrock_gateway_core::gateway::{
    self, CallerHeaders, Endpoint, ResponseKind, ResponsePlan, ResponseTranslation, UpstreamHead,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const OPENAI: &[u8] = br#"{"model":"us.meta.llama3-2-1b-instruct-v1:0","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi."}],"max_tokens":256,"temperature":0.2}"#;
const ANTHROPIC: &[u8] = br#"{"model":"anthropic.claude-3-5-sonnet-20241022-v2:0","max_tokens":256,"system":"You are terse.","messages":[{"role":"user","content":"Hi."}]}"#;
const CONVERSE_REPLY: &[u8] = br#"{"output":{"message":{"role":"assistant","content":[{"text":"You said: Hi."}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":3,"totalTokens":8},"metrics":{"latencyMs":42}}"#;

fn backend() -> bedrock_gateway_core::config::Backend {
    let json = br#"{"backends":{"b":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"AKIDEXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}}}}"#;
    Config::parse(json, &|_| None)
        .unwrap()
        .backend("b")
        .unwrap()
        .as_ref()
        .clone()
}

fn stream_bytes() -> Vec<u8> {
    let mut bytes = encode_frame(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        br#"{"role":"assistant","p":"abcd"}"#,
    );
    for i in 0..64 {
        let payload = format!(
            r#"{{"contentBlockIndex":0,"delta":{{"text":"word{i} and "}},"p":"abcdefgh"}}"#
        );
        bytes.extend(encode_frame(
            &[
                (":event-type", "contentBlockDelta"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        ));
    }
    bytes.extend(encode_frame(
        &[(":event-type", "messageStop"), (":message-type", "event")],
        br#"{"stopReason":"end_turn"}"#,
    ));
    bytes.extend(encode_frame(
        &[(":event-type", "metadata"), (":message-type", "event")],
        br#"{"usage":{"inputTokens":5,"outputTokens":64,"totalTokens":69}}"#,
    ));
    bytes
}

fn benches(c: &mut Criterion) {
    let backend = backend();
    let BackendCredentials::Static(keys) = backend.credentials.clone() else {
        unreachable!()
    };
    let mut signer = Signer::new();
    c.bench_function("routing stage: read model", |b| {
        b.iter(|| gateway::requested_model(black_box(OPENAI)).unwrap().len())
    });
    c.bench_function("openai -> converse (translate)", |b| {
        b.iter(|| {
            gateway::prepare(
                Endpoint::ChatCompletions,
                black_box(OPENAI),
                CallerHeaders::default(),
                &backend,
                1_800_000_000,
            )
            .unwrap()
        })
    });
    // `make bench`'s 1 MiB body: one long message, as a pasted document would be.
    let big = format!(
        r#"{{"model":"us.meta.llama3-2-1b-instruct-v1:0","messages":[{{"role":"user","content":"{}"}},{{"role":"assistant","content":"ok"}},{{"role":"user","content":"Hi."}}]}}"#,
        "x ".repeat(512 * 1024)
    );
    c.bench_function("openai -> converse (translate), 1 MiB message", |b| {
        b.iter(|| {
            gateway::prepare(
                Endpoint::ChatCompletions,
                black_box(big.as_bytes()),
                CallerHeaders::default(),
                &backend,
                1_800_000_000,
            )
            .unwrap()
        })
    });
    let big_upstream = gateway::prepare(
        Endpoint::ChatCompletions,
        big.as_bytes(),
        CallerHeaders::default(),
        &backend,
        1_800_000_000,
    )
    .unwrap();
    c.bench_function("sigv4 sign, 1 MiB body", |b| {
        b.iter(|| big_upstream.sign(black_box(&keys), "us-east-1", &mut signer, 1_800_000_000))
    });
    let upstream = gateway::prepare(
        Endpoint::ChatCompletions,
        OPENAI,
        CallerHeaders::default(),
        &backend,
        1_800_000_000,
    )
    .unwrap();
    c.bench_function("sigv4 sign (cached key)", |b| {
        b.iter(|| upstream.sign(black_box(&keys), "us-east-1", &mut signer, 1_800_000_000))
    });
    c.bench_function("anthropic -> invoke (rewrite)", |b| {
        b.iter(|| {
            anthropic::invoke::prepare_invoke(
                black_box(ANTHROPIC),
                Some("interleaved-thinking-2025-05-14"),
                &Default::default(),
            )
            .unwrap()
        })
    });
    let plan = ResponsePlan {
        format: ApiFormat::OpenAi,
        kind: ResponseKind::OpenAiChat {
            stream: false,
            include_usage: false,
            web_search: false,
        },
        requested_model: "m".into(),
        created: 1,
        echo: String::new(),
        tool_names: Default::default(),
        rerank: None,
    };
    let head = UpstreamHead {
        status: 200,
        error_type: None,
        request_id: "r",
        input_tokens: None,
        output_tokens: None,
    };
    c.bench_function("converse -> chat.completion", |b| {
        b.iter(|| {
            ResponseTranslation::for_response(&plan, head, 1 << 20)
                .translate_body(black_box(CONVERSE_REPLY))
        })
    });
    let stream = stream_bytes();
    let stream_plan = ResponsePlan {
        kind: ResponseKind::OpenAiChat {
            stream: true,
            include_usage: true,
            web_search: false,
        },
        ..plan.clone()
    };
    c.bench_function("converse stream (64 deltas) -> SSE, 4 KiB chunks", |b| {
        b.iter(|| {
            let mut translation = ResponseTranslation::for_response(&stream_plan, head, 1 << 20);
            let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
            let last = chunks.len() - 1;
            chunks
                .iter()
                .enumerate()
                .map(|(i, chunk)| translation.push_stream_chunk(chunk, i == last).len())
                .sum::<usize>()
        })
    });
}

criterion_group! {
    name = pure;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(pure);

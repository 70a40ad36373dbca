//! Golden fixtures for the OpenAI Responses API <-> Converse translations, and the requests it
//! refuses. Streams are framed by AWS's `aws-smithy-eventstream` and fed to the translator split at
//! many offsets: the events must not depend on where chunks break. `UPDATE_GOLDEN=1` writes the
//! produced output into a fixture (to be read before committing).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use bedrock_gateway_core::api::responses::{self, ResponsesContext, ResponsesStreamTranslator};
use bedrock_gateway_core::bedrock::eventstream::FrameTranslator;
use bedrock_gateway_core::errors::ApiFormat;
use bedrock_gateway_core::gateway::{
    self, CallerHeaders, Endpoint, ResponseKind, ResponsePlan, ResponseTranslation, UpstreamHead,
};
use common::{frame_bytes, push_in_pieces};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut cases: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            (path, serde_json::from_str(&text).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!cases.is_empty(), "no fixtures in {dir:?}");
    cases
}

/// Compares `produced` with the fixture's `field`, or writes it there under `UPDATE_GOLDEN`.
fn check(path: &Path, case: &Value, field: &str, produced: Value) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut updated = case.clone();
        updated[field] = produced;
        std::fs::write(path, serde_json::to_string_pretty(&updated).unwrap() + "\n").unwrap();
        return;
    }
    assert_eq!(produced, case[field], "fixture {}: {field}", path.display());
}

fn context(value: &Value) -> ResponsesContext {
    ResponsesContext {
        id: value["id"].as_str().unwrap().into(),
        model: value["model"].as_str().unwrap().into(),
        created: value["created"].as_u64().unwrap(),
        echo: value["echo"].as_str().unwrap().into(),
        tools: Default::default(),
        include_reasoning: value["include_reasoning"].as_bool().unwrap(),
    }
}

/// The typed events of a Responses stream: `{"event": type, "data": {...}}`, checking that each
/// event's name matches its data's `type` and that sequence numbers count from 0.
fn parse_events(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(
        text.ends_with("\n\n"),
        "SSE must end with a blank line: {text:?}"
    );
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let (name_line, data_line) = event
                .split_once('\n')
                .unwrap_or_else(|| panic!("not an event: {event:?}"));
            let name = name_line.strip_prefix("event: ").unwrap();
            let data: Value =
                serde_json::from_str(data_line.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "{event}");
            json!({"event": name, "data": data})
        })
        .collect();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event["data"]["sequence_number"], index,
            "sequence numbers count from 0"
        );
    }
    events
}

#[test]
fn responses_requests_translate_to_converse() {
    for (path, case) in fixtures("responses_request") {
        let body = serde_json::to_vec(&case["request"]).unwrap();
        let request = responses::parse_request(&body).unwrap();
        let converse = responses::to_converse(&request).unwrap();
        let produced: Value =
            serde_json::from_slice(&serde_json::to_vec(&converse).unwrap()).unwrap();
        check(&path, &case, "converse", produced);
        let echo: Value =
            serde_json::from_str(&format!("{{{}}}", responses::echo(&request))).unwrap();
        let case = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        check(&path, &case, "echo", echo);
    }
}

#[test]
fn converse_responses_translate_to_response_objects() {
    for (path, case) in fixtures("responses_response") {
        let body = serde_json::to_vec(&case["converse"]).unwrap();
        let produced =
            responses::from_converse_response(&body, &context(&case["context"])).unwrap();
        check(
            &path,
            &case,
            "response",
            serde_json::from_slice(&produced.body).unwrap(),
        );
    }
}

fn translate_stream(case: &Value, cuts: &[usize]) -> Vec<Value> {
    let bytes: Vec<u8> = case["frames"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(frame_bytes)
        .collect();
    let mut translator = ResponsesStreamTranslator::new(context(&case["context"]), 1 << 20);
    let sse = push_in_pieces(&bytes, cuts, |chunk, end| translator.push(chunk, end));
    assert!(translator.is_finished());
    parse_events(&sse)
}

#[test]
fn converse_streams_translate_to_response_events_however_split() {
    for (path, case) in fixtures("responses_stream") {
        let produced = translate_stream(&case, &[]);
        check(&path, &case, "sse", Value::Array(produced.clone()));
        let total: usize = case["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| frame_bytes(f).len())
            .sum();
        for cut in (0..total).step_by(5) {
            assert_eq!(
                translate_stream(&case, &[cut]),
                produced,
                "fixture {} split at {cut}",
                path.display()
            );
        }
        let every_byte: Vec<usize> = (1..total).collect();
        assert_eq!(
            translate_stream(&case, &every_byte),
            produced,
            "fixture {} byte by byte",
            path.display()
        );
    }
}

/// Every item a stream announces is finished, and `response.completed` holds exactly the items
/// the `output_item.done` events carried: what the openai SDK's stream accumulator checks.
#[test]
fn streamed_items_match_the_final_response() {
    for (path, case) in fixtures("responses_stream") {
        let events = translate_stream(&case, &[]);
        let last = &events.last().unwrap()["data"];
        if last["type"] == "error" {
            continue;
        }
        let added: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "response.output_item.added")
            .map(|e| &e["data"])
            .collect();
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "response.output_item.done")
            .map(|e| &e["data"])
            .collect();
        assert_eq!(added.len(), done.len(), "{}", path.display());
        let output = last["response"]["output"].as_array().unwrap();
        for ((added, done), final_item) in added.iter().zip(&done).zip(output) {
            assert_eq!(added["item"]["id"], done["item"]["id"]);
            assert_eq!(&done["item"], final_item, "{}", path.display());
        }
        assert_eq!(output.len(), done.len());
    }
}

#[test]
fn reasoning_round_trips_through_encrypted_content() {
    let case = &fixtures("responses_response")
        .into_iter()
        .find(|(p, _)| p.ends_with("reasoning_text_and_parallel_calls.json"))
        .unwrap()
        .1;
    let body = serde_json::to_vec(&case["converse"]).unwrap();
    let produced = responses::from_converse_response(&body, &context(&case["context"])).unwrap();
    let response: Value = serde_json::from_slice(&produced.body).unwrap();
    // The caller sends the reply's output back as the next turn's input, with the tool results.
    let mut input = response["output"].as_array().unwrap().clone();
    input.push(json!({"type": "function_call_output", "call_id": "tu_a", "output": "18C"}));
    input.push(json!({"type": "function_call_output", "call_id": "tu_b", "output": "21C"}));
    let next = json!({"model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "input": input, "reasoning": {"effort": "low"},
                      "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let body = serde_json::to_vec(&next).unwrap();
    let request = responses::parse_request(&body).unwrap();
    let converse: Value = serde_json::to_value(responses::to_converse(&request).unwrap()).unwrap();
    let assistant = &converse["messages"][0];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(
        assistant["content"][0],
        json!({"reasoningContent": {"reasoningText": {"text": "Two cities.", "signature": "sig-2"}}})
    );
    assert_eq!(
        assistant["content"][1],
        json!({"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}})
    );
    assert_eq!(assistant["content"][2], json!({"text": "Checking both."}));
    assert_eq!(assistant["content"][3]["toolUse"]["toolUseId"], "tu_a");
    assert_eq!(
        converse["messages"][1]["content"][1]["toolResult"]["toolUseId"],
        "tu_b"
    );
    // Thinking stays on: the tool loop's assistant turn begins with its signed thinking.
    assert_eq!(
        converse["additionalModelRequestFields"]["thinking"]["type"],
        "enabled"
    );
}

#[test]
fn stateful_and_unsupported_requests_are_refused_by_name() {
    let user = r#"{"role":"user","content":"hi"}"#;
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("[1]".into(), "Invalid Responses request"),
        (r#"{"model":"m"}"#.into(), "`input` is required"),
        (r#"{"model":"m","input":[]}"#.into(), "at least one user or assistant message"),
        (format!(r#"{{"model":"m","input":[{user}],"previous_response_id":"resp_1"}}"#), "`previous_response_id` (\"resp_1\") is not supported: this gateway stores no responses"),
        (format!(r#"{{"model":"m","input":[{user}],"conversation":"conv_1"}}"#), "`conversation` is not supported"),
        (format!(r#"{{"model":"m","input":[{user}],"background":true}}"#), "`background: true` is not supported"),
        (format!(r#"{{"model":"m","input":[{user}],"prompt":{{"id":"pmpt_1"}}}}"#), "`prompt` templates"),
        (r#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#.into(), "input[0] refers to the stored item \"msg_1\""),
        (r#"{"model":"m","input":[{"id":"msg_2"}]}"#.into(), "refers to the stored item \"msg_2\""),
        (r#"{"model":"m","input":[{"content":"x"}]}"#.into(), "neither a `type` nor a `role`"),
        (r#"{"model":"m","input":[{"type":"computer_call","id":"cu_1"}]}"#.into(), "items of type `computer_call` are not supported"),
        (format!(r#"{{"model":"m","input":[{user}],"tools":[{{"type":"shell_magic"}}]}}"#), "tools[0]: tools of type `shell_magic` are not available"),
        (format!(r#"{{"model":"m","input":[{user}],"tools":[{{"type":"namespace","name":"n","tools":[{{"type":"web_search"}}]}}]}}"#), "tools[0].tools[0]: a namespace holds function and custom tools"),
        (format!(r#"{{"model":"m","input":[{user}],"tools":[{{"type":"web_search"}}],"tool_choice":"required"}}"#), "every tool in `tools` is a hosted one"),
        (format!(r#"{{"model":"m","input":[{user}],"tools":[{{"type":"function","name":"f"}}],"tool_choice":{{"type":"file_search"}}}}"#), "`tool_choice` of type `file_search`"),
        (format!(r#"{{"model":"m","input":[{user}],"tool_choice":"required"}}"#), "`tools` is empty"),
        (format!(r#"{{"model":"m","input":[{user}],"temperature":2.5}}"#), "`temperature` must be between"),
        (format!(r#"{{"model":"m","input":[{user}],"text":{{"format":{{"type":"json_schema","name":"x"}}}}}}"#), "`text.format.json_schema.schema` is required"),
        (format!(r#"{{"model":"m","input":[{user}],"reasoning":{{"effort":"extreme"}}}}"#), "must be minimal, low, medium or high"),
        (r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/cat.png"}]}]}"#.into(), "image URLs are not fetched"),
        (r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]}"#.into(), "uploaded file ids are not supported"),
        (r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x/a.pdf"}]}]}"#.into(), "file URLs are not fetched"),
        (r#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#.into(), "role \"tool\" is not one of"),
        (r#"{"model":"m","input":[{"role":"user","content":"x"},{"type":"function_call","call_id":"c","name":"f","arguments":"{oops"}]}"#.into(), "input[1].arguments is not valid JSON"),
        (r#"{"model":"m","input":[{"role":"user","content":"x"},{"type":"function_call_output","output":"r"}]}"#.into(), "needs `call_id`"),
        (r#"{"model":"m","input":[{"role":"user","content":"x"},{"type":"reasoning","encrypted_content":"bgw1.bm90IGpzb24="}]}"#.into(), "input[1].encrypted_content was altered"),
    ];
    for (body, expected) in cases {
        let error = responses::parse_request(body.as_bytes())
            .and_then(|r| responses::to_converse(&r).map(|_| ()))
            .unwrap_err();
        assert_eq!(error.status, 400, "{body}");
        assert!(
            error.message.contains(expected),
            "{body}: {}",
            error.message
        );
    }
}

#[test]
fn the_gateway_plans_and_answers_the_responses_endpoint() {
    assert_eq!(
        Endpoint::classify("POST", "/v1/responses?x=1"),
        Some(Ok(Endpoint::Responses))
    );
    assert_eq!(
        Endpoint::classify("GET", "/v1/responses").map(|r| r.unwrap_err().status),
        Some(405)
    );
    // Stored responses do not exist here, whatever the method.
    for (method, path) in [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ] {
        let answer = gateway::answer_locally(method, path, &[]).unwrap();
        assert_eq!(answer.status, 404);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"resp_1\" not found: this gateway stores no responses"),
            "{body}"
        );
    }
    // Paths the gateway does not serve are named, in the format their prefix suggests.
    let error = gateway::unserved_path("POST", "/v1/completions").unwrap();
    assert_eq!(error.status, 404);
    assert!(error.message.contains("does not serve POST /v1/completions; it serves POST /v1/chat/completions, POST /v1/responses"));
    assert!(gateway::unserved_path("POST", "/anthropic/v1/complete")
        .unwrap()
        .message
        .contains("POST /anthropic/v1/messages"));
    assert!(gateway::unserved_path("GET", "/healthz").is_none());
    let long = format!("/v1/{}", "a".repeat(5000));
    assert!(
        gateway::unserved_path("GET", &long).unwrap().message.len() < 600,
        "quoted paths are cut short"
    );

    let backend = bedrock_gateway_core::config::Backend {
        name: "b".into(),
        schema: bedrock_gateway_core::config::Schema::Anthropic,
        region: "us-east-1".into(),
        host: "bedrock-runtime.us-east-1.amazonaws.com".into(),
        credentials: bedrock_gateway_core::config::BackendCredentials::Static(
            bedrock_gateway_core::aws::sigv4::Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
        ),
        model_name_override: Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0".into()),
        anthropic_beta: Default::default(),
        options: Default::default(),
        calls_cluster: None,
        hosted_tools: Default::default(),
        prompt_caching: Default::default(),
        api_prefix: "/openai/v1".into(),
    };
    let body = br#"{"model":"claude","input":"hi","stream":true,"include":["reasoning.encrypted_content"],"metadata":{"k":"v"}}"#;
    let upstream = gateway::prepare(
        Endpoint::Responses,
        body,
        CallerHeaders::default(),
        &backend,
        1_800_000_000,
    )
    .unwrap();
    // Converse for every backend's schema, with the backend's model override.
    assert_eq!(
        upstream.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    );
    assert_eq!(
        upstream.plan.kind,
        ResponseKind::OpenAiResponses {
            stream: true,
            include_reasoning: true
        }
    );
    assert_eq!(upstream.plan.requested_model, "claude");
    assert!(
        upstream.plan.echo.contains("\"metadata\":{\"k\":\"v\"}"),
        "{}",
        upstream.plan.echo
    );

    let head = UpstreamHead {
        status: 200,
        error_type: None,
        request_id: "rid",
        input_tokens: None,
        output_tokens: None,
    };
    let mut translation = ResponseTranslation::for_response(&upstream.plan, head, 1 << 20);
    assert!(translation.is_streaming());
    assert_eq!(translation.content_type(), Some("text/event-stream"));
    let events = parse_events(&translation.push_stream_chunk(&[], true));
    // A stream that ends before any event still starts the response, then fails it.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.failed",
            "error"
        ]
    );
    assert_eq!(events[0]["data"]["response"]["id"], "resp_rid");
    assert_eq!(events[0]["data"]["response"]["model"], "claude");

    // Bedrock's errors arrive in OpenAI's format.
    let plan = ResponsePlan {
        format: ApiFormat::OpenAi,
        kind: ResponseKind::OpenAiResponses {
            stream: false,
            include_reasoning: false,
        },
        requested_model: "m".into(),
        created: 1,
        echo: String::new(),
        tool_names: Default::default(),
        rerank: None,
    };
    let head = UpstreamHead {
        status: 429,
        error_type: Some("ThrottlingException"),
        request_id: "r",
        input_tokens: None,
        output_tokens: None,
    };
    let (status, translated) = ResponseTranslation::for_response(&plan, head, 1 << 20)
        .translate_body(br#"{"message":"slow down"}"#);
    assert_eq!(status, 429);
    let body: Value = serde_json::from_slice(&translated.body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("slow down"));
}

/// Codex's first turn as captured through the gateway (../shared/notes/agent-clients.md): function
/// tools, a `namespace` of five, a custom (freeform) tool and the hosted `web_search`.
fn codex_turn(hosted: &str) -> String {
    let member = |name: &str| {
        format!(
            r#"{{"type":"function","name":"{name}","description":"{name}","parameters":{{"type":"object","properties":{{}}}}}}"#
        )
    };
    let members: Vec<String> = [
        "close_agent",
        "resume_agent",
        "send_input",
        "spawn_agent",
        "wait_agent",
    ]
    .iter()
    .map(|n| member(n))
    .collect();
    format!(
        r#"{{"model":"m","stream":true,"store":false,"parallel_tool_calls":true,"prompt_cache_key":"k","client_metadata":{{"x":"y"}},
        "reasoning":{{"summary":"auto"}},"include":["reasoning.encrypted_content"],"tool_choice":"auto",
        "input":[{{"type":"message","role":"developer","content":[{{"type":"input_text","text":"be careful"}}]}},
                 {{"type":"message","role":"user","content":[{{"type":"input_text","text":"spawn one"}}]}},
                 {{"type":"function_call","call_id":"c1","namespace":"multi_agent_v1","name":"spawn_agent","arguments":"{{}}"}},
                 {{"type":"function_call_output","call_id":"c1","output":"spawned"}},
                 {{"type":"custom_tool_call","call_id":"c2","name":"apply_patch","input":"*** Begin Patch"}},
                 {{"type":"custom_tool_call_output","call_id":"c2","output":"done"}},
                 {{"type":"web_search_call","id":"ws_1","status":"completed"}}],
        "tools":[{},{{"type":"namespace","name":"multi_agent_v1","description":"agents","tools":[{}]}},
                 {{"type":"custom","name":"apply_patch","description":"Patch files.","format":{{"type":"grammar","syntax":"lark","definition":"start: begin"}}}},
                 {{"type":"{hosted}","external_web_access":false}}]}}"#,
        member("exec_command"),
        members.join(",")
    )
}

#[test]
fn codex_namespaces_custom_tools_and_hosted_tools_reach_bedrock_as_it_takes_them() {
    let body = codex_turn("web_search");
    let request = responses::parse_request(body.as_bytes()).unwrap();
    let translated =
        responses::translate(&request, bedrock_gateway_core::config::HostedTools::Drop).unwrap();
    assert_eq!(translated.dropped_tools.as_deref(), Some("web_search"));
    let converse = serde_json::to_value(&translated.converse).unwrap();
    let names: Vec<&str> = converse["toolConfig"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["toolSpec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.contains(&"exec_command") && names.contains(&"multi_agent_v1__spawn_agent"));
    assert!(names.contains(&"apply_patch"));
    let patch = converse["toolConfig"]["tools"][6]["toolSpec"].clone();
    assert_eq!(patch["inputSchema"]["json"]["required"], json!(["input"]));
    assert!(patch["description"]
        .as_str()
        .unwrap()
        .contains("lark grammar:\nstart: begin"));
    // History: the namespaced call and the custom call under the names their tools have here.
    let messages = converse["messages"].as_array().unwrap();
    let calls: Vec<&Value> = messages
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter(|b| b.get("toolUse").is_some())
        .collect();
    assert_eq!(calls[0]["toolUse"]["name"], "multi_agent_v1__spawn_agent");
    assert_eq!(calls[1]["toolUse"]["name"], "apply_patch");
    assert_eq!(
        calls[1]["toolUse"]["input"],
        json!({"input": "*** Begin Patch"})
    );
    assert_eq!(converse["system"][0]["text"], "be careful");

    let refused = responses::translate(&request, bedrock_gateway_core::config::HostedTools::Refuse)
        .unwrap_err();
    assert!(
        refused
            .message
            .contains("tools[3]: the hosted tool `web_search`"),
        "{}",
        refused.message
    );
}

#[test]
fn bedrocks_calls_come_back_under_the_callers_namespace_and_kinds() {
    let body = codex_turn("web_search");
    let request = responses::parse_request(body.as_bytes()).unwrap();
    let translated =
        responses::translate(&request, bedrock_gateway_core::config::HostedTools::Drop).unwrap();
    let context = ResponsesContext {
        id: "r".into(),
        model: "m".into(),
        created: 0,
        echo: String::new(),
        tools: translated.tool_names.clone(),
        include_reasoning: false,
    };
    let reply = json!({"output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "multi_agent_v1__spawn_agent", "input": {"task": "x"}}},
        {"toolUse": {"toolUseId": "t2", "name": "wait_agent", "input": {}}},
        {"toolUse": {"toolUseId": "t3", "name": "apply_patch", "input": {"input": "*** Begin Patch\n*** End Patch"}}},
        {"toolUse": {"toolUseId": "t4", "name": "exec_command", "input": {"cmd": "ls"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
    let answer = responses::from_converse_response(reply.to_string().as_bytes(), &context).unwrap();
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    let output = answer["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(
        (output[0]["namespace"].as_str(), output[0]["name"].as_str()),
        (Some("multi_agent_v1"), Some("spawn_agent"))
    );
    assert_eq!(
        output[1]["namespace"], "multi_agent_v1",
        "a bare member name maps to its only namespace"
    );
    assert_eq!(output[2]["type"], "custom_tool_call");
    assert_eq!(output[2]["input"], "*** Begin Patch\n*** End Patch");
    assert_eq!(output[3]["name"], "exec_command");
    assert!(output[3].get("namespace").is_none());

    // Streamed, the same items, and the custom call's input in its own events.
    let mut frames = Vec::new();
    for (index, (id, name, input)) in [
        ("t1", "multi_agent_v1__spawn_agent", r#"{"task":"x"}"#),
        ("t3", "apply_patch", r#"{"input":"*** Begin"}"#),
    ]
    .iter()
    .enumerate()
    {
        frames.push(frame_bytes(&json!({"event": "contentBlockStart", "payload": {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": name}}}})));
        frames.push(frame_bytes(&json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": index, "delta": {"toolUse": {"input": input}}}})));
        frames.push(frame_bytes(
            &json!({"event": "contentBlockStop", "payload": {"contentBlockIndex": index}}),
        ));
    }
    frames.push(frame_bytes(
        &json!({"event": "messageStop", "payload": {"stopReason": "tool_use"}}),
    ));
    frames.push(frame_bytes(&json!({"event": "metadata", "payload": {"usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}})));
    let mut translator = ResponsesStreamTranslator::new(context, 1 << 20);
    let sse = String::from_utf8(translator.push(&frames.concat(), true)).unwrap();
    assert!(sse.contains(r#""type":"function_call","status":"in_progress","call_id":"t1","namespace":"multi_agent_v1","name":"spawn_agent""#), "{sse}");
    assert!(
        sse.contains(r#"event: response.custom_tool_call_input.done"#),
        "{sse}"
    );
    assert!(sse.contains(r#""input":"*** Begin""#), "{sse}");
    assert!(
        !sse.contains(r#""delta":"{\"input\""#),
        "a custom call's JSON is not streamed as its input: {sse}"
    );
}

/// OpenAI's hosted `web_search` on a model that grounds on the web (Nova) becomes Nova's web
/// grounding instead of being left out; the pages the answer cites come back as `url_citation`
/// annotations, whole and streamed (`response.output_text.annotation.added`).
#[test]
fn web_search_on_nova_is_grounding_and_its_citations_are_annotations() {
    // Codex's cached search (`external_web_access: false`) asks for no live web: not grounded.
    let cached = codex_turn("web_search");
    assert!(cached.contains(r#""external_web_access":false"#));
    let cached = responses::parse_request(cached.as_bytes()).unwrap();
    let not_live = responses::translate_for(
        &cached,
        bedrock_gateway_core::config::HostedTools::Drop,
        true,
    )
    .unwrap();
    assert_eq!(not_live.dropped_tools.as_deref(), Some("web_search"));
    let body = codex_turn("web_search").replace(
        r#""external_web_access":false"#,
        r#""external_web_access":true"#,
    );
    let request = responses::parse_request(body.as_bytes()).unwrap();
    let grounded = responses::translate_for(
        &request,
        bedrock_gateway_core::config::HostedTools::Refuse,
        true,
    )
    .unwrap();
    assert_eq!(grounded.dropped_tools, None, "not dropped, and not refused");
    let sent = serde_json::to_value(&grounded.converse).unwrap();
    let tools = sent["toolConfig"]["tools"].as_array().unwrap();
    assert_eq!(
        tools
            .iter()
            .filter(|t| t.get("systemTool").is_some())
            .collect::<Vec<_>>(),
        vec![&json!({"systemTool": {"name": "nova_grounding"}})]
    );
    let dropped = responses::translate_for(
        &request,
        bedrock_gateway_core::config::HostedTools::Drop,
        false,
    )
    .unwrap();
    assert_eq!(dropped.dropped_tools.as_deref(), Some("web_search"));

    let web =
        json!({"title": "Example News", "location": {"web": {"url": "https://example.com/a"}}});
    let expected = json!({"type": "url_citation", "start_index": 7, "end_index": 17,
                          "url": "https://example.com/a", "title": "Example News"});
    let reply = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Héllo. "},
            {"citationsContent": {"content": [{"text": "It rained."}], "citations": [web]}}
        ]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    });
    let context = || ResponsesContext {
        id: "r1".into(),
        model: "nova".into(),
        created: 1,
        echo: String::new(),
        tools: Default::default(),
        include_reasoning: false,
    };
    let whole = responses::from_converse_response(&serde_json::to_vec(&reply).unwrap(), &context())
        .unwrap();
    let response: Value = serde_json::from_slice(&whole.body).unwrap();
    let part = &response["output"][0]["content"][0];
    assert_eq!(part["text"], "Héllo. It rained.");
    assert_eq!(
        part["annotations"],
        json!([expected]),
        "character offsets in the message"
    );

    let frames: Vec<u8> = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"text": "It rained."}}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0, "delta": {"citation": web}}}),
        json!({"event": "contentBlockStop", "payload": {"contentBlockIndex": 0}}),
        json!({"event": "messageStop", "payload": {"stopReason": "end_turn"}}),
        json!({"event": "metadata", "payload": {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}}),
    ]
    .iter()
    .flat_map(frame_bytes)
    .collect();
    let mut translator = ResponsesStreamTranslator::new(context(), 1 << 20);
    let events = parse_events(&translator.push(&frames, true));
    let streamed = json!({"type": "url_citation", "start_index": 0, "end_index": 10,
                          "url": "https://example.com/a", "title": "Example News"});
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "response.output_text.annotation.added")
        .collect();
    assert_eq!(added.len(), 1, "{events:?}");
    assert_eq!(added[0]["data"]["annotation"], streamed);
    assert_eq!(added[0]["data"]["annotation_index"], 0);
    let completed = events
        .iter()
        .find(|e| e["event"] == "response.completed")
        .unwrap();
    assert_eq!(
        completed["data"]["response"]["output"][0]["content"][0]["annotations"],
        json!([streamed])
    );
}

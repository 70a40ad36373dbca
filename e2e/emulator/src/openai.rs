//! Bedrock Runtime's OpenAI API (`/openai/v1/chat/completions`, `/openai/v1/responses`) for
//! OpenAI's models on Bedrock (gpt-oss): OpenAI's request and reply shapes, the usage chunk of a
//! stream only when `stream_options.include_usage` asks for it, as OpenAI's API does.

use crate::model::word_count;
use crate::{full, validation};
use hyper::StatusCode;
use serde_json::{json, Value};

const MODELS: [&str; 2] = ["openai.gpt-oss-20b-1:0", "openai.gpt-oss-120b-1:0"];

type Reply = hyper::Response<crate::ResponseBody>;

/// The text of a message's content (a string, or parts with `text`).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The model a request names, if it is one of OpenAI's on Bedrock; else the validation message.
fn check_model(body: &Value) -> Result<String, &'static str> {
    match body.get("model").and_then(Value::as_str) {
        Some(model) if MODELS.contains(&model) => Ok(model.to_owned()),
        Some(_) => Err("The provided model identifier is invalid."),
        None => Err("model is required."),
    }
}

fn sse(events: &[String], request_id: &str) -> Reply {
    full(
        StatusCode::OK,
        "text/event-stream",
        events.concat(),
        request_id,
    )
}

pub fn chat(body: &Value, request_id: &str) -> Reply {
    let model = match check_model(body) {
        Ok(model) => model,
        Err(message) => return validation(message, request_id),
    };
    let Some(messages) = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return validation("messages is required and must not be empty.", request_id);
    };
    let prompt: u64 = messages
        .iter()
        .map(|m| word_count(&text_of(m.get("content").unwrap_or(&Value::Null))).max(1))
        .sum();
    let last = messages
        .last()
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let reply = format!("You said: {last}");
    let completion = word_count(&reply);
    let usage = json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion });
    let id = format!("chatcmpl-{request_id}");
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let answer = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
            "usage": usage,
        });
        return full(
            StatusCode::OK,
            "application/json",
            answer.to_string(),
            request_id,
        );
    }
    let chunk = |delta: Value, finish: Value| {
        let event = json!({ "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
        format!("data: {event}\n\n")
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "" }),
        Value::Null,
    )];
    for (i, word) in reply.split(' ').enumerate() {
        let piece = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        events.push(chunk(json!({ "content": piece }), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let event = json!({ "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64, "model": model,
            "choices": [], "usage": usage });
        events.push(format!("data: {event}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse(&events, request_id)
}

pub fn responses(body: &Value, request_id: &str) -> Reply {
    let model = match check_model(body) {
        Ok(model) => model,
        Err(message) => return validation(message, request_id),
    };
    let last = match body.get("input") {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::Array(items)) if !items.is_empty() => items
            .last()
            .map(|item| text_of(item.get("content").unwrap_or(&Value::Null)))
            .unwrap_or_default(),
        _ => return validation("input is required.", request_id),
    };
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return validation("background is not supported on this endpoint.", request_id);
    }
    let reply = format!("You said: {last}");
    let (input, output) = (word_count(&last).max(1), word_count(&reply));
    let id = format!("resp_{request_id}");
    let response = json!({
        "id": id, "object": "response", "created_at": 1_700_000_000u64, "status": "completed", "model": model,
        "output": [{ "type": "message", "id": format!("msg_{request_id}"), "status": "completed", "role": "assistant",
            "content": [{ "type": "output_text", "text": reply, "annotations": [] }] }],
        "usage": { "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": { "cached_tokens": 0 }, "output_tokens_details": { "reasoning_tokens": 0 } },
    });
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return full(
            StatusCode::OK,
            "application/json",
            response.to_string(),
            request_id,
        );
    }
    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let mut created = response.clone();
    if let Some(object) = created.as_object_mut() {
        object.insert("status".into(), json!("in_progress"));
        object.insert("output".into(), json!([]));
        object.insert("usage".into(), Value::Null);
    }
    let item_id = format!("msg_{request_id}");
    let item = |status: &str, content: Value| json!({ "type": "message", "id": item_id, "status": status, "role": "assistant", "content": content });
    let part = |text: &str| json!({ "type": "output_text", "text": text, "annotations": [] });
    let mut events = vec![
        event(
            "response.created",
            json!({ "type": "response.created", "sequence_number": 0, "response": created }),
        ),
        event(
            "response.output_item.added",
            json!({ "type": "response.output_item.added", "sequence_number": 1,
            "output_index": 0, "item": item("in_progress", json!([])) }),
        ),
        event(
            "response.content_part.added",
            json!({ "type": "response.content_part.added", "sequence_number": 2,
            "item_id": item_id, "output_index": 0, "content_index": 0, "part": part("") }),
        ),
    ];
    for (i, word) in reply.split(' ').enumerate() {
        let piece = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        events.push(event(
            "response.output_text.delta",
            json!({ "type": "response.output_text.delta", "sequence_number": i + 3,
            "item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece }),
        ));
    }
    events.push(event(
        "response.output_text.done",
        json!({ "type": "response.output_text.done", "sequence_number": 997,
        "item_id": item_id, "output_index": 0, "content_index": 0, "text": reply }),
    ));
    events.push(event(
        "response.content_part.done",
        json!({ "type": "response.content_part.done", "sequence_number": 998,
        "item_id": item_id, "output_index": 0, "content_index": 0, "part": part(&reply) }),
    ));
    events.push(event(
        "response.output_item.done",
        json!({ "type": "response.output_item.done", "sequence_number": 999,
        "output_index": 0, "item": item("completed", json!([part(&reply)])) }),
    ));
    events.push(event(
        "response.completed",
        json!({ "type": "response.completed", "sequence_number": 1000, "response": response }),
    ));
    sse(&events, request_id)
}

//! Anthropic Messages bodies as Bedrock's InvokeModel takes and returns them.

use crate::frames;
use crate::model::{self, Block, CacheUsage, Conversation, Reply};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

pub fn read_conversation(body: &Value) -> Result<Conversation, String> {
    let object = body
        .as_object()
        .ok_or("Malformed input request: expected a JSON object")?;
    for extraneous in ["model", "stream"] {
        if object.contains_key(extraneous) {
            return Err(format!("Malformed input request: #: extraneous key [{extraneous}] is not permitted, please reformat your input and try again."));
        }
    }
    match object.get("anthropic_version").and_then(Value::as_str) {
        Some(version) if version.starts_with("bedrock-") => {}
        _ => {
            return Err(
                "Malformed input request: #: required key [anthropic_version] not found".into(),
            )
        }
    }
    let max_tokens = object
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("Malformed input request: #: required key [max_tokens] not found")?;
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("Malformed input request: #: required key [messages] not found")?;
    let mut conversation = Conversation {
        max_tokens: Some(max_tokens),
        ..Default::default()
    };
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user") | Some("assistant")) {
            return Err(format!(
                "messages.{index}.role: Input should be 'user' or 'assistant'"
            ));
        }
        let is_last = index + 1 == messages.len();
        let mut user_text = String::new();
        match message.get("content") {
            Some(Value::String(text)) => {
                conversation.input_words += model::word_count(text);
                if role == Some("user") {
                    user_text.push_str(text);
                }
            }
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = block
                                .get("text")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            conversation.input_words += model::word_count(text);
                            if role == Some("user") {
                                user_text.push_str(text);
                            }
                        }
                        Some("tool_result") => {
                            let text = match block.get("content") {
                                Some(Value::String(text)) => text.clone(),
                                Some(Value::Array(parts)) => parts
                                    .iter()
                                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                                _ => String::new(),
                            };
                            conversation.input_words += model::word_count(&text);
                            if is_last {
                                conversation.last_tool_result = Some(text);
                            }
                        }
                        Some(_) => conversation.input_words += 1,
                        None => {
                            return Err(format!(
                                "messages.{index}.content: each block needs a type"
                            ))
                        }
                    }
                }
            }
            _ => return Err(format!("messages.{index}.content: Field required")),
        }
        if role == Some("user") && !user_text.is_empty() {
            conversation.last_user_text = user_text;
        }
        conversation.last_role_is_user = role == Some("user");
    }
    match object.get("system") {
        Some(Value::String(text)) => conversation.input_words += model::word_count(text),
        Some(Value::Array(blocks)) => {
            for text in blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
            {
                conversation.input_words += model::word_count(text);
            }
        }
        _ => {}
    }
    if let Some(thinking) = object.get("thinking") {
        if thinking.get("type").and_then(Value::as_str) == Some("enabled") {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or("thinking.enabled.budget_tokens: Field required")?;
            if budget < 1024 {
                return Err(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                        .into(),
                );
            }
            if budget >= max_tokens {
                return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
            }
            conversation.thinking = true;
        }
    }
    conversation.cache_prefix = cache_prefix(object);
    check_beta_flags(object)?;
    conversation.stop_sequences = object
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for tool in object
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            continue;
        };
        conversation.tools.push((
            name.to_owned(),
            tool.get("input_schema").cloned().unwrap_or(json!({})),
        ));
    }
    if let Some(choice) = object.get("tool_choice") {
        match choice.get("type").and_then(Value::as_str) {
            Some("any") => conversation.forced_tool = Some(None),
            Some("tool") => {
                conversation.forced_tool = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| Some(n.to_owned()))
            }
            Some("none") => conversation.tools_disabled = true,
            _ => {}
        }
    }
    Ok(conversation)
}

/// The beta flags Bedrock's InvokeModel has been reported to accept for Claude (peers' live
/// probes; see the project's notes). Anything else fails the whole request, as on Bedrock.
pub const ACCEPTED_BETA_FLAGS: &[&str] = &[
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "dev-full-thinking-2025-05-14",
    "effort-2025-11-24",
    "fine-grained-tool-streaming-2025-05-14",
    "interleaved-thinking-2025-05-14",
    "mcp-client-2025-04-04",
    "mcp-client-2025-11-20",
    "model-context-window-exceeded-2025-08-26",
    "output-128k-2025-02-19",
    "pdfs-2024-09-25",
    "search-results-2025-06-09",
    "structured-outputs-2025-12-15",
    "token-counting-2024-11-01",
    "token-efficient-tools-2025-02-19",
    "tool-search-tool-2025-10-19",
    "web-search-2025-03-05",
];

/// Bedrock's answers to flags and flag-only fields: an unknown flag fails the request, and so do
/// `cache_control.scope` (its flag is one Bedrock refuses), a tool's `custom` member, tools'
/// `defer_loading` without the tool-search flag and `context_management` without its flag.
pub fn check_beta_flags(object: &serde_json::Map<String, Value>) -> Result<(), String> {
    let flags: Vec<&str> = match object.get("anthropic_beta") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            list.iter().filter_map(Value::as_str).collect()
        }
        Some(_) => return Err("anthropic_beta: Input should be a valid list of strings".into()),
    };
    if flags.iter().any(|flag| !ACCEPTED_BETA_FLAGS.contains(flag)) {
        return Err("The model returned the following errors: invalid beta flag".into());
    }
    for (member, label) in [
        ("system", "system"),
        ("messages", "messages"),
        ("tools", "tools"),
    ] {
        if let Some(path) = object
            .get(member)
            .and_then(|value| scoped_cache_control(value, label))
        {
            return Err(format!("The model returned the following errors: {path}.cache_control.ephemeral.scope: Extra inputs are not permitted"));
        }
    }
    // A tool's `custom` member (Claude Code's wrapper of `defer_loading`) is refused whatever the flags.
    if let Some(index) = object
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .position(|tool| tool.get("custom").is_some())
    {
        return Err(format!("The model returned the following errors: tools.{index}.custom: Extra inputs are not permitted"));
    }
    if !flags.contains(&"tool-search-tool-2025-10-19") {
        let tools = object
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        if let Some(index) = tools
            .enumerate()
            .find_map(|(i, tool)| tool.get("defer_loading").map(|_| i))
        {
            return Err(format!("The model returned the following errors: tools.{index}.custom.defer_loading: Extra inputs are not permitted"));
        }
    }
    if object.contains_key("context_management")
        && !flags.contains(&"context-management-2025-06-27")
    {
        return Err("The model returned the following errors: context_management: Extra inputs are not permitted".into());
    }
    Ok(())
}

/// Where a `cache_control` object carries `scope`, as Bedrock's error names the place.
fn scoped_cache_control(value: &Value, at: &str) -> Option<String> {
    match value {
        Value::Object(object) => object.iter().find_map(|(key, member)| {
            if key == "cache_control" {
                member.get("scope").map(|_| at.to_owned())
            } else {
                scoped_cache_control(member, &format!("{at}.{key}"))
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| scoped_cache_control(item, &format!("{at}.{i}"))),
        _ => None,
    }
}

/// The prompt as the cache sees it: tools, system, then the messages' blocks, with a breakpoint
/// after each block marked `cache_control`.
fn cache_prefix(object: &serde_json::Map<String, Value>) -> Option<model::CachePrefix> {
    let mut prefix = model::CachePrefix::default();
    let system = match object.get("system") {
        Some(Value::Array(system)) => system.as_slice(),
        _ => &[],
    };
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|m| match m.get("content") {
            Some(Value::Array(content)) => content.as_slice(),
            _ => &[],
        });
    let blocks = object
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(system)
        .chain(messages);
    for block in blocks {
        prefix.push(block, block.get("cache_control").is_some());
    }
    prefix.finish()
}

fn usage(reply: &Reply, cache: CacheUsage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": reply.input_tokens.saturating_sub(cache.read + cache.written).max(1),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache.written,
        "cache_read_input_tokens": cache.read,
    })
}

fn content_json(block: &Block) -> Value {
    match block {
        Block::Thinking { text, signature } => {
            json!({ "type": "thinking", "thinking": text, "signature": signature })
        }
        Block::Text(text) => json!({ "type": "text", "text": text }),
        Block::ToolUse { id, name, input } => {
            json!({ "type": "tool_use", "id": id, "name": name, "input": input })
        }
    }
}

pub fn response(reply: &Reply, cache: CacheUsage, message_id: &str, model: &str) -> Value {
    json!({
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.blocks.iter().map(content_json).collect::<Vec<_>>(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": null,
        "usage": usage(reply, cache, reply.output_tokens),
    })
}

fn chunk(event: Value, seed: usize) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    frames::event("chunk", json!({ "bytes": bytes }), seed)
}

/// InvokeModelWithResponseStream frames: each `chunk` carries one Anthropic stream event.
pub fn stream_frames(
    reply: &Reply,
    cache: CacheUsage,
    message_id: &str,
    model: &str,
) -> Vec<(Bytes, bool)> {
    let mut events = vec![(
        json!({
            "type": "message_start",
            "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(reply, cache, 1),
            },
        }),
        false,
    )];
    for (index, block) in reply.blocks.iter().enumerate() {
        match block {
            Block::Thinking { text, signature } => {
                events.push((json!({ "type": "content_block_start", "index": index, "content_block": { "type": "thinking", "thinking": "", "signature": "" } }), false));
                for delta in model::split_into_deltas(text) {
                    events.push((json!({ "type": "content_block_delta", "index": index, "delta": { "type": "thinking_delta", "thinking": delta } }), true));
                }
                events.push((json!({ "type": "content_block_delta", "index": index, "delta": { "type": "signature_delta", "signature": signature } }), false));
            }
            Block::Text(text) => {
                events.push((json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } }), false));
                for delta in model::split_into_deltas(text) {
                    events.push((json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": delta } }), true));
                }
            }
            Block::ToolUse { id, name, input } => {
                events.push((json!({ "type": "content_block_start", "index": index, "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } }), false));
                let input = input.to_string();
                let middle = (input.len() / 2..=input.len())
                    .find(|i| input.is_char_boundary(*i))
                    .unwrap_or(input.len());
                for fragment in [&input[..middle], &input[middle..]] {
                    events.push((json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": fragment } }), true));
                }
            }
        }
        events.push((
            json!({ "type": "content_block_stop", "index": index }),
            false,
        ));
    }
    events.push((json!({ "type": "message_delta", "delta": { "stop_reason": reply.stop_reason, "stop_sequence": null }, "usage": { "output_tokens": reply.output_tokens } }), false));
    events.push((
        json!({
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": reply.input_tokens, "outputTokenCount": reply.output_tokens,
                "invocationLatency": 42, "firstByteLatency": 7,
            },
        }),
        false,
    ));
    events
        .into_iter()
        .enumerate()
        .map(|(seed, (event, is_delta))| (chunk(event, seed), is_delta))
        .collect()
}

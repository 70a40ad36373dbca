//! Bedrock Converse / ConverseStream bodies.

use crate::frames;
use crate::model::{self, Block, CacheUsage, Conversation, Reply};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

pub fn read_conversation(body: &Value) -> Result<Conversation, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or(
            "The model returned the following errors: messages: must contain at least one message",
        )?;
    let mut conversation = Conversation::default();
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user") | Some("assistant")) {
            return Err(format!("messages.{index}.role: must be user or assistant"));
        }
        if index == 0 && role != Some("user") {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
        }
        let content = message
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                format!("messages.{index}.content: must contain at least one content block")
            })?;
        let is_last = index + 1 == messages.len();
        let mut user_text = String::new();
        let mut attachments = Vec::new();
        let (mut cited, mut documents) = (None, 0usize);
        for block in content {
            if let Some(text) = block.get("text") {
                let text = text
                    .as_str()
                    .ok_or_else(|| format!("messages.{index}: text must be a string"))?;
                if text.trim().is_empty() {
                    return Err(format!(
                        "messages.{index}: text content blocks must be non-empty"
                    ));
                }
                conversation.input_words += model::word_count(text);
                if role == Some("user") {
                    user_text.push_str(text);
                }
            } else if let Some(result) = block.get("toolResult") {
                let text = tool_result_text(result.get("content"));
                conversation.input_words += model::word_count(&text);
                if is_last {
                    conversation.last_tool_result = Some(text);
                }
            } else if block.get("cachePoint").is_some() {
                // A cache breakpoint, not content.
            } else if let Some(image) = block.get("image") {
                let format = image
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
                    return Err(format!("messages.{index}: image format {format:?} is not one of png, jpeg, gif, webp"));
                }
                let size = decoded_len(image.pointer("/source/bytes"))
                    .map_err(|e| format!("messages.{index}: image bytes: {e}"))?;
                conversation.input_words += 100;
                attachments.push(format!("image/{format}, {size} bytes"));
            } else if let Some(document) = block.get("document") {
                let format = document
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = document
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let valid_name = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " -()[]".contains(c))
                    && !name.contains("  ");
                if !valid_name {
                    return Err(format!("messages.{index}: document name {name:?} has characters Bedrock does not allow"));
                }
                let size = decoded_len(document.pointer("/source/bytes"))
                    .map_err(|e| format!("messages.{index}: document bytes: {e}"))?;
                conversation.input_words += 50;
                attachments.push(format!("document {format} \"{name}\", {size} bytes"));
                let citations_on = document
                    .pointer("/citations/enabled")
                    .and_then(Value::as_bool)
                    == Some(true);
                if citations_on && cited.is_none() {
                    let text = (format == "txt")
                        .then(|| {
                            let bytes = document.pointer("/source/bytes")?.as_str()?;
                            let raw = base64::engine::general_purpose::STANDARD
                                .decode(bytes)
                                .ok()?;
                            String::from_utf8(raw).ok()
                        })
                        .flatten()
                        .unwrap_or_else(|| name.to_owned());
                    cited = Some((documents, name.to_owned(), text));
                }
                documents += 1;
            } else if let Some(reasoning) = block.get("reasoningContent") {
                // Claude verifies returned thinking against its signature.
                if let Some(thinking) = reasoning.get("reasoningText") {
                    let text = thinking
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let signature = thinking.get("signature").and_then(Value::as_str);
                    if signature != Some(model::signature_for(text).as_str()) {
                        return Err(format!(
                            "messages.{index}.content: Invalid `signature` in `thinking` block"
                        ));
                    }
                }
                conversation.input_words += 1;
            } else if block.get("toolUse").is_some() {
                conversation.input_words += 1;
            } else {
                return Err(format!("messages.{index}: unknown content block {block}"));
            }
        }
        if role == Some("user") && !user_text.is_empty() {
            conversation.last_user_text = user_text;
        }
        if role == Some("user") {
            conversation.last_user_attachments = attachments;
            conversation.cited_document = cited;
        }
        conversation.last_role_is_user = role == Some("user");
    }
    for block in body
        .get("system")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            conversation.input_words += model::word_count(text);
        }
    }
    if let Some(config) = body.get("inferenceConfig") {
        conversation.max_tokens = config.get("maxTokens").and_then(Value::as_u64);
        if conversation.max_tokens == Some(0) {
            return Err("inferenceConfig.maxTokens: must be at least 1".into());
        }
        conversation.stop_sequences = config
            .get("stopSequences")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
    }
    if let Some(thinking) = body.pointer("/additionalModelRequestFields/thinking") {
        conversation.thinking = thinking.get("type").and_then(Value::as_str) == Some("enabled");
    }
    if let Some(flags) = body.pointer("/additionalModelRequestFields/anthropic_beta") {
        let mut only_flags = serde_json::Map::new();
        only_flags.insert("anthropic_beta".into(), flags.clone());
        crate::anthropic::check_beta_flags(&only_flags)?;
    }
    if conversation.thinking {
        check_thinking_leads_tool_loop(messages)?;
    }
    conversation.cache_prefix = cache_prefix(body);
    if let Some(format) = body.pointer("/outputConfig/textFormat") {
        let schema = format
            .pointer("/structure/jsonSchema/schema")
            .and_then(Value::as_str)
            .ok_or("outputConfig.textFormat.structure.jsonSchema.schema must be a JSON string")?;
        let schema: Value = serde_json::from_str(schema)
            .map_err(|e| format!("outputConfig: the schema is not valid JSON: {e}"))?;
        conversation.output_schema = Some(schema);
    }
    if let Some(tool_config) = body.get("toolConfig") {
        for tool in tool_config
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(system) = tool.get("systemTool") {
                match system.get("name").and_then(Value::as_str) {
                    Some("nova_grounding") => conversation.web_grounding = true,
                    other => {
                        return Err(format!(
                            "toolConfig.tools: the system tool {other:?} does not exist"
                        ))
                    }
                }
                continue;
            }
            let Some(spec) = tool.get("toolSpec") else {
                continue;
            };
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .ok_or("toolSpec.name is required")?;
            let schema = spec
                .pointer("/inputSchema/json")
                .cloned()
                .unwrap_or(json!({}));
            conversation.tools.push((name.to_owned(), schema));
        }
        if let Some(choice) = tool_config.get("toolChoice") {
            if choice.get("any").is_some() {
                conversation.forced_tool = Some(None);
            } else if let Some(name) = choice.pointer("/tool/name").and_then(Value::as_str) {
                conversation.forced_tool = Some(Some(name.to_owned()));
            }
        }
    }
    Ok(conversation)
}

/// With thinking on, Claude wants the assistant turn of an unfinished tool loop (the conversation
/// ends with tool results) to begin with its thinking, as Anthropic's API says when it is missing.
fn check_thinking_leads_tool_loop(messages: &[Value]) -> Result<(), String> {
    let [.., assistant, last] = messages else {
        return Ok(());
    };
    let blocks = |message: &Value| {
        message
            .get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let in_tool_loop = last.get("role").and_then(Value::as_str) == Some("user")
        && blocks(last)
            .iter()
            .any(|block| block.get("toolResult").is_some());
    if !in_tool_loop || assistant.get("role").and_then(Value::as_str) != Some("assistant") {
        return Ok(());
    }
    let first = blocks(assistant).into_iter().next().unwrap_or_default();
    if first.get("reasoningContent").is_some() {
        return Ok(());
    }
    let found = first
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default();
    let found = match found.as_str() {
        "toolUse" => "tool_use",
        "text" => "text",
        other => other,
    }
    .to_owned();
    Err(format!(
        "messages.{}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking",
        messages.len() - 2
    ))
}

/// The prompt as the cache sees it: tools, system, then the messages' blocks, with a breakpoint
/// wherever a `cachePoint` block stands.
fn cache_prefix(body: &Value) -> Option<model::CachePrefix> {
    let mut prefix = model::CachePrefix::default();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|m| {
            m.get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        });
    let blocks = body
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            body.get("system")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .chain(messages);
    for block in blocks {
        if block.get("cachePoint").is_some() {
            prefix.point();
        } else {
            prefix.push(block, false);
        }
    }
    prefix.finish()
}

/// The decoded size of a base64 blob, which must be valid base64.
fn decoded_len(bytes: Option<&Value>) -> Result<usize, String> {
    use base64::Engine as _;
    let text = bytes
        .and_then(Value::as_str)
        .ok_or("missing source.bytes")?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(|d| d.len())
        .map_err(|e| format!("not valid base64: {e}"))
}

fn tool_result_text(content: Option<&Value>) -> String {
    content
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|block| match (block.get("text"), block.get("json")) {
            (Some(Value::String(text)), _) => text.clone(),
            (_, Some(json)) => json.to_string(),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bedrock counts cached input apart: inputTokens excludes it, totalTokens includes it.
fn usage(reply: &Reply, cache: CacheUsage) -> Value {
    let uncached = reply
        .input_tokens
        .saturating_sub(cache.read + cache.written)
        .max(1);
    let mut usage = json!({
        "inputTokens": uncached,
        "outputTokens": reply.output_tokens,
        "totalTokens": uncached + cache.read + cache.written + reply.output_tokens,
    });
    if let Some(usage) = usage
        .as_object_mut()
        .filter(|_| cache != CacheUsage::default())
    {
        usage.insert("cacheReadInputTokens".into(), json!(cache.read));
        usage.insert("cacheWriteInputTokens".into(), json!(cache.written));
    }
    usage
}

/// A citation as Converse writes it (`Citation`, located by `documentChar` or `web`).
fn citation_json(citation: &model::Citation) -> Value {
    let location = match &citation.location {
        model::CitationLocation::DocumentChar {
            document_index,
            start,
            end,
        } => {
            json!({ "documentChar": { "documentIndex": document_index, "start": start, "end": end } })
        }
        model::CitationLocation::Web { url, domain } => {
            json!({ "web": { "url": url, "domain": domain } })
        }
    };
    json!({
        "title": citation.title,
        "sourceContent": [{ "text": citation.cited_text }],
        "location": location,
    })
}

pub fn response(reply: &Reply, cache: CacheUsage) -> Value {
    let mut citation = reply.citation.as_ref();
    let content: Vec<Value> = reply
        .blocks
        .iter()
        .map(|block| match block {
            Block::Thinking { text, signature } => {
                json!({ "reasoningContent": { "reasoningText": { "text": text, "signature": signature } } })
            }
            // The first text of a reply that cites is a citations block: its text and the citation.
            Block::Text(text) if citation.is_some() => {
                let cited = citation.take().map(citation_json);
                json!({ "citationsContent": { "content": [{ "text": text }], "citations": [cited] } })
            }
            Block::Text(text) => json!({ "text": text }),
            Block::ToolUse { id, name, input } => json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }),
        })
        .collect();
    json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": reply.stop_reason,
        "usage": usage(reply, cache),
        "metrics": { "latencyMs": 42 },
    })
}

/// The ConverseStream frames of a reply, in Bedrock's order. The second element of each
/// pair says whether the frame is a content delta (faults are injected after the first).
pub fn stream_frames(reply: &Reply, cache: CacheUsage) -> Vec<(Bytes, bool)> {
    let mut frames = vec![(
        frames::event("messageStart", json!({ "role": "assistant" }), 0),
        false,
    )];
    let mut seed = 1;
    let mut cited = false;
    for (index, block) in reply.blocks.iter().enumerate() {
        match block {
            Block::Thinking { text, signature } => {
                for delta in model::split_into_deltas(text) {
                    seed += 1;
                    let payload = json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "text": delta } } });
                    frames.push((frames::event("contentBlockDelta", payload, seed), true));
                }
                let payload = json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "signature": signature } } });
                frames.push((frames::event("contentBlockDelta", payload, seed), false));
            }
            Block::Text(text) => {
                for delta in model::split_into_deltas(text) {
                    seed += 1;
                    let payload = json!({ "contentBlockIndex": index, "delta": { "text": delta } });
                    frames.push((frames::event("contentBlockDelta", payload, seed), true));
                }
                // Bedrock streams a citation as a delta of the block it belongs to.
                if let Some(citation) = reply.citation.as_ref().filter(|_| !cited) {
                    cited = true;
                    seed += 1;
                    let payload = json!({ "contentBlockIndex": index, "delta": { "citation": citation_json(citation) } });
                    frames.push((frames::event("contentBlockDelta", payload, seed), false));
                }
            }
            Block::ToolUse { id, name, input } => {
                let start = json!({ "contentBlockIndex": index, "start": { "toolUse": { "toolUseId": id, "name": name } } });
                frames.push((frames::event("contentBlockStart", start, seed), false));
                let input = input.to_string();
                let middle = input.len() / 2;
                let middle = (middle..=input.len())
                    .find(|i| input.is_char_boundary(*i))
                    .unwrap_or(input.len());
                for fragment in [&input[..middle], &input[middle..]] {
                    seed += 1;
                    let payload = json!({ "contentBlockIndex": index, "delta": { "toolUse": { "input": fragment } } });
                    frames.push((frames::event("contentBlockDelta", payload, seed), true));
                }
            }
        }
        frames.push((
            frames::event(
                "contentBlockStop",
                json!({ "contentBlockIndex": index }),
                seed,
            ),
            false,
        ));
    }
    frames.push((
        frames::event(
            "messageStop",
            json!({ "stopReason": reply.stop_reason }),
            seed + 1,
        ),
        false,
    ));
    let metadata = json!({ "usage": usage(reply, cache), "metrics": { "latencyMs": 42 } });
    frames.push((frames::event("metadata", metadata, seed + 2), false));
    frames
}

/// The one guardrail this emulator knows, as Bedrock's guardrails are named: an id, or its ARN.
pub const GUARDRAIL_ID: &str = "gr-emulator";
/// What the emulator's guardrail answers in place of the model when it blocks an input.
pub const GUARDRAIL_MESSAGE: &str = "Sorry, this request was blocked by a guardrail.";
/// The emulator's guardrail blocks inputs that mention this word.
const GUARDRAIL_DENIED_WORD: &str = "confidential";

/// `guardrailConfig` names a guardrail and version that exist (`gr-emulator`, version 1 or DRAFT).
pub fn check_guardrail(config: &Value) -> Result<(), String> {
    let identifier = config
        .get("guardrailIdentifier")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = config
        .get("guardrailVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known =
        identifier == GUARDRAIL_ID || identifier.ends_with(&format!(":guardrail/{GUARDRAIL_ID}"));
    if !known || !matches!(version, "1" | "DRAFT") {
        return Err(
            "The guardrail identifier or version provided in the request does not exist.".into(),
        );
    }
    Ok(())
}

/// The reply when the guardrail intervenes on the caller's input, if it does.
pub fn guardrail_reply(conversation: &Conversation) -> Option<Reply> {
    let text = conversation.last_user_text.to_lowercase();
    text.contains(GUARDRAIL_DENIED_WORD).then(|| Reply {
        blocks: vec![Block::Text(GUARDRAIL_MESSAGE.into())],
        stop_reason: "guardrail_intervened",
        input_tokens: conversation.input_words.max(1),
        output_tokens: 0,
        citation: None,
    })
}

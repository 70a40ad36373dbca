//! Anthropic's Messages API on Bedrock Converse, for models without Anthropic's native API
//! (Llama, Nova, Mistral, ...): requests become Converse, replies and streams come back as
//! Anthropic messages and Anthropic's exact SSE event sequence.

use crate::bedrock::eventstream::{Decoder, Frame, FrameTranslator};
use crate::bedrock::{
    self, CachePoint, ContentBlock, ConverseReply, ConverseRequest, Document, DocumentSource,
    Empty, Image, ImageSource, InferenceConfig, InputSchema, Message, NamedTool, ReasoningContent,
    ReasoningText, Role, SystemBlock, Tool, ToolChoice, ToolConfig, ToolResult, ToolResultContent,
    ToolSpec, ToolUse, Usage,
};
use crate::errors::{ApiFormat, GatewayError};
use crate::json::push_json_string;
use crate::translated::{TokenUsage, TranslatedBody};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write as _;

#[derive(Debug, Deserialize)]
pub struct MessagesRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(borrow)]
    pub messages: Vec<AnthropicMessage<'a>>,
    #[serde(borrow, default)]
    pub system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<AnthropicTool<'a>>>,
    #[serde(borrow, default)]
    pub tool_choice: Option<AnthropicToolChoice<'a>>,
    #[serde(borrow, default)]
    pub thinking: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicMessage<'a> {
    pub role: Role,
    #[serde(borrow)]
    pub content: &'a RawValue,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicBlock<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub source: Option<Source<'a>>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    #[serde(default)]
    pub is_error: Option<bool>,
    #[serde(borrow, default)]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub cache_control: Option<&'a RawValue>,
    /// A `tool_reference` block's tool (tool search's result).
    #[serde(borrow, default)]
    pub tool_name: Option<Cow<'a, str>>,
    /// A document's `citations` setting (`{"enabled": true}`), and its title.
    #[serde(borrow, default)]
    pub citations: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub title: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct Source<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub media_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicTool<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub input_schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

pub fn parse(body: &[u8]) -> Result<MessagesRequest<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let request: MessagesRequest<'_> = crate::json::path::from_slice(body)
        .map_err(|e| invalid(format!("Invalid Messages request: {e}")))?;
    bedrock::validate_model_id(&request.model).map_err(|why| invalid(format!("model: {why}")))?;
    Ok(request)
}

fn blocks_of<'r>(raw: &'r RawValue, at: &str) -> Result<Vec<AnthropicBlock<'r>>, GatewayError> {
    if raw.get().trim_start().starts_with('"') {
        let text: Cow<'r, str> =
            serde_json::from_str(raw.get()).map_err(|e| invalid(format!("{at}: {e}")))?;
        return Ok(vec![AnthropicBlock {
            kind: Cow::Borrowed("text"),
            text: Some(text),
            source: None,
            id: None,
            name: None,
            input: None,
            tool_use_id: None,
            content: None,
            is_error: None,
            thinking: None,
            signature: None,
            data: None,
            cache_control: None,
            tool_name: None,
            citations: None,
            title: None,
        }]);
    }
    serde_json::from_str(raw.get()).map_err(|e| {
        invalid(format!(
            "{at}: expected a string or a list of content blocks: {e}"
        ))
    })
}

fn base64_source<'r>(
    source: Option<Source<'r>>,
    at: &str,
) -> Result<(Cow<'r, str>, Cow<'r, str>), GatewayError> {
    let source = source.ok_or_else(|| invalid(format!("{at}.source: Field required")))?;
    if source.kind != "base64" {
        return Err(invalid(format!(
            "{at}.source: only base64 sources can be sent to this model through Bedrock Converse, not {:?}.",
            source.kind
        )));
    }
    let media_type = source
        .media_type
        .ok_or_else(|| invalid(format!("{at}.source.media_type: Field required")))?;
    let data = source
        .data
        .ok_or_else(|| invalid(format!("{at}.source.data: Field required")))?;
    Ok((media_type, data))
}

fn image<'r>(source: Option<Source<'r>>, at: &str) -> Result<Image<'r>, GatewayError> {
    let (media_type, data) = base64_source(source, at)?;
    let format = bedrock::image_format(&media_type).ok_or_else(|| {
        invalid(format!(
            "{at}: image type {media_type:?} is not supported; use png, jpeg, gif or webp."
        ))
    })?;
    Ok(Image {
        format,
        source: ImageSource { bytes: data },
    })
}

/// Converts one message's blocks; `cache_control` becomes a cache point after its block.
fn convert_blocks<'r>(
    blocks: Vec<AnthropicBlock<'r>>,
    at: &str,
    uses_tools: &mut bool,
) -> Result<Vec<ContentBlock<'r>>, GatewayError> {
    let mut out = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.into_iter().enumerate() {
        let at = format!("{at}.{index}");
        let cached = block.cache_control.is_some();
        match block.kind.as_ref() {
            "text" => {
                let text = block.text.ok_or_else(|| invalid(format!("{at}.text: Field required")))?;
                if !text.is_empty() {
                    out.push(ContentBlock::Text(text));
                }
            }
            "image" => out.push(ContentBlock::Image(image(block.source, &at)?)),
            "document" => {
                let citations_on = block
                    .citations
                    .and_then(|c| serde_json::from_str::<serde_json::Value>(c.get()).ok())
                    .and_then(|c| c.get("enabled").and_then(serde_json::Value::as_bool))
                    == Some(true);
                // A plain-text source (`{"type": "text", "data": "..."}`) is a txt document.
                let plain_text = block.source.as_ref().is_some_and(|s| s.kind == "text");
                let (format, data) = if plain_text {
                    let text = block.source.and_then(|s| s.data).unwrap_or_default();
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                    ("txt", Cow::Owned(encoded))
                } else {
                    let (media_type, data) = base64_source(block.source, &at)?;
                    let format = bedrock::document_format(&media_type)
                        .ok_or_else(|| invalid(format!("{at}: document type {media_type:?} is not supported by Bedrock.")))?;
                    (format, data)
                };
                let name = block.title.as_deref().or(block.name.as_deref()).unwrap_or("document");
                out.push(ContentBlock::Document(Document {
                    format,
                    name: bedrock::document_name(name),
                    source: DocumentSource { bytes: data },
                    citations: citations_on.then_some(bedrock::CitationsConfig { enabled: true }),
                }));
            }
            "tool_use" => {
                let id = block.id.ok_or_else(|| invalid(format!("{at}.id: Field required")))?;
                let name = block.name.ok_or_else(|| invalid(format!("{at}.name: Field required")))?;
                let input = block.input.map_or("{}", RawValue::get);
                let input = RawValue::from_string(input.to_owned()).map_err(|e| invalid(format!("{at}.input: {e}")))?;
                *uses_tools = true;
                out.push(ContentBlock::ToolUse(ToolUse { tool_use_id: id, name, input }));
            }
            "tool_result" => {
                let id = block.tool_use_id.ok_or_else(|| invalid(format!("{at}.tool_use_id: Field required")))?;
                let mut content = Vec::new();
                if let Some(raw) = block.content {
                    for (part_index, part) in blocks_of(raw, &format!("{at}.content"))?.into_iter().enumerate() {
                        match part.kind.as_ref() {
                            "text" => content.push(ToolResultContent::Text(part.text.unwrap_or_default())),
                            "image" => content.push(ToolResultContent::Image(image(part.source, &format!("{at}.content.{part_index}"))?)),
                            // Tool search's answer: a tool it loaded. Converse sends every tool
                            // from the start (it has no deferred loading), so the reference is
                            // only news to the model, told as text.
                            "tool_reference" => {
                                let name = part.tool_name.unwrap_or_default();
                                content.push(ToolResultContent::Text(Cow::Owned(format!("Tool {name} is available."))));
                            }
                            other => return Err(invalid(format!("{at}.content.{part_index}: {other:?} blocks are not supported in tool results here."))),
                        }
                    }
                }
                if content.is_empty() {
                    content.push(ToolResultContent::Text(Cow::Borrowed("")));
                }
                let status = block.is_error.unwrap_or(false).then_some("error");
                *uses_tools = true;
                out.push(ContentBlock::ToolResult(ToolResult { tool_use_id: id, content, status }));
            }
            "thinking" => out.push(ContentBlock::ReasoningContent(ReasoningContent::ReasoningText(ReasoningText {
                text: block.thinking.unwrap_or_default(),
                signature: block.signature,
            }))),
            "redacted_thinking" => {
                let data = block.data.ok_or_else(|| invalid(format!("{at}.data: Field required")))?;
                out.push(ContentBlock::ReasoningContent(ReasoningContent::RedactedContent(data)));
            }
            other => return Err(invalid(format!("{at}: content blocks of type {other:?} cannot be sent to this model through Bedrock Converse."))),
        }
        if cached {
            out.push(ContentBlock::CachePoint(CachePoint::default()));
        }
    }
    Ok(out)
}

/// Translates a Messages request into Converse. `require_max_tokens` is false for count_tokens.
pub fn to_converse<'r>(
    request: &'r MessagesRequest<'_>,
    require_max_tokens: bool,
) -> Result<ConverseRequest<'r>, GatewayError> {
    if require_max_tokens && request.max_tokens.is_none() {
        return Err(invalid("max_tokens: Field required"));
    }
    let mut system = Vec::new();
    if let Some(raw) = request.system {
        let mut ignored = false;
        for block in convert_blocks(blocks_of(raw, "system")?, "system", &mut ignored)? {
            match block {
                ContentBlock::Text(text) => system.push(SystemBlock::Text(text)),
                ContentBlock::CachePoint(point) => system.push(SystemBlock::CachePoint(point)),
                _ => return Err(invalid("system: only text blocks are allowed.")),
            }
        }
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    let mut uses_tools = false;
    for (index, message) in request.messages.iter().enumerate() {
        let at = format!("messages.{index}.content");
        let content = convert_blocks(blocks_of(message.content, &at)?, &at, &mut uses_tools)?;
        bedrock::push_turn(&mut messages, message.role, content);
    }
    if messages.is_empty() {
        return Err(invalid(
            "messages: at least one message with content is required.",
        ));
    }
    let mut additional = serde_json::Map::new();
    if let Some(top_k) = request.top_k {
        additional.insert("top_k".into(), top_k.into());
    }
    if let Some(thinking) = request.thinking {
        let value: serde_json::Value =
            serde_json::from_str(thinking.get()).map_err(|e| invalid(format!("thinking: {e}")))?;
        additional.insert("thinking".into(), value);
    }
    Ok(ConverseRequest {
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop_sequences: request
                .stop_sequences
                .iter()
                .flatten()
                .map(Cow::as_ref)
                .collect(),
        },
        tool_config: tool_config(request, uses_tools)?,
        additional_model_request_fields: additional,
        output_config: None,
        options: Default::default(),
    })
}

fn tool_config<'r>(
    request: &'r MessagesRequest<'_>,
    history_uses_tools: bool,
) -> Result<Option<ToolConfig<'r>>, GatewayError> {
    let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let choice = match request
        .tool_choice
        .as_ref()
        .map(|c| (c.kind.as_ref(), c.name.as_deref()))
    {
        None | Some(("auto", _)) => Some(ToolChoice::Auto(Empty {})),
        Some(("any", _)) => Some(ToolChoice::Any(Empty {})),
        Some(("tool", Some(name))) => Some(ToolChoice::Tool(NamedTool {
            name: Cow::Borrowed(name),
        })),
        Some(("tool", None)) => return Err(invalid("tool_choice.name: Field required")),
        // Converse has no "none": drop the tools, unless the history needs their definitions.
        Some(("none", _)) if history_uses_tools => None,
        Some(("none", _)) => return Ok(None),
        Some((other, _)) => return Err(invalid(format!("tool_choice.type: unknown {other:?}"))),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
            return Err(invalid(format!(
                "tools.{index}: server tools ({kind}) are not available through Bedrock Converse."
            )));
        }
        let schema = tool
            .input_schema
            .ok_or_else(|| invalid(format!("tools.{index}.input_schema: Field required")))?;
        let schema = RawValue::from_string(schema.get().to_owned())
            .map_err(|e| invalid(format!("tools.{index}.input_schema: {e}")))?;
        specs.push(Tool::ToolSpec(ToolSpec {
            name: Cow::Borrowed(tool.name.as_ref()),
            description: tool.description.as_deref().map(Cow::Borrowed),
            input_schema: InputSchema { json: schema },
        }));
        if tool.cache_control.is_some() {
            specs.push(Tool::CachePoint(CachePoint::default()));
        }
    }
    Ok(Some(ToolConfig {
        tools: specs,
        tool_choice: choice,
    }))
}

/// Bedrock CountTokens input for a Converse model.
pub fn count_tokens_body(body: &[u8]) -> Result<(Vec<u8>, String), GatewayError> {
    let request = parse(body)?;
    let converse = to_converse(&request, false)?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ConverseTokens<'r> {
        messages: &'r [Message<'r>],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        system: &'r [SystemBlock<'r>],
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_config: &'r Option<ToolConfig<'r>>,
        #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
        additional_model_request_fields: &'r serde_json::Map<String, serde_json::Value>,
    }
    let input = ConverseTokens {
        messages: &converse.messages,
        system: &converse.system,
        tool_config: &converse.tool_config,
        additional_model_request_fields: &converse.additional_model_request_fields,
    };
    let body = serde_json::to_vec(&serde_json::json!({ "input": { "converse": input } }))
        .map_err(|e| invalid(e.to_string()))?;
    Ok((body, request.model.into_owned()))
}

// ---- Responses ---------------------------------------------------------------------------

fn stop_reason(converse: Option<&str>) -> &'static str {
    match converse {
        Some("tool_use") => "tool_use",
        Some("max_tokens") => "max_tokens",
        Some("stop_sequence") => "stop_sequence",
        Some("guardrail_intervened") | Some("content_filtered") => "refusal",
        Some("model_context_window_exceeded") => "model_context_window_exceeded",
        _ => "end_turn",
    }
}

fn usage_json(usage: Usage) -> String {
    format!(
        r#"{{"input_tokens":{},"output_tokens":{},"cache_creation_input_tokens":{},"cache_read_input_tokens":{}}}"#,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_write_input_tokens,
        usage.cache_read_input_tokens
    )
}

/// A Converse citation as Anthropic's: `char_location`, `page_location` or
/// `content_block_location` for documents (by Converse's `documentChar`, `documentPage`,
/// `documentChunk`), `web_search_result_location` for the web (without Anthropic's
/// `encrypted_index`, which Bedrock does not give). `None` for a citation that locates nothing.
fn anthropic_citation(citation: &bedrock::Citation) -> Option<serde_json::Value> {
    let cited_text: String = citation
        .source_content
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let location = citation.location.as_ref()?;
    let title = citation.title.as_deref();
    let document = |kind: &str, span: &bedrock::DocumentSpan, start: &str, end: &str| {
        let mut value = serde_json::json!({
            "type": kind,
            "cited_text": cited_text,
            "document_index": span.document_index,
            "document_title": title,
        });
        if let Some(object) = value.as_object_mut() {
            object.insert(start.into(), span.start.into());
            object.insert(end.into(), span.end.into());
        }
        value
    };
    if let Some(span) = &location.document_char {
        Some(document(
            "char_location",
            span,
            "start_char_index",
            "end_char_index",
        ))
    } else if let Some(span) = &location.document_page {
        Some(document(
            "page_location",
            span,
            "start_page_number",
            "end_page_number",
        ))
    } else if let Some(span) = &location.document_chunk {
        Some(document(
            "content_block_location",
            span,
            "start_block_index",
            "end_block_index",
        ))
    } else {
        location.web.as_ref().map(|web| {
            serde_json::json!({
                "type": "web_search_result_location",
                "cited_text": cited_text,
                "url": web.url,
                "title": title,
            })
        })
    }
}

/// A Converse reply as an Anthropic `message`.
pub fn from_converse_response(
    body: &[u8],
    message_id: &str,
    model: &str,
) -> Result<TranslatedBody, GatewayError> {
    let ConverseReply {
        message,
        stop_reason: converse_stop,
        usage,
    } = ConverseReply::parse(body)?;
    let mut out = String::with_capacity(body.len() + 256);
    out.push_str(r#"{"id":"#);
    push_json_string(&mut out, &format!("msg_{message_id}"));
    out.push_str(r#","type":"message","role":"assistant","model":"#);
    push_json_string(&mut out, model);
    out.push_str(r#","content":["#);
    let mut first = true;
    for block in message.content {
        let mut piece = String::new();
        if let Some(text) = block.text {
            piece.push_str(r#"{"type":"text","text":"#);
            push_json_string(&mut piece, &text);
            if let Some(cited) = &block.citations_content {
                let citations: Vec<serde_json::Value> = cited
                    .citations
                    .iter()
                    .filter_map(anthropic_citation)
                    .collect();
                let _ = write!(
                    piece,
                    r#","citations":{}"#,
                    serde_json::Value::Array(citations)
                );
            }
            piece.push('}');
        } else if let Some(tool_use) = block.tool_use {
            piece.push_str(r#"{"type":"tool_use","id":"#);
            push_json_string(&mut piece, &tool_use.tool_use_id);
            piece.push_str(r#","name":"#);
            push_json_string(&mut piece, &tool_use.name);
            let _ = write!(piece, r#","input":{}}}"#, tool_use.input.get());
        } else if let Some(reasoning) = block.reasoning_content {
            if let Some(text) = reasoning.reasoning_text {
                piece.push_str(r#"{"type":"thinking","thinking":"#);
                push_json_string(&mut piece, &text.text);
                piece.push_str(r#","signature":"#);
                push_json_string(&mut piece, text.signature.as_deref().unwrap_or_default());
                piece.push('}');
            } else if let Some(data) = reasoning.redacted_content {
                piece.push_str(r#"{"type":"redacted_thinking","data":"#);
                push_json_string(&mut piece, &data);
                piece.push('}');
            }
        }
        if !piece.is_empty() {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&piece);
        }
    }
    let _ = write!(
        out,
        r#"],"stop_reason":"{}","stop_sequence":null,"usage":{}}}"#,
        stop_reason(converse_stop),
        usage_json(usage.unwrap_or_default())
    );
    Ok(TranslatedBody {
        body: out.into_bytes(),
        usage: usage.map(TokenUsage::from),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    ToolUse,
    Thinking,
    Redacted,
}

/// ConverseStream frames as Anthropic's SSE events: `message_start`, then for each block
/// `content_block_start` / `_delta`... / `_stop`, then `message_delta` (stop reason and
/// usage, known only from Bedrock's trailing `metadata`) and `message_stop`.
pub struct ConverseToAnthropicStream {
    decoder: Decoder,
    message_id: String,
    model: String,
    /// Converse block index -> (Anthropic index, kind) of the blocks opened so far.
    blocks: Vec<Option<(usize, OpenBlock)>>,
    next_index: usize,
    stop_reason: Option<&'static str>,
    finished: bool,
    /// The status of the error the stream ended with, if it failed.
    failure: Option<u16>,
    usage: Option<Usage>,
    first_content_emitted: bool,
}

impl ConverseToAnthropicStream {
    pub fn new(message_id: &str, model: &str, max_frame_len: usize) -> Self {
        ConverseToAnthropicStream {
            decoder: Decoder::new(max_frame_len),
            message_id: format!("msg_{message_id}"),
            model: model.to_owned(),
            blocks: Vec::new(),
            next_index: 0,
            stop_reason: None,
            finished: false,
            failure: None,
            usage: None,
            first_content_emitted: false,
        }
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        let result = match frame.headers.event_type {
            Some("messageStart") => {
                let mut data = String::with_capacity(256);
                data.push_str(r#"{"type":"message_start","message":{"id":"#);
                push_json_string(&mut data, &self.message_id);
                data.push_str(r#","type":"message","role":"assistant","model":"#);
                push_json_string(&mut data, &self.model);
                data.push_str(r#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}"#);
                write_event(out, "message_start", &data);
                Ok(())
            }
            Some("contentBlockStart") => self.on_block_start(frame.payload, out),
            Some("contentBlockDelta") => self.on_block_delta(frame.payload, out),
            Some("contentBlockStop") => {
                serde_json::from_slice::<bedrock::ContentBlockStopEvent>(frame.payload)
                    .map(|event| self.close_block(event.content_block_index, out))
                    .map_err(|e| unreadable("contentBlockStop", &e))
            }
            Some("messageStop") => {
                serde_json::from_slice::<bedrock::MessageStopEvent<'_>>(frame.payload)
                    .map(|event| {
                        self.close_all_blocks(out);
                        self.stop_reason = Some(stop_reason(event.stop_reason));
                    })
                    .map_err(|e| unreadable("messageStop", &e))
            }
            Some("metadata") => serde_json::from_slice::<bedrock::MetadataEvent>(frame.payload)
                .map(|event| {
                    self.usage = event.usage;
                    let reason = self.stop_reason.unwrap_or("end_turn");
                    self.finish(out, reason, event.usage.unwrap_or_default());
                })
                .map_err(|e| unreadable("metadata", &e)),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.fail(out, &error);
        }
    }

    fn slot(
        &mut self,
        converse_index: usize,
    ) -> Result<&mut Option<(usize, OpenBlock)>, GatewayError> {
        if converse_index > 4096 {
            return Err(GatewayError::upstream(
                "Bedrock streamed a content block index beyond 4096.",
            ));
        }
        if converse_index >= self.blocks.len() {
            self.blocks.resize(converse_index + 1, None);
        }
        self.blocks
            .get_mut(converse_index)
            .ok_or_else(|| GatewayError::upstream("content block index out of range"))
    }

    fn open_block(
        &mut self,
        converse_index: usize,
        kind: OpenBlock,
        content_block_json: &str,
        out: &mut Vec<u8>,
    ) -> Result<usize, GatewayError> {
        let index = self.next_index;
        *self.slot(converse_index)? = Some((index, kind));
        self.next_index += 1;
        let data = format!(
            r#"{{"type":"content_block_start","index":{index},"content_block":{content_block_json}}}"#
        );
        write_event(out, "content_block_start", &data);
        Ok(index)
    }

    fn on_block_start(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockStartEvent<'_> =
            serde_json::from_slice(payload).map_err(|e| unreadable("contentBlockStart", &e))?;
        if let Some(tool_use) = event.start.and_then(|s| s.tool_use) {
            let mut block = String::from(r#"{"type":"tool_use","id":"#);
            push_json_string(&mut block, &tool_use.tool_use_id);
            block.push_str(r#","name":"#);
            push_json_string(&mut block, &tool_use.name);
            block.push_str(r#","input":{}}"#);
            self.open_block(event.content_block_index, OpenBlock::ToolUse, &block, out)?;
            self.first_content_emitted = true;
        }
        Ok(())
    }

    /// The Anthropic index of a block, opening it first if Converse sent no start event.
    fn ensure_open(
        &mut self,
        converse_index: usize,
        kind: OpenBlock,
        start_json: &str,
        out: &mut Vec<u8>,
    ) -> Result<usize, GatewayError> {
        match *self.slot(converse_index)? {
            Some((index, open)) if open == kind => Ok(index),
            Some(_) => {
                self.close_block(converse_index, out);
                self.open_block(converse_index, kind, start_json, out)
            }
            None => self.open_block(converse_index, kind, start_json, out),
        }
    }

    fn on_block_delta(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockDeltaEvent<'_> =
            serde_json::from_slice(payload).map_err(|e| unreadable("contentBlockDelta", &e))?;
        let Some(delta) = event.delta else {
            return Ok(());
        };
        let at = event.content_block_index;
        let mut data = String::new();
        if let Some(text) = delta.text {
            let index =
                self.ensure_open(at, OpenBlock::Text, r#"{"type":"text","text":""}"#, out)?;
            let _ = write!(
                data,
                r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":"#
            );
            push_json_string(&mut data, &text);
            data.push_str("}}");
        } else if let Some(tool_use) = delta.tool_use {
            let index = match *self.slot(at)? {
                Some((index, OpenBlock::ToolUse)) => index,
                _ => {
                    return Err(GatewayError::upstream(
                        "Bedrock streamed tool input for a block that is not a tool call.",
                    ))
                }
            };
            let _ = write!(
                data,
                r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"input_json_delta","partial_json":"#
            );
            push_json_string(&mut data, &tool_use.input);
            data.push_str("}}");
        } else if let Some(citation) = delta.citation {
            let Some(citation) = anthropic_citation(&citation) else {
                return Ok(());
            };
            let index =
                self.ensure_open(at, OpenBlock::Text, r#"{"type":"text","text":""}"#, out)?;
            let _ = write!(
                data,
                r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"citations_delta","citation":{citation}}}}}"#
            );
        } else if let Some(reasoning) = delta.reasoning_content {
            if let Some(redacted) = reasoning.redacted_content {
                let mut block = String::from(r#"{"type":"redacted_thinking","data":"#);
                push_json_string(&mut block, &redacted);
                block.push('}');
                self.open_block(at, OpenBlock::Redacted, &block, out)?;
                return Ok(());
            }
            let index = self.ensure_open(
                at,
                OpenBlock::Thinking,
                r#"{"type":"thinking","thinking":"","signature":""}"#,
                out,
            )?;
            if let Some(text) = reasoning.text {
                let _ = write!(
                    data,
                    r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"thinking_delta","thinking":"#
                );
                push_json_string(&mut data, &text);
                data.push_str("}}");
            } else if let Some(signature) = reasoning.signature {
                let _ = write!(
                    data,
                    r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"signature_delta","signature":"#
                );
                push_json_string(&mut data, &signature);
                data.push_str("}}");
            }
        }
        if !data.is_empty() {
            write_event(out, "content_block_delta", &data);
            self.first_content_emitted = true;
        }
        Ok(())
    }

    fn close_block(&mut self, converse_index: usize, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.blocks.get_mut(converse_index).and_then(Option::take) {
            write_event(
                out,
                "content_block_stop",
                &format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
            );
        }
    }

    fn close_all_blocks(&mut self, out: &mut Vec<u8>) {
        for converse_index in 0..self.blocks.len() {
            self.close_block(converse_index, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str, usage: Usage) {
        self.close_all_blocks(out);
        let data = format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{reason}","stop_sequence":null}},"usage":{}}}"#,
            usage_json(usage)
        );
        write_event(out, "message_delta", &data);
        write_event(out, "message_stop", r#"{"type":"message_stop"}"#);
        self.finished = true;
    }
}

impl FrameTranslator for ConverseToAnthropicStream {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn usage(&self) -> Option<crate::translated::TokenUsage> {
        self.usage.map(crate::translated::TokenUsage::from)
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        self.handle_event(frame, out);
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        self.failure = Some(error.status);
        let body = String::from_utf8_lossy(&error.to_json(ApiFormat::Anthropic)).into_owned();
        write_event(out, "error", &body);
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        match self.stop_reason {
            // Bedrock always sends metadata last; without it, end with what is known.
            Some(reason) => self.finish(out, reason, Usage::default()),
            None => self.fail(out, &GatewayError::stream_ended_early()),
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn failure(&self) -> Option<u16> {
        self.failure
    }
}

fn write_event(out: &mut Vec<u8>, kind: &str, data: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn unreadable(event: &str, error: &serde_json::Error) -> GatewayError {
    GatewayError::upstream(format!("Bedrock sent an unreadable {event} event: {error}"))
}

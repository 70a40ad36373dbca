//! OpenAI Chat Completions <-> Bedrock Converse.

pub mod on_bedrock;

use crate::bedrock::eventstream::{Decoder, Frame, FrameTranslator};
use crate::bedrock::{
    self, CachePoint, ContentBlock, ConverseReply, ConverseRequest, Document, DocumentSource,
    Empty, Image, ImageSource, InferenceConfig, InputSchema, JsonSchemaDefinition, Message,
    NamedTool, OutputConfig, OutputFormat, OutputFormatStructure, ReasoningContent, ReasoningText,
    Role, SystemBlock, Tool, ToolChoice, ToolConfig, ToolResult, ToolResultContent, ToolSpec,
    Usage,
};
use crate::errors::GatewayError;
use crate::json::push_json_string;
use crate::translated::{TokenUsage, TranslatedBody};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write as _;

// ---- Request ----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub messages: Vec<ChatMessage<'a>>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(borrow, default)]
    pub stop: Option<Stop<'a>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<ChatTool<'a>>>,
    #[serde(borrow, default)]
    pub tool_choice: Option<ChatToolChoice<'a>>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `auto`, or Bedrock's tier of the same name (`default`, `flex`, `priority`).
    #[serde(borrow, default)]
    pub service_tier: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub response_format: Option<ResponseFormat<'a>>,
    #[serde(borrow, default)]
    pub reasoning_effort: Option<Cow<'a, str>>,
    /// Extension: Anthropic-style `{"type": "enabled", "budget_tokens": N}`, passed to the model.
    #[serde(borrow, default)]
    pub thinking: Option<&'a RawValue>,
    // Parameters Bedrock cannot honour; rejected when they would change the result.
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(borrow, default)]
    pub audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub modalities: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(borrow, default)]
    pub logit_bias: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage<'a> {
    pub role: ChatRole,
    /// A string or an array of parts, or null; parsed on use so that it can stay borrowed.
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    pub tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Signed reasoning from an earlier response, sent back so multi-turn thinking continues.
    #[serde(borrow, default)]
    pub thinking_blocks: Option<Vec<ThinkingBlock<'a>>>,
}

#[derive(Debug, Deserialize)]
pub struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub image_url: Option<ImageUrl<'a>>,
    #[serde(borrow, default)]
    pub file: Option<FilePart<'a>>,
    #[serde(default)]
    pub cache_control: Option<CacheControl>,
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct FilePart<'a> {
    #[serde(borrow, default)]
    pub file_data: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub filename: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub file_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct CacheControl {}

#[derive(Debug, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub arguments: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct ThinkingBlock<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatTool<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub function: Option<FunctionDefinition<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDefinition<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub parameters: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ChatToolChoice<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Named {
        #[serde(borrow)]
        function: NamedFunction<'a>,
    },
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub json_schema: Option<JsonSchemaFormat<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub schema: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

impl ChatCompletionRequest<'_> {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

pub fn parse_request(body: &[u8]) -> Result<ChatCompletionRequest<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    crate::json::path::from_slice(body)
        .map_err(|e| invalid(format!("Invalid chat completion request: {e}")))
}

/// Rejects parameters whose effect Bedrock cannot reproduce, instead of silently ignoring them.
fn reject_unsupported(request: &ChatCompletionRequest<'_>) -> Result<(), GatewayError> {
    let unsupported = |what: &str| {
        Err(invalid(format!(
            "{what} is not supported by Bedrock through this gateway."
        )))
    };
    if request.n.is_some_and(|n| n > 1) {
        return unsupported("`n` greater than 1");
    }
    if request.logprobs == Some(true) || request.top_logprobs.is_some() {
        return unsupported("`logprobs`");
    }
    if request.audio.is_some_and(|a| a.get() != "null")
        || request
            .modalities
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x != "text"))
    {
        return unsupported("Audio output");
    }
    if request.presence_penalty.is_some_and(|p| p != 0.0)
        || request.frequency_penalty.is_some_and(|p| p != 0.0)
    {
        return unsupported("`presence_penalty` / `frequency_penalty`");
    }
    if request
        .logit_bias
        .is_some_and(|b| !matches!(b.get().trim(), "null" | "{}"))
    {
        return unsupported("`logit_bias`");
    }
    check_sampling(request.temperature, request.top_p)
}

/// OpenAI's ranges for `temperature` and `top_p`, in both of its APIs.
pub(crate) fn check_sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
) -> Result<(), GatewayError> {
    for (name, value, range) in [
        ("temperature", temperature, 0.0..=2.0),
        ("top_p", top_p, 0.0..=1.0),
    ] {
        if let Some(v) = value.filter(|v| !range.contains(v)) {
            return Err(invalid(format!(
                "`{name}` must be between {} and {}, got {v}.",
                range.start(),
                range.end()
            )));
        }
    }
    Ok(())
}

/// Translates a parsed request into a Converse body borrowing the request's text.
pub fn to_converse<'r>(
    request: &'r ChatCompletionRequest<'_>,
) -> Result<ConverseRequest<'r>, GatewayError> {
    reject_unsupported(request)?;
    if request.messages.is_empty() {
        return Err(invalid("`messages` must contain at least one message."));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Message<'r>> = Vec::with_capacity(request.messages.len());
    let mut uses_tools = false;
    for (index, message) in request.messages.iter().enumerate() {
        let at = |what: &str| format!("messages[{index}]{what}");
        match message.role {
            ChatRole::System | ChatRole::Developer => {
                for block in content_blocks(message.content, &at(".content"), Role::User)? {
                    match block {
                        ContentBlock::Text(text) => system.push(SystemBlock::Text(text)),
                        ContentBlock::CachePoint(point) => {
                            system.push(SystemBlock::CachePoint(point))
                        }
                        _ => return Err(invalid(at(": system messages may only contain text"))),
                    }
                }
            }
            ChatRole::User => {
                let content = content_blocks(message.content, &at(".content"), Role::User)?;
                bedrock::push_turn(&mut messages, Role::User, content);
            }
            ChatRole::Assistant => {
                let mut content = reasoning_blocks(message);
                content.extend(content_blocks(
                    message.content,
                    &at(".content"),
                    Role::Assistant,
                )?);
                for (call_index, call) in message.tool_calls.iter().flatten().enumerate() {
                    let arguments = if call.function.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        call.function.arguments.as_ref()
                    };
                    let input = RawValue::from_string(arguments.to_owned()).map_err(|e| {
                        invalid(format!("messages[{index}].tool_calls[{call_index}].function.arguments is not valid JSON: {e}"))
                    })?;
                    uses_tools = true;
                    content.push(ContentBlock::ToolUse(bedrock::ToolUse {
                        tool_use_id: Cow::Borrowed(call.id.as_ref()),
                        name: Cow::Borrowed(call.function.name.as_ref()),
                        input,
                    }));
                }
                bedrock::push_turn(&mut messages, Role::Assistant, content);
            }
            ChatRole::Tool => {
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| invalid(at(": a tool message needs `tool_call_id`")))?;
                let mut result_content = Vec::new();
                for block in content_blocks(message.content, &at(".content"), Role::User)? {
                    match block {
                        ContentBlock::Text(text) => {
                            result_content.push(ToolResultContent::Text(text))
                        }
                        ContentBlock::Image(image) => {
                            result_content.push(ToolResultContent::Image(image))
                        }
                        _ => {}
                    }
                }
                if result_content.is_empty() {
                    result_content.push(ToolResultContent::Text(Cow::Borrowed("")));
                }
                uses_tools = true;
                // Consecutive tool messages merge into one user turn.
                let result = ToolResult {
                    tool_use_id: Cow::Borrowed(id),
                    content: result_content,
                    status: None,
                };
                bedrock::push_turn(
                    &mut messages,
                    Role::User,
                    vec![ContentBlock::ToolResult(result)],
                );
            }
            ChatRole::Function => {
                return Err(invalid(at(
                    ": the deprecated `function` role is not supported; use `tool`",
                )));
            }
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one user or assistant message with content.",
        ));
    }

    let stop_sequences = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_ref()],
        Some(Stop::Many(list)) => list.iter().map(Cow::as_ref).collect(),
    };
    let mut additional = serde_json::Map::new();
    if let Some(thinking) = request.thinking {
        let value: serde_json::Value =
            serde_json::from_str(thinking.get()).map_err(|e| invalid(format!("thinking: {e}")))?;
        additional.insert("thinking".into(), value);
    } else if let Some(effort) = request.reasoning_effort.as_deref() {
        add_reasoning_effort(
            &request.model,
            effort,
            request.max_completion_tokens.or(request.max_tokens),
            &mut additional,
        )?;
    }
    Ok(ConverseRequest {
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens: request.max_completion_tokens.or(request.max_tokens),
            temperature: request.temperature,
            top_p: request.top_p,
            stop_sequences,
        },
        tool_config: tool_config(request, uses_tools)?,
        additional_model_request_fields: additional,
        output_config: output_config(request.response_format.as_ref())?,
        options: Default::default(),
    })
}

/// Thinking budgets for `reasoning_effort` on models that take an explicit budget (Claude).
fn thinking_budget(effort: &str) -> Option<u32> {
    match effort {
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        _ => None,
    }
}

/// `reasoning_effort` in the form each model family on Bedrock understands.
pub(crate) fn add_reasoning_effort(
    model: &str,
    effort: &str,
    max_tokens: Option<u32>,
    additional: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), GatewayError> {
    let budget = thinking_budget(effort).ok_or_else(|| {
        invalid(format!(
            "`reasoning_effort` must be minimal, low, medium or high, got {effort:?}."
        ))
    })?;
    let lower = model.to_ascii_lowercase();
    if lower.contains("claude") {
        if max_tokens.is_some_and(|max| max <= budget) {
            return Err(invalid(format!(
                "`reasoning_effort` {effort} gives a thinking budget of {budget} tokens; `max_completion_tokens` must be larger."
            )));
        }
        additional.insert(
            "thinking".into(),
            serde_json::json!({ "type": "enabled", "budget_tokens": budget }),
        );
    } else if lower.contains("nova") {
        let nova_effort = if effort == "minimal" { "low" } else { effort };
        additional.insert(
            "reasoningConfig".into(),
            serde_json::json!({ "type": "enabled", "maxReasoningEffort": nova_effort }),
        );
    } else {
        additional.insert(
            "reasoning_effort".into(),
            serde_json::Value::String(effort.to_owned()),
        );
    }
    Ok(())
}

fn tool_config<'r>(
    request: &'r ChatCompletionRequest<'_>,
    history_uses_tools: bool,
) -> Result<Option<ToolConfig<'r>>, GatewayError> {
    let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) else {
        if let Some(ChatToolChoice::Named { .. })
        | Some(ChatToolChoice::Mode(Cow::Borrowed("required"))) = &request.tool_choice
        {
            return Err(invalid("`tool_choice` names a tool but `tools` is empty."));
        }
        return Ok(None);
    };
    let choice = match &request.tool_choice {
        None => None,
        Some(ChatToolChoice::Mode(mode)) => match tool_choice_mode(mode, history_uses_tools)? {
            ToolMode::Send(choice) => choice,
            ToolMode::NoTools => return Ok(None),
        },
        Some(ChatToolChoice::Named { function }) => Some(ToolChoice::Tool(NamedTool {
            name: Cow::Borrowed(function.name.as_ref()),
        })),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let function = match (tool.kind.as_ref(), &tool.function) {
            ("function", Some(function)) => function,
            (kind, _) => {
                return Err(invalid(format!(
                    "tools[{index}]: only function tools are supported, got {kind:?}."
                )))
            }
        };
        let schema = match function.parameters {
            Some(parameters) => RawValue::from_string(parameters.get().to_owned()),
            None => RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_owned()),
        }
        .map_err(|e| invalid(format!("tools[{index}].function.parameters: {e}")))?;
        specs.push(Tool::ToolSpec(ToolSpec {
            name: Cow::Borrowed(function.name.as_ref()),
            description: function.description.as_deref().map(Cow::Borrowed),
            input_schema: InputSchema { json: schema },
        }));
    }
    Ok(Some(ToolConfig {
        tools: specs,
        tool_choice: choice,
    }))
}

/// What OpenAI's `tool_choice` modes ask of Bedrock, in both of its APIs.
pub(crate) enum ToolMode {
    /// Send the tools, with this choice (`None`: the model decides).
    Send(Option<ToolChoice<'static>>),
    /// Send no tools at all.
    NoTools,
}

pub(crate) fn tool_choice_mode(
    mode: &str,
    history_uses_tools: bool,
) -> Result<ToolMode, GatewayError> {
    match mode {
        "auto" => Ok(ToolMode::Send(Some(ToolChoice::Auto(Empty {})))),
        "required" => Ok(ToolMode::Send(Some(ToolChoice::Any(Empty {})))),
        // Bedrock has no "none": send no tools, unless the history holds tool calls,
        // which Bedrock only accepts with the tool definitions present.
        "none" if history_uses_tools => Ok(ToolMode::Send(None)),
        "none" => Ok(ToolMode::NoTools),
        other => Err(invalid(format!(
            "`tool_choice` {other:?} is not one of none, auto, required."
        ))),
    }
}

pub(crate) fn output_config(
    format: Option<&ResponseFormat<'_>>,
) -> Result<Option<OutputConfig>, GatewayError> {
    let Some(format) = format else {
        return Ok(None);
    };
    let (schema, name, description) = match format.kind.as_ref() {
        "text" => return Ok(None),
        // JSON mode: any JSON object.
        "json_object" => (
            r#"{"type":"object"}"#.to_owned(),
            "json_object".to_owned(),
            None,
        ),
        "json_schema" => {
            let spec = format
                .json_schema
                .as_ref()
                .ok_or_else(|| invalid("`response_format.json_schema` is required."))?;
            let schema = spec
                .schema
                .ok_or_else(|| invalid("`response_format.json_schema.schema` is required."))?;
            (
                schema.get().to_owned(),
                spec.name.as_deref().unwrap_or("response").to_owned(),
                spec.description.as_deref().map(str::to_owned),
            )
        }
        other => {
            return Err(invalid(format!(
                "`response_format` type {other:?} is not supported."
            )))
        }
    };
    Ok(Some(OutputConfig {
        text_format: OutputFormat {
            kind: "json_schema",
            structure: OutputFormatStructure {
                json_schema: JsonSchemaDefinition {
                    schema,
                    name,
                    description,
                },
            },
        },
    }))
}

/// Earlier reasoning sent back by the caller, signatures included.
fn reasoning_blocks<'r>(message: &'r ChatMessage<'_>) -> Vec<ContentBlock<'r>> {
    if let Some(blocks) = &message.thinking_blocks {
        return blocks
            .iter()
            .filter_map(
                |block| match (block.kind.as_ref(), &block.thinking, &block.data) {
                    ("thinking", Some(text), _) => Some(ContentBlock::ReasoningContent(
                        ReasoningContent::ReasoningText(ReasoningText {
                            text: Cow::Borrowed(text.as_ref()),
                            signature: block.signature.as_deref().map(Cow::Borrowed),
                        }),
                    )),
                    ("redacted_thinking", _, Some(data)) => Some(ContentBlock::ReasoningContent(
                        ReasoningContent::RedactedContent(Cow::Borrowed(data.as_ref())),
                    )),
                    _ => None,
                },
            )
            .collect();
    }
    // Reasoning text without a signature cannot be verified by the model: it is dropped.
    Vec::new()
}

/// Message content as both OpenAI APIs send it: a string (or null), already a text block, or a
/// list of parts of the API's own kind `P`, parsed borrowing the body.
pub(crate) enum TextOrParts<'r, P> {
    Blocks(Vec<ContentBlock<'r>>),
    Parts(Vec<P>),
}

pub(crate) fn text_or_parts<'r, P: Deserialize<'r>>(
    content: Option<&'r RawValue>,
    at: &str,
) -> Result<TextOrParts<'r, P>, GatewayError> {
    let Some(raw) = content else {
        return Ok(TextOrParts::Blocks(Vec::new()));
    };
    let text = raw.get().trim_start();
    if text.starts_with('"') {
        let content: Cow<'r, str> =
            serde_json::from_str(raw.get()).map_err(|e| invalid(format!("{at}: {e}")))?;
        return Ok(TextOrParts::Blocks(if content.is_empty() {
            Vec::new()
        } else {
            vec![ContentBlock::Text(content)]
        }));
    }
    if text.starts_with("null") {
        return Ok(TextOrParts::Blocks(Vec::new()));
    }
    serde_json::from_str(raw.get())
        .map(TextOrParts::Parts)
        .map_err(|e| {
            invalid(format!(
                "{at} must be a string or a list of content parts: {e}"
            ))
        })
}

/// The content of a message: a string, or an array of parts.
fn content_blocks<'r>(
    content: Option<&'r RawValue>,
    at: &str,
    role: Role,
) -> Result<Vec<ContentBlock<'r>>, GatewayError> {
    let parts: Vec<ContentPart<'r>> = match text_or_parts(content, at)? {
        TextOrParts::Blocks(blocks) => return Ok(blocks),
        TextOrParts::Parts(parts) => parts,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        match part.kind.as_ref() {
            "text" => match part.text {
                Some(text) if text.is_empty() => {}
                Some(text) => blocks.push(ContentBlock::Text(text)),
                None => return Err(invalid(format!("{at}: a text part needs a `text` string."))),
            },
            "image_url" if role == Role::User => {
                let url = part.image_url.ok_or_else(|| {
                    invalid(format!("{at}: an image_url part needs `image_url.url`."))
                })?;
                blocks.push(ContentBlock::Image(image_from_data_url(url.url, &at)?));
            }
            "file" if role == Role::User => {
                let file = part
                    .file
                    .ok_or_else(|| invalid(format!("{at}: a file part needs `file`.")))?;
                blocks.push(ContentBlock::Document(document_from_file(file, &at)?));
            }
            "refusal" if role == Role::Assistant => {}
            "input_audio" => {
                return Err(invalid(format!(
                    "{at}: audio input is not supported by Bedrock Converse."
                )))
            }
            other => {
                return Err(invalid(format!(
                    "{at}: content parts of type `{other}` are not supported here."
                )))
            }
        }
        if part.cache_control.is_some() {
            blocks.push(ContentBlock::CachePoint(CachePoint::default()));
        }
    }
    Ok(blocks)
}

/// Splits `data:<media type>;base64,<data>`.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

pub(crate) fn image_from_data_url<'r>(
    url: Cow<'r, str>,
    at: &str,
) -> Result<Image<'r>, GatewayError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(invalid(format!(
            "{at}: image URLs are not fetched by the gateway; send the image inline as a data URL (data:image/png;base64,...)."
        )));
    }
    let (media_type, data) = parse_data_url(&url)
        .ok_or_else(|| invalid(format!("{at}: expected a base64 data URL.")))?;
    let format = bedrock::image_format(media_type).ok_or_else(|| {
        invalid(format!(
            "{at}: image type {media_type:?} is not supported; use png, jpeg, gif or webp."
        ))
    })?;
    let data_start = url.len() - data.len();
    let bytes = match url {
        Cow::Borrowed(whole) => Cow::Borrowed(whole.get(data_start..).unwrap_or_default()),
        Cow::Owned(whole) => Cow::Owned(whole.get(data_start..).unwrap_or_default().to_owned()),
    };
    Ok(Image {
        format,
        source: ImageSource { bytes },
    })
}

pub(crate) fn document_from_file<'r>(
    file: FilePart<'r>,
    at: &str,
) -> Result<Document<'r>, GatewayError> {
    if file.file_id.is_some() && file.file_data.is_none() {
        return Err(invalid(format!(
            "{at}: uploaded file ids are not supported; send `file_data` inline."
        )));
    }
    let data_url = file
        .file_data
        .ok_or_else(|| invalid(format!("{at}: a file part needs `file_data`.")))?;
    let (media_type, data) = parse_data_url(&data_url)
        .ok_or_else(|| invalid(format!("{at}: `file_data` must be a base64 data URL.")))?;
    let format = bedrock::document_format(media_type).ok_or_else(|| {
        invalid(format!(
            "{at}: document type {media_type:?} is not supported by Bedrock."
        ))
    })?;
    let name = bedrock::document_name(file.filename.as_deref().unwrap_or("document"));
    Ok(Document {
        format,
        name,
        source: DocumentSource {
            bytes: Cow::Owned(data.to_owned()),
        },
        citations: None,
    })
}

// ---- Response ---------------------------------------------------------------------------

/// What the response needs to know about the request.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// Without the `chatcmpl-` prefix.
    pub id: String,
    /// The model the caller asked for.
    pub model: String,
    pub created: u64,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thinking_blocks: Vec<ThinkingBlockOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ThinkingBlockOut<'a> {
    Thinking {
        thinking: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<Cow<'a, str>>,
    },
    RedactedThinking {
        data: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: Cow<'a, str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    /// Tokens written to the prompt cache by this request (Bedrock's cacheWriteInputTokens).
    cache_write_tokens: u64,
}

impl From<Usage> for UsageOut {
    // Bedrock counts cached input apart from inputTokens; OpenAI's prompt_tokens includes it.
    fn from(u: Usage) -> Self {
        let prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens;
        let cached = u.cache_read_input_tokens > 0 || u.cache_write_input_tokens > 0;
        UsageOut {
            prompt_tokens: prompt,
            completion_tokens: u.output_tokens,
            total_tokens: prompt + u.output_tokens,
            prompt_tokens_details: cached.then_some(PromptTokensDetails {
                cached_tokens: u.cache_read_input_tokens,
                cache_write_tokens: u.cache_write_input_tokens,
            }),
        }
    }
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Renders a Converse response as a `chat.completion`: text, tool calls and reasoning, none lost.
pub fn from_converse_response(
    body: &[u8],
    context: &ResponseContext,
) -> Result<TranslatedBody, GatewayError> {
    let ConverseReply {
        message,
        stop_reason,
        usage,
    } = ConverseReply::parse(body)?;
    let mut texts: Vec<Cow<'_, str>> = Vec::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        if let Some(text) = block.text {
            texts.push(text);
        }
        if let Some(tool_use) = block.tool_use {
            tool_calls.push(ToolCallOut {
                id: tool_use.tool_use_id,
                kind: "function",
                function: FunctionOut {
                    name: tool_use.name,
                    arguments: tool_use.input.get(),
                },
            });
        }
        if let Some(reasoning_block) = block.reasoning_content {
            if let Some(text) = reasoning_block.reasoning_text {
                reasoning.push_str(&text.text);
                thinking_blocks.push(ThinkingBlockOut::Thinking {
                    thinking: text.text,
                    signature: text.signature,
                });
            }
            if let Some(data) = reasoning_block.redacted_content {
                thinking_blocks.push(ThinkingBlockOut::RedactedThinking { data });
            }
        }
    }
    let content = match texts.len() {
        0 => None,
        1 => texts.pop(),
        _ => Some(Cow::Owned(texts.concat())),
    };
    let completion = ChatCompletion {
        id: format!("chatcmpl-{}", context.id),
        object: "chat.completion",
        created: context.created,
        model: &context.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                reasoning_content: (!thinking_blocks.is_empty()).then_some(reasoning),
                thinking_blocks,
                tool_calls,
            },
            finish_reason: finish_reason(stop_reason),
            logprobs: None,
        }],
        usage: usage.unwrap_or_default().into(),
    };
    let body = serde_json::to_vec(&completion).map_err(|e| {
        GatewayError::upstream(format!("could not render the chat completion: {e}"))
    })?;
    Ok(TranslatedBody {
        body,
        usage: usage.map(TokenUsage::from),
    })
}

// ---- Streaming --------------------------------------------------------------------------

/// What a Converse content block index streams as.
#[derive(Debug, Clone)]
enum StreamBlock {
    Text,
    /// A tool call, with its dense OpenAI `index`.
    ToolCall(usize),
    /// Reasoning, accumulated so that the signed block can be returned whole at its end.
    Reasoning {
        text: String,
        signature: Option<String>,
    },
}

/// Turns a ConverseStream event stream into OpenAI `chat.completion.chunk` SSE events,
/// one body chunk at a time.
pub struct ChatStreamTranslator {
    decoder: Decoder,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":` rendered once.
    chunk_prefix: String,
    include_usage: bool,
    blocks: Vec<Option<StreamBlock>>,
    tool_calls_seen: usize,
    saw_message_stop: bool,
    finished: bool,
    usage: Option<Usage>,
    first_content_emitted: bool,
}

impl ChatStreamTranslator {
    pub fn new(context: &ResponseContext, include_usage: bool, max_frame_len: usize) -> Self {
        let mut chunk_prefix = String::with_capacity(128);
        chunk_prefix.push_str("{\"id\":");
        push_json_string(&mut chunk_prefix, &format!("chatcmpl-{}", context.id));
        let _ = write!(
            chunk_prefix,
            ",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":",
            context.created
        );
        push_json_string(&mut chunk_prefix, &context.model);
        chunk_prefix.push_str(",\"choices\":");
        ChatStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            chunk_prefix,
            include_usage,
            blocks: Vec::new(),
            tool_calls_seen: 0,
            saw_message_stop: false,
            finished: false,
            usage: None,
            first_content_emitted: false,
        }
    }

    fn block(&mut self, index: usize) -> Option<&mut Option<StreamBlock>> {
        if index >= self.blocks.len() {
            // Block indexes are small and dense; refuse absurd ones rather than allocate.
            if index > 4096 {
                return None;
            }
            self.blocks.resize(index + 1, None);
        }
        self.blocks.get_mut(index)
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        let result = match frame.headers.event_type {
            Some("messageStart") => {
                self.emit_delta(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
                Ok(())
            }
            Some("contentBlockStart") => self.on_block_start(frame.payload, out),
            Some("contentBlockDelta") => self.on_block_delta(frame.payload, out),
            Some("contentBlockStop") => self.on_block_stop(frame.payload, out),
            Some("messageStop") => {
                serde_json::from_slice::<bedrock::MessageStopEvent<'_>>(frame.payload)
                    .map(|event| {
                        self.saw_message_stop = true;
                        self.emit_delta(out, "{}", Some(finish_reason(event.stop_reason)));
                    })
                    .map_err(|e| unreadable_event("messageStop", &e))
            }
            Some("metadata") => serde_json::from_slice::<bedrock::MetadataEvent>(frame.payload)
                .map(|event| {
                    self.usage = event.usage;
                    if !self.include_usage {
                        return;
                    }
                    let usage = UsageOut::from(event.usage.unwrap_or_default());
                    if let Ok(usage) = serde_json::to_string(&usage) {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(self.chunk_prefix.as_bytes());
                        out.extend_from_slice(b"[],\"usage\":");
                        out.extend_from_slice(usage.as_bytes());
                        out.extend_from_slice(b"}\n\n");
                    }
                })
                .map_err(|e| unreadable_event("metadata", &e)),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.fail(out, &error);
        }
    }

    fn on_block_start(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockStartEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockStart", &e))?;
        let Some(tool_use) = event.start.and_then(|s| s.tool_use) else {
            return Ok(());
        };
        let call_index = self.tool_calls_seen;
        self.tool_calls_seen += 1;
        *self
            .block(event.content_block_index)
            .ok_or_else(too_many_blocks)? = Some(StreamBlock::ToolCall(call_index));
        let mut delta = String::with_capacity(96 + tool_use.name.len());
        let _ = write!(delta, "{{\"tool_calls\":[{{\"index\":{call_index},\"id\":");
        push_json_string(&mut delta, &tool_use.tool_use_id);
        delta.push_str(",\"type\":\"function\",\"function\":{\"name\":");
        push_json_string(&mut delta, &tool_use.name);
        delta.push_str(",\"arguments\":\"\"}}]}");
        self.emit_delta(out, &delta, None);
        self.first_content_emitted = true;
        Ok(())
    }

    fn on_block_delta(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockDeltaEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockDelta", &e))?;
        let Some(delta) = event.delta else {
            return Ok(());
        };
        let slot = self
            .block(event.content_block_index)
            .ok_or_else(too_many_blocks)?;
        // Room for the delta and its escapes at once: growing it step by step cost about a tenth
        // of a delta's translation (callgrind).
        let mut json = String::with_capacity(64 + payload.len());
        if let Some(text) = delta.text {
            slot.get_or_insert(StreamBlock::Text);
            json.push_str("{\"content\":");
            push_json_string(&mut json, &text);
            json.push('}');
        } else if let Some(tool_use) = delta.tool_use {
            let Some(StreamBlock::ToolCall(call_index)) = slot else {
                return Err(GatewayError::upstream(
                    "Bedrock streamed tool input for a block that is not a tool call.",
                ));
            };
            let _ = write!(
                json,
                "{{\"tool_calls\":[{{\"index\":{call_index},\"function\":{{\"arguments\":"
            );
            push_json_string(&mut json, &tool_use.input);
            json.push_str("}}]}");
        } else if let Some(reasoning) = delta.reasoning_content {
            if !matches!(slot, Some(StreamBlock::Reasoning { .. })) {
                *slot = Some(StreamBlock::Reasoning {
                    text: String::new(),
                    signature: None,
                });
            }
            if let Some(StreamBlock::Reasoning {
                text: accumulated,
                signature,
            }) = slot
            {
                if let Some(text) = reasoning.text {
                    accumulated.push_str(&text);
                    json.push_str("{\"reasoning_content\":");
                    push_json_string(&mut json, &text);
                    json.push('}');
                }
                if let Some(new_signature) = reasoning.signature {
                    *signature = Some(new_signature.into_owned());
                }
                if let Some(data) = reasoning.redacted_content {
                    json.push_str(
                        "{\"thinking_blocks\":[{\"type\":\"redacted_thinking\",\"data\":",
                    );
                    push_json_string(&mut json, &data);
                    json.push_str("}]}");
                }
            }
        }
        if !json.is_empty() {
            self.emit_delta(out, &json, None);
            self.first_content_emitted = true;
        }
        Ok(())
    }

    /// At the end of a reasoning block, the whole signed block is sent so callers can return it.
    fn on_block_stop(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockStopEvent = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockStop", &e))?;
        let finished_block = self
            .blocks
            .get_mut(event.content_block_index)
            .and_then(Option::take);
        if let Some(StreamBlock::Reasoning { text, signature }) = finished_block {
            let mut json = String::with_capacity(text.len() + 96);
            json.push_str("{\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":");
            push_json_string(&mut json, &text);
            if let Some(signature) = signature {
                json.push_str(",\"signature\":");
                push_json_string(&mut json, &signature);
            }
            json.push_str("}]}");
            self.emit_delta(out, &json, None);
        }
        Ok(())
    }

    fn emit_delta(&self, out: &mut Vec<u8>, delta_json: &str, finish_reason: Option<&str>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(self.chunk_prefix.as_bytes());
        out.extend_from_slice(b"[{\"index\":0,\"delta\":");
        out.extend_from_slice(delta_json.as_bytes());
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish_reason {
            Some(reason) => {
                out.push(b'"');
                out.extend_from_slice(reason.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }
}

impl FrameTranslator for ChatStreamTranslator {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Bedrock's usage from the stream's `metadata` event, once it has arrived.
    fn usage(&self) -> Option<crate::translated::TokenUsage> {
        self.usage.map(crate::translated::TokenUsage::from)
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        self.handle_event(frame, out);
    }

    /// Ends the client's stream with an OpenAI error event; the SDK raises `APIError` on it.
    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error.to_openai_json());
        out.extend_from_slice(b"\n\n");
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        if self.saw_message_stop {
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.finished = true;
        } else {
            self.fail(out, &GatewayError::stream_ended_early());
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

pub(crate) fn too_many_blocks() -> GatewayError {
    GatewayError::upstream("Bedrock streamed a content block index beyond 4096.")
}

pub(crate) fn unreadable_event(event: &str, error: &serde_json::Error) -> GatewayError {
    GatewayError::upstream(format!("Bedrock sent an unreadable {event} event: {error}"))
}

//! OpenAI Responses API (`POST /v1/responses`) <-> Bedrock Converse / ConverseStream.
//!
//! The gateway keeps no state. A request carries the whole conversation (Codex and the Agents SDK
//! send it that way with `store: false`), and the reasoning Bedrock must see again on a later turn
//! (Claude's signed thinking) travels to the caller and back in a reasoning item's
//! `encrypted_content`. What would need stored responses is refused by name, never ignored.

use crate::api::openai::{self, FilePart, JsonSchemaFormat, ResponseFormat, TextOrParts, ToolMode};
use crate::api::tool_names::{self, RenamedTool, ToolKind, ToolNames};
use crate::bedrock::eventstream::{Decoder, Frame, FrameTranslator};
use crate::bedrock::{
    self, ContentBlock, ConverseReply, ConverseRequest, InferenceConfig, InputSchema, Message,
    NamedTool, ReasoningContent, ReasoningText, Role, SystemBlock, Tool, ToolChoice, ToolConfig,
    ToolResult, ToolResultContent, ToolSpec, Usage,
};
use crate::config::HostedTools;
use crate::errors::{self, ErrorKind, GatewayError};
use crate::json::push_json_string;
use crate::translated::{TokenUsage, TranslatedBody};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write as _;

// ---- Request ----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// A string, or a list of input items; parsed on use so that it stays borrowed.
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub instructions: Option<Cow<'a, str>>,
    /// Kept raw as well: the response repeats the request's tools back.
    #[serde(borrow, default)]
    pub tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tool_choice: Option<&'a RawValue>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `auto`, or Bedrock's tier of the same name (`default`, `flex`, `priority`).
    #[serde(borrow, default)]
    pub service_tier: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub reasoning: Option<ReasoningParam<'a>>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(borrow, default)]
    pub include: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub user: Option<Cow<'a, str>>,
    // What needs state kept between requests, or OpenAI's own storage: refused by name.
    #[serde(borrow, default)]
    pub previous_response_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub conversation: Option<&'a RawValue>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(borrow, default)]
    pub prompt: Option<&'a RawValue>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    // `store`, `prompt_cache_key`, `safety_identifier`, `truncation`, `stream_options`,
    // `client_metadata` (Codex) and `reasoning.summary` are accepted and have no effect on Bedrock.
}

#[derive(Debug, Deserialize)]
pub struct ReasoningParam<'a> {
    #[serde(borrow, default)]
    pub effort: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct RequestTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    /// A `namespace` tool's members.
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    /// A `custom` tool's input format: `{"type": "text"}` or a grammar.
    #[serde(borrow, default)]
    format: Option<CustomFormat<'a>>,
}

#[derive(Debug, Deserialize)]
struct CustomFormat<'a> {
    #[serde(borrow, default)]
    syntax: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    definition: Option<Cow<'a, str>>,
}

/// OpenAI's hosted tools: OpenAI runs them, Bedrock cannot. Codex sends `web_search` on every
/// turn, so by default they are left out (and named in [`DROPPED_TOOLS_HEADER`]); a backend may
/// refuse them instead (`hosted_tools: refuse`).
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "computer_use",
    "mcp",
    "local_shell",
    "tool_search",
];

/// The response header naming the hosted tools left out of a request.
pub const DROPPED_TOOLS_HEADER: &str = "x-ai-gateway-dropped-tools";

/// A request translated, with what its response needs to know of its tools.
#[derive(Debug)]
pub struct Translated<'r> {
    pub converse: ConverseRequest<'r>,
    /// Namespace members and custom tools, to map Bedrock's calls back.
    pub tool_names: ToolNames,
    /// The hosted tools left out, comma-separated, for [`DROPPED_TOOLS_HEADER`].
    pub dropped_tools: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolChoiceParam<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        namespace: Option<Cow<'a, str>>,
    },
}

#[derive(Debug, Deserialize)]
struct TextParam<'a> {
    #[serde(borrow, default)]
    format: Option<FormatParam<'a>>,
}

/// `text.format`: flat, where Chat Completions nests the schema under `json_schema`.
#[derive(Debug, Deserialize)]
struct FormatParam<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
}

/// One input item. Items are told apart by `type` (messages may leave it out), so the fields of
/// every kind the gateway takes are optional here and checked per kind.
#[derive(Debug, Deserialize)]
struct InputItem<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
    #[serde(borrow, default)]
    encrypted_content: Option<Cow<'a, str>>,
    /// The namespace of a `function_call` to a namespace's member.
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    /// A `custom_tool_call`'s freeform input.
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct InputPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    file_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    file_data: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    file_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    filename: Option<Cow<'a, str>>,
}

impl ResponsesRequest<'_> {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the caller asked for reasoning it can send back (`reasoning.encrypted_content`).
    pub fn includes_reasoning(&self) -> bool {
        self.include
            .iter()
            .flatten()
            .any(|what| what == "reasoning.encrypted_content")
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// How to send a whole conversation instead of a reference to a stored one.
const SEND_WHOLE_INPUT: &str =
    "this gateway stores no responses; send the whole conversation in `input` with `store: false`.";

pub fn parse_request(body: &[u8]) -> Result<ResponsesRequest<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    crate::json::path::from_slice(body)
        .map_err(|e| invalid(format!("Invalid Responses request: {e}")))
}

/// Refuses what needs stored state or what Bedrock cannot do, naming the field.
fn reject_unsupported(request: &ResponsesRequest<'_>) -> Result<(), GatewayError> {
    if let Some(id) = request.previous_response_id.as_deref() {
        return Err(invalid(format!(
            "`previous_response_id` ({id:?}) is not supported: {SEND_WHOLE_INPUT}"
        )));
    }
    if request.conversation.is_some() {
        return Err(invalid(format!(
            "`conversation` is not supported: {SEND_WHOLE_INPUT}"
        )));
    }
    if request.background == Some(true) {
        return Err(invalid(format!(
            "`background: true` is not supported: {SEND_WHOLE_INPUT}"
        )));
    }
    if request.prompt.is_some() {
        return Err(invalid("`prompt` templates are stored by OpenAI and not available through this gateway; send `instructions` and `input`."));
    }
    if request.top_logprobs.is_some_and(|n| n > 0) {
        return Err(invalid(
            "`top_logprobs` is not supported by Bedrock through this gateway.",
        ));
    }
    openai::check_sampling(request.temperature, request.top_p)
}

/// Translates a parsed request into a Converse body borrowing the request's text, hosted tools
/// left out.
pub fn to_converse<'r>(
    request: &'r ResponsesRequest<'_>,
) -> Result<ConverseRequest<'r>, GatewayError> {
    translate(request, HostedTools::Drop).map(|t| t.converse)
}

/// Translates a parsed request, with what its response needs to know of its tools.
pub fn translate<'r>(
    request: &'r ResponsesRequest<'_>,
    hosted: HostedTools,
) -> Result<Translated<'r>, GatewayError> {
    reject_unsupported(request)?;
    let mut system = Vec::new();
    if let Some(instructions) = request.instructions.as_deref().filter(|i| !i.is_empty()) {
        system.push(SystemBlock::Text(Cow::Borrowed(instructions)));
    }
    let mut messages: Vec<Message<'r>> = Vec::new();
    let mut uses_tools = false;
    let input = request
        .input
        .ok_or_else(|| invalid("`input` is required."))?;
    if input.get().trim_start().starts_with('"') {
        let text: Cow<'r, str> =
            serde_json::from_str(input.get()).map_err(|e| invalid(format!("input: {e}")))?;
        if !text.is_empty() {
            messages.push(Message {
                role: Role::User,
                content: vec![ContentBlock::Text(text)],
            });
        }
    } else {
        let items: Vec<InputItem<'r>> = serde_json::from_str(input.get()).map_err(|e| {
            invalid(format!(
                "`input` must be a string or a list of input items: {e}"
            ))
        })?;
        for (index, item) in items.into_iter().enumerate() {
            uses_tools |= add_item(item, index, &mut system, &mut messages)?;
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "`input` must contain at least one user or assistant message with content.",
        ));
    }

    let mut additional = serde_json::Map::new();
    let effort = request
        .reasoning
        .as_ref()
        .and_then(|r| r.effort.as_deref())
        .filter(|e| *e != "none");
    if let Some(effort) = effort {
        openai::add_reasoning_effort(
            &request.model,
            effort,
            request.max_output_tokens,
            &mut additional,
        )?;
        if additional.contains_key("thinking") && !thinking_can_continue(&messages) {
            // Claude requires the assistant turn of an unfinished tool loop to begin with its signed
            // thinking. A caller that sent its reasoning back without `encrypted_content` (the
            // Agents SDK does) cannot give it, so this turn goes on without thinking, as Anthropic
            // advises, rather than failing.
            log::debug!("responses: reasoning for the open tool loop was not sent back; thinking is off for this turn");
            additional.remove("thinking");
        }
    }
    let mut tools = ToolsSeen {
        hosted,
        ..ToolsSeen::default()
    };
    let tool_config = tool_config(request, uses_tools, &mut tools)?;
    Ok(Translated {
        converse: ConverseRequest {
            messages,
            system,
            inference_config: InferenceConfig {
                max_tokens: request.max_output_tokens,
                temperature: request.temperature,
                top_p: request.top_p,
                stop_sequences: Vec::new(),
            },
            tool_config,
            additional_model_request_fields: additional,
            output_config: output_config(request.text)?,
            options: Default::default(),
        },
        tool_names: tools.names,
        dropped_tools: (!tools.dropped.is_empty()).then(|| tools.dropped.join(",")),
    })
}

/// What `tool_config` found besides the tools it sends.
#[derive(Default)]
struct ToolsSeen {
    hosted: HostedTools,
    names: ToolNames,
    dropped: Vec<String>,
}

/// Adds one input item to the conversation; returns whether it is part of a tool exchange.
fn add_item<'r>(
    item: InputItem<'r>,
    index: usize,
    system: &mut Vec<SystemBlock<'r>>,
    messages: &mut Vec<Message<'r>>,
) -> Result<bool, GatewayError> {
    let at = |what: &str| format!("input[{index}]{what}");
    let kind = match (item.kind.as_deref(), item.role.is_some()) {
        (Some(kind), _) => kind,
        (None, true) => "message",
        // `{"id": ...}` alone is how some SDKs refer to a stored item.
        (None, false) if item.id.is_some() => "item_reference",
        (None, false) => return Err(invalid(at(" has neither a `type` nor a `role`."))),
    };
    match kind {
        "message" => {
            let role = item.role.as_deref().unwrap_or_default();
            match role {
                "system" | "developer" => {
                    for block in message_content(item.content, &at(".content"), Role::User)? {
                        match block {
                            ContentBlock::Text(text) => system.push(SystemBlock::Text(text)),
                            _ => return Err(invalid(at(": system and developer messages may only contain text."))),
                        }
                    }
                }
                "user" => bedrock::push_turn(messages, Role::User, message_content(item.content, &at(".content"), Role::User)?),
                "assistant" => {
                    bedrock::push_turn(messages, Role::Assistant, message_content(item.content, &at(".content"), Role::Assistant)?)
                }
                other => return Err(invalid(at(&format!(": role {other:?} is not one of user, assistant, system, developer.")))),
            }
            Ok(false)
        }
        "function_call" => {
            let call_id = item.call_id.ok_or_else(|| invalid(at(": a function_call needs `call_id`.")))?;
            let name = item.name.ok_or_else(|| invalid(at(": a function_call needs `name`.")))?;
            // A namespace's member reaches Bedrock under the name its tool was given there.
            let name = tool_names::bedrock_name_of(item.namespace.as_deref(), name);
            let arguments = item.arguments.as_deref().map(str::trim).filter(|a| !a.is_empty()).unwrap_or("{}");
            let input = RawValue::from_string(arguments.to_owned())
                .map_err(|e| invalid(at(&format!(".arguments is not valid JSON: {e}"))))?;
            let call = bedrock::ToolUse { tool_use_id: call_id, name, input };
            bedrock::push_turn(messages, Role::Assistant, vec![ContentBlock::ToolUse(call)]);
            Ok(true)
        }
        "custom_tool_call" => {
            let call_id = item.call_id.ok_or_else(|| invalid(at(": a custom_tool_call needs `call_id`.")))?;
            let name = item.name.ok_or_else(|| invalid(at(": a custom_tool_call needs `name`.")))?;
            let name = tool_names::bedrock_name_of(item.namespace.as_deref(), name);
            let mut arguments = String::with_capacity(16 + item.input.as_deref().map_or(0, str::len));
            arguments.push_str("{\"input\":");
            push_json_string(&mut arguments, item.input.as_deref().unwrap_or_default());
            arguments.push('}');
            let input = RawValue::from_string(arguments)
                .map_err(|e| invalid(at(&format!(".input: {e}"))))?;
            let call = bedrock::ToolUse { tool_use_id: call_id, name, input };
            bedrock::push_turn(messages, Role::Assistant, vec![ContentBlock::ToolUse(call)]);
            Ok(true)
        }
        // Calls of hosted tools OpenAI ran in earlier turns: nothing Bedrock can be shown.
        "web_search_call" | "file_search_call" => Ok(false),
        "function_call_output" | "custom_tool_call_output" => {
            let call_id = item.call_id.ok_or_else(|| invalid(at(&format!(": a {kind} needs `call_id`."))))?;
            let mut content = Vec::new();
            for block in message_content(item.output, &at(".output"), Role::User)? {
                match block {
                    ContentBlock::Text(text) => content.push(ToolResultContent::Text(text)),
                    ContentBlock::Image(image) => content.push(ToolResultContent::Image(image)),
                    _ => return Err(invalid(at(".output: a function's output may hold text and images only."))),
                }
            }
            if content.is_empty() {
                content.push(ToolResultContent::Text(Cow::Borrowed("")));
            }
            let result = ToolResult { tool_use_id: call_id, content, status: None };
            bedrock::push_turn(messages, Role::User, vec![ContentBlock::ToolResult(result)]);
            Ok(true)
        }
        "reasoning" => {
            // Reasoning without what Bedrock needs to verify it cannot be sent back: left out.
            if let Some(block) = item.encrypted_content.as_deref().map(|blob| restore_reasoning(blob, &at(".encrypted_content"))) {
                if let Some(block) = block? {
                    bedrock::push_turn(messages, Role::Assistant, vec![block]);
                }
            }
            Ok(false)
        }
        "item_reference" => {
            let id = item.id.as_deref().unwrap_or_default();
            Err(invalid(at(&format!(" refers to the stored item {id:?}, but {SEND_WHOLE_INPUT}"))))
        }
        other => Err(invalid(at(&format!(
            ": input items of type `{other}` are not supported through Bedrock; only messages, function and custom tool calls and their outputs, and reasoning are."
        )))),
    }
}

/// A message's content (or a function's output): a string, or a list of content parts.
fn message_content<'r>(
    content: Option<&'r RawValue>,
    at: &str,
    role: Role,
) -> Result<Vec<ContentBlock<'r>>, GatewayError> {
    let parts: Vec<InputPart<'r>> = match openai::text_or_parts(content, at)? {
        TextOrParts::Blocks(blocks) => return Ok(blocks),
        TextOrParts::Parts(parts) => parts,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        match part.kind.as_ref() {
            "input_text" | "output_text" => match part.text {
                Some(text) if text.is_empty() => {}
                Some(text) => blocks.push(ContentBlock::Text(text)),
                None => return Err(invalid(format!("{at}: a text part needs a `text` string."))),
            },
            "refusal" if role == Role::Assistant => {}
            "input_image" if role == Role::User => {
                if part.file_id.is_some() && part.image_url.is_none() {
                    return Err(invalid(format!("{at}: uploaded file ids are not supported; send the image as a data URL in `image_url`.")));
                }
                let url = part.image_url.ok_or_else(|| {
                    invalid(format!("{at}: an input_image part needs `image_url`."))
                })?;
                blocks.push(ContentBlock::Image(openai::image_from_data_url(url, &at)?));
            }
            "input_file" if role == Role::User => {
                if part.file_url.is_some() && part.file_data.is_none() {
                    return Err(invalid(format!("{at}: file URLs are not fetched by the gateway; send `file_data` as a data URL.")));
                }
                let file = FilePart {
                    file_data: part.file_data,
                    filename: part.filename,
                    file_id: part.file_id,
                };
                blocks.push(ContentBlock::Document(openai::document_from_file(
                    file, &at,
                )?));
            }
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
    }
    Ok(blocks)
}

/// Claude wants the assistant turn of an unfinished tool loop (the last turn holds tool results)
/// to start with its thinking when thinking is on.
fn thinking_can_continue(messages: &[Message<'_>]) -> bool {
    let [.., assistant, last] = messages else {
        return true;
    };
    let in_tool_loop = last.role == Role::User
        && last
            .content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolResult(_)));
    !in_tool_loop
        || assistant.role != Role::Assistant
        || matches!(
            assistant.content.first(),
            Some(ContentBlock::ReasoningContent(_))
        )
}

fn tool_config<'r>(
    request: &'r ResponsesRequest<'_>,
    history_uses_tools: bool,
    seen: &mut ToolsSeen,
) -> Result<Option<ToolConfig<'r>>, GatewayError> {
    let tools: Vec<RequestTool<'r>> = match request.tools {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| invalid(format!("`tools` must be a list of tools: {e}")))?,
        None => Vec::new(),
    };
    let choice: Option<ToolChoiceParam<'r>> = match request.tool_choice {
        Some(raw) => Some(
            serde_json::from_str(raw.get()).map_err(|e| invalid(format!("`tool_choice`: {e}")))?,
        ),
        None => None,
    };
    let choice = match choice {
        None => None,
        Some(ToolChoiceParam::Mode(mode)) => match openai::tool_choice_mode(&mode, history_uses_tools)? {
            ToolMode::Send(choice) => choice,
            ToolMode::NoTools => return Ok(None),
        },
        Some(ToolChoiceParam::Object { kind, name, namespace }) => match (kind.as_ref(), name) {
            ("function" | "custom", Some(name)) => Some(ToolChoice::Tool(NamedTool {
                name: tool_names::bedrock_name_of(namespace.as_deref(), name),
            })),
            ("function" | "custom", None) => return Err(invalid(format!("`tool_choice` of type {kind} needs `name`."))),
            (other, _) => {
                return Err(invalid(format!("`tool_choice` of type `{other}` is not supported through Bedrock; use auto, required, none or a function.")))
            }
        },
    };
    if tools.is_empty() {
        if matches!(choice, Some(ToolChoice::Any(_)) | Some(ToolChoice::Tool(_))) {
            return Err(invalid(
                "`tool_choice` requires a tool but `tools` is empty.",
            ));
        }
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for (index, tool) in tools.into_iter().enumerate() {
        let at = ToolAt {
            index,
            member: None,
        };
        match tool.kind.as_ref() {
            "function" | "custom" => specs.push(tool_spec(tool, None, at, seen)?),
            "namespace" => {
                let namespace = tool
                    .name
                    .ok_or_else(|| invalid(format!("{at}: a namespace tool needs `name`.")))?;
                let members: Vec<RequestTool<'r>> = match tool.tools {
                    Some(raw) => serde_json::from_str(raw.get())
                        .map_err(|e| invalid(format!("{at}.tools: {e}")))?,
                    None => Vec::new(),
                };
                for (member_index, member) in members.into_iter().enumerate() {
                    let at = ToolAt {
                        index,
                        member: Some(member_index),
                    };
                    if !matches!(member.kind.as_ref(), "function" | "custom") {
                        return Err(invalid(format!(
                            "{at}: a namespace holds function and custom tools, not `{}`.",
                            member.kind
                        )));
                    }
                    specs.push(tool_spec(member, Some(&namespace), at, seen)?);
                }
            }
            hosted if HOSTED_TOOLS.contains(&hosted) => match seen.hosted {
                HostedTools::Drop => seen.dropped.push(hosted.to_owned()),
                HostedTools::Refuse => {
                    return Err(invalid(format!(
                        "{at}: the hosted tool `{hosted}` is run by OpenAI and not available through Bedrock; leave it out of `tools`."
                    )))
                }
            },
            other => {
                return Err(invalid(format!(
                    "{at}: tools of type `{other}` are not available through Bedrock; function, custom and namespace tools are."
                )))
            }
        }
    }
    if specs.is_empty() {
        // Every tool was a hosted one, left out: the request goes on as one without tools.
        return match choice {
            Some(ToolChoice::Tool(_)) | Some(ToolChoice::Any(_)) => Err(invalid(
                "`tool_choice` requires a tool, but every tool in `tools` is a hosted one Bedrock cannot run.",
            )),
            _ => Ok(None),
        };
    }
    Ok(Some(ToolConfig {
        tools: specs,
        tool_choice: choice,
    }))
}

/// Where a tool stands in the request, for messages: `tools[2]`, or `tools[2].tools[0]` for a
/// namespace's member. Written out only when a message needs it.
#[derive(Clone, Copy)]
struct ToolAt {
    index: usize,
    member: Option<usize>,
}

impl std::fmt::Display for ToolAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tools[{}]", self.index)?;
        match self.member {
            Some(member) => write!(f, ".tools[{member}]"),
            None => Ok(()),
        }
    }
}

/// One function or custom tool as Bedrock's tool spec, under the name Bedrock takes for it.
fn tool_spec<'r>(
    tool: RequestTool<'r>,
    namespace: Option<&str>,
    at: ToolAt,
    seen: &mut ToolsSeen,
) -> Result<Tool<'r>, GatewayError> {
    let custom = tool.kind == "custom";
    let name = tool
        .name
        .ok_or_else(|| invalid(format!("{at}: a {} tool needs `name`.", tool.kind)))?;
    let bedrock_name = tool_names::bedrock_name_of(namespace, name.clone());
    if custom || namespace.is_some() || bedrock_name != name {
        seen.names.add(RenamedTool {
            bedrock: bedrock_name.clone().into_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.into_owned(),
            kind: if custom {
                ToolKind::Custom
            } else {
                ToolKind::Function
            },
        })?;
    }
    if custom {
        // Freeform input: one string member, with the grammar it must follow in the description.
        let mut description = tool.description.map(Cow::into_owned).unwrap_or_default();
        if let Some(CustomFormat {
            syntax,
            definition: Some(definition),
        }) = tool.format
        {
            let syntax = syntax.as_deref().unwrap_or("grammar");
            let _ = write!(
                description,
                "\n\nThe `input` string must follow this {syntax} grammar:\n{definition}"
            );
        }
        let schema = RawValue::from_string(tool_names::CUSTOM_TOOL_SCHEMA.to_owned())
            .map_err(|e| invalid(format!("{at}: {e}")))?;
        return Ok(Tool::ToolSpec(ToolSpec {
            name: bedrock_name,
            description: (!description.is_empty()).then_some(Cow::Owned(description)),
            input_schema: InputSchema { json: schema },
        }));
    }
    let schema = match tool.parameters {
        Some(parameters) if parameters.get() != "null" => {
            RawValue::from_string(parameters.get().to_owned())
        }
        _ => RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_owned()),
    }
    .map_err(|e| invalid(format!("{at}.parameters: {e}")))?;
    Ok(Tool::ToolSpec(ToolSpec {
        name: bedrock_name,
        description: tool.description,
        input_schema: InputSchema { json: schema },
    }))
}

fn output_config(text: Option<&RawValue>) -> Result<Option<bedrock::OutputConfig>, GatewayError> {
    let Some(raw) = text else { return Ok(None) };
    let text: TextParam<'_> =
        serde_json::from_str(raw.get()).map_err(|e| invalid(format!("`text`: {e}")))?;
    let Some(format) = text.format else {
        return Ok(None);
    };
    // The same structured output as Chat Completions' `response_format`, laid out flat.
    let format = ResponseFormat {
        kind: format.kind,
        json_schema: Some(JsonSchemaFormat {
            name: format.name,
            description: format.description,
            schema: format.schema,
        }),
    };
    openai::output_config(Some(&format))
        .map_err(|e| invalid(e.message.replace("`response_format", "`text.format")))
}

// ---- Reasoning carried by the caller ----------------------------------------------------

/// Marks `encrypted_content` the gateway wrote: base64 of a small JSON object. It is not secret
/// (the thinking was shown to the caller); Bedrock verifies the signature when it comes back.
const REASONING_PREFIX: &str = "bgw1.";

#[derive(Serialize, Deserialize)]
struct CarriedReasoning<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    redacted: Option<Cow<'a, str>>,
}

fn carry_reasoning(text: &str, signature: Option<&str>, redacted: Option<&str>) -> Option<String> {
    let carried = match (signature, redacted) {
        (_, Some(data)) => CarriedReasoning {
            thinking: None,
            signature: None,
            redacted: Some(Cow::Borrowed(data)),
        },
        (Some(signature), None) => CarriedReasoning {
            thinking: Some(Cow::Borrowed(text)),
            signature: Some(Cow::Borrowed(signature)),
            redacted: None,
        },
        // Unsigned reasoning cannot be verified by Bedrock, so there is nothing worth carrying.
        (None, None) => return None,
    };
    let json = serde_json::to_vec(&carried).ok()?;
    Some(format!(
        "{REASONING_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(json)
    ))
}

/// The reasoning block a caller sent back; `None` for content another service wrote.
fn restore_reasoning<'r>(blob: &str, at: &str) -> Result<Option<ContentBlock<'r>>, GatewayError> {
    let Some(encoded) = blob.strip_prefix(REASONING_PREFIX) else {
        // Reasoning another provider encrypted means nothing to Bedrock.
        return Ok(None);
    };
    let corrupt = || {
        invalid(format!(
            "{at} was altered: it is not the reasoning this gateway returned."
        ))
    };
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| corrupt())?;
    let carried: CarriedReasoning<'_> = serde_json::from_slice(&json).map_err(|_| corrupt())?;
    let content = match carried {
        CarriedReasoning {
            redacted: Some(data),
            ..
        } => ReasoningContent::RedactedContent(Cow::Owned(data.into_owned())),
        CarriedReasoning {
            thinking: Some(text),
            signature: Some(signature),
            ..
        } => ReasoningContent::ReasoningText(ReasoningText {
            text: Cow::Owned(text.into_owned()),
            signature: Some(Cow::Owned(signature.into_owned())),
        }),
        _ => return Err(corrupt()),
    };
    Ok(Some(ContentBlock::ReasoningContent(content)))
}

// ---- What the response repeats of the request -------------------------------------------

#[derive(Serialize)]
struct Echo<'r> {
    instructions: Option<&'r str>,
    max_output_tokens: Option<u32>,
    metadata: Option<&'r RawValue>,
    parallel_tool_calls: bool,
    reasoning: EchoReasoning<'r>,
    store: bool,
    temperature: Option<f64>,
    text: Option<&'r RawValue>,
    tool_choice: Option<&'r RawValue>,
    tools: Option<&'r RawValue>,
    top_p: Option<f64>,
    truncation: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'r str>,
}

#[derive(Serialize)]
struct EchoReasoning<'r> {
    effort: Option<&'r str>,
    summary: Option<()>,
}

/// The request's settings as the `response` object repeats them: JSON object members (without
/// braces) rendered once and spliced into every `response` the gateway sends for the request.
pub fn echo(request: &ResponsesRequest<'_>) -> String {
    // Borrowed from static text, so the defaults cost no allocation.
    fn literal(json: &'static str) -> Option<&'static RawValue> {
        serde_json::from_str(json).ok()
    }
    let echo = Echo {
        instructions: request.instructions.as_deref(),
        max_output_tokens: request.max_output_tokens,
        metadata: request.metadata.or_else(|| literal("{}")),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        reasoning: EchoReasoning {
            effort: request.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
            summary: None,
        },
        store: false,
        temperature: request.temperature,
        text: request
            .text
            .or_else(|| literal(r#"{"format":{"type":"text"}}"#)),
        tool_choice: request.tool_choice.or_else(|| literal("\"auto\"")),
        tools: request.tools.or_else(|| literal("[]")),
        top_p: request.top_p,
        truncation: "disabled",
        user: request.user.as_deref(),
    };
    let json = serde_json::to_string(&echo).unwrap_or_else(|_| "{}".to_owned());
    json.strip_prefix('{')
        .and_then(|j| j.strip_suffix('}'))
        .unwrap_or_default()
        .to_owned()
}

// ---- Response ---------------------------------------------------------------------------

/// What a response needs to know about its request.
#[derive(Debug, Clone)]
pub struct ResponsesContext {
    /// Bedrock's request id; the response's and its items' ids derive from it.
    pub id: String,
    /// The model the caller asked for.
    pub model: String,
    pub created: u64,
    /// [`echo`]'s members.
    pub echo: String,
    /// Whether reasoning items carry `encrypted_content`.
    pub include_reasoning: bool,
    /// The request's namespace members and custom tools, by the names Bedrock calls them.
    pub tools: ToolNames,
}

/// One output item, as the model produced it.
#[derive(Debug)]
enum Item {
    Message {
        text: String,
    },
    /// A function call, or a custom tool's call (`custom`: its input is `arguments`' `input`).
    FunctionCall {
        call_id: String,
        namespace: Option<String>,
        name: String,
        arguments: String,
        custom: bool,
    },
    Reasoning {
        text: String,
        signature: Option<String>,
        redacted: Option<String>,
        summary_open: bool,
    },
}

impl ResponsesContext {
    /// The item for a call of the tool Bedrock names `called`, under the caller's own names.
    fn function_call(&self, call_id: String, called: &str, arguments: String) -> Item {
        let tool = self.tools.caller_tool(called);
        Item::FunctionCall {
            call_id,
            namespace: tool.namespace.map(str::to_owned),
            name: tool.name.to_owned(),
            arguments,
            custom: tool.kind == ToolKind::Custom,
        }
    }

    fn item_id(&self, out: &mut String, item: &Item, output_index: usize) {
        match item {
            Item::FunctionCall { call_id, .. } => push_json_string(out, &format!("fc_{call_id}")),
            Item::Message { .. } => {
                push_json_string(out, &format!("msg_{}_{output_index}", self.id))
            }
            Item::Reasoning { .. } => {
                push_json_string(out, &format!("rs_{}_{output_index}", self.id))
            }
        }
    }

    /// An output item: as first announced (`whole` false: no content yet) or whole.
    fn render_item(
        &self,
        out: &mut String,
        item: &Item,
        output_index: usize,
        status: &str,
        whole: bool,
    ) {
        out.push_str("{\"id\":");
        self.item_id(out, item, output_index);
        match item {
            Item::Message { text } => {
                let _ = write!(out, ",\"type\":\"message\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":[");
                if whole {
                    render_text_part(out, text);
                }
                out.push(']');
            }
            Item::FunctionCall {
                call_id,
                namespace,
                name,
                arguments,
                custom,
            } => {
                let kind = if *custom {
                    "custom_tool_call"
                } else {
                    "function_call"
                };
                let _ = write!(
                    out,
                    ",\"type\":\"{kind}\",\"status\":\"{status}\",\"call_id\":"
                );
                push_json_string(out, call_id);
                if let Some(namespace) = namespace {
                    out.push_str(",\"namespace\":");
                    push_json_string(out, namespace);
                }
                out.push_str(",\"name\":");
                push_json_string(out, name);
                if *custom {
                    out.push_str(",\"input\":");
                    let input = tool_names::custom_input(arguments);
                    push_json_string(out, if whole { &input } else { "" });
                } else {
                    out.push_str(",\"arguments\":");
                    push_json_string(out, if whole { arguments } else { "" });
                }
            }
            Item::Reasoning {
                text,
                signature,
                redacted,
                ..
            } => {
                out.push_str(",\"type\":\"reasoning\",\"summary\":[");
                if whole && !text.is_empty() {
                    render_summary_part(out, text);
                }
                out.push(']');
                let carried = whole && self.include_reasoning;
                if let Some(blob) = carried
                    .then(|| carry_reasoning(text, signature.as_deref(), redacted.as_deref()))
                    .flatten()
                {
                    out.push_str(",\"encrypted_content\":");
                    push_json_string(out, &blob);
                }
            }
        }
        out.push('}');
    }

    /// The `response` object, with the request's settings repeated.
    fn render_response(&self, out: &mut String, state: ResponseState<'_>, items: &[OutputItem]) {
        out.push_str("{\"id\":");
        push_json_string(out, &format!("resp_{}", self.id));
        let _ = write!(
            out,
            ",\"object\":\"response\",\"created_at\":{},\"status\":\"{}\",\"background\":false,\"error\":",
            self.created,
            state.status()
        );
        match state {
            ResponseState::Failed(error) => {
                out.push_str("{\"code\":");
                push_json_string(out, failure_code(error.kind));
                out.push_str(",\"message\":");
                push_json_string(out, &error.message);
                out.push('}');
            }
            _ => out.push_str("null"),
        }
        out.push_str(",\"incomplete_details\":");
        match state {
            ResponseState::Finished {
                incomplete_reason: Some(reason),
                ..
            } => {
                let _ = write!(out, "{{\"reason\":\"{reason}\"}}");
            }
            _ => out.push_str("null"),
        }
        out.push_str(",\"model\":");
        push_json_string(out, &self.model);
        out.push_str(",\"output\":[");
        for (index, output) in items.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let status = if output.done {
                "completed"
            } else {
                "incomplete"
            };
            self.render_item(out, &output.item, index, status, true);
        }
        out.push_str("],\"usage\":");
        match state {
            ResponseState::Finished { usage, .. } => render_usage(out, usage),
            _ => out.push_str("null"),
        }
        if !self.echo.is_empty() {
            out.push(',');
            out.push_str(&self.echo);
        }
        out.push('}');
    }
}

#[derive(Debug, Clone, Copy)]
enum ResponseState<'a> {
    InProgress,
    Finished {
        usage: Usage,
        incomplete_reason: Option<&'static str>,
    },
    Failed(&'a GatewayError),
}

impl ResponseState<'_> {
    fn status(&self) -> &'static str {
        match self {
            ResponseState::InProgress => "in_progress",
            ResponseState::Finished {
                incomplete_reason: Some(_),
                ..
            } => "incomplete",
            ResponseState::Finished { .. } => "completed",
            ResponseState::Failed(_) => "failed",
        }
    }

    fn finished(stop_reason: Option<&str>, usage: Usage) -> Self {
        let incomplete_reason = match stop_reason {
            Some("max_tokens") | Some("model_context_window_exceeded") => Some("max_output_tokens"),
            Some("guardrail_intervened") | Some("content_filtered") => Some("content_filter"),
            _ => None,
        };
        ResponseState::Finished {
            usage,
            incomplete_reason,
        }
    }
}

#[derive(Debug)]
struct OutputItem {
    item: Item,
    done: bool,
}

fn render_text_part(out: &mut String, text: &str) {
    out.push_str("{\"type\":\"output_text\",\"text\":");
    push_json_string(out, text);
    out.push_str(",\"annotations\":[],\"logprobs\":[]}");
}

fn render_summary_part(out: &mut String, text: &str) {
    out.push_str("{\"type\":\"summary_text\",\"text\":");
    push_json_string(out, text);
    out.push('}');
}

/// Bedrock counts cached input apart from `inputTokens`; OpenAI's `input_tokens` includes it.
/// Bedrock does not count reasoning tokens apart: they are in `output_tokens`, and
/// `reasoning_tokens` stays 0 (see the README).
fn render_usage(out: &mut String, u: Usage) {
    let input = u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens;
    let _ = write!(
        out,
        "{{\"input_tokens\":{input},\"input_tokens_details\":{{\"cached_tokens\":{},\"cache_write_tokens\":{}}},\"output_tokens\":{},\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}",
        u.cache_read_input_tokens,
        u.cache_write_input_tokens,
        u.output_tokens,
        input + u.output_tokens
    );
}

/// OpenAI's `response.error.code` for a failure.
fn failure_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited => "rate_limit_exceeded",
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "invalid_prompt",
        _ => "server_error",
    }
}

/// Renders a Converse response as a `response` object: text, function calls and reasoning, in order.
pub fn from_converse_response(
    body: &[u8],
    context: &ResponsesContext,
) -> Result<TranslatedBody, GatewayError> {
    let ConverseReply {
        message,
        stop_reason,
        usage,
    } = ConverseReply::parse(body)?;
    let mut items: Vec<OutputItem> = Vec::with_capacity(message.content.len());
    for block in message.content {
        if let Some(text) = block.text {
            // Consecutive text blocks are one message.
            match items.last_mut() {
                Some(OutputItem {
                    item: Item::Message { text: previous },
                    ..
                }) => previous.push_str(&text),
                _ => items.push(OutputItem {
                    item: Item::Message {
                        text: text.into_owned(),
                    },
                    done: true,
                }),
            }
        }
        if let Some(tool_use) = block.tool_use {
            let item = context.function_call(
                tool_use.tool_use_id.into_owned(),
                &tool_use.name,
                tool_use.input.get().to_owned(),
            );
            items.push(OutputItem { item, done: true });
        }
        if let Some(reasoning) = block.reasoning_content {
            let (text, signature) = match reasoning.reasoning_text {
                Some(t) => (t.text.into_owned(), t.signature.map(Cow::into_owned)),
                None => (String::new(), None),
            };
            let redacted = reasoning.redacted_content.map(Cow::into_owned);
            items.push(OutputItem {
                item: Item::Reasoning {
                    text,
                    signature,
                    redacted,
                    summary_open: false,
                },
                done: true,
            });
        }
    }
    let mut out = String::with_capacity(256 + context.echo.len() + body.len());
    context.render_response(
        &mut out,
        ResponseState::finished(stop_reason, usage.unwrap_or_default()),
        &items,
    );
    Ok(TranslatedBody {
        body: out.into_bytes(),
        usage: usage.map(TokenUsage::from),
    })
}

// ---- Streaming --------------------------------------------------------------------------

/// Turns a ConverseStream event stream into the Responses API's typed SSE events, one body chunk
/// at a time. Deltas go out as they arrive; each item is also kept whole, because its `done`
/// event and `response.completed` repeat it (the SDKs check them against what was announced).
pub struct ResponsesStreamTranslator {
    decoder: Decoder,
    context: ResponsesContext,
    sequence: u64,
    started: bool,
    items: Vec<OutputItem>,
    /// The output index each open Converse content block streams into.
    open_blocks: Vec<Option<usize>>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
    finished: bool,
    first_content_emitted: bool,
}

impl ResponsesStreamTranslator {
    pub fn new(context: ResponsesContext, max_frame_len: usize) -> Self {
        ResponsesStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            context,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open_blocks: Vec::new(),
            stop_reason: None,
            usage: None,
            finished: false,
            first_content_emitted: false,
        }
    }

    /// Writes one event: `event: <type>` and its data, numbered from 0.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, members: &str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        if !members.is_empty() {
            out.push(b',');
            out.extend_from_slice(members.as_bytes());
        }
        out.extend_from_slice(b"}\n\n");
        self.sequence += 1;
    }

    fn emit_response(&mut self, out: &mut Vec<u8>, kind: &str, state: ResponseState<'_>) {
        let mut members = String::with_capacity(256 + self.context.echo.len());
        members.push_str("\"response\":");
        self.context
            .render_response(&mut members, state, &self.items);
        self.emit(out, kind, &members);
    }

    /// `response.created` and `response.in_progress`, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.emit_response(out, "response.created", ResponseState::InProgress);
        self.emit_response(out, "response.in_progress", ResponseState::InProgress);
    }

    /// Locates an item's place in the events' members: `"item_id":...,"output_index":N`.
    fn item_ref(&self, output_index: usize) -> String {
        let mut members = String::with_capacity(64);
        members.push_str("\"item_id\":");
        if let Some(output) = self.items.get(output_index) {
            self.context
                .item_id(&mut members, &output.item, output_index);
        }
        let _ = write!(members, ",\"output_index\":{output_index}");
        members
    }

    fn open_item(
        &mut self,
        out: &mut Vec<u8>,
        block_index: usize,
        item: Item,
    ) -> Result<usize, GatewayError> {
        self.start(out);
        if block_index > 4096 {
            return Err(openai::too_many_blocks());
        }
        if block_index >= self.open_blocks.len() {
            self.open_blocks.resize(block_index + 1, None);
        }
        let output_index = self.items.len();
        let mut members = String::with_capacity(128);
        let _ = write!(members, "\"output_index\":{output_index},\"item\":");
        self.context
            .render_item(&mut members, &item, output_index, "in_progress", false);
        let is_message = matches!(item, Item::Message { .. });
        self.items.push(OutputItem { item, done: false });
        if let Some(slot) = self.open_blocks.get_mut(block_index) {
            *slot = Some(output_index);
        }
        self.emit(out, "response.output_item.added", &members);
        if is_message {
            let members = format!("{},\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[],\"logprobs\":[]}}", self.item_ref(output_index));
            self.emit(out, "response.content_part.added", &members);
        }
        Ok(output_index)
    }

    /// The item a block streams into, opened with `new_item` on its first delta.
    fn item_for_block(
        &mut self,
        out: &mut Vec<u8>,
        block_index: usize,
        new_item: impl FnOnce() -> Item,
    ) -> Result<usize, GatewayError> {
        match self.open_blocks.get(block_index).copied().flatten() {
            Some(output_index) => Ok(output_index),
            None => self.open_item(out, block_index, new_item()),
        }
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) -> Result<(), GatewayError> {
        match frame.headers.event_type {
            Some("messageStart") => self.start(out),
            Some("contentBlockStart") => {
                let event: bedrock::ContentBlockStartEvent<'_> =
                    serde_json::from_slice(frame.payload)
                        .map_err(|e| openai::unreadable_event("contentBlockStart", &e))?;
                if let Some(tool_use) = event.start.and_then(|s| s.tool_use) {
                    let item = self.context.function_call(
                        tool_use.tool_use_id.into_owned(),
                        &tool_use.name,
                        String::new(),
                    );
                    self.open_item(out, event.content_block_index, item)?;
                    self.first_content_emitted = true;
                }
            }
            Some("contentBlockDelta") => self.on_delta(frame.payload, out)?,
            Some("contentBlockStop") => {
                let event: bedrock::ContentBlockStopEvent =
                    serde_json::from_slice(frame.payload)
                        .map_err(|e| openai::unreadable_event("contentBlockStop", &e))?;
                self.close_block(out, event.content_block_index);
            }
            Some("messageStop") => {
                let event: bedrock::MessageStopEvent<'_> = serde_json::from_slice(frame.payload)
                    .map_err(|e| openai::unreadable_event("messageStop", &e))?;
                self.stop_reason = Some(event.stop_reason.unwrap_or("end_turn").to_owned());
                self.close_all(out);
            }
            Some("metadata") => {
                let event: bedrock::MetadataEvent = serde_json::from_slice(frame.payload)
                    .map_err(|e| openai::unreadable_event("metadata", &e))?;
                self.usage = event.usage;
                if self.stop_reason.is_some() {
                    self.complete(out);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_delta(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockDeltaEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| openai::unreadable_event("contentBlockDelta", &e))?;
        let Some(delta) = event.delta else {
            return Ok(());
        };
        let block = event.content_block_index;
        if let Some(text) = delta.text {
            let index = self.item_for_block(out, block, || Item::Message {
                text: String::new(),
            })?;
            match self.items.get_mut(index).map(|o| &mut o.item) {
                Some(Item::Message { text: whole }) => whole.push_str(&text),
                _ => {
                    return Err(GatewayError::upstream(
                        "Bedrock streamed text into a block that is not text.",
                    ))
                }
            }
            let mut members = self.item_ref(index);
            members.push_str(",\"content_index\":0,\"delta\":");
            push_json_string(&mut members, &text);
            members.push_str(",\"logprobs\":[]");
            self.emit(out, "response.output_text.delta", &members);
            self.first_content_emitted = true;
        } else if let Some(tool_use) = delta.tool_use {
            let index = self.open_blocks.get(block).copied().flatten();
            match index
                .and_then(|i| self.items.get_mut(i))
                .map(|o| &mut o.item)
            {
                Some(Item::FunctionCall {
                    arguments, custom, ..
                }) => {
                    arguments.push_str(&tool_use.input);
                    if *custom {
                        // Its free text is sent whole when the call ends: the model writes it
                        // as JSON, whose string is not readable in pieces.
                        return Ok(());
                    }
                }
                _ => {
                    return Err(GatewayError::upstream(
                        "Bedrock streamed tool input for a block that is not a tool call.",
                    ))
                }
            }
            let mut members = self.item_ref(index.unwrap_or_default());
            members.push_str(",\"delta\":");
            push_json_string(&mut members, &tool_use.input);
            self.emit(out, "response.function_call_arguments.delta", &members);
            self.first_content_emitted = true;
        } else if let Some(reasoning) = delta.reasoning_content {
            let new_reasoning = || Item::Reasoning {
                text: String::new(),
                signature: None,
                redacted: None,
                summary_open: false,
            };
            let index = self.item_for_block(out, block, new_reasoning)?;
            let Some(Item::Reasoning {
                text: whole,
                signature,
                redacted,
                summary_open,
            }) = self.items.get_mut(index).map(|o| &mut o.item)
            else {
                return Err(GatewayError::upstream(
                    "Bedrock streamed reasoning into a block that is not reasoning.",
                ));
            };
            if let Some(new_signature) = reasoning.signature {
                *signature = Some(new_signature.into_owned());
            }
            if let Some(data) = reasoning.redacted_content {
                *redacted = Some(data.into_owned());
            }
            let Some(text) = reasoning.text else {
                return Ok(());
            };
            whole.push_str(&text);
            let open_part = !std::mem::replace(summary_open, true);
            let item_ref = self.item_ref(index);
            if open_part {
                let members = format!("{item_ref},\"summary_index\":0,\"part\":{{\"type\":\"summary_text\",\"text\":\"\"}}");
                self.emit(out, "response.reasoning_summary_part.added", &members);
            }
            let mut members = item_ref;
            members.push_str(",\"summary_index\":0,\"delta\":");
            push_json_string(&mut members, &text);
            self.emit(out, "response.reasoning_summary_text.delta", &members);
            self.first_content_emitted = true;
        }
        Ok(())
    }

    /// Sends the events that finish a block's item, the whole item last.
    fn close_block(&mut self, out: &mut Vec<u8>, block_index: usize) {
        let Some(index) = self.open_blocks.get_mut(block_index).and_then(Option::take) else {
            return;
        };
        let item_ref = self.item_ref(index);
        let Some(output) = self.items.get_mut(index) else {
            return;
        };
        output.done = true;
        let mut events: Vec<(&'static str, String)> = Vec::with_capacity(3);
        match &output.item {
            Item::Message { text } => {
                let mut members = format!("{item_ref},\"content_index\":0,\"text\":");
                push_json_string(&mut members, text);
                members.push_str(",\"logprobs\":[]");
                events.push(("response.output_text.done", members));
                let mut members = format!("{item_ref},\"content_index\":0,\"part\":");
                render_text_part(&mut members, text);
                events.push(("response.content_part.done", members));
            }
            Item::FunctionCall {
                arguments,
                custom: true,
                ..
            } => {
                let input = tool_names::custom_input(arguments);
                let mut members = format!("{item_ref},\"delta\":");
                push_json_string(&mut members, &input);
                events.push(("response.custom_tool_call_input.delta", members));
                let mut members = format!("{item_ref},\"input\":");
                push_json_string(&mut members, &input);
                events.push(("response.custom_tool_call_input.done", members));
            }
            Item::FunctionCall {
                name, arguments, ..
            } => {
                let mut members = format!("{item_ref},\"name\":");
                push_json_string(&mut members, name);
                members.push_str(",\"arguments\":");
                push_json_string(&mut members, arguments);
                events.push(("response.function_call_arguments.done", members));
            }
            Item::Reasoning {
                text,
                summary_open: true,
                ..
            } => {
                let mut members = format!("{item_ref},\"summary_index\":0,\"text\":");
                push_json_string(&mut members, text);
                events.push(("response.reasoning_summary_text.done", members));
                let mut members = format!("{item_ref},\"summary_index\":0,\"part\":");
                render_summary_part(&mut members, text);
                events.push(("response.reasoning_summary_part.done", members));
            }
            Item::Reasoning { .. } => {}
        }
        let mut members = format!("\"output_index\":{index},\"item\":");
        self.context
            .render_item(&mut members, &output.item, index, "completed", true);
        events.push(("response.output_item.done", members));
        for (kind, members) in events {
            self.emit(out, kind, &members);
        }
    }

    fn close_all(&mut self, out: &mut Vec<u8>) {
        for block_index in 0..self.open_blocks.len() {
            self.close_block(out, block_index);
        }
    }

    /// `response.completed`, or `response.incomplete` when Bedrock stopped on a limit or a filter.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_all(out);
        let state =
            ResponseState::finished(self.stop_reason.as_deref(), self.usage.unwrap_or_default());
        let kind = if matches!(
            state,
            ResponseState::Finished {
                incomplete_reason: Some(_),
                ..
            }
        ) {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit_response(out, kind, state);
        self.finished = true;
    }
}

impl FrameTranslator for ResponsesStreamTranslator {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(TokenUsage::from)
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        if let Err(error) = self.handle_event(frame, out) {
            self.fail(out, &error);
        }
    }

    /// `response.failed` with the error, then an `error` event, on which the SDKs raise.
    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        self.start(out);
        self.emit_response(out, "response.failed", ResponseState::Failed(error));
        let mut members = String::with_capacity(128 + 2 * error.message.len());
        let code = error
            .code
            .as_deref()
            .unwrap_or_else(|| failure_code(error.kind));
        members.push_str("\"code\":");
        push_json_string(&mut members, code);
        members.push_str(",\"message\":");
        push_json_string(&mut members, &error.message);
        members.push_str(",\"param\":null,\"error\":{\"type\":");
        push_json_string(&mut members, errors::openai_type(error.kind));
        members.push_str(",\"code\":");
        push_json_string(&mut members, code);
        members.push_str(",\"message\":");
        push_json_string(&mut members, &error.message);
        members.push_str(",\"param\":null}");
        self.emit(out, "error", &members);
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        if self.stop_reason.is_some() {
            // Bedrock's usage event did not come; the response is complete without it.
            self.complete(out);
        } else {
            self.fail(out, &GatewayError::stream_ended_early());
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

//! A Responses request: checked, then translated into a Converse request (reasoning the caller
//! carries restored, hosted tools dropped or refused); and what the response repeats of it.

use super::*;

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
    translate_for(request, hosted, false)
}

/// As [`translate`], for a model that can search the web (`grounds`: Amazon Nova): OpenAI's
/// hosted `web_search` becomes Nova's web grounding instead of being left out or refused.
pub fn translate_for<'r>(
    request: &'r ResponsesRequest<'_>,
    hosted: HostedTools,
    grounds: bool,
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
        grounds,
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
    /// The model searches the web itself (Nova's web grounding).
    grounds: bool,
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
            // Nova's grounding searches the live web: not for a caller that asked for no live access.
            web if seen.grounds
                && WEB_SEARCH_TOOLS.contains(&web)
                && tool.external_web_access != Some(false) =>
            {
                if !specs.iter().any(|t| matches!(t, Tool::SystemTool(_))) {
                    specs.push(Tool::SystemTool(SystemTool {
                        name: bedrock::NOVA_GROUNDING,
                    }));
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

pub(super) fn carry_reasoning(
    text: &str,
    signature: Option<&str>,
    redacted: Option<&str>,
) -> Option<String> {
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

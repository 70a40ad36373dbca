//! A Chat Completions request: checked, then translated into a Converse request.

use super::*;

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

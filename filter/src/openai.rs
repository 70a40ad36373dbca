//! OpenAI Chat Completions <-> Bedrock Converse.

use crate::bedrock::{
    self, ContentBlock, ConverseRequest, ConverseResponse, InferenceConfig, Message, Role, SystemBlock, Usage,
};
use crate::errors::GatewayError;
use crate::eventstream::{DecodeError, Decoder, Frame};
use serde::{Deserialize, Serialize};
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
}

#[derive(Debug, Deserialize)]
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
    #[serde(borrow, default)]
    pub content: Option<MessageContent<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<ContentPart<'a>>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
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
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

pub fn parse_request(body: &[u8]) -> Result<ChatCompletionRequest<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid_request("The request body is empty; expected a JSON object."));
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid chat completion request: {e}")))
}

/// Translates a parsed request into a Converse body borrowing the request's text.
pub fn to_converse<'r>(request: &'r ChatCompletionRequest<'_>) -> Result<ConverseRequest<'r>, GatewayError> {
    if request.messages.is_empty() {
        return Err(GatewayError::invalid_request("`messages` must contain at least one message."));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Message<'r>> = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.iter().enumerate() {
        let role = match message.role {
            ChatRole::System | ChatRole::Developer => {
                for text in content_texts(message, index)? {
                    system.push(SystemBlock::Text(text));
                }
                continue;
            }
            ChatRole::User => Role::User,
            ChatRole::Assistant => Role::Assistant,
            ChatRole::Tool | ChatRole::Function => {
                return Err(GatewayError::invalid_request(format!(
                    "messages[{index}]: tool messages are not supported by this gateway yet."
                )))
            }
        };
        let blocks = content_texts(message, index)?.into_iter().map(ContentBlock::Text);
        // Converse wants user and assistant turns to alternate: merge consecutive turns of one role.
        match messages.last_mut() {
            Some(previous) if previous.role == role => previous.content.extend(blocks),
            _ => messages.push(Message { role, content: blocks.collect() }),
        }
    }
    messages.retain(|m| !m.content.is_empty());
    if messages.is_empty() {
        return Err(GatewayError::invalid_request(
            "`messages` must contain at least one user or assistant message with content.",
        ));
    }

    let stop_sequences = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_ref()],
        Some(Stop::Many(list)) => list.iter().map(Cow::as_ref).collect(),
    };
    for (name, value, range) in [
        ("temperature", request.temperature, 0.0..=2.0),
        ("top_p", request.top_p, 0.0..=1.0),
    ] {
        if let Some(v) = value.filter(|v| !range.contains(v)) {
            return Err(GatewayError::invalid_request(format!(
                "`{name}` must be between {} and {}, got {v}.",
                range.start(),
                range.end()
            )));
        }
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
    })
}

/// The text pieces of a message: a string, or its `text` parts.
fn content_texts<'r>(message: &'r ChatMessage<'_>, index: usize) -> Result<Vec<&'r str>, GatewayError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![text.as_ref()]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(part_index, part)| match (part.kind.as_ref(), &part.text) {
                ("text", Some(text)) if text.is_empty() => None,
                ("text", Some(text)) => Some(Ok(text.as_ref())),
                ("text", None) => Some(Err(GatewayError::invalid_request(format!(
                    "messages[{index}].content[{part_index}]: a text part needs a `text` string."
                )))),
                (other, _) => Some(Err(GatewayError::invalid_request(format!(
                    "messages[{index}].content[{part_index}]: content parts of type `{other}` are not supported yet."
                )))),
            })
            .collect(),
    }
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
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        let total = if u.total_tokens > 0 { u.total_tokens } else { u.input_tokens + u.output_tokens };
        UsageOut { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens, total_tokens: total }
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

/// Renders a Converse response as a `chat.completion`.
pub fn from_converse_response(body: &[u8], context: &ResponseContext) -> Result<Vec<u8>, GatewayError> {
    let response: ConverseResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::upstream(format!("Bedrock returned an unreadable Converse response: {e}")))?;
    let message = response
        .output
        .and_then(|o| o.message)
        .ok_or_else(|| GatewayError::upstream("Bedrock's Converse response has no output message."))?;
    let mut texts = message.content.into_iter().filter_map(|block| block.text);
    let content = match (texts.next(), texts.next()) {
        (None, _) => None,
        (Some(only), None) => Some(only),
        (Some(first), Some(second)) => {
            let mut joined = first.into_owned();
            joined.push_str(&second);
            texts.for_each(|t| joined.push_str(&t));
            Some(Cow::Owned(joined))
        }
    };
    let completion = ChatCompletion {
        id: format!("chatcmpl-{}", context.id),
        object: "chat.completion",
        created: context.created,
        model: &context.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage { role: "assistant", content },
            finish_reason: finish_reason(response.stop_reason),
            logprobs: None,
        }],
        usage: response.usage.unwrap_or_default().into(),
    };
    serde_json::to_vec(&completion)
        .map_err(|e| GatewayError::upstream(format!("could not render the chat completion: {e}")))
}

// ---- Streaming --------------------------------------------------------------------------

/// Turns a ConverseStream event stream into OpenAI `chat.completion.chunk` SSE events,
/// one body chunk at a time.
pub struct ChatStreamTranslator {
    decoder: Decoder,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":` rendered once.
    chunk_prefix: String,
    include_usage: bool,
    saw_message_stop: bool,
    finished: bool,
}

impl ChatStreamTranslator {
    pub fn new(context: &ResponseContext, include_usage: bool, max_frame_len: usize) -> Self {
        let mut chunk_prefix = String::with_capacity(128);
        chunk_prefix.push_str("{\"id\":");
        push_json_string(&mut chunk_prefix, &format!("chatcmpl-{}", context.id));
        let _ = write!(chunk_prefix, ",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":", context.created);
        push_json_string(&mut chunk_prefix, &context.model);
        chunk_prefix.push_str(",\"choices\":");
        ChatStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            chunk_prefix,
            include_usage,
            saw_message_stop: false,
            finished: false,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Translates one upstream body chunk into the SSE bytes to send downstream.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        if !self.finished {
            let mut decoder = std::mem::take(&mut self.decoder);
            let result = decoder.decode(chunk, &mut |frame| self.on_frame(frame, &mut out));
            self.decoder = decoder;
            if let Err(error) = result {
                self.fail_stream(&mut out, &stream_decode_error(&error));
            }
        }
        if end_of_stream && !self.finished {
            if self.saw_message_stop {
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.finished = true;
            } else {
                let error = GatewayError::upstream("Bedrock's stream ended before the message was complete.");
                self.fail_stream(&mut out, &error);
            }
        }
        out
    }

    fn on_frame(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if frame.is_exception() {
            let message = bedrock::error_message(frame.payload);
            let error = GatewayError::from_bedrock(0, frame.headers.exception_type, &message);
            self.fail_stream(out, &error);
            return;
        }
        match frame.headers.event_type {
            Some("messageStart") => self.emit_delta(out, "{\"role\":\"assistant\",\"content\":\"\"}", None),
            Some("contentBlockDelta") => {
                match serde_json::from_slice::<bedrock::ContentBlockDeltaEvent<'_>>(frame.payload) {
                    Ok(event) => {
                        if let Some(text) = event.delta.and_then(|d| d.text) {
                            let mut delta = String::with_capacity(text.len() + 16);
                            delta.push_str("{\"content\":");
                            push_json_string(&mut delta, &text);
                            delta.push('}');
                            self.emit_delta(out, &delta, None);
                        }
                    }
                    Err(e) => self.fail_stream(out, &unreadable_event("contentBlockDelta", &e)),
                }
            }
            Some("messageStop") => match serde_json::from_slice::<bedrock::MessageStopEvent<'_>>(frame.payload) {
                Ok(event) => {
                    self.saw_message_stop = true;
                    self.emit_delta(out, "{}", Some(finish_reason(event.stop_reason)));
                }
                Err(e) => self.fail_stream(out, &unreadable_event("messageStop", &e)),
            },
            Some("metadata") => {
                if !self.include_usage {
                    return;
                }
                match serde_json::from_slice::<bedrock::MetadataEvent>(frame.payload) {
                    Ok(event) => {
                        let usage = UsageOut::from(event.usage.unwrap_or_default());
                        let _ = serde_json::to_string(&usage).map(|usage| {
                            out.extend_from_slice(b"data: ");
                            out.extend_from_slice(self.chunk_prefix.as_bytes());
                            out.extend_from_slice(b"[],\"usage\":");
                            out.extend_from_slice(usage.as_bytes());
                            out.extend_from_slice(b"}\n\n");
                        });
                    }
                    Err(e) => self.fail_stream(out, &unreadable_event("metadata", &e)),
                }
            }
            // contentBlockStart/Stop carry nothing a text-only chunk needs.
            _ => {}
        }
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

    /// Ends the client's stream with an OpenAI error event; the SDK raises `APIError` on it.
    fn fail_stream(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error.to_openai_json());
        out.extend_from_slice(b"\n\n");
        self.finished = true;
    }
}

fn stream_decode_error(error: &DecodeError) -> GatewayError {
    GatewayError::upstream(format!("Bedrock's event stream is corrupt: {error}"))
}

fn unreadable_event(event: &str, error: &serde_json::Error) -> GatewayError {
    GatewayError::upstream(format!("Bedrock sent an unreadable {event} event: {error}"))
}

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: Option<&str> = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        if let Some(piece) = text.get(start..i) {
            out.push_str(piece);
        }
        match escape {
            Some(escaped) => out.push_str(escaped),
            None => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        start = i + 1;
    }
    if let Some(rest) = text.get(start..) {
        out.push_str(rest);
    }
    out.push('"');
}

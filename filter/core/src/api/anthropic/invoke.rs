//! Anthropic's Messages API on Bedrock InvokeModel: the body passes through with the few
//! changes Bedrock needs, and streams come back as Anthropic's own SSE events.
//!
//! Bedrock wants `anthropic_version: "bedrock-2023-05-31"`, no `model` (it is in the path)
//! and no `stream` (it is the operation); the `anthropic-beta` header becomes the body array
//! `anthropic_beta`, keeping only the flags Bedrock accepts (see `betas`). Every other member is
//! copied byte for byte, so new Anthropic features work without a gateway release.

use crate::bedrock;
use crate::bedrock::betas::{self, BetaPolicy, SortedFlags};
use crate::bedrock::eventstream::{Decoder, Frame, FrameTranslator};
use crate::errors::{ApiFormat, GatewayError};
use crate::json::push_json_string;
use crate::json::raw::RawObject;
use crate::translated::{TokenUsage, TranslatedBody};
use base64::Engine as _;
use serde::Deserialize;
use std::borrow::Cow;

pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The InvokeModel body and what the response needs to know.
#[derive(Debug)]
pub struct InvokeRequest {
    pub body: Vec<u8>,
    pub model: String,
    pub stream: bool,
    /// The caller's beta flags Bedrock would have refused, left out (comma-separated).
    pub dropped_betas: Option<String>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

fn parse_object(body: &[u8]) -> Result<RawObject<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    RawObject::parse(body)
        .map_err(|e| invalid(format!("The request body is not a valid JSON object: {e}")))
}

fn field<'a, T: Deserialize<'a>>(
    object: &RawObject<'a>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, GatewayError> {
    object
        .get_as(name)
        .map_err(|_| invalid(format!("{name}: Input should be {expected}")))
}

fn required_model(object: &RawObject<'_>) -> Result<String, GatewayError> {
    let model: Cow<'_, str> = field(object, "model", "a valid string")?
        .ok_or_else(|| invalid("model: Field required"))?;
    bedrock::validate_model_id(&model).map_err(|why| invalid(format!("model: {why}")))?;
    Ok(model.into_owned())
}

/// `anthropic-beta: a, b` joined with any `anthropic_beta` already in the body.
pub fn requested_betas(
    object: &RawObject<'_>,
    beta_header: Option<&str>,
) -> Result<Vec<String>, GatewayError> {
    let mut flags: Vec<String> =
        field::<Vec<String>>(object, "anthropic_beta", "a list of strings")?.unwrap_or_default();
    for flag in betas::header_flags(beta_header) {
        if !flags.iter().any(|f| f == flag) {
            flags.push(flag.to_owned());
        }
    }
    Ok(flags)
}

/// The InvokeModel body: the caller's members less `model`, `stream` and the flags' own, with
/// the fields only dropped flags allow taken out, and the forwarded flags and version added.
fn write_invoke_body(
    mut object: RawObject<'_>,
    flags: &SortedFlags,
    default_max_tokens: bool,
) -> Result<Vec<u8>, GatewayError> {
    object.remove("model");
    object.remove("stream");
    object.remove("anthropic_beta");
    if betas::strips_context_management(flags) {
        object.remove("context_management");
    }
    let members: Vec<(&str, &str)> = ["system", "messages", "tools"]
        .into_iter()
        .filter_map(|name| object.get(name).map(|raw| (name, raw.get())))
        .collect();
    let rewritten = betas::strip_unflagged_fields(&members, flags);
    let replace: Vec<(&str, &str)> = rewritten
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let version = format!("\"{BEDROCK_ANTHROPIC_VERSION}\"");
    let mut extra: Vec<(&str, &str)> = Vec::with_capacity(3);
    if !object.contains("anthropic_version") {
        extra.push(("anthropic_version", &version));
    }
    // InvokeModel bodies need max_tokens; counting input tokens does not depend on it.
    if default_max_tokens && !object.contains("max_tokens") {
        extra.push(("max_tokens", "1"));
    }
    let forwarded = if flags.forwarded.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&flags.forwarded).map_err(|e| invalid(e.to_string()))?)
    };
    if let Some(forwarded) = forwarded.as_deref() {
        extra.push(("anthropic_beta", forwarded));
    }
    Ok(object.write_with(&extra, &replace))
}

/// Rewrites a Messages request into the InvokeModel body Bedrock expects.
pub fn prepare_invoke(
    body: &[u8],
    beta_header: Option<&str>,
    policy: &BetaPolicy,
) -> Result<InvokeRequest, GatewayError> {
    let object = parse_object(body)?;
    let model = required_model(&object)?;
    let stream = field::<Option<bool>>(&object, "stream", "a valid boolean")?
        .flatten()
        .unwrap_or(false);
    match field::<i64>(&object, "max_tokens", "a valid integer")? {
        None => return Err(invalid("max_tokens: Field required")),
        Some(n) if n < 1 => {
            return Err(invalid(
                "max_tokens: Input should be greater than or equal to 1",
            ))
        }
        Some(_) => {}
    }
    match object
        .get("messages")
        .map(|raw| raw.get().trim_start().starts_with('['))
    {
        None => return Err(invalid("messages: Field required")),
        Some(false) => return Err(invalid("messages: Input should be a valid list")),
        Some(true) => {}
    }
    let flags = policy.sort(&requested_betas(&object, beta_header)?);
    let body = write_invoke_body(object, &flags, false)?;
    Ok(InvokeRequest {
        body,
        model,
        stream,
        dropped_betas: flags.dropped_list(),
    })
}

/// A count_tokens request as Bedrock CountTokens input (`invokeModel.body` is a base64 blob).
pub struct CountTokensRequest {
    pub body: Vec<u8>,
    pub model: String,
    pub dropped_betas: Option<String>,
}

/// Wraps a count_tokens request as Bedrock CountTokens input.
pub fn prepare_count_tokens(
    body: &[u8],
    beta_header: Option<&str>,
    policy: &BetaPolicy,
) -> Result<CountTokensRequest, GatewayError> {
    let object = parse_object(body)?;
    let model = required_model(&object)?;
    if object.get("messages").is_none() {
        return Err(invalid("messages: Field required"));
    }
    let flags = policy.sort(&requested_betas(&object, beta_header)?);
    let invoke_body = write_invoke_body(object, &flags, true)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(invoke_body);
    let wrapped = format!(r#"{{"input":{{"invokeModel":{{"body":"{encoded}"}}}}}}"#);
    Ok(CountTokensRequest {
        body: wrapped.into_bytes(),
        model,
        dropped_betas: flags.dropped_list(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountTokensResponse {
    input_tokens: u64,
}

pub fn count_tokens_response(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let parsed: CountTokensResponse = serde_json::from_slice(body).map_err(|e| {
        GatewayError::upstream(format!(
            "Bedrock returned an unreadable CountTokens response: {e}"
        ))
    })?;
    Ok(format!(r#"{{"input_tokens":{}}}"#, parsed.input_tokens).into_bytes())
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    out
}

/// A Messages response passes through; its `model` reports what the caller asked for.
pub fn rewrite_message_model(
    body: &[u8],
    requested_model: &str,
) -> Result<TranslatedBody, GatewayError> {
    let object = RawObject::parse(body).map_err(|e| {
        GatewayError::upstream(format!(
            "Bedrock returned an unreadable Messages response: {e}"
        ))
    })?;
    if !object.contains("content") {
        return Err(GatewayError::upstream(
            "Bedrock's Messages response has no content.",
        ));
    }
    // Only the `usage` member is parsed: the rest passes through as raw text.
    let usage = object
        .get_as::<AnthropicUsage>("usage")
        .ok()
        .flatten()
        .map(|reported| {
            let mut usage = TokenUsage::default();
            reported.merge_into(&mut usage);
            usage
        });
    Ok(TranslatedBody {
        body: object.write_with(&[], &[("model", &json_string(requested_model))]),
        usage,
    })
}

// ---- Streaming --------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChunkPayload<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Turns InvokeModelWithResponseStream `chunk` frames into Anthropic SSE events.
///
/// Bedrock's `amazon-bedrock-invocationMetrics` member of `message_stop` is removed, so
/// callers see exactly Anthropic's events; usage is in `message_start` and `message_delta`.
pub struct AnthropicStreamTranslator {
    decoder: Decoder,
    model_json: String,
    saw_message_stop: bool,
    finished: bool,
    /// The status of the error the stream ended with, if it failed.
    failure: Option<u16>,
    usage: Option<TokenUsage>,
    first_content_emitted: bool,
}

#[derive(Deserialize)]
struct MessageStartUsage {
    message: AnthropicUsageHolder,
}

#[derive(Deserialize)]
struct DeltaUsage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl AnthropicStreamTranslator {
    pub fn new(requested_model: &str, max_frame_len: usize) -> Self {
        AnthropicStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            model_json: json_string(requested_model),
            saw_message_stop: false,
            finished: false,
            failure: None,
            usage: None,
            first_content_emitted: false,
        }
    }

    fn record_usage(&mut self, report: Option<AnthropicUsage>) {
        if let Some(report) = report {
            report.merge_into(self.usage.get_or_insert_with(Default::default));
        }
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        if frame.headers.event_type != Some("chunk") {
            return;
        }
        let event = match serde_json::from_slice::<ChunkPayload<'_>>(frame.payload)
            .map_err(|e| e.to_string())
            .and_then(|chunk| {
                base64::engine::general_purpose::STANDARD
                    .decode(chunk.bytes.as_bytes())
                    .map_err(|e| e.to_string())
            }) {
            Ok(event) => event,
            Err(why) => {
                return self.fail(
                    out,
                    &GatewayError::upstream(format!("Bedrock sent an unreadable chunk: {why}")),
                )
            }
        };
        let kind = match serde_json::from_slice::<EventType<'_>>(&event) {
            Ok(parsed) => parsed.kind.into_owned(),
            Err(e) => {
                return self.fail(
                    out,
                    &GatewayError::upstream(format!("Bedrock sent an event without a type: {e}")),
                )
            }
        };
        match kind.as_str() {
            "message_start" => {
                self.record_usage(
                    serde_json::from_slice::<MessageStartUsage>(&event)
                        .ok()
                        .and_then(|m| m.message.usage),
                );
            }
            "message_delta" => self.record_usage(
                serde_json::from_slice::<DeltaUsage>(&event)
                    .ok()
                    .and_then(|d| d.usage),
            ),
            "content_block_delta" | "content_block_start" => self.first_content_emitted = true,
            _ => {}
        }
        match kind.as_str() {
            "message_start" => match self.with_model(&event) {
                Ok(rewritten) => write_event(out, "message_start", &rewritten),
                Err(error) => self.fail(out, &error),
            },
            "message_stop" => {
                self.saw_message_stop = true;
                write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
            }
            "error" => {
                write_event(out, "error", &event);
                self.finished = true;
            }
            other => write_event(out, other, &event),
        }
    }

    /// `message_start.message.model` names the model the caller asked for.
    fn with_model(&self, event: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let unreadable = |e: serde_json::Error| {
            GatewayError::upstream(format!("Bedrock sent an unreadable message_start: {e}"))
        };
        let object = RawObject::parse(event).map_err(unreadable)?;
        let Some(message) = object.get("message") else {
            return Ok(event.to_vec());
        };
        let message = RawObject::parse(message.get().as_bytes()).map_err(unreadable)?;
        let message = String::from_utf8(message.write_with(&[], &[("model", &self.model_json)]))
            .map_err(|e| GatewayError::upstream(e.to_string()))?;
        Ok(object.write_with(&[], &[("message", &message)]))
    }
}

impl FrameTranslator for AnthropicStreamTranslator {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Usage from `message_start` (input, cache) updated by `message_delta` (output).
    fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        self.handle_event(frame, out);
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        self.failure = Some(error.status);
        write_event(out, "error", &error.to_json(ApiFormat::Anthropic));
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        if self.saw_message_stop {
            self.finished = true;
        } else {
            self.fail(out, &GatewayError::stream_ended_early());
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn failure(&self) -> Option<u16> {
        self.failure
    }
}

fn write_event(out: &mut Vec<u8>, kind: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Anthropic's usage object (in messages, `message_start` and `message_delta`).
#[derive(Debug, Default, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Folds this report into `usage`: later reports (message_delta) update what they carry.
    pub fn merge_into(&self, usage: &mut TokenUsage) {
        if let Some(v) = self.input_tokens {
            usage.input = v;
        }
        if let Some(v) = self.output_tokens {
            usage.output = v;
        }
        if let Some(v) = self.cache_creation_input_tokens {
            usage.cache_write = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            usage.cache_read = v;
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AnthropicUsageHolder {
    #[serde(default)]
    pub usage: Option<AnthropicUsage>,
}

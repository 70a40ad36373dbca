//! Bedrock Runtime wire shapes: paths, Converse request/response, stream events, errors.

use serde::{Deserialize, Serialize};

/// The longest model identifier Bedrock accepts (ARNs of imported or provisioned models included).
const MAX_MODEL_ID_LEN: usize = 2048;

/// The Bedrock operations the gateway calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Converse,
    ConverseStream,
    Invoke,
    InvokeWithResponseStream,
    CountTokens,
}

impl Operation {
    fn path_suffix(self) -> &'static str {
        match self {
            Operation::Converse => "converse",
            Operation::ConverseStream => "converse-stream",
            Operation::Invoke => "invoke",
            Operation::InvokeWithResponseStream => "invoke-with-response-stream",
            Operation::CountTokens => "count-tokens",
        }
    }
}

/// Rejects model ids that could not be a Bedrock id or could change the upstream path.
/// ARNs carry `/` and `:`, which are legal: they are percent-encoded inside one segment.
pub fn validate_model_id(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("model must not be empty".into());
    }
    if model.len() > MAX_MODEL_ID_LEN {
        return Err(format!("model id is longer than {MAX_MODEL_ID_LEN} characters"));
    }
    if model == "." || model == ".." {
        return Err("model id must not be a relative path segment".into());
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'+');
    if let Some(bad) = model.bytes().find(|b| !allowed(*b)) {
        return Err(format!(
            "model id contains a character Bedrock does not accept: {:?}",
            char::from(bad)
        ));
    }
    Ok(())
}

/// `/model/{percent-encoded id}/{operation}`. The id is one path segment: `/` and `:` are encoded.
pub fn model_path(model_id: &str, operation: Operation) -> String {
    format!("/model/{}/{}", crate::sigv4::uri_encode(model_id.as_bytes()), operation.path_suffix())
}

// ---- Converse request -------------------------------------------------------------------

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest<'a> {
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemBlock<'a>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    pub inference_config: InferenceConfig<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Message<'a> {
    pub role: Role,
    pub content: Vec<ContentBlock<'a>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlock<'a> {
    Text(&'a str),
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum SystemBlock<'a> {
    Text(&'a str),
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

// ---- Converse response ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse<'a> {
    #[serde(borrow)]
    pub output: Option<ConverseOutput<'a>>,
    pub stop_reason: Option<&'a str>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct ConverseOutput<'a> {
    #[serde(borrow)]
    pub message: Option<OutputMessage<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct OutputMessage<'a> {
    #[serde(borrow, default)]
    pub content: Vec<OutputContentBlock<'a>>,
}

/// One block of the model's output; blocks the gateway does not translate are kept raw.
#[derive(Debug, Deserialize)]
pub struct OutputContentBlock<'a> {
    #[serde(borrow, default)]
    pub text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

// ---- ConverseStream events --------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ContentBlockDeltaEvent<'a> {
    #[serde(borrow)]
    pub delta: Option<Delta<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStopEvent<'a> {
    pub stop_reason: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct MetadataEvent {
    pub usage: Option<Usage>,
}

// ---- Errors ------------------------------------------------------------------------------

/// Bedrock's error body, `{"message": "..."}` (some services say `Message`).
#[derive(Debug, Deserialize)]
pub struct ErrorBody<'a> {
    #[serde(borrow, alias = "Message")]
    pub message: Option<std::borrow::Cow<'a, str>>,
}

/// Extracts the message of a Bedrock error body, falling back to the raw text.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(ErrorBody { message: Some(message) }) => message.into_owned(),
        _ => {
            let text = String::from_utf8_lossy(body);
            let trimmed = text.trim();
            if trimmed.is_empty() {
                "the upstream returned an error without a message".to_owned()
            } else {
                trimmed.chars().take(1024).collect()
            }
        }
    }
}

/// `x-amzn-errortype` may carry a `:http://internal.amazon.com/...` suffix; keep the name.
pub fn error_type_name(header: &str) -> &str {
    header.split(':').next().unwrap_or(header).trim()
}

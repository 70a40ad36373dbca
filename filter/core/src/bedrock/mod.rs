//! Bedrock Runtime wire shapes: paths, Converse request/response, stream events, errors.

pub mod betas;
pub mod eventstream;
pub mod options;

use crate::errors::GatewayError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

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

/// Whether a model id (plain, a cross-region profile such as `us.anthropic...`, or an ARN naming
/// one) is one of Anthropic's Claude models, which take Anthropic's beta flags. An application
/// inference profile's ARN does not say: it counts as not Claude.
pub fn is_anthropic_model(model: &str) -> bool {
    let last = model.rsplit('/').next().unwrap_or(model);
    last.split('.').any(|part| part == "anthropic")
}

/// The model families Bedrock caches prompts for through Converse's `cachePoint` (AWS's list of
/// explicit prompt caching): Claude 3.7 Sonnet, 3.5 Haiku and every Claude 4 model, and Amazon Nova.
/// Anything else (Claude 3.5 Sonnet v2 had caching in preview only, Llama, application inference
/// profiles whose model the id does not show) gets no cache points from the gateway: a model that
/// cannot cache refuses them.
const CACHING_MODELS: &[&str] = &[
    "anthropic.claude-3-7-sonnet",
    "anthropic.claude-3-5-haiku",
    "anthropic.claude-sonnet-4",
    "anthropic.claude-opus-4",
    "anthropic.claude-haiku-4",
    "amazon.nova-micro",
    "amazon.nova-lite",
    "amazon.nova-pro",
    "amazon.nova-premier",
    "amazon.nova-2-lite",
];

/// Whether `model` (an id, a cross-region profile such as `us.…`, or a foundation-model or
/// system inference-profile ARN) is one Bedrock caches prompts for.
pub fn caches_prompts(model: &str) -> bool {
    let id = model.rsplit('/').next().unwrap_or(model);
    let id = id
        .split_once('.')
        .filter(|(prefix, _)| {
            matches!(
                *prefix,
                "us" | "eu" | "apac" | "global" | "jp" | "au" | "ca" | "us-gov"
            )
        })
        .map_or(id, |(_, rest)| rest);
    CACHING_MODELS.iter().any(|family| id.starts_with(family))
}

impl ConverseRequest<'_> {
    /// Lets `model` search the web (Nova's web grounding); other models cannot, and the caller is
    /// told so rather than answered without a search.
    pub fn add_web_grounding(&mut self, model: &str) -> Result<(), GatewayError> {
        if !is_nova_model(model) {
            return Err(GatewayError::invalid_request(format!(
                "Web search is not available for {model}: on Bedrock only Amazon Nova models search the web (web grounding)."
            )));
        }
        let grounding = Tool::SystemTool(SystemTool {
            name: NOVA_GROUNDING,
        });
        match &mut self.tool_config {
            Some(config) => config.tools.push(grounding),
            None => {
                self.tool_config = Some(ToolConfig {
                    tools: vec![grounding],
                    tool_choice: None,
                })
            }
        }
        Ok(())
    }

    /// Cache points where an agent's next turn can reuse its prompt: after the system prompt,
    /// after the tools, and at the end of the conversation so far (three of Bedrock's four). A
    /// request that places any itself is left as its caller wrote it.
    pub fn insert_cache_points(&mut self) {
        let placed = self
            .system
            .iter()
            .any(|b| matches!(b, SystemBlock::CachePoint(_)))
            || self.messages.iter().any(|m| {
                m.content
                    .iter()
                    .any(|b| matches!(b, ContentBlock::CachePoint(_)))
            })
            || self
                .tool_config
                .as_ref()
                .is_some_and(|c| c.tools.iter().any(|t| matches!(t, Tool::CachePoint(_))));
        if placed {
            return;
        }
        if !self.system.is_empty() {
            self.system
                .push(SystemBlock::CachePoint(CachePoint::default()));
        }
        // Tool definitions are what a cache point after the tools keeps; a system tool alone
        // (web grounding) defines nothing to cache.
        if let Some(config) = self
            .tool_config
            .as_mut()
            .filter(|c| c.tools.iter().any(|t| matches!(t, Tool::ToolSpec(_))))
        {
            config.tools.push(Tool::CachePoint(CachePoint::default()));
        }
        if let Some(last) = self.messages.last_mut().filter(|m| !m.content.is_empty()) {
            last.content
                .push(ContentBlock::CachePoint(CachePoint::default()));
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
        return Err(format!(
            "model id is longer than {MAX_MODEL_ID_LEN} characters"
        ));
    }
    if model == "." || model == ".." {
        return Err("model id must not be a relative path segment".into());
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'+');
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
    let suffix = operation.path_suffix();
    // Sized for the worst case (every byte percent-encoded), so the path is built without regrowing.
    let mut path = String::with_capacity("/model//".len() + 3 * model_id.len() + suffix.len());
    path.push_str("/model/");
    crate::aws::sigv4::uri_encode_into(model_id.as_bytes(), &mut path);
    path.push('/');
    path.push_str(suffix);
    path
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
    /// Model-specific fields (`thinking`, `top_k`, `reasoning_config`, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub additional_model_request_fields: serde_json::Map<String, serde_json::Value>,
    /// Structured output: the reply must follow a JSON schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    /// The backend's guardrail, latency, service tier and request metadata.
    #[serde(flatten)]
    pub options: crate::bedrock::options::ConverseOptions<'a>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputConfig {
    pub text_format: OutputFormat,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub structure: OutputFormatStructure,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputFormatStructure {
    pub json_schema: JsonSchemaDefinition,
}

/// Bedrock takes the schema as a JSON string.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonSchemaDefinition {
    pub schema: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
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
    Text(Cow<'a, str>),
    Image(Image<'a>),
    ToolUse(ToolUse<'a>),
    ToolResult(ToolResult<'a>),
    ReasoningContent(ReasoningContent<'a>),
    Document(Document<'a>),
    CachePoint(CachePoint),
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Document<'a> {
    pub format: &'static str,
    pub name: String,
    pub source: DocumentSource<'a>,
    /// `{"enabled": true}`: the model cites the document in its reply (`citationsContent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<CitationsConfig>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CitationsConfig {
    pub enabled: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct DocumentSource<'a> {
    pub bytes: Cow<'a, str>,
}

/// Bedrock's document formats, from a MIME type.
pub fn document_format(media_type: &str) -> Option<&'static str> {
    match media_type.trim().to_ascii_lowercase().as_str() {
        "application/pdf" => Some("pdf"),
        "text/csv" => Some("csv"),
        "application/msword" => Some("doc"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Some("docx"),
        "application/vnd.ms-excel" => Some("xls"),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => Some("xlsx"),
        "text/html" => Some("html"),
        "text/plain" => Some("txt"),
        "text/markdown" => Some("md"),
        _ => None,
    }
}

/// Bedrock accepts document names of letters, digits, single spaces, hyphens, parentheses and
/// square brackets (200 at most): anything else becomes a space.
pub fn document_name(filename: &str) -> String {
    let stem = filename.rsplit_once('.').map_or(filename, |(stem, _)| stem);
    let mut name = String::with_capacity(stem.len());
    for c in stem.chars() {
        let allowed = c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']');
        let c = if allowed { c } else { ' ' };
        if !(c == ' ' && (name.is_empty() || name.ends_with(' '))) {
            name.push(c);
        }
    }
    let name: String = name.trim_end().chars().take(200).collect();
    if name.is_empty() {
        "document".to_owned()
    } else {
        name
    }
}

/// `{"format": "png", "source": {"bytes": "<base64>"}}`: the JSON protocol carries blobs as base64,
/// so base64 from the caller goes through without being decoded.
#[derive(Debug, Serialize, PartialEq)]
pub struct Image<'a> {
    pub format: &'static str,
    pub source: ImageSource<'a>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ImageSource<'a> {
    pub bytes: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse<'a> {
    pub tool_use_id: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub input: Box<RawValue>,
}

impl PartialEq for ToolUse<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.tool_use_id == other.tool_use_id
            && self.name == other.name
            && self.input.get() == other.input.get()
    }
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult<'a> {
    pub tool_use_id: Cow<'a, str>,
    pub content: Vec<ToolResultContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultContent<'a> {
    Text(Cow<'a, str>),
    Json(Box<RawValue>),
    Image(Image<'a>),
}

impl PartialEq for ToolResultContent<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ToolResultContent::Text(a), ToolResultContent::Text(b)) => a == b,
            (ToolResultContent::Json(a), ToolResultContent::Json(b)) => a.get() == b.get(),
            (ToolResultContent::Image(a), ToolResultContent::Image(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ReasoningContent<'a> {
    ReasoningText(ReasoningText<'a>),
    RedactedContent(Cow<'a, str>),
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ReasoningText<'a> {
    pub text: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CachePoint {
    #[serde(rename = "type")]
    pub kind: CachePointType,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CachePointType {
    #[default]
    Default,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum SystemBlock<'a> {
    Text(Cow<'a, str>),
    CachePoint(CachePoint),
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    pub tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Tool<'a> {
    ToolSpec(ToolSpec<'a>),
    /// A tool the model's provider runs (Nova's web grounding, `nova_grounding`).
    SystemTool(SystemTool),
    CachePoint(CachePoint),
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SystemTool {
    pub name: &'static str,
}

/// Nova's web grounding: the model searches the web and cites what it found (`citationsContent`
/// with web locations).
pub const NOVA_GROUNDING: &str = "nova_grounding";

/// Amazon Nova's text models (by id or inference profile), the models with web grounding.
pub fn is_nova_model(model: &str) -> bool {
    let last = model.rsplit('/').next().unwrap_or(model);
    last.split('.').any(|part| part.starts_with("nova-"))
        && last.split('.').any(|part| part == "amazon")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec<'a> {
    pub name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    pub input_schema: InputSchema,
}

impl PartialEq for ToolSpec<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.description == other.description
            && self.input_schema.json.get() == other.input_schema.json.get()
    }
}

#[derive(Debug, Serialize)]
pub struct InputSchema {
    pub json: Box<RawValue>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoice<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool<'a>),
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Empty {}

#[derive(Debug, Serialize, PartialEq)]
pub struct NamedTool<'a> {
    pub name: Cow<'a, str>,
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

/// Bedrock's image formats, from a MIME type such as `image/png`.
pub fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type.trim().to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// Merges a turn into the conversation: Converse wants user and assistant turns to alternate.
pub fn push_turn<'a>(messages: &mut Vec<Message<'a>>, role: Role, content: Vec<ContentBlock<'a>>) {
    if content.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(previous) if previous.role == role => previous.content.extend(content),
        _ => messages.push(Message { role, content }),
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

/// A Converse reply as the translations read it: its message, why it stopped, what it used.
#[derive(Debug)]
pub struct ConverseReply<'a> {
    pub message: OutputMessage<'a>,
    pub stop_reason: Option<&'a str>,
    pub usage: Option<Usage>,
}

impl<'a> ConverseReply<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, crate::errors::GatewayError> {
        use crate::errors::GatewayError;
        let response: ConverseResponse<'a> = serde_json::from_slice(body).map_err(|e| {
            GatewayError::upstream(format!(
                "Bedrock returned an unreadable Converse response: {e}"
            ))
        })?;
        let mut message = response.output.and_then(|o| o.message).ok_or_else(|| {
            GatewayError::upstream("Bedrock's Converse response has no output message.")
        })?;
        // A cited answer's text is in its citations block: every translation keeps the text.
        for block in &mut message.content {
            if let (None, Some(cited)) = (&block.text, &block.citations_content) {
                let text: String = cited.content.iter().map(|c| c.text.as_str()).collect();
                block.text = Some(Cow::Owned(text));
            }
        }
        Ok(ConverseReply {
            message,
            stop_reason: response.stop_reason,
            usage: response.usage,
        })
    }
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

/// One block of the model's output (a union: exactly one member is set).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputContentBlock<'a> {
    /// The block's text; for a `citationsContent` block, its generated text (see `ConverseReply::parse`).
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub citations_content: Option<CitationsContent>,
    #[serde(borrow, default)]
    pub tool_use: Option<OutputToolUse<'a>>,
    #[serde(borrow, default)]
    pub reasoning_content: Option<OutputReasoning<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputToolUse<'a> {
    #[serde(borrow)]
    pub tool_use_id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub input: &'a RawValue,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputReasoning<'a> {
    #[serde(borrow, default)]
    pub reasoning_text: Option<OutputReasoningText<'a>>,
    #[serde(borrow, default)]
    pub redacted_content: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct OutputReasoningText<'a> {
    #[serde(borrow, default)]
    pub text: Cow<'a, str>,
    #[serde(borrow, default)]
    pub signature: Option<Cow<'a, str>>,
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

impl From<Usage> for crate::translated::TokenUsage {
    fn from(u: Usage) -> Self {
        crate::translated::TokenUsage {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens,
            cache_write: u.cache_write_input_tokens,
        }
    }
}

// ---- ConverseStream events --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockStartEvent<'a> {
    #[serde(default)]
    pub content_block_index: usize,
    #[serde(borrow, default)]
    pub start: Option<BlockStart<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStart<'a> {
    #[serde(borrow, default)]
    pub tool_use: Option<ToolUseStart<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseStart<'a> {
    #[serde(borrow)]
    pub tool_use_id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockDeltaEvent<'a> {
    #[serde(default)]
    pub content_block_index: usize,
    #[serde(borrow)]
    pub delta: Option<Delta<'a>>,
}

/// A `citationsContent` block: the generated text, and the passages it cites.
#[derive(Debug, Deserialize)]
pub struct CitationsContent {
    #[serde(default)]
    pub content: Vec<CitationText>,
    #[serde(default)]
    pub citations: Vec<Citation>,
}

#[derive(Debug, Deserialize)]
pub struct CitationText {
    #[serde(default)]
    pub text: String,
}

/// One cited passage (and, streamed, the `citation` delta's shape too).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub source_content: Vec<CitationText>,
    #[serde(default)]
    pub location: Option<CitationLocation>,
}

impl Citation {
    /// The web page cited, as `(url, title)`: the citation's title, else the page's domain, else
    /// its URL. `None` for a citation of anything but a web page with a URL.
    pub fn web_page(&self) -> Option<(&str, &str)> {
        let web = self.location.as_ref()?.web.as_ref()?;
        let url = web.url.as_deref()?;
        let title = self
            .title
            .as_deref()
            .or(web.domain.as_deref())
            .unwrap_or(url);
        Some((url, title))
    }
}

/// Where a citation points (a union: one member is set).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CitationLocation {
    #[serde(default)]
    pub document_char: Option<DocumentSpan>,
    #[serde(default)]
    pub document_page: Option<DocumentSpan>,
    #[serde(default)]
    pub document_chunk: Option<DocumentSpan>,
    #[serde(default)]
    pub web: Option<WebLocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentSpan {
    #[serde(default)]
    pub document_index: u64,
    #[serde(default)]
    pub start: u64,
    #[serde(default)]
    pub end: u64,
}

#[derive(Debug, Deserialize)]
pub struct WebLocation {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_use: Option<ToolUseDelta<'a>>,
    #[serde(borrow, default)]
    pub reasoning_content: Option<ReasoningDelta<'a>>,
    #[serde(default)]
    pub citation: Option<Citation>,
}

#[derive(Debug, Deserialize)]
pub struct ToolUseDelta<'a> {
    #[serde(borrow, default)]
    pub input: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningDelta<'a> {
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub redacted_content: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockStopEvent {
    #[serde(default)]
    pub content_block_index: usize,
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
    pub message: Option<Cow<'a, str>>,
}

/// Extracts the message of a Bedrock error body, falling back to the raw text.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(ErrorBody {
            message: Some(message),
        }) => message.into_owned(),
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

//! OpenAI Chat Completions <-> Bedrock Converse: the request's wire types here, and one file per
//! direction: `request.rs` (checked and translated into Converse), `response.rs` (a whole answer)
//! and `stream.rs` (ConverseStream events as server-sent chunks). [`on_bedrock`] is the other way
//! to serve this API: OpenAI's own API on Bedrock, for OpenAI's models.

pub mod on_bedrock;
mod request;
mod response;
mod stream;

pub(crate) use request::{
    add_reasoning_effort, check_sampling, document_from_file, image_from_data_url, output_config,
    text_or_parts, tool_choice_mode, TextOrParts, ToolMode,
};
pub use request::{parse_data_url, parse_request, to_converse};
pub use response::{finish_reason, from_converse_response, ResponseContext};
use response::{UrlCitation, UsageOut};
pub use stream::ChatStreamTranslator;
pub(crate) use stream::{too_many_blocks, unreadable_event};

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

// ---- Request types ----------------------------------------------------------------------

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
    /// OpenAI's web search: on Bedrock, Nova's web grounding (other models are refused).
    #[serde(borrow, default)]
    pub web_search_options: Option<&'a RawValue>,
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

    /// The caller asked the model to search the web (`web_search_options`, even empty).
    pub fn searches_the_web(&self) -> bool {
        self.web_search_options.is_some_and(|o| o.get() != "null")
    }
}

//! OpenAI Responses API (`POST /v1/responses`) <-> Bedrock Converse / ConverseStream.
//!
//! The gateway keeps no state. A request carries the whole conversation (Codex and the Agents SDK
//! send it that way with `store: false`), and the reasoning Bedrock must see again on a later turn
//! (Claude's signed thinking) travels to the caller and back in a reasoning item's
//! `encrypted_content`. What would need stored responses is refused by name, never ignored.
//!
//! The request's wire types are here; `request.rs` translates a request, `response.rs` a whole
//! answer and `stream.rs` a streamed one.

mod request;
mod response;
mod stream;

pub use request::{echo, parse_request, to_converse, translate, translate_for};
pub use response::{from_converse_response, ResponsesContext};
pub use stream::ResponsesStreamTranslator;

use request::carry_reasoning;
use response::{
    failure_code, render_summary_part, render_text_part, Item, OutputItem, ResponseState,
    WebCitation,
};

use crate::api::openai::{self, FilePart, JsonSchemaFormat, ResponseFormat, TextOrParts, ToolMode};
use crate::api::tool_names::{self, RenamedTool, ToolKind, ToolNames};
use crate::bedrock::eventstream::{Decoder, Frame, FrameTranslator};
use crate::bedrock::{
    self, ContentBlock, ConverseReply, ConverseRequest, InferenceConfig, InputSchema, Message,
    NamedTool, ReasoningContent, ReasoningText, Role, SystemBlock, SystemTool, Tool, ToolChoice,
    ToolConfig, ToolResult, ToolResultContent, ToolSpec, Usage,
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

// ---- Request types ----------------------------------------------------------------------

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
    /// `web_search`: `false` asks for no live access to the web (Codex's cached search).
    #[serde(default)]
    external_web_access: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct CustomFormat<'a> {
    #[serde(borrow, default)]
    syntax: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    definition: Option<Cow<'a, str>>,
}

/// OpenAI's web search, which a model that grounds on the web (Nova) runs itself.
const WEB_SEARCH_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
];

/// OpenAI's hosted tools: OpenAI runs them, Bedrock cannot (except web search on a model that
/// grounds on the web, [`WEB_SEARCH_TOOLS`]). Codex sends `web_search` on every turn, so by default
/// they are left out (and named in [`DROPPED_TOOLS_HEADER`]); a backend may refuse them instead
/// (`hosted_tools: refuse`).
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

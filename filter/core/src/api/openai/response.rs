//! A whole Converse response as a `chat.completion`.

use super::*;

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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<UrlCitation>,
}

/// A web citation as OpenAI's web search gives it: the span of the content it supports
/// (characters), the page's URL and title.
#[derive(Serialize)]
#[serde(tag = "type", rename = "url_citation")]
pub(super) struct UrlCitation {
    url_citation: UrlCitationSpan,
}

#[derive(Serialize)]
struct UrlCitationSpan {
    start_index: usize,
    end_index: usize,
    url: String,
    title: String,
}

impl UrlCitation {
    /// A citation of a web page, over characters `start..end` of the content; none for other
    /// sources (a document's citations have no URL to give).
    pub(super) fn of(citation: &bedrock::Citation, start: usize, end: usize) -> Option<Self> {
        let (url, title) = citation.web_page()?;
        let (url, title) = (url.to_owned(), title.to_owned());
        Some(UrlCitation {
            url_citation: UrlCitationSpan {
                start_index: start,
                end_index: end,
                url,
                title,
            },
        })
    }
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
pub(super) struct UsageOut {
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
    let mut annotations = Vec::new();
    // Characters of content so far, for citations' spans: counted only in a cited answer.
    let cited = message
        .content
        .iter()
        .any(|block| block.citations_content.is_some());
    let mut content_chars = 0;
    for block in message.content {
        if let Some(text) = block.text {
            if cited {
                let start = content_chars;
                content_chars += text.chars().count();
                let citations = block.citations_content.iter().flat_map(|c| &c.citations);
                annotations
                    .extend(citations.filter_map(|c| UrlCitation::of(c, start, content_chars)));
            }
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
                annotations,
            },
            finish_reason: finish_reason(stop_reason),
            logprobs: None,
        }],
        usage: usage.unwrap_or_default().into(),
    };
    // About as long as Bedrock's answer: sized once, a large one is not copied as it grows.
    let mut body = Vec::with_capacity(body.len() + 256);
    serde_json::to_writer(&mut body, &completion).map_err(|e| {
        GatewayError::upstream(format!("could not render the chat completion: {e}"))
    })?;
    Ok(TranslatedBody {
        body,
        usage: usage.map(TokenUsage::from),
    })
}

//! A whole Converse response as a Responses `response` object.

use super::*;

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
pub(super) enum Item {
    Message {
        text: String,
        /// The web pages the text cites (Nova's web grounding).
        citations: Vec<WebCitation>,
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
    pub(super) fn function_call(&self, call_id: String, called: &str, arguments: String) -> Item {
        let tool = self.tools.caller_tool(called);
        Item::FunctionCall {
            call_id,
            namespace: tool.namespace.map(str::to_owned),
            name: tool.name.to_owned(),
            arguments,
            custom: tool.kind == ToolKind::Custom,
        }
    }

    pub(super) fn item_id(&self, out: &mut String, item: &Item, output_index: usize) {
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
    pub(super) fn render_item(
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
            Item::Message { text, citations } => {
                let _ = write!(out, ",\"type\":\"message\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":[");
                if whole {
                    render_text_part(out, text, citations);
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
    pub(super) fn render_response(
        &self,
        out: &mut String,
        state: ResponseState<'_>,
        items: &[OutputItem],
    ) {
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
pub(super) enum ResponseState<'a> {
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

    pub(super) fn finished(stop_reason: Option<&str>, usage: Usage) -> Self {
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
pub(super) struct OutputItem {
    pub(super) item: Item,
    pub(super) done: bool,
}

pub(super) fn render_text_part(out: &mut String, text: &str, citations: &[WebCitation]) {
    out.push_str("{\"type\":\"output_text\",\"text\":");
    push_json_string(out, text);
    out.push_str(",\"annotations\":[");
    for (i, citation) in citations.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        citation.render(out);
    }
    out.push_str("],\"logprobs\":[]}");
}

/// A web page the text cites, as the Responses API's `url_citation` annotation: characters
/// `start..end` of the text, the page's URL and title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WebCitation {
    start: usize,
    end: usize,
    url: String,
    title: String,
}

impl WebCitation {
    /// A citation of a web page over characters `start..end`; none for other sources.
    pub(super) fn of(citation: &bedrock::Citation, start: usize, end: usize) -> Option<Self> {
        let (url, title) = citation.web_page()?;
        let (url, title) = (url.to_owned(), title.to_owned());
        Some(WebCitation {
            start,
            end,
            url,
            title,
        })
    }

    pub(super) fn render(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"type\":\"url_citation\",\"start_index\":{},\"end_index\":{},\"url\":",
            self.start, self.end
        );
        push_json_string(out, &self.url);
        out.push_str(",\"title\":");
        push_json_string(out, &self.title);
        out.push('}');
    }
}

pub(super) fn render_summary_part(out: &mut String, text: &str) {
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
pub(super) fn failure_code(kind: ErrorKind) -> &'static str {
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
            if !matches!(
                items.last(),
                Some(OutputItem {
                    item: Item::Message { .. },
                    ..
                })
            ) {
                items.push(OutputItem {
                    item: Item::Message {
                        text: String::new(),
                        citations: Vec::new(),
                    },
                    done: true,
                });
            }
            if let Some(OutputItem {
                item:
                    Item::Message {
                        text: previous,
                        citations,
                    },
                ..
            }) = items.last_mut()
            {
                // Characters are counted only for a cited block's span.
                if let Some(cited) = &block.citations_content {
                    let start = previous.chars().count();
                    let end = start + text.chars().count();
                    citations.extend(
                        cited
                            .citations
                            .iter()
                            .filter_map(|c| WebCitation::of(c, start, end)),
                    );
                }
                previous.push_str(&text);
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

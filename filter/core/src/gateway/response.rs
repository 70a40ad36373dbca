//! Bedrock's answer translated back for the caller, whole or streamed, by the plan the request
//! left.

use super::*;

/// The response translation chosen once the upstream's status is known.
pub enum ResponseTranslation {
    /// A whole Converse JSON body becomes one `chat.completion`.
    ChatCompletion(ResponseContext),
    /// Event-stream frames become OpenAI SSE chunks as they arrive.
    ChatCompletionStream(Box<ChatStreamTranslator>),
    /// A whole Converse JSON body becomes one Responses `response` object.
    Response(Box<ResponsesContext>),
    /// Event-stream frames become Responses API events as they arrive.
    ResponseStream(Box<ResponsesStreamTranslator>),
    /// An Anthropic message passes through with the caller's model name.
    AnthropicMessage {
        requested_model: String,
    },
    /// `chunk` frames become Anthropic SSE events as they arrive.
    AnthropicStream(Box<AnthropicStreamTranslator>),
    /// A Converse reply becomes an Anthropic message.
    AnthropicFromConverse {
        message_id: String,
        requested_model: String,
    },
    /// ConverseStream frames become Anthropic SSE events as they arrive.
    AnthropicFromConverseStream(Box<ConverseToAnthropicStream>),
    AnthropicCountTokens,
    Embeddings {
        family: embeddings::Family,
        model: String,
        base64: bool,
        header_tokens: Option<u64>,
    },
    Rerank {
        plan: crate::api::rerank::RerankPlan,
        request_id: String,
    },
    Images {
        family: crate::api::images::ImageFamily,
        created: u64,
    },
    /// OpenAI's own reply from Bedrock, as it came, its usage read.
    OpenAiOnBedrock,
    OpenAiOnBedrockStream(Box<crate::api::openai::on_bedrock::StreamReader>),
    /// A Bedrock error body becomes an error in the caller's format.
    Error {
        status: u16,
        error_type: Option<String>,
        format: ApiFormat,
    },
    /// Bedrock's reply (or error) to a caller of its own API, unchanged.
    Bedrock {
        status: u16,
        header_usage: (Option<u64>, Option<u64>),
    },
    /// A streamed reply to a caller of Bedrock's API, unchanged but for exceptions naming an AWS
    /// account or ARN, its tokens read on the way.
    BedrockStream(Box<crate::api::bedrock_runtime::StreamObserver>),
}

/// What the glue reads from Bedrock's response headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamHead<'a> {
    pub status: u16,
    /// `x-amzn-errortype`
    pub error_type: Option<&'a str>,
    /// `x-amzn-requestid`, or Envoy's request id
    pub request_id: &'a str,
    /// `x-amzn-bedrock-input-token-count`
    pub input_tokens: Option<u64>,
    /// `x-amzn-bedrock-output-token-count`
    pub output_tokens: Option<u64>,
}

impl ResponseTranslation {
    pub fn for_response(
        plan: &ResponsePlan,
        head: UpstreamHead<'_>,
        max_frame_len: usize,
    ) -> ResponseTranslation {
        let UpstreamHead {
            status,
            error_type: error_type_header,
            request_id,
            input_tokens,
            output_tokens,
        } = head;
        if let ResponseKind::Bedrock { operation } = plan.kind {
            // Bedrock's callers get Bedrock's answer, errors included, as AWS sent it.
            return if status == 200 && crate::api::bedrock_runtime::is_stream(operation) {
                ResponseTranslation::BedrockStream(Box::new(
                    crate::api::bedrock_runtime::StreamObserver::new(max_frame_len),
                ))
            } else {
                ResponseTranslation::Bedrock {
                    status,
                    header_usage: (input_tokens, output_tokens),
                }
            };
        }
        if status != 200 {
            return ResponseTranslation::Error {
                status,
                error_type: error_type_header.map(|h| bedrock::error_type_name(h).to_owned()),
                format: plan.format,
            };
        }
        match plan.kind {
            ResponseKind::OpenAiChat {
                stream,
                include_usage,
                web_search,
            } => {
                let context = ResponseContext {
                    id: request_id.to_owned(),
                    model: plan.requested_model.clone(),
                    created: plan.created,
                };
                if stream {
                    ResponseTranslation::ChatCompletionStream(Box::new(
                        ChatStreamTranslator::annotating(
                            &context,
                            include_usage,
                            web_search,
                            max_frame_len,
                        ),
                    ))
                } else {
                    ResponseTranslation::ChatCompletion(context)
                }
            }
            ResponseKind::OpenAiResponses {
                stream,
                include_reasoning,
            } => {
                let context = ResponsesContext {
                    id: request_id.to_owned(),
                    model: plan.requested_model.clone(),
                    created: plan.created,
                    echo: plan.echo.clone(),
                    tools: plan.tool_names.clone(),
                    include_reasoning,
                };
                if stream {
                    ResponseTranslation::ResponseStream(Box::new(ResponsesStreamTranslator::new(
                        context,
                        max_frame_len,
                    )))
                } else {
                    ResponseTranslation::Response(Box::new(context))
                }
            }
            ResponseKind::AnthropicMessage { stream: true } => {
                ResponseTranslation::AnthropicStream(Box::new(AnthropicStreamTranslator::new(
                    &plan.requested_model,
                    max_frame_len,
                )))
            }
            ResponseKind::AnthropicMessage { stream: false } => {
                ResponseTranslation::AnthropicMessage {
                    requested_model: plan.requested_model.clone(),
                }
            }
            ResponseKind::AnthropicViaConverse { stream: true } => {
                ResponseTranslation::AnthropicFromConverseStream(Box::new(
                    ConverseToAnthropicStream::new(
                        request_id,
                        &plan.requested_model,
                        max_frame_len,
                    ),
                ))
            }
            ResponseKind::AnthropicViaConverse { stream: false } => {
                ResponseTranslation::AnthropicFromConverse {
                    message_id: request_id.to_owned(),
                    requested_model: plan.requested_model.clone(),
                }
            }
            ResponseKind::AnthropicCountTokens => ResponseTranslation::AnthropicCountTokens,
            ResponseKind::Embeddings { family, base64 } => ResponseTranslation::Embeddings {
                family,
                model: plan.requested_model.clone(),
                base64,
                header_tokens: input_tokens,
            },
            ResponseKind::Bedrock { .. } => ResponseTranslation::Bedrock {
                status,
                header_usage: (input_tokens, output_tokens),
            },
            ResponseKind::OpenAiOnBedrock(openai) if openai.stream => {
                ResponseTranslation::OpenAiOnBedrockStream(Box::new(
                    crate::api::openai::on_bedrock::StreamReader::new(openai),
                ))
            }
            ResponseKind::OpenAiOnBedrock(_) => ResponseTranslation::OpenAiOnBedrock,
            ResponseKind::Images { family } => ResponseTranslation::Images {
                family,
                created: plan.created,
            },
            ResponseKind::Rerank => ResponseTranslation::Rerank {
                plan: plan
                    .rerank
                    .clone()
                    .unwrap_or(crate::api::rerank::RerankPlan {
                        documents: None,
                        api_version: 1,
                    }),
                request_id: request_id.to_owned(),
            },
        }
    }

    /// Streams translate chunk by chunk; everything else needs the whole body.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            ResponseTranslation::ChatCompletionStream(_)
                | ResponseTranslation::ResponseStream(_)
                | ResponseTranslation::AnthropicStream(_)
                | ResponseTranslation::AnthropicFromConverseStream(_)
                | ResponseTranslation::BedrockStream(_)
                | ResponseTranslation::OpenAiOnBedrockStream(_)
        )
    }

    /// The reply's content type; `None` keeps Bedrock's.
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            ResponseTranslation::Bedrock { .. }
            | ResponseTranslation::BedrockStream(_)
            | ResponseTranslation::OpenAiOnBedrock
            | ResponseTranslation::OpenAiOnBedrockStream(_) => None,
            _ if self.is_streaming() => Some("text/event-stream"),
            _ => Some("application/json"),
        }
    }

    /// Translates one chunk of a streamed body; empty for non-streaming translations.
    pub fn push_stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::ResponseStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::AnthropicStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::AnthropicFromConverseStream(stream) => {
                stream.push(chunk, end_of_stream)
            }
            ResponseTranslation::BedrockStream(observer) => observer.pass(chunk, end_of_stream),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.push(chunk, end_of_stream),
            _ => Vec::new(),
        }
    }

    /// Token usage seen so far: from the stream's events, or read from a whole upstream body.
    /// The tokens a stream has reported so far (whole bodies report theirs from `translate_body`).
    pub fn stream_usage(&self) -> Option<TokenUsage> {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.usage(),
            ResponseTranslation::ResponseStream(stream) => stream.usage(),
            ResponseTranslation::AnthropicStream(stream) => stream.usage(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => stream.usage(),
            ResponseTranslation::BedrockStream(observer) => observer.usage(),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.usage(),
            _ => None,
        }
    }

    /// Whether a translated stream has sent the caller its last event, so its usage is final.
    /// Callers may hang up there, before Bedrock's body ends (Codex does on `response.completed`):
    /// the request is reported then rather than at the end of the body, which would never come.
    /// Streams passed on as Bedrock or OpenAI sent them finish at their last event too.
    pub fn stream_finished(&self) -> bool {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.is_finished(),
            ResponseTranslation::ResponseStream(stream) => stream.is_finished(),
            ResponseTranslation::AnthropicStream(stream) => stream.is_finished(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => stream.is_finished(),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.is_finished(),
            ResponseTranslation::BedrockStream(observer) => observer.is_finished(),
            _ => false,
        }
    }

    /// The status of the error a translated stream ended with, if it failed mid-way (a Bedrock
    /// exception frame, a corrupt or cut stream): the request counts as failed with it, though
    /// its response began as a 200. Bedrock's own streams, passed on, fail with their exception
    /// frames; OpenAI streams passed on report none.
    pub fn stream_failure(&self) -> Option<u16> {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.failure(),
            ResponseTranslation::ResponseStream(stream) => stream.failure(),
            ResponseTranslation::AnthropicStream(stream) => stream.failure(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => stream.failure(),
            ResponseTranslation::BedrockStream(observer) => observer.failure(),
            _ => None,
        }
    }

    /// Whether a stream has sent the caller its first generated content (for time to first token).
    pub fn first_content_emitted(&self) -> bool {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::ResponseStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::AnthropicStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => {
                stream.first_content_emitted()
            }
            ResponseTranslation::BedrockStream(observer) => observer.first_content_seen(),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.first_content_emitted(),
            _ => false,
        }
    }

    /// The caller's reply when Bedrock's answer ended with its headers (a bare status, as a
    /// load balancer in front of the service may send): errors translate as with an empty body,
    /// and a stream that never began is a 502 rather than an empty success.
    pub fn translate_bodiless(&self) -> (u16, TranslatedBody) {
        let stream_format = match self {
            ResponseTranslation::ChatCompletionStream(_)
            | ResponseTranslation::ResponseStream(_)
            | ResponseTranslation::OpenAiOnBedrockStream(_) => ApiFormat::OpenAi,
            ResponseTranslation::AnthropicStream(_)
            | ResponseTranslation::AnthropicFromConverseStream(_) => ApiFormat::Anthropic,
            ResponseTranslation::BedrockStream(_) => ApiFormat::Bedrock,
            _ => return self.translate_body(&[]),
        };
        let error = GatewayError::new(
            502,
            ErrorKind::Upstream,
            "Bedrock ended the stream before sending any event.",
        );
        (
            error.status,
            TranslatedBody::without_usage(error.to_json(stream_format)),
        )
    }

    /// Translates a whole buffered body. Returns the status to answer with, the new body and,
    /// for a success, the tokens it reported.
    pub fn translate_body(&self, body: &[u8]) -> (u16, TranslatedBody) {
        let (result, format) = match self {
            ResponseTranslation::ChatCompletion(context) => (
                openai::from_converse_response(body, context),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::Response(context) => (
                responses::from_converse_response(body, context),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::AnthropicMessage { requested_model } => (
                anthropic::invoke::rewrite_message_model(body, requested_model),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::AnthropicCountTokens => (
                anthropic::invoke::count_tokens_response(body).map(TranslatedBody::without_usage),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::AnthropicFromConverse {
                message_id,
                requested_model,
            } => (
                anthropic::converse::from_converse_response(body, message_id, requested_model),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::Embeddings {
                family,
                model,
                base64,
                header_tokens,
            } => (
                embeddings::response(body, *family, model, *base64, *header_tokens),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::OpenAiOnBedrock => {
                return (
                    200,
                    TranslatedBody {
                        body: body.to_vec(),
                        usage: crate::api::openai::on_bedrock::reply_usage(body),
                    },
                );
            }
            ResponseTranslation::Images { family, created } => (
                crate::api::images::response(body, *family, *created),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::Rerank { plan, request_id } => (
                crate::api::rerank::response(body, plan, request_id),
                ApiFormat::Cohere,
            ),
            ResponseTranslation::Bedrock {
                status,
                header_usage: (input, output),
            } => {
                // Unchanged, status and all, but for the account's identifiers in an error's
                // message; an error reports no tokens.
                if *status != 200 {
                    return (
                        *status,
                        TranslatedBody::without_usage(
                            crate::api::bedrock_runtime::redact_error_body(body),
                        ),
                    );
                }
                let usage = crate::api::bedrock_runtime::reply_usage(body, *input, *output);
                return (
                    *status,
                    TranslatedBody {
                        body: body.to_vec(),
                        usage,
                    },
                );
            }
            ResponseTranslation::Error {
                status,
                error_type,
                format,
            } => {
                let message = bedrock::error_message(body);
                (
                    Err(GatewayError::from_bedrock(
                        *status,
                        error_type.as_deref(),
                        &message,
                    )),
                    *format,
                )
            }
            ResponseTranslation::ChatCompletionStream(_)
            | ResponseTranslation::ResponseStream(_)
            | ResponseTranslation::AnthropicStream(_)
            | ResponseTranslation::AnthropicFromConverseStream(_)
            | ResponseTranslation::BedrockStream(_)
            | ResponseTranslation::OpenAiOnBedrockStream(_) => {
                return (200, TranslatedBody::without_usage(Vec::new()))
            }
        };
        match result {
            Ok(translated) => (200, translated),
            Err(error) => (
                error.status,
                TranslatedBody::without_usage(error.to_json(format)),
            ),
        }
    }
}

//! A ConverseStream event stream as `chat.completion.chunk` server-sent events.

use super::*;

/// What a Converse content block index streams as.
#[derive(Debug, Clone)]
enum StreamBlock {
    /// Text, from this character of the message's content on (counted when the model searches
    /// the web, for its citations' spans).
    Text { start: usize },
    /// A tool call, with its dense OpenAI `index`.
    ToolCall(usize),
    /// Reasoning, accumulated so that the signed block can be returned whole at its end.
    Reasoning {
        text: String,
        signature: Option<String>,
    },
}

/// Turns a ConverseStream event stream into OpenAI `chat.completion.chunk` SSE events,
/// one body chunk at a time.
pub struct ChatStreamTranslator {
    decoder: Decoder,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":` rendered once.
    chunk_prefix: String,
    include_usage: bool,
    blocks: Vec<Option<StreamBlock>>,
    tool_calls_seen: usize,
    saw_message_stop: bool,
    finished: bool,
    /// The status of the error the stream ended with, if it failed.
    failure: Option<u16>,
    usage: Option<Usage>,
    first_content_emitted: bool,
    /// Characters of content sent so far, counted only when the model searches the web: its
    /// citations become `url_citation` annotations over the text they support.
    content_chars: Option<usize>,
}

impl ChatStreamTranslator {
    pub fn new(context: &ResponseContext, include_usage: bool, max_frame_len: usize) -> Self {
        Self::annotating(context, include_usage, false, max_frame_len)
    }

    /// `web_search`: the model searches the web, and each web citation becomes an annotation.
    pub fn annotating(
        context: &ResponseContext,
        include_usage: bool,
        web_search: bool,
        max_frame_len: usize,
    ) -> Self {
        let mut chunk_prefix = String::with_capacity(128);
        chunk_prefix.push_str("{\"id\":");
        push_json_string(&mut chunk_prefix, &format!("chatcmpl-{}", context.id));
        let _ = write!(
            chunk_prefix,
            ",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":",
            context.created
        );
        push_json_string(&mut chunk_prefix, &context.model);
        chunk_prefix.push_str(",\"choices\":");
        ChatStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            chunk_prefix,
            include_usage,
            blocks: Vec::new(),
            tool_calls_seen: 0,
            saw_message_stop: false,
            finished: false,
            failure: None,
            usage: None,
            first_content_emitted: false,
            content_chars: web_search.then_some(0),
        }
    }

    fn block(&mut self, index: usize) -> Option<&mut Option<StreamBlock>> {
        if index >= self.blocks.len() {
            // Block indexes are small and dense; refuse absurd ones rather than allocate.
            if index > 4096 {
                return None;
            }
            self.blocks.resize(index + 1, None);
        }
        self.blocks.get_mut(index)
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        let result = match frame.headers.event_type {
            Some("messageStart") => {
                self.emit_delta(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
                Ok(())
            }
            Some("contentBlockStart") => self.on_block_start(frame.payload, out),
            Some("contentBlockDelta") => self.on_block_delta(frame.payload, out),
            Some("contentBlockStop") => self.on_block_stop(frame.payload, out),
            Some("messageStop") => {
                serde_json::from_slice::<bedrock::MessageStopEvent<'_>>(frame.payload)
                    .map(|event| {
                        self.saw_message_stop = true;
                        self.emit_delta(out, "{}", Some(finish_reason(event.stop_reason)));
                    })
                    .map_err(|e| unreadable_event("messageStop", &e))
            }
            Some("metadata") => serde_json::from_slice::<bedrock::MetadataEvent>(frame.payload)
                .map(|event| {
                    self.usage = event.usage;
                    if self.include_usage {
                        let usage = UsageOut::from(event.usage.unwrap_or_default());
                        if let Ok(usage) = serde_json::to_string(&usage) {
                            out.extend_from_slice(b"data: ");
                            out.extend_from_slice(self.chunk_prefix.as_bytes());
                            out.extend_from_slice(b"[],\"usage\":");
                            out.extend_from_slice(usage.as_bytes());
                            out.extend_from_slice(b"}\n\n");
                        }
                    }
                    // Bedrock's last event: the caller's stream ends here, and is counted here,
                    // whether or not the caller waits for the body's end.
                    if self.saw_message_stop {
                        out.extend_from_slice(b"data: [DONE]\n\n");
                        self.finished = true;
                    }
                })
                .map_err(|e| unreadable_event("metadata", &e)),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.fail(out, &error);
        }
    }

    fn on_block_start(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockStartEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockStart", &e))?;
        let Some(tool_use) = event.start.and_then(|s| s.tool_use) else {
            return Ok(());
        };
        let call_index = self.tool_calls_seen;
        self.tool_calls_seen += 1;
        *self
            .block(event.content_block_index)
            .ok_or_else(too_many_blocks)? = Some(StreamBlock::ToolCall(call_index));
        let mut delta = String::with_capacity(96 + tool_use.name.len());
        let _ = write!(delta, "{{\"tool_calls\":[{{\"index\":{call_index},\"id\":");
        push_json_string(&mut delta, &tool_use.tool_use_id);
        delta.push_str(",\"type\":\"function\",\"function\":{\"name\":");
        push_json_string(&mut delta, &tool_use.name);
        delta.push_str(",\"arguments\":\"\"}}]}");
        self.emit_delta(out, &delta, None);
        self.first_content_emitted = true;
        Ok(())
    }

    fn on_block_delta(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockDeltaEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockDelta", &e))?;
        let Some(delta) = event.delta else {
            return Ok(());
        };
        let content_chars = self.content_chars;
        let slot = self
            .block(event.content_block_index)
            .ok_or_else(too_many_blocks)?;
        // Room for the delta and its escapes at once: growing it step by step cost about a tenth
        // of a delta's translation (callgrind).
        let mut json = String::with_capacity(64 + payload.len());
        if let Some(text) = delta.text {
            slot.get_or_insert(StreamBlock::Text {
                start: content_chars.unwrap_or(0),
            });
            json.push_str("{\"content\":");
            push_json_string(&mut json, &text);
            json.push('}');
            if let Some(count) = self.content_chars.as_mut() {
                *count += text.chars().count();
            }
        } else if let (Some(citation), Some(end)) = (delta.citation, content_chars) {
            // The citation follows the text it supports: that block, up to here.
            let start = match slot {
                Some(StreamBlock::Text { start }) => *start,
                _ => end,
            };
            if let Some(annotation) = UrlCitation::of(&citation, start, end) {
                json.push_str("{\"annotations\":[");
                json.push_str(&serde_json::to_string(&annotation).unwrap_or_default());
                json.push_str("]}");
            }
        } else if let Some(tool_use) = delta.tool_use {
            let Some(StreamBlock::ToolCall(call_index)) = slot else {
                return Err(GatewayError::upstream(
                    "Bedrock streamed tool input for a block that is not a tool call.",
                ));
            };
            let _ = write!(
                json,
                "{{\"tool_calls\":[{{\"index\":{call_index},\"function\":{{\"arguments\":"
            );
            push_json_string(&mut json, &tool_use.input);
            json.push_str("}}]}");
        } else if let Some(reasoning) = delta.reasoning_content {
            if !matches!(slot, Some(StreamBlock::Reasoning { .. })) {
                *slot = Some(StreamBlock::Reasoning {
                    text: String::new(),
                    signature: None,
                });
            }
            if let Some(StreamBlock::Reasoning {
                text: accumulated,
                signature,
            }) = slot
            {
                if let Some(text) = reasoning.text {
                    accumulated.push_str(&text);
                    json.push_str("{\"reasoning_content\":");
                    push_json_string(&mut json, &text);
                    json.push('}');
                }
                if let Some(new_signature) = reasoning.signature {
                    *signature = Some(new_signature.into_owned());
                }
                if let Some(data) = reasoning.redacted_content {
                    json.push_str(
                        "{\"thinking_blocks\":[{\"type\":\"redacted_thinking\",\"data\":",
                    );
                    push_json_string(&mut json, &data);
                    json.push_str("}]}");
                }
            }
        }
        if !json.is_empty() {
            self.emit_delta(out, &json, None);
            self.first_content_emitted = true;
        }
        Ok(())
    }

    /// At the end of a reasoning block, the whole signed block is sent so callers can return it.
    fn on_block_stop(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockStopEvent = serde_json::from_slice(payload)
            .map_err(|e| unreadable_event("contentBlockStop", &e))?;
        let finished_block = self
            .blocks
            .get_mut(event.content_block_index)
            .and_then(Option::take);
        if let Some(StreamBlock::Reasoning { text, signature }) = finished_block {
            let mut json = String::with_capacity(text.len() + 96);
            json.push_str("{\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":");
            push_json_string(&mut json, &text);
            if let Some(signature) = signature {
                json.push_str(",\"signature\":");
                push_json_string(&mut json, &signature);
            }
            json.push_str("}]}");
            self.emit_delta(out, &json, None);
        }
        Ok(())
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
}

impl FrameTranslator for ChatStreamTranslator {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Bedrock's usage from the stream's `metadata` event, once it has arrived.
    fn usage(&self) -> Option<crate::translated::TokenUsage> {
        self.usage.map(crate::translated::TokenUsage::from)
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        self.handle_event(frame, out);
    }

    /// Ends the client's stream with an OpenAI error event; the SDK raises `APIError` on it.
    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        self.failure = Some(error.status);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error.to_openai_json());
        out.extend_from_slice(b"\n\n");
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        if self.saw_message_stop {
            out.extend_from_slice(b"data: [DONE]\n\n");
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

pub(crate) fn too_many_blocks() -> GatewayError {
    GatewayError::upstream("Bedrock streamed a content block index beyond 4096.")
}

pub(crate) fn unreadable_event(event: &str, error: &serde_json::Error) -> GatewayError {
    GatewayError::upstream(format!("Bedrock sent an unreadable {event} event: {error}"))
}

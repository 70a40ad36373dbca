//! A ConverseStream event stream as the Responses API's server-sent events.

use super::*;

/// Turns a ConverseStream event stream into the Responses API's typed SSE events, one body chunk
/// at a time. Deltas go out as they arrive; each item is also kept whole, because its `done`
/// event and `response.completed` repeat it (the SDKs check them against what was announced).
pub struct ResponsesStreamTranslator {
    decoder: Decoder,
    context: ResponsesContext,
    sequence: u64,
    started: bool,
    items: Vec<OutputItem>,
    /// The output index each open Converse content block streams into.
    open_blocks: Vec<Option<usize>>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
    finished: bool,
    /// The status of the error the stream ended with, if it failed.
    failure: Option<u16>,
    first_content_emitted: bool,
}

impl ResponsesStreamTranslator {
    pub fn new(context: ResponsesContext, max_frame_len: usize) -> Self {
        ResponsesStreamTranslator {
            decoder: Decoder::new(max_frame_len),
            context,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open_blocks: Vec::new(),
            stop_reason: None,
            usage: None,
            finished: false,
            failure: None,
            first_content_emitted: false,
        }
    }

    /// Writes one event: `event: <type>` and its data, numbered from 0.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, members: &str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        if !members.is_empty() {
            out.push(b',');
            out.extend_from_slice(members.as_bytes());
        }
        out.extend_from_slice(b"}\n\n");
        self.sequence += 1;
    }

    fn emit_response(&mut self, out: &mut Vec<u8>, kind: &str, state: ResponseState<'_>) {
        let mut members = String::with_capacity(256 + self.context.echo.len());
        members.push_str("\"response\":");
        self.context
            .render_response(&mut members, state, &self.items);
        self.emit(out, kind, &members);
    }

    /// `response.created` and `response.in_progress`, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.emit_response(out, "response.created", ResponseState::InProgress);
        self.emit_response(out, "response.in_progress", ResponseState::InProgress);
    }

    /// Locates an item's place in the events' members: `"item_id":...,"output_index":N`.
    fn item_ref(&self, output_index: usize) -> String {
        let mut members = String::with_capacity(64);
        members.push_str("\"item_id\":");
        if let Some(output) = self.items.get(output_index) {
            self.context
                .item_id(&mut members, &output.item, output_index);
        }
        let _ = write!(members, ",\"output_index\":{output_index}");
        members
    }

    fn open_item(
        &mut self,
        out: &mut Vec<u8>,
        block_index: usize,
        item: Item,
    ) -> Result<usize, GatewayError> {
        self.start(out);
        if block_index > 4096 {
            return Err(openai::too_many_blocks());
        }
        if block_index >= self.open_blocks.len() {
            self.open_blocks.resize(block_index + 1, None);
        }
        let output_index = self.items.len();
        let mut members = String::with_capacity(128);
        let _ = write!(members, "\"output_index\":{output_index},\"item\":");
        self.context
            .render_item(&mut members, &item, output_index, "in_progress", false);
        let is_message = matches!(item, Item::Message { .. });
        self.items.push(OutputItem { item, done: false });
        if let Some(slot) = self.open_blocks.get_mut(block_index) {
            *slot = Some(output_index);
        }
        self.emit(out, "response.output_item.added", &members);
        if is_message {
            let members = format!("{},\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[],\"logprobs\":[]}}", self.item_ref(output_index));
            self.emit(out, "response.content_part.added", &members);
        }
        Ok(output_index)
    }

    /// The item a block streams into, opened with `new_item` on its first delta.
    fn item_for_block(
        &mut self,
        out: &mut Vec<u8>,
        block_index: usize,
        new_item: impl FnOnce() -> Item,
    ) -> Result<usize, GatewayError> {
        match self.open_blocks.get(block_index).copied().flatten() {
            Some(output_index) => Ok(output_index),
            None => self.open_item(out, block_index, new_item()),
        }
    }

    fn handle_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) -> Result<(), GatewayError> {
        match frame.headers.event_type {
            Some("messageStart") => self.start(out),
            Some("contentBlockStart") => {
                let event: bedrock::ContentBlockStartEvent<'_> =
                    serde_json::from_slice(frame.payload)
                        .map_err(|e| openai::unreadable_event("contentBlockStart", &e))?;
                if let Some(tool_use) = event.start.and_then(|s| s.tool_use) {
                    let item = self.context.function_call(
                        tool_use.tool_use_id.into_owned(),
                        &tool_use.name,
                        String::new(),
                    );
                    self.open_item(out, event.content_block_index, item)?;
                    self.first_content_emitted = true;
                }
            }
            Some("contentBlockDelta") => self.on_delta(frame.payload, out)?,
            Some("contentBlockStop") => {
                let event: bedrock::ContentBlockStopEvent =
                    serde_json::from_slice(frame.payload)
                        .map_err(|e| openai::unreadable_event("contentBlockStop", &e))?;
                self.close_block(out, event.content_block_index);
            }
            Some("messageStop") => {
                let event: bedrock::MessageStopEvent<'_> = serde_json::from_slice(frame.payload)
                    .map_err(|e| openai::unreadable_event("messageStop", &e))?;
                self.stop_reason = Some(event.stop_reason.unwrap_or("end_turn").to_owned());
                self.close_all(out);
            }
            Some("metadata") => {
                let event: bedrock::MetadataEvent = serde_json::from_slice(frame.payload)
                    .map_err(|e| openai::unreadable_event("metadata", &e))?;
                self.usage = event.usage;
                if self.stop_reason.is_some() {
                    self.complete(out);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_delta(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let event: bedrock::ContentBlockDeltaEvent<'_> = serde_json::from_slice(payload)
            .map_err(|e| openai::unreadable_event("contentBlockDelta", &e))?;
        let Some(delta) = event.delta else {
            return Ok(());
        };
        let block = event.content_block_index;
        if let Some(text) = delta.text {
            let index = self.item_for_block(out, block, || Item::Message {
                text: String::new(),
                citations: Vec::new(),
            })?;
            match self.items.get_mut(index).map(|o| &mut o.item) {
                Some(Item::Message { text: whole, .. }) => whole.push_str(&text),
                _ => {
                    return Err(GatewayError::upstream(
                        "Bedrock streamed text into a block that is not text.",
                    ))
                }
            }
            let mut members = self.item_ref(index);
            members.push_str(",\"content_index\":0,\"delta\":");
            push_json_string(&mut members, &text);
            members.push_str(",\"logprobs\":[]");
            self.emit(out, "response.output_text.delta", &members);
            self.first_content_emitted = true;
        } else if let Some(citation) = delta.citation {
            // A citation follows the text it supports: its block, which is its own message item.
            let Some(index) = self.open_blocks.get(block).copied().flatten() else {
                return Ok(());
            };
            let mut members = self.item_ref(index);
            let Some(Item::Message { text, citations }) =
                self.items.get_mut(index).map(|o| &mut o.item)
            else {
                return Ok(());
            };
            let Some(cited) = WebCitation::of(&citation, 0, text.chars().count()) else {
                return Ok(());
            };
            let _ = write!(
                members,
                ",\"content_index\":0,\"annotation_index\":{},\"annotation\":",
                citations.len()
            );
            cited.render(&mut members);
            citations.push(cited);
            self.emit(out, "response.output_text.annotation.added", &members);
        } else if let Some(tool_use) = delta.tool_use {
            let index = self.open_blocks.get(block).copied().flatten();
            match index
                .and_then(|i| self.items.get_mut(i))
                .map(|o| &mut o.item)
            {
                Some(Item::FunctionCall {
                    arguments, custom, ..
                }) => {
                    arguments.push_str(&tool_use.input);
                    if *custom {
                        // Its free text is sent whole when the call ends: the model writes it
                        // as JSON, whose string is not readable in pieces.
                        return Ok(());
                    }
                }
                _ => {
                    return Err(GatewayError::upstream(
                        "Bedrock streamed tool input for a block that is not a tool call.",
                    ))
                }
            }
            let mut members = self.item_ref(index.unwrap_or_default());
            members.push_str(",\"delta\":");
            push_json_string(&mut members, &tool_use.input);
            self.emit(out, "response.function_call_arguments.delta", &members);
            self.first_content_emitted = true;
        } else if let Some(reasoning) = delta.reasoning_content {
            let new_reasoning = || Item::Reasoning {
                text: String::new(),
                signature: None,
                redacted: None,
                summary_open: false,
            };
            let index = self.item_for_block(out, block, new_reasoning)?;
            let Some(Item::Reasoning {
                text: whole,
                signature,
                redacted,
                summary_open,
            }) = self.items.get_mut(index).map(|o| &mut o.item)
            else {
                return Err(GatewayError::upstream(
                    "Bedrock streamed reasoning into a block that is not reasoning.",
                ));
            };
            if let Some(new_signature) = reasoning.signature {
                *signature = Some(new_signature.into_owned());
            }
            if let Some(data) = reasoning.redacted_content {
                *redacted = Some(data.into_owned());
            }
            let Some(text) = reasoning.text else {
                return Ok(());
            };
            whole.push_str(&text);
            let open_part = !std::mem::replace(summary_open, true);
            let item_ref = self.item_ref(index);
            if open_part {
                let members = format!("{item_ref},\"summary_index\":0,\"part\":{{\"type\":\"summary_text\",\"text\":\"\"}}");
                self.emit(out, "response.reasoning_summary_part.added", &members);
            }
            let mut members = item_ref;
            members.push_str(",\"summary_index\":0,\"delta\":");
            push_json_string(&mut members, &text);
            self.emit(out, "response.reasoning_summary_text.delta", &members);
            self.first_content_emitted = true;
        }
        Ok(())
    }

    /// Sends the events that finish a block's item, the whole item last.
    fn close_block(&mut self, out: &mut Vec<u8>, block_index: usize) {
        let Some(index) = self.open_blocks.get_mut(block_index).and_then(Option::take) else {
            return;
        };
        let item_ref = self.item_ref(index);
        let Some(output) = self.items.get_mut(index) else {
            return;
        };
        output.done = true;
        let mut events: Vec<(&'static str, String)> = Vec::with_capacity(3);
        match &output.item {
            Item::Message { text, citations } => {
                let mut members = format!("{item_ref},\"content_index\":0,\"text\":");
                push_json_string(&mut members, text);
                members.push_str(",\"logprobs\":[]");
                events.push(("response.output_text.done", members));
                let mut members = format!("{item_ref},\"content_index\":0,\"part\":");
                render_text_part(&mut members, text, citations);
                events.push(("response.content_part.done", members));
            }
            Item::FunctionCall {
                arguments,
                custom: true,
                ..
            } => {
                let input = tool_names::custom_input(arguments);
                let mut members = format!("{item_ref},\"delta\":");
                push_json_string(&mut members, &input);
                events.push(("response.custom_tool_call_input.delta", members));
                let mut members = format!("{item_ref},\"input\":");
                push_json_string(&mut members, &input);
                events.push(("response.custom_tool_call_input.done", members));
            }
            Item::FunctionCall {
                name, arguments, ..
            } => {
                let mut members = format!("{item_ref},\"name\":");
                push_json_string(&mut members, name);
                members.push_str(",\"arguments\":");
                push_json_string(&mut members, arguments);
                events.push(("response.function_call_arguments.done", members));
            }
            Item::Reasoning {
                text,
                summary_open: true,
                ..
            } => {
                let mut members = format!("{item_ref},\"summary_index\":0,\"text\":");
                push_json_string(&mut members, text);
                events.push(("response.reasoning_summary_text.done", members));
                let mut members = format!("{item_ref},\"summary_index\":0,\"part\":");
                render_summary_part(&mut members, text);
                events.push(("response.reasoning_summary_part.done", members));
            }
            Item::Reasoning { .. } => {}
        }
        let mut members = format!("\"output_index\":{index},\"item\":");
        self.context
            .render_item(&mut members, &output.item, index, "completed", true);
        events.push(("response.output_item.done", members));
        for (kind, members) in events {
            self.emit(out, kind, &members);
        }
    }

    fn close_all(&mut self, out: &mut Vec<u8>) {
        for block_index in 0..self.open_blocks.len() {
            self.close_block(out, block_index);
        }
    }

    /// `response.completed`, or `response.incomplete` when Bedrock stopped on a limit or a filter.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_all(out);
        let state =
            ResponseState::finished(self.stop_reason.as_deref(), self.usage.unwrap_or_default());
        let kind = if matches!(
            state,
            ResponseState::Finished {
                incomplete_reason: Some(_),
                ..
            }
        ) {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit_response(out, kind, state);
        self.finished = true;
    }
}

impl FrameTranslator for ResponsesStreamTranslator {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(TokenUsage::from)
    }

    fn first_content_emitted(&self) -> bool {
        self.first_content_emitted
    }

    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        if let Err(error) = self.handle_event(frame, out) {
            self.fail(out, &error);
        }
    }

    /// `response.failed` with the error, then an `error` event, on which the SDKs raise.
    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError) {
        self.failure = Some(error.status);
        self.start(out);
        self.emit_response(out, "response.failed", ResponseState::Failed(error));
        let mut members = String::with_capacity(128 + 2 * error.message.len());
        let code = error
            .code
            .as_deref()
            .unwrap_or_else(|| failure_code(error.kind));
        members.push_str("\"code\":");
        push_json_string(&mut members, code);
        members.push_str(",\"message\":");
        push_json_string(&mut members, &error.message);
        members.push_str(",\"param\":null,\"error\":{\"type\":");
        push_json_string(&mut members, errors::openai_type(error.kind));
        members.push_str(",\"code\":");
        push_json_string(&mut members, code);
        members.push_str(",\"message\":");
        push_json_string(&mut members, &error.message);
        members.push_str(",\"param\":null}");
        self.emit(out, "error", &members);
        self.finished = true;
    }

    fn on_end_of_stream(&mut self, out: &mut Vec<u8>) {
        if self.stop_reason.is_some() {
            // Bedrock's usage event did not come; the response is complete without it.
            self.complete(out);
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

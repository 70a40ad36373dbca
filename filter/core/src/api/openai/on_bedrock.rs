//! OpenAI's own models on Bedrock (gpt-oss): Bedrock Runtime serves them with OpenAI's API under
//! `/openai/v1` (`chat/completions`, `responses`), signed for service `bedrock` like any other call.
//! For a backend of schema `openai` the caller's request goes through as it is, its `model` made
//! the backend's, and the reply comes back as Bedrock sent it while its usage is read on the way.
//!
//! A streamed chat is asked for its usage (`stream_options.include_usage`) whatever the caller
//! asked, or a caller could stream without ever being counted or charged; the usage chunk is then
//! taken out of what a caller that did not ask for it gets.

use crate::errors::GatewayError;
use crate::translated::TokenUsage;
use serde::Deserialize;
use serde_json::{Map, Value};

/// How a reply is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenAiPlan {
    pub responses: bool,
    pub stream: bool,
    /// The caller did not ask for the usage chunk the gateway asked for: it is taken out.
    pub strip_usage_chunk: bool,
}

/// The request for Bedrock: the caller's, with `model` set to `model_id` and usage asked for.
pub fn prepare(
    body: &[u8],
    model_id: &str,
    responses: bool,
) -> Result<(Vec<u8>, OpenAiPlan), GatewayError> {
    let mut request: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid request body: {e}")))?;
    request.insert("model".into(), Value::String(model_id.to_owned()));
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let mut strip_usage_chunk = false;
    if stream && !responses {
        let options = request
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(options) = options.as_object_mut() else {
            return Err(GatewayError::invalid_request(
                "`stream_options` must be an object.",
            ));
        };
        strip_usage_chunk = options.get("include_usage").and_then(Value::as_bool) != Some(true);
        options.insert("include_usage".into(), Value::Bool(true));
    }
    let body = serde_json::to_vec(&request)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid request body: {e}")))?;
    Ok((
        body,
        OpenAiPlan {
            responses,
            stream,
            strip_usage_chunk,
        },
    ))
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: u64,
}

impl From<Usage> for TokenUsage {
    /// OpenAI counts cached tokens inside the prompt's; the gateway counts them apart, as Bedrock does.
    fn from(usage: Usage) -> Self {
        let cached = usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        TokenUsage {
            input: usage.prompt_tokens.saturating_sub(cached),
            output: usage.completion_tokens,
            cache_read: cached,
            cache_write: 0,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The usage of a whole reply (a chat completion or a response).
pub fn reply_usage(body: &[u8]) -> Option<TokenUsage> {
    let parsed: WithUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.map(TokenUsage::from)
}

/// Reads a streamed reply's events as they pass, for its usage and its first content.
#[derive(Debug)]
pub struct StreamReader {
    plan: OpenAiPlan,
    /// The part of an event not yet ended by a blank line.
    partial: Vec<u8>,
    usage: Option<TokenUsage>,
    first_content: bool,
    /// The stream's last event has gone by: a Responses stream's `response.completed` (or
    /// `incomplete`, `failed`), a chat stream's usage chunk (which the gateway always asks for,
    /// and Bedrock sends last) or `[DONE]`.
    finished: bool,
}

impl StreamReader {
    pub fn new(plan: OpenAiPlan) -> Self {
        StreamReader {
            plan,
            partial: Vec::new(),
            usage: None,
            first_content: false,
            finished: false,
        }
    }

    /// What goes on to the caller: whole events, as they came, but the usage chunk the caller did
    /// not ask for.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut pending = std::mem::take(&mut self.partial);
        pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(pending.len());
        let mut start = 0;
        while let Some(end) = find_event_end(pending.get(start..).unwrap_or_default()) {
            let event_end = start + end;
            let event = pending.get(start..event_end).unwrap_or_default();
            if self.keep(event) {
                out.extend_from_slice(event);
            }
            start = event_end;
        }
        pending.drain(..start);
        if end_of_stream {
            out.append(&mut pending);
        }
        self.partial = pending;
        out
    }

    /// Reads one event (with its blank line); false when it is the usage chunk to take out.
    fn keep(&mut self, event: &[u8]) -> bool {
        let Some(data) = event
            .split(|b| *b == b'\n')
            .find_map(|line| line.strip_prefix(b"data: "))
        else {
            return true;
        };
        // Once the first content was seen, only a usage event needs reading: the others go on
        // without being parsed (a stream is mostly deltas).
        let has_usage = data.windows(7).any(|w| w == b"\"usage\"");
        if data.starts_with(b"[DONE]") {
            self.finished = true;
            return true;
        }
        if self.first_content && !has_usage {
            return true;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return true;
        };
        if !self.first_content {
            let delta = value
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .or_else(|| {
                    (value.get("type").and_then(Value::as_str)
                        == Some("response.output_text.delta"))
                    .then(|| value.get("delta").and_then(Value::as_str))
                    .flatten()
                });
            self.first_content = delta.is_some_and(|d| !d.is_empty());
        }
        let usage = value
            .get("usage")
            .filter(|u| !u.is_null())
            .or_else(|| value.pointer("/response/usage").filter(|u| !u.is_null()));
        let kind = value.get("type").and_then(Value::as_str);
        if matches!(
            kind,
            Some("response.completed" | "response.incomplete" | "response.failed")
        ) {
            self.finished = true;
        }
        if let Some(usage) = usage {
            if let Ok(usage) = Usage::deserialize(usage) {
                self.usage = Some(TokenUsage::from(usage));
            }
            let only_usage = value
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if only_usage && !self.plan.responses {
                self.finished = true;
            }
            if self.plan.strip_usage_chunk && only_usage {
                return false;
            }
        }
        true
    }

    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    pub fn first_content_emitted(&self) -> bool {
        self.first_content
    }

    /// Whether the stream's last event has gone by (see `finished`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Where the first event in `bytes` ends (after its blank line), if it is whole.
fn find_event_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_the_backends_and_a_stream_is_always_asked_for_its_usage() {
        let (body, plan) = prepare(
            br#"{"model":"gpt-oss","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            "openai.gpt-oss-20b-1:0",
            false,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["model"], "openai.gpt-oss-20b-1:0");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert!(plan.strip_usage_chunk);
        let (_, asked) = prepare(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            "m",
            false,
        )
        .unwrap();
        assert!(!asked.strip_usage_chunk);
    }

    #[test]
    fn a_stream_passes_whole_events_and_the_unasked_usage_chunk_is_taken_out() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for cut in [1, 10, 60, stream.len() - 3] {
            let mut reader = StreamReader::new(OpenAiPlan {
                responses: false,
                stream: true,
                strip_usage_chunk: true,
            });
            let mut out = reader.push(&stream[..cut], false);
            out.extend(reader.push(&stream[cut..], true));
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("usage"), "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(
                reader.usage(),
                Some(TokenUsage {
                    input: 4,
                    output: 2,
                    cache_read: 3,
                    cache_write: 0
                })
            );
            assert!(reader.first_content_emitted());
            assert!(reader.is_finished());
        }
        let mut reader = StreamReader::new(OpenAiPlan {
            responses: false,
            stream: true,
            strip_usage_chunk: false,
        });
        let usage_chunk = b"data: {\"choices\":[],";
        let usage_at = stream
            .windows(usage_chunk.len())
            .position(|w| w == usage_chunk)
            .unwrap();
        reader.push(&stream[..usage_at], false);
        assert!(!reader.is_finished(), "not before the usage chunk");
        let usage_end = usage_at + find_event_end(&stream[usage_at..]).unwrap();
        reader.push(&stream[usage_at..usage_end], false);
        assert!(reader.is_finished(), "at the usage chunk, Bedrock's last");
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":4}}}\n\n";
        let mut reader = StreamReader::new(OpenAiPlan {
            responses: true,
            stream: true,
            strip_usage_chunk: false,
        });
        assert_eq!(reader.push(responses, false), responses.to_vec());
        assert_eq!(reader.usage().map(|u| (u.input, u.output)), Some((5, 4)));
        assert!(
            reader.is_finished(),
            "at response.completed, before the body's end"
        );
        assert_eq!(
            reply_usage(br#"{"usage":{"input_tokens":9,"output_tokens":1}}"#).map(|u| u.input),
            Some(9)
        );
    }
}

//! Bedrock's own API for callers that already speak it (AWS SDKs, Strands, Claude Code in Bedrock
//! mode): `POST /model/{modelId}/{operation}` passes through with the route's model and the
//! gateway's signature, and Bedrock's reply goes back byte for byte, so the SDKs decode it as
//! they would from AWS. The tokens are read on the way for metrics and budgets.

use crate::bedrock::eventstream::{Decoder, Frame};
use crate::bedrock::{self, Operation, Usage};
use crate::errors::GatewayError;
use crate::translated::TokenUsage;
use base64::Engine as _;
use serde::Deserialize;
use std::borrow::Cow;

/// The operation a Bedrock Runtime path names: `/model/{percent-encoded id}/{operation}`, with the
/// id still encoded. `None` for any other path.
pub fn parse_path(path: &str) -> Option<(&str, Operation)> {
    // A trailing slash names the same operation (as `Endpoint::classify` reads it), so it must
    // not lose the model.
    let path = path
        .split_once('?')
        .map_or(path, |(p, _)| p)
        .trim_end_matches('/');
    let rest = path.strip_prefix("/model/")?;
    let (encoded_model, operation) = rest.split_once('/')?;
    let operation = match operation {
        "converse" => Operation::Converse,
        "converse-stream" => Operation::ConverseStream,
        "invoke" => Operation::Invoke,
        "invoke-with-response-stream" => Operation::InvokeWithResponseStream,
        "count-tokens" => Operation::CountTokens,
        _ => return None,
    };
    (!encoded_model.is_empty()).then_some((encoded_model, operation))
}

pub fn is_stream(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::ConverseStream | Operation::InvokeWithResponseStream
    )
}

/// A Bedrock error body as AWS sent it, its `message` without the account's identifiers (see
/// [`crate::errors::redact_aws_identifiers`]); every other member stays as it was.
pub fn redact_error_body(body: &[u8]) -> Vec<u8> {
    let Ok(mut error) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
    else {
        return body.to_vec();
    };
    let mut changed = false;
    for key in ["message", "Message"] {
        if let Some(serde_json::Value::String(message)) = error.get_mut(key) {
            if let Cow::Owned(redacted) = crate::errors::redact_aws_identifiers(message) {
                log::warn!("ai gateway: Bedrock answered: {message}");
                *message = redacted;
                changed = true;
            }
        }
    }
    match serde_json::to_vec(&error) {
        Ok(redacted) if changed => redacted,
        _ => body.to_vec(),
    }
}

/// The two shapes of usage a whole reply carries: Converse's, or a Claude body's from InvokeModel.
#[derive(Deserialize)]
struct ReplyUsage {
    #[serde(default)]
    usage: Option<AnyUsage>,
}

#[derive(Deserialize)]
struct AnyUsage {
    #[serde(default, alias = "inputTokens")]
    input_tokens: u64,
    #[serde(default, alias = "outputTokens")]
    output_tokens: u64,
    #[serde(default, alias = "cacheReadInputTokens")]
    cache_read_input_tokens: u64,
    #[serde(
        default,
        alias = "cacheWriteInputTokens",
        alias = "cache_creation_input_tokens"
    )]
    cache_write_input_tokens: u64,
}

/// The tokens of a whole reply: Bedrock's token-count headers (InvokeModel), else the body's usage.
pub fn reply_usage(
    body: &[u8],
    header_input: Option<u64>,
    header_output: Option<u64>,
) -> Option<TokenUsage> {
    if let (Some(input), Some(output)) = (header_input, header_output) {
        return Some(TokenUsage {
            input,
            output,
            cache_read: 0,
            cache_write: 0,
        });
    }
    let usage = serde_json::from_slice::<ReplyUsage>(body).ok()?.usage?;
    Some(TokenUsage {
        input: usage.input_tokens,
        output: usage.output_tokens,
        cache_read: usage.cache_read_input_tokens,
        cache_write: usage.cache_write_input_tokens,
    })
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InvocationMetricsHolder {
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    metrics: Option<InvocationMetrics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    #[serde(default)]
    input_token_count: u64,
    #[serde(default)]
    output_token_count: u64,
}

/// Watches a streamed reply go by unchanged: ConverseStream's `metadata` usage, or the
/// invocation metrics Bedrock adds to an InvokeModel stream's last chunk.
#[derive(Debug)]
pub struct StreamObserver {
    decoder: Decoder,
    usage: Option<TokenUsage>,
    first_content: bool,
    /// A frame could not be decoded: the caller's SDK checks the frames itself; the gateway stops reading.
    stopped: bool,
    /// The bytes of a frame not yet whole, held until it is: a frame goes on whole, or rewritten.
    partial: Vec<u8>,
    max_frame_len: usize,
    /// The status of the first exception frame Bedrock ended the stream with (see `failure`).
    failure: Option<u16>,
    /// The stream's last event has gone by (see `is_finished`).
    finished: bool,
}

impl StreamObserver {
    pub fn new(max_frame_len: usize) -> Self {
        StreamObserver {
            decoder: Decoder::new(max_frame_len),
            usage: None,
            first_content: false,
            stopped: false,
            partial: Vec::new(),
            max_frame_len,
            failure: None,
            finished: false,
        }
    }

    /// Reads one chunk of the reply and returns what goes on to the caller: the same frames, but
    /// an exception frame whose message names an AWS account or ARN rewritten without them (as
    /// whole error bodies are, see [`redact_error_body`]). A frame split across chunks goes on
    /// once whole; at the end of the stream whatever is left goes on as it came.
    pub fn pass(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        self.observe(chunk);
        if self.partial.is_empty() && !chunk_may_hold_exception(chunk) && whole_frames(chunk) {
            // The usual case: whole frames, none an exception; nothing to rewrite or hold.
            return chunk.to_vec();
        }
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.partial.len());
        let mut at = 0;
        while let Some(length) = self
            .partial
            .get(at..at + 4)
            .and_then(|prefix| <[u8; 4]>::try_from(prefix).ok())
            .map(|prefix| u32::from_be_bytes(prefix) as usize)
        {
            if !(16..=self.max_frame_len).contains(&length) {
                // Not a frame the gateway can read: the rest goes on unchanged.
                at = self.partial.len();
                out.clear();
                out.extend_from_slice(&self.partial);
                break;
            }
            let Some(frame) = self.partial.get(at..at + length) else {
                break;
            };
            match redacted_exception(frame, self.max_frame_len) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(frame),
            }
            at += length;
        }
        self.partial.drain(..at.min(self.partial.len()));
        if end_of_stream {
            out.append(&mut self.partial);
        }
        out
    }

    /// Reads one chunk of the reply; the caller sends the chunk on as it is.
    pub fn observe(&mut self, chunk: &[u8]) {
        if self.stopped {
            return;
        }
        let mut decoder = std::mem::take(&mut self.decoder);
        let result = decoder.decode(chunk, &mut |frame| self.on_frame(frame));
        self.decoder = decoder;
        if let Err(error) = result {
            log::debug!("ai gateway: a passed-through Bedrock stream is not readable ({error}); its tokens are not counted");
            self.stopped = true;
        }
    }

    fn on_frame(&mut self, frame: Frame<'_>) {
        if frame.is_exception() {
            let (status, _) =
                GatewayError::bedrock_status_and_kind(0, frame.headers.exception_type);
            self.failure.get_or_insert(status);
            return;
        }
        match frame.headers.event_type {
            Some("contentBlockDelta") => self.first_content = true,
            Some("metadata") => {
                if let Ok(bedrock::MetadataEvent { usage: Some(usage) }) =
                    serde_json::from_slice(frame.payload)
                {
                    self.usage = Some(TokenUsage::from(usage));
                }
                self.finished = true;
            }
            Some("chunk") => {
                self.first_content = true;
                let decoded = serde_json::from_slice::<Chunk<'_>>(frame.payload)
                    .ok()
                    .and_then(|chunk| {
                        base64::engine::general_purpose::STANDARD
                            .decode(chunk.bytes.as_bytes())
                            .ok()
                    });
                let metrics = decoded.and_then(|event| {
                    serde_json::from_slice::<InvocationMetricsHolder>(&event)
                        .ok()?
                        .metrics
                });
                if let Some(metrics) = metrics {
                    let usage = Usage {
                        input_tokens: metrics.input_token_count,
                        output_tokens: metrics.output_token_count,
                        ..Usage::default()
                    };
                    self.usage = Some(TokenUsage::from(usage));
                    self.finished = true;
                }
            }
            _ => {}
        }
    }

    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    /// Whether the stream's last event has gone by: ConverseStream's `metadata`, or the
    /// InvokeModel chunk that carries Bedrock's invocation metrics.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The status of the exception Bedrock ended the stream with, if it did: the caller's SDK
    /// raises it, and the request counts as failed with it.
    pub fn failure(&self) -> Option<u16> {
        self.failure
    }
}

/// Whether a chunk could hold an exception frame (its `:message-type` header's value): frames
/// without one go on without being taken apart.
fn chunk_may_hold_exception(chunk: &[u8]) -> bool {
    chunk.windows(9).any(|w| w == b"exception")
}

/// Whether a chunk is a run of whole frames, by their length prefixes.
fn whole_frames(chunk: &[u8]) -> bool {
    let mut at = 0;
    while at < chunk.len() {
        let Some(prefix) = chunk
            .get(at..at + 4)
            .and_then(|p| <[u8; 4]>::try_from(p).ok())
        else {
            return false;
        };
        let length = u32::from_be_bytes(prefix) as usize;
        if length < 16 {
            return false;
        }
        at += length;
    }
    at == chunk.len()
}

/// An exception frame re-encoded with its message redacted, if it is one whose message names an
/// account or an ARN.
fn redacted_exception(frame: &[u8], max_frame_len: usize) -> Option<Vec<u8>> {
    let mut rewritten = None;
    let mut decoder = Decoder::new(max_frame_len);
    let _ = decoder.decode(frame, &mut |decoded| {
        if !decoded.is_exception() {
            return;
        }
        let payload = redact_error_body(decoded.payload);
        if payload == decoded.payload {
            return;
        }
        let mut headers = vec![(
            ":message-type",
            decoded.headers.message_type.unwrap_or("exception"),
        )];
        if let Some(exception_type) = decoded.headers.exception_type {
            headers.push((":exception-type", exception_type));
        }
        headers.push((
            ":content-type",
            decoded.headers.content_type.unwrap_or("application/json"),
        ));
        rewritten = Some(crate::bedrock::eventstream::encode_frame(
            &headers, &payload,
        ));
    });
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::eventstream::encode_frame;

    #[test]
    fn a_streamed_exception_naming_an_account_is_redacted_and_every_other_frame_goes_on_as_it_came()
    {
        let delta = encode_frame(
            &[
                (":message-type", "event"),
                (":event-type", "contentBlockDelta"),
                (":content-type", "application/json"),
            ],
            br#"{"contentBlockIndex":0,"delta":{"text":"exception-free text"}}"#,
        );
        let exception = encode_frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "validationException"),
                (":content-type", "application/json"),
            ],
            br#"{"message":"User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized"}"#,
        );
        let plain_exception = encode_frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
            ],
            br#"{"message":"Too many tokens"}"#,
        );
        let stream: Vec<u8> = [delta.clone(), plain_exception.clone(), exception.clone()].concat();
        for cut in [1, 7, delta.len(), delta.len() + 3, stream.len() - 1] {
            let mut observer = StreamObserver::new(1 << 20);
            let mut out = observer.pass(&stream[..cut], false);
            out.extend(observer.pass(&stream[cut..], true));
            let mut frames = Vec::new();
            Decoder::new(1 << 20)
                .decode(&out, &mut |f| {
                    frames.push((
                        f.headers.exception_type.map(str::to_owned),
                        f.payload.to_vec(),
                    ))
                })
                .unwrap();
            assert_eq!(frames.len(), 3, "cut at {cut}");
            assert_eq!(
                observer.failure(),
                Some(429),
                "the first exception, throttling"
            );
            assert!(out.starts_with(&delta), "a delta goes on byte for byte");
            assert_eq!(frames[1].1, br#"{"message":"Too many tokens"}"#);
            let message = String::from_utf8(frames[2].1.clone()).unwrap();
            assert_eq!(frames[2].0.as_deref(), Some("validationException"));
            assert!(
                !message.contains("123456789012") && !message.contains("arn:aws"),
                "{message}"
            );
        }
        let mut observer = StreamObserver::new(1 << 20);
        assert_eq!(
            observer.pass(&delta, false),
            delta,
            "whole frames without an exception pass at once"
        );
        assert_eq!(observer.failure(), None);
    }

    #[test]
    fn bedrock_paths_name_a_model_and_an_operation() {
        assert_eq!(
            parse_path("/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"),
            Some(("us.meta.llama3-2-1b-instruct-v1%3A0", Operation::Converse))
        );
        assert_eq!(
            parse_path("/model/m/converse-stream?x=1"),
            Some(("m", Operation::ConverseStream))
        );
        assert_eq!(
            parse_path("/model/m/invoke-with-response-stream").map(|p| p.1),
            Some(Operation::InvokeWithResponseStream)
        );
        assert_eq!(
            parse_path("/model/m/count-tokens").map(|p| p.1),
            Some(Operation::CountTokens)
        );
        for other in [
            "/model//converse",
            "/model/m/async-invoke",
            "/model/m",
            "/models/m/converse",
            "/model/m/converse/x",
        ] {
            assert_eq!(parse_path(other), None, "{other}");
        }
    }

    #[test]
    fn tokens_are_read_from_headers_or_either_body_shape() {
        assert_eq!(
            reply_usage(b"{}", Some(3), Some(4)).map(|u| u.total()),
            Some(7)
        );
        let converse = br#"{"output":{},"usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7,"cacheReadInputTokens":1}}"#;
        assert_eq!(
            reply_usage(converse, None, None),
            Some(TokenUsage {
                input: 5,
                output: 2,
                cache_read: 1,
                cache_write: 0
            })
        );
        let claude = br#"{"content":[],"usage":{"input_tokens":9,"output_tokens":1,"cache_creation_input_tokens":2}}"#;
        assert_eq!(
            reply_usage(claude, None, None),
            Some(TokenUsage {
                input: 9,
                output: 1,
                cache_read: 0,
                cache_write: 2
            })
        );
        assert_eq!(reply_usage(b"not json", None, None), None);
    }

    #[test]
    fn streams_are_watched_for_their_usage() {
        let event = |kind: &str, payload: &str| {
            encode_frame(
                &[(":event-type", kind), (":message-type", "event")],
                payload.as_bytes(),
            )
        };
        let mut converse = StreamObserver::new(1 << 20);
        converse.observe(&event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#,
        ));
        let metadata = event(
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}"#,
        );
        let (head, tail) = metadata.split_at(10);
        converse.observe(head);
        assert_eq!(converse.usage(), None);
        assert!(!converse.is_finished());
        converse.observe(tail);
        assert!(converse.first_content_seen());
        assert_eq!(converse.usage().map(|u| u.total()), Some(5));
        assert!(
            converse.is_finished(),
            "metadata is ConverseStream's last event"
        );

        let last_chunk = base64::engine::general_purpose::STANDARD
            .encode(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":7,"outputTokenCount":4}}"#);
        let mut invoke = StreamObserver::new(1 << 20);
        invoke.observe(&event("chunk", &format!(r#"{{"bytes":"{last_chunk}"}}"#)));
        assert_eq!(
            invoke.usage(),
            Some(TokenUsage {
                input: 7,
                output: 4,
                cache_read: 0,
                cache_write: 0
            })
        );
        assert!(
            invoke.is_finished(),
            "the chunk with the invocation metrics is the last"
        );

        let mut corrupt = StreamObserver::new(1 << 20);
        corrupt.observe(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        corrupt.observe(&metadata);
        assert_eq!(
            corrupt.usage(),
            None,
            "reading stops at a corrupt frame; the bytes still pass"
        );
    }
}

//! Incremental decoder for AWS event-stream frames (`application/vnd.amazon.eventstream`).
//!
//! Frame layout: total length (u32 BE), headers length (u32 BE), CRC-32 of those
//! eight bytes, headers, payload, CRC-32 of everything before it. Frames can be split
//! at any byte across body chunks, so the decoder keeps only the incomplete tail of
//! the previous chunk and decodes whole frames straight out of the new one.

use crate::errors::GatewayError;
use std::fmt;

const PRELUDE_LEN: usize = 12;
const MESSAGE_CRC_LEN: usize = 4;
const MIN_FRAME_LEN: usize = PRELUDE_LEN + MESSAGE_CRC_LEN;
/// Bedrock's own limit on event-stream messages is far below this; anything bigger is corruption.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    FrameTooShort(usize),
    FrameTooLong { length: usize, max: usize },
    PreludeCrcMismatch,
    MessageCrcMismatch,
    MalformedHeaders(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooShort(len) => write!(
                f,
                "event-stream frame length {len} is below the 16-byte minimum"
            ),
            DecodeError::FrameTooLong { length, max } => {
                write!(
                    f,
                    "event-stream frame of {length} bytes exceeds the {max}-byte limit"
                )
            }
            DecodeError::PreludeCrcMismatch => f.write_str("event-stream prelude CRC mismatch"),
            DecodeError::MessageCrcMismatch => f.write_str("event-stream message CRC mismatch"),
            DecodeError::MalformedHeaders(why) => {
                write!(f, "malformed event-stream headers: {why}")
            }
        }
    }
}

/// The headers Bedrock uses, borrowed from the frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeaders<'a> {
    pub message_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub exception_type: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub headers: FrameHeaders<'a>,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    pub fn is_exception(&self) -> bool {
        matches!(self.headers.message_type, Some("exception") | Some("error"))
    }
}

#[derive(Debug)]
pub struct Decoder {
    pending: Vec<u8>,
    max_frame_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    pub fn new(max_frame_len: usize) -> Self {
        Decoder {
            pending: Vec::new(),
            max_frame_len: max_frame_len.max(MIN_FRAME_LEN),
        }
    }

    /// Bytes held back waiting for the rest of a frame.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one body chunk and calls `on_frame` for every frame it completes.
    /// After an error the stream is unusable: the caller must end it.
    pub fn decode(
        &mut self,
        mut chunk: &[u8],
        on_frame: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), DecodeError> {
        if !self.pending.is_empty() {
            // Complete the frame started in an earlier chunk, taking only the bytes it needs.
            let needed = self.bytes_missing_from_pending(chunk)?;
            let (head, rest) = chunk.split_at(needed.min(chunk.len()));
            self.pending.extend_from_slice(head);
            chunk = rest;
            match frame_length(&self.pending, self.max_frame_len)? {
                Some(len) if self.pending.len() >= len => {
                    let frame = parse_frame(&self.pending)?;
                    on_frame(frame);
                    self.pending.clear();
                }
                _ => return Ok(()),
            }
        }
        while !chunk.is_empty() {
            match frame_length(chunk, self.max_frame_len)? {
                Some(len) if chunk.len() >= len => {
                    let (frame_bytes, rest) = chunk.split_at(len);
                    on_frame(parse_frame(frame_bytes)?);
                    chunk = rest;
                }
                _ => {
                    self.pending.extend_from_slice(chunk);
                    break;
                }
            }
        }
        Ok(())
    }

    /// How many bytes of `chunk` the pending partial frame still needs.
    fn bytes_missing_from_pending(&self, chunk: &[u8]) -> Result<usize, DecodeError> {
        if self.pending.len() >= 4 {
            let len = frame_length(&self.pending, self.max_frame_len)?.unwrap_or(MIN_FRAME_LEN);
            return Ok(len.saturating_sub(self.pending.len()));
        }
        // The length itself is split: peek at it across both buffers.
        let mut prefix = [0u8; 4];
        let available = self.pending.iter().chain(chunk.iter()).take(4).copied();
        let mut count = 0;
        for (slot, byte) in prefix.iter_mut().zip(available) {
            *slot = byte;
            count += 1;
        }
        if count < 4 {
            return Ok(chunk.len());
        }
        let len = checked_frame_length(u32::from_be_bytes(prefix) as usize, self.max_frame_len)?;
        Ok(len.saturating_sub(self.pending.len()))
    }
}

fn checked_frame_length(length: usize, max: usize) -> Result<usize, DecodeError> {
    if length < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooShort(length));
    }
    if length > max {
        return Err(DecodeError::FrameTooLong { length, max });
    }
    Ok(length)
}

/// The frame's total length, once its first four bytes are known.
fn frame_length(bytes: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    match read_u32(bytes, 0) {
        Some(len) => checked_frame_length(len as usize, max).map(Some),
        None => Ok(None),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    let array: [u8; 4] = slice.try_into().ok()?;
    Some(u32::from_be_bytes(array))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let slice = bytes.get(at..at.checked_add(2)?)?;
    let array: [u8; 2] = slice.try_into().ok()?;
    Some(u16::from_be_bytes(array))
}

/// Parses one complete frame (exactly `total length` bytes).
fn parse_frame(frame: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let short = || DecodeError::FrameTooShort(frame.len());
    let headers_len = read_u32(frame, 4).ok_or_else(short)? as usize;
    let prelude_crc = read_u32(frame, 8).ok_or_else(short)?;
    let prelude = frame.get(..8).ok_or_else(short)?;
    if crc32fast::hash(prelude) != prelude_crc {
        return Err(DecodeError::PreludeCrcMismatch);
    }
    let crc_at = frame.len().checked_sub(MESSAGE_CRC_LEN).ok_or_else(short)?;
    let message_crc = read_u32(frame, crc_at).ok_or_else(short)?;
    let covered = frame.get(..crc_at).ok_or_else(short)?;
    if crc32fast::hash(covered) != message_crc {
        return Err(DecodeError::MessageCrcMismatch);
    }
    let headers_end = PRELUDE_LEN
        .checked_add(headers_len)
        .filter(|end| *end <= crc_at)
        .ok_or(DecodeError::MalformedHeaders("headers overrun the frame"))?;
    let header_bytes = frame
        .get(PRELUDE_LEN..headers_end)
        .ok_or(DecodeError::MalformedHeaders("headers overrun the frame"))?;
    let payload = frame.get(headers_end..crc_at).ok_or_else(short)?;
    Ok(Frame {
        headers: parse_headers(header_bytes)?,
        payload,
    })
}

fn parse_headers(mut bytes: &[u8]) -> Result<FrameHeaders<'_>, DecodeError> {
    let truncated = DecodeError::MalformedHeaders("truncated header");
    let mut headers = FrameHeaders::default();
    while let Some((&name_len, rest)) = bytes.split_first() {
        let name_len = usize::from(name_len);
        let name = rest.get(..name_len).ok_or(truncated.clone())?;
        let (&value_type, rest) = rest
            .get(name_len..)
            .and_then(|r| r.split_first())
            .ok_or(truncated.clone())?;
        let fixed_len = match value_type {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(DecodeError::MalformedHeaders("unknown header value type")),
        };
        let (value, rest) = match fixed_len {
            Some(len) => (None, rest.get(len..).ok_or(truncated.clone())?),
            None => {
                let len = usize::from(read_u16(rest, 0).ok_or(truncated.clone())?);
                let value = rest.get(2..2 + len).ok_or(truncated.clone())?;
                (Some(value), rest.get(2 + len..).ok_or(truncated.clone())?)
            }
        };
        if value_type == 7 {
            let text = value.and_then(|v| std::str::from_utf8(v).ok());
            match name {
                b":message-type" => headers.message_type = text,
                b":event-type" => headers.event_type = text,
                b":exception-type" | b":error-code" => headers.exception_type = text,
                b":content-type" => headers.content_type = text,
                _ => {}
            }
        }
        bytes = rest;
    }
    Ok(headers)
}

/// A translation of an event stream into the caller's stream, one decoded frame at a time.
/// The steps every translation shares (stopping once finished, Bedrock exception frames,
/// corrupt streams) are `translate_chunk`'s; a translator handles its events and its error format.
pub trait FrameTranslator {
    fn decoder(&mut self) -> &mut Decoder;
    /// One event frame (not an exception), while the stream is not finished.
    fn on_event(&mut self, frame: Frame<'_>, out: &mut Vec<u8>);
    /// Ends the caller's stream with an error event in its API's format; finishes the stream.
    fn fail(&mut self, out: &mut Vec<u8>, error: &GatewayError);
    /// The upstream body ended (complete or not).
    fn on_end_of_stream(&mut self, out: &mut Vec<u8>);
    fn is_finished(&self) -> bool;
    /// The status of the error the stream ended with (see `fail`), if it failed.
    fn failure(&self) -> Option<u16>;
    /// Token usage reported by the stream so far.
    fn usage(&self) -> Option<crate::translated::TokenUsage>;
    /// Whether generated content has been sent to the caller yet (for time to first token).
    fn first_content_emitted(&self) -> bool;

    /// Translates one upstream body chunk into the bytes to send downstream.
    fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8>
    where
        Self: Sized,
    {
        translate_chunk(self, chunk, end_of_stream)
    }
}

/// Feeds one body chunk through the translator's decoder; returns the bytes to send downstream.
pub fn translate_chunk<T: FrameTranslator>(
    translator: &mut T,
    chunk: &[u8],
    end_of_stream: bool,
) -> Vec<u8> {
    // What a frame becomes downstream is larger than the frame (an OpenAI chunk repeats the id,
    // model and the like): sized for that, the buffer is not regrown for every event.
    let mut out = Vec::with_capacity(2 * chunk.len() + 256);
    if !translator.is_finished() {
        // The decoder is lent out while frames borrow the translator.
        let mut decoder = std::mem::take(translator.decoder());
        let result = decoder.decode(chunk, &mut |frame| {
            if translator.is_finished() {
                return;
            }
            if frame.is_exception() {
                let message = crate::bedrock::error_message(frame.payload);
                translator.fail(
                    &mut out,
                    &GatewayError::from_bedrock(0, frame.headers.exception_type, &message),
                );
            } else {
                translator.on_event(frame, &mut out);
            }
        });
        *translator.decoder() = decoder;
        if let Err(error) = result {
            // A corrupt or oversized frame: the stream cannot go on.
            translator.fail(
                &mut out,
                &GatewayError::upstream(format!("Bedrock's event stream is corrupt: {error}")),
            );
        }
    }
    if end_of_stream && !translator.is_finished() {
        translator.on_end_of_stream(&mut out);
    }
    out
}

/// Encodes one frame with string headers: the exception frames the gateway rewrites (see
/// `passthrough`), and the streams tests and benchmarks feed the decoder.
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE_LEN + header_bytes.len() + payload.len() + MESSAGE_CRC_LEN;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(&header_bytes);
    frame.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&message_crc.to_be_bytes());
    frame
}

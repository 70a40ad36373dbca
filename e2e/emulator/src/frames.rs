//! Event-stream frames written with AWS's `aws-smithy-eventstream` encoder.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;

/// Bedrock pads event payloads with a `p` field of varying length so sizes leak nothing.
fn padding(seed: usize) -> String {
    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456";
    ALPHABET[..(seed * 7) % ALPHABET.len() + 1].to_owned()
}

pub fn event(event_type: &'static str, mut payload: serde_json::Value, seed: usize) -> Bytes {
    if let Some(object) = payload.as_object_mut() {
        object.insert("p".into(), padding(seed).into());
    }
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    encode(&message)
}

pub fn exception(exception_type: &'static str, message: &str) -> Bytes {
    let payload = serde_json::json!({ "message": message }).to_string();
    let message = Message::new(Bytes::from(payload))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(exception_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    encode(&message)
}

/// A frame whose message CRC is wrong, for fault injection.
pub fn corrupt(frame: &Bytes) -> Bytes {
    let mut bytes = frame.to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    Bytes::from(bytes)
}

fn encode(message: &Message) -> Bytes {
    let mut buffer = Vec::new();
    if let Err(error) = write_message_to(message, &mut buffer) {
        // Never for the frames the emulator writes; an empty frame then fails the client's check.
        eprintln!("bedrock emulator: cannot encode a frame: {error}");
    }
    Bytes::from(buffer)
}

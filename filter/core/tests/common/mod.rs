//! Helpers shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bedrock_gateway_core::aws::broker::SharedStore;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;

/// Pushes `bytes` through `push` in pieces ending at each of `cuts` (ascending offsets into
/// `bytes`), then the rest with the end-of-stream flag; returns everything `push` wrote.
/// This is how Envoy hands a body to the filter: in chunks split anywhere.
pub fn push_in_pieces(
    bytes: &[u8],
    cuts: &[usize],
    mut push: impl FnMut(&[u8], bool) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        out.extend(push(&bytes[start..cut], false));
        start = cut;
    }
    out.extend(push(&bytes[start..], true));
    out
}

/// One event-stream frame, encoded by AWS's own encoder: `{"event": type, "payload": {...}}` or
/// `{"exception": type, "payload": {...}}`.
pub fn frame_bytes(frame: &Value) -> Vec<u8> {
    let payload = frame["payload"].to_string();
    let message = match (frame.get("event"), frame.get("exception")) {
        (Some(event), _) => Message::new(payload.into_bytes())
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.as_str().unwrap().to_owned().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            )),
        (None, Some(exception)) => Message::new(payload.into_bytes())
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String(exception.as_str().unwrap().to_owned().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            )),
        _ => panic!("frame needs event or exception: {frame}"),
    };
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

/// The JSON of each `data:` event of an SSE body (`[DONE]` as a string).
pub fn parse_sse(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "SSE must end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {event:?}"));
            if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// Envoy's shared data: values with a version bumped on every write.
#[derive(Default)]
pub struct FakeStore(RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.0.borrow().get(key) {
            Some((value, version)) => (Some(value.clone()), Some(*version)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> bool {
        let mut map = self.0.borrow_mut();
        let current = map.get(key).map(|(_, v)| *v);
        if version.is_some() && version != current {
            return false;
        }
        map.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
        true
    }
}

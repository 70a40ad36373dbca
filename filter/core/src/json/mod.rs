//! JSON helpers below every translator: writing string literals by hand, a body's top-level
//! members kept raw, and parsing whose errors name the field at fault.

use std::fmt::Write as _;

pub(crate) mod path;
pub mod raw;

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: Option<&str> = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        if let Some(piece) = text.get(start..i) {
            out.push_str(piece);
        }
        match escape {
            Some(escaped) => out.push_str(escaped),
            None => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        start = i + 1;
    }
    if let Some(rest) = text.get(start..) {
        out.push_str(rest);
    }
    out.push('"');
}

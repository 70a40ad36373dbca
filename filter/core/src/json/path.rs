//! JSON parsing whose errors name the field at fault (`messages[2].content: invalid type ...`),
//! so that callers can see what to fix.

use serde::Deserialize;
use std::fmt;

pub struct PathError(String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PathError> {
    // Tracking the path costs on every member (each key is copied in case it is needed): valid
    // bodies, nearly all of them, are parsed without it, and only a failure is parsed again to name
    // the field at fault.
    serde_json::from_slice(bytes).or_else(|_| from_slice_tracking_path(bytes))
}

fn from_slice_tracking_path<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PathError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            PathError(inner.to_string())
        } else {
            PathError(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|e| PathError(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Message {
        role: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Request {
        messages: Vec<Message>,
    }

    #[test]
    fn valid_bodies_parse_and_errors_name_the_field_at_fault() {
        let parsed: Request = from_slice(br#"{"messages":[{"role":"user"}]}"#)
            .ok()
            .unwrap();
        assert_eq!(
            parsed,
            Request {
                messages: vec![Message {
                    role: "user".into()
                }]
            }
        );
        let error = from_slice::<Request>(br#"{"messages":[{"role":"user"},{"role":7}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("messages[1].role: invalid type: integer `7`"),
            "{error}"
        );
        let error = from_slice::<Request>(br#"{"messages":[]} trailing"#)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("trailing characters"), "{error}");
    }
}

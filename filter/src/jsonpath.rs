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

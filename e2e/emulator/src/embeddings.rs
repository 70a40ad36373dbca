//! Titan Text Embeddings v2 and Cohere Embed v3 through InvokeModel: deterministic unit
//! vectors derived from the text, so different inputs get different embeddings.

use crate::model::word_count;
use serde_json::{json, Value};

/// A unit vector of `dimensions` floats seeded by the text.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut values: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = values
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    values.iter_mut().for_each(|v| *v /= norm);
    values
}

/// Returns the response body and the input token count.
pub fn titan(body: &Value) -> Result<(Value, u64), String> {
    let text = body
        .get("inputText")
        .and_then(Value::as_str)
        .ok_or("Malformed input request: #: required key [inputText] not found")?;
    if text.is_empty() {
        return Err("Malformed input request: #/inputText: expected minLength: 1".into());
    }
    let dimensions = body
        .get("dimensions")
        .map_or(Some(1024), Value::as_u64)
        .unwrap_or(0);
    if !matches!(dimensions, 256 | 512 | 1024) {
        return Err(format!("Malformed input request: #/dimensions: {dimensions} is not a valid enum value (256, 512, 1024)"));
    }
    let tokens = word_count(text).max(1);
    let embedding = vector(text, dimensions as usize);
    Ok((
        json!({ "embedding": embedding, "inputTextTokenCount": tokens, "embeddingsByType": { "float": embedding } }),
        tokens,
    ))
}

pub fn cohere(body: &Value, request_id: &str) -> Result<(Value, u64), String> {
    let texts: Vec<&str> = body
        .get("texts")
        .and_then(Value::as_array)
        .ok_or("Malformed input request: #: required key [texts] not found")?
        .iter()
        .map(|t| {
            t.as_str()
                .ok_or("Malformed input request: #/texts: expected type: String")
        })
        .collect::<Result<_, _>>()?;
    if texts.is_empty() || texts.len() > 96 {
        return Err("Malformed input request: #/texts: expected between 1 and 96 items".into());
    }
    match body.get("input_type").and_then(Value::as_str) {
        Some("search_document" | "search_query" | "classification" | "clustering") => {}
        _ => return Err("Malformed input request: #: required key [input_type] not found".into()),
    }
    let tokens = texts.iter().map(|t| word_count(t).max(1)).sum();
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, 1024)).collect();
    let response = if body.get("embedding_types").is_some() {
        json!({ "id": request_id, "response_type": "embeddings_by_type", "embeddings": { "float": vectors }, "texts": texts })
    } else {
        json!({ "id": request_id, "response_type": "embeddings_floats", "embeddings": vectors, "texts": texts })
    };
    Ok((response, tokens))
}

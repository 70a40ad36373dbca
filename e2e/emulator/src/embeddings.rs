//! Titan Text Embeddings v2, Cohere Embed v3 and v4 and Nova Multimodal Embeddings through
//! InvokeModel: deterministic unit vectors derived from the text, so different inputs get different
//! embeddings. Requests are checked against each model's documented request schema (Bedrock's
//! model parameters pages; InvokeModel bodies have no botocore shape), and refused as Bedrock does.

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

/// Cohere Embed v4 (model-parameters-embed-v4): `texts` (or `inputs`), `input_type` (no `image`),
/// `output_dimension` 256/512/1024/1536 (1536 by default), `embedding_types`, `truncate`
/// NONE/LEFT/RIGHT. Bedrock answers embeddings by type (`{"float": [...]}`), asked or not.
pub fn cohere_v4(body: &Value, request_id: &str) -> Result<(Value, u64), String> {
    const KNOWN: [&str; 8] = [
        "texts",
        "images",
        "inputs",
        "input_type",
        "output_dimension",
        "embedding_types",
        "truncate",
        "max_tokens",
    ];
    if let Some(unknown) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !KNOWN.contains(&k.as_str())))
    {
        return Err(format!(
            "Malformed input request: #: extraneous key [{unknown}] is not permitted"
        ));
    }
    let given = ["texts", "images", "inputs"]
        .iter()
        .filter(|k| body.get(**k).is_some())
        .count();
    if given != 1 {
        return Err(
            "Malformed input request: exactly one of texts, images, inputs is required".into(),
        );
    }
    let texts: Vec<&str> = body
        .get("texts")
        .and_then(Value::as_array)
        .ok_or("This emulator embeds texts only.")?
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
        Some(other) => {
            return Err(format!(
                "Malformed input request: #/input_type: {other} is not a valid enum value"
            ))
        }
        None => {
            return Err("Malformed input request: #: required key [input_type] not found".into())
        }
    }
    let dimensions = match body.get("output_dimension") {
        None => 1536,
        Some(value) => match value.as_u64() {
            Some(d @ (256 | 512 | 1024 | 1536)) => d,
            _ => {
                return Err(format!("Malformed input request: #/output_dimension: {value} is not a valid enum value (256, 512, 1024, 1536)"))
            }
        },
    };
    if let Some(types) = body.get("embedding_types") {
        let valid = types.as_array().is_some_and(|types| {
            types.iter().all(|t| {
                matches!(
                    t.as_str(),
                    Some("float" | "int8" | "uint8" | "binary" | "ubinary")
                )
            })
        });
        if !valid {
            return Err("Malformed input request: #/embedding_types: expected values among float, int8, uint8, binary, ubinary".into());
        }
    }
    if let Some(truncate) = body.get("truncate") {
        if !matches!(truncate.as_str(), Some("NONE" | "LEFT" | "RIGHT")) {
            return Err(format!("Malformed input request: #/truncate: {truncate} is not a valid enum value (NONE, LEFT, RIGHT)"));
        }
    }
    let tokens = texts.iter().map(|t| word_count(t).max(1)).sum();
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| vector(t, dimensions as usize))
        .collect();
    Ok((
        json!({ "id": request_id, "response_type": "embeddings_by_type", "embeddings": { "float": vectors }, "texts": texts }),
        tokens,
    ))
}

/// Amazon Nova Multimodal Embeddings, synchronous (nova embeddings-schema): one input per call,
/// `taskType` SINGLE_EMBEDDING, `singleEmbeddingParams` with a required `embeddingPurpose`,
/// `embeddingDimension` 256/384/1024/3072, and one of text, image, audio, video; the token count
/// only in the `x-amzn-bedrock-input-token-count` header.
pub fn nova(body: &Value) -> Result<(Value, u64), String> {
    if let Some(version) = body.get("schemaVersion") {
        if version.as_str() != Some("nova-multimodal-embed-v1") {
            return Err(format!(
                "Malformed input request: #/schemaVersion: {version} is not a valid enum value"
            ));
        }
    }
    match body.get("taskType").and_then(Value::as_str) {
        Some("SINGLE_EMBEDDING") => {}
        Some("SEGMENTED_EMBEDDING") => {
            return Err("SEGMENTED_EMBEDDING is only supported with StartAsyncInvoke.".into())
        }
        _ => return Err("Malformed input request: #: required key [taskType] not found".into()),
    }
    let params = body
        .get("singleEmbeddingParams")
        .and_then(Value::as_object)
        .ok_or("Malformed input request: #: required key [singleEmbeddingParams] not found")?;
    const PURPOSES: [&str; 9] = [
        "GENERIC_INDEX",
        "GENERIC_RETRIEVAL",
        "TEXT_RETRIEVAL",
        "IMAGE_RETRIEVAL",
        "VIDEO_RETRIEVAL",
        "DOCUMENT_RETRIEVAL",
        "AUDIO_RETRIEVAL",
        "CLASSIFICATION",
        "CLUSTERING",
    ];
    match params.get("embeddingPurpose").and_then(Value::as_str) {
        Some(purpose) if PURPOSES.contains(&purpose) => {}
        Some(other) => return Err(format!("Malformed input request: #/singleEmbeddingParams/embeddingPurpose: {other} is not a valid enum value")),
        None => return Err("Malformed input request: #/singleEmbeddingParams: required key [embeddingPurpose] not found".into()),
    }
    let dimensions = match params.get("embeddingDimension") {
        None => 3072,
        Some(value) => match value.as_u64() {
            Some(d @ (256 | 384 | 1024 | 3072)) => d,
            _ => return Err(format!("Malformed input request: #/singleEmbeddingParams/embeddingDimension: {value} is not a valid enum value (256, 384, 1024, 3072)")),
        },
    };
    let modalities = ["text", "image", "audio", "video"]
        .iter()
        .filter(|m| params.contains_key(**m))
        .count();
    if modalities != 1 {
        return Err("Malformed input request: #/singleEmbeddingParams: exactly one of text, image, audio, video is required".into());
    }
    let text = params
        .get("text")
        .ok_or("This emulator embeds text only.")?;
    if let Some(mode) = text.get("truncationMode") {
        if !matches!(mode.as_str(), Some("START" | "END" | "NONE")) {
            return Err(format!("Malformed input request: #/singleEmbeddingParams/text/truncationMode: {mode} is not a valid enum value"));
        }
    } else {
        return Err("Malformed input request: #/singleEmbeddingParams/text: required key [truncationMode] not found".into());
    }
    let value = text
        .get("value")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(
            "Malformed input request: #/singleEmbeddingParams/text: required key [value] not found",
        )?;
    let tokens = word_count(value).max(1);
    Ok((
        json!({ "embeddings": [ { "embeddingType": "TEXT", "embedding": vector(value, dimensions as usize) } ] }),
        tokens,
    ))
}

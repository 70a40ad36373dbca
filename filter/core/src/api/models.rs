//! `GET /v1/models` and `GET /anthropic/v1/models`, answered by the gateway from its configuration.

use crate::aws::time::UtcDateTime;
use crate::config::ModelInfo;
use crate::errors::GatewayError;
use serde_json::{json, Value};

fn openai_model(model: &ModelInfo) -> Value {
    json!({
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by.as_deref().unwrap_or("aws-bedrock"),
    })
}

fn anthropic_model(model: &ModelInfo) -> Value {
    let t = UtcDateTime::from_unix_seconds(model.created);
    json!({
        "type": "model",
        "id": model.id,
        "display_name": model.display_name.as_deref().unwrap_or(&model.id),
        "created_at": format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second),
    })
}

pub fn openai_list(models: &[ModelInfo]) -> Vec<u8> {
    json!({ "object": "list", "data": models.iter().map(openai_model).collect::<Vec<_>>() })
        .to_string()
        .into_bytes()
}

pub fn anthropic_list(models: &[ModelInfo]) -> Vec<u8> {
    json!({
        "data": models.iter().map(anthropic_model).collect::<Vec<_>>(),
        "has_more": false,
        "first_id": models.first().map(|m| m.id.as_str()),
        "last_id": models.last().map(|m| m.id.as_str()),
    })
    .to_string()
    .into_bytes()
}

fn find<'a>(models: &'a [ModelInfo], id: &str) -> Result<&'a ModelInfo, GatewayError> {
    models
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| GatewayError::model_not_found(id))
}

pub fn openai_one(models: &[ModelInfo], id: &str) -> Result<Vec<u8>, GatewayError> {
    find(models, id).map(|m| openai_model(m).to_string().into_bytes())
}

pub fn anthropic_one(models: &[ModelInfo], id: &str) -> Result<Vec<u8>, GatewayError> {
    find(models, id).map(|m| anthropic_model(m).to_string().into_bytes())
}

/// Percent-decodes a model id taken from a URL path (`/v1/models/{id}`).
pub fn decode_path_id(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

//! OpenAI `POST /v1/embeddings` on Bedrock InvokeModel, for Titan Text Embeddings v2 and
//! Cohere Embed v3. Float vectors pass through as the raw JSON Bedrock sent; only
//! `encoding_format: "base64"` makes the gateway parse them (into little-endian f32 bytes).

use crate::errors::GatewayError;
use crate::translated::{TokenUsage, TranslatedBody};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Cohere Embed takes at most this many texts per request.
const COHERE_MAX_TEXTS: usize = 96;
const COHERE_V3_DIMENSIONS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Titan,
    Cohere,
}

impl Family {
    /// Which embedding API a Bedrock model id speaks.
    pub fn of(model_id: &str) -> Option<Family> {
        let bare = model_id.rsplit('/').next().unwrap_or(model_id);
        if bare.contains("titan-embed-text") {
            Some(Family::Titan)
        } else if bare.contains("cohere.embed") {
            Some(Family::Cohere)
        } else {
            None
        }
    }
}

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    input: Input<'a>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
    Tokens(serde::de::IgnoredAny),
}

#[derive(Debug)]
pub struct EmbeddingsInvoke {
    pub body: Vec<u8>,
    pub model: String,
    pub base64: bool,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// Builds the InvokeModel body for the Bedrock model `model_id` (after any override).
pub fn prepare(body: &[u8], model_id: &str) -> Result<(EmbeddingsInvoke, Family), GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("The request body is empty; expected a JSON object."));
    }
    let request: EmbeddingsRequest<'_> =
        crate::jsonpath::from_slice(body).map_err(|e| invalid(format!("Invalid embeddings request: {e}")))?;
    let family = Family::of(model_id).ok_or_else(|| {
        invalid(format!("`{model_id}` is not an embedding model this gateway supports (Titan Text Embeddings v2, Cohere Embed v3)."))
    })?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(invalid(format!("`encoding_format` must be float or base64, got {other:?}."))),
    };
    let texts: Vec<&str> = match &request.input {
        Input::One(text) => vec![text.as_ref()],
        Input::Many(texts) => texts.iter().map(Cow::as_ref).collect(),
        Input::Tokens(_) => return Err(invalid("`input` must be a string or an array of strings; token arrays are not supported.")),
    };
    if texts.is_empty() || texts.iter().any(|t| t.is_empty()) {
        return Err(invalid("`input` must contain non-empty strings."));
    }
    let body = match family {
        Family::Titan => {
            let [text] = texts.as_slice() else {
                return Err(invalid(format!(
                    "Titan Text Embeddings embeds one input per request and got {}; send them one by one, or use Cohere Embed for batches.",
                    texts.len()
                )));
            };
            let mut titan = serde_json::Map::new();
            titan.insert("inputText".into(), (*text).into());
            titan.insert("normalize".into(), true.into());
            if let Some(dimensions) = request.dimensions {
                if !matches!(dimensions, 256 | 512 | 1024) {
                    return Err(invalid(format!("`dimensions` must be 256, 512 or 1024 for Titan Text Embeddings v2, got {dimensions}.")));
                }
                titan.insert("dimensions".into(), dimensions.into());
            }
            serde_json::Value::Object(titan)
        }
        Family::Cohere => {
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(invalid(format!("Cohere Embed takes at most {COHERE_MAX_TEXTS} inputs per request, got {}.", texts.len())));
            }
            if request.dimensions.is_some_and(|d| d != COHERE_V3_DIMENSIONS) {
                return Err(invalid(format!("Cohere Embed v3 returns {COHERE_V3_DIMENSIONS} dimensions; `dimensions` cannot change that.")));
            }
            serde_json::json!({ "texts": texts, "input_type": "search_document" })
        }
    };
    let body = serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))?;
    Ok((EmbeddingsInvoke { body, model: request.model.into_owned(), base64 }, family))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse<'a> {
    #[serde(borrow)]
    embedding: &'a RawValue,
    #[serde(default)]
    input_text_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct CohereResponse<'a> {
    #[serde(borrow)]
    embeddings: &'a RawValue,
}

#[derive(Deserialize)]
struct CohereByType<'a> {
    #[serde(borrow)]
    float: Vec<&'a RawValue>,
}

fn unreadable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::upstream(format!("Bedrock returned an unreadable embeddings response: {e}"))
}

/// Renders Bedrock's embeddings as OpenAI's list. `header_tokens` is Bedrock's
/// `x-amzn-bedrock-input-token-count`, the only count Cohere responses carry.
pub fn response(body: &[u8], family: Family, model: &str, base64: bool, header_tokens: Option<u64>) -> Result<TranslatedBody, GatewayError> {
    let (vectors, tokens): (Vec<&RawValue>, Option<u64>) = match family {
        Family::Titan => {
            let parsed: TitanResponse<'_> = serde_json::from_slice(body).map_err(unreadable)?;
            (vec![parsed.embedding], parsed.input_text_token_count)
        }
        Family::Cohere => {
            let parsed: CohereResponse<'_> = serde_json::from_slice(body).map_err(unreadable)?;
            let raw = parsed.embeddings.get();
            let vectors = if raw.trim_start().starts_with('{') {
                serde_json::from_str::<CohereByType<'_>>(raw).map_err(unreadable)?.float
            } else {
                serde_json::from_str::<Vec<&RawValue>>(raw).map_err(unreadable)?
            };
            (vectors, None)
        }
    };
    let reported = tokens.or(header_tokens);
    let tokens = reported.unwrap_or(0);
    let mut out = String::with_capacity(body.len() + 128);
    out.push_str("{\"object\":\"list\",\"data\":[");
    for (index, vector) in vectors.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"object\":\"embedding\",\"index\":{index},\"embedding\":"));
        if base64 {
            let floats: Vec<f32> = serde_json::from_str(vector.get()).map_err(unreadable)?;
            let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
            out.push('"');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push('"');
        } else {
            out.push_str(vector.get());
        }
        out.push('}');
    }
    out.push_str("],\"model\":");
    crate::openai::push_json_string(&mut out, model);
    out.push_str(&format!(",\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}}}"));
    let usage = reported.map(|input| TokenUsage { input, ..TokenUsage::default() });
    Ok(TranslatedBody { body: out.into_bytes(), usage })
}

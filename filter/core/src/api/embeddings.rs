//! OpenAI `POST /v1/embeddings` on Bedrock InvokeModel, for Titan Text Embeddings v2, Cohere Embed
//! v3 and v4, and Amazon Nova Multimodal Embeddings (text). Float vectors pass through as the raw
//! JSON Bedrock sent; only `encoding_format: "base64"` makes the gateway parse them (into
//! little-endian f32 bytes).
//!
//! Titan and Nova embed one text per call, while OpenAI's callers (LangChain, most RAG tools) send
//! lists: such a list becomes an [`InputBatch`], one InvokeModel body per input, which the backend
//! stage sends as separate calls (`stream::batch`) and [`batch_response`] puts back together.

use crate::errors::GatewayError;
use crate::translated::{TokenUsage, TranslatedBody};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Cohere Embed takes at most this many texts per request; a Titan batch is held to the same.
const MAX_INPUTS: usize = 96;
const COHERE_V3_DIMENSIONS: u32 = 1024;
/// Cohere Embed v4's `output_dimension` values, and Nova's `embeddingDimension` ones.
const COHERE_V4_DIMENSIONS: [u32; 4] = [256, 512, 1024, 1536];
const NOVA_DIMENSIONS: [u32; 4] = [256, 384, 1024, 3072];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Titan,
    Cohere,
    CohereV4,
    Nova,
}

impl Family {
    /// Which embedding API a Bedrock model id speaks.
    pub fn of(model_id: &str) -> Option<Family> {
        let bare = model_id.rsplit('/').next().unwrap_or(model_id);
        if bare.contains("titan-embed-text") {
            Some(Family::Titan)
        } else if bare.contains("cohere.embed-v4") {
            Some(Family::CohereV4)
        } else if bare.contains("cohere.embed") {
            Some(Family::Cohere)
        } else if bare.contains("nova-2-multimodal-embeddings") {
            Some(Family::Nova)
        } else {
            None
        }
    }

    /// Whether Bedrock embeds one input per call, so that a list becomes a batch of calls.
    pub fn one_input_per_call(self) -> bool {
        matches!(self, Family::Titan | Family::Nova)
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
    /// Titan or Nova with more than one input: one body per input, in order (`body` is then empty).
    pub batch: Option<InputBatch>,
}

/// A list of inputs for a model that embeds one per call: one InvokeModel body per input, in the
/// caller's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBatch {
    pub bodies: Vec<Vec<u8>>,
    pub family: Family,
    /// The model the caller named, echoed in the response.
    pub model: String,
    pub base64: bool,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// Builds the InvokeModel body for the Bedrock model `model_id` (after any override).
pub fn prepare(body: &[u8], model_id: &str) -> Result<(EmbeddingsInvoke, Family), GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let request: EmbeddingsRequest<'_> = crate::json::path::from_slice(body)
        .map_err(|e| invalid(format!("Invalid embeddings request: {e}")))?;
    let family = Family::of(model_id).ok_or_else(|| {
        invalid(format!("`{model_id}` is not an embedding model this gateway supports (Titan Text Embeddings v2, Cohere Embed v3 and v4, Nova Multimodal Embeddings)."))
    })?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(format!(
                "`encoding_format` must be float or base64, got {other:?}."
            )))
        }
    };
    let texts: Vec<&str> =
        match &request.input {
            Input::One(text) => vec![text.as_ref()],
            Input::Many(texts) => texts.iter().map(Cow::as_ref).collect(),
            Input::Tokens(_) => return Err(invalid(
                "`input` must be a string or an array of strings; token arrays are not supported.",
            )),
        };
    if texts.is_empty() || texts.iter().any(|t| t.is_empty()) {
        return Err(invalid("`input` must contain non-empty strings."));
    }
    if family.one_input_per_call() && texts.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "The gateway embeds at most {MAX_INPUTS} inputs per request, got {}.",
            texts.len()
        )));
    }
    let one_body = |text: &str| -> Result<Vec<u8>, GatewayError> {
        let body = match family {
            Family::Titan => {
                let mut titan = serde_json::Map::new();
                titan.insert("inputText".into(), text.into());
                titan.insert("normalize".into(), true.into());
                if let Some(dimensions) = request.dimensions {
                    titan.insert("dimensions".into(), dimensions.into());
                }
                serde_json::Value::Object(titan)
            }
            _ => serde_json::json!({
                "taskType": "SINGLE_EMBEDDING",
                "singleEmbeddingParams": {
                    "embeddingPurpose": "GENERIC_INDEX",
                    "embeddingDimension": request.dimensions.unwrap_or(3072),
                    "text": { "truncationMode": "END", "value": text },
                },
            }),
        };
        serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))
    };
    let body = match family {
        Family::Titan | Family::Nova => {
            let (name, allowed): (&str, &[u32]) = if family == Family::Titan {
                ("Titan Text Embeddings v2", &[256, 512, 1024])
            } else {
                ("Nova Multimodal Embeddings", &NOVA_DIMENSIONS)
            };
            if let Some(dimensions) = request.dimensions.filter(|d| !allowed.contains(d)) {
                return Err(invalid(format!(
                    "`dimensions` must be one of {allowed:?} for {name}, got {dimensions}."
                )));
            }
            if let [text] = texts.as_slice() {
                one_body(text)?
            } else {
                let bodies = texts
                    .iter()
                    .map(|text| one_body(text))
                    .collect::<Result<Vec<_>, _>>()?;
                let model = request.model.into_owned();
                let batch = Some(InputBatch {
                    bodies,
                    family,
                    model: model.clone(),
                    base64,
                });
                return Ok((
                    EmbeddingsInvoke {
                        body: Vec::new(),
                        model,
                        base64,
                        batch,
                    },
                    family,
                ));
            }
        }
        Family::CohereV4 => {
            if texts.len() > MAX_INPUTS {
                return Err(invalid(format!(
                    "Cohere Embed takes at most {MAX_INPUTS} inputs per request, got {}.",
                    texts.len()
                )));
            }
            if let Some(dimensions) = request
                .dimensions
                .filter(|d| !COHERE_V4_DIMENSIONS.contains(d))
            {
                return Err(invalid(format!("`dimensions` must be one of {COHERE_V4_DIMENSIONS:?} for Cohere Embed v4, got {dimensions}.")));
            }
            let mut cohere = serde_json::json!({
                "texts": texts,
                "input_type": "search_document",
                "embedding_types": ["float"],
            });
            if let (Some(dimensions), Some(object)) = (request.dimensions, cohere.as_object_mut()) {
                object.insert("output_dimension".into(), dimensions.into());
            }
            serde_json::to_vec(&cohere).map_err(|e| invalid(e.to_string()))?
        }
        Family::Cohere => {
            if texts.len() > MAX_INPUTS {
                return Err(invalid(format!(
                    "Cohere Embed takes at most {MAX_INPUTS} inputs per request, got {}.",
                    texts.len()
                )));
            }
            if request
                .dimensions
                .is_some_and(|d| d != COHERE_V3_DIMENSIONS)
            {
                return Err(invalid(format!("Cohere Embed v3 returns {COHERE_V3_DIMENSIONS} dimensions; `dimensions` cannot change that.")));
            }
            let cohere = serde_json::json!({ "texts": texts, "input_type": "search_document" });
            serde_json::to_vec(&cohere).map_err(|e| invalid(e.to_string()))?
        }
    };
    Ok((
        EmbeddingsInvoke {
            body,
            model: request.model.into_owned(),
            base64,
            batch: None,
        },
        family,
    ))
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
struct NovaResponse<'a> {
    #[serde(borrow)]
    embeddings: Vec<NovaEmbedding<'a>>,
}

#[derive(Deserialize)]
struct NovaEmbedding<'a> {
    #[serde(borrow)]
    embedding: &'a RawValue,
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
    GatewayError::upstream(format!(
        "Bedrock returned an unreadable embeddings response: {e}"
    ))
}

/// Renders Bedrock's embeddings as OpenAI's list. `header_tokens` is Bedrock's
/// `x-amzn-bedrock-input-token-count`, the only count Cohere and Nova responses carry.
pub fn response(
    body: &[u8],
    family: Family,
    model: &str,
    base64: bool,
    header_tokens: Option<u64>,
) -> Result<TranslatedBody, GatewayError> {
    let (vectors, tokens): (Vec<&RawValue>, Option<u64>) = match family {
        Family::Titan | Family::Nova => {
            let (vector, tokens) = one_vector(body, family)?;
            (vec![vector], tokens)
        }
        Family::Cohere | Family::CohereV4 => {
            let parsed: CohereResponse<'_> = serde_json::from_slice(body).map_err(unreadable)?;
            let raw = parsed.embeddings.get();
            let vectors = if raw.trim_start().starts_with('{') {
                serde_json::from_str::<CohereByType<'_>>(raw)
                    .map_err(unreadable)?
                    .float
            } else {
                serde_json::from_str::<Vec<&RawValue>>(raw).map_err(unreadable)?
            };
            (vectors, None)
        }
    };
    render(&vectors, tokens.or(header_tokens), model, base64)
}

/// The vector of a one-input answer (Titan, Nova), with the token count its body carries.
fn one_vector(body: &[u8], family: Family) -> Result<(&RawValue, Option<u64>), GatewayError> {
    if family == Family::Nova {
        let parsed: NovaResponse<'_> = serde_json::from_slice(body).map_err(unreadable)?;
        let first = parsed
            .embeddings
            .into_iter()
            .next()
            .ok_or_else(|| unreadable("no embedding"))?;
        return Ok((first.embedding, None));
    }
    let parsed: TitanResponse<'_> = serde_json::from_slice(body).map_err(unreadable)?;
    Ok((parsed.embedding, parsed.input_text_token_count))
}

/// Puts a batch's answers (each body with its `x-amzn-bedrock-input-token-count`), one per input
/// in input order, into one OpenAI list; the usage is their token counts summed.
pub fn batch_response(
    parts: &[(Vec<u8>, Option<u64>)],
    family: Family,
    model: &str,
    base64: bool,
) -> Result<TranslatedBody, GatewayError> {
    let mut vectors = Vec::with_capacity(parts.len());
    let mut tokens: Option<u64> = None;
    for (part, header_tokens) in parts {
        let (vector, count) = one_vector(part, family)?;
        vectors.push(vector);
        if let Some(count) = count.or(*header_tokens) {
            tokens = Some(tokens.unwrap_or(0).saturating_add(count));
        }
    }
    render(&vectors, tokens, model, base64)
}

/// OpenAI's embeddings list over Bedrock's vectors, in order; `reported` is Bedrock's token count.
fn render(
    vectors: &[&RawValue],
    reported: Option<u64>,
    model: &str,
    base64: bool,
) -> Result<TranslatedBody, GatewayError> {
    let tokens = reported.unwrap_or(0);
    let mut out =
        String::with_capacity(vectors.iter().map(|v| v.get().len() + 48).sum::<usize>() + 128);
    out.push_str("{\"object\":\"list\",\"data\":[");
    for (index, vector) in vectors.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":"
        ));
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
    crate::json::push_json_string(&mut out, model);
    out.push_str(&format!(
        ",\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}}}"
    ));
    let usage = reported.map(|input| TokenUsage {
        input,
        ..TokenUsage::default()
    });
    Ok(TranslatedBody {
        body: out.into_bytes(),
        usage,
    })
}

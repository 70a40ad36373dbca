//! Cohere's rerank API (`POST /v1/rerank`, `/v2/rerank`) on the Bedrock Agent Runtime's `Rerank`
//! (`POST /rerank`, SigV4 service `bedrock`), for Bedrock's rerank models (`cohere.rerank-v3-5:0`,
//! `amazon.rerank-v1:0`). A backend for it is configured like any other, with the Agent Runtime's
//! host (`bedrock-agent-runtime.<region>.amazonaws.com`).
//!
//! The caller's documents (strings, or objects: `{"text": ...}` goes as a text document, any other
//! object as a JSON document) go inline; Bedrock names the model by ARN. The reply is Cohere's:
//! results by relevance with their input index, each document returned when asked
//! (`return_documents`), from the caller's own request rather than Bedrock's echo.

use crate::errors::GatewayError;
use crate::translated::TranslatedBody;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Bedrock's limit on the documents of one Rerank call.
const MAX_DOCUMENTS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest {
    #[allow(dead_code)]
    model: String,
    query: String,
    documents: Vec<Value>,
    #[serde(default)]
    top_n: Option<u64>,
    #[serde(default)]
    return_documents: Option<bool>,
    /// Cohere's own knobs Bedrock has no place for are refused rather than ignored.
    #[serde(default)]
    max_chunks_per_doc: Option<u64>,
    #[serde(default)]
    max_tokens_per_doc: Option<u64>,
    #[serde(default)]
    rank_fields: Option<Value>,
}

/// What the response needs from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankPlan {
    /// The caller's documents, to return with the results when asked.
    pub documents: Option<Vec<Value>>,
    pub api_version: u8,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// Whether a Bedrock model id is a rerank model.
pub fn is_rerank_model(model_id: &str) -> bool {
    let bare = model_id.rsplit('/').next().unwrap_or(model_id);
    bare.contains(".rerank-")
}

/// The Agent Runtime's Rerank body for `model_id` (a Bedrock id or a model ARN) in `region`.
pub fn prepare(
    body: &[u8],
    model_id: &str,
    region: &str,
    api_version: u8,
) -> Result<(Vec<u8>, RerankPlan), GatewayError> {
    let request: RerankRequest = crate::json::path::from_slice(body)
        .map_err(|e| invalid(format!("Invalid rerank request: {e}")))?;
    if !is_rerank_model(model_id) {
        return Err(invalid(format!(
            "`{model_id}` is not a rerank model (Bedrock's are cohere.rerank-v3-5:0 and amazon.rerank-v1:0)."
        )));
    }
    for (name, given) in [
        ("max_chunks_per_doc", request.max_chunks_per_doc.is_some()),
        ("max_tokens_per_doc", request.max_tokens_per_doc.is_some()),
        ("rank_fields", request.rank_fields.is_some()),
    ] {
        if given {
            return Err(invalid(format!(
                "`{name}` is not supported: Bedrock's Rerank has no such setting."
            )));
        }
    }
    if request.query.is_empty() {
        return Err(invalid("`query` must not be empty."));
    }
    if request.documents.is_empty() || request.documents.len() > MAX_DOCUMENTS {
        return Err(invalid(format!(
            "`documents` must hold 1 to {MAX_DOCUMENTS} documents, got {}.",
            request.documents.len()
        )));
    }
    let count = request.documents.len() as u64;
    let top_n = request.top_n.unwrap_or(count);
    if top_n == 0 {
        return Err(invalid("`top_n` must be at least 1."));
    }
    let sources = request
        .documents
        .iter()
        .enumerate()
        .map(|(index, document)| source(index, document))
        .collect::<Result<Vec<_>, _>>()?;
    let model_arn = if model_id.starts_with("arn:") {
        model_id.to_owned()
    } else {
        format!("arn:aws:bedrock:{region}::foundation-model/{model_id}")
    };
    let bedrock = json!({
        "queries": [{ "type": "TEXT", "textQuery": { "text": request.query } }],
        "sources": sources,
        "rerankingConfiguration": {
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "numberOfResults": top_n.min(count),
                "modelConfiguration": { "modelArn": model_arn },
            },
        },
    });
    let body = serde_json::to_vec(&bedrock).map_err(|e| invalid(e.to_string()))?;
    let documents = request
        .return_documents
        .unwrap_or(false)
        .then_some(request.documents);
    Ok((
        body,
        RerankPlan {
            documents,
            api_version,
        },
    ))
}

/// One inline source: a string or `{"text": ...}` as a text document, another object as JSON.
fn source(index: usize, document: &Value) -> Result<Value, GatewayError> {
    let text = match document {
        Value::String(text) => Some(text.as_str()),
        Value::Object(object) if object.len() == 1 => object.get("text").and_then(Value::as_str),
        Value::Object(_) => None,
        _ => {
            return Err(invalid(format!(
                "`documents[{index}]` must be a string or an object."
            )))
        }
    };
    Ok(match text {
        Some(text) => json!({
            "type": "INLINE",
            "inlineDocumentSource": { "type": "TEXT", "textDocument": { "text": text } },
        }),
        None => json!({
            "type": "INLINE",
            "inlineDocumentSource": { "type": "JSON", "jsonDocument": document },
        }),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockRerankResponse<'a> {
    #[serde(borrow)]
    results: Vec<BedrockResult<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockResult<'a> {
    index: usize,
    #[serde(borrow)]
    relevance_score: &'a RawValue,
}

/// Cohere's reply over Bedrock's results, in Bedrock's order (by relevance).
pub fn response(
    body: &[u8],
    plan: &RerankPlan,
    request_id: &str,
) -> Result<TranslatedBody, GatewayError> {
    let parsed: BedrockRerankResponse<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::upstream(format!(
            "Bedrock returned an unreadable rerank response: {e}"
        ))
    })?;
    let mut results = Vec::with_capacity(parsed.results.len());
    for result in &parsed.results {
        let score: Value = serde_json::from_str(result.relevance_score.get()).map_err(|e| {
            GatewayError::upstream(format!("Bedrock returned an unreadable score: {e}"))
        })?;
        let mut entry = json!({ "index": result.index, "relevance_score": score });
        if let Some(documents) = &plan.documents {
            let document = documents.get(result.index).ok_or_else(|| {
                GatewayError::upstream(format!(
                    "Bedrock ranked document {} of {}.",
                    result.index,
                    documents.len()
                ))
            })?;
            let document = match document {
                Value::String(text) => json!({ "text": text }),
                other => other.clone(),
            };
            if let Some(object) = entry.as_object_mut() {
                object.insert("document".into(), document);
            }
        }
        results.push(entry);
    }
    let answer = json!({
        "id": request_id,
        "results": results,
        "meta": {
            "api_version": { "version": plan.api_version.to_string() },
            "billed_units": { "search_units": 1 },
        },
    });
    Ok(TranslatedBody {
        body: serde_json::to_vec(&answer).unwrap_or_default(),
        usage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cohere_rerank_becomes_bedrocks_rerank_and_its_results_cohere_results() {
        let (body, plan) = prepare(
            br#"{"model":"rerank","query":"capital of France","documents":["Paris is the capital",{"text":"Berlin"},{"title":"t","body":"b"}],"top_n":2,"return_documents":true}"#,
            "cohere.rerank-v3-5:0",
            "us-west-2",
            2,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            sent["queries"],
            json!([{"type": "TEXT", "textQuery": {"text": "capital of France"}}])
        );
        assert_eq!(
            sent["sources"][1]["inlineDocumentSource"]["textDocument"]["text"],
            "Berlin"
        );
        assert_eq!(sent["sources"][2]["inlineDocumentSource"]["type"], "JSON");
        assert_eq!(
            sent["rerankingConfiguration"]["bedrockRerankingConfiguration"],
            json!({"numberOfResults": 2, "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0"}})
        );
        let answer = response(
            br#"{"results":[{"index":0,"relevanceScore":0.91},{"index":2,"relevanceScore":0.2}]}"#,
            &plan,
            "req-1",
        )
        .unwrap();
        let answer: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            answer["results"],
            json!([
                {"index": 0, "relevance_score": 0.91, "document": {"text": "Paris is the capital"}},
                {"index": 2, "relevance_score": 0.2, "document": {"title": "t", "body": "b"}},
            ])
        );
        assert_eq!(answer["meta"]["api_version"]["version"], "2");
    }

    #[test]
    fn what_bedrock_cannot_do_is_refused_by_name() {
        for (body, model, reason) in [
            (
                r#"{"model":"m","query":"q","documents":["a"],"rank_fields":["x"]}"#,
                "cohere.rerank-v3-5:0",
                "`rank_fields` is not supported",
            ),
            (
                r#"{"model":"m","query":"q","documents":[]}"#,
                "cohere.rerank-v3-5:0",
                "1 to 1000",
            ),
            (
                r#"{"model":"m","query":"","documents":["a"]}"#,
                "cohere.rerank-v3-5:0",
                "`query`",
            ),
            (
                r#"{"model":"m","query":"q","documents":["a"],"top_n":0}"#,
                "cohere.rerank-v3-5:0",
                "`top_n`",
            ),
            (
                r#"{"model":"m","query":"q","documents":[3]}"#,
                "cohere.rerank-v3-5:0",
                "string or an object",
            ),
            (
                r#"{"model":"m","query":"q","documents":["a"]}"#,
                "us.meta.llama3-2-1b-instruct-v1:0",
                "not a rerank model",
            ),
            (
                r#"{"model":"m","query":"q","documents":["a"],"colour":1}"#,
                "cohere.rerank-v3-5:0",
                "colour",
            ),
        ] {
            let error = prepare(body.as_bytes(), model, "us-east-1", 1).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(error.message.contains(reason), "{}", error.message);
        }
        let plan = RerankPlan {
            documents: Some(vec![json!("a")]),
            api_version: 1,
        };
        assert_eq!(
            response(
                br#"{"results":[{"index":5,"relevanceScore":0.1}]}"#,
                &plan,
                "r"
            )
            .unwrap_err()
            .status,
            502
        );
    }
}

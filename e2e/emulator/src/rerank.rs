//! The Bedrock Agent Runtime's `Rerank` (`POST /rerank` on `bedrock-agent-runtime.<region>`):
//! the body checked against botocore's model of the Agent Runtime, then the rules its
//! documentation adds (one text query, a rerank model's ARN, `numberOfResults` at most the
//! sources), and a deterministic score: the share of the query's words a document holds.

use crate::{bedrock_error, full, validation, State};
use hyper::StatusCode;
use serde_json::{json, Value};

const RERANK_MODELS: [&str; 2] = ["cohere.rerank-v3-5:0", "amazon.rerank-v1:0"];

pub fn answer(
    state: &State,
    body: &[u8],
    request_id: &str,
) -> hyper::Response<crate::ResponseBody> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return validation(
            "Malformed input request: the body is not valid JSON.",
            request_id,
        );
    };
    if let Some(Err(message)) = state
        .agent_service_model
        .as_ref()
        .map(|model| model.validate("Rerank", &request))
    {
        return validation(&message, request_id);
    }
    match check(&request) {
        Ok(results) => full(
            StatusCode::OK,
            "application/json",
            json!({ "results": results }).to_string(),
            request_id,
        ),
        Err((status, error_type, message)) => {
            bedrock_error(status, error_type, &message, request_id)
        }
    }
}

type Refusal = (u16, &'static str, String);

fn check(request: &Value) -> Result<Vec<Value>, Refusal> {
    let invalid = |message: &str| (400, "ValidationException", message.to_owned());
    let queries = request
        .get("queries")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("queries is required"))?;
    let [query] = queries.as_slice() else {
        return Err(invalid("Rerank takes exactly one query."));
    };
    let query = query
        .pointer("/textQuery/text")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("The query must be of type TEXT with a textQuery."))?;
    let configuration = request
        .pointer("/rerankingConfiguration/bedrockRerankingConfiguration")
        .ok_or_else(|| {
            invalid("rerankingConfiguration.bedrockRerankingConfiguration is required")
        })?;
    let arn = configuration
        .pointer("/modelConfiguration/modelArn")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let model = arn
        .rsplit_once(":foundation-model/")
        .map(|(_, model)| model);
    if !model.is_some_and(|model| RERANK_MODELS.contains(&model)) {
        return Err((
            400,
            "ValidationException",
            format!("The model ARN {arn} is not a reranking model this account can use."),
        ));
    }
    let sources = request
        .get("sources")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("sources is required"))?;
    let documents: Vec<(Value, String)> = sources
        .iter()
        .map(|source| {
            let inline = source
                .get("inlineDocumentSource")
                .ok_or_else(|| invalid("Only INLINE sources are supported by this emulator."))?;
            match inline.get("type").and_then(Value::as_str) {
                Some("TEXT") => {
                    let text = inline
                        .pointer("/textDocument/text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("A TEXT source needs textDocument.text."))?;
                    Ok((
                        json!({ "type": "TEXT", "textDocument": { "text": text } }),
                        text.to_owned(),
                    ))
                }
                Some("JSON") => {
                    let document = inline
                        .get("jsonDocument")
                        .ok_or_else(|| invalid("A JSON source needs jsonDocument."))?;
                    Ok((
                        json!({ "type": "JSON", "jsonDocument": document }),
                        document.to_string(),
                    ))
                }
                _ => Err(invalid("An inline source's type must be TEXT or JSON.")),
            }
        })
        .collect::<Result<_, _>>()?;
    let wanted = configuration
        .get("numberOfResults")
        .and_then(Value::as_u64)
        .unwrap_or(documents.len() as u64);
    if wanted as usize > documents.len() {
        return Err(invalid(
            "numberOfResults must not exceed the number of sources.",
        ));
    }
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(index, (_, text))| {
            let text = text.to_lowercase();
            let found = words.iter().filter(|w| text.contains(w.as_str())).count();
            (index, found as f64 / words.len().max(1) as f64)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(scored
        .into_iter()
        .take(wanted as usize)
        .filter_map(|(index, score)| {
            let (document, _) = documents.get(index)?;
            Some(json!({ "index": index, "relevanceScore": score, "document": document }))
        })
        .collect())
}

//! The gateway's request and response handling, free of any host calls.
//!
//! The proxy-wasm glue feeds it headers and bodies and applies what it returns;
//! everything here is plain Rust, tested natively.

use crate::bedrock::{self, Operation};
use crate::config::Backend;
use crate::errors::GatewayError;
use crate::openai::{self, ChatStreamTranslator, ResponseContext};
use crate::sigv4::{RequestToSign, Signer};
use crate::time::UtcDateTime;
use serde::Deserialize;
use std::borrow::Cow;

/// The caller-facing endpoints the filter translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
}

impl Endpoint {
    /// Which endpoint a request is for; `None` leaves the request to Envoy untouched.
    pub fn classify(method: &str, path: &str) -> Option<Result<Endpoint, GatewayError>> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let endpoint = match path.trim_end_matches('/') {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            _ => return None,
        };
        if method != "POST" {
            return Some(Err(GatewayError::new(
                405,
                crate::errors::ErrorKind::InvalidRequest,
                format!("{path} accepts POST only, not {method}."),
            )));
        }
        Some(Ok(endpoint))
    }
}

/// Everything the glue must set on the upstream request.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub path: String,
    pub host: String,
    pub body: Vec<u8>,
    pub authorization: String,
    pub amz_date: String,
    pub security_token: Option<String>,
    pub accept: &'static str,
    pub plan: ResponsePlan,
}

/// How the upstream response will be translated.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    pub requested_model: String,
    pub created: u64,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
}

/// The routing stage's view of a request body: just the `model` that picks the route.
/// The other fields are skipped without being built, and checked later by the backend stage.
pub fn requested_model(body: &[u8]) -> Result<Cow<'_, str>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid_request("The request body is empty; expected a JSON object."));
    }
    let parsed: ModelOnly<'_> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("The request body is not a valid JSON object: {e}")))?;
    let model = parsed
        .model
        .ok_or_else(|| GatewayError::invalid_request("The request body has no `model` field."))?;
    bedrock::validate_model_id(&model).map_err(|why| GatewayError::invalid_request(format!("Invalid `model`: {why}")))?;
    Ok(model)
}

/// Turns an OpenAI chat completion request into a signed Converse request for `backend`.
pub fn prepare_chat_completion(
    body: &[u8],
    backend: &Backend,
    signer: &mut Signer,
    now_unix_seconds: u64,
) -> Result<UpstreamRequest, GatewayError> {
    let request = openai::parse_request(body)?;
    bedrock::validate_model_id(&request.model)
        .map_err(|why| GatewayError::invalid_request(format!("Invalid `model`: {why}")))?;
    let converse = openai::to_converse(&request)?;
    let upstream_body = serde_json::to_vec(&converse)
        .map_err(|e| GatewayError::invalid_request(format!("could not encode the Converse request: {e}")))?;

    let stream = request.is_stream();
    let include_usage = request.include_usage();
    let operation = if stream { Operation::ConverseStream } else { Operation::Converse };
    let model_id = backend.model_name_override.as_deref().unwrap_or(&request.model);
    let path = bedrock::model_path(model_id, operation);
    let accept = if stream { "application/vnd.amazon.eventstream" } else { "application/json" };

    let now = UtcDateTime::from_unix_seconds(now_unix_seconds);
    let to_sign = RequestToSign {
        method: "POST",
        encoded_path: &path,
        query: "",
        host: &backend.host,
        extra_headers: &[],
        payload: &upstream_body,
    };
    let signed = signer.sign(&to_sign, &backend.credentials, &backend.region, "bedrock", now);
    Ok(UpstreamRequest {
        path,
        host: backend.host.clone(),
        body: upstream_body,
        authorization: signed.authorization,
        amz_date: signed.amz_date,
        security_token: backend.credentials.session_token.clone(),
        accept,
        plan: ResponsePlan {
            requested_model: request.model.into_owned(),
            created: now_unix_seconds,
            stream,
            include_usage,
        },
    })
}

/// The response translation chosen once the upstream's status is known.
pub enum ResponseTranslation {
    /// A whole Converse JSON body becomes one `chat.completion`.
    ChatCompletion(ResponseContext),
    /// Event-stream frames become SSE chunks as they arrive.
    ChatCompletionStream(Box<ChatStreamTranslator>),
    /// A Bedrock error body becomes an error in the caller's format.
    Error { status: u16, error_type: Option<String> },
}

impl ResponseTranslation {
    pub fn for_response(
        plan: &ResponsePlan,
        status: u16,
        error_type_header: Option<&str>,
        request_id: &str,
        max_frame_len: usize,
    ) -> ResponseTranslation {
        if status != 200 {
            return ResponseTranslation::Error {
                status,
                error_type: error_type_header.map(|h| bedrock::error_type_name(h).to_owned()),
            };
        }
        let context = ResponseContext {
            id: request_id.to_owned(),
            model: plan.requested_model.clone(),
            created: plan.created,
        };
        if plan.stream {
            ResponseTranslation::ChatCompletionStream(Box::new(ChatStreamTranslator::new(
                &context,
                plan.include_usage,
                max_frame_len,
            )))
        } else {
            ResponseTranslation::ChatCompletion(context)
        }
    }

    /// Streams translate chunk by chunk; everything else needs the whole body.
    pub fn is_streaming(&self) -> bool {
        matches!(self, ResponseTranslation::ChatCompletionStream(_))
    }

    pub fn content_type(&self) -> &'static str {
        if self.is_streaming() {
            "text/event-stream"
        } else {
            "application/json"
        }
    }

    /// Translates a whole buffered body. Returns the status to answer with and the new body.
    pub fn translate_body(&self, body: &[u8]) -> (u16, Vec<u8>) {
        match self {
            ResponseTranslation::ChatCompletion(context) => match openai::from_converse_response(body, context) {
                Ok(translated) => (200, translated),
                Err(error) => (error.status, error.to_openai_json()),
            },
            ResponseTranslation::Error { status, error_type } => {
                let message = bedrock::error_message(body);
                let error = GatewayError::from_bedrock(*status, error_type.as_deref(), &message);
                (error.status, error.to_openai_json())
            }
            ResponseTranslation::ChatCompletionStream(_) => (200, Vec::new()),
        }
    }
}

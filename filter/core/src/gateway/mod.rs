//! A request's plan, free of any host calls: which endpoint a path is, which API's translation it
//! takes to which Bedrock operation, where it goes (path, host, headers) and how it is signed, and
//! how the answer comes back (`ResponsePlan`). The stages in [`crate::stream`] apply it.
//!
//! Here: which endpoint a path is, what Envoy's own replies and local answers (model lists) say,
//! and which headers a caller may not send on; `upstream.rs` prepares the request for Bedrock;
//! `response.rs` translates Bedrock's answer back.

use crate::api::anthropic::{
    self, converse::ConverseToAnthropicStream, invoke::AnthropicStreamTranslator,
};
use crate::api::embeddings;
use crate::api::models;
use crate::api::openai::{self, ChatStreamTranslator, ResponseContext};
use crate::api::responses::{self, ResponsesContext, ResponsesStreamTranslator};
use crate::api::tool_names::ToolNames;
use crate::aws::sigv4::{Credentials, RequestToSign, Signer};
use crate::aws::time::UtcDateTime;
use crate::bedrock::eventstream::FrameTranslator;
use crate::bedrock::options;
use crate::bedrock::{self, ConverseRequest, Operation};
use crate::config::{Backend, ModelInfo, PromptCaching, Schema, Service};
use crate::errors::{ApiFormat, ErrorKind, GatewayError};
use crate::translated::{TokenUsage, TranslatedBody};
use serde::Deserialize;
use std::borrow::Cow;

mod response;
mod upstream;

pub use response::{ResponseTranslation, UpstreamHead};
pub use upstream::{
    bedrock_path_model, prepare, requested_model, sign_invoke, signing_service, CallerHeaders,
    ResponseKind, ResponsePlan, Signature, UpstreamRequest, DROPPED_BETAS_HEADER,
};

/// The caller-facing endpoints the filter translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    /// OpenAI's Responses API.
    Responses,
    AnthropicMessages,
    AnthropicCountTokens,
    Embeddings,
    /// OpenAI's image generation, on InvokeModel of Stability's and the Canvas models.
    Images,
    /// Cohere's rerank API, version 1 or 2, on the Bedrock Agent Runtime's Rerank.
    Rerank(u8),
    /// Bedrock Runtime's own API, passed through and re-signed.
    Bedrock(Operation),
}

impl Endpoint {
    /// Which endpoint a request is for; `None` leaves the request to Envoy untouched.
    pub fn classify(method: &str, path: &str) -> Option<Result<Endpoint, GatewayError>> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let endpoint = match path.trim_end_matches('/') {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/responses" => Endpoint::Responses,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/images/generations" => Endpoint::Images,
            "/v1/rerank" => Endpoint::Rerank(1),
            "/v2/rerank" => Endpoint::Rerank(2),
            "/anthropic/v1/messages" => Endpoint::AnthropicMessages,
            "/anthropic/v1/messages/count_tokens" => Endpoint::AnthropicCountTokens,
            other => Endpoint::Bedrock(crate::api::bedrock_runtime::parse_path(other)?.1),
        };
        if method != "POST" {
            return Some(Err(GatewayError::new(
                405,
                ErrorKind::InvalidRequest,
                format!("{path} accepts POST only, not {method}."),
            )));
        }
        Some(Ok(endpoint))
    }

    pub fn format(self) -> ApiFormat {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Responses
            | Endpoint::Embeddings
            | Endpoint::Images => ApiFormat::OpenAi,
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => ApiFormat::Anthropic,
            Endpoint::Bedrock(_) => ApiFormat::Bedrock,
            Endpoint::Rerank(_) => ApiFormat::Cohere,
        }
    }
}

/// The header Envoy's routes match to pick a backend cluster.
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// Headers through which callers present their own credentials (or steer the gateway), which
/// must never reach AWS: `authorization`, `proxy-authorization`, `x-api-key`, any `x-amz-*`, and
/// the gateway's own `x-ai-eg-*` but the routing header and the stream key (both written by the
/// routing stage, whatever the caller sent). Compared without copying the name.
pub fn is_caller_credential_header(name: &[u8]) -> bool {
    let starts_with = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    ["authorization", "proxy-authorization", "x-api-key"]
        .iter()
        .any(|exact| name.eq_ignore_ascii_case(exact.as_bytes()))
        || starts_with("x-amz-")
        || (starts_with("x-ai-eg-")
            && !name.eq_ignore_ascii_case(MODEL_HEADER.as_bytes())
            && !name.eq_ignore_ascii_case(crate::stream::STREAM_KEY_HEADER.as_bytes()))
}

/// The gateway's endpoints take JSON; form posts and the like get a clear 415.
pub fn check_content_type(content_type: &str) -> Result<(), GatewayError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = media_type == "application/json"
        || media_type == "text/json"
        || media_type.ends_with("+json");
    if json || media_type.is_empty() {
        return Ok(());
    }
    Err(GatewayError::new(
        415,
        ErrorKind::InvalidRequest,
        format!(
            "Unsupported content type {media_type:?}: send the request body as application/json."
        ),
    ))
}

/// The gateway reads and rewrites request bodies, so it takes them uncompressed: a compressed
/// one gets a clear 415 rather than "not valid JSON" (and `identity` is no encoding at all).
pub fn check_content_encoding(content_encoding: &str) -> Result<(), GatewayError> {
    let encoding = content_encoding.trim().to_ascii_lowercase();
    if encoding.is_empty() || encoding == "identity" {
        return Ok(());
    }
    Err(GatewayError::new(
        415,
        ErrorKind::InvalidRequest,
        format!("Unsupported content encoding {encoding:?}: send the request body uncompressed."),
    ))
}

/// The caller-format error replacing a reply Envoy made itself for one of the gateway's
/// endpoints, from Envoy's response code details; `None` keeps the reply as it is.
pub fn local_reply_error(
    details: &str,
    status: u16,
    is_json: bool,
    requested_model: Option<&str>,
) -> Option<GatewayError> {
    if details == "via_upstream" || details.is_empty() {
        return None;
    }
    if details == "direct_response" {
        return Some(GatewayError::model_not_found(
            requested_model.unwrap_or_default(),
        ));
    }
    if is_json || status < 400 {
        return None;
    }
    let error = match details {
        "request_payload_too_large" => GatewayError::new(
            413,
            ErrorKind::RequestTooLarge,
            "The request body is larger than the gateway's buffer limit.",
        ),
        "route_not_found" => GatewayError::model_not_found(requested_model.unwrap_or_default()),
        "upstream_response_timeout" => GatewayError::new(
            504,
            ErrorKind::Upstream,
            "Bedrock did not answer within the route's timeout.",
        ),
        "no_healthy_upstream" => GatewayError::new(
            503,
            ErrorKind::Unavailable,
            "No healthy Bedrock endpoint is available.",
        ),
        "request_rate_limited" => GatewayError::new(
            429,
            ErrorKind::RateLimited,
            "Rate limit exceeded: this caller's token budget is spent.",
        ),
        // Envoy's api_key_auth ("unkonwn" is its spelling) and jwt_authn: no key or token, or not a valid one.
        "missing_api_key" | "missing_credentials" | "missing_key_sources" => GatewayError::new(
            401,
            ErrorKind::Authentication,
            "Missing API key: send it as Authorization: Bearer <key> or x-api-key.",
        ),
        "unkonwn_api_key" | "unknown_api_key" => GatewayError::new(
            401,
            ErrorKind::Authentication,
            "Incorrect API key provided.",
        ),
        "client_not_allowed" => GatewayError::new(
            403,
            ErrorKind::PermissionDenied,
            "This API key may not use this route.",
        ),
        other if other.starts_with("jwt_authn_access_denied") => {
            let reason = other
                .split_once('{')
                .map_or("", |(_, r)| r.trim_end_matches('}'))
                .replace('_', " ");
            let reason = if reason.is_empty() {
                "the token is not valid".to_owned()
            } else {
                reason
            };
            GatewayError::new(
                401,
                ErrorKind::Authentication,
                format!("Authentication failed: {reason}."),
            )
        }
        // Envoy's rbac filter, with the authorization rules of the SecurityPolicy: the caller is
        // known but may not use this model.
        other if other.starts_with("rbac_access_denied") => GatewayError::new(
            403,
            ErrorKind::PermissionDenied,
            format!(
                "This caller may not use the model {:?}.",
                requested_model.unwrap_or_default()
            ),
        ),
        other if other.starts_with("upstream_reset") => GatewayError::new(
            502,
            ErrorKind::Upstream,
            format!("The connection to Bedrock failed ({other})."),
        ),
        other => GatewayError::new(
            status,
            ErrorKind::Upstream,
            format!("The gateway could not complete the request ({other})."),
        ),
    };
    Some(error)
}

/// A response the gateway gives itself, without calling a backend.
#[derive(Debug, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Answers `GET /v1/models[/{id}]` and `GET /anthropic/v1/models[/{id}]` from the configuration,
/// and requests for stored responses (`/v1/responses/{id}...`), which the gateway never has.
pub fn answer_locally(method: &str, path: &str, models: &[ModelInfo]) -> Option<LocalAnswer> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if let Some(rest) = path.strip_prefix("/v1/responses/") {
        let id = rest.split('/').next().unwrap_or_default();
        let mut error = GatewayError::new(
            404,
            ErrorKind::NotFound,
            format!(
                "Response {:?} not found: this gateway stores no responses. Send the whole conversation in `input` with `store: false`.",
                shorten(id)
            ),
        );
        error.code = Some("response_not_found".into());
        return Some(LocalAnswer {
            status: 404,
            body: error.to_openai_json(),
        });
    }
    let (format, rest) = if let Some(rest) = path.strip_prefix("/anthropic/v1/models") {
        (ApiFormat::Anthropic, rest)
    } else {
        (ApiFormat::OpenAi, path.strip_prefix("/v1/models")?)
    };
    let id = match rest.trim_end_matches('/') {
        "" => None,
        other => Some(other.strip_prefix('/')?),
    };
    let result = if method != "GET" {
        Err(GatewayError::new(
            405,
            ErrorKind::InvalidRequest,
            format!("{path} accepts GET only, not {method}."),
        ))
    } else {
        match (format, id) {
            (ApiFormat::OpenAi, None) => Ok(models::openai_list(models)),
            (_, None) => Ok(models::anthropic_list(models)),
            (format, Some(encoded)) => match models::decode_path_id(encoded) {
                None => Err(GatewayError::invalid_request(
                    "The model id in the path is not valid percent-encoded UTF-8.",
                )),
                Some(id) if format == ApiFormat::OpenAi => models::openai_one(models, &id),
                Some(id) => models::anthropic_one(models, &id),
            },
        }
    };
    Some(match result {
        Ok(body) => LocalAnswer { status: 200, body },
        Err(error) => LocalAnswer {
            status: error.status,
            body: error.to_json(format),
        },
    })
}

/// A 404 in the caller's API format for a path under `/v1/` or `/anthropic/` that the gateway
/// does not serve, naming it (Envoy's own "no route" would blame the model); `None` elsewhere.
pub fn unserved_path(method: &str, path: &str) -> Option<GatewayError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let served = if path.starts_with("/v1/") {
        "POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings and GET /v1/models"
    } else if path.starts_with("/anthropic/") {
        "POST /anthropic/v1/messages, POST /anthropic/v1/messages/count_tokens and GET /anthropic/v1/models"
    } else {
        return None;
    };
    let mut error = GatewayError::new(
        404,
        ErrorKind::NotFound,
        format!(
            "This gateway does not serve {} {}; it serves {served}.",
            shorten(method),
            shorten(path)
        ),
    );
    error.code = Some("unknown_url".into());
    Some(error)
}

/// Caller-supplied text quoted in an error, cut short.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => text.get(..end).unwrap_or(text),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_mantle_signs_for_a_service_of_its_own() {
        assert_eq!(
            signing_service("bedrock-mantle.us-east-1.api.aws"),
            "bedrock-mantle"
        );
        assert_eq!(
            signing_service("bedrock-runtime.us-east-1.amazonaws.com"),
            "bedrock"
        );
        assert_eq!(
            signing_service("bedrock-agent-runtime.us-east-1.amazonaws.com"),
            "bedrock"
        );
        assert_eq!(
            signing_service("vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com"),
            "bedrock"
        );
    }

    #[test]
    fn caller_credential_headers_are_recognised_in_any_case() {
        for name in [
            "authorization",
            "Authorization",
            "proxy-authorization",
            "X-Api-Key",
            "x-amz-date",
            "X-AMZ-Security-Token",
            "x-amz-",
            "x-ai-eg-backend",
        ] {
            assert!(is_caller_credential_header(name.as_bytes()), "{name}");
        }
        for name in [
            "x-ai-eg-model",
            "X-AI-EG-MODEL",
            "content-type",
            "x-amzn-trace-id",
            "x-am",
            "authorizations",
            "",
            "x-api-key2",
        ] {
            assert!(!is_caller_credential_header(name.as_bytes()), "{name}");
        }
        assert!(!is_caller_credential_header(b"\xff\xfe"));
    }
}

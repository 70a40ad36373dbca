//! A request's plan, free of any host calls: which endpoint a path is, which API's translation it
//! takes to which Bedrock operation, where it goes (path, host, headers) and how it is signed, and
//! how the answer comes back (`ResponsePlan`). The stages in [`crate::stream`] apply it.

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

/// The upstream request, translated but not yet signed.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub path: String,
    pub host: String,
    pub body: Vec<u8>,
    pub accept: &'static str,
    pub plan: ResponsePlan,
    /// The caller's Anthropic beta flags Bedrock would refuse, left out; the caller is told in
    /// the response header `x-ai-gateway-dropped-betas`.
    pub dropped_betas: Option<String>,
    /// Hosted tools (OpenAI's web search, ...) left out of a Responses request; the caller is
    /// told in the response header `x-ai-gateway-dropped-tools`.
    pub dropped_tools: Option<String>,
    /// Headers that carry the backend's options on InvokeModel (guardrail, latency, tier, metadata).
    pub headers: Vec<(&'static str, String)>,
    /// Titan embeddings for a list of inputs: one InvokeModel per input to `path`, made by the
    /// backend stage itself instead of sending this request (whose `body` is then empty).
    pub batch: Option<embeddings::InputBatch>,
}

/// The response header that lists the beta flags the gateway did not forward.
pub const DROPPED_BETAS_HEADER: &str = "x-ai-gateway-dropped-betas";

/// The headers that sign an upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub authorization: String,
    pub amz_date: String,
    pub security_token: Option<String>,
}

impl UpstreamRequest {
    /// Signs the request as it will go on the wire.
    pub fn sign(
        &self,
        credentials: &Credentials,
        region: &str,
        signer: &mut Signer,
        now_unix_seconds: u64,
    ) -> Signature {
        sign_invoke(
            &self.path,
            &self.host,
            &self.body,
            credentials,
            region,
            signer,
            now_unix_seconds,
        )
    }
}

/// The SigV4 service of a Bedrock host: `bedrock-mantle` for Bedrock Mantle
/// (`bedrock-mantle.<region>.api.aws`), `bedrock` for Bedrock Runtime and the Agent Runtime.
pub fn signing_service(host: &str) -> &'static str {
    if host.starts_with("bedrock-mantle.") {
        "bedrock-mantle"
    } else {
        "bedrock"
    }
}

/// Signs a `POST` of `body` to Bedrock's `path` on `host` (the path as it goes on the wire).
pub fn sign_invoke(
    path: &str,
    host: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    signer: &mut Signer,
    now_unix_seconds: u64,
) -> Signature {
    let to_sign = RequestToSign {
        method: "POST",
        encoded_path: path,
        query: "",
        host,
        extra_headers: &[],
        payload: body,
    };
    let now = UtcDateTime::from_unix_seconds(now_unix_seconds);
    let signed = signer.sign(&to_sign, credentials, region, signing_service(host), now);
    Signature {
        authorization: signed.authorization,
        amz_date: signed.amz_date,
        security_token: credentials.session_token.clone(),
    }
}

/// What the response translation needs to know about the request.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    pub format: ApiFormat,
    pub kind: ResponseKind,
    pub requested_model: String,
    pub created: u64,
    /// What the reply repeats of the request (the Responses API's settings), rendered once.
    pub echo: String,
    /// The Responses API's namespace members and custom tools, to name Bedrock's calls of them.
    pub tool_names: ToolNames,
    /// A rerank's documents, to return with its results.
    pub rerank: Option<crate::api::rerank::RerankPlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    OpenAiChat {
        stream: bool,
        include_usage: bool,
        /// The model searched the web: its citations become `url_citation` annotations.
        web_search: bool,
    },
    /// `include_reasoning`: reasoning items carry `encrypted_content` for the next turn.
    OpenAiResponses {
        stream: bool,
        include_reasoning: bool,
    },
    AnthropicMessage {
        stream: bool,
    },
    /// Anthropic's API answered from Converse, for models without Anthropic's native API.
    AnthropicViaConverse {
        stream: bool,
    },
    AnthropicCountTokens,
    Embeddings {
        family: embeddings::Family,
        base64: bool,
    },
    /// Bedrock's own reply, passed back unchanged.
    Bedrock {
        operation: Operation,
    },
    Rerank,
    Images {
        family: crate::api::images::ImageFamily,
    },
    /// OpenAI's own API on Bedrock, passed back as it came, its usage read.
    OpenAiOnBedrock(crate::api::openai::on_bedrock::OpenAiPlan),
}

impl ResponseKind {
    fn is_stream(self) -> bool {
        matches!(
            self,
            ResponseKind::OpenAiChat { stream: true, .. }
                | ResponseKind::OpenAiResponses { stream: true, .. }
                | ResponseKind::AnthropicMessage { stream: true }
                | ResponseKind::AnthropicViaConverse { stream: true }
        ) || matches!(self, ResponseKind::Bedrock { operation } if crate::api::bedrock_runtime::is_stream(operation))
            || matches!(self, ResponseKind::OpenAiOnBedrock(plan) if plan.stream)
    }
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
        return Err(GatewayError::invalid_request(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let parsed: ModelOnly<'_> = crate::json::path::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not a valid JSON object: {e}"))
    })?;
    let model = parsed
        .model
        .ok_or_else(|| GatewayError::invalid_request("The request body has no `model` field."))?;
    bedrock::validate_model_id(&model)
        .map_err(|why| GatewayError::invalid_request(format!("Invalid `model`: {why}")))?;
    Ok(model)
}

/// The model the caller named, and the Bedrock model the backend asks for it (its override, or
/// the caller's), for the endpoints that send a request on with only its `model` looked at.
fn requested_and_target(body: &[u8], backend: &Backend) -> Result<(String, String), GatewayError> {
    let requested = requested_model(body)?.into_owned();
    let target = backend
        .model_name_override
        .clone()
        .unwrap_or_else(|| requested.clone());
    Ok((requested, target))
}

/// Request headers the translation uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallerHeaders<'a> {
    pub anthropic_beta: Option<&'a str>,
    /// The model a Bedrock Runtime path names, decoded.
    pub bedrock_model: Option<&'a str>,
    /// A Bedrock caller's own InvokeModel service tier header.
    pub bedrock_service_tier: Option<&'a str>,
}

/// The model of a Bedrock Runtime path (`/model/{id}/{operation}`), decoded and checked; `None`
/// for other paths.
pub fn bedrock_path_model(path: &str) -> Option<Result<String, GatewayError>> {
    let (encoded, _) = crate::api::bedrock_runtime::parse_path(path)?;
    let decoded = models::decode_path_id(encoded).ok_or_else(|| {
        GatewayError::invalid_request(
            "The model id in the path is not valid percent-encoded UTF-8.",
        )
    });
    Some(decoded.and_then(|model| {
        bedrock::validate_model_id(&model)
            .map_err(|why| GatewayError::invalid_request(format!("Invalid model id: {why}")))?;
        Ok(model)
    }))
}

/// Translates a caller's request for `backend`; it is signed separately, once credentials are at hand.
pub fn prepare(
    endpoint: Endpoint,
    body: &[u8],
    headers: CallerHeaders<'_>,
    backend: &Backend,
    now_unix_seconds: u64,
) -> Result<UpstreamRequest, GatewayError> {
    let mut echo = String::new();
    let mut dropped_betas = None;
    let mut invoke_headers = Vec::new();
    let mut batch = None;
    // The Agent Runtime's Rerank has a path of its own, not a model's.
    let mut rerank = None;
    // OpenAI's own API on Bedrock has paths of its own, not a model's.
    let mut openai_path = None;
    let mut tool_names = ToolNames::default();
    let mut dropped_tools = None;
    let (upstream_body, model, operation, kind) = match (endpoint, backend.schema) {
        (Endpoint::ChatCompletions | Endpoint::Responses, Schema::Openai) => {
            let (requested, model_id) = requested_and_target(body, backend)?;
            let responses = endpoint == Endpoint::Responses;
            let (openai_body, plan) = crate::api::openai::on_bedrock::prepare(body, &model_id, responses)?;
            let operation_path = if responses {
                "responses"
            } else {
                "chat/completions"
            };
            openai_path = Some(format!("{}/{operation_path}", backend.api_prefix));
            (
                openai_body,
                requested,
                Operation::Invoke,
                ResponseKind::OpenAiOnBedrock(plan),
            )
        }
        (_, Schema::Openai) => {
            return Err(GatewayError::invalid_request(
                "This model is served with OpenAI's API only: use /v1/chat/completions or /v1/responses.",
            ))
        }
        (Endpoint::ChatCompletions, _) => {
            let request = openai::parse_request(body)?;
            bedrock::validate_model_id(&request.model)
                .map_err(|why| GatewayError::invalid_request(format!("Invalid `model`: {why}")))?;
            let stream = request.is_stream();
            let tier = options::caller_service_tier(request.service_tier.as_deref())?;
            let mut converse = openai::to_converse(&request)?;
            let web_search = request.searches_the_web();
            if web_search {
                let model = backend.model_name_override.as_deref().unwrap_or(&request.model);
                converse.add_web_grounding(model)?;
            }
            let (upstream_body, operation) =
                finish_converse(converse, backend, &request.model, stream, tier)?;
            let kind = ResponseKind::OpenAiChat {
                stream,
                include_usage: request.include_usage(),
                web_search,
            };
            (upstream_body, request.model.into_owned(), operation, kind)
        }
        (Endpoint::Responses, _) => {
            let request = responses::parse_request(body)?;
            bedrock::validate_model_id(&request.model)
                .map_err(|why| GatewayError::invalid_request(format!("Invalid `model`: {why}")))?;
            let model = backend.model_name_override.as_deref().unwrap_or(&request.model);
            let translated = responses::translate_for(
                &request,
                backend.hosted_tools,
                bedrock::is_nova_model(model),
            )?;
            tool_names = translated.tool_names;
            dropped_tools = translated.dropped_tools;
            let stream = request.is_stream();
            let tier = options::caller_service_tier(request.service_tier.as_deref())?;
            let (upstream_body, operation) =
                finish_converse(translated.converse, backend, &request.model, stream, tier)?;
            let kind = ResponseKind::OpenAiResponses {
                stream,
                include_reasoning: request.includes_reasoning(),
            };
            echo = responses::echo(&request);
            (upstream_body, request.model.into_owned(), operation, kind)
        }
        (Endpoint::AnthropicMessages, Schema::Anthropic) => {
            let invoke =
                anthropic::invoke::prepare_invoke(body, headers.anthropic_beta, &backend.anthropic_beta)?;
            dropped_betas = invoke.dropped_betas;
            invoke_headers = backend.options.invoke_headers();
            let operation = if invoke.stream {
                Operation::InvokeWithResponseStream
            } else {
                Operation::Invoke
            };
            (
                invoke.body,
                invoke.model,
                operation,
                ResponseKind::AnthropicMessage {
                    stream: invoke.stream,
                },
            )
        }
        (Endpoint::AnthropicCountTokens, Schema::Anthropic) => {
            let count = anthropic::invoke::prepare_count_tokens(
                body,
                headers.anthropic_beta,
                &backend.anthropic_beta,
            )?;
            dropped_betas = count.dropped_betas;
            (
                count.body,
                count.model,
                Operation::CountTokens,
                ResponseKind::AnthropicCountTokens,
            )
        }
        (Endpoint::Images, _) => {
            let (requested, model_id) = requested_and_target(body, backend)?;
            let (image_body, family) = crate::api::images::prepare(body, &model_id)?;
            (
                image_body,
                requested,
                Operation::Invoke,
                ResponseKind::Images { family },
            )
        }
        (Endpoint::Rerank(version), _) => {
            let (requested, model_id) = requested_and_target(body, backend)?;
            let (rerank_body, plan) =
                crate::api::rerank::prepare(body, &model_id, &backend.region, version)?;
            rerank = Some(plan);
            (
                rerank_body,
                requested,
                Operation::Invoke,
                ResponseKind::Rerank,
            )
        }
        (Endpoint::Embeddings, _) => {
            let model_hint = requested_model(body)
                .ok()
                .map(|m| m.into_owned())
                .unwrap_or_default();
            let model_id = backend
                .model_name_override
                .as_deref()
                .unwrap_or(&model_hint);
            let (invoke, family) = embeddings::prepare(body, model_id)?;
            batch = invoke.batch;
            (
                invoke.body,
                invoke.model,
                Operation::Invoke,
                ResponseKind::Embeddings {
                    family,
                    base64: invoke.base64,
                },
            )
        }
        (Endpoint::AnthropicMessages, Schema::Converse) => {
            let request = anthropic::converse::parse(body)?;
            let mut converse = anthropic::converse::to_converse(&request, true)?;
            let target = backend
                .model_name_override
                .as_deref()
                .unwrap_or(&request.model);
            dropped_betas = converse_betas(
                headers.anthropic_beta,
                target,
                backend,
                &mut converse.additional_model_request_fields,
            );
            let stream = request.stream.unwrap_or(false);
            let (upstream_body, operation) =
                finish_converse(converse, backend, &request.model, stream, None)?;
            (
                upstream_body,
                request.model.into_owned(),
                operation,
                ResponseKind::AnthropicViaConverse { stream },
            )
        }
        (Endpoint::Bedrock(operation), _) => {
            let model = headers.bedrock_model.unwrap_or_default().to_owned();
            // The backend's options apply here too: a guardrail is the operator's, on every request.
            let with_options = match operation {
                Operation::Converse | Operation::ConverseStream => backend
                    .options
                    .apply_to_converse(body, operation == Operation::ConverseStream)?,
                Operation::Invoke | Operation::InvokeWithResponseStream => {
                    invoke_headers = backend
                        .options
                        .invoke_headers_for(headers.bedrock_service_tier);
                    None
                }
                Operation::CountTokens => None,
            };
            (
                with_options.unwrap_or_else(|| body.to_vec()),
                model,
                operation,
                ResponseKind::Bedrock { operation },
            )
        }
        (Endpoint::AnthropicCountTokens, Schema::Converse) => {
            let (count_body, model) = anthropic::converse::count_tokens_body(body)?;
            dropped_betas = converse_betas(
                headers.anthropic_beta,
                "",
                backend,
                &mut serde_json::Map::new(),
            );
            (
                count_body,
                model,
                Operation::CountTokens,
                ResponseKind::AnthropicCountTokens,
            )
        }
    };

    let model_id = backend.model_name_override.as_deref().unwrap_or(&model);
    let path = if let Some(path) = openai_path {
        path
    } else if rerank.is_some() {
        "/rerank".to_owned()
    } else {
        bedrock::model_path(model_id, operation)
    };
    let accept = if matches!(kind, ResponseKind::OpenAiOnBedrock(plan) if plan.stream) {
        "text/event-stream"
    } else if kind.is_stream() {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    // Rerank is the Agent Runtime's; everything else Bedrock Runtime's.
    let service = if rerank.is_some() {
        Service::AgentRuntime
    } else {
        Service::Runtime
    };
    let host = backend.host_for(service).into_owned();
    Ok(UpstreamRequest {
        path,
        host,
        body: upstream_body,
        accept,
        plan: ResponsePlan {
            format: endpoint.format(),
            kind,
            requested_model: model,
            created: now_unix_seconds,
            echo,
            tool_names,
            rerank,
        },
        dropped_betas,
        dropped_tools,
        headers: invoke_headers,
        batch,
    })
}

/// A translated Converse request made the backend's: its options (with the caller's own service
/// tier where it chose one) and its prompt-caching policy (with `auto`, cache points for a model
/// that caches prompts: the one Bedrock is asked for, the backend's override, else the caller's);
/// then encoded, with the operation that serves it.
fn finish_converse<'a>(
    mut converse: ConverseRequest<'a>,
    backend: &'a Backend,
    requested: &str,
    stream: bool,
    caller_tier: Option<&'a str>,
) -> Result<(Vec<u8>, Operation), GatewayError> {
    converse.options = backend.options.for_converse(stream, caller_tier);
    let model = backend.model_name_override.as_deref().unwrap_or(requested);
    if backend.prompt_caching == PromptCaching::Auto && bedrock::caches_prompts(model) {
        converse.insert_cache_points();
    }
    let body = serde_json::to_vec(&converse).map_err(|e| {
        GatewayError::invalid_request(format!("could not encode the Converse request: {e}"))
    })?;
    let operation = if stream {
        Operation::ConverseStream
    } else {
        Operation::Converse
    };
    Ok((body, operation))
}

/// Beta flags on the Anthropic-to-Converse path: a Claude model takes the accepted ones in
/// `additionalModelRequestFields.anthropic_beta`; other models have none, so all are dropped.
/// Returns the dropped ones.
fn converse_betas(
    beta_header: Option<&str>,
    model_id: &str,
    backend: &Backend,
    additional: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let requested: Vec<String> = crate::bedrock::betas::header_flags(beta_header)
        .map(str::to_owned)
        .collect();
    if requested.is_empty() {
        return None;
    }
    let policy = if bedrock::is_anthropic_model(model_id) {
        &*backend.anthropic_beta
    } else {
        &crate::bedrock::betas::BetaPolicy::none()
    };
    let flags = policy.sort(&requested);
    if !flags.forwarded.is_empty() {
        additional.insert(
            "anthropic_beta".into(),
            flags
                .forwarded
                .iter()
                .cloned()
                .map(serde_json::Value::String)
                .collect(),
        );
    }
    flags.dropped_list()
}

/// The response translation chosen once the upstream's status is known.
pub enum ResponseTranslation {
    /// A whole Converse JSON body becomes one `chat.completion`.
    ChatCompletion(ResponseContext),
    /// Event-stream frames become OpenAI SSE chunks as they arrive.
    ChatCompletionStream(Box<ChatStreamTranslator>),
    /// A whole Converse JSON body becomes one Responses `response` object.
    Response(Box<ResponsesContext>),
    /// Event-stream frames become Responses API events as they arrive.
    ResponseStream(Box<ResponsesStreamTranslator>),
    /// An Anthropic message passes through with the caller's model name.
    AnthropicMessage {
        requested_model: String,
    },
    /// `chunk` frames become Anthropic SSE events as they arrive.
    AnthropicStream(Box<AnthropicStreamTranslator>),
    /// A Converse reply becomes an Anthropic message.
    AnthropicFromConverse {
        message_id: String,
        requested_model: String,
    },
    /// ConverseStream frames become Anthropic SSE events as they arrive.
    AnthropicFromConverseStream(Box<ConverseToAnthropicStream>),
    AnthropicCountTokens,
    Embeddings {
        family: embeddings::Family,
        model: String,
        base64: bool,
        header_tokens: Option<u64>,
    },
    Rerank {
        plan: crate::api::rerank::RerankPlan,
        request_id: String,
    },
    Images {
        family: crate::api::images::ImageFamily,
        created: u64,
    },
    /// OpenAI's own reply from Bedrock, as it came, its usage read.
    OpenAiOnBedrock,
    OpenAiOnBedrockStream(Box<crate::api::openai::on_bedrock::StreamReader>),
    /// A Bedrock error body becomes an error in the caller's format.
    Error {
        status: u16,
        error_type: Option<String>,
        format: ApiFormat,
    },
    /// Bedrock's reply (or error) to a caller of its own API, unchanged.
    Bedrock {
        status: u16,
        header_usage: (Option<u64>, Option<u64>),
    },
    /// A streamed reply to a caller of Bedrock's API, unchanged but for exceptions naming an AWS
    /// account or ARN, its tokens read on the way.
    BedrockStream(Box<crate::api::bedrock_runtime::StreamObserver>),
}

/// What the glue reads from Bedrock's response headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamHead<'a> {
    pub status: u16,
    /// `x-amzn-errortype`
    pub error_type: Option<&'a str>,
    /// `x-amzn-requestid`, or Envoy's request id
    pub request_id: &'a str,
    /// `x-amzn-bedrock-input-token-count`
    pub input_tokens: Option<u64>,
    /// `x-amzn-bedrock-output-token-count`
    pub output_tokens: Option<u64>,
}

impl ResponseTranslation {
    pub fn for_response(
        plan: &ResponsePlan,
        head: UpstreamHead<'_>,
        max_frame_len: usize,
    ) -> ResponseTranslation {
        let UpstreamHead {
            status,
            error_type: error_type_header,
            request_id,
            input_tokens,
            output_tokens,
        } = head;
        if let ResponseKind::Bedrock { operation } = plan.kind {
            // Bedrock's callers get Bedrock's answer, errors included, as AWS sent it.
            return if status == 200 && crate::api::bedrock_runtime::is_stream(operation) {
                ResponseTranslation::BedrockStream(Box::new(
                    crate::api::bedrock_runtime::StreamObserver::new(max_frame_len),
                ))
            } else {
                ResponseTranslation::Bedrock {
                    status,
                    header_usage: (input_tokens, output_tokens),
                }
            };
        }
        if status != 200 {
            return ResponseTranslation::Error {
                status,
                error_type: error_type_header.map(|h| bedrock::error_type_name(h).to_owned()),
                format: plan.format,
            };
        }
        match plan.kind {
            ResponseKind::OpenAiChat {
                stream,
                include_usage,
                web_search,
            } => {
                let context = ResponseContext {
                    id: request_id.to_owned(),
                    model: plan.requested_model.clone(),
                    created: plan.created,
                };
                if stream {
                    ResponseTranslation::ChatCompletionStream(Box::new(
                        ChatStreamTranslator::annotating(
                            &context,
                            include_usage,
                            web_search,
                            max_frame_len,
                        ),
                    ))
                } else {
                    ResponseTranslation::ChatCompletion(context)
                }
            }
            ResponseKind::OpenAiResponses {
                stream,
                include_reasoning,
            } => {
                let context = ResponsesContext {
                    id: request_id.to_owned(),
                    model: plan.requested_model.clone(),
                    created: plan.created,
                    echo: plan.echo.clone(),
                    tools: plan.tool_names.clone(),
                    include_reasoning,
                };
                if stream {
                    ResponseTranslation::ResponseStream(Box::new(ResponsesStreamTranslator::new(
                        context,
                        max_frame_len,
                    )))
                } else {
                    ResponseTranslation::Response(Box::new(context))
                }
            }
            ResponseKind::AnthropicMessage { stream: true } => {
                ResponseTranslation::AnthropicStream(Box::new(AnthropicStreamTranslator::new(
                    &plan.requested_model,
                    max_frame_len,
                )))
            }
            ResponseKind::AnthropicMessage { stream: false } => {
                ResponseTranslation::AnthropicMessage {
                    requested_model: plan.requested_model.clone(),
                }
            }
            ResponseKind::AnthropicViaConverse { stream: true } => {
                ResponseTranslation::AnthropicFromConverseStream(Box::new(
                    ConverseToAnthropicStream::new(
                        request_id,
                        &plan.requested_model,
                        max_frame_len,
                    ),
                ))
            }
            ResponseKind::AnthropicViaConverse { stream: false } => {
                ResponseTranslation::AnthropicFromConverse {
                    message_id: request_id.to_owned(),
                    requested_model: plan.requested_model.clone(),
                }
            }
            ResponseKind::AnthropicCountTokens => ResponseTranslation::AnthropicCountTokens,
            ResponseKind::Embeddings { family, base64 } => ResponseTranslation::Embeddings {
                family,
                model: plan.requested_model.clone(),
                base64,
                header_tokens: input_tokens,
            },
            ResponseKind::Bedrock { .. } => ResponseTranslation::Bedrock {
                status,
                header_usage: (input_tokens, output_tokens),
            },
            ResponseKind::OpenAiOnBedrock(openai) if openai.stream => {
                ResponseTranslation::OpenAiOnBedrockStream(Box::new(
                    crate::api::openai::on_bedrock::StreamReader::new(openai),
                ))
            }
            ResponseKind::OpenAiOnBedrock(_) => ResponseTranslation::OpenAiOnBedrock,
            ResponseKind::Images { family } => ResponseTranslation::Images {
                family,
                created: plan.created,
            },
            ResponseKind::Rerank => ResponseTranslation::Rerank {
                plan: plan
                    .rerank
                    .clone()
                    .unwrap_or(crate::api::rerank::RerankPlan {
                        documents: None,
                        api_version: 1,
                    }),
                request_id: request_id.to_owned(),
            },
        }
    }

    /// Streams translate chunk by chunk; everything else needs the whole body.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            ResponseTranslation::ChatCompletionStream(_)
                | ResponseTranslation::ResponseStream(_)
                | ResponseTranslation::AnthropicStream(_)
                | ResponseTranslation::AnthropicFromConverseStream(_)
                | ResponseTranslation::BedrockStream(_)
                | ResponseTranslation::OpenAiOnBedrockStream(_)
        )
    }

    /// The reply's content type; `None` keeps Bedrock's.
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            ResponseTranslation::Bedrock { .. }
            | ResponseTranslation::BedrockStream(_)
            | ResponseTranslation::OpenAiOnBedrock
            | ResponseTranslation::OpenAiOnBedrockStream(_) => None,
            _ if self.is_streaming() => Some("text/event-stream"),
            _ => Some("application/json"),
        }
    }

    /// Translates one chunk of a streamed body; empty for non-streaming translations.
    pub fn push_stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::ResponseStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::AnthropicStream(stream) => stream.push(chunk, end_of_stream),
            ResponseTranslation::AnthropicFromConverseStream(stream) => {
                stream.push(chunk, end_of_stream)
            }
            ResponseTranslation::BedrockStream(observer) => observer.pass(chunk, end_of_stream),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.push(chunk, end_of_stream),
            _ => Vec::new(),
        }
    }

    /// Token usage seen so far: from the stream's events, or read from a whole upstream body.
    /// The tokens a stream has reported so far (whole bodies report theirs from `translate_body`).
    pub fn stream_usage(&self) -> Option<TokenUsage> {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.usage(),
            ResponseTranslation::ResponseStream(stream) => stream.usage(),
            ResponseTranslation::AnthropicStream(stream) => stream.usage(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => stream.usage(),
            ResponseTranslation::BedrockStream(observer) => observer.usage(),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.usage(),
            _ => None,
        }
    }

    /// Whether a stream has sent the caller its first generated content (for time to first token).
    pub fn first_content_emitted(&self) -> bool {
        match self {
            ResponseTranslation::ChatCompletionStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::ResponseStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::AnthropicStream(stream) => stream.first_content_emitted(),
            ResponseTranslation::AnthropicFromConverseStream(stream) => {
                stream.first_content_emitted()
            }
            ResponseTranslation::BedrockStream(observer) => observer.first_content_seen(),
            ResponseTranslation::OpenAiOnBedrockStream(reader) => reader.first_content_emitted(),
            _ => false,
        }
    }

    /// The caller's reply when Bedrock's answer ended with its headers (a bare status, as a
    /// load balancer in front of the service may send): errors translate as with an empty body,
    /// and a stream that never began is a 502 rather than an empty success.
    pub fn translate_bodiless(&self) -> (u16, TranslatedBody) {
        let stream_format = match self {
            ResponseTranslation::ChatCompletionStream(_)
            | ResponseTranslation::ResponseStream(_)
            | ResponseTranslation::OpenAiOnBedrockStream(_) => ApiFormat::OpenAi,
            ResponseTranslation::AnthropicStream(_)
            | ResponseTranslation::AnthropicFromConverseStream(_) => ApiFormat::Anthropic,
            ResponseTranslation::BedrockStream(_) => ApiFormat::Bedrock,
            _ => return self.translate_body(&[]),
        };
        let error = GatewayError::new(
            502,
            ErrorKind::Upstream,
            "Bedrock ended the stream before sending any event.",
        );
        (
            error.status,
            TranslatedBody::without_usage(error.to_json(stream_format)),
        )
    }

    /// Translates a whole buffered body. Returns the status to answer with, the new body and,
    /// for a success, the tokens it reported.
    pub fn translate_body(&self, body: &[u8]) -> (u16, TranslatedBody) {
        let (result, format) = match self {
            ResponseTranslation::ChatCompletion(context) => (
                openai::from_converse_response(body, context),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::Response(context) => (
                responses::from_converse_response(body, context),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::AnthropicMessage { requested_model } => (
                anthropic::invoke::rewrite_message_model(body, requested_model),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::AnthropicCountTokens => (
                anthropic::invoke::count_tokens_response(body).map(TranslatedBody::without_usage),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::AnthropicFromConverse {
                message_id,
                requested_model,
            } => (
                anthropic::converse::from_converse_response(body, message_id, requested_model),
                ApiFormat::Anthropic,
            ),
            ResponseTranslation::Embeddings {
                family,
                model,
                base64,
                header_tokens,
            } => (
                embeddings::response(body, *family, model, *base64, *header_tokens),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::OpenAiOnBedrock => {
                return (
                    200,
                    TranslatedBody {
                        body: body.to_vec(),
                        usage: crate::api::openai::on_bedrock::reply_usage(body),
                    },
                );
            }
            ResponseTranslation::Images { family, created } => (
                crate::api::images::response(body, *family, *created),
                ApiFormat::OpenAi,
            ),
            ResponseTranslation::Rerank { plan, request_id } => (
                crate::api::rerank::response(body, plan, request_id),
                ApiFormat::Cohere,
            ),
            ResponseTranslation::Bedrock {
                status,
                header_usage: (input, output),
            } => {
                // Unchanged, status and all, but for the account's identifiers in an error's
                // message; an error reports no tokens.
                if *status != 200 {
                    return (
                        *status,
                        TranslatedBody::without_usage(
                            crate::api::bedrock_runtime::redact_error_body(body),
                        ),
                    );
                }
                let usage = crate::api::bedrock_runtime::reply_usage(body, *input, *output);
                return (
                    *status,
                    TranslatedBody {
                        body: body.to_vec(),
                        usage,
                    },
                );
            }
            ResponseTranslation::Error {
                status,
                error_type,
                format,
            } => {
                let message = bedrock::error_message(body);
                (
                    Err(GatewayError::from_bedrock(
                        *status,
                        error_type.as_deref(),
                        &message,
                    )),
                    *format,
                )
            }
            ResponseTranslation::ChatCompletionStream(_)
            | ResponseTranslation::ResponseStream(_)
            | ResponseTranslation::AnthropicStream(_)
            | ResponseTranslation::AnthropicFromConverseStream(_)
            | ResponseTranslation::BedrockStream(_)
            | ResponseTranslation::OpenAiOnBedrockStream(_) => {
                return (200, TranslatedBody::without_usage(Vec::new()))
            }
        };
        match result {
            Ok(translated) => (200, translated),
            Err(error) => (
                error.status,
                TranslatedBody::without_usage(error.to_json(format)),
            ),
        }
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

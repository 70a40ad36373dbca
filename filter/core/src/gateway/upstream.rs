//! What goes to Bedrock: a request translated for its backend (path, host, body, headers), how it
//! is signed, and the plan its answer will be translated back by.

use super::*;

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
                finish_converse(converse, backend, &request.model, stream, tier, body.len())?;
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
                finish_converse(translated.converse, backend, &request.model, stream, tier, body.len())?;
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
                finish_converse(converse, backend, &request.model, stream, None, body.len())?;
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
/// then encoded, with the operation that serves it. `caller_body_len` sizes the encoding's buffer:
/// a Converse body is about as long as the caller's, and a buffer grown from empty would copy a
/// large one over and over.
fn finish_converse<'a>(
    mut converse: ConverseRequest<'a>,
    backend: &'a Backend,
    requested: &str,
    stream: bool,
    caller_tier: Option<&'a str>,
    caller_body_len: usize,
) -> Result<(Vec<u8>, Operation), GatewayError> {
    converse.options = backend.options.for_converse(stream, caller_tier);
    let model = backend.model_name_override.as_deref().unwrap_or(requested);
    if backend.prompt_caching == PromptCaching::Auto && bedrock::caches_prompts(model) {
        converse.insert_cache_points();
    }
    let mut body = Vec::with_capacity(caller_body_len + caller_body_len / 8 + 256);
    serde_json::to_writer(&mut body, &converse).map_err(|e| {
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

//! A local Bedrock Runtime: `converse`, `converse-stream`, `invoke` and
//! `invoke-with-response-stream`, with SigV4 checked by `aws-sigv4` and streams framed
//! by `aws-smithy-eventstream`. See the README for fault injection.

mod anthropic;
mod auth;
mod converse;
mod embeddings;
mod frames;
mod identity;
mod images;
mod model;
mod openai;
mod rerank;
mod service_model;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Which API a model speaks through InvokeModel, besides Converse which all accept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Anthropic,
    ConverseOnly,
    TitanEmbed,
    CohereEmbed,
    CohereEmbedV4,
    NovaEmbed,
    /// Stability's image models: SD3.5 Large (`sd3`), Stable Image Ultra and Core.
    StabilityImage {
        sd3: bool,
    },
    /// Nova Canvas (`nova`) and Titan Image Generator v2.
    CanvasImage {
        nova: bool,
    },
}

impl Family {
    fn embeds(self) -> bool {
        matches!(
            self,
            Family::TitanEmbed | Family::CohereEmbed | Family::CohereEmbedV4 | Family::NovaEmbed
        )
    }
}

const MODELS: &[(&str, Family)] = &[
    ("us.meta.llama3-2-1b-instruct-v1:0", Family::ConverseOnly),
    ("meta.llama3-2-1b-instruct-v1:0", Family::ConverseOnly),
    ("us.amazon.nova-micro-v1:0", Family::ConverseOnly),
    ("us.amazon.nova-premier-v1:0", Family::ConverseOnly),
    (
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        Family::Anthropic,
    ),
    (
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        Family::Anthropic,
    ),
    ("anthropic.claude-3-haiku-20240307-v1:0", Family::Anthropic),
    (
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        Family::Anthropic,
    ),
    (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        Family::Anthropic,
    ),
    (
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        Family::Anthropic,
    ),
    ("amazon.titan-embed-text-v2:0", Family::TitanEmbed),
    ("cohere.embed-english-v3", Family::CohereEmbed),
    ("cohere.embed-multilingual-v3", Family::CohereEmbed),
    ("cohere.embed-v4:0", Family::CohereEmbedV4),
    ("cohere.embed-v4", Family::CohereEmbedV4),
    (
        "stability.sd3-5-large-v1:0",
        Family::StabilityImage { sd3: true },
    ),
    (
        "stability.stable-image-ultra-v1:1",
        Family::StabilityImage { sd3: false },
    ),
    (
        "stability.stable-image-core-v1:1",
        Family::StabilityImage { sd3: false },
    ),
    (
        "amazon.nova-canvas-v1:0",
        Family::CanvasImage { nova: true },
    ),
    (
        "amazon.titan-image-generator-v2:0",
        Family::CanvasImage { nova: false },
    ),
    (
        "amazon.nova-2-multimodal-embeddings-v1:0",
        Family::NovaEmbed,
    ),
];

fn find_model(id: &str) -> Option<(&'static str, Family)> {
    // Inference-profile and foundation-model ARNs name the model after the last '/'.
    let bare = if id.starts_with("arn:") {
        id.rsplit('/').next().unwrap_or(id)
    } else {
        id
    };
    MODELS.iter().find(|(name, _)| *name == bare).copied()
}

struct State {
    /// Benchmarks only (`--skip-sigv4`): unsigned baselines must be answered like signed traffic.
    skip_sigv4: bool,
    credentials: Vec<auth::Credential>,
    identity: identity::IdentityService,
    request_counter: AtomicU64,
    last_request: Mutex<Value>,
    /// Prompt prefixes written to the emulated prompt cache.
    prompt_cache: Mutex<HashSet<u64>>,
    /// `--region`: accept only signatures scoped to it, as a regional endpoint does.
    region: Option<String>,
    /// Set by `POST /_emulator/faults`: every Bedrock call fails this way until cleared.
    fault: Mutex<Option<String>>,
    /// Bedrock calls failed by that fault.
    failed_calls: AtomicU64,
    /// Bedrock calls whose signature (or API key) was accepted (`GET /_emulator/bedrock-calls`).
    accepted_calls: AtomicU64,
    /// Every request that reached the Bedrock API (not the emulator's own or the credential
    /// endpoints), and those refused for a missing or wrong signature or key: what the gateway let
    /// through unsigned shows here.
    received_calls: AtomicU64,
    unauthenticated_calls: AtomicU64,
    /// The Bedrock API keys this emulator has issued and not revoked (`/_emulator/api-keys`),
    /// with `DEMO_API_KEY` from the start.
    api_keys: Mutex<HashSet<String>>,
    /// `--service-model`: botocore's Bedrock Runtime model, which Converse, ConverseStream and
    /// CountTokens bodies must satisfy.
    service_model: Option<service_model::ServiceModel>,
    /// The Bedrock Agent Runtime's model (for Rerank), found beside `--service-model`'s in botocore.
    agent_service_model: Option<service_model::ServiceModel>,
}

/// The long-term Bedrock API key `make run AUTH=api-key` uses: `ABSK` + base64 of
/// `BedrockAPIKey-<id>-at-<account>:<secret>`, the shape AWS issues.
const DEMO_API_KEY: &str =
    "ABSKQmVkcm9ja0FQSUtleS1kZW1vLWF0LTEyMzQ1Njc4OTAxMjplbXVsYXRvci1kZW1vLXNlY3JldA==";

/// Bedrock's answer to `Authorization: Bearer <key>`: the key must have an API key's prefix and
/// be one this emulator issued.
fn check_api_key(state: &State, key: &str) -> Result<(), (u16, &'static str, &'static str)> {
    if !key.starts_with("ABSK") && !key.starts_with("bedrock-api-key-") {
        return Err((
            403,
            "AccessDeniedException",
            "Invalid API Key format: Must start with pre-defined prefix",
        ));
    }
    let known = state
        .api_keys
        .lock()
        .map(|keys| keys.contains(key))
        .unwrap_or(false);
    if !known {
        return Err((
            403,
            "AccessDeniedException",
            "Authentication failed: Please make sure your API Key is valid.",
        ));
    }
    Ok(())
}

impl State {
    /// A request reads the longest cached prefix found at one of its breakpoints or in the blocks
    /// shortly before its last one, and writes the rest up to its last breakpoint; each of its
    /// breakpoints is cached for later requests.
    fn cache_usage(&self, conversation: &model::Conversation) -> model::CacheUsage {
        let Some(prefix) = &conversation.cache_prefix else {
            return model::CacheUsage::default();
        };
        let Ok(mut cache) = self.prompt_cache.lock() else {
            return model::CacheUsage::default();
        };
        let last = prefix.points.iter().copied().max().unwrap_or_default();
        let boundary = |blocks: usize| blocks.checked_sub(1).and_then(|i| prefix.boundaries.get(i));
        let lookback = last.saturating_sub(model::CACHE_LOOKBACK_BLOCKS)..=last;
        let read = lookback
            .chain(prefix.points.iter().copied())
            .filter_map(boundary)
            .filter(|(_, digest)| cache.contains(digest))
            .map(|(tokens, _)| *tokens)
            .max()
            .unwrap_or_default();
        for point in &prefix.points {
            if let Some((_, digest)) = boundary(*point) {
                cache.insert(*digest);
            }
        }
        let total = boundary(last).map_or(0, |(tokens, _)| *tokens);
        model::CacheUsage {
            read,
            written: total.saturating_sub(read),
        }
    }
}

type ResponseBody = Pin<Box<dyn Body<Data = Bytes, Error = std::io::Error> + Send>>;

/// A streamed body fed by a channel; an `Err` item cuts the connection.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}

fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
    request_id: &str,
) -> Response<ResponseBody> {
    let body: ResponseBody =
        Box::pin(Full::new(body.into()).map_err(|never: Infallible| match never {}));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", header_value(content_type));
    headers.insert("x-amzn-requestid", header_value(request_id));
    response
}

/// A header value from text the emulator made (ids, numbers, error types): visible ASCII, else
/// left empty rather than panicking.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn bedrock_error(
    status: u16,
    error_type: &str,
    message: &str,
    request_id: &str,
) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = full(
        status,
        "application/json",
        json!({ "message": message }).to_string(),
        request_id,
    );
    let header = format!("{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    response
        .headers_mut()
        .insert("x-amzn-errortype", header_value(&header));
    response
}

fn validation(message: &str, request_id: &str) -> Response<ResponseBody> {
    bedrock_error(400, "ValidationException", message, request_id)
}

/// Marks a response that must not be sent: the connection is dropped instead.
#[derive(Clone, Copy)]
struct ResetConnection;

fn reset_connection() -> Response<ResponseBody> {
    let mut response = full(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "", "reset");
    response.extensions_mut().insert(ResetConnection);
    response
}

/// Injected before a reply starts, by the `x-emulator-fault` request header.
fn upfront_fault(fault: &str, request_id: &str) -> Option<Response<ResponseBody>> {
    Some(match fault {
        "throttle" => {
            let mut response = bedrock_error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                request_id,
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("2"));
            response
        }
        "access-denied" => bedrock_error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            request_id,
        ),
        // As AWS words a role without bedrock:InvokeModel: the account and the role in the text.
        "access-denied-role" => bedrock_error(
            403,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/ai-gateway-dataplane/eks-pod is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0 because no identity-based policy allows the bedrock:InvokeModel action",
            request_id,
        ),
        "validation" => validation(
            "Malformed input request, please reformat your input and try again.",
            request_id,
        ),
        "internal" => bedrock_error(
            500,
            "InternalServerException",
            "The server encountered an internal error.",
            request_id,
        ),
        "unavailable" => bedrock_error(
            503,
            "ServiceUnavailableException",
            "The service is temporarily unavailable.",
            request_id,
        ),
        // A 200 whose body is not Bedrock's reply (cut short): the gateway must not pass it off as a success.
        "unreadable-reply" => full(
            StatusCode::OK,
            "application/json",
            r#"{"output": {"message": "#,
            request_id,
        ),
        // What a load balancer in front of the service may send: a status and no body at all.
        "empty-503" => full(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "",
            request_id,
        ),
        "empty-200" => full(StatusCode::OK, "application/json", "", request_id),
        _ => return None,
    })
}

/// How long the `hold-open` fault keeps a finished stream's body open.
const HOLD_OPEN: Duration = Duration::from_secs(5);

fn stream_response(
    frames: Vec<(Bytes, bool)>,
    fault: Option<String>,
    delay: Duration,
    request_id: &str,
) -> Response<ResponseBody> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut deltas_sent = 0;
        for (frame, is_delta) in frames {
            // Paced between deltas; the first comes at once, so that time to first token measures
            // the path to the emulator rather than where its sleep fell on the timer's 1 ms ticks.
            if is_delta && deltas_sent > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if deltas_sent == 1 {
                match fault.as_deref() {
                    Some("stream-exception") => {
                        let _ = sender
                            .send(Ok(frames::exception(
                                "modelStreamErrorException",
                                "The model stream failed mid-response.",
                            )))
                            .await;
                        return;
                    }
                    // As a guardrail or model error can word it mid-stream: an ARN with the account.
                    Some("stream-exception-arn") => {
                        let _ = sender
                            .send(Ok(frames::exception(
                                "validationException",
                                "The model arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0 failed mid-response.",
                            )))
                            .await;
                        return;
                    }
                    Some("stream-throttle") => {
                        let _ = sender
                            .send(Ok(frames::exception(
                                "throttlingException",
                                "Too many tokens, please wait before trying again.",
                            )))
                            .await;
                        return;
                    }
                    Some("corrupt-frame") => {
                        let _ = sender.send(Ok(frames::corrupt(&frame))).await;
                        return;
                    }
                    Some("reset") => {
                        let _ = sender
                            .send(Err(std::io::Error::other(
                                "connection reset by the emulator",
                            )))
                            .await;
                        return;
                    }
                    _ => {}
                }
            }
            if sender.send(Ok(frame)).await.is_err() {
                return;
            }
            if is_delta {
                deltas_sent += 1;
            }
        }
        if fault.as_deref() == Some("hold-open") {
            // The last frame is out, the body's end is not: what a caller that hangs up at the
            // last event ends before the gateway sees the end.
            tokio::time::sleep(HOLD_OPEN).await;
        }
    });
    let body: ResponseBody = Box::pin(ChannelBody(receiver));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    headers.insert("x-amzn-requestid", header_value(request_id));
    headers.insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `response` with the end of its body withheld for [`HOLD_OPEN`] after the body (the
/// `hold-open` fault for the answers the emulator writes whole, OpenAI's streams).
fn held_open(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, body) = response.into_parts();
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        if let Ok(collected) = body.collect().await {
            let _ = sender.send(Ok(collected.to_bytes())).await;
        }
        tokio::time::sleep(HOLD_OPEN).await;
    });
    Response::from_parts(parts, Box::pin(ChannelBody(receiver)))
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let n = state.request_counter.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("e2e00000-0000-4000-8000-{n:012x}");
    let method = request.method().as_str().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    if method == "GET" && path_and_query == "/_emulator/health" {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#,
            &request_id,
        ));
    }
    if method == "GET" && path_and_query == "/_emulator/credential-stats" {
        let stats = json!({
            "pod_identity": state.identity.pod_identity_calls.load(Ordering::Relaxed),
            "sts": state.identity.sts_calls.load(Ordering::Relaxed),
            "imds": state.identity.imds_calls.load(Ordering::Relaxed),
            "rejected_tokens": state.identity.rejected_tokens.load(Ordering::Relaxed),
        });
        return Ok(full(
            StatusCode::OK,
            "application/json",
            stats.to_string(),
            &request_id,
        ));
    }
    if method == "POST" && path_and_query.starts_with("/_emulator/credential-endpoints/") {
        let down = path_and_query.ends_with("/down");
        state.identity.down.store(down, Ordering::Relaxed);
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json!({ "down": down }).to_string(),
            &request_id,
        ));
    }
    if method == "POST" && path_and_query == "/_emulator/faults" {
        let body = http_body_util::Limited::new(request.into_body(), 4096)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let fault = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("fault").cloned());
        let fault = match fault {
            Some(Value::String(name))
                if name == "reset" || upfront_fault(&name, &request_id).is_some() =>
            {
                Some(name)
            }
            Some(Value::Null) => None,
            _ => {
                return Ok(validation(
                    r#"expected {"fault": "throttle" | "internal" | "reset" | ... | null}"#,
                    &request_id,
                ))
            }
        };
        if let Ok(mut current) = state.fault.lock() {
            current.clone_from(&fault);
        }
        let answer = json!({ "fault": fault, "region": state.region, "failed_calls": state.failed_calls.load(Ordering::Relaxed) });
        return Ok(full(
            StatusCode::OK,
            "application/json",
            answer.to_string(),
            &request_id,
        ));
    }
    if method == "POST"
        && (path_and_query == "/_emulator/api-keys"
            || path_and_query == "/_emulator/api-keys/revoke")
    {
        // Issues a new long-term key, or revokes the one in the body's `key`.
        let body = http_body_util::Limited::new(request.into_body(), 4096)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let Ok(mut keys) = state.api_keys.lock() else {
            return Ok(bedrock_error(
                500,
                "InternalServerException",
                "key store unavailable",
                &request_id,
            ));
        };
        if path_and_query.ends_with("/revoke") {
            let key = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("key").and_then(Value::as_str).map(str::to_owned));
            let revoked = key.is_some_and(|k| keys.remove(&k));
            return Ok(full(
                StatusCode::OK,
                "application/json",
                json!({ "revoked": revoked }).to_string(),
                &request_id,
            ));
        }
        let identity = format!(
            "BedrockAPIKey-e2e{n:06}-at-123456789012:{}",
            request_id.replace('-', "")
        );
        let key = format!(
            "ABSK{}",
            base64::engine::general_purpose::STANDARD.encode(identity)
        );
        keys.insert(key.clone());
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json!({ "key": key }).to_string(),
            &request_id,
        ));
    }
    if method == "GET" && path_and_query == "/_emulator/bedrock-calls" {
        let calls = json!({
            "accepted": state.accepted_calls.load(Ordering::Relaxed),
            "received": state.received_calls.load(Ordering::Relaxed),
            "unauthenticated": state.unauthenticated_calls.load(Ordering::Relaxed),
        });
        return Ok(full(
            StatusCode::OK,
            "application/json",
            calls.to_string(),
            &request_id,
        ));
    }
    if method == "GET" && path_and_query == "/_emulator/last-request" {
        let last = state
            .last_request
            .lock()
            .map(|l| l.clone())
            .unwrap_or(Value::Null);
        return Ok(full(
            StatusCode::OK,
            "application/json",
            last.to_string(),
            &request_id,
        ));
    }

    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(validation(
                "The request body is too large or could not be read.",
                &request_id,
            ))
        }
    };
    if let Some(reply) = credential_endpoint(&state, &method, &path_and_query, &headers, &body) {
        let mut response = full(
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            reply.content_type,
            reply.body,
            &request_id,
        );
        response.headers_mut().remove("x-amzn-requestid");
        return Ok(response);
    }
    state.received_calls.fetch_add(1, Ordering::Relaxed);
    // Only what Bedrock would receive: a credential fetch (the gateway refreshes in the
    // background) landing between a test's request and its look must not replace it.
    if let Ok(mut last) = state.last_request.lock() {
        *last = json!({
            "method": method,
            "path": path_and_query,
            "headers": headers.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "body": serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        });
    }

    let lookup = |access_key_id: &str| -> Option<auth::Known> {
        if let Some(static_key) = state
            .credentials
            .iter()
            .find(|c| c.access_key_id == access_key_id)
        {
            return Some(auth::Known::Static(static_key.secret_access_key.clone()));
        }
        match state.identity.lookup(access_key_id)? {
            Ok((secret, token)) => Some(auth::Known::Temporary { secret, token }),
            Err(()) => Some(auth::Known::Expired),
        }
    };
    let bearer =
        header("authorization").and_then(|value| value.strip_prefix("Bearer ").map(str::to_owned));
    if state.skip_sigv4 {
        // Benchmarks compare against unsigned baselines; every other use verifies.
    } else if let Some(key) = bearer {
        // A Bedrock API key instead of SigV4: nothing is signed, so nothing else is checked.
        if let Err((status, error_type, message)) = check_api_key(&state, &key) {
            state.unauthenticated_calls.fetch_add(1, Ordering::Relaxed);
            return Ok(bedrock_error(status, error_type, message, &request_id));
        }
    } else if let Err(error) = auth::verify(
        &method,
        &path_and_query,
        &headers,
        &body,
        &lookup,
        // Bedrock Mantle (`/v1/...` on bedrock-mantle.<region>.api.aws) signs for a service of its own.
        if path_and_query.starts_with("/v1/") {
            "bedrock-mantle"
        } else {
            "bedrock"
        },
        state.region.as_deref(),
    ) {
        state.unauthenticated_calls.fetch_add(1, Ordering::Relaxed);
        return Ok(bedrock_error(
            error.status,
            error.error_type,
            &error.message,
            &request_id,
        ));
    }
    state.accepted_calls.fetch_add(1, Ordering::Relaxed);
    // A fault set through /_emulator/faults fails every Bedrock call until cleared.
    let sticky_fault = state.fault.lock().ok().and_then(|f| f.clone());
    if let Some(fault) = sticky_fault {
        state.failed_calls.fetch_add(1, Ordering::Relaxed);
        if fault == "reset" {
            return Ok(reset_connection());
        }
        if let Some(response) = upfront_fault(&fault, &request_id) {
            return Ok(response);
        }
    }

    // `x-emulator-fault` fails this one call before any reply starts (a served operation's only:
    // an unknown path is still a 404); stream faults come later, from the same header.
    let fault = header("x-emulator-fault");
    let upfront = || fault.as_deref().and_then(|f| upfront_fault(f, &request_id));
    let segments: Vec<&str> = path_and_query
        .split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .collect();
    let openai_segments = match segments.as_slice() {
        ["", "openai", "v1", rest @ ..] | ["", "v1", rest @ ..] => Some(rest),
        _ => None,
    };
    if let Some([operation @ ("chat" | "responses"), rest @ ..]) = openai_segments {
        if let Some(response) = upfront() {
            return Ok(response);
        }
        let Ok(json_body) = serde_json::from_slice::<Value>(&body) else {
            return Ok(validation("The body is not valid JSON.", &request_id));
        };
        let reply = match (*operation, rest) {
            ("chat", ["completions"]) if method == "POST" => openai::chat(&json_body, &request_id),
            ("responses", []) if method == "POST" => openai::responses(&json_body, &request_id),
            _ => bedrock_error(
                404,
                "UnknownOperationException",
                "Unknown operation.",
                &request_id,
            ),
        };
        return Ok(match fault.as_deref() {
            Some("hold-open") => held_open(reply),
            _ => reply,
        });
    }
    let host = header("host").unwrap_or_default();
    if segments.as_slice() == ["", "rerank"] && method == "POST" {
        // The Agent Runtime's operation: Bedrock Runtime's host does not serve it.
        if host.starts_with("bedrock-runtime.") {
            return Ok(bedrock_error(
                404,
                "UnknownOperationException",
                "Unknown operation.",
                &request_id,
            ));
        }
        if let Some(response) = upfront() {
            return Ok(response);
        }
        return Ok(rerank::answer(&state, &body, &request_id));
    }
    let (encoded_model, operation) = match segments.as_slice() {
        ["", "model", model, operation] if method == "POST" => (*model, *operation),
        _ => {
            return Ok(bedrock_error(
                404,
                "UnknownOperationException",
                "Unknown operation.",
                &request_id,
            ))
        }
    };
    if let Some(response) = upfront() {
        return Ok(response);
    }
    let Some(model_id) = percent_decode(encoded_model) else {
        return Ok(validation(
            "The provided model identifier is invalid.",
            &request_id,
        ));
    };
    let Some((model_name, family)) = find_model(&model_id) else {
        return Ok(validation(
            "The provided model identifier is invalid.",
            &request_id,
        ));
    };
    let json_body: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => {
            return Ok(validation(
                "Malformed input request: the body is not valid JSON.",
                &request_id,
            ))
        }
    };
    let delay = Duration::from_millis(
        header("x-emulator-delay-ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    );
    let tool_use_id = format!("tooluse_e2e{n:06}");

    match operation {
        "converse" | "converse-stream" if family.embeds() => Ok(validation(
            "This model doesn't support the Converse API; it is an embedding model.",
            &request_id,
        )),
        "converse" | "converse-stream" => {
            let operation_name = if operation == "converse" {
                "Converse"
            } else {
                "ConverseStream"
            };
            if let Some(Err(message)) = state
                .service_model
                .as_ref()
                .map(|m| m.validate(operation_name, &json_body))
            {
                return Ok(validation(&message, &request_id));
            }
            let conversation = match converse::read_conversation(&json_body) {
                Ok(conversation) => conversation,
                Err(message) => return Ok(validation(&message, &request_id)),
            };
            // Web grounding is Amazon Nova's (nova/latest/userguide/grounding.html).
            if conversation.web_grounding && !model_name.contains("amazon.nova-") {
                return Ok(validation(
                    "This model doesn't support the system tool nova_grounding.",
                    &request_id,
                ));
            }
            let guardrail = json_body.get("guardrailConfig");
            if let Some(Err(message)) = guardrail.map(converse::check_guardrail) {
                return Ok(validation(&message, &request_id));
            }
            let intervention = guardrail.and_then(|_| converse::guardrail_reply(&conversation));
            let reply = intervention.unwrap_or_else(|| model::reply(&conversation, &tool_use_id));
            let cache = state.cache_usage(&conversation);
            if operation == "converse" {
                return Ok(full(
                    StatusCode::OK,
                    "application/json",
                    converse::response(&reply, cache).to_string(),
                    &request_id,
                ));
            }
            Ok(stream_response(
                converse::stream_frames(&reply, cache),
                fault,
                delay,
                &request_id,
            ))
        }
        "invoke"
            if matches!(
                family,
                Family::StabilityImage { .. } | Family::CanvasImage { .. }
            ) =>
        {
            let result = match family {
                Family::StabilityImage { sd3 } => images::stability(&json_body, sd3),
                Family::CanvasImage { nova } => images::canvas(&json_body, nova),
                _ => Err("not an image model".into()),
            };
            Ok(match result {
                Ok(answer) => full(
                    StatusCode::OK,
                    "application/json",
                    answer.to_string(),
                    &request_id,
                ),
                Err(message) => validation(&message, &request_id),
            })
        }
        "invoke" if family.embeds() => {
            // One input of a list the gateway splits into calls carries no caller headers: a text
            // `emulator-fault:<name>` fails its own call the way `x-emulator-fault` would.
            let input_fault = json_body
                .get("inputText")
                .or_else(|| json_body.pointer("/singleEmbeddingParams/text/value"))
                .and_then(Value::as_str)
                .and_then(|t| t.strip_prefix("emulator-fault:"));
            if input_fault == Some("reset") {
                return Ok(reset_connection());
            }
            if let Some(response) = input_fault.and_then(|f| upfront_fault(f, &request_id)) {
                return Ok(response);
            }
            let result = match family {
                Family::TitanEmbed => embeddings::titan(&json_body),
                Family::NovaEmbed => embeddings::nova(&json_body),
                Family::CohereEmbedV4 => embeddings::cohere_v4(&json_body, &request_id),
                _ => embeddings::cohere(&json_body, &request_id),
            };
            match result {
                Ok((body, tokens)) => {
                    let mut response = full(
                        StatusCode::OK,
                        "application/json",
                        body.to_string(),
                        &request_id,
                    );
                    let count = header_value(&tokens.to_string());
                    response
                        .headers_mut()
                        .insert("x-amzn-bedrock-input-token-count", count);
                    Ok(response)
                }
                Err(message) => Ok(validation(&message, &request_id)),
            }
        }
        "invoke" | "invoke-with-response-stream" => {
            if family != Family::Anthropic {
                return Ok(validation("Malformed input request: this emulator speaks InvokeModel for Anthropic models only.", &request_id));
            }
            let conversation = match anthropic::read_conversation(&json_body) {
                Ok(conversation) => conversation,
                Err(message) => return Ok(validation(&message, &request_id)),
            };
            // InvokeModel names its guardrail in headers.
            if let Some(identifier) = header("x-amzn-bedrock-guardrailidentifier") {
                let version = header("x-amzn-bedrock-guardrailversion").unwrap_or_default();
                let config =
                    json!({ "guardrailIdentifier": identifier, "guardrailVersion": version });
                if let Err(message) = converse::check_guardrail(&config) {
                    return Ok(validation(&message, &request_id));
                }
            }
            let reply = model::reply(&conversation, &tool_use_id.replace("tooluse_", "toolu_"));
            let cache = state.cache_usage(&conversation);
            let message_id = format!("msg_bdrk_e2e{n:06}");
            let short_model = model_name
                .trim_start_matches("us.")
                .trim_start_matches("anthropic.");
            if operation == "invoke" {
                let body = anthropic::response(&reply, cache, &message_id, short_model).to_string();
                return Ok(full(StatusCode::OK, "application/json", body, &request_id));
            }
            Ok(stream_response(
                anthropic::stream_frames(&reply, cache, &message_id, short_model),
                fault,
                delay,
                &request_id,
            ))
        }
        "count-tokens" => {
            if let Some(Err(message)) = state
                .service_model
                .as_ref()
                .map(|m| m.validate("CountTokens", &json_body))
            {
                return Ok(validation(&message, &request_id));
            }
            let conversation = match (
                json_body.pointer("/input/invokeModel/body"),
                json_body.pointer("/input/converse"),
            ) {
                (Some(Value::String(encoded)), _) if family == Family::Anthropic => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .ok();
                    let Some(invoke_body) =
                        decoded.and_then(|d| serde_json::from_slice::<Value>(&d).ok())
                    else {
                        return Ok(validation(
                            "input.invokeModel.body must be base64 of a JSON InvokeModel body.",
                            &request_id,
                        ));
                    };
                    anthropic::read_conversation(&invoke_body)
                }
                (_, Some(converse_input)) => converse::read_conversation(converse_input),
                _ => {
                    return Ok(validation(
                        "input must hold invokeModel or converse.",
                        &request_id,
                    ))
                }
            };
            match conversation {
                Ok(conversation) => {
                    let body =
                        json!({ "inputTokens": conversation.input_words.max(1) }).to_string();
                    Ok(full(StatusCode::OK, "application/json", body, &request_id))
                }
                Err(message) => Ok(validation(&message, &request_id)),
            }
        }
        _ => Ok(bedrock_error(
            404,
            "UnknownOperationException",
            "Unknown operation.",
            &request_id,
        )),
    }
}

/// Pod Identity agent, STS and IMDS share the emulator's port; Bedrock paths start with /model/.
fn credential_endpoint(
    state: &State,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<identity::Reply> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if method == "GET" && path == "/v1/credentials" {
        return Some(state.identity.pod_identity(header("authorization")));
    }
    if method == "POST"
        && path == "/"
        && header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return Some(state.identity.sts(&String::from_utf8_lossy(body)));
    }
    if path.starts_with("/latest/") {
        return Some(state.identity.imds(
            method,
            path,
            header("x-aws-ec2-metadata-token-ttl-seconds"),
            header("x-aws-ec2-metadata-token"),
        ));
    }
    None
}

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

#[tokio::main]
async fn main() {
    let listen = flag("--listen")
        .or_else(|| std::env::var("EMULATOR_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:4566".into());
    let token_file = flag("--token-file").map(std::path::PathBuf::from);
    let service_model = match flag("--service-model")
        .map(|path| service_model::ServiceModel::load(std::path::Path::new(&path)))
    {
        None => None,
        Some(Ok(model)) => Some(model),
        Some(Err(error)) => {
            eprintln!("bedrock emulator: --service-model: {error}");
            std::process::exit(2);
        }
    };
    // botocore keeps each service's model in data/<service>/<version>/: the Agent Runtime's newest.
    let agent_service_model = flag("--service-model").and_then(|path| {
        let data = std::path::Path::new(&path).parent()?.parent()?.parent()?;
        let mut versions: Vec<_> = std::fs::read_dir(data.join("bedrock-agent-runtime"))
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        versions.sort();
        let file_name = std::path::Path::new(&path).file_name()?.to_owned();
        let model = service_model::ServiceModel::load(&versions.last()?.join(file_name));
        match model {
            Ok(model) => Some(model),
            Err(error) => {
                eprintln!("bedrock emulator: the Agent Runtime's service model: {error}");
                None
            }
        }
    });
    let lifetime = flag("--credential-lifetime-secs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let state = Arc::new(State {
        credentials: vec![auth::Credential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }],
        skip_sigv4: std::env::args().any(|a| a == "--skip-sigv4"),
        identity: identity::IdentityService::new(token_file, Duration::from_secs(lifetime)),
        request_counter: AtomicU64::new(1),
        last_request: Mutex::new(Value::Null),
        prompt_cache: Mutex::new(HashSet::new()),
        region: flag("--region"),
        fault: Mutex::new(None),
        failed_calls: AtomicU64::new(0),
        accepted_calls: AtomicU64::new(0),
        received_calls: AtomicU64::new(0),
        unauthenticated_calls: AtomicU64::new(0),
        api_keys: Mutex::new(HashSet::from([DEMO_API_KEY.to_owned()])),
        service_model,
        agent_service_model,
    });
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("bedrock emulator: cannot listen on {listen}: {error}");
            std::process::exit(1);
        }
    };
    eprintln!("bedrock emulator: listening on http://{listen}");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => { eprintln!("bedrock emulator: accept failed: {error}"); continue; }
            },
            _ = tokio::signal::ctrl_c() => return,
        };
        // Stream frames go out as written, as Bedrock's do: without this, Nagle holds a small frame
        // until the previous one is acknowledged, and delayed ACKs turn that into 40 ms stalls.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move {
                    let Ok(response) = handle(state, request).await;
                    // A reset: the connection closes without an answer, as a failing load balancer's would.
                    if response.extensions().get::<ResetConnection>().is_some() {
                        return Err(std::io::Error::other(
                            "connection reset by the emulator's fault",
                        ));
                    }
                    Ok::<_, std::io::Error>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

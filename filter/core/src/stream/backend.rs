//! The upstream stage, on each Bedrock cluster: knows its cluster, so it applies that backend's
//! settings (translation, model override, host, SigV4) and translates the response back.

use super::batch::{EmbeddingsBatch, PartAnswer, Progress};
use super::hand_over::CallerRequest;
use super::{
    log_response_edit, reply_with_error, request_not_rewritten, send_json, trailers_refused, Flow,
    Host, HostCallFailed, Recorder, Side, STREAM_KEY_HEADER,
};
use crate::api::embeddings::InputBatch;
use crate::api::responses::DROPPED_TOOLS_HEADER;
use crate::aws::broker::{self, Broker, ParkedRequest, SharedStore, Verdict};
use crate::aws::credentials::HttpCall;
use crate::aws::sigv4::{Credentials, Signer};
use crate::bedrock::eventstream::DEFAULT_MAX_FRAME_LEN;
use crate::config::{ApiKey, Backend, BackendCredentials, Config};
use crate::errors::{ApiFormat, ErrorKind, GatewayError};
use crate::gateway::{
    self, CallerHeaders, Endpoint, ResponsePlan, ResponseTranslation, Signature, UpstreamHead,
    MODEL_HEADER,
};
use crate::headers::HeaderSnapshot;
use crate::report;
use crate::translated::TokenUsage;
use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

/// Each `llmRequestCosts` entry's value for one request; an entry that cannot be evaluated (an
/// overflow, a negative result) is logged and left out, never published as a wrong number.
fn request_costs(
    config: &Config,
    model: &str,
    backend: &str,
    usage: &TokenUsage,
) -> Vec<(&'static str, u64)> {
    let inputs = crate::config::costs::CostInputs {
        model,
        backend,
        usage,
    };
    config
        .request_costs
        .iter()
        .filter_map(|cost| match cost.evaluate(&inputs) {
            Ok(value) => Some((cost.metadata_key, value)),
            Err(error) => {
                log::error!(
                    "ai gateway: the cost {} of a request for {model} cannot be computed: {error}",
                    cost.metadata_key
                );
                None
            }
        })
        .collect()
}

/// The usage summary of a request (the access log's, the budgets', the span's attributes).
fn summarize(
    config: &Config,
    backend: &str,
    measurement: &Measurement,
    status: u16,
    usage: TokenUsage,
    costs: Vec<(&'static str, u64)>,
) -> report::UsageSummary {
    let summary = report::usage_summary(
        &measurement.model,
        backend,
        measurement.caller.as_deref(),
        status,
        &usage,
        &config.cost,
        costs,
    );
    report::UsageSummary {
        span: config.trace_attributes.then(|| report::SpanAttributes {
            operation: measurement.operation,
            request_model: measurement.model.clone(),
            response_model: measurement.response_model.clone(),
            response_id: measurement.response_id.clone(),
            status,
            usage,
        }),
        ..summary
    }
}

/// `gen_ai.operation.name` of the requests of `endpoint`.
fn operation_of(endpoint: Endpoint) -> report::Operation {
    match endpoint {
        Endpoint::Embeddings => report::Operation::Embeddings,
        Endpoint::Rerank(_) => report::Operation::Rerank,
        // Image generation has no operation name of its own in the GenAI conventions.
        Endpoint::Images => report::Operation::GenerateContent,
        Endpoint::Bedrock(
            crate::bedrock::Operation::Invoke | crate::bedrock::Operation::InvokeWithResponseStream,
        ) => report::Operation::GenerateContent,
        _ => report::Operation::Chat,
    }
}

/// Envoy's count of the tries of a request, on each try (`include_attempt_count_in_request`).
const ATTEMPT_HEADER: &str = "x-envoy-attempt-count";

/// What one worker keeps across its requests: the signer's cached keys, the broker's waiting
/// requests and fetches in flight, and the metric label sets built so far. The host owns it and
/// lends it to the hooks that need it.
#[derive(Default)]
pub struct Worker {
    pub signer: Signer,
    pub broker: Broker<gateway::UpstreamRequest>,
    pub labels: report::LabelCache,
}

/// What one request measured, reported when its response ends.
struct Measurement {
    /// Who called, as Envoy's authentication named them (`caller_header`).
    caller: Option<String>,
    /// Envoy's `x-request-id`, read with the request (an upstream filter cannot read request
    /// headers while the response flows): the id of answers Bedrock gave none.
    request_id: Option<String>,
    /// The routing stage's key for this request, under which the usage summary is left.
    stream_key: Option<String>,
    model: String,
    /// The Bedrock model that answers (the backend's `model_name_override`, or `model`).
    response_model: String,
    operation: report::Operation,
    labels: Rc<report::MetricLabels>,
    /// The caller's series, where the configuration counts callers (`caller_metrics`).
    caller_labels: Option<Rc<report::MetricLabels>>,
    started_ms: u64,
    first_content_ms: Option<u64>,
    /// Bedrock's id for the answer, kept for the span when requests are traced.
    response_id: Option<String>,
}

pub struct BackendStream {
    /// The host's id for this stream, under which the broker parks it.
    id: u64,
    config: Option<Arc<Config>>,
    measurement: Option<Measurement>,
    endpoint: Option<Endpoint>,
    backend: Option<Arc<Backend>>,
    anthropic_beta: Option<String>,
    /// The request headers as they arrived, until the body phase has rewritten them.
    request_headers: HeaderSnapshot,
    plan: Option<ResponsePlan>,
    /// Bedrock's status, which the translated response keeps unless the translation fails.
    upstream_status: Option<u16>,
    translation: Option<ResponseTranslation>,
    /// A running stream's usage as last left for the routing stage (see `leave_usage_so_far`).
    usage_left: Option<TokenUsage>,
    answered_locally: bool,
    /// Through a failover cluster: the caller's request as its first try saw it (on a retry), or,
    /// on the first try, that request and its id, kept for the retries once the body is in.
    first_try: Option<Rc<CallerRequest>>,
    first_try_to_keep: Option<(String, CallerRequest)>,
    /// The model a caller of Bedrock's own API named in the path.
    bedrock_model: Option<String>,
    /// The caller's beta flags the translation left out, named in the response.
    dropped_betas: Option<String>,
    /// The hosted tools the translation left out, named in the response.
    dropped_tools: Option<String>,
    /// An embeddings list for a model that embeds one input per call (Titan, Nova), answered from
    /// one call per input instead of this request.
    batch: Option<EmbeddingsBatch>,
}

impl BackendStream {
    pub fn new(id: u64, config: Option<Arc<Config>>) -> Self {
        Self {
            id,
            config,
            measurement: None,
            endpoint: None,
            backend: None,
            anthropic_beta: None,
            request_headers: HeaderSnapshot::default(),
            plan: None,
            upstream_status: None,
            translation: None,
            usage_left: None,
            answered_locally: false,
            first_try: None,
            first_try_to_keep: None,
            bedrock_model: None,
            dropped_betas: None,
            dropped_tools: None,
            batch: None,
        }
    }

    pub fn on_request_headers(
        &mut self,
        host: &mut impl Host,
        worker: &mut Worker,
        store: &dyn SharedStore,
        end_of_stream: bool,
    ) -> Flow {
        let headers = host.headers(Side::Request);
        // Which try this is, when the route fails over through a composite cluster (Envoy's
        // router adds the header to each try); it is Envoy's business, not Bedrock's.
        let attempt: usize = headers
            .get(ATTEMPT_HEADER)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1);
        if headers.contains(ATTEMPT_HEADER) {
            if let Err(failed) = host.set_header(Side::Request, ATTEMPT_HEADER, None) {
                return self.refuse_unrewritten(host, &failed);
            }
        }
        let request_id = headers.get("x-request-id").map(Cow::into_owned);
        // Written by the routing stage, whatever the caller sent.
        let stream_key = headers.get(STREAM_KEY_HEADER).map(Cow::into_owned);
        if attempt > 1 {
            // A retry arrives as the previous try left it: start again from what the caller sent.
            self.first_try = stream_key
                .as_deref()
                .and_then(|key| host.hand_over().first_try(key));
            if self.first_try.is_none() {
                self.answered_locally = true;
                let error = GatewayError::upstream(
                    "Bedrock failed, and the gateway kept nothing to try another backend with.",
                );
                return reply_with_error(host, &error, ApiFormat::OpenAi);
            }
        }
        let first_try = self.first_try.clone();
        let method = first_try.as_ref().map_or_else(
            || headers.get(":method").unwrap_or_default(),
            |r| Cow::Borrowed(r.method.as_str()),
        );
        let path = first_try.as_ref().map_or_else(
            || headers.get(":path").unwrap_or_default(),
            |r| Cow::Borrowed(r.path.as_str()),
        );
        let Some(Ok(endpoint)) = Endpoint::classify(&method, &path) else {
            // The routing stage only sends its endpoints here; anything else is refused, never proxied unsigned.
            self.answered_locally = true;
            let error = GatewayError::new(
                404,
                ErrorKind::NotFound,
                format!("{path} is not served by this gateway."),
            );
            return reply_with_error(host, &error, super::format_for_path(&path));
        };
        self.endpoint = Some(endpoint);
        if let Endpoint::Bedrock(_) = endpoint {
            match gateway::bedrock_path_model(&path) {
                Some(Ok(model)) => self.bedrock_model = Some(model),
                Some(Err(error)) => return self.reply_with_error(host, &error),
                None => return self.refuse_untranslated(host),
            }
        }
        let cluster = host.cluster_name().unwrap_or_default();
        let Some(backend) = self
            .config
            .as_ref()
            .and_then(|c| c.backend_for_attempt(&cluster, attempt))
        else {
            log::error!(
                "ai gateway: cluster {cluster:?} has no backend in the plugin configuration"
            );
            return self.reply_with_error(
                host,
                &GatewayError::new(
                    500,
                    ErrorKind::Upstream,
                    "The gateway has no backend configured for the route this model took.",
                ),
            );
        };
        let backend = Arc::clone(backend);
        if let Some(first_try) = &first_try {
            self.anthropic_beta.clone_from(&first_try.anthropic_beta);
        } else if endpoint.format() == ApiFormat::Anthropic {
            self.anthropic_beta = headers.get("anthropic-beta").map(Cow::into_owned);
            // Anthropic's own headers mean nothing to Bedrock: the beta flags travel in the body.
            for header in ["anthropic-beta", "anthropic-version"] {
                if headers.contains(header) {
                    if let Err(failed) = host.set_header(Side::Request, header, None) {
                        return self.refuse_unrewritten(host, &failed);
                    }
                }
            }
        }
        let model = match &first_try {
            Some(first_try) => first_try.model.clone(),
            None => headers
                .get(MODEL_HEADER)
                .map(Cow::into_owned)
                .unwrap_or_default(),
        };
        let failover_cluster = self
            .config
            .as_ref()
            .is_some_and(|c| c.is_failover(&cluster));
        let failover = attempt == 1 && failover_cluster;
        // Bedrock has no use for the key, but Envoy hands the next try of a failover route the
        // headers as this one leaves them, and the next try finds the first's request by it.
        if stream_key.is_some() && !failover_cluster {
            if let Err(failed) = host.set_header(Side::Request, STREAM_KEY_HEADER, None) {
                return self.refuse_unrewritten(host, &failed);
            }
        }
        if let Some(id) = stream_key.clone().filter(|_| failover) {
            let caller = CallerRequest {
                method: method.into_owned(),
                path: path.into_owned(),
                model: model.clone(),
                anthropic_beta: self.anthropic_beta.clone(),
                body: Vec::new(),
            };
            self.first_try_to_keep = Some((id, caller));
        }
        // With callers authenticated by Envoy, the routing stage left their credentials for those
        // filters: whatever got this far never reaches AWS. (Otherwise the routing stage removed
        // them.) The header naming the caller stays: the first try's headers are the downstream
        // request's own, which the access log reads.
        let caller_header = self
            .config
            .as_ref()
            .and_then(|c| c.caller_header.as_deref());
        if let Some(config) = self.config.as_deref().filter(|_| caller_header.is_some()) {
            if let Err(failed) =
                super::strip_caller_credentials(host, &headers, &config.key_headers)
            {
                return self.refuse_unrewritten(host, &failed);
            }
        }
        let caller = caller_header
            .and_then(|name| headers.get(name))
            .map(Cow::into_owned);
        let caller_labels = caller
            .as_deref()
            .filter(|_| self.config.as_ref().is_some_and(|c| c.caller_metrics))
            .map(|caller| worker.labels.caller(caller));
        let response_model = backend
            .model_name_override
            .clone()
            .unwrap_or_else(|| model.clone());
        let operation = operation_of(endpoint);
        self.measurement = Some(Measurement {
            caller,
            caller_labels,
            labels: worker
                .labels
                .get(operation, &model, &response_model, &backend.name),
            response_model,
            operation,
            request_id,
            stream_key,
            model,
            started_ms: host.now_ms(),
            first_content_ms: None,
            response_id: None,
        });
        self.backend = Some(backend);
        // The internal routing header never reaches AWS (the routing stage removed callers' credentials).
        if let Err(failed) = host.set_header(Side::Request, MODEL_HEADER, None) {
            return self.refuse_unrewritten(host, &failed);
        }
        self.request_headers = headers;
        if end_of_stream {
            return self.handle_whole_body(host, worker, store, Vec::new());
        }
        Flow::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &mut impl Host,
        worker: &mut Worker,
        store: &dyn SharedStore,
        end_of_stream: bool,
    ) -> Flow {
        if self.answered_locally {
            return Flow::Continue;
        }
        if self.endpoint.is_none() {
            return self.refuse_untranslated(host);
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = if self.first_try.is_some() {
            Vec::new()
        } else {
            host.body(Side::Request)
        };
        self.handle_whole_body(host, worker, store, body)
    }

    /// Trailers follow a body this stage has not seen end: the request is refused, never sent on
    /// as it stands (untranslated, unsigned).
    pub fn on_request_trailers(&mut self, host: &mut impl Host) -> Flow {
        if self.answered_locally {
            return Flow::Pause;
        }
        self.reply_with_error(host, &trailers_refused())
    }

    /// Nothing reaches Bedrock that this stage did not translate and sign.
    fn refuse_untranslated(&mut self, host: &mut impl Host) -> Flow {
        log::error!(
            "ai gateway: a request reached the backend stage in a state it cannot handle; refused"
        );
        self.reply_with_error(
            host,
            &GatewayError::new(
                500,
                ErrorKind::Upstream,
                "The gateway could not handle this request.",
            ),
        )
    }

    /// The request's body is all in: a retry starts again from the first try's, a first try
    /// through a failover cluster keeps its own for the retries, then it is translated and signed.
    fn handle_whole_body(
        &mut self,
        host: &mut impl Host,
        worker: &mut Worker,
        store: &dyn SharedStore,
        body: Vec<u8>,
    ) -> Flow {
        if let Some(first_try) = self.first_try.clone() {
            return self.handle_request_body(host, worker, store, &first_try.body);
        }
        if let Some((id, mut caller)) = self.first_try_to_keep.take() {
            caller.body = body;
            let kept = host.hand_over().keep_first_try(&id, caller);
            return self.handle_request_body(host, worker, store, &kept.body);
        }
        self.handle_request_body(host, worker, store, &body)
    }

    pub fn on_response_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        let Some(plan) = self.plan.as_ref().filter(|_| !self.answered_locally) else {
            return Flow::Continue;
        };
        let headers = host.headers(Side::Response);
        self.upstream_status = headers.get(":status").and_then(|s| s.parse().ok());
        let status = self.upstream_status.unwrap_or(502);
        let error_type = headers.get("x-amzn-errortype");
        let request_id = headers
            .get("x-amzn-requestid")
            .or_else(|| {
                self.measurement
                    .as_ref()
                    .and_then(|m| m.request_id.as_deref())
                    .map(Cow::Borrowed)
            })
            .unwrap_or(Cow::Borrowed("gateway"));
        let traced_id = self
            .config
            .as_ref()
            .filter(|c| c.trace_attributes)
            .map(|_| request_id.clone().into_owned());
        let max_frame = self
            .config
            .as_ref()
            .map_or(DEFAULT_MAX_FRAME_LEN, |c| c.max_stream_frame_bytes);
        let input_tokens = headers
            .get("x-amzn-bedrock-input-token-count")
            .and_then(|t| t.parse().ok());
        let output_tokens = headers
            .get("x-amzn-bedrock-output-token-count")
            .and_then(|t| t.parse().ok());
        let head = UpstreamHead {
            status,
            error_type: error_type.as_deref(),
            request_id: &request_id,
            input_tokens,
            output_tokens,
        };
        let translation = ResponseTranslation::for_response(plan, head, max_frame);
        if let (Some(id), Some(measurement)) = (traced_id, self.measurement.as_mut()) {
            measurement.response_id = Some(id);
        }
        if let Some(dropped) = self.dropped_betas.as_deref() {
            log_response_edit(host.set_header(
                Side::Response,
                gateway::DROPPED_BETAS_HEADER,
                Some(dropped),
            ));
        }
        if let Some(dropped) = self.dropped_tools.as_deref() {
            log_response_edit(host.set_header(Side::Response, DROPPED_TOOLS_HEADER, Some(dropped)));
        }
        if end_of_stream {
            // No body follows, so no body hook would translate it: answer from here.
            let (status, translated) = translation.translate_bodiless();
            self.report(host, status, translated.usage);
            self.answered_locally = true;
            return send_json(host, status, &translated.body);
        }
        if let Some(content_type) = translation
            .content_type()
            .filter(|c| headers.get("content-type").as_deref() != Some(*c))
        {
            log_response_edit(host.set_header(Side::Response, "content-type", Some(content_type)));
        }
        let streaming = translation.is_streaming();
        self.translation = Some(translation);
        if streaming {
            log_response_edit(
                host.set_header(Side::Response, "content-length", None)
                    .and_then(|()| {
                        host.set_header(Side::Response, "cache-control", Some("no-cache"))
                    }),
            );
            Flow::Continue
        } else {
            // Hold the headers: the status and the length change once the whole body is translated.
            Flow::Pause
        }
    }

    pub fn on_response_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        let Some(translation) = self.translation.as_mut() else {
            return Flow::Continue;
        };
        if translation.is_streaming() {
            let chunk = host.body(Side::Response);
            let sse = translation.push_stream_chunk(&chunk, end_of_stream);
            log_response_edit(host.replace_body(Side::Response, &sse));
            if let Some(measurement) = self
                .measurement
                .as_mut()
                .filter(|m| m.first_content_ms.is_none())
            {
                if translation.first_content_emitted() {
                    measurement.first_content_ms = Some(host.now_ms());
                }
            }
            let usage = translation.stream_usage();
            if end_of_stream || translation.stream_finished() {
                let status = translation.stream_failure().unwrap_or(200);
                self.report(host, status, usage);
            } else if let Some(so_far) = usage.filter(|u| Some(*u) != self.usage_left) {
                self.usage_left = Some(so_far);
                self.leave_usage_so_far(host, so_far);
            }
            return Flow::Continue;
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = host.body(Side::Response);
        let (status, translated) = translation.translate_body(&body);
        if Some(status) != self.upstream_status {
            log_response_edit(host.set_header(
                Side::Response,
                ":status",
                Some(&status.to_string()),
            ));
        }
        // The headers were held for this: the caller gets a length rather than a chunked body.
        let length = translated.body.len().to_string();
        log_response_edit(
            host.set_header(Side::Response, "content-length", Some(&length))
                .and_then(|()| host.replace_body(Side::Response, &translated.body)),
        );
        self.report(host, status, translated.usage);
        Flow::Continue
    }

    /// One call of this stream's embeddings batch came back: the next goes out, or the caller is
    /// answered with the whole list or the first failure.
    pub fn on_call_answer(
        &mut self,
        host: &mut impl Host,
        token: u64,
        answer: &PartAnswer<'_>,
    ) -> Flow {
        let Some(batch) = self.batch.as_mut() else {
            return Flow::Continue;
        };
        let outcome = match batch.on_answer(host, token, answer) {
            Progress::Waiting => return Flow::Pause,
            Progress::Done(outcome) => outcome,
        };
        self.batch = None;
        self.answered_locally = true;
        match outcome {
            Ok(translated) => {
                self.report(host, 200, translated.usage);
                send_json(host, 200, &translated.body)
            }
            Err(error) => {
                self.report(host, error.status, None);
                reply_with_error(host, &error, ApiFormat::OpenAi)
            }
        }
    }

    /// Envoy is done with the stream. An answer that began but never reached its end was cut (the
    /// caller hung up, or the connection to Bedrock broke; Envoy's response flags say which): it
    /// is still counted, failed with [`report::CUT_STATUS`], with the tokens its events reported
    /// before the cut, and that usage is left for the routing stage to publish and charge.
    pub fn on_stream_complete(&mut self, recorder: &mut impl Recorder) {
        let Some(translation) = self.translation.as_ref() else {
            return;
        };
        if let Some(measurement) = self.measurement.as_mut() {
            // The routing stage is done before this stage hears of the cut: no summary for it.
            measurement.stream_key = None;
            let usage = translation.stream_usage();
            self.report(recorder, report::CUT_STATUS, usage);
        }
    }

    /// The stream ended: if it was waiting for credentials, it must never be resumed.
    pub fn on_destroy(&mut self, worker: &mut Worker) {
        worker.broker.forget(self.id);
    }

    /// Counts the request's tokens, status and timings, and leaves its usage summary for the
    /// routing stage, which puts it where access logs read it.
    fn report(&mut self, host: &mut impl Recorder, status: u16, usage: Option<TokenUsage>) {
        let Some(mut measurement) = self.measurement.take() else {
            return;
        };
        let usage = usage.unwrap_or_default();
        let timings = report::Timings {
            started_ms: measurement.started_ms,
            first_content_ms: measurement.first_content_ms,
            ended_ms: host.now_ms(),
        };
        report::samples(status, &usage, &timings, |sample| {
            host.record_metric(&measurement.labels, sample)
        });
        if let Some(labels) = &measurement.caller_labels {
            report::caller_samples(status, &usage, |sample| host.record_metric(labels, sample));
        }
        let Some(config) = self.config.as_ref() else {
            return;
        };
        let backend = self.backend.as_ref().map_or("", |b| b.name.as_str());
        let costs = request_costs(config, &measurement.response_model, backend, &usage);
        report::cost_samples(costs.iter().copied(), |sample| {
            host.record_metric(&measurement.labels, sample);
            if let Some(labels) = &measurement.caller_labels {
                host.record_metric(labels, sample);
            }
        });
        if let Some(key) = measurement.stream_key.take() {
            let summary = summarize(config, backend, &measurement, status, usage, costs);
            host.hand_over().leave_summary(key, summary);
        }
    }

    /// Leaves a running stream's usage so far as its summary, which the routing stage publishes
    /// for access logs and the budgets' charge, in case the answer is cut before its end: the
    /// routing stage is done before this stage hears of a cut, and a caller interrupting an answer
    /// (Claude Code's Esc) must still be charged the input Bedrock charges. It reads as cut (499);
    /// the summary of the stream's end replaces it.
    fn leave_usage_so_far(&mut self, host: &mut impl Host, usage: TokenUsage) {
        let (Some(measurement), Some(config)) = (self.measurement.as_ref(), self.config.as_ref())
        else {
            return;
        };
        let Some(key) = measurement.stream_key.clone() else {
            return;
        };
        let backend = self.backend.as_ref().map_or("", |b| b.name.as_str());
        let costs = request_costs(config, &measurement.response_model, backend, &usage);
        let summary = report::UsageSummary {
            // The span's attributes are written once, at the end: an error type written here
            // would stay on the span of a stream that then succeeds (a success writes none).
            span: None,
            ..summarize(
                config,
                backend,
                measurement,
                report::CUT_STATUS,
                usage,
                costs,
            )
        };
        host.hand_over().leave_summary(key, summary);
    }

    fn handle_request_body(
        &mut self,
        host: &mut impl Host,
        worker: &mut Worker,
        store: &dyn SharedStore,
        body: &[u8],
    ) -> Flow {
        let (Some(backend), Some(endpoint)) = (self.backend.clone(), self.endpoint) else {
            return self.refuse_untranslated(host);
        };
        let now_ms = host.now_ms();
        // Only Bedrock's own API reads a caller's service tier from a header.
        let service_tier = matches!(endpoint, Endpoint::Bedrock(_))
            .then(|| {
                self.request_headers
                    .get(crate::bedrock::options::SERVICE_TIER_HEADER)
            })
            .flatten()
            .map(Cow::into_owned);
        let headers = CallerHeaders {
            anthropic_beta: self.anthropic_beta.as_deref(),
            bedrock_model: self.bedrock_model.as_deref(),
            bedrock_service_tier: service_tier.as_deref(),
        };
        let mut upstream = match gateway::prepare(endpoint, body, headers, &backend, now_ms / 1000)
        {
            Ok(upstream) => upstream,
            Err(error) => return self.reply_with_error(host, &error),
        };
        if let Some(batch) = upstream.batch.take() {
            return self.start_batch(host, worker, store, &backend, &upstream, batch, now_ms);
        }
        let caller = std::mem::take(&mut self.request_headers);
        if let Err(failed) = rewrite_for_bedrock(host, &caller, &upstream) {
            return self.refuse_unrewritten(host, &failed);
        }
        self.plan = Some(upstream.plan.clone());
        self.dropped_betas.clone_from(&upstream.dropped_betas);
        self.dropped_tools.clone_from(&upstream.dropped_tools);

        let credentials = match &backend.credentials {
            BackendCredentials::ApiKey(key) => {
                let retried = self.first_try.is_some();
                return match authorize_with_api_key(host, key.as_ref(), retried) {
                    Ok(()) => Flow::Continue,
                    Err(failed) => self.refuse_unrewritten(host, &failed),
                };
            }
            signing => signing_credentials(signing, store, now_ms),
        };
        if let Some(credentials) = credentials {
            let signature = upstream.sign(
                &credentials,
                &backend.region,
                &mut worker.signer,
                now_ms / 1000,
            );
            let signed = apply_signature(host, &signature).and_then(|()| {
                if self.first_try.is_some() && signature.security_token.is_none() {
                    // An earlier try's backend may have sent one.
                    host.set_header(Side::Request, "x-amz-security-token", None)?;
                }
                Ok(())
            });
            return match signed {
                Ok(()) => Flow::Continue,
                Err(failed) => self.refuse_unrewritten(host, &failed),
            };
        }
        // No usable credentials yet: the host signs and resumes the request when they arrive (`settle`).
        if let BackendCredentials::Fetched(provider) = &backend.credentials {
            let parked = ParkedRequest {
                key: BackendCredentials::cache_key(provider),
                region: backend.region.clone(),
                format: upstream.plan.format,
                upstream,
                since_ms: now_ms,
            };
            worker.broker.park(self.id, parked);
            return Flow::Pause;
        }
        self.reply_with_error(
            host,
            &GatewayError::new(
                503,
                ErrorKind::Unavailable,
                "AWS credentials are not available.",
            ),
        )
    }

    /// A list for a one-input model: this request is never sent. One call per input goes out instead, signed
    /// now for the backend, and the caller is answered when the last one is back.
    #[allow(clippy::too_many_arguments)]
    fn start_batch(
        &mut self,
        host: &mut impl Host,
        worker: &mut Worker,
        store: &dyn SharedStore,
        backend: &Backend,
        upstream: &gateway::UpstreamRequest,
        batch: InputBatch,
        now_ms: u64,
    ) -> Flow {
        let Some(calls_cluster) = backend.calls_cluster.as_deref() else {
            let error = GatewayError::invalid_request(
                "This embedding model embeds one input per request, and this backend has no calls_cluster through which the gateway could split a list; send the inputs one by one.",
            );
            return self.reply_with_error(host, &error);
        };
        let credentials = signing_credentials(&backend.credentials, store, now_ms);
        if credentials.is_none() && matches!(backend.credentials, BackendCredentials::Fetched(_)) {
            // A list cannot wait for them as one request does: it would have to be resumed as calls.
            let error = GatewayError::new(
                503,
                ErrorKind::Unavailable,
                "AWS credentials are not available yet; retry the request.",
            );
            return self.reply_with_error(host, &error);
        }
        let calls = batch
            .bodies
            .into_iter()
            .map(|body| {
                let mut headers = vec![
                    (":method".to_owned(), "POST".to_owned()),
                    (":path".to_owned(), upstream.path.clone()),
                    (":authority".to_owned(), upstream.host.clone()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                    ("accept".to_owned(), "application/json".to_owned()),
                ];
                match (&credentials, &backend.credentials) {
                    (Some(credentials), _) => {
                        let signature = gateway::sign_invoke(
                            &upstream.path,
                            &upstream.host,
                            &body,
                            credentials,
                            &backend.region,
                            &mut worker.signer,
                            now_ms / 1000,
                        );
                        headers.push(("authorization".to_owned(), signature.authorization));
                        headers.push(("x-amz-date".to_owned(), signature.amz_date));
                        if let Some(token) = signature.security_token {
                            headers.push(("x-amz-security-token".to_owned(), token));
                        }
                    }
                    // Without a key here, the calls cluster's credential_injector adds it.
                    (None, BackendCredentials::ApiKey(Some(key))) => {
                        headers.push(("authorization".to_owned(), key.authorization().to_owned()))
                    }
                    (None, _) => {}
                }
                HttpCall {
                    cluster: calls_cluster.to_owned(),
                    headers,
                    body: Some(body),
                }
            })
            .collect();
        let mut batch = EmbeddingsBatch::new(calls, batch.family, batch.model, batch.base64);
        if let Err(error) = batch.dispatch(host) {
            return self.reply_with_error(host, &error);
        }
        self.batch = Some(batch);
        Flow::Pause
    }

    /// The request could not be rewritten for Bedrock: refused, never sent as it stands.
    fn refuse_unrewritten(&mut self, host: &mut impl Host, failed: &HostCallFailed) -> Flow {
        self.reply_with_error(host, &request_not_rewritten(failed))
    }

    fn reply_with_error(&mut self, host: &mut impl Host, error: &GatewayError) -> Flow {
        self.answered_locally = true;
        reply_with_error(
            host,
            error,
            self.endpoint.map_or(ApiFormat::OpenAi, Endpoint::format),
        )
    }
}

/// Whether a parked request goes on once the broker decided about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Signed: the host resumes the request.
    Resume,
    /// Answered with an error: nothing to resume.
    Answered,
}

/// Signs a parked request whose credentials arrived, or answers it with the reason they cannot
/// come; `host` must act on the parked request's stream.
pub fn settle(
    host: &mut impl Host,
    parked: &ParkedRequest<gateway::UpstreamRequest>,
    verdict: &Verdict,
    signer: &mut Signer,
) -> Settled {
    match verdict {
        Verdict::Sign(credentials) => {
            let signature = parked.upstream.sign(
                &credentials.credentials(),
                &parked.region,
                signer,
                host.now_ms() / 1000,
            );
            match apply_signature(host, &signature) {
                Ok(()) => Settled::Resume,
                Err(failed) => {
                    reply_with_error(host, &request_not_rewritten(&failed), parked.format);
                    Settled::Answered
                }
            }
        }
        Verdict::Fail(reason) => {
            let error = GatewayError::new(
                503,
                ErrorKind::Unavailable,
                format!("AWS credentials are not available: {reason}"),
            );
            reply_with_error(host, &error, parked.format);
            Settled::Answered
        }
    }
}

/// The keys to sign with now: static ones, or fetched ones still usable; none for an API key.
fn signing_credentials<'a>(
    credentials: &'a BackendCredentials,
    store: &dyn SharedStore,
    now_ms: u64,
) -> Option<Cow<'a, Credentials>> {
    match credentials {
        BackendCredentials::Static(keys) => Some(Cow::Borrowed(keys)),
        BackendCredentials::Fetched(provider) => {
            broker::usable_credentials(store, &BackendCredentials::cache_key(provider), now_ms)
                .map(|c| Cow::Owned(c.credentials()))
        }
        BackendCredentials::ApiKey(_) => None,
    }
}

fn apply_signature(host: &mut impl Host, signature: &Signature) -> Result<(), HostCallFailed> {
    host.set_header(
        Side::Request,
        "authorization",
        Some(&signature.authorization),
    )?;
    host.set_header(Side::Request, "x-amz-date", Some(&signature.amz_date))?;
    // Callers' x-amz-* headers were removed by the routing stage: only a token needs writing.
    if let Some(token) = signature.security_token.as_deref() {
        host.set_header(Side::Request, "x-amz-security-token", Some(token))?;
    }
    Ok(())
}

/// Writes what Bedrock is sent: path, host, body and their headers. Each header write is a host
/// call, so the ones that would change nothing are skipped.
fn rewrite_for_bedrock(
    host: &mut impl Host,
    caller: &HeaderSnapshot,
    upstream: &gateway::UpstreamRequest,
) -> Result<(), HostCallFailed> {
    host.set_header(Side::Request, ":path", Some(&upstream.path))?;
    host.set_header(Side::Request, ":authority", Some(&upstream.host))?;
    if caller.get("content-type").as_deref() != Some("application/json") {
        host.set_header(Side::Request, "content-type", Some("application/json"))?;
    }
    if caller.get("accept").as_deref() != Some(upstream.accept) {
        host.set_header(Side::Request, "accept", Some(upstream.accept))?;
    }
    // The response is translated, so it must come back uncompressed; the body written here
    // has no encoding either (the routing stage let only `identity` through).
    for header in ["accept-encoding", "content-encoding"] {
        if caller.contains(header) {
            host.set_header(Side::Request, header, None)?;
        }
    }
    let length = upstream.body.len().to_string();
    host.set_header(Side::Request, "content-length", Some(&length))?;
    host.replace_body(Side::Request, &upstream.body)?;
    for (name, value) in &upstream.headers {
        host.set_header(Side::Request, name, Some(value))?;
    }
    Ok(())
}

/// A Bedrock API key instead of SigV4: nothing to sign. Without a key here, Envoy's
/// credential_injector on this cluster adds it next.
fn authorize_with_api_key(
    host: &mut impl Host,
    key: Option<&ApiKey>,
    retried: bool,
) -> Result<(), HostCallFailed> {
    if let Some(key) = key {
        host.set_header(Side::Request, "authorization", Some(key.authorization()))?;
    }
    if retried {
        // An earlier try's backend may have signed with SigV4.
        for header in ["x-amz-date", "x-amz-security-token"] {
            host.set_header(Side::Request, header, None)?;
        }
    }
    Ok(())
}

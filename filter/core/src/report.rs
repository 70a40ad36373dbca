//! What a finished request reports: its metric samples (names, labels, values) and the usage
//! summary that access logs and rate limits read. Each host records them with its own calls.
//!
//! The metrics are OpenTelemetry's GenAI ones (`gen_ai.client.token.usage`,
//! `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
//! `gen_ai.server.time_per_output_token`), the same on both hosts. Envoy's histograms hold
//! integers, so durations are in milliseconds and their names say so, as OpenTelemetry's
//! Prometheus mapping names a metric of unit `ms` (`..._milliseconds`).
//!
//! Labels live in the stat name (`gen_ai.client.token.usage;operation=chat;...`): model ids contain
//! dots, and a metric without labels is recorded by both hosts without Envoy looking a label set
//! up on each update. The `stats_tags` of every rendered configuration turn them back into labels
//! named as the conventions name the attributes (`gen_ai.request.model`, Prometheus
//! `gen_ai_request_model`).

use crate::config::CostWeights;
use crate::translated::TokenUsage;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

/// The metrics, as Envoy stat names (before their labels).
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const REQUEST_DURATION: &str = "gen_ai.server.request.duration_milliseconds";
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token_milliseconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token_milliseconds";
/// Tokens as exact counts: Envoy's histogram sums are approximations (its bins keep two
/// significant digits), so the token histogram's `_sum` is no ledger.
pub const TOKENS_TOTAL: &str = "ai_gateway.tokens_total";
/// Per caller (API-key clients only, whose number the configuration bounds).
pub const CALLER_REQUESTS: &str = "ai_gateway.caller_requests";
pub const CALLER_TOKENS: &str = "ai_gateway.caller_tokens";
/// A request's cost (`llmRequestCosts`), per model, and per caller where callers are counted.
pub const REQUEST_COST: &str = "ai_gateway.request_cost";

/// Every label a stat name can carry, with the tag (attribute) name the rendered `stats_tags`
/// give it: `(key in the stat name, tag name)`.
pub const LABELS: [(&str, &str); 10] = [
    ("operation", "gen_ai.operation.name"),
    ("provider", "gen_ai.provider.name"),
    ("request_model", "gen_ai.request.model"),
    ("response_model", "gen_ai.response.model"),
    ("backend", "backend"),
    ("token_type", "gen_ai.token.type"),
    ("error_type", "error.type"),
    ("caller", "caller"),
    ("status_class", "status_class"),
    ("cost", "cost"),
];

/// `gen_ai.operation.name` of a request, by the API it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
    Embeddings,
    /// InvokeModel on Bedrock's own API: the body is the model's own, whatever it does.
    GenerateContent,
    /// The Agent Runtime's Rerank (no GenAI convention names it; AI Gateway's peers say `rerank`).
    Rerank,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
            Operation::GenerateContent => "generate_content",
            Operation::Rerank => "rerank",
        }
    }
}

/// `gen_ai.token.type`: OpenTelemetry's `input` and `output`, and the kinds Envoy AI Gateway adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// All input tokens, cached ones included (as the conventions count them).
    Input,
    Output,
    CachedInput,
    CacheCreationInput,
}

impl TokenType {
    pub fn name(self) -> &'static str {
        match self {
            TokenType::Input => "input",
            TokenType::Output => "output",
            TokenType::CachedInput => "cached_input",
            TokenType::CacheCreationInput => "cache_creation_input",
        }
    }
}

/// The labels a sample adds to its series' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    TokenType(TokenType),
    /// `error.type` of a failed request: the status the caller got.
    Error(u16),
    /// A caller's requests by status class (`2xx`).
    StatusClass(u16),
    /// A cost's `metadataKey`, by its place in the configuration.
    Cost(&'static str),
}

impl fmt::Display for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extra::None => Ok(()),
            Extra::TokenType(kind) => write!(f, ";token_type={}", kind.name()),
            Extra::Error(status) => write!(f, ";error_type={status}"),
            Extra::StatusClass(status) => write!(f, ";status_class={}xx", status / 100),
            Extra::Cost(key) => write!(f, ";cost={key}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Counter,
    Histogram,
}

/// One value to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub kind: Kind,
    pub name: &'static str,
    pub extra: Extra,
    pub value: u64,
}

impl Sample {
    fn histogram(name: &'static str, extra: Extra, value: u64) -> Sample {
        Sample {
            kind: Kind::Histogram,
            name,
            extra,
            value,
        }
    }

    fn counter(name: &'static str, extra: Extra, value: u64) -> Sample {
        Sample {
            kind: Kind::Counter,
            name,
            extra,
            value,
        }
    }

    /// The full stat name of this sample in the series labelled `labels`.
    pub fn stat_name(&self, labels: &MetricLabels) -> String {
        format!("{}{}{}", self.name, labels.suffix, self.extra)
    }
}

/// A metric within a series: its name and the labels the sample adds.
type MetricKey = (&'static str, Extra);

/// One series' labels as a stat-name suffix, and the host's ids of the metrics recorded in it so
/// far (a host looks a metric up once per worker, not once per request).
#[derive(Debug)]
pub struct MetricLabels {
    pub suffix: String,
    /// The ids, with the generation of the host's metrics they belong to (the module's metrics
    /// are redefined when a new configuration replaces the old).
    ids: RefCell<(u64, Vec<(MetricKey, u64)>)>,
}

impl PartialEq for MetricLabels {
    fn eq(&self, other: &Self) -> bool {
        self.suffix == other.suffix
    }
}

impl MetricLabels {
    /// A model's series on one backend: `request_model` is what the caller asked for,
    /// `response_model` the Bedrock model that answered.
    pub fn new(
        operation: Operation,
        request_model: &str,
        response_model: &str,
        backend: &str,
    ) -> Self {
        Self::with_suffix(format!(
            ";operation={};provider=aws.bedrock;request_model={};response_model={};backend={}",
            operation.name(),
            label_value(request_model),
            label_value(response_model),
            label_value(backend)
        ))
    }

    /// The series of one caller (not per model: callers times models would be too many).
    pub fn for_caller(caller: &str) -> Self {
        Self::with_suffix(format!(";caller={}", label_value(caller)))
    }

    fn with_suffix(suffix: String) -> Self {
        MetricLabels {
            suffix,
            ids: RefCell::new((0, Vec::new())),
        }
    }

    /// The host's id of `sample`'s metric in this series, defined by `define` (given the full stat
    /// name) the first time, and kept while the host's metrics stay of `generation`. `None` when
    /// `define` has none (yet): nothing is kept then.
    pub fn id(
        &self,
        generation: u64,
        sample: &Sample,
        define: impl FnOnce(&str) -> Option<u64>,
    ) -> Option<u64> {
        let key = (sample.name, sample.extra);
        if let Ok(ids) = self.ids.try_borrow() {
            if ids.0 == generation {
                if let Some((_, id)) = ids.1.iter().find(|(k, _)| *k == key) {
                    return Some(*id);
                }
            }
        }
        let id = define(&sample.stat_name(self))?;
        if let Ok(mut ids) = self.ids.try_borrow_mut() {
            if ids.0 != generation {
                *ids = (generation, Vec::new());
            }
            // A series has a dozen metrics at most; the bound only guards against a bug.
            if ids.1.len() < 64 {
                ids.1.push((key, id));
            }
        }
        Some(id)
    }
}

/// The series one worker has built, which later requests of the same model on the same backend
/// reuse (with the metric ids the host found for them). Bounded: beyond [`LabelCache::MAX`] series,
/// new ones are built per request and not kept.
#[derive(Default)]
pub struct LabelCache {
    /// By a hash of the series' parts, so a lookup builds nothing.
    sets: HashMap<u64, Vec<(SeriesKey, Rc<MetricLabels>)>>,
    len: usize,
}

/// A series' parts: a model's (with its operation), or a caller's (`operation` `None`, the caller
/// in `response_model`'s place).
#[derive(PartialEq, Eq, Hash)]
struct SeriesKey {
    operation: Option<Operation>,
    request_model: String,
    response_model: String,
    backend: String,
}

impl LabelCache {
    pub const MAX: usize = 4096;

    pub fn get(
        &mut self,
        operation: Operation,
        request_model: &str,
        response_model: &str,
        backend: &str,
    ) -> Rc<MetricLabels> {
        self.find_or_build(Some(operation), request_model, response_model, backend)
    }

    /// The series of `caller`'s requests.
    pub fn caller(&mut self, caller: &str) -> Rc<MetricLabels> {
        self.find_or_build(None, "", caller, "")
    }

    fn find_or_build(
        &mut self,
        operation: Option<Operation>,
        request_model: &str,
        response_model: &str,
        backend: &str,
    ) -> Rc<MetricLabels> {
        let mut hasher = DefaultHasher::new();
        (operation, request_model, response_model, backend).hash(&mut hasher);
        let hash = hasher.finish();
        let matches = |key: &SeriesKey| {
            key.operation == operation
                && key.request_model == request_model
                && key.response_model == response_model
                && key.backend == backend
        };
        if let Some((_, labels)) = self
            .sets
            .get(&hash)
            .and_then(|sets| sets.iter().find(|(key, _)| matches(key)))
        {
            return Rc::clone(labels);
        }
        let labels = Rc::new(match operation {
            Some(operation) => MetricLabels::new(operation, request_model, response_model, backend),
            None => MetricLabels::for_caller(response_model),
        });
        if self.len < Self::MAX {
            self.len += 1;
            self.sets.entry(hash).or_default().push((
                SeriesKey {
                    operation,
                    request_model: request_model.to_owned(),
                    response_model: response_model.to_owned(),
                    backend: backend.to_owned(),
                },
                Rc::clone(&labels),
            ));
        }
        labels
    }
}

/// Keeps the characters a stat name and its tag regex can carry.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// When a request started, produced its first content (streams), and ended (Unix ms).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub started_ms: u64,
    pub first_content_ms: Option<u64>,
    pub ended_ms: u64,
}

/// The status a request is counted with when its answer was cut before its end: nginx's "client
/// closed request", the usual reading; the connection to Bedrock breaking ends it the same way.
pub const CUT_STATUS: u16 = 499;

/// Hands each sample of one request to `record`: its duration (with `error.type` when it
/// failed), its tokens by type (input and output whenever it succeeded, the others when there
/// were any), and for streams the time to the first token and per output token after it.
pub fn samples(status: u16, usage: &TokenUsage, timings: &Timings, mut record: impl FnMut(Sample)) {
    let failed = !(100..400).contains(&status);
    record(Sample::histogram(
        REQUEST_DURATION,
        if failed {
            Extra::Error(status)
        } else {
            Extra::None
        },
        timings.ended_ms.saturating_sub(timings.started_ms),
    ));
    let input = usage.input + usage.cache_read + usage.cache_write;
    for (kind, value, always) in [
        (TokenType::Input, input, !failed),
        (TokenType::Output, usage.output, !failed),
        (TokenType::CachedInput, usage.cache_read, false),
        (TokenType::CacheCreationInput, usage.cache_write, false),
    ] {
        if always || value > 0 {
            record(Sample::histogram(
                TOKEN_USAGE,
                Extra::TokenType(kind),
                value,
            ));
        }
        if value > 0 {
            record(Sample::counter(TOKENS_TOTAL, Extra::TokenType(kind), value));
        }
    }
    if let Some(first) = timings.first_content_ms {
        record(Sample::histogram(
            TIME_TO_FIRST_TOKEN,
            Extra::None,
            first.saturating_sub(timings.started_ms),
        ));
        if usage.output > 1 {
            let per_token = timings.ended_ms.saturating_sub(first) / (usage.output - 1);
            record(Sample::histogram(
                TIME_PER_OUTPUT_TOKEN,
                Extra::None,
                per_token,
            ));
        }
    }
}

/// A request counted for its caller: by status class, and its tokens by type. Only for callers
/// the configuration names (API-key clients), so the series stay few.
pub fn caller_samples(status: u16, usage: &TokenUsage, mut record: impl FnMut(Sample)) {
    record(Sample::counter(
        CALLER_REQUESTS,
        Extra::StatusClass(status.min(999)),
        1,
    ));
    for (kind, value) in [
        (
            TokenType::Input,
            usage.input + usage.cache_read + usage.cache_write,
        ),
        (TokenType::Output, usage.output),
    ] {
        if value > 0 {
            record(Sample::counter(
                CALLER_TOKENS,
                Extra::TokenType(kind),
                value,
            ));
        }
    }
}

/// A request's costs, each counted under its `metadataKey`.
pub fn cost_samples<'a>(
    costs: impl IntoIterator<Item = (&'static str, u64)> + 'a,
    mut record: impl FnMut(Sample),
) {
    for (key, value) in costs {
        if value > 0 {
            record(Sample::counter(REQUEST_COST, Extra::Cost(key), value));
        }
    }
}

/// The label keys of each labelled form of the metrics (kind, name, keys), for a host that
/// records the series it did not define up front through labelled metrics of the same names.
pub const MODEL_KEYS: [&str; 5] = [
    "operation",
    "provider",
    "request_model",
    "response_model",
    "backend",
];

/// The stat names a host that can define metrics only while it loads a configuration (the
/// dynamic module) defines up front: for each routed model on each backend its route can pick,
/// what its successful requests record; for each counted caller, its successful requests. The
/// rest (failures, and Bedrock's own API) is rarer, and left to labelled metrics.
pub fn expected_stat_names(config: &crate::config::Config) -> Vec<(Kind, String)> {
    let mut names = Vec::new();
    let mut push = |labels: &MetricLabels, sample: Sample| {
        names.push((sample.kind, sample.stat_name(labels)));
    };
    let cost = |key| Sample::counter(REQUEST_COST, Extra::Cost(key), 0);
    for (model, clusters) in &config.metric_series {
        for cluster in clusters {
            for attempt in 1..=config.attempts(cluster) {
                let Some(backend) = config.backend_for_attempt(cluster, attempt) else {
                    continue;
                };
                let response_model = backend.model_name_override.as_deref().unwrap_or(model);
                let operation = if crate::api::embeddings::Family::of(response_model).is_some() {
                    Operation::Embeddings
                } else if crate::api::rerank::is_rerank_model(response_model) {
                    Operation::Rerank
                } else if crate::api::images::ImageFamily::of(response_model).is_some() {
                    Operation::GenerateContent
                } else {
                    Operation::Chat
                };
                let labels = MetricLabels::new(operation, model, response_model, &backend.name);
                push(&labels, Sample::histogram(REQUEST_DURATION, Extra::None, 0));
                for kind in [
                    TokenType::Input,
                    TokenType::Output,
                    TokenType::CachedInput,
                    TokenType::CacheCreationInput,
                ] {
                    push(
                        &labels,
                        Sample::histogram(TOKEN_USAGE, Extra::TokenType(kind), 0),
                    );
                    push(
                        &labels,
                        Sample::counter(TOKENS_TOTAL, Extra::TokenType(kind), 0),
                    );
                }
                if operation == Operation::Chat {
                    push(
                        &labels,
                        Sample::histogram(TIME_TO_FIRST_TOKEN, Extra::None, 0),
                    );
                    push(
                        &labels,
                        Sample::histogram(TIME_PER_OUTPUT_TOKEN, Extra::None, 0),
                    );
                }
                for request_cost in &config.request_costs {
                    push(&labels, cost(request_cost.metadata_key));
                }
            }
        }
    }
    for caller in &config.metric_callers {
        let labels = MetricLabels::for_caller(caller);
        push(
            &labels,
            Sample::counter(CALLER_REQUESTS, Extra::StatusClass(200), 0),
        );
        for kind in [TokenType::Input, TokenType::Output] {
            push(
                &labels,
                Sample::counter(CALLER_TOKENS, Extra::TokenType(kind), 0),
            );
        }
        for request_cost in &config.request_costs {
            push(&labels, cost(request_cost.metadata_key));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// A metric as a labelled metric: its kind, name and label keys.
pub type LabelledForm = (Kind, &'static str, Vec<&'static str>);

/// The labelled forms of the metrics: every (kind, name, label keys) a sample can have.
pub fn labelled_forms() -> Vec<LabelledForm> {
    let model = |extra: Option<&'static str>| {
        let mut keys = MODEL_KEYS.to_vec();
        keys.extend(extra);
        keys
    };
    vec![
        (Kind::Histogram, REQUEST_DURATION, model(None)),
        (Kind::Histogram, REQUEST_DURATION, model(Some("error_type"))),
        (Kind::Histogram, TOKEN_USAGE, model(Some("token_type"))),
        (Kind::Counter, TOKENS_TOTAL, model(Some("token_type"))),
        (Kind::Histogram, TIME_TO_FIRST_TOKEN, model(None)),
        (Kind::Histogram, TIME_PER_OUTPUT_TOKEN, model(None)),
        (Kind::Counter, REQUEST_COST, model(Some("cost"))),
        (
            Kind::Counter,
            CALLER_REQUESTS,
            vec!["caller", "status_class"],
        ),
        (Kind::Counter, CALLER_TOKENS, vec!["caller", "token_type"]),
        (Kind::Counter, REQUEST_COST, vec!["caller", "cost"]),
    ]
}

/// A stat name split into its metric and its labels' keys and values.
pub fn split_stat_name(name: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = name.split(';');
    let metric = parts.next().unwrap_or_default();
    let labels = parts.filter_map(|part| part.split_once('=')).collect();
    (metric, labels)
}

/// The tag (attribute) name of a stat-name label key.
pub fn tag_name(key: &str) -> &str {
    LABELS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(key, |(_, tag)| tag)
}

/// A request's usage as access logs print it (`wasm.ai_gateway.usage`), with the figures rate
/// limits charge (`total_tokens`, `cost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummary {
    pub json: String,
    pub total_tokens: u64,
    pub cost: u64,
    /// Each `llmRequestCosts` entry's value, under its metadata key.
    pub costs: Vec<(&'static str, u64)>,
    /// Set when the configuration traces requests: what the span's GenAI attributes read.
    pub span: Option<SpanAttributes>,
}

/// The GenAI attributes of a request's span: the custom tags of the rendered tracing configuration
/// read them from where the host publishes them (`<key>` below, under `span.`, in the filter state
/// or dynamic metadata the usage summary goes to). `(attribute, key, an integer)`.
pub const SPAN_TAGS: [(&str, &str, bool); 9] = [
    ("gen_ai.operation.name", "span.operation", false),
    ("gen_ai.request.model", "span.request_model", false),
    ("gen_ai.response.model", "span.response_model", false),
    ("gen_ai.response.id", "span.response_id", false),
    ("gen_ai.usage.input_tokens", "span.input_tokens", true),
    ("gen_ai.usage.output_tokens", "span.output_tokens", true),
    (
        "gen_ai.usage.cache_read.input_tokens",
        "span.cache_read_input_tokens",
        true,
    ),
    (
        "gen_ai.usage.cache_creation.input_tokens",
        "span.cache_creation_input_tokens",
        true,
    ),
    ("error.type", "span.error_type", false),
];

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanValue {
    Text(String),
    Number(u64),
}

/// The values behind [`SPAN_TAGS`] for one request. Message content never goes into a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanAttributes {
    pub operation: Operation,
    pub request_model: String,
    pub response_model: String,
    /// Bedrock's id for the answer (`x-amzn-requestid`), the one the caller's response carries.
    pub response_id: Option<String>,
    pub status: u16,
    pub usage: TokenUsage,
}

impl SpanAttributes {
    /// `(key, value)` for each attribute the request has (`error.type` only when it failed).
    pub fn entries(&self) -> Vec<(&'static str, SpanValue)> {
        let usage = &self.usage;
        let input = usage.input + usage.cache_read + usage.cache_write;
        let mut entries = vec![
            (
                "span.operation",
                SpanValue::Text(self.operation.name().to_owned()),
            ),
            (
                "span.request_model",
                SpanValue::Text(self.request_model.clone()),
            ),
            (
                "span.response_model",
                SpanValue::Text(self.response_model.clone()),
            ),
            ("span.input_tokens", SpanValue::Number(input)),
            ("span.output_tokens", SpanValue::Number(usage.output)),
            (
                "span.cache_read_input_tokens",
                SpanValue::Number(usage.cache_read),
            ),
            (
                "span.cache_creation_input_tokens",
                SpanValue::Number(usage.cache_write),
            ),
        ];
        if let Some(id) = &self.response_id {
            entries.push(("span.response_id", SpanValue::Text(id.clone())));
        }
        if !(100..400).contains(&self.status) {
            entries.push(("span.error_type", SpanValue::Text(self.status.to_string())));
        }
        entries
    }
}

/// A struct rather than `json!`, which would build a map first.
#[derive(Serialize)]
struct UsageSummaryJson<'a> {
    model: &'a str,
    backend: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<&'a str>,
    status: u16,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    total_tokens: u64,
    cost: u64,
    #[serde(skip_serializing_if = "CostsJson::is_empty")]
    costs: CostsJson<'a>,
}

/// The costs as a JSON object, by metadata key.
struct CostsJson<'a>(&'a [(&'static str, u64)]);

impl CostsJson<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for CostsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (*key, *value)))
    }
}

pub fn usage_summary(
    model: &str,
    backend: &str,
    caller: Option<&str>,
    status: u16,
    usage: &TokenUsage,
    weights: &CostWeights,
    costs: Vec<(&'static str, u64)>,
) -> UsageSummary {
    let cost = weights.of(usage);
    let json = UsageSummaryJson {
        model,
        backend,
        caller,
        status,
        input_tokens: usage.input,
        output_tokens: usage.output,
        cache_read_tokens: usage.cache_read,
        cache_write_tokens: usage.cache_write,
        total_tokens: usage.total(),
        cost,
        costs: CostsJson(&costs),
    };
    UsageSummary {
        json: serde_json::to_string(&json).unwrap_or_default(),
        total_tokens: usage.total(),
        cost,
        costs,
        span: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> MetricLabels {
        MetricLabels::new(
            Operation::Chat,
            "us.meta.llama3-2-1b-instruct-v1:0",
            "us.meta.llama3-2-1b-instruct-v1:0",
            "bedrock@arn:aws:bedrock:x;y z",
        )
    }

    #[test]
    fn a_workers_series_are_built_once_each_and_bounded() {
        let mut cache = LabelCache::default();
        let first = cache.get(Operation::Chat, "m:0", "m:0", "b");
        assert!(
            Rc::ptr_eq(&first, &cache.get(Operation::Chat, "m:0", "m:0", "b")),
            "found, not built again"
        );
        assert!(!Rc::ptr_eq(
            &first,
            &cache.get(Operation::Embeddings, "m:0", "m:0", "b")
        ));
        assert!(!Rc::ptr_eq(&first, &cache.caller("m:0")));
        for i in 0..LabelCache::MAX {
            cache.get(Operation::Chat, &format!("model-{i}"), "x", "b");
        }
        assert_eq!(
            cache.len,
            LabelCache::MAX,
            "a caller cycling model names cannot grow it"
        );
        assert!(
            cache
                .get(Operation::Chat, "one-more", "x", "b")
                .suffix
                .contains(";request_model=one-more;"),
            "still labelled, just not kept"
        );
    }

    #[test]
    fn names_and_labels_keep_to_what_stats_can_carry() {
        let labels = labels();
        assert_eq!(
            labels.suffix,
            ";operation=chat;provider=aws.bedrock;request_model=us.meta.llama3-2-1b-instruct-v1:0;response_model=us.meta.llama3-2-1b-instruct-v1:0;backend=bedrock@arn:aws:bedrock:x_y_z"
        );
        let sample = Sample::histogram(TOKEN_USAGE, Extra::TokenType(TokenType::CachedInput), 1);
        assert_eq!(
            sample.stat_name(&labels),
            format!(
                "gen_ai.client.token.usage{};token_type=cached_input",
                labels.suffix
            )
        );
        assert_eq!(Extra::StatusClass(429).to_string(), ";status_class=4xx");
        assert_eq!(Extra::Error(503).to_string(), ";error_type=503");
        assert_eq!(MetricLabels::for_caller("team a").suffix, ";caller=team_a");
        let name = sample.stat_name(&labels);
        let (metric, labels) = split_stat_name(&name);
        assert_eq!(metric, TOKEN_USAGE);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        assert!(labelled_forms()
            .iter()
            .any(|(kind, name, form)| *kind == Kind::Histogram
                && *name == TOKEN_USAGE
                && *form == keys));
        assert_eq!(tag_name("request_model"), "gen_ai.request.model");
    }

    #[test]
    fn a_series_keeps_the_hosts_ids_per_metric_while_their_generation_lasts() {
        let labels = labels();
        let input = Sample::histogram(TOKEN_USAGE, Extra::TokenType(TokenType::Input), 3);
        let output = Sample::histogram(TOKEN_USAGE, Extra::TokenType(TokenType::Output), 3);
        let mut defined = Vec::new();
        let mut id = |generation, sample: &Sample, answer: Option<u64>| {
            labels.id(generation, sample, |name| {
                defined.push(name.to_owned());
                answer
            })
        };
        assert_eq!(id(1, &input, None), None, "not defined yet: nothing kept");
        assert_eq!(id(1, &input, Some(7)), Some(7));
        assert_eq!(id(1, &input, Some(99)), Some(7), "kept");
        assert_eq!(
            id(1, &output, Some(8)),
            Some(8),
            "another metric, another id"
        );
        assert_eq!(
            id(2, &input, Some(9)),
            Some(9),
            "a new generation defines again"
        );
        assert_eq!(defined.len(), 4);
        assert!(defined[0].ends_with(";token_type=input"));
    }

    #[test]
    fn a_stream_reports_every_sample_and_a_failure_only_what_it_has() {
        let usage = TokenUsage {
            input: 3,
            output: 5,
            cache_read: 0,
            cache_write: 2,
        };
        let mut seen = Vec::new();
        samples(
            200,
            &usage,
            &Timings {
                started_ms: 1_000,
                first_content_ms: Some(1_040),
                ended_ms: 1_240,
            },
            |s| seen.push(s),
        );
        let token = |kind, value| Sample::histogram(TOKEN_USAGE, Extra::TokenType(kind), value);
        let count = |kind, value| Sample::counter(TOKENS_TOTAL, Extra::TokenType(kind), value);
        assert_eq!(
            seen,
            [
                Sample::histogram(REQUEST_DURATION, Extra::None, 240),
                token(TokenType::Input, 5),
                count(TokenType::Input, 5),
                token(TokenType::Output, 5),
                count(TokenType::Output, 5),
                token(TokenType::CacheCreationInput, 2),
                count(TokenType::CacheCreationInput, 2),
                Sample::histogram(TIME_TO_FIRST_TOKEN, Extra::None, 40),
                Sample::histogram(TIME_PER_OUTPUT_TOKEN, Extra::None, 50),
            ]
        );
        let mut seen = Vec::new();
        samples(
            502,
            &TokenUsage::default(),
            &Timings {
                started_ms: 5,
                first_content_ms: None,
                ended_ms: 4,
            },
            |s| seen.push(s),
        );
        assert_eq!(
            seen,
            [Sample::histogram(REQUEST_DURATION, Extra::Error(502), 0)]
        );
    }

    #[test]
    fn callers_are_counted_by_status_class_and_token_type() {
        let mut seen = Vec::new();
        caller_samples(
            429,
            &TokenUsage {
                input: 2,
                output: 0,
                cache_read: 1,
                cache_write: 0,
            },
            |s| seen.push(s),
        );
        assert_eq!(
            seen,
            [
                Sample::counter(CALLER_REQUESTS, Extra::StatusClass(429), 1),
                Sample::counter(CALLER_TOKENS, Extra::TokenType(TokenType::Input), 3),
            ]
        );
    }

    #[test]
    fn the_usage_summary_is_the_access_log_line_and_the_charge() {
        let usage = TokenUsage {
            input: 3,
            output: 5,
            cache_read: 0,
            cache_write: 0,
        };
        let weights = CostWeights {
            input: 1.0,
            output: 4.0,
            cache_read: 0.1,
            cache_write: 1.25,
        };
        let summary = usage_summary("m", "b", None, 200, &usage, &weights, Vec::new());
        assert_eq!(
            summary.json,
            r#"{"model":"m","backend":"b","status":200,"input_tokens":3,"output_tokens":5,"cache_read_tokens":0,"cache_write_tokens":0,"total_tokens":8,"cost":23}"#
        );
        let summary = usage_summary(
            "m",
            "b",
            None,
            200,
            &usage,
            &weights,
            vec![("usd_micros", 51)],
        );
        assert!(
            summary
                .json
                .ends_with(r#""cost":23,"costs":{"usd_micros":51}}"#),
            "{}",
            summary.json
        );
        assert_eq!((summary.total_tokens, summary.cost), (8, 23));
    }
}

//! The backend stage's metrics as Envoy's labelled dynamic-module metrics, in the module's metrics
//! namespace `ai_gateway` (the renderer sets it): the wasm host's series, with the labels as real
//! labels. In Prometheus, Envoy 1.40 prefixes dynamic-module metrics with `envoy_`:
//! `envoy_ai_gateway_requests{model,backend,status_class}`, `envoy_ai_gateway_output_tokens{model,backend}`,
//! where the wasm host's are `ai_gateway_requests{...}`; `/stats` shows `ai_gateway.requests.model.<m>...`.
//!
//! Metrics live in the scope of the configuration that defines them. An upstream filter's scope is
//! its cluster's (`cluster.<name>.`), which would put every backend's cluster into the metric's
//! name; the routing stage's is the server's. So the routing stage's configuration defines them
//! and publishes them here, and the backend stage records through that configuration.

use crate::abi::{self, EnvoyConfigPtr, ModuleBuffer};
use bedrock_gateway_core::report::{status_class_value, MetricLabels, Sample};
use std::sync::{LazyLock, PoisonError, RwLock};

/// The routing stage's metrics, by the id of the configuration that defined them, oldest first.
/// Several live at once (a listener per Gateway, or an old configuration draining while its
/// replacement serves): the newest records, and when it goes the one before it takes over.
static PUBLISHED: LazyLock<RwLock<Vec<(u64, Metrics)>>> = LazyLock::new(RwLock::default);

/// Makes `metrics` the ones the backend stage records (the latest routing configuration's).
pub fn publish(owner: u64, metrics: Metrics) {
    PUBLISHED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push((owner, metrics));
}

/// The configuration that published these metrics is going away: nothing may record through them.
pub fn withdraw(owner: u64) {
    PUBLISHED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(id, _)| *id != owner);
}

/// Records one sample through the newest published metrics; held under the read lock, so the
/// defining configuration cannot be destroyed meanwhile.
pub fn record(labels: &MetricLabels, sample: Sample) {
    if let Some((_, metrics)) = PUBLISHED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .last()
    {
        metrics.record(labels, sample);
    }
}

const REQUESTS: &str = "requests";
const CALLER_REQUESTS: &str = "caller_requests";
const CALLER_TOTAL_TOKENS: &str = "caller_total_tokens";
const TOKEN_COUNTERS: [&str; 5] = [
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "total_tokens",
];
const HISTOGRAMS: [&str; 3] = [
    "request_duration_ms",
    "time_to_first_token_ms",
    "time_per_output_token_us",
];

/// Metric ids by name; a name that failed to define is left out and never recorded.
pub struct Metrics {
    config: EnvoyConfigPtr,
    requests: Option<usize>,
    caller_requests: Option<usize>,
    caller_total_tokens: Option<usize>,
    counters: Vec<(&'static str, usize)>,
    histograms: Vec<(&'static str, usize)>,
}

fn define(config: EnvoyConfigPtr, histogram: bool, name: &str, labels: &[&str]) -> Option<usize> {
    let label_names: Vec<ModuleBuffer> = labels
        .iter()
        .map(|l| ModuleBuffer::of(l.as_bytes()))
        .collect();
    let mut id = 0usize;
    // SAFETY: called from the configuration hook with Envoy's configuration pointer; every buffer
    // outlives the call.
    let result = unsafe {
        let define = if histogram {
            abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
        } else {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter
        };
        define(
            config,
            ModuleBuffer::of(name.as_bytes()),
            label_names.as_ptr(),
            label_names.len(),
            &mut id,
        )
    };
    if result != abi::METRICS_SUCCESS {
        log::error!("ai gateway: cannot define the metric {name} ({result})");
        return None;
    }
    Some(id)
}

impl Metrics {
    pub fn define(config: EnvoyConfigPtr) -> Metrics {
        let labels = ["model", "backend"];
        Metrics {
            config,
            requests: define(
                config,
                false,
                REQUESTS,
                &["model", "backend", "status_class"],
            ),
            caller_requests: define(config, false, CALLER_REQUESTS, &["caller", "status_class"]),
            caller_total_tokens: define(config, false, CALLER_TOTAL_TOKENS, &["caller"]),
            counters: TOKEN_COUNTERS
                .iter()
                .filter_map(|name| Some((*name, define(config, false, name, &labels)?)))
                .collect(),
            histograms: HISTOGRAMS
                .iter()
                .filter_map(|name| Some((*name, define(config, true, name, &labels)?)))
                .collect(),
        }
    }

    fn record(&self, labels: &MetricLabels, sample: Sample) {
        let model = ModuleBuffer::of(labels.model.as_bytes());
        let backend = ModuleBuffer::of(labels.backend.as_bytes());
        // SAFETY (each call below): the configuration is alive (see `record`), every buffer outlives
        // the call, and the label count matches the definition's.
        let caller = ModuleBuffer::of(labels.caller.as_bytes());
        match sample {
            Sample::Counter {
                name,
                suffix,
                value,
            } if name == CALLER_REQUESTS => {
                let Some(id) = self.caller_requests else {
                    return;
                };
                let values = [
                    caller,
                    ModuleBuffer::of(status_class_value(suffix).as_bytes()),
                ];
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.config,
                        id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                };
            }
            Sample::Counter { name, value, .. } if name == CALLER_TOTAL_TOKENS => {
                let Some(id) = self.caller_total_tokens else {
                    return;
                };
                let values = [caller];
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.config,
                        id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                };
            }
            Sample::Counter {
                name,
                suffix,
                value,
            } if name == REQUESTS => {
                let Some(id) = self.requests else { return };
                let values = [
                    model,
                    backend,
                    ModuleBuffer::of(status_class_value(suffix).as_bytes()),
                ];
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.config,
                        id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                };
            }
            Sample::Counter { name, value, .. } => {
                let Some((_, id)) = self.counters.iter().find(|(n, _)| *n == name) else {
                    return;
                };
                let values = [model, backend];
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.config,
                        *id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                };
            }
            Sample::Histogram { name, value } => {
                let Some((_, id)) = self.histograms.iter().find(|(n, _)| *n == name) else {
                    return;
                };
                let values = [model, backend];
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                        self.config,
                        *id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                };
            }
        }
    }
}

// SAFETY: the configuration pointer is only used for Envoy's metric calls, which are thread-safe
// (they update atomic stats), and only while the configuration is alive (see `withdraw`).
unsafe impl Send for Metrics {}
unsafe impl Sync for Metrics {}

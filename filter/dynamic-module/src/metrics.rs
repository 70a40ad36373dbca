//! The backend stage's metrics, named and labelled as the `.wasm`'s (see the core's `report`).
//!
//! Envoy 1.40 resolves a labelled metric's label set again on every update (about 4,500
//! instructions each), while a metric defined without labels keeps its counter and records without
//! allocating; and it lets a module define metrics only while a configuration loads. So the
//! routing stage's configuration defines, without labels, every series its routes' successful
//! requests can record (each routed model on each backend, each counted caller: the names carry
//! the labels, `gen_ai.client.token.usage;operation=chat;...`, which the rendered `stats_tags` turn
//! back into labels). Whatever else happens (failures, Bedrock's own API, a model matched by a
//! pattern) is recorded through labelled metrics of the same names and labels, at Envoy's price.
//!
//! Metrics live in the scope of the configuration that defines them. An upstream filter's scope is
//! its cluster's (`cluster.<name>.`), which would put every backend's cluster into the metric's
//! name; the routing stage's is the server's. So the routing stage's configuration defines them
//! and publishes them here, and the backend stage records through that configuration.

use crate::abi::{self, EnvoyConfigPtr, ModuleBuffer};
use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::report::{self, Kind, LabelledForm, MetricLabels, Sample};
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

/// The routing stage's metrics, oldest first. Several live at once (a listener per Gateway, or an
/// old configuration draining while its replacement serves): the newest records, and when it goes
/// the one before it takes over.
static PUBLISHED: LazyLock<RwLock<Vec<Metrics>>> = LazyLock::new(RwLock::default);

/// One routing configuration's metrics.
pub struct Metrics {
    owner: u64,
    config: EnvoyConfigPtr,
    /// The series defined without labels: Envoy's ids by full stat name (counters and histograms
    /// have ids of their own).
    defined: HashMap<String, usize>,
    /// The labelled forms: (kind, metric, label keys) and Envoy's id.
    labelled: Vec<(LabelledForm, usize)>,
}

// SAFETY: the configuration pointer is only used for Envoy's metric calls, which are thread-safe
// (they update atomic stats), and only while the configuration is alive (see `withdraw`).
unsafe impl Send for Metrics {}
unsafe impl Sync for Metrics {}

/// Defines the metrics of the routing configuration `owner` and makes them the ones the backend
/// stage records. Called from the configuration hook (the main thread, while Envoy allows it).
pub fn publish(owner: u64, envoy: EnvoyConfigPtr, config: &Config) {
    let mut defined = HashMap::new();
    for (kind, name) in report::expected_stat_names(config) {
        if let Some(id) = define(envoy, kind, &name, &[]) {
            defined.insert(name, id);
        }
    }
    let labelled = report::labelled_forms()
        .into_iter()
        .filter_map(|(kind, name, keys)| {
            let tags: Vec<&str> = keys.iter().map(|key| report::tag_name(key)).collect();
            let id = define(envoy, kind, name, &tags)?;
            Some(((kind, name, keys), id))
        })
        .collect();
    PUBLISHED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Metrics {
            owner,
            config: envoy,
            defined,
            labelled,
        });
}

/// The configuration that published these metrics is going away: nothing may record through them.
pub fn withdraw(owner: u64) {
    PUBLISHED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|metrics| metrics.owner != owner);
}

/// Records one sample through the newest published metrics; held under the read lock, so the
/// defining configuration cannot be destroyed meanwhile.
pub fn record(labels: &MetricLabels, sample: Sample) {
    let published = PUBLISHED.read().unwrap_or_else(PoisonError::into_inner);
    let Some(metrics) = published.last() else {
        return;
    };
    let id = labels.id(metrics.owner, &sample, |name| {
        metrics
            .defined
            .get(name)
            .and_then(|id| u64::try_from(*id).ok())
    });
    match id.and_then(|id| usize::try_from(id).ok()) {
        Some(id) => metrics.record(sample.kind, id, &[], sample.value),
        None => metrics.record_labelled(&sample.stat_name(labels), sample),
    }
}

fn define(envoy: EnvoyConfigPtr, kind: Kind, name: &str, labels: &[&str]) -> Option<usize> {
    let label_names: Vec<ModuleBuffer> = labels
        .iter()
        .map(|l| ModuleBuffer::of(l.as_bytes()))
        .collect();
    let mut id = 0usize;
    // SAFETY: called from the configuration hook with Envoy's configuration pointer; every buffer
    // outlives the call.
    let result = unsafe {
        let define = match kind {
            Kind::Counter => abi::envoy_dynamic_module_callback_http_filter_config_define_counter,
            Kind::Histogram => {
                abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
            }
        };
        define(
            envoy,
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
    /// A series not defined up front, through the labelled metric of its name and label keys.
    fn record_labelled(&self, stat_name: &str, sample: Sample) {
        let (metric, labels) = report::split_stat_name(stat_name);
        let Some((_, id)) = self.labelled.iter().find(|((kind, name, keys), _)| {
            *kind == sample.kind
                && *name == metric
                && keys.len() == labels.len()
                && keys.iter().zip(&labels).all(|(key, (k, _))| key == k)
        }) else {
            log::debug!("ai gateway: no labelled form of {stat_name}");
            return;
        };
        let values: Vec<ModuleBuffer> = labels
            .iter()
            .map(|(_, value)| ModuleBuffer::of(value.as_bytes()))
            .collect();
        self.record(sample.kind, *id, &values, sample.value);
    }

    fn record(&self, kind: Kind, id: usize, values: &[ModuleBuffer], value: u64) {
        // SAFETY: the configuration is alive (see `record`), the buffers outlive the call, and the
        // label count matches the definition's.
        unsafe {
            match kind {
                Kind::Counter => {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.config,
                        id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                }
                Kind::Histogram => {
                    abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                        self.config,
                        id,
                        values.as_ptr(),
                        values.len(),
                        value,
                    )
                }
            }
        };
    }
}

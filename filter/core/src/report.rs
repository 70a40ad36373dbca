//! What a finished request reports: its metric samples (names, labels, values) and the usage
//! summary that access logs and rate limits read. Each host records them with its own calls.
//!
//! Labels live in the stat name (`ai_gateway.output_tokens;model=...;backend=...`), since model ids
//! contain dots; the `stats_tags` of every rendered configuration turn them into Prometheus labels.

use crate::config::CostWeights;
use crate::translated::TokenUsage;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;

/// The stat name of metric `name` with a request's `labels` and a metric-specific `suffix`.
pub fn stat_name(name: &str, labels: &str, suffix: &str) -> String {
    format!("ai_gateway.{name}{labels}{suffix}")
}

/// The labels of one model on one backend, as a stat-name suffix.
pub fn labels(model: &str, backend: &str) -> String {
    format!(
        ";model={};backend={}",
        label_value(model),
        label_value(backend)
    )
}

/// A request's metric labels, as label values (hosts with labelled metrics) and as a stat-name
/// suffix (hosts that carry labels in the name, tagged by the configuration's `stats_tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricLabels {
    pub model: String,
    pub backend: String,
    /// Set for the per-caller series (`caller_requests`, `caller_total_tokens`), whose only
    /// labels are the caller (and the status class); empty for the others.
    pub caller: String,
    pub suffix: String,
}

impl MetricLabels {
    pub fn new(model: &str, backend: &str) -> Self {
        MetricLabels {
            model: label_value(model),
            backend: label_value(backend),
            caller: String::new(),
            suffix: labels(model, backend),
        }
    }

    pub fn for_caller(caller: &str) -> Self {
        let caller = label_value(caller);
        MetricLabels {
            model: String::new(),
            backend: String::new(),
            suffix: format!(";caller={caller}"),
            caller,
        }
    }
}

/// The label sets one worker has built, which later requests for the same model and backend
/// reuse: building one (three sanitized strings) cost more than finding it, about 13,000
/// instructions per request (`make bench-instructions`, dynamic module). Bounded: beyond
/// [`LabelCache::MAX`] sets, new ones are built per request and not kept.
#[derive(Default)]
pub struct LabelCache {
    sets: Vec<(String, String, std::rc::Rc<MetricLabels>)>,
}

impl LabelCache {
    pub const MAX: usize = 256;

    pub fn get(&mut self, model: &str, backend: &str) -> std::rc::Rc<MetricLabels> {
        if let Some((_, _, labels)) = self
            .sets
            .iter()
            .find(|(m, b, _)| m == model && b == backend)
        {
            return std::rc::Rc::clone(labels);
        }
        let labels = std::rc::Rc::new(MetricLabels::new(model, backend));
        if self.sets.len() < Self::MAX {
            self.sets.push((
                model.to_owned(),
                backend.to_owned(),
                std::rc::Rc::clone(&labels),
            ));
        }
        labels
    }
}

/// A request counted for its caller: `caller_requests` by status class and `caller_total_tokens`.
/// Only for callers the configuration names (API-key clients), so the series stay few.
pub fn caller_samples(status: u16, usage: &TokenUsage, mut record: impl FnMut(Sample)) {
    record(Sample::Counter {
        name: "caller_requests",
        suffix: status_class_label(status),
        value: 1,
    });
    if usage.total() > 0 {
        record(Sample::Counter {
            name: "caller_total_tokens",
            suffix: "",
            value: usage.total(),
        });
    }
}

/// The value of a counter's status suffix (`;status=2xx` is `2xx`), for labelled metrics.
pub fn status_class_value(suffix: &str) -> &str {
    suffix.strip_prefix(";status=").unwrap_or(suffix)
}

/// Keeps the characters a stat name and its tag regex can carry.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `status` label of the request counter, by the status's first digit.
pub fn status_class_label(status: u16) -> &'static str {
    const CLASSES: [&str; 10] = [
        ";status=0xx",
        ";status=1xx",
        ";status=2xx",
        ";status=3xx",
        ";status=4xx",
        ";status=5xx",
        ";status=6xx",
        ";status=7xx",
        ";status=8xx",
        ";status=9xx",
    ];
    CLASSES
        .get(usize::from(status / 100))
        .copied()
        .unwrap_or(";status=other")
}

/// One value to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Counter {
        name: &'static str,
        suffix: &'static str,
        value: u64,
    },
    Histogram {
        name: &'static str,
        value: u64,
    },
}

/// When a request started, produced its first content (streams), and ended (Unix ms).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub started_ms: u64,
    pub first_content_ms: Option<u64>,
    pub ended_ms: u64,
}

/// Hands each sample of one request to `record`; counters that would add 0 are left out.
pub fn samples(status: u16, usage: &TokenUsage, timings: &Timings, mut record: impl FnMut(Sample)) {
    record(Sample::Counter {
        name: "requests",
        suffix: status_class_label(status),
        value: 1,
    });
    record(Sample::Histogram {
        name: "request_duration_ms",
        value: timings.ended_ms.saturating_sub(timings.started_ms),
    });
    for (name, value) in [
        ("input_tokens", usage.input),
        ("output_tokens", usage.output),
        ("cache_read_tokens", usage.cache_read),
        ("cache_write_tokens", usage.cache_write),
        ("total_tokens", usage.total()),
    ] {
        if value > 0 {
            record(Sample::Counter {
                name,
                suffix: "",
                value,
            });
        }
    }
    if let Some(first) = timings.first_content_ms {
        record(Sample::Histogram {
            name: "time_to_first_token_ms",
            value: first.saturating_sub(timings.started_ms),
        });
        if usage.output > 1 {
            let per_token_us =
                timings.ended_ms.saturating_sub(first).saturating_mul(1000) / (usage.output - 1);
            record(Sample::Histogram {
                name: "time_per_output_token_us",
                value: per_token_us,
            });
        }
    }
}

/// A request's usage as access logs print it (`wasm.ai_gateway.usage`), with the figures rate
/// limits charge (`total_tokens`, `cost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummary {
    pub json: String,
    pub total_tokens: u64,
    pub cost: u64,
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
}

pub fn usage_summary(
    model: &str,
    backend: &str,
    caller: Option<&str>,
    status: u16,
    usage: &TokenUsage,
    weights: &CostWeights,
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
    };
    UsageSummary {
        json: serde_json::to_string(&json).unwrap_or_default(),
        total_tokens: usage.total(),
        cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_label_sets_are_built_once_each_and_bounded() {
        let mut cache = LabelCache::default();
        let first = cache.get("m:0", "b");
        assert!(
            std::rc::Rc::ptr_eq(&first, &cache.get("m:0", "b")),
            "found, not built again"
        );
        assert_eq!(*first, MetricLabels::new("m:0", "b"));
        assert_ne!(cache.get("m:0", "c").backend, first.backend);
        for i in 0..LabelCache::MAX {
            cache.get(&format!("model-{i}"), "b");
        }
        assert_eq!(
            cache.sets.len(),
            LabelCache::MAX,
            "a caller cycling model names cannot grow it"
        );
        assert_eq!(
            cache.get("one-more", "b").model,
            "one-more",
            "still labelled, just not kept"
        );
    }

    #[test]
    fn names_and_labels_keep_to_what_stats_can_carry() {
        let labels = labels(
            "us.meta.llama3-2-1b-instruct-v1:0",
            "bedrock@arn:aws:bedrock:x;y z",
        );
        assert_eq!(
            labels,
            ";model=us.meta.llama3-2-1b-instruct-v1:0;backend=bedrock_arn:aws:bedrock:x_y_z"
        );
        assert_eq!(
            stat_name("requests", &labels, status_class_label(429)),
            format!("ai_gateway.requests{labels};status=4xx")
        );
        assert_eq!(status_class_label(200), ";status=2xx");
        assert_eq!(status_class_label(1000), ";status=other");
    }

    #[test]
    fn a_stream_reports_every_sample_and_a_silent_request_only_what_it_has() {
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
        assert_eq!(
            seen,
            [
                Sample::Counter {
                    name: "requests",
                    suffix: ";status=2xx",
                    value: 1
                },
                Sample::Histogram {
                    name: "request_duration_ms",
                    value: 240
                },
                Sample::Counter {
                    name: "input_tokens",
                    suffix: "",
                    value: 3
                },
                Sample::Counter {
                    name: "output_tokens",
                    suffix: "",
                    value: 5
                },
                Sample::Counter {
                    name: "cache_write_tokens",
                    suffix: "",
                    value: 2
                },
                Sample::Counter {
                    name: "total_tokens",
                    suffix: "",
                    value: 10
                },
                Sample::Histogram {
                    name: "time_to_first_token_ms",
                    value: 40
                },
                Sample::Histogram {
                    name: "time_per_output_token_us",
                    value: 50_000
                },
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
            [
                Sample::Counter {
                    name: "requests",
                    suffix: ";status=5xx",
                    value: 1
                },
                Sample::Histogram {
                    name: "request_duration_ms",
                    value: 0
                },
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
        let summary = usage_summary("m", "b", None, 200, &usage, &weights);
        assert_eq!(
            summary.json,
            r#"{"model":"m","backend":"b","status":200,"input_tokens":3,"output_tokens":5,"cache_read_tokens":0,"cache_write_tokens":0,"total_tokens":8,"cost":23}"#
        );
        assert_eq!((summary.total_tokens, summary.cost), (8, 23));
    }
}

/// Usage summaries from the backend stage (an upstream filter) to the routing stage (downstream),
/// by request id. Both stages of one request run on the same worker thread, but do not share their
/// filter state, and access logs read the downstream one.
const MAX_PENDING_SUMMARIES: usize = 4096;

thread_local! {
    static USAGE_SUMMARIES: RefCell<HashMap<String, UsageSummary>> = RefCell::new(HashMap::new());
}

/// Leaves `summary` for the routing stage of request `request_id` on this thread.
pub fn hand_over_summary(request_id: String, summary: UsageSummary) {
    USAGE_SUMMARIES.with(|summaries| {
        if let Ok(mut summaries) = summaries.try_borrow_mut() {
            // Streams cut before the routing stage sees their end never collect theirs.
            if summaries.len() >= MAX_PENDING_SUMMARIES {
                summaries.clear();
            }
            summaries.insert(request_id, summary);
        }
    });
}

/// The summary the backend stage left for `request_id`, taken once.
pub fn take_summary(request_id: &str) -> Option<UsageSummary> {
    USAGE_SUMMARIES.with(|summaries| summaries.try_borrow_mut().ok()?.remove(request_id))
}

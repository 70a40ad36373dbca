//! An `EnvoyProxy`'s `spec.telemetry` as Envoy Gateway users write it: traces (`tracing` with an
//! OpenTelemetry provider) on Envoy's OpenTelemetry tracer, with OpenTelemetry's GenAI attributes
//! on each request's span; and metrics pushed to an OpenTelemetry collector (`metrics.sinks`)
//! through Envoy's OpenTelemetry stats sink.
//!
//! The span is Envoy's own for the request, named `{operation} {model}` by its route's decorator.
//! Its GenAI attributes are custom tags: `gen_ai.provider.name` a literal, and the rest (operation,
//! request and response model, token usage, `error.type`) read
//! from where the filter publishes them when the response ends (the core's `SPAN_TAGS`), typed as
//! the conventions type them (token counts as integers). Envoy sets custom tags as it finishes the
//! span, after the stream, so they are there. No message content goes into a span.

use crate::blocks::{single_endpoint, upstream_protocol_options};
use crate::resources::{EnvoyProxySpec, Object, TracingBackendRef};
use crate::yaml::{plain, string, Map, Seq};
use crate::{Options, RenderError};
use bedrock_gateway_core::report::{self, SPAN_TAGS};

/// The collector's cluster.
pub const COLLECTOR_CLUSTER: &str = "opentelemetry-collector";

#[derive(Debug, Clone, PartialEq)]
pub struct TracingPlan {
    pub collector: (String, u16),
    /// Percent of requests traced.
    pub sampling_percent: f64,
    pub service_name: String,
    /// `(tag, literal | request header | environment variable)`.
    pub custom_tags: Vec<(String, TagSource)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    Literal(String),
    RequestHeader(String, Option<String>),
    Environment(String, Option<String>),
}

/// The one `EnvoyProxy`'s tracing, if any asks for it.
pub fn plan(
    proxies: &[&Object<EnvoyProxySpec>],
    backends: &dyn Fn(&str) -> Option<(String, u16)>,
) -> Result<Option<TracingPlan>, RenderError> {
    let mut traced = proxies.iter().filter_map(|proxy| {
        let tracing = proxy.spec.telemetry.as_ref()?.tracing.as_ref()?;
        Some((proxy, tracing))
    });
    let Some((proxy, tracing)) = traced.next() else {
        return Ok(None);
    };
    if let Some((other, _)) = traced.next() {
        return Err(RenderError(format!(
            "EnvoyProxy {:?} and {:?}: at most one may configure tracing",
            proxy.metadata.name, other.metadata.name
        )));
    }
    let at = format!(
        "EnvoyProxy {:?}: spec.telemetry.tracing",
        proxy.metadata.name
    );
    let provider = &tracing.provider;
    if provider.provider_type != "OpenTelemetry" {
        return Err(RenderError(format!(
            "{at}.provider.type: {:?} is not supported; the gateway traces with OpenTelemetry",
            provider.provider_type
        )));
    }
    let collector = collector(
        &format!("{at}.provider"),
        provider.host.as_deref(),
        provider.port,
        &provider.backend_refs,
        backends,
    )?;
    let sampling_percent = match (tracing.sampling_rate, &tracing.sampling_fraction) {
        (Some(_), Some(_)) => {
            return Err(RenderError(format!(
                "{at}: samplingRate and samplingFraction are exclusive"
            )))
        }
        (Some(rate), None) if rate <= 100 => f64::from(rate),
        (Some(rate), None) => {
            return Err(RenderError(format!(
                "{at}.samplingRate: {rate} is not a percentage"
            )))
        }
        (None, Some(fraction)) => {
            let denominator = fraction.denominator.unwrap_or(100);
            if denominator == 0 || fraction.numerator > denominator {
                return Err(RenderError(format!(
                    "{at}.samplingFraction: {}/{denominator} is not a fraction of at most 1",
                    fraction.numerator
                )));
            }
            f64::from(fraction.numerator) * 100.0 / f64::from(denominator)
        }
        (None, None) => 100.0,
    };
    let mut custom_tags = Vec::new();
    for (name, tag) in &tracing.custom_tags {
        let source = match (tag.tag_type.as_str(), &tag.literal, &tag.request_header, &tag.environment) {
            ("Literal", Some(literal), None, None) => TagSource::Literal(literal.value.clone()),
            ("RequestHeader", None, Some(header), None) => {
                TagSource::RequestHeader(header.name.clone(), header.default_value.clone())
            }
            ("Environment", None, None, Some(variable)) => {
                TagSource::Environment(variable.name.clone(), variable.default_value.clone())
            }
            (other, ..) => {
                return Err(RenderError(format!(
                    "{at}.customTags.{name}: type {other:?} with its one matching field (literal, requestHeader or environment) is required"
                )))
            }
        };
        if SPAN_TAGS.iter().any(|(attribute, ..)| attribute == name) || name.starts_with("gen_ai.")
        {
            return Err(RenderError(format!(
                "{at}.customTags.{name}: the gateway sets the GenAI attributes itself"
            )));
        }
        custom_tags.push((name.clone(), source));
    }
    Ok(Some(TracingPlan {
        collector,
        sampling_percent,
        service_name: provider
            .service_name
            .clone()
            .unwrap_or_else(|| "ai-gateway".into()),
        custom_tags,
    }))
}

/// A collector named by `host` and `port` (4317 by default), or by one `Backend`.
fn collector(
    at: &str,
    host: Option<&str>,
    port: Option<u16>,
    backend_refs: &[TracingBackendRef],
    backends: &dyn Fn(&str) -> Option<(String, u16)>,
) -> Result<(String, u16), RenderError> {
    match (host, port, backend_refs) {
        (Some(host), port, []) => Ok((host.to_owned(), port.unwrap_or(4317))),
        (None, None, [reference]) => {
            if reference.kind.as_deref().is_some_and(|k| k != "Backend") {
                return Err(RenderError(format!(
                    "{at}.backendRefs[0]: only a Backend (gateway.envoyproxy.io) can name the collector here; a Service needs a cluster"
                )));
            }
            let (host, port) = backends(&reference.name).ok_or_else(|| {
                RenderError(format!(
                    "{at}.backendRefs[0]: no Backend {:?} with one endpoint in these files",
                    reference.name
                ))
            })?;
            Ok((host, reference.port.unwrap_or(port)))
        }
        _ => Err(RenderError(format!(
            "{at}: name the collector with host and port, or with one backendRef"
        ))),
    }
}

/// Where the metrics go: an OpenTelemetry collector, over OTLP/gRPC, through Envoy's own sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsPlan {
    pub collector: (String, u16),
}

/// The collector's cluster for metrics (apart from the traces', which may be elsewhere).
pub const METRICS_COLLECTOR_CLUSTER: &str = "opentelemetry-metrics-collector";

/// The one `EnvoyProxy`'s metric sink, if any configures one.
pub fn metrics_plan(
    proxies: &[&Object<EnvoyProxySpec>],
    backends: &dyn Fn(&str) -> Option<(String, u16)>,
) -> Result<Option<MetricsPlan>, RenderError> {
    let mut sinks = Vec::new();
    for proxy in proxies {
        let Some(metrics) = proxy
            .spec
            .telemetry
            .as_ref()
            .and_then(|t| t.metrics.as_ref())
        else {
            continue;
        };
        for (i, sink) in metrics.sinks.iter().enumerate() {
            let at = format!(
                "EnvoyProxy {:?}: spec.telemetry.metrics.sinks[{i}]",
                proxy.metadata.name
            );
            match (sink.sink_type.as_str(), &sink.open_telemetry) {
                ("OpenTelemetry", Some(otel)) => sinks.push((at, otel)),
                ("OpenTelemetry", None) => {
                    return Err(RenderError(format!("{at}.openTelemetry is required")))
                }
                (other, _) => {
                    return Err(RenderError(format!(
                        "{at}.type: {other:?} is not supported; metrics go to an OpenTelemetry collector"
                    )))
                }
            }
        }
    }
    let Some((at, sink)) = sinks.first() else {
        return Ok(None);
    };
    if sinks.len() > 1 {
        return Err(RenderError(format!(
            "{at}: one metric sink at most (the gateway pushes to one OpenTelemetry collector)"
        )));
    }
    let collector = collector(
        &format!("{at}.openTelemetry"),
        sink.host.as_deref(),
        sink.port,
        &sink.backend_refs,
        backends,
    )?;
    Ok(Some(MetricsPlan { collector }))
}

/// Envoy's OpenTelemetry stats sink: every stat, named as its tags are extracted (the filter's
/// `gen_ai.client.token.usage;operation=chat;...` becomes `gen_ai.client.token.usage` with the
/// attribute `gen_ai.operation.name`), pushed at each stats flush. Envoy names a filter's own
/// metrics `<namespace>.<name>` (`wasmcustom.` for the `.wasm`, `dynamicmodulescustom.` for the
/// module; its Prometheus output drops the namespace, this sink does not), so each of the
/// filter's metrics is renamed back to its own name.
pub fn stats_sink(namespace: &str) -> Map {
    let config = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig"),
        )
        .with(
            "grpc_service",
            plain(format!(
                "{{ envoy_grpc: {{ cluster_name: {METRICS_COLLECTOR_CLUSTER} }}, timeout: 1s }}"
            )),
        )
        .comment("OpenTelemetry's names: the stat's name with its tags taken out, and the tags as attributes.")
        .with("use_tag_extracted_name", plain(true))
        .with("emit_tags_as_attributes", plain(true))
        .comment(format!(
            "The filter's metrics under their own names, without Envoy's `{namespace}.` namespace."
        ))
        .with("custom_metric_conversions", own_metric_names(namespace));
    Map::block()
        .comment("Metrics pushed to an OpenTelemetry collector (the EnvoyProxy's telemetry.metrics.sinks).")
        .with(
            "stats_sinks",
            Seq::block().item(
                Map::block()
                    .with("name", plain("envoy.stat_sinks.open_telemetry"))
                    .with("typed_config", config),
            ),
        )
}

/// A matcher on each stat's full name: the filter's metrics (`wasmcustom.gen_ai...`) converted to
/// their own names; anything else is left as it is.
fn own_metric_names(namespace: &str) -> Map {
    let mut renamed = Map::block();
    let mut names: Vec<&str> = Vec::new();
    for (_, name, _) in report::labelled_forms() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let conversion = Map::flow()
            .with(
                "\"@type\"",
                plain("type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig.ConversionAction"),
            )
            .with("metric_name", plain(name));
        renamed = renamed.with_quoted(
            &format!("{namespace}.{name}"),
            Map::block().with(
                "action",
                Map::block()
                    .with("name", plain(name))
                    .with("typed_config", conversion),
            ),
        );
    }
    let input = Map::block().with("name", plain("stat_full_name")).with(
        "typed_config",
        plain("{ \"@type\": type.googleapis.com/envoy.extensions.matching.common_inputs.stats.v3.StatFullNameMatchInput }"),
    );
    Map::block().with(
        "matcher_tree",
        Map::block()
            .with("input", input)
            .with("prefix_match_map", Map::block().with("map", renamed)),
    )
}

/// The metrics collector's cluster (OTLP over gRPC).
pub fn metrics_cluster(plan: &MetricsPlan) -> Map {
    collector_cluster(METRICS_COLLECTOR_CLUSTER, &plan.collector)
}

fn collector_cluster(name: &str, (host, port): &(String, u16)) -> Map {
    let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    Map::block()
        .with("name", plain(name))
        .with("type", plain(discovery))
        .with("connect_timeout", plain("1s"))
        .extend(upstream_protocol_options(None, true, None))
        .extend(single_endpoint(name, host, *port))
}

/// The connection manager's `tracing` entry.
pub fn connection_manager_tracing(plan: &TracingPlan, options: &Options) -> Map {
    let mut tags = Seq::block().item(plain(
        "{ tag: gen_ai.provider.name, literal: { value: aws.bedrock } }",
    ));
    for (attribute, key, integer) in SPAN_TAGS {
        let mut tag = Map::flow().with("tag", plain(attribute)).with(
            "value",
            plain(format!("\"{}\"", options.usage_operator(key))),
        );
        if integer {
            tag.push("value_type", plain("INT"));
        }
        tags.push(tag);
    }
    for (name, source) in &plan.custom_tags {
        let with_default = |mut map: Map, fallback: &Option<String>| {
            if let Some(value) = fallback {
                map.push("default_value", string(value));
            }
            map
        };
        let (kind, value) = match source {
            TagSource::Literal(value) => ("literal", Map::flow().with("value", string(value))),
            TagSource::RequestHeader(header, fallback) => (
                "request_header",
                with_default(Map::flow().with("name", string(header)), fallback),
            ),
            TagSource::Environment(variable, fallback) => (
                "environment",
                with_default(Map::flow().with("name", string(variable)), fallback),
            ),
        };
        tags.push(Map::flow().with("tag", string(name)).with(kind, value));
    }
    let provider = Map::block()
        .with("name", plain("envoy.tracers.opentelemetry"))
        .with(
            "typed_config",
            Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"),
                )
                .with(
                    "grpc_service",
                    plain(format!(
                        "{{ envoy_grpc: {{ cluster_name: {COLLECTOR_CLUSTER} }}, timeout: 1s }}"
                    )),
                )
                .with("service_name", string(&plan.service_name)),
        );
    Map::block()
        .comment("Each request's span, with OpenTelemetry's GenAI attributes (no message content).")
        .with(
            "tracing",
            Map::block()
                .with(
                    "random_sampling",
                    Map::flow().with("value", plain(plan.sampling_percent)),
                )
                .with("provider", provider)
                .with("custom_tags", tags),
        )
}

/// The traces collector's cluster (OTLP over gRPC).
pub fn cluster(plan: &TracingPlan) -> Map {
    collector_cluster(COLLECTOR_CLUSTER, &plan.collector)
}

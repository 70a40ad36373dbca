//! Tracing as Envoy Gateway users ask for it (an `EnvoyProxy`'s `spec.telemetry.tracing` with an
//! OpenTelemetry provider), on Envoy's OpenTelemetry tracer, with OpenTelemetry's GenAI attributes
//! on each request's span.
//!
//! The span is Envoy's own for the request, named `{operation} {model}` by its route's decorator.
//! Its GenAI attributes are custom tags: `gen_ai.provider.name` a literal, and the rest (operation,
//! request and response model, token usage, `error.type`) read
//! from where the filter publishes them when the response ends (the core's `SPAN_TAGS`), typed as
//! the conventions type them (token counts as integers). Envoy sets custom tags as it finishes the
//! span, after the stream, so they are there. No message content goes into a span.

use crate::blocks::{single_endpoint, upstream_protocol_options};
use crate::resources::{EnvoyProxySpec, Object};
use crate::yaml::{plain, string, Map, Seq};
use crate::{Options, RenderError};
use bedrock_gateway_core::report::SPAN_TAGS;

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
    let collector = match (
        &provider.host,
        provider.port,
        provider.backend_refs.as_slice(),
    ) {
        (Some(host), port, []) => (host.clone(), port.unwrap_or(4317)),
        (None, None, [reference]) => {
            if reference.kind.as_deref().is_some_and(|k| k != "Backend") {
                return Err(RenderError(format!(
                    "{at}.provider.backendRefs[0]: only a Backend (gateway.envoyproxy.io) can name the collector here; a Service needs a cluster"
                )));
            }
            let (host, port) = backends(&reference.name).ok_or_else(|| {
                RenderError(format!(
                    "{at}.provider.backendRefs[0]: no Backend {:?} with one endpoint in these files",
                    reference.name
                ))
            })?;
            (host, reference.port.unwrap_or(port))
        }
        _ => {
            return Err(RenderError(format!(
                "{at}.provider: name the collector with host and port, or with one backendRef"
            )))
        }
    };
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

/// The collector's cluster (OTLP over gRPC).
pub fn cluster(plan: &TracingPlan) -> Map {
    let (host, port) = &plan.collector;
    let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    Map::block()
        .with("name", plain(COLLECTOR_CLUSTER))
        .with("type", plain(discovery))
        .with("connect_timeout", plain("1s"))
        .extend(upstream_protocol_options(None, true, None))
        .extend(single_endpoint(COLLECTOR_CLUSTER, host, *port))
}

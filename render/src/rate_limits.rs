//! Global rate limits as Envoy Gateway's `BackendTrafficPolicy` writes them, on Envoy's rate-limit
//! filter, with token budgets charged from the tokens Bedrock reported.
//!
//! A rule's client selectors become the entries of a descriptor; its limit goes into the
//! rate-limit service's configuration (envoyproxy/ratelimit's format, written beside envoy.yaml),
//! since Envoy only asks and the service counts. Costs: `cost.request` (a number) is charged when a
//! request arrives, 1 by default; `cost.response` from the metadata key an `llmRequestCosts` entry
//! names is charged when the stream is done, read from where the filter publishes its token counts
//! (`Options::usage_operator`: filter state for the `.wasm`, dynamic metadata for the native module).

use crate::resources::{Object, RouteSpec, TrafficPolicySpec};
use crate::yaml::{line, quoted, single_endpoint, upstream_protocol_options};
use crate::RenderError;
use bedrock_gateway_core::config::costs::{RawRequestCost, RequestCost};
use std::fmt::Write;

/// The rate-limit domain of every descriptor the gateway sends.
pub const DOMAIN: &str = "ai-gateway";

#[derive(Debug)]
pub struct RateLimitPlan {
    pub rules: Vec<RulePlan>,
}

#[derive(Debug)]
pub struct RulePlan {
    pub selectors: Vec<Selector>,
    pub requests: u64,
    /// envoyproxy/ratelimit's unit: second, minute, hour, day.
    pub unit: &'static str,
    /// Charged as a request arrives; 0 only checks the budget.
    pub request_cost: u64,
    /// Charged when the stream is done: the `llmRequestCosts` metadata key holding the cost.
    pub response_cost: Option<String>,
}

#[derive(Debug)]
pub enum Selector {
    /// One counter per value of the header.
    Distinct(String),
    Exact(String, String),
    RegularExpression(String, String),
}

/// The one `BackendTrafficPolicy`, if any, resolved against the routes' `llmRequestCosts`.
pub fn plan(
    policies: &[&Object<TrafficPolicySpec>],
    routes: &[&Object<RouteSpec>],
    gateway: Option<&str>,
) -> Result<Option<RateLimitPlan>, RenderError> {
    let policy = match policies {
        [] => return Ok(None),
        [only] => only,
        [first, second, ..] => {
            return Err(RenderError(format!(
                "BackendTrafficPolicy {:?} and {:?}: at most one rate-limit policy is supported",
                first.metadata.name, second.metadata.name
            )))
        }
    };
    let label = format!("BackendTrafficPolicy {:?}", policy.metadata.name);
    for (i, target) in policy.spec.target_refs.iter().enumerate() {
        if target.kind != "Gateway" || Some(target.name.as_str()) != gateway {
            return Err(RenderError(format!(
                "{label}: spec.targetRefs[{i}]: only the file's Gateway can be targeted (its limits apply to every route)"
            )));
        }
    }
    if policy.spec.target_refs.is_empty() {
        return Err(RenderError(format!("{label}: spec.targetRefs is empty")));
    }
    let rate_limit = &policy.spec.rate_limit;
    if rate_limit.limit_type != "Global" || rate_limit.local.is_some() {
        return Err(RenderError(format!(
            "{label}: spec.rateLimit.type: only Global is supported"
        )));
    }
    let global = rate_limit.global.as_ref().ok_or_else(|| {
        RenderError(format!(
            "{label}: spec.rateLimit.global is required for type Global"
        ))
    })?;
    if global.rules.is_empty() {
        return Err(RenderError(format!(
            "{label}: spec.rateLimit.global.rules is empty"
        )));
    }
    let mut rules = Vec::new();
    for (i, rule) in global.rules.iter().enumerate() {
        let at = format!("{label}: spec.rateLimit.global.rules[{i}]");
        let mut selectors = Vec::new();
        for (j, selector) in rule.client_selectors.iter().enumerate() {
            if selector.source_cidr.is_some() {
                return Err(RenderError(format!(
                    "{at}.clientSelectors[{j}].sourceCIDR is not supported"
                )));
            }
            for (k, header) in selector.headers.iter().enumerate() {
                let field = format!("{at}.clientSelectors[{j}].headers[{k}]");
                let name = header.name.to_ascii_lowercase();
                let value = || {
                    header.value.clone().ok_or_else(|| {
                        RenderError(format!("{field}.value is required for this type"))
                    })
                };
                selectors.push(match header.match_type.as_deref() {
                    Some("Distinct") => Selector::Distinct(name),
                    None | Some("Exact") => Selector::Exact(name, value()?),
                    Some("RegularExpression") => Selector::RegularExpression(name, value()?),
                    Some(other) => {
                        return Err(RenderError(format!(
                            "{field}.type: {other:?} is not Exact, Distinct or RegularExpression"
                        )))
                    }
                });
            }
        }
        let unit = match rule.limit.unit.as_str() {
            "Second" => "second",
            "Minute" => "minute",
            "Hour" => "hour",
            "Day" => "day",
            other => {
                return Err(RenderError(format!(
                    "{at}.limit.unit: {other:?} is not Second, Minute, Hour or Day"
                )))
            }
        };
        let (mut request_cost, mut response_cost) = (1, None);
        if let Some(cost) = &rule.cost {
            if let Some(request) = &cost.request {
                request_cost = match (request.from.as_str(), request.number, &request.metadata) {
                    ("Number", Some(number), None) => number,
                    _ => {
                        return Err(RenderError(format!(
                            "{at}.cost.request: only `from: Number` with a number is supported"
                        )))
                    }
                };
            }
            if let Some(response) = &cost.response {
                let metadata = match (response.from.as_str(), &response.metadata) {
                    ("Metadata", Some(metadata)) if response.number.is_none() => metadata,
                    _ => {
                        return Err(RenderError(format!(
                            "{at}.cost.response: only `from: Metadata` is supported"
                        )))
                    }
                };
                if metadata.namespace != "io.envoy.ai_gateway" {
                    return Err(RenderError(format!(
                        "{at}.cost.response.metadata.namespace must be io.envoy.ai_gateway"
                    )));
                }
                response_cost =
                    Some(token_state(routes, &metadata.key).map_err(|e| {
                        RenderError(format!("{at}.cost.response.metadata.key: {e}"))
                    })?);
            }
        }
        rules.push(RulePlan {
            selectors,
            requests: rule.limit.requests,
            unit,
            request_cost,
            response_cost,
        });
    }
    Ok(Some(RateLimitPlan { rules }))
}

/// An `llmRequestCosts` metadata key some route declares: the filter publishes each under its key.
fn token_state(routes: &[&Object<RouteSpec>], key: &str) -> Result<String, String> {
    routes
        .iter()
        .flat_map(|route| route.spec.llm_request_costs.iter())
        .find(|cost| cost.metadata_key == key)
        .map(|cost| cost.metadata_key.clone())
        .ok_or_else(|| {
            format!("{key:?} is not a metadataKey of any AIGatewayRoute's llmRequestCosts")
        })
}

/// One `llmRequestCosts` entry, in the plugin configuration's own type.
pub type CostPlan = RawRequestCost;

/// Every route's `llmRequestCosts`, checked as the filter will check them (types, CEL). The filter
/// computes them for every request, so a key two routes define must mean the same on both.
pub fn plan_costs(routes: &[&Object<RouteSpec>]) -> Result<Vec<CostPlan>, RenderError> {
    let mut costs: Vec<CostPlan> = Vec::new();
    for route in routes {
        for (i, cost) in route.spec.llm_request_costs.iter().enumerate() {
            let at = format!(
                "AIGatewayRoute {:?}: spec.llmRequestCosts[{i}]",
                route.metadata.name
            );
            let entry = CostPlan {
                metadata_key: cost.metadata_key.clone(),
                kind: cost.cost_type.clone(),
                cel: cost.cel.clone(),
            };
            RequestCost::parse(entry.clone()).map_err(|e| RenderError(format!("{at}: {e}")))?;
            match costs.iter().find(|c| c.metadata_key == entry.metadata_key) {
                Some(known) if *known != entry => {
                    return Err(RenderError(format!(
                        "{at}: metadataKey {:?} is defined differently by another route; the gateway computes every key for every request",
                        entry.metadata_key
                    )))
                }
                Some(_) => {}
                None => costs.push(entry),
            }
        }
    }
    Ok(costs)
}

/// The descriptor actions of rule `index`: which rule, then each selector's entry.
fn actions(o: &mut String, indent: usize, index: usize, rule: &RulePlan) {
    line(o, indent, "actions:");
    line(
        o,
        indent,
        &format!("- generic_key: {{ descriptor_key: rule, descriptor_value: \"{index}\" }}"),
    );
    for selector in &rule.selectors {
        match selector {
            Selector::Distinct(name) => line(o, indent, &format!(
                "- request_headers: {{ header_name: {}, descriptor_key: {} }}", quoted(name), quoted(name)
            )),
            Selector::Exact(name, value) => line(o, indent, &format!(
                "- header_value_match: {{ descriptor_key: {}, descriptor_value: {}, headers: [ {{ name: {}, string_match: {{ exact: {} }} }} ] }}",
                quoted(name), quoted(value), quoted(name), quoted(value)
            )),
            Selector::RegularExpression(name, value) => line(o, indent, &format!(
                "- header_value_match: {{ descriptor_key: {}, descriptor_value: {}, headers: [ {{ name: {}, string_match: {{ safe_regex: {{ regex: {} }} }} }} ] }}",
                quoted(name), quoted(value), quoted(name), quoted(value)
            )),
        }
    }
}

/// Envoy's rate-limit filter, placed between the routing stage and the router.
pub fn write_filter(o: &mut String, indent: usize, plan: &RateLimitPlan, options: &crate::Options) {
    line(o, indent, "- name: envoy.filters.http.ratelimit");
    line(o, indent + 1, "typed_config:");
    let t = indent + 2;
    line(
        o,
        t,
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
    );
    line(o, t, &format!("domain: {DOMAIN}"));
    line(o, t, "failure_mode_deny: false");
    line(o, t, "timeout: 0.5s");
    line(o, t, "# In the filter's own configuration: Envoy sends hits_addend from these, not from route policies.");
    line(o, t, "rate_limits:");
    for (index, rule) in plan.rules.iter().enumerate() {
        line(
            o,
            t,
            &format!(
                "# rules[{index}]: {} per {}, checked (cost {}) as a request arrives",
                rule.requests, rule.unit, rule.request_cost
            ),
        );
        line(
            o,
            t,
            &format!("- hits_addend: {{ number: {} }}", rule.request_cost),
        );
        actions(o, t + 1, index, rule);
        if let Some(figure) = &rule.response_cost {
            line(
                o,
                t,
                &format!(
                    "# rules[{index}]: charged with the request's cost ({figure}) when its stream is done"
                ),
            );
            line(o, t, "- apply_on_stream_done: true");
            line(
                o,
                t + 1,
                &format!(
                    "hits_addend: {{ format: \"{}\" }}",
                    options.usage_operator(figure)
                ),
            );
            actions(o, t + 1, index, rule);
        }
    }
    line(o, t, "rate_limit_service:");
    line(o, t + 1, "transport_api_version: V3");
    line(
        o,
        t + 1,
        "grpc_service: { envoy_grpc: { cluster_name: rate-limit-service } }",
    );
}

/// Envoy's 429 carries no body; give it one, which the filter words in the caller's API format.
pub fn write_local_reply(o: &mut String, indent: usize) {
    line(o, indent, "# Envoy's rate-limit reply has no body; give it one, which the filter rewrites in the caller's API format.");
    line(o, indent, "local_reply_config:");
    line(o, indent + 1, "mappers:");
    line(o, indent + 1, "- filter: { status_code_filter: { comparison: { op: EQ, value: { default_value: 429, runtime_key: ai_gateway.rate_limited_status } } } }");
    line(o, indent + 2, "body: { inline_string: \"rate limited\" }");
}

pub fn write_cluster(o: &mut String, address: &(String, u16)) {
    line(o, 1, "- name: rate-limit-service");
    line(o, 2, "type: STATIC");
    line(o, 2, "connect_timeout: 1s");
    upstream_protocol_options(o, None, true, false);
    single_endpoint(o, "rate-limit-service", &address.0, address.1);
}

/// The limits, for the rate-limit service (envoyproxy/ratelimit's configuration format).
pub fn service_configuration(plan: &RateLimitPlan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# The limits of the gateway's BackendTrafficPolicy, for its rate-limit service (envoyproxy/ratelimit's format).");
    let _ = writeln!(o, "domain: {DOMAIN}");
    let _ = writeln!(o, "descriptors:");
    for (index, rule) in plan.rules.iter().enumerate() {
        let _ = writeln!(o, "- key: rule");
        let _ = writeln!(o, "  value: \"{index}\"");
        let mut indent = 1;
        for selector in &rule.selectors {
            let (key, value) = match selector {
                Selector::Distinct(name) => (name, None),
                Selector::Exact(name, value) | Selector::RegularExpression(name, value) => {
                    (name, Some(value))
                }
            };
            line(&mut o, indent, "descriptors:");
            line(&mut o, indent, &format!("- key: {}", quoted(key)));
            if let Some(value) = value {
                line(&mut o, indent + 1, &format!("value: {}", quoted(value)));
            }
            indent += 1;
        }
        line(
            &mut o,
            indent,
            &format!(
                "rate_limit: {{ unit: {}, requests_per_unit: {} }}",
                rule.unit, rule.requests
            ),
        );
    }
    o
}

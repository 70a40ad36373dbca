//! Global rate limits as Envoy Gateway's `BackendTrafficPolicy` writes them, on Envoy's rate-limit
//! filter, with token budgets charged from the tokens Bedrock reported.
//!
//! A rule's client selectors become the entries of a descriptor; its limit goes into the
//! rate-limit service's configuration (envoyproxy/ratelimit's format, written beside envoy.yaml),
//! since Envoy only asks and the service counts. Costs: `cost.request` (a number) is charged when a
//! request arrives, 1 by default; `cost.response` from the metadata key an `llmRequestCosts` entry
//! names is charged when the stream is done, read from where the filter publishes its token counts
//! (`Options::usage_operator`: filter state for the `.wasm`, dynamic metadata for the native module).

use crate::blocks::{single_endpoint, upstream_protocol_options};
use crate::resources::{Object, RouteSpec, TrafficPolicySpec};
use crate::yaml::{document, plain, string, Map, Seq};
use crate::RenderError;
use bedrock_gateway_core::config::costs::{RawRequestCost, RequestCost};

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
fn actions(index: usize, rule: &RulePlan) -> Seq {
    let mut actions = Seq::block().item(Map::block().with(
        "generic_key",
        plain(format!(
            "{{ descriptor_key: rule, descriptor_value: \"{index}\" }}"
        )),
    ));
    for selector in &rule.selectors {
        let header = |name: &str, string_match: Map| {
            Seq::flow().item(
                Map::flow()
                    .with("name", string(name))
                    .with("string_match", string_match),
            )
        };
        let action = match selector {
            Selector::Distinct(name) => Map::block().with(
                "request_headers",
                Map::flow()
                    .with("header_name", string(name))
                    .with("descriptor_key", string(name)),
            ),
            Selector::Exact(name, value) => Map::block().with(
                "header_value_match",
                Map::flow()
                    .with("descriptor_key", string(name))
                    .with("descriptor_value", string(value))
                    .with(
                        "headers",
                        header(name, Map::flow().with("exact", string(value))),
                    ),
            ),
            Selector::RegularExpression(name, value) => {
                let regex =
                    Map::flow().with("safe_regex", Map::flow().with("regex", string(value)));
                Map::block().with(
                    "header_value_match",
                    Map::flow()
                        .with("descriptor_key", string(name))
                        .with("descriptor_value", string(value))
                        .with("headers", header(name, regex)),
                )
            }
        };
        actions.push(action);
    }
    actions
}

/// Envoy's rate-limit filter, placed between the routing stage and the router.
pub fn filter(plan: &RateLimitPlan, options: &crate::Options) -> Map {
    let mut rate_limits = Seq::block();
    for (index, rule) in plan.rules.iter().enumerate() {
        rate_limits.note(format!(
            "rules[{index}]: {} per {}, checked (cost {}) as a request arrives",
            rule.requests, rule.unit, rule.request_cost
        ));
        rate_limits.push(
            Map::block()
                .with(
                    "hits_addend",
                    Map::flow().with("number", plain(rule.request_cost)),
                )
                .with("actions", actions(index, rule)),
        );
        if let Some(figure) = &rule.response_cost {
            rate_limits.note(format!(
                "rules[{index}]: charged with the request's cost ({figure}) when its stream is done"
            ));
            rate_limits.push(
                Map::block()
                    .with("apply_on_stream_done", plain(true))
                    .with(
                        "hits_addend",
                        Map::flow().with(
                            "format",
                            plain(format!("\"{}\"", options.usage_operator(figure))),
                        ),
                    )
                    .with("actions", actions(index, rule)),
            );
        }
    }
    let config = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"),
        )
        .with("domain", plain(DOMAIN))
        .with("failure_mode_deny", plain(false))
        .with("timeout", plain("0.5s"))
        .comment("In the filter's own configuration: Envoy sends hits_addend from these, not from route policies.")
        .with("rate_limits", rate_limits)
        .with(
            "rate_limit_service",
            Map::block()
                .with("transport_api_version", plain("V3"))
                .with(
                    "grpc_service",
                    plain("{ envoy_grpc: { cluster_name: rate-limit-service } }"),
                ),
        );
    Map::block()
        .with("name", plain("envoy.filters.http.ratelimit"))
        .with("typed_config", config)
}

/// Envoy's 429 carries no body; give it one, which the filter words in the caller's API format.
pub fn local_reply() -> Map {
    let mapper = Map::block()
        .with("filter", plain("{ status_code_filter: { comparison: { op: EQ, value: { default_value: 429, runtime_key: ai_gateway.rate_limited_status } } } }"))
        .with("body", plain("{ inline_string: \"rate limited\" }"));
    Map::block()
        .comment("Envoy's rate-limit reply has no body; give it one, which the filter rewrites in the caller's API format.")
        .with(
            "local_reply_config",
            Map::block().with("mappers", Seq::block().item(mapper)),
        )
}

pub fn cluster(address: &(String, u16)) -> Map {
    Map::block()
        .with("name", plain("rate-limit-service"))
        .with("type", plain("STATIC"))
        .with("connect_timeout", plain("1s"))
        .extend(upstream_protocol_options(None, true, None))
        .extend(single_endpoint("rate-limit-service", &address.0, address.1))
}

/// The limits, for the rate-limit service (envoyproxy/ratelimit's configuration format).
pub fn service_configuration(plan: &RateLimitPlan) -> String {
    let mut descriptors = Seq::block();
    for (index, rule) in plan.rules.iter().enumerate() {
        // Innermost first: each selector's descriptor holds the next, the last holds the limit.
        let mut inner = Map::block().with(
            "rate_limit",
            Map::flow()
                .with("unit", plain(rule.unit))
                .with("requests_per_unit", plain(rule.requests)),
        );
        for selector in rule.selectors.iter().rev() {
            let (key, value) = match selector {
                Selector::Distinct(name) => (name, None),
                Selector::Exact(name, value) | Selector::RegularExpression(name, value) => {
                    (name, Some(value))
                }
            };
            let mut descriptor = Map::block().with("key", string(key));
            if let Some(value) = value {
                descriptor.push("value", string(value));
            }
            inner = Map::block().with("descriptors", Seq::block().item(descriptor.extend(inner)));
        }
        descriptors.push(
            Map::block()
                .with("key", plain("rule"))
                .with("value", plain(format!("\"{index}\"")))
                .extend(inner),
        );
    }
    let root = Map::block()
        .comment("The limits of the gateway's BackendTrafficPolicy, for its rate-limit service (envoyproxy/ratelimit's format).")
        .with("domain", plain(DOMAIN))
        .with("descriptors", descriptors);
    document(&[], &root)
}

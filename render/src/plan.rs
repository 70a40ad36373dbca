//! What the resources mean for this gateway: its listeners, routes, clusters and plugin backends.
//!
//! Every cross-reference is resolved here (rule -> AIServiceBackend -> Backend, policies by their
//! `targetRefs`, credentials from their Secret), so that writing Envoy's configuration afterwards
//! cannot fail. Namespaces are ignored: names must be unique per kind.

use crate::credentials_file::{profile_keys, StaticKeys};
use crate::resources::*;
use crate::RenderError;
use bedrock_gateway_core::aws::credentials::parse_rfc3339;
use bedrock_gateway_core::config::{HostedTools, PromptCaching, Schema};
use std::collections::BTreeMap;

/// The header the routing stage fills from the body's `model`.
pub const MODEL_HEADER: &str = "x-ai-eg-model";
/// Envoy AI Gateway's `aigw run` port, and this project's.
pub const DEFAULT_PORT: u16 = 1975;
/// LLM replies, streamed ones above all, outlast a typical HTTP timeout.
pub const DEFAULT_ROUTE_TIMEOUT_MS: u64 = 300_000;
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

#[derive(Debug)]
pub struct Plan {
    pub listeners: Vec<ListenerPlan>,
    pub routes: Vec<RoutePlan>,
    pub clusters: Vec<ClusterPlan>,
    /// Composite clusters: each tries its clusters in order, one per attempt.
    pub failovers: Vec<FailoverPlan>,
    pub models: Vec<ModelPlan>,
    pub rate_limit: Option<crate::rate_limits::RateLimitPlan>,
    /// Every route's `llmRequestCosts`, computed by the filter for each request.
    pub request_costs: Vec<crate::rate_limits::CostPlan>,
    /// Each request's span, to an OpenTelemetry collector (an `EnvoyProxy`'s tracing).
    pub tracing: Option<crate::telemetry::TracingPlan>,
    /// An OpenTelemetry collector the metrics are pushed to.
    pub metrics: Option<crate::telemetry::MetricsPlan>,
    /// Who may call: Envoy's authentication and authorization filters after the routing stage.
    pub callers: Option<crate::callers::CallersPlan>,
    /// Where each resource of the plan came from, for the header of the rendered file.
    pub sources: Vec<String>,
}

#[derive(Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Serve only this `Host` (the Gateway listener's `hostname`), or any.
    pub hostname: Option<String>,
}

#[derive(Debug)]
pub struct RoutePlan {
    /// `AIGatewayRoute "name" rules[i]`, written above the route.
    pub origin: String,
    pub headers: Vec<HeaderPlan>,
    pub target: Vec<(String, u32)>,
    pub timeout_ms: u64,
    /// Set when the target is a failover (composite) cluster: how Envoy retries through it.
    pub retry: Option<RetryPlan>,
    /// The name of its requests' spans (`chat <model>`), when requests are traced.
    pub span_name: Option<String>,
}

/// A rule's backendRefs in priority order, as one Envoy composite cluster named after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    pub name: String,
    pub clusters: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPlan {
    /// One retry per fallback.
    pub retries: usize,
    /// `timeouts.backendRequest`: how long one attempt may take.
    pub per_try_timeout_ms: Option<u64>,
}

#[derive(Debug)]
pub struct HeaderPlan {
    pub name: String,
    pub value: String,
    pub regex: bool,
}

#[derive(Debug)]
pub struct ClusterPlan {
    pub name: String,
    pub endpoints: Vec<(String, u16)>,
    pub discovery: Discovery,
    pub tls: Option<TlsPlan>,
    pub backend: BackendPlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// IP addresses only.
    Static,
    /// One host name: one connection pool, re-resolved as DNS changes (AWS endpoints).
    LogicalDns,
    /// Several endpoints, some named.
    StrictDns,
}

#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub sni: String,
    pub subject_alt_names: Vec<SanPlan>,
}

#[derive(Debug, Clone)]
pub enum SanPlan {
    Dns(String),
    Uri(String),
}

/// One entry of the plugin configuration's `backends`.
#[derive(Debug, Clone)]
pub struct BackendPlan {
    pub schema: Schema,
    pub region: String,
    /// The `Host` sent and signed when it is not `bedrock-runtime.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    pub credentials: CredentialsPlan,
    pub model_name_override: Option<String>,
    /// `bedrock-gateway/prompt-caching`: `caller` or `auto`.
    pub prompt_caching: Option<PromptCaching>,
    /// `bedrock-gateway/hosted-tools`: `drop` or `refuse`.
    pub hosted_tools: Option<HostedTools>,
    /// Schema `openai` with `version: v1`: OpenAI's API under `/v1` (Bedrock Mantle) instead of `/openai/v1`.
    pub api_prefix: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub enum CredentialsPlan {
    /// From the policy's `credentialsFile`: keys written into the plugin configuration.
    Static(StaticKeys),
    /// No `credentialsFile`: the AWS SDKs' default chain, decided from the environment at start-up.
    DefaultChain,
    /// `type: APIKey`: a Bedrock API key, which Envoy injects from the file it watches.
    ApiKey(ApiKeyPlan),
}

/// A Bedrock API key from a Secret: written to its own file, which Envoy reads through SDS and
/// reads again when it changes, so the key rotates without a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyPlan {
    /// The Secret's name, which names the files.
    pub secret: String,
    pub key: String,
}

impl std::fmt::Debug for ApiKeyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyPlan {{ secret: {:?}, .. }}", self.secret)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ModelPlan {
    pub id: String,
    pub owned_by: Option<String>,
    pub created: Option<u64>,
}

/// The resources of one file, indexed by kind and name.
#[derive(Default)]
struct Index<'a> {
    gateways: Vec<&'a Object<GatewaySpec>>,
    routes: Vec<&'a Object<RouteSpec>>,
    service_backends: BTreeMap<&'a str, &'a Object<ServiceBackendSpec>>,
    security_policies: Vec<&'a Object<SecurityPolicySpec>>,
    backends: BTreeMap<&'a str, &'a Object<BackendSpec>>,
    tls_policies: Vec<&'a Object<TlsPolicySpec>>,
    traffic_policies: Vec<&'a Object<TrafficPolicySpec>>,
    client_policies: Vec<&'a Object<ClientPolicySpec>>,
    proxies: Vec<&'a Object<EnvoyProxySpec>>,
    secrets: BTreeMap<&'a str, &'a Secret>,
}

fn unique<'a, T>(
    map: &mut BTreeMap<&'a str, &'a T>,
    kind: &str,
    name: &'a str,
    item: &'a T,
) -> Result<(), RenderError> {
    if map.insert(name, item).is_some() {
        return Err(RenderError(format!(
            "{kind} {name:?} is defined twice (namespaces are ignored, so names must be unique per kind)"
        )));
    }
    Ok(())
}

fn index(resources: &[Resource]) -> Result<Index<'_>, RenderError> {
    let mut index = Index::default();
    for resource in resources {
        match resource {
            Resource::Gateway(g) => index.gateways.push(g),
            Resource::AIGatewayRoute(r) => index.routes.push(r),
            Resource::AIServiceBackend(b) => unique(
                &mut index.service_backends,
                "AIServiceBackend",
                &b.metadata.name,
                b,
            )?,
            Resource::BackendSecurityPolicy(p) => index.security_policies.push(p),
            Resource::Backend(b) => unique(&mut index.backends, "Backend", &b.metadata.name, b)?,
            Resource::BackendTLSPolicy(p) => index.tls_policies.push(p),
            Resource::BackendTrafficPolicy(p) => index.traffic_policies.push(p),
            Resource::SecurityPolicy(p) => index.client_policies.push(p),
            Resource::EnvoyProxy(p) => index.proxies.push(p),
            Resource::Secret(s) => unique(&mut index.secrets, "Secret", &s.metadata.name, s)?,
            Resource::Ignored => {}
        }
    }
    Ok(index)
}

/// A route's span name as OpenTelemetry's GenAI conventions name it, `{operation} {model}`: the
/// model a route matches, and `embeddings` for the embedding models (by their Bedrock ids).
fn span_name(route: &RoutePlan) -> String {
    let model = route
        .headers
        .iter()
        .find(|h| h.name == "x-ai-eg-model" && !h.regex)
        .map_or("", |h| h.value.as_str());
    let operation = if bedrock_gateway_core::api::embeddings::Family::of(model).is_some() {
        "embeddings"
    } else {
        "chat"
    };
    if model.is_empty() {
        operation.to_owned()
    } else {
        format!("{operation} {model}")
    }
}

/// Resolves the resources into the gateway they describe.
pub fn plan(resources: &[Resource]) -> Result<Plan, RenderError> {
    let index = index(resources)?;
    if index.routes.is_empty() {
        return Err(RenderError(
            "no AIGatewayRoute: nothing would be served".into(),
        ));
    }
    let listeners = listeners(&index)?;
    let mut clusters: Vec<ClusterPlan> = Vec::new();
    let mut failovers: Vec<FailoverPlan> = Vec::new();
    let mut routes = Vec::new();
    let mut models: Vec<ModelPlan> = Vec::new();
    let mut model_origin: BTreeMap<String, String> = BTreeMap::new();
    for route in &index.routes {
        let label = format!("AIGatewayRoute {:?}", route.metadata.name);
        if let Some(schema) = &route.spec.schema {
            if schema.name != "OpenAI" {
                return Err(RenderError(format!(
                    "{label}: spec.schema.name: {:?} is not supported (callers speak OpenAI, and Anthropic under /anthropic, on every route)",
                    schema.name
                )));
            }
        }
        if route.spec.rules.is_empty() {
            return Err(RenderError(format!("{label}: spec.rules is empty")));
        }
        for (rule_index, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("{label}: spec.rules[{rule_index}]");
            let (target, failover) = rule_target(&index, &at, rule, &mut clusters)?;
            let per_try_timeout_ms = match rule.timeouts.as_ref().and_then(|t| t.backend_request.as_ref()) {
                None => None,
                Some(_) if failover.is_none() => {
                    return Err(RenderError(format!(
                        "{at}.timeouts.backendRequest bounds each try of a failover, but this rule has no backendRefs of another priority; use timeouts.request"
                    )))
                }
                Some(text) => Some(parse_duration_ms(text).ok_or_else(|| {
                    RenderError(format!("{at}.timeouts.backendRequest: {text:?} is not a duration such as 10s or 1m"))
                })?),
            };
            let retry = failover.as_ref().map(|f| RetryPlan {
                retries: f.clusters.len() - 1,
                per_try_timeout_ms,
            });
            if let Some(failover) = failover {
                if !failovers.contains(&failover) {
                    failovers.push(failover);
                }
            }
            let timeout_ms = match rule.timeouts.as_ref() {
                None => DEFAULT_ROUTE_TIMEOUT_MS,
                Some(timeouts) => {
                    match &timeouts.request {
                        Some(text) => parse_duration_ms(text)
                            .ok_or_else(|| RenderError(format!("{at}.timeouts.request: {text:?} is not a duration such as 60s, 5m or 1h30m")))?,
                        None => DEFAULT_ROUTE_TIMEOUT_MS,
                    }
                }
            };
            let created = match &rule.models_created_at {
                Some(text) => Some(parse_rfc3339(text).ok_or_else(|| {
                    RenderError(format!("{at}.modelsCreatedAt: {text:?} is not an RFC 3339 time such as 2024-05-21T10:00:00Z"))
                })?),
                None => None,
            };
            let matches: Vec<Option<&RuleMatch>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(Some).collect()
            };
            for (match_index, rule_match) in matches.into_iter().enumerate() {
                let mut headers = Vec::new();
                for (header_index, header) in rule_match
                    .map_or(&[][..], |m| &m.headers[..])
                    .iter()
                    .enumerate()
                {
                    let field = format!("{at}.matches[{match_index}].headers[{header_index}]");
                    let regex = match header.match_type.as_deref() {
                        None | Some("Exact") => false,
                        Some("RegularExpression") => true,
                        Some(other) => {
                            return Err(RenderError(format!(
                                "{field}.type: {other:?} is not Exact or RegularExpression"
                            )))
                        }
                    };
                    if header.name.is_empty() {
                        return Err(RenderError(format!("{field}.name is empty")));
                    }
                    if !regex && header.name.eq_ignore_ascii_case(MODEL_HEADER) {
                        if let Some(first) = model_origin.get(&header.value) {
                            return Err(RenderError(format!(
                                "{field}: model {:?} is already matched by {first}; Envoy would only ever use the first",
                                header.value
                            )));
                        }
                        model_origin.insert(header.value.clone(), at.clone());
                        models.push(ModelPlan {
                            id: header.value.clone(),
                            owned_by: rule.models_owned_by.clone(),
                            created,
                        });
                    }
                    headers.push(HeaderPlan {
                        name: header.name.to_ascii_lowercase(),
                        value: header.value.clone(),
                        regex,
                    });
                }
                routes.push(RoutePlan {
                    origin: at.clone(),
                    headers,
                    target: target.clone(),
                    timeout_ms,
                    retry,
                    span_name: None,
                });
            }
        }
    }
    let request_costs = crate::rate_limits::plan_costs(&index.routes)?;
    let collector_backend = |name: &str| {
        let backend = index.backends.get(name)?;
        match backend.spec.endpoints.as_slice() {
            [endpoint] => match (&endpoint.fqdn, &endpoint.ip) {
                (Some(fqdn), None) => Some((fqdn.hostname.clone(), fqdn.port)),
                (None, Some(ip)) => Some((ip.address.clone(), ip.port)),
                _ => None,
            },
            _ => None,
        }
    };
    let tracing = crate::telemetry::plan(&index.proxies, &collector_backend)?;
    let metrics = crate::telemetry::metrics_plan(&index.proxies, &collector_backend)?;
    if tracing.is_some() {
        for route in &mut routes {
            route.span_name = Some(span_name(route));
        }
    }
    let gateway_name = index.gateways.first().map(|g| g.metadata.name.as_str());
    let rate_limit =
        crate::rate_limits::plan(&index.traffic_policies, &index.routes, gateway_name)?;
    let callers = crate::callers::plan(&index.client_policies, &index.secrets, gateway_name)?;
    let mut sources = Vec::new();
    for resource in resources {
        let (kind, name) = match resource {
            Resource::Gateway(o) => (&o.kind, &o.metadata.name),
            Resource::AIGatewayRoute(o) => (&o.kind, &o.metadata.name),
            Resource::AIServiceBackend(o) => (&o.kind, &o.metadata.name),
            Resource::BackendSecurityPolicy(o) => (&o.kind, &o.metadata.name),
            Resource::Backend(o) => (&o.kind, &o.metadata.name),
            Resource::BackendTLSPolicy(o) => (&o.kind, &o.metadata.name),
            Resource::BackendTrafficPolicy(o) => (&o.kind, &o.metadata.name),
            Resource::SecurityPolicy(o) => (&o.kind, &o.metadata.name),
            Resource::EnvoyProxy(o) => (&o.kind, &o.metadata.name),
            Resource::Secret(o) => (&o.kind, &o.metadata.name),
            Resource::Ignored => continue,
        };
        sources.push(format!("{kind} {name}"));
    }
    Ok(Plan {
        listeners,
        routes,
        clusters,
        failovers,
        models,
        rate_limit,
        request_costs,
        tracing,
        metrics,
        callers,
        sources,
    })
}

fn listeners(index: &Index) -> Result<Vec<ListenerPlan>, RenderError> {
    let gateway = match index.gateways.as_slice() {
        [] => {
            // A file without a Gateway runs locally, as `aigw run` does: loopback, port 1975.
            return Ok(vec![ListenerPlan {
                name: "ai_gateway".into(),
                address: "127.0.0.1".into(),
                port: DEFAULT_PORT,
                hostname: None,
            }]);
        }
        [gateway] => gateway,
        [first, second, ..] => {
            return Err(RenderError(format!(
            "Gateway {:?} and Gateway {:?}: one file renders one gateway (parentRefs are ignored)",
            first.metadata.name, second.metadata.name
        )))
        }
    };
    let label = format!("Gateway {:?}", gateway.metadata.name);
    let address = match gateway.spec.addresses.as_slice() {
        [] => "0.0.0.0".to_owned(),
        [only] => {
            if only
                .address_type
                .as_deref()
                .is_some_and(|t| t != "IPAddress")
            {
                return Err(RenderError(format!(
                    "{label}: spec.addresses[0].type: only IPAddress is supported"
                )));
            }
            only.value.clone()
        }
        _ => {
            return Err(RenderError(format!(
                "{label}: spec.addresses: at most one address is supported"
            )))
        }
    };
    if gateway.spec.listeners.is_empty() {
        return Err(RenderError(format!("{label}: spec.listeners is empty")));
    }
    let mut listeners: Vec<ListenerPlan> = Vec::new();
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        let at = format!("{label}: spec.listeners[{i}]");
        if listener.protocol != "HTTP" {
            return Err(RenderError(format!(
                "{at}.protocol: {:?} is not supported (only HTTP)",
                listener.protocol
            )));
        }
        if listener.tls.is_some() {
            return Err(RenderError(format!(
                "{at}.tls is not supported (terminate TLS in front of the gateway)"
            )));
        }
        if listener.port == 0 {
            return Err(RenderError(format!("{at}.port must not be 0")));
        }
        if listeners.iter().any(|l| l.port == listener.port) {
            return Err(RenderError(format!(
                "{at}.port: {} is used by another listener",
                listener.port
            )));
        }
        listeners.push(ListenerPlan {
            name: format!("ai_gateway_{}", listener.port),
            address: address.clone(),
            port: listener.port,
            hostname: listener.hostname.clone(),
        });
    }
    if let [only] = listeners.as_mut_slice() {
        only.name = "ai_gateway".into();
    }
    Ok(listeners)
}

/// Cluster names and their weights.
type WeightedClusters = Vec<(String, u32)>;

/// The clusters (and weights) a rule sends to, creating each cluster the first time it is named;
/// backendRefs of several priorities make one failover cluster trying them in priority order.
fn rule_target(
    index: &Index,
    at: &str,
    rule: &Rule,
    clusters: &mut Vec<ClusterPlan>,
) -> Result<(WeightedClusters, Option<FailoverPlan>), RenderError> {
    if rule.backend_refs.is_empty() {
        return Err(RenderError(format!(
            "{at}.backendRefs is empty: the rule has nowhere to send requests"
        )));
    }
    let mut target: Vec<(String, u32)> = Vec::new();
    for (i, reference) in rule.backend_refs.iter().enumerate() {
        let field = format!("{at}.backendRefs[{i}]");
        if reference.group.is_some() || reference.kind.is_some() {
            let kind = reference.kind.as_deref().unwrap_or("");
            if kind != "AIServiceBackend" {
                return Err(RenderError(format!(
                    "{field}.kind: {kind:?} is not supported (only AIServiceBackend)"
                )));
            }
        }
        if reference.header_mutation.is_some() {
            return Err(RenderError(format!(
                "{field}.headerMutation is not supported"
            )));
        }
        if reference.body_mutation.is_some() {
            return Err(RenderError(format!(
                "{field}.bodyMutation is not supported"
            )));
        }
        let service_backend = index
            .service_backends
            .get(reference.name.as_str())
            .ok_or_else(|| {
                RenderError(format!(
                    "{field}.name: there is no AIServiceBackend {:?} in the file",
                    reference.name
                ))
            })?;
        let override_name = reference
            .model_name_override
            .clone()
            .filter(|m| !m.is_empty());
        let cluster_name = match &override_name {
            None => service_backend.metadata.name.clone(),
            Some(model) => format!("{}@{model}", service_backend.metadata.name),
        };
        if !clusters.iter().any(|c| c.name == cluster_name) {
            clusters.push(cluster(
                index,
                service_backend,
                cluster_name.clone(),
                override_name,
            )?);
        }
        if target.iter().any(|(name, _)| *name == cluster_name) {
            return Err(RenderError(format!(
                "{field}: the rule names {:?} twice",
                reference.name
            )));
        }
        target.push((cluster_name, reference.weight.unwrap_or(1)));
    }
    let priorities: Vec<u32> = rule
        .backend_refs
        .iter()
        .map(|r| r.priority.unwrap_or(0))
        .collect();
    if priorities.iter().any(|p| Some(p) != priorities.first()) {
        // Envoy's composite cluster sends attempt N to its Nth cluster: one backend per priority.
        let mut ordered: Vec<(u32, String)> = priorities
            .into_iter()
            .zip(target.into_iter().map(|(name, _)| name))
            .collect();
        ordered.sort_by_key(|(priority, _)| *priority);
        if let Some([(priority, _), _]) = ordered
            .windows(2)
            .find(|pair| matches!(pair, [(a, _), (b, _)] if a == b))
        {
            return Err(RenderError(format!(
                "{at}.backendRefs: two backendRefs have priority {priority}; failover tries one backend per priority, in priority order"
            )));
        }
        let clusters: Vec<String> = ordered.into_iter().map(|(_, name)| name).collect();
        let name = clusters.join(">");
        return Ok((
            vec![(name.clone(), 1)],
            Some(FailoverPlan { name, clusters }),
        ));
    }
    if target.iter().all(|(_, weight)| *weight == 0) {
        return Err(RenderError(format!(
            "{at}.backendRefs: every weight is 0, so nothing would be served"
        )));
    }
    Ok((target, None))
}

fn cluster(
    index: &Index,
    service_backend: &Object<ServiceBackendSpec>,
    name: String,
    model_name_override: Option<String>,
) -> Result<ClusterPlan, RenderError> {
    let label = format!("AIServiceBackend {:?}", service_backend.metadata.name);
    let spec = &service_backend.spec;
    let schema = match (spec.schema.name.as_str(), spec.schema.version.as_deref()) {
        ("AWSBedrock", _) => Schema::Converse,
        ("AWSAnthropic", None | Some(ANTHROPIC_VERSION)) => Schema::Anthropic,
        ("AWSAnthropic", Some(other)) => {
            return Err(RenderError(format!(
                "{label}: spec.schema.version: {other:?} is not supported (Bedrock's Anthropic version is {ANTHROPIC_VERSION})"
            )))
        }
        // OpenAI's own models on Bedrock Runtime's OpenAI API (`/openai/v1`), signed as any
        // Bedrock call: the backend's BackendSecurityPolicy says how.
        ("OpenAI", None | Some("openai/v1" | "v1")) => Schema::Openai,
        ("OpenAI", Some(other)) => {
            return Err(RenderError(format!(
                "{label}: spec.schema.version: {other:?} is not supported (Bedrock serves OpenAI's API under openai/v1, and Bedrock Mantle also under v1)"
            )))
        }
        (other, _) => {
            return Err(RenderError(format!(
                "{label}: spec.schema.name: {other:?} is another provider; this gateway serves AWS Bedrock (AWSBedrock, AWSAnthropic, and OpenAI for OpenAI's models on Bedrock)"
            )))
        }
    };
    let reference = &spec.backend_ref;
    if reference.kind.as_deref().is_some_and(|k| k != "Backend")
        || reference
            .group
            .as_deref()
            .is_some_and(|g| g != "gateway.envoyproxy.io")
    {
        return Err(RenderError(format!(
            "{label}: spec.backendRef must name a Backend (group gateway.envoyproxy.io); Kubernetes Services are not supported"
        )));
    }
    if reference.port.is_some() {
        return Err(RenderError(format!(
            "{label}: spec.backendRef.port: a Backend's endpoints carry their own ports"
        )));
    }
    let backend = index.backends.get(reference.name.as_str()).ok_or_else(|| {
        RenderError(format!(
            "{label}: spec.backendRef.name: there is no Backend {:?} in the file",
            reference.name
        ))
    })?;
    let (policy_region, credentials) = security(index, service_backend)?;
    let (endpoints, discovery, first_fqdn) = endpoints(backend)?;
    // An API key signs nothing, so its region only names the default host: the Backend's
    // hostname says it, and us-east-1 stands in for endpoints that do not.
    let region = policy_region
        .or_else(|| {
            first_fqdn
                .as_ref()
                .and_then(|(host, _)| hostname_region(host))
        })
        .unwrap_or_else(|| "us-east-1".to_owned());
    let tls = tls(index, &backend.metadata.name)?;
    let default_host = format!("bedrock-runtime.{region}.amazonaws.com");
    let host = match (&tls, first_fqdn) {
        (Some(tls), _) => tls.sni.clone(),
        (None, Some((host, port))) if port == 80 || port == 443 => host,
        (None, Some((host, port))) => format!("{host}:{port}"),
        (None, None) => default_host.clone(),
    };
    let endpoint = (host != default_host).then_some(host);
    let options = backend_annotations(&label, &service_backend.metadata.annotations)?;
    Ok(ClusterPlan {
        name,
        endpoints,
        discovery,
        tls,
        backend: BackendPlan {
            schema,
            region,
            endpoint,
            credentials,
            model_name_override,
            prompt_caching: options.prompt_caching,
            hosted_tools: options.hosted_tools,
            api_prefix: (spec.schema.name == "OpenAI"
                && spec.schema.version.as_deref() == Some("v1"))
            .then_some("/v1"),
        },
    })
}

/// The gateway's own settings of a backend, which AI Gateway's API has no field for, as
/// annotations on its `AIServiceBackend` under [`ANNOTATION_PREFIX`]; a key it does not know there
/// is refused rather than ignored.
const ANNOTATION_PREFIX: &str = "bedrock-gateway/";

#[derive(Default)]
struct BackendAnnotations {
    prompt_caching: Option<PromptCaching>,
    hosted_tools: Option<HostedTools>,
}

fn backend_annotations(
    label: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<BackendAnnotations, RenderError> {
    let mut options = BackendAnnotations::default();
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        fn one_of<T: Copy>(
            allowed: &[(&str, T)],
            value: &str,
            at: impl FnOnce() -> String,
        ) -> Result<T, RenderError> {
            match allowed.iter().find(|(name, _)| *name == value) {
                Some((_, chosen)) => Ok(*chosen),
                None => {
                    let names: Vec<&str> = allowed.iter().map(|(name, _)| *name).collect();
                    Err(RenderError(format!(
                        "{}: {value:?} is not one of {}",
                        at(),
                        names.join(", ")
                    )))
                }
            }
        }
        let at = || format!("{label}: metadata.annotations[{key:?}]");
        match name {
            "prompt-caching" => {
                let choices = [("caller", PromptCaching::Caller), ("auto", PromptCaching::Auto)];
                options.prompt_caching = Some(one_of(&choices, value, at)?);
            }
            "hosted-tools" => {
                let choices = [("drop", HostedTools::Drop), ("refuse", HostedTools::Refuse)];
                options.hosted_tools = Some(one_of(&choices, value, at)?);
            }
            _ => {
                return Err(RenderError(format!(
                    "{label}: metadata.annotations[{key:?}]: the gateway's annotations are {ANNOTATION_PREFIX}prompt-caching and {ANNOTATION_PREFIX}hosted-tools"
                )))
            }
        }
    }
    Ok(options)
}

/// The region and credentials of the one `BackendSecurityPolicy` that applies to a backend.
/// The region is `None` for an API key, which names none.
fn security(
    index: &Index,
    service_backend: &Object<ServiceBackendSpec>,
) -> Result<(Option<String>, CredentialsPlan), RenderError> {
    let name = service_backend.metadata.name.as_str();
    let label = format!("AIServiceBackend {name:?}");
    let by_reference = service_backend
        .spec
        .backend_security_policy_ref
        .as_ref()
        .map(|r| r.name.as_str());
    let applying: Vec<&&Object<SecurityPolicySpec>> = index
        .security_policies
        .iter()
        .filter(|policy| {
            Some(policy.metadata.name.as_str()) == by_reference
                || policy
                    .spec
                    .target_refs
                    .iter()
                    .any(|t| t.kind == "AIServiceBackend" && t.name == name)
        })
        .collect();
    let policy = match applying.as_slice() {
        [only] => only,
        [] => {
            return Err(match by_reference {
                Some(missing) => RenderError(format!(
                    "{label}: spec.backendSecurityPolicyRef: there is no BackendSecurityPolicy {missing:?} in the file"
                )),
                None => RenderError(format!(
                    "{label}: no BackendSecurityPolicy targets it; Bedrock needs one of type AWSCredentials (at least its region)"
                )),
            })
        }
        [first, second, ..] => {
            return Err(RenderError(format!(
                "{label}: both BackendSecurityPolicy {:?} and {:?} target it; only one may",
                first.metadata.name, second.metadata.name
            )))
        }
    };
    let at = format!("BackendSecurityPolicy {:?}", policy.metadata.name);
    if let Some(target) = policy
        .spec
        .target_refs
        .iter()
        .find(|t| t.kind != "AIServiceBackend")
    {
        return Err(RenderError(format!(
            "{at}: spec.targetRefs: kind {:?} is not supported (only AIServiceBackend)",
            target.kind
        )));
    }
    if policy.spec.policy_type == "APIKey" {
        return api_key(index, policy, &at).map(|plan| (None, CredentialsPlan::ApiKey(plan)));
    }
    if policy.spec.policy_type != "AWSCredentials" {
        return Err(RenderError(format!(
            "{at}: spec.type: {:?} is for another provider; Bedrock needs AWSCredentials or APIKey (a Bedrock API key)",
            policy.spec.policy_type
        )));
    }
    let aws = policy.spec.aws_credentials.as_ref().ok_or_else(|| {
        RenderError(format!(
            "{at}: spec.awsCredentials is required for type AWSCredentials"
        ))
    })?;
    if policy.spec.api_key.is_some()
        || policy.spec.azure_credentials.is_some()
        || policy.spec.gcp_credentials.is_some()
    {
        return Err(RenderError(format!(
            "{at}: spec: only awsCredentials may be set for type AWSCredentials"
        )));
    }
    if aws.region.is_empty()
        || !aws
            .region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(RenderError(format!(
            "{at}: spec.awsCredentials.region: {:?} is not an AWS region such as us-east-1",
            aws.region
        )));
    }
    if aws.oidc_exchange_token.is_some() {
        return Err(RenderError(format!(
            "{at}: spec.awsCredentials.oidcExchangeToken is not supported; leave credentials out for the AWS default chain \
             (EKS Pod Identity, IRSA, instance role) or use credentialsFile"
        )));
    }
    let credentials = match &aws.credentials_file {
        None => CredentialsPlan::DefaultChain,
        Some(file) => {
            let field = format!("{at}: spec.awsCredentials.credentialsFile");
            let name = file.secret_ref.name.as_str();
            let secret_label = format!("Secret {name:?}");
            let text = secret_value(index, name, "credentials", &field)
                .map_err(|e| RenderError(format!("{e} (an AWS credentials file)")))?;
            let profile = file
                .profile
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("default");
            let keys = profile_keys(&text, profile)
                .map_err(|e| RenderError(format!("{secret_label}: credentials: {e}")))?;
            CredentialsPlan::Static(keys)
        }
    };
    Ok((Some(aws.region.clone()), credentials))
}

/// A Secret's value under `key`, from `stringData` or base64 `data`.
fn secret_value(index: &Index, name: &str, key: &str, field: &str) -> Result<String, RenderError> {
    let secret = index.secrets.get(name).ok_or_else(|| {
        RenderError(format!(
            "{field}.secretRef.name: there is no Secret {name:?} in the file"
        ))
    })?;
    secret.value(key)?.ok_or_else(|| {
        RenderError(format!(
            "Secret {:?}: no `{key}` key in stringData or data",
            secret.metadata.name
        ))
    })
}

fn api_key(
    index: &Index,
    policy: &Object<SecurityPolicySpec>,
    at: &str,
) -> Result<ApiKeyPlan, RenderError> {
    let spec = policy
        .spec
        .api_key
        .as_ref()
        .ok_or_else(|| RenderError(format!("{at}: spec.apiKey is required for type APIKey")))?;
    if policy.spec.aws_credentials.is_some()
        || policy.spec.azure_credentials.is_some()
        || policy.spec.gcp_credentials.is_some()
    {
        return Err(RenderError(format!(
            "{at}: spec: only apiKey may be set for type APIKey"
        )));
    }
    let name = &spec.secret_ref.name;
    let key = secret_value(index, name, "apiKey", &format!("{at}: spec.apiKey"))?
        .trim()
        .to_owned();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RenderError(format!(
            "Secret {name:?}: apiKey must be one Bedrock API key (printable, without spaces)"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(RenderError(format!(
            "{at}: spec.apiKey.secretRef.name: {name:?} is not a Kubernetes name"
        )));
    }
    Ok(ApiKeyPlan {
        secret: name.clone(),
        key,
    })
}

/// The region in a Bedrock Runtime or Agent Runtime hostname
/// (`bedrock-runtime[-fips].<region>.amazonaws.com`, `bedrock-agent-runtime.<region>...`).
fn hostname_region(host: &str) -> Option<String> {
    let rest = host
        .strip_prefix("bedrock-runtime-fips.")
        .or_else(|| host.strip_prefix("bedrock-runtime."))
        .or_else(|| host.strip_prefix("bedrock-agent-runtime-fips."))
        .or_else(|| host.strip_prefix("bedrock-agent-runtime."))
        .or_else(|| host.strip_prefix("bedrock-mantle."))?;
    let (region, domain) = rest.split_once('.')?;
    let aws = domain.starts_with("amazonaws.com") || domain.starts_with("api.aws");
    (aws && !region.is_empty()).then(|| region.to_owned())
}

type Endpoints = (Vec<(String, u16)>, Discovery, Option<(String, u16)>);

fn endpoints(backend: &Object<BackendSpec>) -> Result<Endpoints, RenderError> {
    let label = format!("Backend {:?}", backend.metadata.name);
    if backend.spec.endpoints.is_empty() {
        return Err(RenderError(format!("{label}: spec.endpoints is empty")));
    }
    let mut endpoints = Vec::new();
    let mut first_fqdn = None;
    let mut any_name = false;
    for (i, endpoint) in backend.spec.endpoints.iter().enumerate() {
        let at = format!("{label}: spec.endpoints[{i}]");
        let (host, port, named) = match (&endpoint.fqdn, &endpoint.ip, &endpoint.unix) {
            (Some(fqdn), None, None) => (fqdn.hostname.clone(), fqdn.port, true),
            (None, Some(ip), None) => {
                if ip.address.parse::<std::net::IpAddr>().is_err() {
                    return Err(RenderError(format!(
                        "{at}.ip.address: {:?} is not an IP address",
                        ip.address
                    )));
                }
                (ip.address.clone(), ip.port, false)
            }
            (None, None, Some(_)) => {
                return Err(RenderError(format!(
                    "{at}.unix: Unix sockets are not supported"
                )))
            }
            _ => {
                return Err(RenderError(format!(
                    "{at}: exactly one of fqdn or ip must be set"
                )))
            }
        };
        if host.is_empty() || port == 0 {
            return Err(RenderError(format!("{at}: empty host or port 0")));
        }
        if named && first_fqdn.is_none() {
            first_fqdn = Some((host.clone(), port));
        }
        any_name |= named;
        endpoints.push((host, port));
    }
    let discovery = match (any_name, endpoints.len()) {
        (false, _) => Discovery::Static,
        (true, 1) => Discovery::LogicalDns,
        (true, _) => Discovery::StrictDns,
    };
    Ok((endpoints, discovery, first_fqdn))
}

fn tls(index: &Index, backend: &str) -> Result<Option<TlsPlan>, RenderError> {
    let applying: Vec<&&Object<TlsPolicySpec>> = index
        .tls_policies
        .iter()
        .filter(|p| {
            p.spec
                .target_refs
                .iter()
                .any(|t| t.kind == "Backend" && t.name == backend)
        })
        .collect();
    let policy = match applying.as_slice() {
        [] => return Ok(None),
        [only] => only,
        [first, second, ..] => {
            return Err(RenderError(format!(
                "Backend {backend:?}: both BackendTLSPolicy {:?} and {:?} target it; only one may",
                first.metadata.name, second.metadata.name
            )))
        }
    };
    let at = format!(
        "BackendTLSPolicy {:?}: spec.validation",
        policy.metadata.name
    );
    let validation = &policy.spec.validation;
    if validation.ca_certificate_refs.is_some() {
        return Err(RenderError(format!(
            "{at}.caCertificateRefs is not supported; use wellKnownCACertificates: System"
        )));
    }
    if validation.well_known_ca_certificates.as_deref() != Some("System") {
        return Err(RenderError(format!(
            "{at}.wellKnownCACertificates must be System (the system's CA bundle)"
        )));
    }
    if validation.hostname.is_empty() {
        return Err(RenderError(format!("{at}.hostname is empty")));
    }
    let mut subject_alt_names = Vec::new();
    for (i, san) in validation.subject_alt_names.iter().enumerate() {
        let field = format!("{at}.subjectAltNames[{i}]");
        subject_alt_names.push(match (san.san_type.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(host), None) => SanPlan::Dns(host.clone()),
            ("URI", None, Some(uri)) => SanPlan::Uri(uri.clone()),
            _ => {
                return Err(RenderError(format!(
                    "{field}: type Hostname with hostname, or type URI with uri"
                )))
            }
        });
    }
    if subject_alt_names.is_empty() {
        subject_alt_names.push(SanPlan::Dns(validation.hostname.clone()));
    }
    Ok(Some(TlsPlan {
        sni: validation.hostname.clone(),
        subject_alt_names,
    }))
}

/// A Gateway API duration: one or more `<number><unit>` with units h, m, s, ms (`1h30m`, `500ms`).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = rest.split_at(digits);
        let value: u64 = number.parse().ok()?;
        let (unit_ms, after) = if let Some(after) = after.strip_prefix("ms") {
            (1, after)
        } else if let Some(after) = after.strip_prefix('h') {
            (3_600_000, after)
        } else if let Some(after) = after.strip_prefix('m') {
            (60_000, after)
        } else if let Some(after) = after.strip_prefix('s') {
            (1_000, after)
        } else {
            return None;
        };
        total = total.checked_add(value.checked_mul(unit_ms)?)?;
        rest = after;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_gateway_api() {
        assert_eq!(parse_duration_ms("60s"), Some(60_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        for bad in ["", "60", "s", "1.5s", "1d", "-1s", "99999999999999999999h"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_become_unix_seconds() {
        assert_eq!(parse_rfc3339("2024-05-21T10:00:00Z"), Some(1_716_285_600));
        assert_eq!(parse_rfc3339("2024-05-21"), None);
    }
}

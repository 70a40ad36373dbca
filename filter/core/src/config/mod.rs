//! Plugin configuration: the backends Envoy's routes can pick, keyed by cluster name. [`plugin`]
//! holds its types as written (which the renderer serializes); [`Config`] is what the filter makes
//! of them.
//!
//! ```json
//! {
//!   "backends": {
//!     "bedrock-us-east-1": {
//!       "schema": "converse",
//!       "region": "us-east-1",
//!       "endpoint": "127.0.0.1:4566",
//!       "credentials": { "source": "environment" },
//!       "model_name_override": "us.meta.llama3-2-1b-instruct-v1:0",
//!       "calls_cluster": "bedrock-us-east-1~calls"
//!     },
//!     "bedrock-us-west-2": { ... }
//!   },
//!   "failover": { "bedrock-us-east-1>bedrock-us-west-2": ["bedrock-us-east-1", "bedrock-us-west-2"] }
//! }
//! ```
//!
//! `calls_cluster` is the backend's cluster again without the gateway's filter: the gateway's own
//! calls to the backend (one per input of a Titan embeddings list) go through it, signed already.
//!
//! `failover` names Envoy's composite clusters, whose attempts go to their sub-clusters in order:
//! attempt N (Envoy's `x-envoy-attempt-count`) is translated and signed for the Nth backend.

pub mod costs;
pub mod plugin;

use crate::aws::credentials::Provider;
use crate::aws::sigv4::Credentials;
use crate::bedrock::betas::{BetaPolicy, RawBetaPolicy};
use crate::bedrock::options::BedrockOptions;
pub use plugin::ModelInfo;
use plugin::{CredentialSource, ModelEntry, PluginBackend, PluginConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// What a backend does with hosted tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostedTools {
    /// Left out of what reaches Bedrock, and named in the response.
    #[default]
    Drop,
    /// The request is refused with a 400 naming the tool.
    Refuse,
}

/// How the gateway talks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schema {
    /// Bedrock Converse / ConverseStream, for any model.
    #[serde(alias = "aws-bedrock", alias = "aws-bedrock-converse")]
    Converse,
    /// Bedrock InvokeModel with Anthropic's native Messages body.
    #[serde(alias = "aws-anthropic")]
    Anthropic,
    /// OpenAI's own API under Bedrock Runtime's `/openai/v1`, for OpenAI's models (gpt-oss).
    #[serde(alias = "OpenAI")]
    Openai,
}

/// The weighted token cost recorded for each request, for token-based rate limiting and
/// access logs: `input * input + output * output + cache_read * cache_read + cache_write * cache_write`.
/// The default weighs every token 1, so the cost is the total token count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostWeights {
    #[serde(default = "one")]
    pub input: f64,
    #[serde(default = "one")]
    pub output: f64,
    #[serde(default = "one")]
    pub cache_read: f64,
    #[serde(default = "one")]
    pub cache_write: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for CostWeights {
    fn default() -> Self {
        CostWeights {
            input: 1.0,
            output: 1.0,
            cache_read: 1.0,
            cache_write: 1.0,
        }
    }
}

impl CostWeights {
    /// Every token weighed 1, as when the configuration says nothing.
    pub fn is_default(&self) -> bool {
        *self == CostWeights::default()
    }

    pub fn of(&self, usage: &crate::translated::TokenUsage) -> u64 {
        let cost = usage.input as f64 * self.input
            + usage.output as f64 * self.output
            + usage.cache_read as f64 * self.cache_read
            + usage.cache_write as f64 * self.cache_write;
        if cost.is_finite() && cost > 0.0 {
            cost.round() as u64
        } else {
            0
        }
    }
}

/// A backend ready to serve: credentials resolved, host computed.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub schema: Schema,
    pub region: String,
    /// The `Host` / `:authority` sent and signed.
    pub host: String,
    pub credentials: BackendCredentials,
    pub model_name_override: Option<String>,
    /// Which Anthropic beta flags go to this backend.
    pub anthropic_beta: Arc<BetaPolicy>,
    /// Guardrail, latency, service tier and request metadata added to each request.
    pub options: BedrockOptions,
    /// The twin of the backend's cluster without the gateway's filter, through which the gateway
    /// makes its own calls to this backend (one per input of a Titan embeddings list).
    pub calls_cluster: Option<String>,
    /// What becomes of OpenAI's hosted tools (web search, ...) in a Responses request.
    pub hosted_tools: HostedTools,
    /// Whether the gateway adds cache points to Converse requests that carry none.
    pub prompt_caching: PromptCaching,
    /// Schema `openai`: the path OpenAI's API is under (`/openai/v1` unless configured).
    pub api_prefix: String,
}

/// The Bedrock services a backend's requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Bedrock Runtime: Converse, InvokeModel, OpenAI's API.
    Runtime,
    /// The Agent Runtime: Rerank.
    AgentRuntime,
}

impl Backend {
    /// Where a request to `service` goes: the backend's endpoint when the operator gave one (taken
    /// as their choice for every service), else that service's host in the backend's region.
    pub fn host_for(&self, service: Service) -> std::borrow::Cow<'_, str> {
        match service {
            Service::AgentRuntime if self.host == default_host(&self.region) => {
                format!("bedrock-agent-runtime.{}.amazonaws.com", self.region).into()
            }
            _ => self.host.as_str().into(),
        }
    }
}

/// Who places Converse's cache points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptCaching {
    /// Only where callers ask (`cache_control`).
    #[default]
    Caller,
    /// Also where agents need them and do not ask: after the system prompt, after the tools and
    /// at the end of the conversation (see `ConverseRequest::insert_cache_points`), on models
    /// that cache prompts (`bedrock::caches_prompts`), for requests that place none themselves.
    Auto,
}

/// Static keys, a provider of temporary credentials fetched at run time, or a Bedrock API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCredentials {
    Static(Credentials),
    Fetched(Provider),
    /// `Authorization: Bearer`, with this key, or with the one Envoy's `credential_injector`
    /// adds after the gateway (`None`).
    ApiKey(Option<ApiKey>),
}

/// A Bedrock API key, kept as the `Authorization` value it is sent as (written once, at
/// start-up); its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    authorization: String,
}

impl ApiKey {
    fn new(key: &str) -> Self {
        ApiKey {
            authorization: format!("Bearer {key}"),
        }
    }

    /// The `Authorization` header's value.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl BackendCredentials {
    /// The shared-data key of a provider's credentials: backends using the same provider share one fetch.
    pub fn cache_key(provider: &Provider) -> String {
        match provider {
            Provider::PodIdentity { cluster, path, .. } => {
                format!("ai_gateway/credentials/pod_identity/{cluster}{path}")
            }
            Provider::WebIdentity {
                cluster, role_arn, ..
            } => format!("ai_gateway/credentials/web_identity/{cluster}/{role_arn}"),
            Provider::Imds { cluster, .. } => format!("ai_gateway/credentials/imds/{cluster}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Shared, not cloned, by each request that uses one.
    backends: HashMap<String, Arc<Backend>>,
    /// A composite cluster's backends, one per attempt in order.
    failover: HashMap<String, Vec<Arc<Backend>>>,
    pub models: Vec<ModelInfo>,
    pub cost: CostWeights,
    /// Set when Envoy authenticates callers (api_key_auth, jwt_authn after the routing stage): the
    /// request header in which it names the caller. Callers' own credentials are then left for
    /// Envoy's filters to check (the backend stage removes them before AWS), a caller's own copy
    /// of this header is removed before they run, and usage summaries name the caller.
    pub caller_header: Option<String>,
    /// Further headers Envoy's authentication writes (a JWT's claims, `claim_to_headers`), which
    /// authorization rules read: like the caller header, a caller's own copies are removed before
    /// authentication, so that a token without the claim cannot be paired with a forged header.
    pub identity_headers: Vec<String>,
    /// Headers in which callers present their keys to Envoy's authentication (`extractFrom`),
    /// beyond the ones always removed (`authorization`, `x-api-key`, ...): removed before AWS.
    pub key_headers: Vec<String>,
    /// Count requests, tokens and costs per caller too (`ai_gateway.caller_requests`, ...): for a
    /// fixed set of callers (API-key clients), never for open-ended ones such as JWT subjects.
    pub caller_metrics: bool,
    /// The series a request can record, known when the configuration is rendered: each routed
    /// model with the backends its route can pick, and the callers counted. A host that can only
    /// define metrics while it loads a configuration (the dynamic module) defines them up front.
    pub metric_series: Vec<(String, Vec<String>)>,
    pub metric_callers: Vec<String>,
    /// `llmRequestCosts`: what each request costs, under each metadata key.
    pub request_costs: Vec<crate::config::costs::RequestCost>,
    /// Publish each request's GenAI span attributes, for the tracer's custom tags (set by the
    /// renderer when the resources ask for tracing).
    pub trace_attributes: bool,
    pub max_stream_frame_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A header name as the plugin configuration must state it: lower case, as Envoy stores them.
fn header_name(field: &str, name: String) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(name)
    } else {
        Err(ConfigError(format!(
            "{field}: {name:?} must be a lower-case header name"
        )))
    }
}

impl Config {
    /// Parses the plugin configuration. `env` looks up environment variables, so the
    /// caller decides where they come from (the VM's environment, or a test's map).
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: PluginConfig = serde_json::from_slice(json)
            .map_err(|e| ConfigError(format!("invalid plugin configuration: {e}")))?;
        if raw.backends.is_empty() {
            return Err(ConfigError("plugin configuration lists no backends".into()));
        }
        let mut backends = HashMap::with_capacity(raw.backends.len());
        for (name, backend) in raw.backends {
            let resolved = resolve_backend(&name, backend, &raw.anthropic_beta, env)?;
            backends.insert(name, Arc::new(resolved));
        }
        let mut failover = HashMap::with_capacity(raw.failover.len());
        for (cluster, names) in raw.failover {
            let attempts = names
                .iter()
                .map(|name| {
                    backends.get(name).cloned().ok_or_else(|| {
                        ConfigError(format!(
                            "failover {cluster:?}: no backend is named {name:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if attempts.is_empty() {
                return Err(ConfigError(format!(
                    "failover {cluster:?}: lists no backends"
                )));
            }
            failover.insert(cluster, attempts);
        }
        let mut models: Vec<ModelInfo> = Vec::with_capacity(raw.models.len());
        for entry in raw.models {
            let info = match entry {
                ModelEntry::Name(id) => ModelInfo {
                    id,
                    created: 0,
                    owned_by: None,
                    display_name: None,
                },
                ModelEntry::Detailed(info) => info,
            };
            if info.id.is_empty() || models.iter().any(|m| m.id == info.id) {
                return Err(ConfigError(format!(
                    "models: {:?} is empty or listed twice",
                    info.id
                )));
            }
            models.push(info);
        }
        Ok(Config {
            backends,
            failover,
            models,
            cost: raw.cost,
            caller_metrics: raw.caller_metrics,
            metric_series: raw.metric_series.into_iter().collect(),
            metric_callers: raw.metric_callers,
            trace_attributes: raw.trace_attributes,
            request_costs: raw
                .request_costs
                .into_iter()
                .enumerate()
                .map(|(i, raw)| {
                    crate::config::costs::RequestCost::parse(raw)
                        .map_err(|e| ConfigError(format!("request_costs[{i}]: {e}")))
                })
                .collect::<Result<_, _>>()?,
            caller_header: raw
                .caller_header
                .map(|name| header_name("caller_header", name))
                .transpose()?,
            identity_headers: raw
                .identity_headers
                .into_iter()
                .map(|name| header_name("identity_headers", name))
                .collect::<Result<_, _>>()?,
            key_headers: raw
                .key_headers
                .into_iter()
                .map(|name| header_name("key_headers", name))
                .collect::<Result<_, _>>()?,
            max_stream_frame_bytes: raw
                .max_stream_frame_bytes
                .unwrap_or(crate::bedrock::eventstream::DEFAULT_MAX_FRAME_LEN),
        })
    }

    /// Every distinct fetched-credential provider, with its shared-data key.
    pub fn fetched_providers(&self) -> Vec<(String, Provider)> {
        let mut providers: Vec<(String, Provider)> = Vec::new();
        for backend in self.backends.values() {
            if let BackendCredentials::Fetched(provider) = &backend.credentials {
                let key = BackendCredentials::cache_key(provider);
                if !providers.iter().any(|(k, _)| *k == key) {
                    providers.push((key, provider.clone()));
                }
            }
        }
        providers.sort_by(|a, b| a.0.cmp(&b.0));
        providers
    }

    /// The backend for the cluster Envoy's route picked.
    pub fn backend(&self, cluster_name: &str) -> Option<&Arc<Backend>> {
        self.backends.get(cluster_name)
    }

    /// How many backends the cluster's tries can go to: its own, or each of a composite's.
    pub fn attempts(&self, cluster_name: &str) -> usize {
        self.failover.get(cluster_name).map_or(1, Vec::len)
    }

    /// Whether the cluster is a composite one whose tries go to several backends.
    pub fn is_failover(&self, cluster_name: &str) -> bool {
        self.failover.contains_key(cluster_name)
    }

    /// The backend one attempt (counted from 1) goes to: the cluster's own, or for a composite
    /// cluster the one at that attempt's place, as Envoy picks its sub-cluster (the last one
    /// serves any attempts beyond the list).
    pub fn backend_for_attempt(&self, cluster_name: &str, attempt: usize) -> Option<&Arc<Backend>> {
        match self.failover.get(cluster_name) {
            Some(attempts) => attempts
                .get(attempt.saturating_sub(1))
                .or_else(|| attempts.last()),
            None => self.backends.get(cluster_name),
        }
    }
}

/// Bedrock Runtime's host in `region`: a backend's `Host` unless its `endpoint` says otherwise.
pub fn default_host(region: &str) -> String {
    format!("bedrock-runtime.{region}.amazonaws.com")
}

/// Picks the first source of the AWS SDK default chain that the environment enables.
fn default_chain_choice(
    web_identity_cluster: Option<String>,
    pod_identity_cluster: Option<String>,
    imds_cluster: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CredentialSource, String> {
    let set = |key: &str| env(key).filter(|v| !v.is_empty());
    if set("AWS_BEARER_TOKEN_BEDROCK").is_some() {
        return Ok(CredentialSource::ApiKey {
            key: None,
            injected_by_envoy: false,
        });
    }
    if set("AWS_ACCESS_KEY_ID").is_some() && set("AWS_SECRET_ACCESS_KEY").is_some() {
        return Ok(CredentialSource::Environment);
    }
    if let (Some(_), Some(_), Some(cluster)) = (
        set("AWS_ROLE_ARN"),
        set("AWS_WEB_IDENTITY_TOKEN_FILE"),
        web_identity_cluster,
    ) {
        return Ok(CredentialSource::WebIdentity {
            cluster,
            role_arn: None,
            session_name: None,
            authority: None,
        });
    }
    if let (Some(uri), Some(cluster)) = (
        set("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        pod_identity_cluster,
    ) {
        // http://169.254.170.23/v1/credentials -> authority and path
        let rest = uri
            .strip_prefix("http://")
            .ok_or("AWS_CONTAINER_CREDENTIALS_FULL_URI must be an http:// URL")?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
        return Ok(CredentialSource::PodIdentity {
            cluster,
            authority: Some(authority.to_owned()),
            path: Some(format!("/{}", path.trim_start_matches('/'))),
        });
    }
    if let Some(cluster) = imds_cluster {
        return Ok(CredentialSource::Imds {
            cluster,
            authority: None,
        });
    }
    Err("default_chain found no credentials: no AWS_ACCESS_KEY_ID, no IRSA or Pod Identity variables with their cluster, and no imds_cluster".into())
}

fn non_empty_name(name: String, fail: &dyn Fn(&str) -> ConfigError) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(fail("the credential cluster name must not be empty"));
    }
    Ok(name)
}

fn resolve_backend(
    name: &str,
    raw: PluginBackend,
    top_betas: &RawBetaPolicy,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Backend, ConfigError> {
    let fail = |what: &str| ConfigError(format!("backend {name:?}: {what}"));
    if raw.region.is_empty()
        || !raw
            .region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(fail(
            "region must be a plain AWS region name such as us-east-1",
        ));
    }
    let source = match raw.credentials {
        CredentialSource::DefaultChain {
            web_identity_cluster,
            pod_identity_cluster,
            imds_cluster,
        } => default_chain_choice(
            web_identity_cluster,
            pod_identity_cluster,
            imds_cluster,
            env,
        )
        .map_err(|e| fail(&e))?,
        explicit => explicit,
    };
    let credentials = match source {
        CredentialSource::Inline {
            access_key_id,
            secret_access_key,
            session_token,
        } => BackendCredentials::Static(Credentials {
            access_key_id,
            secret_access_key,
            session_token,
        }),
        CredentialSource::Environment => {
            let non_empty = |key: &str| env(key).filter(|v| !v.is_empty());
            BackendCredentials::Static(Credentials {
                access_key_id: non_empty("AWS_ACCESS_KEY_ID")
                    .ok_or_else(|| fail("AWS_ACCESS_KEY_ID is not set in the VM's environment"))?,
                secret_access_key: non_empty("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
                    fail("AWS_SECRET_ACCESS_KEY is not set in the VM's environment")
                })?,
                session_token: non_empty("AWS_SESSION_TOKEN"),
            })
        }
        CredentialSource::PodIdentity {
            cluster,
            authority,
            path,
        } => BackendCredentials::Fetched(Provider::PodIdentity {
            cluster: non_empty_name(cluster, &fail)?,
            authority: authority.unwrap_or_else(|| "169.254.170.23".to_owned()),
            path: path.unwrap_or_else(|| "/v1/credentials".to_owned()),
        }),
        CredentialSource::WebIdentity {
            cluster,
            role_arn,
            session_name,
            authority,
        } => {
            let role_arn = role_arn
                .or_else(|| env("AWS_ROLE_ARN"))
                .filter(|r| r.starts_with("arn:"))
                .ok_or_else(|| {
                    fail("web_identity needs role_arn (or AWS_ROLE_ARN in the VM's environment)")
                })?;
            BackendCredentials::Fetched(Provider::WebIdentity {
                cluster: non_empty_name(cluster, &fail)?,
                role_arn,
                session_name: session_name
                    .or_else(|| env("AWS_ROLE_SESSION_NAME"))
                    .unwrap_or_else(|| "ai-gateway".to_owned()),
                authority: authority.unwrap_or_else(|| format!("sts.{}.amazonaws.com", raw.region)),
            })
        }
        CredentialSource::Imds { cluster, authority } => {
            BackendCredentials::Fetched(Provider::Imds {
                cluster: non_empty_name(cluster, &fail)?,
                authority: authority.unwrap_or_else(|| "169.254.169.254".to_owned()),
            })
        }
        CredentialSource::ApiKey {
            key,
            injected_by_envoy: true,
        } => {
            if key.is_some() {
                return Err(fail(
                    "api_key: a key injected by Envoy is not also written here",
                ));
            }
            BackendCredentials::ApiKey(None)
        }
        CredentialSource::ApiKey {
            key,
            injected_by_envoy: false,
        } => {
            let key = key
                .or_else(|| env("AWS_BEARER_TOKEN_BEDROCK"))
                .filter(|k| !k.is_empty())
                .ok_or_else(|| fail("api_key needs key, or AWS_BEARER_TOKEN_BEDROCK in the VM's environment, or injected_by_envoy"))?;
            // It becomes a header value: printable ASCII without spaces, as AWS issues them.
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail(
                    "api_key: the key must be printable ASCII without spaces",
                ));
            }
            BackendCredentials::ApiKey(Some(ApiKey::new(&key)))
        }
        CredentialSource::DefaultChain { .. } => {
            return Err(fail("default_chain did not resolve to a source"))
        }
    };
    if let BackendCredentials::Static(keys) = &credentials {
        if keys.access_key_id.is_empty() || keys.secret_access_key.is_empty() {
            return Err(fail(
                "credentials need a non-empty access key id and secret",
            ));
        }
    }
    if let Some(model) = &raw.model_name_override {
        crate::bedrock::validate_model_id(model).map_err(|e| fail(&e))?;
    }
    let anthropic_beta = raw
        .anthropic_beta
        .over(top_betas)
        .resolve()
        .map_err(|e| fail(&e))?;
    let options = BedrockOptions::new(
        raw.guardrail,
        raw.latency,
        raw.service_tier,
        raw.request_metadata,
    )
    .map_err(|e| fail(&e))?;
    let host = raw.endpoint.unwrap_or_else(|| default_host(&raw.region));
    Ok(Backend {
        name: name.to_owned(),
        schema: raw.schema,
        region: raw.region,
        host,
        credentials,
        model_name_override: raw.model_name_override,
        anthropic_beta: Arc::new(anthropic_beta),
        options,
        calls_cluster: raw.calls_cluster.filter(|c| !c.is_empty()),
        hosted_tools: raw.hosted_tools.unwrap_or_default(),
        prompt_caching: raw.prompt_caching.unwrap_or_default(),
        api_prefix: match raw.api_prefix {
            None => "/openai/v1".to_owned(),
            Some(prefix) if matches!(prefix.as_str(), "/v1" | "/openai/v1") => prefix,
            Some(other) => {
                return Err(fail(&format!(
                    "api_prefix {other:?} must be /v1 or /openai/v1"
                )))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn each_service_has_its_host_unless_the_operator_chose_one() {
        let json = br#"{"backends":{
            "default":{"schema":"converse","region":"eu-west-1","credentials":{"source":"environment"}},
            "chosen":{"schema":"converse","region":"eu-west-1","endpoint":"vpce.example:443","credentials":{"source":"environment"}}
        }}"#;
        let config = Config::parse(json, &|_| Some("x".to_owned())).unwrap();
        let default = config.backend("default").unwrap();
        assert_eq!(
            default.host_for(Service::Runtime),
            "bedrock-runtime.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            default.host_for(Service::AgentRuntime),
            "bedrock-agent-runtime.eu-west-1.amazonaws.com"
        );
        let chosen = config.backend("chosen").unwrap();
        assert_eq!(chosen.host_for(Service::AgentRuntime), "vpce.example:443");
    }

    #[test]
    fn parses_inline_and_environment_credentials() {
        let json = br#"{"backends":{
            "a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"AK","secret_access_key":"SK"}},
            "b":{"schema":"aws-anthropic","region":"eu-west-1","endpoint":"vpce.example:443","credentials":{"source":"environment"},"model_name_override":"m:0"}
        }}"#;
        let env = |key: &str| match key {
            "AWS_ACCESS_KEY_ID" => Some("ENVAK".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("ENVSK".to_owned()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            _ => None,
        };
        let config = Config::parse(json, &env).unwrap();
        let a = config.backend("a").unwrap();
        assert_eq!(a.host, "bedrock-runtime.us-east-1.amazonaws.com");
        let BackendCredentials::Static(a_keys) = &a.credentials else {
            panic!("static")
        };
        assert_eq!(a_keys.access_key_id, "AK");
        let b = config.backend("b").unwrap();
        assert_eq!(b.schema, Schema::Anthropic);
        assert_eq!(b.host, "vpce.example:443");
        let BackendCredentials::Static(b_keys) = &b.credentials else {
            panic!("static")
        };
        assert_eq!(b_keys.secret_access_key, "ENVSK");
        assert_eq!(b_keys.session_token, None, "an empty token means none");
        assert_eq!(b.model_name_override.as_deref(), Some("m:0"));
        assert!(config.backend("c").is_none());
    }

    #[test]
    fn beta_flag_lists_come_from_the_backend_then_the_top_level_then_the_defaults() {
        let json = br#"{"anthropic_beta":{"accepted":["a-1"]},"backends":{
            "top":{"schema":"aws-anthropic","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"s"}},
            "own":{"schema":"aws-anthropic","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"s"},
                   "anthropic_beta":{"renamed":{"b-1":"a-1"}}}
        }}"#;
        let config = Config::parse(json, &no_env).unwrap();
        let flags = |list: &[&str]| list.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>();
        let top = config
            .backend("top")
            .unwrap()
            .anthropic_beta
            .sort(&flags(&["a-1", "advanced-tool-use-2025-11-20"]));
        assert_eq!(
            top.forwarded,
            flags(&["a-1"]),
            "the top-level list replaces the default one; the default renames stay"
        );
        let own = config
            .backend("own")
            .unwrap()
            .anthropic_beta
            .sort(&flags(&["b-1", "advanced-tool-use-2025-11-20"]));
        assert_eq!(own.forwarded, flags(&["a-1"]));
        assert_eq!(
            own.dropped,
            flags(&["advanced-tool-use-2025-11-20"]),
            "the backend's renames replace the default ones"
        );
        let bad = br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"environment"},"anthropic_beta":{"accepted":[""]}}}}"#;
        let env = |key: &str| Some(format!("{key}-value"));
        assert!(Config::parse(bad, &env)
            .unwrap_err()
            .0
            .contains("anthropic_beta.accepted"));
    }

    #[test]
    fn bedrock_api_keys_come_inline_from_the_environment_or_from_envoy() {
        let json = br#"{"backends":{
            "inline":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key","key":"ABSKinline"}},
            "env":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key"}},
            "injected":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key","injected_by_envoy":true}},
            "chain":{"schema":"converse","region":"us-east-1","credentials":{"source":"default_chain","imds_cluster":"imds"}}
        }}"#;
        let env = |key: &str| match key {
            "AWS_BEARER_TOKEN_BEDROCK" => Some("ABSKfromenv".to_owned()),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("static".to_owned()),
            _ => None,
        };
        let config = Config::parse(json, &env).unwrap();
        let key = |name: &str| match &config.backend(name).unwrap().credentials {
            BackendCredentials::ApiKey(key) => key.as_ref().map(|k| k.authorization().to_owned()),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(key("inline").as_deref(), Some("Bearer ABSKinline"));
        assert_eq!(key("env").as_deref(), Some("Bearer ABSKfromenv"));
        assert_eq!(key("injected"), None);
        assert_eq!(
            key("chain").as_deref(),
            Some("Bearer ABSKfromenv"),
            "the chain prefers the API key, as boto3 does for Bedrock"
        );
        let shown = format!("{:?}", config.backend("inline").unwrap());
        assert!(!shown.contains("ABSKinline"), "{shown}");

        let cases: &[(&[u8], &str)] = &[
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key"}}}}"#, "AWS_BEARER_TOKEN_BEDROCK"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key","key":"two words"}}}}"#, "printable ASCII"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"api_key","key":"k","injected_by_envoy":true}}}}"#, "not also written here"),
        ];
        for (json, expected) in cases {
            let error = Config::parse(json, &no_env).unwrap_err();
            assert!(
                error.0.contains(expected),
                "{}: {}",
                String::from_utf8_lossy(json),
                error.0
            );
        }
    }

    #[test]
    fn rejects_bad_configurations_with_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "invalid plugin configuration"),
            (br#"{"backends":{}}"#, "no backends"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"environment"}}}}"#, "AWS_ACCESS_KEY_ID is not set"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us east","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"b"}}}}"#, "region"),
            (br#"{"backends":{"a":{"schema":"soap","region":"us-east-1","credentials":{"source":"environment"}}}}"#, "unknown variant"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","regoin":"x","credentials":{"source":"environment"}}}}"#, "unknown field"),
            (br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"b"},"model_name_override":"a b"}}}"#, "model id contains"),
        ];
        for (json, expected) in cases {
            let error = Config::parse(json, &no_env).unwrap_err();
            assert!(
                error.0.contains(expected),
                "{}: {}",
                String::from_utf8_lossy(json),
                error.0
            );
        }
    }

    #[test]
    fn resolves_fetched_credential_providers_with_defaults() {
        let json = br#"{"backends":{
            "p":{"schema":"converse","region":"eu-west-1","credentials":{"source":"pod_identity","cluster":"agent"}},
            "w":{"schema":"converse","region":"eu-west-1","credentials":{"source":"web_identity","cluster":"sts"}},
            "i":{"schema":"converse","region":"eu-west-1","credentials":{"source":"imds","cluster":"imds","authority":"[fd00:ec2::254]"}}
        }}"#;
        let env = |key: &str| (key == "AWS_ROLE_ARN").then(|| "arn:aws:iam::1:role/gw".to_owned());
        let config = Config::parse(json, &env).unwrap();
        assert_eq!(
            config.backend("p").unwrap().credentials,
            BackendCredentials::Fetched(Provider::PodIdentity {
                cluster: "agent".into(),
                authority: "169.254.170.23".into(),
                path: "/v1/credentials".into()
            })
        );
        assert_eq!(
            config.backend("w").unwrap().credentials,
            BackendCredentials::Fetched(Provider::WebIdentity {
                cluster: "sts".into(),
                role_arn: "arn:aws:iam::1:role/gw".into(),
                session_name: "ai-gateway".into(),
                authority: "sts.eu-west-1.amazonaws.com".into()
            })
        );
        assert_eq!(
            config.backend("i").unwrap().credentials,
            BackendCredentials::Fetched(Provider::Imds {
                cluster: "imds".into(),
                authority: "[fd00:ec2::254]".into()
            })
        );
        let no_role = br#"{"backends":{"w":{"schema":"converse","region":"eu-west-1","credentials":{"source":"web_identity","cluster":"sts"}}}}"#;
        assert!(Config::parse(no_role, &no_env)
            .unwrap_err()
            .0
            .contains("role_arn"));
    }

    #[test]
    fn default_chain_follows_the_sdk_order() {
        let json = br#"{"backends":{"d":{"schema":"converse","region":"us-west-2","credentials":{"source":"default_chain",
            "web_identity_cluster":"sts","pod_identity_cluster":"agent","imds_cluster":"imds"}}}}"#;
        let resolve = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let env = move |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            Config::parse(json, &env).map(|c| c.backend("d").map(|b| b.credentials.clone()))
        };
        let irsa = [
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
        ];
        let pod = [(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials",
        )];
        let keys = [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")];
        let both: Vec<(&str, &str)> = keys
            .iter()
            .chain(irsa.iter())
            .chain(pod.iter())
            .copied()
            .collect();
        assert!(matches!(
            resolve(&both).unwrap(),
            Some(BackendCredentials::Static(_))
        ));
        let irsa_and_pod: Vec<(&str, &str)> = irsa.iter().chain(pod.iter()).copied().collect();
        assert!(matches!(
            resolve(&irsa_and_pod).unwrap(),
            Some(BackendCredentials::Fetched(Provider::WebIdentity { .. }))
        ));
        assert_eq!(
            resolve(&pod).unwrap(),
            Some(BackendCredentials::Fetched(Provider::PodIdentity {
                cluster: "agent".into(),
                authority: "169.254.170.23".into(),
                path: "/v1/credentials".into()
            }))
        );
        assert!(matches!(
            resolve(&[]).unwrap(),
            Some(BackendCredentials::Fetched(Provider::Imds { .. }))
        ));
        let no_imds = br#"{"backends":{"d":{"schema":"converse","region":"us-west-2","credentials":{"source":"default_chain"}}}}"#;
        assert!(Config::parse(no_imds, &no_env)
            .unwrap_err()
            .0
            .contains("default_chain found no credentials"));
    }

    #[test]
    fn lists_models_by_name_or_with_details() {
        let json = br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"b"}}},
            "models":["m1",{"id":"m2","created":1700000000,"owned_by":"meta","display_name":"M Two"}]}"#;
        let config = Config::parse(json, &no_env).unwrap();
        assert_eq!(config.models.len(), 2);
        assert_eq!(
            config.models[0],
            ModelInfo {
                id: "m1".into(),
                created: 0,
                owned_by: None,
                display_name: None
            }
        );
        assert_eq!(config.models[1].display_name.as_deref(), Some("M Two"));
        let twice = br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"b"}}},"models":["m","m"]}"#;
        assert!(Config::parse(twice, &no_env)
            .unwrap_err()
            .0
            .contains("listed twice"));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let json = br#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"AKID","secret_access_key":"TOPSECRET","session_token":"TOKENVALUE"}}}}"#;
        let config = Config::parse(json, &no_env).unwrap();
        let text = format!("{config:?}");
        assert!(text.contains("AKID"));
        assert!(
            !text.contains("TOPSECRET") && !text.contains("TOKENVALUE"),
            "{text}"
        );
    }

    #[test]
    fn failover_lists_backends_per_attempt() {
        let json = br#"{"backends":{
            "a":{"schema":"converse","region":"us-east-1","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"s"}},
            "b":{"schema":"converse","region":"us-west-2","credentials":{"source":"inline","access_key_id":"a","secret_access_key":"s"}}},
            "failover":{"a>b":["a","b"]}}"#;
        let config = Config::parse(json, &|_| None).unwrap();
        let region = |cluster: &str, attempt: usize| {
            config
                .backend_for_attempt(cluster, attempt)
                .map(|b| b.region.clone())
        };
        assert_eq!(region("a>b", 1).as_deref(), Some("us-east-1"));
        assert_eq!(region("a>b", 2).as_deref(), Some("us-west-2"));
        assert_eq!(
            region("a>b", 9).as_deref(),
            Some("us-west-2"),
            "the last serves further attempts"
        );
        assert_eq!(region("a>b", 0).as_deref(), Some("us-east-1"));
        assert_eq!(
            region("b", 5).as_deref(),
            Some("us-west-2"),
            "a plain cluster ignores attempts"
        );
        assert_eq!(region("c", 1), None);
        for (json, expected) in [
            (
                r#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"environment"}}},"failover":{"x":["a","zz"]}}"#,
                "no backend is named \"zz\"",
            ),
            (
                r#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"environment"}}},"failover":{"x":[]}}"#,
                "lists no backends",
            ),
        ] {
            let error = Config::parse(json.as_bytes(), &|key| Some(key.to_owned())).unwrap_err();
            assert!(error.0.contains(expected), "{error}");
        }
    }
}

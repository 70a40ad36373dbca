//! The plugin configuration as it is written: what `ai-gateway-render` serializes and the filter
//! parses, one set of types for both, so the two cannot disagree about a field. [`super::Config`]
//! is what the filter makes of it (credentials resolved, hosts computed, policies checked).
//!
//! Serialized, a member left at its default is left out, and members keep the order below (the
//! order the README documents), so a rendered configuration reads as the documentation does.

use super::costs::RawRequestCost;
use super::{CostWeights, HostedTools, PromptCaching, Schema};
use crate::bedrock::betas::RawBetaPolicy;
use crate::bedrock::options::Guardrail;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The whole plugin configuration, which every stage of the gateway reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// What `GET /v1/models` lists: the names the routes serve.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// The backends Envoy's routes can pick, by cluster name.
    pub backends: OrderedMap<PluginBackend>,
    /// Envoy's composite clusters, whose attempts go to these backends in order.
    #[serde(default, skip_serializing_if = "OrderedMap::is_empty")]
    pub failover: OrderedMap<Vec<String>>,
    /// The header Envoy's authentication writes the caller's name into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_header: Option<String>,
    /// Headers Envoy's authentication writes (a JWT's claims): never the caller's to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_headers: Vec<String>,
    /// Headers that carry callers' keys: never sent to AWS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caller_metrics: bool,
    /// Each routed model's clusters: the series the dynamic module defines up front (it can
    /// define metrics only while a configuration loads).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_series: BTreeMap<String, Vec<String>>,
    /// The counted callers, for the same reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_callers: Vec<String>,
    /// `llmRequestCosts`, computed for every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_costs: Vec<RawRequestCost>,
    /// Publish the GenAI span attributes the tracing configuration reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace_attributes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_frame_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "CostWeights::is_default")]
    pub cost: CostWeights,
    /// Which Anthropic beta flags go to Bedrock (`betas`), for every backend that does not say.
    #[serde(default, skip_serializing_if = "RawBetaPolicy::is_default")]
    pub anthropic_beta: RawBetaPolicy,
}

/// One backend: a Bedrock region (or endpoint), how to talk to it and how to authenticate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBackend {
    pub schema: Schema,
    pub region: String,
    /// The `Host` sent and signed when it is not Bedrock Runtime's for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub credentials: CredentialSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name_override: Option<String>,
    /// The backend's cluster again without the gateway's filter: the gateway's own calls to the
    /// backend (one per input of a Titan embeddings list) go through it, signed already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_caching: Option<PromptCaching>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_tools: Option<HostedTools>,
    /// Schema `openai`: where OpenAI's API lives on the backend's host (`/openai/v1` on Bedrock
    /// Runtime; `/v1` or `/openai/v1` on Bedrock Mantle, by model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "RawBetaPolicy::is_default")]
    pub anthropic_beta: RawBetaPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<Guardrail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_metadata: BTreeMap<String, String>,
}

impl PluginBackend {
    /// A backend with only what every backend states; the rest at its default.
    pub fn new(schema: Schema, region: impl Into<String>, credentials: CredentialSource) -> Self {
        PluginBackend {
            schema,
            region: region.into(),
            endpoint: None,
            credentials,
            model_name_override: None,
            calls_cluster: None,
            prompt_caching: None,
            hosted_tools: None,
            api_prefix: None,
            anthropic_beta: RawBetaPolicy::default(),
            guardrail: None,
            latency: None,
            service_tier: None,
            request_metadata: BTreeMap::new(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialSource {
    /// Keys written in the plugin configuration.
    Inline {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
    },
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, handed to the VM
    /// through `vm_config.environment_variables`.
    Environment,
    /// EKS Pod Identity agent, called through the Envoy cluster `cluster`, which injects the
    /// rotating token as `Authorization` (`credential_injector` + file-based SDS).
    PodIdentity {
        cluster: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// IRSA: STS AssumeRoleWithWebIdentity through the Envoy cluster `cluster`, which injects
    /// the rotating token (`credential_injector` + file-based SDS + the `ai_gateway_sts` stage).
    WebIdentity {
        cluster: String,
        /// Defaults to `AWS_ROLE_ARN` from the VM's environment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
    },
    /// EC2 instance metadata (IMDSv2) through the Envoy cluster `cluster`.
    Imds {
        cluster: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
    },
    /// A Bedrock API key, sent as `Authorization: Bearer <key>` instead of a SigV4 signature:
    /// `key` written here, or `AWS_BEARER_TOKEN_BEDROCK` from the VM's environment, or, with
    /// `injected_by_envoy`, none at all here because Envoy's `credential_injector` on the
    /// backend's cluster adds it from a file it watches (so keys rotate without a restart).
    ApiKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default)]
        injected_by_envoy: bool,
    },
    /// The AWS SDKs' order, decided from the VM's environment at start-up: a Bedrock API key
    /// (`AWS_BEARER_TOKEN_BEDROCK`, as boto3 prefers it for Bedrock), static keys
    /// (`AWS_ACCESS_KEY_ID`), then IRSA (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`), then
    /// Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI`), then IMDS. Each fetched method
    /// needs its Envoy cluster named here to be eligible.
    DefaultChain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        web_identity_cluster: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod_identity_cluster: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        imds_cluster: Option<String>,
    },
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Inline { access_key_id, .. } => {
                write!(f, "Inline {{ access_key_id: {access_key_id:?}, .. }}")
            }
            CredentialSource::Environment => f.write_str("Environment"),
            CredentialSource::PodIdentity { cluster, .. } => {
                write!(f, "PodIdentity {{ cluster: {cluster:?} }}")
            }
            CredentialSource::WebIdentity {
                cluster, role_arn, ..
            } => {
                write!(
                    f,
                    "WebIdentity {{ cluster: {cluster:?}, role_arn: {role_arn:?} }}"
                )
            }
            CredentialSource::Imds { cluster, .. } => write!(f, "Imds {{ cluster: {cluster:?} }}"),
            CredentialSource::ApiKey {
                injected_by_envoy, ..
            } => write!(f, "ApiKey {{ injected_by_envoy: {injected_by_envoy} }}"),
            CredentialSource::DefaultChain { .. } => f.write_str("DefaultChain"),
        }
    }
}

/// A model listed by `GET /v1/models` and `GET /anthropic/v1/models`: a name, or a name with the
/// details the listing shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelEntry {
    Name(String),
    Detailed(ModelInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub id: String,
    /// Unix seconds; listed as OpenAI's `created` and Anthropic's `created_at`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A JSON object whose members keep their order: backends are written in the order of their
/// clusters. A name given twice is refused rather than one of the two silently chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<V> IntoIterator for OrderedMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<V> FromIterator<(String, V)> for OrderedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(members: I) -> Self {
        OrderedMap(members.into_iter().collect())
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Members<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(String, V)> = Vec::new();
                while let Some((name, value)) = access.next_entry::<String, V>()? {
                    if members.iter().any(|(known, _)| *known == name) {
                        return Err(serde::de::Error::custom(format!("{name:?} is given twice")));
                    }
                    members.push((name, value));
                }
                Ok(OrderedMap(members))
            }
        }

        deserializer.deserialize_map(Members(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Config;

    fn written() -> PluginConfig {
        let backend = |region: &str| PluginBackend {
            calls_cluster: Some(format!("{region}~calls")),
            prompt_caching: Some(PromptCaching::Auto),
            ..PluginBackend::new(Schema::Converse, region, CredentialSource::Environment)
        };
        PluginConfig {
            models: vec![ModelEntry::Name("m".into())],
            backends: [
                ("west", backend("us-west-2")),
                ("east", backend("us-east-1")),
            ]
            .into_iter()
            .map(|(name, b)| (name.to_owned(), b))
            .collect(),
            failover: OrderedMap(vec![(
                "east>west".into(),
                vec!["east".into(), "west".into()],
            )]),
            ..PluginConfig::default()
        }
    }

    #[test]
    fn what_is_written_is_what_the_filter_reads_in_order_and_without_defaults() {
        let json = serde_json::to_string(&written()).unwrap();
        assert!(
            json.starts_with(r#"{"models":["m"],"backends":{"west":{"schema":"converse","region":"us-west-2","credentials":{"source":"environment"},"calls_cluster":"us-west-2~calls","prompt_caching":"auto"},"east":"#),
            "{json}"
        );
        assert!(
            !json.contains("cost") && !json.contains("anthropic_beta"),
            "{json}"
        );
        let read: PluginConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            json,
            "a round trip changes nothing"
        );
        let config = Config::parse(json.as_bytes(), &|_| Some("x".into())).unwrap();
        assert!(config.is_failover("east>west"));
    }

    #[test]
    fn a_backend_named_twice_is_refused() {
        let json = r#"{"backends":{"a":{"schema":"converse","region":"us-east-1","credentials":{"source":"environment"}},
                                  "a":{"schema":"anthropic","region":"us-west-2","credentials":{"source":"environment"}}}}"#;
        let error = serde_json::from_str::<PluginConfig>(json).unwrap_err();
        assert!(
            error.to_string().contains("\"a\" is given twice"),
            "{error}"
        );
        assert!(Config::parse(json.as_bytes(), &|_| Some("x".into())).is_err());
    }
}

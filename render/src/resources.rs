//! The AI Gateway resources a Bedrock user writes, as Kubernetes YAML documents.
//!
//! Field names and meanings follow Envoy AI Gateway (`aigateway.envoyproxy.io/v1alpha1`), Envoy
//! Gateway (`gateway.envoyproxy.io/v1alpha1` `Backend`) and the Gateway API
//! (`gateway.networking.k8s.io` `Gateway`, `BackendTLSPolicy`). Every spec rejects unknown fields, so a
//! typo or a feature this gateway lacks is an error naming the field, never a silently different
//! gateway. Fields that mean something only to a Kubernetes controller (`parentRefs`, `filterConfig`,
//! `allowedRoutes`, `status`, most of `metadata`) are accepted and ignored.

use crate::RenderError;
use base64::Engine as _;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One parsed document of the input file.
#[derive(Debug)]
pub enum Resource {
    Gateway(Object<GatewaySpec>),
    AIGatewayRoute(Object<RouteSpec>),
    AIServiceBackend(Object<ServiceBackendSpec>),
    BackendSecurityPolicy(Object<SecurityPolicySpec>),
    Backend(Object<BackendSpec>),
    BackendTLSPolicy(Object<TlsPolicySpec>),
    BackendTrafficPolicy(Object<TrafficPolicySpec>),
    /// Envoy Gateway's policy for who may call (API keys, JWTs, authorization rules).
    SecurityPolicy(Object<ClientPolicySpec>),
    /// Envoy Gateway's settings of the Envoy it runs: here, its tracing.
    EnvoyProxy(Object<EnvoyProxySpec>),
    Secret(Secret),
    /// GatewayClass and Namespace: they only mean something to a Kubernetes cluster.
    Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
    /// What `kubectl get -o yaml` adds; a controller's report, not configuration.
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

/// `name` (and `namespace`, to refuse clashing names) matter here, and the gateway's own
/// annotations (`bedrock-gateway/...`, on an `AIServiceBackend`); labels, other annotations and
/// the bookkeeping `kubectl` adds are Kubernetes' own.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

// --- gateway.networking.k8s.io Gateway --------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: Option<IgnoredAny>,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
    #[serde(default)]
    pub infrastructure: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub allowed_routes: Option<IgnoredAny>,
    #[serde(default)]
    pub tls: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    #[serde(rename = "type", default)]
    pub address_type: Option<String>,
    pub value: String,
}

// --- aigateway.envoyproxy.io AIGatewayRoute ----------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSpec {
    #[serde(default)]
    pub parent_refs: Option<IgnoredAny>,
    /// The callers' API; older AI Gateway versions required `{name: OpenAI}` here.
    #[serde(default)]
    pub schema: Option<VersionedSchema>,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub filter_config: Option<IgnoredAny>,
    #[serde(default)]
    pub llm_request_costs: Vec<LlmRequestCost>,
}

/// Names a token count the gateway publishes for rate limits (`BackendTrafficPolicy` costs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LlmRequestCost {
    pub metadata_key: String,
    /// `TotalToken`; `InputToken`, `OutputToken`, `CachedInputToken`, `CachedWriteInputToken` and `CEL`
    /// are AI Gateway's other kinds.
    #[serde(rename = "type")]
    pub cost_type: String,
    #[serde(default)]
    pub cel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub matches: Vec<RuleMatch>,
    #[serde(default)]
    pub backend_refs: Vec<RouteBackendRef>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub models_owned_by: Option<String>,
    /// RFC 3339, e.g. `2024-05-21T10:00:00Z`.
    #[serde(default)]
    pub models_created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub match_type: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteBackendRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub model_name_override: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub header_mutation: Option<Value>,
    #[serde(default)]
    pub body_mutation: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// Gateway API duration (`60s`, `5m`, `1h30m`, `500ms`).
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub backend_request: Option<String>,
}

// --- aigateway.envoyproxy.io AIServiceBackend --------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceBackendSpec {
    pub schema: VersionedSchema,
    pub backend_ref: ObjectRef,
    /// Deprecated in AI Gateway in favour of the policy's `targetRefs`; still honoured.
    #[serde(default)]
    pub backend_security_policy_ref: Option<ObjectRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedSchema {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

// --- aigateway.envoyproxy.io BackendSecurityPolicy ---------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(rename = "type")]
    pub policy_type: String,
    #[serde(default)]
    pub aws_credentials: Option<AwsCredentials>,
    #[serde(default, rename = "apiKey")]
    pub api_key: Option<ApiKeySpec>,
    #[serde(default)]
    pub azure_credentials: Option<IgnoredAny>,
    #[serde(default, rename = "gcpCredentials")]
    pub gcp_credentials: Option<IgnoredAny>,
}

/// `type: APIKey`: the key is the Secret's `apiKey`, sent as `Authorization: Bearer` (for
/// Bedrock, a Bedrock API key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeySpec {
    pub secret_ref: ObjectRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsCredentials {
    pub region: String,
    #[serde(default)]
    pub credentials_file: Option<CredentialsFile>,
    #[serde(default)]
    pub oidc_exchange_token: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsFile {
    pub secret_ref: ObjectRef,
    /// `default` unless named, as in AI Gateway.
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
}

// --- gateway.envoyproxy.io Backend -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSpec {
    pub endpoints: Vec<BackendEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEndpoint {
    #[serde(default)]
    pub fqdn: Option<HostPort>,
    #[serde(default)]
    pub ip: Option<IpPort>,
    #[serde(default)]
    pub unix: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPort {
    pub hostname: String,
    pub port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPort {
    pub address: String,
    pub port: u16,
}

// --- gateway.envoyproxy.io EnvoyProxy -----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvoyProxySpec {
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default)]
    pub tracing: Option<Tracing>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Envoy's own access logs: this gateway writes its own.
    #[serde(default)]
    pub access_log: Option<IgnoredAny>,
}

/// An `EnvoyProxy`'s `telemetry.metrics`: the sinks metrics are pushed to. The rest is about
/// which of Envoy's own stats exist or how Prometheus scrapes them; the admin endpoint always
/// serves them (`/stats/prometheus`), so it is accepted and has no effect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    #[serde(default)]
    pub sinks: Vec<MetricSink>,
    #[serde(default)]
    pub prometheus: Option<IgnoredAny>,
    #[serde(default)]
    pub matches: Option<IgnoredAny>,
    #[serde(default)]
    pub enable_virtual_host_stats: Option<IgnoredAny>,
    #[serde(default)]
    pub enable_per_endpoint_stats: Option<IgnoredAny>,
    #[serde(default)]
    pub enable_request_response_sizes_stats: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSink {
    #[serde(rename = "type")]
    pub sink_type: String,
    #[serde(default)]
    pub open_telemetry: Option<OpenTelemetrySink>,
}

/// Where an OpenTelemetry collector listens: `host` and `port`, or a `Backend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenTelemetrySink {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub backend_refs: Vec<TracingBackendRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// Percent of requests traced (Envoy Gateway's default: 100).
    #[serde(default)]
    pub sampling_rate: Option<u32>,
    #[serde(default)]
    pub sampling_fraction: Option<SamplingFraction>,
    pub provider: TracingProvider,
    /// Further tags of every span, by tag name.
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SamplingFraction {
    pub numerator: u32,
    #[serde(default)]
    pub denominator: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingProvider {
    #[serde(rename = "type")]
    pub provider_type: String,
    /// The collector's address (Envoy Gateway's `host`/`port`), or a `Backend` naming it.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub backend_refs: Vec<TracingBackendRef>,
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingBackendRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomTag {
    #[serde(rename = "type")]
    pub tag_type: String,
    #[serde(default)]
    pub literal: Option<LiteralTag>,
    #[serde(default)]
    pub request_header: Option<HeaderTag>,
    #[serde(default)]
    pub environment: Option<HeaderTag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderTag {
    pub name: String,
    #[serde(default)]
    pub default_value: Option<String>,
}

// --- gateway.networking.k8s.io BackendTLSPolicy ------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsPolicySpec {
    pub target_refs: Vec<PolicyTargetRef>,
    pub validation: TlsValidation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsValidation {
    /// `System`: the system's CA bundle.
    #[serde(default, rename = "wellKnownCACertificates")]
    pub well_known_ca_certificates: Option<String>,
    /// SNI, and the name the certificate must carry unless `subjectAltNames` says otherwise.
    pub hostname: String,
    #[serde(default)]
    pub ca_certificate_refs: Option<Value>,
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltName {
    #[serde(rename = "type")]
    pub san_type: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
}

// --- gateway.envoyproxy.io BackendTrafficPolicy (global rate limits) ---------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    pub target_refs: Vec<PolicyTargetRef>,
    pub rate_limit: RateLimit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// `Global` (a rate-limit service keeps the counts for every Envoy).
    #[serde(rename = "type")]
    pub limit_type: String,
    #[serde(default)]
    pub global: Option<GlobalRateLimit>,
    #[serde(default)]
    pub local: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimit {
    pub rules: Vec<RateLimitRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitRule {
    #[serde(default)]
    pub client_selectors: Vec<ClientSelector>,
    pub limit: Limit,
    #[serde(default)]
    pub cost: Option<RateLimitCost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientSelector {
    #[serde(default)]
    pub headers: Vec<SelectorHeader>,
    #[serde(default)]
    pub source_cidr: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorHeader {
    pub name: String,
    /// `Exact` (the default), `Distinct` (one counter per value) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub match_type: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u64,
    /// `Second`, `Minute`, `Hour`, `Day`.
    pub unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitCost {
    #[serde(default)]
    pub request: Option<CostSpecifier>,
    #[serde(default)]
    pub response: Option<CostSpecifier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpecifier {
    /// `Number` or `Metadata`.
    pub from: String,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub metadata: Option<MetadataKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataKey {
    pub namespace: String,
    pub key: String,
}

// --- gateway.envoyproxy.io SecurityPolicy ------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default)]
    pub api_key_auth: Option<ApiKeyAuthSpec>,
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    #[serde(default)]
    pub authorization: Option<AuthorizationSpec>,
    #[serde(default)]
    pub cors: Option<Value>,
    #[serde(default)]
    pub basic_auth: Option<Value>,
    #[serde(default)]
    pub oidc: Option<Value>,
    #[serde(default)]
    pub ext_auth: Option<Value>,
}

/// Secrets whose entries are client ids and their keys; where requests carry the key; the header
/// that names the authenticated client to what follows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeyAuthSpec {
    pub credential_refs: Vec<ObjectRef>,
    pub extract_from: Vec<ExtractFrom>,
    #[serde(default, rename = "forwardClientIDHeader")]
    pub forward_client_id_header: Option<String>,
    /// Remove the key from the request once checked.
    #[serde(default)]
    pub sanitize: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractFrom {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtSpec {
    pub providers: Vec<JwtProvider>,
    #[serde(default)]
    pub optional: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtProvider {
    pub name: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, rename = "localJWKS")]
    pub local_jwks: Option<LocalJwks>,
    #[serde(default, rename = "remoteJWKS")]
    pub remote_jwks: Option<Value>,
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub extract_from: Option<Value>,
    #[serde(default)]
    pub recompute_route: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalJwks {
    /// `Inline` (a JWKS document here) or `ValueRef` (a ConfigMap).
    #[serde(rename = "type")]
    pub jwks_type: String,
    #[serde(default)]
    pub inline: Option<String>,
    #[serde(default)]
    pub value_ref: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// `Allow` or `Deny` for requests no rule matches.
    #[serde(default)]
    pub default_action: Option<String>,
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    #[serde(default)]
    pub name: Option<String>,
    /// `Allow` or `Deny`.
    pub action: String,
    pub principal: Principal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Principal {
    #[serde(default, rename = "clientCIDRs")]
    pub client_cidrs: Option<Value>,
    #[serde(default)]
    pub jwt: Option<Value>,
    /// Every header must have one of its values.
    #[serde(default)]
    pub headers: Vec<PrincipalHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalHeader {
    pub name: String,
    pub values: Vec<String>,
}

// --- v1 Secret ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(rename = "type", default)]
    pub secret_type: Option<String>,
    /// Base64 values, as Kubernetes stores them.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

impl Secret {
    /// The value under `key`, from `stringData` or else base64 `data`, as Kubernetes merges them;
    /// `None` when neither has it.
    pub fn value(&self, key: &str) -> Result<Option<String>, RenderError> {
        if let Some(text) = self.string_data.get(key) {
            return Ok(Some(text.clone()));
        }
        let Some(encoded) = self.data.get(key) else {
            return Ok(None);
        };
        let label = format!("Secret {:?}", self.metadata.name);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| RenderError(format!("{label}: data.{key} is not base64")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| RenderError(format!("{label}: data.{key} is not UTF-8 text")))
    }

    /// Every key and its value, keys in order.
    pub fn entries(&self) -> Result<Vec<(String, String)>, RenderError> {
        let keys: std::collections::BTreeSet<&String> =
            self.string_data.keys().chain(self.data.keys()).collect();
        keys.into_iter()
            .map(|key| Ok((key.clone(), self.value(key)?.unwrap_or_default())))
            .collect()
    }
}

/// The kinds this gateway reads, with the API group each must come from.
const KINDS: &[(&str, &str)] = &[
    ("Gateway", "gateway.networking.k8s.io"),
    ("AIGatewayRoute", "aigateway.envoyproxy.io"),
    ("AIServiceBackend", "aigateway.envoyproxy.io"),
    ("BackendSecurityPolicy", "aigateway.envoyproxy.io"),
    ("Backend", "gateway.envoyproxy.io"),
    ("BackendTLSPolicy", "gateway.networking.k8s.io"),
    ("BackendTrafficPolicy", "gateway.envoyproxy.io"),
    ("SecurityPolicy", "gateway.envoyproxy.io"),
    ("EnvoyProxy", "gateway.envoyproxy.io"),
    ("Secret", ""),
    ("GatewayClass", "gateway.networking.k8s.io"),
    ("Namespace", ""),
];

/// Reads every document of a multi-document YAML file (empty documents are skipped).
pub fn parse_documents(input: &str) -> Result<Vec<Resource>, RenderError> {
    let mut resources = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(input).enumerate() {
        let number = index + 1;
        let value = Value::deserialize(document)
            .map_err(|e| RenderError(format!("document {number}: not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        resources.push(parse_resource(number, value)?);
    }
    Ok(resources)
}

fn parse_resource(number: usize, value: Value) -> Result<Resource, RenderError> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let kind = text("kind").ok_or_else(|| RenderError(format!("document {number}: no `kind`")))?;
    let api_version = text("apiVersion")
        .ok_or_else(|| RenderError(format!("document {number} ({kind}): no `apiVersion`")))?;
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let label = format!("{kind} {name:?}");
    let Some((_, group)) = KINDS.iter().find(|(known, _)| *known == kind) else {
        let supported: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        return Err(RenderError(format!(
            "document {number}: kind {kind} is not supported by this gateway (it reads {})",
            supported.join(", ")
        )));
    };
    let actual_group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    if actual_group != *group {
        return Err(RenderError(format!(
            "{label}: apiVersion {api_version} is not the {kind} this gateway reads (group {})",
            if group.is_empty() {
                "core, apiVersion v1"
            } else {
                group
            }
        )));
    }
    Ok(match kind.as_str() {
        "Gateway" => Resource::Gateway(typed(&label, value)?),
        "AIGatewayRoute" => Resource::AIGatewayRoute(typed(&label, value)?),
        "AIServiceBackend" => Resource::AIServiceBackend(typed(&label, value)?),
        "BackendSecurityPolicy" => Resource::BackendSecurityPolicy(typed(&label, value)?),
        "Backend" => Resource::Backend(typed(&label, value)?),
        "BackendTLSPolicy" => Resource::BackendTLSPolicy(typed(&label, value)?),
        "BackendTrafficPolicy" => Resource::BackendTrafficPolicy(typed(&label, value)?),
        "SecurityPolicy" => Resource::SecurityPolicy(typed(&label, value)?),
        "EnvoyProxy" => Resource::EnvoyProxy(typed(&label, value)?),
        "Secret" => Resource::Secret(typed(&label, value)?),
        _ => Resource::Ignored,
    })
}

/// Deserializes one resource, naming the field at fault in the error (`spec.rules[0].foo`).
fn typed<T: DeserializeOwned>(label: &str, value: Value) -> Result<T, RenderError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            RenderError(format!("{label}: {inner}"))
        } else {
            RenderError(format!("{label}: {path}: {inner}"))
        }
    })
}

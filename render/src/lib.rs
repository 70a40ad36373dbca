//! Renders Envoy AI Gateway resource files into this gateway's Envoy configuration.
//!
//! Input: a multi-document YAML of the resources a Bedrock user writes for Envoy AI Gateway
//! (`Gateway`, `AIGatewayRoute`, `AIServiceBackend`, `BackendSecurityPolicy`, `Backend`,
//! `BackendTLSPolicy`, `Secret`). Output: Envoy's complete bootstrap configuration for the
//! gateway's two filter stages, and the SDS files that hand rotating service-account tokens to
//! the credential clusters. Three steps, one module each: [`resources`] reads the documents,
//! [`plan`] resolves what they mean, [`envoy`] writes it. The plugin configuration written is checked
//! with the filter's own parser, so a file that renders is one the filter accepts.

pub mod blocks;
pub mod callers;
pub mod credentials;
pub mod credentials_file;
pub mod envoy;
pub mod plan;
pub mod rate_limits;
pub mod resources;
pub mod telemetry;
pub mod yaml;

use std::fmt;

pub use credentials::CredentialService;

/// Why a file cannot be rendered, naming the resource and field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError(pub String);

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// What the resources cannot say: where this Envoy runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Named in the output's header (the input file's path).
    pub source_name: String,
    /// Where Envoy finds the filter's `.wasm`.
    pub wasm_path: String,
    /// The native dynamic module (`libbedrock_gateway.so`) to load instead of the `.wasm`.
    pub dynamic_module_path: Option<String>,
    pub admin_address: String,
    pub admin_port: u16,
    /// A listener answering `GET /ready` (200 while Envoy serves, 503 while it drains), for
    /// Kubernetes' probes, which cannot reach an admin interface bound to loopback.
    pub ready_listener: Option<(String, u16)>,
    /// The credential services the AWS default chain may use after static keys in the
    /// environment; each gets a cluster. IMDS alone by default: it needs no token file.
    pub chain: Vec<CredentialService>,
    /// One plain-HTTP address playing every AWS credential service (the bundled emulator), in
    /// place of the Pod Identity agent, STS and IMDS.
    pub credential_endpoint: Option<(String, u16)>,
    /// The rate-limit service a `BackendTrafficPolicy` needs (gRPC, Envoy's RLS protocol).
    pub rate_limit_service: (String, u16),
    /// Where the SDS files ([`Rendered::files`]) will be when Envoy runs.
    pub sds_dir: String,
    pub pod_identity_token_file: String,
    pub web_identity_token_file: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source_name: "(standard input)".into(),
            wasm_path: "target/wasm32-wasip1/release/bedrock_gateway_filter.wasm".into(),
            dynamic_module_path: None,
            admin_address: "127.0.0.1".into(),
            admin_port: 9901,
            ready_listener: None,
            chain: vec![CredentialService::Imds],
            credential_endpoint: None,
            rate_limit_service: ("127.0.0.1".into(), 8081),
            sds_dir: "/etc/ai-gateway".into(),
            pod_identity_token_file:
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
                    .into(),
            web_identity_token_file: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
                .into(),
        }
    }
}

impl Options {
    /// The command operator an access log or rate limit reads one of a request's usage figures
    /// with (`usage`, an `llmRequestCosts` key, `span.*`). The `.wasm` can only publish filter state (a wasm
    /// filter cannot write dynamic metadata); the native module writes dynamic metadata, where
    /// Envoy AI Gateway keeps them, and only there: a second copy cost it ~3,000 instructions
    /// per request.
    pub fn usage_operator(&self, key: &str) -> String {
        match self.dynamic_module_path {
            Some(_) => format!("%DYNAMIC_METADATA(io.envoy.ai_gateway:{key})%"),
            None => format!("%FILTER_STATE(wasm.ai_gateway.{key}:PLAIN)%"),
        }
    }
}

/// Envoy's configuration and the files read beside it.
#[derive(Debug)]
pub struct Rendered {
    pub envoy_yaml: String,
    /// `(file name, contents)`: the SDS files Envoy reads from [`Options::sds_dir`], and
    /// `ratelimit.yaml`, the limits for the rate-limit service.
    pub files: Vec<(String, String)>,
    /// The names of the files above (and `envoy.yaml`) that hold secrets: keys from a credentials
    /// file, a Bedrock API key, callers' keys. Kubernetes output puts them in a Secret.
    pub secret_files: Vec<String>,
}

/// Renders the resources of one file.
pub fn render(input: &str, options: &Options) -> Result<Rendered, RenderError> {
    render_resources(resources::parse_documents(input)?, options)
}

/// Renders the resources of several files together, as `kubectl apply -f a -f b` would apply them;
/// `(name, text)` pairs, the name prefixing that file's errors.
pub fn render_files(
    files: &[(String, String)],
    options: &Options,
) -> Result<Rendered, RenderError> {
    let mut all = Vec::new();
    for (name, text) in files {
        let parsed =
            resources::parse_documents(text).map_err(|e| RenderError(format!("{name}: {e}")))?;
        all.extend(parsed);
    }
    // A broken reference may join resources of several files: name them all.
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    render_resources(all, options).map_err(|e| RenderError(format!("{}: {e}", names.join(", "))))
}

fn render_resources(
    resources: Vec<resources::Resource>,
    options: &Options,
) -> Result<Rendered, RenderError> {
    let plan = plan::plan(&resources)?;
    refuse_failover_with_api_keys(&plan)?;
    let plugin = envoy::plugin_configuration(&plan, options);
    let plugin_json = serde_json::to_string_pretty(&plugin)
        .map_err(|e| RenderError(format!("cannot write the plugin configuration: {e}")))?;
    check_with_filter(&plugin_json)?;
    let mut files = if envoy::uses_default_chain(&plan) {
        credentials::sds_files(options)
    } else {
        Vec::new()
    };
    let mut secret_files = Vec::new();
    if plan
        .clusters
        .iter()
        .any(|c| matches!(c.backend.credentials, plan::CredentialsPlan::Static(_)))
    {
        secret_files.push("envoy.yaml".to_owned());
    }
    for (name, text) in credentials::api_key_files(&plan, options) {
        secret_files.push(name.clone());
        files.push((name, text));
    }
    if let Some((name, text)) = envoy::routes_file(&plan, options) {
        if plan
            .callers
            .as_ref()
            .is_some_and(|c| !c.key_headers().is_empty())
        {
            secret_files.push(name.clone());
        }
        files.push((name, text));
    }
    if let Some(rate_limit) = &plan.rate_limit {
        files.push((
            "ratelimit.yaml".to_owned(),
            rate_limits::service_configuration(rate_limit),
        ));
    }
    Ok(Rendered {
        envoy_yaml: envoy::write(&plan, options, &plugin_json),
        files,
        secret_files,
    })
}

/// Envoy's composite cluster runs one list of upstream filters for every attempt, so an injector
/// adding one backend's API key would also overwrite the signature of the others.
fn refuse_failover_with_api_keys(plan: &plan::Plan) -> Result<(), RenderError> {
    for failover in &plan.failovers {
        let keyed = plan.clusters.iter().find(|c| {
            failover.clusters.contains(&c.name)
                && matches!(c.backend.credentials, plan::CredentialsPlan::ApiKey(_))
        });
        if let Some(cluster) = keyed {
            return Err(RenderError(format!(
                "backend {:?} fails over to others but authenticates with an API key (BackendSecurityPolicy type APIKey); \
                 failover needs AWSCredentials on every backend it lists",
                cluster.name
            )));
        }
    }
    Ok(())
}

/// The filter parses the plugin configuration at start-up; parse it the same way now, with an
/// environment that lets the default chain resolve, so that what renders also starts.
fn check_with_filter(plugin_json: &str) -> Result<(), RenderError> {
    let environment = |key: &str| match key {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("x".to_owned()),
        _ => None,
    };
    bedrock_gateway_core::config::Config::parse(plugin_json.as_bytes(), &environment)
        .map(|_| ())
        .map_err(|e| {
            RenderError(format!(
                "the filter would refuse the rendered plugin configuration: {e}"
            ))
        })
}

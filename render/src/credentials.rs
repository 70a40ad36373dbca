//! The clusters through which the filter fetches temporary AWS credentials for the default chain,
//! and the SDS files that hand them the pod's rotating service-account token.
//!
//! Which of them exist is a fact about where Envoy runs, not about the resources: a Pod Identity
//! token directory exists only in a pod with a Pod Identity association, and Envoy refuses to start
//! when a watched directory is missing. So the renderer is told (`--credential-chain`); static keys
//! in the environment always come first, as in the AWS SDKs.

use crate::blocks::{
    local_file, single_endpoint, upstream_codec, upstream_protocol_options, upstream_stage,
    upstream_tls,
};
use crate::plan::{ApiKeyPlan, CredentialsPlan, Plan, SanPlan, TlsPlan};
use crate::yaml::{document, plain, string, Map, Node, Seq};
use crate::Options;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialService {
    /// IRSA: STS AssumeRoleWithWebIdentity with the projected token.
    WebIdentity,
    /// The EKS Pod Identity agent.
    PodIdentity,
    /// The EC2 instance role through IMDSv2.
    Imds,
}

impl CredentialService {
    /// As `--credential-chain` names them.
    pub fn parse(name: &str) -> Option<CredentialService> {
        match name {
            "irsa" => Some(CredentialService::WebIdentity),
            "pod-identity" => Some(CredentialService::PodIdentity),
            "imds" => Some(CredentialService::Imds),
            _ => None,
        }
    }

    pub fn cluster_name(self) -> &'static str {
        match self {
            CredentialService::WebIdentity => "sts",
            CredentialService::PodIdentity => "eks-pod-identity-agent",
            CredentialService::Imds => "imds",
        }
    }

    fn sds_file_name(self) -> Option<&'static str> {
        match self {
            CredentialService::WebIdentity => Some("sds-web-identity-token.yaml"),
            CredentialService::PodIdentity => Some("sds-pod-identity-token.yaml"),
            CredentialService::Imds => None,
        }
    }

    fn token_file(self, options: &Options) -> Option<&str> {
        match self {
            CredentialService::WebIdentity => Some(&options.web_identity_token_file),
            CredentialService::PodIdentity => Some(&options.pod_identity_token_file),
            CredentialService::Imds => None,
        }
    }
}

/// The SDS files of the token-based services in the chain: each names the token file Envoy reads.
pub fn sds_files(options: &Options) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for service in &options.chain {
        if let (Some(name), Some(token)) = (service.sds_file_name(), service.token_file(options)) {
            let text = generic_secret_file(
                "The projected service-account token",
                "when kubelet rotates it",
                "service-account-token",
                token,
            );
            files.push((name.to_owned(), text));
        }
    }
    files
}

/// An SDS file holding one generic secret read from `file`, which Envoy reads again when it changes.
fn generic_secret_file(what: &str, when: &str, name: &str, file: &str) -> String {
    let secret = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"),
        )
        .with("name", plain(name))
        .with(
            "generic_secret",
            Map::block().with("secret", Map::block().with("filename", string(file))),
        );
    let root = Map::block()
        .comment(format!(
            "{what} as an SDS generic secret: Envoy reads the file it names and"
        ))
        .comment(format!(
            "reads it again {when} (the cluster's sds_config watches its directory)."
        ))
        .with("resources", Seq::block().item(secret));
    document(&[], &root)
}

fn parent_directory(file: &str) -> String {
    match Path::new(file)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
    {
        Some(parent) if !parent.is_empty() => parent,
        _ => ".".to_owned(),
    }
}

/// The region whose STS endpoint IRSA uses: the first backend's on the default chain.
fn sts_region(plan: &Plan) -> &str {
    plan.clusters
        .iter()
        .find(|c| matches!(c.backend.credentials, CredentialsPlan::DefaultChain))
        .map_or("us-east-1", |c| c.backend.region.as_str())
}

/// The SDS file naming a Bedrock API key's file, and that file, for each Secret the
/// `BackendSecurityPolicy`s of type APIKey name: `(file name, contents)` under `sds_dir`.
pub fn api_key_files(plan: &Plan, options: &Options) -> Vec<(String, String)> {
    let dir = options.sds_dir.trim_end_matches('/');
    let mut files: Vec<(String, String)> = Vec::new();
    for cluster in &plan.clusters {
        let CredentialsPlan::ApiKey(key) = &cluster.backend.credentials else {
            continue;
        };
        let key_file = api_key_file(key);
        if files.iter().any(|(name, _)| *name == key_file) {
            continue;
        }
        files.push((key_file, format!("{}\n", key.key)));
        let text = generic_secret_file(
            &format!("The Bedrock API key of Secret {:?}", key.secret),
            "when the file is replaced",
            "bedrock-api-key",
            &format!("{dir}/{}", api_key_file(key)),
        );
        files.push((api_key_sds_file(key), text));
    }
    files
}

/// Where the key itself is, beside the SDS file in the directory Envoy watches.
fn api_key_file(key: &ApiKeyPlan) -> String {
    format!("bedrock-api-key-{}", key.secret)
}

fn api_key_sds_file(key: &ApiKeyPlan) -> String {
    format!("sds-bedrock-api-key-{}.yaml", key.secret)
}

/// Envoy's credential_injector adding `Authorization: Bearer <key>` after the backend stage,
/// overwriting whatever is there (the stage removed the caller's credentials already).
pub fn api_key_injector(key: &ApiKeyPlan, options: &Options) -> Map {
    let dir = options.sds_dir.trim_end_matches('/');
    let sds_path = format!("{dir}/{}", api_key_sds_file(key));
    injector(
        "Authorization",
        Some("Bearer "),
        "bedrock-api-key",
        &sds_path,
        dir,
    )
}

/// Injects the token read through SDS into `header` of every request on the cluster.
fn token_injector(header: &str, sds_path: &str, token_dir: &str) -> Map {
    injector(header, None, "service-account-token", sds_path, token_dir)
}

fn injector(
    header: &str,
    prefix: Option<&str>,
    secret: &str,
    sds_path: &str,
    watched_dir: &str,
) -> Map {
    let mut generic = Map::block()
        .with(
            "\"@type\"",
            plain(
                "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
            ),
        )
        .with("header", plain(header));
    if let Some(prefix) = prefix {
        generic.push("header_value_prefix", string(prefix));
    }
    let source = Map::block().with("path", string(sds_path)).with(
        "watched_directory",
        Map::flow().with("path", string(watched_dir)),
    );
    let generic = generic.with(
        "credential",
        Map::block().with("name", plain(secret)).with(
            "sds_config",
            Map::block().with("path_config_source", source),
        ),
    );
    Map::block()
        .with("name", plain("envoy.filters.http.credential_injector"))
        .with(
            "typed_config",
            Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector"),
                )
                .with("overwrite", plain(true))
                .with(
                    "credential",
                    Map::block()
                        .with("name", plain("envoy.http.injected_credentials.generic"))
                        .with("typed_config", generic),
                ),
        )
}

/// The cluster of one credential service.
pub fn credential_cluster(service: CredentialService, options: &Options, plan: &Plan) -> Map {
    let name = service.cluster_name();
    let local = options.credential_endpoint.as_ref();
    let sds_path = |service: CredentialService| {
        format!(
            "{}/{}",
            options.sds_dir.trim_end_matches('/'),
            service.sds_file_name().unwrap_or_default()
        )
    };
    let cluster = Map::block().with("name", plain(name));
    match service {
        CredentialService::Imds => {
            let (host, port) = local.map_or(("169.254.169.254", 80), |(h, p)| (h.as_str(), *p));
            cluster
                .comment("IMDSv2 (the instance role); in containers the instance's metadata hop limit must be 2.")
                .with("type", plain("STATIC"))
                .with("connect_timeout", plain("1s"))
                .extend(single_endpoint(name, host, port))
        }
        CredentialService::PodIdentity => {
            let filters = Seq::block()
                .item(token_injector(
                    "Authorization",
                    &sds_path(service),
                    &parent_directory(&options.pod_identity_token_file),
                ))
                .item(upstream_codec());
            let (host, port) = local.map_or(("169.254.170.23", 80), |(h, p)| (h.as_str(), *p));
            cluster
                .comment("The EKS Pod Identity agent; it wants the pod's token as Authorization.")
                .with("type", plain("STATIC"))
                .with("connect_timeout", plain("2s"))
                .extend(upstream_protocol_options(None, false, Some(filters)))
                .extend(single_endpoint(name, host, port))
        }
        CredentialService::WebIdentity => {
            let sts_host = format!("sts.{}.amazonaws.com", sts_region(plan));
            let mut cluster = cluster
                .comment("STS AssumeRoleWithWebIdentity (IRSA): the token goes into a header, and the ai_gateway_sts")
                .comment("stage moves it into the form STS reads.");
            match local {
                Some(_) => cluster.push("type", plain("STATIC")),
                None => cluster
                    .push("type", plain("LOGICAL_DNS"))
                    .push("dns_lookup_family", plain("V4_PREFERRED")),
            };
            let own_vm = Map::block()
                .comment("Its own VM: Envoy creates this stage while the gateway's VM is inside the credential fetch.")
                .with(
                    "vm_config",
                    Map::block()
                        .with("vm_id", plain("ai_gateway_sts"))
                        .with("runtime", plain("envoy.wasm.runtime.v8"))
                        .with("code", local_file(&options.wasm_path))
                        .with(
                            "environment_variables",
                            plain("{ host_env_keys: [AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME] }"),
                        ),
                )
                .with("configuration", Node::Alias("gateway_config"));
            let filters = Seq::block()
                .item(token_injector(
                    "x-ai-eg-web-identity-token",
                    &sds_path(service),
                    &parent_directory(&options.web_identity_token_file),
                ))
                .item(upstream_stage(
                    options.dynamic_module_path.as_deref(),
                    "ai_gateway_sts",
                    own_vm,
                ))
                .item(upstream_codec());
            let cluster = cluster
                .with("connect_timeout", plain("5s"))
                .extend(upstream_protocol_options(None, false, Some(filters)));
            match local {
                Some((host, port)) => cluster.extend(single_endpoint(name, host, *port)),
                None => {
                    let tls = TlsPlan {
                        sni: sts_host.clone(),
                        subject_alt_names: vec![SanPlan::Dns(sts_host.clone())],
                    };
                    cluster
                        .extend(single_endpoint(name, &sts_host, 443))
                        .extend(upstream_tls(&tls))
                }
            }
        }
    }
}

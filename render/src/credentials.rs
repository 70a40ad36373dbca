//! The clusters through which the filter fetches temporary AWS credentials for the default chain,
//! and the SDS files that hand them the pod's rotating service-account token.
//!
//! Which of them exist is a fact about where Envoy runs, not about the resources: a Pod Identity
//! token directory exists only in a pod with a Pod Identity association, and Envoy refuses to start
//! when a watched directory is missing. So the renderer is told (`--credential-chain`); static keys
//! in the environment always come first, as in the AWS SDKs.

use crate::plan::{ApiKeyPlan, CredentialsPlan, Plan};
use crate::yaml::{
    line, quoted, single_endpoint, upstream_codec, upstream_protocol_options, upstream_stage,
};
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
    format!(
        "# {what} as an SDS generic secret: Envoy reads the file it names and\n\
         # reads it again {when} (the cluster's sds_config watches its directory).\n\
         resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n\
         \x20 name: {name}\n\
         \x20 generic_secret:\n\
         \x20   secret:\n\
         \x20     filename: {}\n",
        quoted(file)
    )
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
pub fn api_key_injector(o: &mut String, key: &ApiKeyPlan, options: &Options) {
    let dir = options.sds_dir.trim_end_matches('/');
    let sds_path = format!("{dir}/{}", api_key_sds_file(key));
    injector(
        o,
        "Authorization",
        Some("Bearer "),
        "bedrock-api-key",
        &sds_path,
        dir,
    );
}

/// Injects the token read through SDS into `header` of every request on the cluster.
fn token_injector(o: &mut String, header: &str, sds_path: &str, token_dir: &str) {
    injector(
        o,
        header,
        None,
        "service-account-token",
        sds_path,
        token_dir,
    );
}

fn injector(
    o: &mut String,
    header: &str,
    prefix: Option<&str>,
    secret: &str,
    sds_path: &str,
    watched_dir: &str,
) {
    line(o, 4, "- name: envoy.filters.http.credential_injector");
    line(o, 5, "typed_config:");
    line(o, 6, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector");
    line(o, 6, "overwrite: true");
    line(o, 6, "credential:");
    line(o, 7, "name: envoy.http.injected_credentials.generic");
    line(o, 7, "typed_config:");
    line(o, 8, "\"@type\": type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic");
    line(o, 8, &format!("header: {header}"));
    if let Some(prefix) = prefix {
        line(o, 8, &format!("header_value_prefix: {}", quoted(prefix)));
    }
    line(o, 8, "credential:");
    line(o, 9, &format!("name: {secret}"));
    line(o, 9, "sds_config:");
    line(o, 10, "path_config_source:");
    line(o, 11, &format!("path: {}", quoted(sds_path)));
    line(
        o,
        11,
        &format!("watched_directory: {{ path: {} }}", quoted(watched_dir)),
    );
}

/// Writes the cluster of one credential service.
pub fn write_credential_cluster(
    o: &mut String,
    service: CredentialService,
    options: &Options,
    plan: &Plan,
) {
    let name = service.cluster_name();
    let local = options.credential_endpoint.as_ref();
    let sds_path = |service: CredentialService| {
        format!(
            "{}/{}",
            options.sds_dir.trim_end_matches('/'),
            service.sds_file_name().unwrap_or_default()
        )
    };
    line(o, 1, &format!("- name: {name}"));
    match service {
        CredentialService::Imds => {
            line(o, 2, "# IMDSv2 (the instance role); in containers the instance's metadata hop limit must be 2.");
            line(o, 2, "type: STATIC");
            line(o, 2, "connect_timeout: 1s");
            let (host, port) = local.map_or(("169.254.169.254", 80), |(h, p)| (h.as_str(), *p));
            single_endpoint(o, name, host, port);
        }
        CredentialService::PodIdentity => {
            line(
                o,
                2,
                "# The EKS Pod Identity agent; it wants the pod's token as Authorization.",
            );
            line(o, 2, "type: STATIC");
            line(o, 2, "connect_timeout: 2s");
            upstream_protocol_options(o, None, false, true);
            token_injector(
                o,
                "Authorization",
                &sds_path(service),
                &parent_directory(&options.pod_identity_token_file),
            );
            upstream_codec(o);
            let (host, port) = local.map_or(("169.254.170.23", 80), |(h, p)| (h.as_str(), *p));
            single_endpoint(o, name, host, port);
        }
        CredentialService::WebIdentity => {
            line(o, 2, "# STS AssumeRoleWithWebIdentity (IRSA): the token goes into a header, and the ai_gateway_sts");
            line(o, 2, "# stage moves it into the form STS reads.");
            let sts_host = format!("sts.{}.amazonaws.com", sts_region(plan));
            match local {
                Some(_) => line(o, 2, "type: STATIC"),
                None => {
                    line(o, 2, "type: LOGICAL_DNS");
                    line(o, 2, "dns_lookup_family: V4_PREFERRED");
                }
            }
            line(o, 2, "connect_timeout: 5s");
            upstream_protocol_options(o, None, false, true);
            token_injector(
                o,
                "x-ai-eg-web-identity-token",
                &sds_path(service),
                &parent_directory(&options.web_identity_token_file),
            );
            upstream_stage(
                o,
                options.dynamic_module_path.as_deref(),
                "ai_gateway_sts",
                |o, c| {
                    line(o, c, "# Its own VM: Envoy creates this stage while the gateway's VM is inside the credential fetch.");
                    line(o, c, "vm_config:");
                    line(o, c + 1, "vm_id: ai_gateway_sts");
                    line(o, c + 1, "runtime: envoy.wasm.runtime.v8");
                    line(
                        o,
                        c + 1,
                        &format!(
                            "code: {{ local: {{ filename: {} }} }}",
                            quoted(&options.wasm_path)
                        ),
                    );
                    line(o, c + 1, "environment_variables: { host_env_keys: [AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME] }");
                    line(o, c, "configuration: *gateway_config");
                },
            );
            upstream_codec(o);
            match local {
                Some((host, port)) => single_endpoint(o, name, host, *port),
                None => {
                    single_endpoint(o, name, &sts_host, 443);
                    line(o, 2, "transport_socket:");
                    line(o, 3, "name: envoy.transport_sockets.tls");
                    line(o, 3, "typed_config:");
                    line(o, 4, "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
                    line(o, 4, &format!("sni: {}", quoted(&sts_host)));
                    line(o, 4, "common_tls_context:");
                    line(o, 5, "validation_context:");
                    line(
                        o,
                        6,
                        "trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }",
                    );
                    line(o, 6, &format!("match_typed_subject_alt_names: [ {{ san_type: DNS, matcher: {{ exact: {} }} }} ]", quoted(&sts_host)));
                }
            }
        }
    }
}

//! `ai-gateway-render`: AI Gateway resource files in, Envoy configuration out.

use ai_gateway_render::{render_files, CredentialService, Options, Rendered};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
Usage: ai-gateway-render [OPTIONS] RESOURCES.yaml [MORE.yaml ...]

Renders AI Gateway resources (Gateway, AIGatewayRoute, AIServiceBackend, BackendSecurityPolicy,
Backend, BackendTLSPolicy, BackendTrafficPolicy, Secret) into the Envoy configuration of the
Bedrock gateway. Several files are read as one set of resources.

Options:
  --out-dir DIR                 write DIR/envoy.yaml and the SDS files beside it (default: envoy.yaml
                                on standard output, for resources that need no SDS file)
  --configmap NAME              instead, a Kubernetes ConfigMap NAME holding envoy.yaml and the SDS files,
                                and a Secret NAME holding the files with keys in them (mount both in
                                one projected volume)
  --output FILE                 write what would go to standard output to FILE (left as it was on error)
  --namespace NS                the ConfigMap's namespace (default envoy-gateway-system)
  --wasm PATH                   the filter's .wasm as Envoy will find it
  --dynamic-module PATH         load the gateway as the native dynamic module PATH (libbedrock_gateway.so,
                                as Envoy will find it) instead of the .wasm
                                (default target/wasm32-wasip1/release/bedrock_gateway_filter.wasm)
  --admin ADDRESS:PORT          Envoy's admin listener (default 127.0.0.1:9901)
  --ready ADDRESS:PORT          also a listener answering GET /ready, for Kubernetes probes
  --credential-chain LIST       what the AWS default chain may use after static keys in the
                                environment, for policies without credentialsFile: any of irsa,
                                pod-identity, imds, comma-separated, or none (default imds)
  --pod-identity-token-file F   the Pod Identity token (default: EKS's projected token path)
  --web-identity-token-file F   the IRSA token (default: EKS's projected token path)
  --sds-dir DIR                 where Envoy finds the SDS files (default: --out-dir, or /etc/ai-gateway
                                with --configmap)
  --rate-limit-service ADDR:PORT
                                the rate-limit service of a BackendTrafficPolicy (default 127.0.0.1:8081)
  --credential-endpoint ADDR:PORT
                                one plain-HTTP address playing STS, the Pod Identity agent and IMDS
                                (the bundled emulator)
";

struct Command {
    inputs: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    configmap: Option<(String, String)>,
    output: Option<PathBuf>,
    options: Options,
}

fn host_port(text: &str, flag: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag}: expected ADDRESS:PORT, got {text:?}"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{flag}: {port:?} is not a port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

fn parse_arguments(arguments: Vec<String>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut inputs = Vec::new();
    let (mut out_dir, mut sds_dir, mut configmap, mut namespace, mut output) =
        (None, None, None, None, None);
    let mut arguments = arguments.into_iter();
    while let Some(argument) = arguments.next() {
        if !argument.starts_with("--") {
            inputs.push(PathBuf::from(&argument));
            continue;
        }
        if argument == "--help" {
            return Err(String::new());
        }
        let value = arguments
            .next()
            .ok_or_else(|| format!("{argument} needs a value"))?;
        match argument.as_str() {
            "--out-dir" => out_dir = Some(PathBuf::from(value)),
            "--configmap" => configmap = Some(value),
            "--output" => output = Some(PathBuf::from(value)),
            "--namespace" => namespace = Some(value),
            "--wasm" => options.wasm_path = value,
            "--dynamic-module" => options.dynamic_module_path = Some(value),
            "--admin" => {
                (options.admin_address, options.admin_port) = host_port(&value, &argument)?
            }
            "--ready" => options.ready_listener = Some(host_port(&value, &argument)?),
            "--credential-chain" => {
                options.chain = Vec::new();
                for name in value
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty() && *n != "none")
                {
                    let service = CredentialService::parse(name).ok_or_else(|| {
                        format!(
                            "--credential-chain: {name:?} is not irsa, pod-identity, imds or none"
                        )
                    })?;
                    if !options.chain.contains(&service) {
                        options.chain.push(service);
                    }
                }
            }
            "--pod-identity-token-file" => options.pod_identity_token_file = value,
            "--web-identity-token-file" => options.web_identity_token_file = value,
            "--sds-dir" => sds_dir = Some(value),
            "--rate-limit-service" => options.rate_limit_service = host_port(&value, &argument)?,
            "--credential-endpoint" => {
                options.credential_endpoint = Some(host_port(&value, &argument)?)
            }
            _ => return Err(format!("unknown option {argument}")),
        }
    }
    if inputs.is_empty() {
        return Err("no resource file given".into());
    }
    if out_dir.is_some() && (configmap.is_some() || output.is_some()) {
        return Err(
            "--out-dir writes files of its own: it takes neither --configmap nor --output".into(),
        );
    }
    options.source_name = inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    options.sds_dir = match (sds_dir, &out_dir, &configmap) {
        (Some(dir), _, _) => dir,
        (None, Some(dir), _) => dir.display().to_string(),
        (None, None, _) => "/etc/ai-gateway".to_owned(),
    };
    let configmap = configmap.map(|name| {
        (
            name,
            namespace.unwrap_or_else(|| "envoy-gateway-system".into()),
        )
    });
    Ok(Command {
        inputs,
        out_dir,
        configmap,
        output,
        options,
    })
}

/// The Kubernetes manifests for the rendered files: a ConfigMap `name` holding each file under its
/// name, but those holding secrets, which go into a Secret `name` (none when there are none).
fn kubernetes_manifests(
    name: &str,
    namespace: &str,
    files: &[(String, String)],
    secret_files: &[String],
) -> String {
    let (secrets, plain): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|(file, _)| secret_files.contains(file));
    let mut out = format!(
        "# Rendered by ai-gateway-render; do not edit.\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n"
    );
    block_entries(&mut out, &plain);
    if !secrets.is_empty() {
        out.push_str(&format!(
            "---\n# The files holding keys, beside the ConfigMap's in the same projected volume.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\nstringData:\n"
        ));
        block_entries(&mut out, &secrets);
    }
    out
}

/// `  file: |` blocks, each file's lines indented under its name.
fn block_entries(out: &mut String, files: &[&(String, String)]) {
    for (file, text) in files {
        out.push_str(&format!("  {file}: |\n"));
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// Writes a file readable by its owner only (some hold keys), and atomically: the contents go to a
/// file beside it that then replaces it, so a reader never sees half a file, and Envoy, which
/// watches directories for files moved into them, sees the change.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = path.with_file_name(format!(".{file_name}.rendering"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&staging);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staging)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staging, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        format!("cannot write {}: {e}", path.display())
    })
}

/// To `--output` (replaced in one step, so a reader never sees half a file) or standard output.
fn emit(output: Option<&Path>, text: &str) -> Result<(), String> {
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => write_file(path, text),
    }
}

fn run(command: Command) -> Result<(), String> {
    let mut inputs = Vec::new();
    for path in &command.inputs {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        inputs.push((path.display().to_string(), text));
    }
    let Rendered {
        envoy_yaml,
        files,
        secret_files,
    } = render_files(&inputs, &command.options).map_err(|e| e.to_string())?;
    match (&command.out_dir, &command.configmap) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write_file(&dir.join("envoy.yaml"), &envoy_yaml)?;
            for (name, text) in &files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                }
                write_file(&path, text)?;
            }
        }
        (None, Some((name, namespace))) => {
            let other_files = files;
            let mut files = vec![("envoy.yaml".to_owned(), envoy_yaml)];
            files.extend(other_files);
            emit(
                command.output.as_deref(),
                &kubernetes_manifests(name, namespace, &files, &secret_files),
            )?;
        }
        (None, None) => {
            if !files.is_empty() {
                return Err("these resources need files beside envoy.yaml (SDS, rate limits): give --out-dir or --configmap".into());
            }
            emit(command.output.as_deref(), &envoy_yaml)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let command = match parse_arguments(std::env::args().skip(1).collect()) {
        Ok(command) => command,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("ai-gateway-render: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ai-gateway-render: {message}");
            ExitCode::FAILURE
        }
    }
}

//! Resource files in, Envoy configuration out: every shipped example and a fixture of every feature,
//! compared byte for byte with `tests/golden/` (`UPDATE_GOLDEN=1 cargo test -p ai-gateway-render`
//! rewrites them; review the diff). The shipped renderings (`envoy.yaml`, the Kubernetes ConfigMaps)
//! are checked against `make render-examples` by the end-to-end suite, which also loads each in Envoy.
//! Then what must not render, with the message that says why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

use ai_gateway_render::{render, CredentialService, Options};
use bedrock_gateway_core::config::plugin::PluginConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn check_golden(name: &str, rendered: &str) {
    check_structure(name, rendered);
    let path = root().join("render/tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, rendered).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: UPDATE_GOLDEN=1 cargo test -p ai-gateway-render",
            path.display()
        )
    });
    if rendered != expected {
        let line = rendered
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from its golden file from line {}:\n  rendered: {:?}\n  golden:   {:?}\n(UPDATE_GOLDEN=1 rewrites it)",
            line + 1,
            rendered.lines().nth(line),
            expected.lines().nth(line)
        );
    }
}

// ---- Each rendering read back -----------------------------------------------------------

/// Every rendering parses as YAML (anchors and aliases resolved), and an Envoy configuration holds
/// together: clusters named once, every cluster a route, a filter or the plugin configuration
/// names exists, every filter chain ends with the router, and the plugin configuration parses in
/// the filter's own type and names only clusters there are.
fn check_structure(name: &str, rendered: &str) {
    let document: Value = serde_norway::from_str(rendered)
        .unwrap_or_else(|e| panic!("{name} does not read back as YAML: {e}"));
    if !name.ends_with(".envoy.yaml") {
        return;
    }
    let clusters = document
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{name}: no static_resources.clusters"));
    let mut names: Vec<&str> = Vec::new();
    for cluster in clusters {
        let cluster_name = cluster["name"].as_str().expect("every cluster is named");
        assert!(
            !names.contains(&cluster_name),
            "{name}: cluster {cluster_name:?} twice"
        );
        names.push(cluster_name);
        if let Some(own) = cluster.pointer("/load_assignment/cluster_name") {
            assert_eq!(
                own.as_str(),
                Some(cluster_name),
                "{name}: load_assignment of {cluster_name:?}"
            );
        }
    }
    let mut referenced = Vec::new();
    cluster_references(&document, None, &mut referenced);
    assert!(
        !referenced.is_empty(),
        "{name}: nothing refers to a cluster"
    );
    for cluster in &referenced {
        assert!(
            names.contains(&cluster.as_str()),
            "{name}: {cluster:?} is named but not defined"
        );
    }
    let mut chains = Vec::new();
    filter_lists(&document, &mut chains);
    assert!(!chains.is_empty(), "{name}: no HTTP connection manager");
    for filters in chains {
        let last = filters.last().and_then(|f| f["name"].as_str());
        assert_eq!(
            last,
            Some("envoy.filters.http.router"),
            "{name}: a filter chain ends elsewhere"
        );
    }
    let mut plugins = Vec::new();
    plugin_configurations(&document, &mut plugins);
    assert!(!plugins.is_empty(), "{name}: no plugin configuration");
    for json in plugins {
        let plugin: PluginConfig = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{name}: the plugin configuration does not parse: {e}"));
        for (backend, entry) in &plugin.backends.0 {
            assert!(
                names.contains(&backend.as_str()),
                "{name}: backend {backend:?} has no cluster"
            );
            let calls = entry
                .calls_cluster
                .as_deref()
                .expect("every rendered backend has one");
            assert!(names.contains(&calls), "{name}: {calls:?} is not a cluster");
        }
        for (failover, attempts) in &plugin.failover.0 {
            assert!(
                names.contains(&failover.as_str()),
                "{name}: failover {failover:?}"
            );
            for attempt in attempts {
                assert!(
                    plugin.backends.0.iter().any(|(b, _)| b == attempt),
                    "{name}: {attempt:?}"
                );
            }
        }
        for clusters in plugin.metric_series.values() {
            for cluster in clusters {
                assert!(
                    names.contains(&cluster.as_str()),
                    "{name}: metric series of {cluster:?}"
                );
            }
        }
    }
}

#[test]
fn the_read_back_fails_on_a_configuration_that_does_not_hold_together() {
    let rendered = render(
        &read("examples/emulator.yaml"),
        &make_run_options("examples/emulator.yaml"),
    )
    .expect("renders")
    .envoy_yaml;
    check_structure("emulator.envoy.yaml", &rendered);
    let broken = [
        (
            "route to a missing cluster",
            r#"route: { cluster: "bedrock-us-east-1","#,
            r#"route: { cluster: "nowhere","#,
        ),
        (
            "backend without its calls cluster",
            r#""calls_cluster": "bedrock-us-east-1~calls""#,
            r#""calls_cluster": "gone""#,
        ),
        (
            "filter chain without its router",
            "- name: envoy.filters.http.router",
            "- name: envoy.filters.http.buffer",
        ),
        (
            "unparsable plugin configuration",
            r#""backends": {"#,
            r#""backendz": {"#,
        ),
    ];
    for (what, from, to) in broken {
        assert!(rendered.contains(from), "{what}: {from}");
        let text = rendered.replacen(from, to, 1);
        let outcome = std::panic::catch_unwind(|| check_structure("broken.envoy.yaml", &text));
        assert!(outcome.is_err(), "{what} passed the read-back");
    }
}

/// Clusters named by routes (`cluster`, weighted clusters' names), composite clusters, gRPC and
/// HTTP services (`cluster_name`, `cluster`), and the plugin's credential clusters.
fn cluster_references(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (member, inner) in map {
                match (member.as_str(), inner) {
                    ("cluster" | "cluster_name", Value::String(name))
                        if !matches!(key, Some("load_assignment" | "node")) =>
                    {
                        out.push(name.clone())
                    }
                    ("clusters", Value::Array(items))
                        if matches!(key, Some("weighted_clusters" | "typed_config")) =>
                    {
                        out.extend(
                            items
                                .iter()
                                .filter_map(|c| c["name"].as_str())
                                .map(str::to_owned),
                        )
                    }
                    (
                        "web_identity_cluster" | "pod_identity_cluster" | "imds_cluster",
                        Value::String(name),
                    ) => out.push(name.clone()),
                    _ => cluster_references(inner, Some(member), out),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| cluster_references(item, key, out)),
        _ => {}
    }
}

fn filter_lists<'a>(value: &'a Value, out: &mut Vec<&'a Vec<Value>>) {
    match value {
        Value::Object(map) => {
            let is_manager = map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("http_connection_manager.v3.HttpConnectionManager"));
            if let (true, Some(Value::Array(filters))) = (is_manager, map.get("http_filters")) {
                out.push(filters);
            }
            map.values().for_each(|inner| filter_lists(inner, out));
        }
        Value::Array(items) => items.iter().for_each(|item| filter_lists(item, out)),
        _ => {}
    }
}

/// The plugin JSON of every gateway filter (the .wasm's `configuration`, the module's
/// `filter_config`): a `StringValue` with the JSON as its value.
fn plugin_configurations(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (member, inner) in map {
                let is_plugin = matches!(member.as_str(), "configuration" | "filter_config")
                    && inner["@type"] == "type.googleapis.com/google.protobuf.StringValue";
                match (is_plugin, inner["value"].as_str()) {
                    (true, Some(json)) => out.push(json.to_owned()),
                    _ => plugin_configurations(inner, out),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| plugin_configurations(item, out)),
        _ => {}
    }
}

/// As `make run` (e2e/run-local.sh) renders: every credential service, played by the emulator.
fn make_run_options(source: &str) -> Options {
    Options {
        source_name: source.into(),
        chain: vec![
            CredentialService::WebIdentity,
            CredentialService::PodIdentity,
            CredentialService::Imds,
        ],
        credential_endpoint: Some(("127.0.0.1".into(), 4566)),
        sds_dir: ".run/gateway".into(),
        pod_identity_token_file: ".run/auth/token".into(),
        web_identity_token_file: ".run/auth/token".into(),
        ..Options::default()
    }
}

#[test]
fn the_native_module_replaces_the_wasm_filter_in_every_stage() {
    let options = Options {
        dynamic_module_path: Some("/opt/ai-gateway/libbedrock_gateway.so".into()),
        ..make_run_options("examples/emulator.yaml")
    };
    let rendered = render(&read("examples/emulator.yaml"), &options).expect("renders");
    check_golden("emulator.dynamic-module.envoy.yaml", &rendered.envoy_yaml);
    let yaml = &rendered.envoy_yaml;
    assert!(
        !yaml.contains("envoy.filters.http.wasm"),
        "no wasm stage is left"
    );
    for stage in [
        "filter_name: ai_gateway\n",
        "filter_name: ai_gateway_backend\n",
        "filter_name: ai_gateway_sts\n",
    ] {
        assert!(yaml.contains(stage), "{stage:?} is rendered");
    }
    assert_eq!(
        yaml.matches("module: { local: { filename: \"/opt/ai-gateway/libbedrock_gateway.so\" } }")
            .count(),
        1,
        "loaded once, shared by anchor"
    );
}

#[test]
fn usage_is_read_where_each_host_publishes_it() {
    let resources = format!(
        "{}---\n{}",
        read("examples/emulator.yaml"),
        read("examples/rate-limit.yaml")
    );
    let wasm = render(&resources, &make_run_options("examples/emulator.yaml"))
        .expect("renders")
        .envoy_yaml;
    let native_options = Options {
        dynamic_module_path: Some("/opt/libbedrock_gateway.so".into()),
        ..make_run_options("examples/emulator.yaml")
    };
    let native = render(&resources, &native_options)
        .expect("renders")
        .envoy_yaml;
    assert!(wasm.contains("usage=%FILTER_STATE(wasm.ai_gateway.usage:PLAIN)%"));
    assert!(wasm.contains(
        "hits_addend: { format: \"%FILTER_STATE(wasm.ai_gateway.llm_total_token:PLAIN)%\" }"
    ));
    assert!(native.contains("usage=%DYNAMIC_METADATA(io.envoy.ai_gateway:usage)%"));
    assert!(native.contains(
        "hits_addend: { format: \"%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%\" }"
    ));
    assert!(
        !native.contains("FILTER_STATE"),
        "the native module writes no filter state"
    );
}

#[test]
fn the_emulator_example_renders_as_make_run_serves_it() {
    let rendered = render(
        &read("examples/emulator.yaml"),
        &make_run_options("examples/emulator.yaml"),
    )
    .expect("renders");
    check_golden("emulator.envoy.yaml", &rendered.envoy_yaml);
    let names: Vec<&str> = rendered
        .files
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        ["sds-web-identity-token.yaml", "sds-pod-identity-token.yaml"]
    );
    for (name, text) in &rendered.files {
        check_golden(&format!("emulator.{name}"), text);
    }
}

#[test]
fn tracing_renders_as_envoys_opentelemetry_tracer_with_the_genai_tags() {
    let resources = format!(
        "{}---\n{}",
        read("examples/emulator.yaml"),
        read("examples/tracing.yaml")
    );
    let wasm = render(&resources, &make_run_options("examples/emulator.yaml"))
        .expect("renders")
        .envoy_yaml;
    check_golden("tracing.envoy.yaml", &wasm);
    assert!(wasm.contains(
        "decorator: { operation: \"chat us.meta.llama3-2-1b-instruct-v1:0\", propagate: false }"
    ));
    assert!(wasm.contains(
        "decorator: { operation: \"embeddings amazon.titan-embed-text-v2:0\", propagate: false }"
    ));
    assert!(wasm.contains("- { tag: gen_ai.usage.input_tokens, value: \"%FILTER_STATE(wasm.ai_gateway.span.input_tokens:PLAIN)%\", value_type: INT }"));
    assert!(wasm.contains("\"trace_attributes\": true"));
    assert!(wasm.contains("- name: envoy.stat_sinks.open_telemetry"));
    assert!(wasm.contains("cluster_name: opentelemetry-metrics-collector"));
    let native = render(
        &resources,
        &Options {
            dynamic_module_path: Some("/opt/libbedrock_gateway.so".into()),
            ..make_run_options("examples/emulator.yaml")
        },
    )
    .expect("renders")
    .envoy_yaml;
    assert!(native.contains("- { tag: gen_ai.usage.input_tokens, value: \"%DYNAMIC_METADATA(io.envoy.ai_gateway:span.input_tokens)%\", value_type: INT }"));
    let untraced = render(
        &read("examples/emulator.yaml"),
        &make_run_options("examples/emulator.yaml"),
    )
    .expect("renders")
    .envoy_yaml;
    assert!(
        !untraced.contains("tracing:")
            && !untraced.contains("trace_attributes")
            && !untraced.contains("decorator")
            && !untraced.contains("stats_sinks")
    );
    for (from, to, expected) in [
        (
            "type: OpenTelemetry",
            "type: Zipkin",
            "provider.type: \"Zipkin\" is not supported",
        ),
        (
            "samplingRate: 100",
            "samplingRate: 101",
            "samplingRate: 101 is not a percentage",
        ),
        (
            "        host: 127.0.0.1\n",
            "",
            "name the collector with host and port, or with one backendRef",
        ),
        (
            "deployment.environment:",
            "gen_ai.system:",
            "the gateway sets the GenAI attributes itself",
        ),
        (
            "      - type: OpenTelemetry\n",
            "      - type: Prometheus\n",
            "metrics.sinks[0].type: \"Prometheus\" is not supported",
        ),
        (
            "        openTelemetry:\n          host: 127.0.0.1\n          port: 4317",
            "        openTelemetry:\n          host: 127.0.0.1\n          port: 4317\n      - type: OpenTelemetry\n        openTelemetry: { host: collector, port: 4317 }",
            "one metric sink at most",
        ),
        (
            "        openTelemetry:\n          host: 127.0.0.1\n          port: 4317",
            "        openTelemetry: {}",
            "metrics.sinks[0].openTelemetry: name the collector with host and port, or with one backendRef",
        ),
    ] {
        let broken = resources.replacen(from, to, 1);
        assert_ne!(broken, resources, "{from}");
        let error =
            render(&broken, &make_run_options("examples/emulator.yaml")).expect_err(expected);
        assert!(
            error.0.contains(expected),
            "expected {expected:?} in {error}"
        );
    }
}

#[test]
fn the_seed_aws_example_renders_as_published_and_pointed_at_the_emulator() {
    let options = Options {
        source_name: "basic-aws.yaml".into(),
        ..Options::default()
    };
    let published =
        render(&read("render/tests/fixtures/basic-aws.yaml"), &options).expect("renders");
    check_golden("basic-aws.envoy.yaml", &published.envoy_yaml);
    assert!(published.files.is_empty(), "static keys need no token");
    let local = render(
        &read("examples/basic-aws.yaml"),
        &make_run_options("examples/basic-aws.yaml"),
    )
    .expect("renders");
    check_golden("basic-aws-emulator.envoy.yaml", &local.envoy_yaml);
}

fn emulator_with_rate_limit(
    policy: &str,
) -> Result<ai_gateway_render::Rendered, ai_gateway_render::RenderError> {
    let files = [
        (
            "examples/emulator.yaml".to_owned(),
            read("examples/emulator.yaml"),
        ),
        ("examples/rate-limit.yaml".to_owned(), policy.to_owned()),
    ];
    ai_gateway_render::render_files(
        &files,
        &Options {
            source_name: "examples/emulator.yaml and examples/rate-limit.yaml".into(),
            ..Options::default()
        },
    )
}

#[test]
fn a_token_budget_renders_as_envoys_rate_limit_filter_and_the_services_limits() {
    let rendered = emulator_with_rate_limit(&read("examples/rate-limit.yaml")).expect("renders");
    check_golden("rate-limit.envoy.yaml", &rendered.envoy_yaml);
    let (name, limits) = rendered.files.last().expect("the service's limits");
    assert_eq!(name, "ratelimit.yaml");
    check_golden("rate-limit.ratelimit.yaml", limits);
}

#[test]
fn rate_limits_the_gateway_cannot_enforce_are_refused() {
    let policy = read("examples/rate-limit.yaml");
    let cases = [
        ("kind: Gateway, name: ai-gateway", "kind: HTTPRoute, name: bedrock", "spec.targetRefs[0]: only the file's Gateway can be targeted"),
        ("key: llm_total_token", "key: llm_input_token", "cost.response.metadata.key: \"llm_input_token\" is not a metadataKey of any AIGatewayRoute's llmRequestCosts"),
        ("unit: Hour", "unit: Week", "limit.unit: \"Week\" is not Second, Minute, Hour or Day"),
        ("type: Global", "type: Local", "spec.rateLimit.type: only Global is supported"),
        ("type: Distinct", "type: Exact", "clientSelectors[0].headers[0].value is required for this type"),
    ];
    for (from, to, expected) in cases {
        assert!(policy.contains(from), "{from}");
        let error = emulator_with_rate_limit(&policy.replacen(from, to, 1)).expect_err(expected);
        assert!(
            error.0.contains(expected),
            "expected {expected:?} in {error}"
        );
    }
}

#[test]
fn every_feature_of_the_format_renders() {
    let options = Options {
        source_name: "features.yaml".into(),
        ..Options::default()
    };
    let rendered = render(&read("render/tests/fixtures/features.yaml"), &options).expect("renders");
    check_golden("features.envoy.yaml", &rendered.envoy_yaml);
}

#[test]
fn static_keys_are_written_only_where_the_filter_reads_them_and_the_file_says_so() {
    let rendered = render(
        &read("render/tests/fixtures/features.yaml"),
        &Options::default(),
    )
    .expect("renders");
    assert!(rendered.envoy_yaml.contains("It holds AWS secret keys"));
    // Once for each of the three backends whose policy names the profile, inside the plugin configuration.
    assert_eq!(rendered.envoy_yaml.matches("bedrock/secret").count(), 3);
    assert_eq!(
        rendered
            .envoy_yaml
            .matches("\"secret_access_key\": \"bedrock/secret\"")
            .count(),
        3
    );
    let chain_only = render(&read("examples/aws.yaml"), &Options::default()).expect("renders");
    assert!(!chain_only.envoy_yaml.contains("secret keys"));
}

/// `examples/basic-aws.yaml` with `from` replaced by `to` must fail with a message containing `expected`.
fn refused(from: &str, to: &str, expected: &str) {
    let base = read("examples/basic-aws.yaml");
    assert!(base.contains(from), "the base file lacks {from:?}");
    let input = base.replacen(from, to, 1);
    match render(&input, &Options::default()) {
        Ok(_) => panic!("rendered, but should fail with {expected:?}"),
        Err(error) => {
            assert!(
                error.0.contains(expected),
                "expected {expected:?} in:\n{error}"
            );
            assert!(
                !error.0.contains("wJalrXUtnFEMI"),
                "an error quoted the secret key: {error}"
            );
        }
    }
}

const RULE: &str = "      backendRefs:\n        - name: envoy-ai-gateway-basic-aws\n";

#[test]
fn unknown_kinds_fields_and_bad_yaml_are_named() {
    refused(
        "kind: AIServiceBackend\n",
        "kind: HTTPRoute\n",
        "document 3: kind HTTPRoute is not supported by this gateway",
    );
    refused(RULE, &format!("{RULE}      retries: 3\n"), "AIGatewayRoute \"envoy-ai-gateway-basic-aws\": spec.rules[0].retries: unknown field `retries`");
    refused("    name: AWSAnthropic\n", "    name: AWSAnthropic\n    flavour: x\n", "AIServiceBackend \"envoy-ai-gateway-basic-aws-bedrock-anthropic\": spec.schema.flavour: unknown field `flavour`");
    refused(
        "  name: envoy-ai-gateway-basic-aws\n  namespace: default\nspec:\n  schema:",
        "  name: [\n",
        "not valid YAML",
    );
    refused(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend",
        "apiVersion: v1\nkind: Backend",
        "apiVersion v1 is not the Backend this gateway reads",
    );
    refused(
        "        port: 4566\n",
        "        port: 4566\n    - unix: { path: /tmp/bedrock.sock }\n",
        "spec.endpoints[1].unix: Unix sockets are not supported",
    );
}

/// A BackendSecurityPolicy of type APIKey: the filter signs nothing for that backend, and Envoy's
/// credential_injector adds the key it reads through SDS from a file it watches.
#[test]
fn a_bedrock_api_key_is_injected_by_envoy_from_a_watched_file() {
    let options = Options {
        source_name: "api-key.yaml".into(),
        sds_dir: "/etc/ai-gateway".into(),
        ..Options::default()
    };
    let rendered = render(&read("render/tests/fixtures/api-key.yaml"), &options).expect("renders");
    check_golden("api-key.envoy.yaml", &rendered.envoy_yaml);
    let key = "ABSKQmVkcm9ja0FQSUtleS1maXh0dXJlLWF0LTEyMzQ1Njc4OTAxMjpmaXh0dXJl";
    assert!(
        !rendered.envoy_yaml.contains(key),
        "the key stays out of envoy.yaml"
    );
    let files: Vec<&str> = rendered
        .files
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        files,
        [
            "bedrock-api-key-bedrock-api-key",
            "sds-bedrock-api-key-bedrock-api-key.yaml"
        ]
    );
    assert_eq!(rendered.files[0].1, format!("{key}\n"));
    assert!(rendered.files[1]
        .1
        .contains("filename: \"/etc/ai-gateway/bedrock-api-key-bedrock-api-key\""));
    let plugin = rendered
        .envoy_yaml
        .split("\"claude-by-key\": {")
        .nth(1)
        .expect("the key's backend");
    assert!(
        plugin
            .trim_start()
            .starts_with("\"schema\": \"anthropic\",\n"),
        "{plugin}"
    );
    assert!(
        plugin.contains("\"source\": \"api_key\",")
            && plugin.contains("\"injected_by_envoy\": true")
    );
    // Only the key's cluster and its calls twin inject; the other keeps the shared filters and SigV4.
    assert_eq!(
        rendered
            .envoy_yaml
            .matches("header_value_prefix: \"Bearer \"")
            .count(),
        2
    );
    let twin = rendered
        .envoy_yaml
        .split("- name: \"claude-by-key~calls\"")
        .nth(1)
        .expect("the calls cluster")
        .split("\n  - name: ")
        .next()
        .unwrap();
    assert!(
        twin.contains("credential_injector") && !twin.contains("ai_gateway_backend"),
        "the key, without the gateway's filter: {twin}"
    );

    let with_failover = read("render/tests/fixtures/api-key.yaml").replace(
        "    backendRefs: [ { name: claude-by-key } ]",
        "    backendRefs: [ { name: claude-by-key, priority: 0 }, { name: llama-by-role, priority: 1 } ]",
    );
    let error = render(&with_failover, &options).expect_err("failover with an API key");
    assert!(error.0.contains("authenticates with an API key"), "{error}");
    assert!(!error.0.contains(key));
}

/// examples/callers.yaml: Envoy Gateway's SecurityPolicy as Envoy's api_key_auth and rbac after the
/// routing stage, the keys on the virtual host of a routes file Envoy watches, and the caller's id in
/// the plugin configuration, the access log and the budget's descriptor.
#[test]
fn a_security_policy_renders_as_envoys_own_authentication_and_authorization() {
    let files = [
        (
            "examples/emulator.yaml".to_owned(),
            read("examples/emulator.yaml"),
        ),
        (
            "examples/callers.yaml".to_owned(),
            read("examples/callers.yaml"),
        ),
    ];
    let rendered =
        ai_gateway_render::render_files(&files, &make_run_options("callers")).expect("renders");
    check_golden("callers.envoy.yaml", &rendered.envoy_yaml);
    let routes = rendered
        .files
        .iter()
        .find(|(name, _)| name == "routes.yaml")
        .expect("a routes file");
    check_golden("callers.routes.yaml", &routes.1);
    let yaml = &rendered.envoy_yaml;
    assert!(
        !yaml.contains("sk-demo-alice"),
        "keys live in the routes file only"
    );
    assert!(routes
        .1
        .contains("- { key: \"sk-demo-alice\", client: \"alice\" }"));
    let order = [
        "name: ai_gateway\n",
        "envoy.filters.http.api_key_auth",
        "envoy.filters.http.rbac",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|f| yaml.find(f).unwrap_or_else(|| panic!("{f} missing")))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "authentication after the routing stage, before the budgets: {positions:?}"
    );
    assert!(yaml.contains("\"caller_header\": \"x-ai-gateway-caller\""));
    let rbac = yaml.split("envoy.filters.http.rbac").nth(1).expect("rbac");
    assert!(
        rbac.contains("header_name: \"x-ai-gateway-caller\"") && !rbac.contains("policies:"),
        "rules over the caller and the model are one lookup of each"
    );
    assert!(yaml.contains("caller=%REQ(x-ai-gateway-caller)%"));
}

#[test]
fn security_policies_the_gateway_cannot_honour_are_refused() {
    let base = format!(
        "{}---\n{}",
        read("examples/emulator.yaml"),
        read("examples/callers.yaml")
    );
    let cases = [
        (
            "    forwardClientIDHeader: x-ai-gateway-caller\n",
            "",
            "forwardClientIDHeader is required",
        ),
        (
            "    - name: bob-llama-only\n      action: Allow\n",
            "    - name: bob-llama-only\n      action: Deny\n",
            "every rule must be Allow",
        ),
        (
            "    - headers: [x-api-key]\n",
            "    - params: [key]\n",
            "only headers are supported",
        ),
        (
            "  - { group: \"\", kind: Secret, name: caller-keys }\n",
            "  - { group: \"\", kind: Secret, name: nope }\n",
            "there is no Secret \"nope\"",
        ),
        (
            "  alice: sk-demo-alice\n",
            "  alice: sk-demo-bob\n",
            "listed twice",
        ),
        (
            "  sanitize: true\n",
            "  sanitize: true\n  jwt: { providers: [] }\n",
            "apiKeyAuth and jwt together are not supported",
        ),
        // A rule over a header no filter writes: any caller could send it and pass.
        (
            "        - { name: x-ai-gateway-caller, values: [alice] }\n",
            "        - { name: x-team, values: [admins] }\n",
            "\"x-team\" is a header the caller could send itself",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(base.contains(from), "{from:?}");
        let error = render(&base.replacen(from, to, 1), &Options::default()).expect_err(expected);
        assert!(
            error.0.contains(expected),
            "expected {expected:?} in {error}"
        );
        assert!(
            !error.0.contains("sk-demo"),
            "an error quoted a key: {error}"
        );
    }
    let twice = format!(
        "{base}---\n{}",
        read("examples/callers.yaml")
            .split("---")
            .next()
            .unwrap_or_default()
            .replace("name: callers", "name: more")
    );
    assert!(render(&twice, &Options::default())
        .expect_err("two")
        .0
        .contains("one SecurityPolicy"));
}

#[test]
fn other_providers_and_unsupported_features_are_refused() {
    refused(
        "    name: AWSBedrock\n",
        "    name: AzureOpenAI\n",
        "spec.schema.name: \"AzureOpenAI\" is another provider",
    );
    refused(
        "    name: AWSBedrock\n",
        "    name: OpenAI\n    version: v2\n",
        "Bedrock serves OpenAI's API under openai/v1",
    );
    refused(
        "  type: AWSCredentials\n",
        "  type: AzureAPIKey\n",
        "spec.type: \"AzureAPIKey\" is for another provider",
    );
    refused(
        "  type: AWSCredentials\n",
        "  type: APIKey\n",
        "spec.apiKey is required for type APIKey",
    );
    refused(
        "    version: bedrock-2023-05-31\n",
        "    version: \"2023-06-01\"\n",
        "Bedrock's Anthropic version is bedrock-2023-05-31",
    );
    let failover = "      backendRefs:\n        - { name: envoy-ai-gateway-basic-aws, priority: 1 }\n        - { name: envoy-ai-gateway-basic-aws-bedrock-anthropic, priority: 0 }\n";
    let same_priority = format!(
        "{}        - {{ name: envoy-ai-gateway-basic-aws, priority: 0, modelNameOverride: m }}\n",
        failover.replace("priority: 0", "priority: 1")
    );
    refused(
        RULE,
        &same_priority,
        "backendRefs: two backendRefs have priority 1; failover tries one backend per priority",
    );
    refused(
        RULE,
        &format!("{RULE}      timeouts: {{ backendRequest: 10s }}\n"),
        "timeouts.backendRequest bounds each try of a failover",
    );
    refused(
        RULE,
        &format!("{failover}      timeouts: {{ backendRequest: soon }}\n"),
        "timeouts.backendRequest: \"soon\" is not a duration",
    );
    refused(RULE, "      backendRefs:\n        - name: envoy-ai-gateway-basic-aws\n          headerMutation: { set: [] }\n", "backendRefs[0].headerMutation is not supported");
    refused(
        "    region: us-east-1\n",
        "    region: us-east-1\n    oidcExchangeToken: { awsRoleArn: x }\n",
        "oidcExchangeToken is not supported",
    );
    refused(
        "spec:\n  parentRefs:",
        "spec:\n  llmRequestCosts: [ { metadataKey: t, type: Dollars } ]\n  parentRefs:",
        "spec.llmRequestCosts[0]: type \"Dollars\" is not one of AI Gateway's cost types",
    );
    refused("spec:\n  parentRefs:", "spec:\n  llmRequestCosts: [ { metadataKey: t, type: CEL, cel: \"input_tokens * 2\" } ]\n  parentRefs:",
        "spec.llmRequestCosts[0]: cel: no Mul of a uint and a int (CEL converts nothing implicitly");
    refused(
        "- type: Exact\n",
        "- type: PathPrefix\n",
        "headers[0].type: \"PathPrefix\" is not Exact or RegularExpression",
    );
    refused(
        RULE,
        &format!("{RULE}      timeouts: {{ request: ten seconds }}\n"),
        "timeouts.request: \"ten seconds\" is not a duration",
    );
}

#[test]
fn broken_references_are_named() {
    refused(
        RULE,
        "      backendRefs:\n        - name: nope\n",
        "spec.rules[0].backendRefs[0].name: there is no AIServiceBackend \"nope\" in the file",
    );
    refused(
        "    name: envoy-ai-gateway-basic-aws\n    kind: Backend",
        "    name: elsewhere\n    kind: Backend",
        "spec.backendRef.name: there is no Backend \"elsewhere\"",
    );
    refused(
        "        name: envoy-ai-gateway-basic-aws-credentials\n",
        "        name: missing\n",
        "credentialsFile.secretRef.name: there is no Secret \"missing\"",
    );
    refused(
        "        name: envoy-ai-gateway-basic-aws-credentials\n",
        "        name: envoy-ai-gateway-basic-aws-credentials\n      profile: prod\n",
        "Secret \"envoy-ai-gateway-basic-aws-credentials\": credentials: no profile [prod]",
    );
    refused("    - group: aigateway.envoyproxy.io\n      kind: AIServiceBackend\n      name: envoy-ai-gateway-basic-aws\n", "",
        "AIServiceBackend \"envoy-ai-gateway-basic-aws\": no BackendSecurityPolicy targets it");
    refused(
        "  credentials: |\n",
        "  other: |\n",
        "no `credentials` key in stringData or data",
    );
}

#[test]
fn ambiguous_files_are_refused_rather_than_guessed() {
    refused("              value: anthropic.claude-3-5-sonnet-20241022-v2:0\n", "              value: us.meta.llama3-2-1b-instruct-v1:0\n",
        "model \"us.meta.llama3-2-1b-instruct-v1:0\" is already matched by AIGatewayRoute \"envoy-ai-gateway-basic-aws\": spec.rules[0]");
    refused(
        "kind: AIServiceBackend\nmetadata:\n  name: envoy-ai-gateway-basic-aws-bedrock-anthropic\n",
        "kind: AIServiceBackend\nmetadata:\n  name: envoy-ai-gateway-basic-aws\n",
        "AIServiceBackend \"envoy-ai-gateway-basic-aws\" is defined twice",
    );
    let twice = format!("{}---\n{}", read("examples/emulator.yaml"), "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: second }\nspec: { listeners: [ { name: h, protocol: HTTP, port: 80 } ] }\n");
    let error = render(&twice, &Options::default()).expect_err("two gateways");
    assert!(error.0.contains("one file renders one gateway"), "{error}");
    let https = read("examples/emulator.yaml").replace("protocol: HTTP", "protocol: HTTPS");
    let error = render(&https, &Options::default()).expect_err("HTTPS");
    assert!(
        error
            .0
            .contains("spec.listeners[0].protocol: \"HTTPS\" is not supported"),
        "{error}"
    );
}

/// A JWT's claim headers are the authentication's to write, so rules may read them, and the filter
/// removes a caller's own copies (`identity_headers`); API keys' headers never reach AWS (`key_headers`).
#[test]
fn headers_authentication_reads_or_writes_are_named_to_the_filter() {
    let jwt = read("examples/emulator.yaml")
        + "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: { name: jwt }\nspec:\n"
        + "  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: ai-gateway } ]\n"
        + "  jwt:\n    providers:\n    - name: idp\n      localJWKS: { type: Inline, inline: '{\"keys\": []}' }\n"
        + "      claimToHeaders: [ { claim: sub, header: x-caller }, { claim: team, header: x-team } ]\n"
        + "  authorization:\n    defaultAction: Deny\n    rules:\n"
        + "    - { name: admins, action: Allow, principal: { headers: [ { name: x-team, values: [admins] } ] } }\n";
    let rendered = render(&jwt, &Options::default()).expect("a rule over a claim header renders");
    assert!(rendered.envoy_yaml.contains("\"identity_headers\": [\n"));
    assert!(
        rendered.envoy_yaml.contains("policies:"),
        "a rule over another header than the caller's and the model's stays a policy"
    );
    assert!(rendered.envoy_yaml.contains("\"x-team\""));

    let keys = format!(
        "{}---\n{}",
        read("examples/emulator.yaml"),
        read("examples/callers.yaml").replace("headers: [x-api-key]", "headers: [x-gateway-key]")
    );
    let rendered = render(&keys, &Options::default()).expect("renders");
    let plugin = rendered
        .envoy_yaml
        .split("\"key_headers\": [")
        .nth(1)
        .expect("key_headers");
    let listed = plugin.split(']').next().unwrap_or_default();
    assert!(
        listed.contains("\"authorization\"") && listed.contains("\"x-gateway-key\""),
        "{listed}"
    );
}

/// What `ai-gateway-render` writes holds keys (a credentials file's, callers'): files its owner
/// alone reads, each replaced by a rename (Envoy's watched directories see only moves), and for
/// Kubernetes a Secret beside the ConfigMap.
#[test]
fn rendered_files_are_private_replaced_whole_and_secrets_go_to_a_secret() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = std::env::temp_dir().join(format!("render-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let binary = env!("CARGO_BIN_EXE_ai-gateway-render");
    let callers = [
        root().join("examples/emulator.yaml"),
        root().join("examples/callers.yaml"),
    ];
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(binary)
            .args(&callers)
            .args(extra)
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let out_dir = dir.to_string_lossy().into_owned();
    run(&["--out-dir", &out_dir]);
    let routes = dir.join("routes.yaml");
    let first_inode = std::fs::metadata(&routes).unwrap().ino();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", entry.file_name());
        assert!(!entry.file_name().to_string_lossy().ends_with(".rendering"));
    }
    run(&["--out-dir", &out_dir]);
    assert_ne!(
        std::fs::metadata(&routes).unwrap().ino(),
        first_inode,
        "replaced by a new file moved in, not rewritten in place"
    );

    let manifests = String::from_utf8(run(&["--configmap", "gw"]).stdout).unwrap();
    let (configmap, secret) = manifests
        .split_once("\n---\n")
        .expect("a ConfigMap and a Secret");
    assert!(configmap.contains("kind: ConfigMap") && !configmap.contains("sk-demo-alice"));
    assert!(secret.contains("kind: Secret") && secret.contains("  routes.yaml: |"));
    assert!(secret.contains("sk-demo-alice"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway's own backend settings, which AI Gateway's API has no field for, are annotations on
/// an AIServiceBackend; a misspelt one is refused rather than ignored.
#[test]
fn backend_annotations_reach_the_plugin_configuration_and_typos_are_refused() {
    let base = read("examples/emulator.yaml");
    let rendered = render(&base, &Options::default()).expect("renders");
    assert!(rendered.envoy_yaml.contains("\"prompt_caching\": \"auto\""));
    let anchor = "    bedrock-gateway/prompt-caching: auto\n";
    assert!(base.contains(anchor));
    let refusing = base.replace(
        anchor,
        "    bedrock-gateway/prompt-caching: auto\n    bedrock-gateway/hosted-tools: refuse\n",
    );
    let rendered = render(&refusing, &Options::default()).expect("renders");
    assert!(rendered.envoy_yaml.contains("\"hosted_tools\": \"refuse\""));
    for (annotation, expected) in [
        (
            "    bedrock-gateway/prompt-caching: always\n",
            "\"always\" is not one of caller, auto",
        ),
        (
            "    bedrock-gateway/prompt-cache: auto\n",
            "the gateway's annotations are",
        ),
    ] {
        let error =
            render(&base.replace(anchor, annotation), &Options::default()).expect_err(expected);
        assert!(error.0.contains(expected), "{error}");
    }
    let other = base.replace(anchor, "    example.com/owner: platform\n");
    render(&other, &Options::default()).expect("other annotations are Kubernetes' own");
}

#[test]
fn an_openai_schema_backend_on_bedrock_mantle_gets_its_host_and_prefix() {
    let mantle = r#"---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata:
  name: mantle
spec:
  schema: { name: OpenAI, version: v1 }
  backendRef: { name: mantle-endpoint, kind: Backend, group: gateway.envoyproxy.io }
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: mantle-endpoint
spec:
  endpoints:
  - fqdn: { hostname: bedrock-mantle.us-west-2.api.aws, port: 443 }
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata:
  name: mantle-credentials
spec:
  targetRefs:
  - { group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: mantle }
  type: AWSCredentials
  awsCredentials: { region: us-west-2 }
"#;
    let emulator = read("examples/emulator.yaml").replace(
        "    backendRefs:\n    - name: bedrock-openai\n",
        "    backendRefs:\n    - name: mantle\n",
    );
    let rendered = render(
        &format!("{emulator}{mantle}"),
        &make_run_options("examples/emulator.yaml"),
    );
    let yaml = match rendered {
        Ok(rendered) => rendered.envoy_yaml,
        Err(error) => panic!("{error}"),
    };
    assert!(
        yaml.contains(r#""endpoint": "bedrock-mantle.us-west-2.api.aws""#),
        "the host to sign"
    );
    assert!(yaml.contains(r#""api_prefix": "/v1""#));
    assert!(yaml.contains(r#""region": "us-west-2""#));
}

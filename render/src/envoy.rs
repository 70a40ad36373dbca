//! Writes a resolved [`Plan`] as Envoy's bootstrap configuration (YAML).
//!
//! The YAML is written line by line (see [`crate::yaml`]) rather than serialized from a tree, so that
//! the output keeps the comments and anchors a person reading `envoy.yaml` needs.

use crate::credentials::{write_credential_cluster, CredentialService};
use crate::plan::*;
use crate::yaml::{
    dynamic_module_stage, header_match_input, line, quoted, socket_address, upstream_codec,
    upstream_protocol_options, upstream_stage, wasm_stage,
};
use crate::Options;
use bedrock_gateway_core::config::plugin::{
    CredentialSource, ModelEntry, ModelInfo, PluginBackend, PluginConfig,
};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Request bodies are buffered to read `model`: prompts up to 32 MiB.
const BUFFER_LIMIT_BYTES: u64 = 32 * 1024 * 1024;
/// The variables the AWS default chain reads at start-up, handed to the VM.
const CHAIN_ENV_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// Envoy's duration syntax: `300s`, `0.500s`.
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// The plugin configuration both stages read, in the filter's own type (`config::plugin`), so a
/// field the renderer writes is a field the filter parses. Backends are written in the order of
/// their clusters.
pub fn plugin_configuration(plan: &Plan, options: &Options) -> PluginConfig {
    let chain_cluster = |service: CredentialService| {
        options
            .chain
            .contains(&service)
            .then(|| service.cluster_name().to_owned())
    };
    let backends = plan
        .clusters
        .iter()
        .map(|cluster| {
            let backend = &cluster.backend;
            let credentials = match &backend.credentials {
                CredentialsPlan::Static(keys) => CredentialSource::Inline {
                    access_key_id: keys.access_key_id.clone(),
                    secret_access_key: keys.secret_access_key.clone(),
                    session_token: keys.session_token.clone(),
                },
                // A Bedrock API key that Envoy's credential_injector adds on the backend's cluster.
                CredentialsPlan::ApiKey(_) => CredentialSource::ApiKey {
                    key: None,
                    injected_by_envoy: true,
                },
                CredentialsPlan::DefaultChain => CredentialSource::DefaultChain {
                    web_identity_cluster: chain_cluster(CredentialService::WebIdentity),
                    pod_identity_cluster: chain_cluster(CredentialService::PodIdentity),
                    imds_cluster: chain_cluster(CredentialService::Imds),
                },
            };
            let entry = PluginBackend {
                endpoint: backend.endpoint.clone(),
                model_name_override: backend.model_name_override.clone(),
                calls_cluster: Some(calls_cluster_name(&cluster.name)),
                prompt_caching: backend.prompt_caching,
                hosted_tools: backend.hosted_tools,
                api_prefix: backend.api_prefix.map(str::to_owned),
                ..PluginBackend::new(backend.schema, &backend.region, credentials)
            };
            (cluster.name.clone(), entry)
        })
        .collect();
    let models = plan
        .models
        .iter()
        .map(|model| match (model.created, &model.owned_by) {
            (None, None) => ModelEntry::Name(model.id.clone()),
            (created, owned_by) => ModelEntry::Detailed(ModelInfo {
                id: model.id.clone(),
                created: created.unwrap_or_default(),
                owned_by: owned_by.clone(),
                display_name: None,
            }),
        })
        .collect();
    let failover = plan
        .failovers
        .iter()
        .map(|failover| (failover.name.clone(), failover.clusters.clone()))
        .collect();
    let caller_metrics = plan.callers.as_ref().is_some_and(|c| c.counts_callers());
    let mut metric_series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for route in &plan.routes {
        for header in route
            .headers
            .iter()
            .filter(|h| !h.regex && h.name == "x-ai-eg-model")
        {
            let clusters = metric_series.entry(header.value.clone()).or_default();
            for (cluster, _) in &route.target {
                if !clusters.contains(cluster) {
                    clusters.push(cluster.clone());
                }
            }
        }
    }
    let owned = |names: Vec<&str>| names.into_iter().map(str::to_owned).collect();
    let callers = plan.callers.as_ref();
    PluginConfig {
        models,
        backends,
        failover,
        caller_header: callers.map(|c| c.caller_header.clone()),
        identity_headers: callers.map_or_else(Vec::new, |c| owned(c.identity_headers())),
        key_headers: callers.map_or_else(Vec::new, |c| owned(c.key_headers())),
        caller_metrics,
        metric_series,
        metric_callers: match callers.filter(|_| caller_metrics) {
            Some(c) => owned(c.counted_callers()),
            None => Vec::new(),
        },
        request_costs: plan.request_costs.clone(),
        trace_attributes: plan.tracing.is_some(),
        ..PluginConfig::default()
    }
}

/// Whether any backend reads the AWS default chain (and so needs the credential clusters).
pub fn uses_default_chain(plan: &Plan) -> bool {
    plan.clusters
        .iter()
        .any(|c| matches!(c.backend.credentials, CredentialsPlan::DefaultChain))
}

pub fn write(plan: &Plan, options: &Options, plugin_json: &str) -> String {
    let mut out = String::new();
    header(&mut out, plan, options);
    let o = &mut out;
    line(o, 0, "node: { id: ai-gateway, cluster: ai-gateway }");
    line(o, 0, "");
    line(o, 0, "admin:");
    line(
        o,
        1,
        &format!(
            "address: {}",
            socket_address(&options.admin_address, options.admin_port)
        ),
    );
    line(o, 0, "");
    write_stats_config(o);
    if options.dynamic_module_path.is_some() {
        line(o, 0, "");
        line(
            o,
            0,
            "# Module metrics are named as the .wasm's (gen_ai_client_token_usage, not",
        );
        line(o, 0, "# envoy_dynamicmodulescustom_gen_ai_client_token_usage): Envoy strips the modules' stat prefix.");
        line(o, 0, "layered_runtime:");
        line(o, 1, "layers:");
        line(o, 1, "- name: static");
        line(o, 2, "static_layer: { envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true }");
        line(o, 1, "- name: admin");
        line(o, 2, "admin_layer: {}");
    }
    line(o, 0, "");
    line(o, 0, "static_resources:");
    line(o, 1, "listeners:");
    for (i, listener) in plan.listeners.iter().enumerate() {
        write_listener(o, plan, options, plugin_json, listener, i == 0);
    }
    if let Some((address, port)) = &options.ready_listener {
        write_ready_listener(o, address, *port);
    }
    line(o, 0, "");
    line(o, 1, "clusters:");
    // The shared upstream filters are defined once, on the first cluster that uses them (an API
    // key's cluster has its own list).
    let anchor_at = plan
        .clusters
        .iter()
        .position(|c| !matches!(c.backend.credentials, CredentialsPlan::ApiKey(_)));
    for (i, cluster) in plan.clusters.iter().enumerate() {
        write_cluster(o, cluster, Some(i) == anchor_at, options);
        write_calls_cluster(o, cluster, options);
    }
    for failover in &plan.failovers {
        write_failover_cluster(o, failover);
    }
    if uses_default_chain(plan) {
        for service in &options.chain {
            write_credential_cluster(o, *service, options, plan);
        }
    }
    if plan.rate_limit.is_some() {
        crate::rate_limits::write_cluster(o, &options.rate_limit_service);
    }
    if let Some(tracing) = &plan.tracing {
        crate::tracing::write_cluster(o, tracing);
    }
    out
}

/// The filter's metrics carry their labels in the stat name (`;request_model=...`, since model
/// ids contain dots): the tags turn them into labels named as OpenTelemetry's GenAI conventions
/// name the attributes, and the histograms get the conventions' buckets (in milliseconds where
/// the conventions count seconds: Envoy's histograms hold integers).
fn write_stats_config(o: &mut String) {
    line(o, 0, "# The filter's metrics carry their labels in the stat name (`;request_model=...`, since model");
    line(o, 0, "# ids contain dots); these tags turn them into labels named by OpenTelemetry's GenAI conventions.");
    line(o, 0, "stats_config:");
    line(o, 1, "stats_tags:");
    for (key, tag) in bedrock_gateway_core::report::LABELS {
        line(
            o,
            1,
            &format!(r#"- {{ tag_name: {tag}, regex: "(;{key}=([^;]*))" }}"#),
        );
    }
    line(o, 1, "histogram_bucket_settings:");
    for (metric, buckets) in HISTOGRAM_BUCKETS {
        let buckets: Vec<String> = buckets.iter().map(u64::to_string).collect();
        line(
            o,
            1,
            &format!(
                "- {{ match: {{ contains: {metric} }}, buckets: [{}] }}",
                buckets.join(", ")
            ),
        );
    }
}

/// The GenAI conventions' bucket boundaries, by metric (seconds as milliseconds).
const HISTOGRAM_BUCKETS: [(&str, &[u64]); 4] = [
    (
        bedrock_gateway_core::report::TOKEN_USAGE,
        &[
            1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216,
            67_108_864,
        ],
    ),
    (
        bedrock_gateway_core::report::REQUEST_DURATION,
        &[
            10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 40960, 81920,
        ],
    ),
    (
        bedrock_gateway_core::report::TIME_TO_FIRST_TOKEN,
        &[
            1, 5, 10, 20, 40, 60, 80, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000,
        ],
    ),
    (
        bedrock_gateway_core::report::TIME_PER_OUTPUT_TOKEN,
        &[
            10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 2500,
        ],
    ),
];

fn header(out: &mut String, plan: &Plan, options: &Options) {
    let _ = writeln!(
        out,
        "# Envoy configuration of the Bedrock AI gateway, rendered by ai-gateway-render from"
    );
    let _ = writeln!(
        out,
        "# {}. Do not edit: change the resources and render again.",
        options.source_name
    );
    let _ = writeln!(out, "#");
    let mut resources = String::from("# Resources:");
    for (i, source) in plan.sources.iter().enumerate() {
        let item = if i + 1 == plan.sources.len() {
            format!(" {source}.")
        } else {
            format!(" {source},")
        };
        if resources.len() + item.len() > 100 {
            let _ = writeln!(out, "{resources}");
            resources = String::from("#  ");
        }
        resources.push_str(&item);
    }
    let _ = writeln!(out, "{resources}");
    if plan
        .clusters
        .iter()
        .any(|c| matches!(c.backend.credentials, CredentialsPlan::Static(_)))
    {
        let _ = writeln!(out, "# It holds AWS secret keys (from a BackendSecurityPolicy's credentialsFile): keep it private.");
    }
    let _ = writeln!(out, "#");
    let _ = writeln!(out, "# One filter runs in two places:");
    let _ = writeln!(out, "#   - the routing stage (root_id ai_gateway), downstream: copies the body's `model` into the");
    let _ = writeln!(out, "#     x-ai-eg-model header, so that the routes (one per AIGatewayRoute rule) pick a cluster;");
    let _ = writeln!(out, "#   - the backend stage (root_id ai_gateway_backend), an upstream filter on each cluster (one per");
    let _ = writeln!(
        out,
        "#     AIServiceBackend and model override): applies that backend's entry of the plugin"
    );
    let _ = writeln!(
        out,
        "#     configuration, translates, signs with SigV4, and translates the response back."
    );
    let _ = writeln!(out);
}

fn write_listener(
    o: &mut String,
    plan: &Plan,
    options: &Options,
    plugin_json: &str,
    listener: &ListenerPlan,
    first: bool,
) {
    line(o, 1, &format!("- name: {}", quoted(&listener.name)));
    line(
        o,
        2,
        &format!(
            "address: {}",
            socket_address(&listener.address, listener.port)
        ),
    );
    line(
        o,
        2,
        &format!("per_connection_buffer_limit_bytes: {BUFFER_LIMIT_BYTES}"),
    );
    line(o, 2, "filter_chains:");
    line(o, 2, "- filters:");
    line(
        o,
        3,
        "- name: envoy.filters.network.http_connection_manager",
    );
    if !first {
        line(o, 4, "typed_config: *gateway_connection_manager");
        return;
    }
    line(o, 4, "typed_config: &gateway_connection_manager");
    let t = 5;
    line(o, t, "\"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    line(o, t, "stat_prefix: ai_gateway");
    line(
        o,
        t,
        "# LLM responses can take minutes; streams must not be cut by the idle timer.",
    );
    line(o, t, "stream_idle_timeout: 600s");
    line(
        o,
        t,
        "# One line per request: Bedrock's request id and the filter's usage summary.",
    );
    line(o, t, "access_log:");
    line(o, t, "- name: envoy.access_loggers.file");
    line(o, t + 1, "typed_config:");
    line(
        o,
        t + 2,
        "\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    );
    line(o, t + 2, "path: /dev/stdout");
    line(o, t + 2, "log_format:");
    line(o, t + 3, "text_format_source:");
    let caller = plan.callers.as_ref().map_or(String::new(), |c| {
        format!(" caller=%REQ({})%", c.caller_header)
    });
    line(o, t + 4, &format!("inline_string: \"[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CODE% %DURATION%ms request_id=%REQ(X-REQUEST-ID)%{caller} bedrock_request_id=%RESP(X-AMZN-REQUESTID)% usage={}\\n\"", options.usage_operator("usage")));
    if let Some(tracing) = &plan.tracing {
        crate::tracing::write_connection_manager_tracing(o, t, tracing, options);
    }
    if plan.rate_limit.is_some() {
        crate::rate_limits::write_local_reply(o, t);
    }
    if let Some(path) = routes_file_path(plan, options) {
        line(o, t, "# The routes, and the callers' API keys with them, from a file Envoy watches: rewriting it");
        line(o, t, "# (re-rendering) rotates keys without a restart.");
        line(o, t, "rds:");
        line(o, t + 1, "route_config_name: models");
        line(o, t + 1, "config_source:");
        line(o, t + 2, "resource_api_version: V3");
        line(o, t + 2, "path_config_source:");
        line(o, t + 3, &format!("path: {}", quoted(&path)));
        line(
            o,
            t + 3,
            &format!(
                "watched_directory: {{ path: {} }}",
                quoted(options.sds_dir.trim_end_matches('/'))
            ),
        );
    } else {
        line(o, t, "route_config:");
        write_route_configuration(o, t + 1, plan, listener);
    }
    line(o, t, "http_filters:");
    if let Some(module_path) = &options.dynamic_module_path {
        // A native module reads Envoy's own environment: nothing to pass through.
        dynamic_module_stage(o, t, "ai_gateway", module_path, Some(plugin_json));
    } else {
        let c = wasm_stage(o, t, "ai_gateway");
        line(o, c, "vm_config: &gateway_vm");
        line(o, c + 1, "vm_id: ai_gateway");
        line(o, c + 1, "runtime: envoy.wasm.runtime.v8");
        line(
            o,
            c + 1,
            &format!(
                "code: {{ local: {{ filename: {} }} }}",
                quoted(&options.wasm_path)
            ),
        );
        if uses_default_chain(plan) {
            line(o, c + 1, "# The AWS default chain decides at start-up from these (static keys, IRSA, Pod Identity, else IMDS).");
            line(o, c + 1, "environment_variables:");
            line(
                o,
                c + 2,
                &format!("host_env_keys: [{}]", CHAIN_ENV_KEYS.join(", ")),
            );
        }
        line(o, c, "configuration: &gateway_config");
        line(
            o,
            c + 1,
            "\"@type\": type.googleapis.com/google.protobuf.StringValue",
        );
        line(o, c + 1, "value: |");
        for json_line in plugin_json.lines() {
            line(o, c + 2, json_line);
        }
    }
    if let Some(callers) = &plan.callers {
        crate::callers::write_filters(o, t, callers);
    }
    if let Some(rate_limit) = &plan.rate_limit {
        crate::rate_limits::write_filter(o, t, rate_limit, options);
    }
    line(o, t, "- name: envoy.filters.http.router");
    line(o, t + 1, "typed_config:");
    line(
        o,
        t + 2,
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    );
}

/// Where the routes go when they carry callers' API keys (`rds.yaml` beside the SDS files).
fn routes_file_path(plan: &Plan, options: &Options) -> Option<String> {
    let keyed = plan.callers.as_ref().is_some_and(|c| {
        matches!(
            c.authentication,
            crate::callers::Authentication::ApiKeys { .. }
        )
    });
    keyed.then(|| format!("{}/{ROUTES_FILE}", options.sds_dir.trim_end_matches('/')))
}

/// The file of the routes, for configurations that load them from one (see [`routes_file_path`]).
pub const ROUTES_FILE: &str = "routes.yaml";

pub fn routes_file(plan: &Plan, options: &Options) -> Option<(String, String)> {
    routes_file_path(plan, options)?;
    let listener = plan.listeners.first()?;
    let mut o = String::new();
    line(&mut o, 0, "# The gateway's routes (RDS), rendered by ai-gateway-render; Envoy reads this file again when it");
    line(
        &mut o,
        0,
        "# changes. It holds the callers' API keys: keep it private.",
    );
    line(&mut o, 0, "resources:");
    line(
        &mut o,
        0,
        "- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    );
    write_route_configuration(&mut o, 1, plan, listener);
    Some((ROUTES_FILE.to_owned(), o))
}

/// The route configuration `models`, its members at indent `b`.
fn write_route_configuration(o: &mut String, b: usize, plan: &Plan, listener: &ListenerPlan) {
    line(o, b, "name: models");
    line(o, b, "virtual_hosts:");
    line(o, b, "- name: bedrock");
    let domains = match &listener.hostname {
        Some(host) => format!("[{}, {}]", quoted(host), quoted(&format!("{host}:*"))),
        None => "[\"*\"]".to_owned(),
    };
    line(o, b + 1, &format!("domains: {domains}"));
    if let Some(callers) = &plan.callers {
        crate::callers::write_virtual_host_credentials(o, b + 1, callers);
    }
    if !plan.failovers.is_empty() {
        line(
            o,
            b + 1,
            "# Tells the backend stage which try, and so which failover backend, a request is on.",
        );
        line(o, b + 1, "include_request_attempt_count: true");
    }
    if let Some(by_model) = routes_by_model(&plan.routes) {
        write_model_matcher(o, b + 1, &by_model);
        return;
    }
    line(o, b + 1, "routes:");
    for route in &plan.routes {
        write_route(o, b + 1, route);
    }
    write_not_found(o, b + 1);
}

/// Envoy's answer when no route serves the request.
fn write_not_found(o: &mut String, indent: usize) {
    line(o, indent, "# No route for the request: for the gateway's endpoints the filter rewrites this into the caller's");
    line(
        o,
        indent,
        "# API error format naming the model; other paths get this as it is.",
    );
    line(o, indent, "- match: { prefix: \"/\" }");
    line(o, indent + 1, "direct_response:");
    line(o, indent + 2, "status: 404");
    line(o, indent + 2, "body: { inline_string: '{\"error\":{\"message\":\"No route serves this request.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"not_found\"}}' }");
}

/// The routes keyed by the one model each matches exactly, when every route is of that kind (as
/// AI Gateway's rules are): the first route for a model wins, as in Envoy's ordered list.
fn routes_by_model(routes: &[RoutePlan]) -> Option<Vec<(&str, &RoutePlan)>> {
    let mut by_model: Vec<(&str, &RoutePlan)> = Vec::with_capacity(routes.len());
    for route in routes {
        let [header] = route.headers.as_slice() else {
            return None;
        };
        if header.regex || header.name != "x-ai-eg-model" {
            return None;
        }
        if !by_model.iter().any(|(model, _)| *model == header.value) {
            by_model.push((&header.value, route));
        }
    }
    Some(by_model)
}

/// The routes as Envoy's matcher tree: one map lookup on the model header picks the route, so a
/// request costs the same with ten models or ten thousand (an ordered route list is tried one
/// route after another).
fn write_model_matcher(o: &mut String, indent: usize, by_model: &[(&str, &RoutePlan)]) {
    line(
        o,
        indent,
        "# One lookup of the model header picks the route, however many models there are.",
    );
    line(o, indent, "matcher:");
    line(o, indent + 1, "matcher_tree:");
    header_match_input(o, indent + 2, "model", "x-ai-eg-model");
    line(o, indent + 2, "exact_match_map:");
    line(o, indent + 3, "map:");
    for (model, route) in by_model {
        line(o, indent + 4, &format!("{}:", quoted(model)));
        write_route_action(o, indent + 5, &format!("route {model}"), |o, at| {
            write_route(o, at, route)
        });
    }
    line(o, indent + 1, "on_no_match:");
    write_route_action(o, indent + 2, "not-found", write_not_found);
}

/// A route as a matcher's action: the route list entry `write` makes, as a `Route` message.
fn write_route_action(
    o: &mut String,
    indent: usize,
    name: &str,
    write: impl FnOnce(&mut String, usize),
) {
    line(o, indent, "action:");
    line(o, indent + 1, &format!("name: {}", quoted(name)));
    line(o, indent + 1, "typed_config:");
    line(
        o,
        indent + 2,
        "\"@type\": type.googleapis.com/envoy.config.route.v3.Route",
    );
    let mut entry = String::new();
    write(&mut entry, indent + 1);
    // The list entry's `- ` becomes two spaces: the same members, as the message's own.
    let item = format!("{}- ", "  ".repeat(indent + 1));
    let message = format!("{}  ", "  ".repeat(indent + 1));
    let comment = format!("{}#", "  ".repeat(indent + 1));
    for entry_line in entry.replacen(&item, &message, 1).lines() {
        if entry_line.starts_with(&comment) {
            o.push_str("  ");
        }
        o.push_str(entry_line);
        o.push('\n');
    }
}

/// `GET /ready` answered by Envoy's health_check filter from the server's own state, so probes need
/// neither the admin interface nor a backend.
fn write_ready_listener(o: &mut String, address: &str, port: u16) {
    line(
        o,
        1,
        "# Readiness for Kubernetes probes: 200 while Envoy serves, 503 once it drains.",
    );
    line(o, 1, "- name: ready");
    line(o, 2, &format!("address: {}", socket_address(address, port)));
    line(o, 2, "filter_chains:");
    line(o, 2, "- filters:");
    line(
        o,
        3,
        "- name: envoy.filters.network.http_connection_manager",
    );
    line(o, 4, "typed_config:");
    line(o, 5, "\"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    line(o, 5, "stat_prefix: ready");
    line(o, 5, "route_config: { virtual_hosts: [ { name: ready, domains: [\"*\"], routes: [ { match: { prefix: \"/\" }, direct_response: { status: 404 } } ] } ] }");
    line(o, 5, "http_filters:");
    line(o, 5, "- name: envoy.filters.http.health_check");
    line(o, 6, "typed_config:");
    line(
        o,
        7,
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
    );
    line(o, 7, "pass_through_mode: false");
    line(
        o,
        7,
        "headers: [ { name: \":path\", string_match: { exact: /ready } } ]",
    );
    line(o, 5, "- name: envoy.filters.http.router");
    line(o, 6, "typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }");
}

fn write_route(o: &mut String, indent: usize, route: &RoutePlan) {
    line(o, indent, &format!("# {}", route.origin));
    let headers: Vec<String> = route
        .headers
        .iter()
        .map(|h| {
            let matcher = if h.regex {
                format!("safe_regex: {{ regex: {} }}", quoted(&h.value))
            } else {
                format!("exact: {}", quoted(&h.value))
            };
            format!(
                "{{ name: {}, string_match: {{ {matcher} }} }}",
                quoted(&h.name)
            )
        })
        .collect();
    if headers.is_empty() {
        line(o, indent, "- match: { prefix: \"/\" }");
    } else {
        line(
            o,
            indent,
            &format!(
                "- match: {{ prefix: \"/\", headers: [ {} ] }}",
                headers.join(", ")
            ),
        );
    }
    if let Some(span_name) = &route.span_name {
        line(
            o,
            indent + 1,
            // Not propagated: Envoy would send it to Bedrock and back to callers as a header.
            &format!(
                "decorator: {{ operation: {}, propagate: false }}",
                quoted(span_name)
            ),
        );
    }
    let timeout = duration(route.timeout_ms);
    if let (Some(retry), [(cluster, _)]) = (route.retry, route.target.as_slice()) {
        line(o, indent + 1, "route:");
        line(o, indent + 2, &format!("cluster: {}", quoted(cluster)));
        line(o, indent + 2, &format!("timeout: {timeout}"));
        line(o, indent + 2, "# Failover: each retry goes to the next backend, translated and signed for it; a streamed");
        line(o, indent + 2, "# reply is not retried once it has begun.");
        line(o, indent + 2, "retry_policy:");
        line(
            o,
            indent + 3,
            "retry_on: \"5xx,reset,connect-failure,retriable-status-codes\"",
        );
        line(o, indent + 3, "retriable_status_codes: [429]");
        line(o, indent + 3, &format!("num_retries: {}", retry.retries));
        if let Some(per_try) = retry.per_try_timeout_ms {
            line(
                o,
                indent + 3,
                &format!("per_try_timeout: {}", duration(per_try)),
            );
        }
        line(
            o,
            indent + 3,
            "retry_back_off: { base_interval: 0.05s, max_interval: 0.5s }",
        );
        return;
    }
    match route.target.as_slice() {
        [(cluster, _)] => line(
            o,
            indent + 1,
            &format!(
                "route: {{ cluster: {}, timeout: {timeout} }}",
                quoted(cluster)
            ),
        ),
        weighted => {
            line(o, indent + 1, "route:");
            line(o, indent + 2, &format!("timeout: {timeout}"));
            line(o, indent + 2, "weighted_clusters:");
            line(o, indent + 3, "clusters:");
            for (cluster, weight) in weighted {
                line(
                    o,
                    indent + 3,
                    &format!("- {{ name: {}, weight: {weight} }}", quoted(cluster)),
                );
            }
        }
    }
}

fn write_endpoints(o: &mut String, name: &str, endpoints: &[(String, u16)]) {
    line(o, 2, "load_assignment:");
    line(o, 3, &format!("cluster_name: {}", quoted(name)));
    line(o, 3, "endpoints:");
    line(o, 3, "- lb_endpoints:");
    for (host, port) in endpoints {
        line(
            o,
            4,
            &format!("- endpoint: {{ address: {} }}", socket_address(host, *port)),
        );
    }
}

fn write_discovery(o: &mut String, discovery: Discovery, connect_timeout: &str) {
    match discovery {
        Discovery::Static => line(o, 2, "type: STATIC"),
        Discovery::LogicalDns | Discovery::StrictDns => {
            line(
                o,
                2,
                if discovery == Discovery::LogicalDns {
                    "type: LOGICAL_DNS"
                } else {
                    "type: STRICT_DNS"
                },
            );
            line(o, 2, "dns_lookup_family: V4_PREFERRED");
        }
    }
    line(o, 2, &format!("connect_timeout: {connect_timeout}"));
}

fn write_tls(o: &mut String, tls: &TlsPlan) {
    line(o, 2, "transport_socket:");
    line(o, 3, "name: envoy.transport_sockets.tls");
    line(o, 3, "typed_config:");
    line(o, 4, "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    line(o, 4, &format!("sni: {}", quoted(&tls.sni)));
    line(o, 4, "common_tls_context:");
    line(o, 5, "validation_context:");
    line(
        o,
        6,
        "trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }",
    );
    line(o, 6, "match_typed_subject_alt_names:");
    for san in &tls.subject_alt_names {
        let (kind, value) = match san {
            SanPlan::Dns(host) => ("DNS", host),
            SanPlan::Uri(uri) => ("URI", uri),
        };
        line(
            o,
            6,
            &format!(
                "- {{ san_type: {kind}, matcher: {{ exact: {} }} }}",
                quoted(value)
            ),
        );
    }
}

/// Failovers in flight at once through one composite cluster: as many as requests Envoy lets a
/// cluster have in flight by default (`max_requests`), so that retries never run out first.
const FAILOVER_RETRIES_IN_FLIGHT: u32 = 1024;

/// Envoy's composite cluster: attempt N goes to its Nth cluster. Upstream filters are the
/// composite's own, so the backend stage runs here, once per attempt, and picks that attempt's
/// backend from the plugin configuration's `failover` list.
fn write_failover_cluster(o: &mut String, failover: &FailoverPlan) {
    line(o, 1, &format!("- name: {}", quoted(&failover.name)));
    line(o, 2, "connect_timeout: 10s");
    line(o, 2, "lb_policy: CLUSTER_PROVIDED");
    line(
        o,
        2,
        &format!("per_connection_buffer_limit_bytes: {BUFFER_LIMIT_BYTES}"),
    );
    line(o, 2, "typed_extension_protocol_options: *backend_filters");
    line(o, 2, "# Envoy lets 3 retries per cluster be in flight by default: under load, the fourth request");
    line(
        o,
        2,
        "# failing over at once would get the primary's error instead of the fallback's answer.",
    );
    line(
        o,
        2,
        &format!("circuit_breakers: {{ thresholds: [ {{ max_retries: {FAILOVER_RETRIES_IN_FLIGHT} }} ] }}"),
    );
    line(o, 2, "cluster_type:");
    line(o, 3, "name: envoy.clusters.composite");
    line(o, 3, "typed_config:");
    line(
        o,
        4,
        "\"@type\": type.googleapis.com/envoy.extensions.clusters.composite.v3.ClusterConfig",
    );
    let clusters: Vec<String> = failover
        .clusters
        .iter()
        .map(|c| format!("{{ name: {} }}", quoted(c)))
        .collect();
    line(o, 4, &format!("clusters: [ {} ]", clusters.join(", ")));
}

/// The cluster through which the gateway makes its own calls to a backend (one per input of a
/// Titan embeddings list): the backend's cluster again, without the gateway's filter, since the
/// calls are signed already and a filter running for a call it dispatches would re-enter itself.
pub fn calls_cluster_name(cluster: &str) -> String {
    format!("{cluster}~calls")
}

fn write_calls_cluster(o: &mut String, cluster: &ClusterPlan, options: &Options) {
    let name = calls_cluster_name(&cluster.name);
    line(o, 1, &format!("- name: {}", quoted(&name)));
    write_discovery(o, cluster.discovery, "10s");
    line(
        o,
        2,
        &format!("per_connection_buffer_limit_bytes: {BUFFER_LIMIT_BYTES}"),
    );
    if let CredentialsPlan::ApiKey(key) = &cluster.backend.credentials {
        line(o, 2, "# The gateway's own calls, signed already: only the Bedrock API key is added, as on the backend's cluster.");
        upstream_protocol_options(o, None, false, true);
        crate::credentials::api_key_injector(o, key, options);
        upstream_codec(o);
    } else {
        line(o, 2, "# The gateway's own calls to this backend, signed already (one per input of a Titan embeddings list).");
    }
    write_endpoints(o, &name, &cluster.endpoints);
    if let Some(tls) = &cluster.tls {
        write_tls(o, tls);
    }
}

fn write_cluster(o: &mut String, cluster: &ClusterPlan, first: bool, options: &Options) {
    line(o, 1, &format!("- name: {}", quoted(&cluster.name)));
    write_discovery(o, cluster.discovery, "10s");
    line(
        o,
        2,
        &format!("per_connection_buffer_limit_bytes: {BUFFER_LIMIT_BYTES}"),
    );
    let backend_stage = |o: &mut String| {
        upstream_stage(
            o,
            options.dynamic_module_path.as_deref(),
            "ai_gateway_backend",
            |o, c| {
                line(o, c, "vm_config: *gateway_vm");
                line(o, c, "configuration: *gateway_config");
            },
        );
    };
    if let CredentialsPlan::ApiKey(key) = &cluster.backend.credentials {
        line(o, 2, "# The backend stage, then Envoy's credential_injector adding the Bedrock API key it reads through SDS.");
        upstream_protocol_options(o, None, false, true);
        backend_stage(o);
        crate::credentials::api_key_injector(o, key, options);
        upstream_codec(o);
    } else if first {
        line(o, 2, "# The backend stage: the same module and configuration as the routing stage, as an upstream filter.");
        upstream_protocol_options(o, Some("backend_filters"), false, true);
        backend_stage(o);
        upstream_codec(o);
    } else {
        line(o, 2, "typed_extension_protocol_options: *backend_filters");
    }
    write_endpoints(o, &cluster.name, &cluster.endpoints);
    if let Some(tls) = &cluster.tls {
        write_tls(o, tls);
    }
}

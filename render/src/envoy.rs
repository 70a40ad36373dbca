//! Writes a resolved [`Plan`] as Envoy's bootstrap configuration: a tree of typed YAML values
//! ([`crate::yaml`]) with the comments and anchors a person reading `envoy.yaml` needs.

use crate::blocks::{
    dynamic_module_stage, header_match_input, local_file, shared_wasm_vm, socket_address,
    string_value, upstream_codec, upstream_protocol_options, upstream_stage, upstream_tls,
    wasm_stage,
};
use crate::credentials::{credential_cluster, CredentialService};
use crate::plan::*;
use crate::yaml::{document, plain, string, Map, Node, Seq, SeqStyle};
use crate::Options;
use bedrock_gateway_core::config::plugin::{
    CredentialSource, ModelEntry, ModelInfo, PluginBackend, PluginConfig,
};
use std::collections::BTreeMap;

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
    let mut root = Map::block()
        .with("node", plain("{ id: ai-gateway, cluster: ai-gateway }"))
        .blank()
        .with(
            "admin",
            Map::block().with(
                "address",
                socket_address(&options.admin_address, options.admin_port),
            ),
        )
        .blank()
        .extend(stats_config());
    if plan.metrics.is_some() {
        // Envoy's namespace for each host's own metrics.
        let namespace = match options.dynamic_module_path {
            Some(_) => "dynamicmodulescustom",
            None => "wasmcustom",
        };
        root = root.blank().extend(crate::telemetry::stats_sink(namespace));
    }
    if options.dynamic_module_path.is_some() {
        let layers = Seq::block()
            .item(Map::block().with("name", plain("static")).with(
                "static_layer",
                plain(
                    "{ envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true }",
                ),
            ))
            .item(
                Map::block()
                    .with("name", plain("admin"))
                    .with("admin_layer", Map::flow()),
            );
        root = root
            .blank()
            .comment("Module metrics are named as the .wasm's (gen_ai_client_token_usage, not")
            .comment("envoy_dynamicmodulescustom_gen_ai_client_token_usage): Envoy strips the modules' stat prefix.")
            .with("layered_runtime", Map::block().with("layers", layers));
    }
    let mut listeners: Seq = plan
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| listener_config(plan, options, plugin_json, listener, i == 0))
        .collect();
    if let Some((address, port)) = &options.ready_listener {
        listeners
            .note("Readiness for Kubernetes probes: 200 while Envoy serves, 503 once it drains.")
            .push(ready_listener(address, *port));
    }
    let mut clusters = Seq::block();
    // The shared upstream filters are defined once, on the first cluster that uses them (an API
    // key's cluster has its own list).
    let anchor_at = plan
        .clusters
        .iter()
        .position(|c| !matches!(c.backend.credentials, CredentialsPlan::ApiKey(_)));
    for (i, cluster) in plan.clusters.iter().enumerate() {
        clusters.push(backend_cluster(cluster, Some(i) == anchor_at, options));
        clusters.push(calls_cluster(cluster, options));
    }
    for failover in &plan.failovers {
        clusters.push(failover_cluster(failover));
    }
    if uses_default_chain(plan) {
        for service in &options.chain {
            clusters.push(credential_cluster(*service, options, plan));
        }
    }
    if plan.rate_limit.is_some() {
        clusters.push(crate::rate_limits::cluster(&options.rate_limit_service));
    }
    if let Some(tracing) = &plan.tracing {
        clusters.push(crate::telemetry::cluster(tracing));
    }
    if let Some(metrics) = &plan.metrics {
        clusters.push(crate::telemetry::metrics_cluster(metrics));
    }
    let root = root.blank().with(
        "static_resources",
        Map::block()
            .with("listeners", listeners)
            .blank()
            .with("clusters", clusters),
    );
    document(&header(plan, options), &root)
}

/// The filter's metrics carry their labels in the stat name (`;request_model=...`, since model
/// ids contain dots): the tags turn them into labels named as OpenTelemetry's GenAI conventions
/// name the attributes, and the histograms get the conventions' buckets (in milliseconds where
/// the conventions count seconds: Envoy's histograms hold integers).
fn stats_config() -> Map {
    let tags: Seq = bedrock_gateway_core::report::LABELS
        .iter()
        .map(|(key, tag)| {
            Map::flow()
                .with("tag_name", plain(tag))
                .with("regex", plain(format!(r#""(;{key}=([^;]*))""#)))
        })
        .collect();
    let buckets: Seq = HISTOGRAM_BUCKETS
        .iter()
        .map(|(metric, bounds)| {
            Map::flow()
                .with("match", Map::flow().with("contains", plain(metric)))
                .with(
                    "buckets",
                    bounds
                        .iter()
                        .map(plain)
                        .collect::<Seq>()
                        .styled(SeqStyle::Compact),
                )
        })
        .collect();
    Map::block()
        .comment("The filter's metrics carry their labels in the stat name (`;request_model=...`, since model")
        .comment("ids contain dots); these tags turn them into labels named by OpenTelemetry's GenAI conventions.")
        .with(
            "stats_config",
            Map::block()
                .with("stats_tags", tags)
                .with("histogram_bucket_settings", buckets),
        )
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

/// The file's header: where it comes from, and how the filter's two stages fit together.
fn header(plan: &Plan, options: &Options) -> Vec<String> {
    let mut lines = vec![
        "Envoy configuration of the Bedrock AI gateway, rendered by ai-gateway-render from"
            .to_owned(),
        format!(
            "{}. Do not edit: change the resources and render again.",
            options.source_name
        ),
        String::new(),
    ];
    // Wrapped at 100 columns, counting the `# ` each line gets.
    let mut resources = String::from("Resources:");
    for (i, source) in plan.sources.iter().enumerate() {
        let item = if i + 1 == plan.sources.len() {
            format!(" {source}.")
        } else {
            format!(" {source},")
        };
        if resources.len() + 2 + item.len() > 100 {
            lines.push(resources);
            resources = String::from(" ");
        }
        resources.push_str(&item);
    }
    lines.push(resources);
    if plan
        .clusters
        .iter()
        .any(|c| matches!(c.backend.credentials, CredentialsPlan::Static(_)))
    {
        lines.push("It holds AWS secret keys (from a BackendSecurityPolicy's credentialsFile): keep it private.".to_owned());
    }
    lines.extend(
        [
            "",
            "One filter runs in two places:",
            "  - the routing stage (root_id ai_gateway), downstream: copies the body's `model` into the",
            "    x-ai-eg-model header, so that the routes (one per AIGatewayRoute rule) pick a cluster;",
            "  - the backend stage (root_id ai_gateway_backend), an upstream filter on each cluster (one per",
            "    AIServiceBackend and model override): applies that backend's entry of the plugin",
            "    configuration, translates, signs with SigV4, and translates the response back.",
        ]
        .map(str::to_owned),
    );
    lines
}

fn listener_config(
    plan: &Plan,
    options: &Options,
    plugin_json: &str,
    listener: &ListenerPlan,
    first: bool,
) -> Map {
    let head = Map::block()
        .with("name", string(&listener.name))
        .with("address", socket_address(&listener.address, listener.port))
        .with(
            "per_connection_buffer_limit_bytes",
            plain(BUFFER_LIMIT_BYTES),
        );
    let manager = Map::block().with(
        "name",
        plain("envoy.filters.network.http_connection_manager"),
    );
    let manager = if first {
        manager.with(
            "typed_config",
            connection_manager(plan, options, plugin_json, listener)
                .anchor("gateway_connection_manager"),
        )
    } else {
        manager.with("typed_config", Node::Alias("gateway_connection_manager"))
    };
    head.with(
        "filter_chains",
        Seq::block().item(Map::block().with("filters", Seq::block().item(manager))),
    )
}

fn connection_manager(
    plan: &Plan,
    options: &Options,
    plugin_json: &str,
    listener: &ListenerPlan,
) -> Map {
    let caller = plan.callers.as_ref().map_or(String::new(), |c| {
        format!(" caller=%REQ({})%", c.caller_header)
    });
    let access_log = Map::block()
        .with("name", plain("envoy.access_loggers.file"))
        .with(
            "typed_config",
            Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"),
                )
                .with("path", plain("/dev/stdout"))
                .with(
                    "log_format",
                    Map::block().with(
                        "text_format_source",
                        Map::block().with(
                            "inline_string",
                            plain(format!(
                                "\"[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CODE% %DURATION%ms request_id=%REQ(X-REQUEST-ID)%{caller} bedrock_request_id=%RESP(X-AMZN-REQUESTID)% usage={}\\n\"",
                                options.usage_operator("usage")
                            )),
                        ),
                    ),
                ),
        );
    let mut manager = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        )
        .with("stat_prefix", plain("ai_gateway"))
        .comment("LLM responses can take minutes; streams must not be cut by the idle timer.")
        .with("stream_idle_timeout", plain("600s"))
        .comment("One line per request: Bedrock's request id and the filter's usage summary.")
        .with("access_log", Seq::block().item(access_log));
    if let Some(tracing) = &plan.tracing {
        manager = manager.extend(crate::telemetry::connection_manager_tracing(
            tracing, options,
        ));
    }
    if plan.rate_limit.is_some() {
        manager = manager.extend(crate::rate_limits::local_reply());
    }
    manager = match routes_file_path(plan, options) {
        Some(path) => {
            let source = Map::block().with("resource_api_version", plain("V3")).with(
                "path_config_source",
                Map::block().with("path", string(&path)).with(
                    "watched_directory",
                    Map::flow().with("path", string(options.sds_dir.trim_end_matches('/'))),
                ),
            );
            manager
                .comment("The routes, and the callers' API keys with them, from a file Envoy watches: rewriting it")
                .comment("(re-rendering) rotates keys without a restart.")
                .with(
                    "rds",
                    Map::block()
                        .with("route_config_name", plain("models"))
                        .with("config_source", source),
                )
        }
        None => manager.with("route_config", route_configuration(plan, listener)),
    };
    let mut filters = Seq::block();
    match &options.dynamic_module_path {
        // A native module reads Envoy's own environment: nothing to pass through.
        Some(module_path) => {
            filters.push(dynamic_module_stage(
                "ai_gateway",
                module_path,
                Some(plugin_json),
            ));
        }
        None => {
            let mut vm = Map::block()
                .with("vm_id", plain("ai_gateway"))
                .with("runtime", plain("envoy.wasm.runtime.v8"))
                .with("code", local_file(&options.wasm_path));
            if uses_default_chain(plan) {
                let keys: Seq = CHAIN_ENV_KEYS.iter().map(plain).collect();
                vm = vm
                    .comment("The AWS default chain decides at start-up from these (static keys, IRSA, Pod Identity, else IMDS).")
                    .with(
                        "environment_variables",
                        Map::block().with("host_env_keys", keys.styled(SeqStyle::Compact)),
                    );
            }
            let stage_vm = Map::block()
                .with("vm_config", vm.anchor("gateway_vm"))
                .with(
                    "configuration",
                    string_value(plugin_json).anchor("gateway_config"),
                );
            filters.push(wasm_stage("ai_gateway", stage_vm));
        }
    }
    if let Some(callers) = &plan.callers {
        crate::callers::push_filters(&mut filters, callers);
    }
    if let Some(rate_limit) = &plan.rate_limit {
        filters.push(crate::rate_limits::filter(rate_limit, options));
    }
    filters.push(
        Map::block()
            .with("name", plain("envoy.filters.http.router"))
            .with(
                "typed_config",
                Map::block().with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
                ),
            ),
    );
    manager.with("http_filters", filters)
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
    let configuration = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.config.route.v3.RouteConfiguration"),
        )
        .extend(route_configuration(plan, listener));
    let root = Map::block()
        .comment("The gateway's routes (RDS), rendered by ai-gateway-render; Envoy reads this file again when it")
        .comment("changes. It holds the callers' API keys: keep it private.")
        .with("resources", Seq::block().item(configuration));
    Some((ROUTES_FILE.to_owned(), document(&[], &root)))
}

/// The route configuration `models`.
fn route_configuration(plan: &Plan, listener: &ListenerPlan) -> Map {
    let domains = match &listener.hostname {
        Some(host) => Seq::compact()
            .item(string(host))
            .item(string(&format!("{host}:*"))),
        None => Seq::compact().item(string("*")),
    };
    let mut host = Map::block()
        .with("name", plain("bedrock"))
        .with("domains", domains);
    if let Some(credentials) = plan
        .callers
        .as_ref()
        .and_then(crate::callers::virtual_host_credentials)
    {
        host = host.extend(credentials);
    }
    if !plan.failovers.is_empty() {
        host = host
            .comment("Tells the backend stage which try, and so which failover backend, a request is on.")
            .with("include_request_attempt_count", plain(true));
    }
    host = match routes_by_model(&plan.routes) {
        Some(by_model) => host.extend(model_matcher(&by_model)),
        None => {
            let mut routes: Seq = plan.routes.iter().map(route).collect();
            routes.push(not_found());
            host.with("routes", routes)
        }
    };
    Map::block()
        .with("name", plain("models"))
        .with("virtual_hosts", Seq::block().item(host))
}

/// Envoy's answer when no route serves the request.
fn not_found() -> Map {
    Map::block()
        .comment("No route for the request: for the gateway's endpoints the filter rewrites this into the caller's")
        .comment("API error format naming the model; other paths get this as it is.")
        .with("match", plain("{ prefix: \"/\" }"))
        .with(
            "direct_response",
            Map::block()
                .with("status", plain(404))
                .with(
                    "body",
                    plain("{ inline_string: '{\"error\":{\"message\":\"No route serves this request.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"not_found\"}}' }"),
                ),
        )
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
fn model_matcher(by_model: &[(&str, &RoutePlan)]) -> Map {
    let mut map = Map::block();
    for (model, plan) in by_model {
        map = map.with_quoted(model, route_action(&format!("route {model}"), route(plan)));
    }
    let tree = header_match_input("model", "x-ai-eg-model")
        .with("exact_match_map", Map::block().with("map", map));
    Map::block()
        .comment("One lookup of the model header picks the route, however many models there are.")
        .with(
            "matcher",
            Map::block()
                .with("matcher_tree", tree)
                .with("on_no_match", route_action("not-found", not_found())),
        )
}

/// A route as a matcher's action: the same members as the route list's entry, as a `Route` message.
fn route_action(name: &str, route: Map) -> Map {
    let message = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.config.route.v3.Route"),
        )
        .extend(route);
    Map::block().with(
        "action",
        Map::block()
            .with("name", string(name))
            .with("typed_config", message),
    )
}

/// `GET /ready` answered by Envoy's health_check filter from the server's own state, so probes need
/// neither the admin interface nor a backend.
fn ready_listener(address: &str, port: u16) -> Map {
    let health_check = Map::block()
        .with("name", plain("envoy.filters.http.health_check"))
        .with(
            "typed_config",
            Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"),
                )
                .with("pass_through_mode", plain(false))
                .with(
                    "headers",
                    plain("[ { name: \":path\", string_match: { exact: /ready } } ]"),
                ),
        );
    let router = Map::block()
        .with("name", plain("envoy.filters.http.router"))
        .with(
            "typed_config",
            plain(
                "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }",
            ),
        );
    let manager = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        )
        .with("stat_prefix", plain("ready"))
        .with(
            "route_config",
            plain("{ virtual_hosts: [ { name: ready, domains: [\"*\"], routes: [ { match: { prefix: \"/\" }, direct_response: { status: 404 } } ] } ] }"),
        )
        .with("http_filters", Seq::block().item(health_check).item(router));
    let filter = Map::block()
        .with(
            "name",
            plain("envoy.filters.network.http_connection_manager"),
        )
        .with("typed_config", manager);
    Map::block()
        .with("name", plain("ready"))
        .with("address", socket_address(address, port))
        .with(
            "filter_chains",
            Seq::block().item(Map::block().with("filters", Seq::block().item(filter))),
        )
}

/// One route: its match, its span's name, its cluster (or weighted clusters) and timeout, and
/// for failover the retry policy that moves each try to the next backend.
fn route(route: &RoutePlan) -> Map {
    let headers: Vec<Map> = route
        .headers
        .iter()
        .map(|h| {
            let matcher = if h.regex {
                Map::flow().with("safe_regex", Map::flow().with("regex", string(&h.value)))
            } else {
                Map::flow().with("exact", string(&h.value))
            };
            Map::flow()
                .with("name", string(&h.name))
                .with("string_match", matcher)
        })
        .collect();
    let mut matcher = Map::flow().with("prefix", string("/"));
    if !headers.is_empty() {
        matcher.push(
            "headers",
            headers.into_iter().collect::<Seq>().styled(SeqStyle::Flow),
        );
    }
    let mut entry = Map::block().comment(&route.origin).with("match", matcher);
    if let Some(span_name) = &route.span_name {
        // Not propagated: Envoy would send it to Bedrock and back to callers as a header.
        entry.push(
            "decorator",
            Map::flow()
                .with("operation", string(span_name))
                .with("propagate", plain(false)),
        );
    }
    let timeout = duration(route.timeout_ms);
    if let (Some(retry), [(cluster, _)]) = (route.retry, route.target.as_slice()) {
        let mut policy = Map::block()
            .with(
                "retry_on",
                plain("\"5xx,reset,connect-failure,retriable-status-codes\""),
            )
            .with("retriable_status_codes", Seq::compact().item(plain(429)))
            .with("num_retries", plain(retry.retries));
        if let Some(per_try) = retry.per_try_timeout_ms {
            policy.push("per_try_timeout", plain(duration(per_try)));
        }
        let policy = policy.with(
            "retry_back_off",
            plain("{ base_interval: 0.05s, max_interval: 0.5s }"),
        );
        return entry.with(
            "route",
            Map::block()
                .with("cluster", string(cluster))
                .with("timeout", plain(&timeout))
                .comment("Failover: each retry goes to the next backend, translated and signed for it; a streamed")
                .comment("reply is not retried once it has begun.")
                .with("retry_policy", policy),
        );
    }
    match route.target.as_slice() {
        [(cluster, _)] => entry.with(
            "route",
            Map::flow()
                .with("cluster", string(cluster))
                .with("timeout", plain(&timeout)),
        ),
        weighted => {
            let clusters: Seq = weighted
                .iter()
                .map(|(cluster, weight)| {
                    Map::flow()
                        .with("name", string(cluster))
                        .with("weight", plain(weight))
                })
                .collect();
            entry.with(
                "route",
                Map::block()
                    .with("timeout", plain(&timeout))
                    .with("weighted_clusters", Map::block().with("clusters", clusters)),
            )
        }
    }
}

fn endpoints(name: &str, endpoints: &[(String, u16)]) -> Map {
    let lb_endpoints: Seq = endpoints
        .iter()
        .map(|(host, port)| Map::flow().with("address", socket_address(host, *port)))
        .map(|address| Map::block().with("endpoint", address))
        .collect();
    Map::block().with(
        "load_assignment",
        Map::block().with("cluster_name", string(name)).with(
            "endpoints",
            Seq::block().item(Map::block().with("lb_endpoints", lb_endpoints)),
        ),
    )
}

fn discovery(discovery: Discovery, connect_timeout: &str) -> Map {
    let map = match discovery {
        Discovery::Static => Map::block().with("type", plain("STATIC")),
        Discovery::LogicalDns => Map::block()
            .with("type", plain("LOGICAL_DNS"))
            .with("dns_lookup_family", plain("V4_PREFERRED")),
        Discovery::StrictDns => Map::block()
            .with("type", plain("STRICT_DNS"))
            .with("dns_lookup_family", plain("V4_PREFERRED")),
    };
    map.with("connect_timeout", plain(connect_timeout))
}

/// Failovers in flight at once through one composite cluster: as many as requests Envoy lets a
/// cluster have in flight by default (`max_requests`), so that retries never run out first.
const FAILOVER_RETRIES_IN_FLIGHT: u32 = 1024;

/// Envoy's composite cluster: attempt N goes to its Nth cluster. Upstream filters are the
/// composite's own, so the backend stage runs here, once per attempt, and picks that attempt's
/// backend from the plugin configuration's `failover` list.
fn failover_cluster(failover: &FailoverPlan) -> Map {
    let clusters: Seq = failover
        .clusters
        .iter()
        .map(|c| Map::flow().with("name", string(c)))
        .collect();
    Map::block()
        .with("name", string(&failover.name))
        .with("connect_timeout", plain("10s"))
        .with("lb_policy", plain("CLUSTER_PROVIDED"))
        .with(
            "per_connection_buffer_limit_bytes",
            plain(BUFFER_LIMIT_BYTES),
        )
        .with("typed_extension_protocol_options", Node::Alias("backend_filters"))
        .comment("Envoy lets 3 retries per cluster be in flight by default: under load, the fourth request")
        .comment("failing over at once would get the primary's error instead of the fallback's answer.")
        .with(
            "circuit_breakers",
            plain(format!(
                "{{ thresholds: [ {{ max_retries: {FAILOVER_RETRIES_IN_FLIGHT} }} ] }}"
            )),
        )
        .with(
            "cluster_type",
            Map::block()
                .with("name", plain("envoy.clusters.composite"))
                .with(
                    "typed_config",
                    Map::block()
                        .with(
                            "\"@type\"",
                            plain("type.googleapis.com/envoy.extensions.clusters.composite.v3.ClusterConfig"),
                        )
                        .with("clusters", clusters.styled(SeqStyle::Flow)),
                ),
        )
}

/// The cluster through which the gateway makes its own calls to a backend (one per input of a
/// Titan embeddings list): the backend's cluster again, without the gateway's filter, since the
/// calls are signed already and a filter running for a call it dispatches would re-enter itself.
pub fn calls_cluster_name(cluster: &str) -> String {
    format!("{cluster}~calls")
}

fn calls_cluster(cluster: &ClusterPlan, options: &Options) -> Map {
    let name = calls_cluster_name(&cluster.name);
    let mut map = Map::block()
        .with("name", string(&name))
        .extend(discovery(cluster.discovery, "10s"))
        .with(
            "per_connection_buffer_limit_bytes",
            plain(BUFFER_LIMIT_BYTES),
        );
    if let CredentialsPlan::ApiKey(key) = &cluster.backend.credentials {
        let filters = Seq::block()
            .item(crate::credentials::api_key_injector(key, options))
            .item(upstream_codec());
        map = map
            .comment("The gateway's own calls, signed already: only the Bedrock API key is added, as on the backend's cluster.")
            .extend(upstream_protocol_options(None, false, Some(filters)));
    } else {
        map.note("The gateway's own calls to this backend, signed already (one per input of a Titan embeddings list).");
    }
    let map = map.extend(endpoints(&name, &cluster.endpoints));
    match &cluster.tls {
        Some(settings) => map.extend(upstream_tls(settings)),
        None => map,
    }
}

fn backend_cluster(cluster: &ClusterPlan, first: bool, options: &Options) -> Map {
    let mut map = Map::block()
        .with("name", string(&cluster.name))
        .extend(discovery(cluster.discovery, "10s"))
        .with(
            "per_connection_buffer_limit_bytes",
            plain(BUFFER_LIMIT_BYTES),
        );
    let backend_stage = || {
        upstream_stage(
            options.dynamic_module_path.as_deref(),
            "ai_gateway_backend",
            shared_wasm_vm(),
        )
    };
    if let CredentialsPlan::ApiKey(key) = &cluster.backend.credentials {
        let filters = Seq::block()
            .item(backend_stage())
            .item(crate::credentials::api_key_injector(key, options))
            .item(upstream_codec());
        map = map
            .comment("The backend stage, then Envoy's credential_injector adding the Bedrock API key it reads through SDS.")
            .extend(upstream_protocol_options(None, false, Some(filters)));
    } else if first {
        let filters = Seq::block().item(backend_stage()).item(upstream_codec());
        map = map
            .comment("The backend stage: the same module and configuration as the routing stage, as an upstream filter.")
            .extend(upstream_protocol_options(Some("backend_filters"), false, Some(filters)));
    } else {
        map.push(
            "typed_extension_protocol_options",
            Node::Alias("backend_filters"),
        );
    }
    let map = map.extend(endpoints(&cluster.name, &cluster.endpoints));
    match &cluster.tls {
        Some(settings) => map.extend(upstream_tls(settings)),
        None => map,
    }
}

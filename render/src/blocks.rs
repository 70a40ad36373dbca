//! The blocks several parts of Envoy's configuration share, as trees (see [`crate::yaml`]).

use crate::plan::{SanPlan, TlsPlan};
use crate::yaml::{plain, string, Map, Node, Seq};

/// A matcher tree's `input`: the request header `header` (Envoy's
/// `HttpRequestHeaderMatchInput`), as routes and the RBAC filter read the model and the caller.
pub fn header_match_input(name: &str, header: &str) -> Map {
    Map::block().with(
        "input",
        Map::block().with("name", plain(name)).with(
            "typed_config",
            Map::flow()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"),
                )
                .with("header_name", string(header)),
        ),
    )
}

/// `{ local: { filename: "..." } }`: a file Envoy loads (the `.wasm`, the module).
pub fn local_file(path: &str) -> Node {
    Map::flow()
        .with("local", Map::flow().with("filename", string(path)))
        .into()
}

/// `{ socket_address: { address: "...", port_value: N } }`.
pub fn socket_address(address: &str, port: u16) -> Node {
    Map::flow()
        .with(
            "socket_address",
            Map::flow()
                .with("address", string(address))
                .with("port_value", plain(port)),
        )
        .into()
}

/// A cluster's `load_assignment` with its one endpoint, on one line.
pub fn single_endpoint(cluster: &str, host: &str, port: u16) -> Map {
    let endpoint = Map::flow().with(
        "lb_endpoints",
        Seq::flow().item(Map::flow().with(
            "endpoint",
            Map::flow().with("address", socket_address(host, port)),
        )),
    );
    Map::block().with(
        "load_assignment",
        Map::block()
            .with("cluster_name", string(cluster))
            .with("endpoints", Seq::flow().item(endpoint)),
    )
}

/// A cluster's HTTP protocol options (HTTP/1.1, or HTTP/2 for gRPC), with its upstream filters
/// when it has some; `anchor` names the block for later clusters to reuse.
pub fn upstream_protocol_options(
    anchor: Option<&'static str>,
    http2: bool,
    filters: Option<Seq>,
) -> Map {
    let protocol = if http2 {
        "{ http2_protocol_options: {} }"
    } else {
        "{ http_protocol_options: {} }"
    };
    let mut options = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        )
        .with("explicit_http_config", plain(protocol));
    if let Some(filters) = filters {
        options.push("http_filters", filters);
    }
    let mut block = Map::block().with(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        options,
    );
    if let Some(anchor) = anchor {
        block = block.anchor(anchor);
    }
    Map::block().with("typed_extension_protocol_options", block)
}

/// The last upstream filter, which every cluster's filter list needs.
pub fn upstream_codec() -> Map {
    Map::block()
        .with("name", plain("envoy.filters.http.upstream_codec"))
        .with(
            "typed_config",
            Map::block().with(
                "\"@type\"",
                plain("type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"),
            ),
        )
}

/// One stage of the native dynamic module (`filter_name` picks the stage): the first stage written
/// defines the YAML anchors `gateway_module` and `gateway_config` (the plugin JSON), the others
/// refer to them.
pub fn dynamic_module_stage(
    filter_name: &str,
    module_path: &str,
    plugin_json: Option<&str>,
) -> Map {
    let config = Map::block().with(
        "\"@type\"",
        plain("type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"),
    );
    let config = match plugin_json {
        Some(json) => config
            .with(
                "dynamic_module_config",
                Map::block()
                    .anchor("gateway_module")
                    .with("name", plain("bedrock_gateway"))
                    .comment("Never unloaded: the module's credential ticker thread outlives any one configuration.")
                    .with("do_not_close", plain(true))
                    .comment("The module's metrics (gen_ai.client.token.usage, ...) in Envoy's default namespace for module metrics,")
                    .comment("which the runtime flag dynamic_modules_strip_custom_stat_prefix keeps out of their names, as for the .wasm's.")
                    .with("module", local_file(module_path)),
            )
            .with("filter_name", plain(filter_name))
            .with("filter_config", string_value(json).anchor("gateway_config")),
        None => config
            .with("dynamic_module_config", Node::Alias("gateway_module"))
            .with("filter_name", plain(filter_name))
            .with("filter_config", Node::Alias("gateway_config")),
    };
    Map::block()
        .with("name", plain("envoy.filters.http.dynamic_modules"))
        .with("typed_config", config)
}

/// A `google.protobuf.StringValue` holding `text` (the plugin JSON), as a block literal.
pub fn string_value(text: &str) -> Map {
    Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/google.protobuf.StringValue"),
        )
        .with("value", Node::Literal(text.to_owned()))
}

/// An upstream stage of the gateway (`name`: the module's `filter_name`, or the wasm `root_id`) for
/// the host the options chose: the dynamic module at `module_path`, which shares the routing
/// stage's module and configuration, or the wasm filter with `wasm_vm` (its VM and configuration).
pub fn upstream_stage(module_path: Option<&str>, name: &str, wasm_vm: Map) -> Map {
    match module_path {
        Some(module_path) => dynamic_module_stage(name, module_path, None),
        None => wasm_stage(name, wasm_vm),
    }
}

/// The VM and configuration of the routing stage, for a wasm stage that shares them.
pub fn shared_wasm_vm() -> Map {
    Map::block()
        .with("vm_config", Node::Alias("gateway_vm"))
        .with("configuration", Node::Alias("gateway_config"))
}

/// One stage of the wasm filter (`root_id` picks the stage), its VM and configuration in `vm`.
pub fn wasm_stage(root_id: &str, vm: Map) -> Map {
    let config = Map::block()
        .with("name", plain(root_id))
        .with("root_id", plain(root_id))
        .comment("Lets the filter hold the headers while it reads the body (Envoy >= 1.35).")
        .with("allow_on_headers_stop_iteration", plain(true))
        .comment("A crashed VM is reloaded for the next request instead of failing every request.")
        .with("failure_policy", plain("FAIL_RELOAD"))
        .extend(vm);
    Map::block()
        .with("name", plain("envoy.filters.http.wasm"))
        .with(
            "typed_config",
            Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
                )
                .with("config", config),
        )
}

/// TLS to an upstream: `sni`, checked against the system CA bundle and the names it must carry.
pub fn upstream_tls(tls: &TlsPlan) -> Map {
    let names: Seq = tls
        .subject_alt_names
        .iter()
        .map(|san| {
            let (kind, value) = match san {
                SanPlan::Dns(host) => ("DNS", host),
                SanPlan::Uri(uri) => ("URI", uri),
            };
            Map::flow()
                .with("san_type", plain(kind))
                .with("matcher", Map::flow().with("exact", string(value)))
        })
        .collect();
    let context = Map::block()
        .with(
            "\"@type\"",
            plain(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            ),
        )
        .with("sni", string(&tls.sni))
        .with(
            "common_tls_context",
            Map::block().with(
                "validation_context",
                Map::block()
                    .with(
                        "trusted_ca",
                        plain("{ filename: /etc/ssl/certs/ca-certificates.crt }"),
                    )
                    .with("match_typed_subject_alt_names", names),
            ),
        );
    Map::block().with(
        "transport_socket",
        Map::block()
            .with("name", plain("envoy.transport_sockets.tls"))
            .with("typed_config", context),
    )
}

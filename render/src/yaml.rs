//! Writing Envoy's YAML by lines, and the blocks several parts of the configuration share.
//!
//! Every value that comes from the resources goes through [`quoted`]: a JSON string, which YAML
//! reads as a double-quoted scalar, so no input can change the structure.

use serde_json::Value;

/// A YAML scalar that reads back as exactly `text`.
pub fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A matcher tree's input at `indent`: the request header `header` (Envoy's
/// `HttpRequestHeaderMatchInput`), as routes and the RBAC filter read the model and the caller.
pub fn header_match_input(o: &mut String, indent: usize, name: &str, header: &str) {
    line(o, indent, "input:");
    line(o, indent + 1, &format!("name: {name}"));
    line(
        o,
        indent + 1,
        &format!("typed_config: {{ \"@type\": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: {} }}", quoted(header)),
    );
}

/// One line at `indent` levels of two spaces (an empty `text` writes an empty line).
pub fn line(out: &mut String, indent: usize, text: &str) {
    if !text.is_empty() {
        for _ in 0..indent {
            out.push_str("  ");
        }
        out.push_str(text);
    }
    out.push('\n');
}

pub fn socket_address(address: &str, port: u16) -> String {
    format!(
        "{{ socket_address: {{ address: {}, port_value: {port} }} }}",
        quoted(address)
    )
}

/// A cluster's `load_assignment` with its one endpoint, on one line.
pub fn single_endpoint(o: &mut String, cluster: &str, host: &str, port: u16) {
    line(o, 2, "load_assignment:");
    line(o, 3, &format!("cluster_name: {}", quoted(cluster)));
    line(
        o,
        3,
        &format!(
            "endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {} }} }} ] }} ]",
            socket_address(host, port)
        ),
    );
}

/// A cluster's HTTP protocol options (HTTP/1.1, or HTTP/2 for gRPC), up to its upstream filters'
/// list when it has some; `anchor` names the block for later clusters to reuse.
pub fn upstream_protocol_options(
    o: &mut String,
    anchor: Option<&str>,
    http2: bool,
    with_filters: bool,
) {
    match anchor {
        Some(anchor) => line(
            o,
            2,
            &format!("typed_extension_protocol_options: &{anchor}"),
        ),
        None => line(o, 2, "typed_extension_protocol_options:"),
    }
    line(
        o,
        3,
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
    );
    line(
        o,
        4,
        "\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    );
    if http2 {
        line(o, 4, "explicit_http_config: { http2_protocol_options: {} }");
    } else {
        line(o, 4, "explicit_http_config: { http_protocol_options: {} }");
    }
    if with_filters {
        line(o, 4, "http_filters:");
    }
}

/// The last upstream filter, which every cluster's filter list needs.
pub fn upstream_codec(o: &mut String) {
    line(o, 4, "- name: envoy.filters.http.upstream_codec");
    line(o, 5, "typed_config:");
    line(o, 6, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec");
}

/// One stage of the native dynamic module (`filter_name` picks the stage): the first stage written
/// defines the YAML anchors `gateway_module` and `gateway_config` (the plugin JSON), the others
/// refer to them.
pub fn dynamic_module_stage(
    o: &mut String,
    indent: usize,
    filter_name: &str,
    module_path: &str,
    plugin_json: Option<&str>,
) {
    line(o, indent, "- name: envoy.filters.http.dynamic_modules");
    line(o, indent + 1, "typed_config:");
    let c = indent + 2;
    line(o, c, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter");
    match plugin_json {
        Some(json) => {
            line(o, c, "dynamic_module_config: &gateway_module");
            line(o, c + 1, "name: bedrock_gateway");
            line(o, c + 1, "# Never unloaded: the module's credential ticker thread outlives any one configuration.");
            line(o, c + 1, "do_not_close: true");
            line(o, c + 1, "# The module's metrics (gen_ai.client.token.usage, ...) in Envoy's default namespace for module metrics,");
            line(o, c + 1, "# which the runtime flag dynamic_modules_strip_custom_stat_prefix keeps out of their names, as for the .wasm's.");
            line(
                o,
                c + 1,
                &format!(
                    "module: {{ local: {{ filename: {} }} }}",
                    quoted(module_path)
                ),
            );
            line(o, c, &format!("filter_name: {filter_name}"));
            line(o, c, "filter_config: &gateway_config");
            line(
                o,
                c + 1,
                "\"@type\": type.googleapis.com/google.protobuf.StringValue",
            );
            line(o, c + 1, "value: |");
            for json_line in json.lines() {
                line(o, c + 2, json_line);
            }
        }
        None => {
            line(o, c, "dynamic_module_config: *gateway_module");
            line(o, c, &format!("filter_name: {filter_name}"));
            line(o, c, "filter_config: *gateway_config");
        }
    }
}

/// An upstream stage of the gateway (`name`: the module's `filter_name`, or the wasm `root_id`) for
/// the host the options chose: the dynamic module at `module_path`, which shares the routing
/// stage's module and configuration, or the wasm filter, whose VM and configuration
/// `write_wasm_vm` writes at the indent it is given.
pub fn upstream_stage(
    o: &mut String,
    module_path: Option<&str>,
    name: &str,
    write_wasm_vm: impl FnOnce(&mut String, usize),
) {
    match module_path {
        Some(module_path) => dynamic_module_stage(o, 4, name, module_path, None),
        None => {
            let c = wasm_stage(o, 4, name);
            write_wasm_vm(o, c);
        }
    }
}

/// The head of one stage of the wasm filter (`root_id` picks the stage), up to its `vm_config`,
/// which the caller writes; returns the indent of the `config` fields.
pub fn wasm_stage(o: &mut String, indent: usize, root_id: &str) -> usize {
    line(o, indent, "- name: envoy.filters.http.wasm");
    line(o, indent + 1, "typed_config:");
    line(
        o,
        indent + 2,
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    );
    line(o, indent + 2, "config:");
    let c = indent + 3;
    line(o, c, &format!("name: {root_id}"));
    line(o, c, &format!("root_id: {root_id}"));
    line(
        o,
        c,
        "# Lets the filter hold the headers while it reads the body (Envoy >= 1.35).",
    );
    line(o, c, "allow_on_headers_stop_iteration: true");
    line(
        o,
        c,
        "# A crashed VM is reloaded for the next request instead of failing every request.",
    );
    line(o, c, "failure_policy: FAIL_RELOAD");
    c
}

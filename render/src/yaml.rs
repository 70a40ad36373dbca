//! Writing Envoy's YAML by lines, and the blocks several parts of the configuration share.
//!
//! Every value that comes from the resources goes through [`quoted`]: a JSON string, which YAML
//! reads as a double-quoted scalar, so no input can change the structure.

use serde_json::Value;

/// A YAML scalar that reads back as exactly `text`.
pub fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
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
    format!("{{ socket_address: {{ address: {}, port_value: {port} }} }}", quoted(address))
}

/// A cluster's `load_assignment` with its one endpoint, on one line.
pub fn single_endpoint(o: &mut String, cluster: &str, host: &str, port: u16) {
    line(o, 2, "load_assignment:");
    line(o, 3, &format!("cluster_name: {}", quoted(cluster)));
    line(o, 3, &format!("endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {} }} }} ] }} ]", socket_address(host, port)));
}

/// A cluster's HTTP protocol options (HTTP/1.1, or HTTP/2 for gRPC), up to its upstream filters'
/// list when it has some; `anchor` names the block for later clusters to reuse.
pub fn upstream_protocol_options(o: &mut String, anchor: Option<&str>, http2: bool, with_filters: bool) {
    match anchor {
        Some(anchor) => line(o, 2, &format!("typed_extension_protocol_options: &{anchor}")),
        None => line(o, 2, "typed_extension_protocol_options:"),
    }
    line(o, 3, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions:");
    line(o, 4, "\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
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

/// The head of one stage of the wasm filter (`root_id` picks the stage), up to its `vm_config`,
/// which the caller writes; returns the indent of the `config` fields.
pub fn wasm_stage(o: &mut String, indent: usize, root_id: &str) -> usize {
    line(o, indent, "- name: envoy.filters.http.wasm");
    line(o, indent + 1, "typed_config:");
    line(o, indent + 2, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    line(o, indent + 2, "config:");
    let c = indent + 3;
    line(o, c, &format!("name: {root_id}"));
    line(o, c, &format!("root_id: {root_id}"));
    line(o, c, "# Lets the filter hold the headers while it reads the body (Envoy >= 1.35).");
    line(o, c, "allow_on_headers_stop_iteration: true");
    line(o, c, "# A crashed VM is reloaded for the next request instead of failing every request.");
    line(o, c, "failure_policy: FAIL_RELOAD");
    c
}

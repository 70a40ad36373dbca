//! The proxy-wasm host (Envoy's side of the ABI), faked for the adapter's unit tests: each host
//! function the filter and the SDK import is defined here with the ABI's signature, so that the
//! adapter runs natively, hooks called through the SDK's own exported entry points
//! (`proxy_on_*`). State is per thread (the SDK's dispatcher is too), per context where Envoy's
//! is: headers and bodies belong to the context a hook runs for, or the one made effective.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::missing_safety_doc
)]

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use std::cell::RefCell;
use std::collections::HashMap;

extern "C" {
    /// Exported by the SDK: the filter's allocator, which the host uses for every answer.
    fn proxy_on_memory_allocate(size: usize) -> *mut u8;
}

/// One HTTP stream's (or root's) state as the host holds it.
#[derive(Default, Clone)]
pub struct FakeContext {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// The answer to this context's last HTTP call, while its callback runs.
    pub call_response_headers: Vec<(String, String)>,
    pub call_response_body: Vec<u8>,
    pub cluster: Option<String>,
    pub local_reply: Option<(u32, Vec<u8>)>,
    pub resumed: u32,
    pub route_cache_cleared: u32,
    pub properties: Vec<(String, Vec<u8>)>,
}

/// A call made: token, context, cluster, headers, body.
pub type Call = (u32, u32, String, Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
pub struct FakeProxy {
    /// The context the running hook is for, or the one the filter made effective.
    pub current: u32,
    pub contexts: HashMap<u32, FakeContext>,
    /// `plugin_root_id` and the plugin configuration, by root context.
    pub root_ids: HashMap<u32, String>,
    pub plugin_configuration: HashMap<u32, Vec<u8>>,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    pub calls: Vec<Call>,
    pub tick_period_ms: Option<u32>,
    /// Header names whose writes the host refuses.
    pub refused_headers: Vec<String>,
    pub metrics: Vec<(MetricType, String)>,
    /// Each counter increment and histogram value, by metric id (its place in `metrics`, from 1).
    pub recorded: Vec<(u32, u64)>,
    pub logs: Vec<String>,
    pub now_ms: u64,
}

thread_local! {
    pub static PROXY: RefCell<FakeProxy> = RefCell::new(FakeProxy {
        now_ms: 1_893_452_400_000,
        ..FakeProxy::default()
    });
}

/// Runs `f` on this thread's fake host. While the thread's locals are being destroyed (the SDK's
/// contexts are dropped with them, and a dropped filter may still make host calls), a throwaway
/// host answers: a panic here would cross the ABI and abort the test binary.
pub fn with<T>(f: impl FnOnce(&mut FakeProxy) -> T) -> T {
    let mut f = Some(f);
    let mut call = |proxy: &mut FakeProxy| (f.take().expect("called once"))(proxy);
    match PROXY.try_with(|proxy| call(&mut proxy.borrow_mut())) {
        Ok(value) => value,
        Err(_) => call(&mut FakeProxy::default()),
    }
}

fn current<T>(f: impl FnOnce(&mut FakeContext) -> T) -> T {
    with(|proxy| {
        let id = proxy.current;
        f(proxy.contexts.entry(id).or_default())
    })
}

unsafe fn bytes<'a>(data: *const u8, size: usize) -> &'a [u8] {
    if data.is_null() || size == 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(data, size) }
}

unsafe fn text(data: *const u8, size: usize) -> String {
    String::from_utf8_lossy(unsafe { bytes(data, size) }).into_owned()
}

/// Hands `value` to the filter in memory it allocated, as the host does.
unsafe fn answer(value: &[u8], data: *mut *mut u8, size: *mut usize) -> Status {
    unsafe {
        let memory = proxy_on_memory_allocate(value.len());
        std::ptr::copy_nonoverlapping(value.as_ptr(), memory, value.len());
        data.write(memory);
        size.write(value.len());
    }
    Status::Ok
}

/// The host's serialization of a header map: a count, the sizes, then each name and value
/// followed by a NUL.
pub fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (name, value) in pairs {
        out.extend((name.len() as u32).to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend(name.as_bytes());
        out.push(0);
        out.extend(value.as_bytes());
        out.push(0);
    }
    out
}

fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    if bytes.len() < 4 {
        return Vec::new();
    }
    let count = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let mut sizes = Vec::new();
    for i in 0..count {
        let at = 4 + i * 8;
        let name = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let value = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        sizes.push((name, value));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::new();
    for (name, value) in sizes {
        let n = String::from_utf8_lossy(&bytes[at..at + name]).into_owned();
        at += name + 1;
        let v = String::from_utf8_lossy(&bytes[at..at + value]).into_owned();
        at += value + 1;
        pairs.push((n, v));
    }
    pairs
}

fn map_of(context: &mut FakeContext, map: MapType) -> &mut Vec<(String, String)> {
    match map {
        MapType::HttpRequestHeaders => &mut context.request_headers,
        MapType::HttpResponseHeaders => &mut context.response_headers,
        MapType::HttpCallResponseHeaders => &mut context.call_response_headers,
        other => panic!("map {other:?}"),
    }
}

fn buffer_of(context: &mut FakeContext, buffer: BufferType) -> &mut Vec<u8> {
    match buffer {
        BufferType::HttpRequestBody => &mut context.request_body,
        BufferType::HttpResponseBody => &mut context.response_body,
        BufferType::HttpCallResponseBody => &mut context.call_response_body,
        other => panic!("buffer {other:?}"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn proxy_log(_level: LogLevel, data: *const u8, size: usize) -> Status {
    let message = unsafe { text(data, size) };
    with(|proxy| proxy.logs.push(message));
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_log_level(level: *mut LogLevel) -> Status {
    unsafe { level.write(LogLevel::Trace) };
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_current_time_nanoseconds(time: *mut u64) -> Status {
    let now = with(|proxy| proxy.now_ms) * 1_000_000;
    unsafe { time.write(now) };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_set_tick_period_milliseconds(period: u32) -> Status {
    with(|proxy| proxy.tick_period_ms = Some(period));
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_buffer_bytes(
    buffer: BufferType,
    start: usize,
    max_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> Status {
    let value = match buffer {
        BufferType::PluginConfiguration => {
            with(|proxy| proxy.plugin_configuration.get(&proxy.current).cloned())
        }
        other => Some(current(|context| buffer_of(context, other).clone())),
    };
    let Some(value) = value else {
        return Status::NotFound;
    };
    let end = value.len().min(start.saturating_add(max_size));
    unsafe { answer(&value[start.min(end)..end], data, size) }
}

#[no_mangle]
pub unsafe extern "C" fn proxy_set_buffer_bytes(
    buffer: BufferType,
    start: usize,
    size: usize,
    data: *const u8,
    data_size: usize,
) -> Status {
    let value = unsafe { bytes(data, data_size) }.to_vec();
    current(|context| {
        let target = buffer_of(context, buffer);
        let end = target.len().min(start + size);
        target.splice(start.min(end)..end, value);
    });
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_header_map_pairs(
    map: MapType,
    data: *mut *mut u8,
    size: *mut usize,
) -> Status {
    let serialized = current(|context| serialize_map(map_of(context, map)));
    unsafe { answer(&serialized, data, size) }
}

#[no_mangle]
pub unsafe extern "C" fn proxy_set_header_map_pairs(
    map: MapType,
    data: *const u8,
    size: usize,
) -> Status {
    let pairs = deserialize_map(unsafe { bytes(data, size) });
    current(|context| *map_of(context, map) = pairs);
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_header_map_value(
    map: MapType,
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> Status {
    let key = unsafe { text(key, key_size) };
    let value = current(|context| {
        map_of(context, map)
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.clone())
    });
    match value {
        Some(value) => unsafe { answer(value.as_bytes(), data, size) },
        None => Status::NotFound,
    }
}

fn refused(key: &str) -> bool {
    with(|proxy| proxy.refused_headers.iter().any(|h| h == key))
}

#[no_mangle]
pub unsafe extern "C" fn proxy_remove_header_map_value(
    map: MapType,
    key: *const u8,
    key_size: usize,
) -> Status {
    let key = unsafe { text(key, key_size) };
    if refused(&key) {
        return Status::BadArgument;
    }
    current(|context| map_of(context, map).retain(|(name, _)| *name != key));
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_replace_header_map_value(
    map: MapType,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> Status {
    let (key, value) = unsafe { (text(key, key_size), text(value, value_size)) };
    if refused(&key) {
        return Status::BadArgument;
    }
    current(|context| {
        let headers = map_of(context, map);
        headers.retain(|(name, _)| *name != key);
        headers.push((key, value));
    });
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_add_header_map_value(
    map: MapType,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> Status {
    let (key, value) = unsafe { (text(key, key_size), text(value, value_size)) };
    current(|context| map_of(context, map).push((key, value)));
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_property(
    path: *const u8,
    path_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> Status {
    let path = unsafe { bytes(path, path_size) };
    let parts: Vec<&[u8]> = path.split(|b| *b == 0).filter(|p| !p.is_empty()).collect();
    let value = match parts.as_slice() {
        [b"plugin_root_id"] => with(|proxy| proxy.root_ids.get(&proxy.current).cloned()),
        [b"xds", b"cluster_name"] => current(|context| context.cluster.clone()),
        _ => None,
    };
    match value {
        Some(value) => unsafe { answer(value.as_bytes(), data, size) },
        None => Status::NotFound,
    }
}

#[no_mangle]
pub unsafe extern "C" fn proxy_set_property(
    path: *const u8,
    path_size: usize,
    value: *const u8,
    value_size: usize,
) -> Status {
    let name = unsafe { text(path, path_size) }
        .trim_end_matches('\0')
        .to_owned();
    let value = unsafe { bytes(value, value_size) }.to_vec();
    current(|context| context.properties.push((name, value)));
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_get_shared_data(
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
    cas: *mut u32,
) -> Status {
    let key = unsafe { text(key, key_size) };
    match with(|proxy| proxy.shared.get(&key).cloned()) {
        Some((value, version)) => unsafe {
            cas.write(version);
            answer(&value, data, size)
        },
        None => Status::NotFound,
    }
}

#[no_mangle]
pub unsafe extern "C" fn proxy_set_shared_data(
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
    cas: u32,
) -> Status {
    let key = unsafe { text(key, key_size) };
    let value = unsafe { bytes(value, value_size) }.to_vec();
    with(|proxy| {
        let version = proxy.shared.get(&key).map_or(0, |(_, v)| *v);
        if cas != 0 && cas != version {
            return Status::CasMismatch;
        }
        proxy.shared.insert(key, (value, version + 1));
        Status::Ok
    })
}

#[no_mangle]
pub extern "C" fn proxy_continue_stream(_stream: StreamType) -> Status {
    current(|context| context.resumed += 1);
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_close_stream(_stream: StreamType) -> Status {
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_send_local_response(
    status: u32,
    _details: *const u8,
    _details_size: usize,
    body: *const u8,
    body_size: usize,
    _headers: *const u8,
    _headers_size: usize,
    _grpc_status: i32,
) -> Status {
    let body = unsafe { bytes(body, body_size) }.to_vec();
    current(|context| {
        assert!(
            context.local_reply.is_none(),
            "a stream is answered at most once"
        );
        context.local_reply = Some((status, body));
    });
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_http_call(
    upstream: *const u8,
    upstream_size: usize,
    headers: *const u8,
    headers_size: usize,
    body: *const u8,
    body_size: usize,
    _trailers: *const u8,
    _trailers_size: usize,
    _timeout: u32,
    token: *mut u32,
) -> Status {
    let cluster = unsafe { text(upstream, upstream_size) };
    let headers = deserialize_map(unsafe { bytes(headers, headers_size) });
    let body = unsafe { bytes(body, body_size) }.to_vec();
    let id = with(|proxy| {
        let id = proxy.calls.len() as u32 + 1;
        proxy
            .calls
            .push((id, proxy.current, cluster, headers, body));
        id
    });
    unsafe { token.write(id) };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_set_effective_context(context_id: u32) -> Status {
    with(|proxy| proxy.current = context_id);
    Status::Ok
}

#[no_mangle]
pub unsafe extern "C" fn proxy_call_foreign_function(
    name: *const u8,
    name_size: usize,
    _arguments: *const u8,
    _arguments_size: usize,
    _results: *mut *mut u8,
    _results_size: *mut usize,
) -> Status {
    if unsafe { text(name, name_size) } == "clear_route_cache" {
        current(|context| context.route_cache_cleared += 1);
        return Status::Ok;
    }
    Status::NotFound
}

#[no_mangle]
pub unsafe extern "C" fn proxy_define_metric(
    kind: MetricType,
    name: *const u8,
    name_size: usize,
    id: *mut u32,
) -> Status {
    let name = unsafe { text(name, name_size) };
    let metric = with(|proxy| {
        proxy.metrics.push((kind, name));
        proxy.metrics.len() as u32
    });
    unsafe { id.write(metric) };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_increment_metric(id: u32, offset: i64) -> Status {
    with(|proxy| {
        proxy
            .recorded
            .push((id, u64::try_from(offset).unwrap_or_default()))
    });
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_record_metric(id: u32, value: u64) -> Status {
    with(|proxy| proxy.recorded.push((id, value)));
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_done() -> Status {
    Status::Ok
}

// The rest of the ABI the SDK links against: the filter never uses it, so it answers as a host
// without the feature would.

#[no_mangle]
pub extern "C" fn proxy_get_status(
    _code: *mut u32,
    _data: *mut *mut u8,
    _size: *mut usize,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_get_metric(_id: u32, _value: *mut u64) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_register_shared_queue(
    _name: *const u8,
    _size: usize,
    _id: *mut u32,
) -> Status {
    Status::InternalFailure
}

#[no_mangle]
pub extern "C" fn proxy_resolve_shared_queue(
    _vm: *const u8,
    _vm_size: usize,
    _name: *const u8,
    _name_size: usize,
    _id: *mut u32,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_dequeue_shared_queue(
    _id: u32,
    _data: *mut *mut u8,
    _size: *mut usize,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_enqueue_shared_queue(_id: u32, _data: *const u8, _size: usize) -> Status {
    Status::NotFound
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_call(
    _upstream: *const u8,
    _upstream_size: usize,
    _service: *const u8,
    _service_size: usize,
    _method: *const u8,
    _method_size: usize,
    _metadata: *const u8,
    _metadata_size: usize,
    _message: *const u8,
    _message_size: usize,
    _timeout: u32,
    _id: *mut u32,
) -> Status {
    Status::InternalFailure
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_stream(
    _upstream: *const u8,
    _upstream_size: usize,
    _service: *const u8,
    _service_size: usize,
    _method: *const u8,
    _method_size: usize,
    _metadata: *const u8,
    _metadata_size: usize,
    _id: *mut u32,
) -> Status {
    Status::InternalFailure
}

#[no_mangle]
pub extern "C" fn proxy_grpc_send(
    _token: u32,
    _data: *const u8,
    _size: usize,
    _end: bool,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_grpc_cancel(_token: u32) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_grpc_close(_token: u32) -> Status {
    Status::NotFound
}

//! Envoy's side of the dynamic-module ABI, faked for the adapter's unit tests: every callback the
//! module imports (`abi.rs`) is defined here with the same C signature, so the test binary links
//! against these instead of Envoy's. A stream is a [`FakeStream`] whose address is the
//! `EnvoyFilterPtr`; a configuration is a [`FakeConfig`] likewise. Like Envoy, sending a local
//! reply runs the stream's own local-reply and response-headers hooks before it returns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::missing_safety_doc
)]

use crate::abi::{
    EnvoyBuffer, EnvoyConfigPtr, EnvoyFilterPtr, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader,
    SchedulerPtr, ATTRIBUTE_XDS_CLUSTER_NAME, BUFFERED_REQUEST_BODY, BUFFERED_RESPONSE_BODY,
    CALLOUT_INIT_SUCCESS, METRICS_SUCCESS, RECEIVED_REQUEST_BODY, RECEIVED_RESPONSE_BODY,
    REQUEST_HEADERS,
};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Mutex;

thread_local! {
    /// What the module logged on this thread.
    pub static LOGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A local reply: status, headers, body.
pub type LocalReply = (u32, Vec<(String, String)>, Vec<u8>);

/// One stream as Envoy holds it.
#[derive(Default)]
pub struct FakeStream {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    /// [received, buffered] bodies of each side.
    pub request_body: [Vec<u8>; 2],
    pub response_body: [Vec<u8>; 2],
    /// The upstream cluster (`xds.cluster_name`), for upstream filters.
    pub cluster: Option<String>,
    /// Header names whose writes this Envoy refuses.
    pub refused_headers: Vec<String>,
    pub sent: Option<LocalReply>,
    pub metadata: Vec<(String, String, String)>,
    pub route_cache_cleared: u32,
    pub continued: u32,
    pub callouts: Vec<(u64, String, Vec<u8>)>,
    /// The module's filter for this stream, so that a local reply can run its hooks.
    pub module_filter: Option<*const c_void>,
    /// Scratch space for a value handed back (Envoy keeps it valid for the hook).
    pub scratch: Vec<u8>,
}

impl FakeStream {
    pub fn ptr(&mut self) -> EnvoyFilterPtr {
        (self as *mut FakeStream).cast()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn headers_mut(&mut self, header_type: u32) -> &mut Vec<(String, String)> {
        if header_type == REQUEST_HEADERS {
            &mut self.request_headers
        } else {
            &mut self.response_headers
        }
    }

    fn body_mut(&mut self, body_type: u32) -> &mut Vec<u8> {
        match body_type {
            RECEIVED_REQUEST_BODY => &mut self.request_body[0],
            BUFFERED_REQUEST_BODY => &mut self.request_body[1],
            RECEIVED_RESPONSE_BODY => &mut self.response_body[0],
            BUFFERED_RESPONSE_BODY => &mut self.response_body[1],
            other => panic!("body type {other}"),
        }
    }
}

/// One filter configuration as Envoy holds it: the metrics the module defined and recorded.
#[derive(Default)]
pub struct FakeConfig {
    pub defined: Mutex<Vec<(String, Vec<String>)>>,
    pub recorded: Mutex<Vec<(usize, Vec<String>, u64)>>,
    pub callouts: Mutex<Vec<String>>,
}

impl FakeConfig {
    pub fn ptr(&self) -> EnvoyConfigPtr {
        (self as *const FakeConfig).cast_mut().cast()
    }
}

unsafe fn stream<'a>(filter: EnvoyFilterPtr) -> &'a mut FakeStream {
    unsafe { &mut *filter.cast::<FakeStream>() }
}

unsafe fn config<'a>(config: EnvoyConfigPtr) -> &'a FakeConfig {
    unsafe { &*config.cast::<FakeConfig>() }
}

unsafe fn text(buffer: ModuleBuffer) -> String {
    if buffer.ptr.is_null() {
        return String::new();
    }
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.length) };
    String::from_utf8_lossy(bytes).into_owned()
}

fn lend(bytes: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: bytes.as_ptr(),
        length: bytes.len(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_log(_level: u32, message: ModuleBuffer) {
    let message = unsafe { text(message) };
    // A thread's locals may be gone (a worker's state dropped at thread exit may still log).
    let _ = LOGS.try_with(|logs| logs.borrow_mut().push(message));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: u32) -> bool {
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    filter: EnvoyFilterPtr,
    header_type: u32,
) -> usize {
    unsafe { stream(filter) }.headers_mut(header_type).len()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    filter: EnvoyFilterPtr,
    header_type: u32,
    result: *mut EnvoyHttpHeader,
) -> bool {
    let headers = unsafe { stream(filter) }.headers_mut(header_type);
    for (i, (key, value)) in headers.iter().enumerate() {
        let header = EnvoyHttpHeader {
            key: lend(key.as_bytes()),
            value: lend(value.as_bytes()),
        };
        unsafe { result.add(i).write(header) };
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    filter: EnvoyFilterPtr,
    header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> bool {
    let key = unsafe { text(key) };
    let headers = unsafe { stream(filter) }.headers_mut(header_type);
    let values: Vec<&(String, String)> = headers.iter().filter(|(k, _)| *k == key).collect();
    if !optional_size.is_null() {
        unsafe { optional_size.write(values.len()) };
    }
    match values.get(index) {
        Some((_, value)) => {
            unsafe { result.write(lend(value.as_bytes())) };
            true
        }
        None => false,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    filter: EnvoyFilterPtr,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let stream = unsafe { stream(filter) };
    let key = unsafe { text(key) };
    if stream.refused_headers.contains(&key) {
        return false;
    }
    let removing = value.ptr.is_null();
    let value = unsafe { text(value) };
    let headers = stream.headers_mut(header_type);
    headers.retain(|(k, _)| *k != key);
    if !removing {
        headers.push((key, value));
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_send_response(
    filter: EnvoyFilterPtr,
    status: u32,
    headers: *const ModuleHttpHeader,
    headers_size: usize,
    body: ModuleBuffer,
    details: ModuleBuffer,
) {
    let fake = unsafe { stream(filter) };
    assert!(fake.sent.is_none(), "a stream is answered at most once");
    let headers = (0..headers_size)
        .map(|i| unsafe {
            let header = headers.add(i).read();
            (text(header.key), text(header.value))
        })
        .collect();
    let body_text = unsafe { text(body) }.into_bytes();
    fake.sent = Some((status, headers, body_text));
    // As Envoy does: the local reply passes through the stream's own hooks before this returns.
    if let Some(module_filter) = fake.module_filter {
        crate::envoy_dynamic_module_on_http_filter_local_reply(
            filter,
            module_filter,
            status,
            EnvoyBuffer::EMPTY,
            false,
        );
        let _ = details;
        crate::envoy_dynamic_module_on_http_filter_response_headers(filter, module_filter, false);
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(
    filter: EnvoyFilterPtr,
    body_type: u32,
) -> usize {
    usize::from(!unsafe { stream(filter) }.body_mut(body_type).is_empty())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
    filter: EnvoyFilterPtr,
    body_type: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    let body = unsafe { stream(filter) }.body_mut(body_type);
    if !body.is_empty() {
        unsafe { result.write(lend(body)) };
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_size(
    filter: EnvoyFilterPtr,
    body_type: u32,
) -> usize {
    unsafe { stream(filter) }.body_mut(body_type).len()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_append_body(
    filter: EnvoyFilterPtr,
    body_type: u32,
    data: ModuleBuffer,
) -> bool {
    let data = unsafe { std::slice::from_raw_parts(data.ptr, data.length) }.to_vec();
    unsafe { stream(filter) }
        .body_mut(body_type)
        .extend_from_slice(&data);
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_drain_body(
    filter: EnvoyFilterPtr,
    body_type: u32,
    bytes: usize,
) -> bool {
    let body = unsafe { stream(filter) }.body_mut(body_type);
    let bytes = bytes.min(body.len());
    body.drain(..bytes);
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_received_buffered_request_body(
    _filter: EnvoyFilterPtr,
) -> bool {
    false
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_received_buffered_response_body(
    _filter: EnvoyFilterPtr,
) -> bool {
    false
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
    filter: EnvoyFilterPtr,
    ns: ModuleBuffer,
    key: ModuleBuffer,
    value: f64,
) {
    let entry = unsafe { (text(ns), text(key), value.to_string()) };
    unsafe { stream(filter) }.metadata.push(entry);
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
    filter: EnvoyFilterPtr,
    ns: ModuleBuffer,
    key: ModuleBuffer,
    value: ModuleBuffer,
) {
    let entry = unsafe { (text(ns), text(key), text(value)) };
    unsafe { stream(filter) }.metadata.push(entry);
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(
    filter: EnvoyFilterPtr,
) {
    unsafe { stream(filter) }.route_cache_cleared += 1;
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    filter: EnvoyFilterPtr,
    attribute: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    let fake = unsafe { stream(filter) };
    match (attribute, fake.cluster.clone()) {
        (ATTRIBUTE_XDS_CLUSTER_NAME, Some(cluster)) => {
            fake.scratch = cluster.into_bytes();
            unsafe { result.write(lend(&fake.scratch)) };
            true
        }
        _ => false,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(
    filter: EnvoyFilterPtr,
) {
    unsafe { stream(filter) }.continued += 1;
}

/// Schedulers are not driven by these tests: a distinct non-null pointer each.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_new(
    _filter: EnvoyFilterPtr,
) -> SchedulerPtr {
    Box::into_raw(Box::new(0u8)).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
    _scheduler: SchedulerPtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
    scheduler: SchedulerPtr,
) {
    drop(unsafe { Box::from_raw(scheduler.cast::<u8>()) });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _config: EnvoyConfigPtr,
) -> SchedulerPtr {
    Box::into_raw(Box::new(0u8)).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _scheduler: SchedulerPtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    scheduler: SchedulerPtr,
) {
    drop(unsafe { Box::from_raw(scheduler.cast::<u8>()) });
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    filter: EnvoyFilterPtr,
    callout_id: *mut u64,
    cluster: ModuleBuffer,
    _headers: *const ModuleHttpHeader,
    _headers_size: usize,
    body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    let fake = unsafe { stream(filter) };
    let id = fake.callouts.len() as u64 + 1;
    let body = unsafe { text(body) }.into_bytes();
    fake.callouts.push((id, unsafe { text(cluster) }, body));
    unsafe { callout_id.write(id) };
    CALLOUT_INIT_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    config_envoy: EnvoyConfigPtr,
    callout_id: *mut u64,
    cluster: ModuleBuffer,
    _headers: *const ModuleHttpHeader,
    _headers_size: usize,
    _body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    let mut callouts = unsafe { config(config_envoy) }.callouts.lock().unwrap();
    callouts.push(unsafe { text(cluster) });
    unsafe { callout_id.write(callouts.len() as u64) };
    CALLOUT_INIT_SUCCESS
}

unsafe fn define(
    config_envoy: EnvoyConfigPtr,
    name: ModuleBuffer,
    label_names: *const ModuleBuffer,
    label_names_length: usize,
    id: *mut usize,
) -> u32 {
    let labels = (0..label_names_length)
        .map(|i| unsafe { text(label_names.add(i).read()) })
        .collect();
    let mut defined = unsafe { config(config_envoy) }.defined.lock().unwrap();
    defined.push((unsafe { text(name) }, labels));
    unsafe { id.write(defined.len()) };
    METRICS_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    config_envoy: EnvoyConfigPtr,
    name: ModuleBuffer,
    label_names: *const ModuleBuffer,
    label_names_length: usize,
    id: *mut usize,
) -> u32 {
    unsafe { define(config_envoy, name, label_names, label_names_length, id) }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
    config_envoy: EnvoyConfigPtr,
    name: ModuleBuffer,
    label_names: *const ModuleBuffer,
    label_names_length: usize,
    id: *mut usize,
) -> u32 {
    unsafe { define(config_envoy, name, label_names, label_names_length, id) }
}

unsafe fn record(
    config_envoy: EnvoyConfigPtr,
    id: usize,
    label_values: *const ModuleBuffer,
    label_values_length: usize,
    value: u64,
) -> u32 {
    let labels = (0..label_values_length)
        .map(|i| unsafe { text(label_values.add(i).read()) })
        .collect();
    let fake = unsafe { config(config_envoy) };
    fake.recorded.lock().unwrap().push((id, labels, value));
    METRICS_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    config_envoy: EnvoyConfigPtr,
    id: usize,
    label_values: *const ModuleBuffer,
    label_values_length: usize,
    value: u64,
) -> u32 {
    unsafe { record(config_envoy, id, label_values, label_values_length, value) }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
    config_envoy: EnvoyConfigPtr,
    id: usize,
    label_values: *const ModuleBuffer,
    label_values_length: usize,
    value: u64,
) -> u32 {
    unsafe { record(config_envoy, id, label_values, label_values_length, value) }
}

/// Per-stream metrics are not used by the module: they record nothing here.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _filter: EnvoyFilterPtr,
    _id: usize,
    _label_values: *const ModuleBuffer,
    _label_values_length: usize,
    _value: u64,
) -> u32 {
    METRICS_SUCCESS
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
    _filter: EnvoyFilterPtr,
    _id: usize,
    _label_values: *const ModuleBuffer,
    _label_values_length: usize,
    _value: u64,
) -> u32 {
    METRICS_SUCCESS
}

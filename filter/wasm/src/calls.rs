//! The host calls the filter makes, straight over the proxy-wasm ABI, each answering every status
//! the host can return. The SDK's `hostcalls` wrappers panic on any status they do not expect
//! (Envoy answers `BadArgument` for a header map a phase cannot reach, for example), and a panic
//! kills the worker's VM for every later request; here such an answer is an `Err` the caller
//! handles. The SDK is kept for its dispatcher (contexts and hooks) and its types.

use proxy_wasm::types::{BufferType, MapType, MetricType, Status, StreamType};
use std::time::Duration;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_set_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_continue_stream(stream_type: StreamType) -> Status;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> Status;
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_record_metric(metric_id: u32, value: u64) -> Status;
    fn proxy_set_effective_context(context_id: u32) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
}

fn checked(status: Status) -> Result<(), Status> {
    match status {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}

/// Takes ownership of an answer the host wrote into memory it allocated through this module's
/// `proxy_on_memory_allocate` (exported by the SDK); null means an empty answer.
///
/// # Safety
/// `data`/`size` must be what a host call just returned with status Ok, taken only once.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: per this function's contract, `size` bytes at `data` were allocated by this
    // module's allocator and handed over to us.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Runs a host call that answers with bytes; the status for any but Ok.
fn answer(call: impl FnOnce(*mut *mut u8, *mut usize) -> Status) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    checked(call(&mut data, &mut size))?;
    // SAFETY: an Ok answer, taken once.
    Ok(unsafe { take_host_buffer(data, size) })
}

/// As [`answer`], where any status but Ok means "no value".
fn answered(call: impl FnOnce(*mut *mut u8, *mut usize) -> Status) -> Option<Vec<u8>> {
    answer(call).ok()
}

/// A whole header map, serialized as the host writes it (see `HeaderSnapshot::parse`).
pub fn header_pairs(map: MapType) -> Option<Vec<u8>> {
    // SAFETY: the host only writes the two out-parameters.
    answered(|data, size| unsafe { proxy_get_header_map_pairs(map, data, size) })
}

/// One header's value, as bytes (callers control them: no UTF-8 is assumed).
pub fn header_value(map: MapType, name: &str) -> Option<Vec<u8>> {
    // SAFETY: the key outlives the call; the host only writes the out-parameters.
    answered(|data, size| unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), data, size)
    })
}

/// Sets a header, or removes it (`None`).
pub fn set_header(map: MapType, name: &str, value: Option<&str>) -> Result<(), Status> {
    // SAFETY: the key and value outlive the call.
    checked(unsafe {
        match value {
            Some(value) => proxy_replace_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ),
            None => proxy_remove_header_map_value(map, name.as_ptr(), name.len()),
        }
    })
}

pub fn buffer(buffer: BufferType, start: usize, max_size: usize) -> Option<Vec<u8>> {
    // SAFETY: the host only writes the out-parameters.
    answered(|data, size| unsafe { proxy_get_buffer_bytes(buffer, start, max_size, data, size) })
}

pub fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), Status> {
    // SAFETY: `value` outlives the call.
    checked(unsafe { proxy_set_buffer_bytes(buffer, start, size, value.as_ptr(), value.len()) })
}

/// A property path as the host reads it: the parts separated by NULs.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let path = property_path(path);
    // SAFETY: the path outlives the call; the host only writes the out-parameters.
    answered(|data, size| unsafe { proxy_get_property(path.as_ptr(), path.len(), data, size) })
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = property_path(path);
    // SAFETY: the path and value outlive the call.
    checked(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its version.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    let mut version: u32 = 0;
    // SAFETY: the key outlives the call; the host only writes the out-parameters.
    let value = answered(|data, size| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut version)
    });
    match value {
        Some(value) => (Some(value), (version != 0).then_some(version)),
        None => (None, None),
    }
}

/// Writes a shared-data value if `version` is still current (`None`: whatever it is).
pub fn set_shared_data(key: &str, value: &[u8], version: Option<u32>) -> Result<(), Status> {
    // SAFETY: the key and value outlive the call.
    checked(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            version.unwrap_or(0),
        )
    })
}

/// The host's serialization of a header map: a count, the sizes, then each name and value
/// followed by a NUL.
fn serialize_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&size(headers.len()));
    for (name, value) in headers {
        out.extend_from_slice(&size(name.len()));
        out.extend_from_slice(&size(value.len()));
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Answers the stream itself.
pub fn send_local_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let headers = serialize_headers(headers);
    // SAFETY: every buffer outlives the call.
    checked(unsafe {
        proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn resume_request() -> Result<(), Status> {
    // SAFETY: a plain call.
    checked(unsafe { proxy_continue_stream(StreamType::HttpRequest) })
}

/// Calls one of Envoy's foreign functions (`clear_route_cache`) without arguments.
pub fn call_foreign_function(name: &str) -> Result<(), Status> {
    // SAFETY: the name outlives the call; an answer, if any, is taken and dropped.
    answer(|data, size| unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), std::ptr::null(), 0, data, size)
    })
    .map(drop)
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: the name outlives the call; the host only writes the id.
    checked(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: a plain call.
    checked(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: a plain call.
    checked(unsafe { proxy_record_metric(id, value) })
}

/// Makes later host calls act on `context_id` (a stream, or the root context).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: a plain call.
    checked(unsafe { proxy_set_effective_context(context_id) })
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: a plain call.
    checked(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Unix time in milliseconds (0 if the host cannot tell).
pub fn now_millis() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: the host only writes the out-parameter.
    match unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } {
        Status::Ok => nanos / 1_000_000,
        _ => 0,
    }
}

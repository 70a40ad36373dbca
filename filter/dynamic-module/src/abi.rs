//! The part of Envoy's dynamic-module ABI (`source/extensions/dynamic_modules/abi/abi.h`, ABI
//! "v0.2.0" in Envoy 1.40) this module uses, declared by hand: there is no SDK on crates.io.
//!
//! The event hooks Envoy calls are exported from `lib.rs`; the callbacks below are resolved from
//! the Envoy binary when it loads the module. C enums are `int`s; a struct of a pointer and a length
//! passed by value travels in two registers, exactly like the pointer and the length.
//! `e2e/tests/test_dynamic_module.py` checks that the pinned Envoy exports every symbol the built
//! module imports; the end-to-end tests exercise each of them.

#![allow(non_camel_case_types, dead_code)]

use std::ffi::c_void;

pub type EnvoyFilterPtr = *mut c_void;
pub type EnvoyConfigPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;

/// Bytes Envoy owns, valid until the current hook returns (or the next setter call).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// # Safety
    /// Envoy's contract: `ptr` points at `length` readable bytes for the current hook, or is null.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// Bytes this module owns, lent to Envoy for one call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    /// A null buffer: "no value" (a header set to it is removed).
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key: EnvoyBuffer,
    pub value: EnvoyBuffer,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key: ModuleBuffer,
    pub value: ModuleBuffer,
}

// envoy_dynamic_module_type_http_header_type
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;

// envoy_dynamic_module_type_http_body_type
pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;

// envoy_dynamic_module_type_on_http_filter_{request,response}_headers_status
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
// envoy_dynamic_module_type_on_http_filter_{request,response}_body_status
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_ITERATION_AND_BUFFER: u32 = 1;
// ..._trailers_status, ..._local_reply_status
pub const TRAILERS_CONTINUE: u32 = 0;
pub const TRAILERS_STOP_ITERATION: u32 = 1;
pub const LOCAL_REPLY_CONTINUE: u32 = 0;

// envoy_dynamic_module_type_log_level
pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

// envoy_dynamic_module_type_http_callout_init_result / _http_callout_result
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
pub const CALLOUT_SUCCESS: u32 = 0;

// envoy_dynamic_module_type_metrics_result
pub const METRICS_SUCCESS: u32 = 0;

/// envoy_dynamic_module_type_attribute_id: `xds.cluster_name`.
pub const ATTRIBUTE_XDS_CLUSTER_NAME: u32 = 57;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: EnvoyFilterPtr,
        header_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyFilterPtr,
        header_type: u32,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyFilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyFilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyFilterPtr,
        status: u32,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: EnvoyFilterPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyFilterPtr,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: EnvoyFilterPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: EnvoyFilterPtr,
        body_type: u32,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: EnvoyFilterPtr,
        body_type: u32,
        bytes: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: EnvoyFilterPtr,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(
        filter: EnvoyFilterPtr,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter: EnvoyFilterPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: f64,
    );
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: EnvoyFilterPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyFilterPtr);
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyFilterPtr,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyFilterPtr);

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: EnvoyFilterPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyConfigPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: SchedulerPtr,
    );
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: EnvoyFilterPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: EnvoyConfigPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyConfigPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyConfigPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyConfigPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: EnvoyConfigPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyFilterPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: EnvoyFilterPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

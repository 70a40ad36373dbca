//! The benchmark's native floor (configuration M): a dynamic module placed where the gateway's two
//! stages sit, which holds the headers until the whole body has arrived, as both stages must, and
//! does nothing else. What Envoy charges for that is the part of the native gateway's cost no
//! filter code can remove. It exports every HTTP-filter hook Envoy 1.40 looks up, as it must to load.

use std::ffi::{c_char, c_void};

type Ptr = *mut c_void;

/// Any non-null pointer: the module keeps no state.
const STATELESS: *const c_void = std::ptr::NonNull::<u8>::dangling()
    .as_ptr()
    .cast_const()
    .cast();

#[repr(C)]
pub struct Buffer {
    ptr: *const u8,
    length: usize,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config: Ptr,
    _name: Buffer,
    _value: Buffer,
) -> *const c_void {
    STATELESS
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: *const c_void,
    _filter: Ptr,
) -> *const c_void {
    STATELESS
}

/// Headers: StopIteration (1) until the body has come; body: StopIterationAndBuffer (1) until its end.
fn continue_at_end(end_of_stream: bool) -> u32 {
    u32::from(!end_of_stream)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter: Ptr,
    _module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    continue_at_end(end_of_stream)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter: Ptr,
    _module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    continue_at_end(end_of_stream)
}

/// The hooks that do nothing: every one returns Continue (0) where it returns anything.
macro_rules! continue_hooks {
    ($($name:ident($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name($(_: $arg),*) $(-> $ret)? {
                $( <$ret>::default() )?
            }
        )*
    };
}

continue_hooks! {
    envoy_dynamic_module_on_http_filter_config_destroy(*const c_void);
    envoy_dynamic_module_on_http_filter_destroy(*const c_void);
    envoy_dynamic_module_on_http_filter_request_trailers(Ptr, *const c_void) -> u32;
    envoy_dynamic_module_on_http_filter_response_headers(Ptr, *const c_void, bool) -> u32;
    envoy_dynamic_module_on_http_filter_response_body(Ptr, *const c_void, bool) -> u32;
    envoy_dynamic_module_on_http_filter_response_trailers(Ptr, *const c_void) -> u32;
    envoy_dynamic_module_on_http_filter_stream_complete(Ptr, *const c_void);
    envoy_dynamic_module_on_http_filter_local_reply(Ptr, *const c_void, u32, Buffer, bool) -> u32;
    envoy_dynamic_module_on_http_filter_scheduled(Ptr, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_per_route_config_destroy(*const c_void);
    envoy_dynamic_module_on_http_filter_http_callout_done(Ptr, *const c_void, u64, u32, *const c_void, usize, *const c_void, usize);
    envoy_dynamic_module_on_http_filter_http_stream_headers(Ptr, *const c_void, u64, *const c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(Ptr, *const c_void, u64, *const c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(Ptr, *const c_void, u64, *const c_void, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(Ptr, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(Ptr, *const c_void, u64, u32);
    envoy_dynamic_module_on_http_filter_config_scheduled(Ptr, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_config_http_callout_done(Ptr, *const c_void, u64, u32, *const c_void, usize, *const c_void, usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_headers(Ptr, *const c_void, u64, *const c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_config_http_stream_data(Ptr, *const c_void, u64, *const c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers(Ptr, *const c_void, u64, *const c_void, usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_complete(Ptr, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_config_http_stream_reset(Ptr, *const c_void, u64, u32);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(Ptr, *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(Ptr, *const c_void);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    _value: Buffer,
) -> *const c_void {
    std::ptr::null()
}

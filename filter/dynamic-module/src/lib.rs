//! The Envoy dynamic-module host: the gateway's core (`bedrock_gateway_core::stream`) as a native
//! shared object, `libbedrock_gateway.so`, loaded by Envoy's `DynamicModuleFilter`. The filter name
//! picks the stage, as the wasm host's root id does: `ai_gateway` (downstream routing),
//! `ai_gateway_backend` (upstream of each Bedrock cluster) and `ai_gateway_sts` (upstream of STS);
//! the filter configuration is the same plugin JSON.
//!
//! A panic here would abort Envoy itself, not one VM: every exported hook runs its body under
//! `catch_unwind` (the module is built with `panic = "unwind"`), and a stream whose hook panicked
//! is answered with a 500 in its caller's format and left alone afterwards.

mod abi;
mod credentials;
#[cfg(test)]
mod fake_envoy;
mod host;
mod metrics;
#[cfg(test)]
mod tests;

use abi::{EnvoyBuffer, EnvoyConfigPtr, EnvoyFilterPtr, EnvoyHttpHeader};
use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::errors::{ErrorKind, GatewayError};
use bedrock_gateway_core::headers::HeaderSnapshot;
use bedrock_gateway_core::stream::backend::{self, BackendStream, Settled, Worker};
use bedrock_gateway_core::stream::batch::PartAnswer;
use bedrock_gateway_core::stream::routing::RoutingStream;
use bedrock_gateway_core::stream::sts::StsStream;
use bedrock_gateway_core::stream::{format_for_path, reply_busy, Flow, Host, Side, Stage};
use credentials::{Fetcher, ProcessStore};
use host::NativeHost;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The ABI version Envoy 1.40 expects.
const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

thread_local! {
    /// This worker's signer (its cached keys); the broker is the process's (see `credentials`).
    static WORKER: RefCell<Worker> = RefCell::new(Worker::default());
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);
static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

struct FilterConfig {
    id: u64,
    stage: Stage,
    config: Arc<Config>,
    fetcher: Option<Fetcher>,
}

impl Drop for FilterConfig {
    fn drop(&mut self) {
        if self.stage == Stage::Routing {
            metrics::withdraw(self.id);
        }
    }
}

// The filter itself is boxed once per stream; boxing the largest variant would add an allocation.
#[allow(clippy::large_enum_variant)]
enum StageStream {
    Routing(RoutingStream),
    Backend(BackendStream),
    Sts(StsStream),
}

/// One stream's filter. Envoy calls some hooks from inside others of the same stream (a local
/// reply passes through this filter's own response hooks and the local-reply hook before
/// `send_json` returns), so the hooks only ever hold shared references to it, and each piece of
/// state they change is a cell of its own: the stream is borrowed by one hook at a time, and a
/// hook that finds it borrowed leaves it to the outer one.
struct Filter {
    id: u64,
    stream: RefCell<StageStream>,
    /// Why Envoy answered this stream itself (the local-reply hook), for the routing stage.
    local_reply_details: RefCell<Option<String>>,
    /// Parked for credentials at some point: the process's broker must forget it when it ends.
    parked: Cell<bool>,
    /// A hook panicked: the stream was answered and is not touched again.
    failed: Cell<bool>,
}

/// The `log` macros (here and in the core) write to Envoy's log, under its `dynamic_modules` logger.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // SAFETY: a plain query.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(envoy_level(metadata.level())) }
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let message = record.args().to_string();
            // SAFETY: the buffer outlives the call.
            unsafe {
                abi::envoy_dynamic_module_callback_log(
                    envoy_level(record.level()),
                    abi::ModuleBuffer::of(message.as_bytes()),
                )
            }
        }
    }

    fn flush(&self) {}
}

fn envoy_level(level: log::Level) -> u32 {
    match level {
        log::Level::Error => abi::LOG_ERROR,
        log::Level::Warn => abi::LOG_WARN,
        log::Level::Info => abi::LOG_INFO,
        log::Level::Debug | log::Level::Trace => abi::LOG_DEBUG,
    }
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Runs a hook's body; a panic becomes `fallback`.
fn guarded<R>(fallback: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

// ---- Loading ----------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    ABI_VERSION.as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyConfigPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: Envoy's buffers, valid for this hook.
        let (name, json) = unsafe { (name.as_slice(), config.as_slice()) };
        let Some(stage) = Stage::from_name(name) else {
            log::error!(
                "ai gateway: unknown filter_name {:?}",
                String::from_utf8_lossy(name)
            );
            return std::ptr::null();
        };
        let config = match Config::parse(json, &|key| std::env::var(key).ok()) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                log::error!("ai gateway: {error}");
                return std::ptr::null();
            }
        };
        let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let mut fetcher = None;
        match stage {
            Stage::Routing => metrics::publish(id, config_envoy, &config),
            Stage::Backend => {
                let providers = config.fetched_providers();
                fetcher = (!providers.is_empty()).then(|| Fetcher::start(config_envoy, providers));
            }
            Stage::Sts => {}
        }
        Box::into_raw(Box::new(FilterConfig {
            id,
            stage,
            config,
            fetcher,
        }))
        .cast::<c_void>()
        .cast_const()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded((), || {
        if !config.is_null() {
            // SAFETY: made by `config_new` with Box::into_raw; Envoy destroys it once.
            drop(unsafe { Box::from_raw(config.cast::<FilterConfig>().cast_mut()) });
        }
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: EnvoyConfigPtr,
    config: *const c_void,
    _event_id: u64,
) {
    guarded((), || {
        // SAFETY: our configuration, alive while Envoy calls its hooks.
        let Some(config) = (unsafe { config.cast::<FilterConfig>().as_ref() }) else {
            return;
        };
        if let Some(fetcher) = &config.fetcher {
            fetcher.on_tick();
        }
    });
}

/// # Safety
/// Envoy passes arrays of the given sizes (or null), valid for this hook.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: EnvoyConfigPtr,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    guarded((), || {
        // SAFETY: our configuration, alive while Envoy calls its hooks.
        let Some(fetcher) =
            unsafe { config.cast::<FilterConfig>().as_ref() }.and_then(|c| c.fetcher.as_ref())
        else {
            return;
        };
        // SAFETY: Envoy's arrays of the given sizes (or null), valid for this hook.
        let (headers, chunks) = unsafe {
            (
                slice_or_empty(headers, headers_size),
                slice_or_empty(body_chunks, body_chunks_size),
            )
        };
        // SAFETY: as above, for each chunk's bytes.
        let body: Vec<u8> = chunks
            .iter()
            .flat_map(|c| unsafe { c.as_slice() }.iter().copied())
            .collect();
        fetcher.on_callout_done(callout_id, result == abi::CALLOUT_SUCCESS, headers, &body);
    });
}

/// # Safety
/// `ptr` must be null or point at `len` valid values for the current hook.
unsafe fn slice_or_empty<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: per this function's contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

// ---- Streams ----------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: EnvoyFilterPtr,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: our configuration, which outlives its filters.
        let Some(filter_config) = (unsafe { config.cast::<FilterConfig>().as_ref() }) else {
            return std::ptr::null();
        };
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let shared = Some(Arc::clone(&filter_config.config));
        let stream = match filter_config.stage {
            Stage::Routing => StageStream::Routing(RoutingStream::new(shared)),
            Stage::Backend => StageStream::Backend(BackendStream::new(id, shared)),
            Stage::Sts => StageStream::Sts(StsStream::default()),
        };
        let filter = Filter {
            id,
            stream: RefCell::new(stream),
            local_reply_details: RefCell::new(None),
            parked: Cell::new(false),
            failed: Cell::new(false),
        };
        Box::into_raw(Box::new(filter))
            .cast::<c_void>()
            .cast_const()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    guarded((), || {
        if filter.is_null() {
            return;
        }
        // SAFETY: made by `filter_new` with Box::into_raw; Envoy destroys it once.
        let filter = unsafe { Box::from_raw(filter.cast::<Filter>().cast_mut()) };
        if let StageStream::Backend(mut stream) = filter.stream.into_inner() {
            // Envoy calls no other hook of an upstream filter whose stream was cut.
            stream.on_stream_complete(&mut host::DoneStream);
            let _ = WORKER.try_with(|worker| {
                worker
                    .try_borrow_mut()
                    .map(|mut worker| stream.on_destroy(&mut worker))
            });
        }
        if filter.parked.get() {
            credentials::forget(filter.id);
        }
    });
}

/// Runs one stream hook: finds the filter, borrows its stream, builds its host, and turns a panic
/// into a 500 in the caller's format (then `stop`) instead of aborting Envoy. A hook Envoy calls
/// while another of the stream's hooks holds the stream (from inside a local reply the outer hook
/// sent) continues: the outer hook is the one deciding about the stream.
fn stream_hook(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    stop: u32,
    hook: impl FnOnce(&Filter, &mut StageStream, &mut NativeHost<'_>) -> Flow,
    continue_status: u32,
) -> u32 {
    // SAFETY: our filter, alive until `destroy`, which Envoy defers past any hook of the stream;
    // only shared references to it are made (see `Filter`).
    let Some(filter) = (unsafe { filter.cast::<Filter>().as_ref() }) else {
        return continue_status;
    };
    if filter.failed.get() {
        return continue_status;
    }
    let Ok(mut stream) = filter.stream.try_borrow_mut() else {
        return continue_status;
    };
    let details = filter.local_reply_details.take();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut host = NativeHost {
            filter: filter_envoy,
            local_reply_details: details.as_deref(),
        };
        hook(filter, &mut stream, &mut host)
    }));
    drop(stream);
    match outcome {
        Ok(Flow::Continue) => continue_status,
        Ok(Flow::Pause) => stop,
        Err(_) => {
            filter.failed.set(true);
            answer_after_panic(filter_envoy);
            stop
        }
    }
}

fn answer_after_panic(filter_envoy: EnvoyFilterPtr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut host = NativeHost::new(filter_envoy);
        let path = host.header(Side::Request, ":path").unwrap_or_default();
        log::error!(
            "ai gateway: a filter hook panicked on {path}; the request is answered with a 500"
        );
        let error = GatewayError::new(
            500,
            ErrorKind::Upstream,
            "The gateway failed while handling this request.",
        );
        host.send_json(error.status, &error.to_json(format_for_path(&path)));
    }));
}

/// The backend stage's hooks borrow this worker's signer.
fn with_worker<'h>(
    host: &mut NativeHost<'h>,
    body: impl FnOnce(&mut NativeHost<'h>, &mut Worker) -> Flow,
) -> Flow {
    let outcome = WORKER.try_with(|worker| {
        worker
            .try_borrow_mut()
            .ok()
            .map(|mut worker| body(host, &mut worker))
    });
    match outcome {
        Ok(Some(flow)) => flow,
        _ => reply_busy(host),
    }
}

/// The backend stage's request phase; a request that must wait for credentials moves to the
/// process's broker, with a scheduler to resume it on this worker.
fn backend_request(
    filter: &Filter,
    stream: &mut BackendStream,
    host: &mut NativeHost<'_>,
    phase: impl FnOnce(&mut BackendStream, &mut NativeHost<'_>, &mut Worker) -> Flow,
) -> Flow {
    let mut parked = None;
    let flow = with_worker(host, |host, worker| {
        let flow = phase(stream, host, worker);
        parked = worker.broker.unpark(filter.id);
        flow
    });
    if let Some(parked) = parked {
        filter.parked.set(true);
        credentials::park(filter.id, host.filter, parked);
    }
    flow
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter,
        abi::HEADERS_STOP_ITERATION,
        |filter, stream, host| {
            #[cfg(feature = "fault-injection")]
            #[allow(clippy::panic)]
            if host.header(Side::Request, "x-ai-eg-test-panic").is_some() {
                panic!("fault injected by x-ai-eg-test-panic");
            }
            match stream {
                StageStream::Routing(stream) => stream.on_request_headers(host, end_of_stream),
                StageStream::Sts(stream) => stream.on_request_headers(host, end_of_stream),
                StageStream::Backend(stream) => {
                    backend_request(filter, stream, host, |stream, host, worker| {
                        stream.on_request_headers(host, worker, &ProcessStore, end_of_stream)
                    })
                }
            }
        },
        abi::HEADERS_CONTINUE,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter,
        abi::BODY_STOP_ITERATION_AND_BUFFER,
        |filter, stream, host| match stream {
            StageStream::Routing(stream) => stream.on_request_body(host, end_of_stream),
            StageStream::Sts(stream) => stream.on_request_body(host, end_of_stream),
            StageStream::Backend(stream) => {
                backend_request(filter, stream, host, |stream, host, worker| {
                    stream.on_request_body(host, worker, &ProcessStore, end_of_stream)
                })
            }
        },
        abi::BODY_CONTINUE,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter,
        abi::HEADERS_STOP_ITERATION,
        |_, stream, host| match stream {
            StageStream::Routing(stream) => stream.on_response_headers(host),
            StageStream::Backend(stream) => stream.on_response_headers(host, end_of_stream),
            StageStream::Sts(_) => Flow::Continue,
        },
        abi::HEADERS_CONTINUE,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter,
        abi::BODY_STOP_ITERATION_AND_BUFFER,
        |_, stream, host| match stream {
            StageStream::Routing(stream) => stream.on_response_body(host, end_of_stream),
            StageStream::Backend(stream) => stream.on_response_body(host, end_of_stream),
            StageStream::Sts(_) => Flow::Continue,
        },
        abi::BODY_CONTINUE,
    )
}

/// A waiting request's decision arrived on its worker: sign and resume it, or answer it.
///
/// # Safety
/// Envoy passes the stream's own filter pointer, on its worker, while it is alive.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    event_id: u64,
) {
    stream_hook(
        filter_envoy,
        filter,
        0,
        |filter, _, host| {
            let Some((parked, verdict)) = credentials::take_decision(event_id) else {
                return Flow::Continue;
            };
            let settled = with_worker(host, |host, worker| {
                match backend::settle(host, &parked, &verdict, &mut worker.signer) {
                    Settled::Resume => Flow::Continue,
                    Settled::Answered => Flow::Pause,
                }
            });
            filter.parked.set(false);
            credentials::forget(filter.id);
            if settled == Flow::Continue {
                // SAFETY: the stream's own filter pointer, on its worker, while it is alive.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy)
                };
            }
            Flow::Continue
        },
        0,
    );
}

/// Envoy is about to answer this stream itself: the routing stage rewrites such replies into the
/// caller's format, and needs to know why Envoy answered.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    _response_code: u32,
    details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    guarded(abi::LOCAL_REPLY_CONTINUE, || {
        // SAFETY: our filter, alive until `destroy`; Envoy's buffer, valid for this hook. Called
        // from inside another hook's `send_json` too: a shared reference, and a cell of its own.
        if let Some(filter) = unsafe { filter.cast::<Filter>().as_ref() } {
            if let Ok(mut slot) = filter.local_reply_details.try_borrow_mut() {
                *slot = Some(String::from_utf8_lossy(unsafe { details.as_slice() }).into_owned());
            }
        }
        abi::LOCAL_REPLY_CONTINUE
    })
}

/// Trailers after a request body the stages have not seen end: each stage refuses the request
/// (see `stream::trailers_refused`).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
) -> u32 {
    stream_hook(
        filter_envoy,
        filter,
        abi::TRAILERS_STOP_ITERATION,
        |_, stream, host| match stream {
            StageStream::Routing(stream) => stream.on_request_trailers(host),
            StageStream::Backend(stream) => stream.on_request_trailers(host),
            StageStream::Sts(_) => Flow::Continue,
        },
        abi::TRAILERS_CONTINUE,
    )
}

// ---- Hooks this module does not use, which Envoy requires --------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: *const c_void,
) {
}

/// One input of the stream's embeddings batch came back.
///
/// # Safety
/// Envoy passes the stream's own filter pointers and arrays of the given sizes (or null), valid
/// for this hook.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: EnvoyFilterPtr,
    filter: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    stream_hook(
        filter_envoy,
        filter,
        0,
        |_, stream, host| {
            let StageStream::Backend(stream) = stream else {
                return Flow::Continue;
            };
            // SAFETY: Envoy's arrays of the given sizes (or null), valid for this hook.
            let (headers, chunks) = unsafe {
                (
                    slice_or_empty(headers, headers_size),
                    slice_or_empty(body_chunks, body_chunks_size),
                )
            };
            // A call that failed has no response, so no status: its headers are not read.
            let headers = if result == abi::CALLOUT_SUCCESS {
                // SAFETY: as above, for each header's bytes.
                HeaderSnapshot::from_pairs(
                    headers
                        .iter()
                        .map(|h| unsafe { (h.key.as_slice(), h.value.as_slice()) }),
                )
            } else {
                HeaderSnapshot::default()
            };
            // SAFETY: as above, for each chunk's bytes.
            let body: Vec<u8> = chunks
                .iter()
                .flat_map(|c| unsafe { c.as_slice() }.iter().copied())
                .collect();
            let answer = PartAnswer::read(&headers, &body);
            stream.on_call_answer(host, callout_id, &answer)
        },
        0,
    );
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _config_envoy: EnvoyConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _config_envoy: EnvoyConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy: EnvoyConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _config_envoy: EnvoyConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _config_envoy: EnvoyConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: EnvoyFilterPtr,
    _filter: *const c_void,
) {
}

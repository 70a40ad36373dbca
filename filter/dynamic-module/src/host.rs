//! The core's [`Host`] over Envoy's dynamic-module callbacks, for the stream a hook runs for.

use crate::abi::{self, EnvoyBuffer, EnvoyFilterPtr, ModuleBuffer, ModuleHttpHeader};
use crate::metrics;
use bedrock_gateway_core::aws::credentials::HttpCall;
use bedrock_gateway_core::headers::HeaderSnapshot;
use bedrock_gateway_core::report::{MetricLabels, Sample, SpanAttributes, SpanValue, UsageSummary};
use bedrock_gateway_core::stream::hand_over::HandOver;
use bedrock_gateway_core::stream::HostCallFailed;
use bedrock_gateway_core::stream::{Host, Recorder, Side};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where access logs and rate limits read a request's usage (`usage`, `total_tokens`, `cost`):
/// dynamic metadata, Envoy AI Gateway's place for it, which only a native filter can write. The
/// renderer points the access log and rate limits here for this host (the `.wasm` publishes the
/// same figures as filter state instead).
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

pub struct NativeHost<'a> {
    pub filter: EnvoyFilterPtr,
    /// Why Envoy answered this stream itself, from the local-reply hook.
    pub local_reply_details: Option<&'a str>,
}

impl<'a> NativeHost<'a> {
    pub fn new(filter: EnvoyFilterPtr) -> Self {
        NativeHost {
            filter,
            local_reply_details: None,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header_type(side: Side) -> u32 {
    match side {
        Side::Request => abi::REQUEST_HEADERS,
        Side::Response => abi::RESPONSE_HEADERS,
    }
}

/// (received, buffered) body types of a side.
fn body_types(side: Side) -> (u32, u32) {
    match side {
        Side::Request => (abi::RECEIVED_REQUEST_BODY, abi::BUFFERED_REQUEST_BODY),
        Side::Response => (abi::RECEIVED_RESPONSE_BODY, abi::BUFFERED_RESPONSE_BODY),
    }
}

impl NativeHost<'_> {
    /// Whether the body this hook received is the one buffered so far (a filter before this one
    /// held it and resumed), so that it is not read twice.
    fn received_is_buffered(&self, side: Side) -> bool {
        // SAFETY: the filter pointer is valid for the current hook.
        unsafe {
            match side {
                Side::Request => {
                    abi::envoy_dynamic_module_callback_http_received_buffered_request_body(
                        self.filter,
                    )
                }
                Side::Response => {
                    abi::envoy_dynamic_module_callback_http_received_buffered_response_body(
                        self.filter,
                    )
                }
            }
        }
    }

    fn append_chunks(&self, body_type: u32, out: &mut Vec<u8>) {
        // SAFETY: the filter pointer is valid for the current hook; the vector is sized as Envoy asked.
        unsafe {
            let count = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(
                self.filter,
                body_type,
            );
            if count == 0 {
                return;
            }
            let mut chunks = vec![EnvoyBuffer::EMPTY; count];
            if !abi::envoy_dynamic_module_callback_http_get_body_chunks(
                self.filter,
                body_type,
                chunks.as_mut_ptr(),
            ) {
                return;
            }
            out.reserve(chunks.iter().map(|chunk| chunk.length).sum());
            for chunk in &chunks {
                out.extend_from_slice(chunk.as_slice());
            }
        }
    }
}

/// A stream Envoy is done with (its `destroy` hook gets no filter pointer): metrics and the
/// hand-over, which need none.
pub struct DoneStream;

impl Recorder for DoneStream {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn record_metric(&mut self, labels: &MetricLabels, sample: Sample) {
        metrics::record(labels, sample);
    }

    fn hand_over(&self) -> Rc<HandOver> {
        HAND_OVER.with(Rc::clone)
    }
}

/// Counting needs nothing of the stream: a live one records as a finished one does.
impl Recorder for NativeHost<'_> {
    fn now_ms(&self) -> u64 {
        DoneStream.now_ms()
    }

    fn record_metric(&mut self, labels: &MetricLabels, sample: Sample) {
        DoneStream.record_metric(labels, sample);
    }

    fn hand_over(&self) -> Rc<HandOver> {
        DoneStream.hand_over()
    }
}

impl Host for NativeHost<'_> {
    fn headers(&self, side: Side) -> HeaderSnapshot {
        // SAFETY: the filter pointer is valid for the current hook; the vector is sized as Envoy
        // asked, and the buffers it returns are read before this hook changes any header.
        unsafe {
            let count = abi::envoy_dynamic_module_callback_http_get_headers_size(
                self.filter,
                header_type(side),
            );
            let empty = abi::EnvoyHttpHeader {
                key: EnvoyBuffer::EMPTY,
                value: EnvoyBuffer::EMPTY,
            };
            let mut headers = vec![empty; count];
            if count == 0
                || !abi::envoy_dynamic_module_callback_http_get_headers(
                    self.filter,
                    header_type(side),
                    headers.as_mut_ptr(),
                )
            {
                return HeaderSnapshot::default();
            }
            HeaderSnapshot::from_pairs(
                headers
                    .iter()
                    .map(|h| (h.key.as_slice(), h.value.as_slice())),
            )
        }
    }

    fn header(&self, side: Side, name: &str) -> Option<String> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the filter pointer is valid for the current hook; `value` is read at once.
        unsafe {
            let found = abi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                header_type(side),
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                0,
                std::ptr::null_mut(),
            );
            if !found || value.ptr.is_null() {
                return None;
            }
            Some(String::from_utf8_lossy(value.as_slice()).into_owned())
        }
    }

    fn set_header(
        &mut self,
        side: Side,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostCallFailed> {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the filter pointer is valid for the current hook; the buffers outlive the call.
        let set = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.filter,
                header_type(side),
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
        if set {
            Ok(())
        } else {
            Err(HostCallFailed(format!(
                "Envoy refused to set the {side:?} header {name}"
            )))
        }
    }

    fn body(&mut self, side: Side) -> Vec<u8> {
        let (received, buffered) = body_types(side);
        let both = !self.received_is_buffered(side);
        // SAFETY: the filter pointer is valid for the current hook.
        let size_of = |body_type| unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(self.filter, body_type)
        };
        // Sized once for both parts: a large buffered body is not copied again to fit the rest.
        let size = size_of(received) + if both { size_of(buffered) } else { 0 };
        let mut body = Vec::with_capacity(size);
        if both {
            self.append_chunks(buffered, &mut body);
        }
        self.append_chunks(received, &mut body);
        body
    }

    fn replace_body(&mut self, side: Side, value: &[u8]) -> Result<(), HostCallFailed> {
        let (received, buffered) = body_types(side);
        // SAFETY: the filter pointer is valid for the current hook; `value` outlives the call.
        unsafe {
            for body_type in [buffered, received] {
                let size =
                    abi::envoy_dynamic_module_callback_http_get_body_size(self.filter, body_type);
                if size > 0 {
                    abi::envoy_dynamic_module_callback_http_drain_body(
                        self.filter,
                        body_type,
                        size,
                    );
                }
            }
            if !value.is_empty()
                && !abi::envoy_dynamic_module_callback_http_append_body(
                    self.filter,
                    received,
                    ModuleBuffer::of(value),
                )
            {
                return Err(HostCallFailed(format!(
                    "Envoy refused to replace the {side:?} body"
                )));
            }
        }
        Ok(())
    }

    fn send_json(&mut self, status: u16, body: &[u8]) {
        let headers = [ModuleHttpHeader {
            key: ModuleBuffer::of(b"content-type"),
            value: ModuleBuffer::of(b"application/json"),
        }];
        // SAFETY: the filter pointer is valid for the current hook; every buffer outlives the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"ai_gateway"),
            );
        }
    }

    fn clear_route_cache(&mut self) {
        // SAFETY: the filter pointer is valid for the current hook.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter) }
    }

    fn cluster_name(&self) -> Option<String> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the filter pointer is valid for the current hook; `value` is read at once.
        unsafe {
            if !abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                abi::ATTRIBUTE_XDS_CLUSTER_NAME,
                &mut value,
            ) {
                return None;
            }
            Some(String::from_utf8_lossy(value.as_slice()).into_owned())
        }
    }

    fn response_code_details(&self) -> Option<String> {
        self.local_reply_details.map(str::to_owned)
    }

    fn record_usage(&mut self, summary: &UsageSummary) {
        let namespace = ModuleBuffer::of(METADATA_NAMESPACE.as_bytes());
        // SAFETY: the filter pointer is valid for the current hook; the buffers outlive each call.
        // Token counts up to 2^53 are exact as doubles.
        #[allow(clippy::cast_precision_loss)]
        unsafe {
            // Each write costs Envoy about 1,800 instructions (a protobuf Struct): only what the
            // access log and the rate limits read.
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.filter,
                namespace,
                ModuleBuffer::of(b"usage"),
                ModuleBuffer::of(summary.json.as_bytes()),
            );
            // Each `llmRequestCosts` key, where AI Gateway publishes it (a rate limit's cost).
            for (key, value) in &summary.costs {
                abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                    self.filter,
                    namespace,
                    ModuleBuffer::of(key.as_bytes()),
                    *value as f64,
                );
            }
            // The span's GenAI attributes, for the tracer's custom tags.
            for (key, value) in summary.span.iter().flat_map(SpanAttributes::entries) {
                let key = ModuleBuffer::of(key.as_bytes());
                match value {
                    SpanValue::Number(n) => {
                        abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                            self.filter,
                            namespace,
                            key,
                            n as f64,
                        );
                    }
                    SpanValue::Text(text) => {
                        abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                            self.filter,
                            namespace,
                            key,
                            ModuleBuffer::of(text.as_bytes()),
                        );
                    }
                }
            }
        }
    }

    /// Envoy answers through `on_http_filter_http_callout_done` of this stream's filter.
    fn dispatch_call(&mut self, call: &HttpCall, timeout_ms: u64) -> Option<u64> {
        let headers: Vec<ModuleHttpHeader> = call
            .headers
            .iter()
            .map(|(name, value)| ModuleHttpHeader {
                key: ModuleBuffer::of(name.as_bytes()),
                value: ModuleBuffer::of(value.as_bytes()),
            })
            .collect();
        let body = call
            .body
            .as_deref()
            .map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        let mut callout_id = 0u64;
        // SAFETY: the filter pointer is valid for the current hook; every buffer outlives the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.filter,
                &mut callout_id,
                ModuleBuffer::of(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                body,
                timeout_ms,
            )
        };
        if result == abi::CALLOUT_INIT_SUCCESS {
            Some(callout_id)
        } else {
            log::warn!(
                "ai gateway: cannot call the cluster {:?} ({result})",
                call.cluster
            );
            None
        }
    }
}

thread_local! {
    /// Each worker thread's hand-over between the stages: Envoy runs a request's downstream and
    /// upstream filters on the worker thread of the downstream connection.
    static HAND_OVER: Rc<HandOver> = Rc::default();
}

//! The downstream stage: picks the route from the body's `model`.
//!
//! Envoy re-picks the route lazily, when the router runs, so this stage cannot know the backend
//! itself; it also turns Envoy's own replies ("no route for this model", "body too large") into
//! errors in the caller's API format, and hands the backend stage's usage summary to access logs.

use super::{
    log_response_edit, new_stream_key, reply_with_error, request_not_rewritten, send_json,
    strip_caller_credentials, trailers_refused, Flow, Host, HostCallFailed, Side,
    STREAM_KEY_HEADER,
};
use crate::config::Config;
use crate::errors::GatewayError;
use crate::gateway::{self, Endpoint, MODEL_HEADER};
use crate::headers::HeaderSnapshot;
use std::sync::Arc;

pub struct RoutingStream {
    config: Option<Arc<Config>>,
    endpoint: Option<Endpoint>,
    requested_model: Option<String>,
    /// This request's key ([`STREAM_KEY_HEADER`]), under which the backend stage leaves the usage
    /// summary and the failover's first try.
    stream_key: Option<String>,
    /// The caller-format body replacing an Envoy local reply (no route, body too large, ...).
    replacement: Option<Vec<u8>>,
    /// The worker's count of summaries left when this stage last looked for its own.
    summaries_seen: u64,
}

impl RoutingStream {
    pub fn new(config: Option<Arc<Config>>) -> Self {
        Self {
            config,
            endpoint: None,
            requested_model: None,
            stream_key: None,
            replacement: None,
            summaries_seen: u64::MAX,
        }
    }

    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        let headers = host.headers(Side::Request);
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let models = self
            .config
            .as_ref()
            .map_or(&[][..], |c| c.models.as_slice());
        if let Some(answer) = gateway::answer_locally(&method, &path, models) {
            return send_json(host, answer.status, &answer.body);
        }
        let endpoint = match Endpoint::classify(&method, &path) {
            None => {
                if let Some(error) = gateway::unserved_path(&method, &path) {
                    return reply_with_error(host, &error, super::format_for_path(&path));
                }
                // Only the gateway's own endpoints may reach a Bedrock cluster: a caller's own
                // routing header on any other path must not select one.
                if headers.contains(MODEL_HEADER) {
                    if let Err(failed) = host.set_header(Side::Request, MODEL_HEADER, None) {
                        let error = request_not_rewritten(&failed);
                        return reply_with_error(host, &error, super::format_for_path(&path));
                    }
                    host.clear_route_cache();
                }
                return Flow::Continue;
            }
            Some(Ok(endpoint)) => endpoint,
            Some(Err(error)) => {
                return reply_with_error(host, &error, super::format_for_path(&path))
            }
        };
        self.endpoint = Some(endpoint);
        if let Some(error) = headers
            .get("content-type")
            .and_then(|c| gateway::check_content_type(&c).err())
        {
            return reply_with_error(host, &error, endpoint.format());
        }
        if let Some(error) = headers
            .get("content-encoding")
            .and_then(|e| gateway::check_content_encoding(&e).err())
        {
            return reply_with_error(host, &error, endpoint.format());
        }
        match self.keep_credentials_from_aws(host, &headers) {
            Ok(stream_key) => self.stream_key = Some(stream_key),
            Err(failed) => {
                return reply_with_error(host, &request_not_rewritten(&failed), endpoint.format())
            }
        }
        if let Endpoint::Bedrock(_) = endpoint {
            // Bedrock's own API names the model in the path: the route is known without the body.
            return match gateway::bedrock_path_model(&path) {
                Some(Ok(model)) => {
                    if let Err(failed) = host.set_header(Side::Request, MODEL_HEADER, Some(&model))
                    {
                        let error = request_not_rewritten(&failed);
                        return reply_with_error(host, &error, endpoint.format());
                    }
                    host.clear_route_cache();
                    self.requested_model = Some(model);
                    Flow::Continue
                }
                Some(Err(error)) => reply_with_error(host, &error, endpoint.format()),
                // Classified as Bedrock's API, so its path names a model; never route without one.
                None => reply_with_error(
                    host,
                    &GatewayError::invalid_request("The path names no model."),
                    endpoint.format(),
                ),
            };
        }
        if end_of_stream {
            let error =
                GatewayError::invalid_request("The request body is empty; expected a JSON object.");
            return reply_with_error(host, &error, endpoint.format());
        }
        // Hold the headers until the body shows which model, and so which route, it is for.
        Flow::Pause
    }

    pub fn on_request_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        let Some(endpoint) = self.endpoint.filter(|e| !matches!(e, Endpoint::Bedrock(_))) else {
            return Flow::Continue;
        };
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = host.body(Side::Request);
        let model = match gateway::requested_model(&body) {
            Ok(model) => model,
            Err(error) => return reply_with_error(host, &error, endpoint.format()),
        };
        if let Err(failed) = host.set_header(Side::Request, MODEL_HEADER, Some(&model)) {
            return reply_with_error(host, &request_not_rewritten(&failed), endpoint.format());
        }
        host.clear_route_cache();
        self.requested_model = Some(model.into_owned());
        Flow::Continue
    }

    /// Removes what a caller must not send on (its credentials, or with callers authenticated by
    /// Envoy the headers that name them) and writes the stream key; the key, or the edit refused.
    fn keep_credentials_from_aws(
        &self,
        host: &mut impl Host,
        headers: &HeaderSnapshot,
    ) -> Result<String, HostCallFailed> {
        match self.config.as_deref().filter(|c| c.caller_header.is_some()) {
            // Envoy's authentication filters run next and read the caller's key or token; the
            // headers naming the caller and its claims are theirs to write, never the caller's.
            Some(config) => {
                for name in config.caller_header.iter().chain(&config.identity_headers) {
                    if headers.contains(name) {
                        host.set_header(Side::Request, name, None)?;
                    }
                }
            }
            None => strip_caller_credentials(
                host,
                headers,
                self.config.as_ref().map_or(&[][..], |c| &c.key_headers),
            )?,
        }
        let stream_key = new_stream_key();
        host.set_header(Side::Request, STREAM_KEY_HEADER, Some(&stream_key))?;
        Ok(stream_key)
    }

    /// Trailers end the request after its body went on: refused (see [`trailers_refused`]).
    pub fn on_request_trailers(&mut self, host: &mut impl Host) -> Flow {
        match self.endpoint {
            Some(endpoint) => reply_with_error(host, &trailers_refused(), endpoint.format()),
            None => Flow::Continue,
        }
    }

    pub fn on_response_headers(&mut self, host: &mut impl Host) -> Flow {
        let Some(endpoint) = self.endpoint else {
            return Flow::Continue;
        };
        // Replies Envoy makes itself (no route, body over the buffer limit, Bedrock unreachable)
        // are plain text; callers of the gateway's endpoints get their API's error format.
        let status = host
            .header(Side::Response, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status < 400 {
            // Successes were translated by the backend stage; the lookup below costs a host call.
            return Flow::Continue;
        }
        let details = host.response_code_details().unwrap_or_default();
        let is_json = host
            .header(Side::Response, "content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        let Some(error) =
            gateway::local_reply_error(&details, status, is_json, self.requested_model.as_deref())
        else {
            return Flow::Continue;
        };
        let status = error.status.to_string();
        log_response_edit(
            host.set_header(Side::Response, ":status", Some(&status))
                .and_then(|()| {
                    host.set_header(Side::Response, "content-type", Some("application/json"))
                })
                .and_then(|()| host.set_header(Side::Response, "content-length", None)),
        );
        self.replacement = Some(error.to_json(endpoint.format()));
        Flow::Continue
    }

    /// Publishes the usage summary the backend stage (an upstream filter, on this worker) left
    /// under the key, where access logs and the budgets' charge read it, as soon as it is left: a
    /// running stream's usage so far, then its end's, which a caller hanging up at the last event
    /// may leave before Bedrock's body ends.
    fn publish_usage(&mut self, host: &mut impl Host, end_of_stream: bool) {
        let Some(key) = self.stream_key.as_deref() else {
            return;
        };
        let hand_over = host.hand_over();
        let left = hand_over.summaries_left();
        let summary = if end_of_stream {
            hand_over.finish(key)
        } else if left != self.summaries_seen {
            hand_over.take_summary(key)
        } else {
            None
        };
        self.summaries_seen = left;
        if end_of_stream {
            self.stream_key = None;
        }
        if let Some(summary) = summary {
            host.record_usage(&summary);
        }
    }

    pub fn on_response_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        if self.endpoint.is_some() {
            self.publish_usage(host, end_of_stream);
        }
        let Some(replacement) = self.replacement.as_ref() else {
            return Flow::Continue;
        };
        if !end_of_stream {
            return Flow::Pause;
        }
        log_response_edit(host.replace_body(Side::Response, replacement));
        Flow::Continue
    }
}

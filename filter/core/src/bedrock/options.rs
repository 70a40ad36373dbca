//! Bedrock's own request options that a backend adds to every request it serves: a guardrail,
//! latency-optimized inference, a service tier and request metadata (for invocation logs and
//! cost allocation). Converse takes them in the body (`guardrailConfig`, `performanceConfig`,
//! `serviceTier`, `requestMetadata`); InvokeModel takes them as `X-Amzn-Bedrock-*` headers.
//! A caller's OpenAI `service_tier` picks the tier for its own request.

use crate::errors::GatewayError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A backend's options, as the plugin configuration states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BedrockOptions {
    pub guardrail: Option<Guardrail>,
    /// `standard` or `optimized` (latency-optimized inference).
    pub latency: Option<String>,
    /// `priority`, `default`, `flex` or `reserved`.
    pub service_tier: Option<String>,
    pub request_metadata: BTreeMap<String, String>,
}

/// `{"identifier", "version", "trace"?, "stream_processing_mode"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub identifier: String,
    pub version: String,
    /// `enabled`, `disabled` or `enabled_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Streams only: `sync` (each chunk checked before it is sent) or `async`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_processing_mode: Option<String>,
}

const LATENCIES: &[&str] = &["standard", "optimized"];
const SERVICE_TIERS: &[&str] = &["priority", "default", "flex", "reserved"];
const TRACES: &[&str] = &["enabled", "disabled", "enabled_full"];
const STREAM_MODES: &[&str] = &["sync", "async"];

fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), String> {
    match value {
        Some(value) if !allowed.contains(&value) => Err(format!(
            "{field}: {value:?} is not one of {}",
            allowed.join(", ")
        )),
        _ => Ok(()),
    }
}

impl BedrockOptions {
    /// Checks what Bedrock would refuse, so that a wrong value fails at start-up, not per request.
    pub fn new(
        guardrail: Option<Guardrail>,
        latency: Option<String>,
        service_tier: Option<String>,
        request_metadata: BTreeMap<String, String>,
    ) -> Result<BedrockOptions, String> {
        if let Some(guardrail) = &guardrail {
            if guardrail.identifier.is_empty()
                || guardrail.identifier.len() > 2048
                || guardrail.version.is_empty()
            {
                return Err(
                    "guardrail: identifier and version must be set (version is a number or DRAFT)"
                        .into(),
                );
            }
            let numbered = guardrail.version.bytes().all(|b| b.is_ascii_digit())
                && !guardrail.version.starts_with('0');
            if !numbered && guardrail.version != "DRAFT" {
                return Err(format!(
                    "guardrail.version: {:?} is not a version number or DRAFT",
                    guardrail.version
                ));
            }
            one_of("guardrail.trace", guardrail.trace.as_deref(), TRACES)?;
            one_of(
                "guardrail.stream_processing_mode",
                guardrail.stream_processing_mode.as_deref(),
                STREAM_MODES,
            )?;
        }
        one_of("latency", latency.as_deref(), LATENCIES)?;
        one_of("service_tier", service_tier.as_deref(), SERVICE_TIERS)?;
        if request_metadata.len() > 16 {
            return Err("request_metadata: Bedrock takes at most 16 entries".into());
        }
        if let Some((key, value)) = request_metadata
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 256)
        {
            return Err(format!("request_metadata: {key:?}: {value:?}: keys take 1 to 256 characters, values up to 256"));
        }
        Ok(BedrockOptions {
            guardrail,
            latency,
            service_tier,
            request_metadata,
        })
    }

    /// The Converse members these options add, with the caller's tier where it chose one; they
    /// borrow from the configuration, so a request copies nothing.
    pub fn for_converse<'a>(
        &'a self,
        stream: bool,
        caller_tier: Option<&'a str>,
    ) -> ConverseOptions<'a> {
        ConverseOptions {
            guardrail_config: self.guardrail.as_ref().map(|g| GuardrailConfig {
                guardrail_identifier: &g.identifier,
                guardrail_version: &g.version,
                trace: g.trace.as_deref(),
                stream_processing_mode: g.stream_processing_mode.as_deref().filter(|_| stream),
            }),
            performance_config: self
                .latency
                .as_deref()
                .map(|latency| PerformanceConfig { latency }),
            service_tier: caller_tier
                .or(self.service_tier.as_deref())
                .map(|kind| ServiceTier { kind }),
            request_metadata: (!self.request_metadata.is_empty()).then_some(&self.request_metadata),
        }
    }

    /// The same options as InvokeModel's headers.
    pub fn invoke_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(guardrail) = &self.guardrail {
            headers.push((
                "x-amzn-bedrock-guardrailidentifier",
                guardrail.identifier.clone(),
            ));
            headers.push(("x-amzn-bedrock-guardrailversion", guardrail.version.clone()));
            if let Some(trace) = &guardrail.trace {
                headers.push(("x-amzn-bedrock-trace", trace.to_uppercase()));
            }
        }
        if let Some(latency) = &self.latency {
            headers.push(("x-amzn-bedrock-performanceconfig-latency", latency.clone()));
        }
        if let Some(tier) = &self.service_tier {
            headers.push((SERVICE_TIER_HEADER, tier.clone()));
        }
        if !self.request_metadata.is_empty() {
            if let Ok(json) = serde_json::to_string(&self.request_metadata) {
                headers.push(("x-amzn-bedrock-request-metadata", json));
            }
        }
        headers
    }
}

impl BedrockOptions {
    pub fn is_empty(&self) -> bool {
        *self == BedrockOptions::default()
    }

    /// A Converse body a caller of Bedrock's own API wrote, with this backend's options applied as
    /// on every other endpoint: its guardrail, latency and request metadata replace the caller's
    /// (a caller cannot swap or drop the operator's guardrail), and the caller's `serviceTier`
    /// stays its own choice, as an OpenAI caller's `service_tier` does. `None`: nothing to change.
    pub fn apply_to_converse(
        &self,
        body: &[u8],
        stream: bool,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut request: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|_| GatewayError::invalid_request("The request body is not a JSON object."))?;
        let caller_tier = request
            .get("serviceTier")
            .and_then(|tier| tier.get("type"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let options = serde_json::to_value(self.for_converse(stream, caller_tier.as_deref()))
            .map_err(|e| GatewayError::invalid_request(format!("cannot apply options: {e}")))?;
        if let serde_json::Value::Object(members) = options {
            request.extend(members);
        }
        serde_json::to_vec(&request)
            .map(Some)
            .map_err(|e| GatewayError::invalid_request(format!("cannot apply options: {e}")))
    }

    /// InvokeModel's option headers for a caller of Bedrock's own API: the caller's own service
    /// tier header, if it sent one, is left as its choice.
    pub fn invoke_headers_for(&self, caller_tier: Option<&str>) -> Vec<(&'static str, String)> {
        let mut headers = self.invoke_headers();
        if caller_tier.is_some() {
            headers.retain(|(name, _)| *name != SERVICE_TIER_HEADER);
        }
        headers
    }
}

/// InvokeModel's service tier header.
pub const SERVICE_TIER_HEADER: &str = "x-amzn-bedrock-service-tier";

/// OpenAI's `service_tier` as Bedrock's: `auto` leaves the backend's choice; `default`, `flex` and
/// `priority` are Bedrock's tiers of the same names; anything else is refused rather than ignored.
pub fn caller_service_tier(tier: Option<&str>) -> Result<Option<&str>, GatewayError> {
    match tier {
        None | Some("auto") => Ok(None),
        Some(tier @ ("default" | "flex" | "priority")) => Ok(Some(tier)),
        Some(other) => Err(GatewayError::invalid_request(format!(
            "service_tier: {other:?} is not offered by Bedrock; use auto, default, flex or priority."
        ))),
    }
}

/// Converse's members for the options, flattened into the request body.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConverseOptions<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail_config: Option<GuardrailConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_config: Option<PerformanceConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_metadata: Option<&'a BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailConfig<'a> {
    pub guardrail_identifier: &'a str,
    pub guardrail_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_processing_mode: Option<&'a str>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PerformanceConfig<'a> {
    pub latency: &'a str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceTier<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guardrail() -> Guardrail {
        Guardrail {
            identifier: "gr-1".into(),
            version: "2".into(),
            trace: Some("enabled".into()),
            stream_processing_mode: Some("async".into()),
        }
    }

    #[test]
    fn options_become_converse_members_and_invoke_headers() {
        let metadata = BTreeMap::from([("team".to_owned(), "search".to_owned())]);
        let options = BedrockOptions::new(
            Some(guardrail()),
            Some("optimized".into()),
            Some("flex".into()),
            metadata,
        )
        .unwrap();
        let streamed = serde_json::to_value(options.for_converse(true, None)).unwrap();
        assert_eq!(
            streamed,
            json!({
                "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "2", "trace": "enabled", "streamProcessingMode": "async"},
                "performanceConfig": {"latency": "optimized"},
                "serviceTier": {"type": "flex"},
                "requestMetadata": {"team": "search"}
            })
        );
        let plain = serde_json::to_value(options.for_converse(false, Some("priority"))).unwrap();
        assert!(
            plain["guardrailConfig"]
                .get("streamProcessingMode")
                .is_none(),
            "Converse has no stream mode"
        );
        assert_eq!(
            plain["serviceTier"],
            json!({"type": "priority"}),
            "the caller's tier wins"
        );
        assert_eq!(
            options.invoke_headers(),
            [
                ("x-amzn-bedrock-guardrailidentifier", "gr-1".to_owned()),
                ("x-amzn-bedrock-guardrailversion", "2".to_owned()),
                ("x-amzn-bedrock-trace", "ENABLED".to_owned()),
                (
                    "x-amzn-bedrock-performanceconfig-latency",
                    "optimized".to_owned()
                ),
                ("x-amzn-bedrock-service-tier", "flex".to_owned()),
                (
                    "x-amzn-bedrock-request-metadata",
                    r#"{"team":"search"}"#.to_owned()
                ),
            ]
        );
        assert_eq!(
            serde_json::to_value(BedrockOptions::default().for_converse(true, None)).unwrap(),
            json!({})
        );
    }

    #[test]
    fn values_bedrock_refuses_fail_at_start_up() {
        let bad_version = Guardrail {
            version: "v1".into(),
            ..guardrail()
        };
        assert!(
            BedrockOptions::new(Some(bad_version), None, None, BTreeMap::new())
                .unwrap_err()
                .contains("version")
        );
        assert!(
            BedrockOptions::new(None, Some("fast".into()), None, BTreeMap::new())
                .unwrap_err()
                .contains("latency")
        );
        assert!(
            BedrockOptions::new(None, None, Some("gold".into()), BTreeMap::new())
                .unwrap_err()
                .contains("service_tier")
        );
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(BedrockOptions::new(None, None, None, many)
            .unwrap_err()
            .contains("16"));
        assert_eq!(caller_service_tier(Some("auto")).unwrap(), None);
        assert_eq!(caller_service_tier(Some("flex")).unwrap(), Some("flex"));
        assert!(caller_service_tier(Some("scale"))
            .unwrap_err()
            .message
            .contains("not offered by Bedrock"));
    }
}

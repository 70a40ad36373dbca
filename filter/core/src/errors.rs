//! Gateway errors and their rendering in the caller's API format.

use std::borrow::Cow;
use std::fmt;

/// The API the caller speaks, and so the shape its errors must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    OpenAi,
    Anthropic,
    /// Bedrock Runtime's own, for callers of its API through the gateway.
    Bedrock,
    /// Cohere's (`{"message": ...}`), for callers of the rerank API.
    Cohere,
}

/// What went wrong, independent of the caller's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    Upstream,
    Unavailable,
    /// The gateway itself failed (a host call Envoy refused): the request was not sent.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    /// A machine-readable code, e.g. Bedrock's exception name.
    pub code: Option<String>,
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl GatewayError {
    pub fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            kind,
            message: message.into(),
            code: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, ErrorKind::InvalidRequest, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut error = Self::new(
            404,
            ErrorKind::NotFound,
            format!("The model `{model}` does not exist or is not served by this gateway."),
        );
        error.code = Some("model_not_found".into());
        error
    }

    /// An error whose kind follows from its HTTP status alone.
    pub fn for_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, kind_for_status(status), message)
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(502, ErrorKind::Upstream, message)
    }

    /// Bedrock's stream ended before the message did.
    pub fn stream_ended_early() -> Self {
        Self::upstream("Bedrock's stream ended before the message was complete.")
    }

    /// The status and kind of a Bedrock error from its HTTP status and `x-amzn-errortype` name
    /// (or a stream exception's `:exception-type`), without a message to build.
    pub fn bedrock_status_and_kind(status: u16, error_type: Option<&str>) -> (u16, ErrorKind) {
        let kind = match error_type
            .filter(|t| !t.is_empty())
            .map(str::to_ascii_lowercase)
        {
            Some(t) if t.starts_with("throttling") || t.starts_with("servicequotaexceeded") => {
                ErrorKind::RateLimited
            }
            Some(t) if t.starts_with("accessdenied") => ErrorKind::PermissionDenied,
            Some(t)
                if t.starts_with("unrecognizedclient")
                    || t.starts_with("invalidsignature")
                    || t.starts_with("expiredtoken")
                    || t.starts_with("incompletesignature")
                    || t.starts_with("missingauthenticationtoken") =>
            {
                ErrorKind::Authentication
            }
            Some(t) if t.starts_with("resourcenotfound") => ErrorKind::NotFound,
            Some(t) if t.starts_with("validation") => ErrorKind::InvalidRequest,
            Some(t) if t.starts_with("serviceunavailable") || t.starts_with("modelnotready") => {
                ErrorKind::Unavailable
            }
            _ => kind_for_status(status),
        };
        // Stream exceptions arrive with no HTTP status of their own (0) or inside a 200.
        let status = match (status, kind) {
            (100..=399 | 0, ErrorKind::RateLimited) => 429,
            (100..=399 | 0, ErrorKind::InvalidRequest) => 400,
            (100..=399 | 0, ErrorKind::Unavailable) => 503,
            (100..=399 | 0, _) => 502,
            (status, _) => status,
        };
        (status, kind)
    }

    /// Maps a Bedrock error (HTTP status, `x-amzn-errortype` name, message).
    pub fn from_bedrock(status: u16, error_type: Option<&str>, message: &str) -> Self {
        let error_type = error_type.filter(|t| !t.is_empty());
        let (status, kind) = Self::bedrock_status_and_kind(status, error_type);
        let redacted = redact_aws_identifiers(message);
        if let Cow::Owned(_) = redacted {
            // The caller gets the text without them; the operator keeps the whole of it.
            log::warn!("ai gateway: Bedrock answered {status}: {message}");
        }
        let message = match error_type {
            Some(t) => format!("Bedrock {t}: {redacted}"),
            None => format!("Bedrock returned HTTP {status}: {redacted}"),
        };
        GatewayError {
            status,
            kind,
            message,
            code: error_type.map(str::to_owned),
        }
    }

    pub fn to_json(&self, format: ApiFormat) -> Vec<u8> {
        match format {
            ApiFormat::OpenAi => self.to_openai_json(),
            ApiFormat::Anthropic => self.to_anthropic_json(),
            ApiFormat::Bedrock => self.to_bedrock_json(),
            ApiFormat::Cohere => serde_json::json!({ "message": self.message })
                .to_string()
                .into_bytes(),
        }
    }

    /// Bedrock's error body, which AWS SDKs turn into the exception `__type` names.
    pub fn to_bedrock_json(&self) -> Vec<u8> {
        let exception = match self.code.as_deref() {
            Some(name) if name.ends_with("Exception") => name,
            _ => bedrock_exception(self.kind),
        };
        serde_json::json!({ "__type": exception, "message": self.message })
            .to_string()
            .into_bytes()
    }

    /// Anthropic's error object: `{"type": "error", "error": {"type", "message"}}`.
    pub fn to_anthropic_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": anthropic_type(self.kind), "message": self.message },
        });
        body.to_string().into_bytes()
    }

    /// The OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_openai_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": openai_type(self.kind),
                "param": null,
                "code": self.code,
            }
        });
        body.to_string().into_bytes()
    }
}

fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Unavailable,
        _ => ErrorKind::Upstream,
    }
}

fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::Internal => "api_error",
        ErrorKind::Unavailable => "overloaded_error",
    }
}

fn bedrock_exception(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "ValidationException",
        ErrorKind::Authentication => "UnrecognizedClientException",
        ErrorKind::PermissionDenied => "AccessDeniedException",
        ErrorKind::NotFound => "ResourceNotFoundException",
        ErrorKind::RateLimited => "ThrottlingException",
        ErrorKind::Upstream | ErrorKind::Internal => "InternalServerException",
        ErrorKind::Unavailable => "ServiceUnavailableException",
    }
}

pub(crate) fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::Unavailable | ErrorKind::Internal => "server_error",
    }
}

/// AWS's error text with the account's identifiers taken out: ARNs (`arn:aws:iam::123456789012:
/// role/...`, which name the account, the role and the resources) and bare 12-digit account ids.
/// An `AccessDeniedException` names the gateway's role, which callers have no business knowing.
pub fn redact_aws_identifiers(message: &str) -> Cow<'_, str> {
    if !message.contains("arn:") && !has_account_id(message) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("arn:") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // An ARN runs to the next space or delimiter a sentence would put after it.
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | ']'))
            .unwrap_or(from.len());
        out.push_str("<redacted ARN>");
        rest = from.get(end..).unwrap_or_default();
    }
    out.push_str(rest);
    Cow::Owned(redact_account_ids(&out))
}

fn has_account_id(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() == 12)
}

/// Runs of exactly twelve digits, an AWS account id's form.
fn redact_account_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() == 12 {
            out.push_str("<account>");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn account_ids_and_arns_are_taken_out_of_aws_messages() {
        let message = "User: arn:aws:sts::123456789012:assumed-role/gateway/i-0abc is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1::foundation-model/x because no identity-based policy allows it (account 210987654321, request 1234)";
        let redacted = redact_aws_identifiers(message);
        assert_eq!(
            redacted,
            "User: <redacted ARN> is not authorized to perform: bedrock:InvokeModel on resource: <redacted ARN> because no identity-based policy allows it (account <account>, request 1234)"
        );
        assert!(matches!(
            redact_aws_identifiers("Too many requests, please wait."),
            Cow::Borrowed(_)
        ));
        let error = GatewayError::from_bedrock(403, Some("AccessDeniedException"), message);
        assert!(!error.message.contains("123456789012"));
        assert!(!error.message.contains("arn:"));
    }
}

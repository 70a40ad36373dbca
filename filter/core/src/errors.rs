//! Gateway errors and their rendering in the caller's API format.

use std::fmt;

/// The API the caller speaks, and so the shape its errors must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    OpenAi,
    Anthropic,
    /// Bedrock Runtime's own, for callers of its API through the gateway.
    Bedrock,
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

    /// Maps a Bedrock error (HTTP status, `x-amzn-errortype` name, message).
    /// Bedrock's stream ended before the message did.
    pub fn stream_ended_early() -> Self {
        Self::upstream("Bedrock's stream ended before the message was complete.")
    }

    pub fn from_bedrock(status: u16, error_type: Option<&str>, message: &str) -> Self {
        let error_type = error_type.filter(|t| !t.is_empty());
        let kind = match error_type.map(|t| t.to_ascii_lowercase()) {
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
        let message = match error_type {
            Some(t) => format!("Bedrock {t}: {message}"),
            None => format!("Bedrock returned HTTP {status}: {message}"),
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
        ErrorKind::Upstream => "api_error",
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
        ErrorKind::Upstream => "InternalServerException",
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
        ErrorKind::Upstream | ErrorKind::Unavailable => "server_error",
    }
}

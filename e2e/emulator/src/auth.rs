//! SigV4 verification with AWS's own `aws-sigv4` crate: the emulator recomputes the
//! signature of every request from the headers it lists and compares.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// AWS rejects requests whose clock is off by more than this.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

pub struct AuthError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

fn denied(error_type: &'static str, message: impl Into<String>) -> AuthError {
    AuthError {
        status: 403,
        error_type,
        message: message.into(),
    }
}

pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// What the emulator knows of an access key id.
pub enum Known {
    Static(String),
    /// Issued by the emulator's credential endpoints: valid only with its session token.
    Temporary {
        secret: String,
        token: String,
    },
    Expired,
}

struct ParsedAuthorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<ParsedAuthorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed_headers = Some(val),
            "Signature" => signature = Some(val),
            _ => return None,
        }
    }
    let mut scope = credential?.splitn(5, '/');
    let parsed = ParsedAuthorization {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed_headers?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request").then_some(parsed)
}

/// `20150830T123600Z` -> SystemTime.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| value.get(range)?.parse::<i64>().ok();
    if value.len() != 16 || value.as_bytes().get(8) != Some(&b'T') || !value.ends_with('Z') {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // days_from_civil, for the proleptic Gregorian calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Checks the request's signature; `headers` are (lower-case name, value) as received.
pub fn verify(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    known: &dyn Fn(&str) -> Option<Known>,
    expected_service: &str,
    expected_region: Option<&str>,
) -> Result<(), AuthError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let authorization = header("authorization").ok_or_else(|| {
        denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    })?;
    let parsed = parse_authorization(authorization).ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
        )
    })?;
    let secret = match known(parsed.access_key_id) {
        None => {
            return Err(denied(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ))
        }
        Some(Known::Expired) => {
            return Err(denied(
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ))
        }
        Some(Known::Static(secret)) => secret,
        Some(Known::Temporary { secret, token }) => {
            if header("x-amz-security-token") != Some(token.as_str()) {
                return Err(denied(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                ));
            }
            secret
        }
    };
    if parsed.service != expected_service {
        return Err(denied(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{expected_service}'."),
        ));
    }
    // A regional endpoint accepts only signatures scoped to its region.
    if let Some(region) = expected_region.filter(|r| *r != parsed.region) {
        return Err(denied(
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{}'. This endpoint serves '{region}'.", parsed.region),
        ));
    }
    let amz_date = header("x-amz-date").ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "The request must contain an x-amz-date header.",
        )
    })?;
    let time = parse_amz_date(amz_date).ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            format!("Invalid x-amz-date {amz_date:?}."),
        )
    })?;
    if !amz_date.starts_with(parsed.date) {
        return Err(denied(
            "InvalidSignatureException",
            "Credential date does not match x-amz-date.",
        ));
    }
    let now = SystemTime::now();
    let skew = now
        .duration_since(time)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        return Err(denied(
            "InvalidSignatureException",
            "Signature expired: the request time is too far from the server time.",
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !parsed.signed_headers.contains(&required) {
            return Err(denied(
                "InvalidSignatureException",
                format!("The {required} header must be signed."),
            ));
        }
    }

    let session_token = header("x-amz-security-token").map(str::to_owned);
    let token_signed = parsed.signed_headers.contains(&"x-amz-security-token");
    if session_token.is_some() != token_signed {
        return Err(denied(
            "InvalidSignatureException",
            "x-amz-security-token must be present and signed together.",
        ));
    }
    let identity = Credentials::new(
        parsed.access_key_id,
        &secret,
        session_token,
        None,
        "emulator",
    )
    .into();
    // x-amz-date and the token are added by the signer itself from the time and identity.
    let signable_headers = parsed
        .signed_headers
        .iter()
        .filter(|name| !matches!(**name, "x-amz-date" | "x-amz-security-token"))
        .map(|name| {
            header(name).map(|value| (*name, value)).ok_or_else(|| {
                denied(
                    "InvalidSignatureException",
                    format!("Signed header {name} is missing."),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(parsed.region)
        .name(expected_service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| denied("InvalidSignatureException", e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method,
        format!(
            "http://{}{}",
            header("host").unwrap_or("localhost"),
            path_and_query
        ),
        signable_headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| denied("InvalidSignatureException", e.to_string()))?;
    let output =
        sign(request, &params).map_err(|e| denied("InvalidSignatureException", e.to_string()))?;
    if output.signature() != parsed.signature {
        return Err(denied(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_amz_dates() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert!(parse_amz_date("2015-08-30T12:36:00Z").is_none());
    }
}

//! Temporary AWS credentials: how to fetch them (EKS Pod Identity, IRSA through STS, EC2
//! IMDSv2), how to read the answers, and how the workers share them.
//!
//! Everything here is host-free. The glue performs the HTTP calls this module describes,
//! and stores [`CachedCredentials`] in Envoy's shared data so that one fetch serves every
//! worker; a lock entry elects the one worker that refreshes, and doubles as the back-off
//! gate after a failure.

use crate::aws::sigv4::Credentials;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Refresh this long before expiry (botocore's advisory window).
pub const REFRESH_BEFORE_SECONDS: u64 = 15 * 60;
/// Never sign with credentials this close to expiry: the request could outlive them.
pub const MIN_REMAINING_SECONDS: u64 = 60;
/// A fetch that has not answered by then is considered lost.
pub const FETCH_TIMEOUT_MS: u64 = 5_000;
const BACKOFF_BASE_MS: u64 = 500;
const BACKOFF_MAX_MS: u64 = 30_000;
const IMDS_TOKEN_TTL_SECONDS: u32 = 21_600;
/// The header `credential_injector` fills with the IRSA web identity token on the STS cluster.
pub const WEB_IDENTITY_TOKEN_HEADER: &str = "x-ai-eg-web-identity-token";

/// Where a backend's temporary credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// EKS Pod Identity agent. Its token is injected as `Authorization` by Envoy's
    /// `credential_injector` on `cluster`.
    PodIdentity {
        cluster: String,
        authority: String,
        path: String,
    },
    /// IRSA: STS AssumeRoleWithWebIdentity. The token is injected by `credential_injector`
    /// on `cluster` and moved into the form body by the `ai_gateway_sts` stage.
    WebIdentity {
        cluster: String,
        authority: String,
        role_arn: String,
        session_name: String,
    },
    /// EC2 instance metadata service, version 2 (session token first).
    Imds { cluster: String, authority: String },
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::PodIdentity { .. } => "EKS Pod Identity",
            Provider::WebIdentity { .. } => "STS AssumeRoleWithWebIdentity",
            Provider::Imds { .. } => "EC2 instance metadata",
        }
    }

    pub fn cluster(&self) -> &str {
        match self {
            Provider::PodIdentity { cluster, .. }
            | Provider::WebIdentity { cluster, .. }
            | Provider::Imds { cluster, .. } => cluster,
        }
    }
}

/// One HTTP call through an Envoy cluster: a step of a credential fetch, or one input of an
/// embeddings batch (`stream::batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// Where a multi-call fetch (IMDS) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStep {
    Start,
    ImdsRoleName { session_token: String },
    ImdsRoleCredentials { session_token: String, role: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    Done(CachedCredentials),
    Next(FetchStep),
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The call to make for `step`.
pub fn call_for(provider: &Provider, step: &FetchStep) -> HttpCall {
    match (provider, step) {
        (
            Provider::PodIdentity {
                cluster,
                authority,
                path,
            },
            _,
        ) => HttpCall {
            cluster: cluster.clone(),
            headers: headers(&[
                (":method", "GET"),
                (":path", path),
                (":authority", authority),
                ("accept", "application/json"),
            ]),
            body: None,
        },
        (
            Provider::WebIdentity {
                cluster,
                authority,
                role_arn,
                session_name,
            },
            _,
        ) => {
            let form = format!(
                "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&DurationSeconds=3600",
                form_encode(role_arn),
                form_encode(session_name)
            );
            HttpCall {
                cluster: cluster.clone(),
                headers: headers(&[
                    (":method", "POST"),
                    (":path", "/"),
                    (":authority", authority),
                    (
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    ),
                    ("accept", "application/json"),
                ]),
                body: Some(form.into_bytes()),
            }
        }
        (Provider::Imds { cluster, authority }, FetchStep::Start) => HttpCall {
            cluster: cluster.clone(),
            headers: headers(&[
                (":method", "PUT"),
                (":path", "/latest/api/token"),
                (":authority", authority),
                (
                    "x-aws-ec2-metadata-token-ttl-seconds",
                    &IMDS_TOKEN_TTL_SECONDS.to_string(),
                ),
            ]),
            body: None,
        },
        (Provider::Imds { cluster, authority }, FetchStep::ImdsRoleName { session_token }) => {
            HttpCall {
                cluster: cluster.clone(),
                headers: headers(&[
                    (":method", "GET"),
                    (":path", "/latest/meta-data/iam/security-credentials/"),
                    (":authority", authority),
                    ("x-aws-ec2-metadata-token", session_token),
                ]),
                body: None,
            }
        }
        (
            Provider::Imds { cluster, authority },
            FetchStep::ImdsRoleCredentials {
                session_token,
                role,
            },
        ) => HttpCall {
            cluster: cluster.clone(),
            headers: headers(&[
                (":method", "GET"),
                (
                    ":path",
                    &format!(
                        "/latest/meta-data/iam/security-credentials/{}",
                        crate::aws::sigv4::uri_encode(role.as_bytes())
                    ),
                ),
                (":authority", authority),
                ("x-aws-ec2-metadata-token", session_token),
            ]),
            body: None,
        },
    }
}

/// Reads one answer. Errors are short descriptions without any secret material.
pub fn on_response(
    provider: &Provider,
    step: &FetchStep,
    status: Option<u16>,
    body: &[u8],
) -> Result<FetchOutcome, String> {
    let status =
        status.ok_or_else(|| format!("the {} endpoint did not answer", provider.name()))?;
    if status != 200 {
        return Err(format!(
            "the {} endpoint answered HTTP {status}",
            provider.name()
        ));
    }
    match (provider, step) {
        (Provider::PodIdentity { .. }, _) => {
            parse_container_credentials(body).map(FetchOutcome::Done)
        }
        (Provider::WebIdentity { .. }, _) => parse_sts(body).map(FetchOutcome::Done),
        (Provider::Imds { .. }, FetchStep::Start) => {
            let token = std::str::from_utf8(body)
                .map_err(|_| "IMDS returned a non-text session token".to_owned())?
                .trim();
            if token.is_empty() {
                return Err("IMDS returned an empty session token".into());
            }
            Ok(FetchOutcome::Next(FetchStep::ImdsRoleName {
                session_token: token.to_owned(),
            }))
        }
        (Provider::Imds { .. }, FetchStep::ImdsRoleName { session_token }) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| "IMDS returned a non-text role name".to_owned())?;
            let role = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .ok_or("the instance has no IAM role attached")?;
            Ok(FetchOutcome::Next(FetchStep::ImdsRoleCredentials {
                session_token: session_token.clone(),
                role: role.to_owned(),
            }))
        }
        (Provider::Imds { .. }, FetchStep::ImdsRoleCredentials { .. }) => {
            parse_container_credentials(body).map(FetchOutcome::Done)
        }
    }
}

/// Pod Identity and IMDS answer `{AccessKeyId, SecretAccessKey, Token, Expiration (RFC 3339)}`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials {
    #[serde(default)]
    code: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

fn parse_container_credentials(body: &[u8]) -> Result<CachedCredentials, String> {
    let parsed: ContainerCredentials = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable credentials document ({})", e.classify_name()))?;
    if let Some(code) = parsed.code.filter(|c| c != "Success") {
        return Err(format!("the credentials endpoint reported {code:?}"));
    }
    let expiration = parse_rfc3339(&parsed.expiration).ok_or("unreadable credential expiration")?;
    Ok(CachedCredentials::new(
        parsed.access_key_id,
        parsed.secret_access_key,
        Some(parsed.token),
        expiration,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsEnvelope {
    assume_role_with_web_identity_response: StsResponse,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsResponse {
    assume_role_with_web_identity_result: StsResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsResult {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// STS's JSON protocol sends epoch seconds (possibly fractional).
    expiration: serde_json::Value,
}

fn parse_sts(body: &[u8]) -> Result<CachedCredentials, String> {
    let parsed: StsEnvelope = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable STS response ({})", e.classify_name()))?;
    let credentials = parsed
        .assume_role_with_web_identity_response
        .assume_role_with_web_identity_result
        .credentials;
    let expiration = match &credentials.expiration {
        serde_json::Value::Number(n) => n.as_f64().filter(|s| *s > 0.0).map(|s| s as u64),
        serde_json::Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
    .ok_or("unreadable STS credential expiration")?;
    Ok(CachedCredentials::new(
        credentials.access_key_id,
        credentials.secret_access_key,
        Some(credentials.session_token),
        expiration,
    ))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    // serde_json's messages quote input; secrets must not reach logs through them.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// `2026-11-26T13:20:00Z`, `2026-11-26T13:20:00.123Z` or with a `+00:00` style offset -> Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        // Some services separate the date and the time with a space, as RFC 3339 allows.
        let separated = text
            .get(10..11)
            .filter(|s| *s == " ")
            .and_then(|_| Some(format!("{}T{}", text.get(..10)?, text.get(11..)?)))?;
        OffsetDateTime::parse(&separated, &Rfc3339).ok()
    })?;
    u64::try_from(parsed.unix_timestamp()).ok()
}

fn form_encode(text: &str) -> String {
    crate::aws::sigv4::uri_encode(text.as_bytes())
}

/// Appends the web identity token to an AssumeRoleWithWebIdentity form body.
pub fn with_web_identity_token(form: &[u8], token: &str) -> Vec<u8> {
    let mut body = form.to_vec();
    if !body.is_empty() {
        body.push(b'&');
    }
    body.extend_from_slice(b"WebIdentityToken=");
    body.extend_from_slice(form_encode(token.trim()).as_bytes());
    body
}

// ---- Shared cache -----------------------------------------------------------------------

/// Credentials as stored in Envoy's shared data, visible to every worker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    pub expiration_unix: u64,
}

impl std::fmt::Debug for CachedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CachedCredentials {{ access_key_id: {:?}, expiration_unix: {} }}",
            self.access_key_id, self.expiration_unix
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Still usable, but a refresh should start now.
    RefreshSoon,
    Unusable,
}

impl CachedCredentials {
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        expiration_unix: u64,
    ) -> Self {
        CachedCredentials {
            access_key_id,
            secret_access_key,
            session_token,
            expiration_unix,
        }
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
        }
    }

    pub fn freshness(&self, now_unix: u64) -> Freshness {
        let remaining = self.expiration_unix.saturating_sub(now_unix);
        if remaining <= MIN_REMAINING_SECONDS {
            Freshness::Unusable
        } else if remaining <= REFRESH_BEFORE_SECONDS {
            Freshness::RefreshSoon
        } else {
            Freshness::Fresh
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The refresh lock: who may fetch, until when, and what the last failure was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshLock {
    /// Nobody else may start a fetch before this instant (Unix ms).
    pub busy_until_ms: u64,
    /// Consecutive failures, for the exponential back-off.
    pub failures: u32,
    /// The last failure, safe to show to callers.
    pub last_error: Option<String>,
}

impl RefreshLock {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn is_free(&self, now_ms: u64) -> bool {
        self.busy_until_ms <= now_ms
    }

    /// Taken by a worker starting a fetch.
    pub fn taken(&self, now_ms: u64) -> Self {
        RefreshLock {
            busy_until_ms: now_ms + FETCH_TIMEOUT_MS,
            ..self.clone()
        }
    }

    pub fn succeeded() -> Self {
        RefreshLock::default()
    }

    /// After a failure: nobody retries before the back-off has passed.
    pub fn failed(&self, now_ms: u64, error: String) -> Self {
        let failures = self.failures.saturating_add(1);
        let backoff = BACKOFF_BASE_MS
            .saturating_mul(1u64 << failures.min(10))
            .min(BACKOFF_MAX_MS);
        RefreshLock {
            busy_until_ms: now_ms + backoff,
            failures,
            last_error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_forms() {
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(
            parse_rfc3339("2015-08-30T12:36:00.123456Z"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_rfc3339("2015-08-30T14:36:00+02:00"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_rfc3339("2015-08-30 12:36:00Z"), Some(1_440_938_160));
        for bad in [
            "",
            "2015-08-30",
            "2015-13-30T12:36:00Z",
            "2015-08-30T12:36:00",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_each_providers_answer() {
        let pod = Provider::PodIdentity {
            cluster: "c".into(),
            authority: "169.254.170.23".into(),
            path: "/v1/credentials".into(),
        };
        let body = br#"{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","AccountId":"1","Expiration":"2030-01-01T00:00:00Z"}"#;
        let FetchOutcome::Done(creds) =
            on_response(&pod, &FetchStep::Start, Some(200), body).unwrap()
        else {
            panic!()
        };
        assert_eq!(creds.credentials().session_token.as_deref(), Some("t"));
        assert_eq!(creds.expiration_unix, 1_893_456_000);

        let sts = Provider::WebIdentity {
            cluster: "s".into(),
            authority: "sts.us-east-1.amazonaws.com".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            session_name: "gw".into(),
        };
        let body = br#"{"AssumeRoleWithWebIdentityResponse":{"AssumeRoleWithWebIdentityResult":{"Credentials":{"AccessKeyId":"ASIA2","SecretAccessKey":"s","SessionToken":"t2","Expiration":1.8934560E9}}}}"#;
        let FetchOutcome::Done(creds) =
            on_response(&sts, &FetchStep::Start, Some(200), body).unwrap()
        else {
            panic!()
        };
        assert_eq!(creds.expiration_unix, 1_893_456_000);

        let imds = Provider::Imds {
            cluster: "i".into(),
            authority: "169.254.169.254".into(),
        };
        let step = on_response(&imds, &FetchStep::Start, Some(200), b"tok\n").unwrap();
        assert_eq!(
            step,
            FetchOutcome::Next(FetchStep::ImdsRoleName {
                session_token: "tok".into()
            })
        );
        let FetchOutcome::Next(step) = on_response(
            &imds,
            &FetchStep::ImdsRoleName {
                session_token: "tok".into(),
            },
            Some(200),
            b"my-role\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            call_for(&imds, &step).headers[1].1,
            "/latest/meta-data/iam/security-credentials/my-role"
        );
        let body = br#"{"Code":"Success","AccessKeyId":"ASIA3","SecretAccessKey":"s","Token":"t3","Expiration":"2030-01-01T00:00:00Z"}"#;
        assert!(matches!(
            on_response(&imds, &step, Some(200), body).unwrap(),
            FetchOutcome::Done(_)
        ));
    }

    #[test]
    fn failures_are_described_without_secrets() {
        let pod = Provider::PodIdentity {
            cluster: "c".into(),
            authority: "a".into(),
            path: "/".into(),
        };
        assert_eq!(
            on_response(&pod, &FetchStep::Start, None, b"").unwrap_err(),
            "the EKS Pod Identity endpoint did not answer"
        );
        assert_eq!(
            on_response(&pod, &FetchStep::Start, Some(500), b"").unwrap_err(),
            "the EKS Pod Identity endpoint answered HTTP 500"
        );
        let leaky = br#"{"AccessKeyId":"ASIA1","SecretAccessKey":"TOPSECRET","Token":"t","Expiration":"soon"}"#;
        let error = on_response(&pod, &FetchStep::Start, Some(200), leaky).unwrap_err();
        assert!(!error.contains("TOPSECRET"), "{error}");
        let broken = br#"{"AccessKeyId":"ASIA1","SecretAccessKey":"TOPSECRET""#;
        let error = on_response(&pod, &FetchStep::Start, Some(200), broken).unwrap_err();
        assert!(!error.contains("TOPSECRET"), "{error}");
    }

    #[test]
    fn freshness_and_back_off() {
        let creds = CachedCredentials::new("a".into(), "s".into(), None, 10_000);
        assert_eq!(
            creds.freshness(10_000 - REFRESH_BEFORE_SECONDS - 1),
            Freshness::Fresh
        );
        assert_eq!(
            creds.freshness(10_000 - REFRESH_BEFORE_SECONDS),
            Freshness::RefreshSoon
        );
        assert_eq!(
            creds.freshness(10_000 - MIN_REMAINING_SECONDS),
            Freshness::Unusable
        );
        assert_eq!(
            CachedCredentials::decode(&creds.encode()),
            Some(creds.clone())
        );
        assert!(!format!("{creds:?}").contains("\"s\""));

        let lock = RefreshLock::default();
        assert!(lock.is_free(0));
        let taken = lock.taken(1_000);
        assert!(!taken.is_free(1_000) && taken.is_free(1_000 + FETCH_TIMEOUT_MS));
        let failed = taken.failed(2_000, "down".into());
        let failed_twice = failed.failed(2_000, "down".into());
        assert!(
            failed_twice.busy_until_ms > failed.busy_until_ms,
            "back-off grows"
        );
        assert!(
            failed_twice
                .failed(0, "x".into())
                .failed(0, "x".into())
                .failed(0, "x".into())
                .failed(0, "x".into())
                .failed(0, "x".into())
                .busy_until_ms
                <= BACKOFF_MAX_MS
        );
        assert_eq!(RefreshLock::decode(&failed.encode()), failed);
    }

    #[test]
    fn web_identity_token_goes_into_the_form() {
        let sts = Provider::WebIdentity {
            cluster: "s".into(),
            authority: "sts".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            session_name: "gw".into(),
        };
        let call = call_for(&sts, &FetchStep::Start);
        let body = with_web_identity_token(call.body.as_deref().unwrap(), "ey.J/x+y=\n");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=gw&DurationSeconds=3600&WebIdentityToken=ey.J%2Fx%2By%3D"
        );
    }
}

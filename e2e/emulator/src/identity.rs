//! The AWS credential endpoints a gateway on EKS or EC2 calls: the EKS Pod Identity agent,
//! STS AssumeRoleWithWebIdentity (IRSA) and IMDSv2. Each checks the caller's proof (the
//! projected service-account token, re-read from its file on every call so rotation is
//! honoured, or the IMDS session token) and issues short-lived credentials that the
//! Bedrock side then accepts until they expire.

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const IMDS_ROLE: &str = "ai-gateway-role";

pub struct Issued {
    pub secret_access_key: String,
    pub session_token: String,
    pub expires_at: SystemTime,
}

pub struct IdentityService {
    pub token_file: Option<PathBuf>,
    pub lifetime: Duration,
    pub down: AtomicBool,
    counter: AtomicU64,
    issued: Mutex<HashMap<String, Issued>>,
    imds_tokens: Mutex<HashSet<String>>,
    pub pod_identity_calls: AtomicU64,
    pub sts_calls: AtomicU64,
    pub imds_calls: AtomicU64,
    /// Calls whose service-account token did not match the token file.
    pub rejected_tokens: AtomicU64,
}

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl IdentityService {
    pub fn new(token_file: Option<PathBuf>, lifetime: Duration) -> Self {
        IdentityService {
            token_file,
            lifetime,
            down: AtomicBool::new(false),
            counter: AtomicU64::new(1),
            issued: Mutex::new(HashMap::new()),
            imds_tokens: Mutex::new(HashSet::new()),
            pod_identity_calls: AtomicU64::new(0),
            sts_calls: AtomicU64::new(0),
            imds_calls: AtomicU64::new(0),
            rejected_tokens: AtomicU64::new(0),
        }
    }

    /// The token kubelet projects; rotation means a new file content.
    fn current_token(&self) -> Option<String> {
        let path = self.token_file.as_ref()?;
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    fn issue(&self) -> (String, Issued) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let access_key_id = format!("ASIAEMULATOR{n:08}");
        let issued = Issued {
            secret_access_key: format!(
                "emulatorSecret{n:08}/{:x}",
                n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            session_token: format!(
                "EmulatorSessionToken{n:08}+{:x}==",
                n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ),
            expires_at: SystemTime::now() + self.lifetime,
        };
        let copy = Issued {
            secret_access_key: issued.secret_access_key.clone(),
            session_token: issued.session_token.clone(),
            expires_at: issued.expires_at,
        };
        if let Ok(mut map) = self.issued.lock() {
            map.insert(access_key_id.clone(), issued);
        }
        (access_key_id, copy)
    }

    /// The secret and session token of issued credentials; `Err` when they have expired.
    pub fn lookup(&self, access_key_id: &str) -> Option<Result<(String, String), ()>> {
        let map = self.issued.lock().ok()?;
        let issued = map.get(access_key_id)?;
        if issued.expires_at <= SystemTime::now() {
            return Some(Err(()));
        }
        Some(Ok((
            issued.secret_access_key.clone(),
            issued.session_token.clone(),
        )))
    }

    fn unavailable(&self) -> Option<Reply> {
        self.down.load(Ordering::Relaxed).then(|| {
            reply(
                500,
                json!({ "message": "the credential endpoint is down (emulated)" }),
            )
        })
    }

    /// `GET /v1/credentials` with the Pod Identity token as `Authorization`.
    pub fn pod_identity(&self, authorization: Option<&str>) -> Reply {
        self.pod_identity_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(down) = self.unavailable() {
            return down;
        }
        match (self.current_token(), authorization) {
            (Some(expected), Some(given)) if expected == given.trim() => {}
            (None, _) => {
                return reply(
                    500,
                    json!({ "Message": "the emulator has no token file (--token-file)" }),
                )
            }
            _ => {
                self.rejected_tokens.fetch_add(1, Ordering::Relaxed);
                return reply(
                    401,
                    json!({ "Message": "Service account token cannot be empty or is invalid" }),
                );
            }
        }
        let (access_key_id, issued) = self.issue();
        reply(
            200,
            json!({
                "AccessKeyId": access_key_id,
                "SecretAccessKey": issued.secret_access_key,
                "Token": issued.session_token,
                "AccountId": "123456789012",
                "Expiration": rfc3339(issued.expires_at),
            }),
        )
    }

    /// `POST /` with an AssumeRoleWithWebIdentity form.
    pub fn sts(&self, form: &str) -> Reply {
        self.sts_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(down) = self.unavailable() {
            return down;
        }
        let fields: HashMap<String, String> = form
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (decode_form(k), decode_form(v)))
            .collect();
        let error = |status: u16, code: &str, message: &str| {
            reply(
                status,
                json!({ "Error": { "Code": code, "Message": message, "Type": "Sender" } }),
            )
        };
        if fields.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity") {
            return error(400, "InvalidAction", "Could not find operation");
        }
        if !fields
            .get("RoleArn")
            .is_some_and(|r| r.starts_with("arn:aws:iam::"))
        {
            return error(400, "ValidationError", "RoleArn is required");
        }
        match (self.current_token(), fields.get("WebIdentityToken")) {
            (Some(expected), Some(given)) if &expected == given => {}
            _ => {
                self.rejected_tokens.fetch_add(1, Ordering::Relaxed);
                return error(
                    400,
                    "InvalidIdentityToken",
                    "The web identity token provided is not valid",
                );
            }
        }
        let (access_key_id, issued) = self.issue();
        let expiration = issued
            .expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        reply(
            200,
            json!({
                "AssumeRoleWithWebIdentityResponse": {
                    "AssumeRoleWithWebIdentityResult": {
                        "Credentials": {
                            "AccessKeyId": access_key_id,
                            "SecretAccessKey": issued.secret_access_key,
                            "SessionToken": issued.session_token,
                            "Expiration": expiration,
                        },
                        "SubjectFromWebIdentityToken": "system:serviceaccount:envoy-gateway-system:ai-gateway-dataplane-aws",
                    },
                    "ResponseMetadata": { "RequestId": "sts-emulated" },
                }
            }),
        )
    }

    /// IMDSv2: `PUT /latest/api/token`, then role name and role credentials with the session token.
    pub fn imds(
        &self,
        method: &str,
        path: &str,
        ttl: Option<&str>,
        session: Option<&str>,
    ) -> Reply {
        self.imds_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(down) = self.unavailable() {
            return down;
        }
        let text = |status: u16, body: String| Reply {
            status,
            content_type: "text/plain",
            body,
        };
        if method == "PUT" && path == "/latest/api/token" {
            if ttl
                .and_then(|t| t.parse::<u32>().ok())
                .filter(|t| (1..=21_600).contains(t))
                .is_none()
            {
                return text(
                    400,
                    "Missing or invalid X-aws-ec2-metadata-token-ttl-seconds".into(),
                );
            }
            let token = format!(
                "imds-session-{}",
                self.counter.fetch_add(1, Ordering::Relaxed)
            );
            if let Ok(mut tokens) = self.imds_tokens.lock() {
                tokens.insert(token.clone());
            }
            return text(200, token);
        }
        let valid = session.is_some_and(|s| {
            self.imds_tokens
                .lock()
                .map(|t| t.contains(s))
                .unwrap_or(false)
        });
        if !valid {
            return text(401, String::new());
        }
        match path {
            "/latest/meta-data/iam/security-credentials/" => text(200, IMDS_ROLE.to_owned()),
            p if p == format!("/latest/meta-data/iam/security-credentials/{IMDS_ROLE}") => {
                let (access_key_id, issued) = self.issue();
                reply(
                    200,
                    json!({
                        "Code": "Success",
                        "LastUpdated": rfc3339(SystemTime::now()),
                        "Type": "AWS-HMAC",
                        "AccessKeyId": access_key_id,
                        "SecretAccessKey": issued.secret_access_key,
                        "Token": issued.session_token,
                        "Expiration": rfc3339(issued.expires_at),
                    }),
                )
            }
            _ => text(404, "Not Found".into()),
        }
    }
}

fn decode_form(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
                if let Ok(value) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                {
                    out.push(value);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_and_decodes_forms() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
            "2015-08-30T12:36:00Z"
        );
        assert_eq!(decode_form("a%2Fb+c%3D"), "a/b c=");
    }
}

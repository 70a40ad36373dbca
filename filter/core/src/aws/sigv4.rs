//! AWS Signature Version 4 for header-signed requests, written on `hmac` + `sha2`.
//!
//! Bedrock (like every AWS service except S3) wants the canonical URI to be the
//! wire path encoded once more: a model id `a:b` travels as `a%3Ab` and is signed
//! as `a%253Ab`. We therefore sign exactly the bytes that go on the wire and never
//! touch the path afterwards.

use crate::aws::time::UtcDateTime;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Derived keys kept per worker; one per (secret, day, region, service) in use.
const MAX_CACHED_SIGNING_KEYS: usize = 8;

/// An AWS access key, optionally temporary (with a session token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    // Secrets never reach logs, even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What is signed: the request as it will be sent, byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// The path exactly as on the wire (already percent-encoded once).
    pub encoded_path: &'a str,
    /// The raw query string without `?`, as on the wire; empty when there is none.
    pub query: &'a str,
    pub host: &'a str,
    /// Further headers to sign besides `host`, `x-amz-date` and `x-amz-security-token`.
    pub extra_headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// The headers a signed request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningHeaders {
    pub authorization: String,
    pub amz_date: String,
}

/// A derived signing key, kept with what was derived from it: the credential scope and the
/// HMAC state after absorbing the key (two SHA-256 blocks a signature need not hash again).
#[derive(Clone)]
struct CachedSigningKey {
    secret_access_key: String,
    date_stamp: String,
    region: String,
    service: String,
    scope: String,
    keyed_mac: HmacSha256,
}

/// Signs requests, caching derived signing keys (they change once a day).
#[derive(Default)]
pub struct Signer {
    cached_keys: Vec<CachedSigningKey>,
}

impl Signer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sign(
        &mut self,
        request: &RequestToSign<'_>,
        credentials: &Credentials,
        region: &str,
        service: &str,
        now: UtcDateTime,
    ) -> SigningHeaders {
        let amz_date = now.amz_timestamp();
        let date_stamp = now.amz_date_stamp();
        let date_stamp = date_stamp.as_str();
        let (canonical_request, signed_headers) =
            canonical_request(request, &amz_date, credentials.session_token.as_deref());
        let derived_now;
        let key =
            match self.signing_key(&credentials.secret_access_key, date_stamp, region, service) {
                Some(cached) => cached,
                // Not reached (the key was just cached), but no request path may panic.
                None => {
                    derived_now = CachedSigningKey::derive(
                        &credentials.secret_access_key,
                        date_stamp,
                        region,
                        service,
                    );
                    &derived_now
                }
            };

        // Built with push_str rather than format!: this runs once per request.
        let mut string_to_sign =
            String::with_capacity(ALGORITHM.len() + amz_date.len() + key.scope.len() + 67);
        for part in [ALGORITHM, "\n", &amz_date, "\n", &key.scope, "\n"] {
            string_to_sign.push_str(part);
        }
        push_hex(
            &mut string_to_sign,
            &Sha256::digest(canonical_request.as_bytes()),
        );
        let mut mac = key.keyed_mac.clone();
        mac.update(string_to_sign.as_bytes());

        let mut authorization = String::with_capacity(
            ALGORITHM.len()
                + credentials.access_key_id.len()
                + key.scope.len()
                + signed_headers.len()
                + 110,
        );
        for part in [
            ALGORITHM,
            " Credential=",
            &credentials.access_key_id,
            "/",
            &key.scope,
            ", SignedHeaders=",
            &signed_headers,
            ", Signature=",
        ] {
            authorization.push_str(part);
        }
        push_hex(&mut authorization, &mac.finalize().into_bytes());
        SigningHeaders {
            authorization,
            amz_date,
        }
    }

    fn signing_key(
        &mut self,
        secret: &str,
        date_stamp: &str,
        region: &str,
        service: &str,
    ) -> Option<&CachedSigningKey> {
        let hit = self.cached_keys.iter().position(|k| {
            k.date_stamp == date_stamp
                && k.region == region
                && k.service == service
                && k.secret_access_key == secret
        });
        let index = match hit {
            Some(index) => index,
            None => {
                // Yesterday's keys are useless; drop them before the cache grows.
                self.cached_keys.retain(|k| k.date_stamp == date_stamp);
                if self.cached_keys.len() >= MAX_CACHED_SIGNING_KEYS {
                    self.cached_keys.remove(0);
                }
                self.cached_keys.push(CachedSigningKey::derive(
                    secret, date_stamp, region, service,
                ));
                self.cached_keys.len() - 1
            }
        };
        self.cached_keys.get(index)
    }
}

impl CachedSigningKey {
    fn derive(secret: &str, date_stamp: &str, region: &str, service: &str) -> Self {
        let key = derive_signing_key(secret, date_stamp, region, service);
        CachedSigningKey {
            secret_access_key: secret.to_owned(),
            date_stamp: date_stamp.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            scope: format!("{date_stamp}/{region}/{service}/aws4_request"),
            keyed_mac: keyed_hmac(&key),
        }
    }
}

pub fn derive_signing_key(secret: &str, date_stamp: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date_stamp.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails; the fallback keeps the request path
    // free of panics all the same (a wrong key would only make AWS answer 403).
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed_hmac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Appends lower-case hex digits (of a digest), through a stack buffer rather than a String.
fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut digits = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let Some(target) = digits.get_mut(..chunk.len() * 2) else {
            return;
        };
        if hex::encode_to_slice(chunk, target).is_ok() {
            out.push_str(std::str::from_utf8(target).unwrap_or_default());
        }
    }
}

/// Builds the canonical request; returns it with the `SignedHeaders` list.
fn canonical_request(
    request: &RequestToSign<'_>,
    amz_date: &str,
    session_token: Option<&str>,
) -> (String, String) {
    let mut headers: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        Vec::with_capacity(request.extra_headers.len() + 3);
    headers.push((Cow::Borrowed("host"), canonical_header_value(request.host)));
    headers.push((Cow::Borrowed("x-amz-date"), Cow::Borrowed(amz_date)));
    if let Some(token) = session_token {
        headers.push((
            Cow::Borrowed("x-amz-security-token"),
            canonical_header_value(token),
        ));
    }
    for (name, value) in request.extra_headers {
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(*name)
        };
        let value = canonical_header_value(value);
        match headers.iter_mut().find(|(existing, _)| *existing == name) {
            Some((_, existing_value)) => {
                let joined = existing_value.to_mut();
                joined.push(',');
                joined.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));

    let mut signed_headers = String::with_capacity(64);
    for (i, (name, _)) in headers.iter().enumerate() {
        if i > 0 {
            signed_headers.push(';');
        }
        signed_headers.push_str(name);
    }
    let mut canonical = String::with_capacity(256 + request.encoded_path.len() * 2);
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical_uri(request.encoded_path, &mut canonical);
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query));
    canonical.push('\n');
    for (name, value) in &headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers);
    canonical.push('\n');
    push_hex(&mut canonical, &Sha256::digest(request.payload));
    (canonical, signed_headers)
}

/// Trims the value and folds runs of whitespace into one space, as SigV4 requires.
fn canonical_header_value(value: &str) -> Cow<'_, str> {
    // Most values are already canonical (single spaces between words): no copy for those.
    let canonical = !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
        && !value.contains(|c: char| c.is_whitespace() && c != ' ')
        && !value.contains("  ");
    if canonical {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Each segment of the (already encoded) wire path is encoded again.
fn canonical_uri(encoded_path: &str, out: &mut String) {
    if encoded_path.is_empty() {
        out.push('/');
        return;
    }
    for (i, segment) in encoded_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode_into(segment.as_bytes(), out);
    }
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(key)),
                uri_encode(&percent_decode(value)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes everything but RFC 3986 unreserved characters, upper-case hex.
pub fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    uri_encode_into(bytes, &mut out);
    out
}

pub(crate) fn uri_encode_into(bytes: &[u8], out: &mut String) {
    for &byte in bytes {
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(upper_hex_digit(byte >> 4));
            out.push(upper_hex_digit(byte & 0x0f));
        }
    }
}

fn upper_hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let decoded = match (byte, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => {
                hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h << 4 | l)
            }
            _ => None,
        };
        match decoded {
            Some(value) => {
                out.push(value);
                i += 3;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

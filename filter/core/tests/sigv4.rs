//! SigV4 against the public AWS SigV4 test suite and against AWS's own `aws-sigv4` signer (natively
//! only: the oracle is a native dependency; the test suite's vectors also run in the wasm VM).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

use bedrock_gateway_core::aws::sigv4::{Credentials, RequestToSign, Signer};
use bedrock_gateway_core::aws::time::UtcDateTime;
use std::time::{Duration, UNIX_EPOCH};

const SUITE_TIME: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn suite_credentials(session_token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: session_token.map(str::to_owned),
    }
}

struct SuiteCase {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    host: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    region: &'static str,
    service: &'static str,
    time: u64,
    token: Option<&'static str>,
    signed_headers: &'static str,
    signature: &'static str,
}

const SUITE: &[SuiteCase] = &[
    SuiteCase {
        name: "get-vanilla",
        method: "GET",
        path: "/",
        query: "",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    SuiteCase {
        name: "get-vanilla-with-session-token",
        method: "GET",
        path: "/",
        query: "",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
        signed_headers: "host;x-amz-date;x-amz-security-token",
        signature: "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    },
    SuiteCase {
        name: "double-url-encode",
        method: "POST",
        path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations",
        query: "",
        host: "lambda.us-east-2.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-2",
        service: "lambda",
        time: 1_620_747_645, // 2021-05-11T15:40:45Z
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "4b93abbcc68be32bd64c18e2c71150660ab4c29bbd6c32a383a7517a88fc1804",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded",
        method: "POST",
        path: "/",
        query: "",
        host: "example.amazonaws.com",
        headers: &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "13"),
            ("x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
        ],
        body: b"Param1=value1",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    },
    SuiteCase {
        name: "get-vanilla-query-order-key-case",
        method: "GET",
        path: "/",
        query: "Param2=value2&Param1=value1",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    SuiteCase {
        name: "post-vanilla-query",
        method: "POST",
        path: "/",
        query: "Param1=value1",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    },
    SuiteCase {
        name: "get-utf8",
        method: "GET",
        path: "/ሴ",
        query: "",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    },
    SuiteCase {
        name: "get-vanilla-utf8-query",
        method: "GET",
        path: "/",
        query: "ሴ=bar",
        host: "example.amazonaws.com",
        headers: &[],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    },
    SuiteCase {
        name: "post-header-value-case",
        method: "POST",
        path: "/",
        query: "",
        host: "example.amazonaws.com",
        headers: &[("My-Header1", "VALUE1")],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;my-header1;x-amz-date",
        signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    },
    SuiteCase {
        name: "get-header-value-trim",
        method: "GET",
        path: "/",
        query: "",
        host: "example.amazonaws.com",
        headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
        body: b"",
        region: "us-east-1",
        service: "service",
        time: SUITE_TIME,
        token: None,
        signed_headers: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
];

#[test]
fn matches_the_aws_sigv4_test_suite() {
    for case in SUITE {
        let mut signer = Signer::new();
        let request = RequestToSign {
            method: case.method,
            encoded_path: case.path,
            query: case.query,
            host: case.host,
            extra_headers: case.headers,
            payload: case.body,
        };
        let signed = signer.sign(
            &request,
            &suite_credentials(case.token),
            case.region,
            case.service,
            UtcDateTime::from_unix_seconds(case.time),
        );
        let date = UtcDateTime::from_unix_seconds(case.time).amz_date_stamp();
        let expected = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            case.region, case.service, case.signed_headers, case.signature
        );
        assert_eq!(
            signed.authorization, expected,
            "test-suite case {}",
            case.name
        );
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod against_aws_sigv4 {
    use super::*;
    use aws_credential_types::Credentials as AwsCredentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    /// Signs with AWS's own signer, as the emulator does when it verifies.
    fn aws_signature(
        path: &str,
        host: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        region: &str,
        unix: u64,
        token: Option<&str>,
    ) -> String {
        let identity = AwsCredentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("bedrock")
            .time(UNIX_EPOCH + Duration::from_secs(unix))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let mut headers = vec![("host", host)];
        headers.extend_from_slice(extra);
        let request = SignableRequest::new(
            "POST",
            format!("https://{host}{path}"),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        sign(request, &params).unwrap().signature().to_owned()
    }

    #[allow(clippy::too_many_arguments)]
    fn our_signature(
        signer: &mut Signer,
        path: &str,
        host: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        region: &str,
        unix: u64,
        token: Option<&str>,
    ) -> String {
        let request = RequestToSign {
            method: "POST",
            encoded_path: path,
            query: "",
            host,
            extra_headers: extra,
            payload: body,
        };
        let signed = signer.sign(
            &request,
            &suite_credentials(token),
            region,
            "bedrock",
            UtcDateTime::from_unix_seconds(unix),
        );
        signed
            .authorization
            .rsplit("Signature=")
            .next()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn agrees_with_aws_sigv4_on_bedrock_requests() {
        let models = [
            "us.meta.llama3-2-1b-instruct-v1:0",
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "arn:aws:bedrock:eu-west-1::foundation-model/amazon.titan-embed-text-v2:0",
            "my+model_with.odd~chars",
        ];
        let operations = [
            bedrock_gateway_core::bedrock::Operation::Converse,
            bedrock_gateway_core::bedrock::Operation::ConverseStream,
            bedrock_gateway_core::bedrock::Operation::Invoke,
            bedrock_gateway_core::bedrock::Operation::InvokeWithResponseStream,
        ];
        let bodies: [&[u8]; 3] = [
            b"",
            br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
            "ünïcødé ✓".as_bytes(),
        ];
        let mut signer = Signer::new();
        let mut compared = 0;
        for (i, model) in models.iter().enumerate() {
            for operation in operations {
                for body in bodies {
                    for token in [
                        None,
                        Some("IQoJb3JpZ2luX2VjEJr//////////session+token/with=chars"),
                    ] {
                        let path = bedrock_gateway_core::bedrock::model_path(model, operation);
                        let region = ["us-east-1", "eu-west-1", "ap-southeast-2"][i % 3];
                        let host = format!("bedrock-runtime.{region}.amazonaws.com");
                        let unix = 1_795_000_000 + (i as u64) * 86_399;
                        let extra: &[(&str, &str)] = if body.is_empty() {
                            &[]
                        } else {
                            &[("content-type", "application/json")]
                        };
                        assert_eq!(
                            our_signature(
                                &mut signer,
                                &path,
                                &host,
                                extra,
                                body,
                                region,
                                unix,
                                token
                            ),
                            aws_signature(&path, &host, extra, body, region, unix, token),
                            "model {model} operation {operation:?} token {token:?}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 5 * 4 * 3 * 2);
    }

    #[test]
    fn cached_signing_keys_follow_the_day_and_the_secret() {
        let mut signer = Signer::new();
        let path = "/model/m/converse";
        let day_one = our_signature(
            &mut signer,
            path,
            "h",
            &[],
            b"{}",
            "us-east-1",
            1_795_000_000,
            None,
        );
        // The same request again uses the cached key and must sign identically.
        assert_eq!(
            day_one,
            our_signature(
                &mut signer,
                path,
                "h",
                &[],
                b"{}",
                "us-east-1",
                1_795_000_000,
                None
            )
        );
        // A day later the cached key must not be reused.
        let day_two = our_signature(
            &mut signer,
            path,
            "h",
            &[],
            b"{}",
            "us-east-1",
            1_795_086_400,
            None,
        );
        assert_eq!(
            day_two,
            aws_signature(path, "h", &[], b"{}", "us-east-1", 1_795_086_400, None)
        );
        // Another secret on the same day must not hit the first secret's cached key.
        let other = Credentials {
            secret_access_key: "another-secret".into(),
            ..suite_credentials(None)
        };
        let request = RequestToSign {
            method: "POST",
            encoded_path: path,
            query: "",
            host: "h",
            extra_headers: &[],
            payload: b"{}",
        };
        let with_other = signer.sign(
            &request,
            &other,
            "us-east-1",
            "bedrock",
            UtcDateTime::from_unix_seconds(1_795_086_400),
        );
        assert!(!with_other.authorization.ends_with(&day_two));
    }
}

#[test]
fn model_ids_are_one_encoded_path_segment() {
    use bedrock_gateway_core::bedrock::{model_path, Operation};
    assert_eq!(
        model_path("us.meta.llama3-2-1b-instruct-v1:0", Operation::Converse),
        "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    );
    assert_eq!(
        model_path("arn:aws:bedrock:us-east-1:1:inference-profile/x.y-v1:0", Operation::InvokeWithResponseStream),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx.y-v1%3A0/invoke-with-response-stream"
    );
}

#[test]
fn credentials_debug_output_hides_secrets() {
    let text = format!("{:?}", suite_credentials(Some("token-value")));
    assert!(text.contains(ACCESS_KEY));
    assert!(!text.contains(SECRET_KEY));
    assert!(!text.contains("token-value"));
}

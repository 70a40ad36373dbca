//! Upstream of STS: the IRSA token goes into the form body.
//!
//! On the STS cluster, after `credential_injector` has put the current web identity token (read by
//! Envoy from the projected token file, so it rotates without a restart) into a header, this moves it
//! into the AssumeRoleWithWebIdentity form, where STS expects it.

use super::{Flow, Host, Side};
use crate::aws::credentials;

#[derive(Default)]
pub struct StsStream {
    token: Option<String>,
}

impl StsStream {
    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        self.token = host.header(Side::Request, credentials::WEB_IDENTITY_TOKEN_HEADER);
        host.set_header(Side::Request, credentials::WEB_IDENTITY_TOKEN_HEADER, None);
        if self.token.is_none() || end_of_stream {
            return Flow::Continue;
        }
        Flow::Pause
    }

    pub fn on_request_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        let Some(token) = self.token.as_deref() else {
            return Flow::Continue;
        };
        if !end_of_stream {
            return Flow::Pause;
        }
        let form = host.body(Side::Request);
        let body = credentials::with_web_identity_token(&form, token);
        host.set_header(
            Side::Request,
            "content-length",
            Some(&body.len().to_string()),
        );
        host.replace_body(Side::Request, &body);
        Flow::Continue
    }
}

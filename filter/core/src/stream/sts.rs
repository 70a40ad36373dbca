//! Upstream of STS: the IRSA token goes into the form body.
//!
//! On the STS cluster, after `credential_injector` has put the current web identity token (read by
//! Envoy from the projected token file, so it rotates without a restart) into a header, this moves it
//! into the AssumeRoleWithWebIdentity form, where STS expects it.

use super::{reply_with_error, request_not_rewritten, Flow, Host, HostCallFailed, Side};
use crate::aws::credentials;
use crate::errors::ApiFormat;

#[derive(Default)]
pub struct StsStream {
    token: Option<String>,
}

impl StsStream {
    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        self.token = host.header(Side::Request, credentials::WEB_IDENTITY_TOKEN_HEADER);
        if let Err(failed) =
            host.set_header(Side::Request, credentials::WEB_IDENTITY_TOKEN_HEADER, None)
        {
            return refuse(host, &failed);
        }
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
        let length = body.len().to_string();
        let rewritten = host
            .set_header(Side::Request, "content-length", Some(&length))
            .and_then(|()| host.replace_body(Side::Request, &body));
        match rewritten {
            Ok(()) => Flow::Continue,
            Err(failed) => refuse(host, &failed),
        }
    }
}

/// A call to STS that could not be rewritten is answered here: the broker records the failed
/// fetch, and STS never receives a form without the token.
fn refuse(host: &mut impl Host, failed: &HostCallFailed) -> Flow {
    reply_with_error(host, &request_not_rewritten(failed), ApiFormat::Bedrock)
}

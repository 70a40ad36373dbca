//! The AWS shared credentials file a `BackendSecurityPolicy`'s Secret holds (key `credentials`):
//!
//! ```ini
//! [default]
//! aws_access_key_id = AKIDEXAMPLE
//! aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
//! aws_session_token = ...        ; optional
//! ```
//!
//! Section names are profile names (the config file's `[profile x]` form is accepted too). Comments
//! start with `#` or `;`. Errors never quote a value, since values are secrets.

#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StaticKeys {{ access_key_id: {:?}, .. }}",
            self.access_key_id
        )
    }
}

/// The keys of `profile`, or why there are none.
pub fn profile_keys(file: &str, profile: &str) -> Result<StaticKeys, String> {
    let mut in_profile = false;
    let mut seen_profile = false;
    let (mut access_key_id, mut secret_access_key, mut session_token) = (None, None, None);
    for (number, raw_line) in file.lines().enumerate() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let section = section.trim();
            let name = section.strip_prefix("profile ").map_or(section, str::trim);
            in_profile = name == profile;
            seen_profile |= in_profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected `key = value` or `[profile]`",
                number + 1
            ));
        };
        if !in_profile {
            continue;
        }
        let value = value.trim().to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key_id = Some(value),
            "aws_secret_access_key" => secret_access_key = Some(value),
            "aws_session_token" => session_token = Some(value).filter(|v| !v.is_empty()),
            _ => {} // region, output, role_arn...: not credentials
        }
    }
    if !seen_profile {
        return Err(format!("no profile [{profile}]"));
    }
    match (access_key_id, secret_access_key) {
        (Some(access_key_id), Some(secret_access_key))
            if !access_key_id.is_empty() && !secret_access_key.is_empty() =>
        {
            Ok(StaticKeys {
                access_key_id,
                secret_access_key,
                session_token,
            })
        }
        _ => Err(format!(
            "profile [{profile}] lacks aws_access_key_id or aws_secret_access_key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# keys\n[default]\naws_access_key_id = AKID1\naws_secret_access_key = secret/1+x=\n\n\
                        [profile prod]\n; comment\naws_access_key_id=AKID2\naws_secret_access_key=s2\naws_session_token = tok\nregion = eu-west-1\n";

    #[test]
    fn reads_the_named_profile_only() {
        let default = profile_keys(FILE, "default").unwrap();
        assert_eq!(
            (
                default.access_key_id.as_str(),
                default.secret_access_key.as_str()
            ),
            ("AKID1", "secret/1+x=")
        );
        assert_eq!(default.session_token, None);
        let prod = profile_keys(FILE, "prod").unwrap();
        assert_eq!(prod.access_key_id, "AKID2");
        assert_eq!(prod.session_token.as_deref(), Some("tok"));
    }

    #[test]
    fn missing_profile_or_keys_are_errors_that_quote_no_secret() {
        assert_eq!(
            profile_keys(FILE, "staging").unwrap_err(),
            "no profile [staging]"
        );
        let error = profile_keys("[default]\naws_access_key_id = AKID\n", "default").unwrap_err();
        assert!(error.contains("lacks"), "{error}");
        let error = profile_keys("[default]\nnot a line with secret\n", "default").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }
}

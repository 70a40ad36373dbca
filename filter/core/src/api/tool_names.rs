//! Callers' tool names as Bedrock takes them, and back.
//!
//! Bedrock names a tool by `[a-zA-Z0-9_-]{1,64}` alone. Agents group tools in namespaces (Codex's
//! `namespace` tools: `multi_agent_v1` holding `spawn_agent`, ...) and want each call back with the
//! namespace and the member's name apart, and declare freeform `custom` tools whose calls come back
//! as a different item. The Bedrock name of a tool is a function of what the caller wrote
//! ([`bedrock_name`]), so the history of earlier turns translates the same way with nothing kept
//! between requests; within one request, [`ToolNames`] maps Bedrock's calls back.

use crate::errors::GatewayError;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Bedrock's longest tool name.
const MAX_NAME: usize = 64;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_bedrock_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(is_name_char)
}

/// The name Bedrock sees for a caller's tool: the name itself when it is one Bedrock takes and has
/// no namespace; `{namespace}__{name}` when that fits; otherwise the name's valid characters cut
/// short, with a digest of the whole that keeps it unique.
pub fn bedrock_name<'a>(namespace: Option<&str>, name: &'a str) -> Cow<'a, str> {
    let joined = match namespace {
        None if is_bedrock_name(name) => return Cow::Borrowed(name),
        None => name.to_owned(),
        Some(namespace) => format!("{namespace}__{name}"),
    };
    if is_bedrock_name(&joined) {
        return Cow::Owned(joined);
    }
    let mut digest = Sha256::new();
    digest.update(namespace.unwrap_or_default().as_bytes());
    digest.update([0]);
    digest.update(name.as_bytes());
    let digest = digest.finalize();
    let mut hex_digest = [0u8; 8];
    let _ = hex::encode_to_slice(digest.get(..4).unwrap_or_default(), &mut hex_digest);
    let digest = std::str::from_utf8(&hex_digest).unwrap_or_default();
    let readable: String = joined
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .take(MAX_NAME - digest.len() - 1)
        .collect();
    Cow::Owned(format!("{readable}_{digest}"))
}

/// [`bedrock_name`] of a name a request holds, still borrowed from the request when unchanged.
pub fn bedrock_name_of<'a>(namespace: Option<&str>, name: Cow<'a, str>) -> Cow<'a, str> {
    let renamed = match bedrock_name(namespace, &name) {
        Cow::Owned(renamed) => Some(renamed),
        Cow::Borrowed(_) => None,
    };
    renamed.map_or(name, Cow::Owned)
}

/// What kind of tool a call is for, as the caller declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    Function,
    /// Freeform input: Bedrock sees one string member, `input`.
    Custom,
}

/// A tool whose Bedrock name is not simply its own: a namespace's member, or a custom tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenamedTool {
    pub bedrock: String,
    pub namespace: Option<String>,
    pub name: String,
    pub kind: ToolKind,
}

/// The caller's name for a tool Bedrock called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerTool<'a> {
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub kind: ToolKind,
}

/// One request's renamed tools; empty for most requests, which pay nothing for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames(Vec<RenamedTool>);

impl ToolNames {
    /// Adds a tool; two tools that would reach Bedrock under one name are refused.
    pub fn add(&mut self, tool: RenamedTool) -> Result<(), GatewayError> {
        if self.0.iter().any(|t| t.bedrock == tool.bedrock) {
            return Err(GatewayError::invalid_request(format!(
                "tools: two tools would reach Bedrock as `{}`; rename one.",
                tool.bedrock
            )));
        }
        self.0.push(tool);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller's tool for a name Bedrock's model called. A model may call a namespace's member
    /// by its bare name: when exactly one member has it, the call is that member's.
    pub fn caller_tool<'a>(&'a self, called: &'a str) -> CallerTool<'a> {
        let found = self.0.iter().find(|t| t.bedrock == called).or_else(|| {
            let mut bare = self.0.iter().filter(|t| t.name == called);
            match (bare.next(), bare.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        });
        match found {
            Some(tool) => CallerTool {
                namespace: tool.namespace.as_deref(),
                name: &tool.name,
                kind: tool.kind,
            },
            None => CallerTool {
                namespace: None,
                name: called,
                kind: ToolKind::Function,
            },
        }
    }
}

/// The schema Bedrock sees for a custom tool: its freeform text as one string member.
pub const CUSTOM_TOOL_SCHEMA: &str = r#"{"type":"object","properties":{"input":{"type":"string","description":"The tool's whole input, as free text."}},"required":["input"]}"#;

/// A custom tool call's input as Bedrock's model wrote it (`{"input": "..."}`), as free text; any
/// other JSON is passed on as it is, so that nothing the model wrote is lost.
pub fn custom_input(arguments: &str) -> Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Input<'a> {
        #[serde(borrow)]
        input: Cow<'a, str>,
    }
    match serde_json::from_str::<Input<'_>>(arguments) {
        Ok(parsed) => parsed.input,
        Err(_) => Cow::Borrowed(arguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_bedrock_takes_as_they_are_others_joined_or_shortened() {
        assert_eq!(bedrock_name(None, "exec_command"), "exec_command");
        assert_eq!(
            bedrock_name(Some("multi_agent_v1"), "spawn_agent"),
            "multi_agent_v1__spawn_agent"
        );
        let dotted = bedrock_name(Some("mcp.github"), "create.issue");
        assert!(is_bedrock_name(&dotted), "{dotted}");
        assert_ne!(dotted, bedrock_name(Some("mcp_github"), "create_issue"));
        let long = "x".repeat(80);
        let shortened = bedrock_name(Some("ns"), &long);
        assert!(
            is_bedrock_name(&shortened) && shortened.len() == 64,
            "{shortened}"
        );
        assert_eq!(
            shortened,
            bedrock_name(Some("ns"), &long),
            "the same every time"
        );
    }

    #[test]
    fn calls_map_back_by_bedrock_name_or_a_unique_bare_name() {
        let mut names = ToolNames::default();
        for (namespace, name) in [("a", "spawn"), ("a", "wait"), ("b", "wait")] {
            names
                .add(RenamedTool {
                    bedrock: bedrock_name(Some(namespace), name).into_owned(),
                    namespace: Some(namespace.into()),
                    name: name.into(),
                    kind: ToolKind::Function,
                })
                .unwrap();
        }
        assert_eq!(names.caller_tool("b__wait").namespace, Some("b"));
        assert_eq!(names.caller_tool("spawn").namespace, Some("a"));
        assert_eq!(
            names.caller_tool("wait").namespace,
            None,
            "two members: left alone"
        );
        assert_eq!(names.caller_tool("exec").name, "exec");
        assert!(names
            .add(RenamedTool {
                bedrock: "a__spawn".into(),
                namespace: None,
                name: "a__spawn".into(),
                kind: ToolKind::Custom,
            })
            .is_err());
        assert_eq!(
            custom_input(r#"{"input":"*** Begin Patch"}"#),
            "*** Begin Patch"
        );
        assert_eq!(custom_input("not json"), "not json");
    }
}

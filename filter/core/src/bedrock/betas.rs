//! Anthropic beta flags as Bedrock takes them.
//!
//! Bedrock fails a whole InvokeModel request (400, "invalid beta flag") when one flag in
//! `anthropic_beta` is not one it accepts, and fails on request fields that only a missing flag
//! would allow ("Extra inputs are not permitted"). Clients such as Claude Code send flags meant
//! for Anthropic's own API, so the gateway forwards only the accepted ones (renaming those
//! Bedrock knows under another name), drops the rest, and removes the fields that only the
//! dropped flags allow. The lists are the operator's to change in the plugin configuration
//! (`anthropic_beta`), since Bedrock's acceptance changes over time and by model.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Flags Bedrock has been seen to accept on InvokeModel for current Claude models.
pub const DEFAULT_ACCEPTED: &[&str] = &[
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "dev-full-thinking-2025-05-14",
    "effort-2025-11-24",
    "fine-grained-tool-streaming-2025-05-14",
    "interleaved-thinking-2025-05-14",
    "mcp-client-2025-04-04",
    "mcp-client-2025-11-20",
    "model-context-window-exceeded-2025-08-26",
    "output-128k-2025-02-19",
    "pdfs-2024-09-25",
    "search-results-2025-06-09",
    "structured-outputs-2025-12-15",
    "token-counting-2024-11-01",
    "token-efficient-tools-2025-02-19",
    "tool-search-tool-2025-10-19",
    "web-search-2025-03-05",
];

/// Flags Bedrock knows under another name: (Anthropic's, Bedrock's).
pub const DEFAULT_RENAMED: &[(&str, &str)] = &[(
    "advanced-tool-use-2025-11-20",
    "tool-search-tool-2025-10-19",
)];

/// The flag that allows `cache_control.scope` (Claude Code's `"scope": "global"`).
const CACHE_SCOPE_FLAG: &str = "prompt-caching-scope-2026-01-05";
/// The flag under which Bedrock allows tools' `defer_loading`.
const TOOL_SEARCH_FLAG: &str = "tool-search-tool-2025-10-19";
/// The flag that allows the top-level `context_management`.
const CONTEXT_MANAGEMENT_FLAG: &str = "context-management-2025-06-27";

/// Which flags go to Bedrock, as the plugin configuration states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetaPolicy {
    accepted: Vec<String>,
    renamed: Vec<(String, String)>,
}

impl Default for BetaPolicy {
    fn default() -> Self {
        Self {
            accepted: DEFAULT_ACCEPTED.iter().map(|f| (*f).to_owned()).collect(),
            renamed: DEFAULT_RENAMED
                .iter()
                .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
                .collect(),
        }
    }
}

/// `{"accepted": [...], "renamed": {"anthropic-name": "bedrock-name"}}`; a list left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBetaPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accepted: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renamed: Option<BTreeMap<String, String>>,
}

impl RawBetaPolicy {
    /// Neither list stated: the defaults (or the top-level lists) apply.
    pub fn is_default(&self) -> bool {
        self.accepted.is_none() && self.renamed.is_none()
    }

    /// A backend's lists, where it states them, over the top-level ones.
    pub fn over(self, top: &RawBetaPolicy) -> RawBetaPolicy {
        RawBetaPolicy {
            accepted: self.accepted.or_else(|| top.accepted.clone()),
            renamed: self.renamed.or_else(|| top.renamed.clone()),
        }
    }

    pub fn resolve(self) -> Result<BetaPolicy, String> {
        let mut policy = BetaPolicy::default();
        if let Some(accepted) = self.accepted {
            if let Some(bad) = accepted.iter().find(|f| !is_flag_name(f)) {
                return Err(format!(
                    "anthropic_beta.accepted: {bad:?} is not a beta flag name"
                ));
            }
            policy.accepted = accepted;
        }
        if let Some(renamed) = self.renamed {
            let mut pairs: Vec<(String, String)> = renamed.into_iter().collect();
            pairs.sort();
            if let Some((from, to)) = pairs
                .iter()
                .find(|(from, to)| !is_flag_name(from) || !is_flag_name(to))
            {
                return Err(format!(
                    "anthropic_beta.renamed: {from:?} -> {to:?} is not a pair of beta flag names"
                ));
            }
            policy.renamed = pairs;
        }
        Ok(policy)
    }
}

/// The flags of an `anthropic-beta` header (`a, b`), as written.
pub fn header_flags(header: Option<&str>) -> impl Iterator<Item = &str> {
    header
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
}

fn is_flag_name(flag: &str) -> bool {
    !flag.is_empty()
        && flag.len() <= 128
        && flag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The caller's flags sorted into what goes to Bedrock and what the gateway dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SortedFlags {
    pub forwarded: Vec<String>,
    pub dropped: Vec<String>,
}

impl SortedFlags {
    fn forwards(&self, flag: &str) -> bool {
        self.forwarded.iter().any(|f| f == flag)
    }

    /// What the caller is told was left out (the `x-ai-gateway-dropped-betas` header), if anything.
    pub fn dropped_list(&self) -> Option<String> {
        (!self.dropped.is_empty()).then(|| self.dropped.join(","))
    }
}

impl BetaPolicy {
    pub fn new(accepted: &[&str], renamed: &[(&str, &str)]) -> Self {
        Self {
            accepted: accepted.iter().map(|f| (*f).to_owned()).collect(),
            renamed: renamed
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }

    /// Accepts no flag: for models that have no beta flags.
    pub fn none() -> Self {
        Self {
            accepted: Vec::new(),
            renamed: Vec::new(),
        }
    }

    /// Renames, then keeps the accepted flags once each in the caller's order.
    pub fn sort(&self, requested: &[String]) -> SortedFlags {
        let mut sorted = SortedFlags::default();
        for flag in requested {
            let name = self
                .renamed
                .iter()
                .find(|(from, _)| from == flag)
                .map_or(flag.as_str(), |(_, to)| to.as_str());
            if !self.accepted.iter().any(|a| a == name) {
                if !sorted.dropped.contains(flag) {
                    sorted.dropped.push(flag.clone());
                }
            } else if !sorted.forwards(name) {
                sorted.forwarded.push(name.to_owned());
            }
        }
        sorted
    }
}

/// The body members that only forwarded flags allow: for each member of the Messages body that
/// carries a field whose flag was not forwarded, its rewritten JSON; untouched members are not
/// parsed, so a long conversation without such fields costs one substring search.
pub fn strip_unflagged_fields(
    members: &[(&str, &str)],
    flags: &SortedFlags,
) -> Vec<(String, String)> {
    let strip_scope = !flags.forwards(CACHE_SCOPE_FLAG);
    let strip_defer = !flags.forwards(TOOL_SEARCH_FLAG);
    let mut rewritten = Vec::new();
    for (name, raw) in members {
        let scoped = strip_scope
            && matches!(*name, "system" | "messages" | "tools")
            && raw.contains("\"scope\"");
        let deferred = strip_defer && *name == "tools" && raw.contains("\"defer_loading\"");
        // Claude Code wraps tool search's flag as `custom: {"defer_loading": true}`, a member
        // Bedrock's schema refuses on any tool.
        let wrapped = *name == "tools" && raw.contains("\"custom\"");
        if !scoped && !deferred && !wrapped {
            continue;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        if scoped {
            remove_cache_scope(&mut value);
        }
        if deferred || wrapped {
            if let Value::Array(tools) = &mut value {
                for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
                    unwrap_custom(tool, !strip_defer);
                    if strip_defer {
                        tool.remove("defer_loading");
                    }
                }
            }
        }
        if let Ok(text) = serde_json::to_string(&value) {
            rewritten.push(((*name).to_owned(), text));
        }
    }
    rewritten
}

/// Takes a tool's `custom` member out; with tool search's flag forwarded, a boolean
/// `custom.defer_loading` becomes the tool's own `defer_loading` (one the caller set itself wins).
fn unwrap_custom(tool: &mut serde_json::Map<String, Value>, defer_allowed: bool) {
    let Some(custom) = tool.remove("custom") else {
        return;
    };
    if let Some(defer @ Value::Bool(_)) = custom.get("defer_loading") {
        if defer_allowed && !tool.contains_key("defer_loading") {
            tool.insert("defer_loading".to_owned(), defer.clone());
        }
    }
}

/// Whether the top-level `context_management` must go because its flag was not forwarded.
pub fn strips_context_management(flags: &SortedFlags) -> bool {
    !flags.forwards(CONTEXT_MANAGEMENT_FLAG)
}

/// Removes `scope` from every `cache_control` object, however deep (system blocks, message
/// content blocks, tool results' content, tools).
fn remove_cache_scope(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, member) in object.iter_mut() {
                if key == "cache_control" {
                    if let Value::Object(cache_control) = member {
                        cache_control.remove("scope");
                    }
                } else {
                    remove_cache_scope(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(remove_cache_scope),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn forwards_accepted_flags_renames_and_drops_the_rest() {
        let sorted = BetaPolicy::default().sort(&flags(&[
            "claude-code-20250219",
            "interleaved-thinking-2025-05-14",
            "advanced-tool-use-2025-11-20",
            "tool-search-tool-2025-10-19",
            "prompt-caching-scope-2026-01-05",
            "interleaved-thinking-2025-05-14",
        ]));
        assert_eq!(
            sorted.forwarded,
            flags(&[
                "interleaved-thinking-2025-05-14",
                "tool-search-tool-2025-10-19"
            ])
        );
        assert_eq!(
            sorted.dropped,
            flags(&["claude-code-20250219", "prompt-caching-scope-2026-01-05"])
        );
        assert_eq!(
            sorted.dropped_list().as_deref(),
            Some("claude-code-20250219,prompt-caching-scope-2026-01-05")
        );
        assert_eq!(BetaPolicy::default().sort(&[]).dropped_list(), None);
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let raw: RawBetaPolicy = serde_json::from_str(
            r#"{"accepted":["claude-code-20250219"],"renamed":{"old-1":"claude-code-20250219"}}"#,
        )
        .unwrap();
        let policy = raw.resolve().unwrap();
        let sorted = policy.sort(&flags(&["old-1", "interleaved-thinking-2025-05-14"]));
        assert_eq!(sorted.forwarded, flags(&["claude-code-20250219"]));
        assert_eq!(sorted.dropped, flags(&["interleaved-thinking-2025-05-14"]));
        let bad: RawBetaPolicy = serde_json::from_str(r#"{"accepted":["a b"]}"#).unwrap();
        assert!(bad.resolve().unwrap_err().contains("not a beta flag name"));
        assert!(serde_json::from_str::<RawBetaPolicy>(r#"{"allowed":[]}"#).is_err());
    }

    #[test]
    fn strips_fields_only_dropped_flags_allow() {
        let system = r#"[{"type":"text","text":"You are Claude Code","cache_control":{"type":"ephemeral","scope":"global"}}]"#;
        let messages = r#"[{"role":"user","content":[{"type":"text","text":"the word \"scope\" stays","cache_control":{"type":"ephemeral"}}]}]"#;
        let tools = r#"[{"name":"Read","input_schema":{"type":"object","properties":{"scope":{"type":"string"}}},"defer_loading":true,"cache_control":{"type":"ephemeral","scope":"global","ttl":"1h"}}]"#;
        let members = [("system", system), ("messages", messages), ("tools", tools)];
        let none = SortedFlags::default();
        let rewritten = strip_unflagged_fields(&members, &none);
        let names: Vec<&str> = rewritten.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["system", "tools"],
            "messages with no scope member are not rewritten"
        );
        let system: Value = serde_json::from_str(&rewritten[0].1).unwrap();
        assert_eq!(
            system[0]["cache_control"],
            serde_json::json!({"type": "ephemeral"})
        );
        let tools: Value = serde_json::from_str(&rewritten[1].1).unwrap();
        assert_eq!(
            tools[0]["cache_control"],
            serde_json::json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert!(tools[0].get("defer_loading").is_none());
        assert_eq!(
            tools[0]["input_schema"]["properties"]["scope"]["type"],
            "string"
        );
        assert!(strips_context_management(&none));

        let flagged = SortedFlags {
            forwarded: flags(&[CACHE_SCOPE_FLAG, TOOL_SEARCH_FLAG, CONTEXT_MANAGEMENT_FLAG]),
            dropped: vec![],
        };
        assert!(strip_unflagged_fields(&members, &flagged).is_empty());
        assert!(!strips_context_management(&flagged));
    }

    /// Claude Code's tool search: `custom.defer_loading` is hoisted when the flag is forwarded,
    /// and `custom` never reaches Bedrock.
    #[test]
    fn claude_codes_wrapped_defer_loading_is_hoisted_or_dropped() {
        let tools = r#"[{"name":"mcp__docs__search","input_schema":{"type":"object"},"custom":{"defer_loading":true}},{"name":"Read","input_schema":{"type":"object"},"custom":{"defer_loading":false},"defer_loading":true},{"type":"custom","name":"Edit","input_schema":{"type":"object"}}]"#;
        let members = [("tools", tools)];
        let flagged = SortedFlags {
            forwarded: flags(&[TOOL_SEARCH_FLAG]),
            dropped: vec![],
        };
        let rewritten = strip_unflagged_fields(&members, &flagged);
        let tools: Value = serde_json::from_str(&rewritten[0].1).unwrap();
        assert_eq!(tools[0]["defer_loading"], true);
        assert_eq!(
            tools[1]["defer_loading"], true,
            "the caller's own flag wins"
        );
        assert!(tools
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("custom").is_none()));
        assert_eq!(
            tools[2]["type"], "custom",
            "a tool's type is not the member"
        );

        let rewritten = strip_unflagged_fields(&members, &SortedFlags::default());
        let tools: Value = serde_json::from_str(&rewritten[0].1).unwrap();
        assert!(tools
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("custom").is_none() && t.get("defer_loading").is_none()));
    }
}

//! The emulator's deterministic model: it reads a conversation (from a Converse or an
//! Anthropic body) and answers predictably, so tests can assert exact content.
//!
//! - The reply contains the last user message's text verbatim.
//! - With tools offered and a user turn last, it calls the first tool (or the forced one)
//!   with every required property of the input schema filled.
//! - After a tool result, the reply contains the result's text.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Thinking {
        text: String,
        signature: String,
    },
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub blocks: Vec<Block>,
    pub stop_reason: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The reply's first text cites this document (its citations were enabled).
    pub citation: Option<Citation>,
}

/// What the reply cites: a passage of a document (`documentChar`), or a web page Nova's web
/// grounding found (`web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    pub title: String,
    pub cited_text: String,
    pub location: CitationLocation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CitationLocation {
    DocumentChar {
        document_index: usize,
        start: usize,
        end: usize,
    },
    Web {
        url: String,
        domain: String,
    },
}

#[derive(Debug, Default)]
pub struct Conversation {
    pub last_role_is_user: bool,
    pub last_user_text: String,
    pub last_tool_result: Option<String>,
    pub tools: Vec<(String, Value)>,
    /// `Some(None)`: any tool; `Some(Some(name))`: that tool; `None`: the model decides.
    pub forced_tool: Option<Option<String>>,
    pub tools_disabled: bool,
    pub input_words: u64,
    pub max_tokens: Option<u64>,
    pub stop_sequences: Vec<String>,
    /// Extended thinking was requested: the reply starts with a signed thinking block.
    pub thinking: bool,
    /// The prompt's blocks as the cache sees them, and where the request put its breakpoints.
    pub cache_prefix: Option<CachePrefix>,
    /// Attachments of the last user turn, described in the reply: `image/png, 8 bytes`.
    pub last_user_attachments: Vec<String>,
    /// The last user turn's first document with citations enabled: its index among the turn's
    /// documents, name and text (a `txt` document's; others cite their name).
    pub cited_document: Option<(usize, String, String)>,
    /// The reply must be JSON following this schema (structured output).
    pub output_schema: Option<Value>,
    /// Nova's web grounding (`systemTool` `nova_grounding`): the reply cites a web page.
    pub web_grounding: bool,
}

/// A prompt as the prompt cache sees it: for each content block in order (tools, system, messages;
/// cache points themselves left out), the input tokens up to and including it and a digest of every
/// block up to it; and the breakpoints, as the number of blocks before each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CachePrefix {
    pub boundaries: Vec<(u64, u64)>,
    pub points: Vec<usize>,
}

/// How far before a breakpoint Bedrock looks for an earlier cached prefix (about 20 blocks, as
/// AWS describes Claude's simplified caching): a conversation that grew by a turn still reads
/// what the turn before it wrote.
pub const CACHE_LOOKBACK_BLOCKS: usize = 20;

impl CachePrefix {
    /// Adds one content block; `point_after`: the request puts a breakpoint right after it.
    pub fn push(&mut self, block: &Value, point_after: bool) {
        use std::hash::{Hash, Hasher};
        let (tokens, previous) = self.boundaries.last().copied().unwrap_or_default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        previous.hash(&mut hasher);
        block.to_string().hash(&mut hasher);
        self.boundaries
            .push((tokens + word_count(&block.to_string()), hasher.finish()));
        if point_after {
            self.point();
        }
    }

    /// A breakpoint after the blocks so far.
    pub fn point(&mut self) {
        if !self.boundaries.is_empty() {
            self.points.push(self.boundaries.len());
        }
    }

    /// `None` when the request has no breakpoint.
    pub fn finish(self) -> Option<CachePrefix> {
        (!self.points.is_empty()).then_some(self)
    }
}

/// Usage of the prompt cache for one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    pub read: u64,
    pub written: u64,
}

/// A stand-in signature: deterministic, tied to the thinking text, opaque to callers.
pub fn signature_for(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("EmulatorSig{hash:016x}")
}

pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// A value for every required property of a JSON schema.
pub fn fill_schema(schema: &Value) -> Value {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None if schema.get("properties").is_some() => {
            let mut object = Map::new();
            let properties = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties
                    .and_then(|p| p.get(name))
                    .cloned()
                    .unwrap_or(json!({}));
                object.insert(name.to_owned(), fill_schema(&property));
            }
            Value::Object(object)
        }
        Some("object") => json!({}),
        Some("string") => match schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            Some(first) => first.clone(),
            None => json!("example"),
        },
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        _ => json!("example"),
    }
}

pub fn reply(conversation: &Conversation, tool_use_id: &str) -> Reply {
    let mut blocks = Vec::new();
    let mut stop_reason = "end_turn";
    if conversation.thinking {
        let text = format!("The user wrote: {}", conversation.last_user_text);
        blocks.push(Block::Thinking {
            signature: signature_for(&text),
            text,
        });
    }
    if let Some(result) = &conversation.last_tool_result {
        blocks.push(Block::Text(format!("The tool returned: {result}")));
    } else if conversation.last_role_is_user
        && !conversation.tools.is_empty()
        && !conversation.tools_disabled
    {
        // A tool the user names is the one called (the longest name it mentions, so that
        // `ns__close_agent` wins over `close_agent`); else the first. Tests steer agents this way.
        let mentioned = conversation
            .tools
            .iter()
            .filter(|(n, _)| conversation.last_user_text.contains(n.as_str()))
            .max_by_key(|(n, _)| n.len());
        let chosen = match &conversation.forced_tool {
            Some(Some(name)) => conversation.tools.iter().find(|(n, _)| n == name),
            _ => mentioned.or(conversation.tools.first()),
        };
        if let Some((name, schema)) = chosen {
            blocks.push(Block::Text(format!("I will call {name}.")));
            blocks.push(Block::ToolUse {
                id: tool_use_id.to_owned(),
                name: name.clone(),
                input: fill_schema(schema),
            });
            stop_reason = "tool_use";
        }
    }
    if !blocks
        .iter()
        .any(|b| matches!(b, Block::Text(_) | Block::ToolUse { .. }))
    {
        let text = match &conversation.output_schema {
            Some(schema) => fill_schema(schema).to_string(),
            None => {
                let mut text = format!("You said: {}", conversation.last_user_text);
                for attachment in &conversation.last_user_attachments {
                    text.push_str(&format!(" [{attachment}]"));
                }
                text
            }
        };
        blocks.push(Block::Text(text));
    }

    // Stop sequences and max_tokens cut the text like a real model would.
    for block in &mut blocks {
        if let Block::Text(text) = block {
            if let Some(at) = conversation
                .stop_sequences
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(at);
                stop_reason = "stop_sequence";
            }
        }
    }
    let mut output_tokens = 0u64;
    if let Some(limit) = conversation.max_tokens {
        for block in &mut blocks {
            if let Block::Text(text) = block {
                let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
                let remaining = limit.saturating_sub(output_tokens) as usize;
                if words.iter().filter(|w| !w.trim().is_empty()).count() > remaining {
                    *text = words
                        .into_iter()
                        .take(remaining)
                        .collect::<String>()
                        .trim_end()
                        .to_owned();
                    stop_reason = "max_tokens";
                }
            }
            output_tokens += block_tokens(block);
        }
        if stop_reason == "max_tokens" {
            blocks.retain(|b| !matches!(b, Block::ToolUse { .. }));
        }
    }
    let output_tokens = blocks.iter().map(block_tokens).sum::<u64>().max(1);
    // The first sentence of a document whose citations are on is what the reply cites.
    let citation = conversation
        .cited_document
        .as_ref()
        .filter(|_| blocks.iter().any(|b| matches!(b, Block::Text(_))))
        .map(|(index, name, text)| {
            let cited: String = text
                .split_inclusive('.')
                .next()
                .unwrap_or(text)
                .chars()
                .take(200)
                .collect();
            Citation {
                title: name.clone(),
                location: CitationLocation::DocumentChar {
                    document_index: *index,
                    start: 0,
                    end: cited.chars().count(),
                },
                cited_text: cited,
            }
        })
        .or_else(|| {
            // A grounded reply cites the page its answer came from.
            let answer = blocks.iter().find_map(|b| match b {
                Block::Text(text) => Some(text.clone()),
                _ => None,
            })?;
            conversation.web_grounding.then(|| Citation {
                title: "Emulator News".into(),
                cited_text: answer,
                location: CitationLocation::Web {
                    url: "https://news.example.com/emulator".into(),
                    domain: "news.example.com".into(),
                },
            })
        });
    Reply {
        blocks,
        stop_reason,
        input_tokens: conversation.input_words.max(1),
        output_tokens,
        citation,
    }
}

fn block_tokens(block: &Block) -> u64 {
    match block {
        Block::Thinking { text, .. } | Block::Text(text) => word_count(text),
        Block::ToolUse { input, .. } => 5 + word_count(&input.to_string()),
    }
}

/// Splits text into stream deltas of a few words each (at least two deltas for any text with a space).
pub fn split_into_deltas(text: &str) -> Vec<String> {
    let mut deltas = Vec::new();
    let mut current = String::new();
    for (i, piece) in text.split_inclusive(' ').enumerate() {
        current.push_str(piece);
        if i % 2 == 1 {
            deltas.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        deltas.push(current);
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_required_properties_by_type() {
        let schema = json!({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},"unit":{"type":"string","enum":["c","f"]}},"required":["city","days","unit"]});
        assert_eq!(
            fill_schema(&schema),
            json!({"city":"example","days":1,"unit":"c"})
        );
    }

    #[test]
    fn deltas_rebuild_the_text() {
        let text = "You said: hello there general kenobi";
        let deltas = split_into_deltas(text);
        assert!(deltas.len() >= 3);
        assert_eq!(deltas.concat(), text);
    }

    #[test]
    fn max_tokens_truncates_and_reports() {
        let conversation = Conversation {
            last_role_is_user: true,
            last_user_text: "one two three four five".into(),
            max_tokens: Some(3),
            ..Default::default()
        };
        let reply = reply(&conversation, "t");
        assert_eq!(reply.stop_reason, "max_tokens");
        assert_eq!(reply.blocks, vec![Block::Text("You said: one".into())]);
        assert_eq!(reply.output_tokens, 3);
    }
}

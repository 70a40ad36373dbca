//! Envoy's YAML as a typed tree ([`Node`]: maps, sequences, scalars, anchors, aliases, block
//! literals, each map entry and sequence item with the comments a reader of `envoy.yaml` needs),
//! and the one writer that lays it out. Builders never deal with indentation: nesting is the
//! tree's, so a block cannot land at the wrong depth.
//!
//! Every value that comes from the resources goes through [`string`] (a JSON string, which YAML
//! reads as a double-quoted scalar), so no input can change the structure. [`plain`] is for what
//! the renderer itself writes: numbers, enums, durations, type URLs, constant one-line snippets.

use serde_json::Value;
use std::fmt::Display;

/// A YAML scalar that reads back as exactly `text`.
fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// One YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar written as it is.
    Plain(String),
    Map(Map),
    Seq(Seq),
    /// `*name`, a value defined once with [`Map::anchor`].
    Alias(&'static str),
    /// A block literal (`|`): the text's lines, one indent deeper than its key.
    Literal(String),
}

/// A scalar the renderer writes itself (not from the resources).
pub fn plain(value: impl Display) -> Node {
    Node::Plain(value.to_string())
}

/// A string from the resources or the plan, double-quoted: it reads back as exactly `text`.
pub fn string(text: &str) -> Node {
    Node::Plain(quoted(text))
}

/// A mapping: one entry per line (block), or `{ k: v, ... }` on one line (flow).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    entries: Vec<Entry>,
    flow: bool,
    anchor: Option<&'static str>,
    /// Comments waiting for the next entry.
    pending: Vec<String>,
    blank_pending: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    blank_before: bool,
    comments: Vec<String>,
    key: String,
    value: Node,
}

/// How a sequence is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeqStyle {
    /// One `- item` per line, at the indent of the sequence's key.
    #[default]
    Block,
    /// `[ a, b ]` on one line.
    Flow,
    /// `[a, b]` on one line.
    Compact,
}

/// A sequence.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Seq {
    items: Vec<Item>,
    style: SeqStyle,
    pending: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    comments: Vec<String>,
    value: Node,
}

impl Map {
    pub fn block() -> Map {
        Map::default()
    }

    pub fn flow() -> Map {
        Map {
            flow: true,
            ..Map::default()
        }
    }

    /// Names this map for aliases ([`Node::Alias`]) further down the document.
    pub fn anchor(mut self, name: &'static str) -> Map {
        self.anchor = Some(name);
        self
    }

    /// A comment line above the next entry (block maps only).
    pub fn comment(mut self, text: impl Into<String>) -> Map {
        self.note(text);
        self
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Map {
        self.pending.push(text.into());
        self
    }

    /// An empty line above the next entry (and its comments).
    pub fn blank(mut self) -> Map {
        self.blank_pending = true;
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Node>) -> Map {
        self.push(key, value);
        self
    }

    /// An entry whose key comes from the resources, quoted.
    pub fn with_quoted(self, key: &str, value: impl Into<Node>) -> Map {
        let key = quoted(key);
        self.with(&key, value)
    }

    pub fn push(&mut self, key: &str, value: impl Into<Node>) -> &mut Map {
        self.entries.push(Entry {
            blank_before: std::mem::take(&mut self.blank_pending),
            comments: std::mem::take(&mut self.pending),
            key: key.to_owned(),
            value: value.into(),
        });
        self
    }

    /// `other`'s entries after this map's own (with this map's pending comments above them).
    pub fn extend(mut self, other: Map) -> Map {
        let mut entries = other.entries.into_iter();
        if let Some(mut first) = entries.next() {
            first.blank_before |= std::mem::take(&mut self.blank_pending);
            let mut comments = std::mem::take(&mut self.pending);
            comments.append(&mut first.comments);
            first.comments = comments;
            self.entries.push(first);
        }
        self.entries.extend(entries);
        self
    }
}

impl Seq {
    pub fn block() -> Seq {
        Seq::default()
    }

    pub fn flow() -> Seq {
        Seq {
            style: SeqStyle::Flow,
            ..Seq::default()
        }
    }

    pub fn compact() -> Seq {
        Seq {
            style: SeqStyle::Compact,
            ..Seq::default()
        }
    }

    /// A comment line above the next item.
    pub fn comment(mut self, text: impl Into<String>) -> Seq {
        self.note(text);
        self
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Seq {
        self.pending.push(text.into());
        self
    }

    pub fn item(mut self, value: impl Into<Node>) -> Seq {
        self.push(value);
        self
    }

    pub fn push(&mut self, value: impl Into<Node>) -> &mut Seq {
        self.items.push(Item {
            comments: std::mem::take(&mut self.pending),
            value: value.into(),
        });
        self
    }

    /// This sequence laid out as `style`.
    pub fn styled(mut self, style: SeqStyle) -> Seq {
        self.style = style;
        self
    }
}

impl<T: Into<Node>> FromIterator<T> for Seq {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Seq {
        let mut seq = Seq::block();
        for item in items {
            seq.push(item);
        }
        seq
    }
}

impl From<Map> for Node {
    fn from(map: Map) -> Node {
        Node::Map(map)
    }
}

impl From<Seq> for Node {
    fn from(seq: Seq) -> Node {
        Node::Seq(seq)
    }
}

// ---- Writing ------------------------------------------------------------------------------

/// A document: the `header` comment lines, an empty line, then `root`'s entries.
pub fn document(header: &[String], root: &Map) -> String {
    let mut out = String::new();
    for text in header {
        comment_line(&mut out, 0, text);
    }
    if !header.is_empty() {
        out.push('\n');
    }
    write_entries(&mut out, 0, &root.entries);
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn comment_line(out: &mut String, depth: usize, text: &str) {
    indent(out, depth);
    out.push('#');
    if !text.is_empty() {
        out.push(' ');
        out.push_str(text);
    }
    out.push('\n');
}

fn write_entries(out: &mut String, depth: usize, entries: &[Entry]) {
    for entry in entries {
        if entry.blank_before {
            out.push('\n');
        }
        for text in &entry.comments {
            comment_line(out, depth, text);
        }
        indent(out, depth);
        write_entry(out, depth, entry);
    }
}

/// `key: value` from where the line's indent (or `- `) ends; nested blocks go below, `depth`
/// being the indent of the entry's own members' parent.
fn write_entry(out: &mut String, depth: usize, entry: &Entry) {
    out.push_str(&entry.key);
    out.push(':');
    match &entry.value {
        Node::Map(map) if !map.flow && !map.entries.is_empty() => {
            if let Some(anchor) = map.anchor {
                out.push_str(" &");
                out.push_str(anchor);
            }
            out.push('\n');
            write_entries(out, depth + 1, &map.entries);
        }
        Node::Seq(seq) if seq.style == SeqStyle::Block && !seq.items.is_empty() => {
            out.push('\n');
            // Indentless, as Kubernetes writes it: the items at their key's indent.
            write_items(out, depth, &seq.items);
        }
        Node::Literal(text) => {
            out.push_str(" |\n");
            for line in text.lines() {
                if !line.is_empty() {
                    indent(out, depth + 1);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        inline => {
            out.push(' ');
            write_inline(out, inline);
            out.push('\n');
        }
    }
}

fn write_items(out: &mut String, depth: usize, items: &[Item]) {
    for item in items {
        for text in &item.comments {
            comment_line(out, depth, text);
        }
        match &item.value {
            Node::Map(map) if !map.flow && !map.entries.is_empty() => {
                // The first entry's comments go above the dash; its `key: value` follows it.
                let (first, rest) = map.entries.split_at(1);
                for entry in first {
                    for text in &entry.comments {
                        comment_line(out, depth, text);
                    }
                    indent(out, depth);
                    out.push_str("- ");
                    write_entry(out, depth + 1, entry);
                }
                write_entries(out, depth + 1, rest);
            }
            inline => {
                indent(out, depth);
                out.push_str("- ");
                write_inline(out, inline);
                out.push('\n');
            }
        }
    }
}

/// A value on one line: scalars as they are, maps and sequences in flow style.
fn write_inline(out: &mut String, node: &Node) {
    match node {
        Node::Plain(text) => out.push_str(text),
        Node::Alias(name) => {
            out.push('*');
            out.push_str(name);
        }
        Node::Literal(text) => out.push_str(&quoted(text)),
        Node::Map(map) if map.entries.is_empty() => out.push_str("{}"),
        Node::Map(map) => {
            if let Some(anchor) = map.anchor {
                out.push('&');
                out.push_str(anchor);
                out.push(' ');
            }
            out.push_str("{ ");
            for (i, entry) in map.entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&entry.key);
                out.push_str(": ");
                write_inline(out, &entry.value);
            }
            out.push_str(" }");
        }
        Node::Seq(seq) if seq.items.is_empty() => out.push_str("[]"),
        Node::Seq(seq) => {
            let (open, close) = match seq.style {
                SeqStyle::Compact => ("[", "]"),
                SeqStyle::Block | SeqStyle::Flow => ("[ ", " ]"),
            };
            out.push_str(open);
            for (i, item) in seq.items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_inline(out, &item.value);
            }
            out.push_str(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_nest_by_the_tree_and_sequences_sit_at_their_keys_indent() {
        let route = Map::block()
            .comment("the rule")
            .with("match", Map::flow().with("prefix", string("/")))
            .with("route", Map::flow().with("cluster", string("a\"b")));
        let root = Map::block()
            .with("node", Map::flow().with("id", plain("gw")))
            .blank()
            .comment("")
            .with(
                "listeners",
                Seq::block()
                    .comment("first")
                    .item(
                        Map::block().with("name", plain("x")).with(
                            "config",
                            Map::block()
                                .anchor("shared")
                                .with("value", Node::Literal("{\n  \"a\": 1\n}\n".into())),
                        ),
                    )
                    .item(route)
                    .item(Node::Alias("shared")),
            )
            .with("empty", Seq::compact())
            .with("codes", Seq::compact().item(plain(429)));
        let text = document(&["head".into()], &root);
        assert_eq!(
            text,
            "# head\n\nnode: { id: gw }\n\n#\nlisteners:\n# first\n- name: x\n  config: &shared\n    value: |\n      {\n        \"a\": 1\n      }\n# the rule\n- match: { prefix: \"/\" }\n  route: { cluster: \"a\\\"b\" }\n- *shared\nempty: []\ncodes: [429]\n"
        );
        let parsed: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(parsed["listeners"][1]["route"]["cluster"], "a\"b");
        assert_eq!(parsed["listeners"][2]["value"], "{\n  \"a\": 1\n}\n");
    }
}

//! The callers' APIs: each parses its own requests, translates them for Bedrock and translates
//! Bedrock's answers (whole and streamed) back. They sit on [`crate::bedrock`], [`crate::aws`] and
//! [`crate::config`]; the stages in [`crate::stream`] choose among them.

pub mod anthropic;
pub mod bedrock_runtime;
pub mod embeddings;
pub mod images;
pub mod models;
pub mod openai;
pub mod rerank;
pub mod responses;
pub mod tool_names;

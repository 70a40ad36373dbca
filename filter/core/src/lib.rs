//! The host-free core of the Bedrock AI gateway: translation between the callers' APIs (OpenAI,
//! Anthropic) and Bedrock's, SigV4, event-stream decoding, configuration and the credential
//! providers' state machine, as plain functions over bytes and structs, and what each stage does with
//! a request and its response ([`stream`]), tested natively against a fake host. Each host (the
//! proxy-wasm filter in `filter/wasm`) implements [`stream::Host`] over its calls and holds no logic
//! of its own.

pub mod anthropic;
pub mod anthropic_converse;
pub mod bedrock;
pub mod betas;
pub mod broker;
pub mod config;
pub mod costs;
pub mod credentials;
pub mod embeddings;
pub mod errors;
pub mod eventstream;
pub mod gateway;
pub mod headers;
pub mod images;
mod jsonpath;
pub mod models;
pub mod openai;
pub mod openai_bedrock;
pub mod options;
pub mod passthrough;
pub mod rawjson;
pub mod report;
pub mod rerank;
pub mod responses;
pub mod sigv4;
pub mod stream;
pub mod time;
pub mod tool_names;
pub mod translated;

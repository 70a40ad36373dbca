//! An Envoy proxy-wasm filter that serves OpenAI-compatible APIs from AWS Bedrock.
//!
//! Everything but the `wasm` module is host-free: translation, SigV4, event-stream
//! decoding and configuration are plain functions over bytes and structs, tested natively.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod anthropic;
pub mod anthropic_converse;
pub mod bedrock;
pub mod config;
pub mod credentials;
pub mod embeddings;
pub mod errors;
pub mod eventstream;
pub mod gateway;
pub mod headers;
mod jsonpath;
pub mod models;
pub mod openai;
pub mod rawjson;
pub mod sigv4;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod wasm;

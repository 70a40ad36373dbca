//! The host-free core of the Bedrock AI gateway: translation between the callers' APIs (OpenAI,
//! Anthropic, Cohere's rerank, Bedrock's own) and Bedrock's, SigV4, event streams, configuration
//! and the credential providers' state machine, as plain functions over bytes and structs, and
//! what each stage does with a request and its response ([`stream`]), tested natively against a
//! fake host. Each host (the proxy-wasm filter in `filter/wasm`, the dynamic module in
//! `filter/dynamic-module`) implements [`stream::Host`] over its calls and holds no logic of its own.
//!
//! The modules are layered; each imports only from its own layer and those listed before it
//! (`tests/layers.rs` reads every `use crate::` and fails on an import from above):
//!
//! 1. foundations: [`errors`], [`json`], [`headers`], [`translated`];
//! 2. [`aws`]: SigV4, credentials and their broker;
//! 3. [`bedrock`]: Bedrock Runtime's wire shapes, event streams, beta flags, backend options;
//! 4. [`config`]: the plugin configuration and cost formulas;
//! 5. [`api`]: the callers' APIs and their translations;
//! 6. the pipeline: [`gateway`] (a request's route, translation and signing plan), [`report`]
//!    (usage, metrics, traces) and [`stream`] (the stages a host drives).

pub mod errors;
pub mod headers;
pub mod json;
pub mod translated;

pub mod aws;

pub mod bedrock;

pub mod config;

pub mod api;

pub mod gateway;
pub mod report;
pub mod stream;

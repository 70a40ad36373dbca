//! Every request in the corpus of real clients' requests (`tests/fixtures/corpus/<client>/`, written
//! by `make record-clients`: Codex, Claude Code, the Agents SDK, the openai and anthropic SDKs,
//! boto3, LangChain, the Vercel AI SDK) translated for every target it applies to, as `make run`
//! configures them: a Converse backend with prompt caching placed for agents, and an Anthropic
//! backend (InvokeModel with Anthropic's body) for Anthropic's API. What Bedrock would receive is
//! kept as reviewed snapshots (`tests/fixtures/corpus-snapshots/<client>.json`; `UPDATE_GOLDEN=1`
//! rewrites them). The end-to-end suite sends the same requests through Envoy to the emulator,
//! which checks each Converse body against botocore's service model (`test_corpus.py`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

use bedrock_gateway_core::config::Config;
use bedrock_gateway_core::gateway::{self, CallerHeaders, Endpoint};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `make run`'s two backends, as the renderer writes them for `examples/emulator.yaml`.
fn config() -> Config {
    let plugin = json!({
        "backends": {
            "converse": {"schema": "converse", "region": "us-east-1", "prompt_caching": "auto",
                         "credentials": {"source": "inline", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret"}},
            "anthropic": {"schema": "anthropic", "region": "us-east-1",
                          "credentials": {"source": "inline", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret"}}
        }
    });
    Config::parse(plugin.to_string().as_bytes(), &|_| None).unwrap()
}

/// The backends a request goes to: Anthropic's API to both, everything else to Converse.
fn targets(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => &["anthropic", "converse"],
        _ => &["converse"],
    }
}

/// What Bedrock receives for one request and target, or why the gateway refuses it.
fn translate(config: &Config, recorded: &Value, target: &str) -> Value {
    let path = recorded["path"].as_str().unwrap();
    let endpoint = Endpoint::classify("POST", path).unwrap().unwrap();
    let bedrock_model = gateway::bedrock_path_model(path).map(|m| m.unwrap());
    let headers = CallerHeaders {
        anthropic_beta: recorded["headers"]["anthropic-beta"].as_str(),
        bedrock_model: bedrock_model.as_deref(),
        bedrock_service_tier: None,
    };
    let body = serde_json::to_vec(&recorded["body"]).unwrap();
    let backend = config.backend_for_attempt(target, 1).unwrap();
    match gateway::prepare(endpoint, &body, headers, backend, 0) {
        Ok(upstream) => {
            let sent = serde_json::from_slice::<Value>(&upstream.body).unwrap_or(Value::Null);
            let mut out = json!({"path": upstream.path, "body": sent});
            for (name, value) in &upstream.headers {
                out["headers"][name] = json!(value);
            }
            if let Some(batch) = &upstream.batch {
                let inputs: Vec<Value> = batch
                    .bodies
                    .iter()
                    .map(|b| serde_json::from_slice(b).unwrap())
                    .collect();
                out["titan_inputs"] = json!(inputs);
            }
            if let Some(dropped) = &upstream.dropped_betas {
                out["dropped_betas"] = json!(dropped);
            }
            if let Some(dropped) = &upstream.dropped_tools {
                out["dropped_tools"] = json!(dropped);
            }
            out
        }
        Err(error) => json!({"refused": error.status, "message": error.message}),
    }
}

/// Long texts (Claude Code's system prompt, tool descriptions) as their length and a digest: the
/// snapshot keeps every structural change readable in a diff, and still changes with the text.
fn abbreviate(value: &mut Value) {
    use sha2::{Digest, Sha256};
    match value {
        Value::String(text) if text.len() > 160 => {
            let digest = Sha256::digest(text.as_bytes());
            let head: String = text.chars().take(60).collect();
            *text = format!(
                "{head}… ({} bytes, sha256 {})",
                text.len(),
                hex_prefix(&digest)
            );
        }
        Value::Array(items) => items.iter_mut().for_each(abbreviate),
        Value::Object(members) => members.values_mut().for_each(abbreviate),
        _ => {}
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_recorded_client_request_translates_as_its_snapshot_says() {
    let config = config();
    let corpus = fixtures().join("corpus");
    let mut clients: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    clients.sort();
    let mut requests = 0;
    let mut refused = Vec::new();
    for client in clients {
        let name = client.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&client)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut produced = BTreeMap::new();
        for file in files {
            let recorded: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let path = recorded["path"].as_str().unwrap();
            let endpoint = Endpoint::classify("POST", path).unwrap().unwrap();
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            for target in targets(endpoint) {
                let mut translated = translate(&config, &recorded, target);
                if translated.get("refused").is_some() {
                    refused.push(format!(
                        "{name}/{stem} to {target}: {}",
                        translated["message"]
                    ));
                }
                abbreviate(&mut translated);
                produced.insert(format!("{stem}.{target}"), translated);
            }
            requests += 1;
        }
        let snapshot = fixtures()
            .join("corpus-snapshots")
            .join(format!("{name}.json"));
        let produced = Value::Object(produced.into_iter().collect::<Map<String, Value>>());
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
            std::fs::write(
                &snapshot,
                serde_json::to_string_pretty(&produced).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&snapshot)
                .unwrap_or_else(|_| panic!("{} is missing: UPDATE_GOLDEN=1", snapshot.display())),
        )
        .unwrap();
        for (key, value) in produced.as_object().unwrap() {
            assert_eq!(
                Some(value),
                expected.get(key),
                "{name}/{key} differs from {} (UPDATE_GOLDEN=1 rewrites it; review the diff)",
                snapshot.display()
            );
        }
        assert_eq!(
            produced.as_object().unwrap().len(),
            expected.as_object().unwrap().len(),
            "{name}: requests were added or removed; UPDATE_GOLDEN=1"
        );
    }
    assert!(requests >= 100, "the corpus holds {requests} requests");
    // Every recorded request was served when it was recorded: the gateway refuses none of them,
    // to any target they apply to.
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

//! The core's layering, checked: every `crate::` path in a module's code names a module of its own
//! layer or of one below it (the order `lib.rs` documents). An API translator importing a stage, or
//! AWS importing Bedrock, fails here with the file and line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)] // a test stops where it fails

use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first. Modules of one layer may import each other.
const LAYERS: &[&[&str]] = &[
    &["errors", "headers", "json", "translated"],
    &["aws"],
    &["bedrock"],
    &["config"],
    &["api"],
    &["gateway", "report", "stream"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to (`src/api/openai/mod.rs` -> `api`).
fn module_of_file(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Each `crate::<module>` a line of code names (comments are not code).
fn crate_modules(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `bedrock_gateway_core::` or `other_crate::` is not this crate's path.
            !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, prefix)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// The imports that point upwards in `source`, a file of top-level module `module`.
fn upward_imports(module: &str, source: &str) -> Vec<String> {
    let Some(own_layer) = layer_of(module) else {
        return vec![format!(
            "module `{module}` is in no layer: add it to LAYERS and lib.rs"
        )];
    };
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        for imported in crate_modules(line) {
            match layer_of(imported) {
                Some(layer) if layer <= own_layer => {}
                Some(_) => found.push(format!(
                    "line {}: `{module}` imports `crate::{imported}` from a layer above it",
                    number + 1
                )),
                None => found.push(format!(
                    "line {}: `crate::{imported}` is in no layer",
                    number + 1
                )),
            }
        }
    }
    found
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn no_module_of_the_core_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 30,
        "found only {} files under {src:?}",
        files.len()
    );
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative == Path::new("lib.rs") {
            continue;
        }
        let module = module_of_file(relative).unwrap();
        let source = std::fs::read_to_string(file).unwrap();
        for violation in upward_imports(&module, &source) {
            violations.push(format!("{}: {violation}", relative.display()));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_top_level_module_is_in_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod ").or(line.strip_prefix("mod ")))
        .map(|rest| rest.trim_end_matches(';'))
        .collect();
    assert!(declared.len() >= 10, "{declared:?}");
    for module in declared {
        assert!(layer_of(module).is_some(), "`{module}` is in no layer");
    }
}

#[test]
fn the_check_finds_an_import_from_above_and_ignores_comments_and_other_crates() {
    let source = "use crate::errors::GatewayError;\n\
                  use crate::stream::Host;\n\
                  // crate::gateway in a comment\n\
                  let x = bedrock_gateway_core::report::Thing;\n\
                  fn f() { crate::api::openai::parse(); }\n";
    let found = upward_imports("bedrock", source);
    assert_eq!(
        found,
        vec![
            "line 2: `bedrock` imports `crate::stream` from a layer above it",
            "line 5: `bedrock` imports `crate::api` from a layer above it",
        ]
    );
    assert!(upward_imports("stream", source).is_empty());
    assert_eq!(upward_imports("widgets", "").len(), 1);
}

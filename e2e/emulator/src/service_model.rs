//! Request bodies checked against AWS's own description of Bedrock Runtime: the service model
//! botocore ships (`botocore/data/bedrock-runtime/<version>/service-2.json[.gz]`), read at start-up
//! (`--service-model`). The emulator's picture of what Bedrock accepts is then AWS's, not ours:
//! unknown members, missing required members, JSON types, unions with exactly one member set,
//! enums, lengths and ranges. Patterns are not checked (they are Java regular expressions).
//!
//! Failures are worded as Bedrock words validation failures (Coral's "1 validation error
//! detected: Value ... at 'path' failed to satisfy constraint: ..."), paths in its style:
//! `messages.1.member.content` for the first message's content; unknown members as botocore's
//! own parameter validation words them.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Read as _;
use std::path::Path;

pub struct ServiceModel {
    shapes: Map<String, Value>,
    /// Operation name -> input shape name.
    inputs: Map<String, Value>,
}

impl ServiceModel {
    pub fn load(path: &Path) -> Result<ServiceModel, String> {
        let raw =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| format!("{}: not gzip: {e}", path.display()))?;
            out
        } else {
            raw
        };
        let model: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let shapes = model
            .get("shapes")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("the model has no shapes")?;
        let mut inputs = Map::new();
        for (name, operation) in model
            .get("operations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(input) = operation.pointer("/input/shape") {
                inputs.insert(name.clone(), input.clone());
            }
        }
        Ok(ServiceModel { shapes, inputs })
    }

    /// Checks the JSON body of `operation` (e.g. `Converse`); members bound to the URI or headers
    /// are not in the body and are not asked for.
    pub fn validate(&self, operation: &str, body: &Value) -> Result<(), String> {
        let input = self
            .inputs
            .get(operation)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the model has no operation {operation}"))?;
        let mut errors = Vec::new();
        self.check(input, body, "", true, &mut errors);
        match errors.len() {
            0 => Ok(()),
            1 => Err(format!("1 validation error detected: {}", errors.join(""))),
            n => Err(format!(
                "{n} validation errors detected: {}",
                errors.join("; ")
            )),
        }
    }

    fn shape(&self, name: &str) -> Option<&Map<String, Value>> {
        self.shapes.get(name).and_then(Value::as_object)
    }

    fn check(
        &self,
        shape_name: &str,
        value: &Value,
        path: &str,
        top: bool,
        errors: &mut Vec<String>,
    ) {
        let Some(shape) = self.shape(shape_name) else {
            return;
        };
        let at = |path: &str| {
            if path.is_empty() {
                "request body".to_owned()
            } else {
                format!("'{path}'")
            }
        };
        let constraint =
            |what: String| format!("Value at {} failed to satisfy constraint: {what}", at(path));
        let number = |key: &str| shape.get(key).and_then(Value::as_f64);
        match shape
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "structure" if shape.get("document").and_then(Value::as_bool) == Some(true) => {}
            "structure" => {
                let Some(object) = value.as_object() else {
                    errors.push(constraint("Member must be an object".into()));
                    return;
                };
                let members = shape
                    .get("members")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let in_body = |member: &Value| !top || member.get("location").is_none();
                for key in object.keys() {
                    if !members.get(key).is_some_and(in_body) {
                        errors.push(format!(
                            "Unknown parameter in {}: \"{key}\", must be one of: {}",
                            at(path),
                            {
                                let names: Vec<&str> = members
                                    .iter()
                                    .filter(|(_, m)| in_body(m))
                                    .map(|(n, _)| n.as_str())
                                    .collect();
                                names.join(", ")
                            }
                        ));
                    }
                }
                for required in shape
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    let bound = members.get(required).is_some_and(|m| !in_body(m));
                    if !bound && object.get(required).is_none_or(Value::is_null) {
                        errors.push(format!("Value null at '{}' failed to satisfy constraint: Member must not be null", join(path, required)));
                    }
                }
                if shape.get("union").and_then(Value::as_bool) == Some(true) {
                    let set = object.values().filter(|v| !v.is_null()).count();
                    if set != 1 {
                        errors.push(constraint(format!(
                            "Member must have exactly one member set, found {set}"
                        )));
                    }
                }
                for (key, member_value) in object {
                    if member_value.is_null() {
                        continue;
                    }
                    if let Some(target) = members
                        .get(key)
                        .filter(|m| in_body(m))
                        .and_then(|m| m.get("shape"))
                        .and_then(Value::as_str)
                    {
                        self.check(target, member_value, &join(path, key), false, errors);
                    }
                }
            }
            "list" => {
                let Some(items) = value.as_array() else {
                    errors.push(constraint("Member must be a list".into()));
                    return;
                };
                check_length(
                    items.len(),
                    number("min"),
                    number("max"),
                    &constraint,
                    errors,
                );
                if let Some(member) = shape
                    .get("member")
                    .and_then(|m| m.get("shape"))
                    .and_then(Value::as_str)
                {
                    for (index, item) in items.iter().enumerate() {
                        self.check(
                            member,
                            item,
                            &format!("{}.member", join(path, &(index + 1).to_string())),
                            false,
                            errors,
                        );
                    }
                }
            }
            "map" => {
                let Some(entries) = value.as_object() else {
                    errors.push(constraint("Member must be a map".into()));
                    return;
                };
                check_length(
                    entries.len(),
                    number("min"),
                    number("max"),
                    &constraint,
                    errors,
                );
                let key_shape = shape
                    .get("key")
                    .and_then(|m| m.get("shape"))
                    .and_then(Value::as_str);
                let value_shape = shape
                    .get("value")
                    .and_then(|m| m.get("shape"))
                    .and_then(Value::as_str);
                for (key, entry) in entries {
                    if let Some(key_shape) = key_shape {
                        self.check(
                            key_shape,
                            &Value::String(key.clone()),
                            &format!("{path}.key"),
                            false,
                            errors,
                        );
                    }
                    if let Some(value_shape) = value_shape {
                        self.check(value_shape, entry, &join(path, key), false, errors);
                    }
                }
            }
            "string" => {
                let Some(text) = value.as_str() else {
                    errors.push(constraint("Member must be a string".into()));
                    return;
                };
                if let Some(allowed) = shape.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|a| a.as_str() == Some(text)) {
                        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                        errors.push(format!(
                            "Value '{text}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                            names.join(", ")
                        ));
                    }
                }
                check_length(
                    text.chars().count(),
                    number("min"),
                    number("max"),
                    &constraint,
                    errors,
                );
            }
            "integer" | "long" => match value.as_i64() {
                Some(n) => check_range(n as f64, number("min"), number("max"), &constraint, errors),
                None => errors.push(constraint("Member must be an integer".into())),
            },
            "float" | "double" => match value.as_f64() {
                Some(n) => check_range(n, number("min"), number("max"), &constraint, errors),
                None => errors.push(constraint("Member must be a number".into())),
            },
            "boolean" if !value.is_boolean() => {
                errors.push(constraint("Member must be a boolean".into()))
            }
            "blob" => match value.as_str() {
                Some(text)
                    if base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .is_ok() => {}
                _ => errors.push(constraint(
                    "Member must be base64-encoded binary data".into(),
                )),
            },
            "timestamp" if !(value.is_number() || value.is_string()) => {
                errors.push(constraint("Member must be a timestamp".into()))
            }
            _ => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check_length(
    length: usize,
    min: Option<f64>,
    max: Option<f64>,
    constraint: &dyn Fn(String) -> String,
    errors: &mut Vec<String>,
) {
    if min.is_some_and(|min| (length as f64) < min) {
        errors.push(constraint(format!(
            "Member must have length greater than or equal to {}",
            min.unwrap_or_default()
        )));
    }
    if max.is_some_and(|max| (length as f64) > max) {
        errors.push(constraint(format!(
            "Member must have length less than or equal to {}",
            max.unwrap_or_default()
        )));
    }
}

fn check_range(
    n: f64,
    min: Option<f64>,
    max: Option<f64>,
    constraint: &dyn Fn(String) -> String,
    errors: &mut Vec<String>,
) {
    if min.is_some_and(|min| n < min) {
        errors.push(constraint(format!(
            "Member must have value greater than or equal to {}",
            min.unwrap_or_default()
        )));
    }
    if max.is_some_and(|max| n > max) {
        errors.push(constraint(format!(
            "Member must have value less than or equal to {}",
            max.unwrap_or_default()
        )));
    }
}

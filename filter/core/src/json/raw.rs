//! A JSON object's top-level members in document order, each value kept as its raw text.
//!
//! Lets the gateway remove, add or replace a few members of a body it passes through
//! while every other member goes on byte for byte, however large or new it is.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

pub struct RawObject<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if members.iter().any(|(existing, _)| *existing == key) {
                        return Err(de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawObject { members })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'a> RawObject<'a> {
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Parses one member into a typed value; `Ok(None)` when absent.
    pub fn get_as<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.get(key)
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
    }

    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Writes the object with `extra` members (raw JSON values) first, then the kept ones.
    pub fn write_with(&self, extra: &[(&str, &str)], replace: &[(&str, &str)]) -> Vec<u8> {
        let size: usize = self
            .members
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = String::with_capacity(size + 64);
        out.push('{');
        let mut first = true;
        let mut push_member = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            crate::json::push_json_string(out, key);
            out.push(':');
            out.push_str(value);
        };
        for (key, value) in extra {
            push_member(&mut out, key, value);
        }
        for (key, value) in &self.members {
            let value = replace
                .iter()
                .find(|(k, _)| k == key)
                .map_or(value.get(), |(_, v)| *v);
            push_member(&mut out, key, value);
        }
        out.push('}');
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_member_text_and_order() {
        let body = br#"{ "b" : [1, 2.50, {"x":"\u00e9"}], "a":true, "esc\"key": null }"#;
        let mut object = RawObject::parse(body).unwrap();
        object.remove("a");
        let written = object.write_with(&[("first", "\"yes\"")], &[]);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            r#"{"first":"yes","b":[1, 2.50, {"x":"\u00e9"}],"esc\"key":null}"#
        );
    }

    #[test]
    fn replaces_values_and_rejects_non_objects_and_duplicates() {
        let object = RawObject::parse(br#"{"model":"x","n":1}"#).unwrap();
        assert_eq!(
            object.write_with(&[], &[("model", "\"y\"")]),
            br#"{"model":"y","n":1}"#
        );
        assert!(RawObject::parse(b"[1]").is_err());
        assert!(RawObject::parse(br#"{"a":1,"a":2}"#).is_err());
        assert_eq!(object.get_as::<u32>("n").unwrap(), Some(1));
        assert!(object.get_as::<String>("n").is_err());
    }
}

//! atproto JSON ↔ [`Value`].
//!
//! `{"$link": cid}` is a link, `{"$bytes": base64}` a byte string; both must
//! have no other fields. An object with `$type` must give a non-empty string;
//! `$type: "blob"` objects must have `ref` (a link), `mimeType` (a string) and
//! an integer `size`. Numbers must be integers (an integral float such as
//! `123.0` is accepted, as JavaScript implementations read it as `123`).

use crate::{DataError, Value, parse_cid};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::Value as Json;
use std::collections::BTreeMap;

const B64_DECODE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn err(path: &str, reason: impl Into<String>) -> DataError {
    DataError::Json {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// Converts top-level atproto JSON data, which must be an object.
pub fn from_json_object(json: &Json) -> Result<Value, DataError> {
    if !json.is_object() {
        return Err(err("", "top-level value must be an object"));
    }
    from_json(json)
}

/// Converts any atproto JSON value.
pub fn from_json(json: &Json) -> Result<Value, DataError> {
    convert(json, &mut String::new(), 0)
}

fn convert(json: &Json, path: &mut String, depth: usize) -> Result<Value, DataError> {
    if depth > crate::cbor::MAX_DEPTH {
        return Err(err(path, "nesting too deep"));
    }
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if let Some(f) = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0)
            {
                Value::Integer(f as i64)
            } else {
                return Err(err(
                    path,
                    format!("{n} is not a 64-bit integer (floats are not allowed)"),
                ));
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                out.push(convert(item, path, depth + 1)?);
                path.truncate(len);
            }
            Value::List(out)
        }
        Json::Object(obj) => {
            if let Some(link) = obj.get("$link") {
                if obj.len() != 1 {
                    return Err(err(path, "$link object must have no other fields"));
                }
                let s = link
                    .as_str()
                    .ok_or_else(|| err(path, "$link must be a string"))?;
                return Ok(Value::Link(
                    parse_cid(s).map_err(|e| err(path, e.to_string()))?,
                ));
            }
            if let Some(bytes) = obj.get("$bytes") {
                if obj.len() != 1 {
                    return Err(err(path, "$bytes object must have no other fields"));
                }
                let s = bytes
                    .as_str()
                    .ok_or_else(|| err(path, "$bytes must be a string"))?;
                let b = B64_DECODE
                    .decode(s)
                    .map_err(|e| err(path, format!("$bytes is not base64: {e}")))?;
                return Ok(Value::Bytes(b));
            }
            let mut map = BTreeMap::new();
            for (k, v) in obj {
                let len = path.len();
                path.push('/');
                path.push_str(k);
                map.insert(k.clone(), convert(v, path, depth + 1)?);
                path.truncate(len);
            }
            if let Some(t) = map.get("$type") {
                match t {
                    Value::String(s) if !s.is_empty() => {
                        if s == "blob" {
                            check_blob(&map, path)?;
                        }
                    }
                    _ => return Err(err(path, "$type must be a non-empty string")),
                }
            }
            Value::Map(map)
        }
    })
}

fn check_blob(map: &BTreeMap<String, Value>, path: &str) -> Result<(), DataError> {
    if !matches!(map.get("ref"), Some(Value::Link(_))) {
        return Err(err(path, "blob needs a `ref` link"));
    }
    if !matches!(map.get("mimeType"), Some(Value::String(_))) {
        return Err(err(path, "blob needs a string `mimeType`"));
    }
    match map.get("size") {
        Some(Value::Integer(n)) if *n >= 0 => Ok(()),
        _ => Err(err(path, "blob needs a non-negative integer `size`")),
    }
}

/// Converts a value to atproto JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number((*i).into()),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => {
            serde_json::json!({ "$bytes": general_purpose::STANDARD_NO_PAD.encode(b) })
        }
        Value::Link(c) => serde_json::json!({ "$link": c.to_string() }),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

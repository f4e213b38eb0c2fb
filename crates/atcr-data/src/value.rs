use crate::{Cid, DataError};
use std::collections::BTreeMap;

/// A value of the atproto data model.
///
/// Maps are `BTreeMap`s for deterministic iteration; the CBOR encoder applies
/// DAG-CBOR's own (length-first) key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A UTF-8 string.
    String(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A CID link.
    Link(Cid),
    /// A list.
    List(Vec<Value>),
    /// A map with string keys.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }
    /// The link, if this is one.
    pub fn as_link(&self) -> Option<&Cid> {
        match self {
            Self::Link(c) => Some(c),
            _ => None,
        }
    }
    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// A map field, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// Converts a serde-serializable type to atproto data (through JSON, so
    /// `{"$link"}` / `{"$bytes"}` objects become links and bytes).
    pub fn from_serialize<T: serde::Serialize>(v: &T) -> Result<Self, DataError> {
        let json = serde_json::to_value(v).map_err(|e| DataError::Json {
            path: String::new(),
            reason: e.to_string(),
        })?;
        crate::json::from_json(&json)
    }

    /// Converts atproto data into a deserializable type (through atproto JSON).
    pub fn to_deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, DataError> {
        serde_json::from_value(crate::json::to_json(self)).map_err(|e| DataError::Json {
            path: String::new(),
            reason: e.to_string(),
        })
    }
}

/// Builds a `Value::Map` from `(key, value)` pairs.
impl<K: Into<String>> FromIterator<(K, Value)> for Value {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Self::Map(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Integer(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}
impl From<Cid> for Value {
    fn from(c: Cid) -> Self {
        Self::Link(c)
    }
}

use crate::misc::validate_record_key;
use crate::{AtIdentifier, Nsid, RecordKey, SyntaxError};

/// A restricted AT-URI: `at://AUTHORITY[/COLLECTION[/RKEY]][#/fragment]`,
/// where AUTHORITY is a DID or handle, COLLECTION an NSID and RKEY a record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AtUri {
    raw: String,
    authority: AtIdentifier,
    collection: Option<Nsid>,
    rkey: Option<RecordKey>,
}

const KIND: &str = "AT-URI";

impl AtUri {
    /// Parses and validates an AT-URI.
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        if s.len() > 8192 {
            return Err(SyntaxError::new(KIND, "longer than 8 KiB"));
        }
        let rest = s
            .strip_prefix("at://")
            .ok_or(SyntaxError::new(KIND, "must start with \"at://\""))?;
        let (path, fragment) = match rest.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (rest, None),
        };
        if let Some(f) = fragment {
            validate_fragment(f)?;
        }
        let mut parts = path.split('/');
        let authority: AtIdentifier = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| SyntaxError::new(KIND, "authority is neither a DID nor a handle"))?;
        let collection = match parts.next() {
            None => None,
            Some(c) => Some(
                Nsid::new(c)
                    .map_err(|_| SyntaxError::new(KIND, "collection is not a valid NSID"))?,
            ),
        };
        let rkey = match parts.next() {
            None => None,
            Some(r) => {
                validate_record_key(r).map_err(|_| SyntaxError::new(KIND, "invalid record key"))?;
                Some(RecordKey::new(r)?)
            }
        };
        if parts.next().is_some() {
            return Err(SyntaxError::new(KIND, "too many path segments"));
        }
        Ok(Self {
            raw: s.to_owned(),
            authority,
            collection,
            rkey,
        })
    }

    /// Builds `at://{did}/{collection}/{rkey}`.
    pub fn for_record(authority: AtIdentifier, collection: Nsid, rkey: RecordKey) -> Self {
        let raw = format!("at://{authority}/{collection}/{rkey}");
        Self {
            raw,
            authority,
            collection: Some(collection),
            rkey: Some(rkey),
        }
    }

    /// The authority (DID or handle).
    pub fn authority(&self) -> &AtIdentifier {
        &self.authority
    }
    /// The collection NSID, if present.
    pub fn collection(&self) -> Option<&Nsid> {
        self.collection.as_ref()
    }
    /// The record key, if present.
    pub fn rkey(&self) -> Option<&RecordKey> {
        self.rkey.as_ref()
    }
    /// The URI as a string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

fn validate_fragment(f: &str) -> Result<(), SyntaxError> {
    let ok = f.starts_with('/')
        && f.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:@!$&%')(*+,;=-[]/\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SyntaxError::new(KIND, "invalid fragment"))
    }
}

impl std::str::FromStr for AtUri {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        Self::parse(s)
    }
}

impl std::fmt::Display for AtUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for AtUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for AtUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

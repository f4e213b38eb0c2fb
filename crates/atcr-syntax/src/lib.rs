//! AT Protocol identifier syntax.
//!
//! Validators and typed, validated string wrappers for every identifier the
//! protocol defines: [`Did`], [`Handle`], [`Nsid`], [`RecordKey`], [`Tid`],
//! [`AtUri`], [`AtIdentifier`], [`Datetime`], [`Language`] and the generic
//! `uri` and `cid` string formats.
//!
//! Written by hand rather than taken from `atrium-api`: the rules are short,
//! the official vectors pin them completely, and `atrium-api` accepts invalid
//! language tags (`jaja`, `JA`) and rejects some valid CID strings. Keeping the
//! syntax layer dependency-free also keeps every other crate's build small.
//! All validators are linear-time and never allocate on the failure path.

mod aturi;
mod datetime;
mod did;
mod handle;
mod language;
mod misc;
mod nsid;
mod tid;

pub use aturi::AtUri;
pub use datetime::{Datetime, validate_datetime_syntax};
pub use did::{Did, validate_did};
pub use handle::{Handle, validate_handle};
pub use language::{Language, validate_language_syntax};
pub use misc::{AtIdentifier, RecordKey, validate_cid_string, validate_record_key, validate_uri};
pub use nsid::{Nsid, validate_nsid};
pub use tid::{Tid, TidClock, validate_tid};

/// Why a string is not a valid identifier of the requested kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct SyntaxError {
    /// The identifier kind, for example `"DID"`.
    pub kind: &'static str,
    /// What is wrong, in a few words.
    pub reason: &'static str,
}

impl SyntaxError {
    pub(crate) const fn new(kind: &'static str, reason: &'static str) -> Self {
        Self { kind, reason }
    }
}

/// Implements the common trait set of a validated string newtype.
macro_rules! string_newtype {
    ($name:ident, $validate:path) => {
        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, $crate::SyntaxError> {
                let s = s.into();
                $validate(&s)?;
                Ok(Self(s))
            }
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Consumes the wrapper, returning the string.
            pub fn into_string(self) -> String {
                self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::SyntaxError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_newtype;

/// Shared character-class helpers.
pub(crate) fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

use crate::{SyntaxError, string_newtype};

/// A decentralized identifier, `did:<method>:<method-specific-id>`.
///
/// Syntax per the atproto spec: lower-case method, identifier of
/// `[a-zA-Z0-9._:%-]` not ending in `:` or `%`, at most 2 KiB.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(String);

string_newtype!(Did, validate_did);

const KIND: &str = "DID";

/// Validates the generic DID syntax used by atproto.
pub fn validate_did(s: &str) -> Result<(), SyntaxError> {
    if s.len() > 2048 {
        return Err(SyntaxError::new(KIND, "longer than 2048 characters"));
    }
    let rest = s
        .strip_prefix("did:")
        .ok_or(SyntaxError::new(KIND, "must start with \"did:\""))?;
    let (method, id) = rest
        .split_once(':')
        .ok_or(SyntaxError::new(KIND, "missing method-specific identifier"))?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(SyntaxError::new(KIND, "method must be lower-case letters"));
    }
    if id.is_empty() {
        return Err(SyntaxError::new(KIND, "empty method-specific identifier"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'%' | b'-'))
    {
        return Err(SyntaxError::new(KIND, "disallowed character"));
    }
    if id.ends_with(':') || id.ends_with('%') {
        return Err(SyntaxError::new(KIND, "must not end with ':' or '%'"));
    }
    Ok(())
}

impl Did {
    /// The DID method (`plc`, `web`, ...).
    pub fn method(&self) -> &str {
        self.0[4..].split(':').next().unwrap_or_default()
    }
    /// The method-specific identifier (everything after the method).
    pub fn method_specific_id(&self) -> &str {
        let rest = &self.0[4..];
        rest.split_once(':').map(|(_, id)| id).unwrap_or_default()
    }
}

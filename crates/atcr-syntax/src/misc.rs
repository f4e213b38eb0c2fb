use crate::{Did, Handle, SyntaxError, string_newtype};

/// A record key: 1–512 characters of `[A-Za-z0-9._~:-]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

string_newtype!(RecordKey, validate_record_key);

/// Validates record-key syntax.
pub fn validate_record_key(s: &str) -> Result<(), SyntaxError> {
    const KIND: &str = "record key";
    if s.is_empty() || s.len() > 512 {
        return Err(SyntaxError::new(KIND, "must be 1 to 512 characters"));
    }
    if s == "." || s == ".." {
        return Err(SyntaxError::new(KIND, "must not be '.' or '..'"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'-'))
    {
        return Err(SyntaxError::new(KIND, "disallowed character"));
    }
    Ok(())
}

/// Either a DID or a handle, as found in the authority of an AT-URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AtIdentifier {
    /// A DID.
    Did(Did),
    /// A handle.
    Handle(Handle),
}

impl std::str::FromStr for AtIdentifier {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        if s.starts_with("did:") {
            Ok(Self::Did(Did::new(s)?))
        } else {
            Handle::new(s)
                .map(Self::Handle)
                .map_err(|_| SyntaxError::new("at-identifier", "neither a DID nor a handle"))
        }
    }
}

impl std::fmt::Display for AtIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Did(d) => d.fmt(f),
            Self::Handle(h) => h.fmt(f),
        }
    }
}

/// Validates the Lexicon `cid` string format: 8–256 characters of
/// `[A-Za-z0-9+=]`, and not a CIDv0 (`Qmb…`). This is a syntax check only;
/// decoding is the data-model crate's job.
pub fn validate_cid_string(s: &str) -> Result<(), SyntaxError> {
    const KIND: &str = "CID string";
    if s.len() < 8 || s.len() > 256 {
        return Err(SyntaxError::new(KIND, "must be 8 to 256 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'=')
    {
        return Err(SyntaxError::new(KIND, "disallowed character"));
    }
    if s.starts_with("Qmb") {
        return Err(SyntaxError::new(KIND, "CIDv0 is not allowed"));
    }
    Ok(())
}

/// Validates the Lexicon `uri` string format: a scheme, `:`, and at least one
/// printable non-space ASCII character, at most 8 KiB.
pub fn validate_uri(s: &str) -> Result<(), SyntaxError> {
    const KIND: &str = "URI";
    if s.len() > 8192 {
        return Err(SyntaxError::new(KIND, "longer than 8 KiB"));
    }
    let (scheme, rest) = s
        .split_once(':')
        .ok_or(SyntaxError::new(KIND, "missing scheme"))?;
    let sb = scheme.as_bytes();
    if sb.is_empty()
        || sb.len() > 81
        || !sb[0].is_ascii_lowercase()
        || !sb[1..].iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+')
        })
    {
        return Err(SyntaxError::new(KIND, "invalid scheme"));
    }
    if rest.is_empty() || !rest.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(SyntaxError::new(KIND, "invalid or empty body"));
    }
    Ok(())
}

use crate::{SyntaxError, is_alnum, string_newtype};

/// A namespaced identifier such as `io.atcr.manifest`: a reversed domain
/// authority followed by a name segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nsid(String);

string_newtype!(Nsid, validate_nsid);

const KIND: &str = "NSID";

/// Validates NSID syntax.
pub fn validate_nsid(s: &str) -> Result<(), SyntaxError> {
    if s.len() > 317 {
        return Err(SyntaxError::new(KIND, "longer than 317 characters"));
    }
    let segments: Vec<&str> = s.split('.').collect();
    if segments.len() < 3 {
        return Err(SyntaxError::new(KIND, "needs at least three segments"));
    }
    let (name, authority) = segments.split_last().expect("at least three segments");
    for (i, seg) in authority.iter().enumerate() {
        let b = seg.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return Err(SyntaxError::new(KIND, "segment must be 1 to 63 characters"));
        }
        if !b.iter().all(|&c| is_alnum(c) || c == b'-') {
            return Err(SyntaxError::new(
                KIND,
                "disallowed character in domain authority",
            ));
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err(SyntaxError::new(
                KIND,
                "segment must not start or end with '-'",
            ));
        }
        if i == 0 && !b[0].is_ascii_alphabetic() {
            return Err(SyntaxError::new(
                KIND,
                "first segment must start with a letter",
            ));
        }
    }
    let nb = name.as_bytes();
    if nb.is_empty() || nb.len() > 63 {
        return Err(SyntaxError::new(KIND, "name must be 1 to 63 characters"));
    }
    if !nb[0].is_ascii_alphabetic() || !nb.iter().all(|&c| is_alnum(c)) {
        return Err(SyntaxError::new(
            KIND,
            "name must be letters and digits, starting with a letter",
        ));
    }
    Ok(())
}

impl Nsid {
    /// The final (name) segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or_default()
    }
}

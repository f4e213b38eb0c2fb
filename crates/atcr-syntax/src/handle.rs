use crate::{SyntaxError, is_alnum, string_newtype};

/// A handle: a DNS hostname of at least two labels whose last label does not
/// start with a digit. Stored as given; compare with [`Handle::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

string_newtype!(Handle, validate_handle);

const KIND: &str = "handle";

/// Validates handle syntax (case-insensitive hostname rules).
pub fn validate_handle(s: &str) -> Result<(), SyntaxError> {
    if s.len() > 253 {
        return Err(SyntaxError::new(KIND, "longer than 253 characters"));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(SyntaxError::new(KIND, "needs at least two labels"));
    }
    for label in &labels {
        validate_label(label)?;
    }
    let tld = labels[labels.len() - 1];
    if !tld.as_bytes()[0].is_ascii_alphabetic() {
        return Err(SyntaxError::new(
            KIND,
            "last label must start with a letter",
        ));
    }
    Ok(())
}

pub(crate) fn validate_label(label: &str) -> Result<(), SyntaxError> {
    let b = label.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err(SyntaxError::new(KIND, "label must be 1 to 63 characters"));
    }
    if !b.iter().all(|&c| is_alnum(c) || c == b'-') {
        return Err(SyntaxError::new(KIND, "disallowed character"));
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(SyntaxError::new(
            KIND,
            "label must not start or end with '-'",
        ));
    }
    Ok(())
}

impl Handle {
    /// The lower-cased handle, the form used for comparison and storage.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

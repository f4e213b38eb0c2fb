use crate::{Digest, ErrorCode, RegistryError};
use atcr_syntax::{Did, Handle};

/// The identity a repository name belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An ATProto handle (`alice.example.com`).
    Handle(Handle),
    /// A DID (`did-plc-<id>` / `did-web-<host>` in names, or raw on the API).
    Did(Did),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handle(h) => h.fmt(f),
            Self::Did(d) => d.fmt(f),
        }
    }
}

/// A repository name `OWNER/REPO[/…]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    owner: Owner,
    owner_segment: String,
    repo: String,
}

fn name_invalid(name: &str, why: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameInvalid,
        format!("invalid repository name {name:?}: {why}"),
    )
}

/// One path component of the distribution grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn parse_owner(seg: &str, name: &str) -> Result<Owner, RegistryError> {
    if seg.starts_with("did:") {
        return Did::new(seg)
            .map(Owner::Did)
            .map_err(|e| name_invalid(name, &e.to_string()));
    }
    if let Some(id) = seg.strip_prefix("did-plc-") {
        let ok = id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if !ok {
            return Err(name_invalid(
                name,
                "did-plc- must be followed by the 24-character did:plc identifier",
            ));
        }
        return Ok(Owner::Did(
            Did::new(format!("did:plc:{id}")).map_err(|e| name_invalid(name, &e.to_string()))?,
        ));
    }
    if let Some(host) = seg.strip_prefix("did-web-") {
        if !valid_component(host)
            || host
                .split('.')
                .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
        {
            return Err(name_invalid(
                name,
                "did-web- must be followed by a hostname",
            ));
        }
        return Ok(Owner::Did(
            Did::new(format!("did:web:{host}")).map_err(|e| name_invalid(name, &e.to_string()))?,
        ));
    }
    if !valid_component(seg) {
        return Err(name_invalid(
            name,
            "owner is not a lower-case handle or path-safe DID",
        ));
    }
    Handle::new(seg).map(Owner::Handle).map_err(|_| {
        name_invalid(
            name,
            "owner must be a handle (e.g. alice.example.com) or a DID (did-plc-…, did-web-…)",
        )
    })
}

impl RepoName {
    /// Parses `OWNER/REPO[/…]`.
    pub fn parse(name: &str) -> Result<Self, RegistryError> {
        if name.is_empty() || name.len() > 255 {
            return Err(name_invalid(name, "must be 1 to 255 characters"));
        }
        let (owner_segment, repo) = name
            .split_once('/')
            .ok_or_else(|| name_invalid(name, "expected OWNER/REPO (owner is a handle or DID)"))?;
        let owner = parse_owner(owner_segment, name)?;
        if repo.is_empty() || !repo.split('/').all(valid_component) {
            return Err(name_invalid(
                name,
                "repository path components must match [a-z0-9]+([._-][a-z0-9]+)*",
            ));
        }
        Ok(Self {
            owner,
            owner_segment: owner_segment.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// The owner.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
    /// The owner as written in the name.
    pub fn owner_segment(&self) -> &str {
        &self.owner_segment
    }
    /// The repository path after the owner (REPO); what records call `repository`.
    pub fn repo(&self) -> &str {
        &self.repo
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner_segment, self.repo)
    }
}

/// Validates a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), RegistryError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("invalid tag {tag:?}"),
        ))
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a reference (a digest when it contains `:`).
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            Digest::parse(s).map(Self::Digest)
        } else {
            validate_tag(s).map(|()| Self::Tag(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

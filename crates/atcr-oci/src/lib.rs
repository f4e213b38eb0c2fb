//! OCI Distribution protocol types for ATCR.
//!
//! * [`RepoName`]: `OWNER/REPO[/…]` names, OWNER a handle or a DID in its
//!   path-safe form (`did-plc-<id>`, `did-web-<host>`) or raw (`did:plc:…`,
//!   accepted on the HTTP API), REPO per the distribution name grammar.
//! * [`Reference`] (tag or digest) and [`Digest`] (sha256 / sha512, lower-case
//!   hex of the exact length), with a streaming [`DigestHasher`].
//! * [`RegistryError`]: the spec's error codes, HTTP statuses and
//!   `{"errors": [...]}` body.
//! * [`manifest`]: manifest and index validation (media types, schema
//!   version, descriptors) yielding what the registry must check exists, the
//!   subject and the artifact type. The manifest bytes themselves are never
//!   re-serialized: digests are over the exact bytes pushed.
//! * [`signature`]: the ATProto signature artifact (DESIGN §5).
//! * [`records`]: the `io.atcr.*` record types, declared once.

mod digest;
mod error;
pub mod manifest;
mod name;
pub mod records;
pub mod signature;

pub use digest::{Digest, DigestAlgorithm, DigestHasher};
pub use error::{ErrorCode, RegistryError};
pub use name::{Owner, Reference, RepoName, validate_tag};

/// Collection of `io.atcr.manifest` records (rkey = TID).
pub const MANIFEST_COLLECTION: &str = "io.atcr.manifest";
/// Collection of `io.atcr.tag` records (rkey = [`tag_rkey`]).
pub const TAG_COLLECTION: &str = "io.atcr.tag";
/// Collection of `io.atcr.signature` co-signature records (rkey = TID).
pub const SIGNATURE_COLLECTION: &str = "io.atcr.signature";

/// The record key of the tag record for (REPO, TAG): `/` in REPO becomes `~`
/// (which names never contain), joined to the tag with `:` (which neither
/// contains), so the mapping is one-to-one and always a legal record key.
pub fn tag_rkey(repo: &str, tag: &str) -> String {
    format!("{}:{}", repo.replace('/', "~"), tag)
}

//! AT Protocol identity.
//!
//! * [`DidDocument`]: parsing of DID documents, with the atproto signing key
//!   (`#atproto`, Multikey or the older `EcdsaSecp256k1VerificationKey2019` /
//!   `EcdsaSecp256r1VerificationKey2019` forms), PDS endpoint
//!   (`#atproto_pds`) and claimed handle (`alsoKnownAs`).
//! * [`IdentityResolver`]: `did:plc` through a configurable PLC directory,
//!   `did:web` (hostname-level only, `%3A` ports decoded), handles through
//!   DNS TXT `_atproto.<handle>` then HTTPS `/.well-known/atproto-did`, and the
//!   bidirectional check: a handle is only reported for a DID whose document
//!   claims it *and* which the handle resolves back to. Documents must name the
//!   DID they were fetched for. Results are cached with a TTL; failures never are.
//! * Plain `http://` is used only for loopback hosts unless the configuration
//!   explicitly allows it.
//!
//! Written on `reqwest` (rustls with the ring provider) and `hickory-resolver`
//! rather than `atrium-identity`: that crate, like jacquard's, hard-codes
//! `https://` for did:web, does not decode `%3A` ports, and checks neither
//! `doc.id` nor the handle back-link.

mod cache;
mod document;
mod resolver;

pub use atcr_fetch as fetch;
pub use cache::TtlCache;
pub use document::{DidDocument, Service, VerificationMethod};
pub use resolver::{HandleResolver, IdentityResolver, ResolvedIdentity, ResolverConfig};

/// Errors from identity resolution. [`IdentityError::is_transient`] tells a
/// "could not complete" (network) failure from a definitive answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// The DID or handle does not exist (definitive).
    #[error("{0} not found")]
    NotFound(String),
    /// The DID was deactivated or tombstoned.
    #[error("{0} is deactivated")]
    Deactivated(String),
    /// The DID document or handle record is malformed or inconsistent.
    #[error("invalid identity data for {subject}: {reason}")]
    Invalid {
        /// The DID or handle concerned.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A handle and a DID that do not point at each other.
    #[error("handle {handle} and {did} do not point at each other: {reason}")]
    HandleMismatch {
        /// The handle.
        handle: String,
        /// The DID.
        did: String,
        /// Which direction failed.
        reason: String,
    },
    /// Unsupported DID method or disallowed URL (configuration or policy).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The network, DNS or a server failed; the answer is unknown.
    #[error("could not resolve {subject}: {reason}")]
    Unavailable {
        /// The DID or handle concerned.
        subject: String,
        /// What failed.
        reason: String,
    },
}

impl IdentityError {
    /// Whether this failure says nothing about the identity (retry later).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

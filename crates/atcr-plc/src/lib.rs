//! did:plc operations, as the PLC directory and its clients exchange them.
//!
//! * [`Operation`]: `plc_operation`, `plc_tombstone` and the legacy `create`
//!   (v1) genesis form, parsed strictly from JSON (unknown fields refused).
//! * Signing and verification: the signature is a raw 64-byte low-S ECDSA
//!   signature (K-256 or P-256 rotation key) over the DAG-CBOR of the
//!   operation without `sig`, carried as unpadded base64url.
//! * The genesis rule: `did:plc:` + the first 24 base32 characters of
//!   SHA-256 over the signed genesis operation.
//! * [`validate_next`]: whether a proposed operation may extend a log — `prev`
//!   must name an operation in it, the signer must be a rotation key of that
//!   operation, nothing follows a tombstone, and rewriting history
//!   (nullification) needs a key of higher authority (lower index) than the one
//!   that signed the first nullified operation, within 72 hours.
//! * [`audit_log`]: replays a directory's full audit log (including nullified
//!   entries) and returns the current document data, so a client need not
//!   trust the directory's rendering of it.
//!
//! Written from the did:plc specification; the reference server's
//! behaviour is matched where the specification is silent (limits below).

mod op;
mod validate;

pub use op::{
    DocumentData, LegacyCreate, Operation, PlcOp, PlcService, Tombstone, did_for_genesis,
};
pub use validate::{AuditEntry, IndexedOp, NextOp, RECOVERY_WINDOW_MS, audit_log, validate_next};

/// Largest signed operation accepted, in DAG-CBOR bytes.
pub const MAX_OP_BYTES: usize = 7_500;
/// Most rotation keys an operation may list.
pub const MAX_ROTATION_KEYS: usize = 5;

/// Most verification methods an operation may declare (the did:plc spec).
pub const MAX_VERIFICATION_METHODS: usize = 10;

/// Why an operation or log is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlcError {
    /// The JSON is not a well-formed operation.
    #[error("improper operation: {0}")]
    Improper(String),
    /// A key is not a supported did:key.
    #[error("unsupported key {key}: {reason}")]
    UnsupportedKey {
        /// The key string.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// No allowed key produced the signature.
    #[error("invalid signature")]
    InvalidSignature,
    /// The genesis operation does not hash to the DID.
    #[error("genesis operation hashes to {0}, not to this DID")]
    GenesisHash(String),
    /// `prev` does not name an operation of the log, or the log is misordered,
    /// or an operation follows a tombstone.
    #[error("operations not correctly ordered: {0}")]
    Misordered(String),
    /// A nullification outside the 72-hour recovery window.
    #[error("recovery operation {0} ms after the first nullified operation (window is 72 h)")]
    LateRecovery(i64),
    /// The log is tombstoned.
    #[error("DID is tombstoned")]
    Tombstoned,
}

/// The future a [`PlcDirectory`] method returns (errors are messages for the caller's log).
pub type PlcFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// A PLC directory as the PDS uses it: embedded in-process or remote over
/// HTTP, through one interface.
pub trait PlcDirectory: Send + Sync {
    /// Submits a signed operation for `did`.
    fn submit<'a>(&'a self, did: &'a atcr_syntax::Did, op: &'a Operation) -> PlcFuture<'a, ()>;

    /// The last operation of the DID's current log, `None` if unknown.
    fn last_operation<'a>(&'a self, did: &'a atcr_syntax::Did) -> PlcFuture<'a, Option<Operation>>;

    /// The DID document, `None` if unknown or tombstoned.
    fn document<'a>(
        &'a self,
        did: &'a atcr_syntax::Did,
    ) -> PlcFuture<'a, Option<serde_json::Value>>;
}

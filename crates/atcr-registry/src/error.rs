//! The registry services' errors, in the registry's own terms. Nothing below
//! the routes knows HTTP statuses or the OCI error codes: [`crate::routes`]
//! maps these to the spec's error envelope, the web UI to its pages.

use crate::index::IndexError;
use crate::records::RecordError;
use atcr_blobstore::BlobError;

/// Why a registry operation failed. The text is for the client: one line,
/// naming what to change where the caller can change something.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The blob is not in the repository (or not in storage).
    #[error("{0}")]
    BlobUnknown(String),
    /// No such upload session in this repository: never started, finished,
    /// cancelled or expired.
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// The upload request cannot be applied: an unreadable body, a session
    /// another request is writing to.
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload is.
    #[error("chunk starts at {start}, but the upload is at {offset}")]
    ChunkOutOfOrder {
        /// Where the chunk said it starts.
        start: u64,
        /// Bytes the session holds.
        offset: u64,
    },
    /// Content does not hash to the digest it was named by, or a digest is
    /// malformed.
    #[error("{0}")]
    DigestInvalid(String),
    /// The manifest or tag is not in the repository.
    #[error("{0}")]
    ManifestUnknown(String),
    /// The manifest is malformed or refused (too many tags, a bad layer, its
    /// record rejected by the PDS).
    #[error("{0}")]
    ManifestInvalid(String),
    /// The manifest names a blob or manifest that was not pushed.
    #[error("{message}")]
    ManifestBlobUnknown {
        /// The missing digest.
        digest: String,
        /// What is missing, for the client.
        message: String,
    },
    /// The repository's owner does not resolve, or the repository is empty.
    #[error("{0}")]
    NameUnknown(String),
    /// A repository name or DID is malformed.
    #[error("{0}")]
    NameInvalid(String),
    /// Wrong username or password.
    #[error("invalid username or password")]
    BadCredentials,
    /// The caller may not do this.
    #[error("{0}")]
    Denied(String),
    /// The caller has as many upload sessions open as it may.
    #[error("{0}")]
    TooManyUploads(String),
    /// Something the operation needs (the index database, blob storage, a
    /// PDS, identity resolution) is down or busy: the same request may
    /// succeed later. A push whose PDS commit may have happened stays in
    /// the journal and is settled from the PDS, so the index never holds
    /// half of it.
    #[error("{0}")]
    Unavailable(String),
    /// The request breaks the OCI spec (a manifest, digest or name that does
    /// not parse): reported by `atcr_oci`, already in the spec's terms.
    #[error(transparent)]
    Oci(#[from] atcr_oci::RegistryError),
    /// The registry failed; the log has the details.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying later may succeed (nothing about the request is
    /// wrong).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A registry result.
pub type Result<T> = std::result::Result<T, Error>;

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        tracing::error!("{e}");
        if e.is_unavailable() {
            Self::Unavailable("the index database is unavailable; retry later".into())
        } else {
            Self::Internal("internal index error".into())
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::DigestMismatch { .. } => Self::DigestInvalid(e.to_string()),
            BlobError::NotFound => Self::BlobUnknown("blob unknown to registry".into()),
            BlobError::Body(m) => Self::UploadInvalid(format!("upload body: {m}")),
            BlobError::Session(m) => Self::UploadInvalid(m),
            BlobError::Storage(m) => {
                tracing::error!("blob storage: {m}");
                Self::Unavailable("blob storage unavailable".into())
            }
        }
    }
}

impl From<RecordError> for Error {
    fn from(e: RecordError) -> Self {
        match &e {
            RecordError::Rejected(_) => Self::ManifestInvalid(e.to_string()),
            RecordError::NoSession(_) => Self::Denied(e.to_string()),
            RecordError::Unavailable(_) => Self::Unavailable(e.to_string()),
        }
    }
}

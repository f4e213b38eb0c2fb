/// The error codes of the OCI Distribution Specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// Not a spec code: the registry failed (HTTP 500), as Distribution reports it.
    Unknown,
    /// Not a spec code: a backend (storage, PDS, identity) is unreachable (HTTP 503).
    Unavailable,
}

impl ErrorCode {
    /// The code string of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unknown => "UNKNOWN",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn default_status(self) -> u16 {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => 404,
            Self::ManifestBlobUnknown => 400,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => 400,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 415,
            Self::TooManyRequests => 429,
            Self::Unknown => 500,
            Self::Unavailable => 503,
        }
    }
}

/// A registry API error: code, message, optional detail, HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({status}): {message}", code.as_str())]
pub struct RegistryError {
    /// The spec code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Optional structured detail.
    pub detail: Option<serde_json::Value>,
    /// HTTP status.
    pub status: u16,
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            status: code.default_status(),
        }
    }
    /// Overrides the HTTP status (the spec allows several for some codes).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    /// Adds structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    /// The `{"errors": [{code, message, detail}]}` body.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        serde_json::json!({ "errors": [e] })
    }
}

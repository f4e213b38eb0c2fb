//! XRPC for the `com.atproto.*` methods ATCR uses.
//!
//! * [`types`]: request and response bodies, shared by the PDS routes and
//!   the client so the protocol is declared once.
//! * [`XrpcError`]: the `{error, message}` body and HTTP status.
//! * [`PdsClient`]: the one client for every PDS, the embedded one or a remote
//!   one: sessions (with refresh), record writes and reads, blobs, and the sync
//!   endpoints (proof CARs).

mod client;
pub mod types;

pub use client::{ClientError, PdsClient, Session};

use serde::{Deserialize, Serialize};

/// An XRPC error: the HTTP status plus the `{error, message}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error} ({status}): {message}")]
pub struct XrpcError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Error name, e.g. `InvalidRequest`, `RecordNotFound`, `ExpiredToken`.
    pub error: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

impl XrpcError {
    /// Builds an error.
    pub fn new(status: u16, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: error.to_owned(),
            message: message.into(),
        }
    }
    /// 400 `InvalidRequest`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", message)
    }
    /// 401 `AuthenticationRequired`.
    pub fn auth_required(message: impl Into<String>) -> Self {
        Self::new(401, "AuthenticationRequired", message)
    }
    /// 401 `AuthMissing`: no credentials at all (the reference PDS's name).
    pub fn auth_missing() -> Self {
        Self::new(401, "AuthMissing", "Authentication Required")
    }
    /// 401 `InvalidToken`.
    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(401, "InvalidToken", message)
    }
    /// 400 `ExpiredToken`.
    pub fn expired_token() -> Self {
        Self::new(400, "ExpiredToken", "Token has expired")
    }
    /// 500 `InternalServerError` (the message is logged, not leaked).
    pub fn internal() -> Self {
        Self::new(500, "InternalServerError", "Internal Server Error")
    }
}

//! The AT Protocol data model.
//!
//! * [`Value`]: the atproto data model (null, bool, 64-bit integers, strings,
//!   bytes, CID links, lists, string-keyed maps). No floats, by design.
//! * [`cbor`]: a strict DAG-CBOR codec for [`Value`]. Encoding is canonical
//!   (shortest integer and length forms, map keys sorted length-first then
//!   bytewise). Decoding *rejects* everything DAG-CBOR forbids: floats,
//!   indefinite lengths, non-minimal encodings, tags other than 42, unsorted or
//!   duplicate map keys, non-string keys, invalid UTF-8, trailing bytes, and
//!   declared lengths beyond the input; nesting is bounded so hostile input
//!   cannot overflow the stack.
//! * [`json`]: atproto JSON ↔ [`Value`] (`$link`, `$bytes`, blob objects,
//!   `$type` rules), checked against the official data-model vectors.
//! * CID helpers: CIDv1 for dag-cbor and raw blocks with SHA-256, and the
//!   "blessed CID" check that proof verification relies on.
//!
//! Why hand-written: `serde_ipld_dagcbor` (what the atproto crates use) is a
//! serde codec that accepts non-canonical input and floats, and has no generic
//! atproto-JSON value type. A verifier must reject what the spec forbids, so
//! the codec is ours (~400 lines); the `cid` crate supplies CID parsing and
//! multibase, RustCrypto's `sha2` the hashing.

pub mod cbor;
pub mod json;
mod value;

pub use cid::Cid;
pub use value::Value;

use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes.
pub const RAW: u64 = 0x55;
/// Multihash code of SHA2-256.
pub const SHA2_256: u64 = 0x12;

/// Errors from the data-model codecs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Malformed or non-canonical DAG-CBOR.
    #[error("invalid DAG-CBOR at byte {offset}: {reason}")]
    Cbor {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// JSON that is not valid atproto data.
    #[error("invalid atproto JSON at {path}: {reason}")]
    Json {
        /// JSON-pointer-like path to the offending value.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A CID that is malformed or not an atproto CID.
    #[error("invalid CID: {0}")]
    Cid(String),
}

fn cid_with_codec(codec: u64, bytes: &[u8]) -> Cid {
    cid_from_sha256(codec, &Sha256::digest(bytes).into())
}

/// The CIDv1 (raw, sha2-256) of a blob hashed elsewhere (e.g. streamed).
pub fn raw_cid_from_sha256(digest: &[u8; 32]) -> Cid {
    cid_from_sha256(RAW, digest)
}

fn cid_from_sha256(codec: u64, digest: &[u8; 32]) -> Cid {
    let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, digest)
        .expect("a 32-byte digest always fits a 64-byte multihash");
    Cid::new_v1(codec, mh)
}

/// The CIDv1 (dag-cbor, sha2-256) of an encoded DAG-CBOR block.
pub fn cid_for_cbor(bytes: &[u8]) -> Cid {
    cid_with_codec(DAG_CBOR, bytes)
}

/// The CIDv1 (raw, sha2-256) of a blob.
pub fn cid_for_raw(bytes: &[u8]) -> Cid {
    cid_with_codec(RAW, bytes)
}

/// Whether `cid` is of a form atproto repositories use: CIDv1, dag-cbor or raw
/// codec, SHA2-256 with a 32-byte digest.
pub fn is_blessed_cid(cid: &Cid) -> bool {
    cid.version() == cid::Version::V1
        && matches!(cid.codec(), DAG_CBOR | RAW)
        && cid.hash().code() == SHA2_256
        && cid.hash().size() == 32
}

/// Checks that `bytes` hash to `cid`. Fails closed: a CID that is not blessed
/// (unknown hash function, wrong digest length) never verifies.
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> bool {
    is_blessed_cid(cid) && cid_with_codec(cid.codec(), bytes) == *cid
}

/// Parses a CID string, requiring a blessed atproto CID.
pub fn parse_cid(s: &str) -> Result<Cid, DataError> {
    let cid: Cid = s
        .parse()
        .map_err(|e| DataError::Cid(format!("{s:?}: {e}")))?;
    if !is_blessed_cid(&cid) {
        return Err(DataError::Cid(format!(
            "{s:?}: not CIDv1 dag-cbor/raw with sha2-256"
        )));
    }
    Ok(cid)
}

/// Encodes a value as canonical DAG-CBOR.
pub fn to_cbor(value: &Value) -> Vec<u8> {
    cbor::encode(value)
}

/// Decodes one DAG-CBOR value at the start of `bytes` (strictly), and the
/// number of bytes it took.
pub fn from_cbor_prefix(bytes: &[u8]) -> Result<(Value, usize), DataError> {
    cbor::decode_prefix(bytes)
}

/// Decodes one DAG-CBOR value, strictly, with nothing trailing.
pub fn from_cbor(bytes: &[u8]) -> Result<Value, DataError> {
    cbor::decode(bytes)
}

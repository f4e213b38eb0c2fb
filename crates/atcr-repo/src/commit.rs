//! Repository commits (version 3).

use atcr_crypto::{CryptoError, Keypair, PublicKey};
use atcr_data::{Cid, Value, cid_for_cbor, from_cbor, to_cbor};
use atcr_syntax::{Did, Tid};
use std::collections::BTreeMap;

/// Errors decoding or checking a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The block is not a well-formed v3 commit.
    #[error("malformed commit: {0}")]
    Malformed(String),
    /// The signature does not verify against the key.
    #[error("commit signature: {0}")]
    Signature(#[from] CryptoError),
}

/// A signed repository commit: `{did, version: 3, data, rev, prev, sig}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The repository's DID.
    pub did: Did,
    /// Root CID of the MST.
    pub data: Cid,
    /// Revision, a TID that increases with every commit.
    pub rev: Tid,
    /// Previous commit (normally null in v3).
    pub prev: Option<Cid>,
    /// Raw 64-byte signature over the unsigned commit's DAG-CBOR.
    pub sig: Vec<u8>,
    /// The decoded block, to re-derive the signed bytes exactly when
    /// verifying (decoding admits no other fields than the six).
    fields: BTreeMap<String, Value>,
}

fn unsigned_fields(
    did: &Did,
    data: &Cid,
    rev: &Tid,
    prev: Option<&Cid>,
) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("did".to_owned(), Value::String(did.to_string()));
    m.insert("version".to_owned(), Value::Integer(3));
    m.insert("data".to_owned(), Value::Link(*data));
    m.insert("rev".to_owned(), Value::String(rev.to_string()));
    m.insert(
        "prev".to_owned(),
        prev.map_or(Value::Null, |c| Value::Link(*c)),
    );
    m
}

impl Commit {
    /// Builds and signs a commit.
    pub fn sign(did: Did, data: Cid, rev: Tid, prev: Option<Cid>, key: &Keypair) -> Self {
        let fields = unsigned_fields(&did, &data, &rev, prev.as_ref());
        let sig = key.sign(&to_cbor(&Value::Map(fields.clone()))).to_vec();
        let mut fields = fields;
        fields.insert("sig".to_owned(), Value::Bytes(sig.clone()));
        Self {
            did,
            data,
            rev,
            prev,
            sig,
            fields,
        }
    }

    /// Re-signs the same content (after a key rotation).
    pub fn resign(&self, key: &Keypair) -> Self {
        Self::sign(
            self.did.clone(),
            self.data,
            self.rev.clone(),
            self.prev,
            key,
        )
    }

    /// The DAG-CBOR bytes that are signed (everything but `sig`).
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        let mut m = self.fields.clone();
        m.remove("sig");
        to_cbor(&Value::Map(m))
    }

    /// The block bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_cbor(&Value::Map(self.fields.clone()))
    }

    /// The block bytes and their CID.
    pub fn to_block(&self) -> (Cid, Vec<u8>) {
        let bytes = self.to_bytes();
        (cid_for_cbor(&bytes), bytes)
    }

    /// Decodes a commit block strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CommitError> {
        let bad = |s: &str| CommitError::Malformed(s.to_owned());
        let v = from_cbor(bytes).map_err(|e| CommitError::Malformed(e.to_string()))?;
        let Value::Map(fields) = v else {
            return Err(bad("not a map"));
        };
        // Exactly the six fields of a v3 commit: an extra field would be
        // signed over without meaning anything, and `prev` is required
        // (null or a link).
        const FIELDS: [&str; 6] = ["data", "did", "prev", "rev", "sig", "version"];
        if fields.len() != FIELDS.len() || !FIELDS.iter().all(|f| fields.contains_key(*f)) {
            return Err(bad(
                "a commit has exactly the fields did, version, data, rev, prev, sig",
            ));
        }
        if fields.get("version").and_then(Value::as_i64) != Some(3) {
            return Err(bad("version is not 3"));
        }
        let did = fields
            .get("did")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("did missing"))?;
        let did = Did::new(did).map_err(|e| CommitError::Malformed(e.to_string()))?;
        let data = *fields
            .get("data")
            .and_then(Value::as_link)
            .ok_or_else(|| bad("data link missing"))?;
        if data.codec() != atcr_data::DAG_CBOR {
            return Err(bad("data is not a DAG-CBOR CID"));
        }
        let rev = fields
            .get("rev")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("rev missing"))?;
        let rev = Tid::new(rev).map_err(|e| CommitError::Malformed(e.to_string()))?;
        let prev = match fields.get("prev") {
            Some(Value::Null) => None,
            Some(Value::Link(c)) if c.codec() == atcr_data::DAG_CBOR => Some(*c),
            _ => return Err(bad("prev is neither a DAG-CBOR link nor null")),
        };
        let sig = fields
            .get("sig")
            .and_then(Value::as_bytes)
            .ok_or_else(|| bad("sig missing"))?
            .to_vec();
        Ok(Self {
            did,
            data,
            rev,
            prev,
            sig,
            fields,
        })
    }

    /// Verifies the signature with `key` (strict: 64 bytes, low-S).
    pub fn verify(&self, key: &PublicKey) -> Result<(), CommitError> {
        key.verify(&self.unsigned_bytes(), &self.sig)
            .map_err(CommitError::Signature)
    }
}

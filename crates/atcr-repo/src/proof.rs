//! Record proofs: the CAR `com.atproto.sync.getRecord` serves, and its
//! strict verification.

use crate::car::{CarError, read_car, write_car};
use crate::commit::{Commit, CommitError};
use crate::mst::{Mst, MstError, lookup_verified};
use crate::{BlockMap, BlockSource};
use atcr_crypto::PublicKey;
use atcr_data::{Cid, Value, from_cbor};
use atcr_syntax::{Did, Nsid, RecordKey};

/// Why a proof does not establish what it claims.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The CAR is malformed, truncated inside a section, or holds a block
    /// that does not match its CID.
    #[error(transparent)]
    Car(#[from] CarError),
    /// The CAR does not have exactly one root.
    #[error("proof CAR must have exactly one root (the commit), found {0}")]
    Roots(usize),
    /// A block the proof needs is absent (truncated or pruned CAR).
    #[error("proof is missing block {0}")]
    MissingBlock(Cid),
    /// The commit is malformed or its signature does not verify.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The commit belongs to another repository.
    #[error("commit is for {found}, expected {expected}")]
    DidMismatch {
        /// The DID the caller asked about.
        expected: String,
        /// The DID in the commit.
        found: String,
    },
    /// The MST path is incomplete or malformed.
    #[error(transparent)]
    Mst(MstError),
    /// The record block is malformed or of the wrong type.
    #[error("record: {0}")]
    Record(String),
}

impl From<MstError> for ProofError {
    fn from(e: MstError) -> Self {
        match e {
            MstError::MissingBlock(c) => Self::MissingBlock(c),
            other => Self::Mst(other),
        }
    }
}

/// What a verified proof establishes.
#[derive(Debug, Clone)]
pub struct VerifiedRecord {
    /// CID of the signed commit.
    pub commit_cid: Cid,
    /// The signed commit (did, rev, data root).
    pub commit: Commit,
    /// The record's CID and content, or `None` when the proof shows the
    /// record is absent (deleted: revoked).
    pub record: Option<(Cid, Value)>,
}

/// The repository path of a record.
pub fn record_path(collection: &Nsid, rkey: &RecordKey) -> String {
    format!("{collection}/{rkey}")
}

/// Builds the `getRecord` proof CAR: the commit, the covering MST proof for
/// the record's path, and the record block if present. `mst` must be committed
/// and match `commit.data`.
pub fn build_record_proof(
    commit: &Commit,
    mst: &Mst,
    store: &dyn BlockSource,
    collection: &Nsid,
    rkey: &RecordKey,
) -> Result<Vec<u8>, ProofError> {
    let path = record_path(collection, rkey);
    let mut blocks = BlockMap::new();
    mst.covering_proof(&path, store, &mut blocks)?;
    if let Some(cid) = mst.get(&path, store)? {
        let bytes = store
            .get_block(&cid)
            .map_err(MstError::from)?
            .ok_or(ProofError::MissingBlock(cid))?;
        blocks.insert(cid, bytes);
    }
    let (commit_cid, commit_bytes) = commit.to_block();
    // Commit first, then the rest in a deterministic order.
    let mut ordered: Vec<(Cid, std::sync::Arc<[u8]>)> = vec![(commit_cid, commit_bytes.into())];
    ordered.extend(blocks.sorted().into_values());
    Ok(write_car(
        &[commit_cid],
        ordered.iter().map(|(c, b)| (c, &b[..])),
    ))
}

/// Verifies a `getRecord` proof CAR for `collection/rkey` in `did`'s
/// repository against `key` (the DID document's current signing key).
///
/// Checks, failing closed at each step: the CAR header is exactly
/// `{version: 1, roots}` with one DAG-CBOR root; every block hashes to its
/// CID; the root is a v3 commit for `did` with exactly the fields `did,
/// version, data, rev, prev, sig` and a DAG-CBOR `data` link; the commit
/// signature (64-byte, low-S) under `key`; the MST path from the commit's
/// data root to the record's key, with every node on it present,
/// canonically encoded (maximal prefix compression, DAG-CBOR links) and
/// inside its parent's key range; and the record block, which must be a
/// DAG-CBOR `collection` record.
///
/// What it guarantees: **presence** — the record with this CID is at this
/// key under the signed commit; **absence** (`record: None`) — no record is
/// at this key under the signed commit, because the complete path the key
/// would be on is present and ends without it. The neighbours' paths that
/// [`build_record_proof`] also includes are not required (the reference PDS
/// does not always serve them), and they add nothing to either guarantee.
pub fn verify_record_proof(
    car: &[u8],
    did: &Did,
    key: &PublicKey,
    collection: &Nsid,
    rkey: &RecordKey,
) -> Result<VerifiedRecord, ProofError> {
    let (roots, blocks) = read_car(car)?;
    verify_record_blocks(&roots, &blocks, did, key, collection, rkey)
}

/// [`verify_record_proof`] over blocks already read (and hash-checked).
pub fn verify_record_blocks(
    roots: &[Cid],
    blocks: &BlockMap,
    did: &Did,
    key: &PublicKey,
    collection: &Nsid,
    rkey: &RecordKey,
) -> Result<VerifiedRecord, ProofError> {
    let [commit_cid] = roots else {
        return Err(ProofError::Roots(roots.len()));
    };
    let commit_bytes = blocks
        .get(commit_cid)
        .ok_or(ProofError::MissingBlock(*commit_cid))?;
    if !atcr_data::verify_block(commit_cid, commit_bytes) {
        return Err(ProofError::Car(CarError::HashMismatch(*commit_cid)));
    }
    let commit = Commit::from_bytes(commit_bytes)?;
    if commit.did != *did {
        return Err(ProofError::DidMismatch {
            expected: did.to_string(),
            found: commit.did.to_string(),
        });
    }
    commit.verify(key)?;
    let path = record_path(collection, rkey);
    // Only the path to the key is required: `lookup_verified` demands every
    // node on it, so a cut-short proof is an error and an absence is proven.
    // The neighbours' paths (which `build_record_proof` includes) are not
    // needed, and the reference PDS does not always serve them.
    let record = match lookup_verified(&commit.data, &path, blocks)? {
        None => None,
        Some(cid) => {
            let bytes = blocks.get(&cid).ok_or(ProofError::MissingBlock(cid))?;
            if !atcr_data::verify_block(&cid, bytes) || cid.codec() != atcr_data::DAG_CBOR {
                return Err(ProofError::Record(format!(
                    "record block {cid} is not a matching DAG-CBOR block"
                )));
            }
            let value = from_cbor(bytes).map_err(|e| ProofError::Record(e.to_string()))?;
            match value.get("$type").and_then(Value::as_str) {
                Some(t) if t == collection.as_str() => {}
                Some(t) => {
                    return Err(ProofError::Record(format!(
                        "$type is {t:?}, expected {collection:?}"
                    )));
                }
                None => return Err(ProofError::Record("record has no $type".into())),
            }
            Some((cid, value))
        }
    };
    Ok(VerifiedRecord {
        commit_cid: *commit_cid,
        commit,
        record,
    })
}

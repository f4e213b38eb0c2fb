//! A repository: an MST of records plus the signed commit over its root.

use crate::car::CarWriter;
use crate::commit::Commit;
use crate::mst::{Mst, MstError};
use crate::proof::{ProofError, build_record_proof, record_path};
use crate::{BlockMap, BlockSource, Layered};
use atcr_crypto::Keypair;
use atcr_data::{Cid, Value, cid_for_cbor, from_cbor, to_cbor};
use atcr_syntax::{Did, Nsid, RecordKey, Tid};

/// Errors from repository operations.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The MST could not be read or changed.
    #[error(transparent)]
    Mst(#[from] MstError),
    /// A create for a record that exists.
    #[error("record {0} already exists")]
    AlreadyExists(String),
    /// An update or delete for a record that does not exist.
    #[error("record {0} not found")]
    NotFound(String),
    /// The record is not a map whose `$type` is its collection.
    #[error("invalid record {path}: {reason}")]
    InvalidRecord {
        /// The record path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A commit block is missing or malformed.
    #[error("commit: {0}")]
    Commit(String),
    /// The new revision does not sort after the current one.
    #[error("revision {new} does not follow {current}")]
    RevisionOrder {
        /// Current revision.
        current: String,
        /// Proposed revision.
        new: String,
    },
    /// Writing the export failed.
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
}

/// One write of a commit.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create a record that must not exist.
    Create {
        /// Collection NSID.
        collection: Nsid,
        /// Record key.
        rkey: RecordKey,
        /// Record content (a map with `$type` = collection).
        record: Value,
    },
    /// Create or replace a record.
    Put {
        /// Collection NSID.
        collection: Nsid,
        /// Record key.
        rkey: RecordKey,
        /// Record content.
        record: Value,
    },
    /// Delete a record that must exist.
    Delete {
        /// Collection NSID.
        collection: Nsid,
        /// Record key.
        rkey: RecordKey,
    },
}

/// One applied operation, for indexes and event streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedOp {
    /// `collection/rkey`.
    pub path: String,
    /// The record CID after the commit (`None` for deletes).
    pub cid: Option<Cid>,
    /// The record CID before the commit (`None` for creates).
    pub prev: Option<Cid>,
}

/// Everything a commit produced.
#[derive(Debug, Clone)]
pub struct CommitData {
    /// CID of the new commit block.
    pub commit_cid: Cid,
    /// The new commit.
    pub commit: Commit,
    /// Blocks to persist: changed MST nodes, new records, the commit.
    pub new_blocks: BlockMap,
    /// Blocks a sync-1.1 consumer needs: covering proofs for every touched
    /// path, the new records and the commit.
    pub relevant_blocks: BlockMap,
    /// The operations, in request order.
    pub ops: Vec<AppliedOp>,
}

/// A loaded repository.
#[derive(Debug, Clone)]
pub struct Repo {
    commit: Commit,
    commit_cid: Cid,
    mst: Mst,
}

fn check_record(collection: &Nsid, path: &str, record: &Value) -> Result<(), RepoError> {
    let invalid = |reason: &str| RepoError::InvalidRecord {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if record.as_map().is_none() {
        return Err(invalid("record must be an object"));
    }
    match record.get("$type").and_then(Value::as_str) {
        Some(t) if t == collection.as_str() => Ok(()),
        Some(_) => Err(invalid("$type does not match the collection")),
        None => Err(invalid("$type is missing")),
    }
}

impl Repo {
    /// Creates a new repository with an initial commit holding `writes`.
    pub fn create(
        did: Did,
        key: &Keypair,
        rev: Tid,
        writes: &[WriteOp],
        store: &dyn BlockSource,
    ) -> Result<(Self, CommitData), RepoError> {
        let mut mst = Mst::new();
        let (new_blocks, ops) = apply(&mut mst, writes, store)?;
        finish(did, key, rev, mst, new_blocks, ops, store)
    }

    /// Loads the repository whose head commit is `commit_cid`.
    pub fn load(commit_cid: &Cid, store: &dyn BlockSource) -> Result<Self, RepoError> {
        let bytes = store
            .get_block(commit_cid)
            .map_err(|e| RepoError::Commit(e.to_string()))?
            .ok_or_else(|| RepoError::Commit(format!("commit block {commit_cid} missing")))?;
        let commit = Commit::from_bytes(&bytes).map_err(|e| RepoError::Commit(e.to_string()))?;
        let mst = Mst::load(&commit.data, store)?;
        Ok(Self {
            commit,
            commit_cid: *commit_cid,
            mst,
        })
    }

    /// Applies `writes` as one commit signed by `key` with revision `rev`.
    /// All-or-nothing: on error the repository is unchanged.
    pub fn apply_writes(
        &mut self,
        writes: &[WriteOp],
        key: &Keypair,
        rev: Tid,
        store: &dyn BlockSource,
    ) -> Result<CommitData, RepoError> {
        if rev <= self.commit.rev {
            return Err(RepoError::RevisionOrder {
                current: self.commit.rev.to_string(),
                new: rev.to_string(),
            });
        }
        let mut mst = self.mst.clone();
        let (new_blocks, ops) = apply(&mut mst, writes, store)?;
        let (repo, data) = finish(
            self.commit.did.clone(),
            key,
            rev,
            mst,
            new_blocks,
            ops,
            store,
        )?;
        *self = repo;
        Ok(data)
    }

    /// Re-signs the head commit with a new key (after a key rotation), with
    /// the same data root and a new revision. Returns the new commit block.
    pub fn resign(&mut self, key: &Keypair, rev: Tid) -> (Cid, Vec<u8>) {
        self.commit = Commit::sign(self.commit.did.clone(), self.commit.data, rev, None, key);
        let (cid, bytes) = self.commit.to_block();
        self.commit_cid = cid;
        (cid, bytes)
    }

    /// The head commit.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }
    /// The head commit's CID.
    pub fn commit_cid(&self) -> Cid {
        self.commit_cid
    }
    /// The record tree.
    pub fn mst(&self) -> &Mst {
        &self.mst
    }

    /// A record's CID and content.
    pub fn get_record(
        &self,
        collection: &Nsid,
        rkey: &RecordKey,
        store: &dyn BlockSource,
    ) -> Result<Option<(Cid, Value)>, RepoError> {
        let path = record_path(collection, rkey);
        let Some(cid) = self.mst.get(&path, store)? else {
            return Ok(None);
        };
        let bytes = store
            .get_block(&cid)
            .map_err(MstError::from)?
            .ok_or(MstError::MissingBlock(cid))?;
        let value = from_cbor(&bytes).map_err(|e| RepoError::InvalidRecord {
            path,
            reason: e.to_string(),
        })?;
        Ok(Some((cid, value)))
    }

    /// The `getRecord` proof CAR for a record (or for its absence).
    pub fn record_proof(
        &self,
        collection: &Nsid,
        rkey: &RecordKey,
        store: &dyn BlockSource,
    ) -> Result<Vec<u8>, ProofError> {
        build_record_proof(&self.commit, &self.mst, store, collection, rkey)
    }

    /// Writes the whole repository as a CAR (`getRepo`): commit, every MST
    /// node, every record, each block once (two records with the same
    /// content share one block).
    pub fn export_car<W: std::io::Write>(
        &self,
        store: &dyn BlockSource,
        out: W,
    ) -> Result<W, RepoError> {
        let mut w = CarWriter::new(out, &[self.commit_cid])?;
        let (_, commit_bytes) = self.commit.to_block();
        w.write_block(&self.commit_cid, &commit_bytes)?;
        let mut nodes = BlockMap::new();
        self.mst.node_blocks(store, &mut nodes)?;
        for (cid, bytes) in nodes.sorted().into_values() {
            w.write_block(&cid, &bytes)?;
        }
        let mut err = None;
        let mut written = std::collections::HashSet::new();
        self.mst.walk_from("", store, &mut |_, cid| {
            if !written.insert(*cid) {
                return true;
            }
            match store.get_block(cid) {
                Ok(Some(bytes)) => match w.write_block(cid, &bytes) {
                    Ok(()) => true,
                    Err(e) => {
                        err = Some(RepoError::Io(e));
                        false
                    }
                },
                Ok(None) => {
                    err = Some(RepoError::Mst(MstError::MissingBlock(*cid)));
                    false
                }
                Err(e) => {
                    err = Some(RepoError::Mst(e.into()));
                    false
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(w.finish()?)
    }
}

fn apply(
    mst: &mut Mst,
    writes: &[WriteOp],
    store: &dyn BlockSource,
) -> Result<(BlockMap, Vec<AppliedOp>), RepoError> {
    let mut records = BlockMap::new();
    let mut ops = Vec::with_capacity(writes.len());
    for w in writes {
        match w {
            WriteOp::Create {
                collection,
                rkey,
                record,
            }
            | WriteOp::Put {
                collection,
                rkey,
                record,
            } => {
                let path = record_path(collection, rkey);
                check_record(collection, &path, record)?;
                let bytes = to_cbor(record);
                let cid = cid_for_cbor(&bytes);
                records.insert(cid, bytes);
                let prev = mst.insert(&path, cid, &Layered(&records, store))?;
                if prev.is_some() && matches!(w, WriteOp::Create { .. }) {
                    return Err(RepoError::AlreadyExists(path));
                }
                ops.push(AppliedOp {
                    path,
                    cid: Some(cid),
                    prev,
                });
            }
            WriteOp::Delete { collection, rkey } => {
                let path = record_path(collection, rkey);
                let prev = mst.delete(&path, store)?;
                if prev.is_none() {
                    return Err(RepoError::NotFound(path));
                }
                ops.push(AppliedOp {
                    path,
                    cid: None,
                    prev,
                });
            }
        }
    }
    Ok((records, ops))
}

fn finish(
    did: Did,
    key: &Keypair,
    rev: Tid,
    mut mst: Mst,
    records: BlockMap,
    ops: Vec<AppliedOp>,
    store: &dyn BlockSource,
) -> Result<(Repo, CommitData), RepoError> {
    let (root, nodes) = mst.commit();
    let commit = Commit::sign(did, root, rev, None, key);
    let (commit_cid, commit_bytes) = commit.to_block();
    let mut new_blocks = nodes;
    // Only records still referenced (a record put then deleted in one batch is not).
    let mut relevant = BlockMap::new();
    for op in &ops {
        if let Some(cid) = op.cid
            && let Some(b) = records.get(&cid)
        {
            new_blocks.insert(cid, b.clone());
            relevant.insert(cid, b.clone());
        }
    }
    let view = Layered(&new_blocks, store);
    for op in &ops {
        mst.covering_proof(&op.path, &view, &mut relevant)?;
    }
    new_blocks.insert(commit_cid, commit_bytes.clone());
    relevant.insert(commit_cid, commit_bytes);
    let repo = Repo {
        commit: commit.clone(),
        commit_cid,
        mst,
    };
    Ok((
        repo,
        CommitData {
            commit_cid,
            commit,
            new_blocks,
            relevant_blocks: relevant,
            ops,
        },
    ))
}

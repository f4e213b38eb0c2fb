//! Repository writes and reads, proofs, export, blobs.

use crate::store::{SqlBlocks, repo_root};
use crate::{Pds, PdsError, PdsResult};
use atcr_data::{Value, cid_for_raw, from_cbor, json};
use atcr_repo::{CommitData, Repo, RepoError, WriteOp};
use atcr_sqlite::rusqlite::{self, OptionalExtension};
use atcr_syntax::{Nsid, RecordKey, Tid};
use atcr_xrpc::XrpcError;
use atcr_xrpc::types::CommitMeta;

/// A write request (one of an `applyWrites` batch, or a single-record call).
#[derive(Debug, Clone)]
pub enum Write {
    /// Create; a TID key is generated when `rkey` is `None`.
    Create {
        /// Collection.
        collection: String,
        /// Record key.
        rkey: Option<String>,
        /// Record (atproto JSON).
        record: serde_json::Value,
    },
    /// Create or replace, optionally only if the record is currently `swap`
    /// (`Some(None)`: only if it does not exist).
    Put {
        /// Collection.
        collection: String,
        /// Record key.
        rkey: String,
        /// Record.
        record: serde_json::Value,
        /// Expected current CID.
        swap: Option<Option<String>>,
    },
    /// Delete, optionally only if the record is currently `swap`.
    Delete {
        /// Collection.
        collection: String,
        /// Record key.
        rkey: String,
        /// Expected current CID.
        swap: Option<String>,
    },
}

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The new commit, `None` when nothing changed (delete of an absent record).
    pub commit: Option<CommitMeta>,
    /// Per write: the record URI and new CID (`None` for deletes).
    pub results: Vec<(String, Option<String>)>,
}

fn invalid(m: impl Into<String>) -> PdsError {
    PdsError(XrpcError::invalid(m))
}

fn swap_error(m: impl Into<String>) -> PdsError {
    PdsError(XrpcError::new(400, "InvalidSwap", m))
}

/// The blob reference of bytes (raw-codec CIDv1, as every PDS computes it).
pub fn blob_ref(bytes: &[u8], mime: &str) -> serde_json::Value {
    serde_json::json!({"$type": "blob", "ref": {"$link": cid_for_raw(bytes).to_string()}, "mimeType": mime, "size": bytes.len()})
}

/// Stores blobs, returning their CIDs.
fn insert_blobs(
    tx: &rusqlite::Transaction<'_>,
    did: &str,
    blobs: Vec<(Vec<u8>, String)>,
) -> rusqlite::Result<Vec<atcr_data::Cid>> {
    let now = atcr_syntax::Datetime::now().to_string();
    let mut cids = Vec::with_capacity(blobs.len());
    for (bytes, mime) in blobs {
        let cid = cid_for_raw(&bytes);
        tx.prepare_cached(
            "INSERT OR IGNORE INTO blob (did, cid, mime_type, size, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute((did, cid.to_string(), &mime, bytes.len() as i64, &bytes, &now))?;
        cids.push(cid);
    }
    Ok(cids)
}

/// Persists a commit's blocks and record-index changes (the caller updates the head).
pub(crate) fn store_commit(
    tx: &rusqlite::Transaction<'_>,
    did: &str,
    data: &CommitData,
) -> rusqlite::Result<()> {
    {
        // A block written again (a record restored to earlier content)
        // takes the new revision, so `getRepo?since=` includes it.
        let mut ins = tx.prepare_cached(
            "INSERT INTO repo_block (did, cid, bytes, rev) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (did, cid) DO UPDATE SET rev = excluded.rev",
        )?;
        let rev = data.commit.rev.as_str();
        for (cid, bytes) in data.new_blocks.iter() {
            ins.execute((did, cid.to_string(), &bytes[..], rev))?;
        }
    }
    for op in &data.ops {
        let (collection, rkey) = op.path.split_once('/').unwrap_or((&op.path, ""));
        match op.cid {
            Some(cid) => tx.execute(
                "INSERT OR REPLACE INTO record (did, collection, rkey, cid) VALUES (?1, ?2, ?3, ?4)",
                (did, collection, rkey, cid.to_string()),
            )?,
            None => tx.execute("DELETE FROM record WHERE did = ?1 AND collection = ?2 AND rkey = ?3", (did, collection, rkey))?,
        };
    }
    Ok(())
}

fn current_cid(
    tx: &rusqlite::Connection,
    did: &str,
    collection: &str,
    rkey: &str,
) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT cid FROM record WHERE did = ?1 AND collection = ?2 AND rkey = ?3",
        (did, collection, rkey),
        |r| r.get(0),
    )
    .optional()
}

fn parse_record(collection: &Nsid, record: &serde_json::Value) -> PdsResult<Value> {
    let mut record = record.clone();
    match record.as_object_mut() {
        Some(obj) => {
            obj.entry("$type")
                .or_insert_with(|| collection.as_str().into());
        }
        None => return Err(invalid("Record must be an object")),
    }
    let value =
        json::from_json_object(&record).map_err(|e| invalid(format!("Invalid record: {e}")))?;
    match value.get("$type").and_then(Value::as_str) {
        Some(t) if t == collection.as_str() => Ok(value),
        _ => Err(invalid(format!("Invalid $type: expected {collection}"))),
    }
}

fn map_repo_error(e: RepoError) -> PdsError {
    match e {
        RepoError::AlreadyExists(p) => invalid(format!("Record already exists: {p}")),
        RepoError::NotFound(p) => invalid(format!("Could not find record: {p}")),
        RepoError::InvalidRecord { path, reason } => {
            invalid(format!("Invalid record {path}: {reason}"))
        }
        other => {
            tracing::error!("repository write: {other}");
            PdsError(XrpcError::internal())
        }
    }
}

impl Pds {
    /// Applies writes to `did`'s repository as one signed commit.
    pub async fn write(
        &self,
        did: &str,
        writes: Vec<Write>,
        swap_commit: Option<String>,
    ) -> PdsResult<WriteResult> {
        self.write_with_blobs(did, vec![], writes, swap_commit)
            .await
    }

    /// Stores blobs `(bytes, mime)` and applies writes (which may reference
    /// them) as one signed commit, in one transaction.
    pub async fn write_with_blobs(
        &self,
        did: &str,
        blobs: Vec<(Vec<u8>, String)>,
        writes: Vec<Write>,
        swap_commit: Option<String>,
    ) -> PdsResult<WriteResult> {
        if writes.is_empty() || writes.len() > 200 {
            return Err(invalid("a commit takes 1 to 200 writes"));
        }
        self.check_blob_sizes(&blobs)?;
        let this = self.clone();
        let did = did.to_owned();
        let (result, seq) = self
            .db()
            .write(move |tx| {
                let blob_cids = insert_blobs(tx, &did, blobs)?;
                let (head, rev) = repo_root(tx, &did)?.ok_or_else(|| {
                    PdsError(XrpcError::new(
                        400,
                        "RepoNotFound",
                        format!("Could not find repo: {did}"),
                    ))
                })?;
                if let Some(expected) = &swap_commit
                    && *expected != head
                {
                    return Err(swap_error(format!("Commit was at {head}")));
                }
                let mut ops = Vec::with_capacity(writes.len());
                let mut uris = Vec::with_capacity(writes.len());
                let mut deletes_of_absent = 0;
                for w in &writes {
                    let (collection, rkey) = match w {
                        Write::Create {
                            collection, rkey, ..
                        } => (collection, rkey.clone()),
                        Write::Put {
                            collection, rkey, ..
                        }
                        | Write::Delete {
                            collection, rkey, ..
                        } => (collection, Some(rkey.clone())),
                    };
                    let collection = Nsid::new(collection.as_str())
                        .map_err(|e| invalid(format!("Invalid collection: {e}")))?;
                    let rkey = match rkey {
                        Some(r) => RecordKey::new(r)
                            .map_err(|e| invalid(format!("Invalid record key: {e}")))?,
                        None => RecordKey::new(this.inner.clock.next().into_string())
                            .map_err(|_| XrpcError::internal())?,
                    };
                    uris.push(format!("at://{did}/{collection}/{rkey}"));
                    let current = current_cid(tx, &did, collection.as_str(), rkey.as_str())?;
                    match w {
                        Write::Create { record, .. } => {
                            let record = parse_record(&collection, record)?;
                            ops.push(WriteOp::Create {
                                collection,
                                rkey,
                                record,
                            });
                        }
                        Write::Put { record, swap, .. } => {
                            if let Some(expected) = swap
                                && *expected != current
                            {
                                return Err(swap_error(format!(
                                    "Record was at {}",
                                    current.as_deref().unwrap_or("null")
                                )));
                            }
                            let record = parse_record(&collection, record)?;
                            ops.push(WriteOp::Put {
                                collection,
                                rkey,
                                record,
                            });
                        }
                        Write::Delete { swap, .. } => {
                            if let Some(expected) = swap
                                && Some(expected) != current.as_ref()
                            {
                                return Err(swap_error(format!(
                                    "Record was at {}",
                                    current.as_deref().unwrap_or("null")
                                )));
                            }
                            if current.is_none() && writes.len() == 1 {
                                // deleteRecord of an absent record is a no-op, as in the reference PDS.
                                deletes_of_absent += 1;
                                continue;
                            }
                            ops.push(WriteOp::Delete { collection, rkey });
                        }
                    }
                }
                if deletes_of_absent > 0 {
                    let r = WriteResult {
                        commit: None,
                        results: vec![(uris[0].clone(), None)],
                    };
                    return Ok((r, None));
                }
                let key = Pds::signing_key(tx, &did)?;
                this.inner
                    .clock
                    .observe(&Tid::new(rev).map_err(|_| XrpcError::internal())?);
                let head = atcr_data::parse_cid(&head).map_err(|_| XrpcError::internal())?;
                let blocks = SqlBlocks {
                    conn: tx,
                    did: &did,
                };
                let mut repo = Repo::load(&head, &blocks).map_err(map_repo_error)?;
                let (since, prev_data) = (repo.commit().rev.to_string(), repo.commit().data);
                let data = repo
                    .apply_writes(&ops, &key, this.inner.clock.next(), &blocks)
                    .map_err(map_repo_error)?;
                store_commit(tx, &did, &data)?;
                let event = crate::events::commit_event(
                    &did,
                    &data,
                    Some(&since),
                    Some(&prev_data),
                    &blob_cids,
                );
                let seq =
                    crate::events::sequence(tx, &did, "#commit", event, this.inner.cfg.backfill)?;
                tx.execute(
                    "UPDATE repo_root SET cid = ?2, rev = ?3 WHERE did = ?1",
                    (&did, data.commit_cid.to_string(), data.commit.rev.as_str()),
                )?;
                let results = uris
                    .into_iter()
                    .zip(data.ops.iter())
                    .map(|(u, op)| (u, op.cid.map(|c| c.to_string())))
                    .collect();
                let r = WriteResult {
                    commit: Some(CommitMeta {
                        cid: data.commit_cid.to_string(),
                        rev: data.commit.rev.to_string(),
                    }),
                    results,
                };
                Ok((r, Some(seq)))
            })
            .await?;
        if let Some(seq) = seq {
            self.published(seq);
        }
        Ok(result)
    }

    /// A record's CID and content (atproto JSON).
    pub async fn get_record(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
    ) -> PdsResult<Option<(String, serde_json::Value)>> {
        let (d, c, r) = (did.to_owned(), collection.to_owned(), rkey.to_owned());
        self.db()
            .read(move |conn| {
                let Some(cid) = current_cid(conn, &d, &c, &r)? else {
                    return Ok(None);
                };
                let bytes: Vec<u8> = conn.query_row(
                    "SELECT bytes FROM repo_block WHERE did = ?1 AND cid = ?2",
                    (&d, &cid),
                    |row| row.get(0),
                )?;
                let value = from_cbor(&bytes).map_err(|_| XrpcError::internal())?;
                Ok(Some((cid, json::to_json(&value))))
            })
            .await
    }

    /// Records of a collection by record key, newest first unless `reverse`.
    pub async fn list_records(
        &self,
        did: &str,
        collection: &str,
        limit: usize,
        cursor: Option<String>,
        reverse: bool,
    ) -> PdsResult<(Vec<(String, String, serde_json::Value)>, Option<String>)> {
        let (d, c) = (did.to_owned(), collection.to_owned());
        let limit = limit.clamp(1, 100);
        self.db()
            .read(move |conn| {
                let sql = if reverse {
                    "SELECT r.rkey, r.cid, b.bytes FROM record r JOIN repo_block b ON b.did = r.did AND b.cid = r.cid
                     WHERE r.did = ?1 AND r.collection = ?2 AND r.rkey > ?3 ORDER BY r.rkey ASC LIMIT ?4"
                } else {
                    "SELECT r.rkey, r.cid, b.bytes FROM record r JOIN repo_block b ON b.did = r.did AND b.cid = r.cid
                     WHERE r.did = ?1 AND r.collection = ?2 AND r.rkey < ?3 ORDER BY r.rkey DESC LIMIT ?4"
                };
                let start = cursor.unwrap_or_else(|| if reverse { String::new() } else { "\u{10FFFF}".into() });
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map((&d, &c, &start, limit as i64), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
                })?;
                let mut out = vec![];
                for row in rows {
                    let (rkey, cid, bytes) = row?;
                    let value = from_cbor(&bytes).map_err(|_| XrpcError::internal())?;
                    out.push((rkey, cid, json::to_json(&value)));
                }
                // As the reference PDS: the last record's key whenever there is
                // one (an empty page ends the listing).
                let next = out.last().map(|x| x.0.clone());
                Ok::<_, PdsError>((out, next))
            })
            .await
    }

    /// The collections present in a repository.
    pub async fn collections(&self, did: &str) -> PdsResult<Vec<String>> {
        let d = did.to_owned();
        self.db()
            .read(move |c| {
                let mut s = c.prepare(
                    "SELECT DISTINCT collection FROM record WHERE did = ?1 ORDER BY collection",
                )?;
                let rows = s.query_map([&d], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(PdsError::from)
            })
            .await
    }

    fn load_repo(conn: &rusqlite::Connection, did: &str) -> PdsResult<Repo> {
        let (head, _) = repo_root(conn, did)?.ok_or_else(|| {
            PdsError(XrpcError::new(
                400,
                "RepoNotFound",
                format!("Could not find repo for DID: {did}"),
            ))
        })?;
        let head = atcr_data::parse_cid(&head).map_err(|_| XrpcError::internal())?;
        Repo::load(&head, &SqlBlocks { conn, did }).map_err(map_repo_error)
    }

    /// The `sync.getRecord` proof CAR (for a record or its absence).
    pub async fn record_proof(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
    ) -> PdsResult<Vec<u8>> {
        let collection =
            Nsid::new(collection).map_err(|e| invalid(format!("Invalid collection: {e}")))?;
        let rkey = RecordKey::new(rkey).map_err(|e| invalid(format!("Invalid record key: {e}")))?;
        let d = did.to_owned();
        self.db()
            .read(move |conn| {
                let tx = conn.transaction()?;
                let repo = Pds::load_repo(&tx, &d)?;
                repo.record_proof(&collection, &rkey, &SqlBlocks { conn: &tx, did: &d })
                    .map_err(|e| {
                        tracing::error!("proof for {d}: {e}");
                        PdsError(XrpcError::internal())
                    })
            })
            .await
    }

    /// The whole repository as a CAR (`sync.getRepo`).
    pub async fn export_repo(&self, did: &str) -> PdsResult<Vec<u8>> {
        let d = did.to_owned();
        self.db()
            .read(move |conn| {
                let tx = conn.transaction()?;
                let repo = Pds::load_repo(&tx, &d)?;
                repo.export_car(&SqlBlocks { conn: &tx, did: &d }, Vec::new())
                    .map_err(map_repo_error)
            })
            .await
    }

    /// The blocks written after revision `since`, with the head commit as
    /// root (`sync.getRepo?since=`: a diff, as the reference PDS answers).
    pub async fn export_repo_since(&self, did: &str, since: &str) -> PdsResult<Vec<u8>> {
        let (d, since) = (did.to_owned(), since.to_owned());
        self.db()
            .read(move |conn| {
                let tx = conn.transaction()?;
                let (head, _) = repo_root(&tx, &d)?.ok_or_else(|| {
                    PdsError(XrpcError::new(400, "RepoNotFound", format!("Could not find repo for DID: {d}")))
                })?;
                let head = atcr_data::parse_cid(&head).map_err(|_| XrpcError::internal())?;
                let mut w = atcr_repo::CarWriter::new(Vec::new(), &[head]).map_err(internal)?;
                let mut s = tx.prepare(
                    "SELECT cid, bytes FROM repo_block WHERE did = ?1 AND rev > ?2 ORDER BY rev, cid",
                )?;
                let mut rows = s.query((&d, &since))?;
                while let Some(r) = rows.next()? {
                    let cid: String = r.get(0)?;
                    let bytes: Vec<u8> = r.get(1)?;
                    let cid = atcr_data::parse_cid(&cid).map_err(internal)?;
                    w.write_block(&cid, &bytes).map_err(internal)?;
                }
                w.finish().map_err(internal)
            })
            .await
    }

    /// A CAR of the named blocks of a repository (`sync.getBlocks`).
    pub async fn blocks_car(&self, did: &str, cids: Vec<String>) -> PdsResult<Vec<u8>> {
        if cids.len() > 1000 {
            return Err(invalid("at most 1000 cids at once"));
        }
        let parsed = cids
            .iter()
            .map(|c| atcr_data::parse_cid(c).map_err(|e| invalid(format!("Invalid cid {c}: {e}"))))
            .collect::<PdsResult<Vec<_>>>()?;
        let d = did.to_owned();
        self.db()
            .read(move |conn| {
                let mut w = atcr_repo::CarWriter::new(Vec::new(), &[]).map_err(internal)?;
                let mut missing = vec![];
                let mut s = conn
                    .prepare_cached("SELECT bytes FROM repo_block WHERE did = ?1 AND cid = ?2")?;
                for cid in &parsed {
                    match s
                        .query_row((&d, cid.to_string()), |r| r.get::<_, Vec<u8>>(0))
                        .optional()?
                    {
                        Some(bytes) => w.write_block(cid, &bytes).map_err(internal)?,
                        None => missing.push(cid.to_string()),
                    }
                }
                if !missing.is_empty() {
                    // The reference PDS's answer.
                    return Err(invalid(format!(
                        "Could not find cids: {}",
                        missing.join(",")
                    )));
                }
                w.finish().map_err(internal)
            })
            .await
    }

    /// `sync.getRepoStatus`.
    pub async fn repo_status(&self, did: &str) -> PdsResult<serde_json::Value> {
        let d = did.to_owned();
        let row: Option<(bool, Option<String>)> = self
            .db()
            .read(move |c| {
                c.query_row(
                    "SELECT a.active, r.rev FROM account a LEFT JOIN repo_root r ON r.did = a.did WHERE a.did = ?1",
                    [&d],
                    |r| Ok((r.get::<_, i64>(0)? == 1, r.get(1)?)),
                )
                .optional()
                .map_err(PdsError::from)
            })
            .await?;
        let Some((active, rev)) = row else {
            return Err(PdsError(XrpcError::new(
                400,
                "RepoNotFound",
                format!("Could not find repo for DID: {did}"),
            )));
        };
        let mut out = serde_json::json!({"did": did, "active": active});
        if active {
            out["rev"] = rev.into();
        } else {
            out["status"] = "takendown".into();
        }
        Ok(out)
    }

    /// The head commit.
    pub async fn latest_commit(&self, did: &str) -> PdsResult<CommitMeta> {
        let d = did.to_owned();
        let (cid, rev) = self
            .db()
            .read(move |c| repo_root(c, &d).map_err(PdsError::from))
            .await?
            .ok_or_else(|| {
                PdsError(XrpcError::new(
                    400,
                    "RepoNotFound",
                    format!("Could not find root for DID: {did}"),
                ))
            })?;
        Ok(CommitMeta { cid, rev })
    }

    /// Every hosted repository: `(did, head, rev, active)`.
    pub async fn list_repos(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> PdsResult<Vec<(String, String, String, bool)>> {
        let limit = limit.clamp(1, 1000) as i64;
        self.db()
            .read(move |c| {
                let mut s = c.prepare(
                    "SELECT r.did, r.cid, r.rev, a.active FROM repo_root r JOIN account a ON a.did = r.did
                     WHERE r.did > ?1 ORDER BY r.did LIMIT ?2",
                )?;
                let rows = s.query_map((cursor.unwrap_or_default(), limit), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? == 1))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(PdsError::from)
            })
            .await
    }

    /// Stores a blob, returning its blob reference.
    pub async fn put_blob(
        &self,
        did: &str,
        bytes: Vec<u8>,
        mime: &str,
    ) -> PdsResult<serde_json::Value> {
        let cid = cid_for_raw(&bytes).to_string();
        let size = bytes.len() as i64;
        let (d, m, c) = (did.to_owned(), mime.to_owned(), cid.clone());
        self.db()
            .write(move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO blob (did, cid, mime_type, size, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    (&d, &c, &m, size, &bytes, atcr_syntax::Datetime::now().as_str()),
                )?;
                Ok::<_, PdsError>(())
            })
            .await?;
        Ok(
            serde_json::json!({"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}),
        )
    }

    /// Stores a blob streamed from `body`: spooled to a file while hashed
    /// (memory stays flat whatever the size), refused with 413 beyond
    /// `max_blob_bytes`, then copied into its row with incremental blob I/O.
    pub async fn put_blob_stream<S, E>(
        &self,
        did: &str,
        mut body: S,
        mime: &str,
    ) -> PdsResult<serde_json::Value>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt as _;
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;
        let max = self.config().max_blob_bytes;
        let spool = Spool::new(&self.inner.spool);
        let io = |e: std::io::Error| internal(format!("blob spool: {e}"));
        let mut file = tokio::fs::File::create(&spool.0).await.map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| PdsError(XrpcError::invalid(format!("reading the blob: {e}"))))?;
            size += chunk.len();
            if size > max {
                return Err(PdsError(XrpcError::new(
                    413,
                    "PayloadTooLarge",
                    format!("blob is larger than {max} bytes"),
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let cid = atcr_data::raw_cid_from_sha256(&hasher.finalize().into()).to_string();
        let (d, m, c, path) = (
            did.to_owned(),
            mime.to_owned(),
            cid.clone(),
            spool.0.clone(),
        );
        self.db()
            .write(move |tx| {
                let added = tx.execute(
                    "INSERT OR IGNORE INTO blob (did, cid, mime_type, size, bytes, created_at) VALUES (?1, ?2, ?3, ?4, zeroblob(?4), ?5)",
                    (&d, &c, &m, size as i64, atcr_syntax::Datetime::now().as_str()),
                )?;
                if added == 1 {
                    let row = tx.last_insert_rowid();
                    let mut dst = tx.blob_open(
                        atcr_sqlite::rusqlite::MAIN_DB,
                        "blob",
                        "bytes",
                        row,
                        false,
                    )?;
                    let mut src = std::fs::File::open(&path)
                        .map_err(|e| internal(format!("blob spool: {e}")))?;
                    std::io::copy(&mut src, &mut dst)
                        .map_err(|e| internal(format!("blob copy: {e}")))?;
                }
                Ok::<_, PdsError>(())
            })
            .await?;
        drop(spool);
        Ok(
            serde_json::json!({"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}),
        )
    }

    fn check_blob_sizes(&self, blobs: &[(Vec<u8>, String)]) -> PdsResult<()> {
        match blobs
            .iter()
            .find(|(b, _)| b.len() > self.config().max_blob_bytes)
        {
            Some((b, _)) => Err(PdsError(XrpcError::new(
                413,
                "PayloadTooLarge",
                format!("blob of {} bytes is over the limit", b.len()),
            ))),
            None => Ok(()),
        }
    }

    /// A blob's bytes and MIME type.
    pub async fn get_blob(&self, did: &str, cid: &str) -> PdsResult<Option<(Vec<u8>, String)>> {
        let (d, c) = (did.to_owned(), cid.to_owned());
        self.db()
            .read(move |conn| {
                conn.query_row(
                    "SELECT bytes, mime_type FROM blob WHERE did = ?1 AND cid = ?2",
                    (&d, &c),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(PdsError::from)
            })
            .await
    }

    /// Blob CIDs of an account, in CID order after `cursor`.
    pub async fn list_blobs(
        &self,
        did: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> PdsResult<Vec<String>> {
        let d = did.to_owned();
        let limit = limit.clamp(1, 1000) as i64;
        self.db()
            .read(move |c| {
                let mut s = c.prepare(
                    "SELECT cid FROM blob WHERE did = ?1 AND cid > ?2 ORDER BY cid LIMIT ?3",
                )?;
                let rows = s.query_map((&d, cursor.unwrap_or_default(), limit), |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(PdsError::from)
            })
            .await
    }
}

/// A server-side failure: logged, answered as InternalServerError.
fn internal(e: impl std::fmt::Display) -> PdsError {
    tracing::error!("{e}");
    PdsError(XrpcError::internal())
}

/// A spool file, removed when dropped.
struct Spool(std::path::PathBuf);

impl Spool {
    fn new(dir: &std::path::Path) -> Self {
        use rand::RngCore as _;
        let mut r = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut r);
        Self(dir.join(r.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

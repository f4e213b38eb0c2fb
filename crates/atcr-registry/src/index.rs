//! The registry index (SQLite, or PostgreSQL shared by replicas): which blobs each repository links, manifests
//! (bytes kept for fast pulls, the record that holds them), tags, upload
//! sessions, the push journal and the PDS sessions of remote owners.
//!
//! Repositories are keyed by the owner's DID, never by handle, so
//! `alice.example.com/app` and `did-plc-…/app` are one repository.

use atcr_sql::{Database, Migration, OptionalExtension, Row, SqlError};
use std::path::Path;

mod gc;
mod web;
pub use gc::{BlobRow, LinkRow, MarkRow, RetentionManifest, RetentionView};
pub use web::{CosignRow, OwnerRepo, TagRow, WebSession};

const MIGRATIONS: &[Migration] = &[
    (
        1,
        "CREATE TABLE blob (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE repo_blob (
        did TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT NOT NULL REFERENCES blob (digest),
        PRIMARY KEY (did, repo, digest)
    );
    CREATE TABLE repository (
        did TEXT NOT NULL, repo TEXT NOT NULL, display TEXT NOT NULL,
        PRIMARY KEY (did, repo)
    );
    CREATE INDEX repository_display ON repository (display);
    CREATE TABLE manifest (
        did TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT NOT NULL,
        media_type TEXT NOT NULL, size INTEGER NOT NULL, bytes BLOB NOT NULL,
        artifact_type TEXT, subject TEXT, annotations TEXT,
        record_rkey TEXT NOT NULL, record_cid TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (did, repo, digest)
    );
    CREATE INDEX manifest_subject ON manifest (did, repo, subject) WHERE subject IS NOT NULL;
    CREATE TABLE tag (
        did TEXT NOT NULL, repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
        record_cid TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (did, repo, tag)
    );
    CREATE TABLE upload (
        id TEXT PRIMARY KEY, did TEXT NOT NULL, repo TEXT NOT NULL,
        state TEXT NOT NULL, updated_at INTEGER NOT NULL
    );
    CREATE TABLE pending (
        id INTEGER PRIMARY KEY AUTOINCREMENT, did TEXT NOT NULL, op TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE pds_session (
        did TEXT PRIMARY KEY, pds TEXT NOT NULL, handle TEXT NOT NULL,
        access_jwt TEXT NOT NULL, refresh_jwt TEXT NOT NULL, updated_at INTEGER NOT NULL
    );",
    ),
    (
        2,
        // Small blobs the registry makes (signature artifacts), kept in the
        // index so they commit in the same transaction as their manifest.
        "CREATE TABLE inline_blob (digest TEXT PRIMARY KEY, bytes BLOB NOT NULL);",
    ),
    (
        3,
        // Garbage collection: when each link was made or last confirmed (a
        // link younger than the grace period is never removed), blobs being
        // deleted (`doomed`: invisible, and no upload may place them), and
        // the digest an upload is placing (GC never dooms it meanwhile).
        "ALTER TABLE repo_blob ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;
    UPDATE repo_blob SET linked_at = CAST(strftime('%s', 'now') AS INTEGER);
    CREATE INDEX repo_blob_digest ON repo_blob (digest);
    ALTER TABLE blob ADD COLUMN doomed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX blob_doomed ON blob (doomed) WHERE doomed = 1;
    ALTER TABLE upload ADD COLUMN finishing TEXT;
    CREATE INDEX upload_finishing ON upload (finishing) WHERE finishing IS NOT NULL;",
    ),
    (
        4,
        // Following the owners' PDS event streams: the last event applied
        // per stream, and manifests looked up by their record key.
        "CREATE TABLE follow_cursor (source TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE INDEX manifest_record ON manifest (did, record_rkey);",
    ),
    (
        5,
        // The web UI: recent pushes, co-signatures by signer, and signed-in
        // browser sessions (shared by every replica; the cookie's token is
        // stored only as its SHA-256).
        "CREATE INDEX tag_updated ON tag (updated_at);
    CREATE INDEX manifest_signer ON manifest (json_extract(annotations, '$.\"io.atcr.atproto.did\"'))
        WHERE artifact_type = 'application/vnd.atproto.signature.v1+json';
    CREATE TABLE web_session (
        id TEXT PRIMARY KEY, did TEXT NOT NULL, handle TEXT NOT NULL,
        full_access INTEGER NOT NULL, csrf TEXT NOT NULL,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
    );
    CREATE INDEX web_session_did ON web_session (did, created_at);",
    ),
    (
        6,
        // Replicas on one index: the registry secret they share, upload
        // sessions leased to the replica serving a request on them, and
        // credential revocations every replica applies.
        "CREATE TABLE registry_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret BLOB NOT NULL);
    ALTER TABLE upload ADD COLUMN busy_until INTEGER;
    CREATE TABLE revocation (did TEXT PRIMARY KEY, at INTEGER NOT NULL);
    CREATE INDEX revocation_at ON revocation (at);",
    ),
];

/// The PostgreSQL schema: the SQLite schema at its newest, spelled for
/// PostgreSQL (`BIGINT`, `BYTEA`, identity columns named `rowid` where the
/// queries page or order by SQLite's row id, bytewise `"C"` collation for
/// keys that are paged by comparison). New migrations are added to both
/// lists.
const PG_MIGRATIONS: &[Migration] = &[(
    1,
    r#"CREATE TABLE blob (
        digest TEXT COLLATE "C" PRIMARY KEY,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        doomed BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX blob_doomed ON blob (doomed) WHERE doomed = 1;
    CREATE TABLE repo_blob (
        did TEXT COLLATE "C" NOT NULL, repo TEXT COLLATE "C" NOT NULL,
        digest TEXT COLLATE "C" NOT NULL REFERENCES blob (digest),
        linked_at BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (did, repo, digest)
    );
    CREATE INDEX repo_blob_digest ON repo_blob (digest);
    CREATE TABLE repository (
        did TEXT COLLATE "C" NOT NULL, repo TEXT COLLATE "C" NOT NULL,
        display TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (did, repo)
    );
    CREATE INDEX repository_display ON repository (display);
    CREATE TABLE manifest (
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        did TEXT COLLATE "C" NOT NULL, repo TEXT COLLATE "C" NOT NULL,
        digest TEXT COLLATE "C" NOT NULL,
        media_type TEXT NOT NULL, size BIGINT NOT NULL, bytes BYTEA NOT NULL,
        artifact_type TEXT, subject TEXT COLLATE "C", annotations TEXT,
        record_rkey TEXT COLLATE "C" NOT NULL, record_cid TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (did, repo, digest)
    );
    CREATE INDEX manifest_subject ON manifest (did, repo, subject) WHERE subject IS NOT NULL;
    CREATE INDEX manifest_record ON manifest (did, record_rkey);
    CREATE INDEX manifest_signer ON manifest ((annotations::jsonb ->> 'io.atcr.atproto.did'))
        WHERE artifact_type = 'application/vnd.atproto.signature.v1+json';
    CREATE TABLE tag (
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        did TEXT COLLATE "C" NOT NULL, repo TEXT COLLATE "C" NOT NULL,
        tag TEXT COLLATE "C" NOT NULL, digest TEXT COLLATE "C" NOT NULL,
        record_cid TEXT NOT NULL, updated_at BIGINT NOT NULL,
        PRIMARY KEY (did, repo, tag)
    );
    CREATE INDEX tag_updated ON tag (updated_at);
    CREATE TABLE upload (
        id TEXT COLLATE "C" PRIMARY KEY, did TEXT COLLATE "C" NOT NULL,
        repo TEXT COLLATE "C" NOT NULL,
        state TEXT NOT NULL, updated_at BIGINT NOT NULL, finishing TEXT COLLATE "C",
        busy_until BIGINT
    );
    CREATE INDEX upload_did ON upload (did);
    CREATE INDEX upload_finishing ON upload (finishing) WHERE finishing IS NOT NULL;
    CREATE TABLE pending (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        did TEXT COLLATE "C" NOT NULL, op TEXT NOT NULL, created_at BIGINT NOT NULL
    );
    CREATE TABLE pds_session (
        did TEXT COLLATE "C" PRIMARY KEY, pds TEXT COLLATE "C" NOT NULL, handle TEXT NOT NULL,
        access_jwt TEXT NOT NULL, refresh_jwt TEXT NOT NULL, updated_at BIGINT NOT NULL
    );
    CREATE TABLE inline_blob (digest TEXT COLLATE "C" PRIMARY KEY, bytes BYTEA NOT NULL);
    CREATE TABLE follow_cursor (source TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE TABLE web_session (
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        id TEXT COLLATE "C" PRIMARY KEY, did TEXT COLLATE "C" NOT NULL, handle TEXT NOT NULL,
        full_access BIGINT NOT NULL, csrf TEXT NOT NULL,
        created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL
    );
    CREATE INDEX web_session_did ON web_session (did, created_at);
    CREATE TABLE registry_secret (id BIGINT PRIMARY KEY CHECK (id = 1), secret BYTEA NOT NULL);
    CREATE TABLE revocation (did TEXT COLLATE "C" PRIMARY KEY, at BIGINT NOT NULL);
    CREATE INDEX revocation_at ON revocation (at);"#,
)];

/// An index error. When the database cannot be reached it becomes
/// [`crate::Error::Unavailable`] (retry later; nothing was written),
/// otherwise [`crate::Error::Internal`].
#[derive(Debug, thiserror::Error)]
#[error("index: {0}")]
pub struct IndexError(SqlError);

impl IndexError {
    /// True when the index database could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.0.is_unavailable()
    }
}

impl From<SqlError> for IndexError {
    fn from(e: SqlError) -> Self {
        Self(e)
    }
}
type Result<T> = std::result::Result<T, IndexError>;

/// Links a blob into a repository, or confirms an existing link.
const LINK: &str = "INSERT INTO repo_blob (did, repo, digest, linked_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (did, repo, digest) DO UPDATE SET linked_at = excluded.linked_at";

/// What [`Index::claim_finish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The upload may place the blob.
    Claimed,
    /// Garbage collection is deleting this digest: wait and retry.
    Doomed,
    /// The upload session is gone.
    NoSession,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    /// Digest string.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Exact bytes (empty when only metadata was asked for).
    pub bytes: Vec<u8>,
    /// Artifact type as the Referrers API reports it.
    pub artifact_type: Option<String>,
    /// Subject digest.
    pub subject: Option<String>,
    /// Annotations (JSON object text).
    pub annotations: Option<String>,
    /// Record key of the `io.atcr.manifest` record.
    pub record_rkey: String,
    /// CID of that record.
    pub record_cid: String,
}

/// A remote owner's PDS session, kept so pushes can write records.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// PDS base URL.
    pub pds: String,
    /// Handle.
    pub handle: String,
    /// Access token.
    pub access_jwt: String,
    /// Refresh token.
    pub refresh_jwt: String,
}

/// The index database: SQLite (one file, one process) or PostgreSQL
/// (shared by registry replicas), behind [`atcr_sql::Store`].
#[derive(Clone)]
pub struct Index {
    db: Database,
}

fn manifest_row(r: &Row, with_bytes: bool) -> atcr_sql::Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.get(0)?,
        media_type: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        bytes: if with_bytes { r.get(3)? } else { vec![] },
        artifact_type: r.get(4)?,
        subject: r.get(5)?,
        annotations: r.get(6)?,
        record_rkey: r.get(7)?,
        record_cid: r.get(8)?,
    })
}

/// What a manifest push commits to the index once its records are written.
#[derive(Debug, Clone)]
pub struct ManifestCommit {
    /// Owner DID.
    pub did: String,
    /// REPO.
    pub repo: String,
    /// Name for the catalog.
    pub display: String,
    /// The manifest (a new row, or `None` when it was already stored).
    pub manifest: Option<ManifestRow>,
    /// `(tag, digest, tag record CID)` when pushed by tag.
    pub tag: Option<(String, String, String)>,
    /// Small blobs stored in the index with the manifest: `(digest, bytes)`.
    pub inline_blobs: Vec<(String, Vec<u8>)>,
    /// Manifests of the repository this one replaces (a co-signer's earlier
    /// artifact for the same subject), removed in the same transaction.
    pub replaces: Vec<String>,
}

impl Index {
    /// Opens (creating) the SQLite index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            db: Database::sqlite(path, MIGRATIONS)?,
        })
    }

    /// Connects to a PostgreSQL index, applying its migrations (under a lock
    /// shared by every replica).
    pub async fn postgres(opts: &atcr_sql::PgOptions) -> Result<Self> {
        Ok(Self {
            db: Database::postgres(opts, PG_MIGRATIONS).await?,
        })
    }

    /// The engine (`sqlite` or `postgres`).
    pub fn backend(&self) -> atcr_sql::Dialect {
        self.db.dialect()
    }

    /// True when other processes may share this index (PostgreSQL): state
    /// cached in one process may then be stale.
    pub fn shared(&self) -> bool {
        self.db.dialect() == atcr_sql::Dialect::Postgres
    }

    /// The size of a blob linked into a repository.
    pub async fn repo_blob(&self, did: &str, repo: &str, digest: &str) -> Result<Option<u64>> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT b.size FROM repo_blob l JOIN blob b ON b.digest = l.digest
                     WHERE l.did = ?1 AND l.repo = ?2 AND l.digest = ?3 AND b.doomed = 0",
                )?
                .query_row((&d, &r, &g), |r| r.get::<_, i64>(0))
                .optional()
                .map(|o| o.map(|s| s as u64))
                .map_err(IndexError::from)
            })
            .await
    }

    /// Like [`Index::repo_blob`], and confirms the link: one made or last
    /// confirmed more than `refresh_secs` ago is stamped now (a write), so
    /// garbage collection keeps it for another grace period. A client that
    /// was just told a blob exists (HEAD, or a manifest push that checked
    /// it) can rely on it. `None` when the link is gone, also when GC took
    /// it between the read and the stamp.
    pub async fn repo_blob_confirmed(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
        refresh_secs: i64,
    ) -> Result<Option<u64>> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        let found = self
            .db
            .read({
                let (d, r, g) = (d.clone(), r.clone(), g.clone());
                move |c| {
                    c.prepare_cached(
                        "SELECT b.size, l.linked_at FROM repo_blob l JOIN blob b ON b.digest = l.digest
                         WHERE l.did = ?1 AND l.repo = ?2 AND l.digest = ?3 AND b.doomed = 0",
                    )?
                    .query_row((&d, &r, &g), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                    .optional()
                    .map_err(IndexError::from)
                }
            })
            .await?;
        let Some((size, linked_at)) = found else {
            return Ok(None);
        };
        if linked_at >= now() - refresh_secs {
            return Ok(Some(size as u64));
        }
        let stamped: bool = self
            .db
            .write_relaxed(move |tx| {
                Ok::<_, IndexError>(tx
                    .prepare_cached(
                        "UPDATE repo_blob SET linked_at = ?4 WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                    )?
                    .execute((&d, &r, &g, now()))?
                    > 0)
            })
            .await?;
        Ok(stamped.then_some(size as u64))
    }

    /// The size of a blob stored for any repository.
    pub async fn blob(&self, digest: &str) -> Result<Option<u64>> {
        let g = digest.to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT size FROM blob WHERE digest = ?1 AND doomed = 0")?
                    .query_row([&g], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|o| o.map(|s| s as u64))
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Records a verified blob and links it into a repository; removes the
    /// upload session in the same transaction. `false` (nothing linked) when
    /// garbage collection is deleting the blob: a mount must then upload.
    pub async fn link_blob(
        &self,
        did: &str,
        repo: &str,
        display: &str,
        digest: &str,
        size: u64,
        upload: Option<&str>,
    ) -> Result<bool> {
        let (d, r, n, g) = (
            did.to_owned(),
            repo.to_owned(),
            display.to_owned(),
            digest.to_owned(),
        );
        let up = upload.map(str::to_owned);
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO blob (digest, size, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute((&g, size as i64, now()))?;
                let doomed: i64 = tx
                    .prepare_cached("SELECT doomed FROM blob WHERE digest = ?1")?
                    .query_row([&g], |r| r.get(0))?;
                if doomed != 0 {
                    return Ok(false);
                }
                tx.prepare_cached(LINK)?.execute((&d, &r, &g, now()))?;
                tx.prepare_cached(
                    "INSERT INTO repository (did, repo, display) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute((&d, &r, &n))?;
                if let Some(id) = up {
                    tx.execute("DELETE FROM upload WHERE id = ?1", [&id])?;
                }
                Ok(true)
            })
            .await
    }

    /// Marks an upload as placing `digest` in the blob store, so garbage
    /// collection will not doom that digest until the upload links it (or
    /// the session ends). Refused while GC is deleting that digest: the
    /// caller waits, since placing it now could race GC's delete.
    pub async fn claim_finish(&self, id: &str, digest: &str) -> Result<Claim> {
        let (i, g) = (id.to_owned(), digest.to_owned());
        self.db
            .write_relaxed(move |tx| {
                let doomed = tx
                    .prepare_cached("SELECT 1 FROM blob WHERE digest = ?1 AND doomed = 1")?
                    .query_row([&g], |_| Ok(()))
                    .optional()?
                    .is_some();
                if doomed {
                    return Ok(Claim::Doomed);
                }
                let n = tx
                    .prepare_cached("UPDATE upload SET finishing = ?2 WHERE id = ?1")?
                    .execute((&i, &g))?;
                Ok(if n == 0 {
                    Claim::NoSession
                } else {
                    Claim::Claimed
                })
            })
            .await
    }

    /// A small blob kept in the index (see [`ManifestCommit::inline_blobs`]).
    pub async fn inline_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let g = digest.to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT bytes FROM inline_blob WHERE digest = ?1")?
                    .query_row([&g], |r| r.get(0))
                    .optional()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Unlinks a blob from a repository; false when it was not linked.
    pub async fn unlink_blob(&self, did: &str, repo: &str, digest: &str) -> Result<bool> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx.execute(
                    "DELETE FROM repo_blob WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                    (&d, &r, &g),
                )? > 0)
            })
            .await
    }

    /// Creates an upload session record. Not fsynced: a session that a crash
    /// loses has no bytes yet (the first chunk's durable update carries it),
    /// so the client just gets BLOB_UPLOAD_UNKNOWN and starts again.
    ///
    /// `false` (and nothing created) when `did` already has `max` sessions.
    pub async fn create_upload(
        &self,
        id: &str,
        did: &str,
        repo: &str,
        state: &str,
        max: u64,
    ) -> Result<bool> {
        let (i, d, r, s) = (
            id.to_owned(),
            did.to_owned(),
            repo.to_owned(),
            state.to_owned(),
        );
        self.db
            .write_relaxed(move |tx| {
                let open: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM upload WHERE did = ?1",
                    [&d],
                    |r| r.get(0),
                )?;
                if open as u64 >= max {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO upload (id, did, repo, state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    (&i, &d, &r, &s, now()),
                )?;
                Ok(true)
            })
            .await
    }

    /// Upload sessions not updated for `idle_secs`: `(id, state)`.
    pub async fn idle_uploads(&self, idle_secs: i64) -> Result<Vec<(String, String)>> {
        self.db
            .read(move |c| {
                let mut s = c.prepare("SELECT id, state FROM upload WHERE updated_at < ?1")?;
                let rows = s.query_map([now() - idle_secs], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// An upload session: `(did, repo, state)`.
    pub async fn upload(&self, id: &str) -> Result<Option<(String, String, String)>> {
        let i = id.to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT did, repo, state FROM upload WHERE id = ?1")?
                    .query_row([&i], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Saves an upload session's new state.
    pub async fn update_upload(&self, id: &str, state: &str) -> Result<()> {
        let (i, s) = (id.to_owned(), state.to_owned());
        self.db
            .write(move |tx| {
                tx.execute(
                    "UPDATE upload SET state = ?2, updated_at = ?3 WHERE id = ?1",
                    (&i, &s, now()),
                )?;
                Ok(())
            })
            .await
    }

    /// Removes an upload session.
    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        let i = id.to_owned();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM upload WHERE id = ?1", [&i])?;
                Ok(())
            })
            .await
    }

    /// Every upload session: `(id, state, updated_at)`.
    pub async fn uploads(&self) -> Result<Vec<(String, String, i64)>> {
        self.db
            .read(|c| {
                let mut s = c.prepare("SELECT id, state, updated_at FROM upload")?;
                let rows = s.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// A manifest by digest (`with_bytes`: include the bytes).
    pub async fn manifest(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
        with_bytes: bool,
    ) -> Result<Option<ManifestRow>> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .read(move |c| {
                let sql = if with_bytes {
                    "SELECT digest, media_type, size, bytes, artifact_type, subject, annotations, record_rkey, record_cid FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3"
                } else {
                    "SELECT digest, media_type, size, NULL, artifact_type, subject, annotations, record_rkey, record_cid FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3"
                };
                c.prepare_cached(sql)?
                    .query_row((&d, &r, &g), |r| manifest_row(r, with_bytes))
                    .optional()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// For each `(repo, digest, tag)`: the manifest record's key if the
    /// manifest is indexed, and the digest the tag points at. One read for a
    /// whole batch of pushes.
    pub async fn push_state(
        &self,
        did: &str,
        pushes: Vec<(String, String, Option<String>)>,
    ) -> Result<Vec<(Option<String>, Option<String>)>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                let mut out = Vec::with_capacity(pushes.len());
                for (repo, digest, tag) in &pushes {
                    let rkey: Option<String> = c
                        .prepare_cached(
                            "SELECT record_rkey FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                        )?
                        .query_row((&d, repo, digest), |r| r.get(0))
                        .optional()?;
                    let tagged: Option<String> = match tag {
                        Some(t) => c
                            .prepare_cached(
                                "SELECT digest FROM tag WHERE did = ?1 AND repo = ?2 AND tag = ?3",
                            )?
                            .query_row((&d, repo, t), |r| r.get(0))
                            .optional()?,
                        None => None,
                    };
                    out.push((rkey, tagged));
                }
                Ok(out)
            })
            .await
    }

    /// The digest a tag points at, with the tag record's CID.
    pub async fn tag(&self, did: &str, repo: &str, tag: &str) -> Result<Option<(String, String)>> {
        let (d, r, t) = (did.to_owned(), repo.to_owned(), tag.to_owned());
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT digest, record_cid FROM tag WHERE did = ?1 AND repo = ?2 AND tag = ?3",
                )?
                .query_row((&d, &r, &t), |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(IndexError::from)
            })
            .await
    }

    /// Tags of a repository in lexical order after `last`, at most `n`.
    pub async fn tags(
        &self,
        did: &str,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        let (d, r, l) = (
            did.to_owned(),
            repo.to_owned(),
            last.unwrap_or("").to_owned(),
        );
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT tag FROM tag WHERE did = ?1 AND repo = ?2 AND tag > ?3 ORDER BY tag LIMIT ?4",
                )?;
                let rows = s.query_map((&d, &r, &l, n as i64), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Tags pointing at a digest: `(tag, record_cid)`.
    pub async fn tags_of(&self, did: &str, repo: &str, digest: &str) -> Result<Vec<String>> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT tag FROM tag WHERE did = ?1 AND repo = ?2 AND digest = ?3 ORDER BY tag",
                )?;
                let rows = s.query_map((&d, &r, &g), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// True when the repository has anything (blobs, manifests).
    pub async fn repository_exists(&self, did: &str, repo: &str) -> Result<bool> {
        let (d, r) = (did.to_owned(), repo.to_owned());
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT 1 FROM repository WHERE did = ?1 AND repo = ?2")?
                    .query_row((&d, &r), |_| Ok(()))
                    .optional()
                    .map(|o| o.is_some())
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Manifests whose subject is `digest`.
    pub async fn referrers(&self, did: &str, repo: &str, digest: &str) -> Result<Vec<ManifestRow>> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT digest, media_type, size, NULL, artifact_type, subject, annotations, record_rkey, record_cid
                     FROM manifest WHERE did = ?1 AND repo = ?2 AND subject = ?3 ORDER BY digest",
                )?;
                let rows = s.query_map((&d, &r, &g), |r| manifest_row(r, false))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Repository names in lexical order after `last`, at most `n`.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let l = last.unwrap_or("").to_owned();
        self.db
            .read(move |c| {
                // A repository with no manifest left (all deleted, or only
                // blobs uploaded) is empty: not listed.
                let mut s = c.prepare_cached(
                    "SELECT DISTINCT r.display FROM repository r WHERE r.display > ?1
                     AND EXISTS (SELECT 1 FROM manifest m WHERE m.did = r.did AND m.repo = r.repo)
                     ORDER BY r.display LIMIT ?2",
                )?;
                let rows = s.query_map((&l, n as i64), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Journals a record operation before it is sent to the PDS.
    pub async fn begin_pending(&self, did: &str, op: &str) -> Result<i64> {
        let (d, o) = (did.to_owned(), op.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx.query_row(
                    "INSERT INTO pending (did, op, created_at) VALUES (?1, ?2, ?3) RETURNING id",
                    (&d, &o, now()),
                    |r| r.get(0),
                )?)
            })
            .await
    }

    /// Journaled operations not yet reconciled: `(id, did, op)`.
    pub async fn pending(&self) -> Result<Vec<(i64, String, String)>> {
        self.db
            .read(|c| {
                let mut s = c.prepare("SELECT id, did, op FROM pending ORDER BY id")?;
                let rows = s.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Drops a journal entry whose operation did not happen.
    pub async fn drop_pending(&self, id: i64) -> Result<()> {
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM pending WHERE id = ?1", [id])?;
                Ok(())
            })
            .await
    }

    /// Applies a batch of manifest pushes (one PDS commit) to the index and
    /// closes its journal entry, in one transaction. Not fsynced: if a crash
    /// loses it, the journal entry (durable, written before the PDS commit)
    /// is still open and start-up recovery re-applies it from the PDS.
    pub async fn commit_manifests(&self, pending: i64, commits: Vec<ManifestCommit>) -> Result<()> {
        self.db
            .write_relaxed(move |tx| {
                for c in &commits {
                    for old in &c.replaces {
                        tx.prepare_cached(
                            "DELETE FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                        )?
                        .execute((&c.did, &c.repo, old))?;
                    }
                    if let Some(m) = &c.manifest {
                        // Replaced whole (a new row id), as SQLite's REPLACE.
                        tx.prepare_cached(
                            "DELETE FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                        )?
                        .execute((&c.did, &c.repo, &m.digest))?;
                        tx.prepare_cached(
                            "INSERT INTO manifest (did, repo, digest, media_type, size, bytes, artifact_type, subject, annotations, record_rkey, record_cid, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        )?
                        .execute(atcr_sql::params![
                            c.did, c.repo, m.digest, m.media_type, m.size as i64, m.bytes,
                            m.artifact_type, m.subject, m.annotations, m.record_rkey, m.record_cid, now()
                        ])?;
                    }
                    for (digest, bytes) in &c.inline_blobs {
                        tx.prepare_cached(
                            "INSERT INTO inline_blob (digest, bytes) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        )?
                        .execute((digest, bytes))?;
                        tx.prepare_cached(
                            "INSERT INTO blob (digest, size, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        )?
                        .execute((digest, bytes.len() as i64, now()))?;
                        tx.prepare_cached(LINK)?.execute((&c.did, &c.repo, digest, now()))?;
                    }
                    if let Some((tag, digest, cid)) = &c.tag {
                        // A moved tag is a new row (newest in `recent_tags`).
                        tx.prepare_cached(
                            "DELETE FROM tag WHERE did = ?1 AND repo = ?2 AND tag = ?3",
                        )?
                        .execute((&c.did, &c.repo, tag))?;
                        tx.prepare_cached(
                            "INSERT INTO tag (did, repo, tag, digest, record_cid, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?
                        .execute((&c.did, &c.repo, tag, digest, cid, now()))?;
                    }
                    tx.prepare_cached(
                        "INSERT INTO repository (did, repo, display) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    )?
                    .execute((&c.did, &c.repo, &c.display))?;
                }
                tx.execute("DELETE FROM pending WHERE id = ?1", [pending])?;
                Ok(())
            })
            .await
    }

    /// Removes a manifest (with the registry's signature artifacts for it, and
    /// the tags given) and closes the journal entry.
    pub async fn commit_delete(
        &self,
        pending: i64,
        did: &str,
        repo: &str,
        digest: Option<&str>,
        tags: &[String],
    ) -> Result<()> {
        let (d, r, g, t) = (
            did.to_owned(),
            repo.to_owned(),
            digest.map(str::to_owned),
            tags.to_vec(),
        );
        self.db
            .write(move |tx| {
                if let Some(g) = &g {
                    tx.execute(
                        "DELETE FROM manifest WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                        (&d, &r, g),
                    )?;
                    // The registry's signature artifacts go with their subject.
                    tx.execute(
                        "DELETE FROM manifest WHERE did = ?1 AND repo = ?2 AND subject = ?3
                           AND artifact_type = ?4 AND record_rkey = ''",
                        (&d, &r, g, atcr_oci::signature::SIGNATURE_ARTIFACT_TYPE),
                    )?;
                }
                for tag in &t {
                    tx.execute(
                        "DELETE FROM tag WHERE did = ?1 AND repo = ?2 AND tag = ?3",
                        (&d, &r, tag),
                    )?;
                }
                tx.execute("DELETE FROM pending WHERE id = ?1", [pending])?;
                Ok(())
            })
            .await
    }

    /// Forgets everything of an owner: manifests, tags, links (their blobs
    /// are then garbage), repositories, journal entries, PDS session.
    pub async fn forget_owner(&self, did: &str) -> Result<usize> {
        let d = did.to_owned();
        self.db
            .write(move |tx| {
                let n = tx.execute("DELETE FROM manifest WHERE did = ?1", [&d])?;
                for t in ["tag", "repo_blob", "repository", "pending", "pds_session"] {
                    tx.execute(&format!("DELETE FROM {t} WHERE did = ?1"), [&d])?;
                }
                Ok(n)
            })
            .await
    }

    /// Waits for the lock of `did`'s record writes, held across replicas
    /// from the journal entry to the index update of each PDS commit.
    pub async fn lock_owner(&self, did: &str) -> Result<atcr_sql::Lock> {
        Ok(self.db.lock(&format!("atcr:owner:{did}")).await?)
    }

    /// Waits for the garbage-collection lock (one run at a time across
    /// replicas).
    pub async fn lock_gc(&self) -> Result<atcr_sql::Lock> {
        Ok(self.db.lock("atcr:gc").await?)
    }

    /// Leases upload session `id` to this process for `secs` (a request is
    /// writing to it). `Some(false)`: another holds a live lease; `None`:
    /// no such session.
    pub async fn lease_upload(&self, id: &str, secs: i64) -> Result<Option<bool>> {
        let i = id.to_owned();
        let now = now();
        self.db
            .write_relaxed(move |tx| {
                let n = tx.execute(
                    "UPDATE upload SET busy_until = ?2 WHERE id = ?1 AND (busy_until IS NULL OR busy_until <= ?3)",
                    (&i, now + secs, now),
                )?;
                if n > 0 {
                    return Ok(Some(true));
                }
                let exists = tx
                    .query_row("SELECT 1 FROM upload WHERE id = ?1", [&i], |_| Ok(()))
                    .optional()?
                    .is_some();
                Ok(exists.then_some(false))
            })
            .await
    }

    /// Ends this process's lease of upload session `id`.
    pub async fn release_upload(&self, id: &str) -> Result<()> {
        let i = id.to_owned();
        self.db
            .write_relaxed(move |tx| {
                tx.execute("UPDATE upload SET busy_until = NULL WHERE id = ?1", [&i])?;
                Ok(())
            })
            .await
    }

    /// Records that `did`'s credentials were revoked at `at` (Unix seconds).
    pub async fn save_revocation(&self, did: &str, at: i64) -> Result<()> {
        let d = did.to_owned();
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO revocation (did, at) VALUES (?1, ?2)
                     ON CONFLICT (did) DO UPDATE SET at = excluded.at WHERE revocation.at < excluded.at",
                    (&d, at),
                )?;
                Ok(())
            })
            .await
    }

    /// Revocations at or after `since`: `(did, at)`.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT did, at FROM revocation WHERE at >= ?1")?
                    .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Whether journal entry `id` is still open.
    pub async fn pending_open(&self, id: i64) -> Result<bool> {
        self.db
            .read(move |c| {
                Ok(
                    c.query_row("SELECT 1 FROM pending WHERE id = ?1", [id], |_| Ok(()))
                        .optional()?
                        .is_some(),
                )
            })
            .await
    }

    /// The registry secret every process sharing this index uses: the one
    /// stored, or `candidate` when none is yet (the first writer wins).
    pub async fn shared_secret(&self, candidate: Vec<u8>) -> Result<Vec<u8>> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO registry_secret (id, secret) VALUES (1, ?1) ON CONFLICT DO NOTHING",
                    [&candidate],
                )?;
                Ok(tx.query_row("SELECT secret FROM registry_secret WHERE id = 1", (), |r| {
                    r.get(0)
                })?)
            })
            .await
    }

    /// The last event of PDS event stream `source` applied to the index.
    pub async fn follow_cursor(&self, source: &str) -> Result<Option<i64>> {
        let s = source.to_owned();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT seq FROM follow_cursor WHERE source = ?1",
                    [&s],
                    |r| r.get(0),
                )
                .optional()
                .map_err(IndexError::from)
            })
            .await
    }

    /// Records that events of `source` up to `seq` are applied.
    pub async fn set_follow_cursor(&self, source: &str, seq: i64) -> Result<()> {
        let s = source.to_owned();
        self.db
            .write_relaxed(move |tx| {
                tx.execute(
                    "INSERT INTO follow_cursor (source, seq) VALUES (?1, ?2)
                     ON CONFLICT (source) DO UPDATE SET seq = excluded.seq",
                    (&s, seq),
                )?;
                Ok(())
            })
            .await
    }

    /// The manifest whose record has key `rkey`: `(repo, digest, record CID)`.
    pub async fn manifest_by_record(
        &self,
        did: &str,
        rkey: &str,
    ) -> Result<Option<(String, String, String)>> {
        let (d, k) = (did.to_owned(), rkey.to_owned());
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT repo, digest, record_cid FROM manifest WHERE did = ?1 AND record_rkey = ?2",
                )?
                .query_row((&d, &k), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(IndexError::from)
            })
            .await
    }

    /// Every tag of an owner: `(repo, tag, record CID)`.
    pub async fn owner_tags(&self, did: &str) -> Result<Vec<(String, String, String)>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT repo, tag, record_cid FROM tag WHERE did = ?1 ORDER BY repo, tag",
                )?;
                let rows = s.query_map([&d], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Every manifest of an owner that has a record: `(record key, record CID)`.
    pub async fn owner_manifest_records(&self, did: &str) -> Result<Vec<(String, String)>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT record_rkey, record_cid FROM manifest WHERE did = ?1 AND record_rkey != ''",
                )?;
                let rows = s.query_map([&d], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Owners with anything in the index.
    pub async fn owners(&self) -> Result<Vec<String>> {
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached("SELECT DISTINCT did FROM repository ORDER BY did")?;
                let rows = s.query_map((), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Sets a tag to `digest` under the tag record `cid`, or removes it
    /// (`None`), as the owner's PDS says. True when the index changed.
    pub async fn settle_tag(
        &self,
        did: &str,
        repo: &str,
        tag: &str,
        to: Option<(String, String)>,
    ) -> Result<bool> {
        let (d, r, t) = (did.to_owned(), repo.to_owned(), tag.to_owned());
        self.db
            .write(move |tx| {
                let n = match &to {
                    None => tx.execute(
                        "DELETE FROM tag WHERE did = ?1 AND repo = ?2 AND tag = ?3",
                        (&d, &r, &t),
                    )?,
                    Some((digest, cid)) => tx.execute(
                        "INSERT INTO tag (did, repo, tag, digest, record_cid, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (did, repo, tag) DO UPDATE SET digest = excluded.digest,
                           record_cid = excluded.record_cid, updated_at = excluded.updated_at
                         WHERE tag.record_cid != excluded.record_cid OR tag.digest != excluded.digest",
                        (&d, &r, &t, digest, cid, now()),
                    )?,
                };
                Ok(n > 0)
            })
            .await
    }

    /// Removes every tag naming a manifest whose record is gone from the
    /// owner's PDS (revoked): it stays pullable by digest, so a verifier
    /// given the digest reports it revoked. True when a tag went.
    pub async fn untag_manifest(&self, did: &str, repo: &str, digest: &str) -> Result<bool> {
        let (d, r, g) = (did.to_owned(), repo.to_owned(), digest.to_owned());
        self.db
            .write(move |tx| {
                let n = tx.execute(
                    "DELETE FROM tag WHERE did = ?1 AND repo = ?2 AND digest = ?3",
                    (&d, &r, &g),
                )?;
                Ok(n > 0)
            })
            .await
    }

    /// Records a manifest record's new CID (rewritten in the PDS, still
    /// signing the same manifest).
    pub async fn set_manifest_record(&self, did: &str, rkey: &str, cid: &str) -> Result<()> {
        let (d, k, c) = (did.to_owned(), rkey.to_owned(), cid.to_owned());
        self.db
            .write(move |tx| {
                tx.execute(
                    "UPDATE manifest SET record_cid = ?3 WHERE did = ?1 AND record_rkey = ?2",
                    (&d, &k, &c),
                )?;
                Ok(())
            })
            .await
    }

    /// The remote PDSes (base URLs) of owners with a session here.
    pub async fn remote_pdses(&self) -> Result<Vec<String>> {
        self.db
            .read(move |c| {
                let mut s =
                    c.prepare_cached("SELECT DISTINCT pds FROM pds_session ORDER BY pds")?;
                let rows = s.query_map((), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// The owners whose session is with the PDS at `pds`.
    pub async fn owners_at(&self, pds: &str) -> Result<Vec<String>> {
        let p = pds.to_owned();
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached("SELECT did FROM pds_session WHERE pds = ?1")?;
                let rows = s.query_map([&p], |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Forgets the cursor of stream `source` (it starts live next time).
    pub async fn clear_follow_cursor(&self, source: &str) -> Result<()> {
        let s = source.to_owned();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM follow_cursor WHERE source = ?1", [&s])?;
                Ok(())
            })
            .await
    }

    /// Saves a remote owner's PDS session.
    pub async fn save_session(&self, did: &str, s: &StoredSession) -> Result<()> {
        let (d, s) = (did.to_owned(), s.clone());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO pds_session (did, pds, handle, access_jwt, refresh_jwt, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (did) DO UPDATE SET pds = excluded.pds, handle = excluded.handle,
                       access_jwt = excluded.access_jwt, refresh_jwt = excluded.refresh_jwt,
                       updated_at = excluded.updated_at",
                    (&d, &s.pds, &s.handle, &s.access_jwt, &s.refresh_jwt, now()),
                )?;
                Ok(())
            })
            .await
    }

    /// A remote owner's saved PDS session.
    pub async fn session(&self, did: &str) -> Result<Option<StoredSession>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT pds, handle, access_jwt, refresh_jwt FROM pds_session WHERE did = ?1",
                    [&d],
                    |r| {
                        Ok(StoredSession {
                            pds: r.get(0)?,
                            handle: r.get(1)?,
                            access_jwt: r.get(2)?,
                            refresh_jwt: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map_err(IndexError::from)
            })
            .await
    }
}

//! The index queries of the web UI: recent pushes, search, an owner's
//! repositories and co-signatures, a repository's tags, and signed-in
//! browser sessions. Read-only but for the sessions.

use super::{Index, IndexError, Result, now};
use atcr_sql::{Dialect, OptionalExtension, Row};

/// The artifact type of signature artifacts (the partial index's filter).
const SIG: &str = atcr_oci::signature::SIGNATURE_ARTIFACT_TYPE;

/// A tag with its manifest, as pages list them.
#[derive(Debug, Clone)]
pub struct TagRow {
    /// Owner DID.
    pub did: String,
    /// REPO.
    pub repo: String,
    /// The tag.
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
    /// When the tag was last moved (Unix seconds).
    pub updated_at: i64,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest size.
    pub size: u64,
    /// Manifest bytes (empty when not asked for).
    pub bytes: Vec<u8>,
    /// Manifest annotations (JSON object text).
    pub annotations: Option<String>,
}

/// One of an owner's repositories.
#[derive(Debug, Clone)]
pub struct OwnerRepo {
    /// Owner DID.
    pub did: String,
    /// REPO.
    pub repo: String,
    /// The name as first pushed.
    pub display: String,
    /// Number of tags.
    pub tags: u64,
    /// Newest tag move (Unix seconds), 0 when untagged.
    pub updated_at: i64,
}

/// A co-signature artifact, found by its signer.
#[derive(Debug, Clone)]
pub struct CosignRow {
    /// The signed image's owner.
    pub did: String,
    /// Its REPO.
    pub repo: String,
    /// The signed manifest.
    pub subject: String,
    /// The artifact's digest.
    pub artifact: String,
    /// The record the artifact names.
    pub record_uri: Option<String>,
}

/// A signed-in browser session.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// Account DID.
    pub did: String,
    /// Handle at sign-in.
    pub handle: String,
    /// Signed in with the account password (not an app password).
    pub full_access: bool,
    /// The session's CSRF token.
    pub csrf: String,
    /// Sign-in time (Unix seconds).
    pub created_at: i64,
}

/// `%text%` for LIKE, with the pattern characters escaped (`\`).
fn like(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

const TAG_COLS: &str =
    "t.did, t.repo, t.tag, t.digest, t.updated_at, m.media_type, m.size, m.annotations";

fn tag_row(r: &Row, bytes: bool) -> atcr_sql::Result<TagRow> {
    Ok(TagRow {
        did: r.get(0)?,
        repo: r.get(1)?,
        tag: r.get(2)?,
        digest: r.get(3)?,
        updated_at: r.get(4)?,
        media_type: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        annotations: r.get(7)?,
        bytes: if bytes { r.get(8)? } else { vec![] },
    })
}

fn owner_repo(r: &Row) -> atcr_sql::Result<OwnerRepo> {
    Ok(OwnerRepo {
        did: r.get(0)?,
        repo: r.get(1)?,
        display: r.get(2)?,
        tags: r.get::<_, i64>(3)? as u64,
        updated_at: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
    })
}

const REPO_COLS: &str = "r.did, r.repo, r.display,
    (SELECT count(*) FROM tag t WHERE t.did = r.did AND t.repo = r.repo),
    (SELECT max(t.updated_at) FROM tag t WHERE t.did = r.did AND t.repo = r.repo)";

/// A repository with at least one manifest (an empty one is not listed).
const HAS_MANIFEST: &str =
    "EXISTS (SELECT 1 FROM manifest m WHERE m.did = r.did AND m.repo = r.repo)";

impl Index {
    /// The newest tag moves, across the registry or of one owner; at most `n`.
    pub async fn recent_tags(&self, did: Option<&str>, n: usize) -> Result<Vec<TagRow>> {
        let d = did.map(str::to_owned);
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {TAG_COLS} FROM tag t JOIN manifest m
                       ON m.did = t.did AND m.repo = t.repo AND m.digest = t.digest
                     WHERE CAST(?1 AS TEXT) IS NULL OR t.did = ?1
                     ORDER BY t.updated_at DESC, t.rowid DESC LIMIT ?2"
                );
                let mut s = c.prepare_cached(&sql)?;
                let rows = s.query_map((&d, n as i64), |r| tag_row(r, false))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// A repository's tags, newest first, with their manifests' bytes: at
    /// most `n`, skipping `offset`.
    pub async fn repo_tags(
        &self,
        did: &str,
        repo: &str,
        offset: usize,
        n: usize,
    ) -> Result<Vec<TagRow>> {
        let (d, r) = (did.to_owned(), repo.to_owned());
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {TAG_COLS}, m.bytes FROM tag t JOIN manifest m
                       ON m.did = t.did AND m.repo = t.repo AND m.digest = t.digest
                     WHERE t.did = ?1 AND t.repo = ?2
                     ORDER BY t.updated_at DESC, t.tag LIMIT ?3 OFFSET ?4"
                );
                let mut s = c.prepare_cached(&sql)?;
                let rows = s.query_map((&d, &r, n as i64, offset as i64), |r| tag_row(r, true))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// The number of tags of a repository.
    pub async fn tag_count(&self, did: &str, repo: &str) -> Result<u64> {
        let (d, r) = (did.to_owned(), repo.to_owned());
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT count(*) FROM tag WHERE did = ?1 AND repo = ?2")?
                    .query_row((&d, &r), |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(IndexError::from)
            })
            .await
    }

    /// An owner's repositories (with a manifest), by name: at most `n`,
    /// skipping `offset`.
    pub async fn owner_repos(&self, did: &str, offset: usize, n: usize) -> Result<Vec<OwnerRepo>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {REPO_COLS} FROM repository r WHERE r.did = ?1 AND {HAS_MANIFEST}
                     ORDER BY r.repo LIMIT ?2 OFFSET ?3"
                );
                let mut s = c.prepare_cached(&sql)?;
                let rows = s.query_map((&d, n as i64, offset as i64), owner_repo)?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// One repository's row, if it has a manifest.
    pub async fn owner_repo(&self, did: &str, repo: &str) -> Result<Option<OwnerRepo>> {
        let (d, r) = (did.to_owned(), repo.to_owned());
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {REPO_COLS} FROM repository r
                     WHERE r.did = ?1 AND r.repo = ?2 AND {HAS_MANIFEST}"
                );
                c.prepare_cached(&sql)?
                    .query_row((&d, &r), owner_repo)
                    .optional()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Repositories whose name (as pushed, or REPO) contains `text`, or
    /// owned by one of `owners`; at most `n`.
    pub async fn search_repos(
        &self,
        text: &str,
        owners: &[String],
        n: usize,
    ) -> Result<Vec<OwnerRepo>> {
        let pat = like(&text.to_lowercase());
        let owners = serde_json::to_string(owners).unwrap_or_else(|_| "[]".into());
        self.db
            .read(move |c| {
                let (like, owners_in) = match c.dialect() {
                    Dialect::Sqlite => ("LIKE", "SELECT value FROM json_each(?2)"),
                    Dialect::Postgres => (
                        "ILIKE",
                        "SELECT jsonb_array_elements_text(CAST(?2 AS jsonb))",
                    ),
                };
                let sql = format!(
                    "SELECT {REPO_COLS} FROM repository r
                     WHERE (r.display {like} ?1 ESCAPE '\\' OR r.repo {like} ?1 ESCAPE '\\'
                            OR r.did IN ({owners_in}))
                       AND {HAS_MANIFEST}
                     ORDER BY r.display LIMIT ?3"
                );
                let mut s = c.prepare_cached(&sql)?;
                let rows = s.query_map((&pat, &owners, n as i64), owner_repo)?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Tags whose name contains `text`, and tagged manifests whose
    /// annotations do (signature artifacts aside); newest first, at most `n`.
    pub async fn search_tags(&self, text: &str, n: usize) -> Result<Vec<TagRow>> {
        let pat = like(text);
        self.db
            .read(move |c| {
                // SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does.
                let like = match c.dialect() {
                    Dialect::Sqlite => "LIKE",
                    Dialect::Postgres => "ILIKE",
                };
                let sql = format!(
                    "SELECT {TAG_COLS} FROM tag t JOIN manifest m
                       ON m.did = t.did AND m.repo = t.repo AND m.digest = t.digest
                     WHERE t.tag {like} ?1 ESCAPE '\\' OR m.annotations {like} ?1 ESCAPE '\\'
                     ORDER BY t.updated_at DESC LIMIT ?2"
                );
                let mut s = c.prepare_cached(&sql)?;
                let rows = s.query_map((&pat, n as i64), |r| tag_row(r, false))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Co-signature artifacts whose signer is `did`, on others' images.
    pub async fn cosigned_by(&self, did: &str, n: usize) -> Result<Vec<CosignRow>> {
        let d = did.to_owned();
        self.db
            .read(move |c| {
                // The signer expression is the one the partial index is on.
                let (uri, signer) = match c.dialect() {
                    Dialect::Sqlite => (
                        "json_extract(annotations, '$.\"io.atcr.atproto.recordUri\"')",
                        "json_extract(annotations, '$.\"io.atcr.atproto.did\"')",
                    ),
                    Dialect::Postgres => (
                        "(annotations::jsonb ->> 'io.atcr.atproto.recordUri')",
                        "(annotations::jsonb ->> 'io.atcr.atproto.did')",
                    ),
                };
                let mut s = c.prepare_cached(&format!(
                    "SELECT did, repo, subject, digest, {uri}
                     FROM manifest
                     WHERE artifact_type = ?1 AND {signer} = ?2
                       AND did != ?2 AND subject IS NOT NULL
                     ORDER BY created_at DESC LIMIT ?3"
                ))?;
                let rows = s.query_map((SIG, &d, n as i64), |r| {
                    Ok(CosignRow {
                        did: r.get(0)?,
                        repo: r.get(1)?,
                        subject: r.get(2)?,
                        artifact: r.get(3)?,
                        record_uri: r.get(4)?,
                    })
                })?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// A remote owner's DID by the handle of their stored PDS session.
    pub async fn session_did_by_handle(&self, handle: &str) -> Result<Option<String>> {
        let h = handle.to_ascii_lowercase();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT did FROM pds_session WHERE lower(handle) = ?1 LIMIT 1")?
                    .query_row([&h], |r| r.get(0))
                    .optional()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// The number of repositories (with a manifest) and of tags.
    pub async fn totals(&self) -> Result<(u64, u64)> {
        self.db
            .read(move |c| {
                let repos: i64 = c
                    .prepare_cached(&format!(
                        "SELECT count(*) FROM repository r WHERE {HAS_MANIFEST}"
                    ))?
                    .query_row((), |r| r.get(0))?;
                let tags: i64 = c
                    .prepare_cached("SELECT count(*) FROM tag")?
                    .query_row((), |r| r.get(0))?;
                Ok((repos as u64, tags as u64))
            })
            .await
    }

    // ---- browser sessions ----

    /// Stores a session under `id` (the SHA-256 of its cookie token) for
    /// `ttl_secs`. An account keeps at most `max_per_account` sessions: the
    /// oldest go first. Expired sessions are removed here too.
    pub async fn create_web_session(
        &self,
        id: &str,
        s: &WebSession,
        ttl_secs: i64,
        max_per_account: usize,
    ) -> Result<()> {
        let (id, s) = (id.to_owned(), s.clone());
        let now = now();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM web_session WHERE expires_at <= ?1", [now])?;
                tx.execute(
                    "INSERT INTO web_session (id, did, handle, full_access, csrf, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    (&id, &s.did, &s.handle, s.full_access, &s.csrf, now, now + ttl_secs),
                )?;
                tx.execute(
                    "DELETE FROM web_session WHERE did = ?1 AND id NOT IN
                       (SELECT id FROM web_session WHERE did = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
                    (&s.did, max_per_account as i64),
                )?;
                Ok(())
            })
            .await
    }

    /// The live session stored under `id`.
    pub async fn web_session(&self, id: &str) -> Result<Option<WebSession>> {
        let id = id.to_owned();
        let now = now();
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT did, handle, full_access, csrf, created_at FROM web_session
                     WHERE id = ?1 AND expires_at > ?2",
                )?
                .query_row((&id, now), |r| {
                    Ok(WebSession {
                        did: r.get(0)?,
                        handle: r.get(1)?,
                        full_access: r.get(2)?,
                        csrf: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                })
                .optional()
                .map_err(IndexError::from)
            })
            .await
    }

    /// Ends the session stored under `id`.
    pub async fn delete_web_session(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM web_session WHERE id = ?1", [&id])?;
                Ok(())
            })
            .await
    }

    /// Ends every session of `did` (credentials revoked).
    pub async fn delete_web_sessions_of(&self, did: &str) -> Result<usize> {
        let d = did.to_owned();
        self.db
            .write(move |tx| Ok(tx.execute("DELETE FROM web_session WHERE did = ?1", [&d])?))
            .await
    }
}

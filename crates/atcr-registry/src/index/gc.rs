//! The index queries of garbage collection and retention.
//!
//! Every decision is re-checked inside the transaction that acts on it, so
//! a push that links or confirms a blob while GC runs always wins: GC only
//! removes a link older than the grace period, and only dooms a blob with no
//! link and no upload placing it.

use super::{Index, IndexError, Result};
use atcr_sql::{OptionalExtension, Row};
use std::collections::HashSet;

/// A repository link as GC sees it.
#[derive(Debug, Clone)]
pub struct LinkRow {
    /// Owner DID.
    pub did: String,
    /// REPO.
    pub repo: String,
    /// Blob digest.
    pub digest: String,
    /// When the link was made or last confirmed (Unix seconds).
    pub linked_at: i64,
}

/// A blob as GC sees it.
#[derive(Debug, Clone)]
pub struct BlobRow {
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// When first stored (Unix seconds).
    pub created_at: i64,
    /// Kept in the index (`inline_blob`), not in the blob store.
    pub inline: bool,
}

/// A stored manifest as the mark phase reads it.
#[derive(Debug, Clone)]
pub struct MarkRow {
    /// Row id (the page cursor).
    pub rowid: i64,
    /// Owner DID.
    pub did: String,
    /// REPO.
    pub repo: String,
    /// Manifest digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Exact bytes.
    pub bytes: Vec<u8>,
}

/// A repository's tags and manifests, for retention.
#[derive(Debug, Clone, Default)]
pub struct RetentionView {
    /// `(tag, digest, updated_at)`.
    pub tags: Vec<(String, String, i64)>,
    /// Manifests.
    pub manifests: Vec<RetentionManifest>,
}

/// One manifest, for retention.
#[derive(Debug, Clone)]
pub struct RetentionManifest {
    /// Digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Subject digest (referrers).
    pub subject: Option<String>,
    /// Artifact type.
    pub artifact_type: Option<String>,
    /// Record key; empty for the registry's own signature artifacts.
    pub record_rkey: String,
    /// When indexed (Unix seconds).
    pub created_at: i64,
    /// Exact bytes.
    pub bytes: Vec<u8>,
}

const BLOB_COLS: &str = "b.digest, b.size, b.created_at, EXISTS (SELECT 1 FROM inline_blob i WHERE i.digest = b.digest)";

fn blob_row(r: &Row) -> atcr_sql::Result<BlobRow> {
    Ok(BlobRow {
        digest: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        created_at: r.get(2)?,
        inline: r.get(3)?,
    })
}

impl Index {
    /// Up to `n` manifests after row `after`, in row order.
    pub async fn gc_manifests(&self, after: i64, n: usize) -> Result<Vec<MarkRow>> {
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT rowid, did, repo, digest, media_type, bytes FROM manifest
                     WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                )?;
                let rows = s.query_map((after, n as i64), |r| {
                    Ok(MarkRow {
                        rowid: r.get(0)?,
                        did: r.get(1)?,
                        repo: r.get(2)?,
                        digest: r.get(3)?,
                        media_type: r.get(4)?,
                        bytes: r.get(5)?,
                    })
                })?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Every repository link.
    pub async fn gc_links(&self) -> Result<Vec<LinkRow>> {
        self.db
            .read(|c| {
                let mut s = c.prepare("SELECT did, repo, digest, linked_at FROM repo_blob")?;
                let rows = s.query_map((), |r| {
                    Ok(LinkRow {
                        did: r.get(0)?,
                        repo: r.get(1)?,
                        digest: r.get(2)?,
                        linked_at: r.get(3)?,
                    })
                })?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Every live (not doomed) blob.
    pub async fn gc_blobs(&self) -> Result<Vec<BlobRow>> {
        self.db
            .read(|c| {
                let mut s = c.prepare(&format!(
                    "SELECT {BLOB_COLS} FROM blob b WHERE b.doomed = 0"
                ))?;
                let rows = s.query_map((), blob_row)?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Digests that uploads are placing right now.
    pub async fn gc_claims(&self) -> Result<HashSet<String>> {
        self.db
            .read(|c| {
                let mut s =
                    c.prepare("SELECT finishing FROM upload WHERE finishing IS NOT NULL")?;
                let rows = s.query_map((), |r| r.get(0))?;
                rows.collect::<atcr_sql::Result<HashSet<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Removes these links unless made or confirmed at or after `cutoff`;
    /// how many went.
    pub async fn gc_unlink(
        &self,
        links: Vec<(String, String, String)>,
        cutoff: i64,
    ) -> Result<usize> {
        self.db
            .write(move |tx| {
                let mut n = 0;
                let mut s = tx.prepare_cached(
                    "DELETE FROM repo_blob WHERE did = ?1 AND repo = ?2 AND digest = ?3 AND linked_at < ?4",
                )?;
                for (d, r, g) in &links {
                    n += s.execute((d, r, g, cutoff))?;
                }
                Ok(n)
            })
            .await
    }

    /// Dooms each of these blobs that is still unlinked, older than `cutoff`
    /// and not being placed by an upload: from here on it is invisible and
    /// no upload may place it until [`Index::gc_forget`]. Returns the doomed.
    pub async fn gc_doom(&self, digests: Vec<String>, cutoff: i64) -> Result<Vec<BlobRow>> {
        self.db
            .write(move |tx| {
                let mut out = vec![];
                for g in &digests {
                    let n = tx
                        .prepare_cached(
                            "UPDATE blob SET doomed = 1 WHERE digest = ?1 AND doomed = 0 AND created_at < ?2
                             AND NOT EXISTS (SELECT 1 FROM repo_blob l WHERE l.digest = ?1)
                             AND NOT EXISTS (SELECT 1 FROM upload u WHERE u.finishing = ?1)",
                        )?
                        .execute((g, cutoff))?;
                    if n > 0 {
                        out.push(
                            tx.prepare_cached(&format!(
                                "SELECT {BLOB_COLS} FROM blob b WHERE b.digest = ?1"
                            ))?
                            .query_row([g], blob_row)?,
                        );
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Dooms store objects the index does not know (left by a crash between
    /// placing a blob and linking it), unless an upload is placing them.
    /// Returns the doomed digests.
    pub async fn gc_doom_orphans(&self, objects: Vec<(String, u64)>) -> Result<Vec<String>> {
        self.db
            .write(move |tx| {
                let mut out = vec![];
                for (g, size) in &objects {
                    let n = tx
                        .prepare_cached(
                            "INSERT INTO blob (digest, size, created_at, doomed)
                             SELECT ?1, ?2, 0, 1 WHERE NOT EXISTS (SELECT 1 FROM blob WHERE digest = ?1)
                             AND NOT EXISTS (SELECT 1 FROM upload WHERE finishing = ?1)",
                        )?
                        .execute((g, *size as i64))?;
                    if n > 0 {
                        out.push(g.clone());
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Which of these digests the index has a blob row for (live or doomed).
    pub async fn gc_known(&self, digests: Vec<String>) -> Result<HashSet<String>> {
        self.db
            .read(move |c| {
                let mut s = c.prepare_cached("SELECT 1 FROM blob WHERE digest = ?1")?;
                let mut out = HashSet::new();
                for g in digests {
                    if s.query_row([&g], |_| Ok(())).optional()?.is_some() {
                        out.insert(g);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Blobs doomed by a GC run that did not finish.
    pub async fn gc_doomed(&self) -> Result<Vec<BlobRow>> {
        self.db
            .read(|c| {
                let mut s = c.prepare(&format!(
                    "SELECT {BLOB_COLS} FROM blob b WHERE b.doomed = 1"
                ))?;
                let rows = s.query_map((), blob_row)?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// Forgets doomed blobs whose bytes are deleted.
    pub async fn gc_forget(&self, digests: Vec<String>) -> Result<()> {
        self.db
            .write(move |tx| {
                for g in &digests {
                    tx.prepare_cached("DELETE FROM blob WHERE digest = ?1 AND doomed = 1")?
                        .execute([g])?;
                    tx.prepare_cached("DELETE FROM inline_blob WHERE digest = ?1")?
                        .execute([g])?;
                }
                Ok(())
            })
            .await
    }

    /// Removes repositories with no manifest, link or upload left.
    pub async fn gc_drop_empty_repositories(&self) -> Result<usize> {
        self.db
            .write(|tx| {
                Ok(tx.execute(
                    "DELETE FROM repository WHERE
                       NOT EXISTS (SELECT 1 FROM manifest m WHERE m.did = repository.did AND m.repo = repository.repo)
                       AND NOT EXISTS (SELECT 1 FROM repo_blob l WHERE l.did = repository.did AND l.repo = repository.repo)
                       AND NOT EXISTS (SELECT 1 FROM upload u WHERE u.did = repository.did AND u.repo = repository.repo)",
                    (),
                )?)
            })
            .await
    }

    /// Every repository: `(did, repo, display name)`.
    pub async fn repositories(&self) -> Result<Vec<(String, String, String)>> {
        self.db
            .read(|c| {
                let mut s =
                    c.prepare("SELECT did, repo, display FROM repository ORDER BY display")?;
                let rows = s.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<atcr_sql::Result<Vec<_>>>()
                    .map_err(IndexError::from)
            })
            .await
    }

    /// A repository's tags and manifests, for retention.
    pub async fn retention_view(&self, did: &str, repo: &str) -> Result<RetentionView> {
        let (d, r) = (did.to_owned(), repo.to_owned());
        self.db
            .read_snapshot(move |c| {
                let mut s = c.prepare(
                    "SELECT tag, digest, updated_at FROM tag WHERE did = ?1 AND repo = ?2",
                )?;
                let tags = s
                    .query_map((&d, &r), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<atcr_sql::Result<Vec<_>>>()?;
                let mut s = c.prepare(
                    "SELECT digest, media_type, subject, artifact_type, record_rkey, created_at, bytes
                     FROM manifest WHERE did = ?1 AND repo = ?2 ORDER BY digest",
                )?;
                let manifests = s
                    .query_map((&d, &r), |r| {
                        Ok(RetentionManifest {
                            digest: r.get(0)?,
                            media_type: r.get(1)?,
                            subject: r.get(2)?,
                            artifact_type: r.get(3)?,
                            record_rkey: r.get(4)?,
                            created_at: r.get(5)?,
                            bytes: r.get(6)?,
                        })
                    })?
                    .collect::<atcr_sql::Result<Vec<_>>>()?;
                Ok(RetentionView { tags, manifests })
            })
            .await
    }
}

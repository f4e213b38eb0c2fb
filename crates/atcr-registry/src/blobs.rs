//! Blobs and upload sessions: reads, mounts, and uploads that any replica may continue (the
//! session's state in the index, a lease while a request writes to it).

use super::*;

/// How long a replica may hold an upload session it serves a request on
/// (shared index). Released when the request ends; a replica that dies
/// mid-request blocks its session for at most this long.
const UPLOAD_LEASE_SECS: i64 = 1800;

/// Marks an upload session busy for the guard's lifetime: in this process,
/// and on a shared index leased in the database too.
pub(crate) struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
    gauge: &'a prometheus::IntGauge,
    lease: Option<Index>,
}
impl Busy<'_> {
    /// Ends the guard, waiting for the database lease to be released.
    pub(crate) async fn release(mut self) {
        if let Some(index) = self.lease.take()
            && let Err(e) = index.release_upload(&self.id).await
        {
            tracing::warn!(
                id = self.id,
                "upload lease not released ({e}); it lapses by itself"
            );
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if let (Some(index), Ok(rt)) = (self.lease.take(), tokio::runtime::Handle::try_current()) {
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                if let Err(e) = index.release_upload(&id).await {
                    tracing::warn!("upload {id}: lease not released ({e}); it lapses by itself");
                }
            });
        }
    }
}

fn writing_elsewhere() -> Error {
    Error::UploadInvalid("another request is writing to this upload session".into())
}

impl Registry {
    /// Size of a blob in a repository.
    pub async fn blob_size(&self, repo: &Repository, digest: &Digest) -> Result<u64> {
        self.confirmed_blob(repo.did().as_str(), repo.path(), &digest.to_string())
            .await?
            .ok_or_else(|| Error::BlobUnknown(format!("blob unknown to registry: {digest}")))
    }

    /// A repository's blob, its link confirmed for garbage collection (a
    /// client told it exists may rely on it for another grace period).
    pub(crate) async fn confirmed_blob(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<u64>> {
        let refresh = (self.inner.cfg.gc.grace.as_secs() / 2) as i64;
        Ok(self
            .inner
            .index
            .repo_blob_confirmed(did, repo, digest, refresh)
            .await?)
    }

    /// Reads a blob (or a range `[start, end)`).
    pub async fn blob_read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        allow_redirect: bool,
    ) -> Result<BlobRead> {
        // Registry-made small blobs live in the index.
        if let Some(bytes) = self.inner.index.inline_blob(&digest.to_string()).await? {
            let (a, b) = range.unwrap_or((0, bytes.len() as u64));
            let (a, b) = (a as usize, (b as usize).min(bytes.len()));
            let part = Bytes::copy_from_slice(bytes.get(a..b).unwrap_or_default());
            let len = part.len() as u64;
            return Ok(BlobRead::Stream {
                body: Box::pin(futures_util::stream::once(std::future::ready(Ok(part)))),
                len,
            });
        }
        self.inner
            .blobs
            .read(digest, range, allow_redirect)
            .await
            .map_err(Error::from)
    }

    /// Unlinks a blob from a repository.
    pub async fn blob_delete(&self, repo: &Repository, digest: &Digest) -> Result<()> {
        if self
            .inner
            .index
            .unlink_blob(repo.did().as_str(), repo.path(), &digest.to_string())
            .await?
        {
            Ok(())
        } else {
            Err(Error::BlobUnknown(format!(
                "blob unknown to registry: {digest}"
            )))
        }
    }

    /// Starts an upload session.
    pub async fn upload_start(&self, repo: &Repository, alg: DigestAlgorithm) -> Result<String> {
        let (did, repo) = (repo.did().as_str(), repo.path());
        let id = new_id();
        let st = self
            .inner
            .blobs
            .begin(&id, alg)
            .await
            .map_err(Error::from)?;
        let max = self.inner.cfg.max_uploads_per_user;
        if !self
            .inner
            .index
            .create_upload(&id, did, repo, &st.to_json(), max)
            .await?
        {
            let _ = self.inner.blobs.abort(st).await;
            return Err(Error::TooManyUploads(format!(
                "{max} upload sessions are open already (registry.max_uploads_per_user): finish or cancel some"
            )));
        }
        self.cache_upload(did, repo, Some(&st), &id);
        Ok(id)
    }

    /// Removes upload sessions idle for longer than `upload_ttl` (with
    /// their stored bytes), skipping any with a request in flight. Run
    /// periodically while serving; returns how many went.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let ttl = self.inner.cfg.upload_ttl.as_secs() as i64;
        let mut gone = 0;
        for (id, state) in self.inner.index.idle_uploads(ttl).await? {
            let Ok(_busy) = self.mark_busy(&id).await else {
                continue;
            };
            self.inner.index.delete_upload(&id).await?;
            self.inner
                .uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            match UploadState::from_json(&state) {
                Ok(st) => {
                    let _ = self.inner.blobs.abort(st).await;
                }
                Err(_) => self.inner.blobs.remove_local_session(&id),
            }
            gone += 1;
        }
        Ok(gone)
    }

    /// Cross-repository mount: links `digest` if the registry has it
    /// (deduplicated storage, public repositories), else opens a session.
    pub async fn mount(&self, repository: &Repository, digest: &Digest) -> Result<MountOutcome> {
        let (did, repo) = (repository.did().as_str(), repository.path());
        let display = repository.name().to_string();
        let d = digest.to_string();
        // A blob garbage collection is deleting is not mounted: upload it.
        if let Some(size) = self.inner.index.blob(&d).await?
            && self
                .inner
                .index
                .link_blob(did, repo, &display, &d, size, None)
                .await?
        {
            return Ok(MountOutcome::Mounted);
        }
        Ok(MountOutcome::Upload(
            self.upload_start(repository, digest.algorithm()).await?,
        ))
    }

    pub(crate) async fn session(&self, did: &str, repo: &str, id: &str) -> Result<UploadState> {
        let unknown = || Error::UploadUnknown;
        // On a shared index another replica may have moved the session on:
        // only the database is the truth.
        let cached = if self.inner.index.shared() {
            None
        } else {
            self.inner
                .uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned()
        };
        let (d, r, st) = match cached {
            Some(c) => c,
            None => {
                let (d, r, state) = self.inner.index.upload(id).await?.ok_or_else(unknown)?;
                (d, r, UploadState::from_json(&state).map_err(Error::from)?)
            }
        };
        if d != did || r != repo {
            return Err(unknown());
        }
        Ok(st)
    }

    pub(crate) fn cache_upload(&self, did: &str, repo: &str, st: Option<&UploadState>, id: &str) {
        if self.inner.index.shared() {
            return;
        }
        let mut m = self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner());
        match st {
            Some(st) => {
                if m.len() > 10_000 {
                    m.clear();
                }
                m.insert(id.to_owned(), (did.to_owned(), repo.to_owned(), st.clone()));
            }
            None => {
                m.remove(id);
            }
        }
    }

    /// [`Registry::mark_local`], and on a shared index a lease in the
    /// database: another replica serving a request on the session is
    /// refused as another request of this process is.
    pub(crate) async fn mark_busy(&self, id: &str) -> Result<Busy<'_>> {
        let mut busy = self.mark_local(id)?;
        if self.inner.index.shared() {
            match self.inner.index.lease_upload(id, UPLOAD_LEASE_SECS).await? {
                Some(true) => busy.lease = Some(self.inner.index.clone()),
                Some(false) => return Err(writing_elsewhere()),
                None => {
                    return Err(Error::UploadUnknown);
                }
            }
        }
        Ok(busy)
    }

    /// Runs `work` on upload session `id` while holding it
    /// ([`Registry::mark_busy`]); the lease is released before the answer
    /// goes out, since the client's next request may reach another replica
    /// at once.
    async fn leased<T>(&self, id: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        let busy = self.mark_busy(id).await?;
        let out = work.await;
        busy.release().await;
        out
    }

    pub(crate) fn mark_local(&self, id: &str) -> Result<Busy<'_>> {
        let mut set = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(id.to_owned()) {
            return Err(writing_elsewhere());
        }
        self.inner.metrics.uploads_in_progress.inc();
        Ok(Busy {
            set: &self.inner.busy,
            gauge: &self.inner.metrics.uploads_in_progress,
            id: id.to_owned(),
            lease: None,
        })
    }

    /// Bytes received by a session.
    pub async fn upload_offset(&self, repo: &Repository, id: &str) -> Result<u64> {
        Ok(self
            .session(repo.did().as_str(), repo.path(), id)
            .await?
            .offset)
    }

    /// Appends a chunk. `start` is the `Content-Range` start when given:
    /// it must equal the current offset (416 otherwise).
    pub async fn upload_append<S, E>(
        &self,
        repo: &Repository,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (did, repo) = (repo.did().as_str(), repo.path());
        self.leased(id, async {
            let mut st = self.session(did, repo, id).await?;
            if let Some(s) = start
                && s != st.offset
            {
                return Err(Error::ChunkOutOfOrder {
                    start: s,
                    offset: st.offset,
                });
            }
            self.inner
                .blobs
                .append(&mut st, body)
                .await
                .map_err(Error::from)?;
            self.cache_upload(did, repo, None, id);
            self.inner.index.update_upload(id, &st.to_json()).await?;
            self.cache_upload(did, repo, Some(&st), id);
            Ok(st.offset)
        })
        .await
    }

    /// Completes a session (after appending a last chunk, if any).
    pub async fn upload_finish<S, E>(
        &self,
        repository: &Repository,
        id: &str,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (did, repo) = (repository.did().as_str(), repository.path());
        self.leased(id, async {
            let mut st = self.session(did, repo, id).await?;
            // Whatever happens next, the cached state is no longer the truth.
            self.cache_upload(did, repo, None, id);
            if let Some(b) = body {
                // Closed next: the tail need not be spooled.
                self.inner
                    .blobs
                    .append_final(&mut st, b)
                    .await
                    .map_err(Error::from)?;
            }
            self.claim_finish(id, digest).await?;
            let size = match self.inner.blobs.finish(st, digest).await {
                Ok(n) => n,
                Err(e) => {
                    // A digest mismatch ends the session: nothing is stored.
                    if matches!(e, BlobError::DigestMismatch { .. }) {
                        self.inner.index.delete_upload(id).await?;
                    }
                    return Err(Error::from(e));
                }
            };
            // The claim keeps the blob from being doomed, so this links it;
            // were it refused, the client must not hear "created".
            let linked = self
                .inner
                .index
                .link_blob(
                    did,
                    repo,
                    &repository.name().to_string(),
                    &digest.to_string(),
                    size,
                    Some(id),
                )
                .await?;
            if !linked {
                return Err(gc::doomed_busy());
            }
            Ok(size)
        })
        .await
    }

    /// Marks the session as placing `digest` (see [`gc`]); waits while
    /// garbage collection deletes that digest, since placing it meanwhile
    /// could lose it to GC's delete.
    pub(crate) async fn claim_finish(&self, id: &str, digest: &Digest) -> Result<()> {
        let d = digest.to_string();
        let deadline = Instant::now() + gc::DOOMED_WAIT;
        loop {
            match self.inner.index.claim_finish(id, &d).await? {
                index::Claim::Claimed => return Ok(()),
                index::Claim::NoSession => {
                    return Err(Error::UploadUnknown);
                }
                index::Claim::Doomed if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                index::Claim::Doomed => return Err(gc::doomed_busy()),
            }
        }
    }

    /// Cancels a session.
    pub async fn upload_cancel(&self, repo: &Repository, id: &str) -> Result<()> {
        let (did, repo) = (repo.did().as_str(), repo.path());
        self.leased(id, async {
            let st = self.session(did, repo, id).await?;
            self.cache_upload(did, repo, None, id);
            self.inner.index.delete_upload(id).await?;
            self.inner.blobs.abort(st).await.map_err(Error::from)
        })
        .await
    }
}

//! The push journal and recovery: open journal entries are settled against the owner's PDS at
//! start-up and, on a shared index, every few seconds by every replica; upload sessions are
//! restored after a restart.

use super::*;

impl Registry {
    /// Start-up reconciliation: completes or drops journaled record
    /// operations by asking the owner's PDS what was committed, restores
    /// upload sessions and removes expired or orphaned ones. Returns
    /// (operations completed, operations dropped, sessions kept).
    pub async fn recover(&self) -> Result<(usize, usize, usize)> {
        let (done, dropped) = self.recover_journal().await?;
        let kept = self.recover_uploads().await?;
        Ok((done, dropped, kept))
    }

    /// Settles the open journal entries: (completed, dropped). Each under
    /// its owner's lock, so on a shared index an entry a live replica is
    /// still working on is left to it (it is closed by the time the lock is
    /// granted), while one whose replica died (its locks died with it) is
    /// settled here. Run at start-up, and every few seconds by every
    /// replica on a shared index.
    pub async fn recover_journal(&self) -> Result<(usize, usize)> {
        let (mut done, mut dropped) = (0, 0);
        for (id, did, ops) in self.inner.index.pending().await? {
            let _owner = self.inner.index.lock_owner(&did).await?;
            if !self.inner.index.pending_open(id).await? {
                continue;
            }
            let Ok(ops) = serde_json::from_str::<Vec<PendingOp>>(&ops) else {
                self.inner.index.drop_pending(id).await?;
                dropped += 1;
                continue;
            };
            let owner = match self.owner_pds(&did).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("recovery of {did}: {e}; retried at next start");
                    continue;
                }
            };
            match self.reconcile(id, &did, owner.as_ref(), ops).await {
                Ok(true) => done += 1,
                Ok(false) => dropped += 1,
                Err(e) => tracing::warn!("recovery of {did}: {e}; retried at next start"),
            }
        }
        Ok((done, dropped))
    }

    /// Restores upload sessions after a restart and removes expired or
    /// orphaned ones; returns how many were kept.
    pub(crate) async fn recover_uploads(&self) -> Result<usize> {
        let ttl = self.inner.cfg.upload_ttl.as_secs() as i64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut kept = HashSet::new();
        for (id, state, updated) in self.inner.index.uploads().await? {
            let st = UploadState::from_json(&state);
            let ok = match &st {
                Ok(s) if now - updated <= ttl => self.inner.blobs.recover(s).await.is_ok(),
                _ => false,
            };
            if ok {
                kept.insert(id);
            } else {
                self.inner.index.delete_upload(&id).await?;
                if let Ok(s) = st {
                    let _ = self.inner.blobs.abort(s).await;
                }
            }
        }
        for id in self.inner.blobs.local_sessions() {
            if !kept.contains(&id) {
                self.inner.blobs.remove_local_session(&id);
            }
        }
        Ok(kept.len())
    }

    /// Settles one journal entry (one PDS commit): if its records are in
    /// the PDS, the index is brought up to date; if not, the entry is dropped.
    pub(crate) async fn reconcile(
        &self,
        id: i64,
        did: &str,
        owner: &dyn OwnerPds,
        ops: Vec<PendingOp>,
    ) -> Result<bool> {
        // A commit is atomic, so its first operation tells whether it happened.
        let Some(first) = ops.first() else {
            self.inner.index.drop_pending(id).await?;
            return Ok(false);
        };
        let committed = match first {
            PendingOp::Put {
                repo,
                digest,
                rkey,
                tag,
                ..
            } => match tag {
                Some(t) => owner
                    .get_record(TAG_COLLECTION.into(), tag_rkey(repo, t))
                    .await
                    .map_err(Error::from)?
                    .is_some_and(|(_, v)| {
                        atcr_oci::records::from_json::<atcr_oci::records::TagRecord>(&v)
                            .is_ok_and(|r| r.digest_for(repo, t) == Some(digest.as_str()))
                    }),
                None => owner
                    .get_record(MANIFEST_COLLECTION.into(), rkey.clone())
                    .await
                    .map_err(Error::from)?
                    .is_some(),
            },
            PendingOp::Delete {
                repo, rkey, tags, ..
            } => {
                let still = match (rkey, tags.first()) {
                    (Some(r), _) => owner
                        .get_record(MANIFEST_COLLECTION.into(), r.clone())
                        .await
                        .map_err(Error::from)?
                        .is_some(),
                    (None, Some(t)) => owner
                        .get_record(TAG_COLLECTION.into(), tag_rkey(repo, t))
                        .await
                        .map_err(Error::from)?
                        .is_some(),
                    (None, None) => false,
                };
                !still
            }
        };
        if !committed {
            self.inner.index.drop_pending(id).await?;
            return Ok(false);
        }
        let mut commits = vec![];
        // (repo, display, digest, media type, size, rkey) of manifests that
        // get a signature artifact.
        let mut to_sign: Vec<ToSign> = vec![];
        for op in ops {
            match op {
                PendingOp::Put {
                    repo,
                    display,
                    digest,
                    media_type,
                    bytes,
                    rkey,
                    new_manifest,
                    tag,
                } => {
                    let bytes = {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(bytes)
                            .map_err(|e| Error::Internal(e.to_string()))?
                    };
                    let mcid = owner
                        .get_record(MANIFEST_COLLECTION.into(), rkey.clone())
                        .await
                        .map_err(Error::from)?
                        .map(|(c, _)| c);
                    let tcid = match &tag {
                        Some(t) => owner
                            .get_record(TAG_COLLECTION.into(), tag_rkey(&repo, t))
                            .await
                            .map_err(Error::from)?
                            .map(|(c, _)| c),
                        None => None,
                    };
                    let job = PushJob {
                        repo: repo.clone(),
                        display: display.clone(),
                        digest: digest.clone(),
                        tag: tag.clone(),
                        parsed: parse_manifest(&bytes, Some(&media_type))?,
                        bytes,
                    };
                    if new_manifest && mcid.is_some() && signing::needs_artifact(&job.parsed) {
                        to_sign.push((
                            repo.clone(),
                            display.clone(),
                            digest.clone(),
                            job.parsed.media_type.clone(),
                            job.bytes.len() as u64,
                            rkey.clone(),
                        ));
                    }
                    commits.push(ManifestCommit {
                        did: did.to_owned(),
                        repo,
                        display,
                        manifest: match (new_manifest, mcid) {
                            (true, Some(cid)) => Some(manifest_row(&job, &rkey, cid)),
                            _ => None,
                        },
                        tag: tag.zip(tcid).map(|(t, c)| (t, digest, c)),
                        inline_blobs: vec![],
                        replaces: vec![],
                    });
                }
                PendingOp::Delete {
                    repo, digest, tags, ..
                } => {
                    self.inner
                        .index
                        .commit_delete(id, did, &repo, digest.as_deref(), &tags)
                        .await?;
                    return Ok(true);
                }
            }
        }
        commits.extend(self.artifacts_at_head(did, owner, &to_sign).await?);
        self.inner.index.commit_manifests(id, commits).await?;
        Ok(true)
    }
}

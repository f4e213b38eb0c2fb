//! Manifests: pulls, and pushes through the per-owner group commit (one PDS commit of an owner at
//! a time across replicas, journaled before it is sent).

use super::*;

impl Registry {
    /// Resolves a reference to a stored manifest.
    pub async fn manifest_get(
        &self,
        repo: &Repository,
        reference: &Reference,
        with_bytes: bool,
    ) -> Result<PulledManifest> {
        let (did, repo) = (repo.did().as_str(), repo.path());
        let unknown = || Error::ManifestUnknown(format!("manifest unknown: {reference}"));
        let digest = match reference {
            Reference::Digest(d) => d.to_string(),
            Reference::Tag(t) => {
                self.inner
                    .index
                    .tag(did, repo, t)
                    .await?
                    .ok_or_else(unknown)?
                    .0
            }
        };
        let m = self
            .inner
            .index
            .manifest(did, repo, &digest, with_bytes)
            .await?
            .ok_or_else(unknown)?;
        Ok(PulledManifest {
            digest: m.digest,
            media_type: m.media_type,
            size: m.size,
            bytes: m.bytes,
        })
    }

    /// Validates and stores a manifest, writing its records to the owner's PDS.
    ///
    /// Concurrent pushes for one owner are group-committed: whoever holds
    /// the owner's commit lock takes every push queued so far and writes them
    /// as one PDS commit (one signature, one fsync per store), so throughput
    /// grows with concurrency instead of serializing on the commit.
    ///
    /// `tags` are more tags for a push by digest (`?tag=`, distribution-spec
    /// main): they are queued together, so they land in the same commit.
    pub async fn manifest_put(
        &self,
        repository: &Repository,
        reference: &Reference,
        tags: &[String],
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<PushedManifest> {
        if tags.len() > MAX_TAGS_PER_PUSH {
            return Err(Error::ManifestInvalid(format!(
                "at most {MAX_TAGS_PER_PUSH} tags per push"
            )));
        }
        let (did, repo) = (repository.did().as_str(), repository.path());
        let parsed: ParsedManifest = parse_manifest(&bytes, content_type)?;
        let alg = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => DigestAlgorithm::Sha256,
        };
        let digest = {
            let mut h = DigestHasher::new(alg);
            h.update(&bytes);
            h.finish()
        };
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(Error::DigestInvalid(format!(
                "the manifest hashes to {digest}, not {d}"
            )));
        }
        for b in parsed.required_blobs() {
            if self
                .confirmed_blob(did, repo, &b.to_string())
                .await?
                .is_none()
            {
                return Err(Error::ManifestBlobUnknown {
                    digest: b.to_string(),
                    message: format!("blob unknown to registry: {b}"),
                });
            }
        }
        // Foreign layers (Windows base images) may be absent: clients fetch
        // them from their URLs, which must be allowed.
        for (d, urls) in parsed.foreign_layers() {
            let digest = d.digest.to_string();
            if self.confirmed_blob(did, repo, &digest).await?.is_some() {
                continue;
            }
            if urls.is_empty() {
                return Err(Error::ManifestBlobUnknown {
                    message: format!(
                        "non-distributable layer {digest} has no urls and was not pushed"
                    ),
                    digest,
                });
            }
            if let Some(why) = urls
                .iter()
                .find_map(|u| self.inner.cfg.foreign_urls.refuse(u))
            {
                return Err(Error::ManifestInvalid(format!("layer {digest}: {why}")));
            }
        }
        for m in parsed.required_manifests() {
            if self
                .inner
                .index
                .manifest(did, repo, &m.to_string(), false)
                .await?
                .is_none()
            {
                return Err(Error::ManifestBlobUnknown {
                    digest: m.to_string(),
                    message: format!("manifest unknown to registry: {m}"),
                });
            }
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
        let mut job_tags: Vec<Option<String>> = match reference {
            Reference::Tag(t) => vec![Some(t.clone())],
            Reference::Digest(_) if tags.is_empty() => vec![None],
            Reference::Digest(_) => vec![],
        };
        for t in tags {
            if !job_tags.iter().any(|x| x.as_deref() == Some(t.as_str())) {
                job_tags.push(Some(t.clone()));
            }
        }
        let queue = self.owner_queue(did);
        let mut waiting = vec![];
        {
            let mut jobs = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for tag in job_tags {
                let (tx, rx) = tokio::sync::oneshot::channel();
                jobs.push((
                    PushJob {
                        repo: repo.to_owned(),
                        display: repository.name().to_string(),
                        digest: digest.to_string(),
                        tag,
                        parsed: parsed.clone(),
                        bytes: bytes.clone(),
                    },
                    tx,
                ));
                waiting.push(rx);
            }
        }
        let mut outcome = Ok(());
        // Lead a batch when the commit lock is free, unless our result
        // arrives first: waiting for the lock only to read a result that a
        // leader already sent would queue every finished push behind the
        // next batch (a convoy of single-push batches).
        while let Some(rx) = waiting.first_mut() {
            tokio::select! {
                r = rx => {
                    waiting.remove(0);
                    let r = r.unwrap_or_else(|_| Err(Error::Internal("manifest push was dropped".into())));
                    if outcome.is_ok() {
                        outcome = r;
                    }
                }
                _leader = queue.commit.lock() => {
                    let batch: Vec<_> = {
                        let mut jobs = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
                        let n = jobs.len().min(MAX_BATCH);
                        jobs.drain(..n).collect()
                    };
                    if !batch.is_empty() {
                        self.commit_batch(did, batch).await;
                    }
                }
            }
        }
        outcome.map(|()| PushedManifest { digest, subject })
    }

    pub(crate) fn owner_queue(&self, did: &str) -> Arc<OwnerQueue> {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(did.to_owned())
            .or_default()
            .clone()
    }

    /// Commits a batch of pushes; a batch the PDS refuses is retried one push
    /// at a time so one bad manifest cannot fail the others.
    pub(crate) async fn commit_batch(&self, did: &str, batch: Vec<(PushJob, Reply)>) {
        let started = Instant::now();
        let n = batch.len();
        let (jobs, replies): (Vec<PushJob>, Vec<Reply>) = batch.into_iter().unzip();
        // Replicas on a shared index: one PDS commit of an owner at a time,
        // from its journal entry to its index update, so the index follows
        // the PDS's commit order.
        let _owner = match self.inner.index.lock_owner(did).await {
            Ok(l) => l,
            Err(e) => {
                let e = Error::from(e);
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
                return;
            }
        };
        let span = tracing::info_span!("manifest_batch", did, pushes = n);
        match tracing::Instrument::instrument(self.write_batch(did, &jobs), span).await {
            Ok(()) => {
                for r in replies {
                    let _ = r.send(Ok(()));
                }
            }
            Err(Error::ManifestInvalid(_)) if jobs.len() > 1 => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let r = self.write_batch(did, std::slice::from_ref(&job)).await;
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
        let m = &self.inner.metrics;
        m.batch_pushes.observe(n as f64);
        m.batch_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            did,
            pushes = n,
            micros = started.elapsed().as_micros() as u64,
            "manifest batch committed"
        );
    }

    /// Journals, writes the records of, and indexes a batch of pushes.
    pub(crate) async fn write_batch(&self, did: &str, jobs: &[PushJob]) -> Result<()> {
        // Work out what each push changes (against the index and the batch).
        let mut ops: Vec<PendingOp> = vec![];
        let mut rkeys: HashMap<(String, String), String> = HashMap::new();
        let mut todo: Vec<(usize, bool, String)> = vec![]; // (job, new manifest, rkey)
        // The owner's PDS is looked up while the index is read.
        let (state, owner) = tokio::join!(
            self.inner.index.push_state(
                did,
                jobs.iter()
                    .map(|j| (j.repo.clone(), j.digest.clone(), j.tag.clone()))
                    .collect(),
            ),
            self.owner_pds(did)
        );
        let state = state?;
        for ((i, j), (indexed, tagged)) in jobs.iter().enumerate().zip(state) {
            let key = (j.repo.clone(), j.digest.clone());
            let existing = rkeys.get(&key).cloned().or(indexed);
            if j.tag.is_some() && existing.is_some() && tagged.as_deref() == Some(&j.digest) {
                continue;
            }
            if existing.is_some() && j.tag.is_none() {
                continue;
            }
            let new_manifest = existing.is_none();
            // A new record's key is derived from (REPO, digest): a retry after
            // a commit whose answer was lost rewrites the same record.
            let rkey = match existing {
                Some(r) => r,
                None => atcr_oci::records::manifest_rkey(
                    &j.repo,
                    &Digest::parse(&j.digest).map_err(|e| Error::DigestInvalid(e.to_string()))?,
                ),
            };
            rkeys.insert(key, rkey.clone());
            ops.push(PendingOp::Put {
                repo: j.repo.clone(),
                display: j.display.clone(),
                digest: j.digest.clone(),
                media_type: j.parsed.media_type.clone(),
                bytes: {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(&j.bytes)
                },
                rkey: rkey.clone(),
                new_manifest,
                tag: j.tag.clone(),
            });
            todo.push((i, new_manifest, rkey));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let owner = owner?;
        // Resolved before anything is written: a push whose artifact cannot
        // be made fails whole.
        let signer = if todo
            .iter()
            .any(|(i, new, _)| *new && signing::needs_artifact(&jobs[*i].parsed))
        {
            Some(self.signer(did).await?)
        } else {
            None
        };
        let pending = self
            .inner
            .index
            .begin_pending(did, &serde_json::to_string(&ops).unwrap_or_default())
            .await?;
        let pds_started = Instant::now();
        let written = tracing::Instrument::instrument(
            self.write_records(owner.as_ref(), jobs, &todo),
            tracing::info_span!("pds_commit", writes = todo.len()),
        )
        .await;
        self.inner
            .metrics
            .pds_commit_seconds
            .observe(pds_started.elapsed().as_secs_f64());
        let (commit_cid, cids) = match written {
            Ok(c) => c,
            Err(e) => {
                // The PDS answered with an error: the commit did not happen.
                // (When it could not be reached, start-up recovery decides.)
                if !e.is_unavailable() {
                    self.inner.index.drop_pending(pending).await?;
                }
                return Err(e);
            }
        };
        let mut commits: Vec<ManifestCommit> = todo
            .iter()
            .zip(cids)
            .map(|((i, new_manifest, rkey), (mcid, tcid))| {
                let j = &jobs[*i];
                ManifestCommit {
                    did: did.to_owned(),
                    repo: j.repo.clone(),
                    display: j.display.clone(),
                    manifest: new_manifest.then(|| manifest_row(j, rkey, mcid.unwrap_or_default())),
                    tag: j
                        .tag
                        .clone()
                        .map(|t| (t, j.digest.clone(), tcid.unwrap_or_default())),
                    inline_blobs: vec![],
                    replaces: vec![],
                }
            })
            .collect();
        if let Some(signer) = &signer {
            let signed = todo
                .iter()
                .filter(|(i, new, _)| *new && signing::needs_artifact(&jobs[*i].parsed))
                .map(|(i, _, rkey)| {
                    let j = &jobs[*i];
                    signing::Signed {
                        repo: &j.repo,
                        display: &j.display,
                        digest: &j.digest,
                        media_type: &j.parsed.media_type,
                        size: j.bytes.len() as u64,
                        record_uri: at_uri(did, MANIFEST_COLLECTION, rkey),
                    }
                })
                .collect();
            let cid = commit_cid.unwrap_or_default();
            let made = tracing::Instrument::instrument(
                self.signature_artifacts(signer, &cid, signed),
                tracing::info_span!("signature_artifacts"),
            )
            .await;
            match made {
                Ok(a) => commits.extend(a),
                Err(e) => {
                    self.inner.metrics.artifact_failures.inc();
                    tracing::error!("signature artifacts for a batch of {did}: {e}");
                    return Err(e);
                }
            }
        }
        tracing::Instrument::instrument(
            self.inner.index.commit_manifests(pending, commits),
            tracing::info_span!("index_commit"),
        )
        .await?;
        Ok(())
    }

    /// Uploads the manifest blobs of new manifests, then writes every record
    /// of the batch as one commit. Returns (manifest CID, tag CID) per entry.
    pub(crate) async fn write_records(
        &self,
        owner: &dyn OwnerPds,
        jobs: &[PushJob],
        todo: &[(usize, bool, String)],
    ) -> Result<(Option<String>, Vec<(Option<String>, Option<String>)>)> {
        let now = atcr_syntax::Datetime::now().to_string();
        let mut blobs = vec![];
        let mut writes = vec![];
        let mut shape = vec![];
        for (i, new, rkey) in todo {
            let j = &jobs[*i];
            let uri = at_uri(owner.did(), MANIFEST_COLLECTION, rkey);
            if *new {
                let blob = atcr_pds::blob_ref(&j.bytes, &j.parsed.media_type);
                blobs.push((j.bytes.clone(), j.parsed.media_type.clone()));
                let json: serde_json::Value = serde_json::from_slice(&j.bytes)
                    .map_err(|e| Error::ManifestInvalid(e.to_string()))?;
                // An upsert: the record may already be there from an attempt
                // whose answer never reached us.
                writes.push(Write::Put {
                    collection: MANIFEST_COLLECTION.into(),
                    rkey: rkey.clone(),
                    record: atcr_oci::records::to_json(&atcr_oci::records::ManifestRecord::new(
                        &j.repo,
                        &j.digest,
                        &j.parsed.media_type,
                        &json,
                        blob,
                        &now,
                    )),
                    swap: None,
                });
            }
            if let Some(t) = &j.tag {
                writes.push(Write::Put {
                    collection: TAG_COLLECTION.into(),
                    rkey: tag_rkey(&j.repo, t),
                    record: atcr_oci::records::to_json(&atcr_oci::records::TagRecord::new(
                        &j.repo, t, &j.digest, &uri, &now,
                    )),
                    swap: None,
                });
            }
            shape.push((*new, j.tag.is_some()));
        }
        let committed = owner.commit(blobs, writes).await.map_err(Error::from)?;
        let mut cids = committed.cids.into_iter();
        let per_job = shape
            .into_iter()
            .map(|(m, t)| {
                let m = if m { cids.next().flatten() } else { None };
                let t = if t { cids.next().flatten() } else { None };
                (m, t)
            })
            .collect();
        Ok((committed.commit_cid, per_job))
    }
}

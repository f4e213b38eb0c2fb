//! `atcr index rebuild`: the registry index rebuilt from the owners' PDS
//! records and the blob store, for disaster recovery. The PDS is the source
//! of truth: every `io.atcr.manifest` record whose manifest bytes (its PDS
//! blob) hash to its digest and whose blobs are in the store becomes a
//! manifest again, every `io.atcr.tag` record naming one of them a tag, and
//! the registry's signature artifacts are made anew.

use crate::follow::list_all;
use crate::index::{Index, ManifestCommit, StoredSession};
use crate::{Error, PushJob, Registry, Result, manifest_row, signing};
use atcr_oci::manifest::parse_manifest;
use atcr_oci::records::{ManifestRecord, TagRecord, from_json};
use atcr_oci::{Digest, DigestHasher, MANIFEST_COLLECTION, RepoName, TAG_COLLECTION};
use std::collections::HashSet;

/// Largest manifest read back from a PDS blob.
const MAX_MANIFEST_BYTES: usize = 8 << 20;

/// What a rebuild found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RebuildReport {
    /// Owners whose records were read.
    pub owners: usize,
    /// Manifests restored.
    pub manifests: usize,
    /// Tags restored.
    pub tags: usize,
    /// Records not restored, with the reason.
    pub skipped: Vec<String>,
}

impl Registry {
    /// Rebuilds the index into `target` (a new, empty index) from the
    /// records of every owner of the embedded PDS and of every remote owner
    /// with a session in the current index (sessions are copied over).
    pub async fn rebuild_into(&self, target: &Index) -> Result<RebuildReport> {
        let mut report = RebuildReport::default();
        let mut owners: Vec<(String, String)> = vec![];
        if let Some(pds) = &self.inner.pds {
            let mut cursor = None;
            loop {
                let page = pds
                    .list_repos(500, cursor.take())
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                let last = page.last().map(|r| r.0.clone());
                for (did, _, _, active) in page {
                    if active {
                        let handle = pds.handle_of(&did).await.unwrap_or_else(|_| did.clone());
                        owners.push((did, handle));
                    }
                }
                match last {
                    Some(l) => cursor = Some(l),
                    None => break,
                }
            }
        }
        for pds in self.index().remote_pdses().await? {
            for did in self.index().owners_at(&pds).await? {
                if let Some(s) = self.index().session(&did).await? {
                    target
                        .save_session(
                            &did,
                            &StoredSession {
                                pds: s.pds.clone(),
                                handle: s.handle.clone(),
                                access_jwt: s.access_jwt.clone(),
                                refresh_jwt: s.refresh_jwt.clone(),
                            },
                        )
                        .await?;
                    owners.push((did, s.handle));
                }
            }
        }
        for (did, handle) in owners {
            match self.rebuild_owner(target, &did, &handle, &mut report).await {
                Ok(()) => report.owners += 1,
                Err(e) => report.skipped.push(format!("{did}: {}", e)),
            }
        }
        Ok(report)
    }

    async fn rebuild_owner(
        &self,
        target: &Index,
        did: &str,
        handle: &str,
        report: &mut RebuildReport,
    ) -> Result<()> {
        let owner = self.owner_pds(did).await?;
        let manifests = list_all(owner.as_ref(), MANIFEST_COLLECTION).await?;
        let mut commits = vec![];
        let mut restored: HashSet<(String, String)> = HashSet::new();
        let mut to_sign: Vec<crate::ToSign> = vec![];
        for (rkey, (cid, value)) in manifests {
            let at = format!("at://{did}/{MANIFEST_COLLECTION}/{rkey}");
            let job = match self.restore_manifest(did, handle, &value, target).await {
                Ok(j) => j,
                Err(why) => {
                    report.skipped.push(format!("{at}: {why}"));
                    continue;
                }
            };
            if !restored.insert((job.repo.clone(), job.digest.clone())) {
                continue; // a second record of the same manifest
            }
            if signing::needs_artifact(&job.parsed) {
                to_sign.push((
                    job.repo.clone(),
                    job.display.clone(),
                    job.digest.clone(),
                    job.parsed.media_type.clone(),
                    job.bytes.len() as u64,
                    rkey.clone(),
                ));
            }
            commits.push(ManifestCommit {
                did: did.to_owned(),
                repo: job.repo.clone(),
                display: job.display.clone(),
                manifest: Some(manifest_row(&job, &rkey, cid)),
                tag: None,
                inline_blobs: vec![],
                replaces: vec![],
            });
            report.manifests += 1;
        }
        for (rkey, (cid, value)) in list_all(owner.as_ref(), TAG_COLLECTION).await? {
            let Ok(r) = from_json::<TagRecord>(&value) else {
                report.skipped.push(format!(
                    "at://{did}/{TAG_COLLECTION}/{rkey}: not a tag record"
                ));
                continue;
            };
            let digest = r.digest_for(&r.repository, &r.tag).map(str::to_owned);
            match digest {
                Some(d)
                    if atcr_oci::tag_rkey(&r.repository, &r.tag) == rkey
                        && restored.contains(&(r.repository.clone(), d.clone())) =>
                {
                    commits.push(ManifestCommit {
                        did: did.to_owned(),
                        repo: r.repository.clone(),
                        display: format!("{handle}/{}", r.repository),
                        manifest: None,
                        tag: Some((r.tag.clone(), d, cid)),
                        inline_blobs: vec![],
                        replaces: vec![],
                    });
                    report.tags += 1;
                }
                _ => report.skipped.push(format!(
                    "at://{did}/{TAG_COLLECTION}/{rkey}: names no restored manifest"
                )),
            }
        }
        commits.extend(
            self.artifacts_at_head(did, owner.as_ref(), &to_sign)
                .await?,
        );
        let pending = target.begin_pending(did, "[]").await?;
        target.commit_manifests(pending, commits).await?;
        Ok(())
    }

    /// One manifest record back to a manifest: its bytes from the PDS blob
    /// (checked against the digest), its blobs linked from the store.
    async fn restore_manifest(
        &self,
        did: &str,
        handle: &str,
        value: &serde_json::Value,
        target: &Index,
    ) -> std::result::Result<PushJob, String> {
        let rec = from_json::<ManifestRecord>(value)
            .map_err(|e| format!("not a manifest record: {e}"))?;
        RepoName::parse(&format!("{handle}/{}", rec.repository))
            .map_err(|e| format!("repository: {}", e.message))?;
        let digest = Digest::parse(&rec.digest).map_err(|e| format!("digest: {}", e.message))?;
        let cid = rec.manifest_blob["ref"]["$link"]
            .as_str()
            .ok_or("no manifest blob")?
            .to_owned();
        let bytes = self.record_blob(did, &cid).await?;
        let mut h = DigestHasher::new(digest.algorithm());
        h.update(&bytes);
        if h.finish() != digest {
            return Err("the manifest blob does not hash to the record's digest".into());
        }
        let parsed = parse_manifest(&bytes, Some(&rec.media_type)).map_err(|e| e.message)?;
        let display = format!("{handle}/{}", rec.repository);
        for d in parsed.required_blobs() {
            let size = self
                .inner
                .blobs
                .size(d)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("blob {d} is not in the blob store"))?;
            target
                .link_blob(did, &rec.repository, &display, &d.to_string(), size, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(PushJob {
            repo: rec.repository.clone(),
            display,
            digest: digest.to_string(),
            tag: None,
            parsed,
            bytes,
        })
    }

    /// A blob of `did`'s repository, from the embedded PDS or the owner's.
    async fn record_blob(&self, did: &str, cid: &str) -> std::result::Result<Vec<u8>, String> {
        if let Some(pds) = &self.inner.pds
            && pds.lookup_did(did).await.is_ok()
        {
            return match pds.get_blob(did, cid).await {
                Ok(Some((b, _))) => Ok(b),
                Ok(None) => Err(format!("blob {cid} is not in the PDS")),
                Err(e) => Err(e.to_string()),
            };
        }
        let s = self
            .index()
            .session(did)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no PDS session")?;
        let base = url::Url::parse(&s.pds).map_err(|e| e.to_string())?;
        self.inner.egress.check_url(&base)?;
        let client = atcr_xrpc::PdsClient::new(base, self.inner.http.clone());
        client
            .get_blob_at_most(did, cid, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| e.to_string())
    }
}

//! Deletes: a manifest (every record of its digest in the owner's PDS, with the tags on it) or a
//! tag, journaled like pushes and under the owner's commit lock; and forgetting a deleted owner.

use super::*;

impl Registry {
    /// Deletes a manifest by digest (with the tags pointing at it) or a tag.
    pub async fn manifest_delete(&self, repo: &Repository, reference: &Reference) -> Result<()> {
        let (did, repo) = (repo.did().as_str(), repo.path());
        let queue = self.owner_queue(did);
        let _guard = queue.commit.lock().await;
        let _owner = self.inner.index.lock_owner(did).await?;
        let (digest, tags) = match reference {
            Reference::Digest(d) => {
                let m = self
                    .inner
                    .index
                    .manifest(did, repo, &d.to_string(), false)
                    .await?
                    .ok_or_else(|| Error::ManifestUnknown(format!("manifest unknown: {d}")))?;
                let tags = self.inner.index.tags_of(did, repo, &m.digest).await?;
                (Some(m.digest), tags)
            }
            Reference::Tag(t) => {
                if self.inner.index.tag(did, repo, t).await?.is_none() {
                    return Err(Error::ManifestUnknown(format!("tag unknown: {t}")));
                }
                (None, vec![t.clone()])
            }
        };
        let owner = self.owner_pds(did).await?;
        // Every record of this (REPO, digest) goes, not only the one the
        // index knows: a push retried after a lost answer, or made before
        // record keys were deterministic, may have left another, and any of
        // them would keep the signature valid.
        let mut rkeys = match &digest {
            Some(d) => manifest_records_of(owner.as_ref(), repo, d).await?,
            None => vec![],
        };
        let rkey = (!rkeys.is_empty()).then(|| rkeys.remove(0));
        let more_rkeys = rkeys;
        let op = PendingOp::Delete {
            repo: repo.to_owned(),
            digest: digest.clone(),
            rkey: rkey.clone(),
            more_rkeys: more_rkeys.clone(),
            tags: tags.clone(),
        };
        let pending = self
            .inner
            .index
            .begin_pending(did, &serde_json::to_string(&[op]).unwrap_or_default())
            .await?;
        let mut writes: Vec<Write> = tags
            .iter()
            .map(|t| Write::Delete {
                collection: TAG_COLLECTION.into(),
                rkey: tag_rkey(repo, t),
                swap: None,
            })
            .collect();
        for r in rkey.iter().chain(&more_rkeys) {
            writes.push(Write::Delete {
                collection: MANIFEST_COLLECTION.into(),
                rkey: r.clone(),
                swap: None,
            });
        }
        if !writes.is_empty()
            && let Err(e) = owner.commit(vec![], writes).await
        {
            let e = Error::from(e);
            if !e.is_unavailable() {
                self.inner.index.drop_pending(pending).await?;
            }
            return Err(e);
        }
        self.inner
            .index
            .commit_delete(pending, did, repo, digest.as_deref(), &tags)
            .await?;
        Ok(())
    }

    /// Forgets an owner whose account was deleted: their repositories leave
    /// the index (and their blobs become garbage). Waits for the owner's
    /// push in progress, so none lands afterwards. Returns the number of
    /// manifests forgotten.
    pub async fn forget_owner(&self, did: &Did) -> Result<usize> {
        let did = did.as_str();
        let queue = self.owner_queue(did);
        let _guard = queue.commit.lock().await;
        let _owner = self.inner.index.lock_owner(did).await?;
        self.revoke(did);
        Ok(self.inner.index.forget_owner(did).await?)
    }
}

/// Most manifest records read when looking for every record of one digest.
const MAX_SCANNED_RECORDS: usize = 100_000;

/// The keys of every `io.atcr.manifest` record of `owner` that signs
/// `repo@digest`: the deterministic key first when present, then any other
/// (a legacy TID key, a duplicate left by a retried push).
async fn manifest_records_of(
    owner: &dyn OwnerPds,
    repo: &str,
    digest: &str,
) -> Result<Vec<String>> {
    use atcr_oci::records::{ManifestRecord, from_json};
    let parsed = Digest::parse(digest).map_err(|e| Error::DigestInvalid(e.to_string()))?;
    let mut out = vec![];
    let (mut cursor, mut seen) = (None, 0usize);
    loop {
        let (rows, next) = owner
            .list_records(MANIFEST_COLLECTION.into(), cursor.take())
            .await
            .map_err(Error::from)?;
        seen += rows.len();
        for (rkey, value) in rows {
            if let Ok(r) = from_json::<ManifestRecord>(&value)
                && r.check_names(repo, &parsed).is_ok()
            {
                out.push(rkey);
            }
        }
        match next {
            Some(c) if seen < MAX_SCANNED_RECORDS => cursor = Some(c),
            Some(_) => {
                return Err(Error::Unavailable(format!(
                    "the owner has over {MAX_SCANNED_RECORDS} manifest records; delete refused"
                )));
            }
            None => break,
        }
    }
    let own = atcr_oci::records::manifest_rkey(repo, &parsed);
    out.sort_by_key(|k| *k != own);
    Ok(out)
}

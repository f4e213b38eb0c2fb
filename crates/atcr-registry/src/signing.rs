//! Signature artifacts (DESIGN §5), made by the registry for every manifest
//! push once the owner's record is committed.
//!
//! The artifact lives only in the index and the blob store: it is a pointer
//! to the signed `io.atcr.manifest` record, and the record is the evidence.

use crate::index::{ManifestCommit, ManifestRow};
use crate::{Error, Registry, Result};
use atcr_oci::Digest;
use atcr_oci::manifest::{Descriptor, OCI_MANIFEST, ParsedManifest};
use atcr_oci::records::SignatureRecord;
use atcr_oci::signature::{
    AtprotoPointer, SIGNATURE_ARTIFACT_TYPE, SIGNATURE_LAYER_TYPE, SIGNATURE_VERSION, SignatureKey,
    SignatureLayer, SignatureSubject, build_artifact, validate_cosign_artifact,
};
use atcr_syntax::Did;
use std::collections::BTreeMap;

/// The owner's identity as the artifact names it (hints for verifiers).
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    did: String,
    handle: Option<String>,
    pds: String,
    algorithm: &'static str,
    public_key: String,
}

impl Signer {
    /// The artifact layer (DESIGN §5) pointing at `record_uri`.
    fn layer(
        &self,
        digest: &str,
        media_type: &str,
        record_uri: &str,
        commit_cid: &str,
        signed_at: &str,
    ) -> SignatureLayer {
        SignatureLayer {
            type_: SIGNATURE_LAYER_TYPE.into(),
            version: SIGNATURE_VERSION.into(),
            subject: SignatureSubject {
                digest: digest.to_owned(),
                media_type: media_type.to_owned(),
            },
            atproto: AtprotoPointer {
                did: self.did.clone(),
                handle: self.handle.clone(),
                pds_endpoint: self.pds.clone(),
                record_uri: record_uri.to_owned(),
                commit_cid: commit_cid.to_owned(),
                signed_at: signed_at.to_owned(),
            },
            signature: SignatureKey {
                algorithm: self.algorithm.into(),
                key_id: format!("{}#atproto", self.did),
                public_key_multibase: self.public_key.clone(),
            },
        }
    }
}

/// Most co-signers (other than the owner) one subject takes: what a
/// verifier reads stays bounded, whatever identities push.
pub const MAX_COSIGNERS: usize = 32;

/// How long an owner's resolved key is reused for new artifacts.
const SIGNER_CACHE: std::time::Duration = std::time::Duration::from_secs(30);

/// One committed manifest to make an artifact for.
pub(crate) struct Signed<'a> {
    pub repo: &'a str,
    pub display: &'a str,
    pub digest: &'a str,
    pub media_type: &'a str,
    pub size: u64,
    pub record_uri: String,
}

/// Whether a pushed manifest gets an artifact: everything but signature
/// artifacts themselves.
pub(crate) fn needs_artifact(p: &ParsedManifest) -> bool {
    p.effective_artifact_type().as_deref() != Some(SIGNATURE_ARTIFACT_TYPE)
}

impl Registry {
    /// The owner's current key and PDS, from its DID document (reused for
    /// [`SIGNER_CACHE`]: the artifact's key is a hint, verifiers use the
    /// DID document).
    pub(crate) async fn signer(&self, did: &str) -> Result<Signer> {
        if let Some((s, at)) = self
            .inner
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(did)
            && at.elapsed() < SIGNER_CACHE
        {
            return Ok(s.clone());
        }
        let s = self.resolve_signer(did).await?;
        self.inner
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(did.to_owned(), (s.clone(), std::time::Instant::now()));
        Ok(s)
    }

    async fn resolve_signer(&self, did: &str) -> Result<Signer> {
        let parsed = Did::new(did).map_err(|e| Error::NameInvalid(e.to_string()))?;
        // An embedded account's document comes straight from the embedded
        // directory: start-up recovery runs before the HTTP server does.
        let embedded = match &self.inner.pds {
            Some(pds) if pds.lookup_did(did).await.is_ok() => pds.did_document(did).await,
            _ => None,
        };
        let doc = match embedded {
            Some(json) => {
                let bytes = serde_json::to_vec(&json).unwrap_or_default();
                std::sync::Arc::new(
                    atcr_identity::DidDocument::parse(&parsed, &bytes)
                        .map_err(|e| Error::Internal(format!("owner {did}: {e}")))?,
                )
            }
            None => self
                .inner
                .resolver
                .resolve_did(&parsed)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot resolve the owner {did}: {e}")))?,
        };
        let key = doc
            .signing_key()
            .map_err(|e| Error::Denied(format!("owner {did}: {e}")))?;
        let pds = doc
            .pds_endpoint()
            .map_err(|e| Error::Denied(format!("owner {did}: {e}")))?;
        Ok(Signer {
            did: did.to_owned(),
            handle: doc.claimed_handle().map(|h| h.to_string()),
            pds: pds.as_str().trim_end_matches('/').to_owned(),
            algorithm: key.algorithm().suite_name(),
            public_key: key.to_multikey(),
        })
    }

    /// Builds and stores the artifacts of committed manifests; returns the
    /// index rows to commit with them.
    pub(crate) async fn signature_artifacts(
        &self,
        signer: &Signer,
        commit_cid: &str,
        signed: Vec<Signed<'_>>,
    ) -> Result<Vec<ManifestCommit>> {
        let now = atcr_syntax::Datetime::now().to_string();
        let mut out = Vec::with_capacity(signed.len());
        for s in signed {
            let digest =
                Digest::parse(s.digest).map_err(|e| Error::DigestInvalid(e.to_string()))?;
            let layer = signer.layer(s.digest, s.media_type, &s.record_uri, commit_cid, &now);
            let built = build_artifact(
                &layer,
                Descriptor {
                    media_type: s.media_type.to_owned(),
                    digest,
                    size: s.size,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                },
                false,
            );
            let annotations: BTreeMap<&str, &str> = [
                (atcr_oci::signature::ANNOTATION_DID, signer.did.as_str()),
                (atcr_oci::signature::ANNOTATION_PDS, signer.pds.as_str()),
                (
                    atcr_oci::signature::ANNOTATION_RECORD_URI,
                    s.record_uri.as_str(),
                ),
            ]
            .into_iter()
            .collect();
            out.push(ManifestCommit {
                did: signer.did.clone(),
                repo: s.repo.to_owned(),
                display: s.display.to_owned(),
                manifest: Some(ManifestRow {
                    digest: built.digest.to_string(),
                    media_type: OCI_MANIFEST.into(),
                    size: built.manifest.len() as u64,
                    bytes: built.manifest,
                    artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
                    subject: Some(s.digest.to_owned()),
                    annotations: serde_json::to_string(&annotations).ok(),
                    // No record: the artifact points at the manifest's record.
                    record_rkey: String::new(),
                    record_cid: String::new(),
                }),
                tag: None,
                replaces: vec![],
                // Committed with the artifact, in the index transaction.
                inline_blobs: built
                    .blobs
                    .into_iter()
                    .map(|(d, b)| (d.to_string(), b))
                    .collect(),
            });
        }
        Ok(out)
    }
}

impl Registry {
    /// Picks up an `io.atcr.signature` record created in `signer`'s PDS
    /// without `atcr sign` (which pushes the artifact itself): the registry
    /// makes the co-signature artifact `atcr sign` would have pushed and
    /// takes it through every check of [`Self::cosign_put`]. The record is
    /// read from the signer's repository, never taken from the event.
    /// True when an artifact was added.
    pub(crate) async fn cosign_from_record(
        &self,
        signer_did: &str,
        rkey: &str,
        commit_cid: &str,
    ) -> Result<bool> {
        let uri = crate::at_uri(signer_did, atcr_oci::SIGNATURE_COLLECTION, rkey);
        let Some(record) = self.signer_record(signer_did, rkey).await? else {
            return Ok(false);
        };
        let Ok(r) = atcr_oci::records::from_json::<SignatureRecord>(&record) else {
            return Ok(false);
        };
        let Ok(name) = atcr_oci::RepoName::parse(&r.subject.repository) else {
            return Ok(false);
        };
        let atcr_oci::Owner::Did(owner_did) = name.owner() else {
            return Ok(false); // records name the owner by DID
        };
        let Ok(signer) = Did::new(signer_did) else {
            return Ok(false);
        };
        let repository = crate::Repository::new(name.clone(), owner_did.clone());
        let (owner, repo) = (owner_did.to_string(), name.repo());
        if owner == signer_did {
            return Ok(false); // the owner's own artifacts are the registry's
        }
        let Some(subject) = self
            .inner
            .index
            .manifest(&owner, repo, &r.subject.digest, false)
            .await?
        else {
            return Ok(false);
        };
        let referrers = self
            .inner
            .index
            .referrers(&owner, repo, &subject.digest)
            .await?;
        if referrers
            .iter()
            .any(|m| m.annotations.as_deref().is_some_and(|a| a.contains(&uri)))
        {
            return Ok(false); // `atcr sign` pushed it already
        }
        let signing_key = self.signer(signer_did).await?;
        let digest =
            Digest::parse(&subject.digest).map_err(|e| Error::DigestInvalid(e.to_string()))?;
        let now = atcr_syntax::Datetime::now().to_string();
        let layer = signing_key.layer(&subject.digest, &subject.media_type, &uri, commit_cid, &now);
        let artifact = build_artifact(
            &layer,
            Descriptor {
                media_type: subject.media_type.clone(),
                digest,
                size: subject.size,
                artifact_type: None,
                annotations: BTreeMap::new(),
            },
            true,
        )
        .manifest;
        let ad = Digest::sha256_of(&artifact);
        let put = self
            .cosign_put(
                &repository,
                &signer,
                &atcr_oci::Reference::Digest(ad.clone()),
                Some(OCI_MANIFEST),
                artifact,
                Some(&uri),
            )
            .await?;
        Ok(put.digest == ad)
    }

    /// A co-signature artifact pushed by `signer` (not the owner) with the
    /// `sign` scope. Accepted only when it is a signature artifact for a
    /// manifest of this repository, carries its layer inline (descriptor
    /// `data`), and names an `io.atcr.signature` record that exists in the
    /// signer's own repository and signs exactly that subject. With
    /// `unless_uri`, nothing is added when the subject already has an
    /// artifact naming that record (checked under the owner's lock: the
    /// follower making an artifact from a record must not replace the one
    /// `atcr sign` pushed meanwhile).
    pub async fn cosign_put(
        &self,
        repository: &crate::Repository,
        signer: &Did,
        reference: &atcr_oci::Reference,
        content_type: Option<&str>,
        bytes: Vec<u8>,
        unless_uri: Option<&str>,
    ) -> Result<crate::PushedManifest> {
        let (name, owner_did) = (repository.name(), repository.did());
        let (owner, signer) = (owner_did.as_str(), signer.as_str());
        let denied = |m: String| Error::Denied(m);
        let atcr_oci::Reference::Digest(want) = reference else {
            return Err(denied("co-signers push by digest, not by tag".into()));
        };
        let digest = Digest::sha256_of(&bytes);
        if digest != *want {
            return Err(Error::DigestInvalid(format!(
                "the manifest hashes to {digest}, not {want}"
            )));
        }
        if content_type.is_some_and(|t| t != OCI_MANIFEST) {
            return Err(denied(format!(
                "a co-signature is an {OCI_MANIFEST}, not {}",
                content_type.unwrap_or_default()
            )));
        }
        // Only the exact §5 shape, byte for byte: one small inline layer,
        // the empty config, the three pointer annotations, nothing else.
        let artifact = validate_cosign_artifact(&bytes).map_err(|m| {
            denied(format!(
                "only a {SIGNATURE_ARTIFACT_TYPE} co-signature artifact may be pushed into a repository you do not own: {m}"
            ))
        })?;
        let subject = artifact.subject.clone();
        let layer = &artifact.layer;
        let repo = name.repo();
        if self
            .inner
            .index
            .manifest(owner, repo, &subject.digest.to_string(), false)
            .await?
            .is_none()
        {
            return Err(Error::ManifestUnknown(format!(
                "subject {} is not in {name}",
                subject.digest
            )));
        }
        if layer.atproto.did != signer {
            return Err(denied(format!(
                "the artifact names {}, you are {signer}",
                layer.atproto.did
            )));
        }
        let uri = atcr_syntax::AtUri::parse(&layer.atproto.record_uri)
            .map_err(|e| Error::ManifestInvalid(format!("recordUri: {e}")))?;
        let (Some(coll), Some(rkey)) = (uri.collection(), uri.rkey()) else {
            return Err(Error::ManifestInvalid("recordUri names no record".into()));
        };
        if uri.authority().to_string() != signer || coll.as_str() != atcr_oci::SIGNATURE_COLLECTION
        {
            return Err(denied(format!(
                "the record must be an {} record of {signer}",
                atcr_oci::SIGNATURE_COLLECTION
            )));
        }
        let record = self
            .signer_record(signer, rkey.as_str())
            .await?
            .ok_or_else(|| {
                denied(format!(
                    "{} does not exist in {signer}'s repository",
                    uri.as_str()
                ))
            })?;
        let checked = atcr_oci::records::from_json::<SignatureRecord>(&record)
            .map_err(|e| format!("not an io.atcr.signature record: {e}"))
            .and_then(|r| {
                r.check_names(owner_did, repo, &subject.digest)
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = checked {
            return Err(denied(format!(
                "{} does not sign {name}@{}: {why}",
                uri.as_str(),
                subject.digest
            )));
        }
        // One current artifact per signer and subject: a new one replaces the
        // signer's earlier ones; and a bounded number of co-signers. Decided
        // and committed under the owner's commit lock, so two pushes of one
        // signer (or a push and the follower) cannot both add one.
        let queue = self.owner_queue(owner);
        let _guard = queue.commit.lock().await;
        // Across replicas too (a shared index).
        let _owner = self.inner.index.lock_owner(owner).await?;
        let existing = self
            .inner
            .index
            .referrers(owner, repo, &subject.digest.to_string())
            .await?;
        if let Some(uri) = unless_uri
            && let Some(m) = existing
                .iter()
                .find(|m| m.annotations.as_deref().is_some_and(|a| a.contains(uri)))
        {
            return Ok(crate::PushedManifest {
                digest: Digest::parse(&m.digest)
                    .map_err(|e| Error::DigestInvalid(e.to_string()))?,
                subject: Some(subject.digest.to_string()),
            });
        }
        let cosigns: Vec<(String, Option<String>)> = existing
            .iter()
            .filter(|m| {
                m.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE)
                    && m.record_rkey.is_empty()
            })
            .map(|m| {
                let did = m
                    .annotations
                    .as_deref()
                    .and_then(|a| serde_json::from_str::<BTreeMap<String, String>>(a).ok())
                    .and_then(|a| a.get(atcr_oci::signature::ANNOTATION_DID).cloned());
                (m.digest.clone(), did)
            })
            .collect();
        let replaces: Vec<String> = cosigns
            .iter()
            .filter(|(d, did)| did.as_deref() == Some(signer) && *d != digest.to_string())
            .map(|(d, _)| d.clone())
            .collect();
        let others = cosigns
            .iter()
            .filter(|(_, did)| did.as_deref() != Some(signer) && did.as_deref() != Some(owner))
            .count();
        if others >= MAX_COSIGNERS {
            return Err(denied(format!(
                "{name}@{} already has {MAX_COSIGNERS} co-signers, the most a subject takes",
                subject.digest
            )));
        }
        let row = ManifestRow {
            digest: digest.to_string(),
            media_type: OCI_MANIFEST.into(),
            size: bytes.len() as u64,
            bytes,
            artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
            subject: Some(subject.digest.to_string()),
            annotations: serde_json::to_string(&BTreeMap::from([
                (atcr_oci::signature::ANNOTATION_DID, signer),
                (
                    atcr_oci::signature::ANNOTATION_PDS,
                    layer.atproto.pds_endpoint.as_str(),
                ),
                (
                    atcr_oci::signature::ANNOTATION_RECORD_URI,
                    layer.atproto.record_uri.as_str(),
                ),
            ]))
            .ok(),
            // The evidence is the signer's record, not one of the owner's.
            record_rkey: String::new(),
            record_cid: String::new(),
        };
        let pending = self.inner.index.begin_pending(owner, "[]").await?;
        self.inner
            .index
            .commit_manifests(
                pending,
                vec![ManifestCommit {
                    did: owner.to_owned(),
                    repo: repo.to_owned(),
                    display: name.to_string(),
                    manifest: Some(row),
                    tag: None,
                    inline_blobs: artifact
                        .blobs
                        .into_iter()
                        .map(|(d, b)| (d.to_string(), b))
                        .collect(),
                    replaces,
                }],
            )
            .await?;
        Ok(crate::PushedManifest {
            digest,
            subject: Some(subject.digest.to_string()),
        })
    }

    /// An `io.atcr.signature` record of `signer`: read from the embedded
    /// PDS, or fetched with its proof from the signer's PDS and verified
    /// against the key in its DID document.
    async fn signer_record(&self, signer: &str, rkey: &str) -> Result<Option<serde_json::Value>> {
        let coll = atcr_oci::SIGNATURE_COLLECTION;
        if let Some(pds) = &self.inner.pds
            && pds.lookup_did(signer).await.is_ok()
        {
            return match pds.get_record(signer, coll, rkey).await {
                Ok(r) => Ok(r.map(|(_, v)| v)),
                Err(e) if e.0.error == "RecordNotFound" => Ok(None),
                Err(e) => Err(Error::Internal(e.to_string())),
            };
        }
        let did = Did::new(signer).map_err(|e| Error::Denied(e.to_string()))?;
        let id = self
            .inner
            .resolver
            .resolve(&atcr_syntax::AtIdentifier::Did(did))
            .await
            .map_err(|e| Error::Unavailable(format!("{signer}: {e}")))?;
        // The signer's DID document chose this URL.
        self.inner
            .egress
            .check_url(&id.pds)
            .map_err(|e| Error::Denied(format!("{signer}'s PDS: {e}")))?;
        // The verifier's own record check: fetched from the signer's PDS,
        // proven against the key in their DID document.
        let proof = atcr_verify::fetch_record(self.inner.fetch.as_ref(), &id, coll, rkey)
            .await
            .map_err(|(reason, m)| match reason {
                atcr_verify::Reason::Unreachable => Error::Unavailable(m),
                _ => Error::Denied(format!("{signer}'s proof: {m}")),
            })?;
        Ok(proof.record.map(|(_, v)| atcr_data::json::to_json(&v)))
    }
}

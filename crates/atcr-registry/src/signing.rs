//! Signature artifacts (DESIGN §5), made by the registry for every manifest
//! push once the owner's record is committed.
//!
//! The artifact lives only in the index and the blob store: it is a pointer
//! to the signed `io.atcr.manifest` record, and the record is the evidence.

use crate::index::{ManifestCommit, ManifestRow};
use crate::{Registry, Result, err};
use atcr_oci::manifest::{Descriptor, OCI_MANIFEST, ParsedManifest};
use atcr_oci::signature::{
    AtprotoPointer, SIGNATURE_ARTIFACT_TYPE, SIGNATURE_LAYER_TYPE, SIGNATURE_VERSION, SignatureKey,
    SignatureLayer, SignatureSubject, build_artifact,
};
use atcr_oci::{Digest, ErrorCode};
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
        let parsed = Did::new(did).map_err(|e| err(ErrorCode::NameInvalid, e.to_string()))?;
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
                        .map_err(|e| err(ErrorCode::Unknown, format!("owner {did}: {e}")))?,
                )
            }
            None => self
                .inner
                .resolver
                .resolve_did(&parsed)
                .await
                .map_err(|e| {
                    err(
                        ErrorCode::Unavailable,
                        format!("cannot resolve the owner {did}: {e}"),
                    )
                })?,
        };
        let key = doc
            .signing_key()
            .map_err(|e| err(ErrorCode::Denied, format!("owner {did}: {e}")))?;
        let pds = doc
            .pds_endpoint()
            .map_err(|e| err(ErrorCode::Denied, format!("owner {did}: {e}")))?;
        Ok(Signer {
            did: did.to_owned(),
            handle: doc.claimed_handle().map(|h| h.to_string()),
            pds: pds.as_str().trim_end_matches('/').to_owned(),
            algorithm: match key.algorithm() {
                atcr_crypto::Algorithm::K256 => "ECDSA-K256-SHA256",
                atcr_crypto::Algorithm::P256 => "ECDSA-P256-SHA256",
            },
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
            let digest = Digest::parse(s.digest)
                .map_err(|e| err(ErrorCode::DigestInvalid, e.to_string()))?;
            let layer = SignatureLayer {
                type_: SIGNATURE_LAYER_TYPE.into(),
                version: SIGNATURE_VERSION.into(),
                subject: SignatureSubject {
                    digest: s.digest.to_owned(),
                    media_type: s.media_type.to_owned(),
                },
                atproto: AtprotoPointer {
                    did: signer.did.clone(),
                    handle: signer.handle.clone(),
                    pds_endpoint: signer.pds.clone(),
                    record_uri: s.record_uri.clone(),
                    commit_cid: commit_cid.to_owned(),
                    signed_at: now.clone(),
                },
                signature: SignatureKey {
                    algorithm: signer.algorithm.into(),
                    key_id: format!("{}#atproto", signer.did),
                    public_key_multibase: signer.public_key.clone(),
                },
            };
            let built = build_artifact(
                &layer,
                Descriptor {
                    media_type: s.media_type.to_owned(),
                    digest,
                    size: s.size,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                },
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

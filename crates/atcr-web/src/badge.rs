//! Verification badges: the shared verification library's verdict on an
//! image, computed in the background and cached, so a page never waits on a
//! PDS. A page shows "checking" until the verdict is in; its script asks
//! the JSON API again.

use atcr_identity::TtlCache;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Verifier};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// At most this many verifications run at once.
const CONCURRENT: usize = 4;
/// At most this many wait to run; beyond it a badge stays "checking" and is
/// asked for again by the page.
const QUEUED: usize = 256;

/// One signature as the badge shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerView {
    /// `owner` or `cosign`.
    pub kind: &'static str,
    /// Signer DID.
    pub did: String,
    /// Verified handle, if any.
    pub handle: Option<String>,
    /// The record (`at://…`).
    pub record_uri: String,
    /// The record at the signer's PDS (`com.atproto.repo.getRecord`), from
    /// the signer's DID document, never from the artifact's claims.
    pub record_url: Option<String>,
    /// The commit that covers the record.
    pub commit_cid: Option<String>,
    /// When the record was signed.
    pub signed_at: Option<String>,
    /// The chain holds.
    pub valid: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// A verification verdict for display.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Badge {
    /// `verified`, `failed`, `checking` or `not_checked`.
    pub state: &'static str,
    /// The failure's reason code (`tag_mismatch`, …) or why it was not
    /// checked.
    pub reason: Option<String>,
    /// Details of the failure.
    pub detail: Option<String>,
    /// The owner's PDS, from the DID document.
    pub pds: Option<String>,
    /// The signatures found.
    pub signers: Vec<SignerView>,
}

impl Badge {
    fn checking() -> Self {
        Self {
            state: "checking",
            reason: None,
            detail: None,
            pds: None,
            signers: vec![],
        }
    }

    fn not_checked(why: &str) -> Self {
        Self {
            state: "not_checked",
            reason: Some(why.to_owned()),
            detail: None,
            pds: None,
            signers: vec![],
        }
    }

    /// The words shown on the badge.
    pub fn label(&self) -> String {
        match (self.state, &self.reason) {
            ("verified", _) => "verified".into(),
            ("failed", Some(r)) => format!("failed: {}", r.replace('_', " ")),
            ("failed", None) => "failed".into(),
            ("checking", _) => "checking…".into(),
            _ => "not checked".into(),
        }
    }
}

/// The badge service.
#[derive(Clone)]
pub struct Badges {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Option<Arc<Verifier>>,
    why_not: String,
    policy: TrustPolicy,
    cache: TtlCache<String, Badge>,
    /// Verdicts being computed (their key maps to "checking").
    running: TtlCache<String, ()>,
    queued: AtomicUsize,
    permits: tokio::sync::Semaphore,
}

impl Badges {
    /// Badges from `verifier` (owner-only policy: the image was published
    /// by the identity in its name), kept `ttl`. Without a verifier every
    /// badge is "not checked" for the reason `why_not`.
    pub fn new(verifier: Option<Verifier>, why_not: &str, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                verifier: verifier.map(Arc::new),
                why_not: why_not.to_owned(),
                policy: TrustPolicy::owner_only(),
                cache: TtlCache::new(ttl, 50_000),
                running: TtlCache::new(Duration::from_secs(120), 50_000),
                queued: AtomicUsize::new(0),
                permits: tokio::sync::Semaphore::new(CONCURRENT),
            }),
        }
    }

    /// The badge of `image` (`HOST/did-…/REPO:TAG` or `@DIGEST`) as it
    /// stands: cached, or "checking" while it is computed in the background.
    pub fn get(&self, image: &str) -> Badge {
        let Some(verifier) = self.inner.verifier.clone() else {
            return Badge::not_checked(&self.inner.why_not);
        };
        if let Some(b) = self.inner.cache.get(&image.to_owned()) {
            return b;
        }
        if self.inner.running.get(&image.to_owned()).is_some() {
            return Badge::checking();
        }
        if self.inner.queued.fetch_add(1, Ordering::AcqRel) >= QUEUED {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Badge::checking();
        }
        self.inner.running.insert(image.to_owned(), ());
        let (this, image) = (self.clone(), image.to_owned());
        tokio::spawn(async move {
            let badge = match this.inner.permits.acquire().await {
                Ok(_permit) => this.compute(&verifier, &image).await,
                Err(_) => Badge::not_checked("shutting down"),
            };
            this.inner.queued.fetch_sub(1, Ordering::AcqRel);
            this.inner.cache.insert(image.clone(), badge);
            this.inner.running.remove(&image);
        });
        Badge::checking()
    }

    /// Waits (at most `wait`) for the badge of `image` to be computed.
    pub async fn settled(&self, image: &str, wait: Duration) -> Badge {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let b = self.get(image);
            if b.state != "checking" || tokio::time::Instant::now() >= deadline {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn compute(&self, verifier: &Verifier, image: &str) -> Badge {
        let parsed = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => return Badge::not_checked(&e.to_string()),
        };
        let report = match tokio::time::timeout(
            Duration::from_secs(30),
            verifier.verify(&parsed, &self.inner.policy),
        )
        .await
        {
            Ok(Ok(r)) => r,
            // Could not complete (a PDS or the registry is unreachable):
            // not a verdict, so not shown as one, and not kept long.
            Ok(Err(e)) => return Badge::not_checked(&format!("could not complete: {e}")),
            Err(_) => return Badge::not_checked("could not complete: timed out after 30 s"),
        };
        let pds = report.owner.as_ref().map(|o| o.pds.clone());
        let mut signers = vec![];
        for s in &report.signatures {
            let record_url = if s.record_uri.is_empty() {
                None
            } else {
                self.record_url(verifier, &s.did, &s.record_uri).await
            };
            signers.push(SignerView {
                kind: s.kind,
                did: s.did.clone(),
                handle: s.handle.clone(),
                record_uri: s.record_uri.clone(),
                record_url,
                commit_cid: s.commit_cid.clone(),
                signed_at: s.signed_at.clone(),
                valid: s.valid,
                reason: s.reason.map(|r| r.code().to_owned()),
            });
        }
        let (state, reason, detail) = match report.decision {
            Decision::Pass => ("verified", None, None),
            Decision::Fail => {
                // The first image-level reason, else the owner signature's.
                let reason = report.reasons.first().copied().or_else(|| {
                    report
                        .signatures
                        .iter()
                        .find(|s| s.kind == "owner")
                        .and_then(|s| s.reason)
                });
                let detail = report
                    .details
                    .first()
                    .cloned()
                    .or_else(|| report.signatures.iter().find_map(|s| s.detail.clone()));
                (
                    "failed",
                    Some(reason.map_or("failed", |r| r.code()).to_owned()),
                    detail,
                )
            }
        };
        Badge {
            state,
            reason,
            detail,
            pds,
            signers,
        }
    }

    /// `PDS/xrpc/com.atproto.repo.getRecord?…` for an `at://` URI, the PDS
    /// taken from the signer's DID document.
    async fn record_url(&self, verifier: &Verifier, did: &str, uri: &str) -> Option<String> {
        let rest = uri.strip_prefix("at://")?;
        let mut parts = rest.splitn(3, '/');
        let (repo, collection, rkey) = (parts.next()?, parts.next()?, parts.next()?);
        if repo != did {
            return None;
        }
        let pds = verifier.pds_of(did).await?;
        let mut u = pds.join("xrpc/com.atproto.repo.getRecord").ok()?;
        u.query_pairs_mut()
            .append_pair("repo", repo)
            .append_pair("collection", collection)
            .append_pair("rkey", rkey);
        Some(u.to_string())
    }
}

//! Verifies that a container image was published by the ATProto identity
//! in its name (DESIGN §6).
//!
//! For `HOST/OWNER/REPO[:TAG|@DIGEST]`:
//! 1. OWNER → DID (a handle only when its DID document points back) → DID
//!    document → PDS and current `#atproto` key.
//! 2. The digest is computed from the manifest bytes the registry serves. For
//!    a tag, the owner's `io.atcr.tag` record is read with its proof and must
//!    name that digest.
//! 3. Signature artifacts are found with the Referrers API. They are only
//!    pointers: each names a record, which is fetched with
//!    `com.atproto.sync.getRecord` from the signer's PDS (as its DID document
//!    says, not the artifact) and verified: commit DID, commit signature under
//!    the signer's current key, MST inclusion, record hash. A record that the
//!    proof shows absent is revoked.
//! 4. The record must name this image: `digest` and `repository` for the
//!    owner's `io.atcr.manifest`, `subject` for an `io.atcr.signature`.
//!
//! Without a trust policy the image passes when at least one owner signature
//! is valid. Every failure has a stable reason code ([`Reason`]).

pub mod bundle;
pub mod config;
pub mod oci;
pub mod policy;

use atcr_fetch::{Fetch, FetchError, Online, OnlineConfig, Recorder, Replay, Request};
use atcr_identity::{IdentityError, IdentityResolver, ResolvedIdentity};
use atcr_oci::records::{ManifestRecord, Mismatch, SignatureRecord, TagRecord, from_json};
use atcr_oci::signature::{
    ArtifactPointer, MAX_ARTIFACT_BYTES, MAX_LAYER_BYTES, SIGNATURE_ARTIFACT_TYPE, SignatureLayer,
};
use atcr_oci::{
    Digest, MANIFEST_COLLECTION, Owner, RepoName, SIGNATURE_COLLECTION, TAG_COLLECTION, tag_rkey,
};
use atcr_repo::{ProofError, verify_record_proof};
use atcr_syntax::{AtIdentifier, AtUri, Nsid, RecordKey};
use oci::{Credentials, RegistryClient};
use policy::{Action, TrustPolicy};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Most signature artifacts considered for one image (the owner's first).
pub const MAX_ARTIFACTS: usize = 64;
/// Largest record proof read.
const MAX_PROOF_BYTES: usize = 1024 * 1024;
/// Signatures checked at once.
const CONCURRENT_CHECKS: usize = 8;
/// Time a third party's signature gets before it counts as unreachable.
pub const COSIGNER_BUDGET: Duration = Duration::from_secs(10);
/// How far in the future a signing time may be (clock skew) and still count.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why verification could not be completed (exit code 3), or bad input
/// (exit code 2). A failed check is not an error: it is a [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The image reference is malformed.
    #[error("invalid image reference {0:?}: {1}")]
    BadReference(String, String),
    /// The registry could not be read.
    #[error("registry: {0}")]
    Registry(String),
    /// A DID document, handle or PDS could not be reached (or, offline, is
    /// not in the bundle).
    #[error("{0}")]
    Network(String),
    /// The bundle file is unreadable or not a bundle.
    #[error("bundle: {0}")]
    BadBundle(String),
    /// The bundle's content does not match its digest.
    #[error("bundle: its content was modified after export (content digest mismatch)")]
    BundleModified,
}

impl VerifyError {
    /// The CLI exit code: 2 for bad input, 3 when verification could not
    /// complete.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadReference(..) | Self::BadBundle(_) => 2,
            Self::BundleModified => 1,
            Self::Registry(_) | Self::Network(_) => 3,
        }
    }
}

/// A parsed `HOST/OWNER/REPO[:TAG|@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port).
    pub host: String,
    /// `OWNER/REPO`.
    pub name: RepoName,
    /// Tag or digest (`latest` when neither is given).
    pub reference: Reference,
}

impl ImageRef {
    /// Parses an image reference.
    pub fn parse(s: &str) -> Result<Self, VerifyError> {
        let bad = |why: &str| VerifyError::BadReference(s.to_owned(), why.to_owned());
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("expected HOST/OWNER/REPO[:TAG|@DIGEST]"))?;
        if host.is_empty() || !host.contains(['.', ':', '[']) && host != "localhost" {
            return Err(bad("the first component must be a registry host"));
        }
        canonical_host(host).map_err(|e| bad(&e))?;
        let (path, reference) = if let Some((p, d)) = rest.split_once('@') {
            let d = Digest::parse(d).map_err(|e| bad(&e.message))?;
            (p, Reference::Digest(d))
        } else {
            // A ':' after the last '/' separates the tag.
            let slash = rest.rfind('/').unwrap_or(0);
            match rest[slash..].find(':') {
                Some(i) => {
                    let (p, t) = rest.split_at(slash + i);
                    let t = &t[1..];
                    atcr_oci::validate_tag(t).map_err(|e| bad(&e.message))?;
                    (p, Reference::Tag(t.to_owned()))
                }
                None => (rest, Reference::Tag("latest".into())),
            }
        };
        let name = RepoName::parse(path).map_err(|e| bad(&e.message))?;
        Ok(Self {
            host: host.to_owned(),
            name,
            reference,
        })
    }
}

/// A registry host in canonical form, for matching: lower case, no
/// trailing dot, an IP address in its standard text form (`localhost` is
/// `127.0.0.1`), the port in plain digits and omitted when it is 443 (the
/// default of `https`).
pub fn canonical_host(host: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{host:?} is not a registry host: {why}");
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad("bad IPv6 address"))?;
        (format!("[{ip}]"), port)
    } else {
        let (n, p) = match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        };
        let n = n.to_ascii_lowercase();
        let n = n.strip_suffix('.').unwrap_or(&n).to_owned();
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            || n.split('.').any(str::is_empty)
        {
            return Err(bad("bad host name"));
        }
        let n = match n.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) if n == "localhost" => "127.0.0.1".to_owned(),
            Err(_) => n,
        };
        (n, p)
    };
    match port {
        None => Ok(name),
        Some(p) => {
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("the port is not a number"));
            }
            let n: u32 = p.parse().map_err(|_| bad("bad port"))?;
            match n {
                0 | 65536.. => Err(bad("port out of range")),
                443 => Ok(name),
                n => Ok(format!("{name}:{n}")),
            }
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{t}", self.host, self.name),
            Reference::Digest(d) => write!(f, "{}/{}@{d}", self.host, self.name),
        }
    }
}

/// Stable failure reason codes (the `reason` fields of the JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The owner's handle and DID document do not point at each other.
    HandleMismatch,
    /// The DID document has no usable key or PDS.
    IdentityInvalid,
    /// The registry does not have the image.
    ImageNotFound,
    /// The owner has no tag record for the tag.
    TagNotSigned,
    /// The registry's digest for the tag differs from the owner's tag record.
    TagMismatch,
    /// No signature artifact names a record.
    NoSignatures,
    /// The artifact is malformed or names a record it cannot (another DID,
    /// collection or subject).
    ArtifactInvalid,
    /// An owner-signature artifact names a DID that is not the owner's.
    DidMismatch,
    /// The commit is not signed by the signer's current key.
    BadCommitSignature,
    /// The proof does not establish the record (commit DID, MST path, blocks).
    ProofInvalid,
    /// The record is gone from the signer's repository.
    Revoked,
    /// The record names another digest.
    DigestMismatch,
    /// The record names another repository.
    RepositoryMismatch,
    /// The signer's PDS could not be read.
    Unreachable,
    /// No policy scope matches the image and there are no `defaults`.
    NoPolicy,
    /// The signer is valid but not trusted by the policy.
    UntrustedSigner,
    /// The signature falls outside the trusted DID's `validFrom`/`expiresAt`.
    OutsideValidity,
    /// The signature is older than the policy's `maxAge`.
    MaxAgeExceeded,
    /// Fewer distinct trusted signers than `minSignatures`.
    NotEnoughSignatures,
    /// The record's signing time is in the future (beyond the allowed skew).
    SignedInFuture,
}

impl Reason {
    /// The code as it appears in JSON.
    pub fn code(self) -> &'static str {
        match self {
            Self::HandleMismatch => "handle_mismatch",
            Self::IdentityInvalid => "identity_invalid",
            Self::ImageNotFound => "image_not_found",
            Self::TagNotSigned => "tag_not_signed",
            Self::TagMismatch => "tag_mismatch",
            Self::NoSignatures => "no_signatures",
            Self::ArtifactInvalid => "artifact_invalid",
            Self::DidMismatch => "did_mismatch",
            Self::BadCommitSignature => "bad_commit_signature",
            Self::ProofInvalid => "proof_invalid",
            Self::Revoked => "revoked",
            Self::DigestMismatch => "digest_mismatch",
            Self::RepositoryMismatch => "repository_mismatch",
            Self::Unreachable => "unreachable",
            Self::NoPolicy => "no_policy",
            Self::UntrustedSigner => "untrusted_signer",
            Self::OutsideValidity => "outside_validity",
            Self::MaxAgeExceeded => "max_age_exceeded",
            Self::NotEnoughSignatures => "not_enough_signatures",
            Self::SignedInFuture => "signed_in_future",
        }
    }
}

/// The owner as resolved.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReport {
    /// DID.
    pub did: String,
    /// Handle, when bidirectionally verified.
    pub handle: Option<String>,
    /// PDS endpoint from the DID document.
    pub pds: String,
}

/// The tag check.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    /// The tag.
    pub tag: String,
    /// Digest the owner's tag record names (`None` when there is none).
    pub signed_digest: Option<String>,
    /// Digest the registry answered.
    pub registry_digest: String,
    /// Commit CID of the proof.
    pub commit_cid: Option<String>,
    /// Whether they agree.
    pub valid: bool,
}

/// One signature, as verified.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport {
    /// `owner` (io.atcr.manifest) or `cosign` (io.atcr.signature).
    pub kind: &'static str,
    /// The signature artifact it came from.
    pub artifact: Option<String>,
    /// Signer DID.
    pub did: String,
    /// Signer handle (bidirectionally verified), if any.
    pub handle: Option<String>,
    /// The record.
    pub record_uri: String,
    /// Record CID (from the proof).
    pub record_cid: Option<String>,
    /// Commit CID (from the proof).
    pub commit_cid: Option<String>,
    /// Commit revision.
    pub rev: Option<String>,
    /// Key id that verified the commit.
    pub key_id: Option<String>,
    /// `createdAt` of the signed record.
    pub signed_at: Option<String>,
    /// The cryptographic chain holds and the record names this image.
    pub valid: bool,
    /// Counted by the policy.
    pub trusted: bool,
    /// Why it is not valid, or not trusted.
    pub reason: Option<Reason>,
    /// Details of the failure.
    pub detail: Option<String>,
}

impl SignatureReport {
    /// A signature that failed before anything about it was known.
    fn failed(did: String, reason: Reason, detail: String) -> Self {
        Self {
            kind: "owner",
            artifact: None,
            did,
            handle: None,
            record_uri: String::new(),
            record_cid: None,
            commit_cid: None,
            rev: None,
            key_id: None,
            signed_at: None,
            valid: false,
            trusted: false,
            reason: Some(reason),
            detail: Some(detail),
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Verified and allowed.
    Pass,
    /// Failed.
    Fail,
}

/// The full result (the JSON output, schema version 1).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Schema version of this document.
    pub schema_version: u32,
    /// The image as given.
    pub image: String,
    /// The identity policies are matched on: `HOST/DID/REPO`, the host
    /// canonical (aliases applied) and the owner as a DID.
    pub canonical: Option<String>,
    /// The image digest (computed from the registry's bytes).
    pub digest: Option<String>,
    /// The owner.
    pub owner: Option<OwnerReport>,
    /// The tag check (tag references only).
    pub tag: Option<TagReport>,
    /// Every signature found.
    pub signatures: Vec<SignatureReport>,
    /// The verdict.
    pub decision: Decision,
    /// The policy rule applied.
    pub policy: Option<String>,
    /// Distinct trusted signers the rule requires (0 when it requires none).
    pub required: Option<u32>,
    /// Violations let through by `action: audit`.
    pub warnings: Vec<String>,
    /// Why it failed (image-level reasons).
    pub reasons: Vec<Reason>,
    /// Human-readable details of the failure.
    pub details: Vec<String>,
    /// Part of the result came from a transient failure (an unreachable
    /// co-signer): not reused from the cache.
    #[serde(skip)]
    pub transient: bool,
}

impl Report {
    fn new(image: &ImageRef) -> Self {
        Self {
            schema_version: 1,
            image: image.to_string(),
            canonical: None,
            digest: None,
            owner: None,
            tag: None,
            signatures: vec![],
            decision: Decision::Fail,
            policy: None,
            required: None,
            warnings: vec![],
            reasons: vec![],
            details: vec![],
            transient: false,
        }
    }
    /// How many signatures are valid, and how many the policy trusts.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.signatures.iter().filter(|s| s.valid).count(),
            self.signatures.iter().filter(|s| s.trusted).count(),
        )
    }
    fn fail(mut self, r: Reason, detail: impl Into<String>) -> Self {
        self.reasons.push(r);
        self.details.push(detail.into());
        self.decision = Decision::Fail;
        self
    }
    /// The CLI exit code of this report: 0 pass, 1 fail.
    pub fn exit_code(&self) -> i32 {
        match self.decision {
            Decision::Pass => 0,
            Decision::Fail => 1,
        }
    }
}

/// Verifier settings.
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    /// Identity resolution (PLC directory URL, plain http, overrides).
    pub identity: atcr_identity::ResolverConfig,
    /// Talk plain HTTP to registries on loopback addresses.
    pub plain_http_loopback: bool,
    /// Registry credentials by host.
    pub credentials: Vec<(String, Credentials)>,
    /// Verify from this bundle with no network access.
    pub offline: Option<bundle::Bundle>,
    /// Record everything fetched, for [`Verifier::export`].
    pub record: bool,
    /// Reuse verdicts this long (`None`: verify every time). A tag's digest
    /// and a revocation are seen again only after it. Not used offline or
    /// when recording.
    pub cache_ttl: Option<Duration>,
}

/// The verifier. Cheap to share; caches DID documents (successes only).
pub struct Verifier {
    /// Pre-policy reports by image (when [`VerifierConfig::cache_ttl`] is set).
    results: Option<atcr_identity::TtlCache<String, Report>>,
    inflight:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    resolver: IdentityResolver,
    /// Where every answer comes from (the one fetch seam).
    fetch: Arc<dyn Fetch>,
    /// The recording, when exporting.
    recorder: Option<Arc<Recorder>>,
    /// Verdict cache hits and misses.
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    cfg: VerifierConfig,
}

fn is_loopback(host: &str) -> bool {
    let Ok(h) = canonical_host(host) else {
        return false;
    };
    let h = h.rsplit_once(':').map_or(h.as_str(), |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

fn identity_error(e: IdentityError) -> Result<Reason, VerifyError> {
    if e.is_transient() {
        return Err(VerifyError::Network(e.to_string()));
    }
    Ok(match e {
        IdentityError::HandleMismatch { .. } => Reason::HandleMismatch,
        _ => Reason::IdentityInvalid,
    })
}

impl Verifier {
    /// A verifier.
    pub fn new(cfg: VerifierConfig) -> Result<Self, VerifyError> {
        Self::build(cfg, None)
    }

    /// A verifier that reads everything through `fetch` (a proxy, a test
    /// double of a hostile network): identity, registry and proofs alike.
    pub fn with_fetch(cfg: VerifierConfig, fetch: Arc<dyn Fetch>) -> Result<Self, VerifyError> {
        Self::build(cfg, Some(fetch))
    }

    fn build(cfg: VerifierConfig, given: Option<Arc<dyn Fetch>>) -> Result<Self, VerifyError> {
        let mut identity = cfg.identity.clone();
        let base: Arc<dyn Fetch> = match (&cfg.offline, given) {
            (_, Some(f)) => f,
            (Some(b), None) => {
                // DID logs are keyed by the directory they were exported from.
                identity.plc_url = b
                    .plc_url
                    .parse()
                    .map_err(|e| VerifyError::BadBundle(format!("plcUrl: {e}")))?;
                Arc::new(Replay::new(b.resources.clone()))
            }
            (None, None) => Arc::new(
                Online::new(&OnlineConfig {
                    timeout: identity.timeout,
                    host_overrides: identity.host_overrides.clone(),
                    dns_nameservers: identity.dns_nameservers.clone(),
                })
                .map_err(VerifyError::Network)?,
            ),
        };
        let recorder = cfg.record.then(|| Arc::new(Recorder::new(base.clone())));
        let fetch: Arc<dyn Fetch> = match &recorder {
            Some(r) => r.clone(),
            None => base,
        };
        let resolver = IdentityResolver::with_fetch(identity, fetch.clone())
            .map_err(|e| VerifyError::Network(e.to_string()))?;
        let results = cfg
            .cache_ttl
            .filter(|t| !t.is_zero() && !cfg.record && cfg.offline.is_none())
            .map(|t| atcr_identity::TtlCache::new(t, 100_000));
        Ok(Self {
            results,
            inflight: std::sync::Mutex::new(std::collections::HashMap::new()),
            resolver,
            fetch,
            recorder,
            hits: Default::default(),
            misses: Default::default(),
            cfg,
        })
    }

    /// Verdict cache (hits, misses) so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Verifies `image` under `policy` and returns, with the report, a
    /// bundle of everything fetched. Needs a verifier made with `record:
    /// true` (and used for nothing else).
    pub async fn export(
        &self,
        image: &ImageRef,
        policy: &TrustPolicy,
    ) -> Result<(Report, bundle::Bundle), VerifyError> {
        let Some(recorder) = &self.recorder else {
            return Err(VerifyError::BadBundle(
                "export needs a recording verifier".into(),
            ));
        };
        let report = self.verify(image, policy).await?;
        let b = bundle::Bundle::new(
            image.to_string(),
            self.cfg.identity.plc_url.to_string(),
            recorder.recorded(),
        );
        Ok((report, b))
    }

    fn registry(&self, host: &str) -> RegistryClient {
        let creds = self
            .cfg
            .credentials
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, c)| c.clone());
        RegistryClient::new(
            self.fetch.clone(),
            host,
            self.cfg.plain_http_loopback && is_loopback(host),
            creds,
        )
    }

    /// Verifies an image against a policy. `Err` only when verification
    /// could not complete (network, registry) — never for a failed check.
    pub async fn verify(
        &self,
        image: &ImageRef,
        policy: &TrustPolicy,
    ) -> Result<Report, VerifyError> {
        let report = self.verify_cached(image).await?;
        self.decide(report, image, policy).await
    }

    /// Applies `policy` to a pre-policy report: the rule is chosen on the
    /// canonical identity (scope owners named by handle are resolved here).
    async fn decide(
        &self,
        mut r: Report,
        image: &ImageRef,
        policy: &TrustPolicy,
    ) -> Result<Report, VerifyError> {
        // An early failure (identity, tag, missing image) is final; the
        // policy weighs signatures only.
        let Some(owner) = r.owner.as_ref().map(|o| o.did.clone()) else {
            return Ok(r);
        };
        let host = policy
            .canonical_host(&image.host)
            .map_err(|e| VerifyError::BadReference(image.to_string(), e))?;
        let canonical = format!("{host}/{owner}/{}", image.name.repo());
        r.canonical = Some(canonical.clone());
        if !r.reasons.is_empty() {
            return Ok(r);
        }
        let mut handle_dids = std::collections::BTreeMap::new();
        for h in policy.scope_handles(&host) {
            // Fail closed: a scope whose owner cannot be resolved now might
            // be the one that applies.
            let did = match self
                .resolver
                .resolve(&AtIdentifier::Handle(h.clone()))
                .await
            {
                Ok(id) => Some(id.did.to_string()),
                Err(e) if e.is_transient() => {
                    return Err(VerifyError::Network(format!("policy scope owner {h}: {e}")));
                }
                Err(_) => None,
            };
            handle_dids.insert(h.as_str().to_owned(), did);
        }
        let rule = policy.rule_for(&canonical, &handle_dids);
        apply_policy(&mut r, policy, rule, &owner, now_seconds());
        Ok(r)
    }

    /// The pre-policy report, from the verdict cache when it has it.
    async fn verify_cached(&self, image: &ImageRef) -> Result<Report, VerifyError> {
        let Some(cache) = &self.results else {
            return self.verify_uncached(image).await;
        };
        // Identical concurrent verifications wait for one; only completed
        // verdicts are cached, never a failure to complete.
        let key = image.to_string();
        if let Some(r) = cache.get(&key) {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(r);
        }
        self.misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(r) = cache.get(&key) {
            return Ok(r);
        }
        let result = self.verify_uncached(image).await;
        if let Ok(r) = &result
            && !r.transient
        {
            cache.insert(key.clone(), r.clone());
        }
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
    }

    /// Steps 1–4: the report before the policy is applied.
    async fn verify_uncached(&self, image: &ImageRef) -> Result<Report, VerifyError> {
        let mut report = Report::new(image);
        // 1. The owner.
        let ident = match image.name.owner() {
            Owner::Handle(h) => AtIdentifier::Handle(h.clone()),
            Owner::Did(d) => AtIdentifier::Did(d.clone()),
        };
        let owner = match self.identity(&ident).await {
            Ok(o) => o,
            Err(e) => {
                let detail = e.to_string();
                return Ok(report.fail(identity_error(e)?, detail));
            }
        };
        report.owner = Some(OwnerReport {
            did: owner.did.to_string(),
            handle: owner.handle.as_ref().map(|h| h.to_string()),
            pds: owner.pds.to_string(),
        });
        let repo = image.name.repo();
        let path = image.name.to_string();

        // 2. The digest, and for a tag the owner's signed tag record.
        let registry = self.registry(&image.host);
        let reference = match &image.reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.to_string(),
        };
        let Some((_, digest)) = registry.manifest(&path, &reference).await? else {
            return Ok(report.fail(
                Reason::ImageNotFound,
                format!("{image}: the registry has no such manifest"),
            ));
        };
        if let Reference::Digest(d) = &image.reference
            && *d != digest
        {
            return Err(VerifyError::Registry(format!(
                "the registry answered {d} with bytes hashing to {digest}"
            )));
        }
        report.digest = Some(digest.to_string());
        if let Reference::Tag(t) = &image.reference {
            let proof = self
                .record(&owner, TAG_COLLECTION, &tag_rkey(repo, t))
                .await;
            let mut tr = TagReport {
                tag: t.clone(),
                signed_digest: None,
                registry_digest: digest.to_string(),
                commit_cid: None,
                valid: false,
            };
            match proof {
                Ok(p) => {
                    tr.commit_cid = Some(p.commit_cid.to_string());
                    if let Some((_, v)) = &p.record {
                        let rec = from_json::<TagRecord>(&atcr_data::json::to_json(v)).ok();
                        tr.signed_digest = rec
                            .as_ref()
                            .and_then(|r| r.digest_for(repo, t))
                            .map(str::to_owned);
                        tr.valid = tr.signed_digest.as_deref() == Some(&digest.to_string());
                    }
                }
                Err((Reason::Unreachable, detail)) => return Err(VerifyError::Network(detail)),
                Err((reason, detail)) => {
                    report.tag = Some(tr);
                    return Ok(report.fail(reason, detail));
                }
            }
            let (valid, signed) = (tr.valid, tr.signed_digest.clone());
            report.tag = Some(tr);
            if !valid {
                return Ok(match signed {
                    None => report.fail(
                        Reason::TagNotSigned,
                        format!("{} has no io.atcr.tag record for {repo}:{t}", owner.did),
                    ),
                    Some(s) => report.fail(
                        Reason::TagMismatch,
                        format!("the registry serves {digest} for {t}, the owner signed {s}"),
                    ),
                });
            }
        }

        // 3–4. Signatures. Each is judged on its own: a third party's
        // unreachable, oversized or invalid signature is that signature's
        // failure, never the image's. What is read is bounded: the owner's
        // artifacts first (by their annotation, a hint used only for order),
        // then others, at most MAX_ARTIFACTS.
        let mut arts = registry
            .referrers(&path, &digest, SIGNATURE_ARTIFACT_TYPE)
            .await?;
        arts.sort_by_key(|a| a.claimed_did.as_deref() != Some(owner.did.as_str()));
        if arts.len() > MAX_ARTIFACTS {
            report.warnings.push(format!(
                "{} signature artifacts; only the first {MAX_ARTIFACTS} were considered",
                arts.len()
            ));
            arts.truncate(MAX_ARTIFACTS);
        }
        use futures_util::StreamExt as _;
        let futs: Vec<_> = arts
            .iter()
            .map(|a| self.check_bounded(&registry, &path, &owner, image, &digest, a))
            .collect();
        let checks = futures_util::stream::iter(futs)
            .buffered(CONCURRENT_CHECKS)
            .collect::<Vec<_>>()
            .await;
        for sig in checks {
            let sig = sig?;
            if sig.reason == Some(Reason::Unreachable) {
                report.transient = true;
            }
            report.signatures.push(sig);
        }
        Ok(report)
    }

    /// A handle is resolved with the bidirectional check. A DID is resolved
    /// to its document only: the name already is the identity, and the
    /// handle it claims is not needed to verify (nor shown).
    async fn identity(&self, ident: &AtIdentifier) -> Result<ResolvedIdentity, IdentityError> {
        match ident {
            AtIdentifier::Handle(_) => self.resolver.resolve(ident).await,
            AtIdentifier::Did(did) => {
                let document = self.resolver.resolve_did(did).await?;
                Ok(ResolvedIdentity {
                    did: did.clone(),
                    handle: None,
                    signing_key: document.signing_key()?,
                    pds: document.pds_endpoint()?,
                    document,
                })
            }
        }
    }

    /// The PDS endpoint in `did`'s DID document (resolved and cached as
    /// for verification), for linking to a signer's records.
    pub async fn pds_of(&self, did: &str) -> Option<url::Url> {
        let did = atcr_syntax::Did::new(did).ok()?;
        let document = self.resolver.resolve_did(&did).await.ok()?;
        document.pds_endpoint().ok()
    }

    /// Fetches and verifies a record proof from `who`'s PDS against their
    /// current key.
    async fn record(
        &self,
        who: &ResolvedIdentity,
        collection: &str,
        rkey: &str,
    ) -> Result<atcr_repo::VerifiedRecord, (Reason, String)> {
        fetch_record(self.fetch.as_ref(), who, collection, rkey).await
    }

    /// [`Self::check_artifact`], within [`COSIGNER_BUDGET`] for artifacts
    /// that do not claim to be the owner's.
    async fn check_bounded(
        &self,
        registry: &RegistryClient,
        path: &str,
        owner: &ResolvedIdentity,
        image: &ImageRef,
        digest: &Digest,
        a: &oci::Referrer,
    ) -> Result<SignatureReport, VerifyError> {
        let check = self.check_artifact(registry, path, owner, image, digest, &a.digest);
        let r = if a.claimed_did.as_deref() == Some(owner.did.as_str()) {
            check.await
        } else {
            // A hostile or slow co-signer is given a bounded time.
            match tokio::time::timeout(COSIGNER_BUDGET, check).await {
                Ok(r) => r,
                Err(_) => Ok(SignatureReport::failed(
                    a.claimed_did.clone().unwrap_or_default(),
                    Reason::Unreachable,
                    format!(
                        "artifact {}: no answer within {COSIGNER_BUDGET:?}",
                        a.digest
                    ),
                )),
            }
        };
        r.map(|mut s| {
            s.artifact = Some(a.digest.to_string());
            s
        })
    }

    /// Checks one signature artifact. `Err` only when the owner's own
    /// PDS or the registry fails (the image cannot be judged); a third
    /// party's failure is a [`SignatureReport`] with its reason.
    async fn check_artifact(
        &self,
        registry: &RegistryClient,
        path: &str,
        owner: &ResolvedIdentity,
        image: &ImageRef,
        digest: &Digest,
        artifact: &Digest,
    ) -> Result<SignatureReport, VerifyError> {
        let s = SignatureReport::failed(String::new(), Reason::ArtifactInvalid, String::new());
        let fail = |mut s: SignatureReport, r: Reason, d: String| {
            s.reason = Some(r);
            s.detail = Some(d);
            Ok(s)
        };
        // The artifact: only the record it points at is used.
        let layer = match artifact_layer(registry, path, artifact).await {
            Ok(l) => l,
            Err(e) => return fail(s, Reason::ArtifactInvalid, e),
        };
        let mut s = s;
        s.did = layer.atproto.did.clone();
        s.record_uri = layer.atproto.record_uri.clone();
        let Ok(uri) = AtUri::parse(&layer.atproto.record_uri) else {
            return fail(
                s,
                Reason::ArtifactInvalid,
                "record URI is not an at-uri".into(),
            );
        };
        let (Some(collection), Some(rkey)) = (uri.collection(), uri.rkey()) else {
            return fail(
                s,
                Reason::ArtifactInvalid,
                "record URI names no record".into(),
            );
        };
        let AtIdentifier::Did(signer_did) = uri.authority() else {
            return fail(
                s,
                Reason::ArtifactInvalid,
                "record URI authority is not a DID".into(),
            );
        };
        if signer_did.as_str() != layer.atproto.did {
            return fail(
                s,
                Reason::ArtifactInvalid,
                "the artifact's DID and record URI disagree".into(),
            );
        }
        let cosign = match collection.as_str() {
            MANIFEST_COLLECTION => false,
            SIGNATURE_COLLECTION => true,
            other => {
                return fail(
                    s,
                    Reason::ArtifactInvalid,
                    format!("record of collection {other}"),
                );
            }
        };
        if cosign {
            s.kind = "cosign";
        } else if *signer_did != owner.did {
            return fail(
                s,
                Reason::DidMismatch,
                format!(
                    "the artifact names {signer_did}, but {} is owned by {}",
                    image.name, owner.did
                ),
            );
        }
        let is_owner = *signer_did == owner.did;
        // The signer's identity, from its own DID document.
        let signer = if is_owner {
            owner.clone()
        } else {
            match self.identity(&AtIdentifier::Did(signer_did.clone())).await {
                Ok(i) => i,
                Err(e) => {
                    let d = e.to_string();
                    let r = if e.is_transient() {
                        Reason::Unreachable
                    } else {
                        identity_error(e).unwrap_or(Reason::IdentityInvalid)
                    };
                    return fail(s, r, d);
                }
            }
        };
        s.handle = signer.handle.as_ref().map(|h| h.to_string());
        s.key_id = Some(format!("{}#atproto", signer.did));
        let proof = match self
            .record(&signer, collection.as_str(), rkey.as_str())
            .await
        {
            Ok(p) => p,
            // The owner's PDS is needed to judge the image at all.
            Err((Reason::Unreachable, d)) if is_owner => return Err(VerifyError::Network(d)),
            Err((r, d)) => return fail(s, r, d),
        };
        s.commit_cid = Some(proof.commit_cid.to_string());
        s.rev = Some(proof.commit.rev.to_string());
        let Some((cid, value)) = proof.record else {
            return fail(
                s,
                Reason::Revoked,
                format!(
                    "{} is no longer in {}'s repository",
                    uri.as_str(),
                    signer.did
                ),
            );
        };
        s.record_cid = Some(cid.to_string());
        let json = atcr_data::json::to_json(&value);
        let checked = if cosign {
            from_json::<SignatureRecord>(&json).map(|r| {
                let at = r.created_at.clone();
                (r.check_names(&owner.did, image.name.repo(), digest), at)
            })
        } else {
            from_json::<ManifestRecord>(&json).map(|r| {
                let at = r.created_at.clone();
                (r.check_names(image.name.repo(), digest), at)
            })
        };
        let (named, signed_at) = match checked {
            Ok(x) => x,
            Err(e) => {
                return fail(
                    s,
                    Reason::ArtifactInvalid,
                    format!("{}: not a valid {collection} record: {e}", uri.as_str()),
                );
            }
        };
        s.signed_at = Some(signed_at);
        match named {
            Ok(()) => {}
            Err(m @ Mismatch::Digest(_)) => {
                return fail(
                    s,
                    Reason::DigestMismatch,
                    format!("{m}, the image is {digest}"),
                );
            }
            Err(m @ Mismatch::Repository(_)) => {
                return fail(
                    s,
                    Reason::RepositoryMismatch,
                    format!("{m}, not {} of {}", image.name.repo(), owner.did),
                );
            }
        }
        s.valid = true;
        s.reason = None;
        s.detail = None;
        Ok(s)
    }
}

/// The layer of a signature artifact, read with bounds (a pointer is small):
/// inline, or from the registry.
async fn artifact_layer(
    registry: &RegistryClient,
    path: &str,
    artifact: &Digest,
) -> Result<SignatureLayer, String> {
    let at = |e: &dyn std::fmt::Display| format!("artifact {artifact}: {e}");
    let bytes = match registry
        .manifest_limited(path, &artifact.to_string(), MAX_ARTIFACT_BYTES)
        .await
    {
        Ok(Some((b, _))) => b,
        Ok(None) => return Err(at(&"gone")),
        Err(e) => return Err(at(&e)),
    };
    let pointer = ArtifactPointer::parse(&bytes).map_err(|e| at(&e))?;
    let layer_bytes = match pointer.inline_layer {
        Some(b) => b,
        None => registry
            .blob(path, &pointer.layer_digest, MAX_LAYER_BYTES)
            .await
            .map_err(|e| at(&e))?,
    };
    SignatureLayer::parse(&layer_bytes).map_err(|e| at(&e))
}

/// Fetches `collection/rkey` of `who` with `com.atproto.sync.getRecord` from
/// their PDS (as their DID document names it) and verifies the proof against
/// their current key: the one record check of the verifier and of the
/// registry's co-signature check. `record: None` in the result proves the
/// record absent; an error is the reason it proves nothing
/// ([`Reason::Unreachable`] when the PDS did not answer).
pub async fn fetch_record(
    fetch: &dyn Fetch,
    who: &ResolvedIdentity,
    collection: &str,
    rkey: &str,
) -> Result<atcr_repo::VerifiedRecord, (Reason, String)> {
    let (Ok(nsid), Ok(rk)) = (Nsid::new(collection), RecordKey::new(rkey)) else {
        return Err((
            Reason::ArtifactInvalid,
            format!("bad record path {collection}/{rkey}"),
        ));
    };
    let mut url = who.pds.clone();
    url.set_path("/xrpc/com.atproto.sync.getRecord");
    url.query_pairs_mut()
        .append_pair("did", who.did.as_str())
        .append_pair("collection", collection)
        .append_pair("rkey", rkey);
    // A proof is a few KiB: the commit, one MST path, the record.
    let (status, car) = fetch
        .get(Request::new(url.as_str(), MAX_PROOF_BYTES))
        .await
        .map(|r| (r.status, r.body))
        .map_err(|e| match e {
            FetchError::TooLarge { .. } => (Reason::ProofInvalid, e.to_string()),
            e => (Reason::Unreachable, e.to_string()),
        })?;
    if status != 200 {
        return Err((
            Reason::Unreachable,
            format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&car[..car.len().min(200)])
            ),
        ));
    }
    verify_record_proof(&car, &who.did, &who.signing_key, &nsid, &rk).map_err(|e| {
        let reason = match &e {
            ProofError::Commit(atcr_repo::CommitError::Signature(_)) => Reason::BadCommitSignature,
            _ => Reason::ProofInvalid,
        };
        (reason, format!("{}/{collection}/{rkey}: {e}", who.did))
    })
}

fn now_seconds() -> i64 {
    atcr_syntax::Datetime::now().unix_seconds()
}

/// Marks the signatures `rule` (chosen by [`TrustPolicy::rule_for`], `None`
/// when nothing matched) trusts and decides (DESIGN §7). `now` is unix
/// seconds (for `maxAge` and the future-time check).
pub fn apply_policy(
    report: &mut Report,
    policy: &TrustPolicy,
    rule: Option<&policy::Rule>,
    owner_did: &str,
    now: i64,
) {
    let Some(rule) = rule else {
        let name = report
            .canonical
            .clone()
            .unwrap_or_else(|| report.image.clone());
        report.reasons.push(Reason::NoPolicy);
        report
            .details
            .push(format!("no policy scope matches {name}"));
        report.decision = Decision::Fail;
        return;
    };
    report.policy = Some(rule.name.clone());
    report.required = Some(if rule.require_signature {
        rule.min_signatures
    } else {
        0
    });
    // A signing time in the future is never valid: it would satisfy
    // `maxAge` forever.
    for s in &mut report.signatures {
        let t = s
            .signed_at
            .as_deref()
            .and_then(|t| atcr_syntax::Datetime::parse(t).ok())
            .map(|t| t.unix_seconds());
        if s.valid
            && let Some(t) = t
            && t > now + MAX_CLOCK_SKEW_SECS
        {
            s.valid = false;
            s.reason = Some(Reason::SignedInFuture);
            s.detail = Some(format!(
                "signed at {}, over {MAX_CLOCK_SKEW_SECS} s in the future",
                s.signed_at.as_deref().unwrap_or_default()
            ));
        }
    }
    let trusted = policy.trusted_for(rule, owner_did);
    let mut signers = std::collections::BTreeSet::new();
    let mut why_not: Option<(Reason, String)> = None;
    let mut untrusted: Option<(Reason, String)> = None;
    for s in &mut report.signatures {
        s.trusted = false;
        if !s.valid {
            if why_not.is_none() {
                why_not = s.reason.map(|r| (r, s.detail.clone().unwrap_or_default()));
            }
            continue;
        }
        let verdict = match trusted.get(&s.did) {
            None => Err((
                Reason::UntrustedSigner,
                format!("{} is not trusted by policy {}", s.did, rule.name),
            )),
            Some(w) => {
                let t = s
                    .signed_at
                    .as_deref()
                    .and_then(|t| atcr_syntax::Datetime::parse(t).ok())
                    .map(|t| t.unix_seconds());
                match t {
                    None => Err((
                        Reason::OutsideValidity,
                        "the record has no signing time".to_owned(),
                    )),
                    Some(t) if w.valid_from.is_some_and(|f| t < f) => Err((
                        Reason::OutsideValidity,
                        format!("signed before {} became trusted", s.did),
                    )),
                    Some(t) if w.expires_at.is_some_and(|e| t > e) => Err((
                        Reason::OutsideValidity,
                        format!("signed after {}'s trust expired", s.did),
                    )),
                    Some(t) if rule.max_age.is_some_and(|m| now - t > m) => Err((
                        Reason::MaxAgeExceeded,
                        format!("signed {} days ago, over maxAge", (now - t) / 86_400),
                    )),
                    Some(_) => Ok(()),
                }
            }
        };
        match verdict {
            Ok(()) => {
                s.trusted = true;
                signers.insert(s.did.clone());
            }
            Err((r, d)) => {
                s.reason = Some(r);
                s.detail = Some(d.clone());
                // A valid signature the policy refused explains more than
                // an invalid one.
                if untrusted.is_none() {
                    untrusted = Some((r, d));
                }
            }
        }
    }
    let needed = rule.min_signatures as usize;
    if !rule.require_signature || signers.len() >= needed {
        report.decision = Decision::Pass;
        return;
    }
    let (reason, detail) = if signers.is_empty() {
        untrusted.or(why_not).unwrap_or((
            Reason::NoSignatures,
            "no signature artifact refers to the image".to_owned(),
        ))
    } else {
        (
            Reason::NotEnoughSignatures,
            format!(
                "{} distinct trusted signer(s), policy {} needs {needed}",
                signers.len(),
                rule.name
            ),
        )
    };
    match rule.action {
        Action::Audit => {
            report.decision = Decision::Pass;
            report
                .warnings
                .push(format!("audit: {}: {detail}", reason.code()));
        }
        Action::Enforce => {
            report.reasons.push(reason);
            report.details.push(detail);
            report.decision = Decision::Fail;
        }
    }
}

/// Re-exported for callers building identities.
pub use atcr_identity::ResolverConfig;
/// A tag or digest (re-exported: [`ImageRef::reference`]).
pub use atcr_oci::Reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_parse() {
        let i = ImageRef::parse("127.0.0.1:5000/alice.test/app:v1").unwrap();
        assert_eq!(i.host, "127.0.0.1:5000");
        assert_eq!(i.name.to_string(), "alice.test/app");
        assert_eq!(i.reference, Reference::Tag("v1".into()));
        let i = ImageRef::parse("atcr.io/did-plc-abcdefghijklmnopqrstuvwx/a/b").unwrap();
        assert_eq!(i.reference, Reference::Tag("latest".into()));
        assert_eq!(i.name.repo(), "a/b");
        let d = format!("sha256:{}", "0".repeat(64));
        let i = ImageRef::parse(&format!("localhost/alice.test/app@{d}")).unwrap();
        assert_eq!(i.reference, Reference::Digest(Digest::parse(&d).unwrap()));
        for bad in [
            "alice.test/app",
            "host.io/alice.test",
            "h.io/alice.test/app:bad tag",
            "h.io/alice.test/app@sha256:xyz",
            "",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    fn sig(did: &str, signed_at: &str) -> SignatureReport {
        SignatureReport {
            kind: if did == OWNER { "owner" } else { "cosign" },
            artifact: None,
            did: did.into(),
            handle: None,
            record_uri: format!("at://{did}/io.atcr.signature/3k"),
            record_cid: Some("bafy".into()),
            commit_cid: Some("bafy".into()),
            rev: Some("3k".into()),
            key_id: Some(format!("{did}#atproto")),
            signed_at: Some(signed_at.into()),
            valid: true,
            trusted: false,
            reason: None,
            detail: None,
        }
    }

    const OWNER: &str = "did:plc:ownerownerownerownerowne";
    const SEC: &str = "did:plc:securitysecuritysecurity";
    /// 2026-06-01T00:00:00Z
    const NOW: i64 = 1_780_272_000;

    fn decide(policy: &str, image: &str, sigs: Vec<SignatureReport>) -> Report {
        decide_at(policy, image, sigs, NOW)
    }

    fn decide_at(policy: &str, image: &str, sigs: Vec<SignatureReport>, now: i64) -> Report {
        let p = TrustPolicy::parse("p.yaml", policy).unwrap();
        let image = ImageRef::parse(image).unwrap();
        let mut r = Report::new(&image);
        r.signatures = sigs;
        let canonical = format!(
            "{}/{OWNER}/{}",
            p.canonical_host(&image.host).unwrap(),
            image.name.repo()
        );
        let rule = p.rule_for(&canonical, &Default::default());
        apply_policy(&mut r, &p, rule, OWNER, now);
        r
    }

    const POLICY: &str = r#"
version: 1.0
trustedDIDs:
  did:plc:securitysecuritysecurity:
    name: Security
    validFrom: "2026-01-01T00:00:00Z"
    expiresAt: "2026-12-31T00:00:00Z"
policies:
  - name: all
    scope: "atcr.io/**"
    trustedDIDs: [owner]
  - name: prod
    scope: "atcr.io/*/prod-*"
    trustedDIDs: [owner, did:plc:securitysecuritysecurity]
    minSignatures: 2
    maxAge: 30d
  - name: dev
    scope: "atcr.io/*/dev-*"
    trustedDIDs: [did:plc:securitysecuritysecurity]
    action: audit
"#;

    #[test]
    fn policy_counts_distinct_trusted_signers() {
        let recent = "2026-05-20T00:00:00Z";
        // Owner + security team: meets minSignatures 2.
        let r = decide(
            POLICY,
            "atcr.io/a.test/prod-api:v1",
            vec![sig(OWNER, recent), sig(SEC, recent)],
        );
        assert_eq!(r.decision, Decision::Pass, "{r:#?}");
        assert_eq!(r.policy.as_deref(), Some("prod"));
        assert!(r.signatures.iter().all(|s| s.trusted));
        // One signer twice is one signer.
        let r = decide(
            POLICY,
            "atcr.io/a.test/prod-api:v1",
            vec![sig(OWNER, recent), sig(OWNER, recent)],
        );
        assert_eq!(r.reasons, [Reason::NotEnoughSignatures], "{r:#?}");
        // The most specific scope wins: `atcr.io/**` alone would pass this.
        let r = decide(
            POLICY,
            "atcr.io/a.test/prod-api:v1",
            vec![sig(OWNER, recent)],
        );
        assert_eq!(r.reasons, [Reason::NotEnoughSignatures]);
        let r = decide(POLICY, "atcr.io/a.test/other:v1", vec![sig(OWNER, recent)]);
        assert_eq!(
            (r.decision, r.policy.as_deref()),
            (Decision::Pass, Some("all"))
        );
        // Unmatched: denied.
        let r = decide(
            POLICY,
            "elsewhere.io/a.test/app:v1",
            vec![sig(OWNER, recent)],
        );
        assert_eq!(r.reasons, [Reason::NoPolicy]);
        // A valid signer the policy does not list.
        let r = decide(POLICY, "atcr.io/a.test/other:v1", vec![sig(SEC, recent)]);
        assert_eq!(r.reasons, [Reason::UntrustedSigner]);
    }

    #[test]
    fn policy_time_limits_and_audit() {
        let recent = "2026-05-20T00:00:00Z";
        // maxAge 30d exceeded by the owner's signature.
        let r = decide(
            POLICY,
            "atcr.io/a.test/prod-api:v1",
            vec![sig(OWNER, "2026-03-01T00:00:00Z"), sig(SEC, recent)],
        );
        assert_eq!(r.reasons, [Reason::NotEnoughSignatures]);
        assert_eq!(r.signatures[0].reason, Some(Reason::MaxAgeExceeded));
        // The trusted DID's window: not yet valid, then expired.
        for (at, now) in [
            ("2025-12-01T00:00:00Z", NOW),
            // (judged a month later, so the time is not in the future)
            ("2027-01-02T00:00:00Z", NOW + 240 * 86_400),
        ] {
            let r = decide_at(POLICY, "atcr.io/a.test/dev-x:v1", vec![sig(SEC, at)], now);
            assert_eq!(
                r.signatures[0].reason,
                Some(Reason::OutsideValidity),
                "{at}"
            );
            // dev is audit-only: passes, with the violation as a warning.
            assert_eq!(r.decision, Decision::Pass);
            assert!(
                r.warnings[0].starts_with("audit: outside_validity"),
                "{:?}",
                r.warnings
            );
        }
        // An invalid signature is never trusted, whatever the policy says.
        let mut bad = sig(OWNER, recent);
        bad.valid = false;
        bad.reason = Some(Reason::Revoked);
        let r = decide(POLICY, "atcr.io/a.test/other:v1", vec![bad]);
        assert_eq!(r.reasons, [Reason::Revoked]);
        // A signing time in the future (beyond the skew) is invalid, and
        // does not satisfy maxAge; within the skew it counts.
        let r = decide(
            POLICY,
            "atcr.io/a.test/other:v1",
            vec![sig(OWNER, "2026-06-01T00:10:00Z")],
        );
        assert_eq!(r.signatures[0].reason, Some(Reason::SignedInFuture));
        assert_eq!(r.reasons, [Reason::SignedInFuture]);
        let r = decide(
            POLICY,
            "atcr.io/a.test/other:v1",
            vec![sig(OWNER, "2026-06-01T00:04:00Z")],
        );
        assert_eq!(r.decision, Decision::Pass, "{r:#?}");
        // require.signature false: passes unsigned.
        let r = decide(
            "version: 1.0\ndefaults:\n  require: {signature: false}\n",
            "x.io/a.test/b:c",
            vec![],
        );
        assert_eq!(r.decision, Decision::Pass);
    }

    #[test]
    fn hosts_are_canonical() {
        for (a, b) in [
            ("127.0.0.1:15000", "127.0.0.1:15000"),
            ("127.0.0.1:015000", "127.0.0.1:15000"),
            ("localhost:15000", "127.0.0.1:15000"),
            ("LocalHost.:15000", "127.0.0.1:15000"),
            ("Registry.Example.", "registry.example"),
            ("registry.example:443", "registry.example"),
            ("registry.example:0443", "registry.example"),
            ("[0:0::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(canonical_host(a).unwrap(), b, "{a}");
        }
        for bad in ["h:99999", "h:", "h:x", "a..b", "[::1", "h:0", "a b"] {
            assert!(canonical_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("atcr.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }
}

//! ATCR's OCI Distribution 1.1 registry.
//!
//! * Blobs: [`atcr_blobstore`] (local directory or S3), linked per repository
//!   in the [`index`]; visible only once their digest is verified.
//! * Manifests and tags: on push the exact bytes become a blob in the owner's
//!   PDS and an `io.atcr.manifest` record (plus `io.atcr.tag` for tags) is
//!   written there with the owner's session ([`records::OwnerPds`], embedded
//!   or remote). The index caches them for pulls.
//! * Crash safety: every record operation is journaled in the index before it
//!   is sent to the PDS and the journal entry is closed in the transaction
//!   that updates the index. [`Registry::recover`] reconciles open entries
//!   against the PDS at start-up, so the index and the PDS agree.
//! * Auth: the Docker token flow ([`token`]); credentials are a handle (or
//!   DID) and an app password, checked by the owner's PDS.

pub mod egress;
pub mod follow;
pub mod gc;
pub mod index;
pub mod metrics;
pub mod rebuild;
pub mod records;
pub mod routes;
mod signing;
pub mod token;

use atcr_blobstore::{BlobError, BlobRead, BlobStore, UploadState};
use atcr_identity::IdentityResolver;
use atcr_oci::manifest::{ParsedManifest, parse_manifest};
use atcr_oci::{
    Digest, DigestAlgorithm, DigestHasher, ErrorCode, Owner, Reference, RegistryError, RepoName,
};
use atcr_pds::{Pds, Write};
use atcr_syntax::AtIdentifier;
use bytes::Bytes;
use futures_util::Stream;
use index::{Index, ManifestCommit, ManifestRow, StoredSession};
use records::{
    EmbeddedOwner, MANIFEST_COLLECTION, OwnerPds, RecordError, RemoteOwner, TAG_COLLECTION, at_uri,
    tag_rkey,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use token::{Access, TokenService};
use url::Url;

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Public base URL (token realm, issuer).
    pub public_url: Url,
    /// Server secret (token key derivation).
    pub secret: Vec<u8>,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Allow pulls without credentials.
    pub anonymous_pull: bool,
    /// `OCI-Chunk-Min-Length`.
    pub chunk_min_length: u64,
    /// Idle upload sessions older than this are discarded (at start-up, by
    /// the periodic sweep and by garbage collection).
    pub upload_ttl: Duration,
    /// Where requests on a user's behalf (remote PDSes, co-signers' PDSes)
    /// may go.
    pub egress: egress::Egress,
    /// Most open upload sessions per user.
    pub max_uploads_per_user: u64,
    /// Which URLs a foreign (non-distributable) layer may name.
    pub foreign_urls: ForeignUrls,
    /// Garbage collection and retention.
    pub gc: gc::GcConfig,
}

/// URLs a foreign layer may name instead of being pushed (Distribution's
/// `validation.manifests.urls`): http(s), no fragment, matching an `allow`
/// pattern when there are any, matching no `deny` pattern.
#[derive(Debug, Clone, Default)]
pub struct ForeignUrls {
    /// Patterns a URL must match one of (none: any).
    pub allow: Vec<regex::Regex>,
    /// Patterns a URL must match none of.
    pub deny: Vec<regex::Regex>,
}

impl ForeignUrls {
    /// Why `u` may not be named, if it may not.
    pub fn refuse(&self, u: &str) -> Option<String> {
        let ok_form = Url::parse(u)
            .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.fragment().is_none());
        if !ok_form {
            return Some(format!("{u:?} is not an http(s) URL without a fragment"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.is_match(u)) {
            return Some(format!(
                "{u:?} matches no registry.foreign_layer_urls_allow pattern"
            ));
        }
        self.deny.iter().find(|r| r.is_match(u)).map(|r| {
            format!(
                "{u:?} matches registry.foreign_layer_urls_deny {:?}",
                r.as_str()
            )
        })
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

fn err(code: ErrorCode, msg: impl Into<String>) -> RegistryError {
    RegistryError::new(code, msg)
}

fn from_blob(e: BlobError) -> RegistryError {
    match e {
        BlobError::DigestMismatch { .. } => err(ErrorCode::DigestInvalid, e.to_string()),
        BlobError::NotFound => err(ErrorCode::BlobUnknown, "blob unknown to registry"),
        BlobError::Body(m) => err(ErrorCode::BlobUploadInvalid, format!("upload body: {m}")),
        BlobError::Session(m) => err(ErrorCode::BlobUploadInvalid, m),
        BlobError::Storage(m) => {
            tracing::error!("blob storage: {m}");
            err(ErrorCode::Unavailable, "blob storage unavailable")
        }
    }
}

fn from_record(e: RecordError) -> RegistryError {
    match &e {
        RecordError::Rejected(_) => err(ErrorCode::ManifestInvalid, e.to_string()),
        RecordError::NoSession(_) => err(ErrorCode::Denied, e.to_string()),
        RecordError::Unavailable(_) => err(ErrorCode::Unavailable, e.to_string()),
    }
}

/// A journaled record operation (see [`Registry::recover`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum PendingOp {
    Put {
        repo: String,
        display: String,
        digest: String,
        media_type: String,
        /// Manifest bytes, base64 (needed to complete the index after a crash).
        bytes: String,
        rkey: String,
        /// Whether the manifest record is written by this operation.
        new_manifest: bool,
        tag: Option<String>,
    },
    Delete {
        repo: String,
        digest: Option<String>,
        /// A manifest record deleted (all of them go in one commit).
        rkey: Option<String>,
        /// The other manifest records of the same (REPO, digest).
        #[serde(default)]
        more_rkeys: Vec<String>,
        tags: Vec<String>,
    },
}

/// What a successful manifest push reports.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// The manifest digest.
    pub digest: Digest,
    /// The subject digest, for `OCI-Subject`.
    pub subject: Option<String>,
}

/// A manifest read for a pull.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Exact bytes (empty for HEAD).
    pub bytes: Vec<u8>,
    /// Size.
    pub size: u64,
}

/// One queued manifest push.
struct PushJob {
    repo: String,
    display: String,
    digest: String,
    tag: Option<String>,
    parsed: ParsedManifest,
    bytes: Vec<u8>,
}

type Reply = tokio::sync::oneshot::Sender<Result<()>>;

/// Most pushes written in one PDS commit (each is up to two writes; a
/// commit takes at most 200).
const MAX_BATCH: usize = 64;

/// How long a remote PDS whose login failed (unreachable, 5xx) is not
/// contacted again.
const PDS_FAILURE_TTL: Duration = Duration::from_secs(30);

/// Most `?tag=` values on one manifest PUT (all go in one commit).
pub const MAX_TAGS_PER_PUSH: usize = 32;

/// Per-owner group commit: the queue and the lock its leader holds.
#[derive(Default)]
struct OwnerQueue {
    jobs: Mutex<Vec<(PushJob, Reply)>>,
    commit: tokio::sync::Mutex<()>,
}

fn manifest_row(j: &PushJob, rkey: &str, cid: String) -> ManifestRow {
    ManifestRow {
        digest: j.digest.clone(),
        media_type: j.parsed.media_type.clone(),
        size: j.bytes.len() as u64,
        bytes: j.bytes.clone(),
        artifact_type: j.parsed.effective_artifact_type(),
        subject: j.parsed.subject.as_ref().map(|s| s.digest.to_string()),
        annotations: (!j.parsed.annotations.is_empty())
            .then(|| serde_json::to_string(&j.parsed.annotations).unwrap_or_default()),
        record_rkey: rkey.to_owned(),
        record_cid: cid,
    }
}

/// Result of a mount request.
pub enum MountOutcome {
    /// The blob is now linked.
    Mounted,
    /// Fallback: a new upload session.
    Upload(String),
}

struct Inner {
    cfg: RegistryConfig,
    index: Index,
    blobs: BlobStore,
    pds: Option<Pds>,
    resolver: IdentityResolver,
    tokens: TokenService,
    http: reqwest::Client,
    /// Proof fetches of remote co-signers (the verifier's fetch seam).
    fetch: Arc<atcr_fetch::Online>,
    /// Where requests on a user's behalf may go.
    egress: Arc<egress::Egress>,
    /// Remote PDS origins whose login just failed for a reason of theirs →
    /// when: they are not contacted again for [`PDS_FAILURE_TTL`].
    pds_failures: Mutex<HashMap<String, Instant>>,
    /// Failed `/auth/token` logins per address and user.
    failed_logins: atcr_pds::throttle::FailedLogins,
    /// Push-path metrics.
    metrics: metrics::RegistryMetrics,
    /// DID → when its credentials were last revoked (unix seconds): tokens
    /// issued until then are refused.
    revoked: Mutex<HashMap<String, u64>>,
    /// sha256(secret, user, password) → (did, checked at).
    credentials: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Upload sessions with a request in flight.
    busy: Mutex<HashSet<String>>,
    /// Group-commit queues of manifest pushes, per owner.
    queues: Mutex<HashMap<String, Arc<OwnerQueue>>>,
    /// Embedded handles → (DID, resolved at).
    handles: Mutex<HashMap<String, (String, Instant)>>,
    /// Write-through cache of upload sessions: id → (did, repo, state).
    uploads: Mutex<HashMap<String, (String, String, UploadState)>>,
    /// Owners' key and PDS as signature artifacts name them (hints).
    signers: Mutex<HashMap<String, (signing::Signer, Instant)>>,
    /// Held by the garbage-collection run in progress.
    gc_lock: tokio::sync::Mutex<()>,
}

/// The registry service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

const CREDENTIAL_CACHE: Duration = Duration::from_secs(300);
/// How long an embedded account's handle → DID answer is reused (remote
/// handles are cached by the identity resolver).
const HANDLE_CACHE: Duration = Duration::from_secs(10);

/// How long a replica may hold an upload session it serves a request on
/// (shared index). Released when the request ends; a replica that dies
/// mid-request blocks its session for at most this long.
const UPLOAD_LEASE_SECS: i64 = 1800;

/// Marks an upload session busy for the guard's lifetime: in this process,
/// and on a shared index leased in the database too.
struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
    gauge: &'a prometheus::IntGauge,
    lease: Option<Index>,
}
impl Busy<'_> {
    /// Ends the guard, waiting for the database lease to be released.
    async fn release(mut self) {
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

fn writing_elsewhere() -> RegistryError {
    err(
        ErrorCode::BlobUploadInvalid,
        "another request is writing to this upload session",
    )
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Registry {
    /// Opens the registry over its index and blob store.
    pub fn open(
        cfg: RegistryConfig,
        index: Index,
        blobs: BlobStore,
        pds: Option<Pds>,
        resolver: IdentityResolver,
    ) -> std::result::Result<Self, String> {
        let service = cfg
            .public_url
            .host_str()
            .map(|h| match cfg.public_url.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .unwrap_or_else(|| "atcr".into());
        let tokens = TokenService::new(
            &cfg.secret,
            cfg.public_url.as_str().trim_end_matches('/').to_owned(),
            service,
            cfg.token_ttl,
        );
        // The registry's own origin (its embedded PDS) is always reachable.
        let mut rules = cfg.egress.clone();
        rules
            .allow_origins
            .push(cfg.public_url.origin().ascii_serialization());
        if let Some(url::Host::Domain(h)) = cfg.public_url.host() {
            rules.allow_hosts.push(h.to_owned());
        }
        let rules = Arc::new(rules);
        let http = atcr_http::client_builder(Duration::from_secs(30))
            .dns_resolver(rules.resolver())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let this = Self {
            inner: Arc::new(Inner {
                cfg,
                index,
                blobs,
                pds,
                resolver,
                tokens,
                fetch: Arc::new(atcr_fetch::Online::with_client(http.clone())),
                http,
                egress: rules,
                pds_failures: Mutex::new(HashMap::new()),
                failed_logins: Default::default(),
                metrics: metrics::RegistryMetrics::new(),
                revoked: Mutex::new(HashMap::new()),
                credentials: Mutex::new(HashMap::new()),
                busy: Mutex::new(HashSet::new()),
                queues: Mutex::new(HashMap::new()),
                handles: Mutex::new(HashMap::new()),
                uploads: Mutex::new(HashMap::new()),
                signers: Mutex::new(HashMap::new()),
                gc_lock: tokio::sync::Mutex::new(()),
            }),
        };
        // Revocations in the embedded PDS end registry tokens at once. The
        // hook holds the registry weakly: no cycle through the PDS.
        if let Some(pds) = &this.inner.pds {
            let weak = Arc::downgrade(&this.inner);
            pds.on_revoke(Arc::new(move |did: &str| {
                if let Some(inner) = weak.upgrade() {
                    Registry { inner }.revoke(did);
                }
            }));
        }
        Ok(this)
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.cfg
    }
    /// The token service.
    pub fn tokens(&self) -> &TokenService {
        &self.inner.tokens
    }
    /// The index.
    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// The identity resolver (DID documents, handles), shared with pushes.
    pub fn resolver(&self) -> &IdentityResolver {
        &self.inner.resolver
    }

    /// The embedded PDS, when this registry runs one.
    pub fn pds(&self) -> Option<&Pds> {
        self.inner.pds.as_ref()
    }

    /// When `did`'s credentials were last revoked (Unix seconds), if they
    /// were since this process started: sessions begun before are void.
    pub fn revoked_at(&self, did: &str) -> Option<u64> {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(did)
            .copied()
    }

    // ---- identity and auth ----

    /// The DID a repository name belongs to.
    pub async fn owner_did(&self, name: &RepoName) -> Result<String> {
        match name.owner() {
            Owner::Did(d) => Ok(d.to_string()),
            Owner::Handle(h) => {
                if let Some((did, at)) = self
                    .inner
                    .handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(h.as_str())
                    && at.elapsed() < HANDLE_CACHE
                {
                    return Ok(did.clone());
                }
                if let Some(pds) = &self.inner.pds
                    && let Ok(did) = pds.lookup_did(h.as_str()).await
                {
                    self.inner
                        .handles
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(h.to_string(), (did.clone(), Instant::now()));
                    return Ok(did);
                }
                let ident = AtIdentifier::Handle(h.clone());
                match self.inner.resolver.resolve(&ident).await {
                    Ok(r) => Ok(r.did.to_string()),
                    Err(e) if e.is_transient() => {
                        Err(err(ErrorCode::Unavailable, format!("resolving {h}: {e}")))
                    }
                    Err(e) => Err(err(
                        ErrorCode::NameUnknown,
                        format!("owner {h} does not resolve to a DID: {e}"),
                    )),
                }
            }
        }
    }

    /// Checks `user` (handle or DID) + password against the user's PDS;
    /// returns the DID. Remote sessions are kept for record writes.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<String> {
        let key: [u8; 32] = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(&self.inner.cfg.secret);
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Some((did, at)) = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < CREDENTIAL_CACHE
        {
            return Ok(did.clone());
        }
        // One answer for an unknown user, a wrong password and an identity
        // that does not resolve: the caller learns nothing about accounts.
        let denied = || err(ErrorCode::Unauthorized, "invalid username or password");
        let did = match self.embedded_account(user).await {
            Some(_) => {
                let pds = self.inner.pds.as_ref().ok_or_else(denied)?;
                pds.login(user, password).await.map_err(|_| denied())?.did
            }
            None => {
                let ident: AtIdentifier = user.parse().map_err(|_| denied())?;
                let id = match self.inner.resolver.resolve(&ident).await {
                    Ok(id) => id,
                    Err(e) if e.is_transient() => {
                        tracing::info!(%user, "login: identity not resolvable now: {e}");
                        return Err(err(
                            ErrorCode::Unavailable,
                            "the account's identity cannot be resolved right now; try again",
                        ));
                    }
                    Err(e) => {
                        tracing::info!(%user, "login refused: {e}");
                        return Err(denied());
                    }
                };
                // The DID document chose this URL: only where egress allows.
                let origin = id.pds.origin().ascii_serialization();
                if let Err(e) = self.inner.egress.check_url(&id.pds) {
                    tracing::warn!(%user, pds = %id.pds, "login refused: {e}");
                    return Err(denied());
                }
                let unavailable = || {
                    err(
                        ErrorCode::Unavailable,
                        "the account's PDS is unavailable; try again later",
                    )
                };
                if self.pds_recently_failed(&origin) {
                    return Err(unavailable());
                }
                let client = atcr_xrpc::PdsClient::new(id.pds.clone(), self.inner.http.clone());
                let s = client.create_session(user, password).await.map_err(|e| {
                    if e.is_transient() {
                        tracing::warn!(%user, pds = %id.pds, "login: PDS unavailable: {e}");
                        self.pds_failed(&origin);
                        unavailable()
                    } else {
                        tracing::info!(%user, pds = %id.pds, "login refused by the PDS: {e}");
                        denied()
                    }
                })?;
                if s.did != id.did.as_str() {
                    return Err(denied());
                }
                self.inner
                    .index
                    .save_session(
                        &s.did,
                        &StoredSession {
                            pds: id.pds.to_string(),
                            handle: s.handle.clone(),
                            access_jwt: s.access_jwt.clone(),
                            refresh_jwt: s.refresh_jwt.clone(),
                        },
                    )
                    .await?;
                s.did
            }
        };
        let mut cache = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CREDENTIAL_CACHE);
        }
        cache.insert(key, (did.clone(), Instant::now()));
        Ok(did)
    }

    fn pds_recently_failed(&self, origin: &str) -> bool {
        let mut m = self
            .inner
            .pds_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| at.elapsed() < PDS_FAILURE_TTL);
        m.contains_key(origin)
    }

    fn pds_failed(&self, origin: &str) {
        let mut m = self
            .inner
            .pds_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() < 10_000 {
            m.insert(origin.to_owned(), Instant::now());
        }
    }

    /// Ends `did`'s registry tokens issued so far and its cached logins
    /// (an app password was revoked, the password changed, the account was
    /// disabled).
    pub fn revoke(&self, did: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(did.to_owned(), now);
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (d, _)| d != did);
        // A deleted account's handle may be taken by another account.
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (d, _)| d != did);
        tracing::info!(target: "atcr::auth", did, "credentials revoked: tokens and cached logins dropped");
        if self.inner.index.shared() {
            // Every replica applies it (see `sync_revocations`).
            let (index, did) = (self.inner.index.clone(), did.to_owned());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = index.save_revocation(&did, now as i64).await {
                        tracing::error!(target: "atcr::auth", did, "revocation not shared with other replicas: {e}");
                    }
                });
            }
        }
    }

    /// Applies revocations other replicas recorded since `since` (Unix
    /// seconds); returns the newest seen. Run every second on a shared
    /// index: a token or cached login revoked elsewhere is refused here
    /// within about a second.
    pub async fn sync_revocations(&self, since: i64) -> Result<i64> {
        let mut newest = since;
        for (did, at) in self.inner.index.revocations_since(since).await? {
            newest = newest.max(at);
            let known = self.revoked_at(&did);
            if known.is_some_and(|k| k >= at as u64) {
                continue;
            }
            self.inner
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(did.clone(), at as u64);
            self.inner
                .credentials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (d, _)| *d != did);
            self.inner
                .handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (d, _)| *d != did);
        }
        Ok(newest)
    }

    /// Verifies a bearer token: signature, audience, lifetime, and not
    /// issued before its subject's credentials were revoked.
    pub fn verify_token(&self, token: &str) -> Option<token::TokenClaims> {
        let c = self.inner.tokens.verify(token)?;
        let revoked = self
            .inner
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.sub)
            .copied();
        match revoked {
            Some(at) if c.iat <= at => None,
            _ => Some(c),
        }
    }

    /// Push-path metrics.
    pub fn metrics(&self) -> &metrics::RegistryMetrics {
        &self.inner.metrics
    }

    /// Failed-login throttling of `/auth/token`.
    pub fn failed_logins(&self) -> &atcr_pds::throttle::FailedLogins {
        &self.inner.failed_logins
    }

    /// The DID of an embedded account named by handle or DID.
    async fn embedded_account(&self, user: &str) -> Option<String> {
        self.inner.pds.as_ref()?.lookup_did(user).await.ok()
    }

    /// Grants the requested scopes to `did` (None: anonymous): pull for
    /// public repositories, push and delete only under names that resolve to
    /// the caller's own DID.
    pub async fn grant(&self, did: Option<&str>, requested: &[String]) -> Result<Vec<Access>> {
        let mut out = vec![];
        for s in requested {
            let Some(a) = Access::parse(s) else {
                return Err(err(ErrorCode::Denied, format!("invalid scope {s:?}")));
            };
            if a.kind == "registry" && a.name == "catalog" {
                if did.is_some() || self.inner.cfg.anonymous_pull {
                    out.push(Access {
                        actions: a.actions.iter().filter(|x| *x == "*").cloned().collect(),
                        ..a
                    });
                }
                continue;
            }
            if a.kind != "repository" {
                continue;
            }
            // A token for a name no request can use would only send clients
            // into retries: refuse it with the reason.
            let name = RepoName::parse(&a.name)?;
            let mut actions = vec![];
            let wants_write = a.actions.iter().any(|x| x != "pull");
            let own = match (did, wants_write) {
                (Some(d), true) => self.owner_did(&name).await.ok().as_deref() == Some(d),
                _ => false,
            };
            for act in &a.actions {
                let ok = match act.as_str() {
                    "pull" => did.is_some() || self.inner.cfg.anonymous_pull,
                    "push" | "delete" | "*" => own,
                    // Any identity may attach a co-signature; each is checked
                    // against the signer's PDS (`cosign_put`).
                    "sign" => did.is_some(),
                    _ => false,
                };
                if ok && !actions.contains(act) {
                    actions.push(act.clone());
                }
            }
            if !actions.is_empty() {
                out.push(Access { actions, ..a });
            }
        }
        Ok(out)
    }

    async fn owner_pds(&self, did: &str) -> Result<Box<dyn OwnerPds>> {
        if let Some(pds) = &self.inner.pds
            && pds.lookup_did(did).await.is_ok()
        {
            return Ok(Box::new(EmbeddedOwner {
                pds: pds.clone(),
                did: did.to_owned(),
            }));
        }
        let s = self.inner.index.session(did).await?.ok_or_else(|| {
            err(
                ErrorCode::Denied,
                format!("no PDS session for {did}: log in to the registry again"),
            )
        })?;
        let base = Url::parse(&s.pds).map_err(|e| err(ErrorCode::Unknown, e.to_string()))?;
        self.inner
            .egress
            .check_url(&base)
            .map_err(|e| err(ErrorCode::Denied, format!("{did}'s PDS: {e}")))?;
        let client = atcr_xrpc::PdsClient::new(base, self.inner.http.clone());
        client.set_session(Some(atcr_xrpc::Session {
            did: did.to_owned(),
            handle: s.handle,
            access_jwt: s.access_jwt,
            refresh_jwt: s.refresh_jwt,
        }));
        Ok(Box::new(RemoteOwner {
            client,
            did: did.to_owned(),
            index: self.inner.index.clone(),
        }))
    }

    // ---- blobs ----

    /// Size of a blob in a repository.
    pub async fn blob_size(&self, did: &str, repo: &str, digest: &Digest) -> Result<u64> {
        self.confirmed_blob(did, repo, &digest.to_string())
            .await?
            .ok_or_else(|| {
                err(
                    ErrorCode::BlobUnknown,
                    format!("blob unknown to registry: {digest}"),
                )
            })
    }

    /// A repository's blob, its link confirmed for garbage collection (a
    /// client told it exists may rely on it for another grace period).
    async fn confirmed_blob(&self, did: &str, repo: &str, digest: &str) -> Result<Option<u64>> {
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
            .map_err(from_blob)
    }

    /// Unlinks a blob from a repository.
    pub async fn blob_delete(&self, did: &str, repo: &str, digest: &Digest) -> Result<()> {
        if self
            .inner
            .index
            .unlink_blob(did, repo, &digest.to_string())
            .await?
        {
            Ok(())
        } else {
            Err(err(
                ErrorCode::BlobUnknown,
                format!("blob unknown to registry: {digest}"),
            ))
        }
    }

    /// Starts an upload session.
    pub async fn upload_start(
        &self,
        did: &str,
        repo: &str,
        alg: DigestAlgorithm,
    ) -> Result<String> {
        let id = new_id();
        let st = self.inner.blobs.begin(&id, alg).await.map_err(from_blob)?;
        let max = self.inner.cfg.max_uploads_per_user;
        if !self
            .inner
            .index
            .create_upload(&id, did, repo, &st.to_json(), max)
            .await?
        {
            let _ = self.inner.blobs.abort(st).await;
            return Err(err(
                ErrorCode::TooManyRequests,
                format!(
                    "{max} upload sessions are open already (registry.max_uploads_per_user): finish or cancel some"
                ),
            ));
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
    pub async fn mount(
        &self,
        did: &str,
        repo: &str,
        display: &str,
        digest: &Digest,
    ) -> Result<MountOutcome> {
        let d = digest.to_string();
        // A blob garbage collection is deleting is not mounted: upload it.
        if let Some(size) = self.inner.index.blob(&d).await?
            && self
                .inner
                .index
                .link_blob(did, repo, display, &d, size, None)
                .await?
        {
            return Ok(MountOutcome::Mounted);
        }
        Ok(MountOutcome::Upload(
            self.upload_start(did, repo, digest.algorithm()).await?,
        ))
    }

    async fn session(&self, did: &str, repo: &str, id: &str) -> Result<UploadState> {
        let unknown = || {
            err(
                ErrorCode::BlobUploadUnknown,
                "blob upload unknown to registry",
            )
        };
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
                (d, r, UploadState::from_json(&state).map_err(from_blob)?)
            }
        };
        if d != did || r != repo {
            return Err(unknown());
        }
        Ok(st)
    }

    fn cache_upload(&self, did: &str, repo: &str, st: Option<&UploadState>, id: &str) {
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
    async fn mark_busy(&self, id: &str) -> Result<Busy<'_>> {
        let mut busy = self.mark_local(id)?;
        if self.inner.index.shared() {
            match self.inner.index.lease_upload(id, UPLOAD_LEASE_SECS).await? {
                Some(true) => busy.lease = Some(self.inner.index.clone()),
                Some(false) => return Err(writing_elsewhere()),
                None => {
                    return Err(err(
                        ErrorCode::BlobUploadUnknown,
                        "blob upload unknown to registry",
                    ));
                }
            }
        }
        Ok(busy)
    }

    fn mark_local(&self, id: &str) -> Result<Busy<'_>> {
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
    pub async fn upload_offset(&self, did: &str, repo: &str, id: &str) -> Result<u64> {
        Ok(self.session(did, repo, id).await?.offset)
    }

    /// Appends a chunk. `start` is the `Content-Range` start when given:
    /// it must equal the current offset (416 otherwise).
    pub async fn upload_append<S, E>(
        &self,
        did: &str,
        repo: &str,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let busy = self.mark_busy(id).await?;
        // The lease is released before the answer goes out: the
        // client's next request may reach another replica at once.
        let out = async {
            let mut st = self.session(did, repo, id).await?;
            if let Some(s) = start
                && s != st.offset
            {
                return Err(err(
                    ErrorCode::BlobUploadInvalid,
                    format!("chunk starts at {s}, but the upload is at {}", st.offset),
                )
                .with_status(416));
            }
            self.inner
                .blobs
                .append(&mut st, body)
                .await
                .map_err(from_blob)?;
            self.cache_upload(did, repo, None, id);
            self.inner.index.update_upload(id, &st.to_json()).await?;
            self.cache_upload(did, repo, Some(&st), id);
            Ok(st.offset)
        }
        .await;
        busy.release().await;
        out
    }

    /// Completes a session (after appending a last chunk, if any).
    pub async fn upload_finish<S, E>(
        &self,
        name: &RepoName,
        did: &str,
        id: &str,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let repo = name.repo();
        let busy = self.mark_busy(id).await?;
        // The lease is released before the answer goes out: the
        // client's next request may reach another replica at once.
        let out = async {
            let mut st = self.session(did, repo, id).await?;
            // Whatever happens next, the cached state is no longer the truth.
            self.cache_upload(did, repo, None, id);
            if let Some(b) = body {
                // Closed next: the tail need not be spooled.
                self.inner
                    .blobs
                    .append_final(&mut st, b)
                    .await
                    .map_err(from_blob)?;
            }
            self.claim_finish(id, digest).await?;
            let size = match self.inner.blobs.finish(st, digest).await {
                Ok(n) => n,
                Err(e) => {
                    // A digest mismatch ends the session: nothing is stored.
                    if matches!(e, BlobError::DigestMismatch { .. }) {
                        self.inner.index.delete_upload(id).await?;
                    }
                    return Err(from_blob(e));
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
                    &name.to_string(),
                    &digest.to_string(),
                    size,
                    Some(id),
                )
                .await?;
            if !linked {
                return Err(gc::doomed_busy());
            }
            Ok(size)
        }
        .await;
        busy.release().await;
        out
    }

    /// Marks the session as placing `digest` (see [`gc`]); waits while
    /// garbage collection deletes that digest, since placing it meanwhile
    /// could lose it to GC's delete.
    async fn claim_finish(&self, id: &str, digest: &Digest) -> Result<()> {
        let d = digest.to_string();
        let deadline = Instant::now() + gc::DOOMED_WAIT;
        loop {
            match self.inner.index.claim_finish(id, &d).await? {
                index::Claim::Claimed => return Ok(()),
                index::Claim::NoSession => {
                    return Err(err(
                        ErrorCode::BlobUploadUnknown,
                        "blob upload unknown to registry",
                    ));
                }
                index::Claim::Doomed if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                index::Claim::Doomed => return Err(gc::doomed_busy()),
            }
        }
    }

    /// Cancels a session.
    pub async fn upload_cancel(&self, did: &str, repo: &str, id: &str) -> Result<()> {
        let busy = self.mark_busy(id).await?;
        // The lease is released before the answer goes out: the
        // client's next request may reach another replica at once.
        let out = async {
            let st = self.session(did, repo, id).await?;
            self.cache_upload(did, repo, None, id);
            self.inner.index.delete_upload(id).await?;
            self.inner.blobs.abort(st).await.map_err(from_blob)
        }
        .await;
        busy.release().await;
        out
    }

    // ---- manifests ----

    /// Resolves a reference to a stored manifest.
    pub async fn manifest_get(
        &self,
        did: &str,
        repo: &str,
        reference: &Reference,
        with_bytes: bool,
    ) -> Result<PulledManifest> {
        let unknown = || {
            err(
                ErrorCode::ManifestUnknown,
                format!("manifest unknown: {reference}"),
            )
        };
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
        name: &RepoName,
        did: &str,
        reference: &Reference,
        tags: &[String],
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<PushedManifest> {
        if tags.len() > MAX_TAGS_PER_PUSH {
            return Err(err(
                ErrorCode::ManifestInvalid,
                format!("at most {MAX_TAGS_PER_PUSH} tags per push"),
            )
            .with_status(400));
        }
        let repo = name.repo();
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
            return Err(err(
                ErrorCode::DigestInvalid,
                format!("the manifest hashes to {digest}, not {d}"),
            ));
        }
        for b in parsed.required_blobs() {
            if self
                .confirmed_blob(did, repo, &b.to_string())
                .await?
                .is_none()
            {
                return Err(err(
                    ErrorCode::ManifestBlobUnknown,
                    format!("blob unknown to registry: {b}"),
                )
                .with_detail(serde_json::json!({ "digest": b.to_string() })));
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
                return Err(err(
                    ErrorCode::ManifestBlobUnknown,
                    format!("non-distributable layer {digest} has no urls and was not pushed"),
                )
                .with_detail(serde_json::json!({ "digest": digest })));
            }
            if let Some(why) = urls
                .iter()
                .find_map(|u| self.inner.cfg.foreign_urls.refuse(u))
            {
                return Err(err(
                    ErrorCode::ManifestInvalid,
                    format!("layer {digest}: {why}"),
                ));
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
                return Err(err(
                    ErrorCode::ManifestBlobUnknown,
                    format!("manifest unknown to registry: {m}"),
                )
                .with_detail(serde_json::json!({ "digest": m.to_string() })));
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
                        display: name.to_string(),
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
                    let r = r.unwrap_or_else(|_| Err(err(ErrorCode::Unknown, "manifest push was dropped")));
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

    fn owner_queue(&self, did: &str) -> Arc<OwnerQueue> {
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
    async fn commit_batch(&self, did: &str, batch: Vec<(PushJob, Reply)>) {
        let started = Instant::now();
        let n = batch.len();
        let (jobs, replies): (Vec<PushJob>, Vec<Reply>) = batch.into_iter().unzip();
        // Replicas on a shared index: one PDS commit of an owner at a time,
        // from its journal entry to its index update, so the index follows
        // the PDS's commit order.
        let _owner = match self.inner.index.lock_owner(did).await {
            Ok(l) => l,
            Err(e) => {
                let e = RegistryError::from(e);
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
            Err(e) if jobs.len() > 1 && e.code == ErrorCode::ManifestInvalid => {
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
    async fn write_batch(&self, did: &str, jobs: &[PushJob]) -> Result<()> {
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
                    &Digest::parse(&j.digest)
                        .map_err(|e| err(ErrorCode::DigestInvalid, e.to_string()))?,
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
                if e.code != ErrorCode::Unavailable {
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
    async fn write_records(
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
                    .map_err(|e| err(ErrorCode::ManifestInvalid, e.to_string()))?;
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
        let committed = owner.commit(blobs, writes).await.map_err(from_record)?;
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

    /// Deletes a manifest by digest (with the tags pointing at it) or a tag.
    pub async fn manifest_delete(
        &self,
        did: &str,
        repo: &str,
        reference: &Reference,
    ) -> Result<()> {
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
                    .ok_or_else(|| {
                        err(ErrorCode::ManifestUnknown, format!("manifest unknown: {d}"))
                    })?;
                let tags = self.inner.index.tags_of(did, repo, &m.digest).await?;
                (Some(m.digest), tags)
            }
            Reference::Tag(t) => {
                if self.inner.index.tag(did, repo, t).await?.is_none() {
                    return Err(err(ErrorCode::ManifestUnknown, format!("tag unknown: {t}")));
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
            let e = from_record(e);
            if !matches!(e.code, ErrorCode::Unavailable) {
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
    pub async fn forget_owner(&self, did: &str) -> Result<usize> {
        let queue = self.owner_queue(did);
        let _guard = queue.commit.lock().await;
        let _owner = self.inner.index.lock_owner(did).await?;
        self.revoke(did);
        Ok(self.inner.index.forget_owner(did).await?)
    }

    /// Tags, paginated.
    pub async fn tags(
        &self,
        did: &str,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        if !self.inner.index.repository_exists(did, repo).await? {
            return Err(err(
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            ));
        }
        Ok(self.inner.index.tags(did, repo, last, n).await?)
    }

    /// Repository names, paginated.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        Ok(self.inner.index.catalog(last, n).await?)
    }

    /// Manifests whose subject is `digest`.
    pub async fn referrers(
        &self,
        did: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<Vec<ManifestRow>> {
        Ok(self
            .inner
            .index
            .referrers(did, repo, &digest.to_string())
            .await?)
    }

    // ---- recovery ----

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
    async fn recover_uploads(&self) -> Result<usize> {
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
    async fn reconcile(
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
                    .map_err(from_record)?
                    .is_some_and(|(_, v)| {
                        atcr_oci::records::from_json::<atcr_oci::records::TagRecord>(&v)
                            .is_ok_and(|r| r.digest_for(repo, t) == Some(digest.as_str()))
                    }),
                None => owner
                    .get_record(MANIFEST_COLLECTION.into(), rkey.clone())
                    .await
                    .map_err(from_record)?
                    .is_some(),
            },
            PendingOp::Delete {
                repo, rkey, tags, ..
            } => {
                let still = match (rkey, tags.first()) {
                    (Some(r), _) => owner
                        .get_record(MANIFEST_COLLECTION.into(), r.clone())
                        .await
                        .map_err(from_record)?
                        .is_some(),
                    (None, Some(t)) => owner
                        .get_record(TAG_COLLECTION.into(), tag_rkey(repo, t))
                        .await
                        .map_err(from_record)?
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
                            .map_err(|e| err(ErrorCode::Unknown, e.to_string()))?
                    };
                    let mcid = owner
                        .get_record(MANIFEST_COLLECTION.into(), rkey.clone())
                        .await
                        .map_err(from_record)?
                        .map(|(c, _)| c);
                    let tcid = match &tag {
                        Some(t) => owner
                            .get_record(TAG_COLLECTION.into(), tag_rkey(&repo, t))
                            .await
                            .map_err(from_record)?
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

/// A manifest that gets a signature artifact: (repo, display, digest,
/// media type, size, record key).
pub(crate) type ToSign = (String, String, String, String, u64, String);

impl Registry {
    /// Signature artifacts for manifests whose records are in the owner's
    /// current commit, when the commit that wrote them is not known (after a
    /// crash, in a rebuild): the artifact's commit CID is only a hint.
    pub(crate) async fn artifacts_at_head(
        &self,
        did: &str,
        owner: &dyn OwnerPds,
        to_sign: &[ToSign],
    ) -> Result<Vec<ManifestCommit>> {
        if to_sign.is_empty() {
            return Ok(vec![]);
        }
        let head = owner.latest_commit().await.map_err(from_record)?;
        let signer = self.signer(did).await?;
        let signed = to_sign
            .iter()
            .map(|(repo, display, digest, mt, size, rkey)| signing::Signed {
                repo,
                display,
                digest,
                media_type: mt,
                size: *size,
                record_uri: at_uri(did, MANIFEST_COLLECTION, rkey),
            })
            .collect();
        self.signature_artifacts(&signer, &head, signed).await
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
    let parsed = Digest::parse(digest).map_err(|e| err(ErrorCode::DigestInvalid, e.to_string()))?;
    let mut out = vec![];
    let (mut cursor, mut seen) = (None, 0usize);
    loop {
        let (rows, next) = owner
            .list_records(MANIFEST_COLLECTION.into(), cursor.take())
            .await
            .map_err(from_record)?;
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
                return Err(err(
                    ErrorCode::Unavailable,
                    format!(
                        "the owner has over {MAX_SCANNED_RECORDS} manifest records; delete refused"
                    ),
                ));
            }
            None => break,
        }
    }
    let own = atcr_oci::records::manifest_rkey(repo, &parsed);
    out.sort_by_key(|k| *k != own);
    Ok(out)
}

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
//!   against the PDS at start-up (and [`Registry::recover_journal`] every
//!   few seconds on a shared index), so the index and the PDS agree.
//! * Auth: the Docker token flow ([`token`]); credentials are a handle (or
//!   DID) and an app password, checked by the owner's PDS.
//!
//! Routes ([`routes`]) call one service per concern, each an `impl Registry`
//! in its own module over the [`index`] store (SQLite, or PostgreSQL shared
//! by replicas): `auth` (logins, tokens, revocation), `blobs` (reads,
//! mounts, upload sessions), `manifests` (pulls, group-committed pushes),
//! `delete` (manifests, tags, deleted owners), `listing` (tags, catalog,
//! referrers), `journal` (recovery), `signing` (signature artifacts), [`gc`]
//! and [`follow`]. Services take typed parameters (a
//! [`Repository`] with its owner's DID resolved, [`Digest`], [`Reference`])
//! and fail with the registry's own [`Error`]; only the routes turn that into
//! the OCI error envelope, and the web UI into its pages.

mod auth;
mod blobs;
mod delete;
pub mod egress;
pub mod error;
pub mod follow;
pub mod gc;
pub mod index;
mod journal;
mod listing;
mod manifests;
pub mod metrics;
pub mod rebuild;
pub mod records;
pub mod routes;
mod signing;
pub mod token;

pub use error::{Error, Result};

use atcr_blobstore::{BlobError, BlobRead, BlobStore, UploadState};
use atcr_identity::IdentityResolver;
use atcr_oci::manifest::{ParsedManifest, parse_manifest};
use atcr_oci::{Digest, DigestAlgorithm, DigestHasher, Owner, Reference, RepoName};
use atcr_pds::{Pds, Write};
use atcr_syntax::{AtIdentifier, Did};
use bytes::Bytes;
use futures_util::Stream;
use index::{Index, ManifestCommit, ManifestRow, StoredSession};
use records::{
    EmbeddedOwner, MANIFEST_COLLECTION, OwnerPds, RemoteOwner, TAG_COLLECTION, at_uri, tag_rkey,
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

/// A repository a request addresses, its owner resolved to a DID
/// ([`Registry::resolve`]): what every repository service takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    name: RepoName,
    did: Did,
}

impl Repository {
    /// `name`, whose owner resolved to `did`.
    pub fn new(name: RepoName, did: Did) -> Self {
        Self { name, did }
    }

    /// The repository `path` (`app`, `team/app`) of the account `did`,
    /// named by the DID (for work that starts from the index, not a name).
    pub fn of(did: &Did, path: &str) -> Result<Self> {
        Ok(Self {
            name: RepoName::parse(&format!("{did}/{path}"))?,
            did: did.clone(),
        })
    }

    /// The owner's DID.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// The path under the owner (`app`, `team/app`).
    pub fn path(&self) -> &str {
        self.name.repo()
    }

    /// The name as the client wrote it.
    pub fn name(&self) -> &RepoName {
        &self.name
    }
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
    handles: Mutex<HashMap<String, (Did, Instant)>>,
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
        let head = owner.latest_commit().await.map_err(Error::from)?;
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

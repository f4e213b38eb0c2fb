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

pub mod index;
pub mod records;
pub mod routes;
pub mod token;

use atcr_blobstore::{BlobError, BlobRead, BlobStore, UploadState};
use atcr_identity::IdentityResolver;
use atcr_oci::manifest::{ParsedManifest, parse_manifest};
use atcr_oci::{
    Digest, DigestAlgorithm, DigestHasher, ErrorCode, Owner, Reference, RegistryError, RepoName,
};
use atcr_pds::{Pds, Write};
use atcr_syntax::{AtIdentifier, TidClock};
use bytes::Bytes;
use futures_util::Stream;
use index::{Index, ManifestCommit, ManifestRow, StoredSession};
use records::{
    EmbeddedOwner, MANIFEST_COLLECTION, OwnerPds, RecordError, RemoteOwner, TAG_COLLECTION, at_uri,
    manifest_record, tag_record, tag_rkey,
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
    /// Idle upload sessions older than this are discarded at start-up.
    pub upload_ttl: Duration,
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
        rkey: Option<String>,
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
    clock: TidClock,
    /// sha256(secret, user, password) → (did, checked at).
    credentials: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Upload sessions with a request in flight.
    busy: Mutex<HashSet<String>>,
    /// Serializes record writes per owner (PDS commits are per repository).
    owner_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The registry service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

const CREDENTIAL_CACHE: Duration = Duration::from_secs(300);

/// Marks an upload session busy for the guard's lifetime.
struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
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
    /// Opens the registry over its index file and blob store.
    pub fn open(
        cfg: RegistryConfig,
        index_path: &std::path::Path,
        blobs: BlobStore,
        pds: Option<Pds>,
        resolver: IdentityResolver,
    ) -> std::result::Result<Self, String> {
        let index = Index::open(index_path).map_err(|e| e.to_string())?;
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
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                index,
                blobs,
                pds,
                resolver,
                tokens,
                http: atcr_http::client(Duration::from_secs(30)),
                clock: TidClock::new(),
                credentials: Mutex::new(HashMap::new()),
                busy: Mutex::new(HashSet::new()),
                owner_locks: Mutex::new(HashMap::new()),
            }),
        })
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

    // ---- identity and auth ----

    /// The DID a repository name belongs to.
    pub async fn owner_did(&self, name: &RepoName) -> Result<String> {
        match name.owner() {
            Owner::Did(d) => Ok(d.to_string()),
            Owner::Handle(h) => {
                if let Some(pds) = &self.inner.pds
                    && let Ok(did) = pds.lookup_did(h.as_str()).await
                {
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
        let denied = || err(ErrorCode::Unauthorized, "invalid username or password");
        let did = match self.embedded_account(user).await {
            Some(_) => {
                let pds = self.inner.pds.as_ref().ok_or_else(denied)?;
                pds.login(user, password).await.map_err(|_| denied())?.did
            }
            None => {
                let ident: AtIdentifier = user.parse().map_err(|_| denied())?;
                // Whatever the reason (unknown handle, DNS down), an identity
                // that does not resolve cannot log in; the message says why.
                let id = self.inner.resolver.resolve(&ident).await.map_err(|e| {
                    err(
                        ErrorCode::Unauthorized,
                        format!("cannot resolve {user}: {e}"),
                    )
                })?;
                let client = atcr_xrpc::PdsClient::new(id.pds.clone(), self.inner.http.clone());
                let s = client.create_session(user, password).await.map_err(|e| {
                    if e.is_transient() {
                        err(ErrorCode::Unavailable, format!("{}: {e}", id.pds))
                    } else {
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
            let Ok(name) = RepoName::parse(&a.name) else {
                continue;
            };
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

    fn owner_lock(&self, did: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .owner_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(did.to_owned())
            .or_default()
            .clone()
    }

    // ---- blobs ----

    /// Size of a blob in a repository.
    pub async fn blob_size(&self, did: &str, repo: &str, digest: &Digest) -> Result<u64> {
        self.inner
            .index
            .repo_blob(did, repo, &digest.to_string())
            .await?
            .ok_or_else(|| {
                err(
                    ErrorCode::BlobUnknown,
                    format!("blob unknown to registry: {digest}"),
                )
            })
    }

    /// Reads a blob (or a range `[start, end)`).
    pub async fn blob_read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        allow_redirect: bool,
    ) -> Result<BlobRead> {
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
        self.inner
            .index
            .create_upload(&id, did, repo, &st.to_json())
            .await?;
        Ok(id)
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
        if let Some(size) = self.inner.index.blob(&d).await? {
            self.inner
                .index
                .link_blob(did, repo, display, &d, size, None)
                .await?;
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
        let (d, r, state) = self.inner.index.upload(id).await?.ok_or_else(unknown)?;
        if d != did || r != repo {
            return Err(unknown());
        }
        UploadState::from_json(&state).map_err(from_blob)
    }

    fn mark_busy(&self, id: &str) -> Result<Busy<'_>> {
        let mut set = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(id.to_owned()) {
            return Err(err(
                ErrorCode::BlobUploadInvalid,
                "another request is writing to this upload session",
            ));
        }
        Ok(Busy {
            set: &self.inner.busy,
            id: id.to_owned(),
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
        let _busy = self.mark_busy(id)?;
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
        self.inner.index.update_upload(id, &st.to_json()).await?;
        Ok(st.offset)
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
        let _busy = self.mark_busy(id)?;
        let mut st = self.session(did, repo, id).await?;
        if let Some(b) = body {
            self.inner
                .blobs
                .append(&mut st, b)
                .await
                .map_err(from_blob)?;
        }
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
        self.inner
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
        Ok(size)
    }

    /// Cancels a session.
    pub async fn upload_cancel(&self, did: &str, repo: &str, id: &str) -> Result<()> {
        let _busy = self.mark_busy(id)?;
        let st = self.session(did, repo, id).await?;
        self.inner.index.delete_upload(id).await?;
        self.inner.blobs.abort(st).await.map_err(from_blob)
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
    pub async fn manifest_put(
        &self,
        name: &RepoName,
        did: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<PushedManifest> {
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
                .inner
                .index
                .repo_blob(did, repo, &b.to_string())
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
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let d = digest.to_string();

        // One writer per owner: PDS commits on one repository are serial anyway.
        let lock = self.owner_lock(did);
        let _guard = lock.lock().await;
        let existing = self.inner.index.manifest(did, repo, &d, false).await?;
        if let Some(t) = &tag
            && existing.is_some()
            && self
                .inner
                .index
                .tag(did, repo, t)
                .await?
                .map(|x| x.0)
                .as_deref()
                == Some(&d)
        {
            return Ok(PushedManifest { digest, subject });
        }
        if existing.is_some() && tag.is_none() {
            return Ok(PushedManifest { digest, subject });
        }
        let owner = self.owner_pds(did).await?;
        let rkey = existing
            .as_ref()
            .map(|m| m.record_rkey.clone())
            .unwrap_or_else(|| self.inner.clock.next().to_string());
        let op = PendingOp::Put {
            repo: repo.to_owned(),
            display: name.to_string(),
            digest: d.clone(),
            media_type: parsed.media_type.clone(),
            bytes: {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            },
            rkey: rkey.clone(),
            new_manifest: existing.is_none(),
            tag: tag.clone(),
        };
        let pending = self
            .inner
            .index
            .begin_pending(did, &serde_json::to_string(&op).unwrap_or_default())
            .await?;
        let result = self
            .write_manifest_records(
                owner.as_ref(),
                repo,
                &d,
                &parsed,
                &bytes,
                &rkey,
                existing.is_none(),
                tag.as_deref(),
            )
            .await;
        let cids = match result {
            Ok(c) => c,
            Err(e) => {
                // The commit did not happen (the PDS answered with an error):
                // nothing to reconcile.
                if !matches!(e.code, ErrorCode::Unavailable) {
                    self.inner.index.drop_pending(pending).await?;
                }
                return Err(e);
            }
        };
        let manifest_row = existing.is_none().then(|| ManifestRow {
            digest: d.clone(),
            media_type: parsed.media_type.clone(),
            size: bytes.len() as u64,
            bytes: bytes.clone(),
            artifact_type: parsed.effective_artifact_type(),
            subject: subject.clone(),
            annotations: (!parsed.annotations.is_empty())
                .then(|| serde_json::to_string(&parsed.annotations).unwrap_or_default()),
            record_rkey: rkey.clone(),
            record_cid: cids.0.clone().unwrap_or_default(),
        });
        self.inner
            .index
            .commit_manifest(
                pending,
                ManifestCommit {
                    did: did.to_owned(),
                    repo: repo.to_owned(),
                    display: name.to_string(),
                    manifest: manifest_row,
                    tag: tag.map(|t| (t, d.clone(), cids.1.unwrap_or_default())),
                },
            )
            .await?;
        Ok(PushedManifest { digest, subject })
    }

    /// Uploads the manifest blob (for a new manifest) and writes the records
    /// in one commit. Returns (manifest record CID, tag record CID).
    #[allow(clippy::too_many_arguments)]
    async fn write_manifest_records(
        &self,
        owner: &dyn OwnerPds,
        repo: &str,
        digest: &str,
        parsed: &ParsedManifest,
        bytes: &[u8],
        rkey: &str,
        new_manifest: bool,
        tag: Option<&str>,
    ) -> Result<(Option<String>, Option<String>)> {
        let now = atcr_syntax::Datetime::now().to_string();
        let uri = at_uri(owner.did(), MANIFEST_COLLECTION, rkey);
        let mut writes = vec![];
        if new_manifest {
            let blob = owner
                .upload_blob(bytes.to_vec(), parsed.media_type.clone())
                .await
                .map_err(from_record)?;
            let json: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| err(ErrorCode::ManifestInvalid, e.to_string()))?;
            writes.push(Write::Create {
                collection: MANIFEST_COLLECTION.into(),
                rkey: Some(rkey.to_owned()),
                record: manifest_record(repo, digest, &parsed.media_type, &json, blob, &now),
            });
        }
        if let Some(t) = tag {
            writes.push(Write::Put {
                collection: TAG_COLLECTION.into(),
                rkey: tag_rkey(repo, t),
                record: tag_record(repo, t, digest, &uri, &now),
                swap: None,
            });
        }
        let cids = owner.write(writes).await.map_err(from_record)?;
        let mut it = cids.into_iter();
        let m = if new_manifest {
            it.next().flatten()
        } else {
            None
        };
        let t = if tag.is_some() {
            it.next().flatten()
        } else {
            None
        };
        Ok((m, t))
    }

    /// Deletes a manifest by digest (with the tags pointing at it) or a tag.
    pub async fn manifest_delete(
        &self,
        did: &str,
        repo: &str,
        reference: &Reference,
    ) -> Result<()> {
        let lock = self.owner_lock(did);
        let _guard = lock.lock().await;
        let (digest, rkey, tags) = match reference {
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
                (Some(m.digest), Some(m.record_rkey), tags)
            }
            Reference::Tag(t) => {
                if self.inner.index.tag(did, repo, t).await?.is_none() {
                    return Err(err(ErrorCode::ManifestUnknown, format!("tag unknown: {t}")));
                }
                (None, None, vec![t.clone()])
            }
        };
        let owner = self.owner_pds(did).await?;
        let op = PendingOp::Delete {
            repo: repo.to_owned(),
            digest: digest.clone(),
            rkey: rkey.clone(),
            tags: tags.clone(),
        };
        let pending = self
            .inner
            .index
            .begin_pending(did, &serde_json::to_string(&op).unwrap_or_default())
            .await?;
        let mut writes: Vec<Write> = tags
            .iter()
            .map(|t| Write::Delete {
                collection: TAG_COLLECTION.into(),
                rkey: tag_rkey(repo, t),
                swap: None,
            })
            .collect();
        if let Some(r) = &rkey {
            writes.push(Write::Delete {
                collection: MANIFEST_COLLECTION.into(),
                rkey: r.clone(),
                swap: None,
            });
        }
        if let Err(e) = owner.write(writes).await {
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
        let (mut done, mut dropped) = (0, 0);
        for (id, did, op) in self.inner.index.pending().await? {
            let Ok(op) = serde_json::from_str::<PendingOp>(&op) else {
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
            match self.reconcile(id, &did, owner.as_ref(), op).await {
                Ok(true) => done += 1,
                Ok(false) => dropped += 1,
                Err(e) => tracing::warn!("recovery of {did}: {e}; retried at next start"),
            }
        }
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
        Ok((done, dropped, kept.len()))
    }

    async fn reconcile(
        &self,
        id: i64,
        did: &str,
        owner: &dyn OwnerPds,
        op: PendingOp,
    ) -> Result<bool> {
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
                let manifest = owner
                    .get_record(MANIFEST_COLLECTION.into(), rkey.clone())
                    .await
                    .map_err(from_record)?;
                let tag_rec = match &tag {
                    Some(t) => owner
                        .get_record(TAG_COLLECTION.into(), tag_rkey(&repo, t))
                        .await
                        .map_err(from_record)?
                        .filter(|(_, v)| v["manifestDigest"] == digest.as_str()),
                    None => None,
                };
                // The commit is atomic: either all of its records are there or none.
                let committed = if tag.is_some() {
                    tag_rec.is_some()
                } else {
                    manifest.is_some()
                };
                if !committed {
                    self.inner.index.drop_pending(id).await?;
                    return Ok(false);
                }
                let bytes = {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(bytes)
                        .map_err(|e| err(ErrorCode::Unknown, e.to_string()))?
                };
                let parsed = parse_manifest(&bytes, Some(&media_type))?;
                let row = match (new_manifest, manifest) {
                    (true, Some((cid, _))) => Some(ManifestRow {
                        digest: digest.clone(),
                        media_type,
                        size: bytes.len() as u64,
                        bytes,
                        artifact_type: parsed.effective_artifact_type(),
                        subject: parsed.subject.as_ref().map(|s| s.digest.to_string()),
                        annotations: (!parsed.annotations.is_empty()).then(|| {
                            serde_json::to_string(&parsed.annotations).unwrap_or_default()
                        }),
                        record_rkey: rkey,
                        record_cid: cid,
                    }),
                    _ => None,
                };
                self.inner
                    .index
                    .commit_manifest(
                        id,
                        ManifestCommit {
                            did: did.to_owned(),
                            repo,
                            display,
                            manifest: row,
                            tag: tag.zip(tag_rec).map(|(t, (cid, _))| (t, digest, cid)),
                        },
                    )
                    .await?;
                Ok(true)
            }
            PendingOp::Delete {
                repo,
                digest,
                rkey,
                tags,
            } => {
                let still = match (&rkey, tags.first()) {
                    (Some(r), _) => owner
                        .get_record(MANIFEST_COLLECTION.into(), r.clone())
                        .await
                        .map_err(from_record)?
                        .is_some(),
                    (None, Some(t)) => owner
                        .get_record(TAG_COLLECTION.into(), tag_rkey(&repo, t))
                        .await
                        .map_err(from_record)?
                        .is_some(),
                    (None, None) => false,
                };
                if still {
                    self.inner.index.drop_pending(id).await?;
                    return Ok(false);
                }
                self.inner
                    .index
                    .commit_delete(id, did, &repo, digest.as_deref(), &tags)
                    .await?;
                Ok(true)
            }
        }
    }
}

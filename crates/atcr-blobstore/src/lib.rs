//! Content-addressed blob storage for ATCR.
//!
//! Blobs live under `blobs/<alg>/<hex[..2]>/<hex>` in an [`object_store`]
//! backend: a local directory (the default) or any S3-compatible bucket.
//!
//! Uploads are sessions ([`UploadState`]) that the caller persists after each
//! call, so they survive a restart:
//! * every byte is hashed while it streams through ([`DigestHasher`], whose
//!   state is saved in the session) and nothing is buffered whole;
//! * local: bytes are appended to a staging file on the same file system and
//!   fsynced before [`BlobStore::append`] returns; [`BlobStore::finish`]
//!   verifies the digest, then renames the file into place and fsyncs the
//!   directory, so a blob is either absent or complete and verified;
//! * S3: full parts (`part_size`, ≥ 5 MiB) go out as a multipart upload, the
//!   remainder is spooled to a local file (fsynced) until the next call, or
//!   with `shared_uploads` to an object in the bucket (so the next call may
//!   reach another registry replica). The
//!   finished object is copied into its content address only after the digest
//!   matched.
//!
//! Visibility to registry clients is the index's job (a blob is served only
//! once the index records it); the store guarantees that nothing unverified
//! ever sits at a content address.

use atcr_oci::{Digest, DigestAlgorithm, DigestHasher};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Blob storage errors.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The content does not hash to the digest the client named.
    #[error("digest mismatch: the content hashes to {actual}, not {expected}")]
    DigestMismatch {
        /// What the client claimed.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// No blob at that digest.
    #[error("blob not found")]
    NotFound,
    /// The request body failed while streaming (client went away).
    #[error("upload body: {0}")]
    Body(String),
    /// The backend failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A session record that cannot be resumed.
    #[error("upload session: {0}")]
    Session(String),
}

fn storage(e: impl std::fmt::Display) -> BlobError {
    BlobError::Storage(e.to_string())
}

/// S3-compatible backend settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL (`None`: AWS for the region).
    pub endpoint: Option<String>,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    /// Answer blob GETs with a 307 to a presigned URL.
    pub redirect: bool,
    /// Lifetime of presigned URLs.
    pub presign_ttl: Duration,
    /// Multipart part size (S3 needs ≥ 5 MiB except for the last part).
    pub part_size: usize,
    /// Keep upload tails in the bucket (`_spool/<id>/<offset>`)
    /// rather than in the local spool directory, so any registry replica
    /// can continue a session another one started.
    pub shared_uploads: bool,
}

/// Where blobs are stored.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket; `spool` is a local directory for upload tails.
    S3 {
        /// The bucket settings.
        s3: S3Config,
        /// Local directory for partial parts between requests.
        spool: PathBuf,
    },
}

enum Backend {
    Local {
        root: PathBuf,
    },
    S3 {
        s3: AmazonS3,
        cfg: S3Config,
        spool: PathBuf,
    },
}

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    backend: Arc<Backend>,
}

/// A multipart upload in progress (S3 only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MultipartState {
    /// The backend's upload id.
    pub upload_id: String,
    /// ETags of the parts uploaded so far, in order.
    pub parts: Vec<String>,
}

/// A resumable upload session; persist it after every call that changes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadState {
    /// Session id (letters, digits, `-`).
    pub id: String,
    /// Bytes received and stored.
    pub offset: u64,
    /// Saved hasher state (hex).
    hasher: String,
    /// S3: the multipart upload, once the first full part went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<MultipartState>,
    /// S3: bytes in the spool file that are not in a part yet.
    #[serde(default)]
    spooled: u64,
    /// S3, after [`BlobStore::append_final`]: the tail, kept in memory
    /// rather than spooled (never persisted).
    #[serde(skip)]
    held: Option<Bytes>,
    /// The offset of the spooled tail the held one replaces: removed once
    /// the session ends.
    #[serde(skip)]
    replaced_spool: Option<u64>,
}

fn to_hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl UploadState {
    /// The hasher at `offset`.
    pub fn hasher(&self) -> Result<DigestHasher, BlobError> {
        from_hex(&self.hasher)
            .and_then(|b| DigestHasher::restore(&b))
            .filter(|h| h.len() == self.offset)
            .ok_or_else(|| BlobError::Session(format!("{}: corrupt hash state", self.id)))
    }
    /// The digest algorithm of the session.
    pub fn algorithm(&self) -> Result<DigestAlgorithm, BlobError> {
        Ok(self.hasher()?.algorithm())
    }
    /// Serializes the session (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    /// Parses a serialized session.
    pub fn from_json(s: &str) -> Result<Self, BlobError> {
        serde_json::from_str(s).map_err(|e| BlobError::Session(e.to_string()))
    }
}

fn mismatch(expected: &Digest, actual: &Digest) -> BlobError {
    BlobError::DigestMismatch {
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Hashes a file with `alg`, streaming.
async fn hash_file(path: PathBuf, alg: DigestAlgorithm) -> Result<Digest, BlobError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<Digest> {
        let mut f = std::fs::File::open(path)?;
        let mut h = DigestHasher::new(alg);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finish());
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(storage)?
    .map_err(storage)
}

/// Hashes a stored object with `alg`, streaming.
async fn hash_object(
    s3: &AmazonS3,
    key: &ObjectPath,
    alg: DigestAlgorithm,
) -> Result<Digest, BlobError> {
    let mut stream = s3.get(key).await.map_err(storage)?.into_stream();
    let mut h = DigestHasher::new(alg);
    while let Some(chunk) = stream.next().await {
        h.update(&chunk.map_err(storage)?);
    }
    Ok(h.finish())
}

/// The object key of a blob.
pub fn blob_key(d: &Digest) -> ObjectPath {
    let hex = d.hex();
    ObjectPath::from(format!(
        "blobs/{}/{}/{}",
        d.algorithm().name(),
        &hex[..2],
        hex
    ))
}

/// The digest a blob key addresses (the inverse of [`blob_key`]).
fn digest_of_key(key: &ObjectPath) -> Option<Digest> {
    let parts: Vec<_> = key.parts().collect();
    let [b, alg, pre, hex] = parts.as_slice() else {
        return None;
    };
    if b.as_ref() != "blobs" || !hex.as_ref().starts_with(pre.as_ref()) {
        return None;
    }
    let d = Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref())).ok()?;
    (blob_key(&d) == *key).then_some(d)
}

fn staging_key(id: &str) -> ObjectPath {
    ObjectPath::from(format!("_uploads/{id}"))
}

/// A session's tail in the bucket (shared uploads), named by the offset the
/// session reached with it: written once, never changed, so the state saved
/// in the index always names exactly the bytes it counts. Not under the
/// staging key (file-system-backed S3 servers cannot hold both a key and
/// keys below it).
fn spool_key(id: &str, offset: u64) -> ObjectPath {
    ObjectPath::from(format!("_spool/{id}/{offset}"))
}

/// A blob read: a byte stream plus its total size, or a redirect.
pub enum BlobRead {
    /// Stream these bytes.
    Stream {
        /// The bytes (of the requested range).
        body: futures_util::stream::BoxStream<'static, Result<Bytes, BlobError>>,
        /// Length of the body.
        len: u64,
    },
    /// Redirect the client here (presigned URL).
    Redirect(url::Url),
}

const READ_CHUNK: usize = 512 * 1024;
/// Bytes handed to the upload writer thread at a time.
const WRITE_BATCH: usize = 256 * 1024;

impl BlobStore {
    /// Opens the configured backend (creating the local directories).
    pub fn open(cfg: &StoreConfig) -> Result<Self, BlobError> {
        atcr_http::install_crypto_provider();
        match cfg {
            StoreConfig::Local(root) => {
                for d in ["blobs", "_uploads"] {
                    std::fs::create_dir_all(root.join(d)).map_err(storage)?;
                }
                let root = root.canonicalize().map_err(storage)?;
                let store = LocalFileSystem::new_with_prefix(&root).map_err(storage)?;
                Ok(Self {
                    store: Arc::new(store),
                    backend: Arc::new(Backend::Local { root }),
                })
            }
            StoreConfig::S3 { s3: c, spool } => {
                std::fs::create_dir_all(spool).map_err(storage)?;
                if c.part_size < 5 * 1024 * 1024 {
                    return Err(BlobError::Storage(
                        "S3 part size must be at least 5 MiB".into(),
                    ));
                }
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&c.bucket)
                    .with_region(&c.region)
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key)
                    .with_virtual_hosted_style_request(!c.path_style);
                if let Some(ep) = &c.endpoint {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"));
                }
                let s3 = b.build().map_err(storage)?;
                Ok(Self {
                    store: Arc::new(s3.clone()),
                    backend: Arc::new(Backend::S3 {
                        s3,
                        cfg: c.clone(),
                        spool: spool.clone(),
                    }),
                })
            }
        }
    }

    /// The size of a stored blob, `None` when absent.
    pub async fn size(&self, d: &Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&blob_key(d)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }

    /// Reads a blob, or a byte range `[start, end)` of it; with S3 redirects on
    /// and `allow_redirect`, a presigned URL instead.
    pub async fn read(
        &self,
        d: &Digest,
        range: Option<(u64, u64)>,
        allow_redirect: bool,
    ) -> Result<BlobRead, BlobError> {
        let key = blob_key(d);
        if let Backend::S3 { s3, cfg, .. } = &*self.backend
            && cfg.redirect
            && allow_redirect
        {
            let url = s3
                .signed_url(http_get(), &key, cfg.presign_ttl)
                .await
                .map_err(storage)?;
            return Ok(BlobRead::Redirect(url));
        }
        let opts = GetOptions {
            range: range.map(|(a, b)| GetRange::Bounded(a..b)),
            ..Default::default()
        };
        let res = match self.store.get_opts(&key, opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound),
            Err(e) => return Err(storage(e)),
        };
        let len = res.range.end - res.range.start;
        let start = res.range.start;
        match res.payload {
            // object_store streams local files in 8 KiB reads; large reads on a
            // blocking thread are several times faster for multi-GiB blobs.
            GetResultPayload::File(file, _) => Ok(BlobRead::Stream {
                body: file_stream(file, start, len).boxed(),
                len,
            }),
            GetResultPayload::Stream(s) => Ok(BlobRead::Stream {
                body: s.map(|r| r.map_err(storage)).boxed(),
                len,
            }),
        }
    }

    /// Deletes a blob (no error when absent).
    pub async fn delete(&self, d: &Digest) -> Result<(), BlobError> {
        match self.store.delete(&blob_key(d)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(e)),
        }
    }

    /// Every stored blob: `(digest, size, last modified as Unix seconds)`,
    /// in no particular order. Objects whose key is not a blob address are
    /// skipped. For garbage collection of objects the index does not know.
    pub fn list(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Result<(Digest, u64, i64), BlobError>> {
        let store = self.store.clone();
        let prefix = ObjectPath::from("blobs");
        let listing = store.list(Some(&prefix));
        listing
            .filter_map(|r| async move {
                match r {
                    Err(e) => Some(Err(storage(e))),
                    Ok(m) => digest_of_key(&m.location)
                        .map(|d| Ok((d, m.size, m.last_modified.timestamp()))),
                }
            })
            .boxed()
    }

    /// Starts an upload session.
    pub async fn begin(&self, id: &str, alg: DigestAlgorithm) -> Result<UploadState, BlobError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BlobError::Session(format!("bad session id {id:?}")));
        }
        if self.shared_spool().is_none() {
            let path = self.local_file(id);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(storage)?;
            drop(f);
        }
        Ok(UploadState {
            id: id.to_owned(),
            offset: 0,
            hasher: to_hex(&DigestHasher::new(alg).state()),
            multipart: None,
            spooled: 0,
            held: None,
            replaced_spool: None,
        })
    }

    /// The local file of a session: the staging file (local) or the spool (S3).
    fn local_file(&self, id: &str) -> PathBuf {
        match &*self.backend {
            Backend::Local { root } => root.join("_uploads").join(id),
            Backend::S3 { spool, .. } => spool.join(id),
        }
    }

    /// Brings a persisted session back after a restart: drops bytes written
    /// after the state was last saved (they were never acknowledged).
    pub async fn recover(&self, st: &UploadState) -> Result<(), BlobError> {
        st.hasher()?;
        if self.shared_spool().is_some() {
            // Tails in the bucket are immutable and named by offset.
            return Ok(());
        }
        let keep = match &*self.backend {
            Backend::Local { .. } => st.offset,
            Backend::S3 { .. } => st.spooled,
        };
        let path = self.local_file(&st.id);
        tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            if f.metadata()?.len() < keep {
                return Err(std::io::Error::other(format!(
                    "{} is shorter than the {keep} bytes acknowledged",
                    path.display()
                )));
            }
            f.set_len(keep)?;
            f.sync_all()
        })
        .await
        .map_err(storage)?
        .map_err(|e| BlobError::Session(e.to_string()))
    }

    /// Appends a request body to the session. On success every byte is durable
    /// and `st` is advanced; on error `st` is unchanged and so is what is stored.
    pub async fn append<S, E>(&self, st: &mut UploadState, body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        self.append_with(st, body, false).await
    }

    /// Appends the last bytes of a session that [`BlobStore::finish`] closes
    /// next, in the same request. On S3 the tail below a part is kept in
    /// memory instead of being spooled (written, read back and deleted):
    /// the state must not be persisted; should `finish` not run, the saved
    /// state and its spool are unchanged.
    pub async fn append_final<S, E>(&self, st: &mut UploadState, body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        self.append_with(st, body, true).await
    }

    /// `hold`: keep an S3 tail in memory (see [`BlobStore::append_final`]).
    async fn append_with<S, E>(
        &self,
        st: &mut UploadState,
        body: S,
        hold: bool,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        match &*self.backend {
            Backend::Local { .. } => self.append_local(st, body).await,
            Backend::S3 { s3, cfg, .. } => self.append_s3(s3, cfg, st, body, hold).await,
        }
    }

    async fn append_local<S, E>(&self, st: &mut UploadState, mut body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut hasher = st.hasher()?;
        let start = st.offset;
        let path = self.local_file(&st.id);
        // The file is written on a blocking thread while this task hashes the
        // next frames: on two cores the hash and the copy into the page cache
        // run side by side.
        // Frames are handed over in batches of WRITE_BATCH bytes: one wake-up
        // of the writer per batch instead of per (often 16 KiB) frame.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(4);
        let writer = tokio::task::spawn_blocking(move || write_file(&path, start, rx));
        let mut failed = None;
        let mut batch: Vec<Bytes> = vec![];
        let mut batched = 0;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(b) => {
                    hasher.update(&b);
                    batched += b.len();
                    batch.push(b);
                    if batched >= WRITE_BATCH {
                        batched = 0;
                        if tx.send(std::mem::take(&mut batch)).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    failed = Some(BlobError::Body(e.to_string()));
                    break;
                }
            }
        }
        if failed.is_none() && !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let written = writer.await.map_err(storage)?;
        let path = self.local_file(&st.id);
        let undo = move || {
            // Put the file back to what the session acknowledged.
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(start);
            }
        };
        if let Some(e) = failed {
            undo();
            return Err(e);
        }
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                undo();
                return Err(storage(e));
            }
        };
        if written != hasher.len() - start {
            undo();
            return Err(BlobError::Storage("short write".into()));
        }
        st.offset = hasher.len();
        st.hasher = to_hex(&hasher.state());
        Ok(st.offset)
    }

    async fn append_s3<S, E>(
        &self,
        s3: &AmazonS3,
        cfg: &S3Config,
        st: &mut UploadState,
        mut body: S,
        hold: bool,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut hasher = st.hasher()?;
        let mut next = st.clone();
        // What is spooled from earlier calls is the head of the next part.
        let mut buf = BytesMut::with_capacity(cfg.part_size);
        buf.extend_from_slice(&self.read_spool(st).await?);
        let key = staging_key(&st.id);
        while let Some(frame) = body.next().await {
            let mut b = frame.map_err(|e| BlobError::Body(e.to_string()))?;
            hasher.update(&b);
            while !b.is_empty() {
                let take = (cfg.part_size - buf.len()).min(b.len());
                buf.extend_from_slice(&b.split_to(take));
                if buf.len() == cfg.part_size {
                    let part = std::mem::replace(&mut buf, BytesMut::with_capacity(cfg.part_size));
                    let mp = match &mut next.multipart {
                        Some(mp) => mp,
                        None => {
                            let id = s3.create_multipart(&key).await.map_err(storage)?;
                            next.multipart.insert(MultipartState {
                                upload_id: id,
                                parts: vec![],
                            })
                        }
                    };
                    let PartId { content_id } = s3
                        .put_part(&key, &mp.upload_id, mp.parts.len(), part.freeze().into())
                        .await
                        .map_err(storage)?;
                    mp.parts.push(content_id);
                }
            }
        }
        // Spool the remainder durably, then advance the session.
        let tail = buf.freeze();
        let n = tail.len() as u64;
        let offset = hasher.len();
        if hold {
            next.replaced_spool = (st.spooled > 0).then_some(st.offset);
            next.held = Some(tail);
            next.spooled = n;
            next.offset = offset;
            next.hasher = to_hex(&hasher.state());
            *st = next;
            return Ok(st.offset);
        }
        self.write_spool(&st.id, offset, tail).await?;
        // In the bucket the previous tail is a separate object (locally the
        // new tail replaced it).
        if self.shared_spool().is_some() && st.spooled > 0 && offset != st.offset {
            self.drop_spool(st).await;
        }
        next.spooled = n;
        next.offset = offset;
        next.hasher = to_hex(&hasher.state());
        *st = next;
        Ok(st.offset)
    }

    /// The bucket, when upload tails are kept there.
    fn shared_spool(&self) -> Option<&AmazonS3> {
        match &*self.backend {
            Backend::S3 { s3, cfg, .. } if cfg.shared_uploads => Some(s3),
            _ => None,
        }
    }

    /// The bytes a session has spooled (at most one part).
    async fn read_spool(&self, st: &UploadState) -> Result<Vec<u8>, BlobError> {
        if st.spooled == 0 {
            return Ok(vec![]);
        }
        if let Some(t) = &st.held {
            return Ok(t.to_vec());
        }
        let head = match self.shared_spool() {
            Some(s3) => match s3.get(&spool_key(&st.id, st.offset)).await {
                Ok(r) => r.bytes().await.map_err(storage)?.to_vec(),
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(BlobError::Session("spooled bytes are gone".into()));
                }
                Err(e) => return Err(storage(e)),
            },
            None => {
                let p = self.local_file(&st.id);
                tokio::task::spawn_blocking(move || std::fs::read(p))
                    .await
                    .map_err(storage)?
                    .map_err(storage)?
            }
        };
        if head.len() as u64 != st.spooled {
            return Err(BlobError::Session("spool file does not match".into()));
        }
        Ok(head)
    }

    /// Stores a session's tail durably (replacing the previous one locally;
    /// beside it, named by `offset`, in the bucket).
    async fn write_spool(&self, id: &str, offset: u64, tail: Bytes) -> Result<(), BlobError> {
        if let Some(s3) = self.shared_spool() {
            if !tail.is_empty() {
                s3.put(&spool_key(id, offset), tail.into())
                    .await
                    .map_err(storage)?;
            }
            return Ok(());
        }
        let p = self.local_file(id);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = p.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&tail)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)
        })
        .await
        .map_err(storage)?
        .map_err(storage)
    }

    /// Removes a session's spooled tail (best effort: a leftover in the
    /// bucket is under the session's prefix, removed with the session).
    async fn drop_spool(&self, st: &UploadState) {
        match self.shared_spool() {
            Some(s3) => {
                if st.spooled > 0 && st.held.is_none() {
                    let _ = s3.delete(&spool_key(&st.id, st.offset)).await;
                }
                if let Some(old) = st.replaced_spool {
                    let _ = s3.delete(&spool_key(&st.id, old)).await;
                }
            }
            None => {
                let _ = tokio::fs::remove_file(self.local_file(&st.id)).await;
            }
        }
    }

    /// Completes a session: checks the content against `expected` and stores
    /// it at its content address. On a mismatch nothing is stored and the
    /// session is discarded.
    ///
    /// A session hashes with one algorithm (sha256 unless it was begun with
    /// another); closing it with a digest of another algorithm re-reads the
    /// stored bytes once with that one.
    pub async fn finish(&self, st: UploadState, expected: &Digest) -> Result<u64, BlobError> {
        let hasher = st.hasher()?;
        let rehash = hasher.algorithm() != expected.algorithm();
        if !rehash {
            let actual = hasher.finish();
            if &actual != expected {
                self.abort(st).await?;
                return Err(mismatch(expected, &actual));
            }
        }
        let size = st.offset;
        let final_key = blob_key(expected);
        match &*self.backend {
            Backend::Local { root } => {
                let from = self.local_file(&st.id);
                if rehash {
                    let actual = hash_file(from.clone(), expected.algorithm()).await?;
                    if &actual != expected {
                        self.abort(st).await?;
                        return Err(mismatch(expected, &actual));
                    }
                }
                let to = root.join(final_key.as_ref());
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let dir = to.parent().unwrap_or(Path::new("."));
                    std::fs::create_dir_all(dir)?;
                    // append() fsynced the data; the rename is made durable
                    // by syncing the directory.
                    std::fs::rename(&from, &to)?;
                    std::fs::File::open(dir)?.sync_all()
                })
                .await
                .map_err(storage)?
                .map_err(storage)?;
            }
            Backend::S3 { s3, .. } => {
                let tail = self.read_spool(&st).await?;
                match &st.multipart {
                    None => {
                        if rehash {
                            let mut h = DigestHasher::new(expected.algorithm());
                            h.update(&tail);
                            let actual = h.finish();
                            if &actual != expected {
                                self.abort(st).await?;
                                return Err(mismatch(expected, &actual));
                            }
                        }
                        // Small blob: a single PUT straight to its address.
                        s3.put(&final_key, Bytes::from(tail).into())
                            .await
                            .map_err(storage)?;
                    }
                    Some(mp) => {
                        let key = staging_key(&st.id);
                        let mut parts: Vec<PartId> = mp
                            .parts
                            .iter()
                            .map(|c| PartId {
                                content_id: c.clone(),
                            })
                            .collect();
                        if !tail.is_empty() {
                            parts.push(
                                s3.put_part(
                                    &key,
                                    &mp.upload_id,
                                    parts.len(),
                                    Bytes::from(tail).into(),
                                )
                                .await
                                .map_err(storage)?,
                            );
                        }
                        s3.complete_multipart(&key, &mp.upload_id, parts)
                            .await
                            .map_err(storage)?;
                        if rehash {
                            let actual = hash_object(s3, &key, expected.algorithm()).await;
                            match actual {
                                Ok(a) if &a == expected => {}
                                other => {
                                    let _ = s3.delete(&key).await;
                                    self.drop_spool(&st).await;
                                    return Err(match other {
                                        Ok(a) => mismatch(expected, &a),
                                        Err(e) => e,
                                    });
                                }
                            }
                        }
                        // Content-addressed: overwriting an existing copy writes
                        // the same bytes, so a plain copy is safe.
                        s3.copy(&key, &final_key).await.map_err(storage)?;
                        let _ = s3.delete(&key).await;
                    }
                }
                self.drop_spool(&st).await;
            }
        }
        Ok(size)
    }

    /// Discards a session and whatever it stored.
    pub async fn abort(&self, st: UploadState) -> Result<(), BlobError> {
        let _ = tokio::fs::remove_file(self.local_file(&st.id)).await;
        self.drop_spool(&st).await;
        if let (Backend::S3 { s3, .. }, Some(mp)) = (&*self.backend, &st.multipart) {
            let _ = s3
                .abort_multipart(&staging_key(&st.id), &mp.upload_id)
                .await;
        }
        Ok(())
    }

    /// Session ids with local files, for cleaning up after sessions the
    /// index no longer knows.
    pub fn local_sessions(&self) -> Vec<String> {
        let dir = match &*self.backend {
            Backend::Local { root } => root.join("_uploads"),
            Backend::S3 { spool, .. } => spool.clone(),
        };
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.ends_with(".tmp"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a leftover session file by id.
    pub fn remove_local_session(&self, id: &str) {
        let _ = std::fs::remove_file(self.local_file(id));
    }
}

fn http_get() -> object_store::signer::Method {
    object_store::signer::Method::GET
}

/// Appends everything from `rx` to `path` at `start`, then fsyncs.
fn write_file(
    path: &Path,
    start: u64,
    rx: std::sync::mpsc::Receiver<Vec<Bytes>>,
) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() != start {
        f.set_len(start)?;
    }
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut n = 0u64;
    for batch in rx {
        for b in batch {
            f.write_all(&b)?;
            n += b.len() as u64;
        }
    }
    f.sync_data()?;
    Ok(n)
}

/// Streams `len` bytes of `file` from `start` in large reads on a blocking thread.
fn file_stream(
    mut file: std::fs::File,
    start: u64,
    len: u64,
) -> impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BlobError>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(storage(e)));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(READ_CHUNK);
            let mut buf = BytesMut::zeroed(want);
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(BlobError::Storage("blob file truncated".into())));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(storage(e)));
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

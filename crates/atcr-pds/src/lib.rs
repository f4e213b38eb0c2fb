//! The embedded AT Protocol PDS.
//!
//! * Accounts: handle + password (argon2id), app passwords, a per-account
//!   signing key (K-256 by default, P-256 selectable) and PLC rotation key, a
//!   did:plc registered at the embedded PLC directory or an external one, and
//!   key rotation that updates the DID document and re-signs the head commit.
//! * Sessions: HS256 access (2 h) and refresh (90 d) tokens; refresh tokens are
//!   stored, rotated on use and revoked by `deleteSession`.
//! * Repositories: v3 repos in SQLite (`atcr-repo` over a block table). Each
//!   write is one `IMMEDIATE` transaction — load head, apply, store blocks,
//!   update the record index and head — so commits are all-or-nothing,
//!   concurrent writes serialize with no lost update, and a crash leaves the
//!   last committed head readable.
//! * Blobs: content-addressed (raw CIDv1), stored per account.
//! * [`routes::router`]: the `com.atproto.*` XRPC methods and
//!   `/.well-known/atproto-did`, with the reference PDS's error names.

mod accounts;
mod auth;
pub mod events;
mod repo;
pub mod routes;
mod store;
pub mod subscribe;
pub mod throttle;

pub use accounts::{AccountCreated, AccountInfo, AppPasswordInfo};
pub use auth::{AuthScope, Claims};
pub use repo::{Write, WriteResult, blob_ref};

use atcr_crypto::Algorithm;
use atcr_plc::PlcDirectory;
use atcr_sqlite::{Db, DbError};
use atcr_syntax::TidClock;
use atcr_xrpc::XrpcError;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// PDS settings.
#[derive(Debug, Clone)]
pub struct PdsConfig {
    /// Public base URL (the `#atproto_pds` endpoint in DID documents).
    pub public_url: Url,
    /// The service DID (JWT audience), normally `did:web:<host>`.
    pub service_did: String,
    /// Domains offered for handles (`describeServer.availableUserDomains`).
    pub handle_domains: Vec<String>,
    /// HMAC secret for session tokens.
    pub jwt_secret: Vec<u8>,
    /// Admin password for account management (`Basic admin:<password>`).
    pub admin_password: Option<String>,
    /// Key algorithm for new accounts.
    pub default_key_alg: Algorithm,
    /// Largest JSON request body.
    pub max_json_bytes: usize,
    /// Largest blob.
    pub max_blob_bytes: usize,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// How long events stay replayable by cursor (`subscribeRepos`).
    pub backfill: Duration,
    /// Events a consumer may fall behind the newest before it is
    /// disconnected with `ConsumerTooSlow`.
    pub max_consumer_lag: i64,
    /// Event-stream consumers served at once.
    pub max_subscribers: usize,
    /// Relays told to crawl this PDS on start (`requestCrawl`).
    pub crawlers: Vec<Url>,
}

impl PdsConfig {
    /// Defaults for a PDS at `public_url`.
    pub fn new(public_url: Url, jwt_secret: Vec<u8>) -> Self {
        let host = public_url.host_str().unwrap_or("localhost").to_owned();
        let host = match public_url.port() {
            Some(p) => format!("{host}%3A{p}"),
            None => host,
        };
        Self {
            service_did: format!("did:web:{host}"),
            public_url,
            handle_domains: vec![],
            jwt_secret,
            admin_password: None,
            default_key_alg: Algorithm::K256,
            max_json_bytes: 1_000_000,
            max_blob_bytes: 16 * 1024 * 1024,
            access_ttl: Duration::from_secs(2 * 3600),
            refresh_ttl: Duration::from_secs(90 * 24 * 3600),
            backfill: Duration::from_secs(72 * 3600),
            max_consumer_lag: 100_000,
            max_subscribers: 256,
            crawlers: vec![],
        }
    }
}

/// An XRPC error from a PDS operation (storage failures are logged and
/// reported as `InternalServerError`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PdsError(pub XrpcError);

impl From<XrpcError> for PdsError {
    fn from(e: XrpcError) -> Self {
        Self(e)
    }
}

impl From<DbError> for PdsError {
    fn from(e: DbError) -> Self {
        tracing::error!("pds storage: {e}");
        Self(XrpcError::internal())
    }
}

impl From<atcr_sqlite::rusqlite::Error> for PdsError {
    fn from(e: atcr_sqlite::rusqlite::Error) -> Self {
        DbError::Sqlite(e).into()
    }
}

/// Shorthand for PDS results.
pub type PdsResult<T> = Result<T, PdsError>;

/// Most request bodies of callers without a token read at once (each is at
/// most `max_json_bytes`).
const MAX_UNAUTHENTICATED_BODIES: usize = 32;

/// A function told the DID whose credentials were revoked.
pub type RevokeHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The PDS service.
#[derive(Clone)]
pub struct Pds {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PdsConfig,
    db: Db,
    /// Where blob uploads are spooled (beside the database).
    spool: std::path::PathBuf,
    /// Request bodies of unauthenticated callers being read at once.
    unauthenticated_bodies: tokio::sync::Semaphore,
    /// Password hashes computed at once (argon2 is memory- and CPU-hard:
    /// on the blocking pool, never more than the cores).
    hashing: tokio::sync::Semaphore,
    /// Failed `createSession`s per address and account.
    failed_logins: throttle::FailedLogins,
    /// Called with a DID whose credentials were revoked or whose account
    /// was disabled (the registry drops its tokens and cached logins).
    on_revoke: std::sync::RwLock<Vec<RevokeHook>>,
    plc: Arc<dyn PlcDirectory>,
    clock: TidClock,
    /// The newest committed event sequence number (consumers wait on it).
    events: tokio::sync::watch::Sender<i64>,
    /// Event-stream consumers connected at once.
    subscribers: Arc<tokio::sync::Semaphore>,
}

impl Pds {
    /// Opens the PDS database at `path` (created with mode 0600: it holds keys).
    pub fn open(
        cfg: PdsConfig,
        path: &std::path::Path,
        plc: Arc<dyn PlcDirectory>,
    ) -> PdsResult<Self> {
        let db = store::open(path)?;
        let latest = events::max_seq(path)?;
        let spool = path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("pds-spool");
        // Leftovers of uploads interrupted by a crash are garbage.
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool)
            .map_err(|e| DbError::Task(format!("{}: {e}", spool.display())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                spool,
                unauthenticated_bodies: tokio::sync::Semaphore::new(MAX_UNAUTHENTICATED_BODIES),
                hashing: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4)),
                ),
                failed_logins: throttle::FailedLogins::default(),
                on_revoke: std::sync::RwLock::new(vec![]),
                plc,
                clock: TidClock::new(),
                events: tokio::sync::watch::Sender::new(latest),
                subscribers: Arc::new(tokio::sync::Semaphore::new(cfg.max_subscribers)),
                cfg,
            }),
        })
    }

    /// Registers a function called with every DID whose credentials are
    /// revoked (app password revoked, password changed, account disabled).
    pub fn on_revoke(&self, f: RevokeHook) {
        self.inner
            .on_revoke
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Tells every [`Self::on_revoke`] listener that `did`'s credentials
    /// changed.
    pub fn notify_revoked(&self, did: &str) {
        for f in self
            .inner
            .on_revoke
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(did);
        }
    }

    /// Failed-login throttling of `createSession`.
    pub fn failed_logins(&self) -> &throttle::FailedLogins {
        &self.inner.failed_logins
    }

    /// Checks a password against a PHC hash on the blocking pool, a bounded
    /// number at a time.
    pub(crate) async fn password_matches(&self, password: &str, phc: &str) -> bool {
        let Ok(_permit) = self.inner.hashing.acquire().await else {
            return false;
        };
        let (pw, phc) = (password.to_owned(), phc.to_owned());
        tokio::task::spawn_blocking(move || auth::verify_password(&pw, &phc))
            .await
            .unwrap_or(false)
    }

    /// Hashes a password on the blocking pool, a bounded number at a time.
    pub(crate) async fn password_hash(&self, password: &str) -> PdsResult<String> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|_| PdsError(XrpcError::internal()))?;
        let pw = password.to_owned();
        tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .map_err(|_| PdsError(XrpcError::internal()))
    }

    /// The keyed hash an app password is found by.
    pub(crate) fn app_password_lookup(&self, password: &str) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"atcr app password lookup v1\0");
        h.update(&self.inner.cfg.jwt_secret);
        h.update(password.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bound on unauthenticated request bodies read at once.
    pub fn unauthenticated_bodies(&self) -> &tokio::sync::Semaphore {
        &self.inner.unauthenticated_bodies
    }

    /// The configuration.
    pub fn config(&self) -> &PdsConfig {
        &self.inner.cfg
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }
}

//! ATCR configuration.
//!
//! One typed [`Config`], read from a TOML file (optional) and then from
//! `ATCR_<SECTION>_<KEY>` environment variables, which override the file.
//! Unknown keys and bad values are errors that name the file, line and key.
//! [`commented_default`] is what `atcr config init` prints.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use url::Url;

/// Configuration errors, each naming where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The file is not valid TOML or has unknown keys / wrong types.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: usize,
        /// The parser's message (names the key).
        reason: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key (`section.key`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: String,
    /// Public base URL (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Data directory (SQLite databases, blobs).
    pub data_dir: PathBuf,
    /// Most open client connections; more are answered 503.
    pub max_connections: u64,
    /// Seconds a client has to send a request's headers (also how long an
    /// idle kept-alive connection waits for the next request).
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may pause before the request fails.
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may sit with no traffic and no request being
    /// handled (e.g. a client not reading its response) before it is closed.
    pub idle_timeout_secs: u64,
    /// Bytes of an unread request body (answered early, e.g. 401) read and
    /// discarded so the client sees the answer.
    pub drain_limit_bytes: u64,
    /// PEM certificate chain: serve HTTPS (reloaded when the file changes).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For`
    /// names the client; from anyone else the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Log lines as `text` or `json` (one object per line).
    pub log_format: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5000".into(),
            public_url: None,
            data_dir: PathBuf::from("atcr-data"),
            max_connections: 4096,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            idle_timeout_secs: 90,
            drain_limit_bytes: 64 << 20,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: vec![],
            log_format: "text".into(),
        }
    }
}

/// `[pds]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PdsSection {
    /// Run the embedded PDS.
    pub enabled: bool,
    /// Admin password for account management (unset: admin endpoints off).
    pub admin_password: Option<String>,
    /// Domains offered for handles.
    pub handle_domains: Vec<String>,
    /// Key algorithm for new accounts: `k256` or `p256`.
    pub key_alg: String,
    /// Largest blob (bytes).
    pub max_blob_bytes: usize,
    /// How long `subscribeRepos` events stay replayable by cursor (seconds).
    pub firehose_backfill_secs: u64,
    /// Events an event-stream consumer may fall behind, once caught up,
    /// before it is disconnected with `ConsumerTooSlow`.
    pub firehose_max_lag: u64,
    /// Relays (base URLs) asked to crawl this PDS at start
    /// (`com.atproto.sync.requestCrawl`).
    pub crawlers: Vec<String>,
}

impl Default for PdsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_password: None,
            handle_domains: vec![],
            key_alg: "k256".into(),
            max_blob_bytes: 16 * 1024 * 1024,
            firehose_backfill_secs: 72 * 3600,
            firehose_max_lag: 100_000,
            crawlers: vec![],
        }
    }
}

/// `[plc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlcSection {
    /// Run the embedded PLC directory and register new DIDs there.
    pub embedded: bool,
    /// Path prefix of the embedded directory.
    pub prefix: String,
    /// External directory used when `embedded = false`.
    pub url: String,
}

impl Default for PlcSection {
    fn default() -> Self {
        Self {
            embedded: true,
            prefix: "/plc".into(),
            url: "https://plc.directory".into(),
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Lifetime of registry bearer tokens, seconds.
    pub token_ttl_secs: u64,
    /// Let clients without credentials pull.
    pub anonymous_pull: bool,
    /// `OCI-Chunk-Min-Length` advertised for chunked uploads, bytes.
    pub chunk_min_length: u64,
    /// Upload sessions idle for longer than this are discarded, seconds.
    pub upload_ttl_secs: u64,
    /// Most open upload sessions per user.
    pub max_uploads_per_user: u64,
    /// Regular expressions a foreign layer's URL must match one of (none: any).
    pub foreign_layer_urls_allow: Vec<String>,
    /// Regular expressions a foreign layer's URL must match none of.
    pub foreign_layer_urls_deny: Vec<String>,
    /// Non-public networks remote PDSes may be reached on (loopback,
    /// private, link-local are refused otherwise).
    pub remote_pds_allow: Vec<String>,
    /// Follow the owners' PDS event streams, so records changed there with
    /// any client reach the index.
    pub follow_pds: bool,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            token_ttl_secs: 300,
            anonymous_pull: true,
            chunk_min_length: 5 * 1024 * 1024,
            upload_ttl_secs: 24 * 3600,
            remote_pds_allow: vec![],
            follow_pds: true,
            max_uploads_per_user: 100,
            foreign_layer_urls_allow: vec![],
            foreign_layer_urls_deny: vec![],
        }
    }
}

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Serve the web UI and its JSON API.
    pub enabled: bool,
    /// How long a web sign-in lasts, seconds.
    pub session_ttl_secs: u64,
    /// How long a verification badge is shown before the image is verified
    /// again, seconds.
    pub badge_ttl_secs: u64,
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_secs: 7 * 24 * 3600,
            badge_ttl_secs: 300,
        }
    }
}

/// `[index]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSection {
    /// `sqlite` (default) or `postgres`.
    pub backend: String,
    /// PostgreSQL connection URL (`backend = "postgres"`). With
    /// `sslmode=require` the connection uses TLS and the server's
    /// certificate is verified.
    pub postgres_url: Option<String>,
    /// A PEM bundle of CAs trusted for the PostgreSQL server's certificate,
    /// besides the system's (a private CA).
    pub postgres_ca_file: Option<PathBuf>,
    /// Most PostgreSQL connections per process.
    pub pool_size: u64,
    /// Seconds a request waits for a database connection.
    pub timeout_secs: u64,
}

impl Default for IndexSection {
    fn default() -> Self {
        Self {
            backend: "sqlite".into(),
            postgres_url: None,
            postgres_ca_file: None,
            pool_size: 16,
            timeout_secs: 5,
        }
    }
}

/// `[gc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcSection {
    /// Seconds between scheduled runs; 0 turns the schedule off.
    pub interval_secs: u64,
    /// Blobs and links younger than this are never collected, seconds.
    pub grace_secs: u64,
    /// Retention rules (`[[gc.retention]]`), first match applies.
    pub retention: Vec<RetentionSection>,
}

impl Default for GcSection {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            grace_secs: 3600,
            retention: vec![],
        }
    }
}

/// `[[gc.retention]]`: what to keep in repositories matching a pattern.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Glob over `owner/repo` (`*` within a segment, `**` across).
    pub repository: String,
    /// Keep this many most recently pushed tags.
    pub keep_last: Option<u64>,
    /// Keep tags matching this regular expression.
    pub keep_tags: Option<String>,
    /// Delete manifests no kept tag holds once this old, seconds.
    pub untagged_older_than_secs: Option<u64>,
    /// Apply the rule (otherwise runs only report what it would delete).
    pub enforce: bool,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `local` or `s3`.
    pub backend: String,
    /// Local blob directory (default `<data_dir>/blobs`).
    pub path: Option<PathBuf>,
    /// S3 endpoint URL (unset: AWS).
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    pub s3_bucket: String,
    /// S3 region.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key_id: String,
    /// S3 secret access key.
    pub s3_secret_access_key: String,
    /// Path-style addressing.
    pub s3_path_style: bool,
    /// Redirect blob GETs to presigned URLs.
    pub s3_redirect: bool,
    /// Presigned URL lifetime, seconds.
    pub s3_presign_ttl_secs: u64,
    /// Multipart part size, bytes (≥ 5 MiB).
    pub s3_part_size: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            path: None,
            s3_endpoint: None,
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: true,
            s3_redirect: false,
            s3_presign_ttl_secs: 900,
            s3_part_size: 16 * 1024 * 1024,
        }
    }
}

/// `[identity]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Allow plain-http did:web, handle and PLC lookups of non-loopback hosts.
    pub allow_plain_http: bool,
    /// `host=ip:port` pairs used instead of DNS for HTTP lookups.
    pub host_overrides: Vec<String>,
    /// DNS servers (`ip:port`) for handle TXT lookups (empty: system).
    pub dns_nameservers: Vec<String>,
    /// Cache lifetime of resolved identities, seconds.
    pub cache_ttl_secs: u64,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            allow_plain_http: false,
            host_overrides: vec![],
            dns_nameservers: vec![],
            cache_ttl_secs: 300,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening and storage.
    pub server: ServerConfig,
    /// The embedded PDS.
    pub pds: PdsSection,
    /// The PLC directory.
    pub plc: PlcSection,
    /// The OCI registry.
    pub registry: RegistrySection,
    /// Blob storage.
    pub storage: StorageSection,
    /// Identity resolution.
    pub identity: IdentitySection,
    /// Garbage collection and retention.
    pub gc: GcSection,
    /// The registry index database.
    pub index: IndexSection,
    /// The web UI.
    pub web: WebSection,
}

/// Environment prefixes of the configuration sections.
const SECTIONS: [&str; 9] = [
    "INDEX_",
    "WEB_",
    "SERVER_",
    "PDS_",
    "PLC_",
    "REGISTRY_",
    "STORAGE_",
    "IDENTITY_",
    "GC_",
];

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Loads `path` (if given), applies `ATCR_*` variables from `env`, validates.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    line: e.span().map_or(1, |s| line_of(&text, s.start)),
                    reason: e.message().to_owned(),
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (var, value) in env {
            let Some(key) = var.strip_prefix("ATCR_") else {
                continue;
            };
            let bad = |reason: &str| ConfigError::Env {
                var: var.clone(),
                reason: reason.to_owned(),
            };
            let parse_bool = |v: &str| match v {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(bad("expected true or false")),
            };
            let num = |v: &str| v.parse::<u64>().map_err(|_| bad("expected a whole number"));
            let list = |v: &str| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            match key {
                "SERVER_LISTEN" => self.server.listen = value.clone(),
                "SERVER_PUBLIC_URL" => self.server.public_url = Some(value.clone()),
                "SERVER_DATA_DIR" => self.server.data_dir = PathBuf::from(value),
                "SERVER_MAX_CONNECTIONS" => self.server.max_connections = num(value)?,
                "SERVER_HEADER_READ_TIMEOUT_SECS" => {
                    self.server.header_read_timeout_secs = num(value)?
                }
                "SERVER_BODY_READ_TIMEOUT_SECS" => self.server.body_read_timeout_secs = num(value)?,
                "SERVER_IDLE_TIMEOUT_SECS" => self.server.idle_timeout_secs = num(value)?,
                "SERVER_DRAIN_LIMIT_BYTES" => self.server.drain_limit_bytes = num(value)?,
                "SERVER_TLS_CERT" => self.server.tls_cert = Some(PathBuf::from(value)),
                "SERVER_TLS_KEY" => self.server.tls_key = Some(PathBuf::from(value)),
                "SERVER_TRUSTED_PROXIES" => self.server.trusted_proxies = list(value),
                "SERVER_LOG_FORMAT" => self.server.log_format = value.clone(),
                "PDS_ENABLED" => self.pds.enabled = parse_bool(value)?,
                "PDS_ADMIN_PASSWORD" => self.pds.admin_password = Some(value.clone()),
                "PDS_HANDLE_DOMAINS" => self.pds.handle_domains = list(value),
                "PDS_KEY_ALG" => self.pds.key_alg = value.clone(),
                "PDS_MAX_BLOB_BYTES" => {
                    self.pds.max_blob_bytes =
                        value.parse().map_err(|_| bad("expected a byte count"))?
                }
                "PDS_FIREHOSE_BACKFILL_SECS" => self.pds.firehose_backfill_secs = num(value)?,
                "PDS_FIREHOSE_MAX_LAG" => self.pds.firehose_max_lag = num(value)?,
                "PDS_CRAWLERS" => self.pds.crawlers = list(value),
                "PLC_EMBEDDED" => self.plc.embedded = parse_bool(value)?,
                "PLC_PREFIX" => self.plc.prefix = value.clone(),
                "PLC_URL" => self.plc.url = value.clone(),
                "REGISTRY_TOKEN_TTL_SECS" => self.registry.token_ttl_secs = num(value)?,
                "REGISTRY_ANONYMOUS_PULL" => self.registry.anonymous_pull = parse_bool(value)?,
                "REGISTRY_FOLLOW_PDS" => self.registry.follow_pds = parse_bool(value)?,
                "REGISTRY_CHUNK_MIN_LENGTH" => self.registry.chunk_min_length = num(value)?,
                "REGISTRY_UPLOAD_TTL_SECS" => self.registry.upload_ttl_secs = num(value)?,
                "REGISTRY_REMOTE_PDS_ALLOW" => self.registry.remote_pds_allow = list(value),
                "REGISTRY_MAX_UPLOADS_PER_USER" => self.registry.max_uploads_per_user = num(value)?,
                "REGISTRY_FOREIGN_LAYER_URLS_ALLOW" => {
                    self.registry.foreign_layer_urls_allow = list(value)
                }
                "REGISTRY_FOREIGN_LAYER_URLS_DENY" => {
                    self.registry.foreign_layer_urls_deny = list(value)
                }
                "STORAGE_BACKEND" => self.storage.backend = value.clone(),
                "STORAGE_PATH" => self.storage.path = Some(PathBuf::from(value)),
                "STORAGE_S3_ENDPOINT" => self.storage.s3_endpoint = Some(value.clone()),
                "STORAGE_S3_BUCKET" => self.storage.s3_bucket = value.clone(),
                "STORAGE_S3_REGION" => self.storage.s3_region = value.clone(),
                "STORAGE_S3_ACCESS_KEY_ID" => self.storage.s3_access_key_id = value.clone(),
                "STORAGE_S3_SECRET_ACCESS_KEY" => self.storage.s3_secret_access_key = value.clone(),
                "STORAGE_S3_PATH_STYLE" => self.storage.s3_path_style = parse_bool(value)?,
                "STORAGE_S3_REDIRECT" => self.storage.s3_redirect = parse_bool(value)?,
                "STORAGE_S3_PRESIGN_TTL_SECS" => self.storage.s3_presign_ttl_secs = num(value)?,
                "STORAGE_S3_PART_SIZE" => self.storage.s3_part_size = num(value)? as usize,
                "IDENTITY_ALLOW_PLAIN_HTTP" => self.identity.allow_plain_http = parse_bool(value)?,
                "IDENTITY_HOST_OVERRIDES" => self.identity.host_overrides = list(value),
                "IDENTITY_DNS_NAMESERVERS" => self.identity.dns_nameservers = list(value),
                "IDENTITY_CACHE_TTL_SECS" => self.identity.cache_ttl_secs = num(value)?,
                "GC_INTERVAL_SECS" => self.gc.interval_secs = num(value)?,
                "GC_GRACE_SECS" => self.gc.grace_secs = num(value)?,
                "INDEX_BACKEND" => self.index.backend = value.clone(),
                "INDEX_POSTGRES_URL" => self.index.postgres_url = Some(value.clone()),
                "INDEX_POSTGRES_CA_FILE" => self.index.postgres_ca_file = Some(value.into()),
                "INDEX_POOL_SIZE" => self.index.pool_size = num(value)?,
                "INDEX_TIMEOUT_SECS" => self.index.timeout_secs = num(value)?,
                "WEB_ENABLED" => self.web.enabled = parse_bool(value)?,
                "WEB_SESSION_TTL_SECS" => self.web.session_ttl_secs = num(value)?,
                "WEB_BADGE_TTL_SECS" => self.web.badge_ttl_secs = num(value)?,
                // A typo inside a configuration section is an error; other
                // ATCR_* variables (ATCR_CONFIG, ATCR_LOG, command flags such as
                // ATCR_ACCOUNT_PASSWORD, tooling) are not configuration keys.
                k if SECTIONS.iter().any(|s| k.starts_with(s)) => {
                    return Err(bad("unknown setting (see `atcr config init`)"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                invalid(
                    "server.listen",
                    format!("{:?} is not host:port ({e})", self.server.listen),
                )
            })?;
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "server.log_format",
                format!(
                    "{:?}: expected \"text\" or \"json\"",
                    self.server.log_format
                ),
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                if self.server.tls_cert.is_some() {
                    "server.tls_key"
                } else {
                    "server.tls_cert"
                },
                "set both server.tls_cert and server.tls_key to serve HTTPS".into(),
            ));
        }
        self.public_url()?;
        for (key, v) in [
            ("server.max_connections", self.server.max_connections),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("web.session_ttl_secs", self.web.session_ttl_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.gc.grace_secs == 0 {
            return Err(invalid(
                "gc.grace_secs",
                "must be at least 1 (pushes rely on blobs they uploaded moments ago)".into(),
            ));
        }
        for (i, r) in self.gc.retention.iter().enumerate() {
            if r.repository.is_empty() {
                return Err(invalid(
                    &format!("gc.retention[{i}].repository"),
                    "a pattern is required (\"**\" for every repository)".into(),
                ));
            }
            if r.keep_last.is_none()
                && r.keep_tags.is_none()
                && r.untagged_older_than_secs.is_none()
            {
                return Err(invalid(
                    &format!("gc.retention[{i}]"),
                    "set keep_last, keep_tags or untagged_older_than_secs".into(),
                ));
            }
        }
        if !matches!(self.pds.key_alg.as_str(), "k256" | "p256") {
            return Err(invalid(
                "pds.key_alg",
                format!("{:?}: expected k256 or p256", self.pds.key_alg),
            ));
        }
        if !self.plc.prefix.starts_with('/')
            || self.plc.prefix.len() < 2
            || self.plc.prefix.ends_with('/')
        {
            return Err(invalid(
                "plc.prefix",
                format!("{:?}: expected a path like /plc", self.plc.prefix),
            ));
        }
        Url::parse(&self.plc.url).map_err(|e| invalid("plc.url", e.to_string()))?;
        match self.storage.backend.as_str() {
            "local" => {}
            "s3" => {
                if self.storage.s3_bucket.is_empty() {
                    return Err(invalid(
                        "storage.s3_bucket",
                        "required with backend = \"s3\"".into(),
                    ));
                }
                if self.storage.s3_part_size < 5 * 1024 * 1024 {
                    return Err(invalid(
                        "storage.s3_part_size",
                        "must be at least 5 MiB (5242880)".into(),
                    ));
                }
                if let Some(ep) = &self.storage.s3_endpoint {
                    Url::parse(ep).map_err(|e| invalid("storage.s3_endpoint", e.to_string()))?;
                }
            }
            other => {
                return Err(invalid(
                    "storage.backend",
                    format!("{other:?}: expected \"local\" or \"s3\""),
                ));
            }
        }
        match (self.index.backend.as_str(), &self.index.postgres_url) {
            ("sqlite", _) => {}
            ("postgres", None) => {
                return Err(invalid(
                    "index.postgres_url",
                    "required with backend = \"postgres\"".into(),
                ));
            }
            ("postgres", Some(_)) => {
                for (key, v) in [
                    ("index.pool_size", self.index.pool_size),
                    ("index.timeout_secs", self.index.timeout_secs),
                ] {
                    if v == 0 {
                        return Err(invalid(key, "must be at least 1".into()));
                    }
                }
            }
            (other, _) => {
                return Err(invalid(
                    "index.backend",
                    format!("{other:?}: expected \"sqlite\" or \"postgres\""),
                ));
            }
        }
        if self.registry.token_ttl_secs == 0 || self.registry.token_ttl_secs > 86_400 {
            return Err(invalid(
                "registry.token_ttl_secs",
                "must be 1 to 86400".into(),
            ));
        }
        for o in &self.identity.host_overrides {
            let ok = o
                .split_once('=')
                .is_some_and(|(h, a)| !h.is_empty() && a.parse::<std::net::SocketAddr>().is_ok());
            if !ok {
                return Err(invalid(
                    "identity.host_overrides",
                    format!("{o:?}: expected host=ip:port"),
                ));
            }
        }
        for n in &self.identity.dns_nameservers {
            n.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(
                    "identity.dns_nameservers",
                    format!("{n:?}: expected ip:port"),
                )
            })?;
        }
        Ok(())
    }

    /// The public base URL.
    pub fn public_url(&self) -> Result<Url, ConfigError> {
        let scheme = if self.tls() { "https" } else { "http" };
        let s = match &self.server.public_url {
            Some(u) => u.clone(),
            None => {
                // Every address is not an address clients can use.
                if let Ok(a) = self.server.listen.parse::<std::net::SocketAddr>()
                    && a.ip().is_unspecified()
                {
                    return Err(ConfigError::Invalid {
                        key: "server.public_url".into(),
                        reason: format!(
                            "server.listen {} accepts connections on every address; set server.public_url to the URL clients use, e.g. {scheme}://registry.example.com:{}",
                            self.server.listen,
                            a.port()
                        ),
                    });
                }
                format!("{scheme}://{}", self.server.listen)
            }
        };
        let url = Url::parse(&s).map_err(|e| ConfigError::Invalid {
            key: "server.public_url".into(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::Invalid {
                key: "server.public_url".into(),
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(url)
    }

    /// Whether the server serves HTTPS itself.
    pub fn tls(&self) -> bool {
        self.server.tls_cert.is_some() && self.server.tls_key.is_some()
    }

    /// The PLC directory URL new DIDs are registered at and resolved from.
    pub fn plc_url(&self) -> Result<Url, ConfigError> {
        if self.plc.embedded {
            let base = self.public_url()?;
            Ok(Url::parse(&format!(
                "{}{}",
                base.as_str().trim_end_matches('/'),
                self.plc.prefix
            ))
            .expect("validated parts"))
        } else {
            Url::parse(&self.plc.url).map_err(|e| ConfigError::Invalid {
                key: "plc.url".into(),
                reason: e.to_string(),
            })
        }
    }
}

/// The fully commented default configuration (`atcr config init`).
pub fn commented_default() -> &'static str {
    include_str!("../default.toml")
}

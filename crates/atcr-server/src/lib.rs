//! Assembles ATCR's services from a [`Config`].
//!
//! * The data directory (mode 0700) holds `pds.sqlite` (mode 0600: private
//!   keys), `plc.sqlite` and `secret` (the session-token key, generated once).
//! * [`Services::open`] opens the embedded PLC directory (when configured) and
//!   the PDS, which registers DIDs at the embedded directory or at the
//!   configured external one.
//! * [`Services::router`] mounts `/xrpc/*`, `/.well-known/atproto-did` and the
//!   directory under its prefix; [`serve`] runs it until shutdown.

pub mod admin;
pub mod backup;
pub mod observe;
pub mod rebuild;

use atcr_config::Config;
use atcr_pds::{Pds, PdsConfig};
use atcr_plc::PlcDirectory;
use atcr_plc_server::{Directory, RemotePlc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] atcr_config::ConfigError),
    /// The data directory or a file in it.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A service failed to open.
    #[error("{0}")]
    Service(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Creates the data directory with owner-only permissions.
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(dir, e))?;
    }
    dir.canonicalize().map_err(|e| io(dir, e))
}

/// Reads the session-token secret, creating it (atomically, mode 0600) on first start.
fn secret(dir: &Path) -> Result<Vec<u8>, ServerError> {
    let path = dir.join("secret");
    if let Ok(s) = std::fs::read(&path) {
        if s.len() >= 32 {
            return Ok(s);
        }
        return Err(io(&path, "secret file is shorter than 32 bytes"));
    }
    use rand::RngCore;
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    let tmp = dir.join("secret.tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&s)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(s)
}

/// Opens the registry index `[index]` names: `<data_dir>/registry.sqlite`,
/// or the PostgreSQL database shared by replicas (migrated on open).
async fn open_index(
    config: &Config,
    dir: &Path,
) -> Result<atcr_registry::index::Index, ServerError> {
    match (config.index.backend.as_str(), &config.index.postgres_url) {
        ("postgres", Some(url)) => {
            let opts = atcr_sql::PgOptions {
                url: url.clone(),
                pool_size: usize::try_from(config.index.pool_size).unwrap_or(usize::MAX),
                timeout: Duration::from_secs(config.index.timeout_secs),
                ca_file: config.index.postgres_ca_file.clone(),
            };
            atcr_registry::index::Index::postgres(&opts)
                .await
                .map_err(|e| {
                    ServerError::Service(format!(
                        "registry index on PostgreSQL (index.postgres_url): {e}"
                    ))
                })
        }
        _ => atcr_registry::index::Index::open(&dir.join("registry.sqlite"))
            .map_err(|e| ServerError::Service(format!("registry index: {e}"))),
    }
}

/// What every replica on a shared index does besides serving: every second
/// it applies the revocations others recorded; every 5 seconds it settles
/// journal entries left open by a replica that died mid-push.
async fn replica_duties(reg: atcr_registry::Registry) {
    let mut since = 0i64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        match reg.sync_revocations(since).await {
            // Re-read a minute back: replicas' clocks may differ a little.
            Ok(newest) => since = newest.saturating_sub(60).max(since),
            Err(e) => tracing::warn!(target: "atcr::auth", "reading revocations: {}", e),
        }
        if n % 5 == 0 {
            match reg.recover_journal().await {
                Ok((0, 0)) => {}
                Ok((done, dropped)) => tracing::info!(
                    "settled journal entries of another replica: {done} completed, {dropped} dropped"
                ),
                Err(e) => tracing::warn!("settling the journal: {}", e),
            }
        }
    }
}

/// The running services.
#[derive(Clone)]
pub struct Services {
    /// The configuration.
    pub config: Config,
    /// The embedded PDS, if enabled.
    pub pds: Option<Pds>,
    /// The embedded PLC directory, if enabled.
    pub plc: Option<Directory>,
    /// The OCI registry.
    pub registry: atcr_registry::Registry,
    /// Request metrics (`/metrics`).
    pub metrics: Arc<observe::Metrics>,
    /// The web UI, if enabled.
    pub web: Option<atcr_web::Web>,
}

fn blob_store(config: &Config, dir: &Path) -> Result<atcr_blobstore::BlobStore, ServerError> {
    let st = &config.storage;
    let cfg = match st.backend.as_str() {
        "s3" => atcr_blobstore::StoreConfig::S3 {
            s3: atcr_blobstore::S3Config {
                endpoint: st.s3_endpoint.clone(),
                bucket: st.s3_bucket.clone(),
                region: st.s3_region.clone(),
                access_key_id: st.s3_access_key_id.clone(),
                secret_access_key: st.s3_secret_access_key.clone(),
                path_style: st.s3_path_style,
                redirect: st.s3_redirect,
                presign_ttl: Duration::from_secs(st.s3_presign_ttl_secs),
                part_size: st.s3_part_size,
                // Replicas on a shared index continue each other's uploads.
                shared_uploads: config.index.backend == "postgres",
            },
            spool: dir.join("upload-spool"),
        },
        _ => {
            atcr_blobstore::StoreConfig::Local(st.path.clone().unwrap_or_else(|| dir.join("blobs")))
        }
    };
    atcr_blobstore::BlobStore::open(&cfg)
        .map_err(|e| ServerError::Service(format!("blob storage: {e}")))
}

fn resolver_config(config: &Config) -> Result<atcr_identity::ResolverConfig, ServerError> {
    let id = &config.identity;
    // The embedded directory is reached at the public URL: plain http off
    // loopback needs TLS or an explicit opt-in, named here.
    let plc = config.plc_url()?;
    if config.plc.embedded
        && plc.scheme() == "http"
        && !id.allow_plain_http
        && !matches!(plc.host(), Some(url::Host::Ipv4(a)) if a.is_loopback())
        && !matches!(plc.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
        && plc.host_str() != Some("localhost")
    {
        return Err(ServerError::Service(format!(
            "server.public_url {} is plain http off loopback: serve HTTPS (server.tls_cert and server.tls_key, or a TLS reverse proxy with an https server.public_url), or allow plain http on a trusted network (identity.allow_plain_http = true)",
            config.public_url()?
        )));
    }
    let rc = atcr_identity::ResolverConfig {
        plc_url: config.plc_url()?,
        allow_plain_http: id.allow_plain_http,
        dns_nameservers: id
            .dns_nameservers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        host_overrides: id
            .host_overrides
            .iter()
            .filter_map(|o| {
                let (h, a) = o.split_once('=')?;
                Some((h.to_owned(), a.parse().ok()?))
            })
            .collect(),
        cache_ttl: Duration::from_secs(id.cache_ttl_secs),
        ..Default::default()
    };
    Ok(rc)
}

fn resolver(config: &Config) -> Result<atcr_identity::IdentityResolver, ServerError> {
    atcr_identity::IdentityResolver::new(resolver_config(config)?)
        .map_err(|e| ServerError::Service(format!("identity resolver: {e}")))
}

/// The web UI (`[web]`), its badges computed by the shared verifier over
/// this registry's public URL: the same check `atcr-verify` makes.
fn web(
    config: &Config,
    registry: &atcr_registry::Registry,
) -> Result<Option<atcr_web::Web>, ServerError> {
    if !config.web.enabled {
        return Ok(None);
    }
    let public_url = config.public_url()?;
    let loopback = match public_url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let (verifier, why_not) = if !config.registry.anonymous_pull {
        (
            None,
            "pulling needs credentials here (registry.anonymous_pull = false)",
        )
    } else if public_url.scheme() == "http" && !loopback {
        (
            None,
            "the registry is served over plain http off loopback (serve HTTPS: server.tls_cert)",
        )
    } else {
        let cfg = atcr_verify::VerifierConfig {
            identity: resolver_config(config)?,
            plain_http_loopback: true,
            ..Default::default()
        };
        let v = atcr_verify::Verifier::new(cfg)
            .map_err(|e| ServerError::Service(format!("web UI verifier: {e}")))?;
        (Some(v), "")
    };
    let cfg = atcr_web::WebConfig {
        public_url,
        session_ttl: Duration::from_secs(config.web.session_ttl_secs),
        badge_ttl: Duration::from_secs(config.web.badge_ttl_secs),
        public: config.registry.anonymous_pull,
    };
    atcr_web::Web::new(registry.clone(), cfg, verifier, why_not)
        .map(Some)
        .map_err(|e| ServerError::Service(format!("web UI: {e}")))
}

fn regexes(key: &str, list: &[String]) -> Result<Vec<regex::Regex>, ServerError> {
    list.iter()
        .map(|r| {
            regex::Regex::new(r).map_err(|e| ServerError::Service(format!("{key}: {r:?}: {e}")))
        })
        .collect()
}

/// The registry's GC settings from `[gc]`, with patterns compiled.
fn gc_config(config: &Config) -> Result<atcr_registry::gc::GcConfig, ServerError> {
    let mut retention = vec![];
    for (i, r) in config.gc.retention.iter().enumerate() {
        let key = format!("gc.retention[{i}]");
        let mut rule = atcr_registry::gc::RetentionRule::new(&r.repository)
            .map_err(|e| ServerError::Service(format!("{key}.repository: {e}")))?;
        rule.keep_last = r.keep_last.map(|n| n as usize);
        rule.keep_tags = regexes(&format!("{key}.keep_tags"), r.keep_tags.as_slice())?
            .into_iter()
            .next();
        rule.untagged_older_than = r.untagged_older_than_secs.map(Duration::from_secs);
        rule.enforce = r.enforce;
        retention.push(rule);
    }
    Ok(atcr_registry::gc::GcConfig {
        grace: Duration::from_secs(config.gc.grace_secs),
        retention,
    })
}

impl Services {
    /// Opens every configured service over the data directory.
    pub async fn open(config: Config) -> Result<Self, ServerError> {
        let dir = prepare_data_dir(&config.server.data_dir)?;
        let plc = if config.plc.embedded {
            Some(
                Directory::open(&dir.join("plc.sqlite"))
                    .map_err(|e| ServerError::Service(format!("PLC directory: {e}")))?,
            )
        } else {
            None
        };
        let pds = if config.pds.enabled {
            let mut pc = PdsConfig::new(config.public_url()?, secret(&dir)?);
            pc.admin_password = config.pds.admin_password.clone();
            pc.handle_domains = config.pds.handle_domains.clone();
            pc.default_key_alg = config
                .pds
                .key_alg
                .parse()
                .map_err(|e| ServerError::Service(format!("pds.key_alg: {e}")))?;
            pc.max_blob_bytes = config.pds.max_blob_bytes;
            pc.backfill = Duration::from_secs(config.pds.firehose_backfill_secs);
            pc.max_consumer_lag =
                i64::try_from(config.pds.firehose_max_lag.max(1)).unwrap_or(i64::MAX);
            pc.crawlers = config
                .pds
                .crawlers
                .iter()
                .map(|u| {
                    u.parse()
                        .map_err(|e| ServerError::Service(format!("pds.crawlers: {u}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            let directory: Arc<dyn PlcDirectory> = match &plc {
                Some(d) => Arc::new(d.clone()),
                None => Arc::new(RemotePlc::new(
                    config.plc_url()?,
                    atcr_http::client(Duration::from_secs(15)),
                )),
            };
            Some(
                Pds::open(pc, &dir.join("pds.sqlite"), directory)
                    .map_err(|e| ServerError::Service(format!("PDS: {e}")))?,
            )
        } else {
            None
        };
        let index = open_index(&config, &dir).await?;
        let mut secret = secret(&dir)?;
        if index.shared() {
            // Replicas accept each other's tokens: the first replica's
            // secret becomes everyone's, kept in the shared index.
            secret = index
                .shared_secret(secret)
                .await
                .map_err(|e| ServerError::Service(format!("registry index: {e}")))?;
        }
        let reg_cfg = atcr_registry::RegistryConfig {
            public_url: config.public_url()?,
            secret,
            token_ttl: Duration::from_secs(config.registry.token_ttl_secs),
            anonymous_pull: config.registry.anonymous_pull,
            chunk_min_length: config.registry.chunk_min_length,
            upload_ttl: Duration::from_secs(config.registry.upload_ttl_secs),
            max_uploads_per_user: config.registry.max_uploads_per_user,
            foreign_urls: atcr_registry::ForeignUrls {
                allow: regexes(
                    "registry.foreign_layer_urls_allow",
                    &config.registry.foreign_layer_urls_allow,
                )?,
                deny: regexes(
                    "registry.foreign_layer_urls_deny",
                    &config.registry.foreign_layer_urls_deny,
                )?,
            },
            gc: gc_config(&config)?,
            egress: atcr_registry::egress::Egress {
                allow_plain_http: config.identity.allow_plain_http,
                allow: atcr_registry::egress::parse_networks(&config.registry.remote_pds_allow)
                    .map_err(|e| ServerError::Service(format!("registry.remote_pds_allow: {e}")))?,
                ..Default::default()
            },
        };
        let registry = atcr_registry::Registry::open(
            reg_cfg,
            index,
            blob_store(&config, &dir)?,
            pds.clone(),
            resolver(&config)?,
        )
        .map_err(|e| ServerError::Service(format!("registry: {e}")))?;
        let metrics = observe::Metrics::new();
        for c in registry.metrics().collectors() {
            metrics.register(c);
        }
        let metrics = Arc::new(metrics);
        let web = web(&config, &registry)?;
        Ok(Self {
            config,
            pds,
            plc,
            registry,
            metrics,
            web,
        })
    }

    /// Start-up reconciliation of the registry with the PDSes (see
    /// [`atcr_registry::Registry::recover`]).
    pub async fn recover(&self) -> Result<(), ServerError> {
        let (done, dropped, sessions) = self
            .registry
            .recover()
            .await
            .map_err(|e| ServerError::Service(format!("registry recovery: {e}")))?;
        if done + dropped > 0 {
            tracing::info!(
                "recovered {done} interrupted record writes, dropped {dropped} that never committed"
            );
        }
        tracing::debug!("{sessions} upload sessions resumable");
        Ok(())
    }

    /// The HTTP routes of every enabled service.
    pub fn router(&self) -> axum::Router {
        // Who a request's token belongs to, for the access log: a registry
        // token or a PDS session, verified; anything else is nobody.
        let (reg, pds) = (self.registry.clone(), self.pds.clone());
        let identify: observe::Identify = Arc::new(move |h: &axum::http::HeaderMap| {
            let t = h
                .get(axum::http::header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")?
                .trim();
            if let Some(c) = reg.verify_token(t) {
                return Some(c.sub).filter(|s| !s.is_empty());
            }
            let pds = pds.as_ref()?;
            pds.verify_token(
                t,
                &[
                    atcr_pds::AuthScope::Access,
                    atcr_pds::AuthScope::AppPass,
                    atcr_pds::AuthScope::Refresh,
                ],
            )
            .ok()
            .map(|c| c.sub)
        });
        let obs = observe::Observe {
            metrics: self.metrics.clone(),
            identify,
        };
        // Start-up reconciliation runs before the first request is served,
        // so answering at all means ready.
        let mut app = axum::Router::new()
            .route("/_health", axum::routing::get(|| async { "ok" }))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ready" }))
            .route(
                "/metrics",
                axum::routing::get(observe::metrics).with_state(obs.clone()),
            )
            .merge(atcr_registry::routes::router(self.registry.clone()));
        if let Some(pds) = &self.pds {
            app = app.merge(atcr_pds::routes::router(pds.clone()));
        }
        if let Some(web) = &self.web {
            app = app.merge(atcr_web::router(web.clone()));
        }
        if let Some(plc) = &self.plc {
            app = app.nest(
                &self.config.plc.prefix,
                atcr_plc_server::router(plc.clone()),
            );
        }
        app.layer(axum::middleware::from_fn_with_state(obs, observe::layer))
    }
}

/// Serves on the configured address until `shutdown` completes.
pub async fn serve(
    services: Services,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = services.config.server.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServerError::Service(format!("cannot listen on {addr}: {e}")))?;
    serve_on(listener, services, shutdown).await
}

/// Aborts a background task when dropped (also on an early error return).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks each of `pds.crawlers` to crawl this PDS
/// (`com.atproto.sync.requestCrawl`), retrying a failed relay a few times.
async fn request_crawl(pds: Pds) {
    let url = &pds.config().public_url;
    let hostname = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return,
    };
    let http = atcr_http::client(Duration::from_secs(15));
    for relay in &pds.config().crawlers {
        let Ok(endpoint) = relay.join("xrpc/com.atproto.sync.requestCrawl") else {
            continue;
        };
        for attempt in 0..4u32 {
            let r = http
                .post(endpoint.clone())
                .json(&serde_json::json!({ "hostname": hostname }))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(%relay, "requested a crawl");
                    break;
                }
                Ok(r) => {
                    tracing::warn!(%relay, status = %r.status(), "requestCrawl refused (pds.crawlers)")
                }
                Err(e) => tracing::warn!(%relay, "requestCrawl: {e} (pds.crawlers)"),
            }
            tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
        }
    }
}

/// Serves on an already bound listener.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    services: Services,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    services.recover().await?;
    let admin = admin::spawn(services.clone(), &services.config.server.data_dir)
        .map(AbortOnDrop)
        .map_err(|e| {
            ServerError::Service(format!(
                "{}: {e}",
                services
                    .config
                    .server
                    .data_dir
                    .join(admin::SOCKET)
                    .display()
            ))
        })?;
    // Idle upload sessions are removed while serving, not only at start.
    let sweeper = AbortOnDrop({
        let reg = services.registry.clone();
        let every = (Duration::from_secs(services.config.registry.upload_ttl_secs) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(300));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match reg.expire_uploads().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("removed {n} idle upload sessions"),
                    Err(e) => tracing::warn!("removing idle upload sessions: {e}"),
                }
            }
        })
    });
    // Replicas sharing a PostgreSQL index: apply each other's credential
    // revocations, and settle the journal entries of a replica that died.
    let _replica = services.registry.index().shared().then(|| {
        let reg = services.registry.clone();
        AbortOnDrop(tokio::spawn(replica_duties(reg)))
    });
    // Scheduled garbage collection (`gc.interval_secs`; 0: off).
    let collector = (services.config.gc.interval_secs > 0).then(|| {
        AbortOnDrop({
            let reg = services.registry.clone();
            let every = Duration::from_secs(services.config.gc.interval_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = reg.gc(false).await {
                        tracing::warn!(target: "atcr::gc", "garbage collection: {}", e);
                    }
                }
            })
        })
    });
    // The index follows what happens in the embedded PDS: records changed
    // there with any ATProto client reach the registry.
    let follow = services.config.registry.follow_pds;
    let _follower = services.pds.as_ref().filter(|_| follow).map(|_| {
        let reg = services.registry.clone();
        AbortOnDrop(tokio::spawn(async move { reg.follow_embedded().await }))
    });
    // And the event streams of the remote PDSes owners log in with.
    let _remote_follower = follow.then(|| {
        let reg = services.registry.clone();
        AbortOnDrop(tokio::spawn(async move { reg.follow_remote().await }))
    });
    // Relays are asked to crawl the embedded PDS (`pds.crawlers`).
    let _crawl = services
        .pds
        .as_ref()
        .filter(|p| !p.config().crawlers.is_empty())
        .map(|pds| AbortOnDrop(tokio::spawn(request_crawl(pds.clone()))));
    let sc = &services.config.server;
    let trusted_proxies = sc
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ServerError::Service(format!(
                        "server.trusted_proxies: {p:?} is not an address or a network"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match (&sc.tls_cert, &sc.tls_key) {
        (Some(cert), Some(key)) => Some(
            atcr_serve::tls::Acceptor::new(
                &atcr_serve::tls::TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: None,
                    tls13_only: false,
                },
                Duration::from_secs(2),
            )
            .map_err(|e| ServerError::Service(format!("server.tls_cert / server.tls_key: {e}")))?,
        ),
        _ => None,
    };
    let limits = atcr_serve::Limits {
        max_connections: usize::try_from(sc.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(sc.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(sc.body_read_timeout_secs),
        idle_timeout: Duration::from_secs(sc.idle_timeout_secs),
        drain_limit: sc.drain_limit_bytes,
        trusted_proxies,
        ..atcr_serve::Limits::default()
    };
    atcr_serve::serve(listener, services.router(), limits, tls, shutdown).await;
    drop((sweeper, collector, admin));
    let _ = std::fs::remove_file(services.config.server.data_dir.join(admin::SOCKET));
    Ok(())
}

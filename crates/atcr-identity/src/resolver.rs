use crate::{DidDocument, IdentityError, TtlCache};
use atcr_crypto::PublicKey;
use atcr_fetch::{Fetch, FetchError, Online, OnlineConfig, Request};
use atcr_syntax::{AtIdentifier, Did, Handle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Where and how identities are resolved.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// PLC directory base URL (default `https://plc.directory`).
    pub plc_url: Url,
    /// Use `http://` for did:web and handle well-known lookups of non-loopback
    /// hosts, and accept an `http://` PLC URL on any host. Off by default;
    /// loopback hosts always use plain http.
    pub allow_plain_http: bool,
    /// DNS servers for handle TXT lookups (empty: the system's resolv.conf).
    pub dns_nameservers: Vec<SocketAddr>,
    /// Static host → address mappings for HTTP lookups (like `curl --resolve`).
    pub host_overrides: Vec<(String, SocketAddr)>,
    /// Timeout of each HTTP request and DNS query.
    pub timeout: Duration,
    /// How long resolved documents and handles are cached (zero disables).
    pub cache_ttl: Duration,
    /// Most cached entries of each kind.
    pub cache_capacity: usize,
    /// Largest DID document, audit log or well-known response accepted.
    pub max_response_bytes: usize,
    /// Resolve did:plc from the directory's signed operation log
    /// (`/{did}/log/audit`, every signature and `prev` link replayed) instead
    /// of trusting its rendered document. On by default.
    pub audit_plc_log: bool,
    /// Trusted handle resolvers for private deployments: a handle under one
    /// of `domains` is resolved by asking `url`
    /// (`com.atproto.identity.resolveHandle`) instead of DNS and HTTPS. The
    /// DID document must still list the handle back.
    pub handle_resolvers: Vec<HandleResolver>,
}

/// A handle resolver trusted for some domains (see
/// [`ResolverConfig::handle_resolvers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleResolver {
    /// Domains it answers for: `test` covers `alice.test` and `a.b.test`.
    pub domains: Vec<String>,
    /// Base URL of a server implementing `com.atproto.identity.resolveHandle`.
    pub url: Url,
}

impl HandleResolver {
    /// Whether it answers for `handle` (normalised).
    pub fn covers(&self, handle: &str) -> bool {
        self.domains.iter().any(|d| {
            let d = d.trim_start_matches('.').to_ascii_lowercase();
            handle.strip_suffix(&d).is_some_and(|p| p.ends_with('.'))
        })
    }
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            plc_url: Url::parse("https://plc.directory").expect("static URL"),
            allow_plain_http: false,
            dns_nameservers: vec![],
            host_overrides: vec![],
            timeout: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(300),
            cache_capacity: 10_000,
            max_response_bytes: 1024 * 1024,
            audit_plc_log: true,
            handle_resolvers: vec![],
        }
    }
}

/// A fully resolved identity.
#[derive(Debug, Clone)]
pub struct ResolvedIdentity {
    /// The DID.
    pub did: Did,
    /// The handle, only when it and the DID document point at each other.
    pub handle: Option<Handle>,
    /// The DID document.
    pub document: Arc<DidDocument>,
    /// The current `#atproto` signing key.
    pub signing_key: PublicKey,
    /// The PDS endpoint.
    pub pds: Url,
}

/// Resolves DIDs and handles, with TTL caching of successes only.
pub struct IdentityResolver {
    config: ResolverConfig,
    fetch: Arc<dyn Fetch>,
    docs: TtlCache<Did, Arc<DidDocument>>,
    handles: TtlCache<String, Did>,
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn unavailable(subject: &str, reason: impl std::fmt::Display) -> IdentityError {
    IdentityError::Unavailable {
        subject: subject.to_owned(),
        reason: reason.to_string(),
    }
}

impl IdentityResolver {
    /// Builds a resolver over the network.
    pub fn new(config: ResolverConfig) -> Result<Self, IdentityError> {
        let online = Online::new(&OnlineConfig {
            timeout: config.timeout,
            host_overrides: config.host_overrides.clone(),
            dns_nameservers: config.dns_nameservers.clone(),
        })
        .map_err(IdentityError::Unsupported)?;
        Self::with_fetch(config, Arc::new(online))
    }

    /// Builds a resolver that reads through `fetch` (recording for an
    /// export, or replaying a bundle). `config`'s network settings are
    /// `fetch`'s business then.
    pub fn with_fetch(
        config: ResolverConfig,
        fetch: Arc<dyn Fetch>,
    ) -> Result<Self, IdentityError> {
        let plc_host = config.plc_url.host_str().unwrap_or_default().to_owned();
        match config.plc_url.scheme() {
            "https" => {}
            "http" if config.allow_plain_http || is_loopback_host(&plc_host) => {}
            other => {
                return Err(IdentityError::Unsupported(format!(
                    "PLC URL scheme {other}:// on {plc_host}: plain http is only for loopback hosts unless identity.allow_plain_http is set"
                )));
            }
        }
        let docs = TtlCache::new(config.cache_ttl, config.cache_capacity);
        let handles = TtlCache::new(config.cache_ttl, config.cache_capacity);
        Ok(Self {
            config,
            fetch,
            docs,
            handles,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// GETs `url`, returning the status and at most `max_response_bytes` of body.
    async fn fetch(&self, url: &Url, subject: &str) -> Result<(u16, Vec<u8>), IdentityError> {
        self.fetch_or_no_host(url, subject)
            .await?
            .ok_or_else(|| unavailable(subject, format!("{url}: no such host")))
    }

    /// Like [`Self::fetch`], with `None` when DNS says the host does not
    /// exist: definitive for a handle's own host (the handle does not
    /// exist), not for a directory's.
    async fn fetch_or_no_host(
        &self,
        url: &Url,
        subject: &str,
    ) -> Result<Option<(u16, Vec<u8>)>, IdentityError> {
        match self
            .fetch
            .get(Request::new(url.as_str(), self.config.max_response_bytes))
            .await
        {
            Ok(r) => Ok(Some((r.status, r.body))),
            Err(FetchError::NoSuchHost(_)) => Ok(None),
            Err(e @ FetchError::TooLarge { .. }) => Err(IdentityError::Invalid {
                subject: subject.to_owned(),
                reason: e.to_string(),
            }),
            Err(e) => Err(unavailable(subject, e)),
        }
    }

    fn scheme_for(&self, host: &str) -> &'static str {
        if is_loopback_host(host) || self.config.allow_plain_http {
            "http"
        } else {
            "https"
        }
    }

    /// The DID document URL for a DID.
    pub fn document_url(&self, did: &Did) -> Result<Url, IdentityError> {
        match did.method() {
            "plc" => {
                let id = did.method_specific_id();
                if id.len() != 24
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                {
                    return Err(IdentityError::Invalid {
                        subject: did.to_string(),
                        reason: "malformed did:plc identifier".into(),
                    });
                }
                // Concatenate: `Url::join` would read "did:plc:…" as a URL with scheme "did".
                let base = self.config.plc_url.as_str().trim_end_matches('/');
                Url::parse(&format!("{base}/{did}"))
                    .map_err(|e| IdentityError::Unsupported(format!("PLC URL: {e}")))
            }
            "web" => {
                let id = did.method_specific_id();
                if id.contains(':') {
                    return Err(IdentityError::Unsupported(format!(
                        "{did}: did:web with a path (atproto allows hostname-level only)"
                    )));
                }
                let host = id.replace("%3A", ":").replace("%3a", ":");
                if host.contains('%') {
                    return Err(IdentityError::Invalid {
                        subject: did.to_string(),
                        reason: "unexpected percent-encoding".into(),
                    });
                }
                let hostname = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                let url = format!(
                    "{}://{host}/.well-known/did.json",
                    self.scheme_for(hostname)
                );
                Url::parse(&url).map_err(|e| IdentityError::Invalid {
                    subject: did.to_string(),
                    reason: e.to_string(),
                })
            }
            m => Err(IdentityError::Unsupported(format!(
                "DID method {m:?} (atproto supports plc and web)"
            ))),
        }
    }

    /// Resolves a DID document (cached).
    pub async fn resolve_did(&self, did: &Did) -> Result<Arc<DidDocument>, IdentityError> {
        if let Some(doc) = self.docs.get(did) {
            return Ok(doc);
        }
        self.refresh_did(did).await
    }

    /// Resolves a DID document, bypassing and then refreshing the cache.
    pub async fn refresh_did(&self, did: &Did) -> Result<Arc<DidDocument>, IdentityError> {
        if did.method() == "plc" && self.config.audit_plc_log {
            let doc = Arc::new(self.audited_plc_document(did).await?);
            self.docs.insert(did.clone(), doc.clone());
            return Ok(doc);
        }
        let url = self.document_url(did)?;
        let body = self.fetch_did_resource(&url, did).await?;
        let doc = Arc::new(DidDocument::parse(did, &body)?);
        self.docs.insert(did.clone(), doc.clone());
        Ok(doc)
    }

    /// GETs a DID's document or log: 404 is NotFound, 410 Deactivated, any
    /// other non-200 a transient failure.
    async fn fetch_did_resource(&self, url: &Url, did: &Did) -> Result<Vec<u8>, IdentityError> {
        let (status, body) = self.fetch(url, did.as_str()).await?;
        match status {
            200 => Ok(body),
            404 => Err(IdentityError::NotFound(did.to_string())),
            410 => Err(IdentityError::Deactivated(did.to_string())),
            s => Err(unavailable(
                did.as_str(),
                format!("{url} answered HTTP {s}"),
            )),
        }
    }

    /// Fetches a did:plc audit log and replays it (signatures, `prev` chain,
    /// nullifications), building the document from the replayed state.
    /// The directory's timestamps are taken as given: they only decide whether
    /// a nullification fell inside the 72-hour recovery window.
    async fn audited_plc_document(&self, did: &Did) -> Result<DidDocument, IdentityError> {
        let invalid = |reason: String| IdentityError::Invalid {
            subject: did.to_string(),
            reason,
        };
        let url = self.document_url(did)?;
        let url = Url::parse(&format!("{}/log/audit", url.as_str()))
            .map_err(|e| invalid(e.to_string()))?;
        let body = self.fetch_did_resource(&url, did).await?;
        let raw: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("PLC audit log is not a JSON array: {e}")))?;
        let mut entries = Vec::with_capacity(raw.len());
        for e in &raw {
            if e["did"].as_str() != Some(did.as_str()) {
                return Err(invalid("PLC audit log entry for another DID".into()));
            }
            let operation = atcr_plc::Operation::from_json(&e["operation"])
                .map_err(|e| invalid(format!("PLC audit log: {e}")))?;
            let cid = atcr_data::parse_cid(e["cid"].as_str().unwrap_or_default())
                .map_err(|e| invalid(format!("PLC audit log: {e}")))?;
            let created = atcr_syntax::Datetime::parse(e["createdAt"].as_str().unwrap_or_default())
                .map_err(|e| invalid(format!("PLC audit log: {e}")))?;
            let nullified = e["nullified"]
                .as_bool()
                .ok_or_else(|| invalid("PLC audit log entry without nullified".into()))?;
            entries.push(atcr_plc::AuditEntry {
                operation,
                cid,
                nullified,
                created_at_ms: created.unix_millis(),
            });
        }
        match atcr_plc::audit_log(did, &entries) {
            Ok(Some(data)) => {
                let json = data.to_did_document().to_string();
                DidDocument::parse(did, json.as_bytes())
            }
            Ok(None) => Err(IdentityError::Deactivated(did.to_string())),
            Err(e) => Err(invalid(format!("PLC audit log does not verify: {e}"))),
        }
    }

    /// Drops cached data for a DID (after a verification failure that a key
    /// rotation could explain).
    pub fn forget(&self, did: &Did) {
        self.docs.remove(did);
    }

    async fn handle_via_dns(&self, handle: &str) -> Result<Option<Did>, IdentityError> {
        let name = format!("_atproto.{handle}.");
        let records = self
            .fetch
            .txt(&name)
            .await
            .map_err(|e| unavailable(handle, e))?;
        let mut found: Option<String> = None;
        for text in records {
            if let Some(d) = text.strip_prefix("did=") {
                if found.as_deref().is_some_and(|f| f != d) {
                    return Err(IdentityError::Invalid {
                        subject: handle.into(),
                        reason: "several different did= TXT records".into(),
                    });
                }
                found = Some(d.to_owned());
            }
        }
        found
            .map(|d| {
                Did::new(d).map_err(|e| IdentityError::Invalid {
                    subject: handle.into(),
                    reason: format!("TXT record: {e}"),
                })
            })
            .transpose()
    }

    /// A handle through a configured, trusted resolver.
    async fn handle_via_resolver(
        &self,
        handle: &str,
        resolver: &HandleResolver,
    ) -> Result<Option<Did>, IdentityError> {
        let mut url = resolver.url.clone();
        url.set_path("/xrpc/com.atproto.identity.resolveHandle");
        url.query_pairs_mut().append_pair("handle", handle);
        let (status, body) = self.fetch(&url, handle).await?;
        match status {
            200 => {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| IdentityError::Invalid {
                        subject: handle.into(),
                        reason: format!("{url}: {e}"),
                    })?;
                let d = v["did"].as_str().unwrap_or_default();
                Did::new(d).map(Some).map_err(|e| IdentityError::Invalid {
                    subject: handle.into(),
                    reason: format!("{url}: {e}"),
                })
            }
            // XRPC answers an unknown handle with 400 (InvalidRequest /
            // HandleNotFound) or 404.
            400 | 404 => Ok(None),
            s => Err(unavailable(handle, format!("{url} answered HTTP {s}"))),
        }
    }

    async fn handle_via_https(&self, handle: &str) -> Result<Option<Did>, IdentityError> {
        let url = Url::parse(&format!(
            "{}://{handle}/.well-known/atproto-did",
            self.scheme_for(handle)
        ))
        .map_err(|e| IdentityError::Invalid {
            subject: handle.into(),
            reason: e.to_string(),
        })?;
        let Some((status, body)) = self.fetch_or_no_host(&url, handle).await? else {
            return Ok(None);
        };
        match status {
            200 => {
                let text = String::from_utf8_lossy(&body);
                let line = text.lines().next().unwrap_or_default().trim();
                Did::new(line)
                    .map(Some)
                    .map_err(|e| IdentityError::Invalid {
                        subject: handle.into(),
                        reason: format!("{url}: {e}"),
                    })
            }
            404 | 410 => Ok(None),
            s => Err(unavailable(handle, format!("{url} answered HTTP {s}"))),
        }
    }

    /// Resolves a handle to a DID (one direction only; see [`Self::resolve`]).
    /// DNS TXT first, then HTTPS well-known.
    pub async fn resolve_handle(&self, handle: &Handle) -> Result<Did, IdentityError> {
        let h = handle.normalized();
        if let Some(did) = self.handles.get(&h) {
            return Ok(did);
        }
        if let Some(r) = self.config.handle_resolvers.iter().find(|r| r.covers(&h)) {
            return match self.handle_via_resolver(&h, r).await? {
                Some(did) => {
                    self.handles.insert(h, did.clone());
                    Ok(did)
                }
                None => Err(IdentityError::NotFound(h)),
            };
        }
        let mut transient = None;
        let found = match self.handle_via_dns(&h).await {
            Ok(Some(did)) => Some(did),
            Ok(None) => None,
            Err(e) if e.is_transient() => {
                transient = Some(e);
                None
            }
            Err(e) => return Err(e),
        };
        let found = match found {
            Some(d) => Some(d),
            None => match self.handle_via_https(&h).await {
                Ok(d) => d,
                Err(e) if e.is_transient() => {
                    transient = Some(e);
                    None
                }
                Err(e) => return Err(e),
            },
        };
        match (found, transient) {
            (Some(did), _) => {
                self.handles.insert(h, did.clone());
                Ok(did)
            }
            (None, Some(e)) => Err(e),
            (None, None) => Err(IdentityError::NotFound(h)),
        }
    }

    /// Resolves a handle or DID to a full identity with the bidirectional
    /// handle check. A handle input whose DID document does not claim it is
    /// an error; a DID input whose claimed handle does not resolve back simply
    /// has no verified handle.
    pub async fn resolve(&self, ident: &AtIdentifier) -> Result<ResolvedIdentity, IdentityError> {
        let (did, handle) = match ident {
            AtIdentifier::Handle(h) => {
                let did = self.resolve_handle(h).await?;
                let doc = self.resolve_did(&did).await?;
                if !doc.claims_handle(h) {
                    return Err(IdentityError::HandleMismatch {
                        handle: h.to_string(),
                        did: did.to_string(),
                        reason: "the DID document's alsoKnownAs does not list the handle".into(),
                    });
                }
                (did, Some(h.clone()))
            }
            AtIdentifier::Did(d) => {
                let doc = self.resolve_did(d).await?;
                let handle = match doc.claimed_handle() {
                    Some(h) => match self.resolve_handle(&h).await {
                        Ok(back) if back == *d => Some(h),
                        Ok(_) | Err(_) => None,
                    },
                    None => None,
                };
                (d.clone(), handle)
            }
        };
        let document = self.resolve_did(&did).await?;
        let signing_key = document.signing_key()?;
        let pds = document.pds_endpoint()?;
        Ok(ResolvedIdentity {
            did,
            handle,
            document,
            signing_key,
            pds,
        })
    }
}

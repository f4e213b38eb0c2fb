//! The network seam of identity resolution and verification.
//!
//! Everything the verifier reads from outside (DID documents and PLC logs,
//! handle answers over DNS and HTTPS, registry manifests and referrers, PDS
//! record proofs) goes through one [`Fetch`]: [`Online`] over the network,
//! [`Recorder`] around it to make an offline bundle, or [`Replay`] from such
//! a bundle with no network at all. Identity resolution, the registry client
//! and proof fetching all take it, so online, export and offline runs follow
//! exactly the same code.
//!
//! A recorded answer is content, not trust: whatever reads it checks it as
//! it would a live one.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig as DnsConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A boxed future (the trait is object-safe).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A GET.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Absolute URL.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: Vec<(&'static str, String)>,
    /// Largest body accepted.
    pub max_bytes: usize,
    /// Never recorded (token requests: their answers are secrets).
    pub sensitive: bool,
}

impl<'a> Request<'a> {
    /// A plain GET of at most `max_bytes`.
    pub fn new(url: &'a str, max_bytes: usize) -> Self {
        Self {
            url,
            headers: vec![],
            max_bytes,
            sensitive: false,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body (at most the request's `max_bytes`).
    pub body: Vec<u8>,
    /// `WWW-Authenticate`, for the registry token flow.
    pub www_authenticate: Option<String>,
}

/// Why nothing was fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The host could not be reached or the transfer failed (transient).
    #[error("{0}")]
    Unreachable(String),
    /// The answer is larger than the caller accepts.
    #[error("{url}: answer over {max} bytes")]
    TooLarge {
        /// What was fetched.
        url: String,
        /// The limit.
        max: usize,
    },
    /// Offline: the bundle has no answer for it.
    #[error("{0} is not in the bundle")]
    NotRecorded(String),
    /// DNS says the host name does not exist (NXDOMAIN, or no address
    /// records): a definitive answer, unlike [`Self::Unreachable`].
    #[error("{0}: no such host")]
    NoSuchHost(String),
}

/// Where answers come from.
pub trait Fetch: Send + Sync {
    /// An HTTP GET.
    fn get<'a>(&'a self, req: Request<'a>) -> BoxFut<'a, Result<Response, FetchError>>;
    /// The TXT records of `name` (empty when it has none or does not exist).
    fn txt<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Vec<String>, FetchError>>;
}

/// How [`Online`] reaches the network.
#[derive(Debug, Clone)]
pub struct OnlineConfig {
    /// Timeout of each request and DNS query.
    pub timeout: Duration,
    /// Static host → address mappings for HTTP (like `curl --resolve`).
    pub host_overrides: Vec<(String, SocketAddr)>,
    /// DNS servers (empty: the system's resolv.conf).
    pub dns_nameservers: Vec<SocketAddr>,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            host_overrides: vec![],
            dns_nameservers: vec![],
        }
    }
}

/// The network.
pub struct Online {
    http: reqwest::Client,
    dns: Option<TokioResolver>,
    /// Hosts with a static address (never looked up in DNS).
    overridden: Vec<String>,
}

impl Online {
    /// A fetcher over the network.
    pub fn new(cfg: &OnlineConfig) -> Result<Self, String> {
        let mut builder = atcr_http::client_builder(cfg.timeout);
        for (host, addr) in &cfg.host_overrides {
            builder = builder.resolve(host, *addr);
        }
        let http = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            dns: build_dns(cfg),
            overridden: cfg.host_overrides.iter().map(|(h, _)| h.clone()).collect(),
        })
    }

    /// Over an existing HTTP client (shares its connections), with the
    /// system DNS configuration.
    pub fn with_client(http: reqwest::Client) -> Self {
        Self {
            http,
            dns: build_dns(&OnlineConfig::default()),
            overridden: vec![],
        }
    }

    /// After a failed connection: whether DNS says the host does not exist.
    async fn no_such_host(&self, url: &str) -> Option<String> {
        let dns = self.dns.as_ref()?;
        let u = url::Url::parse(url).ok()?;
        let Some(url::Host::Domain(host)) = u.host() else {
            return None;
        };
        if self.overridden.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return None;
        }
        match dns
            .lookup_ip(format!("{}.", host.trim_end_matches('.')))
            .await
        {
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Some(host.to_owned()),
            _ => None,
        }
    }
}

fn build_dns(cfg: &OnlineConfig) -> Option<TokioResolver> {
    let builder = if cfg.dns_nameservers.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    "no system DNS configuration ({e}); handles resolve over HTTPS only"
                );
                return None;
            }
        }
    } else {
        let servers = cfg
            .dns_nameservers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            DnsConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let mut builder = builder;
    builder.options_mut().timeout = cfg.timeout;
    builder.options_mut().attempts = 2;
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("DNS resolver unavailable ({e}); handles resolve over HTTPS only");
            None
        }
    }
}

impl Fetch for Online {
    fn get<'a>(&'a self, req: Request<'a>) -> BoxFut<'a, Result<Response, FetchError>> {
        Box::pin(async move {
            let unreachable =
                |e: reqwest::Error| FetchError::Unreachable(format!("{}: {e}", req.url));
            let mut r = self.http.get(req.url);
            for (k, v) in &req.headers {
                r = r.header(*k, v);
            }
            let mut resp = match r.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    return Err(match self.no_such_host(req.url).await {
                        Some(h) => FetchError::NoSuchHost(h),
                        None => unreachable(e),
                    });
                }
                Err(e) => return Err(unreachable(e)),
            };
            let too_large = || FetchError::TooLarge {
                url: req.url.to_owned(),
                max: req.max_bytes,
            };
            if resp
                .content_length()
                .is_some_and(|n| n > req.max_bytes as u64)
            {
                return Err(too_large());
            }
            let status = resp.status().as_u16();
            let www_authenticate = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = vec![];
            while let Some(c) = resp.chunk().await.map_err(unreachable)? {
                if body.len() + c.len() > req.max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&c);
            }
            Ok(Response {
                status,
                body,
                www_authenticate,
            })
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Vec<String>, FetchError>> {
        Box::pin(async move {
            let Some(dns) = &self.dns else {
                return Ok(vec![]);
            };
            let lookup = match dns.lookup(name, RecordType::TXT).await {
                Ok(l) => l,
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(vec![]),
                Err(e) => return Err(FetchError::Unreachable(format!("DNS {name}: {e}"))),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }
}

/// One recorded answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Recorded {
    /// An HTTP answer.
    Http {
        /// Status.
        status: u16,
        /// Body, base64.
        #[serde(with = "b64")]
        body: Vec<u8>,
    },
    /// A DNS TXT answer.
    Txt {
        /// The records.
        txt: Vec<String>,
    },
}

impl Recorded {
    /// The body of an HTTP answer.
    pub fn body(&self) -> Option<&[u8]> {
        match self {
            Self::Http { body, .. } => Some(body),
            Self::Txt { .. } => None,
        }
    }
    /// The body of an HTTP answer, to edit (tests of forged bundles).
    pub fn body_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Self::Http { body, .. } => Some(body),
            Self::Txt { .. } => None,
        }
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// The key a TXT answer is recorded under.
pub fn txt_key(name: &str) -> String {
    format!("dns:TXT:{}", name.trim_end_matches('.'))
}

/// Records every answer of the fetcher it wraps (the last per key), except
/// sensitive requests.
pub struct Recorder {
    inner: Arc<dyn Fetch>,
    log: Mutex<BTreeMap<String, Recorded>>,
}

impl Recorder {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Fetch>) -> Self {
        Self {
            inner,
            log: Mutex::new(BTreeMap::new()),
        }
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> BTreeMap<String, Recorded> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keep(&self, key: String, r: Recorded) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, r);
    }
}

impl Fetch for Recorder {
    fn get<'a>(&'a self, req: Request<'a>) -> BoxFut<'a, Result<Response, FetchError>> {
        Box::pin(async move {
            let (url, sensitive) = (req.url.to_owned(), req.sensitive);
            let r = self.inner.get(req).await?;
            if !sensitive {
                self.keep(
                    url,
                    Recorded::Http {
                        status: r.status,
                        body: r.body.clone(),
                    },
                );
            }
            Ok(r)
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Vec<String>, FetchError>> {
        Box::pin(async move {
            let r = self.inner.txt(name).await?;
            self.keep(txt_key(name), Recorded::Txt { txt: r.clone() });
            Ok(r)
        })
    }
}

/// Answers from a recording, with no network access.
pub struct Replay {
    entries: BTreeMap<String, Recorded>,
}

impl Replay {
    /// Replays `entries` (as [`Recorder::recorded`] made them).
    pub fn new(entries: BTreeMap<String, Recorded>) -> Self {
        Self { entries }
    }
}

impl Fetch for Replay {
    fn get<'a>(&'a self, req: Request<'a>) -> BoxFut<'a, Result<Response, FetchError>> {
        Box::pin(async move {
            // The scheme is not part of what is proven: a bundle exported
            // over plain HTTP on loopback answers for https too.
            let other = match req.url.split_once("://") {
                Some(("https", rest)) => format!("http://{rest}"),
                Some(("http", rest)) => format!("https://{rest}"),
                _ => String::new(),
            };
            match self
                .entries
                .get(req.url)
                .or_else(|| self.entries.get(&other))
            {
                Some(Recorded::Http { status, body }) => {
                    if body.len() > req.max_bytes {
                        return Err(FetchError::TooLarge {
                            url: req.url.to_owned(),
                            max: req.max_bytes,
                        });
                    }
                    Ok(Response {
                        status: *status,
                        body: body.clone(),
                        www_authenticate: None,
                    })
                }
                _ => Err(FetchError::NotRecorded(req.url.to_owned())),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Vec<String>, FetchError>> {
        Box::pin(async move {
            match self.entries.get(&txt_key(name)) {
                Some(Recorded::Txt { txt }) => Ok(txt.clone()),
                _ => Err(FetchError::NotRecorded(format!("DNS TXT {name}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned;
    impl Fetch for Canned {
        fn get<'a>(&'a self, req: Request<'a>) -> BoxFut<'a, Result<Response, FetchError>> {
            Box::pin(async move {
                Ok(Response {
                    status: 200,
                    body: req.url.as_bytes().to_vec(),
                    www_authenticate: None,
                })
            })
        }
        fn txt<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Vec<String>, FetchError>> {
            Box::pin(async move { Ok(vec![format!("did=did:web:{name}")]) })
        }
    }

    #[tokio::test]
    async fn recorded_answers_replay_and_secrets_are_not_recorded() {
        let rec = Recorder::new(Arc::new(Canned));
        rec.get(Request::new("http://127.0.0.1:1/a", 100))
            .await
            .unwrap();
        let mut secret = Request::new("http://127.0.0.1:1/token", 100);
        secret.sensitive = true;
        rec.get(secret).await.unwrap();
        rec.txt("_atproto.alice.test.").await.unwrap();
        let log = rec.recorded();
        assert_eq!(log.len(), 2, "{log:?}");
        // Round trip through JSON, as a bundle does.
        let log: BTreeMap<String, Recorded> =
            serde_json::from_str(&serde_json::to_string(&log).unwrap()).unwrap();
        let replay = Replay::new(log);
        let r = replay
            .get(Request::new("https://127.0.0.1:1/a", 100))
            .await
            .unwrap();
        assert_eq!(r.body, b"http://127.0.0.1:1/a");
        assert!(matches!(
            replay.get(Request::new("http://127.0.0.1:1/a", 3)).await,
            Err(FetchError::TooLarge { .. })
        ));
        assert!(matches!(
            replay
                .get(Request::new("http://127.0.0.1:1/token", 100))
                .await,
            Err(FetchError::NotRecorded(_))
        ));
        assert_eq!(
            replay.txt("_atproto.alice.test").await.unwrap(),
            ["did=did:web:_atproto.alice.test."]
        );
        assert!(replay.txt("_atproto.bob.test").await.is_err());
    }
}

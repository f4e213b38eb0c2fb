//! A minimal OCI Distribution client: what verification reads from a
//! registry (manifests, blobs, referrers), with the Docker token flow.
//!
//! Everything read is checked against its digest here: a registry answer is
//! content, never a claim.

use crate::VerifyError;
use atcr_fetch::{Fetch, FetchError, Request};
use atcr_oci::Digest;
use base64::Engine as _;
use std::sync::Arc;
use std::sync::Mutex;

use atcr_oci::records::MANIFEST_ACCEPT as ACCEPT;
/// Largest manifest or referrers listing read (the registry's own limit).
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// One entry of a referrers listing: the artifact and the DID its
/// annotation claims (a hint, used only to order what is read).
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The artifact's digest.
    pub digest: Digest,
    /// `io.atcr.atproto.did` as annotated.
    pub claimed_did: Option<String>,
}

/// Registry credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User name (handle).
    pub username: String,
    /// Password (app password).
    pub password: String,
}

impl Credentials {
    /// What `docker login HOST` stored: the credential helper named in the
    /// Docker configuration (`credHelpers.HOST`, else `credsStore`), else
    /// `auths.HOST.auth`. The configuration is `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`.
    pub fn from_docker(host: &str) -> Option<Self> {
        use base64::Engine as _;
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker"))
            })?;
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
        let helper = cfg["credHelpers"][host]
            .as_str()
            .or_else(|| cfg["credsStore"].as_str());
        if let Some(helper) = helper {
            use std::io::Write as _;
            let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
                .arg("get")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            child.stdin.take()?.write_all(host.as_bytes()).ok()?;
            let out = child.wait_with_output().ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            return Some(Self {
                username: v["Username"].as_str()?.to_owned(),
                password: v["Secret"].as_str()?.to_owned(),
            });
        }
        let auth = cfg["auths"][host]["auth"].as_str()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let (u, p) = String::from_utf8(raw)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
        Some(Self {
            username: u,
            password: p,
        })
    }
}

/// A registry client for one host.
pub struct RegistryClient {
    fetch: Arc<dyn Fetch>,
    base: String,
    creds: Option<Credentials>,
    /// Bearer token from the last challenge.
    token: Mutex<Option<String>>,
}

fn registry_err(what: impl std::fmt::Display) -> VerifyError {
    VerifyError::Registry(what.to_string())
}

fn from_fetch(e: FetchError) -> VerifyError {
    match e {
        FetchError::NotRecorded(_) => VerifyError::Network(e.to_string()),
        e => registry_err(e),
    }
}

impl RegistryClient {
    /// A client for `host` over `http` or `https`.
    pub fn new(
        fetch: Arc<dyn Fetch>,
        host: &str,
        plain_http: bool,
        creds: Option<Credentials>,
    ) -> Self {
        let scheme = if plain_http { "http" } else { "https" };
        Self {
            fetch,
            base: format!("{scheme}://{host}"),
            creds,
            token: Mutex::new(None),
        }
    }

    /// GET of at most `max` bytes with the token flow: on 401 the
    /// `Bearer` challenge is answered once (with credentials when given) and
    /// the request retried.
    async fn get(
        &self,
        path: &str,
        accept: &str,
        max: usize,
    ) -> Result<(u16, Vec<u8>), VerifyError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut req = Request::new(&url, max).header("accept", accept);
            let tok = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(t) = tok {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let r = self.fetch.get(req).await.map_err(from_fetch)?;
            if r.status != 401 || attempt == 1 {
                return Ok((r.status, r.body));
            }
            self.fetch_token(r.www_authenticate.as_deref().unwrap_or_default())
                .await?;
        }
        Err(registry_err("unauthorized"))
    }

    async fn fetch_token(&self, challenge: &str) -> Result<(), VerifyError> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Err(registry_err(format!(
                "{}: unsupported auth challenge {challenge:?}",
                self.base
            )));
        };
        let mut realm = None;
        let mut query = vec![];
        for part in split_params(params) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim_matches('"').to_owned();
                match k.trim() {
                    "realm" => realm = Some(v),
                    k @ ("service" | "scope") => query.push((k.to_owned(), v)),
                    _ => {}
                }
            }
        }
        let realm = realm.ok_or_else(|| registry_err("auth challenge without a realm"))?;
        let mut url = url::Url::parse(&realm).map_err(|e| registry_err(format!("realm: {e}")))?;
        url.query_pairs_mut().extend_pairs(&query);
        let mut req = Request::new(url.as_str(), 64 * 1024);
        // A token is a secret: never written into a bundle.
        req.sensitive = true;
        if let Some(c) = &self.creds {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        let r = self.fetch.get(req).await.map_err(from_fetch)?;
        if !(200..300).contains(&r.status) {
            return Err(registry_err(format!(
                "token request to {realm} failed: HTTP {}",
                r.status
            )));
        }
        let body: serde_json::Value = serde_json::from_slice(&r.body).map_err(registry_err)?;
        let tok = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| registry_err("token response without a token"))?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(tok.to_owned());
        Ok(())
    }

    /// A manifest's exact bytes and their digest (computed here). `None` when
    /// the registry says it does not exist.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, Digest)>, VerifyError> {
        self.manifest_limited(repo, reference, MAX_BYTES).await
    }

    /// [`Self::manifest`], reading at most `max` bytes.
    pub async fn manifest_limited(
        &self,
        repo: &str,
        reference: &str,
        max: usize,
    ) -> Result<Option<(Vec<u8>, Digest)>, VerifyError> {
        let (status, bytes) = self
            .get(&format!("/v2/{repo}/manifests/{reference}"), ACCEPT, max)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(registry_err(format!(
                "GET manifest {repo}:{reference}: HTTP {status}"
            )));
        }
        let d = Digest::sha256_of(&bytes);
        Ok(Some((bytes, d)))
    }

    /// A small blob (at most `max` bytes), checked against its digest.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: usize,
    ) -> Result<Vec<u8>, VerifyError> {
        let (status, bytes) = self
            .get(&format!("/v2/{repo}/blobs/{digest}"), "*/*", max)
            .await?;
        if !(200..300).contains(&status) {
            return Err(registry_err(format!("GET blob {digest}: HTTP {status}")));
        }
        if Digest::sha256_of(&bytes) != *digest {
            return Err(registry_err(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// Referrers of `digest` with `artifact_type` (filtered here too: the
    /// registry may ignore the filter).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<Referrer>, VerifyError> {
        let (status, body) = self
            .get(
                &format!(
                    "/v2/{repo}/referrers/{digest}?artifactType={}",
                    artifact_type.replace('+', "%2B")
                ),
                "application/vnd.oci.image.index.v1+json",
                MAX_BYTES,
            )
            .await?;
        if status == 404 {
            return Ok(vec![]);
        }
        if !(200..300).contains(&status) {
            return Err(registry_err(format!("GET referrers: HTTP {status}")));
        }
        let idx: serde_json::Value = serde_json::from_slice(&body).map_err(registry_err)?;
        Ok(idx["manifests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|m| m["artifactType"] == artifact_type)
                    .filter_map(|m| {
                        Some(Referrer {
                            digest: Digest::parse(m["digest"].as_str()?).ok()?,
                            claimed_did: m["annotations"][atcr_oci::signature::ANNOTATION_DID]
                                .as_str()
                                .map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Splits `a="x,y",b=c` on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn challenge_params_split_outside_quotes() {
        assert_eq!(
            super::split_params(
                r#"realm="http://h/auth",service="h",scope="repository:a/b:pull,push""#
            ),
            vec![
                r#"realm="http://h/auth""#,
                r#"service="h""#,
                r#"scope="repository:a/b:pull,push""#
            ]
        );
    }
}

//! Offline bundles: everything verification fetched (DID document logs,
//! handle answers, registry responses, record proofs), so it can be repeated
//! with no network access.
//!
//! The bundle is not trusted either: every proof in it is checked exactly as
//! online. Its `contentDigest` only makes accidental damage loud; anyone
//! who edits a bundle can recompute it, and the cryptographic checks are
//! what catch a forgery.

use crate::VerifyError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One recorded HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// HTTP status.
    pub status: u16,
    /// Body, base64.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
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

/// An offline verification bundle (`atcr-verify export`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// Format version (1).
    pub version: u32,
    /// The image exported.
    pub image: String,
    /// When (RFC 3339).
    pub exported_at: String,
    /// The PLC directory the DID logs came from (their keys in `identity`).
    pub plc_url: String,
    /// Identity lookups: URL → body, `handle:<h>` → DID (base64).
    pub identity: BTreeMap<String, String>,
    /// Registry and PDS answers by URL.
    pub resources: BTreeMap<String, Resource>,
    /// sha256 over the fields above.
    pub content_digest: String,
}

impl Bundle {
    fn digest_of(
        version: u32,
        image: &str,
        exported_at: &str,
        plc_url: &str,
        identity: &BTreeMap<String, String>,
        resources: &BTreeMap<String, Resource>,
    ) -> String {
        let canonical =
            serde_json::to_vec(&(version, image, exported_at, plc_url, identity, resources))
                .unwrap_or_default();
        let h = sha2::Sha256::digest(&canonical);
        format!(
            "sha256:{}",
            h.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    /// Assembles a bundle.
    pub fn new(
        image: String,
        plc_url: String,
        identity: BTreeMap<String, Vec<u8>>,
        resources: BTreeMap<String, Resource>,
    ) -> Self {
        let identity: BTreeMap<String, String> = identity
            .into_iter()
            .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        let exported_at = atcr_syntax::Datetime::now().to_string();
        let content_digest =
            Self::digest_of(1, &image, &exported_at, &plc_url, &identity, &resources);
        Self {
            version: 1,
            image,
            exported_at,
            plc_url,
            identity,
            resources,
            content_digest,
        }
    }

    /// Parses a bundle and checks its content digest.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        let b: Self = serde_json::from_slice(bytes)
            .map_err(|e| VerifyError::BadBundle(format!("not a bundle: {e}")))?;
        if b.version != 1 {
            return Err(VerifyError::BadBundle(format!(
                "bundle version {} (this verifier reads 1)",
                b.version
            )));
        }
        let want = Self::digest_of(
            b.version,
            &b.image,
            &b.exported_at,
            &b.plc_url,
            &b.identity,
            &b.resources,
        );
        if want != b.content_digest {
            return Err(VerifyError::BundleModified);
        }
        Ok(b)
    }

    /// The identity snapshot in the resolver's form.
    pub fn identity_snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, VerifyError> {
        self.identity
            .iter()
            .map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(|b| (k.clone(), b))
                    .map_err(|e| VerifyError::BadBundle(format!("identity {k}: {e}")))
            })
            .collect()
    }
}

/// Where registry and PDS answers come from: the network (optionally
/// recording them), or a bundle.
pub(crate) struct Transport {
    pub http: reqwest::Client,
    offline: Option<BTreeMap<String, Resource>>,
    record: bool,
    log: Mutex<BTreeMap<String, Resource>>,
}

impl Transport {
    pub fn new(
        http: reqwest::Client,
        offline: Option<BTreeMap<String, Resource>>,
        record: bool,
    ) -> Self {
        Self {
            http,
            offline,
            record,
            log: Mutex::new(BTreeMap::new()),
        }
    }

    /// In offline mode: the recorded answer for `url` (`Err` when the bundle
    /// lacks it). Online: `None`.
    pub fn lookup(&self, url: &str) -> Option<Result<(u16, Vec<u8>), VerifyError>> {
        let bundle = self.offline.as_ref()?;
        // The scheme is not part of what was proven: a bundle exported over
        // plain HTTP on loopback serves the same answers for https.
        let other = match url.split_once("://") {
            Some(("https", rest)) => format!("http://{rest}"),
            Some(("http", rest)) => format!("https://{rest}"),
            _ => String::new(),
        };
        Some(match bundle.get(url).or_else(|| bundle.get(&other)) {
            Some(r) => Ok((r.status, r.body.clone())),
            None => Err(VerifyError::Network(format!("{url} is not in the bundle"))),
        })
    }

    /// Records an online answer (when exporting).
    pub fn keep(&self, url: &str, status: u16, body: &[u8]) {
        if self.record {
            self.log.lock().unwrap_or_else(|p| p.into_inner()).insert(
                url.to_owned(),
                Resource {
                    status,
                    body: body.to_vec(),
                },
            );
        }
    }

    /// Everything recorded.
    pub fn recorded(&self) -> BTreeMap<String, Resource> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An unauthenticated GET (PDS proofs), through the bundle when offline.
    pub async fn get(&self, url: &str, max: usize) -> Result<(u16, Vec<u8>), VerifyError> {
        if let Some(r) = self.lookup(url) {
            return r;
        }
        let mut r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| VerifyError::Network(format!("{url}: {e}")))?;
        let status = r.status().as_u16();
        let mut body = vec![];
        while let Some(c) = r
            .chunk()
            .await
            .map_err(|e| VerifyError::Network(format!("{url}: {e}")))?
        {
            if body.len() + c.len() > max {
                return Err(VerifyError::Network(format!(
                    "{url}: answer over {max} bytes"
                )));
            }
            body.extend_from_slice(&c);
        }
        self.keep(url, status, &body);
        Ok((status, body))
    }
}

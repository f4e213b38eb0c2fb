//! Offline bundles: everything verification fetched (PLC logs and DID
//! documents, handle answers over DNS and HTTPS, registry responses, record
//! proofs), recorded through the one fetch seam ([`atcr_fetch`]) so the same
//! code repeats the verification with no network access.
//!
//! The bundle is not trusted either: every proof in it is checked exactly as
//! online. Its `contentDigest` only makes accidental damage loud; anyone
//! who edits a bundle can recompute it, and the cryptographic checks are
//! what catch a forgery.

use crate::VerifyError;
use atcr_fetch::{Recorded, txt_key};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;

/// The bundle format this verifier writes.
pub const BUNDLE_VERSION: u32 = 2;

/// An offline verification bundle (`atcr-verify export`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// Format version (2).
    pub version: u32,
    /// The image exported.
    pub image: String,
    /// When (RFC 3339).
    pub exported_at: String,
    /// The PLC directory the DID logs came from (their URLs are under it).
    pub plc_url: String,
    /// Every answer, by URL (`dns:TXT:<name>` for DNS).
    pub resources: BTreeMap<String, Recorded>,
    /// sha256 over the fields above.
    pub content_digest: String,
}

/// Version 1, read for compatibility: identity answers apart.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BundleV1 {
    image: String,
    exported_at: String,
    plc_url: String,
    /// URL → body of a 200 answer (base64), or `handle:<h>` → DID.
    identity: BTreeMap<String, String>,
    resources: BTreeMap<String, Recorded>,
    content_digest: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let h = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Bundle {
    fn digest_of(
        version: u32,
        image: &str,
        exported_at: &str,
        plc_url: &str,
        resources: &BTreeMap<String, Recorded>,
    ) -> String {
        let canonical = serde_json::to_vec(&(version, image, exported_at, plc_url, resources))
            .unwrap_or_default();
        sha256_hex(&canonical)
    }

    /// Assembles a bundle.
    pub fn new(image: String, plc_url: String, resources: BTreeMap<String, Recorded>) -> Self {
        let exported_at = atcr_syntax::Datetime::now().to_string();
        let content_digest =
            Self::digest_of(BUNDLE_VERSION, &image, &exported_at, &plc_url, &resources);
        Self {
            version: BUNDLE_VERSION,
            image,
            exported_at,
            plc_url,
            resources,
            content_digest,
        }
    }

    /// Parses a bundle (version 2, or 1) and checks its content digest.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| VerifyError::BadBundle(format!("not a bundle: {e}")))?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(1) => Self::parse_v1(v),
            Some(2) => {
                let b: Self = serde_json::from_value(v)
                    .map_err(|e| VerifyError::BadBundle(format!("not a bundle: {e}")))?;
                let want = Self::digest_of(
                    b.version,
                    &b.image,
                    &b.exported_at,
                    &b.plc_url,
                    &b.resources,
                );
                if want != b.content_digest {
                    return Err(VerifyError::BundleModified);
                }
                Ok(b)
            }
            other => Err(VerifyError::BadBundle(format!(
                "bundle version {} (this verifier reads 1 and 2)",
                other.map_or_else(|| "missing".to_owned(), |n| n.to_string())
            ))),
        }
    }

    fn parse_v1(v: serde_json::Value) -> Result<Self, VerifyError> {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.remove("version");
        }
        let b: BundleV1 = serde_json::from_value(v)
            .map_err(|e| VerifyError::BadBundle(format!("not a bundle: {e}")))?;
        // Version 1's digest: over (1, image, exportedAt, plcUrl, identity,
        // resources), resources as {status, body}.
        let canonical = serde_json::to_vec(&(
            1u32,
            &b.image,
            &b.exported_at,
            &b.plc_url,
            &b.identity,
            &b.resources,
        ))
        .unwrap_or_default();
        if sha256_hex(&canonical) != b.content_digest {
            return Err(VerifyError::BundleModified);
        }
        let mut resources = b.resources;
        for (k, v) in b.identity {
            let body = base64::engine::general_purpose::STANDARD
                .decode(&v)
                .map_err(|e| VerifyError::BadBundle(format!("identity {k}: {e}")))?;
            match k.strip_prefix("handle:") {
                // The exporter's handle answer, as the DNS answer it stands for.
                Some(h) => {
                    let did = String::from_utf8_lossy(&body).into_owned();
                    resources.insert(
                        txt_key(&format!("_atproto.{h}")),
                        Recorded::Txt {
                            txt: vec![format!("did={did}")],
                        },
                    );
                }
                None => {
                    resources.insert(k, Recorded::Http { status: 200, body });
                }
            }
        }
        Ok(Self {
            version: BUNDLE_VERSION,
            content_digest: Self::digest_of(
                BUNDLE_VERSION,
                &b.image,
                &b.exported_at,
                &b.plc_url,
                &resources,
            ),
            image: b.image,
            exported_at: b.exported_at,
            plc_url: b.plc_url,
            resources,
        })
    }
}

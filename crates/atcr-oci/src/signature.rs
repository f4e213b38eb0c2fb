//! The ATProto signature artifact (DESIGN §5): an OCI artifact manifest whose
//! subject is a pushed image and whose one layer points at the ATProto
//! record that signs it.
//!
//! The artifact is a pointer, never evidence: a verifier re-derives every
//! field from the DID document and the PDS proof. Its JSON is built with
//! `serde_json` in a fixed field order so the same inputs give the same bytes
//! (and digest).

use crate::Digest;
use crate::manifest::{Descriptor, OCI_EMPTY, OCI_MANIFEST};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `artifactType` of signature artifacts, and the media type of their layer.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.atproto.signature.v1+json";
/// `$type` of the layer JSON.
pub const SIGNATURE_LAYER_TYPE: &str = "io.atcr.atproto.signature";
/// Version of the layer JSON this crate writes.
pub const SIGNATURE_VERSION: &str = "1.0";
/// Annotation: the signer's DID.
pub const ANNOTATION_DID: &str = "io.atcr.atproto.did";
/// Annotation: the signer's PDS endpoint.
pub const ANNOTATION_PDS: &str = "io.atcr.atproto.pds";
/// Annotation: the at-uri of the signing record.
pub const ANNOTATION_RECORD_URI: &str = "io.atcr.atproto.recordUri";
/// The OCI empty JSON blob (`{}`), the config of every artifact.
pub const EMPTY_JSON: &[u8] = b"{}";

/// The signed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSubject {
    /// Digest of the signed manifest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
}

/// Where the signing record lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AtprotoPointer {
    /// Signer DID.
    pub did: String,
    /// Signer handle at signing time (a hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Signer PDS endpoint (a hint).
    pub pds_endpoint: String,
    /// at-uri of the `io.atcr.manifest` or `io.atcr.signature` record.
    pub record_uri: String,
    /// CID of the commit that wrote the record.
    pub commit_cid: String,
    /// When the artifact was made (a hint: verifiers use the record's time).
    pub signed_at: String,
}

/// The key that signed the commit (a hint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureKey {
    /// `ECDSA-K256-SHA256` or `ECDSA-P256-SHA256`.
    pub algorithm: String,
    /// `DID#atproto`.
    pub key_id: String,
    /// The public key, multibase (did:key body).
    pub public_key_multibase: String,
}

/// The layer JSON of a signature artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureLayer {
    /// Always [`SIGNATURE_LAYER_TYPE`].
    #[serde(rename = "$type")]
    pub type_: String,
    /// Format version.
    pub version: String,
    /// The signed image.
    pub subject: SignatureSubject,
    /// The record pointer.
    pub atproto: AtprotoPointer,
    /// The key hint.
    pub signature: SignatureKey,
}

impl SignatureLayer {
    /// Parses a layer, checking its `$type`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let l: Self = serde_json::from_slice(bytes).map_err(|e| format!("signature layer: {e}"))?;
        if l.type_ != SIGNATURE_LAYER_TYPE {
            return Err(format!(
                "signature layer: $type is {:?}, expected {SIGNATURE_LAYER_TYPE}",
                l.type_
            ));
        }
        Ok(l)
    }
}

/// The layer annotation `oras pull` names the file by.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// The file name of the layer (`oras pull` writes it).
pub const LAYER_TITLE: &str = "atproto-signature.json";
/// Largest signature layer accepted from a co-signer or read by a verifier.
pub const MAX_LAYER_BYTES: usize = 8 * 1024;
/// Largest signature artifact manifest accepted or read.
pub const MAX_ARTIFACT_BYTES: usize = 32 * 1024;

/// A built artifact: the manifest bytes and digest, and the blobs it needs.
#[derive(Debug, Clone)]
pub struct BuiltArtifact {
    /// Manifest bytes (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
    /// Its sha256 digest.
    pub digest: Digest,
    /// `(digest, bytes)` of the config (empty JSON) and the layer.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// A descriptor as the artifact writes it (with the optional inline `data`).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArtifactDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The artifact manifest, field for field (and in this order).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArtifactManifest {
    schema_version: u32,
    media_type: String,
    artifact_type: String,
    config: ArtifactDescriptor,
    layers: Vec<ArtifactDescriptor>,
    subject: Descriptor,
    annotations: BTreeMap<String, String>,
}

/// Builds the artifact for `layer`, whose subject descriptor is `subject`.
/// With `inline`, the layer also travels in its descriptor's `data` (what a
/// co-signer pushes, so it needs no blob upload). The one builder of the
/// artifact: the registry, `atcr sign` and the co-signature check use it.
pub fn build_artifact(layer: &SignatureLayer, subject: Descriptor, inline: bool) -> BuiltArtifact {
    use base64::Engine as _;
    // Serializing plain structs of strings cannot fail.
    let layer_bytes = serde_json::to_vec(layer).unwrap_or_default();
    let layer_digest = Digest::sha256_of(&layer_bytes);
    let empty_digest = Digest::sha256_of(EMPTY_JSON);
    let annotations = BTreeMap::from([
        (ANNOTATION_DID.to_owned(), layer.atproto.did.clone()),
        (
            ANNOTATION_PDS.to_owned(),
            layer.atproto.pds_endpoint.clone(),
        ),
        (
            ANNOTATION_RECORD_URI.to_owned(),
            layer.atproto.record_uri.clone(),
        ),
    ]);
    let m = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        artifact_type: SIGNATURE_ARTIFACT_TYPE.into(),
        config: ArtifactDescriptor {
            media_type: OCI_EMPTY.into(),
            digest: empty_digest.to_string(),
            size: EMPTY_JSON.len() as u64,
            data: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![ArtifactDescriptor {
            media_type: SIGNATURE_ARTIFACT_TYPE.into(),
            digest: layer_digest.to_string(),
            size: layer_bytes.len() as u64,
            data: inline.then(|| base64::engine::general_purpose::STANDARD.encode(&layer_bytes)),
            annotations: BTreeMap::from([(ANNOTATION_TITLE.to_owned(), LAYER_TITLE.to_owned())]),
        }],
        subject,
        annotations,
    };
    let manifest = serde_json::to_vec(&m).unwrap_or_default();
    BuiltArtifact {
        digest: Digest::sha256_of(&manifest),
        manifest,
        blobs: vec![
            (empty_digest, EMPTY_JSON.to_vec()),
            (layer_digest, layer_bytes),
        ],
    }
}

/// A co-signature artifact that has exactly the shape of DESIGN §5.
#[derive(Debug, Clone)]
pub struct CosignArtifact {
    /// The layer it carries inline.
    pub layer: SignatureLayer,
    /// The layer's exact bytes.
    pub layer_bytes: Vec<u8>,
    /// The signed image.
    pub subject: Descriptor,
    /// The config and layer blobs (both inline: nothing to upload).
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// Accepts `bytes` only if they are, byte for byte, what [`build_artifact`]
/// makes (inline form) from the layer they carry: one small inline layer,
/// the empty config, a subject, exactly the three pointer annotations, no
/// `manifests`, nothing else. What a non-owner may push (token scope `sign`).
pub fn validate_cosign_artifact(bytes: &[u8]) -> Result<CosignArtifact, String> {
    use base64::Engine as _;
    if bytes.len() > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "a co-signature artifact is at most {MAX_ARTIFACT_BYTES} bytes"
        ));
    }
    let m: ArtifactManifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a signature artifact manifest: {e}"))?;
    let [layer] = &m.layers[..] else {
        return Err("a signature artifact has exactly one layer".into());
    };
    let layer_bytes = layer
        .data
        .as_deref()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or("a co-signature carries its layer inline (descriptor `data`)")?;
    if layer_bytes.len() > MAX_LAYER_BYTES {
        return Err(format!(
            "the signature layer is over {MAX_LAYER_BYTES} bytes"
        ));
    }
    let parsed = SignatureLayer::parse(&layer_bytes)?;
    if parsed.subject.digest != m.subject.digest.to_string()
        || parsed.subject.media_type != m.subject.media_type
    {
        return Err("the layer's subject is not the manifest's".into());
    }
    // The layer bytes must be the canonical serialization, and the manifest
    // the canonical build around them.
    if serde_json::to_vec(&parsed).unwrap_or_default() != layer_bytes {
        return Err("the signature layer is not in its canonical form".into());
    }
    let subject = m.subject.clone();
    let built = build_artifact(&parsed, subject.clone(), true);
    if built.manifest != bytes {
        return Err(format!(
            "not the exact signature artifact shape (DESIGN §5): expected the manifest {} builds",
            built.digest
        ));
    }
    Ok(CosignArtifact {
        layer: parsed,
        layer_bytes,
        subject,
        blobs: built.blobs,
    })
}

/// What a verifier reads from any signature artifact: where its layer is.
/// Only the record URI in the layer is used, and only as a pointer.
#[derive(Debug, Clone)]
pub struct ArtifactPointer {
    /// The layer digest.
    pub layer_digest: Digest,
    /// The layer bytes, when carried inline.
    pub inline_layer: Option<Vec<u8>>,
}

impl ArtifactPointer {
    /// Reads a signature artifact manifest (registry-made or co-signer's),
    /// bounded in size.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        use base64::Engine as _;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Loose {
            artifact_type: Option<String>,
            layers: Vec<ArtifactDescriptor>,
        }
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(format!(
                "signature artifact over {MAX_ARTIFACT_BYTES} bytes"
            ));
        }
        let m: Loose =
            serde_json::from_slice(bytes).map_err(|e| format!("signature artifact: {e}"))?;
        if m.artifact_type.as_deref() != Some(SIGNATURE_ARTIFACT_TYPE) {
            return Err("not a signature artifact".into());
        }
        let [layer] = &m.layers[..] else {
            return Err("a signature artifact has exactly one layer".into());
        };
        if layer.media_type != SIGNATURE_ARTIFACT_TYPE || layer.size > MAX_LAYER_BYTES as u64 {
            return Err("the signature layer has the wrong type or is too large".into());
        }
        let layer_digest = Digest::parse(&layer.digest).map_err(|e| e.message)?;
        let inline_layer = match &layer.data {
            None => None,
            Some(d) => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .map_err(|e| format!("inline layer: {e}"))?;
                if Digest::sha256_of(&b) != layer_digest {
                    return Err("the inline layer does not match its digest".into());
                }
                Some(b)
            }
        };
        Ok(Self {
            layer_digest,
            inline_layer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn layer() -> SignatureLayer {
        SignatureLayer {
            type_: SIGNATURE_LAYER_TYPE.into(),
            version: SIGNATURE_VERSION.into(),
            subject: SignatureSubject {
                digest: format!("sha256:{}", "a".repeat(64)),
                media_type: OCI_MANIFEST.into(),
            },
            atproto: AtprotoPointer {
                did: "did:plc:abc".into(),
                handle: Some("alice.test".into()),
                pds_endpoint: "https://pds.example".into(),
                record_uri: "at://did:plc:abc/io.atcr.manifest/3k".into(),
                commit_cid: "bafy".into(),
                signed_at: "2026-01-01T00:00:00.000Z".into(),
            },
            signature: SignatureKey {
                algorithm: "ECDSA-K256-SHA256".into(),
                key_id: "did:plc:abc#atproto".into(),
                public_key_multibase: "zQ3s".into(),
            },
        }
    }

    fn subject_of(l: &SignatureLayer) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::parse(&l.subject.digest).unwrap(),
            size: 10,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn artifact_is_a_valid_referrer_of_its_subject() {
        let l = layer();
        let subject = subject_of(&l);
        let a = build_artifact(&l, subject.clone(), false);
        let p = parse_manifest(&a.manifest, Some(OCI_MANIFEST)).unwrap();
        assert_eq!(
            p.effective_artifact_type().as_deref(),
            Some(SIGNATURE_ARTIFACT_TYPE)
        );
        assert_eq!(p.subject.unwrap().digest, subject.digest);
        assert_eq!(p.annotations[ANNOTATION_DID], "did:plc:abc");
        // Deterministic, and the layer round-trips.
        assert_eq!(build_artifact(&l, subject.clone(), false).digest, a.digest);
        assert_eq!(SignatureLayer::parse(&a.blobs[1].1).unwrap(), l);
        assert!(SignatureLayer::parse(br#"{"$type":"x"}"#).is_err());
        // The layer is titled, so `oras pull` writes a file.
        let raw: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(
            raw["layers"][0]["annotations"][ANNOTATION_TITLE],
            LAYER_TITLE
        );
        // The inline form is the one co-signers push, and validates.
        let inline = build_artifact(&l, subject, true);
        let v = validate_cosign_artifact(&inline.manifest).unwrap();
        assert_eq!(v.layer, l);
        let p = ArtifactPointer::parse(&inline.manifest).unwrap();
        assert_eq!(p.inline_layer.as_deref(), Some(&a.blobs[1].1[..]));
        // The non-inline form is not a co-signer's.
        assert!(validate_cosign_artifact(&a.manifest).is_err());
    }

    #[test]
    fn cosign_artifacts_must_be_the_exact_shape() {
        let l = layer();
        let good = build_artifact(&l, subject_of(&l), true).manifest;
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut m = v.clone();
            f(&mut m);
            serde_json::to_vec(&m).unwrap()
        };
        let huge = "x".repeat(3_900_000);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "huge annotation",
                mutate(&|m| m["annotations"]["junk"] = huge.clone().into()),
            ),
            (
                "extra annotation",
                mutate(&|m| m["annotations"]["a"] = "b".into()),
            ),
            (
                "manifests",
                mutate(&|m| m["manifests"] = serde_json::json!([])),
            ),
            (
                "two layers",
                mutate(&|m| {
                    let l = m["layers"][0].clone();
                    m["layers"].as_array_mut().unwrap().push(l);
                }),
            ),
            (
                "no inline data",
                mutate(&|m| {
                    m["layers"][0].as_object_mut().unwrap().remove("data");
                }),
            ),
            (
                "index media type",
                mutate(&|m| m["mediaType"] = crate::manifest::OCI_INDEX.into()),
            ),
            (
                "other subject",
                mutate(&|m| m["subject"]["digest"] = format!("sha256:{}", "b".repeat(64)).into()),
            ),
            ("reordered", {
                let mut o = serde_json::Map::new();
                for k in [
                    "annotations",
                    "subject",
                    "layers",
                    "config",
                    "artifactType",
                    "mediaType",
                    "schemaVersion",
                ] {
                    o.insert(k.into(), v[k].clone());
                }
                serde_json::to_vec(&o).unwrap()
            }),
        ];
        for (what, bytes) in cases {
            assert!(validate_cosign_artifact(&bytes).is_err(), "{what} accepted");
        }
        v["layers"][0]["size"] = 1.into();
        assert!(validate_cosign_artifact(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(validate_cosign_artifact(&good).is_ok());
    }
}

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

/// Builds the artifact for `layer`, whose subject descriptor is `subject`.
pub fn build_artifact(layer: &SignatureLayer, subject: Descriptor) -> BuiltArtifact {
    // Serializing plain structs of strings cannot fail.
    let layer_bytes = serde_json::to_vec(layer).unwrap_or_default();
    let layer_digest = Digest::sha256_of(&layer_bytes);
    let empty_digest = Digest::sha256_of(EMPTY_JSON);
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_DID.to_owned(), layer.atproto.did.clone());
    annotations.insert(
        ANNOTATION_PDS.to_owned(),
        layer.atproto.pds_endpoint.clone(),
    );
    annotations.insert(
        ANNOTATION_RECORD_URI.to_owned(),
        layer.atproto.record_uri.clone(),
    );
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Manifest<'a> {
        schema_version: u32,
        media_type: &'a str,
        artifact_type: &'a str,
        config: Descriptor,
        layers: Vec<Descriptor>,
        subject: Descriptor,
        annotations: BTreeMap<String, String>,
    }
    let m = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        artifact_type: SIGNATURE_ARTIFACT_TYPE,
        config: Descriptor {
            media_type: OCI_EMPTY.into(),
            digest: empty_digest.clone(),
            size: EMPTY_JSON.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: SIGNATURE_ARTIFACT_TYPE.into(),
            digest: layer_digest.clone(),
            size: layer_bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
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

    #[test]
    fn artifact_is_a_valid_referrer_of_its_subject() {
        let l = layer();
        let subject = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::parse(&l.subject.digest).unwrap(),
            size: 10,
            artifact_type: None,
            annotations: BTreeMap::new(),
        };
        let a = build_artifact(&l, subject.clone());
        let p = parse_manifest(&a.manifest, Some(OCI_MANIFEST)).unwrap();
        assert_eq!(
            p.effective_artifact_type().as_deref(),
            Some(SIGNATURE_ARTIFACT_TYPE)
        );
        assert_eq!(p.subject.unwrap().digest, subject.digest);
        assert_eq!(p.annotations[ANNOTATION_DID], "did:plc:abc");
        // Deterministic, and the layer round-trips.
        assert_eq!(build_artifact(&l, subject).digest, a.digest);
        assert_eq!(SignatureLayer::parse(&a.blobs[1].1).unwrap(), l);
        assert!(SignatureLayer::parse(br#"{"$type":"x"}"#).is_err());
    }
}

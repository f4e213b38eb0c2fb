//! Manifest and index validation.

use crate::{Digest, ErrorCode, RegistryError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI empty descriptor's media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Largest manifest accepted (the spec's SHOULD-support size).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Whether a manifest points at blobs (image) or at other manifests (index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Image manifest (OCI or Docker schema 2), artifacts included.
    Image,
    /// Image index or Docker manifest list.
    Index,
}

/// A validated descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    #[serde(with = "digest_string")]
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

mod digest_string {
    use crate::Digest;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What the registry needs to know about a pushed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The media type (from the body, else the Content-Type).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The config descriptor (images).
    pub config: Option<Descriptor>,
    /// Layers (images).
    pub layers: Vec<Descriptor>,
    /// `urls` of each layer (same order as `layers`; mostly empty).
    pub layer_urls: Vec<Vec<String>>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The subject, for referrers.
    pub subject: Option<Descriptor>,
    /// The manifest's own `artifactType`.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ParsedManifest {
    /// The artifact type the Referrers API reports: `artifactType`, else for
    /// an image the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }

    /// Blobs that must exist before the manifest is accepted: the config
    /// and every layer that is not [foreign](Self::foreign_layers).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.config.iter().map(|d| &d.digest).chain(
            self.layers
                .iter()
                .zip(&self.layer_urls)
                .filter(|(d, urls)| !is_foreign(d, urls))
                .map(|(d, _)| &d.digest),
        )
    }

    /// Layers clients fetch from elsewhere (a non-distributable media type,
    /// or `urls`): they may be absent from the registry when their URLs are
    /// allowed (Windows base images).
    pub fn foreign_layers(&self) -> impl Iterator<Item = (&Descriptor, &[String])> {
        self.layers
            .iter()
            .zip(&self.layer_urls)
            .filter(|(d, urls)| is_foreign(d, urls))
            .map(|(d, urls)| (d, urls.as_slice()))
    }

    /// Manifests that must exist before an index is accepted.
    pub fn required_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().map(|d| &d.digest)
    }
}

/// Non-distributable layer media types (OCI, deprecated but in use) and
/// Docker's foreign layer.
pub const NON_DISTRIBUTABLE_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

fn is_foreign(d: &Descriptor, urls: &[String]) -> bool {
    !urls.is_empty() || NON_DISTRIBUTABLE_LAYERS.contains(&d.media_type.as_str())
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, msg)
}

fn convert(d: &oci_spec::image::Descriptor, what: &str) -> Result<Descriptor, RegistryError> {
    let digest = Digest::parse(d.digest().as_ref())
        .map_err(|e| invalid(format!("{what}: {}", e.message)))?;
    let media_type = d.media_type().to_string();
    if media_type.is_empty() {
        return Err(invalid(format!("{what}: empty mediaType")));
    }
    Ok(Descriptor {
        media_type,
        digest,
        size: d.size(),
        artifact_type: d.artifact_type().as_ref().map(|m| m.to_string()),
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

/// Validates manifest bytes pushed with `content_type`.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, RegistryError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(
            invalid(format!("manifest larger than {MAX_MANIFEST_BYTES} bytes")).with_status(413),
        );
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    // serde_json keeps the last of duplicate keys; another parser may keep
    // the first: such a manifest means different things to different readers.
    no_duplicate_keys(bytes).map_err(invalid)?;
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("manifest must be a JSON object"))?;
    let body_type = match obj.get("mediaType") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    if let (Some(b), Some(h)) = (body_type, header_type)
        && b != h
    {
        return Err(invalid(format!(
            "Content-Type {h} does not match the manifest's mediaType {b}"
        )));
    }
    let media_type = match body_type.or(header_type) {
        Some(m) => m.to_owned(),
        None if obj.contains_key("manifests") => OCI_INDEX.to_owned(),
        None => OCI_MANIFEST.to_owned(),
    };
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        m if m.starts_with("application/vnd.docker.distribution.manifest.v1") => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "Docker schema 1 manifests are not supported",
            ));
        }
        m => return Err(invalid(format!("unsupported manifest media type {m:?}"))),
    };
    if obj.get("schemaVersion").and_then(serde_json::Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    // Fields both kinds share, read from their common JSON shape.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Common {
        subject: Option<oci_spec::image::Descriptor>,
        artifact_type: Option<String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let common: Common = serde_json::from_value(value.clone())
        .map_err(|e| invalid(format!("invalid manifest: {e}")))?;
    let mut parsed = ParsedManifest {
        media_type,
        kind,
        config: None,
        layers: vec![],
        layer_urls: vec![],
        manifests: vec![],
        subject: common
            .subject
            .as_ref()
            .map(|s| convert(s, "subject"))
            .transpose()?,
        artifact_type: common.artifact_type,
        annotations: common.annotations,
    };
    let list = |ds: &[oci_spec::image::Descriptor],
                what: &str|
     -> Result<Vec<Descriptor>, RegistryError> {
        ds.iter()
            .enumerate()
            .map(|(i, d)| convert(d, &format!("{what}[{i}]")))
            .collect()
    };
    match kind {
        ManifestKind::Image => {
            let m: oci_spec::image::ImageManifest = serde_json::from_value(value)
                .map_err(|e| invalid(format!("invalid image manifest: {e}")))?;
            parsed.config = Some(convert(m.config(), "config")?);
            parsed.layers = list(m.layers(), "layers")?;
            parsed.layer_urls = m
                .layers()
                .iter()
                .map(|l| l.urls().clone().unwrap_or_default())
                .collect();
        }
        ManifestKind::Index => {
            let m: oci_spec::image::ImageIndex = serde_json::from_value(value)
                .map_err(|e| invalid(format!("invalid image index: {e}")))?;
            parsed.manifests = list(m.manifests(), "manifests")?;
        }
    }
    Ok(parsed)
}

/// Refuses JSON in which an object repeats a key (at any depth).
/// Hand-written because serde_json silently keeps the last value.
pub fn no_duplicate_keys(bytes: &[u8]) -> Result<(), String> {
    use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                }
                m.next_value::<Nested>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element::<Nested>()?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    struct Nested;
    impl<'de> serde::Deserialize<'de> for Nested {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check).map(|()| Nested)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_any(Check)
        .map_err(|e| format!("manifest JSON: {e}"))
}

#[cfg(test)]
mod duplicate_keys {
    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert!(super::no_duplicate_keys(br#"{"a":1,"b":[{"c":2}]}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"x":{"mediaType":"a","mediaType":"b"}}"#,
            br#"[{"k":1,"k":1}]"#,
        ] {
            let e = super::no_duplicate_keys(bad).unwrap_err();
            assert!(e.contains("duplicate key"), "{e}");
        }
    }
}

//! The ATCR record types (`lexicons/io/atcr/*.json`), declared once: built by
//! the registry and `atcr sign`, read by the verifier and the registry's
//! co-signature check.
//!
//! Records travel as atproto JSON; these types are their typed form. Reading
//! ignores fields a newer lexicon may add; every field the checks use is
//! required.

use crate::{Digest, MANIFEST_COLLECTION, Owner, RepoName, SIGNATURE_COLLECTION, TAG_COLLECTION};
use serde::{Deserialize, Serialize};

/// `io.atcr.manifest`: the owner's signature over a pushed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    /// Always [`MANIFEST_COLLECTION`].
    #[serde(rename = "$type")]
    pub type_: String,
    /// REPO (the path after the owner).
    pub repository: String,
    /// Digest of the exact manifest bytes.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest schema version (2).
    pub schema_version: i64,
    /// Artifact type, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Config descriptor, as pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Layer descriptors, as pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<serde_json::Value>,
    /// Child manifest descriptors (indexes), as pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<serde_json::Value>,
    /// Subject descriptor, as pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<serde_json::Value>,
    /// Annotations, as pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
    /// The ATProto blob holding the exact manifest bytes.
    pub manifest_blob: serde_json::Value,
    /// When it was signed (RFC 3339).
    pub created_at: String,
}

impl ManifestRecord {
    /// The record for pushed manifest bytes (`manifest`, already validated
    /// JSON); descriptors are copied as pushed.
    pub fn new(
        repo: &str,
        digest: &str,
        media_type: &str,
        manifest: &serde_json::Value,
        blob: serde_json::Value,
        created_at: &str,
    ) -> Self {
        let field = |k: &str| manifest.get(k).cloned();
        Self {
            type_: MANIFEST_COLLECTION.into(),
            repository: repo.into(),
            digest: digest.into(),
            media_type: media_type.into(),
            schema_version: manifest
                .get("schemaVersion")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(2),
            artifact_type: manifest
                .get("artifactType")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            config: field("config"),
            layers: field("layers"),
            manifests: field("manifests"),
            subject: field("subject"),
            annotations: field("annotations"),
            manifest_blob: blob,
            created_at: created_at.into(),
        }
    }

    /// Whether it signs `repo@digest`.
    pub fn check_names(&self, repo: &str, digest: &Digest) -> Result<(), Mismatch> {
        if self.digest != digest.to_string() {
            return Err(Mismatch::Digest(self.digest.clone()));
        }
        if self.repository != repo {
            return Err(Mismatch::Repository(self.repository.clone()));
        }
        Ok(())
    }
}

/// `io.atcr.tag`: the owner's signature over TAG → digest (rkey [`crate::tag_rkey`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    /// Always [`TAG_COLLECTION`].
    #[serde(rename = "$type")]
    pub type_: String,
    /// REPO.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// Digest the tag names.
    pub manifest_digest: String,
    /// at-uri of the manifest record.
    pub manifest: String,
    /// When (RFC 3339).
    pub created_at: String,
}

impl TagRecord {
    /// The record for `repo:tag` → `digest`.
    pub fn new(repo: &str, tag: &str, digest: &str, manifest_uri: &str, created_at: &str) -> Self {
        Self {
            type_: TAG_COLLECTION.into(),
            repository: repo.into(),
            tag: tag.into(),
            manifest_digest: digest.into(),
            manifest: manifest_uri.into(),
            created_at: created_at.into(),
        }
    }

    /// The digest it signs for `repo:tag` (`None` when it is for another).
    pub fn digest_for(&self, repo: &str, tag: &str) -> Option<&str> {
        (self.repository == repo && self.tag == tag).then_some(self.manifest_digest.as_str())
    }
}

/// The image a co-signature names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSubjectRecord {
    /// `OWNER/REPO`, OWNER the owner's DID (path-safe or raw).
    pub repository: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
}

/// `io.atcr.signature`: a co-signature by any identity (rkey = TID).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureRecord {
    /// Always [`SIGNATURE_COLLECTION`].
    #[serde(rename = "$type")]
    pub type_: String,
    /// The signed image.
    pub subject: SignatureSubjectRecord,
    /// When (RFC 3339).
    pub created_at: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a record fails to name the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// It signs another digest.
    #[error("the record signs {0}")]
    Digest(String),
    /// It names another repository (or names the owner by a handle).
    #[error("the record is for the repository {0:?}")]
    Repository(String),
}

impl SignatureRecord {
    /// A co-signature of `owner_did`'s `repo@digest`. The repository is
    /// named by the owner's DID (path-safe), which never moves.
    pub fn new(
        owner_did: &atcr_syntax::Did,
        repo: &str,
        digest: &Digest,
        media_type: &str,
        note: Option<String>,
        created_at: &str,
    ) -> Self {
        Self {
            type_: SIGNATURE_COLLECTION.into(),
            subject: SignatureSubjectRecord {
                repository: format!("{}/{repo}", path_safe_did(owner_did)),
                digest: digest.to_string(),
                media_type: media_type.into(),
            },
            created_at: created_at.into(),
            note,
        }
    }

    /// The co-signature check, the same at push time (registry) and at
    /// verification time: the record signs exactly `digest` in the
    /// repository `repo` of `owner_did`, the owner named by DID. A handle in
    /// `subject.repository` is refused: it can move to another identity, so
    /// it does not bind the signature to this owner.
    pub fn check_names(
        &self,
        owner_did: &atcr_syntax::Did,
        repo: &str,
        digest: &Digest,
    ) -> Result<(), Mismatch> {
        if self.subject.digest != digest.to_string() {
            return Err(Mismatch::Digest(self.subject.digest.clone()));
        }
        let named = RepoName::parse(&self.subject.repository).ok();
        match named {
            Some(n) if n.repo() == repo && matches!(n.owner(), Owner::Did(d) if d == owner_did) => {
                Ok(())
            }
            _ => Err(Mismatch::Repository(self.subject.repository.clone())),
        }
    }
}

/// Reads a record from its atproto JSON form.
pub fn from_json<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
    T::deserialize(v).map_err(|e| e.to_string())
}

/// Writes a record as JSON (what the PDS APIs take).
pub fn to_json<T: Serialize>(record: &T) -> serde_json::Value {
    // Plain structs of strings and JSON values always serialize.
    serde_json::to_value(record).unwrap_or(serde_json::Value::Null)
}

/// A DID written as an image-name segment: `did:plc:x` → `did-plc-x`,
/// `did:web:host` → `did-web-host`.
pub fn path_safe_did(did: &atcr_syntax::Did) -> String {
    did.as_str()
        .replacen("did:", "did-", 1)
        .replacen(':', "-", 1)
}

/// The deterministic record key of the `io.atcr.manifest` record of
/// `repo@digest`: a retried push writes the same record instead of a
/// second one, and a delete knows which record to remove. `/` in REPO
/// becomes `~` as in [`crate::tag_rkey`]; the digest keeps its `:`.
pub fn manifest_rkey(repo: &str, digest: &Digest) -> String {
    format!("{}:{digest}", repo.replace('/', "~"))
}

/// The `Accept` header for manifests: every type the registry serves.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_check_binds_the_owner_did() {
        let owner = atcr_syntax::Did::new("did:plc:abcdefghijklmnopqrstuvwx").unwrap();
        let other = atcr_syntax::Did::new("did:plc:bbcdefghijklmnopqrstuvwx").unwrap();
        let d = Digest::sha256_of(b"m");
        let r = SignatureRecord::new(
            &owner,
            "team/app",
            &d,
            crate::manifest::OCI_MANIFEST,
            None,
            "t",
        );
        assert_eq!(
            r.subject.repository,
            "did-plc-abcdefghijklmnopqrstuvwx/team/app"
        );
        assert!(r.check_names(&owner, "team/app", &d).is_ok());
        assert!(matches!(
            r.check_names(&other, "team/app", &d),
            Err(Mismatch::Repository(_))
        ));
        assert!(matches!(
            r.check_names(&owner, "app", &d),
            Err(Mismatch::Repository(_))
        ));
        assert!(matches!(
            r.check_names(&owner, "team/app", &Digest::sha256_of(b"x")),
            Err(Mismatch::Digest(_))
        ));
        // The raw DID form names the same owner; a handle never does.
        let mut raw = r.clone();
        raw.subject.repository = format!("{owner}/team/app");
        assert!(raw.check_names(&owner, "team/app", &d).is_ok());
        let mut by_handle = r.clone();
        by_handle.subject.repository = "alice.test/team/app".into();
        assert!(by_handle.check_names(&owner, "team/app", &d).is_err());
        // Round trip through JSON.
        let back: SignatureRecord = from_json(&to_json(&r)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn manifest_rkeys_are_legal_deterministic_and_distinct() {
        let d = Digest::sha256_of(b"m");
        let k = manifest_rkey("team/app", &d);
        assert_eq!(k, format!("team~app:{d}"));
        assert!(atcr_syntax::RecordKey::new(&k).is_ok());
        assert_ne!(k, manifest_rkey("team/app", &Digest::sha256_of(b"n")));
        assert_ne!(k, manifest_rkey("team", &d));
        // The longest name with a sha512 digest is still a legal key.
        let long = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert!(atcr_syntax::RecordKey::new(manifest_rkey(&"a/".repeat(126), &long)).is_ok());
    }
}

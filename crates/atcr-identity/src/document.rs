use crate::IdentityError;
use atcr_crypto::{Algorithm, PublicKey};
use atcr_syntax::{Did, Handle};
use serde::{Deserialize, Serialize};

/// A DID document (the subset atproto uses; other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidDocument {
    /// The DID the document describes.
    pub id: String,
    /// Other identifiers; atproto puts `at://<handle>` here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_known_as: Vec<String>,
    /// Keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification_method: Vec<VerificationMethod>,
    /// Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<Service>,
}

/// A verification method entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMethod {
    /// `did:…#atproto` or `#atproto`.
    pub id: String,
    /// `Multikey`, or a legacy suite name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Controlling DID.
    #[serde(default)]
    pub controller: String,
    /// The key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_multibase: Option<String>,
}

/// A service entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `#atproto_pds` and the like.
    pub id: String,
    /// `AtprotoPersonalDataServer` and the like.
    #[serde(rename = "type")]
    pub kind: String,
    /// The endpoint: a URL string (other shapes are kept but not used).
    pub service_endpoint: serde_json::Value,
}

fn fragment_matches(id: &str, did: &str, fragment: &str) -> bool {
    id == format!("#{fragment}") || id == format!("{did}#{fragment}")
}

impl DidDocument {
    /// Parses a document and checks that it describes `did`.
    pub fn parse(did: &Did, json: &[u8]) -> Result<Self, IdentityError> {
        let doc: Self = serde_json::from_slice(json).map_err(|e| IdentityError::Invalid {
            subject: did.to_string(),
            reason: format!("DID document is not valid JSON: {e}"),
        })?;
        if doc.id != did.as_str() {
            return Err(IdentityError::Invalid {
                subject: did.to_string(),
                reason: format!("document id is {:?}", doc.id),
            });
        }
        Ok(doc)
    }

    /// The DID.
    pub fn did(&self) -> Result<Did, IdentityError> {
        Did::new(&self.id).map_err(|e| IdentityError::Invalid {
            subject: self.id.clone(),
            reason: e.to_string(),
        })
    }

    /// The atproto signing key (`#atproto`).
    pub fn signing_key(&self) -> Result<PublicKey, IdentityError> {
        let invalid = |reason: String| IdentityError::Invalid {
            subject: self.id.clone(),
            reason,
        };
        let vm = self
            .verification_method
            .iter()
            .find(|m| fragment_matches(&m.id, &self.id, "atproto"))
            .ok_or_else(|| invalid("no #atproto verification method".into()))?;
        let mb = vm
            .public_key_multibase
            .as_deref()
            .ok_or_else(|| invalid("#atproto has no publicKeyMultibase".into()))?;
        let key = match vm.kind.as_str() {
            "Multikey" => PublicKey::from_multikey(mb),
            "EcdsaSecp256k1VerificationKey2019" => {
                PublicKey::from_legacy_multibase(Algorithm::K256, mb)
            }
            "EcdsaSecp256r1VerificationKey2019" => {
                PublicKey::from_legacy_multibase(Algorithm::P256, mb)
            }
            other => {
                return Err(invalid(format!(
                    "unsupported verification method type {other:?}"
                )));
            }
        };
        key.map_err(|e| invalid(format!("#atproto key: {e}")))
    }

    /// The PDS endpoint (`#atproto_pds` of type `AtprotoPersonalDataServer`).
    pub fn pds_endpoint(&self) -> Result<url::Url, IdentityError> {
        let invalid = |reason: String| IdentityError::Invalid {
            subject: self.id.clone(),
            reason,
        };
        let svc = self
            .service
            .iter()
            .find(|s| {
                fragment_matches(&s.id, &self.id, "atproto_pds")
                    && s.kind == "AtprotoPersonalDataServer"
            })
            .ok_or_else(|| invalid("no #atproto_pds service".into()))?;
        let s = svc
            .service_endpoint
            .as_str()
            .ok_or_else(|| invalid("#atproto_pds endpoint is not a string".into()))?;
        let url = url::Url::parse(s).map_err(|e| invalid(format!("#atproto_pds endpoint: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(invalid(
                "#atproto_pds endpoint must be an http(s) URL with a host".into(),
            ));
        }
        Ok(url)
    }

    /// The handle the document claims (first valid `at://` entry), unverified.
    pub fn claimed_handle(&self) -> Option<Handle> {
        self.also_known_as
            .iter()
            .filter_map(|a| a.strip_prefix("at://"))
            .find_map(|h| Handle::new(h).ok())
    }

    /// Whether the document claims `handle` (case-insensitive).
    pub fn claims_handle(&self, handle: &Handle) -> bool {
        let want = handle.normalized();
        self.also_known_as
            .iter()
            .filter_map(|a| a.strip_prefix("at://"))
            .any(|h| h.eq_ignore_ascii_case(&want))
    }
}

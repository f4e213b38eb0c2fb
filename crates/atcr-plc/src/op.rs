use crate::{MAX_OP_BYTES, MAX_ROTATION_KEYS, PlcError};
use atcr_crypto::{Keypair, PublicKey};
use atcr_data::{Cid, Value, cid_for_cbor, to_cbor};
use atcr_syntax::Did;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A service entry of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlcService {
    /// Service type, e.g. `AtprotoPersonalDataServer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Endpoint URL.
    pub endpoint: String,
}

/// A `plc_operation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlcOp {
    /// Keys allowed to sign the next operation, most authoritative first.
    pub rotation_keys: Vec<String>,
    /// Named verification keys (`atproto` is the repository signing key).
    pub verification_methods: BTreeMap<String, String>,
    /// `at://handle` and other aliases.
    pub also_known_as: Vec<String>,
    /// Named services (`atproto_pds`).
    pub services: BTreeMap<String, PlcService>,
    /// CID of the previous operation, `None` for genesis.
    pub prev: Option<String>,
    /// Signature (unpadded base64url); empty while unsigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
    /// Fields this version does not know. Kept, signed over and hashed
    /// like the rest, as the reference directory does: an operation is
    /// accepted when its signature covers them, and its CID stays the one
    /// its signer computed.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A `plc_tombstone`: ends the DID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstone {
    /// CID of the previous operation.
    pub prev: String,
    /// Signature.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
}

/// The legacy v1 genesis operation (`type: create`), still valid as a first op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyCreate {
    /// Signing key (did:key).
    pub signing_key: String,
    /// Recovery key (did:key).
    pub recovery_key: String,
    /// Handle (without `at://`).
    pub handle: String,
    /// PDS host or URL.
    pub service: String,
    /// Always null.
    pub prev: Option<String>,
    /// Signature.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
}

/// Any PLC operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `plc_operation`.
    Op(PlcOp),
    /// `plc_tombstone`.
    Tombstone(Tombstone),
    /// Legacy `create`.
    LegacyCreate(LegacyCreate),
}

/// The state an operation sets: what a DID document is rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentData {
    /// The DID.
    pub did: String,
    /// Rotation keys.
    pub rotation_keys: Vec<String>,
    /// Verification methods.
    pub verification_methods: BTreeMap<String, String>,
    /// Aliases.
    pub also_known_as: Vec<String>,
    /// Services.
    pub services: BTreeMap<String, PlcService>,
}

fn improper(s: impl Into<String>) -> PlcError {
    PlcError::Improper(s.into())
}

/// Parses a did:key into a key, as an error naming the key.
pub(crate) fn parse_key(k: &str) -> Result<PublicKey, PlcError> {
    PublicKey::from_did_key(k).map_err(|e| PlcError::UnsupportedKey {
        key: k.to_owned(),
        reason: e.to_string(),
    })
}

impl Operation {
    /// An unsigned `plc_operation` for an atproto account: the rotation keys,
    /// the `#atproto` signing key, the handle and the `#atproto_pds` endpoint.
    pub fn atproto(
        rotation_keys: &[&PublicKey],
        signing_key: &PublicKey,
        handle: &str,
        pds_endpoint: &str,
        prev: Option<String>,
    ) -> Self {
        Self::Op(PlcOp {
            rotation_keys: rotation_keys.iter().map(|k| k.to_did_key()).collect(),
            verification_methods: BTreeMap::from([(
                "atproto".to_owned(),
                signing_key.to_did_key(),
            )]),
            also_known_as: vec![format!("at://{handle}")],
            services: BTreeMap::from([(
                "atproto_pds".to_owned(),
                PlcService {
                    kind: "AtprotoPersonalDataServer".into(),
                    endpoint: pds_endpoint.to_owned(),
                },
            )]),
            prev,
            sig: String::new(),
            extra: BTreeMap::new(),
        })
    }

    /// Parses an operation from JSON, strictly.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, PlcError> {
        let obj = json
            .as_object()
            .ok_or_else(|| improper("operation must be an object"))?;
        let kind = obj
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| improper("missing type"))?;
        // Every field must be atproto data (no floats): the operation is
        // hashed and signed as DAG-CBOR.
        atcr_data::json::from_json(json).map_err(|e| improper(e.to_string()))?;
        let mut rest = obj.clone();
        rest.remove("type");
        let rest = serde_json::Value::Object(rest);
        let op = match kind {
            "plc_operation" => {
                Self::Op(serde_json::from_value(rest).map_err(|e| improper(e.to_string()))?)
            }
            "plc_tombstone" => {
                Self::Tombstone(serde_json::from_value(rest).map_err(|e| improper(e.to_string()))?)
            }
            "create" => Self::LegacyCreate(
                serde_json::from_value(rest).map_err(|e| improper(e.to_string()))?,
            ),
            other => return Err(improper(format!("unknown operation type {other:?}"))),
        };
        op.check_shape()?;
        Ok(op)
    }

    /// The JSON form (with `sig` when signed).
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, v) = match self {
            Self::Op(o) => ("plc_operation", serde_json::to_value(o)),
            Self::Tombstone(t) => ("plc_tombstone", serde_json::to_value(t)),
            Self::LegacyCreate(c) => ("create", serde_json::to_value(c)),
        };
        let mut v = v.expect("plain string-keyed structs always serialize");
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), kind.into());
        }
        v
    }

    fn value(&self, with_sig: bool) -> Value {
        let mut json = self.to_json();
        if !with_sig && let Some(o) = json.as_object_mut() {
            o.remove("sig");
        }
        atcr_data::json::from_json(&json)
            .expect("operation JSON is atproto data: checked when parsed, built so here")
    }

    /// DAG-CBOR of the operation without `sig`: the signed bytes.
    pub fn unsigned_cbor(&self) -> Vec<u8> {
        to_cbor(&self.value(false))
    }

    /// DAG-CBOR of the signed operation.
    pub fn signed_cbor(&self) -> Vec<u8> {
        to_cbor(&self.value(true))
    }

    /// CID of the signed operation (what the next operation's `prev` names).
    pub fn cid(&self) -> Cid {
        cid_for_cbor(&self.signed_cbor())
    }

    /// `prev`, parsed.
    pub fn prev(&self) -> Result<Option<Cid>, PlcError> {
        let p = match self {
            Self::Op(o) => o.prev.as_deref(),
            Self::Tombstone(t) => Some(t.prev.as_str()),
            Self::LegacyCreate(c) => c.prev.as_deref(),
        };
        p.map(|s| atcr_data::parse_cid(s).map_err(|e| improper(format!("prev: {e}"))))
            .transpose()
    }

    fn sig_str(&self) -> &str {
        match self {
            Self::Op(o) => &o.sig,
            Self::Tombstone(t) => &t.sig,
            Self::LegacyCreate(c) => &c.sig,
        }
    }

    fn set_sig(&mut self, sig: String) {
        match self {
            Self::Op(o) => o.sig = sig,
            Self::Tombstone(t) => t.sig = sig,
            Self::LegacyCreate(c) => c.sig = sig,
        }
    }

    /// Signs the operation with a rotation key.
    pub fn sign(mut self, key: &Keypair) -> Self {
        self.set_sig(String::new());
        let sig = key.sign(&self.unsigned_cbor());
        self.set_sig(URL_SAFE_NO_PAD.encode(sig));
        self
    }

    /// Which of `allowed` (did:keys) signed the operation; an error if none did.
    pub fn verify_signature<'k>(&self, allowed: &'k [String]) -> Result<&'k str, PlcError> {
        let sig = URL_SAFE_NO_PAD
            .decode(self.sig_str())
            .map_err(|_| PlcError::InvalidSignature)?;
        let msg = self.unsigned_cbor();
        for k in allowed {
            if let Ok(key) = parse_key(k)
                && key.verify(&msg, &sig).is_ok()
            {
                return Ok(k);
            }
        }
        Err(PlcError::InvalidSignature)
    }

    /// Whether this is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Self::Tombstone(_))
    }

    /// The state this operation sets (`None` for a tombstone).
    pub fn data(&self, did: &str) -> Option<DocumentData> {
        match self {
            Self::Tombstone(_) => None,
            Self::Op(o) => Some(DocumentData {
                did: did.to_owned(),
                rotation_keys: o.rotation_keys.clone(),
                verification_methods: o.verification_methods.clone(),
                also_known_as: o.also_known_as.clone(),
                services: o.services.clone(),
            }),
            Self::LegacyCreate(c) => {
                let endpoint =
                    if c.service.starts_with("http://") || c.service.starts_with("https://") {
                        c.service.clone()
                    } else {
                        format!("https://{}", c.service)
                    };
                Some(DocumentData {
                    did: did.to_owned(),
                    rotation_keys: vec![c.recovery_key.clone(), c.signing_key.clone()],
                    verification_methods: [("atproto".to_owned(), c.signing_key.clone())].into(),
                    also_known_as: vec![format!("at://{}", c.handle)],
                    services: [(
                        "atproto_pds".to_owned(),
                        PlcService {
                            kind: "AtprotoPersonalDataServer".into(),
                            endpoint,
                        },
                    )]
                    .into(),
                })
            }
        }
    }

    /// Rotation keys that may sign the *next* operation (a legacy genesis
    /// normalizes to `[recoveryKey, signingKey]`).
    pub fn rotation_keys(&self) -> Vec<String> {
        self.data("").map(|d| d.rotation_keys).unwrap_or_default()
    }

    /// Structural limits: key syntax and counts, sizes.
    pub(crate) fn check_shape(&self) -> Result<(), PlcError> {
        match self {
            Self::Op(o) => {
                if o.rotation_keys.is_empty() || o.rotation_keys.len() > MAX_ROTATION_KEYS {
                    return Err(improper(format!(
                        "rotationKeys must hold 1 to {MAX_ROTATION_KEYS} keys"
                    )));
                }
                for (i, k) in o.rotation_keys.iter().enumerate() {
                    parse_key(k)?;
                    if o.rotation_keys[..i].contains(k) {
                        return Err(improper("duplicate rotation key"));
                    }
                }
                if o.verification_methods.len() > crate::MAX_VERIFICATION_METHODS {
                    return Err(improper(format!(
                        "at most {} verification methods",
                        crate::MAX_VERIFICATION_METHODS
                    )));
                }
                for (id, k) in &o.verification_methods {
                    if id.is_empty() || id.len() > 32 {
                        return Err(improper(
                            "verification method id must be 1 to 32 characters",
                        ));
                    }
                    parse_key(k)?;
                }
                for s in o.services.values() {
                    if s.kind.is_empty() || s.endpoint.is_empty() {
                        return Err(improper("service type and endpoint must be non-empty"));
                    }
                }
            }
            Self::LegacyCreate(c) => {
                parse_key(&c.signing_key)?;
                parse_key(&c.recovery_key)?;
                if c.prev.is_some() {
                    return Err(improper("create must have a null prev"));
                }
            }
            Self::Tombstone(_) => {}
        }
        self.prev()?;
        if self.signed_cbor().len() > MAX_OP_BYTES {
            return Err(improper(format!(
                "operation larger than {MAX_OP_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// The DID a signed genesis operation creates.
pub fn did_for_genesis(op: &Operation) -> Did {
    let digest = Sha256::digest(op.signed_cbor());
    let b32 = base32_lower(&digest);
    Did::new(format!("did:plc:{}", &b32[..24])).expect("did:plc with 24 base32 characters is valid")
}

/// RFC 4648 base32, lower case, no padding (multibase `b` without the prefix).
fn base32_lower(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl DocumentData {
    /// The DID document the directory serves for this data (Multikey form).
    pub fn to_did_document(&self) -> serde_json::Value {
        let mut context = vec![
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ];
        let mut methods = vec![];
        for (id, key) in &self.verification_methods {
            let mb = key.strip_prefix("did:key:").unwrap_or(key);
            if matches!(parse_key(key), Ok(PublicKey::K256(_)))
                && !context.contains(&"https://w3id.org/security/suites/secp256k1-2019/v1")
            {
                context.push("https://w3id.org/security/suites/secp256k1-2019/v1");
            }
            methods.push(serde_json::json!({
                "id": format!("{}#{id}", self.did), "type": "Multikey", "controller": self.did, "publicKeyMultibase": mb
            }));
        }
        let services: Vec<_> = self
            .services
            .iter()
            .map(|(id, s)| serde_json::json!({"id": format!("#{id}"), "type": s.kind, "serviceEndpoint": s.endpoint}))
            .collect();
        serde_json::json!({
            "@context": context,
            "id": self.did,
            "alsoKnownAs": self.also_known_as,
            "verificationMethod": methods,
            "service": services,
        })
    }
}

//! AT Protocol cryptography: the two curves atproto uses, K-256 (secp256k1)
//! and P-256 (secp256r1), over RustCrypto's `k256` / `p256` 0.13 (the line
//! `jsonwebtoken` and the atproto ecosystem share).
//!
//! * Signatures are the raw 64-byte `r || s` form over SHA-256 of the message.
//!   Signing always normalizes to **low-S**; verification **rejects** high-S,
//!   DER and any length other than 64 bytes, as atproto requires.
//! * Public keys encode to and from `did:key` and Multikey
//!   (`publicKeyMultibase`), compressed points with the multicodec prefixes
//!   `secp256k1-pub` (0xe7) and `p256-pub` (0x1200); the legacy DID-document
//!   forms (bare compressed or uncompressed point) are also read.
//!
//! Why not `atrium-crypto`: it is a thin layer over the same crates but pins
//! `generic-array = "=0.14.7"` for the whole build; the 100 lines here give
//! the same checks (verified by the official signature and did:key vectors)
//! and let us hold private keys and P-256 JWT keys with one type.

use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use sha2::{Digest, Sha256};

/// The two key algorithms atproto allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// secp256k1, JWT name `ES256K`.
    K256,
    /// NIST P-256, JWT name `ES256`.
    P256,
}

impl Algorithm {
    /// The JWT `alg` name.
    pub fn jwt_name(self) -> &'static str {
        match self {
            Self::K256 => "ES256K",
            Self::P256 => "ES256",
        }
    }
    /// The signature-suite label of verification reports and signature
    /// artifacts (DESIGN §5).
    pub fn suite_name(self) -> &'static str {
        match self {
            Self::K256 => "ECDSA-K256-SHA256",
            Self::P256 => "ECDSA-P256-SHA256",
        }
    }
    const fn multicodec(self) -> [u8; 2] {
        match self {
            Self::K256 => [0xe7, 0x01],
            Self::P256 => [0x80, 0x24],
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, CryptoError> {
        match s.to_ascii_lowercase().as_str() {
            "k256" | "k-256" | "secp256k1" | "es256k" => Ok(Self::K256),
            "p256" | "p-256" | "secp256r1" | "es256" => Ok(Self::P256),
            _ => Err(CryptoError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// Errors from key handling and verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The signature is not 64 bytes (for example DER-encoded).
    #[error("signature must be 64 raw bytes (r || s), got {0} bytes")]
    SignatureLength(usize),
    /// The signature's S is in the upper half of the curve order.
    #[error("high-S signature (atproto requires low-S)")]
    HighS,
    /// The signature does not verify against the key.
    #[error("signature does not verify")]
    BadSignature,
    /// A key string or byte form could not be decoded.
    #[error("malformed key: {0}")]
    MalformedKey(String),
    /// An algorithm name we do not support.
    #[error("unknown key algorithm {0:?}")]
    UnknownAlgorithm(String),
}

/// A private signing key.
#[derive(Clone)]
pub enum Keypair {
    /// secp256k1.
    K256(k256::ecdsa::SigningKey),
    /// P-256.
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private material.
        write!(f, "Keypair({})", self.public_key().to_did_key())
    }
}

impl Keypair {
    /// A new random key from the OS RNG.
    pub fn generate(alg: Algorithm) -> Self {
        let mut rng = rand_core::OsRng;
        match alg {
            Algorithm::K256 => Self::K256(k256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::P256 => Self::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// Imports a 32-byte private scalar.
    pub fn from_private_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |e: ecdsa::Error| CryptoError::MalformedKey(format!("private key: {e}"));
        Ok(match alg {
            Algorithm::K256 => Self::K256(k256::ecdsa::SigningKey::from_slice(bytes).map_err(bad)?),
            Algorithm::P256 => Self::P256(p256::ecdsa::SigningKey::from_slice(bytes).map_err(bad)?),
        })
    }

    /// The 32-byte private scalar (store it with restrictive permissions).
    pub fn private_bytes(&self) -> [u8; 32] {
        match self {
            Self::K256(k) => k.to_bytes().into(),
            Self::P256(k) => k.to_bytes().into(),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::K256,
            Self::P256(_) => Algorithm::P256,
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::K256(k) => PublicKey::K256(*k.verifying_key()),
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    /// Signs SHA-256(`msg`), returning the raw 64-byte low-S signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let digest = Sha256::digest(msg);
        self.sign_prehash(&digest.into())
    }

    /// Signs a 32-byte digest, returning the raw 64-byte low-S signature.
    pub fn sign_prehash(&self, digest: &[u8; 32]) -> [u8; 64] {
        // RFC 6979 deterministic nonces; signing a 32-byte prehash cannot fail.
        match self {
            Self::K256(k) => {
                let sig: k256::ecdsa::Signature = k.sign_prehash(digest).expect("32-byte prehash");
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).expect("32-byte prehash");
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
        }
    }
}

/// Decodes a `z`-prefixed (base58btc) multibase string.
fn decode_base58btc(s: &str) -> Result<Vec<u8>, CryptoError> {
    let b58 = s
        .strip_prefix('z')
        .ok_or_else(|| CryptoError::MalformedKey("multibase must be base58btc ('z')".into()))?;
    bs58::decode(b58)
        .into_vec()
        .map_err(|e| CryptoError::MalformedKey(format!("base58: {e}")))
}

/// A public verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKey {
    /// secp256k1.
    K256(k256::ecdsa::VerifyingKey),
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::K256,
            Self::P256(_) => Algorithm::P256,
        }
    }

    /// Decodes a SEC1 point (33-byte compressed or 65-byte uncompressed).
    pub fn from_sec1(alg: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::MalformedKey("not a valid curve point".into());
        Ok(match alg {
            Algorithm::K256 => {
                Self::K256(k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(bad)?)
            }
            Algorithm::P256 => {
                Self::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(bad)?)
            }
        })
    }

    /// The 33-byte compressed SEC1 point.
    pub fn compressed(&self) -> Vec<u8> {
        match self {
            Self::K256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
            Self::P256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
        }
    }

    /// The Multikey `publicKeyMultibase` value (`z` + base58btc(multicodec || point)).
    pub fn to_multikey(&self) -> String {
        let mut bytes = self.algorithm().multicodec().to_vec();
        bytes.extend_from_slice(&self.compressed());
        format!("z{}", bs58::encode(bytes).into_string())
    }

    /// Parses a Multikey `publicKeyMultibase` value.
    pub fn from_multikey(s: &str) -> Result<Self, CryptoError> {
        let bytes = decode_base58btc(s)?;
        for alg in [Algorithm::K256, Algorithm::P256] {
            if let Some(point) = bytes.strip_prefix(&alg.multicodec()) {
                return Self::from_sec1(alg, point);
            }
        }
        Err(CryptoError::MalformedKey(
            "unsupported multicodec (want secp256k1-pub or p256-pub)".into(),
        ))
    }

    /// The `did:key:` form.
    pub fn to_did_key(&self) -> String {
        format!("did:key:{}", self.to_multikey())
    }

    /// Parses a `did:key:` string.
    pub fn from_did_key(s: &str) -> Result<Self, CryptoError> {
        let mb = s
            .strip_prefix("did:key:")
            .ok_or_else(|| CryptoError::MalformedKey("must start with did:key:".into()))?;
        Self::from_multikey(mb)
    }

    /// Parses a legacy DID-document `publicKeyMultibase` (bare point, no multicodec)
    /// for the given suite's curve.
    pub fn from_legacy_multibase(alg: Algorithm, s: &str) -> Result<Self, CryptoError> {
        let bytes = decode_base58btc(s)?;
        Self::from_sec1(alg, &bytes)
    }

    /// Verifies a raw 64-byte low-S signature over SHA-256(`msg`).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let digest: [u8; 32] = Sha256::digest(msg).into();
        self.verify_prehash(&digest, sig)
    }

    /// Verifies a raw 64-byte low-S signature over a 32-byte digest.
    pub fn verify_prehash(&self, digest: &[u8; 32], sig: &[u8]) -> Result<(), CryptoError> {
        if sig.len() != 64 {
            return Err(CryptoError::SignatureLength(sig.len()));
        }
        match self {
            Self::K256(k) => {
                let s = k256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| CryptoError::BadSignature)?;
                if s.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                k.verify_prehash(digest, &s)
                    .map_err(|_| CryptoError::BadSignature)
            }
            Self::P256(k) => {
                let s = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| CryptoError::BadSignature)?;
                if s.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                k.verify_prehash(digest, &s)
                    .map_err(|_| CryptoError::BadSignature)
            }
        }
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_did_key())
    }
}

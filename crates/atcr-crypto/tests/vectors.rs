//! Official crypto vectors: signatures (incl. high-S and DER rejection) and did:key.

use atcr_crypto::{Algorithm, CryptoError, Keypair, PublicKey};
use atcr_testkit::read_json;
use base64::Engine;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

#[test]
fn signature_fixtures() {
    let fixtures = read_json("crypto/signature-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(fixtures.len() >= 6);
    for f in fixtures {
        let alg: Algorithm = f["algorithm"].as_str().unwrap().parse().unwrap();
        let msg = b64(f["messageBase64"].as_str().unwrap());
        let sig = b64(f["signatureBase64"].as_str().unwrap());
        let key = PublicKey::from_did_key(f["publicKeyDid"].as_str().unwrap()).unwrap();
        assert_eq!(key.algorithm(), alg);
        // The legacy multibase form decodes to the same key.
        let legacy =
            PublicKey::from_legacy_multibase(alg, f["publicKeyMultibase"].as_str().unwrap())
                .unwrap();
        assert_eq!(legacy, key);
        let valid = f["validSignature"].as_bool().unwrap();
        let result = key.verify(&msg, &sig);
        assert_eq!(result.is_ok(), valid, "{}: {result:?}", f["comment"]);
        let tags: Vec<&str> = f["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        if tags.contains(&"high-s") {
            assert_eq!(result, Err(CryptoError::HighS), "{}", f["comment"]);
        }
        if tags.contains(&"der-encoded") {
            assert!(
                matches!(result, Err(CryptoError::SignatureLength(_))),
                "{}",
                f["comment"]
            );
        }
    }
}

#[test]
fn did_key_k256() {
    let cases = read_json("crypto/w3c_didkey_K256.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let hex = c["privateKeyBytesHex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let kp = Keypair::from_private_bytes(Algorithm::K256, &bytes).unwrap();
        let did = c["publicDidKey"].as_str().unwrap();
        assert_eq!(kp.public_key().to_did_key(), did);
        assert_eq!(PublicKey::from_did_key(did).unwrap(), kp.public_key());
    }
}

#[test]
fn did_key_p256() {
    let cases = read_json("crypto/w3c_didkey_P256.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let bytes = bs58::decode(c["privateKeyBytesBase58"].as_str().unwrap())
            .into_vec()
            .unwrap();
        let kp = Keypair::from_private_bytes(Algorithm::P256, &bytes).unwrap();
        let did = c["publicDidKey"].as_str().unwrap();
        assert_eq!(kp.public_key().to_did_key(), did);
        assert_eq!(PublicKey::from_did_key(did).unwrap(), kp.public_key());
    }
}

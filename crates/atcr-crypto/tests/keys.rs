use atcr_crypto::{Algorithm, CryptoError, Keypair, PublicKey};

/// The group orders, to build the high-S twin of a signature (s' = n - s).
const N_K256: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
const N_P256: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn sub_be(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

fn high_s_twin(alg: Algorithm, sig: &[u8; 64]) -> [u8; 64] {
    let n = if alg == Algorithm::K256 {
        &N_K256
    } else {
        &N_P256
    };
    let mut out = *sig;
    out[32..].copy_from_slice(&sub_be(n, &sig[32..]));
    out
}

#[test]
fn two_hundred_signatures_per_curve_are_low_s_and_their_high_s_twins_are_rejected() {
    for alg in [Algorithm::K256, Algorithm::P256] {
        let kp = Keypair::generate(alg);
        let pk = kp.public_key();
        for i in 0..200u32 {
            let msg = format!("message {i}");
            let sig = kp.sign(msg.as_bytes());
            assert_eq!(pk.verify(msg.as_bytes(), &sig), Ok(()), "{alg:?} #{i}");
            // The mathematically valid high-S twin must be refused.
            let twin = high_s_twin(alg, &sig);
            assert_eq!(
                pk.verify(msg.as_bytes(), &twin),
                Err(CryptoError::HighS),
                "{alg:?} #{i}"
            );
        }
    }
}

#[test]
fn der_and_wrong_lengths_are_rejected() {
    for alg in [Algorithm::K256, Algorithm::P256] {
        let kp = Keypair::generate(alg);
        let sig = kp.sign(b"x");
        // A DER encoding of the same (r, s).
        let mut der = vec![0x30, 0x44, 0x02, 0x20];
        der.extend_from_slice(&sig[..32]);
        der.extend_from_slice(&[0x02, 0x20]);
        der.extend_from_slice(&sig[32..]);
        assert!(matches!(
            kp.public_key().verify(b"x", &der),
            Err(CryptoError::SignatureLength(_))
        ));
        assert!(matches!(
            kp.public_key().verify(b"x", &sig[..63]),
            Err(CryptoError::SignatureLength(63))
        ));
        assert_eq!(
            kp.public_key().verify(b"y", &sig),
            Err(CryptoError::BadSignature)
        );
    }
}

#[test]
fn keys_round_trip_through_every_encoding() {
    for alg in [Algorithm::K256, Algorithm::P256] {
        let kp = Keypair::generate(alg);
        let again = Keypair::from_private_bytes(alg, &kp.private_bytes()).unwrap();
        assert_eq!(again.public_key(), kp.public_key());
        let pk = kp.public_key();
        assert_eq!(PublicKey::from_multikey(&pk.to_multikey()).unwrap(), pk);
        assert_eq!(PublicKey::from_did_key(&pk.to_did_key()).unwrap(), pk);
        assert!(!format!("{kp:?}").contains(&format!("{:?}", kp.private_bytes())));
    }
    assert!(PublicKey::from_did_key("did:key:zXYZ").is_err());
    assert!(PublicKey::from_multikey("").is_err());
    assert!(PublicKey::from_multikey("z").is_err());
}

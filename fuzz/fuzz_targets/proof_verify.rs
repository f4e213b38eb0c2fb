#![no_main]
//! Proof verification: never panics on any input. Seeds (from
//! `atcr-bench fuzz-seeds`) are real proofs under this target's fixed key.
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixed {
    did: atcr_syntax::Did,
    key: atcr_crypto::PublicKey,
    coll: atcr_syntax::Nsid,
    rkeys: Vec<atcr_syntax::RecordKey>,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| Fixed {
        did: atcr_syntax::Did::new("did:plc:fuzzfffffffffffffffffffff").unwrap(),
        key: atcr_crypto::Keypair::from_private_bytes(atcr_crypto::Algorithm::K256, &[7u8; 32]).unwrap().public_key(),
        coll: atcr_syntax::Nsid::new("io.atcr.manifest").unwrap(),
        rkeys: ["r0", "r1", "r5", "zz"].iter().map(|r| atcr_syntax::RecordKey::new(*r).unwrap()).collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    for rkey in &f.rkeys {
        let _ = atcr_repo::verify_record_proof(data, &f.did, &f.key, &f.coll, rkey);
    }
});

//! PLC operations: genesis, updates, rotation-key authority, nullification
//! and its window, tombstones, audit-log replay.

use atcr_crypto::{Algorithm, Keypair};
use atcr_plc::*;
use atcr_syntax::Did;

const HOUR: i64 = 3600 * 1000;

fn op(rotation: &[&Keypair], signing: &Keypair, handle: &str, prev: Option<String>) -> Operation {
    let keys: Vec<_> = rotation.iter().map(|k| k.public_key()).collect();
    let refs: Vec<_> = keys.iter().collect();
    Operation::atproto(
        &refs,
        &signing.public_key(),
        handle,
        "https://pds.example.com",
        prev,
    )
}

#[derive(Clone)]
struct Log {
    did: Did,
    ops: Vec<IndexedOp>,
    audit: Vec<AuditEntry>,
}

impl Log {
    fn genesis(op: Operation, at: i64) -> Self {
        let did = did_for_genesis(&op);
        let mut log = Self {
            did,
            ops: vec![],
            audit: vec![],
        };
        log.submit(op, at).unwrap();
        log
    }
    fn submit(&mut self, op: Operation, at: i64) -> Result<NextOp, PlcError> {
        let next = validate_next(&self.did, &self.ops, &op, at)?;
        self.ops.retain(|o| !next.nullified.contains(&o.cid));
        for a in &mut self.audit {
            if next.nullified.contains(&a.cid) {
                a.nullified = true;
            }
        }
        let cid = op.cid();
        self.ops.push(IndexedOp {
            operation: op.clone(),
            cid,
            created_at_ms: at,
        });
        self.audit.push(AuditEntry {
            operation: op,
            cid,
            nullified: false,
            created_at_ms: at,
        });
        Ok(next)
    }
    fn head(&self) -> String {
        self.ops.last().unwrap().cid.to_string()
    }
}

#[test]
fn genesis_derives_the_did_and_round_trips_through_json() {
    let (rot, sign) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::P256),
    );
    let g = op(&[&rot], &sign, "alice.test", None).sign(&rot);
    let did = did_for_genesis(&g);
    assert!(did.as_str().starts_with("did:plc:") && did.as_str().len() == 32);
    let back = Operation::from_json(&g.to_json()).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.cid(), g.cid());
    assert!(validate_next(&did, &[], &g, 0).is_ok());
    // Another DID, or an unsigned / wrongly signed genesis, is refused.
    let other = Did::new("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    assert!(matches!(
        validate_next(&other, &[], &g, 0),
        Err(PlcError::GenesisHash(_))
    ));
    let unsigned = op(&[&rot], &sign, "alice.test", None);
    assert!(matches!(
        validate_next(&did_for_genesis(&unsigned), &[], &unsigned, 0),
        Err(PlcError::InvalidSignature)
    ));
    let wrong = op(&[&rot], &sign, "alice.test", None).sign(&sign);
    assert!(matches!(
        validate_next(&did_for_genesis(&wrong), &[], &wrong, 0),
        Err(PlcError::InvalidSignature)
    ));
    // The document names the DID, the handle, the key and the PDS.
    let doc = g.data(did.as_str()).unwrap().to_did_document();
    assert_eq!(doc["id"], did.as_str());
    assert_eq!(doc["alsoKnownAs"][0], "at://alice.test");
    assert_eq!(
        doc["verificationMethod"][0]["publicKeyMultibase"],
        sign.public_key().to_multikey()
    );
    assert_eq!(doc["service"][0]["id"], "#atproto_pds");
}

#[test]
fn updates_need_a_rotation_key_of_the_previous_operation() {
    let (r1, r2, sign) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::P256),
        Keypair::generate(Algorithm::K256),
    );
    let mut log = Log::genesis(op(&[&r1, &r2], &sign, "a.test", None).sign(&r1), 0);
    // Signed by the atproto signing key (not a rotation key): refused.
    let bad = op(&[&r1, &r2], &sign, "b.test", Some(log.head())).sign(&sign);
    assert!(matches!(
        log.submit(bad, HOUR),
        Err(PlcError::InvalidSignature)
    ));
    // Signed by the second rotation key: fine.
    log.submit(
        op(&[&r1, &r2], &sign, "b.test", Some(log.head())).sign(&r2),
        HOUR,
    )
    .unwrap();
    // prev not in the log / missing: misordered.
    let stray = op(
        &[&r1],
        &sign,
        "c.test",
        Some(atcr_data::cid_for_cbor(b"x").to_string()),
    )
    .sign(&r1);
    assert!(matches!(
        log.submit(stray, 2 * HOUR),
        Err(PlcError::Misordered(_))
    ));
    let no_prev = op(&[&r1], &sign, "c.test", None).sign(&r1);
    assert!(matches!(
        log.submit(no_prev, 2 * HOUR),
        Err(PlcError::Misordered(_))
    ));
}

#[test]
fn nullification_needs_higher_authority_within_72_hours() {
    let (high, low, sign) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
    );
    let mut log = Log::genesis(op(&[&high, &low], &sign, "a.test", None).sign(&high), 0);
    let genesis_cid = log.head();
    // The low key (say, stolen) changes the handle.
    log.submit(
        op(
            &[&high, &low],
            &sign,
            "evil.test",
            Some(genesis_cid.clone()),
        )
        .sign(&low),
        HOUR,
    )
    .unwrap();
    // The low key cannot rewrite its own history.
    let same = op(&[&low], &sign, "x.test", Some(genesis_cid.clone())).sign(&low);
    assert!(matches!(
        log.submit(same, 2 * HOUR),
        Err(PlcError::InvalidSignature)
    ));
    // Too late for the high key after 72 hours...
    let late = op(&[&high], &sign, "a.test", Some(genesis_cid.clone())).sign(&high);
    assert!(matches!(
        log.clone()
            .submit(late.clone(), HOUR + RECOVERY_WINDOW_MS + 1),
        Err(PlcError::LateRecovery(_))
    ));
    // ...but within the window it nullifies the low key's operation.
    let next = log.submit(late, 10 * HOUR).unwrap();
    assert_eq!(next.nullified.len(), 1);
    assert_eq!(log.ops.len(), 2);
    // The audit log replays to the recovered state, nullified flags included.
    let data = audit_log(&log.did, &log.audit).unwrap().unwrap();
    assert_eq!(data.also_known_as, vec!["at://a.test".to_owned()]);
    // A directory that hides the nullification is caught.
    let mut lying = log.audit.clone();
    lying[1].nullified = false;
    assert!(audit_log(&log.did, &lying).is_err());
}

#[test]
fn tombstone_ends_the_did() {
    let (rot, sign) = (
        Keypair::generate(Algorithm::P256),
        Keypair::generate(Algorithm::K256),
    );
    let mut log = Log::genesis(op(&[&rot], &sign, "a.test", None).sign(&rot), 0);
    let t = Operation::Tombstone(Tombstone {
        prev: log.head(),
        sig: String::new(),
    })
    .sign(&rot);
    log.submit(t, HOUR).unwrap();
    assert_eq!(audit_log(&log.did, &log.audit).unwrap(), None);
    let after = op(&[&rot], &sign, "b.test", Some(log.head())).sign(&rot);
    assert!(matches!(
        log.submit(after, 2 * HOUR),
        Err(PlcError::Misordered(_))
    ));
}

#[test]
fn malformed_operations_are_refused() {
    let k = Keypair::generate(Algorithm::K256).public_key().to_did_key();
    let cases = [
        serde_json::json!("x"),
        serde_json::json!({"type": "plc_operation"}),
        serde_json::json!({"type": "nope", "prev": null}),
        serde_json::json!({"type": "plc_operation", "rotationKeys": [], "verificationMethods": {}, "alsoKnownAs": [], "services": {}, "prev": null, "sig": ""}),
        serde_json::json!({"type": "plc_operation", "rotationKeys": ["did:key:zBad"], "verificationMethods": {}, "alsoKnownAs": [], "services": {}, "prev": null, "sig": ""}),
        serde_json::json!({"type": "plc_operation", "rotationKeys": [k], "verificationMethods": {}, "alsoKnownAs": [], "services": {}, "prev": "notacid", "sig": ""}),
        serde_json::json!({"type": "plc_operation", "rotationKeys": [k, k], "verificationMethods": {}, "alsoKnownAs": [], "services": {}, "prev": null, "sig": ""}),
        // (Unknown fields are kept, as the reference does: see
        // `unknown_fields_are_kept_signed_and_hashed`.)
        serde_json::json!({"type": "plc_operation", "rotationKeys": [k], "verificationMethods": {}, "alsoKnownAs": ["x".repeat(8000)], "services": {}, "prev": null, "sig": ""}),
    ];
    for c in cases {
        assert!(Operation::from_json(&c).is_err(), "{c}");
    }
}

#[test]
fn legacy_create_genesis_is_accepted() {
    let (signing, recovery) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
    );
    let create = Operation::LegacyCreate(LegacyCreate {
        signing_key: signing.public_key().to_did_key(),
        recovery_key: recovery.public_key().to_did_key(),
        handle: "old.test".into(),
        service: "pds.example.com".into(),
        prev: None,
        sig: String::new(),
    })
    .sign(&signing);
    let mut log = Log::genesis(create, 0);
    let data = audit_log(&log.did, &log.audit).unwrap().unwrap();
    assert_eq!(
        data.services["atproto_pds"].endpoint,
        "https://pds.example.com"
    );
    assert_eq!(data.rotation_keys[0], recovery.public_key().to_did_key());
    // The recovery key may sign the next operation.
    log.submit(
        op(&[&recovery], &signing, "new.test", Some(log.head())).sign(&recovery),
        HOUR,
    )
    .unwrap();
}

/// The did:plc spec's limits (issue 14, item 3 in part): 1 to 5 rotation
/// keys, at most 10 verification methods.
#[test]
fn at_most_five_rotation_keys_and_ten_verification_methods() {
    let keys: Vec<Keypair> = (0..6).map(|_| Keypair::generate(Algorithm::K256)).collect();
    let signing = Keypair::generate(Algorithm::P256);
    let genesis = |n_rot: usize, n_vm: usize| {
        let Operation::Op(mut o) = op(
            &keys[..n_rot].iter().collect::<Vec<_>>(),
            &signing,
            "limits.test",
            None,
        ) else {
            unreachable!("atproto() builds a plc_operation")
        };
        for i in 1..n_vm {
            o.verification_methods
                .insert(format!("extra{i}"), signing.public_key().to_did_key());
        }
        let op = Operation::Op(o).sign(&keys[0]);
        let did = did_for_genesis(&op);
        validate_next(&did, &[], &op, 0)
    };
    assert!(genesis(5, 1).is_ok());
    let e = genesis(6, 1).unwrap_err().to_string();
    assert!(e.contains("rotationKeys"), "{e}");
    assert!(genesis(1, 10).is_ok());
    let e = genesis(1, 11).unwrap_err().to_string();
    assert!(e.contains("verification methods"), "{e}");
}

/// Unknown fields are kept and covered by the signature and the CID, as the
/// reference directory does; one that is not atproto data (a float) is refused.
#[test]
fn unknown_fields_are_kept_signed_and_hashed() {
    let rot = Keypair::generate(Algorithm::K256);
    let mut json = op(&[&rot], &rot, "x.test", None).to_json();
    json["futureField"] = serde_json::json!({"a": [1, "b"]});
    let signed = Operation::from_json(&json).unwrap().sign(&rot);
    let back = Operation::from_json(&signed.to_json()).unwrap();
    assert_eq!(back, signed);
    assert_eq!(back.to_json()["futureField"]["a"][1], "b");
    assert!(
        back.verify_signature(&[rot.public_key().to_did_key()])
            .is_ok()
    );
    let mut stripped = signed.to_json();
    stripped.as_object_mut().unwrap().remove("futureField");
    let stripped = Operation::from_json(&stripped).unwrap();
    assert_ne!(stripped.cid(), signed.cid());
    assert!(
        stripped
            .verify_signature(&[rot.public_key().to_did_key()])
            .is_err(),
        "the signature covers the unknown field"
    );
    json["futureField"] = serde_json::json!(1.5);
    assert!(Operation::from_json(&json).is_err());
}

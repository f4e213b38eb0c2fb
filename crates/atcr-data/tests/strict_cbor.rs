//! DAG-CBOR strictness: everything the spec forbids is rejected with a typed error.

use atcr_data::{DataError, Value, from_cbor, to_cbor};
use proptest::prelude::*;

fn rejects(bytes: &[u8], why: &str) {
    match from_cbor(bytes) {
        Err(DataError::Cbor { reason, .. }) => assert!(
            reason.contains(why),
            "{bytes:02x?}: got {reason:?}, want {why:?}"
        ),
        other => panic!("{bytes:02x?} should be rejected ({why}), got {other:?}"),
    }
}

#[test]
fn forbidden_encodings_are_rejected() {
    rejects(
        &[0xfb, 0x40, 0x09, 0x21, 0xf9, 0xf0, 0x1b, 0x86, 0x6e],
        "float",
    );
    rejects(&[0xf9, 0x3c, 0x00], "float");
    rejects(&[0x18, 0x05], "non-minimal");
    rejects(&[0x19, 0x00, 0x10], "non-minimal");
    rejects(&[0x9f, 0x01, 0xff], "indefinite");
    rejects(&[0x5f, 0x41, 0x00, 0xff], "indefinite");
    rejects(&[0xc1, 0x01], "tag 42");
    rejects(&[0xf7], "simple");
    rejects(&[0x01, 0x02], "trailing");
    rejects(&[0x5a, 0xff, 0xff, 0xff, 0xff], "exceeds input");
    rejects(
        &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "exceeds input",
    );
    rejects(&[0x62, 0xc3, 0x28], "UTF-8");
    // {"b":1,"a":2}: keys out of order
    rejects(
        &[0xa2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02],
        "canonical order",
    );
    // {"aa":1,"b":2}: length-first order violated
    rejects(
        &[0xa2, 0x62, 0x61, 0x61, 0x01, 0x61, 0x62, 0x02],
        "canonical order",
    );
    rejects(&[0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02], "duplicate");
    rejects(&[0xa1, 0x01, 0x02], "not a text string");
    // u64 beyond i64
    rejects(
        &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "64-bit",
    );
    // tag 42 around a CID without the 0x00 prefix
    rejects(&[0xd8, 0x2a, 0x42, 0x01, 0x71], "0x00");
    // deep nesting
    let deep = vec![0x81u8; 10_000];
    rejects(&deep, "too deep");
}

#[test]
fn canonical_key_order_on_encode() {
    let v: Value = [
        ("bb", Value::Integer(1)),
        ("a", Value::Integer(2)),
        ("c", Value::Integer(3)),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        to_cbor(&v),
        vec![
            0xa3, 0x61, 0x61, 0x02, 0x61, 0x63, 0x03, 0x62, 0x62, 0x62, 0x01
        ]
    );
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Integer),
        ".{0,20}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Value::Link(atcr_data::cid_for_raw(&b))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::btree_map("[a-z]{0,8}", inner, 0..8).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(v in arb_value()) {
        let bytes = to_cbor(&v);
        prop_assert_eq!(from_cbor(&bytes).unwrap(), v.clone());
        // JSON round trip too.
        let j = atcr_data::json::to_json(&v);
        prop_assert_eq!(atcr_data::json::from_json(&j).unwrap(), v);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = from_cbor(&bytes);
    }
}

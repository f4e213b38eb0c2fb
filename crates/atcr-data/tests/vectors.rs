//! The official data-model vectors: JSON ↔ DAG-CBOR ↔ CID, valid and invalid.

use atcr_data::{cid_for_cbor, from_cbor, json, to_cbor};
use atcr_testkit::read_json;
use base64::Engine;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

#[test]
fn fixtures_round_trip_byte_exact() {
    let fixtures = read_json("data-model/data-model-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(!fixtures.is_empty());
    for f in fixtures {
        let value = json::from_json_object(&f["json"]).unwrap();
        let cbor = to_cbor(&value);
        assert_eq!(
            cbor,
            b64(f["cbor_base64"].as_str().unwrap()),
            "CBOR bytes for {}",
            f["json"]
        );
        assert_eq!(cid_for_cbor(&cbor).to_string(), f["cid"].as_str().unwrap());
        // And back: strict decode, then JSON equal to the input.
        let decoded = from_cbor(&cbor).unwrap();
        assert_eq!(decoded, value);
        assert_eq!(json::to_json(&decoded), f["json"]);
    }
}

#[test]
fn valid_data_is_accepted() {
    let cases = read_json("data-model/data-model-valid.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let v = json::from_json_object(&c["json"]).unwrap_or_else(|e| panic!("{}: {e}", c["note"]));
        // Valid data also survives a CBOR round trip.
        assert_eq!(from_cbor(&to_cbor(&v)).unwrap(), v);
    }
}

#[test]
fn invalid_data_is_rejected() {
    let cases = read_json("data-model/data-model-invalid.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        assert!(
            json::from_json_object(&c["json"]).is_err(),
            "accepted invalid: {}",
            c["note"]
        );
    }
}

#![no_main]
//! Strict DAG-CBOR decoding: never panics, and anything it accepts is
//! canonical (re-encodes to the same bytes) and survives atproto JSON.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = atcr_data::from_cbor(data) {
        assert_eq!(atcr_data::to_cbor(&v), data, "accepted a non-canonical encoding");
        let json = atcr_data::json::to_json(&v);
        if let Ok(back) = atcr_data::json::from_json(&json) {
            assert_eq!(atcr_data::to_cbor(&back), data);
        }
    }
});

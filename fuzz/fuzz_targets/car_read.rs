#![no_main]
//! CAR reading: never panics; every block it yields matches its CID.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = atcr_repo::CarReader::new(data) {
        while let Ok(Some((cid, bytes))) = r.next_block() {
            assert!(atcr_data::verify_block(&cid, &bytes));
        }
    }
});

#![no_main]
//! MST node decoding and walking: any bytes, stored under their own CID as a
//! root, load and walk without panicking.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cid = atcr_data::cid_for_cbor(data);
    let mut store = atcr_repo::BlockMap::new();
    store.insert(cid, data.to_vec());
    if let Ok(mut mst) = atcr_repo::Mst::load(&cid, &store) {
        let _ = mst.entries(&store);
        let _ = mst.get("io.atcr.manifest/3k2a", &store);
        let _ = atcr_repo::mst::lookup_verified(&cid, "io.atcr.manifest/3k2a", &store);
        let _ = mst.insert("io.atcr.manifest/zzzz", cid, &store);
        let _ = mst.delete("io.atcr.manifest/3k2a", &store);
        let _ = mst.commit();
    }
});

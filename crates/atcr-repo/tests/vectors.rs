//! Official MST vectors: key heights, common prefixes, and the commit-proof
//! fixtures (root CIDs before and after, and the exact covering-proof blocks).

use atcr_data::parse_cid;
use atcr_repo::mst::{Mst, common_prefix_len, key_height};
use atcr_repo::{BlockMap, Layered};
use atcr_testkit::{read_json, read_lines};
use std::collections::BTreeSet;

#[test]
fn key_heights() {
    let cases = read_json("mst/key_heights.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        assert_eq!(
            key_height(c["key"].as_str().unwrap()),
            c["height"].as_u64().unwrap() as u32,
            "{c}"
        );
    }
}

#[test]
fn example_keys_have_the_height_their_name_says() {
    let keys = read_lines("mst/example_keys.txt");
    assert!(keys.len() > 100);
    for k in keys {
        let want = k.as_bytes()[1] - b'0';
        assert_eq!(key_height(&k), u32::from(want), "{k}");
    }
}

#[test]
fn common_prefixes() {
    let cases = read_json("mst/common_prefix.json");
    for c in cases.as_array().unwrap() {
        let got = common_prefix_len(c["left"].as_str().unwrap(), c["right"].as_str().unwrap());
        assert_eq!(got as u64, c["len"].as_u64().unwrap(), "{c}");
    }
}

#[test]
fn commit_proof_fixtures() {
    let fixtures = read_json("firehose/commit-proof-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(!fixtures.is_empty());
    for f in fixtures {
        let name = f["comment"].as_str().unwrap();
        let leaf = parse_cid(f["leafValue"].as_str().unwrap()).unwrap();
        let strs = |k: &str| {
            f[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let mut store = BlockMap::new();
        let mut mst = Mst::new();
        for k in strs("keys") {
            mst.insert(&k, leaf, &store).unwrap();
        }
        let (before, blocks) = mst.commit();
        store.extend(&blocks);
        assert_eq!(
            before.to_string(),
            f["rootBeforeCommit"].as_str().unwrap(),
            "{name}: root before"
        );

        // Reload from blocks, so the commit path exercises lazy loading.
        let mut mst = Mst::load(&before, &store).unwrap();
        for k in strs("adds") {
            mst.insert(&k, leaf, &store).unwrap();
        }
        for k in strs("dels") {
            assert!(
                mst.delete(&k, &store).unwrap().is_some(),
                "{name}: delete {k}"
            );
        }
        let (after, blocks) = mst.commit();
        assert_eq!(
            after.to_string(),
            f["rootAfterCommit"].as_str().unwrap(),
            "{name}: root after"
        );

        let view = Layered(&blocks, &store);
        let mut proof = BlockMap::new();
        for k in strs("adds").into_iter().chain(strs("dels")) {
            mst.covering_proof(&k, &view, &mut proof).unwrap();
        }
        let got: BTreeSet<String> = proof.iter().map(|(c, _)| c.to_string()).collect();
        let want: BTreeSet<String> = strs("blocksInProof").into_iter().collect();
        assert_eq!(got, want, "{name}: covering proof blocks");

        // The proof alone lets a verifier invert the operations back to the old root.
        let mut inverted = Mst::load(&after, &proof).unwrap();
        for k in strs("adds") {
            inverted.delete(&k, &proof).unwrap();
        }
        for k in strs("dels") {
            inverted.insert(&k, leaf, &proof).unwrap();
        }
        assert_eq!(
            inverted.commit().0,
            before,
            "{name}: inversion from the proof"
        );
    }
}

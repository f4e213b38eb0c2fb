//! Property: the same record set reaches the same MST root whatever the order
//! of insertions and deletions, including across reloads from the block store.

use atcr_data::{Cid, cid_for_raw};
use atcr_repo::BlockMap;
use atcr_repo::mst::Mst;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key(i: u32) -> String {
    format!("com.example.record/{i:x}")
}

fn value(i: u32, version: u32) -> Cid {
    cid_for_raw(format!("{i}-{version}").as_bytes())
}

/// The reference root: the final set inserted in sorted order into a fresh tree.
fn canonical_root(set: &BTreeMap<String, Cid>) -> Cid {
    let store = BlockMap::new();
    let mut mst = Mst::new();
    for (k, v) in set {
        mst.insert(k, *v, &store).unwrap();
    }
    mst.commit().0
}

#[derive(Debug, Clone)]
enum Op {
    Put(u32, u32),
    Del(u32),
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..400, 0u32..3).prop_map(|(k, v)| Op::Put(k, v)),
        3 => (0u32..400).prop_map(Op::Del),
        1 => Just(Op::Reload),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn root_is_a_function_of_the_final_set(ops in proptest::collection::vec(op(), 0..600)) {
        let mut store = BlockMap::new();
        let mut mst = Mst::new();
        let mut model: BTreeMap<String, Cid> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let prev = mst.insert(&key(k), value(k, v), &store).unwrap();
                    prop_assert_eq!(prev, model.insert(key(k), value(k, v)));
                }
                Op::Del(k) => {
                    let prev = mst.delete(&key(k), &store).unwrap();
                    prop_assert_eq!(prev, model.remove(&key(k)));
                }
                Op::Reload => {
                    let (root, blocks) = mst.commit();
                    store.extend(&blocks);
                    mst = Mst::load(&root, &store).unwrap();
                }
            }
        }
        let (root, blocks) = mst.commit();
        store.extend(&blocks);
        prop_assert_eq!(root, canonical_root(&model));
        let listed: BTreeMap<String, Cid> = mst.entries(&store).unwrap().into_iter().collect();
        prop_assert_eq!(&listed, &model);
        for (k, v) in &model {
            prop_assert_eq!(mst.get(k, &store).unwrap(), Some(*v));
        }
    }

    #[test]
    fn any_permutation_of_inserts_gives_one_root(mut keys in proptest::collection::btree_set(0u32..100_000, 1..300), seed in any::<u64>()) {
        let set: BTreeMap<String, Cid> = keys.iter().map(|k| (key(*k), value(*k, 0))).collect();
        let want = canonical_root(&set);
        // A seeded shuffle (xorshift) of the insertion order.
        let mut order: Vec<u32> = std::mem::take(&mut keys).into_iter().collect();
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let store = BlockMap::new();
        let mut mst = Mst::new();
        for k in &order {
            mst.insert(&key(*k), value(*k, 0), &store).unwrap();
        }
        prop_assert_eq!(mst.commit().0, want);
        // Deleting everything in yet another order returns to the empty root.
        for k in order.iter().rev() {
            prop_assert!(mst.delete(&key(*k), &store).unwrap().is_some());
        }
        prop_assert_eq!(mst.commit().0, Mst::new().commit().0);
    }
}

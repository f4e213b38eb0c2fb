//! Record proofs: build, verify, and the adversarial cases of deps.md §6.8.

use atcr_crypto::{Algorithm, Keypair};
use atcr_data::{Cid, Value, cid_for_cbor, to_cbor};
use atcr_repo::car::{read_car, write_car};
use atcr_repo::mst::Mst;
use atcr_repo::{BlockMap, CommitError, ProofError, Repo, WriteOp, verify_record_proof};
use atcr_syntax::{Did, Nsid, RecordKey, TidClock};

const COLL: &str = "io.atcr.manifest";

fn did(s: &str) -> Did {
    Did::new(s).unwrap()
}
fn nsid() -> Nsid {
    Nsid::new(COLL).unwrap()
}
fn rkey(i: usize) -> RecordKey {
    RecordKey::new(format!("r{i:06}")).unwrap()
}
fn record(i: usize) -> Value {
    [
        ("$type", Value::from(COLL)),
        ("n", Value::Integer(i as i64)),
        ("digest", Value::from(format!("sha256:{i:064x}"))),
    ]
    .into_iter()
    .collect()
}

/// A repository of `n` records plus its block store.
fn repo_with(n: usize, alg: Algorithm, did_str: &str) -> (Repo, BlockMap, Keypair, TidClock) {
    let key = Keypair::generate(alg);
    let clock = TidClock::with_clock_id(1);
    let mut store = BlockMap::new();
    let writes: Vec<WriteOp> = (0..n)
        .map(|i| WriteOp::Create {
            collection: nsid(),
            rkey: rkey(i),
            record: record(i),
        })
        .collect();
    let (repo, data) = Repo::create(did(did_str), &key, clock.next(), &writes, &store).unwrap();
    store.extend(&data.new_blocks);
    (repo, store, key, clock)
}

fn verify(
    car: &[u8],
    did_str: &str,
    key: &Keypair,
    i: usize,
) -> Result<Option<(Cid, Value)>, ProofError> {
    verify_record_proof(car, &did(did_str), &key.public_key(), &nsid(), &rkey(i)).map(|v| v.record)
}

/// Rebuilds a proof CAR with the same roots, passing each block through `f`
/// (`None` drops it), and appending `extra` blocks.
fn rewrite(
    car: &[u8],
    f: impl Fn(&Cid, &[u8]) -> Option<Vec<u8>>,
    extra: Vec<(Cid, Vec<u8>)>,
) -> Vec<u8> {
    let (roots, blocks) = read_car(car).unwrap();
    let mut sections: Vec<(Cid, Vec<u8>)> = blocks
        .iter()
        .filter_map(|(c, b)| f(c, b).map(|b| (*c, b)))
        .collect();
    sections.extend(extra);
    write_car(&roots, sections.iter().map(|(c, b)| (c, &b[..])))
}

/// The signed commit of a proof CAR.
fn commit_of(car: &[u8]) -> atcr_repo::Commit {
    let (roots, blocks) = read_car(car).unwrap();
    atcr_repo::Commit::from_bytes(blocks.get(&roots[0]).unwrap()).unwrap()
}

#[test]
fn proofs_from_a_10k_record_repository_verify_for_both_curves() {
    for alg in [Algorithm::K256, Algorithm::P256] {
        let d = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
        let (repo, store, key, _) = repo_with(10_000, alg, d);
        for i in (0..10_000).step_by(97) {
            let car = repo.record_proof(&nsid(), &rkey(i), &store).unwrap();
            let (cid, value) = verify(&car, d, &key, i).unwrap().expect("present");
            assert_eq!(value, record(i));
            assert_eq!(cid, cid_for_cbor(&to_cbor(&record(i))));
        }
        // Absence is proven, not assumed.
        for i in [10_000, 10_001, 99_999] {
            let car = repo.record_proof(&nsid(), &rkey(i), &store).unwrap();
            assert!(verify(&car, d, &key, i).unwrap().is_none());
        }
    }
}

#[test]
fn every_single_byte_flip_and_every_truncation_is_detected() {
    let d = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    let (repo, store, key, _) = repo_with(2_000, Algorithm::K256, d);
    for i in [0, 777, 1_999] {
        let car = repo.record_proof(&nsid(), &rkey(i), &store).unwrap();
        assert!(verify(&car, d, &key, i).unwrap().is_some());
        for pos in 0..car.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = car.clone();
                bad[pos] ^= mask;
                assert!(
                    verify(&bad, d, &key, i).is_err(),
                    "flip {mask:#x} at byte {pos} of {} accepted",
                    car.len()
                );
            }
        }
        for len in 0..car.len() {
            assert!(
                verify(&car[..len], d, &key, i).is_err(),
                "truncation to {len} of {} accepted",
                car.len()
            );
        }
    }
}

#[test]
fn forged_bytes_under_a_valid_cid_are_rejected() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(50, Algorithm::P256, d);
    let car = repo.record_proof(&nsid(), &rkey(7), &store).unwrap();
    // Replace the record's bytes with a forged record but keep its CID.
    let record_cid = cid_for_cbor(&to_cbor(&record(7)));
    let forged = to_cbor(&record(8));
    let bad = rewrite(
        &car,
        |c, b| {
            Some(if *c == record_cid {
                forged.clone()
            } else {
                b.to_vec()
            })
        },
        vec![],
    );
    assert!(
        matches!(verify(&bad, d, &key, 7), Err(ProofError::Car(_))),
        "{:?}",
        verify(&bad, d, &key, 7)
    );
}

#[test]
fn an_absence_claim_with_mst_blocks_left_out_fails_closed() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(500, Algorithm::K256, d);
    let car = repo.record_proof(&nsid(), &rkey(250), &store).unwrap();
    let commit = commit_of(&car);
    // Drop every MST node but the root: the record can no longer be shown
    // present, and must not be reported absent either.
    let is_node = |c: &Cid, b: &[u8]| {
        c.codec() == atcr_data::DAG_CBOR && atcr_data::from_cbor(b).unwrap().get("e").is_some()
    };
    let bad = rewrite(
        &car,
        |c, b| (!is_node(c, b) || *c == commit.data).then(|| b.to_vec()),
        vec![],
    );
    assert!(
        matches!(verify(&bad, d, &key, 250), Err(ProofError::MissingBlock(_))),
        "{:?}",
        verify(&bad, d, &key, 250)
    );
}

#[test]
fn wrong_key_wrong_did_and_other_repository_are_rejected() {
    let d = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let (repo, store, key, _) = repo_with(100, Algorithm::K256, d);
    let car = repo.record_proof(&nsid(), &rkey(3), &store).unwrap();
    // A key not in the DID document.
    let other = Keypair::generate(Algorithm::K256);
    assert!(matches!(
        verify(&car, d, &other, 3),
        Err(ProofError::Commit(CommitError::Signature(_)))
    ));
    // Asking about another DID with this repository's proof.
    let res = verify_record_proof(
        &car,
        &did("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"),
        &key.public_key(),
        &nsid(),
        &rkey(3),
    );
    assert!(matches!(res, Err(ProofError::DidMismatch { .. })));
    // A proof for a different record than the one asked about proves nothing about it.
    assert!(matches!(
        verify(&car, d, &key, 4),
        Err(ProofError::MissingBlock(_)) | Ok(None)
    ));
}

#[test]
fn a_tampered_mst_node_rehashed_breaks_the_chain() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(300, Algorithm::K256, d);
    let car = repo.record_proof(&nsid(), &rkey(42), &store).unwrap();
    let commit = commit_of(&car);
    let (_, blocks) = read_car(&car).unwrap();
    // Rewrite the root node with a different value and re-hash it: its CID no
    // longer matches the signed commit's data root.
    let root_bytes = blocks.get(&commit.data).unwrap();
    let mut node = atcr_data::from_cbor(root_bytes).unwrap();
    if let Value::Map(m) = &mut node
        && let Some(Value::List(e)) = m.get_mut("e")
        && let Some(Value::Map(first)) = e.first_mut()
    {
        first.insert("v".into(), Value::Link(cid_for_cbor(b"forged")));
    }
    let new_bytes = to_cbor(&node);
    let extra = vec![(cid_for_cbor(&new_bytes), new_bytes)];
    let bad = rewrite(&car, |c, b| (*c != commit.data).then(|| b.to_vec()), extra);
    assert!(
        matches!(verify(&bad, d, &key, 42), Err(ProofError::MissingBlock(c)) if c == commit.data)
    );
}

#[test]
fn writes_are_atomic_and_revisions_increase() {
    let d = "did:web:example.com";
    let (mut repo, mut store, key, clock) = repo_with(10, Algorithm::K256, d);
    let before = repo.commit_cid();
    // The second write fails (already exists): nothing of the first applies.
    let writes = vec![
        WriteOp::Create {
            collection: nsid(),
            rkey: rkey(100),
            record: record(100),
        },
        WriteOp::Create {
            collection: nsid(),
            rkey: rkey(1),
            record: record(1),
        },
    ];
    assert!(
        repo.apply_writes(&writes, &key, clock.next(), &store)
            .is_err()
    );
    assert_eq!(repo.commit_cid(), before);
    assert!(
        repo.get_record(&nsid(), &rkey(100), &store)
            .unwrap()
            .is_none()
    );
    // Wrong $type is refused.
    let bad = WriteOp::Create {
        collection: nsid(),
        rkey: rkey(101),
        record: [("$type", Value::from("x.y.z"))].into_iter().collect(),
    };
    assert!(
        repo.apply_writes(&[bad], &key, clock.next(), &store)
            .is_err()
    );
    // A valid batch: update, delete, create.
    let rev = clock.next();
    let data = repo
        .apply_writes(
            &[
                WriteOp::Put {
                    collection: nsid(),
                    rkey: rkey(2),
                    record: record(200),
                },
                WriteOp::Delete {
                    collection: nsid(),
                    rkey: rkey(3),
                },
                WriteOp::Create {
                    collection: nsid(),
                    rkey: rkey(11),
                    record: record(11),
                },
            ],
            &key,
            rev.clone(),
            &store,
        )
        .unwrap();
    store.extend(&data.new_blocks);
    assert_eq!(data.commit.rev, rev);
    assert_eq!(data.ops.len(), 3);
    assert!(data.ops[0].prev.is_some() && data.ops[1].cid.is_none() && data.ops[2].prev.is_none());
    assert_eq!(
        repo.get_record(&nsid(), &rkey(2), &store)
            .unwrap()
            .unwrap()
            .1,
        record(200)
    );
    assert!(
        repo.get_record(&nsid(), &rkey(3), &store)
            .unwrap()
            .is_none()
    );
    // A stale revision is refused.
    assert!(
        repo.apply_writes(&[], &key, atcr_syntax::Tid::from_parts(1, 1), &store)
            .is_err()
    );
    // The relevant blocks alone prove every op.
    for op in &data.ops {
        let (c, r) = op.path.split_once('/').unwrap();
        let car = write_car(
            &[data.commit_cid],
            data.relevant_blocks.iter().map(|(c, b)| (c, &b[..])),
        );
        let v = verify_record_proof(
            &car,
            &did(d),
            &key.public_key(),
            &Nsid::new(c).unwrap(),
            &RecordKey::new(r).unwrap(),
        )
        .unwrap();
        assert_eq!(v.record.map(|r| r.0), op.cid);
    }
}

#[test]
fn export_reimports_and_every_record_verifies_after_key_rotation() {
    let d = "did:web:example.com";
    let (mut repo, mut store, _key, clock) = repo_with(1_000, Algorithm::P256, d);
    let new_key = Keypair::generate(Algorithm::K256);
    let (cid, bytes) = repo.resign(&new_key, clock.next());
    store.insert(cid, bytes);
    let car = repo.export_car(&store, Vec::new()).unwrap();
    let (roots, blocks) = read_car(&car).unwrap();
    assert_eq!(roots, vec![repo.commit_cid()]);
    let loaded = Repo::load(&roots[0], &blocks).unwrap();
    loaded.commit().verify(&new_key.public_key()).unwrap();
    assert_eq!(loaded.mst().entries(&blocks).unwrap().len(), 1_000);
    for i in (0..1_000).step_by(111) {
        let proof = loaded.record_proof(&nsid(), &rkey(i), &blocks).unwrap();
        assert!(verify(&proof, d, &new_key, i).unwrap().is_some());
    }
    // An empty tree's root is the canonical empty node.
    let mut empty = Mst::new();
    assert_eq!(
        empty.commit().0.to_string(),
        "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    );
}

// ---- strict shapes (one encoding per meaning) and the two guarantees ----

/// A signed commit block built from raw fields (`sig` added over the rest).
fn raw_commit(fields: Vec<(&str, Value)>, key: &Keypair) -> (Cid, Vec<u8>) {
    let unsigned: Value = fields.into_iter().collect();
    let sig = key.sign(&to_cbor(&unsigned));
    let Value::Map(mut m) = unsigned else {
        unreachable!()
    };
    m.insert("sig".into(), Value::Bytes(sig.to_vec()));
    let bytes = to_cbor(&Value::Map(m));
    (cid_for_cbor(&bytes), bytes)
}

fn commit_fields(d: &str, data: Cid, with_prev: bool) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("did", Value::from(d)),
        ("version", Value::Integer(3)),
        ("data", Value::Link(data)),
        (
            "rev",
            Value::from(TidClock::with_clock_id(2).next().to_string()),
        ),
    ];
    if with_prev {
        f.push(("prev", Value::Null));
    }
    f
}

/// `car`'s blocks with the commit replaced by `commit`, rooted at `root`.
fn with_commit(
    car: &[u8],
    root: Cid,
    commit: (Cid, Vec<u8>),
    extra: Vec<(Cid, Vec<u8>)>,
) -> Vec<u8> {
    let (roots, blocks) = read_car(car).unwrap();
    let mut sections: Vec<(Cid, Vec<u8>)> = vec![commit];
    sections.extend(
        blocks
            .iter()
            .filter(|(c, _)| **c != roots[0])
            .map(|(c, b)| (*c, b.to_vec())),
    );
    sections.extend(extra);
    write_car(&[root], sections.iter().map(|(c, b)| (c, &b[..])))
}

#[test]
fn the_two_guarantees_presence_and_absence_hold_with_only_the_key_path() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(400, Algorithm::K256, d);
    // Presence: exactly the record that was written, with its CID.
    let car = repo.record_proof(&nsid(), &rkey(123), &store).unwrap();
    let (cid, value) = verify(&car, d, &key, 123).unwrap().unwrap();
    assert_eq!(cid, cid_for_cbor(&to_cbor(&record(123))));
    assert_eq!(value, record(123));
    // Absence: a key between existing keys, proven by its path alone.
    let missing = RecordKey::new("r000123x").unwrap();
    let car = repo.record_proof(&nsid(), &missing, &store).unwrap();
    let v = verify_record_proof(&car, &did(d), &key.public_key(), &nsid(), &missing).unwrap();
    assert!(v.record.is_none());
    // A proof missing a node of the key's own path is an error, never an
    // absence.
    let needed = key_path(&car, &format!("{COLL}/{missing}"));
    for n in &needed {
        let cut = rewrite(&car, |c, b| (c != n).then(|| b.to_vec()), vec![]);
        assert!(verify_record_proof(&cut, &did(d), &key.public_key(), &nsid(), &missing).is_err());
    }
    // Only the path to the key is needed: keep the commit, the record and
    // the nodes a lookup reads, drop everything else (the neighbours' paths,
    // which the proof of a key in an upper layer carries): presence holds.
    let mut pruned_one = false;
    for i in 0..400 {
        let car = repo.record_proof(&nsid(), &rkey(i), &store).unwrap();
        let needed = key_path(&car, &format!("{COLL}/{}", rkey(i)));
        let record_cid = cid_for_cbor(&to_cbor(&record(i)));
        let pruned = rewrite(
            &car,
            |c, b| {
                (*c == commit_cid(&car) || *c == record_cid || needed.contains(c))
                    .then(|| b.to_vec())
            },
            vec![],
        );
        assert!(verify(&pruned, d, &key, i).unwrap().is_some());
        if pruned.len() < car.len() {
            pruned_one = true;
            break;
        }
    }
    assert!(pruned_one, "no proof carried a neighbour path");
}

/// The MST nodes a lookup of `path` reads, root first.
fn key_path(car: &[u8], path: &str) -> Vec<Cid> {
    let (_, blocks) = read_car(car).unwrap();
    let commit = commit_of(car);
    let mut needed = vec![commit.data];
    let mut cur = commit.data;
    let path = path.to_owned();
    loop {
        let node = atcr_data::from_cbor(blocks.get(&cur).unwrap()).unwrap();
        let Some(Value::List(entries)) = node.get("e") else {
            break;
        };
        // Reconstruct keys to find the gap `path` falls in.
        let (mut prev, mut keys): (Vec<u8>, Vec<(String, Option<Cid>)>) = (vec![], vec![]);
        for e in entries {
            let p = e.get("p").and_then(Value::as_i64).unwrap() as usize;
            let k = e.get("k").and_then(Value::as_bytes).unwrap();
            let mut key = prev[..p].to_vec();
            key.extend_from_slice(k);
            prev = key.clone();
            keys.push((
                String::from_utf8(key).unwrap(),
                e.get("t").and_then(Value::as_link).copied(),
            ));
        }
        if keys.iter().any(|(k, _)| *k == path) {
            break;
        }
        let i = keys.iter().take_while(|(k, _)| *k < path).count();
        let next = if i == 0 {
            node.get("l").and_then(Value::as_link).copied()
        } else {
            keys[i - 1].1
        };
        match next {
            Some(c) => {
                needed.push(c);
                cur = c;
            }
            None => break,
        }
    }
    needed
}

fn commit_cid(car: &[u8]) -> Cid {
    read_car(car).unwrap().0[0]
}

#[test]
fn malformed_commit_shapes_are_rejected_even_when_signed() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(20, Algorithm::K256, d);
    let car = repo.record_proof(&nsid(), &rkey(5), &store).unwrap();
    let data = commit_of(&car).data;
    // Control: a commit rebuilt from the same fields verifies.
    let good = raw_commit(commit_fields(d, data, true), &key);
    let ok = with_commit(&car, good.0, good.clone(), vec![]);
    assert!(verify(&ok, d, &key, 5).unwrap().is_some());
    // Without `prev`.
    let c = raw_commit(commit_fields(d, data, false), &key);
    let bad = with_commit(&car, c.0, c, vec![]);
    assert!(
        matches!(
            verify(&bad, d, &key, 5),
            Err(ProofError::Commit(CommitError::Malformed(_)))
        ),
        "{:?}",
        verify(&bad, d, &key, 5)
    );
    // With an extra field, signed over.
    let mut f = commit_fields(d, data, true);
    f.push(("note", Value::from("extra")));
    let c = raw_commit(f, &key);
    let bad = with_commit(&car, c.0, c, vec![]);
    assert!(matches!(
        verify(&bad, d, &key, 5),
        Err(ProofError::Commit(CommitError::Malformed(_)))
    ));
    // `data` as a raw-codec CID of the genuine MST root bytes.
    let (_, blocks) = read_car(&car).unwrap();
    let root_bytes = blocks.get(&data).unwrap().to_vec();
    let raw_data = atcr_data::cid_for_raw(&root_bytes);
    let c = raw_commit(commit_fields(d, raw_data, true), &key);
    let bad = with_commit(&car, c.0, c, vec![(raw_data, root_bytes)]);
    assert!(matches!(
        verify(&bad, d, &key, 5),
        Err(ProofError::Commit(CommitError::Malformed(_)))
    ));
    // The CAR root as a raw-codec CID of the genuine commit bytes: it would
    // change the reported commit CID.
    let (_, commit_bytes) = good;
    let raw_root = atcr_data::cid_for_raw(&commit_bytes);
    let bad = with_commit(&car, raw_root, (raw_root, commit_bytes), vec![]);
    assert!(matches!(
        verify(&bad, d, &key, 5),
        Err(ProofError::Car(atcr_repo::CarError::Malformed(_)))
    ));
}

#[test]
fn car_headers_are_exactly_version_and_roots() {
    let d = "did:web:example.com";
    let (repo, store, key, _) = repo_with(5, Algorithm::P256, d);
    let car = repo.record_proof(&nsid(), &rkey(1), &store).unwrap();
    let (roots, blocks) = read_car(&car).unwrap();
    let header: Value = [
        (
            "roots",
            Value::List(roots.iter().map(|c| Value::Link(*c)).collect()),
        ),
        ("version", Value::Integer(1)),
        ("extra", Value::from("x")),
    ]
    .into_iter()
    .collect();
    let hb = to_cbor(&header);
    let mut bad = vec![hb.len() as u8];
    bad.extend_from_slice(&hb);
    for (c, b) in blocks.iter() {
        let cb = c.to_bytes();
        let mut len = cb.len() + b.len();
        // varint
        while len >= 0x80 {
            bad.push((len as u8) | 0x80);
            len >>= 7;
        }
        bad.push(len as u8);
        bad.extend_from_slice(&cb);
        bad.extend_from_slice(b);
    }
    assert!(matches!(
        verify(&bad, d, &key, 1),
        Err(ProofError::Car(atcr_repo::CarError::Malformed(_)))
    ));
}

/// A repository whose MST is written by hand: a layer-1 root with one entry
/// and a layer-0 left child, so links and prefixes can be chosen.
fn hand_tree(
    d: &str,
    key: &Keypair,
    link_raw: bool,
    full_prefix_in_leaf: bool,
) -> (Vec<u8>, RecordKey) {
    let height = atcr_repo::mst::key_height;
    let rk = |i: usize| RecordKey::new(format!("k{i:05}")).unwrap();
    let path = |i: usize| format!("{COLL}/{}", rk(i));
    let top = (0..10_000).find(|i| height(&path(*i)) == 1).unwrap();
    let leaves: Vec<usize> = (0..top)
        .filter(|i| height(&path(*i)) == 0)
        .take(2)
        .collect();
    assert_eq!(
        leaves.len(),
        2,
        "need two layer-0 keys below the layer-1 key"
    );
    let rec = to_cbor(&record(1));
    let rec_cid = cid_for_cbor(&rec);
    let entry = |k: &[u8], p: usize, t: Option<Cid>| -> Value {
        [
            ("k", Value::Bytes(k.to_vec())),
            ("p", Value::Integer(p as i64)),
            ("t", t.map_or(Value::Null, Value::Link)),
            ("v", Value::Link(rec_cid)),
        ]
        .into_iter()
        .collect()
    };
    let (a, b) = (path(leaves[0]), path(leaves[1]));
    let shared = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let second = if full_prefix_in_leaf {
        entry(&b.as_bytes()[shared..], shared, None)
    } else {
        entry(b.as_bytes(), 0, None)
    };
    let leaf: Value = [
        ("e", Value::List(vec![entry(a.as_bytes(), 0, None), second])),
        ("l", Value::Null),
    ]
    .into_iter()
    .collect();
    let leaf = to_cbor(&leaf);
    let leaf_cid = if link_raw {
        atcr_data::cid_for_raw(&leaf)
    } else {
        cid_for_cbor(&leaf)
    };
    let root: Value = [
        ("e", Value::List(vec![entry(path(top).as_bytes(), 0, None)])),
        ("l", Value::Link(leaf_cid)),
    ]
    .into_iter()
    .collect();
    let root = to_cbor(&root);
    let root_cid = cid_for_cbor(&root);
    let commit = raw_commit(commit_fields(d, root_cid, true), key);
    let blocks = [
        (commit.0, commit.1.clone()),
        (root_cid, root),
        (leaf_cid, leaf),
        (rec_cid, rec),
    ];
    let car = write_car(&[commit.0], blocks.iter().map(|(c, b)| (c, &b[..])));
    (car, rk(leaves[1]))
}

#[test]
fn mst_links_must_be_dag_cbor_and_prefixes_maximal() {
    let d = "did:web:example.com";
    let key = Keypair::generate(Algorithm::K256);
    let check = |car: &[u8], k: &RecordKey| {
        verify_record_proof(car, &did(d), &key.public_key(), &nsid(), k).map(|v| v.record)
    };
    // Control: the canonical hand-made tree proves the record.
    let (car, k) = hand_tree(d, &key, false, true);
    assert!(check(&car, &k).unwrap().is_some());
    // A raw-codec link to the same node bytes.
    let (car, k) = hand_tree(d, &key, true, true);
    assert!(
        matches!(check(&car, &k), Err(ProofError::Mst(_))),
        "{:?}",
        check(&car, &k)
    );
    // The second leaf key written in full (prefix 0) instead of sharing the
    // common prefix: a second encoding of the same key set.
    let (car, k) = hand_tree(d, &key, false, false);
    assert!(
        matches!(check(&car, &k), Err(ProofError::Mst(_))),
        "{:?}",
        check(&car, &k)
    );
}

/// `getRepo` writes each block once: records with identical content share
/// one block (issue 14, item 2 in part).
#[test]
fn export_writes_each_block_once() {
    let key = Keypair::generate(Algorithm::K256);
    let clock = TidClock::with_clock_id(1);
    let store = BlockMap::new();
    let same = record(7);
    let writes: Vec<WriteOp> = (0..3)
        .map(|i| WriteOp::Create {
            collection: nsid(),
            rkey: rkey(i),
            record: same.clone(),
        })
        .collect();
    let (repo, data) = Repo::create(
        did("did:web:example.com"),
        &key,
        clock.next(),
        &writes,
        &store,
    )
    .unwrap();
    let mut store = store;
    store.extend(&data.new_blocks);
    let car = repo.export_car(&store, Vec::new()).unwrap();
    let mut r = atcr_repo::car::CarReader::new(car.as_slice()).unwrap();
    let mut seen = std::collections::HashSet::new();
    while let Some((cid, _)) = r.next_block().unwrap() {
        assert!(seen.insert(cid), "{cid} written twice");
    }
    // commit + MST root + the one shared record block.
    assert_eq!(seen.len(), 3);
}

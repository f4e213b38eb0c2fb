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

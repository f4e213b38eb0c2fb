//! CAR reader: fail-closed block checks and bounded reads.

use atcr_data::{Cid, cid_for_cbor, cid_for_raw};
use atcr_repo::car::{CarError, CarReader, read_car, write_car};
use atcr_repo::mst::Mst;
use atcr_repo::{BlockMap, MstError};

fn cid_with(codec: u64, hash_code: u64, digest: &[u8]) -> Cid {
    Cid::new_v1(
        codec,
        cid::multihash::Multihash::<64>::wrap(hash_code, digest).unwrap(),
    )
}

#[test]
fn round_trip_keeps_roots_and_blocks() {
    let a = b"\xa1aa\x01".to_vec();
    let b = b"raw bytes".to_vec();
    let (ca, cb) = (cid_for_cbor(&a), cid_for_raw(&b));
    let car = write_car(&[ca], [(&ca, &a[..]), (&cb, &b[..])]);
    let (roots, blocks) = read_car(&car).unwrap();
    assert_eq!(roots, vec![ca]);
    assert_eq!(&blocks.get(&cb).unwrap()[..], &b[..]);
    assert_eq!(blocks.len(), 2);
}

#[test]
fn blocks_under_non_sha256_or_unknown_codec_cids_are_rejected() {
    let data = b"anything".to_vec();
    // identity multihash (0x00): the "digest" is the data itself, so a naive
    // reader that only checks sha2-256 would pass it through.
    let identity = cid_with(0x55, 0x00, &data);
    // blake2b-256 with a made-up digest.
    let blake = cid_with(0x71, 0xb220, &[0u8; 32]);
    // sha2-256 but an unsupported codec (dag-pb).
    let dagpb = cid_with(0x70, 0x12, &[0u8; 32]);
    for cid in [identity, blake, dagpb] {
        // As a root, such a CID is refused by the header check already.
        let as_root = write_car(&[cid], []);
        assert!(
            matches!(read_car(&as_root), Err(CarError::Malformed(_))),
            "{cid}"
        );
        // As a block, it never passes unchecked.
        let root = atcr_data::cid_for_cbor(b"root");
        let car = write_car(&[root], [(&cid, &data[..])]);
        let r = read_car(&car);
        assert!(matches!(r, Err(CarError::HashMismatch(_))), "{cid}: {r:?}");
    }
}

#[test]
fn malformed_headers_and_oversized_sections_are_errors() {
    assert!(matches!(
        CarReader::new(&[][..]),
        Err(CarError::Truncated(_))
    ));
    // header length 10 but only 2 bytes
    assert!(matches!(
        CarReader::new(&[10u8, 0xa0, 0x00][..]),
        Err(CarError::Truncated(_))
    ));
    // huge declared header
    assert!(matches!(
        CarReader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f][..]),
        Err(CarError::TooLarge(_))
    ));
    // header that is not {roots, version: 1}
    let bad = atcr_data::to_cbor(
        &[("version", atcr_data::Value::Integer(2))]
            .into_iter()
            .collect(),
    );
    let mut car = vec![bad.len() as u8];
    car.extend_from_slice(&bad);
    assert!(matches!(
        CarReader::new(&car[..]),
        Err(CarError::Malformed(_))
    ));
    // a block section declaring 1 GiB is refused before any allocation
    let cid = cid_for_cbor(b"x");
    let mut car = write_car(&[cid], []);
    car.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
    let mut r = CarReader::new(&car[..]).unwrap();
    assert!(matches!(r.next_block(), Err(CarError::TooLarge(_))));
    // non-minimal varint
    let mut car = write_car(&[cid], []);
    car.extend_from_slice(&[0x81, 0x00]);
    let mut r = CarReader::new(&car[..]).unwrap();
    assert!(matches!(r.next_block(), Err(CarError::Malformed(_))));
}

#[test]
fn streaming_reader_holds_one_block_at_a_time() {
    // 2,000 blocks through a reader: iteration works without collecting.
    let blocks: Vec<Vec<u8>> = (0..2_000u32).map(|i| i.to_be_bytes().repeat(64)).collect();
    let cids: Vec<Cid> = blocks.iter().map(|b| cid_for_raw(b)).collect();
    // (rooted at a commit-like DAG-CBOR CID, as every repository CAR is)
    let car = {
        let root = cid_for_cbor(b"root");
        write_car(&[root], cids.iter().zip(&blocks).map(|(c, b)| (c, &b[..])))
    };
    let reader = CarReader::new(std::io::Cursor::new(car)).unwrap();
    let mut n = 0;
    for item in reader {
        let (cid, data) = item.unwrap();
        assert_eq!(cid, cids[n]);
        assert_eq!(data, blocks[n]);
        n += 1;
    }
    assert_eq!(n, 2_000);
}

#[test]
fn non_canonical_mst_nodes_are_rejected() {
    use atcr_data::Value;
    let leaf = cid_for_raw(b"leaf");
    let entry = |k: &str, p: i64| -> Value {
        [
            ("k", Value::Bytes(k.as_bytes().to_vec())),
            ("p", Value::Integer(p)),
            ("t", Value::Null),
            ("v", Value::Link(leaf)),
        ]
        .into_iter()
        .collect()
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "extra field",
            [
                ("e", Value::List(vec![])),
                ("l", Value::Null),
                ("x", Value::Null),
            ]
            .into_iter()
            .collect(),
        ),
        (
            "missing l",
            [("e", Value::List(vec![entry("a/b", 0)]))]
                .into_iter()
                .collect(),
        ),
        (
            "unsorted keys",
            [
                ("e", Value::List(vec![entry("b/1", 0), entry("a/1", 0)])),
                ("l", Value::Null),
            ]
            .into_iter()
            .collect(),
        ),
        (
            "prefix too long",
            [
                ("e", Value::List(vec![entry("a/1", 3)])),
                ("l", Value::Null),
            ]
            .into_iter()
            .collect(),
        ),
        (
            "l is a string",
            [("e", Value::List(vec![])), ("l", Value::from("x"))]
                .into_iter()
                .collect(),
        ),
    ];
    for (what, node) in cases {
        let bytes = atcr_data::to_cbor(&node);
        let cid = cid_for_cbor(&bytes);
        let mut store = BlockMap::new();
        store.insert(cid, bytes);
        let r = Mst::load(&cid, &store).and_then(|m| m.entries(&store));
        assert!(
            matches!(r, Err(MstError::Malformed { .. })),
            "{what}: {r:?}"
        );
    }
    // A node whose bytes do not hash to the CID it is stored under.
    let mut store = BlockMap::new();
    let real = atcr_data::to_cbor(
        &[("e", Value::List(vec![])), ("l", Value::Null)]
            .into_iter()
            .collect(),
    );
    let cid = cid_for_cbor(b"something else");
    store.insert(cid, real);
    assert!(matches!(
        Mst::load(&cid, &store),
        Err(MstError::Malformed { .. })
    ));
}

//! The blob store against a local directory and a real S3-compatible server.

use atcr_blobstore::{BlobError, BlobRead, BlobStore, S3Config, StoreConfig, UploadState};
use atcr_oci::{Digest, DigestAlgorithm};
use bytes::Bytes;
use futures_util::StreamExt;
use rand::RngCore;
use std::time::Duration;

fn body(parts: Vec<Bytes>) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    futures_util::stream::iter(parts.into_iter().map(Ok))
}

async fn read_all(store: &BlobStore, d: &Digest, range: Option<(u64, u64)>) -> Vec<u8> {
    match store.read(d, range, false).await.expect("read") {
        BlobRead::Stream { mut body, len } => {
            let mut v = Vec::new();
            while let Some(c) = body.next().await {
                v.extend_from_slice(&c.expect("chunk"));
            }
            assert_eq!(v.len() as u64, len);
            v
        }
        BlobRead::Redirect(_) => panic!("unexpected redirect"),
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Chunked upload with a "restart" (a new store instance resuming from the
/// persisted session) in the middle; then reads, ranges, dedup and mismatch.
async fn exercise(cfg: StoreConfig, size: usize) {
    let data = random(size);
    let digest = Digest::sha256(&data);
    let store = BlobStore::open(&cfg).expect("open");
    let mut st = store
        .begin("sess-1", DigestAlgorithm::Sha256)
        .await
        .expect("begin");
    let third = size / 3;
    let first = Bytes::copy_from_slice(&data[..third]);
    store
        .append(
            &mut st,
            body(vec![first.slice(..third / 2), first.slice(third / 2..)]),
        )
        .await
        .expect("append 1");
    assert_eq!(st.offset, third as u64);
    let saved = st.to_json();

    // A body that fails half-way changes nothing.
    let mut st2 = st.clone();
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err("client went away".to_owned()),
    ]);
    let err = store.append(&mut st2, failing).await.unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err}");
    assert_eq!(st2, st);

    // Restart: a new instance resumes from the saved session.
    drop(store);
    let store = BlobStore::open(&cfg).expect("reopen");
    let mut st = UploadState::from_json(&saved).expect("session");
    store.recover(&st).await.expect("recover");
    store
        .append(&mut st, body(vec![Bytes::copy_from_slice(&data[third..])]))
        .await
        .expect("append 2");
    assert_eq!(st.offset, size as u64);
    assert_eq!(
        store.size(&digest).await.expect("head"),
        None,
        "not visible before finish"
    );
    assert_eq!(
        store.finish(st, &digest).await.expect("finish"),
        size as u64
    );
    assert_eq!(store.size(&digest).await.expect("head"), Some(size as u64));
    assert_eq!(read_all(&store, &digest, None).await, data);
    assert_eq!(
        read_all(&store, &digest, Some((10, 1000))).await,
        &data[10..1000]
    );

    // The same content again (another repository) deduplicates.
    let mut st = store
        .begin("sess-2", DigestAlgorithm::Sha256)
        .await
        .expect("begin");
    store
        .append(&mut st, body(vec![Bytes::copy_from_slice(&data)]))
        .await
        .expect("append");
    store.finish(st, &digest).await.expect("finish dup");
    assert_eq!(read_all(&store, &digest, None).await, data);

    // Wrong digest: refused, and nothing is stored at either address.
    let other = Digest::sha256(b"something else");
    let mut st = store
        .begin("sess-3", DigestAlgorithm::Sha256)
        .await
        .expect("begin");
    store
        .append(&mut st, body(vec![Bytes::from_static(b"tampered content")]))
        .await
        .expect("append");
    let err = store.finish(st, &other).await.unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_eq!(store.size(&other).await.expect("head"), None);
    assert_eq!(
        store
            .size(&Digest::sha256(b"tampered content"))
            .await
            .expect("head"),
        None
    );
    assert!(matches!(
        store.read(&other, None, false).await,
        Err(BlobError::NotFound)
    ));

    // The empty blob.
    let empty = Digest::sha256(b"");
    let st = store
        .begin("sess-4", DigestAlgorithm::Sha256)
        .await
        .expect("begin");
    assert_eq!(store.finish(st, &empty).await.expect("empty"), 0);
    assert_eq!(read_all(&store, &empty, None).await, b"");

    store.delete(&digest).await.expect("delete");
    assert_eq!(store.size(&digest).await.expect("head"), None);
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    exercise(
        StoreConfig::Local(dir.path().join("blobs")),
        3 * 1024 * 1024 + 17,
    )
    .await;
}

fn s3_config(s: &atcr_testkit::S3Server, redirect: bool) -> S3Config {
    S3Config {
        endpoint: Some(s.endpoint.clone()),
        bucket: s.bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: s.access_key.clone(),
        secret_access_key: s.secret_key.clone(),
        path_style: true,
        redirect,
        presign_ttl: Duration::from_secs(60),
        part_size: 5 * 1024 * 1024,
        shared_uploads: false,
    }
}

#[tokio::test]
async fn s3_multipart_and_restart() {
    let s3 = atcr_testkit::S3Server::start();
    let spool = tempfile::tempdir().unwrap();
    // 13 MiB: two full parts plus a spooled tail carried across the restart.
    exercise(
        StoreConfig::S3 {
            s3: s3_config(&s3, false),
            spool: spool.path().to_owned(),
        },
        13 * 1024 * 1024 + 5,
    )
    .await;
}

#[tokio::test]
async fn s3_shared_uploads_continue_on_another_replica() {
    let s3 = atcr_testkit::S3Server::start();
    let mut cfg = s3_config(&s3, false);
    cfg.shared_uploads = true;
    // The whole exercise (restart included) with tails in the bucket.
    let spool = tempfile::tempdir().unwrap();
    exercise(
        StoreConfig::S3 {
            s3: cfg.clone(),
            spool: spool.path().to_owned(),
        },
        11 * 1024 * 1024 + 7,
    )
    .await;
    // Two "replicas" with their own (empty) spool directories take turns
    // on one session; small chunks stay below a part, large ones cross it.
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = BlobStore::open(&StoreConfig::S3 {
        s3: cfg.clone(),
        spool: da.path().to_owned(),
    })
    .unwrap();
    let b = BlobStore::open(&StoreConfig::S3 {
        s3: cfg,
        spool: db.path().to_owned(),
    })
    .unwrap();
    let data = random(12 * 1024 * 1024 + 3);
    let digest = Digest::sha256(&data);
    let mut st = a.begin("shared-1", DigestAlgorithm::Sha256).await.unwrap();
    let cuts = [
        0,
        1000,
        3 * 1024 * 1024,
        7 * 1024 * 1024,
        7 * 1024 * 1024 + 1,
        data.len(),
    ];
    for (i, w) in cuts.windows(2).enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        if i == cuts.len() - 2 {
            // A last chunk held in memory whose close never happens (the
            // replica died): the saved state still resumes.
            let mut lost = UploadState::from_json(&st.to_json()).unwrap();
            store
                .append_final(&mut lost, body(vec![Bytes::from_static(b"never closed")]))
                .await
                .unwrap();
            drop(lost);
            // The real last chunk, closed at once without a spool.
            let mut last = UploadState::from_json(&st.to_json()).unwrap();
            store
                .append_final(
                    &mut last,
                    body(vec![Bytes::copy_from_slice(&data[w[0]..w[1]])]),
                )
                .await
                .unwrap();
            st = last;
            break;
        }
        // Each call sees only the state saved by the previous one.
        let mut resumed = UploadState::from_json(&st.to_json()).unwrap();
        store
            .append(
                &mut resumed,
                body(vec![Bytes::copy_from_slice(&data[w[0]..w[1]])]),
            )
            .await
            .unwrap();
        st = resumed;
    }
    assert_eq!(st.offset, data.len() as u64);
    assert_eq!(b.finish(st, &digest).await.unwrap(), data.len() as u64);
    assert_eq!(read_all(&a, &digest, None).await, data);
    // Nothing was spooled locally, and no tail is left in the bucket.
    for d in [&da, &db] {
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
    let bucket = s3.dir().join(&s3.bucket);
    let left = [
        atcr_testkit::files_under(&bucket.join("_uploads")),
        atcr_testkit::files_under(&bucket.join("_spool")),
    ]
    .concat();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn s3_presigned_redirect() {
    let s3 = atcr_testkit::S3Server::start();
    let spool = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&StoreConfig::S3 {
        s3: s3_config(&s3, true),
        spool: spool.path().to_owned(),
    })
    .unwrap();
    let data = random(100_000);
    let d = Digest::sha256(&data);
    let mut st = store.begin("p1", DigestAlgorithm::Sha256).await.unwrap();
    store
        .append(&mut st, body(vec![Bytes::copy_from_slice(&data)]))
        .await
        .unwrap();
    store.finish(st, &d).await.unwrap();
    let BlobRead::Redirect(url) = store.read(&d, None, true).await.unwrap() else {
        panic!("expected a redirect");
    };
    let http = atcr_http::client(Duration::from_secs(10));
    let got = http.get(url.clone()).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), data);
    // A tampered signature is refused by the server.
    let mut tampered = url.as_str().to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let got = http.get(tampered).send().await.unwrap();
    assert_eq!(got.status(), 403);
}

/// A sha256 session closed with a sha512 digest (issue 12, item 4): the
/// stored bytes are hashed again with sha512; a wrong one stores nothing.
async fn close_with_sha512(cfg: StoreConfig, size: usize) {
    let store = BlobStore::open(&cfg).unwrap();
    let data = random(size);
    let mut h = atcr_oci::DigestHasher::new(DigestAlgorithm::Sha512);
    h.update(&data);
    let want = h.finish();
    for (id, expected, ok) in [
        (
            "wrong",
            Digest::parse(&format!("sha512:{}", "ab".repeat(64))).unwrap(),
            false,
        ),
        ("right", want.clone(), true),
    ] {
        let mut st = store.begin(id, DigestAlgorithm::Sha256).await.unwrap();
        store
            .append(&mut st, body(vec![Bytes::copy_from_slice(&data)]))
            .await
            .unwrap();
        let r = store.finish(st, &expected).await;
        assert_eq!(r.is_ok(), ok, "{id}: {r:?}");
        assert_eq!(
            store.size(&expected).await.unwrap(),
            ok.then_some(size as u64)
        );
    }
}

#[tokio::test]
async fn sha512_closes_of_sha256_sessions() {
    let dir = tempfile::tempdir().unwrap();
    close_with_sha512(StoreConfig::Local(dir.path().to_owned()), 300_000).await;
    let s3 = atcr_testkit::S3Server::start();
    for size in [100_000, 11 * 1024 * 1024] {
        let spool = tempfile::tempdir().unwrap();
        close_with_sha512(
            StoreConfig::S3 {
                s3: s3_config(&s3, false),
                spool: spool.path().to_owned(),
            },
            size,
        )
        .await;
    }
}

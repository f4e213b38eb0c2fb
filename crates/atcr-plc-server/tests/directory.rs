//! The directory over HTTP: submissions through the remote client, every
//! read route, persistence across a reopen, and the error statuses.

use atcr_crypto::{Algorithm, Keypair};
use atcr_plc::{Operation, PlcDirectory, Tombstone, audit_log, did_for_genesis};
use atcr_plc_server::{Directory, RemotePlc, router};

fn op(rot: &Keypair, signing: &Keypair, handle: &str, prev: Option<String>) -> Operation {
    Operation::atproto(
        &[&rot.public_key()],
        &signing.public_key(),
        handle,
        "http://127.0.0.1:1",
        prev,
    )
    .sign(rot)
}

async fn serve(dir: Directory) -> String {
    let app = axum::Router::new().nest("/plc", router(dir));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/plc")
}

#[tokio::test]
async fn full_lifecycle_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plc.sqlite");
    let base = serve(Directory::open(&path).unwrap()).await;
    let http = atcr_http::client(std::time::Duration::from_secs(10));
    let remote = RemotePlc::new(base.parse().unwrap(), http.clone());

    let (rot, k1, k2) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::P256),
    );
    let genesis = op(&rot, &k1, "alice.test", None);
    let did = did_for_genesis(&genesis);
    remote.submit(&did, &genesis).await.unwrap();
    let doc = remote.document(&did).await.unwrap().unwrap();
    assert_eq!(doc["alsoKnownAs"][0], "at://alice.test");

    // A key rotation.
    let update = op(&rot, &k2, "alice.test", Some(genesis.cid().to_string()));
    remote.submit(&did, &update).await.unwrap();
    let doc = remote.document(&did).await.unwrap().unwrap();
    assert_eq!(
        doc["verificationMethod"][0]["publicKeyMultibase"],
        k2.public_key().to_multikey()
    );

    // Replaying the genesis, a stale prev, a bad signature: all refused with 400.
    for bad in [
        genesis.clone(),
        op(&rot, &k1, "x.test", Some(genesis.cid().to_string())).sign(&k1),
        op(&k1, &k1, "y.test", Some(update.cid().to_string())),
    ] {
        let resp = http
            .post(format!("{base}/{did}"))
            .json(&bad.to_json())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{:?}", resp.text().await);
    }
    let resp = http
        .post(format!("{base}/{did}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Read routes.
    let log: Vec<serde_json::Value> = http
        .get(format!("{base}/{did}/log"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 2);
    let last: serde_json::Value = http
        .get(format!("{base}/{did}/log/last"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last, update.to_json());
    let data: serde_json::Value = http
        .get(format!("{base}/{did}/data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(data["alsoKnownAs"][0], "at://alice.test");
    let audit: Vec<serde_json::Value> = http
        .get(format!("{base}/{did}/log/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1]["cid"], update.cid().to_string());

    // Unknown and malformed DIDs.
    assert_eq!(
        http.get(format!("{base}/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{base}/did:web:example.com"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // Persistence: a fresh directory on the same file replays to the same state.
    let reopened = Directory::open(&path).unwrap();
    let entries = reopened.audit_entries(&did).await.unwrap();
    let replayed = audit_log(&did, &entries).unwrap().unwrap();
    assert_eq!(
        replayed.verification_methods["atproto"],
        k2.public_key().to_did_key()
    );

    // Tombstone: 410 afterwards, and nothing more is accepted.
    let tomb = Operation::Tombstone(Tombstone {
        prev: update.cid().to_string(),
        sig: String::new(),
    })
    .sign(&rot);
    remote.submit(&did, &tomb).await.unwrap();
    assert_eq!(
        http.get(format!("{base}/{did}"))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert!(remote.document(&did).await.unwrap().is_none());
    let after = op(&rot, &k1, "z.test", Some(tomb.cid().to_string()));
    assert!(remote.submit(&did, &after).await.is_err());
}

#[tokio::test]
async fn concurrent_submissions_to_one_did_keep_a_single_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Directory::open(&tmp.path().join("plc.sqlite")).unwrap();
    let (rot, k) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
    );
    let genesis = op(&rot, &k, "a.test", None);
    let did = did_for_genesis(&genesis);
    dir.submit(&did, genesis.clone()).await.unwrap();
    // Ten different updates all naming the genesis as prev: exactly one wins
    // as a plain append; the rest would be forks that rot (rank 0) may not
    // make over its own operation.
    let mut tasks = vec![];
    for i in 0..10 {
        let d = dir.clone();
        let did = did.clone();
        let o = op(
            &rot,
            &k,
            &format!("h{i}.test"),
            Some(genesis.cid().to_string()),
        );
        tasks.push(tokio::spawn(async move { d.submit(&did, o).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    assert_eq!(dir.log(&did).await.unwrap().len(), 2);
}

/// A new DID may not begin with a legacy `create` operation (issue 14,
/// item 3 in part); old logs that do still replay (`atcr-plc` tests).
#[tokio::test]
async fn legacy_create_is_refused_for_new_dids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Directory::open(&tmp.path().join("plc.sqlite")).unwrap();
    let (signing, recovery) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
    );
    let create = Operation::LegacyCreate(atcr_plc::LegacyCreate {
        signing_key: signing.public_key().to_did_key(),
        recovery_key: recovery.public_key().to_did_key(),
        handle: "old.test".into(),
        service: "pds.example.com".into(),
        prev: None,
        sig: String::new(),
    })
    .sign(&signing);
    let did = did_for_genesis(&create);
    let e = dir.submit(&did, create).await.unwrap_err().to_string();
    assert!(e.contains("legacy create"), "{e}");
    assert!(dir.document(&did).await.is_err(), "nothing registered");
}

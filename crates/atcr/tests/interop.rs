//! Interoperability with the reference implementations from the npm registry
//! (installed by `scripts/interop-env`): our client and verifier against the
//! reference PDS + PLC, the reference `@atproto/repo` / `@did-plc/lib`
//! verifying our CARs and PLC log, and `@atproto/api` using our PDS.

use atcr_identity::{IdentityResolver, ResolverConfig};
use atcr_syntax::{AtIdentifier, Did, Nsid, RecordKey};
use atcr_xrpc::PdsClient;
use atcr_xrpc::types::*;
use base64::Engine;
use serde_json::json;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{RefStack, node};

/// Our server (embedded PDS + PLC) in-process.
async fn our_server() -> (String, atcr_server::Services, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let env = [
        (
            "ATCR_SERVER_DATA_DIR".to_owned(),
            tmp.path().join("data").display().to_string(),
        ),
        ("ATCR_SERVER_LISTEN".to_owned(), addr.to_string()),
    ]
    .into();
    let cfg = atcr_config::Config::load(None, &env).unwrap();
    let services = atcr_server::Services::open(cfg).unwrap();
    let s = services.clone();
    tokio::spawn(async move {
        atcr_server::serve_on(listener, s, std::future::pending())
            .await
            .unwrap()
    });
    (format!("http://{addr}"), services, tmp)
}

fn client(url: &str) -> PdsClient {
    PdsClient::new(
        url.parse().unwrap(),
        atcr_http::client(Duration::from_secs(20)),
    )
}

fn manifest(n: u32) -> serde_json::Value {
    json!({"$type": "io.atcr.manifest", "repository": "app", "digest": format!("sha256:{n:064x}"), "createdAt": "2026-11-22T00:00:00.000Z"})
}

fn put(did: &str, rkey: &str, n: u32) -> PutRecordInput {
    PutRecordInput {
        repo: did.into(),
        collection: "io.atcr.manifest".into(),
        rkey: rkey.into(),
        validate: Some(false),
        record: manifest(n),
        swap_record: None,
        swap_commit: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_and_verifier_against_the_reference_pds_and_plc() {
    let stack = tokio::task::spawn_blocking(RefStack::start).await.unwrap();
    let c = client(&stack.pds);
    let input = CreateAccountInput {
        handle: "alice.test".into(),
        password: Some("hunter2-hunter2".into()),
        email: Some("alice@example.test".into()),
        invite_code: None,
    };
    let session = c.create_account(&input, None).await.unwrap();
    let did = session.did.clone();
    // Log in again from scratch.
    let c = client(&stack.pds);
    c.create_session("alice.test", "hunter2-hunter2")
        .await
        .unwrap();
    let w = c.put_record(&put(&did, "tag-latest", 1)).await.unwrap();
    c.put_record(&put(&did, "tag-old", 2)).await.unwrap();
    assert_eq!(
        c.get_record(&did, "io.atcr.manifest", "tag-latest")
            .await
            .unwrap()
            .cid,
        w.cid
    );
    assert_eq!(
        c.list_records(&did, "io.atcr.manifest", 10, None)
            .await
            .unwrap()
            .records
            .len(),
        2
    );
    c.delete_record(&DeleteRecordInput {
        repo: did.clone(),
        collection: "io.atcr.manifest".into(),
        rkey: "tag-old".into(),
        swap_record: None,
        swap_commit: None,
    })
    .await
    .unwrap();

    // Our resolver reads the reference PLC's document (legacy key form).
    let resolver = IdentityResolver::new(ResolverConfig {
        plc_url: stack.plc.parse().unwrap(),
        ..ResolverConfig::default()
    })
    .unwrap();
    let id = resolver
        .resolve(&AtIdentifier::Did(Did::new(&did).unwrap()))
        .await
        .unwrap();
    let (nsid, parsed) = (
        Nsid::new("io.atcr.manifest").unwrap(),
        Did::new(&did).unwrap(),
    );
    // Our verifier accepts the reference PDS's proofs: presence...
    let car = c
        .sync_get_record(&did, "io.atcr.manifest", "tag-latest")
        .await
        .unwrap();
    let v = atcr_repo::verify_record_proof(
        &car,
        &parsed,
        &id.signing_key,
        &nsid,
        &RecordKey::new("tag-latest").unwrap(),
    )
    .unwrap();
    assert_eq!(v.record.unwrap().0.to_string(), w.cid);
    // ...and absence of the deleted record.
    let car = c
        .sync_get_record(&did, "io.atcr.manifest", "tag-old")
        .await
        .unwrap();
    let v = atcr_repo::verify_record_proof(
        &car,
        &parsed,
        &id.signing_key,
        &nsid,
        &RecordKey::new("tag-old").unwrap(),
    )
    .unwrap();
    assert!(v.record.is_none());
    // And its full repository CAR.
    let repo_car = c.sync_get_repo(&did).await.unwrap();
    let (roots, blocks) = atcr_repo::read_car(&repo_car).unwrap();
    let repo = atcr_repo::Repo::load(&roots[0], &blocks).unwrap();
    repo.commit().verify(&id.signing_key).unwrap();
    assert!(
        repo.mst()
            .entries(&blocks)
            .unwrap()
            .iter()
            .any(|(k, _)| k == "io.atcr.manifest/tag-latest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_libraries_verify_our_cars_and_plc_log() {
    let (url, services, _tmp) = our_server().await;
    let pds = services.pds.clone().unwrap();
    for (i, alg) in [atcr_crypto::Algorithm::K256, atcr_crypto::Algorithm::P256]
        .into_iter()
        .enumerate()
    {
        let handle = format!("ref{i}.test");
        let created = pds
            .create_account(&handle, Some("correct horse".into()), Some(alg))
            .await
            .unwrap();
        let did = created.did.clone();
        let c = client(&url);
        c.create_session(&handle, "correct horse").await.unwrap();
        for n in 0..25 {
            c.put_record(&put(&did, &format!("r{n}"), n)).await.unwrap();
        }
        c.delete_record(&DeleteRecordInput {
            repo: did.clone(),
            collection: "io.atcr.manifest".into(),
            rkey: "r3".into(),
            swap_record: None,
            swap_commit: None,
        })
        .await
        .unwrap();
        if i == 1 {
            // After a key rotation too.
            pds.rotate_key(&did, None).await.unwrap();
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut proofs = vec![];
        for rkey in ["r0", "r7", "r24", "r3", "never-written"] {
            let cid = c
                .get_record(&did, "io.atcr.manifest", rkey)
                .await
                .ok()
                .map(|r| r.cid);
            let car = c
                .sync_get_record(&did, "io.atcr.manifest", rkey)
                .await
                .unwrap();
            proofs.push(json!({"collection": "io.atcr.manifest", "rkey": rkey, "cid": cid, "car": b64(&car)}));
        }
        let http = atcr_http::client(Duration::from_secs(10));
        let doc: serde_json::Value = http
            .get(format!("{url}/plc/{did}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let did_key = format!(
            "did:key:{}",
            doc["verificationMethod"][0]["publicKeyMultibase"]
                .as_str()
                .unwrap()
        );
        let plc_ops: serde_json::Value = http
            .get(format!("{url}/plc/{did}/log"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let input = json!({
            "did": did, "didKey": did_key, "proofs": proofs,
            "repoCar": b64(&c.sync_get_repo(&did).await.unwrap()), "plcOps": plc_ops,
        });
        let mut child = node("verify-ours.js")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "reference verification failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["proofsVerified"], 5, "{summary}");
        assert_eq!(summary["repoRecords"], 24, "{summary}");
        assert_eq!(
            summary["plcHandle"][0],
            format!("at://{handle}"),
            "{summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_logs_in_to_our_pds() {
    let (url, services, _tmp) = our_server().await;
    let pds = services.pds.clone().unwrap();
    let created = pds
        .create_account("api.test", Some("correct horse".into()), None)
        .await
        .unwrap();
    let summary = common::node_json(
        "api-client.js",
        vec![url.clone(), "api.test".into(), "correct horse".into()],
    )
    .await;
    assert_eq!(summary["did"], created.did);
    assert_eq!(summary["cid"], summary["gotCid"]);
    assert_eq!(summary["listed"], 1);
    let rkey = summary["uri"].as_str().unwrap().rsplit('/').next().unwrap();
    let (cid, _) = pds
        .get_record(&created.did, "io.atcr.manifest", rkey)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary["cid"], cid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_pds_registers_and_rotates_dids_at_the_reference_plc() {
    let stack = tokio::task::spawn_blocking(RefStack::start).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let env = [
        (
            "ATCR_SERVER_DATA_DIR".to_owned(),
            tmp.path().join("data").display().to_string(),
        ),
        ("ATCR_SERVER_LISTEN".to_owned(), addr.to_string()),
        ("ATCR_PLC_EMBEDDED".to_owned(), "false".to_owned()),
        ("ATCR_PLC_URL".to_owned(), stack.plc.clone()),
    ]
    .into();
    let services =
        atcr_server::Services::open(atcr_config::Config::load(None, &env).unwrap()).unwrap();
    assert!(services.plc.is_none());
    let pds = services.pds.clone().unwrap();
    let s = services.clone();
    tokio::spawn(async move {
        atcr_server::serve_on(listener, s, std::future::pending())
            .await
            .unwrap()
    });
    let url = format!("http://{addr}");

    let created = pds
        .create_account("external.test", Some("correct horse".into()), None)
        .await
        .unwrap();
    let c = client(&url);
    c.create_session("external.test", "correct horse")
        .await
        .unwrap();
    c.put_record(&put(&created.did, "latest", 1)).await.unwrap();
    // The reference directory resolves the DID to our PDS and key; our proof verifies against it.
    let resolver = IdentityResolver::new(ResolverConfig {
        plc_url: stack.plc.parse().unwrap(),
        cache_ttl: Duration::ZERO,
        ..ResolverConfig::default()
    })
    .unwrap();
    let did = Did::new(&created.did).unwrap();
    let check = |key: atcr_crypto::PublicKey, car: Vec<u8>| {
        atcr_repo::verify_record_proof(
            &car,
            &did,
            &key,
            &Nsid::new("io.atcr.manifest").unwrap(),
            &RecordKey::new("latest").unwrap(),
        )
        .unwrap()
        .record
        .is_some()
    };
    let id = resolver
        .resolve(&AtIdentifier::Did(did.clone()))
        .await
        .unwrap();
    assert_eq!(id.pds.as_str().trim_end_matches('/'), url);
    assert!(check(
        id.signing_key,
        c.sync_get_record(&created.did, "io.atcr.manifest", "latest")
            .await
            .unwrap()
    ));
    // A key rotation is accepted by the reference directory, and records keep verifying.
    let new_key = pds.rotate_key(&created.did, None).await.unwrap();
    let id = resolver
        .resolve(&AtIdentifier::Did(did.clone()))
        .await
        .unwrap();
    assert_eq!(id.signing_key.to_did_key(), new_key);
    assert!(check(
        id.signing_key,
        c.sync_get_record(&created.did, "io.atcr.manifest", "latest")
            .await
            .unwrap()
    ));
}

/// An image pushed through our registry by a user whose account lives on the
/// reference PDS leaves `io.atcr.manifest` / `io.atcr.tag` records there,
/// written with the session from their `docker login`; the reference client
/// reads them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_by_a_reference_pds_user_lands_in_their_pds() {
    let stack = tokio::task::spawn_blocking(RefStack::start).await.unwrap();
    let c = client(&stack.pds);
    let input = CreateAccountInput {
        handle: "carol.test".into(),
        password: Some("carol-password-1".into()),
        email: Some("carol@example.test".into()),
        invite_code: None,
    };
    let did = c.create_account(&input, None).await.unwrap().did;
    let app = c.create_app_password("registry").await.unwrap().password;
    let pds_port = stack.pds.rsplit(':').next().unwrap().to_owned();
    let s = common::start(&[
        ("ATCR_PDS_ENABLED", "false".into()),
        ("ATCR_PLC_EMBEDDED", "false".into()),
        ("ATCR_PLC_URL", stack.plc.clone()),
        ("ATCR_IDENTITY_ALLOW_PLAIN_HTTP", "true".into()),
        (
            "ATCR_IDENTITY_HOST_OVERRIDES",
            format!("carol.test=127.0.0.1:{pds_port}"),
        ),
        // The reference PDS runs on loopback: allowed by name here.
        ("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8".into()),
    ])
    .await;
    let tok = common::token(
        &s,
        Some(("carol.test", &app)),
        &["repository:carol.test/web:pull,push"],
    )
    .await;
    let http = common::http();
    let mut digests = vec![];
    for blob in [b"{\"os\":\"linux\"}".to_vec(), vec![9u8; 4096]] {
        let d = common::sha256(&blob);
        let r = http
            .post(format!("{}/v2/carol.test/web/blobs/uploads/", s.url))
            .query(&[("digest", &d)])
            .bearer_auth(&tok)
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        digests.push((d, blob.len()));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0].0, "size": digests[0].1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1].0, "size": digests[1].1}],
    }))
    .unwrap();
    let md = common::sha256(&manifest);
    let r = http
        .put(format!("{}/v2/carol.test/web/manifests/v1", s.url))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // The reference client reads the records from the reference PDS.
    let recs = common::node_json(
        "read-records.js",
        vec![
            stack.pds.clone(),
            did.clone(),
            "io.atcr.manifest".into(),
            "io.atcr.tag".into(),
        ],
    )
    .await;
    let m = &recs["io.atcr.manifest"][0];
    assert_eq!(m["value"]["digest"], md.as_str());
    assert_eq!(m["value"]["repository"], "web");
    assert_eq!(m["value"]["layers"][0]["digest"], digests[1].0.as_str());
    let t = &recs["io.atcr.tag"][0];
    assert_eq!(t["uri"], format!("at://{did}/io.atcr.tag/web:v1"));
    assert_eq!(t["value"]["manifestDigest"], md.as_str());
    assert_eq!(t["value"]["manifest"], m["uri"]);
    // The manifest blob on the reference PDS holds the exact bytes.
    let cid = m["value"]["manifestBlob"]["ref"]["$link"].as_str().unwrap();
    assert_eq!(c.get_blob(&did, cid).await.unwrap(), manifest);
    // And an anonymous pull through the registry gets them too.
    let anon = common::token(&s, None, &["repository:carol.test/web:pull"]).await;
    let got = http
        .get(format!("{}/v2/carol.test/web/manifests/v1", s.url))
        .bearer_auth(&anon)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, manifest);

    // atcr-verify proves the image from the reference PLC's signed log and
    // the reference PDS's record proofs, by handle (bidirectional check
    // through the well-known endpoint) and by DID.
    let v = atcr_verify::Verifier::new(atcr_verify::VerifierConfig {
        identity: ResolverConfig {
            plc_url: stack.plc.parse().unwrap(),
            allow_plain_http: true,
            host_overrides: vec![(
                "carol.test".into(),
                format!("127.0.0.1:{pds_port}").parse().unwrap(),
            )],
            ..Default::default()
        },
        plain_http_loopback: true,
        ..Default::default()
    })
    .unwrap();
    let policy = atcr_verify::policy::TrustPolicy::owner_only();
    for name in [
        format!("{}/carol.test/web:v1", s.host),
        format!("{}/{}/web@{md}", s.host, common::path_did(&did)),
    ] {
        let image = atcr_verify::ImageRef::parse(&name).unwrap();
        let r = v.verify(&image, &policy).await.unwrap();
        assert_eq!(r.decision, atcr_verify::Decision::Pass, "{name}: {r:#?}");
        assert_eq!(r.digest.as_deref(), Some(md.as_str()));
        let sig = &r.signatures[0];
        assert!(sig.valid && sig.trusted && sig.did == did, "{r:#?}");
    }
}

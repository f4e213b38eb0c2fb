//! The registry follows the owner's PDS: records changed there with any
//! ATProto client (here the reference `@atproto/api`) reach the index, also
//! across a registry restart (from the saved cursor), and hostile events
//! (replayed, forged, for other DIDs, malformed) never corrupt it.

use common::{account, http, manifest_status, push_image, start, token};
use serde_json::json;
use std::time::{Duration, Instant};

mod common;

const PW: &str = "correct horse battery";

async fn tags(s: &common::Server, tok: &str, name: &str) -> Vec<String> {
    let r = http()
        .get(format!("{}/v2/{name}/tags/list", s.url))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Polls `done` every 20 ms for up to `limit`; returns the time it took.
async fn within<F, Fut>(limit: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !done().await {
        assert!(t.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

async fn record_op(s: &common::Server, args: &[&str]) {
    let mut a = vec![s.url.clone(), "alice.test".into(), PW.into()];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    common::node_json("record-op.js", a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_in_the_pds_reach_the_registry_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "ATCR_SERVER_DATA_DIR",
        dir.path().join("data").display().to_string(),
    )];
    let s = start(&env).await;
    let did = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push,delete"],
    )
    .await;
    let name = "alice.test/app";
    let d1 = push_image(&s, &tok, name, "v1", "one").await;
    let d2 = push_image(&s, &tok, name, "v2", "two").await;
    let d3 = push_image(&s, &tok, name, "v3", "three").await;
    push_image(&s, &tok, name, "v1-copy", "one").await;
    assert_eq!(tags(&s, &tok, name).await, ["v1", "v1-copy", "v2", "v3"]);

    // A tag record deleted with @atproto/api directly in the PDS.
    let t0 = Instant::now();
    record_op(
        &s,
        &["delete", "io.atcr.tag", &atcr_oci::tag_rkey("app", "v2")],
    )
    .await;
    let took = t0.elapsed();
    let lag = within(Duration::from_secs(2), || async {
        !tags(&s, &tok, name).await.contains(&"v2".to_owned())
    })
    .await;
    eprintln!("tag delete visible {lag:?} after the client returned ({took:?} in the client)");
    assert_eq!(tags(&s, &tok, name).await, ["v1", "v1-copy", "v3"]);
    assert_eq!(manifest_status(&s, &tok, name, "v2").await, 404);
    assert_eq!(
        manifest_status(&s, &tok, name, &d2).await,
        200,
        "only the tag went"
    );

    // A manifest record deleted there (revoked): unpullable by tag, its tags
    // leave the list; by digest the verifier reports it revoked.
    let digest = atcr_oci::Digest::parse(&d3).unwrap();
    record_op(
        &s,
        &[
            "delete",
            "io.atcr.manifest",
            &atcr_oci::records::manifest_rkey("app", &digest),
        ],
    )
    .await;
    within(Duration::from_secs(2), || async {
        manifest_status(&s, &tok, name, "v3").await == 404
    })
    .await;
    assert_eq!(tags(&s, &tok, name).await, ["v1", "v1-copy"]);
    let verifier =
        atcr_verify::Verifier::new(common::verifier_config(&s, Some(("alice.test", PW)))).unwrap();
    let image = format!("{}/{}/app@{d3}", s.host, common::path_did(&did));
    let r = verifier
        .verify(
            &atcr_verify::ImageRef::parse(&image).unwrap(),
            &atcr_verify::policy::TrustPolicy::owner_only(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.reasons.first(),
        Some(&atcr_verify::Reason::Revoked),
        "{r:#?}"
    );

    // A tag moved there (put with another digest the registry holds).
    let uri = format!(
        "at://{did}/io.atcr.manifest/{}",
        atcr_oci::records::manifest_rkey("app", &atcr_oci::Digest::parse(&d2).unwrap())
    );
    // `put_tag(key, record's tag)`: a tag record under key `app:KEY`.
    let put_tag = |key: &'static str, named: &'static str| {
        let record = json!({"$type": "io.atcr.tag", "repository": "app", "tag": named,
            "manifestDigest": d2, "manifest": uri, "createdAt": "2026-12-01T00:00:00.000Z"});
        let s = &s;
        async move {
            let rkey = atcr_oci::tag_rkey("app", key);
            record_op(s, &["put", "io.atcr.tag", &rkey, &record.to_string()]).await
        }
    };
    put_tag("v1-copy", "v1-copy").await;
    within(Duration::from_secs(2), || async {
        let (dg, _) = s
            .services
            .registry
            .index()
            .tag(&did, "app", "v1-copy")
            .await
            .unwrap()
            .unwrap_or_default();
        dg == d2
    })
    .await;

    // A tag record naming the wrong tag (a hostile or broken client) is not
    // taken: the tag leaves the index rather than pointing anywhere else.
    put_tag("v1", "other").await;
    within(Duration::from_secs(2), || async {
        !tags(&s, &tok, name).await.contains(&"v1".to_owned())
    })
    .await;
    assert_eq!(manifest_status(&s, &tok, name, &d1).await, 200);

    // The registry's own writes go on working and are not undone.
    push_image(&s, &tok, name, "v4", "four").await;
    let pushed_again = push_image(&s, &tok, name, "v2", "two").await;
    assert_eq!(pushed_again, d2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tags(&s, &tok, name).await, ["v1-copy", "v2", "v4"]);

    // Registry down while the PDS changes: the restarted registry catches
    // up from its cursor.
    let pds = s.services.pds.clone().unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pds.write(
        &did,
        vec![atcr_pds::Write::Delete {
            collection: "io.atcr.tag".into(),
            rkey: atcr_oci::tag_rkey("app", "v4"),
            swap: None,
        }],
        None,
    )
    .await
    .unwrap();
    drop(pds);
    let s = start(&env).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push,delete"],
    )
    .await;
    within(Duration::from_secs(2), || async {
        tags(&s, &tok, name).await == ["v1-copy", "v2"]
    })
    .await;
    let cursor = s
        .services
        .registry
        .index()
        .follow_cursor("embedded")
        .await
        .unwrap();
    assert_eq!(
        cursor,
        Some(s.services.pds.as_ref().unwrap().latest_seq()),
        "the cursor is saved up to the newest event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_events_never_corrupt_the_index() {
    let s = start(&[]).await;
    let did = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push,delete"],
    )
    .await;
    let name = "alice.test/app";
    let d1 = push_image(&s, &tok, name, "v1", "one").await;
    let reg = &s.services.registry;
    let pds = s.services.pds.as_ref().unwrap();
    // Every event so far, replayed (the PDS repeating old events): the
    // registry's own writes are recognised, nothing changes.
    let events = pds.events_after(0, 1000).await.unwrap();
    assert!(!events.is_empty());
    for (_, frame) in &events {
        assert_eq!(reg.apply_frame(frame).await.unwrap(), 0);
    }
    // A forged delete of the tag (the record is still there): the PDS is
    // read back, the tag stays. Likewise a forged manifest delete.
    let fake = atcr_data::cid_for_cbor(b"forged");
    let event = |repo: &str, action: &str, path: String, cid| atcr_repo::firehose::CommitEvent {
        seq: 999_999,
        repo: repo.to_owned(),
        commit: fake,
        rev: "3zzzzzzzzzzzz".into(),
        since: None,
        blocks: atcr_repo::BlockMap::new(),
        roots: vec![],
        ops: vec![atcr_repo::firehose::RepoOp {
            action: action.into(),
            path,
            cid,
            prev: None,
        }],
        prev_data: None,
        time: "2026-12-01T00:00:00.000Z".into(),
    };
    let tag_path = format!("io.atcr.tag/{}", atcr_oci::tag_rkey("app", "v1"));
    let manifest_path = format!(
        "io.atcr.manifest/{}",
        atcr_oci::records::manifest_rkey("app", &atcr_oci::Digest::parse(&d1).unwrap())
    );
    assert_eq!(
        reg.apply_commit(&event(&did, "delete", tag_path.clone(), None))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        reg.apply_commit(&event(&did, "delete", manifest_path.clone(), None))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        reg.apply_commit(&event(&did, "update", tag_path.clone(), Some(fake)))
            .await
            .unwrap(),
        0
    );
    // Commits for a DID this registry does not serve, and for another
    // repository's key spelling.
    let stranger = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        reg.apply_commit(&event(stranger, "delete", tag_path.clone(), None))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        reg.apply_commit(&event(stranger, "create", tag_path, Some(fake)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        reg.apply_commit(&event(
            &did,
            "create",
            "io.atcr.tag/not-a-tag-key".into(),
            Some(fake)
        ))
        .await
        .unwrap(),
        0
    );
    // Malformed frames: skipped, nothing applied.
    let valid = &events[events.len() - 1].1;
    for junk in [
        &b""[..],
        b"\xa1",
        b"\xff\xff\xff",
        &valid[..valid.len() / 2],
    ] {
        assert_eq!(reg.apply_frame(junk).await.unwrap(), 0);
    }
    assert_eq!(tags(&s, &tok, name).await, ["v1"]);
    assert_eq!(manifest_status(&s, &tok, name, &d1).await, 200);
}

/// A user of the reference PDS (npm) pushes through the registry, then
/// deletes a tag record with `@atproto/api` in their own PDS: the registry,
/// following that PDS's `subscribeRepos` over the network, drops the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_in_a_remote_reference_pds_leaves_the_registry() {
    use atcr_xrpc::types::CreateAccountInput;
    let stack = tokio::task::spawn_blocking(common::RefStack::start)
        .await
        .unwrap();
    let c = atcr_xrpc::PdsClient::new(stack.pds.parse().unwrap(), http());
    let input = CreateAccountInput {
        handle: "carol.test".into(),
        password: Some("carol-password-1".into()),
        email: Some("carol@example.test".into()),
        invite_code: None,
    };
    c.create_account(&input, None).await.unwrap();
    let pds_port = stack.pds.rsplit(':').next().unwrap().to_owned();
    let s = start(&[
        ("ATCR_PDS_ENABLED", "false".into()),
        ("ATCR_PLC_EMBEDDED", "false".into()),
        ("ATCR_PLC_URL", stack.plc.clone()),
        ("ATCR_IDENTITY_ALLOW_PLAIN_HTTP", "true".into()),
        (
            "ATCR_IDENTITY_HOST_OVERRIDES",
            format!("carol.test=127.0.0.1:{pds_port}"),
        ),
        ("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8".into()),
    ])
    .await;
    let tok = token(
        &s,
        Some(("carol.test", "carol-password-1")),
        &["repository:carol.test/web:pull,push"],
    )
    .await;
    let name = "carol.test/web";
    push_image(&s, &tok, name, "v1", "one").await;
    push_image(&s, &tok, name, "v2", "two").await;
    // The follower is connected (it starts live) once it has seen one of
    // the registry's own commits: re-tag until it has.
    let index = s.services.registry.index();
    let probes = std::sync::atomic::AtomicUsize::new(0);
    within(Duration::from_secs(10), || async {
        let n = probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        push_image(&s, &tok, name, &format!("probe{n}"), "two").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        match index.remote_pdses().await.unwrap().first() {
            Some(p) => index.follow_cursor(p).await.unwrap().is_some(),
            None => false,
        }
    })
    .await;
    let before = tags(&s, &tok, name).await;
    assert!(before.contains(&"v1".to_owned()) && before.contains(&"v2".to_owned()));
    common::node_json(
        "record-op.js",
        vec![
            stack.pds.clone(),
            "carol.test".into(),
            "carol-password-1".into(),
            "delete".into(),
            "io.atcr.tag".into(),
            atcr_oci::tag_rkey("web", "v1"),
        ],
    )
    .await;
    let lag = within(Duration::from_secs(2), || async {
        !tags(&s, &tok, name).await.contains(&"v1".to_owned())
    })
    .await;
    eprintln!("remote tag delete visible {lag:?} after the client returned");
    let mut after = before;
    after.retain(|t| t != "v1");
    assert_eq!(tags(&s, &tok, name).await, after);
}

/// A hostile remote PDS: garbage frames, a commit for a DID it does not
/// host (deleting another owner's tag), a commit for its own owner, an old
/// event replayed, then `FutureCursor`. The index is untouched, the cursor
/// only moves forward, and the follower reconnects without its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The handshake callback's error type is tungstenite's (a whole response).
#[allow(clippy::result_large_err)]
async fn a_hostile_remote_pds_cannot_corrupt_the_index() {
    use atcr_repo::firehose::{RepoOp, commit_body, error_frame, message_frame, with_seq};
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let s = start(&[("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8".into())]).await;
    let alice = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "one").await;

    // The fake PDS: records each connection's query string.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let owner = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb".to_owned();
    let (alice2, owner2) = (alice.clone(), owner.clone());
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen_tx = seen_tx.clone();
            let mut query = None;
            let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                query = Some(req.uri().query().map(str::to_owned));
                Ok(resp)
            };
            // Plain XRPC requests (the follower's first re-read) fail here.
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                continue;
            };
            let _ = seen_tx.send(query.flatten());
            n += 1;
            if n > 1 {
                tokio::spawn(async move {
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                });
                continue;
            }
            let fake = atcr_data::cid_for_cbor(b"fake commit");
            let commit = |repo: &str, seq: i64, action: &str, path: String| {
                let ops = [RepoOp {
                    action: action.into(),
                    path,
                    cid: (action != "delete").then_some(fake),
                    prev: None,
                }];
                let body = commit_body(
                    repo,
                    &fake,
                    "3zzzzzzzzzzzz",
                    None,
                    &atcr_repo::BlockMap::new(),
                    &ops,
                    &[],
                    None,
                    "2026-12-01T00:00:00.000Z",
                );
                message_frame("#commit", &with_seq(body, seq))
            };
            let tag_path = |t: &str| format!("io.atcr.tag/{}", atcr_oci::tag_rkey("app", t));
            for frame in [
                b"\xff\x00garbage".to_vec(),
                commit(&alice2, 4, "delete", tag_path("v1")),
                commit(&owner2, 5, "delete", tag_path("x")),
                commit(&alice2, 3, "delete", tag_path("v1")),
                error_frame("FutureCursor", "Cursor in the future."),
            ] {
                if ws.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = ws.close(None).await;
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    s.services
        .registry
        .index()
        .save_session(
            &owner,
            &atcr_registry::index::StoredSession {
                pds: url.clone(),
                handle: "mallory.test".into(),
                access_jwt: "x".into(),
                refresh_jwt: "x".into(),
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, None, "first contact starts live");
    let second = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, None, "after FutureCursor the cursor is dropped");
    assert_eq!(tags(&s, &tok, "alice.test/app").await, ["v1"]);
    assert_eq!(manifest_status(&s, &tok, "alice.test/app", &d1).await, 200);
    assert_eq!(
        s.services
            .registry
            .index()
            .follow_cursor(&url)
            .await
            .unwrap(),
        None
    );
}

/// Each tag's digest, as the registry serves it.
async fn tag_digests(s: &common::Server, tok: &str, name: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    for t in tags(s, tok, name).await {
        let r = http()
            .head(format!("{}/v2/{name}/manifests/{t}", s.url))
            .bearer_auth(tok)
            .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        out.push((
            t,
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ));
    }
    out
}

/// `atcr index rebuild` on a deleted `registry.sqlite` serves the same tags
/// and digests, blobs and signature artifacts as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_rebuild_from_the_pds_serves_what_was_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("ATCR_SERVER_DATA_DIR", data.display().to_string())];
    let scopes = [
        "repository:alice.test/app:pull,push,delete",
        "repository:alice.test/team/web:pull,push,delete",
    ];
    let s = start(&env).await;
    account(&s, "alice.test", PW).await;
    let tok = token(&s, Some(("alice.test", PW)), &scopes).await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    push_image(&s, &tok, "alice.test/app", "v2", "two").await;
    push_image(&s, &tok, "alice.test/app", "latest", "one").await;
    push_image(&s, &tok, "alice.test/team/web", "1.0", "web").await;
    // One manifest pushed by digest only (untagged) and one deleted.
    let d3 = push_image(&s, &tok, "alice.test/app", "gone", "three").await;
    let r = http()
        .delete(format!("{}/v2/alice.test/app/manifests/{d3}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let before_app = tag_digests(&s, &tok, "alice.test/app").await;
    let before_web = tag_digests(&s, &tok, "alice.test/team/web").await;
    let referrers = |s: &common::Server, tok: String| {
        let url = format!("{}/v2/alice.test/app/referrers/{d1}", s.url);
        async move {
            let v: serde_json::Value = http()
                .get(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["manifests"].as_array().unwrap().len()
        }
    };
    assert_eq!(
        referrers(&s, tok.clone()).await,
        1,
        "the signature artifact"
    );
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;

    for f in [
        "registry.sqlite",
        "registry.sqlite-wal",
        "registry.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let mut cfg_env: std::collections::HashMap<String, String> = [(
        "ATCR_SERVER_DATA_DIR".to_owned(),
        data.display().to_string(),
    )]
    .into();
    cfg_env.extend(
        common::index_env(&data)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    let cfg = atcr_config::Config::load(None, &cfg_env).unwrap();
    if cfg.index.backend == "postgres" {
        // A PostgreSQL index is restored from its own backups: refused,
        // with the setting named.
        let e = atcr_server::rebuild::rebuild_index(cfg).await.unwrap_err();
        assert!(e.to_string().contains("index.backend"), "{e}");
        return;
    }
    let report = atcr_server::rebuild::rebuild_index(cfg).await.unwrap();
    assert_eq!(
        (report.owners, report.manifests, report.tags),
        (1, 3, 4),
        "{report:?}"
    );
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(data.join("registry.sqlite").exists());
    assert!(!data.join("registry.sqlite.rebuild").exists());

    let s = start(&env).await;
    let tok = token(&s, Some(("alice.test", PW)), &scopes).await;
    assert_eq!(tag_digests(&s, &tok, "alice.test/app").await, before_app);
    assert_eq!(
        tag_digests(&s, &tok, "alice.test/team/web").await,
        before_web
    );
    assert_eq!(manifest_status(&s, &tok, "alice.test/app", &d3).await, 404);
    assert_eq!(
        referrers(&s, tok.clone()).await,
        1,
        "the signature artifact again"
    );
    // The blobs are linked again: a pull of the layer works.
    let layer = common::sha256(b"layer of one");
    let r = http()
        .get(format!("{}/v2/alice.test/app/blobs/{layer}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"layer of one");
}

/// A co-signature record written straight into the signer's PDS (with
/// `@atproto/api`, not `atcr sign`) becomes a co-signature artifact on the
/// image; one naming a manifest the registry does not hold changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosignature_record_made_outside_atcr_sign_is_picked_up() {
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    let bob = account(&s, "bob.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let d = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    let referrers = || async {
        let v: serde_json::Value = http()
            .get(format!("{}/v2/alice.test/app/referrers/{d}", s.url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["manifests"].as_array().unwrap().clone()
    };
    assert_eq!(referrers().await.len(), 1);
    let owner = atcr_syntax::Did::new(&alice).unwrap();
    let sign = |digest: &str, rkey: &str| {
        let record = atcr_oci::records::SignatureRecord::new(
            &owner,
            "app",
            &atcr_oci::Digest::parse(digest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
            Some("reviewed".into()),
            "2026-12-01T00:00:00.000Z",
        );
        vec![
            s.url.clone(),
            "bob.test".into(),
            PW.into(),
            "put".into(),
            "io.atcr.signature".into(),
            rkey.to_owned(),
            serde_json::to_string(&record).unwrap(),
        ]
    };
    // A subject the registry does not hold: nothing happens.
    let unknown = common::sha256(b"no such manifest");
    common::node_json("record-op.js", sign(&unknown, "3lbbbbbbbbbb2")).await;
    common::node_json("record-op.js", sign(&d, "3lbbbbbbbbbb3")).await;
    let arts = {
        let t = Instant::now();
        loop {
            let r = referrers().await;
            if r.len() == 2 {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(2), "{r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let cosig = arts
        .iter()
        .find(|m| m["annotations"].to_string().contains(&bob))
        .expect("bob's artifact");
    assert!(
        cosig["annotations"]
            .to_string()
            .contains(&format!("at://{bob}/io.atcr.signature/3lbbbbbbbbbb3")),
        "{cosig}"
    );
}

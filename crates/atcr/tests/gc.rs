//! Garbage collection and retention (issue 13, item 3): reclaim after
//! deletes, pushes racing GC, kill -9 during GC, retention dry runs.

mod common;

use common::*;
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;

const PW: &str = "correct horse battery";
/// Grace period of these tests' servers, seconds.
const GRACE: &str = "1";
/// Long enough for anything made now to be past a 1 s grace period
/// (timestamps are whole seconds).
const PAST_GRACE: Duration = Duration::from_millis(2100);

fn blob_files(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                out.push(n.to_owned());
            }
        }
    }
    let mut out = vec![];
    walk(&root.join("blobs").join("blobs"), &mut out);
    out.sort();
    out
}

fn gc_settings() -> Vec<(&'static str, String)> {
    vec![
        ("ATCR_GC_GRACE_SECS", GRACE.into()),
        ("ATCR_GC_INTERVAL_SECS", "0".into()),
    ]
}

async fn delete(s: &Server, tok: &str, name: &str, reference: &str) {
    let r = http()
        .delete(format!("{}/v2/{name}/manifests/{reference}", s.url))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "DELETE {name}:{reference}");
}

async fn blob_status(url: &str, tok: &str, name: &str, digest: &str) -> u16 {
    http()
        .get(format!("{url}/v2/{name}/blobs/{digest}"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every blob an image manifest references answers 200 with its bytes.
async fn assert_pullable(url: &str, tok: &str, name: &str, reference: &str) {
    let r = http()
        .get(format!("{url}/v2/{name}/manifests/{reference}"))
        .bearer_auth(tok)
        .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {name}:{reference}");
    let m: serde_json::Value = r.json().await.unwrap();
    let descs = std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
    for d in descs {
        let digest = d["digest"].as_str().unwrap();
        let r = http()
            .get(format!("{url}/v2/{name}/blobs/{digest}"))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "blob {digest} of {name}:{reference}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_what_deletes_free_and_keeps_what_is_shared() {
    let s = start(&gc_settings()).await;
    let data = s.tmp.path().join("data");
    let reg = &s.services.registry;
    account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/app:pull,push,delete",
            "repository:alice.test/other:pull,push,delete",
        ],
    )
    .await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "shared").await;
    let d_other = push_image(&s, &tok, "alice.test/other", "v1", "shared").await;
    push_image(&s, &tok, "alice.test/app", "v2", "own").await;
    let before = blob_files(&data);
    assert_eq!(before.len(), 4, "config + layer of two images: {before:?}");
    tokio::time::sleep(PAST_GRACE).await;

    // Totals of the real runs, to check the metrics against.
    let (mut blobs_total, mut bytes_total) = (0, 0);
    let mut tally = |r: &atcr_registry::gc::GcReport| {
        blobs_total += r.blobs_reclaimed;
        bytes_total += r.bytes_reclaimed;
    };
    let same = |a: &atcr_registry::gc::GcReport, b: &atcr_registry::gc::GcReport| {
        (
            a.links_removed,
            a.blobs_reclaimed,
            a.bytes_reclaimed,
            a.orphans_reclaimed,
        ) == (
            b.links_removed,
            b.blobs_reclaimed,
            b.bytes_reclaimed,
            b.orphans_reclaimed,
        )
    };

    // Everything is referenced: nothing goes.
    let r = reg.gc(false).await.unwrap();
    assert_eq!((r.blobs_reclaimed, r.links_removed), (0, 0), "{r:?}");

    // app's v1 deleted: its links go (and its signature artifact's small
    // blob, kept in the index); the stored blobs stay: other uses them.
    delete(&s, &tok, "alice.test/app", &d1).await;
    tokio::time::sleep(PAST_GRACE).await;
    let dry = reg.gc(true).await.unwrap();
    let real = reg.gc(false).await.unwrap();
    tally(&real);
    assert!(same(&dry, &real), "dry {dry:?}\nreal {real:?}");
    assert!(real.links_removed >= 2, "{real:?}");
    assert_eq!(blob_files(&data), before);
    assert_pullable(&s.url, &tok, "alice.test/other", "v1").await;

    // other's v1 deleted too: both blobs are reclaimed, exactly as the dry
    // run said, and the repository leaves the index.
    delete(&s, &tok, "alice.test/other", &d_other).await;
    tokio::time::sleep(PAST_GRACE).await;
    let dry = reg.gc(true).await.unwrap();
    let real = reg.gc(false).await.unwrap();
    tally(&real);
    let config = br#"{"seed":"shared"}"#.len() as u64;
    let layer = b"layer of shared".len() as u64;
    assert!(same(&dry, &real), "dry {dry:?}\nreal {real:?}");
    assert!(
        real.blobs_reclaimed >= 2 && real.bytes_reclaimed >= config + layer,
        "{real:?}"
    );
    assert!(real.repositories_removed >= 1, "{real:?}");
    assert_eq!(blob_files(&data).len(), 2);
    assert_eq!(
        blob_status(
            &s.url,
            &tok,
            "alice.test/other",
            &sha256(b"layer of shared")
        )
        .await,
        404
    );
    assert_pullable(&s.url, &tok, "alice.test/app", "v2").await;

    // A blob just uploaded, no manifest yet: kept through the grace period;
    // DELETE /blobs unlinks it, and the next run past grace reclaims it.
    let lone = push_blob(&s, &tok, "alice.test/app", b"uploaded, never referenced").await;
    let r = reg.gc(false).await.unwrap();
    tally(&r);
    assert_eq!(r.blobs_reclaimed, 0, "within the grace period: {r:?}");
    assert_eq!(
        blob_status(&s.url, &tok, "alice.test/app", &lone).await,
        200
    );
    let r = http()
        .delete(format!("{}/v2/alice.test/app/blobs/{lone}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(PAST_GRACE).await;
    let r = reg.gc(false).await.unwrap();
    tally(&r);
    assert_eq!(r.blobs_reclaimed, 1, "{r:?}");
    assert!(!blob_files(&data).contains(&lone["sha256:".len()..].to_owned()));

    // A store object the index does not know (a crash between placing and
    // linking) is reclaimed once older than the grace period.
    let orphan = b"an orphan";
    let hex = &sha256(orphan)["sha256:".len()..];
    let dir = data.join("blobs/blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), orphan).unwrap();
    let r = reg.gc(false).await.unwrap();
    tally(&r);
    assert_eq!(r.orphans_reclaimed, 0, "a fresh object is left alone");
    tokio::time::sleep(PAST_GRACE).await;
    let r = reg.gc(false).await.unwrap();
    tally(&r);
    assert_eq!(
        (r.orphans_reclaimed, r.bytes_reclaimed),
        (1, orphan.len() as u64)
    );
    assert!(!dir.join(hex).exists());
    assert_pullable(&s.url, &tok, "alice.test/app", "v2").await;

    // Metrics.
    let m = http()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert_eq!(value("atcr_gc_runs_total"), 7.0);
    assert_eq!(value("atcr_gc_blobs_reclaimed_total"), blobs_total as f64);
    assert_eq!(value("atcr_gc_bytes_reclaimed_total"), bytes_total as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_gc_lose_nothing() {
    let s = start(&gc_settings()).await;
    let reg = s.services.registry.clone();
    account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/old:pull,push,delete",
            "repository:alice.test/new:pull,push",
            "repository:alice.test/kept:pull,push",
        ],
    )
    .await;
    // Garbage with the very content the pushes below upload again: GC dooms
    // it while the uploads place it.
    for i in 0..16 {
        let d = push_image(&s, &tok, "alice.test/old", "t", &format!("seed {i}")).await;
        delete(&s, &tok, "alice.test/old", &d).await;
    }
    // Blobs uploaded long ago that no manifest references (garbage, were it
    // not for the pushes below, which HEAD them, then reference them).
    let kept_layers: Vec<String> = futures_util::future::join_all(
        (0..8).map(|i| push_blob_owned(&s, &tok, "alice.test/kept", format!("kept layer {i}"))),
    )
    .await;
    tokio::time::sleep(PAST_GRACE).await;
    // A client's HEAD says "exists": it must stay so while that client
    // pushes the manifest, whatever GC runs meanwhile.
    for layer in &kept_layers {
        let r = http()
            .head(format!("{}/v2/alice.test/kept/blobs/{layer}", s.url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gc_loop = {
        let (reg, done, runs) = (reg.clone(), done.clone(), runs.clone());
        tokio::spawn(async move {
            let mut reclaimed = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let r = reg.gc(false).await.unwrap();
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                reclaimed += r.blobs_reclaimed;
            }
            reclaimed
        })
    };
    while runs.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut pushes = vec![];
    for i in 0..16 {
        let (s, tok) = (&s, tok.clone());
        pushes.push(async move {
            push_image(
                s,
                &tok,
                "alice.test/new",
                &format!("t{i}"),
                &format!("seed {i}"),
            )
            .await
        });
    }
    let reuse = kept_layers.iter().enumerate().map(|(i, layer)| {
        let (s, tok) = (&s, tok.clone());
        async move { push_reusing(s, &tok, "alice.test/kept", &format!("r{i}"), layer).await }
    });
    tokio::join!(
        futures_util::future::join_all(pushes),
        futures_util::future::join_all(reuse)
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reclaimed = gc_loop.await.unwrap();
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(runs >= 2, "GC ran alongside the pushes ({runs} runs)");
    assert!(reclaimed > 0, "GC reclaimed the old garbage meanwhile");

    // Every push acknowledged is whole, now and after GC past the grace
    // period (their blobs are referenced).
    for i in 0..16 {
        assert_pullable(&s.url, &tok, "alice.test/new", &format!("t{i}")).await;
    }
    for i in 0..8 {
        assert_pullable(&s.url, &tok, "alice.test/kept", &format!("r{i}")).await;
    }
    tokio::time::sleep(PAST_GRACE).await;
    reg.gc(false).await.unwrap();
    for i in 0..16 {
        assert_pullable(&s.url, &tok, "alice.test/new", &format!("t{i}")).await;
    }
    for i in 0..8 {
        assert_pullable(&s.url, &tok, "alice.test/kept", &format!("r{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_a_blob_gc_is_deleting_waits_and_keeps_its_bytes() {
    let s = start(&gc_settings()).await;
    let reg = s.services.registry.clone();
    account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/old:pull,push,delete",
            "repository:alice.test/new:pull,push",
        ],
    )
    .await;
    // X is garbage (unlinked, old) and GC has just doomed it: its bytes are
    // about to be deleted.
    let bytes = b"the same bytes, garbage and pushed again".to_vec();
    let x = push_blob(&s, &tok, "alice.test/old", &bytes).await;
    let r = http()
        .delete(format!("{}/v2/alice.test/old/blobs/{x}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(PAST_GRACE).await;
    let doomed = reg
        .index()
        .gc_doom(vec![x.clone()], i64::MAX)
        .await
        .unwrap();
    assert_eq!(doomed.len(), 1);
    // Meanwhile a client uploads the same bytes: the upload's last request
    // waits for GC to finish with X instead of placing X under its delete.
    let r = http()
        .post(format!("{}/v2/alice.test/new/blobs/uploads/", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let finish = {
        let (url, tok, x, bytes) = (
            format!("{}{loc}", s.url),
            tok.clone(),
            x.clone(),
            bytes.clone(),
        );
        tokio::spawn(async move {
            http()
                .put(url)
                .query(&[("digest", &x)])
                .bearer_auth(&tok)
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!finish.is_finished(), "the upload waits while X is doomed");
    let r = reg.gc(false).await.unwrap();
    assert!(r.blobs_reclaimed >= 1, "{r:?}");
    assert_eq!(finish.await.unwrap(), 201);
    let got = http()
        .get(format!("{}/v2/alice.test/new/blobs/{x}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    // A later run keeps it: it is linked, and fresh.
    reg.gc(false).await.unwrap();
    assert_eq!(blob_status(&s.url, &tok, "alice.test/new", &x).await, 200);
}

async fn push_blob_owned(s: &Server, tok: &str, name: &str, data: String) -> String {
    push_blob(s, tok, name, data.as_bytes()).await
}

/// The rest of a push whose client found `layer` by HEAD: its config, then
/// the manifest, which must be accepted.
async fn push_reusing(s: &Server, tok: &str, name: &str, tag: &str, layer: &str) {
    let config = format!("{{\"tag\":\"{tag}\"}}");
    push_blob(s, tok, name, config.as_bytes()).await;
    let content = format!("kept layer {}", &tag[1..]);
    // As a client does: HEAD the layer, upload it only when missing, then
    // the manifest at once. A HEAD's "exists" holds for one grace period
    // (1 s here): a layer collected before this HEAD (the test's earlier
    // HEAD is older than that under load) is uploaded again; one this HEAD
    // found must stay until the manifest lands.
    let r = http()
        .head(format!("{}/v2/{name}/blobs/{layer}", s.url))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        push_blob(s, tok, name, content.as_bytes()).await;
    } else {
        assert_eq!(r.status(), 200);
    }
    let m = image_manifest(config.as_bytes(), layer, content.len());
    put_manifest_at(&s.url, tok, name, Some(tag), &m).await;
}

/// Pushes a manifest by digest (untagged) or tag; its digest.
async fn put_manifest(
    s: &Server,
    tok: &str,
    name: &str,
    reference: Option<&str>,
    body: &serde_json::Value,
) -> String {
    put_manifest_at(&s.url, tok, name, reference, body).await
}

/// Pushes the blobs of a one-layer image; its manifest (not pushed).
async fn image_body(s: &Server, tok: &str, name: &str, seed: &str) -> serde_json::Value {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}");
    push_blob(s, tok, name, config.as_bytes()).await;
    push_blob(s, tok, name, layer.as_bytes()).await;
    image_manifest(config.as_bytes(), &sha256(layer.as_bytes()), layer.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_dry_run_equals_the_real_run() {
    let toml = r#"
[[gc.retention]]
repository = "alice.test/app"
keep_last = 2
keep_tags = "^v"
untagged_older_than_secs = 1
enforce = true

[[gc.retention]]
repository = "alice.test/*"
keep_last = 1
"#;
    let s = start_with_file(toml, &gc_settings()).await;
    let did = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/app:pull,push",
            "repository:alice.test/other:pull,push",
        ],
    )
    .await;
    let app = "alice.test/app";
    let release = push_image(&s, &tok, app, "v1.0", "release").await;
    // A multi-arch index kept by its tag: its untagged children stay.
    let amd = put_manifest(
        &s,
        &tok,
        app,
        None,
        &image_body(&s, &tok, app, "amd64").await,
    )
    .await;
    let arm = put_manifest(
        &s,
        &tok,
        app,
        None,
        &image_body(&s, &tok, app, "arm64").await,
    )
    .await;
    let child = |d: &str| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1});
    // Sizes must match: fetch them.
    let size_of = |d: String| {
        let (s, tok) = (&s, tok.clone());
        async move { get_manifest(s, &tok, app, &d).await.len() }
    };
    let (amd_size, arm_size) = (size_of(amd.clone()).await, size_of(arm.clone()).await);
    let mut children = vec![child(&amd), child(&arm)];
    children[0]["size"] = amd_size.into();
    children[1]["size"] = arm_size.into();
    let index = put_manifest(
        &s,
        &tok,
        app,
        Some("v2-multi"),
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}),
    )
    .await;
    // t1..t4 pushed a second apart, after the v tags (tag times are whole
    // seconds): the 2 most recent are t3 and t4.
    let mut tagged = vec![];
    for i in 1..=4 {
        tokio::time::sleep(Duration::from_millis(1050)).await;
        tagged.push(push_image(&s, &tok, app, &format!("t{i}"), &format!("t{i}")).await);
    }
    // An untagged manifest nothing holds: deleted once older than 1 s.
    let stray = put_manifest(
        &s,
        &tok,
        app,
        None,
        &image_body(&s, &tok, app, "stray").await,
    )
    .await;
    // A second repository under a rule that is not enforced.
    push_image(&s, &tok, "alice.test/other", "a", "other a").await;
    tokio::time::sleep(Duration::from_millis(1050)).await;
    push_image(&s, &tok, "alice.test/other", "b", "other b").await;
    tokio::time::sleep(PAST_GRACE).await;

    let reg = &s.services.registry;
    let dry = reg.gc(true).await.unwrap();
    let real = reg.gc(false).await.unwrap();
    assert!(real.retention_failures.is_empty(), "{real:?}");
    let mut planned = dry.retention.clone();
    let mut done = real.retention.clone();
    planned.sort_by(|a, b| {
        (&a.repository, &a.tag, &a.digest).cmp(&(&b.repository, &b.tag, &b.digest))
    });
    done.sort_by(|a, b| {
        (&a.repository, &a.tag, &a.digest).cmp(&(&b.repository, &b.tag, &b.digest))
    });
    assert_eq!(
        planned, done,
        "the dry run lists exactly what the run deletes"
    );

    // What went: t1, t2 (beyond the 2 newest, not ^v), then their
    // manifests and the stray once untagged; kept: t3, t4, v1.0, v2-multi
    // with its children. In `other` (not enforced) only reported: tag a.
    let enforced: Vec<(Option<&str>, &str)> = planned
        .iter()
        .filter(|a| a.enforced)
        .map(|a| (a.tag.as_deref(), a.digest.as_str()))
        .collect();
    let mut expect = vec![
        (Some("t1"), tagged[0].as_str()),
        (Some("t2"), tagged[1].as_str()),
        (None, tagged[0].as_str()),
        (None, tagged[1].as_str()),
        (None, stray.as_str()),
    ];
    let mut got = enforced.clone();
    expect.sort();
    got.sort();
    assert_eq!(got, expect);
    let reported: Vec<_> = planned.iter().filter(|a| !a.enforced).collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].tag.as_deref(), Some("a"));

    for gone in [
        "t1",
        "t2",
        tagged[0].as_str(),
        tagged[1].as_str(),
        stray.as_str(),
    ] {
        assert_eq!(manifest_status(&s, &tok, app, gone).await, 404, "{gone}");
    }
    for kept in ["t3", "t4", "v1.0", "v2-multi", &release, &index, &amd, &arm] {
        assert_eq!(manifest_status(&s, &tok, app, kept).await, 200, "{kept}");
    }
    for kept in ["a", "b"] {
        assert_eq!(
            manifest_status(&s, &tok, "alice.test/other", kept).await,
            200
        );
    }
    // The owner's PDS records went too (the normal delete path).
    let pds = s.services.pds.as_ref().unwrap();
    let (tags, _) = pds
        .list_records(
            &did,
            atcr_registry::records::TAG_COLLECTION,
            100,
            None,
            false,
        )
        .await
        .unwrap();
    let names: Vec<String> = tags
        .iter()
        .filter_map(|(_, _, v)| v["tag"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !names.contains(&"t1".to_owned()) && names.contains(&"t3".to_owned()),
        "{names:?}"
    );
    // A second run has nothing left to do.
    let again = reg.gc(true).await.unwrap();
    assert!(again.retention.iter().all(|a| !a.enforced), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_gc_loses_nothing_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = atcr_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let serve = || {
        atcr(&data, port)
            .env("ATCR_GC_GRACE_SECS", GRACE)
            .env("ATCR_GC_INTERVAL_SECS", "0")
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = serve();
    wait_ready(&url).await;
    create_account(&data, port, "alice.test", PW);
    let tok = child_token(&url, "alice.test/keep", "pull,push").await;
    let junk_tok = child_token(&url, "alice.test/junk", "pull,push").await;
    // Images that must survive, and 3,000 unreferenced blobs to collect.
    for i in 0..5 {
        child_push_image(&url, &tok, "alice.test/keep", &format!("v{i}")).await;
    }
    let kept_files = blob_files(&data).len();
    let junk: Vec<String> = (0..3000).map(|i| format!("junk blob {i}")).collect();
    futures_util::stream::iter(junk.iter())
        .for_each_concurrent(8, |b| {
            let (url, tok) = (url.clone(), junk_tok.clone());
            async move {
                child_push_blob(&url, &tok, "alice.test/junk", b.as_bytes()).await;
            }
        })
        .await;
    assert_eq!(blob_files(&data).len(), kept_files + 3000);
    tokio::time::sleep(PAST_GRACE).await;

    // Kill the server at growing delays into `atcr gc`, restart, check.
    let mut interrupted = 0;
    for delay_ms in [30u64, 80, 150, 250, 400] {
        let mut gc = atcr(&data, port)
            .args(["gc"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = gc.wait();
        let left = blob_files(&data).len();
        if left > kept_files && left < kept_files + 3000 {
            interrupted += 1;
        }
        child = serve();
        wait_ready(&url).await;
        let tok = child_token(&url, "alice.test/keep", "pull").await;
        for i in 0..5 {
            assert_pullable(&url, &tok, "alice.test/keep", &format!("v{i}")).await;
        }
        if left == kept_files {
            break;
        }
    }
    assert!(interrupted > 0, "no kill landed mid-collection");
    // A full run after the restarts finishes the job: only the kept
    // images' blobs are left, and they are whole.
    let out = run(atcr(&data, port)
        .env("ATCR_GC_GRACE_SECS", GRACE)
        .args(["gc"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reclaimed"));
    assert_eq!(blob_files(&data).len(), kept_files);
    let tok = child_token(&url, "alice.test/keep", "pull").await;
    for i in 0..5 {
        assert_pullable(&url, &tok, "alice.test/keep", &format!("v{i}")).await;
    }
    // `atcr gc --dry-run` (and with --json) then has nothing to report.
    let out = run(atcr(&data, port).args(["gc", "--dry-run"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("dry run: would reclaim 0 blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(atcr(&data, port).args(["gc", "--dry-run", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs_reclaimed"], 0, "{v}");
    assert_eq!(v["dry_run"], true);
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn child_token(url: &str, repo: &str, actions: &str) -> String {
    let r: serde_json::Value = http()
        .get(format!("{url}/auth/token"))
        .query(&[("scope", format!("repository:{repo}:{actions}"))])
        .basic_auth("alice.test", Some(PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"].as_str().unwrap().to_owned()
}

async fn child_push_blob(url: &str, tok: &str, name: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = http()
        .post(format!("{url}/v2/{name}/blobs/uploads/"))
        .query(&[("digest", &d)])
        .bearer_auth(tok)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

async fn child_push_image(url: &str, tok: &str, name: &str, tag: &str) {
    let config = format!("{{\"kept\":\"{tag}\"}}");
    let layer = format!("kept layer of {tag}");
    put_image_at(url, tok, name, tag, config.as_bytes(), layer.as_bytes()).await;
}

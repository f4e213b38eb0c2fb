//! kill -9 during a burst of writes, then restart: the repository verifies
//! and holds every acknowledged write (plus at most the writes in flight at
//! the kill, which were committed but not yet answered).

mod common;
use atcr_testkit::free_port;
use atcr_xrpc::PdsClient;
use atcr_xrpc::types::CreateRecordInput;
use common::{atcr, create_account, spawn, wait_ready};
use std::collections::HashSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A server child process over a fresh data directory, with one account.
struct Booted {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    port: u16,
    url: String,
    server: Child,
    did: String,
}

async fn boot(password: &str) -> Booted {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = spawn(&data, port);
    wait_ready(&url).await;
    let did = create_account(&data, port, "crash.test", password);
    Booted {
        _tmp: tmp,
        data,
        port,
        url,
        server,
        did,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_burst_keeps_exactly_the_committed_writes() {
    let Booted {
        _tmp,
        data,
        port,
        url,
        mut server,
        did,
    } = boot("correct horse").await;

    let client = Arc::new(PdsClient::new(
        url.parse().unwrap(),
        atcr_http::client(Duration::from_secs(5)),
    ));
    client
        .create_session("crash.test", "correct horse")
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let mut writers = vec![];
    for w in 0..16 {
        let (client, acked, attempted, did) = (
            client.clone(),
            acked.clone(),
            attempted.clone(),
            did.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let rkey = format!("w{w:02}-{i:05}");
                attempted.lock().unwrap().insert(rkey.clone());
                let input = CreateRecordInput {
                    repo: did.clone(),
                    collection: "io.atcr.manifest".into(),
                    rkey: Some(rkey.clone()),
                    validate: None,
                    record: serde_json::json!({"$type": "io.atcr.manifest", "n": i}),
                    swap_commit: None,
                };
                match client.create_record(&input).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(rkey);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the burst run, then SIGKILL the server mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few writes before the kill: {}",
        acked.len()
    );

    // Restart on the same data directory.
    let mut server = spawn(&data, port);
    wait_ready(&url).await;
    let reader = PdsClient::new(
        url.parse().unwrap(),
        atcr_http::client(Duration::from_secs(5)),
    );
    let car = reader.sync_get_repo(&did).await.unwrap();
    let (roots, blocks) = atcr_repo::read_car(&car).unwrap();
    let repo = atcr_repo::Repo::load(&roots[0], &blocks).unwrap();
    // The head commit verifies against the key in the DID document.
    let doc = atcr_http::client(Duration::from_secs(5))
        .get(format!("{url}/plc/{did}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let did_parsed = atcr_syntax::Did::new(&did).unwrap();
    let key = atcr_identity::DidDocument::parse(&did_parsed, &doc)
        .unwrap()
        .signing_key()
        .unwrap();
    repo.commit().verify(&key).unwrap();
    let stored: HashSet<String> = repo
        .mst()
        .entries(&blocks)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.trim_start_matches("io.atcr.manifest/").to_owned())
        .collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let unacked: Vec<_> = stored.difference(&acked).collect();
    assert!(
        unacked.iter().all(|k| attempted.contains(*k)),
        "phantom records: {unacked:?}"
    );
    assert!(
        unacked.len() <= 16,
        "more unacknowledged commits than writes in flight: {}",
        unacked.len()
    );
    // The index agrees with the signed tree, and writes continue.
    let listed = reader
        .list_records(&did, "io.atcr.manifest", 100, None)
        .await
        .unwrap();
    assert_eq!(listed.records.len(), stored.len().min(100));
    client
        .create_session("crash.test", "correct horse")
        .await
        .unwrap();
    client
        .create_record(&CreateRecordInput {
            repo: did.clone(),
            collection: "io.atcr.manifest".into(),
            rkey: Some("after-restart".into()),
            validate: None,
            record: serde_json::json!({"$type": "io.atcr.manifest"}),
            swap_commit: None,
        })
        .await
        .unwrap();
    eprintln!(
        "acknowledged {} writes, {} stored, {} committed-but-unacknowledged",
        acked.len(),
        stored.len(),
        unacked.len()
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_account_commands_and_config_init() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    // config init prints a configuration that parses.
    let out = atcr(&data, port).args(["config", "init"]).output().unwrap();
    assert!(out.status.success());
    let cfg_path = tmp.path().join("atcr.toml");
    std::fs::write(&cfg_path, &out.stdout).unwrap();
    let env = [(
        "ATCR_SERVER_DATA_DIR".to_owned(),
        data.display().to_string(),
    )]
    .into();
    atcr_config::Config::load(Some(&cfg_path), &env).unwrap();
    // No data directory there: refused, naming the setting, and none made.
    let out = atcr(&data, port)
        .args(["account", "create", "--handle", "cli.test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.data_dir"));
    assert!(
        !data.exists(),
        "an account command created a data directory"
    );
    std::fs::create_dir_all(&data).unwrap();
    // create (P-256), then rotate to K-256 (no server running: applied to
    // the data directory directly).
    let out = atcr(&data, port)
        .args([
            "account",
            "create",
            "--handle",
            "cli.test",
            "--key-alg",
            "p256",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let did = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(did.starts_with("did:plc:"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password: "),
        "a generated password is shown"
    );
    let out = atcr(&data, port)
        .args([
            "account",
            "rotate-key",
            "--handle",
            "cli.test",
            "--key-alg",
            "k256",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with(&did) && line.contains("did:key:zQ3s"),
        "{line}"
    );
    // Usage errors exit 2 with a one-line message.
    let out = atcr(&data, port)
        .args(["account", "create", "--handle", "x", "--key-alg", "rsa"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key-alg") && err.lines().count() == 1, "{err}");
    let out = atcr(&data, port)
        .env("ATCR_PDS_KEY_ALG", "rsa")
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pds.key_alg"));
}

const REG_PW: &str = "registry crash password";

async fn reg_token(url: &str) -> String {
    use base64::Engine as _;
    let r = common::http()
        .get(format!("{url}/auth/token"))
        .query(&[("scope", "repository:crash.test/app:pull,push,delete")])
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("crash.test:{REG_PW}"))
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Chunked upload of `data` (two PATCHes and a PUT); Ok(()) when acknowledged.
async fn upload(http: &reqwest::Client, url: &str, tok: &str, data: &[u8]) -> Result<(), String> {
    let e = |e: reqwest::Error| e.to_string();
    let r = http
        .post(format!("{url}/v2/crash.test/app/blobs/uploads/"))
        .bearer_auth(tok)
        .send()
        .await
        .map_err(e)?;
    let loc = format!(
        "{url}{}",
        r.headers()
            .get("location")
            .ok_or("no location")?
            .to_str()
            .map_err(|e| e.to_string())?
    );
    let half = data.len() / 2;
    http.patch(&loc)
        .bearer_auth(tok)
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .map_err(e)?;
    let r = http
        .put(&loc)
        .query(&[("digest", common::sha256(data))])
        .bearer_auth(tok)
        .body(data[half..].to_vec())
        .send()
        .await
        .map_err(e)?;
    if r.status() == 201 {
        Ok(())
    } else {
        Err(r.status().to_string())
    }
}

/// kill -9 while blobs upload and manifests are pushed, then restart: every
/// acknowledged blob and tag is there, no blob at a content address is
/// corrupt, the index and the PDS agree record for record, and an upload
/// session acknowledged before the kill resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_upload_and_mid_manifest_push() {
    let Booted {
        _tmp,
        data,
        port,
        url,
        mut server,
        did,
    } = boot(REG_PW).await;
    let tok = reg_token(&url).await;
    let http = common::http();

    // A session with one acknowledged chunk, to resume after the restart.
    let resumable: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let r = http
        .post(format!("{url}/v2/crash.test/app/blobs/uploads/"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let session = format!("{url}{}", r.headers()["location"].to_str().unwrap());
    let r = http
        .patch(&session)
        .bearer_auth(&tok)
        .header("content-range", "0-999999")
        .body(resumable[..1_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let blobs_ok = Arc::new(Mutex::new(Vec::<String>::new()));
    let tags_ok = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = vec![];
    for w in 0..3u32 {
        let (http, url, tok, acked) = (http.clone(), url.clone(), tok.clone(), blobs_ok.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0u32.. {
                let blob: Vec<u8> = (0..2_000_000u32)
                    .map(|i| (i ^ (w << 20) ^ n) as u8)
                    .collect();
                if upload(&http, &url, &tok, &blob).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push(common::sha256(&blob));
            }
        }));
    }
    for w in 0..3u32 {
        let (http, url, tok, acked) = (http.clone(), url.clone(), tok.clone(), tags_ok.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0u32.. {
                let cfg = format!("{{\"w\":{w},\"n\":{n}}}").into_bytes();
                if upload(&http, &url, &tok, &cfg).await.is_err() {
                    return;
                }
                let m = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": common::sha256(&cfg), "size": cfg.len()},
                    "layers": [],
                }))
                .unwrap();
                let tag = format!("w{w}-{n}");
                let Ok(r) = http
                    .put(format!("{url}/v2/crash.test/app/manifests/{tag}"))
                    .bearer_auth(&tok)
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(m.clone())
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != 201 {
                    return;
                }
                acked.lock().unwrap().push((tag, common::sha256(&m)));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let blobs_ok = blobs_ok.lock().unwrap().clone();
    let tags_ok = tags_ok.lock().unwrap().clone();
    assert!(
        blobs_ok.len() >= 3 && tags_ok.len() >= 3,
        "too little done before the kill: {} blobs, {} tags",
        blobs_ok.len(),
        tags_ok.len()
    );

    let mut server = spawn(&data, port);
    wait_ready(&url).await;
    let tok = reg_token(&url).await;

    // Nothing unverified sits at a content address.
    let mut files = 0;
    for entry in atcr_testkit::files_under(&data.join("blobs/blobs/sha256")) {
        let bytes = std::fs::read(&entry).unwrap();
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            common::sha256(&bytes),
            format!("sha256:{name}"),
            "corrupt blob {name}"
        );
        files += 1;
    }
    assert!(files >= blobs_ok.len());
    // Every acknowledged blob and tag survived.
    for d in &blobs_ok {
        let r = http
            .get(format!("{url}/v2/crash.test/app/blobs/{d}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&common::sha256(&r.bytes().await.unwrap()), d);
    }
    for (tag, d) in &tags_ok {
        let r = http
            .head(format!("{url}/v2/crash.test/app/manifests/{tag}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged tag {tag} lost");
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    }
    // Index and PDS agree: every tag the registry serves has its tag record
    // pointing at a manifest record, and every record is served.
    let pds = PdsClient::new(
        url.parse().unwrap(),
        atcr_http::client(Duration::from_secs(5)),
    );
    let index_tags: Vec<String> = serde_json::from_value(
        http.get(format!("{url}/v2/crash.test/app/tags/list"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["tags"]
            .clone(),
    )
    .unwrap();
    let tag_records = all_records(&pds, &did, "io.atcr.tag").await;
    let manifest_records = all_records(&pds, &did, "io.atcr.manifest").await;
    let mut record_tags: Vec<String> = tag_records
        .iter()
        .map(|r| r.value["tag"].as_str().unwrap().to_owned())
        .collect();
    record_tags.sort();
    assert_eq!(
        record_tags, index_tags,
        "tags in the index vs tag records in the PDS"
    );
    let manifest_uris: HashSet<String> = manifest_records.iter().map(|r| r.uri.clone()).collect();
    for r in &tag_records {
        assert!(
            manifest_uris.contains(r.value["manifest"].as_str().unwrap()),
            "tag record without its manifest record"
        );
    }
    for r in &manifest_records {
        let d = r.value["digest"].as_str().unwrap();
        let s = http
            .head(format!("{url}/v2/crash.test/app/manifests/{d}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 200, "manifest record {d} not served by the registry");
    }
    assert!(manifest_records.len() >= tags_ok.len());

    // The session acknowledged before the kill resumes.
    let r = http.get(&session).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-999999");
    let r = http
        .put(&session)
        .query(&[("digest", common::sha256(&resumable))])
        .bearer_auth(&tok)
        .header("content-range", "1000000-2999999")
        .body(resumable[1_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    server.kill().unwrap();
    let _ = server.wait();
}

async fn all_records(
    pds: &PdsClient,
    did: &str,
    collection: &str,
) -> Vec<atcr_xrpc::types::RecordOutput> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let page = pds
            .list_records(did, collection, 100, cursor.as_deref())
            .await
            .unwrap();
        let n = page.records.len();
        out.extend(page.records);
        cursor = page.cursor;
        if n < 100 || cursor.is_none() {
            return out;
        }
    }
}

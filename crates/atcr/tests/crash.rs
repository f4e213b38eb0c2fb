//! kill -9 during a burst of writes, then restart: the repository verifies
//! and holds every acknowledged write (plus at most the writes in flight at
//! the kill, which were committed but not yet answered).

use atcr_testkit::free_port;
use atcr_xrpc::PdsClient;
use atcr_xrpc::types::CreateRecordInput;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn atcr(data: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atcr"));
    // Hermetic: no ATCR_* settings leak in from the caller's environment.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATCR_")) {
        c.env_remove(k);
    }
    c.env("ATCR_SERVER_DATA_DIR", data)
        .env("ATCR_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATCR_LOG", "warn");
    c
}

async fn wait_ready(url: &str) {
    let http = atcr_http::client(Duration::from_secs(2));
    for _ in 0..100 {
        if http
            .get(format!("{url}/_health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {url} did not start");
}

fn spawn(data: &std::path::Path, port: u16) -> Child {
    atcr(data, port)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_burst_keeps_exactly_the_committed_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn(&data, port);
    wait_ready(&url).await;
    let out = atcr(&data, port)
        .args([
            "account",
            "create",
            "--handle",
            "crash.test",
            "--password",
            "correct horse",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let did = String::from_utf8(out.stdout).unwrap().trim().to_owned();

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
    // create (P-256), then rotate to K-256.
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

//! Serving beyond loopback (issue 13, item 1): HTTPS with a certificate from
//! a test CA for real clients (no `--tls-verify=false`), a certificate change
//! picked up by the running server, refusals that name their setting, and
//! `X-Forwarded-For` honoured only from a trusted proxy.

mod common;
use common::*;
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery";

fn client_trusting(ca: &std::path::Path) -> reqwest::Client {
    atcr_http::client_builder(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_test_ca_for_skopeo_and_podman_and_certificate_reload() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    make_certs(d, "one");
    make_certs(d, "two");
    let (crt, key) = (d.join("live.crt"), d.join("live.key"));
    std::fs::copy(d.join("one.crt"), &crt).unwrap();
    std::fs::copy(d.join("one.key"), &key).unwrap();
    let s = start(&[
        ("ATCR_SERVER_TLS_CERT", crt.display().to_string()),
        ("ATCR_SERVER_TLS_KEY", key.display().to_string()),
    ])
    .await;
    assert_eq!(
        s.services.config.public_url().unwrap().scheme(),
        "https",
        "the default public URL follows TLS"
    );
    let https = format!("https://{}", s.host);
    account(&s, "alice.test", PW).await;
    // The CA the clients are given, the way each reads it.
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(d.join("one-ca.crt"), certs.join("ca.crt")).unwrap();
    let certs = certs.display().to_string();
    let one = client_trusting(&d.join("one-ca.crt"));
    assert_eq!(
        one.get(format!("{https}/v2/"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // skopeo pushes and pulls an image (index of two platforms) over HTTPS.
    let layout = d.join("layout");
    mkimage_layout(&layout, 2, 4096, true);
    let creds = format!("alice.test:{PW}");
    skopeo_copy_ok(
        &["--all", "--dest-cert-dir", &certs, "--dest-creds", &creds],
        &format!("oci:{}", layout.display()),
        &format!("docker://{}/alice.test/tls:v1", s.host),
    )
    .await;
    let out = d.join("out");
    skopeo_copy_ok(
        &["--all", "--src-cert-dir", &certs, "--src-creds", &creds],
        &format!("docker://{}/alice.test/tls:v1", s.host),
        &format!("oci:{}", out.display()),
    )
    .await;
    // Without the CA the same pull is refused: nothing is insecure.
    let refused = skopeo_copy(
        &["--src-creds", &creds],
        &format!("docker://{}/alice.test/tls:v1", s.host),
        &format!("oci:{}", d.join("no").display()),
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // podman logs in and pulls with --cert-dir.
    let root = d.join("podman");
    std::fs::create_dir_all(&root).unwrap();
    let podman = |args: &[&str]| {
        let mut c = std::process::Command::new("podman");
        c.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--storage-driver=vfs")
            .args(args)
            .env("REGISTRY_AUTH_FILE", root.join("auth.json"))
            .env("XDG_RUNTIME_DIR", root.join("xdg"));
        c
    };
    std::fs::write(root.join("auth.json"), "{}").unwrap();
    let image = format!("{}/alice.test/tls:v1", s.host);
    let (p1, p2) = (
        podman(&[
            "login",
            "--cert-dir",
            &certs,
            "-u",
            "alice.test",
            "-p",
            PW,
            &s.host,
        ]),
        podman(&["pull", "--cert-dir", &certs, &image]),
    );
    tokio::task::spawn_blocking(move || {
        let (mut p1, mut p2) = (p1, p2);
        ok(&mut p1);
        ok(&mut p2);
    })
    .await
    .unwrap();

    // A new certificate (another CA) replaces the files: the running server
    // presents it within seconds, without a restart.
    std::fs::copy(d.join("two.crt"), &crt).unwrap();
    std::fs::copy(d.join("two.key"), &key).unwrap();
    let two = client_trusting(&d.join("two-ca.crt"));
    let t = Instant::now();
    loop {
        let fresh = two.get(format!("{https}/v2/")).send().await;
        if fresh.is_ok_and(|r| r.status() == 401) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New connections no longer get the old certificate.
    let old = client_trusting(&d.join("one-ca.crt"));
    assert!(old.get(format!("{https}/v2/")).send().await.is_err());
}

#[test]
fn refusals_name_the_setting_that_fixes_them() {
    let load = |env: &[(&str, &str)]| {
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        atcr_config::Config::load(None, &env)
    };
    let e = load(&[("ATCR_SERVER_LISTEN", "0.0.0.0:5004")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.public_url") && e.contains("0.0.0.0:5004"),
        "{e}"
    );
    let e = load(&[("ATCR_SERVER_TLS_CERT", "/x.crt")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.tls_key"), "{e}");
    // A LAN URL over plain http: TLS or the explicit opt-in, both named.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").display().to_string();
    let cfg = load(&[
        ("ATCR_SERVER_LISTEN", "0.0.0.0:5004"),
        ("ATCR_SERVER_PUBLIC_URL", "http://registry.lan:5004"),
        ("ATCR_SERVER_DATA_DIR", &data),
    ])
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(atcr_server::Services::open(cfg))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("server.tls_cert") && e.contains("identity.allow_plain_http"),
        "{e}"
    );
    let cfg = load(&[
        ("ATCR_SERVER_LISTEN", "0.0.0.0:5004"),
        ("ATCR_SERVER_PUBLIC_URL", "http://registry.lan:5004"),
        ("ATCR_IDENTITY_ALLOW_PLAIN_HTTP", "true"),
        ("ATCR_SERVER_DATA_DIR", &data),
    ])
    .unwrap();
    assert!(rt.block_on(atcr_server::Services::open(cfg)).is_ok());
    // Unreadable certificate files stop the server with the setting named.
    let cfg = load(&[
        ("ATCR_SERVER_TLS_CERT", "/nonexistent.crt"),
        ("ATCR_SERVER_TLS_KEY", "/nonexistent.key"),
        ("ATCR_SERVER_DATA_DIR", &data),
    ])
    .unwrap();
    let services = rt.block_on(atcr_server::Services::open(cfg)).unwrap();
    let e = rt
        .block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            atcr_server::serve_on(l, services, async {}).await
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.tls_cert"), "{e}");
}

/// Failed logins are throttled by the address `X-Forwarded-For` names only
/// when the connection comes from a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let fail = |s: &Server, forwarded: &'static str| {
        let url = s.url.clone();
        async move {
            http()
                .get(format!("{url}/auth/token"))
                .basic_auth("alice.test", Some("wrong"))
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // 127.0.0.1 is the trusted proxy: 20 failures for one client address
    // throttle that address only.
    let s = start(&[("ATCR_SERVER_TRUSTED_PROXIES", "127.0.0.1".into())]).await;
    account(&s, "alice.test", PW).await;
    for _ in 0..20 {
        assert_eq!(fail(&s, "203.0.113.7").await, 401);
    }
    assert_eq!(fail(&s, "203.0.113.7").await, 429);
    assert_eq!(fail(&s, "203.0.113.8").await, 401);
    // Untrusted: the header is ignored, the connection's address counts.
    let s = start(&[]).await;
    account(&s, "alice.test", PW).await;
    for i in 0..20 {
        let forged = ["198.51.100.1", "198.51.100.2"][i % 2];
        assert_eq!(fail(&s, forged).await, 401);
    }
    assert_eq!(fail(&s, "198.51.100.3").await, 429);
}

/// Issue 13, item 4 (in part): one JSON access-log line per request with
/// the verified DID and a request id, explicit lines for failed logins and
/// denials, no colour escapes in a file, no secrets; `/metrics`, `/healthz`
/// and `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_and_metrics() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = atcr_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = work.path().join("log");
    let mut child = atcr(&data, port)
        .arg("serve")
        .env("ATCR_SERVER_LOG_FORMAT", "json")
        .env("ATCR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(&url).await;
    create_account(&data, port, "alice.test", PW);
    create_account(&data, port, "bob.test", PW);
    let c = http();
    // A failed login, a successful one, a push, a denied push.
    let bad = c
        .get(format!("{url}/auth/token"))
        .basic_auth("alice.test", Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let tok = |user: &'static str, scope: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c
                .get(format!("{url}/auth/token"))
                .query(&[("scope", scope)])
                .basic_auth(user, Some(PW))
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let alice = tok("alice.test", "repository:alice.test/app:pull,push").await;
    let blob = b"observed".to_vec();
    let r = c
        .post(format!(
            "{url}/v2/alice.test/app/blobs/uploads/?digest={}",
            sha256(&blob)
        ))
        .bearer_auth(&alice)
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let bob = tok("bob.test", "repository:alice.test/app:pull,push").await;
    let r = c
        .post(format!("{url}/v2/alice.test/app/blobs/uploads/"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 401 || r.status() == 403);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            c.get(format!("{url}{path}")).send().await.unwrap().status(),
            200
        );
    }
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"atcr_http_requests_total{route="/v2/{name}/blobs/uploads/",status="201"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"atcr_http_requests_total{route="/auth/token",status="401"} 1"#));
    assert!(metrics.contains("atcr_http_request_duration_seconds_bucket"));
    // The push path's own figures.
    assert!(metrics.contains("atcr_login_failures_total 1"), "{metrics}");
    assert!(metrics.contains("atcr_uploads_in_progress 0"));
    for name in [
        "atcr_manifest_batch_pushes_bucket",
        "atcr_manifest_batch_seconds_bucket",
        "atcr_pds_commit_seconds_bucket",
        "atcr_signature_artifact_failures_total 0",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour escapes in a log file");
    for secret in [PW, "not-the-password", alice.as_str(), bob.as_str()] {
        assert!(!text.contains(secret), "a secret in the log");
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let push = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .expect("the push's access line");
    assert_eq!(push["target"], "atcr::access");
    assert_eq!(push["method"], "POST");
    assert_eq!(push["route"], "/v2/{name}/blobs/uploads/");
    assert_eq!(push["status"], 201);
    assert_eq!(push["bytes_in"], blob.len());
    assert_eq!(push["client"], "127.0.0.1");
    assert!(push["duration_ms"].as_f64().unwrap() >= 0.0);
    let alice_did = lines
        .iter()
        .filter(|l| l["target"] == "atcr::access")
        .filter_map(|l| l["did"].as_str())
        .find(|d| d.starts_with("did:plc:"));
    assert_eq!(push["did"].as_str(), alice_did);
    assert!(lines.iter().any(|l| l["target"] == "atcr::auth"
        && l["message"] == "login failed"
        && l["user"] == "alice.test"));
    assert!(lines.iter().any(|l| {
        l["target"] == "atcr::auth"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("denied"))
    }));
}

/// Issue 13, item 5 (in part): `atcr backup` while the server runs, then
/// `atcr restore` into an empty data directory serves the same images, which
/// still verify; what was pushed after the backup is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_the_same_images() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = atcr_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    let mut child = spawn(&data, port);
    wait_ready(&url).await;
    create_account(&data, port, "alice.test", PW);
    let creds = format!("alice.test:{PW}");
    let push = |tag: &str, seed: u32| {
        let layout = work.path().join(format!("layout-{tag}"));
        mkimage_layout(&layout, 2, 2048 + seed, false);
        let dest = format!("docker://{host}/alice.test/app:{tag}");
        let creds = creds.clone();
        async move {
            skopeo_copy_ok(
                &["--dest-tls-verify=false", "--dest-creds", &creds],
                &format!("oci:{}", layout.display()),
                &dest,
            )
            .await
        }
    };
    push("v1", 1).await;
    let backup = work.path().join("backup");
    let out = run(atcr(&data, port).arg("backup").arg(&backup));
    if !common::index_env(&data).is_empty() {
        // The index is in PostgreSQL: refused, with the setting named and
        // nothing written.
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("index.backend") && e.contains("pg_dump"), "{e}");
        assert!(!backup.exists());
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backed up 3 databases"), "{said}");
    // After the backup: not in it.
    push("v2", 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let pull = |tag: &'static str| {
        let dest = work.path().join(format!("pulled-{tag}"));
        let src = format!("docker://{host}/alice.test/app:{tag}");
        let creds = creds.clone();
        async move {
            skopeo_copy(
                &["--src-tls-verify=false", "--src-creds", &creds],
                &src,
                &format!("oci:{}", dest.display()),
            )
            .await
        }
    };

    // The data directory is lost; the backup comes back.
    std::fs::remove_dir_all(&data).unwrap();
    let out = run(atcr(&data, port).arg("restore").arg(&backup));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over a registry is refused.
    let again = run(atcr(&data, port).arg("restore").arg(&backup));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("server.data_dir"));
    let mut child = spawn(&data, port);
    wait_ready(&url).await;
    let got = pull("v1").await;
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        !pull("v2").await.status.success(),
        "v2 was pushed after the backup"
    );
    // The restored image verifies: records, keys and PLC log came back too.
    let config = work.path().join("verify.yaml");
    std::fs::write(
        &config,
        format!("plcUrl: {url}/plc\nplainHttpLoopback: true\nhandleResolvers:\n  - url: {url}\n    domains: [test]\n"),
    )
    .unwrap();
    let out = run(std::process::Command::new(workspace_bin("atcr-verify"))
        .arg("--config")
        .arg(&config)
        .arg(format!("{host}/alice.test/app:v1")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The shipped systemd unit is valid for systemd (`systemd-analyze verify`,
/// pointed at this build's binary) and keeps its hardening.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/atcr.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "StateDirectory=atcr",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atcr.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/atcr", env!("CARGO_BIN_EXE_atcr")),
    )
    .unwrap();
    let out = run(std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 13, item 2 (in part): account and app-password commands go
/// through the running server (its admin socket); a revoked app password, a
/// disabled account and a changed password end registry tokens at once;
/// `listAppPasswords` / `revokeAppPassword` over XRPC; from a directory
/// with no data directory the commands refuse instead of making one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_app_passwords_through_the_running_server() {
    let mut server = ChildServer::start().await;
    let (data, port, url) = (server.data.clone(), server.port, server.url.clone());
    let cli = |args: &[&str]| {
        let out = run(atcr(&data, port).args(args));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let did = cli(&[
        "account",
        "create",
        "--handle",
        "alice.test",
        "--password",
        PW,
    ]);
    let listed = cli(&["account", "list"]);
    assert!(
        listed.contains(&format!("alice.test\t{did}\tactive")),
        "{listed}"
    );
    // The socket is the server's own, user-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "admin socket open to others: {mode:o}");

    let scope = "repository:alice.test/app:pull,push";
    let token = |user: &str, pw: &str| {
        let (url, user, pw) = (url.clone(), user.to_owned(), pw.to_owned());
        async move {
            http()
                .get(format!("{url}/auth/token"))
                .query(&[("scope", scope)])
                .basic_auth(user, Some(pw))
                .send()
                .await
                .unwrap()
        }
    };
    let upload = |tok: String| {
        let url = url.clone();
        async move {
            http()
                .post(format!("{url}/v2/alice.test/app/blobs/uploads/"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let tok_of = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // App password: created, listed, used, revoked: its token ends at once.
    let app = cli(&["app-password", "create", "alice.test", "--name", "ci"]);
    assert!(cli(&["app-password", "list", "alice.test"]).starts_with("ci\t"));
    let t = tok_of(token("alice.test", &app).await).await;
    assert_eq!(upload(t.clone()).await, 202);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cli(&["app-password", "revoke", "alice.test", "--name", "ci"]);
    assert_eq!(upload(t).await, 401, "a token from a revoked app password");
    assert_eq!(token("alice.test", &app).await.status(), 401);
    // Disabled: the account's tokens end and logins are refused; enabled
    // again, it logs in.
    let t = tok_of(token("alice.test", PW).await).await;
    let session: serde_json::Value = http()
        .post(format!("{url}/xrpc/com.atproto.server.createSession"))
        .json(&serde_json::json!({"identifier": "alice.test", "password": PW}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cli(&["account", "disable", "alice.test"]);
    assert_eq!(upload(t).await, 401);
    // Its PDS session writes nothing any more either.
    let r = http()
        .post(format!("{url}/xrpc/com.atproto.repo.uploadBlob"))
        .bearer_auth(session["accessJwt"].as_str().unwrap())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(token("alice.test", PW).await.status(), 401);
    assert!(cli(&["account", "list"]).contains("\tdisabled"));
    cli(&["account", "enable", &did]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = tok_of(token("alice.test", PW).await).await;
    assert_eq!(upload(t).await, 202);
    // A new password: the old one stops working.
    cli(&[
        "account",
        "set-password",
        "alice.test",
        "--password",
        "a brand new password",
    ]);
    assert_eq!(token("alice.test", PW).await.status(), 401);
    assert_eq!(
        token("alice.test", "a brand new password").await.status(),
        200
    );
    // The same through XRPC, as the account itself.
    let app = cli(&["app-password", "create", "alice.test", "--name", "laptop"]);
    let session: serde_json::Value = http()
        .post(format!("{url}/xrpc/com.atproto.server.createSession"))
        .json(&serde_json::json!({"identifier": "alice.test", "password": "a brand new password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = session["accessJwt"].as_str().unwrap();
    let list: serde_json::Value = http()
        .get(format!("{url}/xrpc/com.atproto.server.listAppPasswords"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["passwords"][0]["name"], "laptop", "{list}");
    assert!(
        !list.to_string().contains(&app),
        "the value is never listed"
    );
    let r = http()
        .post(format!("{url}/xrpc/com.atproto.server.revokeAppPassword"))
        .bearer_auth(jwt)
        .json(&serde_json::json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(token("alice.test", &app).await.status(), 401);
    // rotate-key through the socket too.
    assert!(cli(&["account", "rotate-key", "--handle", "alice.test"]).contains("now signs with"));

    // Delete: refused without --yes; then the account, its image and its
    // tokens are gone, and its handle is free.
    // Tokens issued in the second of a revocation are refused: wait it out.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = tok_of(token("alice.test", "a brand new password").await).await;
    let blob = b"a blob of alice's";
    let r = http()
        .post(format!("{url}/v2/alice.test/app/blobs/uploads/"))
        .query(&[("digest", sha256(blob))])
        .bearer_auth(&t)
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = run(atcr(&data, port).args(["account", "delete", "alice.test"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(
        cli(&["account", "delete", "alice.test", "--yes"]).starts_with(&format!("{did} deleted"))
    );
    assert_eq!(upload(t.clone()).await, 401, "a deleted account's token");
    assert_eq!(
        token("alice.test", "a brand new password").await.status(),
        401
    );
    let anon: serde_json::Value = http()
        .get(format!("{url}/auth/token"))
        .query(&[("scope", format!("repository:{}/app:pull", path_did(&did)))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http()
        .head(format!(
            "{url}/v2/{}/app/blobs/{}",
            path_did(&did),
            sha256(blob)
        ))
        .bearer_auth(anon["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a deleted account's repository is gone");
    assert!(!cli(&["account", "list"]).contains(&did));
    let again = cli(&[
        "account",
        "create",
        "--handle",
        "alice.test",
        "--password",
        PW,
    ]);
    assert_ne!(
        again, did,
        "the handle is free for a new account (a new DID)"
    );
    server.stop();

    // From a directory with no data directory: refused, naming the setting,
    // and nothing created.
    let elsewhere = server.work.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_atcr"))
        .current_dir(&elsewhere)
        .env_remove("ATCR_SERVER_DATA_DIR")
        .args(["account", "list"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.data_dir"));
    assert!(!elsewhere.join("atcr-data").exists());
}

//! The container images of ATCR: built from the release binaries with
//! Debian's docker daemon (its own data root, exec root and socket), pushed
//! into an ATCR started by the test, verified with atcr-verify, and run.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PW: &str = "correct horse battery";

/// The release binaries `scripts/test` builds for this test.
fn release_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_BIN_EXE_atcr"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("release");
    assert!(
        d.join("atcr").exists() && d.join("atcr-ratify-verifier").exists(),
        "build the release binaries first (scripts/test does): {}",
        d.display()
    );
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_built_pushed_verified_and_run() {
    let s = start(&[]).await;
    account(&s, "alice.test", PW).await;
    let docker = tokio::task::spawn_blocking(Docker::start).await.unwrap();
    let out = Command::new(repo_root().join("scripts/build-images"))
        .args(["--tag", "test", "--bin-dir"])
        .arg(release_dir())
        .env("DOCKER_HOST", docker.host())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_verifier_config(work.path(), &s);
    let verify = workspace_bin("atcr-verify");
    for name in ["atcr", "atcr-verify"] {
        let local = format!("{name}:test");
        let size: u64 = docker
            .ok(&["image", "inspect", "--format", "{{.Size}}", &local])
            .parse()
            .unwrap();
        eprintln!("image {name}: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
        // No shell in the image.
        assert!(
            !docker
                .docker(&[
                    "run",
                    "--rm",
                    "--entrypoint",
                    "/bin/sh",
                    &local,
                    "-c",
                    "true"
                ])
                .status
                .success()
        );
        // Pushed into ATCR, then verified by its handle name.
        let remote = format!("{}/alice.test/{name}:test", s.host);
        docker.ok(&["tag", &local, &remote]);
        docker.ok(&["login", &s.host, "-u", "alice.test", "-p", PW]);
        docker.ok(&["push", &remote]);
        let out = Command::new(&verify)
            .arg("--config")
            .arg(&config)
            .arg(&remote)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // atcr serve in its container answers /v2/ (401: log in first), and its
    // health check passes.
    let port = atcr_testkit::free_port();
    let id = docker.ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "--tmpfs",
        "/data:uid=65532,gid=65532",
        "-e",
        &format!("ATCR_SERVER_LISTEN=127.0.0.1:{port}"),
        "-e",
        &format!("ATCR_SERVER_PUBLIC_URL=http://127.0.0.1:{port}"),
        "atcr:test",
    ]);
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(r) = http()
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
        {
            status = r.status().as_u16();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = docker.docker(&["logs", &id]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&logs.stderr));
    docker.ok(&["exec", &id, "/usr/local/bin/atcr", "healthcheck"]);
    docker.ok(&["rm", "-f", &id]);
    // docker pull: with every local copy gone, the verifier image comes
    // back from ATCR and runs its CLI.
    let remote = format!("{}/alice.test/atcr-verify:test", s.host);
    docker.ok(&["rmi", &remote, "atcr-verify:test"]);
    docker.ok(&["pull", &remote]);
    let v = docker.ok(&["run", "--rm", &remote, "--version"]);
    assert!(v.starts_with("atcr-verify "), "{v}");
    // Delete with the credentials docker stored at login (crane's token
    // flow: a pull,push token, the 401 naming the delete scope, a new
    // token), then docker pull finds nothing.
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(docker.dir.path().join("config/config.json")).unwrap(),
    )
    .unwrap();
    let auth = stored["auths"][&s.host]["auth"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_for = |scope: String| {
        let (url, auth) = (s.url.clone(), auth.clone());
        async move {
            let r = http()
                .get(format!("{url}/auth/token"))
                .query(&[("scope", scope)])
                .header("authorization", format!("Basic {auth}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let url = format!("{}/v2/alice.test/atcr-verify/manifests/test", s.url);
    let t = token_for("repository:alice.test/atcr-verify:pull,push".into()).await;
    let r = http().delete(&url).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"repository:alice.test/atcr-verify:delete\"")
    );
    let t = token_for("repository:alice.test/atcr-verify:delete".into()).await;
    let r = http().delete(&url).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 202);
    docker.ok(&["rmi", &remote]);
    let gone = docker.docker(&["pull", &remote]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

/// An IPv4 address of this machine that is not loopback (docker treats
/// every loopback registry as insecure, so TLS is only checked elsewhere).
fn global_ipv4() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .expect("a non-loopback IPv4 address for the docker TLS test")
}

/// Docker's per-registry CA (`/etc/docker/certs.d/HOST:PORT/ca.crt`; the
/// daemon has no other place for it), removed on drop.
struct DockerCa(PathBuf);

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_in_pushes_and_pulls_over_https_with_a_test_ca() {
    let ip = global_ipv4();
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    make_certs_for(d, "lan", &[&ip, "127.0.0.1"]);
    let s = start_on(
        &format!("{ip}:0"),
        "",
        &[
            (
                "ATCR_SERVER_TLS_CERT",
                d.join("lan.crt").display().to_string(),
            ),
            (
                "ATCR_SERVER_TLS_KEY",
                d.join("lan.key").display().to_string(),
            ),
        ],
    )
    .await;
    account(&s, "alice.test", PW).await;
    let docker = tokio::task::spawn_blocking(Docker::start).await.unwrap();
    let host = s.host.clone();
    let image = format!("{host}/alice.test/tls:v1");
    let ca_dir = PathBuf::from("/etc/docker/certs.d").join(&host);
    let ca_file = d.join("lan-ca.crt");
    let _ = std::fs::remove_dir_all(&ca_dir);
    let out = tokio::task::spawn_blocking(move || {
        let login = |docker: &Docker| {
            let mut c = Command::new("docker");
            c.args(["login", "-u", "alice.test", "--password-stdin", &host])
                .env("DOCKER_HOST", docker.host())
                .env("DOCKER_CONFIG", docker.dir.path().join("config"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(PW.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };
        // Without the CA: refused for the certificate, nothing insecure.
        let refused = login(&docker);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(err.contains("certificate") || err.contains("x509"), "{err}");
        // With the test CA where docker reads it: login, push, pull.
        std::fs::create_dir_all(&ca_dir).unwrap();
        let _ca = DockerCa(ca_dir.clone());
        std::fs::copy(&ca_file, ca_dir.join("ca.crt")).unwrap();
        let ok = login(&docker);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        // A one-layer image made here (docker import of a small tar).
        let tar = docker.dir.path().join("rootfs.tar");
        let files = docker.dir.path().join("rootfs");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("hello"), "over https").unwrap();
        let made = Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&files)
            .arg("hello")
            .status()
            .unwrap();
        assert!(made.success());
        docker.ok(&["import", &tar.display().to_string(), &image]);
        docker.ok(&["push", &image]);
        docker.ok(&["rmi", &image]);
        docker.ok(&["pull", &image]);
        docker.ok(&["image", "inspect", "--format", "{{.Id}}", &image])
    })
    .await
    .unwrap();
    assert!(out.starts_with("sha256:"), "{out}");
    // The registry has it, over the same TLS.
    let c = atcr_http::client_builder(std::time::Duration::from_secs(10))
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(d.join("lan-ca.crt")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let tok: serde_json::Value = c
        .get(format!("https://{}/auth/token", s.host))
        .query(&[("scope", "repository:alice.test/tls:pull")])
        .basic_auth("alice.test", Some(PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags: serde_json::Value = c
        .get(format!("https://{}/v2/alice.test/tls/tags/list", s.host))
        .bearer_auth(tok["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

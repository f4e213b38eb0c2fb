//! The container images of ATCR: built from the release binaries with
//! Debian's docker daemon (its own data root, exec root and socket), pushed
//! into an ATCR started by the test, verified with atcr-verify, and run.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PW: &str = "correct horse battery";

/// A docker daemon of our own, stopped on drop.
struct Docker {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl Docker {
    fn host(&self) -> String {
        format!("unix://{}/d.sock", self.dir.path().display())
    }

    fn start() -> Self {
        // A short path: unix socket paths are limited.
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let daemon = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}/d.sock", d.display()))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args([
                "--iptables=false",
                "--bridge=none",
                "--insecure-registry",
                "127.0.0.0/8",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .expect("dockerd (Debian: apt-get install docker.io)");
        let me = Self { dir, daemon };
        for _ in 0..200 {
            if me
                .docker(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "dockerd did not start: {}",
            std::fs::read_to_string(me.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // dockerd leaves its network namespace mounted under the exec root.
        let exec = self.dir.path().join("exec");
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if Path::new(m).starts_with(&exec) {
                    let _ = Command::new("umount").arg(m).output();
                }
            }
        }
    }
}

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

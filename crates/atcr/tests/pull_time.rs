//! Pull-time and plugin verification against the real callers of the
//! integration kit: containerd 2.3.4 with `atcr-containerd-verifier` in its
//! bindir, and Ratify 1.4.4's own exec/parse code (`ratify-exec-harness`)
//! running `atcr-ratify-verifier`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery";

/// The kit's containerd with `dir` as its verifier bindir; torn down on drop.
struct Containerd {
    state: PathBuf,
    sock: String,
    bin: PathBuf,
}

impl Containerd {
    fn up(state: &Path, dir: &Path, settings: &Path) -> Self {
        let bin = kit_install();
        let out = Command::new("timeout")
            .arg("120")
            .arg(kit_dir().join("kit.sh"))
            .args(["up-containerd"])
            .arg(dir)
            .env("STATE", state)
            // containerd's environment is the verifier's: where its settings are.
            .env("ATCR_CONTAINERD_VERIFIER_CONFIG", settings)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kit.sh up-containerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            state: state.to_owned(),
            sock: state.join("containerd.sock").display().to_string(),
            bin,
        }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("ctr"))
            .args(["--address", &self.sock])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn pull(&self, image: &str) -> Output {
        self.ctr(&["images", "pull", "--plain-http", image])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("logs/containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new(kit_dir().join("kit.sh"))
            .args(["down"])
            .env("STATE", &self.state)
            .stdin(Stdio::null())
            .output();
    }
}

/// A working directory (short: containerd's socket lives in it) with a
/// verifier bindir holding `atcr-containerd-verifier` as `50-atcr`.
fn verifier_dir() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::Builder::new()
        .prefix("ctrd")
        .tempdir_in("/tmp")
        .unwrap();
    let vdir = work.path().join("verifiers");
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::copy(
        workspace_bin("atcr-containerd-verifier"),
        vdir.join("50-atcr"),
    )
    .unwrap();
    (work, vdir)
}

/// A pass-through proxy in front of the registry that records every
/// request (method, path, user agent) and can hold the verifier's requests
/// (user agent `atcr/…`) for 5 s: the registry's access log, and a registry
/// slower than the verifier's deadline.
struct Proxy {
    host: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        use axum::body::Body;
        use axum::http::Request;
        let log = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l2, s2) = (log.clone(), slow.clone());
        let client = http();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (log, slow, client, upstream) =
                (l2.clone(), s2.clone(), client.clone(), upstream.clone());
            async move {
                let ua = req
                    .headers()
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                log.lock()
                    .unwrap()
                    .push((req.method().to_string(), path.clone(), ua.clone()));
                if slow.load(std::sync::atomic::Ordering::Relaxed) && ua.starts_with("atcr/") {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
                let mut r = client.request(req.method().clone(), format!("{upstream}{path}"));
                for (k, v) in req.headers() {
                    if k != "host" {
                        r = r.header(k, v);
                    }
                }
                let body = axum::body::to_bytes(req.into_body(), 16 << 20)
                    .await
                    .unwrap_or_default();
                let up = r.body(body).send().await.unwrap();
                let mut out = axum::http::Response::builder().status(up.status().as_u16());
                for (k, v) in up.headers() {
                    out = out.header(k, v);
                }
                out.body(Body::from(up.bytes().await.unwrap_or_default()))
                    .unwrap()
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Self { host, log, slow }
    }

    /// What containerd (not the verifier) asked for, from request `from` on.
    fn containerd_requests(&self, from: usize) -> Vec<(String, String)> {
        self.log.lock().unwrap()[from..]
            .iter()
            .filter(|(_, _, ua)| ua.starts_with("containerd"))
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect()
    }

    fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

fn settings(dir: &Path, s: &Server, registry: &str, extra: &str) -> PathBuf {
    let verify = write_verifier_config(dir, s);
    let path = dir.join("settings.yaml");
    std::fs::write(
        &path,
        format!(
            "registries: [\"{}\"]\nverifierConfig: {}\ncacheDir: {}\n{extra}",
            registry,
            verify.display(),
            dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_only_verified_images() {
    // Records are changed behind the registry's back below: it must keep
    // serving what the owner no longer signs (as a stale or hostile registry
    // would), so the verifier's refusal is what is tested. It does not
    // follow the PDS.
    let s = start(&[("ATCR_REGISTRY_FOLLOW_PDS", "false".into())]).await;
    let alice = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/app:pull,push,delete",
            "repository:alice.test/strict:pull,push",
        ],
    )
    .await;
    let good = push_runnable_image(&s, &tok, "alice.test/app", "v1", "ctrd").await;
    // Tampered: its own signature replaced by one pointing at another
    // image's record.
    let d_tampered = push_runnable_image(&s, &tok, "alice.test/app", "tampered", "tampered").await;
    let good_record = manifest_record_uri(&alice, "app", &good);
    point_signature_elsewhere(
        &s,
        &tok,
        "alice.test/app",
        &d_tampered,
        &alice,
        &good_record,
    )
    .await;
    // Untrusted: the policy trusts only another identity for `strict`.
    let d_strict = push_runnable_image(&s, &tok, "alice.test/strict", "v1", "strict").await;
    let d_unsigned = push_runnable_image(&s, &tok, "alice.test/app", "unsigned", "unsigned").await;
    detach_registry_artifact(&s, &tok, "alice.test/app", &d_unsigned).await;
    let d_revoked = push_runnable_image(&s, &tok, "alice.test/app", "revoked", "revoked").await;
    let rkey =
        atcr_oci::records::manifest_rkey("app", &atcr_oci::Digest::parse(&d_revoked).unwrap());
    delete_record(&s, &alice, "io.atcr.manifest", &rkey).await;
    // An index of two platform images, pushed with `skopeo copy --all`.
    let layout = tempfile::tempdir().unwrap();
    let index_digest = mkimage_layout(layout.path(), 1, 2_000, true);
    skopeo_copy_ok(
        &[
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice.test:{PW}"),
        ],
        &format!("oci:{}:latest", layout.path().display()),
        &format!("docker://{}/alice.test/app:multi", s.host),
    )
    .await;
    push_runnable_image(&s, &tok, "alice.test/app", "plain", "plain").await;
    // containerd pulls through a proxy that keeps the access log.
    let proxy = Proxy::start(s.url.clone()).await;
    let (work, vdir) = verifier_dir();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1.0\npolicies:\n  - scope: \"{}/*/strict\"\n    trustedDIDs: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]\n  - scope: \"**\"\n",
            proxy.host
        ),
    )
    .unwrap();
    let settings_extra = format!("otherImages: deny\npolicy: {}\n", policy.display());
    let settings_path = settings(work.path(), &s, &proxy.host, &settings_extra);
    let state = work.path().join("k");
    let c = Containerd::up(&state, &vdir, &settings_path);
    let img = |t: &str| format!("{}/alice.test/app:{t}", proxy.host);

    // Signed: pulled (cold, then again with the verdict cache warm).
    let t = Instant::now();
    let out = c.pull(&img("v1"));
    let cold = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    assert!(c.pull(&img("v1")).status.success());
    let warm = t.elapsed();
    // By digest.
    let out = c.pull(&format!("{}/alice.test/app@{good}", proxy.host));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unsigned and revoked: blocked with the verifier's reason, and nothing
    // of theirs fetched.
    let strict = format!("{}/alice.test/strict:v1", proxy.host);
    for (image, digest, reason) in [
        (img("unsigned"), &d_unsigned, "no_signatures"),
        (img("revoked"), &d_revoked, "revoked"),
        (img("tampered"), &d_tampered, "digest_mismatch"),
        (strict, &d_strict, "untrusted_signer"),
    ] {
        let tag = image.as_str();
        let from = proxy.len();
        let out = c.pull(&image);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{tag} was pulled");
        assert!(
            e.contains("blocked pull") && e.contains(reason),
            "{tag}: {e}"
        );
        let content = String::from_utf8_lossy(&c.ctr(&["content", "ls", "-q"]).stdout).into_owned();
        assert!(
            !content.contains(digest.as_str()),
            "{tag}: its manifest was fetched"
        );
        // The registry's access log: containerd only resolved the tag.
        let asked = proxy.containerd_requests(from);
        assert!(!asked.is_empty(), "{tag}: containerd went elsewhere");
        assert!(
            asked
                .iter()
                .all(|(m, p)| m == "HEAD" && p.contains("/manifests/")),
            "{tag}: containerd fetched {asked:?}"
        );
    }
    // An image of another registry: the configured default (deny).
    let out = c.pull("127.0.0.1:1/other/app:v1");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a verified registry")
            || !out.status.success()
    );
    // The index: verified once, as a whole (with the index digest).
    let before = c.log().matches(&index_digest).count();
    let out = c.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--all-platforms",
        &img("multi"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = c
        .log()
        .lines()
        .filter(|l| l.contains("50-atcr") && l.contains("verified"))
        .filter(|l| l.contains("multi"))
        .count();
    assert_eq!(
        calls, 1,
        "the index was verified {calls} times ({before} mentions before)"
    );
    assert!(c.log().matches(&index_digest).count() > before);
    // A registry slower than the verifier's deadline: blocked in time (the
    // settings file is read on every pull).
    std::fs::write(
        &settings_path,
        std::fs::read_to_string(&settings_path).unwrap() + "deadlineMs: 1500\n",
    )
    .unwrap();
    proxy.slow.store(true, std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    let out = c.pull(&img("plain"));
    let took = t.elapsed();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pulled past a slow registry");
    assert!(e.contains("could not verify within"), "{e}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    proxy
        .slow
        .store(false, std::sync::atomic::Ordering::Relaxed);
    // The same pulls without the verifier (bin_dir is re-read on each pull).
    std::fs::remove_file(vdir.join("50-atcr")).unwrap();
    let t = Instant::now();
    assert!(c.pull(&img("plain")).status.success());
    let cold_plain = t.elapsed();
    let t = Instant::now();
    assert!(c.pull(&img("plain")).status.success());
    let warm_plain = t.elapsed();
    eprintln!(
        "containerd pull: with the verifier cold {cold:?} warm {warm:?}; without it cold {cold_plain:?} warm {warm_plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_fails_closed_within_the_deadline() {
    let s = start(&[]).await;
    let (alice, _, _) = owner_with_image(&s, "alice.test", PW, "pull,push", "late").await;
    // A PLC directory that never answers: the DID cannot be resolved in time.
    let (silent, _hold) = silent_host().await;
    let silent_url = format!("http://{silent}");
    let (work, vdir) = verifier_dir();
    let verify = work.path().join("verify.yaml");
    std::fs::write(
        &verify,
        format!("plcUrl: {silent_url}/plc\nplainHttpLoopback: true\n"),
    )
    .unwrap();
    let settings = work.path().join("settings.yaml");
    std::fs::write(
        &settings,
        format!(
            "registries: [\"{}\"]\nverifierConfig: {}\ndeadlineMs: 1500\n",
            s.host,
            verify.display()
        ),
    )
    .unwrap();
    let c = Containerd::up(&work.path().join("k"), &vdir, &settings);
    let t = Instant::now();
    let out = c.pull(&format!("{}/{}/app:v1", s.host, path_did(&alice)));
    let took = t.elapsed();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("could not verify within"), "{e}");
    // Decided well inside containerd's 10 s per-verifier timeout.
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// Runs the Ratify harness on `subject` with `config`; (exit code, merged output).
fn ratify(
    bin: &Path,
    plugins: &Path,
    dir: &Path,
    config: &serde_json::Value,
    desc: &serde_json::Value,
    subject: &str,
) -> (i32, String) {
    let cfg = dir.join("verifier.json");
    std::fs::write(&cfg, serde_json::to_vec(config).unwrap()).unwrap();
    let store = dir.join("store.json");
    std::fs::write(&store, r#"{"name":"oras","useHttp":true}"#).unwrap();
    let d = dir.join("desc.json");
    std::fs::write(&d, serde_json::to_vec(desc).unwrap()).unwrap();
    let out = Command::new(bin.join("ratify-exec-harness"))
        .arg("-plugin-dir")
        .arg(plugins)
        .arg("-config")
        .arg(&cfg)
        .arg("-store")
        .arg(&store)
        .arg("-desc")
        .arg(&d)
        .args(["-subject", subject, "-version", "1.0.0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratify_runs_the_plugin_as_ratify_does() {
    let s = start(&[]).await;
    let (alice, tok, good) = owner_with_image(&s, "alice.test", PW, "pull,push", "ratify").await;
    let bin = kit_install();
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(workspace_bin("atcr-ratify-verifier"), plugins.join("atcr")).unwrap();
    let verify = write_verifier_config(work.path(), &s);
    let art = signature_referrers(&s, &tok, "alice.test/app", &good).await;
    let desc = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": art[0],
        "size": 100, "artifactType": "application/vnd.atproto.signature.v1+json"});
    let config = |dids: &[&str]| {
        serde_json::json!({"name": "atcr", "artifactTypes": "application/vnd.atproto.signature.v1+json",
        "verifierConfig": verify.display().to_string(), "trustedDIDs": dids})
    };
    let subject = format!("{}/alice.test/app:v1", s.host);
    // Verified: isSuccess, the signer's details in extensions, and one JSON
    // line in all the plugin printed.
    let (code, out) = ratify(
        &bin,
        &plugins,
        work.path(),
        &config(&["owner"]),
        &desc,
        &subject,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"isSuccess\":true"), "{out}");
    // The signer of the artifact Ratify asked about, from the signed record.
    let kept = out
        .lines()
        .find_map(|l| l.strip_prefix("result as Ratify keeps it: "))
        .unwrap_or_else(|| panic!("{out}"));
    let kept: serde_json::Value = serde_json::from_str(kept).unwrap();
    let sig = &kept["extensions"]["signature"];
    assert_eq!(sig["did"], alice.as_str(), "{kept:#}");
    assert!(
        sig["commitCid"].is_string() && sig["signedAt"].is_string(),
        "{kept:#}"
    );
    assert_eq!(sig["artifact"], art[0].as_str());
    // Not trusted: isSuccess false with the reason in the message.
    let (code, out) = ratify(
        &bin,
        &plugins,
        work.path(),
        &config(&["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]),
        &desc,
        &subject,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("\"isSuccess\":false") && out.contains("untrusted_signer"),
        "{out}"
    );
    // A PDS that cannot be reached: a Ratify plugin error, not a crash.
    let mut broken = config(&["owner"]);
    let dead = work.path().join("dead.yaml");
    std::fs::write(
        &dead,
        "plcUrl: http://127.0.0.1:1/plc\nplainHttpLoopback: true\n",
    )
    .unwrap();
    broken["verifierConfig"] = dead.display().to_string().into();
    let (code, out) = ratify(
        &bin,
        &plugins,
        work.path(),
        &broken,
        &desc,
        &format!("{}/{}/app:v1", s.host, path_did(&alice)),
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("plugin failed") || out.contains("command failure"),
        "{out}"
    );
    // Bad config: a clear plugin error.
    let mut bad = config(&["owner"]);
    bad["trustedDIDs"] = serde_json::json!([1, 2]);
    let (code, out) = ratify(&bin, &plugins, work.path(), &bad, &desc, &subject);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("trustedDIDs"), "{out}");
}

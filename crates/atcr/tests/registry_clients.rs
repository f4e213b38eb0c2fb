//! Real clients against the registry: skopeo and podman (Debian), oras (the
//! ORAS Python SDK from PyPI), on local storage and on a real S3-compatible
//! server with presigned redirects. `scripts/registry-tools` installs them.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// The accounts' main password; clients log in with app passwords.
const MAIN_PW: &str = "main password, never given to clients";

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}

async fn skopeo_roundtrip(s: &Server, app: &str) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let digest = mkimage_layout(&src, 3, 200_000, false);
    let dest = format!("docker://{}/alice.test/app:v1", s.host);
    let creds = format!("alice.test:{app}");
    let src_ref = format!("oci:{}:latest", src.display());
    // In, with credentials, digests preserved.
    skopeo_copy_ok(
        &[
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
        ],
        &src_ref,
        &dest,
    )
    .await;
    // Out, anonymously, into another layout: byte-identical.
    let out = work.path().join("out");
    skopeo_copy_ok(
        &["--src-tls-verify=false"],
        &dest,
        &format!("oci:{}:latest", out.display()),
    )
    .await;
    assert_eq!(tree(&src), tree(&out), "the image came back byte-identical");
    let insp = ok(skopeo().args(["inspect", "--raw", "--tls-verify=false", &dest]));
    assert_eq!(sha256(insp.as_bytes()), digest);
    // The registry's signature artifact, found by the Referrers API, is
    // fetched and copied out with skopeo.
    let tok = token(
        s,
        Some(("alice.test", app)),
        &["repository:alice.test/app:pull"],
    )
    .await;
    let sig = signature_referrers(s, &tok, "alice.test/app", &digest).await[0].clone();
    let sig_ref = format!("docker://{}/alice.test/app@{sig}", s.host);
    let raw = ok(skopeo().args(["inspect", "--raw", "--tls-verify=false", &sig_ref]));
    assert_eq!(sha256(raw.as_bytes()), sig);
    assert!(raw.contains(&digest), "{raw}");
    let sig_out = work.path().join("sig");
    skopeo_copy_ok(
        &["--src-tls-verify=false"],
        &sig_ref,
        &format!("oci:{}:sig", sig_out.display()),
    )
    .await;
    // Wrong password: refused, nothing written.
    let bad = skopeo_copy(
        &[
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice.test:wrong",
        ],
        &src_ref,
        &format!("docker://{}/alice.test/app:bad", s.host),
    )
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unauthorized"));
    // Someone else's namespace: denied.
    let denied = skopeo_copy(
        &["--dest-tls-verify=false", "--dest-creds", &creds],
        &src_ref,
        &format!("docker://{}/bob.test/app:v1", s.host),
    )
    .await;
    assert!(!denied.status.success());
    let tags = ok(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/alice.test/app", s.host),
    ]));
    assert!(tags.contains("\"v1\"") && !tags.contains("bad"), "{tags}");
}

/// Creates alice and bob; returns an app password of alice's (what
/// `docker login` is given).
async fn with_accounts(s: &Server) -> String {
    let did = account(s, "alice.test", MAIN_PW).await;
    account(s, "bob.test", MAIN_PW).await;
    s.services
        .pds
        .as_ref()
        .unwrap()
        .create_app_password(&did, "registry")
        .await
        .unwrap()
        .password
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_in_and_out_byte_identical() {
    let s = start(&[]).await;
    let app = with_accounts(&s).await;
    skopeo_roundtrip(&s, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_on_s3_with_presigned_redirects() {
    let s3 = atcr_testkit::S3Server::start();
    let s = start(&[
        ("ATCR_STORAGE_BACKEND", "s3".into()),
        ("ATCR_STORAGE_S3_ENDPOINT", s3.endpoint.clone()),
        ("ATCR_STORAGE_S3_BUCKET", s3.bucket.clone()),
        ("ATCR_STORAGE_S3_ACCESS_KEY_ID", s3.access_key.clone()),
        ("ATCR_STORAGE_S3_SECRET_ACCESS_KEY", s3.secret_key.clone()),
        ("ATCR_STORAGE_S3_REDIRECT", "true".into()),
        ("ATCR_STORAGE_S3_PART_SIZE", (5 * 1024 * 1024).to_string()),
    ])
    .await;
    let app = with_accounts(&s).await;
    skopeo_roundtrip(&s, &app).await;
    // A blob GET is a 307 to a presigned URL on the S3 server, which serves it.
    let tok = token(&s, None, &["repository:alice.test/app:pull"]).await;
    let m: serde_json::Value = http()
        .get(format!("{}/v2/alice.test/app/manifests/v1", s.url))
        .bearer_auth(&tok)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = http()
        .get(format!("{}/v2/alice.test/app/blobs/{layer}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&s3.endpoint), "{loc}");
    assert!(loc.contains("X-Amz-Signature="));
    let body = http()
        .get(&loc)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&body), layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pushes_and_pulls() {
    let s = start(&[]).await;
    let app = with_accounts(&s).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    mkimage_layout(&src, 2, 100_000, false);
    ok(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("alice.test:{app}"),
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{}/alice.test/base:1", s.host),
    ]));
    let root = work.path().join("podman");
    let podman = move || {
        let mut c = Command::new("podman");
        c.args(["--root", &root.join("root").display().to_string()])
            .args(["--runroot", &root.join("run").display().to_string()])
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .env("REGISTRY_AUTH_FILE", root.join("auth.json"));
        c
    };
    std::fs::create_dir_all(work.path().join("podman")).unwrap();
    std::fs::write(work.path().join("podman/auth.json"), "{}").unwrap();
    let host = s.host.clone();
    let p = podman.clone();
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        ok(p().args([
            "pull",
            "--tls-verify=false",
            &format!("{host}/alice.test/base:1"),
        ]));
        ok(p().args([
            "login",
            "--tls-verify=false",
            "-u",
            "alice.test",
            "-p",
            &app2,
            &host,
        ]));
        ok(p().args([
            "push",
            "--tls-verify=false",
            &format!("{host}/alice.test/base:1"),
            &format!("{host}/alice.test/pushed:2"),
        ]));
        ok(p().args(["rmi", "-a", "-f"]));
        ok(p().args([
            "pull",
            "--tls-verify=false",
            &format!("{host}/alice.test/pushed:2"),
        ]));
        let images = ok(p().args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        assert!(images.contains("alice.test/pushed:2"), "{images}");
        // Pushing into bob's namespace is refused.
        let out = run(p().args([
            "push",
            "--tls-verify=false",
            &format!("{host}/alice.test/pushed:2"),
            &format!("{host}/bob.test/stolen:1"),
        ]));
        assert!(!out.status.success());
    })
    .await
    .unwrap();
    // The push left records in alice's PDS.
    let pds = s.services.pds.as_ref().unwrap();
    let did = pds.lookup_did("alice.test").await.unwrap();
    let (_, tag) = pds
        .get_record(&did, "io.atcr.tag", "pushed:2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tag["repository"], "pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_pulls_and_deletes_an_artifact() {
    let s = start(&[]).await;
    let app = with_accounts(&s).await;
    let tools = tools_dir();
    let work = tempfile::tempdir().unwrap();
    let (host, dir) = (s.host.clone(), work.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        ok(Command::new(tools.join("oras-venv/bin/python"))
            .arg(repo_root().join("crates/atcr/tests/support/oras_roundtrip.py"))
            .args([&host, "alice.test", &app, "alice.test/artifacts"])
            .arg(&dir))
    })
    .await
    .unwrap();
    assert!(out.contains("ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushed_images_verify_for_k256_and_p256_and_after_key_rotation() {
    let s = start(&[]).await;
    let pds = s.services.pds.as_ref().unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let digest = mkimage_layout(&src, 2, 50_000, false);
    for (handle, alg) in [
        ("kay.test", atcr_crypto::Algorithm::K256),
        ("pea.test", atcr_crypto::Algorithm::P256),
    ] {
        let pw = "skopeo-password-1";
        let did = pds
            .create_account(handle, Some(pw.into()), Some(alg))
            .await
            .unwrap()
            .did;
        skopeo_copy_ok(
            &[
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds",
                &format!("{handle}:{pw}"),
            ],
            &format!("oci:{}:latest", src.display()),
            &format!("docker://{}/{handle}/app:v1", s.host),
        )
        .await;
        let verifier = || atcr_verify::Verifier::new(verifier_config(&s, None)).unwrap();
        let image =
            atcr_verify::ImageRef::parse(&format!("{}/{}/app:v1", s.host, path_did(&did))).unwrap();
        let policy = atcr_verify::policy::TrustPolicy::owner_only();
        let r = verifier().verify(&image, &policy).await.unwrap();
        assert_eq!(r.decision, atcr_verify::Decision::Pass, "{handle}: {r:#?}");
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        // After the owner's key is rotated, the image still verifies against
        // the new DID document.
        pds.rotate_key(&did, None).await.unwrap();
        let r = verifier().verify(&image, &policy).await.unwrap();
        assert_eq!(
            r.decision,
            atcr_verify::Decision::Pass,
            "{handle} rotated: {r:#?}"
        );
    }
}

/// The README quick start, as a new user runs it: `atcr serve`, `atcr
/// account create`, a push by handle, then `atcr verifier-config` and
/// `atcr-verify --config` on the very name that was pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_ends_with_a_verified_image_by_handle() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("atcr-data");
    let port = atcr_testkit::free_port();
    let host = format!("127.0.0.1:{port}");
    let password = "quick start password";
    // As the README says: the server first, then the account, created
    // through the running server.
    let mut server = spawn(&data, port);
    wait_ready(&format!("http://{host}")).await;
    create_account(&data, port, "alice.test", password);
    let src = work.path().join("src");
    mkimage_layout(&src, 1, 10_000, false);
    skopeo_copy_ok(
        &[
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice.test:{password}"),
        ],
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{host}/alice.test/busybox:1"),
    )
    .await;
    let cfg = ok(atcr(&data, port).arg("verifier-config"));
    assert!(cfg.contains(&format!("plcUrl: http://{host}/plc")), "{cfg}");
    assert!(cfg.contains("domains: [\"test\"]"), "{cfg}");
    let cfg_path = work.path().join("verify.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // The atcr-verify binary (package atcr-verify-cli) sits beside atcr.
    let bin = workspace_bin("atcr-verify");
    let verify = |cfg: Option<&Path>| {
        let mut c = Command::new(&bin);
        c.env_remove("ATCR_VERIFY_CONFIG").env("HOME", work.path());
        if let Some(p) = cfg {
            c.arg("--config").arg(p);
        }
        c.arg(format!("{host}/alice.test/busybox:1"));
        run(&mut c)
    };
    let out = verify(Some(&cfg_path));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("VERIFIED {host}/alice.test/busybox:1")),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 valid, 1 trusted of 1 required"),
        "{stdout}"
    );
    // `export` verifies under --policy too (and still writes the bundle),
    // and the bundle verifies offline under it.
    let strict = work.path().join("strict.yaml");
    std::fs::write(
        &strict,
        "version: 1.0\npolicies:\n  - scope: \"**\"\n    minSignatures: 2\n",
    )
    .unwrap();
    let bundle = work.path().join("b.json");
    let mut c = Command::new(&bin);
    c.args(["export", "--config"])
        .arg(&cfg_path)
        .arg(format!("{host}/alice.test/busybox:1"))
        .arg("-o")
        .arg(&bundle)
        .arg("--policy")
        .arg(&strict);
    let out = run(&mut c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("1 valid, 1 trusted of 2 required"),
        "{stdout}"
    );
    assert!(bundle.exists());
    let mut c = Command::new(&bin);
    c.args(["verify", "--offline", "--bundle"])
        .arg(&bundle)
        .arg("--config")
        .arg(&cfg_path)
        .arg(format!("{host}/alice.test/busybox:1"));
    assert_eq!(run(&mut c).status.code(), Some(0));
    // The handle check stays bidirectional: a handle the server does not
    // know fails as an identity problem, never as verified.
    let mut c = Command::new(&bin);
    c.arg("--config")
        .arg(&cfg_path)
        .arg(format!("{host}/mallory.test/busybox:1"));
    let out = run(&mut c);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

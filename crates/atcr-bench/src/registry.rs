//! `atcr-bench registry`: drives any OCI registry over HTTP.
//!
//! * blob push (monolithic POST+PUT, and chunked PATCHes of `--chunk` MiB)
//!   and pull, for each of `--sizes` MiB; with `--ceiling-url`, the ceiling
//!   server too, rep by rep alternately (reported under `ceiling`);
//! * manifest PUT / GET / HEAD at concurrency 1, 8 and 32 (p50, p99, ops/s);
//! * image push and pull: 5 layers × 4 MiB + config + manifest, as clients do
//!   it (HEAD each blob first);
//! * peak server RSS, sampled every 10 ms from `/proc/<pid>/status` during
//!   each phase (`--pid`).
//!
//! Blob content is generated, not held: a 1 MiB pseudo-random block streamed
//! repeatedly behind a per-blob unique first block, so the client costs little
//! and memory stays flat on both sides. The digest is computed before the
//! clock starts. Token auth (the Docker flow) is used when the registry
//! answers `/v2/` with a Bearer challenge (`--user`, `--password`).
//!
//! `atcr-bench ceiling --listen ADDR --dir DIR` is the ceiling server: the
//! same upload protocol over ATCR's own blob store (the same hashing,
//! spooling, fsync and rename) and serving layer, with nothing else, so it
//! bounds ATCR's blob path from above on the machine it runs on.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) const MIB: u64 = 1024 * 1024;

/// The value after `name` in `args`.
pub(crate) fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    repo: String,
    creds: Option<(String, String)>,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Client {
    /// A client of `repo` at `base` logging in with `creds`.
    pub(crate) fn new(base: &str, repo: &str, creds: (String, String)) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            repo: repo.to_owned(),
            creds: Some(creds),
            token: tokio::sync::Mutex::new(None),
        }
    }

    async fn auth(&self) -> Result<Option<String>> {
        let Some((u, p)) = &self.creds else {
            return Ok(None);
        };
        let mut t = self.token.lock().await;
        if let Some((tok, at)) = &*t
            && at.elapsed() < Duration::from_secs(50)
        {
            return Ok(Some(tok.clone()));
        }
        let r = self.http.get(format!("{}/v2/", self.base)).send().await?;
        if r.status() != 401 {
            return Ok(None);
        }
        let ch = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let field = |k: &str| {
            ch.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_owned)
        };
        let realm = field("realm").context("no realm in the challenge")?;
        let service = field("service").unwrap_or_default();
        let v: serde_json::Value = self
            .http
            .get(realm)
            .query(&[
                ("service", service.as_str()),
                ("scope", &format!("repository:{}:pull,push", self.repo)),
            ])
            .basic_auth(u, Some(p))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let tok = v["token"].as_str().context("no token")?.to_owned();
        *t = Some((tok.clone(), Instant::now()));
        Ok(Some(tok))
    }

    pub(crate) async fn req(
        &self,
        m: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder> {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let mut b = self.http.request(m, url);
        if let Some(t) = self.auth().await? {
            b = b.bearer_auth(t);
        }
        Ok(b)
    }
}

/// A generated blob: `len` bytes, first MiB unique to `seed`.
#[derive(Clone)]
pub(crate) struct Blob {
    block: Bytes,
    head: Bytes,
    len: u64,
}

impl Blob {
    pub(crate) fn new(block: &Bytes, seed: u64, len: u64) -> Self {
        let mut head = block.to_vec();
        head[..8].copy_from_slice(&seed.to_le_bytes());
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        head[8..16].copy_from_slice(&t.to_le_bytes());
        Self {
            block: block.clone(),
            head: Bytes::from(head),
            len,
        }
    }
    /// Chunks of `[from, to)`.
    fn chunks(&self, from: u64, to: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
        let (block, head) = (self.block.clone(), self.head.clone());
        let mut at = from;
        std::iter::from_fn(move || {
            if at >= to {
                return None;
            }
            let i = at / MIB;
            let off = (at % MIB) as usize;
            let n = ((MIB - off as u64).min(to - at)) as usize;
            let src = if i == 0 { &head } else { &block };
            at += n as u64;
            Some(src.slice(off..off + n))
        })
    }
    pub(crate) fn digest(&self) -> String {
        let mut h = sha2::Sha256::new();
        for c in self.chunks(0, self.len) {
            h.update(&c);
        }
        format!("sha256:{}", hex(&h.finalize()))
    }
    fn body(&self, from: u64, to: u64) -> reqwest::Body {
        let it = self.chunks(from, to).map(Ok::<_, std::io::Error>);
        reqwest::Body::wrap_stream(futures_util::stream::iter(it))
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn location(base: &str, r: &reqwest::Response) -> Result<String> {
    let l = r
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_owned();
    Ok(if l.starts_with("http") {
        l
    } else {
        format!("{base}{l}")
    })
}

pub(crate) async fn push_blob(
    c: &Client,
    b: &Blob,
    digest: &str,
    chunk: Option<u64>,
) -> Result<()> {
    let r = c
        .req(
            reqwest::Method::POST,
            &format!("/v2/{}/blobs/uploads/", c.repo),
        )
        .await?
        .send()
        .await?;
    if r.status() != 202 {
        bail!("POST upload: {}", r.status());
    }
    let mut loc = location(&c.base, &r)?;
    let mut at = 0;
    if let Some(cs) = chunk {
        while at < b.len {
            let end = (at + cs).min(b.len);
            let r = c
                .req(reqwest::Method::PATCH, &loc)
                .await?
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{at}-{}", end - 1))
                .header("content-length", end - at)
                .body(b.body(at, end))
                .send()
                .await?;
            if r.status() != 202 {
                bail!("PATCH: {}", r.status());
            }
            loc = location(&c.base, &r)?;
            at = end;
        }
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"))
        .await?
        .header("content-type", "application/octet-stream")
        .header("content-length", b.len - at)
        .body(b.body(at, b.len))
        .send()
        .await?;
    if r.status() != 201 {
        bail!(
            "PUT upload: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn pull_blob(c: &Client, digest: &str) -> Result<u64> {
    let r = c
        .req(
            reqwest::Method::GET,
            &format!("/v2/{}/blobs/{digest}", c.repo),
        )
        .await?
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("GET blob: {}", r.status());
    }
    let mut s = r.bytes_stream();
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c?.len() as u64;
    }
    Ok(n)
}

/// GET or HEAD of a manifest by tag; the body is read to the end.
async fn get_manifest(c: &Client, m: reqwest::Method, tag: &str) -> Result<bytes::Bytes> {
    let r = c
        .req(m.clone(), &format!("/v2/{}/manifests/{tag}", c.repo))
        .await?
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await?;
    if r.status() != 200 {
        bail!("{m} manifest: {}", r.status());
    }
    Ok(r.bytes().await?)
}

/// Samples a process's resident set every 10 ms; `peak()` is the max seen.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(pid) = pid {
            let (p, s) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(k) = rss_kib(pid) {
                        p.fetch_max(k, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        Self { peak, stop }
    }
    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `p` quantile of sorted durations, in milliseconds.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs the registry benchmark; prints JSON results.
pub async fn run(args: &[String]) -> Result<()> {
    let base = arg(args, "--url")
        .context("--url is required")?
        .trim_end_matches('/')
        .to_owned();
    let repo = arg(args, "--repo").unwrap_or("bench/bench").to_owned();
    let creds = arg(args, "--user").map(|u| {
        (
            u.to_owned(),
            arg(args, "--password").unwrap_or("").to_owned(),
        )
    });
    let pid: Option<u32> = arg(args, "--pid").map(str::parse).transpose()?;
    let sizes: Vec<u64> = arg(args, "--sizes")
        .unwrap_or("1,64,512")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let chunk = arg(args, "--chunk").unwrap_or("16").parse::<u64>()? * MIB;
    let reps: usize = arg(args, "--reps").unwrap_or("3").parse()?;
    let phases: Vec<&str> = arg(args, "--phases")
        .unwrap_or("blobs,manifests,images")
        .split(',')
        .collect();
    let manifests_n: usize = arg(args, "--manifests").unwrap_or("256").parse()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(600))
        .build()?;
    // The ceiling server, measured rep by rep alternately with the registry
    // so both see the same machine: a bound from another moment of a noisy
    // run bounds nothing.
    let ceiling = arg(args, "--ceiling-url").map(|u| Client {
        http: http.clone(),
        base: u.trim_end_matches('/').to_owned(),
        repo: "bench/bench".into(),
        creds: None,
        token: tokio::sync::Mutex::new(None),
    });
    let c = Arc::new(Client {
        http,
        base,
        repo,
        creds,
        token: tokio::sync::Mutex::new(None),
    });
    let mut block = vec![0u8; MIB as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let block = Bytes::from(block);
    let mut seed = std::process::id() as u64 * 1_000_000;
    let mut results = serde_json::Map::new();

    if phases.contains(&"blobs") {
        // Untimed warm-up (page cache, allocator, connections): the first
        // server of a run would otherwise pay it inside its figures.
        for size in [1, 1, 1, 16] {
            seed += 1;
            let b = Blob::new(&block, seed, size * MIB);
            let d = b.digest();
            for cl in std::iter::once(c.as_ref()).chain(ceiling.as_ref()) {
                push_blob(cl, &b, &d, None).await?;
                pull_blob(cl, &d).await?;
            }
        }
        let mut bound = serde_json::Map::new();
        for &size in &sizes {
            for (mode, ch) in [("monolithic", None), ("chunked", Some(chunk))] {
                let (mut push, mut pull) = (vec![], vec![]);
                let (mut cpush, mut cpull) = (vec![], vec![]);
                let rss = RssSampler::start(pid);
                // Small blobs take milliseconds: more runs for a stable median.
                let runs = if size <= 8 { reps.max(20) } else { reps };
                for rep in 0..runs {
                    seed += 1;
                    let b = Blob::new(&block, seed, size * MIB);
                    let d = b.digest();
                    let mut order: Vec<_> = std::iter::once((c.as_ref(), &mut push, &mut pull))
                        .chain(ceiling.as_ref().map(|cl| (cl, &mut cpush, &mut cpull)))
                        .collect();
                    // Who goes first alternates, so neither gets the warmer turn.
                    if rep % 2 == 1 {
                        order.reverse();
                    }
                    for (cl, push, pull) in order {
                        let t = Instant::now();
                        push_blob(cl, &b, &d, ch).await?;
                        push.push(t.elapsed());
                        let t = Instant::now();
                        let n = pull_blob(cl, &d).await?;
                        pull.push(t.elapsed());
                        if n != b.len {
                            bail!("pulled {n} bytes, pushed {}", b.len);
                        }
                    }
                }
                let mbps = |v: &[Duration]| {
                    let mut s: Vec<f64> = v
                        .iter()
                        .map(|d| (size * MIB) as f64 / MIB as f64 / d.as_secs_f64())
                        .collect();
                    s.sort_by(f64::total_cmp);
                    s.get(s.len() / 2).copied().unwrap_or(0.0)
                };
                results.insert(
                    format!("blob_{size}MiB_{mode}"),
                    json!({"push_MiBps": mbps(&push), "pull_MiBps": mbps(&pull), "peak_rss_MiB": rss.peak_mib()}),
                );
                if ceiling.is_some() {
                    bound.insert(
                        format!("blob_{size}MiB_{mode}"),
                        json!({"push_MiBps": mbps(&cpush), "pull_MiBps": mbps(&cpull)}),
                    );
                }
                eprintln!(
                    "blob {size} MiB {mode}: push {:.0} MiB/s, pull {:.0} MiB/s, peak RSS {:.0} MiB",
                    mbps(&push),
                    mbps(&pull),
                    rss.peak_mib()
                );
            }
        }
        if ceiling.is_some() {
            results.insert("ceiling".into(), serde_json::Value::Object(bound));
        }
    }
    if phases.contains(&"manifests") {
        // One config blob; manifests made unique by an annotation.
        seed += 1;
        let cfg = Blob::new(&block, seed, 1024);
        let cd = cfg.digest();
        push_blob(&c, &cfg, &cd, None).await?;
        for conc in [1usize, 8, 32] {
            let rss = RssSampler::start(pid);
            let n = manifests_n.max(conc);
            let next = Arc::new(AtomicU64::new(0));
            let run_id = seed;
            let mut tasks = vec![];
            let t0 = Instant::now();
            for _ in 0..conc {
                let (c, next, cd) = (c.clone(), next.clone(), cd.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = (vec![], vec![], vec![]);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= n {
                            return Ok::<_, anyhow::Error>(lat);
                        }
                        let m = serde_json::to_vec(&json!({
                            "schemaVersion": 2,
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 1024},
                            "layers": [],
                            "annotations": {"bench": format!("{run_id}-{conc}-{i}")},
                        }))?;
                        let tag = format!("c{conc}-{i}");
                        let t = Instant::now();
                        let r = c
                            .req(reqwest::Method::PUT, &format!("/v2/{}/manifests/{tag}", c.repo))
                            .await?
                            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                            .body(m)
                            .send()
                            .await?;
                        if r.status() != 201 {
                            bail!("PUT manifest: {}", r.status());
                        }
                        lat.0.push(t.elapsed());
                        let t = Instant::now();
                        get_manifest(&c, reqwest::Method::GET, &tag).await?;
                        lat.1.push(t.elapsed());
                        let t = Instant::now();
                        get_manifest(&c, reqwest::Method::HEAD, &tag).await?;
                        lat.2.push(t.elapsed());
                    }
                }));
            }
            let (mut put, mut get, mut head) = (vec![], vec![], vec![]);
            for t in tasks {
                let (a, b, h) = t.await??;
                put.extend(a);
                get.extend(b);
                head.extend(h);
            }
            let wall = t0.elapsed();
            for v in [&mut put, &mut get, &mut head] {
                v.sort();
            }
            let sum = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>();
            let ops = |v: &[Duration]| v.len() as f64 * conc as f64 / sum(v).max(1e-9);
            let entry = json!({
                "put": {"p50_ms": pct(&put, 0.5), "p99_ms": pct(&put, 0.99), "ops_per_s": ops(&put)},
                "get": {"p50_ms": pct(&get, 0.5), "p99_ms": pct(&get, 0.99), "ops_per_s": ops(&get)},
                "head": {"p50_ms": pct(&head, 0.5), "p99_ms": pct(&head, 0.99), "ops_per_s": ops(&head)},
                "wall_s": wall.as_secs_f64(),
                "peak_rss_MiB": rss.peak_mib(),
            });
            eprintln!("manifests c={conc}: {entry}");
            results.insert(format!("manifests_c{conc}"), entry);
        }
    }

    if phases.contains(&"images") {
        let mut push = vec![];
        let mut pull = vec![];
        let rss = RssSampler::start(pid);
        for rep in 0..reps.max(3) {
            let mut blobs = vec![];
            for _ in 0..6 {
                seed += 1;
                let b = Blob::new(&block, seed, 4 * MIB);
                let d = b.digest();
                blobs.push((b, d));
            }
            let m = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].1, "size": 4 * MIB},
                "layers": blobs[1..].iter().map(|(_, d)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 4 * MIB})).collect::<Vec<_>>(),
            }))?;
            let tag = format!("img-{seed}-{rep}");
            let t = Instant::now();
            for (b, d) in &blobs {
                let r = c
                    .req(reqwest::Method::HEAD, &format!("/v2/{}/blobs/{d}", c.repo))
                    .await?
                    .send()
                    .await?;
                if r.status() == 404 {
                    push_blob(&c, b, d, None).await?;
                }
            }
            let r = c
                .req(
                    reqwest::Method::PUT,
                    &format!("/v2/{}/manifests/{tag}", c.repo),
                )
                .await?
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(m)
                .send()
                .await?;
            if r.status() != 201 {
                bail!("PUT image manifest: {}", r.status());
            }
            push.push(t.elapsed());
            let t = Instant::now();
            let mv: serde_json::Value =
                serde_json::from_slice(&get_manifest(&c, reqwest::Method::GET, &tag).await?)?;
            let mut ds = vec![mv["config"]["digest"].as_str().unwrap_or("").to_owned()];
            for l in mv["layers"].as_array().into_iter().flatten() {
                ds.push(l["digest"].as_str().unwrap_or("").to_owned());
            }
            for d in ds {
                pull_blob(&c, &d).await?;
            }
            pull.push(t.elapsed());
        }
        push.sort();
        pull.sort();
        let entry = json!({
            "push_p50_ms": pct(&push, 0.5), "push_p99_ms": pct(&push, 0.99),
            "pull_p50_ms": pct(&pull, 0.5), "pull_p99_ms": pct(&pull, 0.99),
            "peak_rss_MiB": rss.peak_mib(),
        });
        eprintln!("image 5x4MiB: {entry}");
        results.insert("image_5x4MiB".into(), entry);
    }
    if let Some(pid) = pid
        && let Some(k) = rss_kib(pid)
    {
        results.insert("final_rss_MiB".into(), json!(k as f64 / 1024.0));
    }
    println!("{}", serde_json::Value::Object(results));
    Ok(())
}

/// The ceiling server: POST/PATCH/PUT uploads and GETs over ATCR's blob
/// store in DIR, with upload sessions in memory.
pub async fn ceiling(args: &[String]) -> Result<()> {
    use atcr_blobstore::{BlobRead, BlobStore, StoreConfig, UploadState};
    use atcr_oci::{Digest, DigestAlgorithm};
    use axum::body::Body;
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use std::collections::HashMap;

    let listen = arg(args, "--listen").unwrap_or("127.0.0.1:5999").to_owned();
    let dir = std::path::PathBuf::from(arg(args, "--dir").context("--dir is required")?);
    std::fs::create_dir_all(&dir)?;
    // ATCR's own blob store: the same streamed hashing, spooling, fsync and
    // rename as the registry, and nothing else (no auth, no index, no
    // session persistence, no records), so it bounds the blob path from
    // above. Sessions live in memory.
    let store = BlobStore::open(&StoreConfig::Local(dir)).context("blob store")?;
    type St = Arc<(BlobStore, std::sync::Mutex<HashMap<String, UploadState>>)>;
    let st: St = Arc::new((store, std::sync::Mutex::new(HashMap::new())));

    fn fail(e: impl std::fmt::Display) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
    }
    fn take(st: &St, id: &str) -> Option<UploadState> {
        st.1.lock().ok()?.remove(id)
    }
    async fn append(st: &St, id: &str, body: Body) -> Result<UploadState, Response> {
        let mut up = take(st, id).ok_or_else(|| StatusCode::NOT_FOUND.into_response())?;
        st.0.append(&mut up, body.into_data_stream())
            .await
            .map_err(fail)?;
        Ok(up)
    }
    async fn start(State(st): State<St>) -> Response {
        let id = format!("{:x}", rand_id());
        match st.0.begin(&id, DigestAlgorithm::Sha256).await {
            Ok(up) => {
                if let Ok(mut m) = st.1.lock() {
                    m.insert(id.clone(), up);
                }
                (StatusCode::ACCEPTED, [("location", format!("/up/{id}"))]).into_response()
            }
            Err(e) => fail(e),
        }
    }
    async fn patch(State(st): State<St>, Path(id): Path<String>, body: Body) -> Response {
        match append(&st, &id, body).await {
            Ok(up) => {
                if let Ok(mut m) = st.1.lock() {
                    m.insert(id.clone(), up);
                }
                (StatusCode::ACCEPTED, [("location", format!("/up/{id}"))]).into_response()
            }
            Err(r) => r,
        }
    }
    async fn put(
        State(st): State<St>,
        Path(id): Path<String>,
        Query(q): Query<HashMap<String, String>>,
        body: Body,
    ) -> Response {
        let Some(Ok(d)) = q.get("digest").map(|d| Digest::parse(d)) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let up = match append(&st, &id, body).await {
            Ok(up) => up,
            Err(r) => return r,
        };
        match st.0.finish(up, &d).await {
            Ok(_) => StatusCode::CREATED.into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    async fn fetch(st: &St, d: &str) -> Response {
        let Ok(d) = Digest::parse(d) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        match st.0.read(&d, None, false).await {
            Ok(BlobRead::Stream { body, len }) => Response::builder()
                .header("content-length", len)
                .body(Body::from_stream(body))
                .unwrap_or_default(),
            Ok(BlobRead::Redirect(_)) | Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    // Names contain '/', so /v2/ paths are dispatched by suffix.
    async fn v2(
        State(st): State<St>,
        method: axum::http::Method,
        uri: axum::http::Uri,
    ) -> Response {
        let p = uri.path();
        if method == axum::http::Method::POST && p.ends_with("/blobs/uploads/") {
            return start(State(st)).await;
        }
        if method == axum::http::Method::GET
            && let Some((_, d)) = p.rsplit_once("/blobs/")
        {
            return fetch(&st, d).await;
        }
        StatusCode::NOT_FOUND.into_response()
    }
    let app = axum::Router::new()
        .route("/v2/{*rest}", axum::routing::any(v2))
        .route("/up/{id}", axum::routing::patch(patch).put(put))
        .route("/v2/", get(|| async { "{}" }))
        .with_state(st);
    let l = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ceiling server on {}", l.local_addr()?);
    // Served like ATCR (same accept loop, limits and body handling).
    atcr_serve::serve(
        l,
        app,
        atcr_serve::Limits::default(),
        None,
        std::future::pending(),
    )
    .await;
    Ok(())
}

pub(crate) fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    u128::from(h.finish()) << 64 | u128::from(h.finish().rotate_left(17))
}

/// Pushes one small image (1 KiB config, one 64 KiB layer) to `repo:tag`;
/// returns its manifest digest. Used to set up the verification benchmark.
pub async fn push_small_image(
    base: &str,
    repo: &str,
    creds: (String, String),
    tag: &str,
) -> Result<String> {
    let c = Client {
        http: reqwest::Client::new(),
        base: base.trim_end_matches('/').to_owned(),
        repo: repo.to_owned(),
        creds: Some(creds),
        token: tokio::sync::Mutex::new(None),
    };
    let block = Bytes::from(vec![7u8; MIB as usize]);
    let seed = rand_id() as u64;
    let config = Blob::new(&block, seed, 1024);
    let layer = Blob::new(&block, seed + 1, 64 * 1024);
    let (cd, ld) = (config.digest(), layer.digest());
    push_blob(&c, &config, &cd, None).await?;
    push_blob(&c, &layer, &ld, None).await?;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 1024},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": 64 * 1024}],
    }))?;
    let r = c
        .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .await?
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await?;
    if r.status() != 201 {
        bail!("PUT manifest: {}", r.status());
    }
    Ok(format!("sha256:{}", hex(&sha2::Sha256::digest(&m))))
}

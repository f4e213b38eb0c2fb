//! `atcr-bench gc`: garbage-collection throughput on a store of N garbage
//! blobs, and push throughput while GC runs against the same pushes
//! without GC.
//!
//! Drives a running `atcr serve` (started with a short `gc.grace_secs` and
//! `gc.interval_secs = 0`, as `scripts/bench-gc` does) over HTTP and its
//! `atcr gc --json` over the admin socket:
//! 1. fill: N unique blobs of K KiB that no manifest references;
//! 2. GC alone: blobs/s and bytes/s reclaimed;
//! 3. fill again; push small images (1 KiB config, 64 KiB layer, manifest)
//!    at concurrency C for the length of a GC run without GC (baseline),
//!    then during a GC run: images/s in each window.

use crate::registry::{Blob, Client, MIB, hex, push_blob, rand_id};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    crate::registry::arg(args, name).map(str::to_owned)
}

/// Pushes `n` unique blobs of `kib` KiB into the client's repository.
async fn fill(c: &Client, n: usize, kib: u64) -> Result<()> {
    let block = Bytes::from(vec![3u8; MIB as usize]);
    let base = rand_id() as u64;
    let results: Vec<Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let b = Blob::new(&block, base.wrapping_add(i as u64), kib * 1024);
            async move {
                let d = b.digest();
                push_blob(c, &b, &d, None).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One small image (config, layer, manifest by tag).
async fn push_image(c: &Client, repo: &str, block: &Bytes) -> Result<()> {
    let seed = rand_id() as u64;
    let config = Blob::new(block, seed, 1024);
    let layer = Blob::new(block, seed.wrapping_add(1), 64 * 1024);
    let (cd, ld) = (config.digest(), layer.digest());
    push_blob(c, &config, &cd, None).await?;
    push_blob(c, &layer, &ld, None).await?;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 1024},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": 64 * 1024}],
    }))?;
    let tag = format!("t{}", &hex(&sha2::Sha256::digest(&m))[..12]);
    let r = c
        .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .await?
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m)
        .send()
        .await?;
    if r.status() != 201 {
        bail!("PUT manifest: {}", r.status());
    }
    Ok(())
}

/// Pushes images at `conc` until `stop`; counts completed pushes.
async fn push_until(
    c: Arc<Client>,
    repo: String,
    conc: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Result<()> {
    let block = Bytes::from(vec![5u8; MIB as usize]);
    let workers = (0..conc).map(|_| {
        let (c, repo, stop, done, block) = (
            c.clone(),
            repo.clone(),
            stop.clone(),
            done.clone(),
            block.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                push_image(&c, &repo, &block).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(())
}

async fn run_gc(atcr: &str) -> Result<serde_json::Value> {
    let out = tokio::process::Command::new(atcr)
        .args(["gc", "--json"])
        .output()
        .await
        .context("atcr gc")?;
    if !out.status.success() {
        bail!("atcr gc: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `atcr-bench gc --url URL --user U --password P --atcr BIN [--blobs N]
/// [--kib K] [--concurrency C] [--grace-wait-ms MS]`.
pub async fn run(args: &[String]) -> Result<()> {
    let url = arg(args, "--url").context("--url")?;
    let user = arg(args, "--user").context("--user")?;
    let password = arg(args, "--password").context("--password")?;
    let atcr = arg(args, "--atcr").context("--atcr (path of the atcr binary)")?;
    let n = crate::flag(args, "--blobs", 10_000)?;
    let kib = crate::flag(args, "--kib", 16)? as u64;
    let conc = crate::flag(args, "--concurrency", 8)?;
    let grace = Duration::from_millis(crate::flag(args, "--grace-wait-ms", 2100)? as u64);
    let creds = (user.clone(), password);
    let junk = Client::new(&url, &format!("{user}/junk"), creds.clone());
    let images_repo = format!("{user}/images");
    let images = Arc::new(Client::new(&url, &images_repo, creds));

    // GC alone.
    let t = Instant::now();
    fill(&junk, n, kib).await?;
    let fill_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(grace).await;
    let alone = run_gc(&atcr).await?;
    let secs = |r: &serde_json::Value| r["seconds"].as_f64().unwrap_or(f64::NAN);
    let blobs = |r: &serde_json::Value| r["blobs_reclaimed"].as_u64().unwrap_or(0);
    let bytes = |r: &serde_json::Value| r["bytes_reclaimed"].as_u64().unwrap_or(0);
    if blobs(&alone) < n as u64 {
        bail!("GC reclaimed {} of {n} garbage blobs", blobs(&alone));
    }

    // Pushes with and without GC, over windows of the same length.
    fill(&junk, n, kib).await?;
    tokio::time::sleep(grace).await;
    let window = Duration::from_secs_f64(secs(&alone).max(1.0));
    let measure = |gc: bool| {
        let (images, repo, atcr) = (images.clone(), images_repo.clone(), atcr.clone());
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicUsize::new(0));
            let pusher = tokio::spawn(push_until(images, repo, conc, stop.clone(), done.clone()));
            // Warm up (tokens, connections) before the window.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = done.load(Ordering::Relaxed);
            let t = Instant::now();
            let report = if gc {
                Some(run_gc(&atcr).await?)
            } else {
                tokio::time::sleep(window).await;
                None
            };
            let el = t.elapsed();
            let pushed = done.load(Ordering::Relaxed) - before;
            stop.store(true, Ordering::Relaxed);
            pusher.await??;
            Ok::<_, anyhow::Error>((pushed as f64 / el.as_secs_f64(), el.as_secs_f64(), report))
        }
    };
    let (base_rate, base_s, _) = measure(false).await?;
    let (gc_rate, gc_s, under_load) = measure(true).await?;
    let under_load = under_load.context("no GC report")?;
    let out = json!({
        "blobs": n, "blob_kib": kib, "fill_seconds": fill_s,
        "gc_alone": {
            "seconds": secs(&alone), "blobs": blobs(&alone), "bytes": bytes(&alone),
            "blobs_per_s": blobs(&alone) as f64 / secs(&alone),
            "mb_per_s": bytes(&alone) as f64 / 1e6 / secs(&alone),
        },
        "gc_during_pushes": {
            "seconds": secs(&under_load), "blobs": blobs(&under_load),
            "blobs_per_s": blobs(&under_load) as f64 / secs(&under_load),
            "mb_per_s": bytes(&under_load) as f64 / 1e6 / secs(&under_load),
        },
        "pushes": {
            "concurrency": conc,
            "images_per_s_without_gc": base_rate, "window_without_gc_s": base_s,
            "images_per_s_during_gc": gc_rate, "window_during_gc_s": gc_s,
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

//! `atcr-bench web`: the web UI's time to first byte and page weight over a
//! populated index, against a running `atcr serve` (as `scripts/bench-web`
//! starts it):
//! 1. seeds R repositories of T tags each, spread over the given accounts
//!    (one small image per repository, T distinct manifests tagged in it);
//! 2. asks each page S times in sequence (after one warm-up request that
//!    also starts its badges) and reports p50/p99 time to the response's
//!    headers and to its last byte, and the page's bytes.

use crate::registry::{Client, arg, hex, pct};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest as _;
use std::time::{Duration, Instant};

/// Pushes a blob in one `POST …?digest=` (monolithic upload).
async fn put_blob(c: &Client, repo: &str, bytes: &[u8]) -> Result<String> {
    let d = format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)));
    let r = c
        .req(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        )
        .await?
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await?;
    if r.status() != 201 {
        bail!("blob upload: {}", r.status());
    }
    Ok(d)
}

/// One repository: a config and a layer, then `tags` manifests that differ
/// in an annotation, each tagged. The digest of the last.
async fn seed_repo(
    base: &str,
    user: &str,
    password: &str,
    repo: &str,
    tags: usize,
) -> Result<String> {
    let c = Client::new(base, repo, (user.to_owned(), password.to_owned()));
    let cfg = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}, "repo": repo});
    let cfg = serde_json::to_vec(&cfg)?;
    let layer = format!("layer of {repo}").repeat(64).into_bytes();
    let (cd, ld) = (
        put_blob(&c, repo, &cfg).await?,
        put_blob(&c, repo, &layer).await?,
    );
    let mut last = String::new();
    for t in 0..tags {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
            "annotations": {"org.opencontainers.image.description": format!("{repo} build {t}")},
        }))?;
        let r = c
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/v{t}"))
            .await?
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(m.clone())
            .send()
            .await?;
        if r.status() != 201 {
            bail!("PUT manifest {repo}:v{t}: {}", r.status());
        }
        last = format!("sha256:{}", hex(&sha2::Sha256::digest(&m)));
    }
    Ok(last)
}

/// `atcr-bench web --url URL --users A,B,… --password P [--repos R]
/// [--tags T] [--samples S]`.
pub async fn run(args: &[String]) -> Result<()> {
    let url = arg(args, "--url")
        .context("--url")?
        .trim_end_matches('/')
        .to_owned();
    let users: Vec<String> = arg(args, "--users")
        .context("--users")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let password = arg(args, "--password").context("--password")?.to_owned();
    let repos: usize = arg(args, "--repos").unwrap_or("1000").parse()?;
    let tags: usize = arg(args, "--tags").unwrap_or("10000").parse()?;
    let samples: usize = arg(args, "--samples").unwrap_or("200").parse()?;
    let per_repo = (tags / repos.max(1)).max(1);

    // 1. Seed.
    let t = Instant::now();
    let seeded: Vec<Result<(String, String)>> = futures_util::stream::iter(0..repos)
        .map(|i| {
            let (url, user, password) = (
                url.clone(),
                users[i % users.len()].clone(),
                password.clone(),
            );
            async move {
                let repo = format!("{user}/repo-{i:04}");
                let d = seed_repo(&url, &user, &password, &repo, per_repo).await?;
                Ok((repo, d))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let seeded = seeded.into_iter().collect::<Result<Vec<_>>>()?;
    let seed_s = t.elapsed().as_secs_f64();
    let (repo, digest) = seeded
        .iter()
        .find(|(r, _)| r.ends_with(&format!("repo-{:04}", repos / 2)))
        .cloned()
        .context("no middle repository")?;
    let owner = users[(repos / 2) % users.len()].clone();
    let short = repo.rsplit('/').next().unwrap_or("repo");

    // 2. Pages.
    let pages = [
        ("home", "/".to_owned()),
        ("search", format!("/search?q={short}")),
        ("owner", format!("/u/{owner}")),
        ("repository", format!("/r/{repo}")),
        ("manifest", format!("/r/{repo}/-/manifest/{digest}")),
        ("signin", "/signin".to_owned()),
        ("api repository", format!("/api/v1/repositories/{repo}")),
        ("api search", format!("/api/v1/search?q={short}")),
    ];
    let http = reqwest::Client::new();
    let mut out = vec![];
    for (name, path) in pages {
        let u = format!("{url}{path}");
        http.get(&u).send().await?.bytes().await?;
        // Let the warm-up's badges settle, as a visitor's second look would.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut ttfb, mut total, mut bytes) = (vec![], vec![], 0);
        for _ in 0..samples {
            let t = Instant::now();
            let r = http.get(&u).send().await?;
            ttfb.push(t.elapsed());
            if !r.status().is_success() {
                bail!("{path}: {}", r.status());
            }
            bytes = r.bytes().await?.len();
            total.push(t.elapsed());
        }
        ttfb.sort();
        total.sort();
        out.push(json!({
            "page": name, "path": path, "bytes": bytes,
            "ttfb_ms": {"p50": pct(&ttfb, 0.5), "p99": pct(&ttfb, 0.99)},
            "total_ms": {"p50": pct(&total, 0.5), "p99": pct(&total, 0.99)},
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "repositories": repos, "tags": repos * per_repo, "owners": users.len(),
            "seed_seconds": seed_s, "samples": samples, "pages": out,
        }))?
    );
    Ok(())
}

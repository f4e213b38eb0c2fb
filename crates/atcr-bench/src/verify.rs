//! `atcr-bench verify`: verification latency and throughput against a
//! running ATCR server (registry, PDS and PLC over loopback).
//!
//! * cold: a new verifier per verification (no DID document, connection or
//!   result reuse): p50/p99 latency;
//! * warm: one verifier with its result cache, C concurrent callers:
//!   verifications per second (and p50/p99).

use crate::registry::{arg, pct, push_small_image};
use anyhow::{Context, Result, bail};
use atcr_verify::oci::Credentials;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Verifier, VerifierConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the benchmark; prints JSON.
pub async fn run(args: &[String]) -> Result<()> {
    let url = arg(args, "--url")
        .context("--url is required")?
        .trim_end_matches('/');
    let user = arg(args, "--user").context("--user is required")?;
    let password = arg(args, "--password").context("--password is required")?;
    let cold_n: usize = arg(args, "--cold").unwrap_or("200").parse()?;
    let warm_n: usize = arg(args, "--warm").unwrap_or("200000").parse()?;
    let conc: usize = arg(args, "--concurrency").unwrap_or("8").parse()?;
    let host = url.split_once("://").map_or(url, |(_, h)| h).to_owned();
    let did = {
        let v: serde_json::Value = reqwest::get(format!(
            "{url}/xrpc/com.atproto.identity.resolveHandle?handle={user}"
        ))
        .await?
        .json()
        .await?;
        v["did"].as_str().context("resolveHandle")?.to_owned()
    };
    let repo = format!("{user}/verify-bench");
    push_small_image(url, &repo, (user.into(), password.into()), "v1").await?;
    let image = ImageRef::parse(&format!(
        "{host}/{}/verify-bench:v1",
        atcr_oci::records::path_safe_did(&atcr_syntax::Did::new(&did)?)
    ))?;
    let cfg = |cache: Option<Duration>| VerifierConfig {
        identity: atcr_verify::ResolverConfig {
            plc_url: format!("{url}/plc").parse().expect("URL"),
            allow_plain_http: true,
            ..Default::default()
        },
        plain_http_loopback: true,
        credentials: vec![(
            host.clone(),
            Credentials {
                username: user.into(),
                password: password.into(),
            },
        )],
        cache_ttl: cache,
        ..Default::default()
    };
    let policy = TrustPolicy::owner_only();

    // Cold: a new verifier each time, so nothing is reused: no DID document,
    // registry token or connection.
    let mut cold = Vec::with_capacity(cold_n);
    let mut setup = Vec::with_capacity(cold_n);
    for _ in 0..cold_n {
        let t = Instant::now();
        let v = Verifier::new(cfg(None))?;
        setup.push(t.elapsed());
        let r = v.verify(&image, &policy).await?;
        cold.push(t.elapsed());
        if r.decision != Decision::Pass {
            bail!("verification failed: {:?}", r.reasons);
        }
    }
    cold.sort();
    setup.sort();
    // Uncached: one verifier whose caches are off (every DID document, tag
    // record, artifact and proof fetched again), connections and registry
    // token reused.
    let mut uncached_cfg = cfg(None);
    uncached_cfg.identity.cache_ttl = Duration::ZERO;
    let v = Verifier::new(uncached_cfg)?;
    let mut uncached = Vec::with_capacity(cold_n);
    for _ in 0..cold_n {
        let t = Instant::now();
        v.verify(&image, &policy).await?;
        uncached.push(t.elapsed());
    }
    uncached.sort();

    let v = Arc::new(Verifier::new(cfg(Some(Duration::from_secs(300))))?);
    v.verify(&image, &policy).await?;
    let t = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conc {
        let (v, image, policy) = (v.clone(), image.clone(), policy.clone());
        let n = warm_n / conc;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                let r = v.verify(&image, &policy).await?;
                lat.push(s.elapsed());
                if r.decision != Decision::Pass {
                    bail!("warm verification failed");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut warm = vec![];
    for t in tasks {
        warm.extend(t.await??);
    }
    let elapsed = t.elapsed();
    warm.sort();
    let out = json!({
        "image": image.to_string(),
        "cold": {"n": cold_n, "p50_ms": pct(&cold, 0.5), "p99_ms": pct(&cold, 0.99),
                 "of_which_setup_p50_ms": pct(&setup, 0.5)},
        "uncached": {"n": cold_n, "p50_ms": pct(&uncached, 0.5), "p99_ms": pct(&uncached, 0.99)},
        "warm": {"n": warm.len(), "concurrency": conc,
                 "per_second": warm.len() as f64 / elapsed.as_secs_f64(),
                 "p50_us": pct(&warm, 0.5) * 1000.0, "p99_us": pct(&warm, 0.99) * 1000.0},
    });
    println!("{out}");
    Ok(())
}

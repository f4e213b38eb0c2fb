//! `atcr-bench service`: the verification service (`atcr-verify serve`)
//! against a running ATCR registry, over loopback.
//!
//! * warm `/validate`: AdmissionReviews per second at concurrency C, p50/p99;
//! * cold: a Pod of 8 distinct images against a service whose verdict cache
//!   is off (`--cold-service`), p50/p99;
//! * 8 containers of one image: how many verifications (from `/metrics`);
//! * `/provide` with 100 cached keys: p50/p99;
//! * RSS of the service (`--pid`) after N distinct cached verdicts.

use crate::registry::{arg, pct, push_small_image};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::time::Instant;

fn review(images: &[String]) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
        .collect();
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "bench", "name": "p", "operation": "CREATE",
            "object": {"spec": {"containers": containers}}}}),
    )
    .unwrap_or_default()
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Value> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    Ok(r.json().await?)
}

async fn misses(http: &reqwest::Client, service: &str) -> Result<u64> {
    let m = http
        .get(format!("{service}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(m.lines()
        .find_map(|l| l.strip_prefix("atcr_verify_cache_lookups{outcome=\"miss\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

fn rss_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Tags the manifest `repo:v1` as each of `t0..tN`, 16 at a time.
async fn tag_many(base: &str, repo: &str, creds: (&str, &str), tags: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let tok: Value = http
        .get(format!("{base}/auth/token"))
        .query(&[("scope", format!("repository:{repo}:pull,push"))])
        .basic_auth(creds.0, Some(creds.1))
        .send()
        .await?
        .json()
        .await?;
    let tok = tok["token"].as_str().context("token")?.to_owned();
    let manifest = http
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .bearer_auth(&tok)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let results: Vec<Result<()>> = futures_util::stream::iter(0..tags)
        .map(|i| {
            let (http, tok, m) = (http.clone(), tok.clone(), manifest.to_vec());
            let url = format!("{base}/v2/{repo}/manifests/t{i}");
            async move {
                let r = http
                    .put(url)
                    .bearer_auth(tok)
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(m)
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!("PUT tag t{i}: {}", r.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Runs the benchmark; prints JSON.
pub async fn run(args: &[String]) -> Result<()> {
    let base = arg(args, "--registry")
        .context("--registry URL is required")?
        .trim_end_matches('/');
    let user = arg(args, "--user").context("--user is required")?;
    let password = arg(args, "--password").context("--password is required")?;
    let service = arg(args, "--service")
        .context("--service URL is required")?
        .trim_end_matches('/');
    let cold_service = arg(args, "--cold-service").map(|s| s.trim_end_matches('/').to_owned());
    let pid = arg(args, "--pid");
    let warm_n: usize = arg(args, "--warm").unwrap_or("20000").parse()?;
    let conc: usize = arg(args, "--concurrency").unwrap_or("8").parse()?;
    let verdicts: usize = arg(args, "--cached-verdicts").unwrap_or("10000").parse()?;
    let host = base.split_once("://").map_or(base, |(_, h)| h).to_owned();
    let creds = (user.to_owned(), password.to_owned());
    // The service over HTTPS when its CA is given (keep-alive connections,
    // as the API server keeps them).
    let mut builder = atcr_http::client_builder(std::time::Duration::from_secs(30));
    if let Some(ca) = arg(args, "--ca") {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
    }
    let http = builder.build()?;

    // Setup: 8 distinct images, one more for the one-image Pod, and one
    // manifest tagged many times (distinct verdicts).
    let mut distinct = vec![];
    for i in 0..8 {
        push_small_image(base, &format!("{user}/svc-bench-{i}"), creds.clone(), "v1").await?;
        distinct.push(format!("{host}/{user}/svc-bench-{i}:v1"));
    }
    push_small_image(base, &format!("{user}/svc-bench-same"), creds.clone(), "v1").await?;
    let tags_repo = format!("{user}/svc-bench-tags");
    push_small_image(base, &tags_repo, creds.clone(), "v1").await?;
    let t = Instant::now();
    tag_many(base, &tags_repo, (user, password), verdicts.max(100)).await?;
    let tagging = t.elapsed();

    // Warm /validate.
    let one = review(&distinct[..1]);
    let v = post(&http, &format!("{service}/validate"), one.clone()).await?;
    if v["response"]["allowed"] != true {
        bail!("the benchmark image is not admitted: {v}");
    }
    let t = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conc {
        let (http, url, body) = (http.clone(), format!("{service}/validate"), one.clone());
        let n = warm_n / conc;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                let v = post(&http, &url, body.clone()).await?;
                lat.push(s.elapsed());
                if v["response"]["allowed"] != true {
                    bail!("denied");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut warm = vec![];
    for t in tasks {
        warm.extend(t.await??);
    }
    let warm_elapsed = t.elapsed();
    warm.sort();

    // Cold: 8 distinct images, nothing cached.
    let mut cold = vec![];
    if let Some(cs) = &cold_service {
        let body = review(&distinct);
        for _ in 0..50 {
            let s = Instant::now();
            let v = post(&http, &format!("{cs}/validate"), body.clone()).await?;
            cold.push(s.elapsed());
            if v["response"]["allowed"] != true {
                bail!("cold Pod denied: {v}");
            }
        }
        cold.sort();
    }

    // 8 containers of one image not seen before: one verification.
    let before = misses(&http, service).await?;
    let same = format!("{host}/{user}/svc-bench-same:v1");
    post(
        &http,
        &format!("{service}/validate"),
        review(&vec![same; 8]),
    )
    .await?;
    let one_image_verifications = misses(&http, service).await? - before;

    // /provide with 100 cached keys.
    let keys: Vec<String> = (0..100)
        .map(|i| format!("{host}/{tags_repo}:t{i}"))
        .collect();
    let preq = serde_json::to_vec(&json!({"apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest", "request": {"keys": keys}}))?;
    let v = post(&http, &format!("{service}/provide"), preq.clone()).await?;
    let ok = v["response"]["items"].as_array().map_or(0, |a| {
        a.iter().filter(|i| i["value"]["verified"] == true).count()
    });
    if ok != 100 {
        bail!("/provide verified {ok} of 100 keys");
    }
    let mut provide = vec![];
    for _ in 0..500 {
        let s = Instant::now();
        post(&http, &format!("{service}/provide"), preq.clone()).await?;
        provide.push(s.elapsed());
    }
    provide.sort();

    // N distinct cached verdicts, then the service's memory.
    let rss_before = pid.and_then(|p| rss_kib(p, "VmRSS:"));
    let t = Instant::now();
    let failures: usize = futures_util::stream::iter(0..verdicts)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{service}/verify"));
            let image = format!("{host}/{tags_repo}:t{i}");
            async move {
                match http.get(url).query(&[("image", image)]).send().await {
                    Ok(r) if r.status() == 200 => 0,
                    _ => 1,
                }
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    let fill = t.elapsed();
    if failures > 0 {
        bail!("{failures} of {verdicts} verifications failed");
    }
    let out = json!({
        "warm_validate": {"n": warm.len(), "concurrency": conc,
            "per_second": warm.len() as f64 / warm_elapsed.as_secs_f64(),
            "p50_ms": pct(&warm, 0.5), "p99_ms": pct(&warm, 0.99)},
        "cold_pod_8_distinct_images": (!cold.is_empty()).then(|| json!({
            "n": cold.len(), "p50_ms": pct(&cold, 0.5), "p99_ms": pct(&cold, 0.99)})),
        "pod_8_containers_one_image_verifications": one_image_verifications,
        "provide_100_cached_keys": {"n": provide.len(), "p50_ms": pct(&provide, 0.5), "p99_ms": pct(&provide, 0.99)},
        "cached_verdicts": {"n": verdicts, "fill_seconds": fill.as_secs_f64(),
            "rss_mib_before": rss_before.map(|k| k as f64 / 1024.0),
            "rss_mib_after": pid.and_then(|p| rss_kib(p, "VmRSS:")).map(|k| k as f64 / 1024.0),
            "peak_rss_mib": pid.and_then(|p| rss_kib(p, "VmHWM:")).map(|k| k as f64 / 1024.0)},
        "setup": {"tags_pushed": verdicts.max(100), "seconds": tagging.as_secs_f64()},
    });
    println!("{out}");
    Ok(())
}

/// `atcr-bench admission`: Pod creation latency through a real API server
/// (POST /api/v1/namespaces/NS/pods, N times), p50/p99; run it once in a
/// namespace the webhook selects and once in one it does not.
pub async fn admission(args: &[String]) -> Result<()> {
    let api = arg(args, "--apiserver")
        .context("--apiserver URL is required")?
        .trim_end_matches('/');
    let token = arg(args, "--token").context("--token is required")?;
    let ca = arg(args, "--ca").context("--ca FILE is required")?;
    let base = arg(args, "--registry")
        .context("--registry URL is required")?
        .trim_end_matches('/');
    let user = arg(args, "--user").context("--user is required")?;
    let password = arg(args, "--password").context("--password is required")?;
    let n: usize = arg(args, "--n").unwrap_or("200").parse()?;
    push_small_image(
        base,
        &format!("{user}/adm"),
        (user.into(), password.into()),
        "v1",
    )
    .await?;
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    let image = format!("{host}/{user}/adm:v1");
    let http = atcr_http::client_builder(std::time::Duration::from_secs(30))
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .build()?;
    let mut out = serde_json::Map::new();
    for ns in arg(args, "--namespaces")
        .context("--namespaces A,B is required")?
        .split(',')
    {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("bench-{i}")},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}});
            let s = Instant::now();
            let r = http
                .post(format!("{api}/api/v1/namespaces/{ns}/pods"))
                .bearer_auth(token)
                .json(&pod)
                .send()
                .await?;
            lat.push(s.elapsed());
            if r.status() != 201 {
                bail!(
                    "{ns}: pod {i}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
        }
        lat.sort();
        out.insert(
            ns.to_owned(),
            json!({"n": n, "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99)}),
        );
    }
    println!("{}", Value::Object(out));
    Ok(())
}

//! `atcr-bench firehose`: the embedded PDS's event stream and the registry
//! following it, against a running `atcr serve` (as `scripts/bench-firehose`
//! starts it):
//! 1. writes N records (one commit each) with `createRecord`;
//! 2. replays them over `subscribeRepos?cursor=0` to 1 and to 10 concurrent
//!    consumers that decode every frame: events/s per consumer and in all;
//! 3. lag from a PDS write to registry visibility: pushes an image by tag,
//!    deletes the tag record with `deleteRecord` directly in the PDS, and
//!    times from the PDS's answer until the registry answers 404 for the
//!    tag (polled every millisecond): p50/p99 over M samples.

use crate::registry::{arg, pct, push_small_image};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

/// `atcr-bench firehose --url URL --user HANDLE --password P [--events N]
/// [--lag-samples M]`.
pub async fn run(args: &[String]) -> Result<()> {
    let url = arg(args, "--url")
        .context("--url")?
        .trim_end_matches('/')
        .to_owned();
    let user = arg(args, "--user").context("--user")?.to_owned();
    let password = arg(args, "--password").context("--password")?.to_owned();
    let events: usize = arg(args, "--events").unwrap_or("5000").parse()?;
    let samples: usize = arg(args, "--lag-samples").unwrap_or("200").parse()?;
    let http = reqwest::Client::new();
    let session: serde_json::Value = http
        .post(format!("{url}/xrpc/com.atproto.server.createSession"))
        .json(&json!({"identifier": user, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let did = session["did"].as_str().context("no did")?.to_owned();
    let jwt = session["accessJwt"]
        .as_str()
        .context("no accessJwt")?
        .to_owned();

    // 1. N commits.
    let first = latest_seq(&url).await?;
    let t = Instant::now();
    let writes: Vec<Result<()>> = futures_util::stream::iter(0..events)
        .map(|i| {
            let (http, url, did, jwt) = (http.clone(), url.clone(), did.clone(), jwt.clone());
            async move {
                http.post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                    .bearer_auth(&jwt)
                    .json(&json!({"repo": did, "collection": "io.atcr.bench",
                        "record": {"$type": "io.atcr.bench", "n": i, "text": "x".repeat(200)}}))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    writes.into_iter().collect::<Result<Vec<_>>>()?;
    let write_s = t.elapsed().as_secs_f64();
    let last = latest_seq(&url).await?;

    // 2. Replays to 1 and 10 consumers.
    let mut replay = vec![];
    for consumers in [1usize, 10] {
        let t = Instant::now();
        let counts =
            futures_util::future::join_all((0..consumers).map(|_| consume(&url, first, last)))
                .await
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
        let secs = t.elapsed().as_secs_f64();
        let total: usize = counts.iter().sum();
        replay.push(json!({
            "consumers": consumers,
            "events_each": counts[0],
            "seconds": secs,
            "events_per_s_each": counts[0] as f64 / secs,
            "events_per_s_total": total as f64 / secs,
        }));
    }

    // 3. Lag from a PDS write to registry visibility.
    let repo = format!("{user}/lag");
    let creds = (user.clone(), password.clone());
    let reader = crate::registry::Client::new(&url, &repo, creds.clone());
    let mut lags = vec![];
    for i in 0..samples {
        let tag = format!("l{i}");
        push_small_image(&url, &repo, creds.clone(), &tag).await?;
        let rkey = atcr_oci::tag_rkey("lag", &tag);
        http.post(format!("{url}/xrpc/com.atproto.repo.deleteRecord"))
            .bearer_auth(&jwt)
            .json(&json!({"repo": did, "collection": "io.atcr.tag", "rkey": rkey}))
            .send()
            .await?
            .error_for_status()?;
        let t = Instant::now();
        loop {
            let r = reader
                .req(
                    reqwest::Method::HEAD,
                    &format!("/v2/{repo}/manifests/{tag}"),
                )
                .await?
                .header("accept", atcr_oci::records::MANIFEST_ACCEPT)
                .send()
                .await?;
            if r.status() == 404 {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("tag {tag} still served 10 s after its record was deleted");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(t.elapsed());
    }
    lags.sort();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "events": last - first,
            "write_events_per_s": (last - first) as f64 / write_s,
            "replay": replay,
            "follow_lag": {"samples": samples, "p50_ms": pct(&lags, 0.5), "p99_ms": pct(&lags, 0.99)},
        }))?
    );
    Ok(())
}

/// The newest sequence number, found by replaying the log from the start
/// (the stream has no query for it).
async fn latest_seq(url: &str) -> Result<i64> {
    let ws = format!(
        "{}/xrpc/com.atproto.sync.subscribeRepos?cursor=0",
        url.replacen("http", "ws", 1)
    );
    let (mut s, _) = tokio_tungstenite::connect_async(ws).await?;
    let mut last = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.next()).await {
            Err(_) | Ok(None) => return Ok(last),
            Ok(Some(m)) => {
                if let tokio_tungstenite::tungstenite::Message::Binary(b) = m? {
                    let f = atcr_repo::firehose::decode_frame(&b, 32 << 20)?;
                    last = f.seq().unwrap_or(last);
                }
            }
        }
    }
}

/// Replays events after `after` until `last`; returns the events decoded.
async fn consume(url: &str, after: i64, last: i64) -> Result<usize> {
    let ws = format!(
        "{}/xrpc/com.atproto.sync.subscribeRepos?cursor={after}",
        url.replacen("http", "ws", 1)
    );
    let (mut s, _) = tokio_tungstenite::connect_async(ws).await?;
    let mut n = 0;
    while let Some(m) = s.next().await {
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = m? {
            let f = atcr_repo::firehose::decode_frame(&b, 32 << 20)?;
            n += 1;
            if f.seq().is_some_and(|s| s >= last) {
                return Ok(n);
            }
        }
    }
    bail!("the stream ended after {n} events")
}

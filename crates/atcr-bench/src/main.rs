//! `atcr-bench`: the project's benchmark harness.
//!
//! `atcr-bench repo [--records N] [--proofs M] [--json]` measures the
//! repository core: MST inserts/s building an N-record tree (and committing
//! it), incremental single-record commits/s on that tree, `getRecord` proofs
//! built/s and proofs verified/s (full strict verification: CAR hash checks,
//! commit signature, covering MST paths, record decode).
//!
//! `atcr-bench pds [--records N] [--json]` measures the embedded PDS over
//! loopback HTTP with our XRPC client: records committed/s by one writer and
//! by 16 concurrent writers on one repository (each a signed commit, durable
//! in SQLite before it is acknowledged), and `sync.getRecord` proofs served/s
//! at 8 concurrent readers.
//!
//! `atcr-bench registry --url URL …` drives any OCI registry over HTTP and
//! `atcr-bench ceiling` is the ceiling server: ATCR's own blob store behind
//! the same serving layer and nothing else (see [`registry`]); `scripts/bench-registry` runs them side by side with CNCF
//! Distribution.
//!
//! `atcr-bench front --listen ADDR --backend URL …` is a round-robin HTTP
//! front (no stickiness) for registry replicas (`scripts/bench-scale-out`).
//!
//! `atcr-bench gc …` measures garbage collection against a running `atcr
//! serve` (see [`gc`]; `scripts/bench-gc` runs it).
//!
//! Run it in release mode: `cargo run --release -p atcr-bench -- repo`.

use anyhow::{Context, Result, bail};
use atcr_crypto::{Algorithm, Keypair};
use atcr_data::Value;
use atcr_oci::MANIFEST_COLLECTION;
use atcr_repo::mst::Mst;
use atcr_repo::{BlockMap, Repo, WriteOp, verify_record_proof};
use atcr_syntax::{Did, Nsid, RecordKey, TidClock};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("repo") => repo_bench(&args[1..]),
        Some("pds") => pds_bench(&args[1..]),
        Some("registry") => tokio_main(registry::run(&args[1..])),
        Some("ceiling") => tokio_main(registry::ceiling(&args[1..])),
        Some("front") => tokio_main(front(&args[1..])),
        Some("gc") => tokio_main(gc::run(&args[1..])),
        Some("firehose") => tokio_main(firehose::run(&args[1..])),
        Some("verify") => tokio_main(verify::run(&args[1..])),
        Some("service") => tokio_main(service::run(&args[1..])),
        Some("web") => tokio_main(web::run(&args[1..])),
        Some("admission") => tokio_main(service::admission(&args[1..])),
        Some("fuzz-seeds") => fuzz_seeds(args.get(1).context("usage: atcr-bench fuzz-seeds DIR")?),
        _ => bail!(
            "usage: atcr-bench repo [--records N] [--proofs M] [--json] | pds [--records N] [--json] | registry --url URL [--repo NAME] [--user U --password P] [--pid PID] [--sizes 1,64,512] [--chunk MIB] [--reps N] [--phases blobs,manifests,images] [--ceiling-url URL] | ceiling --listen ADDR --dir DIR | front --listen ADDR --backend URL [--backend URL …] | gc --url URL --user U --password P --atcr BIN [--blobs N] [--kib K] [--concurrency C] | firehose --url URL --user U --password P [--events N] [--lag-samples M] | verify --url URL --user U --password P [--cold N] [--warm N] [--concurrency C] | service --registry URL --user U --password P --service URL [--cold-service URL] [--pid PID] [--warm N] [--concurrency C] [--cached-verdicts N] | admission --apiserver URL --token T --ca FILE --registry URL --user U --password P --namespaces A,B [--n N] | web --url URL --users A,B --password P [--repos R] [--tags T] [--samples S] | fuzz-seeds DIR"
        ),
    }
}

mod firehose;
mod gc;
mod registry;
mod service;
mod verify;
mod web;

/// A round-robin front for replicas, until killed.
async fn front(args: &[String]) -> Result<()> {
    let listen = registry::arg(args, "--listen").context("--listen is required")?;
    let backends: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--backend")
        .map(|w| w[1].clone())
        .collect();
    if backends.is_empty() {
        bail!("at least one --backend URL is required");
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let _front = atcr_testkit::proxy::RoundRobin::start(listener, backends);
    std::future::pending::<()>().await;
    Ok(())
}

fn tokio_main<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    atcr_http::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn flag(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .context(name.to_owned()),
        None => Ok(default),
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn record(i: usize) -> Value {
    [
        ("$type", Value::from(MANIFEST_COLLECTION)),
        ("repository", Value::from(format!("app{}", i % 50))),
        ("digest", Value::from(format!("sha256:{i:064x}"))),
        (
            "mediaType",
            Value::from("application/vnd.oci.image.manifest.v1+json"),
        ),
        ("createdAt", Value::from("2026-11-22T12:00:00.000Z")),
    ]
    .into_iter()
    .collect()
}

fn repo_bench(args: &[String]) -> Result<()> {
    let n = flag(args, "--records", 100_000)?;
    let proofs = flag(args, "--proofs", 5_000)?;
    let json = args.iter().any(|a| a == "--json");
    let clock = TidClock::new();
    let keys: Vec<String> = (0..n)
        .map(|_| format!("{MANIFEST_COLLECTION}/{}", clock.next()))
        .collect();
    let values: Vec<_> = (0..n)
        .map(|i| atcr_data::cid_for_cbor(&atcr_data::to_cbor(&record(i))))
        .collect();

    // 1. Raw MST: n inserts into an in-memory tree, then one commit (encode + hash every node).
    let store = BlockMap::new();
    let t = Instant::now();
    let mut mst = Mst::new();
    for (k, v) in keys.iter().zip(&values) {
        mst.insert(k, *v, &store)?;
    }
    let insert_time = t.elapsed();
    let t = Instant::now();
    let (_root, nodes) = mst.commit();
    let commit_time = t.elapsed();

    // 2. A signed repository with n records.
    let key = Keypair::generate(Algorithm::K256);
    let did = Did::new("did:plc:benchbbbbbbbbbbbbbbbbbbb")?;
    let coll = Nsid::new(MANIFEST_COLLECTION)?;
    let rkeys: Vec<RecordKey> = keys
        .iter()
        .map(|k| RecordKey::new(&k[MANIFEST_COLLECTION.len() + 1..]))
        .collect::<Result<_, _>>()?;
    let writes: Vec<WriteOp> = rkeys
        .iter()
        .enumerate()
        .map(|(i, r)| WriteOp::Create {
            collection: coll.clone(),
            rkey: r.clone(),
            record: record(i),
        })
        .collect();
    let mut blocks = BlockMap::new();
    let t = Instant::now();
    let (mut repo, data) = Repo::create(did.clone(), &key, clock.next(), &writes, &blocks)?;
    let create_time = t.elapsed();
    blocks.extend(&data.new_blocks);

    // 3. Incremental commits: one new record each, on the full tree (reloaded from blocks).
    let mut repo2 = Repo::load(&repo.commit_cid(), &blocks)?;
    let commits = 2_000.min(n);
    let t = Instant::now();
    for i in 0..commits {
        let w = WriteOp::Create {
            collection: coll.clone(),
            rkey: RecordKey::new(clock.next().to_string())?,
            record: record(n + i),
        };
        let d = repo2.apply_writes(&[w], &key, clock.next(), &blocks)?;
        blocks.extend(&d.new_blocks);
    }
    let incr_time = t.elapsed();
    repo = Repo::load(&repo2.commit_cid(), &blocks)?;

    // 4. Proofs built and verified.
    let step = (n / proofs.max(1)).max(1);
    let sample: Vec<&RecordKey> = rkeys.iter().step_by(step).take(proofs).collect();
    let t = Instant::now();
    let cars: Vec<Vec<u8>> = sample
        .iter()
        .map(|r| repo.record_proof(&coll, r, &blocks))
        .collect::<Result<_, _>>()?;
    let build_time = t.elapsed();
    let pk = key.public_key();
    let t = Instant::now();
    for (car, r) in cars.iter().zip(&sample) {
        let v = verify_record_proof(car, &did, &pk, &coll, r)?;
        if v.record.is_none() {
            bail!("record {r} missing from its proof");
        }
    }
    let verify_time = t.elapsed();
    let avg_proof = cars.iter().map(Vec::len).sum::<usize>() / cars.len().max(1);

    let report = serde_json::json!({
        "records": n,
        "mst_inserts_per_s": rate(n, insert_time).round(),
        "mst_commit_ms": commit_time.as_secs_f64() * 1e3,
        "mst_nodes": nodes.len(),
        "mst_build_and_commit_records_per_s": rate(n, insert_time + commit_time).round(),
        "signed_repo_create_ms": create_time.as_secs_f64() * 1e3,
        "incremental_commits_per_s": rate(commits, incr_time).round(),
        "proofs_built_per_s": rate(cars.len(), build_time).round(),
        "proofs_verified_per_s": rate(cars.len(), verify_time).round(),
        "proof_verify_us": verify_time.as_secs_f64() * 1e6 / cars.len().max(1) as f64,
        "avg_proof_bytes": avg_proof,
    });
    if json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>38}  {v}");
        }
    }
    Ok(())
}

/// Writes seed inputs for the fuzz targets: real proof CARs (under the
/// proof_verify target's fixed key), MST nodes, commits and records.
fn fuzz_seeds(dir: &str) -> Result<()> {
    let dir = std::path::Path::new(dir);
    let key = Keypair::from_private_bytes(Algorithm::K256, &[7u8; 32])?;
    let did = Did::new("did:plc:fuzzfffffffffffffffffffff")?;
    let coll = Nsid::new(MANIFEST_COLLECTION)?;
    let clock = TidClock::with_clock_id(1);
    let writes: Vec<WriteOp> = (0..40)
        .map(|i| {
            Ok(WriteOp::Create {
                collection: coll.clone(),
                rkey: RecordKey::new(format!("r{i}"))?,
                record: record(i),
            })
        })
        .collect::<Result<_>>()?;
    let mut blocks = BlockMap::new();
    let (repo, data) = Repo::create(did, &key, clock.next(), &writes, &blocks)?;
    blocks.extend(&data.new_blocks);
    for target in ["cbor_decode", "car_read", "mst_node", "proof_verify"] {
        std::fs::create_dir_all(dir.join(target))?;
    }
    for r in ["r0", "r1", "r5", "zz"] {
        let car = repo.record_proof(&coll, &RecordKey::new(r)?, &blocks)?;
        std::fs::write(dir.join("proof_verify").join(format!("proof-{r}")), &car)?;
        std::fs::write(dir.join("car_read").join(format!("proof-{r}")), &car)?;
    }
    for (i, (cid, bytes)) in blocks.iter().enumerate().take(60) {
        let target = if cid.codec() == atcr_data::DAG_CBOR && i % 2 == 0 {
            "mst_node"
        } else {
            "cbor_decode"
        };
        std::fs::write(dir.join(target).join(cid.to_string()), &bytes[..])?;
    }
    println!("seeds written under {}", dir.display());
    Ok(())
}

fn pds_bench(args: &[String]) -> Result<()> {
    let n = flag(args, "--records", 1_000)?;
    let json = args.iter().any(|a| a == "--json");
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(pds_bench_async(n))?;
    if json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>38}  {v}");
        }
    }
    Ok(())
}

async fn pds_bench_async(n: usize) -> Result<serde_json::Value> {
    use atcr_xrpc::types::CreateRecordInput;
    use std::sync::Arc;
    let tmp = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let plc = atcr_plc_server::Directory::open(&tmp.path().join("plc.sqlite"))?;
    let cfg = atcr_pds::PdsConfig::new(url.parse()?, b"bench-secret-bench-secret-bench!".to_vec());
    let pds = atcr_pds::Pds::open(cfg, &tmp.path().join("pds.sqlite"), Arc::new(plc))?;
    let app = atcr_pds::routes::router(pds.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let created = pds
        .create_account("bench.test", Some("bench-password".into()), None)
        .await?;
    let did = created.did;
    let client = Arc::new(atcr_xrpc::PdsClient::new(
        url.parse()?,
        atcr_http::client(Duration::from_secs(30)),
    ));
    client
        .create_session("bench.test", "bench-password")
        .await?;
    let input = |rkey: String, i: usize| CreateRecordInput {
        repo: did.clone(),
        collection: MANIFEST_COLLECTION.into(),
        rkey: Some(rkey),
        validate: None,
        record: serde_json::json!({"$type": MANIFEST_COLLECTION, "repository": "app", "digest": format!("sha256:{i:064x}")}),
        swap_commit: None,
    };
    // Sequential writer.
    let t = Instant::now();
    for i in 0..n {
        client.create_record(&input(format!("s{i:06}"), i)).await?;
    }
    let seq = t.elapsed();
    // 16 concurrent writers on the same repository.
    let per = n / 16;
    let t = Instant::now();
    let mut tasks = vec![];
    for w in 0..16 {
        let (client, inputs): (_, Vec<_>) = (
            client.clone(),
            (0..per)
                .map(|i| input(format!("c{w:02}-{i:05}"), i))
                .collect(),
        );
        tasks.push(tokio::spawn(async move {
            for inp in inputs {
                client.create_record(&inp).await?;
            }
            Ok::<_, atcr_xrpc::ClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let conc = t.elapsed();
    // Proofs served, 8 concurrent readers.
    let proofs = n.max(800);
    let t = Instant::now();
    let mut tasks = vec![];
    for r in 0..8 {
        let (client, did) = (client.clone(), did.clone());
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0usize;
            for i in 0..proofs / 8 {
                let rkey = format!("s{:06}", (i * 8 + r) % n);
                bytes += client
                    .sync_get_record(&did, MANIFEST_COLLECTION, &rkey)
                    .await?
                    .len();
            }
            Ok::<_, atcr_xrpc::ClientError>(bytes)
        }));
    }
    let mut proof_bytes = 0;
    for t in tasks {
        proof_bytes += t.await??;
    }
    let served = t.elapsed();
    Ok(serde_json::json!({
        "records_committed_per_s_sequential": rate(n, seq).round(),
        "records_committed_per_s_16_writers": rate(per * 16, conc).round(),
        "proofs_served_per_s_8_readers": rate(proofs, served).round(),
        "avg_proof_bytes": proof_bytes / proofs,
        "repo_records_at_end": n + per * 16,
    }))
}

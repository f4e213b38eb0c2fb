//! `com.atproto.sync.subscribeRepos` and the sync endpoints of the embedded
//! PDS, consumed by the reference consumer (`@atproto/sync`'s Firehose,
//! which validates every frame against the lexicon and every commit's
//! signature and MST proofs) and by a raw WebSocket client for the cursor
//! and back-pressure rules.

use atcr_repo::firehose::{Frame, decode_frame};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::process::Stdio;
use std::time::Duration;

mod common;

/// The reference consumer as a child process; its JSON lines on a channel.
struct Consumer {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Consumer {
    fn start(ws: &str, plc: &str, cursor: Option<i64>) -> Self {
        let mut cmd = common::node("firehose-consumer.mjs");
        cmd.arg(ws).arg(plc);
        if let Some(c) = cursor {
            cmd.arg(c.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Self { child, lines }
    }

    /// The next `n` events; fails on any error line or after 30 s.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = vec![];
        while out.len() < n {
            let v = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {} of {n} events: {out:#?}", out.len()))
                .expect("consumer exited");
            assert!(v.get("error").is_none(), "reference consumer: {v}");
            if v.get("started").is_none() {
                out.push(v);
            }
        }
        out
    }

    /// Asserts nothing more arrives within `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(v)) = tokio::time::timeout(d, self.lines.recv()).await {
            panic!("unexpected line: {v}");
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn xrpc_error(r: reqwest::Response, status: u16, error: &str) {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

fn manifest_record(n: u32) -> Value {
    json!({"$type": "io.atcr.manifest", "repository": "app", "digest": format!("sha256:{n:064x}"), "createdAt": "2026-12-01T00:00:00.000Z"})
}

/// What the consumer reports of an event: `(event, did, path)`.
fn shape(v: &Value) -> (String, String, String) {
    (
        v["event"].as_str().unwrap_or_default().to_owned(),
        v["did"].as_str().unwrap_or_default().to_owned(),
        v["path"].as_str().unwrap_or_default().to_owned(),
    )
}

fn ev(event: &str, did: &str, path: &str) -> (String, String, String) {
    (event.into(), did.into(), path.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_consumer_validates_our_stream_and_resumes_from_a_cursor() {
    let s = common::start(&[]).await;
    let pds = s.services.pds.clone().unwrap();
    let ws = format!("ws://{}", s.host);
    let plc = format!("{}/plc", s.url);
    let put = |rkey: &str, n: u32| atcr_pds::Write::Put {
        collection: "io.atcr.manifest".into(),
        rkey: rkey.into(),
        record: manifest_record(n),
        swap: None,
    };
    let del = |rkey: &str| atcr_pds::Write::Delete {
        collection: "io.atcr.manifest".into(),
        rkey: rkey.into(),
        swap: None,
    };
    let mut live = Consumer::start(&ws, &plc, Some(0));
    let alice = pds
        .create_account("alice.test", Some("correct horse".into()), None)
        .await
        .unwrap()
        .did;
    let m = |r: &str| format!("io.atcr.manifest/{r}");
    let mut expected = vec![ev("identity", &alice, ""), ev("account", &alice, "")];
    // Creates, updates, deletes, one multi-write commit.
    for n in 0..5 {
        pds.write(&alice, vec![put(&format!("r{n}"), n)], None)
            .await
            .unwrap();
        expected.push(ev("create", &alice, &m(&format!("r{n}"))));
    }
    pds.write(&alice, vec![put("r1", 100)], None).await.unwrap();
    expected.push(ev("update", &alice, &m("r1")));
    pds.write(&alice, vec![del("r2")], None).await.unwrap();
    expected.push(ev("delete", &alice, &m("r2")));
    pds.write(&alice, vec![put("r9", 9), put("r3", 33), del("r4")], None)
        .await
        .unwrap();
    expected.extend([
        ev("create", &alice, &m("r9")),
        ev("update", &alice, &m("r3")),
        ev("delete", &alice, &m("r4")),
    ]);
    // The consumer checks each commit against the key the DID document
    // names when it processes it: it is given these before the key changes.
    let mut got = live.events(expected.len()).await;
    // Key rotation: a new DID document and a re-signed head; commits after
    // it verify only with the new key.
    pds.rotate_key(&alice, None).await.unwrap();
    let rotated_rev = pds.latest_commit(&alice).await.unwrap().rev;
    expected.extend([ev("identity", &alice, ""), ev("sync", &alice, "")]);
    pds.write(&alice, vec![put("after-rotation", 7)], None)
        .await
        .unwrap();
    expected.push(ev("create", &alice, &m("after-rotation")));
    // Account events.
    pds.set_active(&alice, false).await.unwrap();
    pds.set_active(&alice, true).await.unwrap();
    expected.extend([ev("account", &alice, ""), ev("account", &alice, "")]);

    got.extend(live.events(expected.len() - got.len()).await);
    assert_eq!(got.iter().map(shape).collect::<Vec<_>>(), expected);
    let seqs: Vec<i64> = got.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
    // The three writes of one commit share its sequence number.
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    assert_eq!(seqs[9], seqs[11]);
    assert_eq!(got[expected.len() - 2]["active"], false);
    assert_eq!(got[expected.len() - 2]["status"], "takendown");
    assert_eq!(got[expected.len() - 1]["active"], true);
    assert_eq!(got[13]["rev"], rotated_rev.as_str());
    live.quiet(Duration::from_millis(300)).await;

    // The consumer goes away; events happen; it reconnects with its cursor
    // and gets exactly the missed ones.
    let cursor = *seqs.last().unwrap();
    drop(live);
    let bob = pds
        .create_account("bob.test", Some("correct horse".into()), None)
        .await
        .unwrap()
        .did;
    pds.write(&bob, vec![put("b", 1)], None).await.unwrap();
    pds.write(&alice, vec![del("r0")], None).await.unwrap();
    let missed = vec![
        ev("identity", &bob, ""),
        ev("account", &bob, ""),
        ev("create", &bob, &m("b")),
        ev("delete", &alice, &m("r0")),
    ];
    let mut resumed = Consumer::start(&ws, &plc, Some(cursor));
    let got = resumed.events(missed.len()).await;
    assert_eq!(got.iter().map(shape).collect::<Vec<_>>(), missed);
    assert!(got[0]["seq"].as_i64().unwrap() > cursor);
    resumed.quiet(Duration::from_millis(300)).await;
    // Live from here: a deleted account's tombstone.
    pds.delete_account(&bob).await.unwrap();
    let got = resumed.events(1).await;
    assert_eq!(shape(&got[0]), ev("account", &bob, ""));
    assert_eq!(got[0]["status"], "deleted");
}

async fn raw(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<Frame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")?;
        match m.ok()? {
            tokio_tungstenite::tungstenite::Message::Binary(b) => {
                return Some(decode_frame(&b, 1 << 22).unwrap());
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => return None,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_cursor_is_refused_and_a_cursor_replays_then_goes_live() {
    let s = common::start(&[]).await;
    let pds = s.services.pds.clone().unwrap();
    let did = pds
        .create_account("carol.test", Some("correct horse".into()), None)
        .await
        .unwrap()
        .did;
    let latest = pds.latest_seq();
    assert_eq!(latest, 3, "identity, account, first commit");
    let base = format!("ws://{}/xrpc/com.atproto.sync.subscribeRepos", s.host);

    // A cursor from the future: an error frame, then the stream closes.
    let mut ws = raw(&format!("{base}?cursor={}", latest + 10)).await;
    match next_frame(&mut ws).await {
        Some(Frame::Error { error, .. }) => assert_eq!(error, "FutureCursor"),
        other => panic!("{other:?}"),
    }
    assert!(next_frame(&mut ws).await.is_none());

    // Replay from a cursor: exactly the events after it, in order.
    let mut ws = raw(&format!("{base}?cursor=1")).await;
    let seqs: Vec<i64> = [next_frame(&mut ws).await, next_frame(&mut ws).await]
        .into_iter()
        .map(|f| f.unwrap().seq().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    // Then live.
    pds.write(
        &did,
        vec![atcr_pds::Write::Create {
            collection: "io.atcr.manifest".into(),
            rkey: Some("x".into()),
            record: manifest_record(1),
        }],
        None,
    )
    .await
    .unwrap();
    match next_frame(&mut ws).await {
        Some(Frame::Commit(c)) => {
            assert_eq!((c.seq, c.repo.as_str()), (4, did.as_str()));
            assert_eq!(c.ops.len(), 1);
            assert_eq!(c.ops[0].action, "create");
            assert!(c.since.is_some() && c.prev_data.is_some());
            assert!(
                c.blocks.get(&c.commit).is_some(),
                "the commit block is in the slice"
            );
        }
        other => panic!("{other:?}"),
    }

    // Not a WebSocket, or a bad cursor: an XRPC error.
    let http = common::http();
    let r = http
        .get(format!("{}/xrpc/com.atproto.sync.subscribeRepos", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.subscribeRepos?cursor=-4",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_cursor_gets_info_and_a_slow_consumer_is_cut_off() {
    let s = common::start(&[
        ("ATCR_PDS_FIREHOSE_BACKFILL_SECS", "1".into()),
        ("ATCR_PDS_FIREHOSE_MAX_LAG", "20".into()),
    ])
    .await;
    let pds = s.services.pds.clone().unwrap();
    let did = pds
        .create_account("dave.test", Some("correct horse".into()), None)
        .await
        .unwrap()
        .did;
    let write = |rkey: String, size: usize| atcr_pds::Write::Put {
        collection: "io.atcr.manifest".into(),
        rkey,
        record: json!({"$type": "io.atcr.manifest", "repository": "app", "digest": format!("sha256:{:064x}", 1), "createdAt": "2026-12-01T00:00:00.000Z", "padding": "x".repeat(size)}),
        swap: None,
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The log is pruned every 256 events: the first three are now outside
    // the one-second window.
    while pds.latest_seq() < 256 {
        pds.write(
            &did,
            vec![write(format!("k{}", pds.latest_seq()), 10)],
            None,
        )
        .await
        .unwrap();
    }
    let base = format!("ws://{}/xrpc/com.atproto.sync.subscribeRepos", s.host);
    let mut ws = raw(&format!("{base}?cursor=1")).await;
    match next_frame(&mut ws).await {
        Some(Frame::Info { name, .. }) => assert_eq!(name, "OutdatedCursor"),
        other => panic!("{other:?}"),
    }
    let first = next_frame(&mut ws).await.unwrap().seq().unwrap();
    assert!(first > 3, "pruned events are not replayed (got {first})");
    drop(ws);

    // A live consumer that does not read, on a small receive buffer.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.host.parse().unwrap()).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(base.as_str(), stream)
        .await
        .unwrap();
    let before = pds.latest_seq();
    let n = 200;
    for i in 0..n {
        pds.write(&did, vec![write(format!("big{i}"), 60_000)], None)
            .await
            .unwrap();
    }
    // Now it reads: what was already on its way, then ConsumerTooSlow.
    let mut commits = 0;
    let end = loop {
        match next_frame(&mut slow).await {
            Some(Frame::Commit(c)) => {
                assert!(c.seq > before);
                commits += 1;
            }
            other => break other,
        }
    };
    match end {
        Some(Frame::Error { error, .. }) => assert_eq!(error, "ConsumerTooSlow"),
        other => panic!("expected ConsumerTooSlow after {commits} commits, got {other:?}"),
    }
    assert!(commits < n, "{commits}");
    assert!(
        next_frame(&mut slow).await.is_none(),
        "closed after the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_endpoints_answer_diffs_blocks_and_status() {
    let s = common::start(&[]).await;
    let pds = s.services.pds.clone().unwrap();
    let did = pds
        .create_account("erin.test", Some("correct horse".into()), None)
        .await
        .unwrap()
        .did;
    let put = |rkey: &str, n: u32| atcr_pds::Write::Put {
        collection: "io.atcr.manifest".into(),
        rkey: rkey.into(),
        record: manifest_record(n),
        swap: None,
    };
    pds.write(&did, vec![put("a", 1)], None).await.unwrap();
    let since = pds.latest_commit(&did).await.unwrap().rev;
    let w = pds.write(&did, vec![put("b", 2)], None).await.unwrap();
    let new_cid = w.results[0].1.clone().unwrap();
    let (old_cid, _) = pds
        .get_record(&did, "io.atcr.manifest", "a")
        .await
        .unwrap()
        .unwrap();
    let http = common::http();
    let get = |q: String| {
        let http = http.clone();
        let url = s.url.clone();
        async move { http.get(format!("{url}/xrpc/{q}")).send().await.unwrap() }
    };
    // getRepo?since=: the commit and what it added, not the whole repository.
    let diff = get(format!("com.atproto.sync.getRepo?did={did}&since={since}"))
        .await
        .bytes()
        .await
        .unwrap();
    let (roots, blocks) = atcr_repo::read_car(&diff).unwrap();
    let head = pds.latest_commit(&did).await.unwrap();
    assert_eq!(roots[0].to_string(), head.cid);
    let cids: Vec<String> = blocks.iter().map(|(c, _)| c.to_string()).collect();
    assert!(
        cids.contains(&head.cid) && cids.contains(&new_cid),
        "{cids:?}"
    );
    assert!(!cids.contains(&old_cid), "the diff holds no older record");
    let full = get(format!("com.atproto.sync.getRepo?did={did}"))
        .await
        .bytes()
        .await
        .unwrap();
    let (_, all) = atcr_repo::read_car(&full).unwrap();
    assert!(all.len() > blocks.len());

    // getBlocks: the named blocks; an unknown one is refused.
    let r = get(format!(
        "com.atproto.sync.getBlocks?did={did}&cids={old_cid}&cids={new_cid}"
    ))
    .await;
    assert_eq!(r.status(), 200);
    let (_, got) = atcr_repo::read_car(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(got.len(), 2);
    let missing = atcr_data::cid_for_raw(b"never stored");
    xrpc_error(
        get(format!(
            "com.atproto.sync.getBlocks?did={did}&cids={missing}"
        ))
        .await,
        400,
        "InvalidRequest",
    )
    .await;

    // getRepoStatus, listRepos: active with its revision; then taken down.
    let st: Value = get(format!("com.atproto.sync.getRepoStatus?did={did}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(st, json!({"did": did, "active": true, "rev": head.rev}));
    pds.set_active(&did, false).await.unwrap();
    let st: Value = get(format!("com.atproto.sync.getRepoStatus?did={did}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        st,
        json!({"did": did, "active": false, "status": "takendown"})
    );
    let list: Value = get("com.atproto.sync.listRepos".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["repos"][0]["active"], false);
    assert_eq!(list["repos"][0]["status"], "takendown");
    xrpc_error(
        get("com.atproto.sync.getRepoStatus?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into()).await,
        400,
        "RepoNotFound",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_are_asked_to_crawl_at_start() {
    // A relay that records what it is asked; the first request fails (the
    // PDS retries).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/xrpc/com.atproto.sync.requestCrawl",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let _ = tx.send(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = format!("http://{}", listener.local_addr().unwrap());
    let _relay = tokio::spawn(async move { axum::serve(listener, app).await });
    let s = common::start(&[("ATCR_PDS_CRAWLERS", relay)]).await;
    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("requestCrawl within 10 s")
        .unwrap();
    assert_eq!(body, json!({"hostname": s.host}));
}

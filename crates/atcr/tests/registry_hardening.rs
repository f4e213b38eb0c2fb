//! Registry hardening (issue 12, first items): a malformed Basic header is
//! refused, an open-ended Range end does not overflow, manifests with
//! repeated keys are refused, and a data directory serves one server.

mod common;
use common::*;

const PW: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_ranges_and_manifests() {
    let s = start(&[]).await;
    let (did, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "hard").await;
    // The DID works as the user name, and its token pushes under the handle.
    let by_did = token(
        &s,
        Some((&did, PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let m = get_manifest(&s, &by_did, "alice.test/app", &d).await;
    let r = http()
        .put(format!("{}/v2/alice.test/app/manifests/by-did", s.url))
        .bearer_auth(&by_did)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A malformed Basic header is a 401, not an anonymous token.
    for auth in [
        "Basic !!!not-base64",
        "Basic bm9jb2xvbg==",
        "Bearer x",
        "Basic",
    ] {
        let r = http()
            .get(format!("{}/auth/token", s.url))
            .query(&[("scope", "repository:alice.test/app:pull")])
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        expect_error(r, 401, "UNAUTHORIZED").await;
    }
    // A scope for a repository name that cannot exist: refused, not a
    // token that can never be used.
    for scope in [
        "repository:Alice.test/App:pull",
        "repository:alice.test:pull",
        "repository:a.test/-x:pull",
    ] {
        let r = http()
            .get(format!("{}/auth/token", s.url))
            .query(&[("scope", scope)])
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "NAME_INVALID").await;
    }
    // A Range ending at u64::MAX is the rest of the blob, not an overflow.
    let m = get_manifest(&s, &tok, "alice.test/app", &d).await;
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    let r = http()
        .get(format!("{}/v2/alice.test/app/blobs/{layer}", s.url))
        .bearer_auth(&tok)
        .header("range", "bytes=0-18446744073709551615")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);
    // A manifest repeating a key means two things: refused.
    let dup = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[],"layers":{}}}"#,
        m["config"], m["layers"]
    );
    let r = http()
        .put(format!("{}/v2/alice.test/app/manifests/dup", s.url))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(dup)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "MANIFEST_INVALID").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_server() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = atcr_testkit::free_port();
    let mut first = spawn(&data, port);
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    let out = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            atcr(&data, atcr_testkit::free_port())
                .arg("serve")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("another atcr serve is using the data directory")
            && e.contains("server.data_dir"),
        "{e}"
    );
    // The first one still serves; once it is gone, a new one may start.
    first.kill().unwrap();
    first.wait().unwrap();
    let port2 = atcr_testkit::free_port();
    let mut second = spawn(&data, port2);
    wait_ready(&format!("http://127.0.0.1:{port2}")).await;
    second.kill().unwrap();
    second.wait().unwrap();
}

/// Sends `head` and then `body` in full before reading anything (as Go's
/// HTTP client and the conformance suite do); the status line the server
/// answered, or the I/O error that hid it.
async fn write_all_then_read(addr: &str, head: String, body: &[u8]) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    c.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("head: {e}"))?;
    c.write_all(body).await.map_err(|e| format!("body: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let read = async {
        loop {
            let n = c
                .read(&mut buf[got..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before a status".to_owned());
            }
            got += n;
            if got >= 12 {
                let line = String::from_utf8_lossy(&buf[..got]).to_string();
                return line[9..12]
                    .parse::<u16>()
                    .map_err(|e| format!("{line}: {e}"));
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
}

/// Issue 12, item 1: a client that writes its whole body before reading
/// always sees the server's early 401/404/416, never a broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_replies_reach_clients_that_write_their_whole_body_first() {
    let s = start(&[]).await;
    let (_, tok, _) = owner_with_image(&s, "alice.test", PW, "pull,push", "early").await;
    // A real upload session, for the out-of-order chunk.
    let r = http()
        .post(format!("{}/v2/alice.test/app/blobs/uploads/", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let session = r.headers()["location"].to_str().unwrap().to_owned();
    let session = session.trim_start_matches(&s.url).to_owned();
    let body = vec![7u8; 5 << 20];
    let mut failures = vec![];
    for i in 0..100 {
        let (head, want) = match i % 4 {
            // Unauthenticated PATCH of 5 MiB.
            0 => (
                format!(
                    "PATCH {session} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    s.host,
                    body.len()
                ),
                401,
            ),
            // A chunk that does not start where the upload is.
            1 => (
                format!(
                    "PATCH {session} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/octet-stream\r\nContent-Range: 1000-{}\r\nContent-Length: {}\r\n\r\n",
                    s.host,
                    1000 + body.len() - 1,
                    body.len()
                ),
                416,
            ),
            // A session that does not exist.
            2 => (
                format!(
                    "PATCH /v2/alice.test/app/blobs/uploads/no-such-session HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    s.host,
                    body.len()
                ),
                404,
            ),
            // An unauthenticated monolithic PUT, chunked encoding.
            _ => (
                format!(
                    "PUT /v2/alice.test/app/blobs/uploads/x?digest=sha256:{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    "0".repeat(64),
                    s.host,
                    body.len()
                ),
                401,
            ),
        };
        match write_all_then_read(&s.host, head, &body).await {
            Ok(st) if st == want => {}
            other => failures.push(format!("request {i}: want {want}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100: {failures:#?}",
        failures.len()
    );
}

/// Reads until the server closes the connection (true) or `within` passes.
async fn closed_within(c: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Issue 12, item 11: half-sent requests, stalled bodies and clients that do
/// not read are closed on time, and connections beyond the cap are refused
/// with a 503 instead of exhausting file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out_and_connections_are_capped() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let s = start(&[
        ("ATCR_SERVER_MAX_CONNECTIONS", "400".into()),
        ("ATCR_SERVER_HEADER_READ_TIMEOUT_SECS", "2".into()),
        ("ATCR_SERVER_BODY_READ_TIMEOUT_SECS", "2".into()),
        ("ATCR_SERVER_IDLE_TIMEOUT_SECS", "3".into()),
    ])
    .await;
    let (_, tok, _) = owner_with_image(&s, "alice.test", PW, "pull,push", "slow").await;
    let started = Instant::now();
    // 1,000 connections that send half a request line and stop.
    let mut half = vec![];
    let mut refused = 0;
    for _ in 0..1000 {
        let mut c = tokio::net::TcpStream::connect(&s.host).await.unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half.push(c);
    }
    // Over the cap: a 503 that the client reads, then close.
    let over = http().get(format!("{}/v2/", s.url)).send().await;
    match over {
        Ok(r) => assert_eq!(r.status(), 503),
        Err(e) => panic!("over the cap: want a 503, got {e}"),
    }
    let mut open = 0;
    for c in &mut half {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(6), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains(" 503 ") => {
                refused += 1
            }
            Ok(_) => {}
            Err(_) => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "half-sent requests still open after the header timeout"
    );
    assert!(refused >= 500, "{refused} of 1000 refused at a cap of 400");
    assert!(started.elapsed() < Duration::from_secs(12));
    drop(half);
    // The cap frees up: an ordinary request works again.
    let r = http().get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A body that stops half way: the request fails and the connection ends.
    let mut c = tokio::net::TcpStream::connect(&s.host).await.unwrap();
    let r = http()
        .post(format!("{}/v2/alice.test/app/blobs/uploads/", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = loc.trim_start_matches(&s.url).to_owned();
    c.write_all(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(8)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // A client that asks for a large blob and never reads it is dropped
    // once the socket buffers are full and nothing moves.
    let big: Vec<u8> = (0..32u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let digest = push_blob(&s, &tok, "alice.test/app", &big).await;
    let mut c = tokio::net::TcpStream::connect(&s.host).await.unwrap();
    c.write_all(
        format!(
            "GET /v2/alice.test/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
}

/// The parameters of a `Bearer` challenge.
fn challenge_params(h: &str) -> std::collections::HashMap<String, String> {
    let rest = h.strip_prefix("Bearer ").expect("a Bearer challenge");
    let mut out = std::collections::HashMap::new();
    let mut s = rest;
    while let Some((k, v)) = s.split_once("=\"") {
        let (val, tail) = v.split_once('"').unwrap();
        out.insert(k.trim_start_matches(',').trim().to_owned(), val.to_owned());
        s = tail;
    }
    out
}

/// Issue 12, item 2: the owner's `pull,push` token (what crane asks for)
/// does not cover DELETE; the answer is a 401 whose challenge names the
/// needed scope with `error="insufficient_scope"`, and a token for it works
/// (crane's transport: merge the challenge's scope, fetch, retry). Someone
/// else's repository stays 403: a new token would not help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_scope_is_a_401_challenge_the_owner_can_answer() {
    let s = start(&[]).await;
    let (_, _, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "crane").await;
    for reference in ["v1", d.as_str()] {
        let tok = token(
            &s,
            Some(("alice.test", PW)),
            &["repository:alice.test/app:pull,push"],
        )
        .await;
        if reference != "v1" {
            // Tag again so the digest delete has something to remove.
            let m = get_manifest(&s, &tok, "alice.test/app", &d).await;
            let r = http()
                .put(format!("{}/v2/alice.test/app/manifests/v2", s.url))
                .bearer_auth(&tok)
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(m)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let url = format!("{}/v2/alice.test/app/manifests/{reference}", s.url);
        let r = http().delete(&url).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(r.status(), 401, "DELETE {reference} with a pull,push token");
        let ch = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        let p = challenge_params(&ch);
        assert_eq!(p["error"], "insufficient_scope", "{ch}");
        assert_eq!(p["scope"], "repository:alice.test/app:delete", "{ch}");
        expect_error(r, 401, "UNAUTHORIZED").await;
        if reference != "v1" {
            // The same token again (oras-py refreshes only on 403): a 403
            // with the challenge, not a 401 loop.
            let r = http().delete(&url).bearer_auth(&tok).send().await.unwrap();
            assert!(
                r.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .contains("insufficient_scope")
            );
            expect_error(r, 403, "DENIED").await;
        }
        // crane: the scopes it had plus the challenge's, from the realm.
        let r = http()
            .get(&p["realm"])
            .query(&[
                ("service", p["service"].as_str()),
                ("scope", "repository:alice.test/app:pull,push"),
                ("scope", p["scope"].as_str()),
            ])
            .basic_auth("alice.test", Some(PW))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t2 = r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = http().delete(&url).bearer_auth(&t2).send().await.unwrap();
        assert_eq!(r.status(), 202, "DELETE {reference} with the new token");
    }
    // Bob may pull alice's image but not push to it: 403, no challenge loop.
    account(&s, "bob.test", PW).await;
    let bob = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:alice.test/app:pull,push,delete"],
    )
    .await;
    let r = http()
        .delete(format!("{}/v2/alice.test/app/manifests/{d}", s.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "DENIED").await;
}

/// `sha512:<hex>` of bytes.
fn sha512(b: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha512::digest(b);
    format!(
        "sha512:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Issue 12, items 3, 4, 6 and 8: invalid and unknown references, sha512
/// closes of sha256 sessions, several tags in one PUT, unknown owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_corners_of_references_digests_tags_and_owners() {
    let s = start(&[]).await;
    let (_, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push,delete", "corners").await;
    let base = format!("{}/v2/alice.test/app", s.url);
    // 3: an invalid tag is a 400 MANIFEST_INVALID; a missing one a 404.
    let r = http()
        .get(format!("{base}/manifests/.INVALID_MANIFEST_NAME"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "MANIFEST_INVALID").await;
    let r = http()
        .head(format!("{base}/manifests/.INVALID_MANIFEST_NAME"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http()
        .get(format!("{base}/manifests/no-such-tag"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // 4: a session begun without ?digest-algorithm closed with sha512,
    // chunked and in one POST; a wrong sha512 is refused.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let want = sha512(&data);
    let r = http()
        .post(format!("{base}/blobs/uploads/"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with('/') {
        format!("{}{loc}", s.url)
    } else {
        loc
    };
    let r = http()
        .patch(&loc)
        .bearer_auth(&tok)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with('/') {
        format!("{}{loc}", s.url)
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http()
        .put(format!("{loc}{sep}digest={want}"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = http()
        .get(format!("{base}/blobs/{want}"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    let other: Vec<u8> = data.iter().rev().copied().collect();
    let r = http()
        .post(format!("{base}/blobs/uploads/?digest={}", sha512(&other)))
        .bearer_auth(&tok)
        .header("content-type", "application/octet-stream")
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http()
        .post(format!(
            "{base}/blobs/uploads/?digest={}",
            sha512(b"not this")
        ))
        .bearer_auth(&tok)
        .header("content-type", "application/octet-stream")
        .body(other)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;

    // 6: one PUT by digest with several tags; each is answered in OCI-Tag.
    let m = get_manifest(&s, &tok, "alice.test/app", &d).await;
    let r = http()
        .put(format!("{base}/manifests/{d}?tag=one&tag=two&tag=three"))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["one", "two", "three"]);
    for t in ["one", "two", "three"] {
        let r = http()
            .head(format!("{base}/manifests/{t}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    }
    let r = http()
        .put(format!("{base}/manifests/{d}?tag=ok&tag=-bad"))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "MANIFEST_INVALID").await;
    let r = http()
        .head(format!("{base}/manifests/ok"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing of a refused push is tagged");

    // 8: an owner that does not exist is NAME_UNKNOWN, not a 503.
    let anon = token(&s, None, &["repository:nobody.test/app:pull"]).await;
    for path in ["manifests/v1", "tags/list", &format!("blobs/{d}")] {
        let r = http()
            .get(format!("{}/v2/nobody.test/app/{path}", s.url))
            .bearer_auth(&anon)
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "NAME_UNKNOWN").await;
    }
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Issue 12, item 10: `uploadBlob` checks the token before reading the body
/// and streams what it accepts, so neither 40 unauthenticated 15 MiB bodies
/// nor 8 authenticated ones at once grow the server's memory by their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_uploads_cannot_exhaust_memory() {
    let server = ChildServer::start().await;
    let url = server.url.clone();
    create_account(&server.data, server.port, "alice.test", PW);
    let r = http()
        .post(format!("{url}/xrpc/com.atproto.server.createSession"))
        .json(&serde_json::json!({"identifier": "alice.test", "password": PW}))
        .send()
        .await
        .unwrap();
    let jwt = r.json::<serde_json::Value>().await.unwrap()["accessJwt"]
        .as_str()
        .unwrap()
        .to_owned();
    let body: bytes::Bytes = (0..15u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect::<Vec<u8>>()
        .into();
    // Warm up (allocator arenas, connection pools), then measure.
    let r = http()
        .post(format!("{url}/xrpc/com.atproto.repo.uploadBlob"))
        .bearer_auth(&jwt)
        .body(body.slice(..1 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid = server.child.id();
    let base = rss(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let unauth: Vec<_> = (0..40)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move {
                http()
                    .post(format!("{url}/xrpc/com.atproto.repo.uploadBlob"))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for t in unauth {
        assert_eq!(t.await.unwrap().ok(), Some(401));
    }
    let unauth_peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let auth: Vec<_> = (0..8)
        .map(|i| {
            let (url, jwt) = (url.clone(), jwt.clone());
            let mut b = body.to_vec();
            b[0] = i as u8;
            tokio::spawn(async move {
                let r = http()
                    .post(format!("{url}/xrpc/com.atproto.repo.uploadBlob"))
                    .bearer_auth(&jwt)
                    .body(b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<serde_json::Value>().await.unwrap()["blob"]["ref"]["$link"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut cids = vec![];
    for t in auth {
        cids.push(t.await.unwrap());
    }
    sampler.abort();
    let auth_peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // 40 × 15 MiB is 600 MiB and 8 × 15 MiB 120 MiB: neither may show.
    let mib = |b: u64| b.saturating_sub(base) >> 20;
    assert!(
        mib(unauth_peak) < 48,
        "unauthenticated flood grew RSS by {} MiB",
        mib(unauth_peak)
    );
    assert!(
        mib(auth_peak) < 64,
        "8 authenticated uploads grew RSS by {} MiB",
        mib(auth_peak)
    );
    // What was accepted is stored whole.
    let did = {
        let r = http()
            .get(format!(
                "{url}/xrpc/com.atproto.identity.resolveHandle?handle=alice.test"
            ))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()["did"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = http()
        .get(format!(
            "{url}/xrpc/com.atproto.sync.getBlob?did={did}&cid={}",
            cids[3]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), body.len());
    assert_eq!(got[0], 3);
    assert_eq!(got[1..], body[1..]);
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: &str) -> reqwest::Client {
    atcr_http::client_builder(std::time::Duration::from_secs(60))
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn basic_token(c: &reqwest::Client, s: &Server, user: &str, pw: &str) -> (u16, String) {
    let r = c
        .get(format!("{}/auth/token", s.url))
        .query(&[("scope", "repository:alice.test/app:pull")])
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.text().await.unwrap())
}

async fn create_session(c: &reqwest::Client, s: &Server, user: &str, pw: &str) -> (u16, String) {
    let r = c
        .post(format!("{}/xrpc/com.atproto.server.createSession", s.url))
        .json(&serde_json::json!({"identifier": user, "password": pw}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.text().await.unwrap())
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Issue 12, item 12: one answer and one argon2 check for every refusal,
/// hashing off the request workers, and failed logins throttled per address
/// and per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_say_nothing_cost_one_hash_and_are_throttled() {
    use std::time::{Duration, Instant};
    let s = start(&[]).await;
    let (_, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "logins").await;
    let pds = s.services.pds.as_ref().unwrap();
    let alice = pds.lookup_did("alice.test").await.unwrap();
    for i in 0..8 {
        pds.create_app_password(&alice, &format!("app{i}"))
            .await
            .unwrap();
    }
    let c = client_from("127.0.0.2");
    // One text whether the account exists or not, registry and PDS alike.
    let (a, wrong) = basic_token(&c, &s, "alice.test", "wrong password").await;
    let (b, unknown) = basic_token(&c, &s, "nobody.alice.test", "wrong password").await;
    let (e, did) = basic_token(&c, &s, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "x").await;
    assert_eq!((a, b, e), (401, 401, 401));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, did);
    let (a, wrong) = create_session(&c, &s, "alice.test", "wrong password").await;
    let (b, unknown) = create_session(&c, &s, "nobody.alice.test", "wrong password").await;
    assert_eq!((a, b), (401, 401));
    assert_eq!(wrong, unknown);
    // The same work either way: one argon2 check (not one per app password).
    let (mut known, mut none) = (vec![], vec![]);
    for i in 0..5 {
        let c = client_from(&format!("127.0.1.{i}"));
        let t = Instant::now();
        create_session(&c, &s, "alice.test", "wrong password").await;
        known.push(t.elapsed());
        let t = Instant::now();
        create_session(&c, &s, "nobody.alice.test", "wrong password").await;
        none.push(t.elapsed());
    }
    let (k, n) = (median(known), median(none));
    assert!(
        k.as_secs_f64() < n.as_secs_f64() * 2.5,
        "existing account {k:?} vs unknown {n:?}: the timing tells them apart"
    );

    // 16 concurrent bad-login loops from one address: a manifest GET stays
    // fast, and the address soon gets 429s instead of password checks.
    let get = |c: reqwest::Client| {
        let (url, tok, d) = (s.url.clone(), tok.clone(), d.clone());
        async move {
            let t = Instant::now();
            let r = c
                .get(format!("{url}/v2/alice.test/app/manifests/{d}"))
                .bearer_auth(&tok)
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            t.elapsed()
        }
    };
    let quiet = http();
    let mut calm = vec![];
    for _ in 0..20 {
        calm.push(get(quiet.clone()).await);
    }
    account(&s, "carol.test", PW).await;
    let stop = Instant::now() + Duration::from_secs(3);
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let s_url = s.url.clone();
            tokio::spawn(async move {
                let c = client_from("127.0.0.3");
                let mut codes = vec![];
                while Instant::now() < stop {
                    let r = c
                        .get(format!("{s_url}/auth/token"))
                        .basic_auth("carol.test", Some("guess"))
                        .send()
                        .await
                        .unwrap();
                    codes.push(r.status().as_u16());
                }
                codes
            })
        })
        .collect();
    let mut stormy = vec![];
    while Instant::now() < stop {
        stormy.push(get(quiet.clone()).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut codes = vec![];
    for f in flood {
        codes.extend(f.await.unwrap());
    }
    let checked = codes.iter().filter(|c| **c == 401).count();
    let refused = codes.iter().filter(|c| **c == 429).count();
    assert!(
        checked <= 20 + 16,
        "{checked} password checks from one address"
    );
    assert!(refused > 0, "{codes:?}");
    let (calm, stormy) = (median(calm), median(stormy));
    assert!(
        stormy < calm * 10 + Duration::from_millis(50),
        "manifest GET p50 {calm:?} calm, {stormy:?} during the flood"
    );
    // The address stays refused, even with the right password.
    let c3 = client_from("127.0.0.3");
    let (st, _) = basic_token(&c3, &s, "alice.test", PW).await;
    assert_eq!(st, 429);
    // Per account: 30 failures (one above, 29 here) from many addresses
    // lock the account, not the addresses.
    for i in 0..29 {
        let c = client_from(&format!("127.0.2.{i}"));
        let (st, _) = basic_token(&c, &s, "alice.test", "wrong").await;
        assert_eq!(st, 401);
    }
    let c = client_from("127.0.3.1");
    assert_eq!(basic_token(&c, &s, "alice.test", PW).await.0, 429);
    account(&s, "bob.test", PW).await;
    assert_eq!(basic_token(&c, &s, "bob.test", PW).await.0, 200);
}

/// A host that plays a hostile user's handle, DID document (did:web) and
/// PDS; counts the logins it receives.
struct Trap {
    port: u16,
    pds: std::sync::Arc<std::sync::Mutex<String>>,
    logins: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn trap() -> Trap {
    use axum::routing::{get, post};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let did = format!("did:web:localhost%3A{port}");
    let pds = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let logins = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let key = atcr_crypto::Keypair::generate(atcr_crypto::Algorithm::K256);
    let (d1, d2, p, n) = (did.clone(), did.clone(), pds.clone(), logins.clone());
    let app = axum::Router::new()
        .route("/.well-known/atproto-did", get(move || async move { d1 }))
        .route(
            "/.well-known/did.json",
            get(move || async move {
                serde_json::json!({
                    "@context": ["https://www.w3.org/ns/did/v1"],
                    "id": d2,
                    "alsoKnownAs": ["at://mallory.test"],
                    "verificationMethod": [{
                        "id": format!("{d2}#atproto"), "type": "Multikey", "controller": d2,
                        "publicKeyMultibase": key.public_key().to_multikey()
                    }],
                    "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                 "serviceEndpoint": p.lock().unwrap().clone()}]
                })
                .to_string()
            }),
        )
        .route(
            "/xrpc/com.atproto.server.createSession",
            post(move || async move {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"error\":\"InternalServerError\",\"message\":\"secret internal detail\"}",
                )
            }),
        );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Trap { port, pds, logins }
}

/// Issue 12, item 13: a handle whose DID document names a loopback or
/// private PDS does not make the registry send anything there (unless the
/// network is allowed), and upstream failures are neither echoed nor
/// retried at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_do_not_reach_addresses_a_did_document_chooses() {
    use std::sync::atomic::Ordering::SeqCst;
    let t = trap().await;
    let env = |allow: bool| {
        let mut e = vec![
            ("ATCR_IDENTITY_ALLOW_PLAIN_HTTP", "true".to_owned()),
            (
                "ATCR_IDENTITY_HOST_OVERRIDES",
                format!("mallory.test=127.0.0.1:{}", t.port),
            ),
        ];
        if allow {
            e.push(("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8".to_owned()));
        }
        e
    };
    let s = start(&env(false)).await;
    let c = http();
    for pds in [
        format!("http://127.0.0.1:{}", t.port),
        format!("http://localhost:{}", t.port),
        format!("http://[::ffff:127.0.0.1]:{}", t.port),
        "http://169.254.169.254".to_owned(),
    ] {
        *t.pds.lock().unwrap() = pds.clone();
        let (st, body) = basic_token(&c, &s, "mallory.test", "pw").await;
        assert!(st == 401 || st == 503, "{pds}: {st} {body}");
        assert!(
            !body.contains("127.0.0.1") && !body.contains("169.254"),
            "{body}"
        );
        assert_eq!(t.logins.load(SeqCst), 0, "{pds}: the registry called it");
    }
    // Allowed by configuration: contacted once; its 500 is not echoed, and
    // the next attempt within the failure window does not call it again.
    let s = start(&env(true)).await;
    *t.pds.lock().unwrap() = format!("http://127.0.0.1:{}", t.port);
    let (st, body) = basic_token(&c, &s, "mallory.test", "pw").await;
    assert_eq!(st, 503, "{body}");
    assert!(
        !body.contains("secret internal detail") && !body.contains("500"),
        "{body}"
    );
    assert_eq!(t.logins.load(SeqCst), 1);
    let (st, _) = basic_token(&c, &s, "mallory.test", "pw").await;
    assert_eq!(st, 503);
    assert_eq!(
        t.logins.load(SeqCst),
        1,
        "a failing PDS is not called again at once"
    );
}

/// Issue 12, item 14: open upload sessions are capped per user, and idle
/// ones are removed while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_are_capped_and_expire_while_running() {
    let s = start(&[
        ("ATCR_REGISTRY_MAX_UPLOADS_PER_USER", "3".into()),
        ("ATCR_REGISTRY_UPLOAD_TTL_SECS", "2".into()),
    ])
    .await;
    let (_, tok, _) = owner_with_image(&s, "alice.test", PW, "pull,push", "sessions").await;
    let open = || async {
        http()
            .post(format!("{}/v2/alice.test/app/blobs/uploads/", s.url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
    };
    let mut sessions = vec![];
    for _ in 0..3 {
        let r = open().await;
        assert_eq!(r.status(), 202);
        sessions.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    expect_error(open().await, 429, "TOOMANYREQUESTS").await;
    // Bob is not affected by alice's sessions.
    account(&s, "bob.test", PW).await;
    let bob = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:bob.test/x:pull,push"],
    )
    .await;
    let r = http()
        .post(format!("{}/v2/bob.test/x/blobs/uploads/", s.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Idle past the TTL: gone without a restart, and the cap frees up.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for loc in &sessions {
        let url = if loc.starts_with('/') {
            format!("{}{loc}", s.url)
        } else {
            loc.clone()
        };
        let r = http().get(url).bearer_auth(&tok).send().await.unwrap();
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert_eq!(open().await.status(), 202);
}

/// Issue 12, item 5: foreign (non-distributable) layers with allowed URLs
/// may be left out of a push; other missing blobs are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_layers_with_allowed_urls_need_not_be_pushed() {
    let s = start(&[(
        "ATCR_REGISTRY_FOREIGN_LAYER_URLS_DENY",
        "^https://blocked\\.example/".into(),
    )])
    .await;
    let (_, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "foreign").await;
    let m: serde_json::Value =
        serde_json::from_slice(&get_manifest(&s, &tok, "alice.test/app", &d).await).unwrap();
    let absent = format!("sha256:{}", "ab".repeat(32));
    let put = |tag: &'static str, layer: serde_json::Value, ct: &'static str| {
        let mut m = m.clone();
        m["layers"] = serde_json::json!([m["layers"][0].clone(), layer]);
        if ct.contains("docker") {
            m["mediaType"] = ct.into();
            m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
            m["layers"][0]["mediaType"] =
                "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
        }
        let (url, tok) = (s.url.clone(), tok.clone());
        async move {
            http()
                .put(format!("{url}/v2/alice.test/app/manifests/{tag}"))
                .bearer_auth(&tok)
                .header("content-type", ct)
                .body(serde_json::to_vec(&m).unwrap())
                .send()
                .await
                .unwrap()
        }
    };
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let foreign = |mt: &str, urls: serde_json::Value| serde_json::json!({"mediaType": mt, "digest": absent, "size": 1234, "urls": urls});
    let r = put(
        "win-oci",
        foreign(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            serde_json::json!(["https://mcr.example/layer.tar.gz"]),
        ),
        OCI,
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = put(
        "win-docker",
        foreign(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            serde_json::json!(["https://mcr.example/layer.tar.gz"]),
        ),
        DOCKER,
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // Pullable by tag; the layer itself is not served here.
    let r = http()
        .get(format!("{}/v2/alice.test/app/blobs/{absent}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // No URL, a denied URL, a non-http URL, an ordinary missing layer.
    let nondist = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    expect_error(
        put("a", foreign(nondist, serde_json::json!([])), OCI).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    let r = put(
        "b",
        foreign(nondist, serde_json::json!(["https://blocked.example/x"])),
        OCI,
    )
    .await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("MANIFEST_INVALID") && body.contains("registry.foreign_layer_urls_deny"),
        "{body}"
    );
    expect_error(
        put(
            "c",
            foreign(nondist, serde_json::json!(["file:///etc/passwd"])),
            OCI,
        )
        .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let plain = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": absent, "size": 1234
    });
    expect_error(put("d", plain, OCI).await, 400, "MANIFEST_BLOB_UNKNOWN").await;
}

/// Issue 13, item 3 (in part): a repository whose manifests are all deleted
/// (or that only ever got blobs) leaves `_catalog`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_repositories_leave_the_catalog() {
    let s = start(&[]).await;
    let (_, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push,delete", "catalog").await;
    let other = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/blobs-only:pull,push"],
    )
    .await;
    push_blob(&s, &other, "alice.test/blobs-only", b"just a blob").await;
    let catalog = || async {
        let t = token(&s, Some(("alice.test", PW)), &["registry:catalog:*"]).await;
        let r = http()
            .get(format!("{}/v2/_catalog", s.url))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()["repositories"].clone()
    };
    assert_eq!(catalog().await, serde_json::json!(["alice.test/app"]));
    let r = http()
        .delete(format!("{}/v2/alice.test/app/manifests/{d}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(catalog().await, serde_json::json!([]));
}

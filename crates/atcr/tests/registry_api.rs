//! The OCI Distribution 1.1 API, endpoint by endpoint, from the spec: status
//! codes, headers, error codes, and that failures leave nothing behind.

mod common;
use common::*;
use serde_json::json;

const PW: &str = "correct horse battery";

struct Ctx {
    s: Server,
    alice: String,
    tok: String,
    c: reqwest::Client,
}

async fn setup() -> Ctx {
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    account(&s, "bob.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &[
            "repository:alice.test/app:pull,push,delete",
            "repository:alice.test/other:pull,push,delete",
        ],
    )
    .await;
    Ctx {
        s,
        alice,
        tok,
        c: http(),
    }
}

impl Ctx {
    fn url(&self, p: &str) -> String {
        format!("{}/v2/{p}", self.s.url)
    }
    fn req(&self, m: reqwest::Method, p: &str) -> reqwest::RequestBuilder {
        self.c.request(m, self.url(p)).bearer_auth(&self.tok)
    }
    async fn call(&self, m: reqwest::Method, p: &str) -> reqwest::Response {
        self.req(m, p).send().await.unwrap()
    }
    /// Monolithic POST + PUT of a blob.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        push_blob(&self.s, &self.tok, repo, data).await
    }
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        ct: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.req(
            reqwest::Method::PUT,
            &format!("{repo}/manifests/{reference}"),
        )
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn image(config: &str, config_len: usize, layers: &[(&str, usize)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn version_check_and_token_flow() {
    let t = setup().await;
    // No token: 401 with a Bearer challenge naming the realm and service.
    let r = t.c.get(t.url("")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let ch = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        ch.starts_with(&format!(
            "Bearer realm=\"{}/auth/token\",service=\"{}\"",
            t.s.url, t.s.host
        )),
        "{ch}"
    );
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    expect_error(r, 401, "UNAUTHORIZED").await;
    // With a token: 200.
    let r = t.call(reqwest::Method::GET, "").await;
    assert_eq!(r.status(), 200);
    // Wrong password: the token endpoint refuses.
    let r = http()
        .get(format!(
            "{}/auth/token?scope=repository:alice.test/app:push",
            t.s.url
        ))
        .basic_auth("alice.test", Some("wrong"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "UNAUTHORIZED").await;
    let r = http()
        .get(format!("{}/auth/token", t.s.url))
        .basic_auth("nobody.test", Some("x"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "UNAUTHORIZED").await;
    // A forged token is refused like none.
    let r =
        t.c.get(t.url(""))
            .bearer_auth(format!("{}x", t.tok))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    // Anonymous: pull is granted, push is not (401 + challenge with the scope).
    let anon = token(&t.s, None, &["repository:alice.test/app:pull,push"]).await;
    let r =
        t.c.post(t.url("alice.test/app/blobs/uploads/"))
            .bearer_auth(&anon)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"repository:alice.test/app:pull,push\"")
    );
    let r =
        t.c.get(t.url("alice.test/app/tags/list"))
            .bearer_auth(&anon)
            .send()
            .await
            .unwrap();
    expect_error(r, 404, "NAME_UNKNOWN").await;
    // Someone else's namespace: bob's token gets pull only, and push is DENIED.
    let bob = token(
        &t.s,
        Some(("bob.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let r =
        t.c.post(t.url("alice.test/app/blobs/uploads/"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
    expect_error(r, 403, "DENIED").await;
    // A DID written path-safe, and raw, names the same repository.
    let did_safe = path_did(&t.alice);
    let tok2 = token(
        &t.s,
        Some(("alice.test", PW)),
        &[&format!("repository:{did_safe}/app:pull,push")],
    )
    .await;
    let r =
        t.c.post(t.url(&format!("{did_safe}/app/blobs/uploads/")))
            .bearer_auth(&tok2)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn blob_uploads_every_way() {
    let t = setup().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);

    // POST then PUT (monolithic).
    assert_eq!(t.push_blob("alice.test/app", &data).await, d);
    let r = t
        .call(reqwest::Method::HEAD, &format!("alice.test/app/blobs/{d}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "300000");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = t
        .call(reqwest::Method::GET, &format!("alice.test/app/blobs/{d}"))
        .await;
    assert_eq!(r.bytes().await.unwrap(), data);
    // Range read.
    let r = t
        .req(reqwest::Method::GET, &format!("alice.test/app/blobs/{d}"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/300000");
    assert_eq!(r.bytes().await.unwrap(), &data[10..20]);
    let r = t
        .req(reqwest::Method::GET, &format!("alice.test/app/blobs/{d}"))
        .header("range", "bytes=400000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // Single POST with digest.
    let small = b"single post".to_vec();
    let r = t
        .req(reqwest::Method::POST, "alice.test/app/blobs/uploads/")
        .query(&[("digest", sha256(&small))])
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/v2/alice.test/app/blobs/{}", sha256(&small))
    );

    // Chunked: POST, PATCH with Content-Range, status, out-of-order 416, PUT.
    let chunked: Vec<u8> = (0..250_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let cd = sha256(&chunked);
    let r = t
        .call(reqwest::Method::POST, "alice.test/app/blobs/uploads/")
        .await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().contains_key("oci-chunk-min-length"));
    assert!(r.headers().contains_key("docker-upload-uuid"));
    let loc = format!("{}{}", t.s.url, r.headers()["location"].to_str().unwrap());
    let r =
        t.c.patch(&loc)
            .bearer_auth(&t.tok)
            .header("content-range", "0-99999")
            .header("content-length", "100000")
            .body(chunked[..100_000].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-99999");
    // Out of order: starts past the end.
    let r =
        t.c.patch(&loc)
            .bearer_auth(&t.tok)
            .header("content-range", "150000-159999")
            .body(chunked[150_000..160_000].to_vec())
            .send()
            .await
            .unwrap();
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    // Malformed Content-Range.
    let r =
        t.c.patch(&loc)
            .bearer_auth(&t.tok)
            .header("content-range", "abc")
            .body(vec![1])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 416);
    // Status says nothing changed.
    let r = t.c.get(&loc).bearer_auth(&t.tok).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-99999");
    // Streamed PATCH (no Content-Range).
    let r =
        t.c.patch(&loc)
            .bearer_auth(&t.tok)
            .body(chunked[100_000..200_000].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-199999");
    // The last chunk with the closing PUT.
    let r =
        t.c.put(&loc)
            .bearer_auth(&t.tok)
            .query(&[("digest", &cd)])
            .header("content-range", "200000-249999")
            .body(chunked[200_000..].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let r = t
        .call(reqwest::Method::GET, &format!("alice.test/app/blobs/{cd}"))
        .await;
    assert_eq!(r.bytes().await.unwrap(), chunked);
    // The session is gone once closed.
    let r = t.c.get(&loc).bearer_auth(&t.tok).send().await.unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // Digest mismatch: 400 DIGEST_INVALID and nothing readable.
    let r = t
        .call(reqwest::Method::POST, "alice.test/app/blobs/uploads/")
        .await;
    let loc = format!("{}{}", t.s.url, r.headers()["location"].to_str().unwrap());
    let wrong = sha256(b"not this");
    let r =
        t.c.put(&loc)
            .bearer_auth(&t.tok)
            .query(&[("digest", &wrong)])
            .body(b"tampered".to_vec())
            .send()
            .await
            .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    for dg in [wrong, sha256(b"tampered")] {
        let r = t
            .call(reqwest::Method::HEAD, &format!("alice.test/app/blobs/{dg}"))
            .await;
        assert_eq!(r.status(), 404);
    }
    // Invalid digest strings.
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/blobs/sha256:xyz")
        .await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r =
        t.c.put(&loc)
            .bearer_auth(&t.tok)
            .query(&[("digest", "md5:abc")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    // PUT without digest.
    let r = t
        .call(reqwest::Method::POST, "alice.test/app/blobs/uploads/")
        .await;
    let loc = format!("{}{}", t.s.url, r.headers()["location"].to_str().unwrap());
    let r = t.c.put(&loc).bearer_auth(&t.tok).send().await.unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    // Cancel.
    let r = t.c.delete(&loc).bearer_auth(&t.tok).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = t.c.get(&loc).bearer_auth(&t.tok).send().await.unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let r = t
        .req(
            reqwest::Method::PATCH,
            "alice.test/app/blobs/uploads/no-such-session",
        )
        .body(vec![1])
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // Unknown blob.
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/blobs/{}", sha256(b"never")),
        )
        .await;
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    // Blobs are per repository: not visible in "other" until mounted.
    let r = t
        .call(
            reqwest::Method::HEAD,
            &format!("alice.test/other/blobs/{d}"),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = t
        .req(reqwest::Method::POST, "alice.test/other/blobs/uploads/")
        .query(&[("mount", d.as_str()), ("from", "alice.test/app")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = t
        .call(
            reqwest::Method::HEAD,
            &format!("alice.test/other/blobs/{d}"),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Mount of an unknown blob falls back to an upload session.
    let r = t
        .req(reqwest::Method::POST, "alice.test/other/blobs/uploads/")
        .query(&[
            ("mount", sha256(b"unknown").as_str()),
            ("from", "alice.test/app"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v2/alice.test/other/blobs/uploads/")
    );

    // Delete.
    let r = t
        .call(
            reqwest::Method::DELETE,
            &format!("alice.test/other/blobs/{d}"),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = t
        .call(
            reqwest::Method::HEAD,
            &format!("alice.test/other/blobs/{d}"),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = t
        .call(
            reqwest::Method::DELETE,
            &format!("alice.test/other/blobs/{d}"),
        )
        .await;
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    // Still in app.
    let r = t
        .call(reqwest::Method::HEAD, &format!("alice.test/app/blobs/{d}"))
        .await;
    assert_eq!(r.status(), 200);

    // Invalid names.
    for bad in [
        "Alice.test/app",
        "alice.test/App",
        "alice.test",
        "alice.test/a//b",
    ] {
        let r = t
            .call(reqwest::Method::GET, &format!("{bad}/tags/list"))
            .await;
        expect_error(r, 400, "NAME_INVALID").await;
    }
}

#[tokio::test]
async fn manifests_tags_referrers_and_records() {
    let t = setup().await;
    let pds = t.s.services.pds.clone().unwrap();
    let cfg = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let layer = vec![7u8; 5000];
    let cd = t.push_blob("alice.test/app", &cfg).await;
    let ld = t.push_blob("alice.test/app", &layer).await;
    let m = image(&cd, cfg.len(), &[(&ld, layer.len())]);
    let md = sha256(&m);

    // Push by tag.
    let r = t
        .put_manifest("alice.test/app", "v1", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/v2/alice.test/app/manifests/{md}")
    );
    assert!(!r.headers().contains_key("oci-subject"));
    // Exact bytes back by tag and by digest; HEAD has the headers only.
    for reference in ["v1", md.as_str()] {
        let r = t
            .call(
                reqwest::Method::GET,
                &format!("alice.test/app/manifests/{reference}"),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], md.as_str());
        assert_eq!(r.bytes().await.unwrap(), m);
    }
    let r = t
        .call(reqwest::Method::HEAD, "alice.test/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        m.len().to_string()
    );
    // The records are in alice's PDS: the manifest (with its blob) and the tag.
    let (_, tag) = pds
        .get_record(&t.alice, "io.atcr.tag", "app:v1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tag["manifestDigest"], md.as_str());
    assert_eq!(tag["repository"], "app");
    let uri = tag["manifest"].as_str().unwrap();
    let rkey = uri.rsplit('/').next().unwrap();
    let (_, rec) = pds
        .get_record(&t.alice, "io.atcr.manifest", rkey)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec["digest"], md.as_str());
    assert_eq!(rec["layers"][0]["digest"], ld.as_str());
    let blob_cid = rec["manifestBlob"]["ref"]["$link"].as_str().unwrap();
    let (blob, _) = pds.get_blob(&t.alice, blob_cid).await.unwrap().unwrap();
    assert_eq!(blob, m, "the PDS blob holds the exact manifest bytes");

    // Re-push under another tag: one manifest record, two tag records.
    assert_eq!(
        t.put_manifest("alice.test/app", "latest", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let (recs, _) = pds
        .list_records(&t.alice, "io.atcr.manifest", 100, None, false)
        .await
        .unwrap();
    assert_eq!(recs.len(), 1);

    // Bad manifests; each leaves the head commit unchanged.
    let head = pds.latest_commit(&t.alice).await.unwrap();
    let missing = image(&cd, cfg.len(), &[(&sha256(b"absent"), 6)]);
    let r = t
        .put_manifest("alice.test/app", "bad", OCI_MANIFEST, &missing)
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let r = t
        .put_manifest("alice.test/app", "bad", OCI_MANIFEST, b"{not json")
        .await;
    expect_error(r, 400, "MANIFEST_INVALID").await;
    let r = t
        .put_manifest(
            "alice.test/app",
            "bad",
            OCI_MANIFEST,
            br#"{"schemaVersion":1}"#,
        )
        .await;
    assert!(r.status() == 400 || r.status() == 415);
    let big = vec![b' '; 4 * 1024 * 1024 + 10];
    let r = t
        .put_manifest("alice.test/app", "bad", OCI_MANIFEST, &big)
        .await;
    expect_error(r, 413, "MANIFEST_INVALID").await;
    let r = t
        .put_manifest("alice.test/app", &sha256(b"other"), OCI_MANIFEST, &m)
        .await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = t
        .put_manifest("alice.test/app", "bad tag!", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(pds.latest_commit(&t.alice).await.unwrap().cid, head.cid);
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/manifests/bad")
        .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // Tag listing with n / last and Link.
    for tag in ["a", "b", "c"] {
        assert_eq!(
            t.put_manifest("alice.test/app", tag, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/tags/list?n=2")
        .await;
    assert_eq!(
        r.headers()["link"],
        "</v2/alice.test/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"name": "alice.test/app", "tags": ["a", "b"]}));
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/tags/list?n=2&last=b")
        .await;
    assert!(r.headers().get("link").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!(["c", "latest"]));
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/tags/list")
        .await;
    assert!(r.headers().get("link").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!(["a", "b", "c", "latest", "v1"]));

    // Catalog.
    let r = t.call(reqwest::Method::GET, "_catalog").await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["alice.test/app"]));

    // An artifact with a subject: OCI-Subject, then the Referrers API.
    let empty = t.push_blob("alice.test/app", b"{}").await;
    let sig_layer = t.push_blob("alice.test/app", b"signature").await;
    let art = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer, "size": 9}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()},
        "annotations": {"org.example": "yes"}
    }))
    .unwrap();
    let ad = sha256(&art);
    let r = t
        .put_manifest("alice.test/app", &ad, OCI_MANIFEST, &art)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["oci-subject"], md.as_str());
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/referrers/{md}"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(r.headers().get("oci-filters-applied").is_none());
    let idx: serde_json::Value = r.json().await.unwrap();
    // Ours, and the registry's signature artifact of the image.
    let all = idx["manifests"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{idx}");
    let ours = all.iter().find(|m| m["digest"] == ad.as_str()).unwrap();
    assert_eq!(ours["artifactType"], "application/vnd.example.sig");
    assert_eq!(ours["annotations"]["org.example"], "yes");
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/referrers/{md}?artifactType=application/vnd.example.sig"),
        )
        .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/referrers/{md}?artifactType=other/type"),
        )
        .await;
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"], json!([]));
    // No referrers: an empty index, never 404.
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/referrers/{}", sha256(b"nothing")),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/referrers/sha256:bad")
        .await;
    expect_error(r, 400, "DIGEST_INVALID").await;

    // Index (and Docker manifest list) needing its child manifests.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": m.len(), "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    assert_eq!(
        t.put_manifest(
            "alice.test/app",
            "multi",
            "application/vnd.oci.image.index.v1+json",
            &idx
        )
        .await
        .status(),
        201
    );
    let orphan = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": sha256(b"no"), "size": 2, "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    let r = t
        .put_manifest(
            "alice.test/app",
            "orphan",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            &orphan,
        )
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Docker schema 2 image.
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": layer.len()}]
    }))
    .unwrap();
    let r = t
        .put_manifest(
            "alice.test/app",
            "docker",
            "application/vnd.docker.distribution.manifest.v2+json",
            &docker,
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/manifests/docker")
        .await;
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // Tag moves rewrite the tag record.
    assert_eq!(
        t.put_manifest(
            "alice.test/app",
            "v1",
            "application/vnd.docker.distribution.manifest.v2+json",
            &docker
        )
        .await
        .status(),
        201
    );
    let (_, tag) = pds
        .get_record(&t.alice, "io.atcr.tag", "app:v1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tag["manifestDigest"], sha256(&docker).as_str());

    // Delete a tag: the tag record goes, the manifest stays.
    let r = t
        .call(reqwest::Method::DELETE, "alice.test/app/manifests/latest")
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        pds.get_record(&t.alice, "io.atcr.tag", "app:latest")
            .await
            .unwrap()
            .is_none()
    );
    let r = t
        .call(reqwest::Method::GET, "alice.test/app/manifests/latest")
        .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    // Delete the manifest: its record and the tags pointing at it go.
    let r = t
        .call(
            reqwest::Method::DELETE,
            &format!("alice.test/app/manifests/{md}"),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        pds.get_record(&t.alice, "io.atcr.manifest", rkey)
            .await
            .unwrap()
            .is_none()
    );
    for tag in ["a", "b", "c"] {
        assert!(
            pds.get_record(&t.alice, "io.atcr.tag", &format!("app:{tag}"))
                .await
                .unwrap()
                .is_none()
        );
    }
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/manifests/{md}"),
        )
        .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    let r = t
        .call(
            reqwest::Method::DELETE,
            &format!("alice.test/app/manifests/{md}"),
        )
        .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // Push into bob's namespace with alice's credentials: denied, nothing written.
    let bob_did = pds.lookup_did("bob.test").await.unwrap();
    let tok = token(
        &t.s,
        Some(("alice.test", PW)),
        &["repository:bob.test/app:pull,push"],
    )
    .await;
    let r =
        t.c.put(t.url("bob.test/app/manifests/v1"))
            .bearer_auth(&tok)
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
    expect_error(r, 403, "DENIED").await;
    assert!(
        pds.list_records(&bob_did, "io.atcr.manifest", 10, None, false)
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

const SIG_TYPE: &str = "application/vnd.atproto.signature.v1+json";

/// Digests of the registry's signature artifacts for `subject`.
async fn signature_artifacts(t: &Ctx, repo: &str, subject: &str) -> Vec<String> {
    signature_referrers(&t.s, &t.tok, repo, subject).await
}

#[tokio::test]
async fn every_push_gets_a_signature_artifact_pointing_at_its_record() {
    let t = setup().await;
    let cfg = t.push_blob("alice.test/app", b"{\"config\":1}").await;
    let layer = t.push_blob("alice.test/app", b"layer bytes").await;
    let m = image(&cfg, 12, &[(&layer, 11)]);
    let md = sha256(&m);
    let r = t
        .put_manifest("alice.test/app", "signed", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201);

    // Exactly one artifact, listed under the signature artifactType.
    let arts = signature_artifacts(&t, "alice.test/app", &md).await;
    assert_eq!(arts.len(), 1, "{arts:?}");
    let r = t
        .req(
            reqwest::Method::GET,
            &format!("alice.test/app/manifests/{}", arts[0]),
        )
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert_eq!(sha256(&bytes), arts[0], "served bytes hash to the digest");
    let art: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(art["artifactType"], SIG_TYPE);
    assert_eq!(art["subject"]["digest"], md.as_str());
    assert_eq!(art["subject"]["size"], m.len());
    assert_eq!(
        art["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(art["annotations"]["io.atcr.atproto.did"], t.alice.as_str());
    let record_uri = art["annotations"]["io.atcr.atproto.recordUri"]
        .as_str()
        .unwrap()
        .to_owned();

    // The layer names the owner, its current key, and the manifest record.
    let ld = art["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(art["layers"][0]["mediaType"], SIG_TYPE);
    let r = t
        .call(reqwest::Method::GET, &format!("alice.test/app/blobs/{ld}"))
        .await;
    assert_eq!(r.status(), 200);
    let layer_bytes = r.bytes().await.unwrap();
    assert_eq!(sha256(&layer_bytes), ld);
    let l: serde_json::Value = serde_json::from_slice(&layer_bytes).unwrap();
    assert_eq!(l["$type"], "io.atcr.atproto.signature");
    assert_eq!(l["subject"]["digest"], md.as_str());
    assert_eq!(l["subject"]["mediaType"], OCI_MANIFEST);
    assert_eq!(l["atproto"]["did"], t.alice.as_str());
    assert_eq!(l["atproto"]["recordUri"], record_uri.as_str());
    assert!(
        l["atproto"]["commitCid"]
            .as_str()
            .unwrap()
            .starts_with("bafy")
    );
    assert_eq!(l["signature"]["keyId"], format!("{}#atproto", t.alice));
    let pds = t.s.services.pds.as_ref().unwrap();
    let doc = pds.did_document(&t.alice).await.unwrap();
    assert_eq!(
        l["signature"]["publicKeyMultibase"],
        doc["verificationMethod"][0]["publicKeyMultibase"]
    );
    assert!(
        ["ECDSA-K256-SHA256", "ECDSA-P256-SHA256"]
            .contains(&l["signature"]["algorithm"].as_str().unwrap())
    );
    let prefix = format!("at://{}/io.atcr.manifest/", t.alice);
    let rkey = record_uri.strip_prefix(&prefix).unwrap();
    let (_, rec) = pds
        .get_record(&t.alice, "io.atcr.manifest", rkey)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec["digest"], md.as_str());
    assert_eq!(rec["repository"], "app");

    // Re-pushing the same manifest makes no second artifact.
    let r = t
        .put_manifest("alice.test/app", "again", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(signature_artifacts(&t, "alice.test/app", &md).await, arts);

    // A pushed signature artifact gets none of its own.
    let empty = t.push_blob("alice.test/app", b"{}").await;
    let cosig = t.push_blob("alice.test/app", b"co-signature").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIG_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": SIG_TYPE, "digest": cosig, "size": 12}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()},
    }))
    .unwrap();
    let sd = sha256(&sig);
    let r = t
        .put_manifest("alice.test/app", &sd, OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), 201);
    assert!(
        signature_artifacts(&t, "alice.test/app", &sd)
            .await
            .is_empty()
    );
    assert_eq!(
        signature_artifacts(&t, "alice.test/app", &md).await.len(),
        2
    );

    // Deleting the subject removes the registry's artifact with it.
    let r = t
        .call(
            reqwest::Method::DELETE,
            &format!("alice.test/app/manifests/{md}"),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = t
        .call(
            reqwest::Method::GET,
            &format!("alice.test/app/manifests/{}", arts[0]),
        )
        .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(
        signature_artifacts(&t, "alice.test/app", &md).await,
        vec![sd.clone()]
    );
}

//! Registry hardening (issue 12, first items): a malformed Basic header is
//! refused, an open-ended Range end does not overflow, manifests with
//! repeated keys are refused, and a data directory serves one server.

mod common;
use common::*;

const PW: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_ranges_and_manifests() {
    let s = start(&[]).await;
    let (_, tok, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "hard").await;
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

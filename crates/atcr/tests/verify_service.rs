//! The verification service in-process, against a running registry: hostile
//! and malformed requests, one verification for many containers of one
//! image, policy reload, certificate reload and client certificates.

mod common;
use atcr_verify_service::{OtherImages, Service, ServiceConfig};
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const PW: &str = "correct horse battery";

/// A service over `s`'s deployment (policy file `policy`), served over
/// plain HTTP on 127.0.0.1:0; its base URL.
async fn serve(s: &Server, policy: &Path, other: OtherImages) -> (Service, String) {
    let mut cfg = verifier_config_with_handles(s);
    cfg.cache_ttl = Some(Duration::from_secs(60));
    let svc = Service::new(
        atcr_verify::Verifier::new(cfg).unwrap(),
        ServiceConfig {
            registries: vec![s.host.clone()],
            other_images: other,
            exclude_namespaces: vec!["kube-system".into()],
            budget: Duration::from_secs(5),
            policy_path: Some(policy.to_owned()),
        },
    )
    .unwrap();
    svc.watch_policy(Duration::from_millis(100));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let router = svc.router();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    (svc, url)
}

fn review(kind: &str, object: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind}, "namespace": "t",
        "name": "x", "operation": "CREATE", "dryRun": false, "object": object,
    }})
}

fn pod(images: &[String]) -> Value {
    json!({"spec": {"containers": images.iter().enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im})).collect::<Vec<_>>()}})
}

async fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_fails_closed() {
    let s = start(&[]).await;
    owner_with_image(&s, "alice.test", PW, "pull,push", "svc").await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("p.yaml");
    std::fs::write(&policy, "version: 1.0\npolicies:\n  - scope: \"**\"\n").unwrap();
    let (_svc, url) = serve(&s, &policy, OtherImages::Deny).await;
    let validate = format!("{url}/validate");
    // Not an AdmissionReview: 400 with the reason.
    for body in [
        &b"not json"[..],
        b"{}",
        b"[]",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
    ] {
        let (st, v) = post(&validate, body.to_vec()).await;
        assert_eq!(st, 400, "{}", String::from_utf8_lossy(body));
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("malformed AdmissionReview"),
            "{v}"
        );
    }
    // A kind the service does not understand: denied, never admitted.
    let (st, v) = post(
        &validate,
        serde_json::to_vec(&review("ConfigMap", json!({"data": {}}))).unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert_eq!(v["response"]["uid"], "u-1");
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap")
    );
    // Over the API server's own 3 MiB: refused before it is parsed.
    let huge = review(
        "Pod",
        json!({"spec": {"containers": [{"name": "c", "image": "x"}]}, "junk": "x".repeat(5 << 20)}),
    );
    let (st, _) = post(&validate, serde_json::to_vec(&huge).unwrap()).await;
    assert_eq!(st, 413);
    // Odd references of the checked registry are denied as invalid; other
    // registries follow the configured default (deny here).
    for im in [
        format!("{}/UPPER/app:v1", s.host),
        format!("{}/alice.test/app@sha256:zz", s.host),
        format!("{}/alice.test", s.host),
        format!("{}/alice.test/app:bad tag", s.host),
        "nginx".into(),
        String::new(),
        "docker.io/library/nginx:1".into(),
    ] {
        let (st, v) = post(
            &validate,
            serde_json::to_vec(&review("Pod", pod(std::slice::from_ref(&im)))).unwrap(),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["response"]["allowed"], false, "{im:?}: {v}");
        let m = v["response"]["status"]["message"].as_str().unwrap();
        assert!(
            m.contains("invalid_reference") || m.contains("not_checked"),
            "{im:?}: {m}"
        );
    }
    // Excluded namespaces are admitted unchecked.
    let mut r = review("Pod", pod(&["nginx".into()]));
    r["request"]["namespace"] = json!("kube-system");
    let (_, v) = post(&validate, serde_json::to_vec(&r).unwrap()).await;
    assert_eq!(v["response"]["allowed"], true);
    // Gatekeeper: a malformed request is a systemError, keys of any shape a
    // per-key error.
    let (st, v) = post(&format!("{url}/provide"), b"{".to_vec()).await;
    assert_eq!(st, 200);
    assert!(
        v["response"]["systemError"]
            .as_str()
            .unwrap()
            .contains("malformed"),
        "{v}"
    );
    let req = json!({"apiVersion": "externaldata.gatekeeper.sh/v1beta1", "kind": "ProviderRequest",
        "request": {"keys": [format!("{}/alice.test/app:v1", s.host), format!("{}/alice.test/app:nope", s.host), "??"]}});
    let (_, v) = post(&format!("{url}/provide"), serde_json::to_vec(&req).unwrap()).await;
    let items = v["response"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["value"]["verified"], true, "{v}");
    assert!(
        items[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("image_not_found"),
        "{v}"
    );
    assert!(items[2]["error"].is_string());
    assert_eq!(v["response"]["idempotent"], true);
    // Kyverno's form: still 200 for nonsense.
    let (st, v) = post(&format!("{url}/verify"), b"[1]".to_vec()).await;
    assert_eq!((st, v["verified"].as_bool()), (200, Some(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_verification_per_image_and_policy_reload() {
    let s = start(&[]).await;
    let (_, _, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "svc").await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("p.yaml");
    std::fs::write(&policy, "version: 1.0\npolicies:\n  - scope: \"**\"\n").unwrap();
    let (_svc, url) = serve(&s, &policy, OtherImages::Allow).await;
    let image = format!("{}/alice.test/app:v1", s.host);
    // A Pod of 8 containers of one image: one verification.
    let (_, v) = post(
        &format!("{url}/validate"),
        serde_json::to_vec(&review("Pod", pod(&vec![image.clone(); 8]))).unwrap(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let metrics = get_text(&http(), &format!("{url}/metrics")).await;
    assert!(
        metrics.contains("atcr_verify_cache_lookups{outcome=\"miss\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atcr_verify_verification_seconds_count 1\n"),
        "{metrics}"
    );
    // /mutate pins it, and leaves a digest reference alone (idempotent).
    let (_, v) = post(
        &format!("{url}/mutate"),
        serde_json::to_vec(&review("Pod", pod(std::slice::from_ref(&image)))).unwrap(),
    )
    .await;
    use base64::Engine as _;
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let pinned = format!("{}/alice.test/app@{d}", s.host);
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/spec/containers/0/image", "value": pinned}])
    );
    let (_, v) = post(
        &format!("{url}/mutate"),
        serde_json::to_vec(&review("Pod", pod(&[pinned]))).unwrap(),
    )
    .await;
    assert!(v["response"].get("patch").is_none(), "{v}");
    // A stricter policy is picked up while running...
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &policy,
        "version: 1.0\npolicies:\n  - scope: \"**\"\n    minSignatures: 2\n",
    )
    .unwrap();
    let deny = async || {
        let (_, v) = post(
            &format!("{url}/validate"),
            serde_json::to_vec(&review("Pod", pod(std::slice::from_ref(&image)))).unwrap(),
        )
        .await;
        v["response"]["allowed"] == false
    };
    let mut reloaded = false;
    for _ in 0..50 {
        if deny().await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new policy was not applied");
    assert_eq!(
        http()
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // An audit-mode rule admits, with the violation as a warning (kubectl
    // prints it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &policy,
        "version: 1.0\npolicies:\n  - scope: \"**\"\n    minSignatures: 2\n    action: audit\n",
    )
    .unwrap();
    let mut warned = Value::Null;
    for _ in 0..50 {
        let (_, v) = post(
            &format!("{url}/validate"),
            serde_json::to_vec(&review("Pod", pod(std::slice::from_ref(&image)))).unwrap(),
        )
        .await;
        if v["response"]["allowed"] == true {
            warned = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = warned["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        w.contains("not_enough_signatures") && w.contains(&image),
        "{warned}"
    );
    // ...and a broken one keeps it in force, failing /readyz.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&policy, "version: 1.0\npolicies: [oops\n").unwrap();
    let mut unready = false;
    for _ in 0..50 {
        if http()
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
        {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready, "/readyz did not report the bad policy");
    let (_, v) = post(
        &format!("{url}/validate"),
        serde_json::to_vec(&review("Pod", pod(std::slice::from_ref(&image)))).unwrap(),
    )
    .await;
    assert!(
        v["response"]["warnings"][0].is_string(),
        "the previous (audit) policy is still in force: {v}"
    );
    let metrics = get_text(&http(), &format!("{url}/metrics")).await;
    assert!(metrics.contains("atcr_verify_policy_ok 0\n"), "{metrics}");
}

fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = atcr_http::client_builder(Duration::from_secs(5))
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    if let Some((crt, key)) = identity {
        let mut pem = std::fs::read(crt).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_and_client_certificates_are_checked() {
    let s = start(&[]).await;
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    make_certs(d, "one");
    make_certs(d, "two");
    make_certs(d, "client");
    let (crt, key) = (d.join("live.crt"), d.join("live.key"));
    std::fs::copy(d.join("one.crt"), &crt).unwrap();
    std::fs::copy(d.join("one.key"), &key).unwrap();
    let policy = d.join("p.yaml");
    std::fs::write(&policy, "version: 1.0\n").unwrap();
    let (svc, _) = serve(&s, &policy, OtherImages::Allow).await;
    let acceptor = atcr_serve::tls::Acceptor::new(
        &atcr_serve::tls::TlsSettings {
            cert: crt.clone(),
            key: key.clone(),
            client_ca: Some(d.join("client-ca.crt")),
            tls13_only: true,
        },
        Duration::from_millis(100),
    )
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/healthz", l.local_addr().unwrap());
    tokio::spawn(atcr_serve::serve(
        l,
        svc.router(),
        atcr_serve::Limits::default(),
        Some(acceptor),
        std::future::pending(),
    ));
    let me = (d.join("client.crt"), d.join("client.key"));
    let get = |c: reqwest::Client| {
        let url = url.clone();
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    // With a client certificate from the configured CA: served.
    assert_eq!(
        get(client(&d.join("one-ca.crt"), Some((&me.0, &me.1))))
            .await
            .unwrap(),
        200
    );
    // Without one: refused during the handshake.
    assert!(get(client(&d.join("one-ca.crt"), None)).await.is_err());
    // A client trusting only the second CA fails until the files change.
    assert!(
        get(client(&d.join("two-ca.crt"), Some((&me.0, &me.1))))
            .await
            .is_err()
    );
    std::fs::copy(d.join("two.crt"), &crt).unwrap();
    std::fs::copy(d.join("two.key"), &key).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(client(&d.join("two-ca.crt"), Some((&me.0, &me.1))))
            .await
            .ok()
            == Some(200)
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "the new certificate was not served");
}

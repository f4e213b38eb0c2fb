//! Verification under attack, against running servers: policy scopes that
//! the image's spelling cannot escape, co-signers that cannot jam or bloat
//! an image, revocation that a retried push cannot leave incomplete.

mod common;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Reason, Report, Verifier, VerifierConfig};
use common::*;
use std::sync::Arc;

const PW: &str = "correct horse battery";

/// A verifier of `s`'s deployment that resolves `*.test` handles through
/// the server (as `atcr verifier-config` sets up).
fn verifier(s: &Server) -> Verifier {
    verifier_caching(s, None)
}

/// [`verifier`] with a verdict cache of `ttl`.
fn verifier_caching(s: &Server, ttl: Option<std::time::Duration>) -> Verifier {
    let mut cfg = verifier_config_with_handles(s);
    cfg.cache_ttl = ttl;
    Verifier::new(cfg).unwrap()
}

async fn check(v: &Verifier, image: &str, policy: &TrustPolicy) -> Report {
    v.verify(&ImageRef::parse(image).unwrap(), policy)
        .await
        .unwrap_or_else(|e| panic!("{image}: {e}"))
}

fn policy(text: &str) -> TrustPolicy {
    TrustPolicy::parse("p.yaml", text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_the_name_escapes_the_strict_scope() {
    let s = start(&[]).await;
    let (alice, _, _) = owner_with_image(&s, "alice.test", PW, "pull,push", "spell").await;
    let port = s.host.rsplit_once(':').unwrap().1;
    let id = alice.strip_prefix("did:plc:").unwrap();
    let v = verifier(&s);
    // The spellings of one image: host by name, with a zero-padded port, the
    // owner as path-safe DID, raw DID and handle.
    let names = [
        format!("127.0.0.1:{port}/did-plc-{id}/app:v1"),
        format!("localhost:{port}/did-plc-{id}/app:v1"),
        format!("127.0.0.1:0{port}/did-plc-{id}/app:v1"),
        format!("LocalHost:{port}/did-plc-{id}/app:v1"),
        format!("127.0.0.1:{port}/{alice}/app:v1"),
        format!("127.0.0.1:{port}/alice.test/app:v1"),
        format!("localhost:{port}/alice.test/app:v1"),
    ];
    // Every form of the strict scope: path-safe DID, raw DID, handle.
    for scope in [
        format!("127.0.0.1:{port}/did-plc-{id}/**"),
        format!("localhost:{port}/{alice}/**"),
        format!("127.0.0.1:{port}/alice.test/**"),
    ] {
        let p = policy(&format!(
            "version: 1.0\npolicies:\n  - name: strict\n    scope: \"{scope}\"\n    minSignatures: 2\n  - name: lax\n    scope: \"**\"\n"
        ));
        for name in &names {
            let r = check(&v, name, &p).await;
            assert_eq!(
                r.policy.as_deref(),
                Some("strict"),
                "{scope} / {name}: {r:#?}"
            );
            assert_eq!(r.decision, Decision::Fail, "{scope} / {name}");
            assert_eq!(r.reasons, [Reason::NotEnoughSignatures], "{scope} / {name}");
            assert_eq!(
                r.canonical.as_deref(),
                Some(format!("127.0.0.1:{port}/{alice}/app").as_str())
            );
        }
    }
    // Host aliases declared by the policy reach the same rule.
    let p = policy(&format!(
        "version: 1.0\nregistries:\n  registry.example: [\"127.0.0.1:{port}\"]\npolicies:\n  - name: strict\n    scope: \"registry.example/*/app\"\n    minSignatures: 2\n  - name: lax\n    scope: \"**\"\n"
    ));
    let r = check(&v, &names[1], &p).await;
    assert_eq!(r.policy.as_deref(), Some("strict"), "{r:#?}");
    // The lax rule still applies to what it should.
    let lax = policy("version: 1.0\npolicies:\n  - name: lax\n    scope: \"**\"\n");
    for name in &names {
        assert_eq!(
            check(&v, name, &lax).await.decision,
            Decision::Pass,
            "{name}"
        );
    }
}

/// `atcr sign` as a child process; the output.
async fn sign(image: String, user: String, pds: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_atcr"))
            .args([
                "sign",
                &image,
                "--handle",
                &user,
                "--password",
                PW,
                "--plain-http",
            ])
            .args(["--pds", &pds])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_signer_can_push_only_one_small_exact_artifact() {
    let s = start(&[]).await;
    let (_, _, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "cosign").await;
    let bob = account(&s, "bob.test", PW).await;
    let image = format!("{}/alice.test/app@{d}", s.host);
    for _ in 0..2 {
        let out = sign(image.clone(), "bob.test".into(), s.url.clone()).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Signing twice leaves one current artifact of bob's.
    let btok = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:alice.test/app:pull,sign"],
    )
    .await;
    let listing: serde_json::Value = http()
        .get(format!("{}/v2/alice.test/app/referrers/{d}", s.url))
        .bearer_auth(&btok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bobs: Vec<_> = listing["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["io.atcr.atproto.did"] == bob.as_str())
        .collect();
    assert_eq!(bobs.len(), 1, "{listing:#}");
    let current = bobs[0]["digest"].as_str().unwrap().to_owned();
    let art = get_manifest(&s, &btok, "alice.test/app", &current).await;
    let art: serde_json::Value = serde_json::from_slice(&art).unwrap();
    // The artifact's layer is titled for `oras pull`.
    assert_eq!(
        art["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "atproto-signature.json"
    );
    let put = |body: Vec<u8>, ct: &'static str| {
        let dd = sha256(&body);
        http()
            .put(format!("{}/v2/alice.test/app/manifests/{dd}", s.url))
            .bearer_auth(&btok)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    // The genuine artifact with 3.9 MB of annotations: refused.
    let mut fat = art.clone();
    fat["annotations"]["junk"] = "x".repeat(3_900_000).into();
    expect_error(
        put(serde_json::to_vec(&fat).unwrap(), OCI).await.unwrap(),
        403,
        "DENIED",
    )
    .await;
    // One extra annotation, a second layer, `manifests`: refused.
    let mut extra = art.clone();
    extra["annotations"]["note"] = "hi".into();
    expect_error(
        put(serde_json::to_vec(&extra).unwrap(), OCI).await.unwrap(),
        403,
        "DENIED",
    )
    .await;
    let mut two = art.clone();
    let l = two["layers"][0].clone();
    two["layers"].as_array_mut().unwrap().push(l);
    expect_error(
        put(serde_json::to_vec(&two).unwrap(), OCI).await.unwrap(),
        403,
        "DENIED",
    )
    .await;
    // An OCI index carrying the signature artifact type: refused.
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "artifactType": "application/vnd.atproto.signature.v1+json",
        "manifests": [], "subject": art["subject"],
    });
    expect_error(
        put(
            serde_json::to_vec(&index).unwrap(),
            "application/vnd.oci.image.index.v1+json",
        )
        .await
        .unwrap(),
        403,
        "DENIED",
    )
    .await;
    // Nothing of that reached the listing, and the image verifies with
    // bob's co-signature.
    let v = verifier(&s);
    let p = policy(&format!(
        "version: 1.0\npolicies:\n  - scope: \"**\"\n    trustedDIDs: [owner, {bob}]\n    minSignatures: 2\n"
    ));
    let r = check(&v, &image, &p).await;
    assert_eq!(r.decision, Decision::Pass, "{r:#?}");
    assert_eq!(r.signatures.len(), 2, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_co_signer_fails_only_its_own_signature() {
    // carol's PDS is on loopback: allowed explicitly (a DID document may
    // not otherwise send the registry there).
    let s = start(&[("ATCR_REGISTRY_REMOTE_PDS_ALLOW", "127.0.0.0/8".into())]).await;
    let (alice, _, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "remote").await;
    // carol's account lives on another server (her PDS), registered in the
    // first one's PLC directory.
    let s2 = start(&[
        ("ATCR_PLC_EMBEDDED", "false".into()),
        ("ATCR_PLC_URL", format!("{}/plc", s.url)),
    ])
    .await;
    let carol = account(&s2, "carol.test", PW).await;
    let image = format!("{}/{}/app@{d}", s.host, path_did(&alice));
    // carol logs in to the registry by DID (her handle has no DNS here) and
    // co-signs; the registry checks her record with a proof from her PDS.
    let out = sign(image.clone(), carol.clone(), s2.url.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = verifier(&s);
    let needs_carol = policy(&format!(
        "version: 1.0\npolicies:\n  - scope: \"**\"\n    trustedDIDs: [owner, {carol}]\n    minSignatures: 2\n"
    ));
    let r = check(&v, &image, &needs_carol).await;
    assert_eq!(r.decision, Decision::Pass, "{r:#?}");
    // Her PDS goes away.
    drop(s2);
    // (with the verdict cache on, as the service runs it)
    let v = verifier_caching(&s, Some(std::time::Duration::from_secs(60)));
    let owner_only =
        policy("version: 1.0\npolicies:\n  - scope: \"**\"\n    trustedDIDs: [owner]\n");
    for (p, what) in [
        (&TrustPolicy::owner_only(), "default policy"),
        (&owner_only, "a policy that does not trust carol"),
    ] {
        let r = check(&v, &image, p).await;
        assert_eq!(r.decision, Decision::Pass, "{what}: {r:#?}");
        let c = r.signatures.iter().find(|x| x.kind == "cosign").unwrap();
        assert_eq!(c.reason, Some(Reason::Unreachable), "{what}");
        assert!(!c.valid);
    }
    // A verdict with an unreachable signature is never served from the
    // cache: each verification above asked again.
    assert_eq!(v.cache_stats(), (0, 2));
    // Where carol is required, the image fails (exit 1), it does not become
    // "could not complete" (exit 3).
    let r = check(&v, &image, &needs_carol).await;
    assert_eq!(r.decision, Decision::Fail, "{r:#?}");
    assert_eq!(r.exit_code(), 1);
    assert_eq!(r.reasons, [Reason::NotEnoughSignatures]);
}

/// A registry that keeps answering as it did before (a stale mirror, or a
/// hostile one): registry URLs from a recording, everything else live.
struct StaleRegistry {
    registry: String,
    recorded: std::collections::BTreeMap<String, atcr_fetch::Recorded>,
    live: atcr_fetch::Online,
}

impl atcr_fetch::Fetch for StaleRegistry {
    fn get<'a>(
        &'a self,
        req: atcr_fetch::Request<'a>,
    ) -> atcr_fetch::BoxFut<'a, Result<atcr_fetch::Response, atcr_fetch::FetchError>> {
        if req.url.starts_with(&format!("{}/v2/", self.registry)) {
            let r = self.recorded.get(req.url).cloned();
            return Box::pin(async move {
                match r {
                    Some(atcr_fetch::Recorded::Http { status, body }) => Ok(atcr_fetch::Response {
                        status,
                        body,
                        www_authenticate: None,
                    }),
                    _ => Err(atcr_fetch::FetchError::NotRecorded(req.url.into())),
                }
            });
        }
        self.live.get(req)
    }
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> atcr_fetch::BoxFut<'a, Result<Vec<String>, atcr_fetch::FetchError>> {
        self.live.txt(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_image_stays_revoked_whatever_records_a_retry_left() {
    let s = start(&[]).await;
    let (alice, tok, d) =
        owner_with_image(&s, "alice.test", PW, "pull,push,delete", "revoke").await;
    let pds = s.services.pds.as_ref().unwrap();
    // A second record of the same digest, as a retried push made before
    // record keys were deterministic (or a remote PDS that committed and
    // timed out) left behind, with an artifact pointing at it.
    let (_, _, original) = pds
        .list_records(&alice, "io.atcr.manifest", 10, None, false)
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|(_, _, v)| v["digest"] == d.as_str())
        .unwrap();
    let dup = pds
        .write(
            &alice,
            vec![atcr_pds::Write::Create {
                collection: "io.atcr.manifest".into(),
                rkey: None,
                record: original,
            }],
            None,
        )
        .await
        .unwrap();
    let dup_uri = dup.results[0].0.clone();
    let layer = atcr_oci::signature::SignatureLayer {
        type_: atcr_oci::signature::SIGNATURE_LAYER_TYPE.into(),
        version: "1.0".into(),
        subject: atcr_oci::signature::SignatureSubject {
            digest: d.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        },
        atproto: atcr_oci::signature::AtprotoPointer {
            did: alice.clone(),
            handle: None,
            pds_endpoint: s.url.clone(),
            record_uri: dup_uri,
            commit_cid: String::new(),
            signed_at: "2026-01-01T00:00:00Z".into(),
        },
        signature: atcr_oci::signature::SignatureKey {
            algorithm: "ECDSA-K256-SHA256".into(),
            key_id: format!("{alice}#atproto"),
            public_key_multibase: String::new(),
        },
    };
    let m = get_manifest(&s, &tok, "alice.test/app", &d).await;
    let built = atcr_oci::signature::build_artifact(
        &layer,
        atcr_oci::manifest::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: atcr_oci::Digest::parse(&d).unwrap(),
            size: m.len() as u64,
            artifact_type: None,
            annotations: Default::default(),
        },
        false,
    );
    for (_, b) in &built.blobs {
        push_blob(&s, &tok, "alice.test/app", b).await;
    }
    let r = http()
        .put(format!(
            "{}/v2/alice.test/app/manifests/{}",
            s.url, built.digest
        ))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(built.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Before the delete both signatures verify; record what the registry says.
    let image = ImageRef::parse(&format!("{}/{}/app@{d}", s.host, path_did(&alice))).unwrap();
    let recording = Verifier::new(VerifierConfig {
        record: true,
        ..verifier_config(&s, None)
    })
    .unwrap();
    let (r, bundle) = recording
        .export(&image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Pass, "{r:#?}");
    assert_eq!(r.signatures.iter().filter(|x| x.valid).count(), 2, "{r:#?}");
    // The owner deletes the image by digest.
    let del = http()
        .delete(format!("{}/v2/alice.test/app/manifests/{d}", s.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);
    let left: Vec<_> = pds
        .list_records(&alice, "io.atcr.manifest", 100, None, false)
        .await
        .unwrap()
        .0
        .into_iter()
        .filter(|(_, _, v)| v["digest"] == d.as_str())
        .collect();
    assert!(left.is_empty(), "records left: {left:?}");
    // A registry that still serves the deleted bytes and both artifacts
    // cannot make it verify: every record is gone from the owner's PDS.
    let stale = StaleRegistry {
        registry: s.url.clone(),
        recorded: bundle.resources,
        live: atcr_fetch::Online::new(&Default::default()).unwrap(),
    };
    let v = Verifier::with_fetch(verifier_config(&s, None), Arc::new(stale)).unwrap();
    let r = v.verify(&image, &TrustPolicy::owner_only()).await.unwrap();
    assert_eq!(r.decision, Decision::Fail, "{r:#?}");
    assert_eq!(r.signatures.len(), 2);
    assert!(
        r.signatures
            .iter()
            .all(|x| x.reason == Some(Reason::Revoked)),
        "{r:#?}"
    );
}

/// Issue 13, item 2 (in part): `atcr sign` takes the credentials `docker
/// login` stored for the registry (no `--password`), and without any says
/// how to give them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_uses_the_credentials_docker_stored() {
    use base64::Engine as _;
    let s = start(&[]).await;
    let (_, _, d) = owner_with_image(&s, "alice.test", PW, "pull,push", "docker-creds").await;
    account(&s, "bob.test", PW).await;
    let image = format!("{}/alice.test/app@{d}", s.host);
    let docker = tempfile::tempdir().unwrap();
    let sign_with = |dir: &std::path::Path, extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_atcr"));
        c.args(["sign", &image, "--plain-http"])
            .args(extra)
            .env("DOCKER_CONFIG", dir)
            .env_remove("ATCR_SIGN_HANDLE")
            .env_remove("ATCR_SIGN_PASSWORD")
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    // Nothing stored, no flags: refused with the way out.
    let out = sign_with(docker.path(), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("docker login"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What `docker login HOST -u bob.test` writes.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("bob.test:{PW}"));
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, s.host),
    )
    .unwrap();
    let out = sign_with(docker.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // bob's co-signature is attached.
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull"],
    )
    .await;
    assert_eq!(
        signature_referrers(&s, &tok, "alice.test/app", &d)
            .await
            .len(),
        2
    );
}

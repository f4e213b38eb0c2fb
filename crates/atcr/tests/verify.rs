//! `atcr-verify` against a running registry with its embedded PDS and PLC:
//! images verify from DID documents and record proofs, and each way the
//! chain can break is rejected with its own reason.

mod common;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Reason, Report, Verifier, VerifierConfig};
use common::*;

const PW: &str = "correct horse battery";

fn verifier(s: &Server, user: &str) -> Verifier {
    Verifier::new(verifier_config(s, Some((user, PW)))).unwrap()
}

async fn verify(v: &Verifier, image: &str) -> Report {
    v.verify(&ImageRef::parse(image).unwrap(), &TrustPolicy::owner_only())
        .await
        .unwrap()
}

fn assert_pass(r: &Report) {
    assert_eq!(r.decision, Decision::Pass, "{r:#?}");
    assert!(r.reasons.is_empty());
    let owner = r.signatures.iter().find(|s| s.kind == "owner").unwrap();
    assert!(owner.valid && owner.trusted);
    assert!(owner.commit_cid.is_some() && owner.record_cid.is_some() && owner.signed_at.is_some());
}

fn assert_fail(r: &Report, reason: Reason) {
    assert_eq!(r.decision, Decision::Fail, "{r:#?}");
    assert_eq!(r.reasons.first(), Some(&reason), "{r:#?}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_images_verify_for_k256_and_p256_and_after_key_rotation() {
    let s = start(&[]).await;
    let pds = s.services.pds.as_ref().unwrap();
    for (handle, alg) in [
        ("kay.test", atcr_crypto::Algorithm::K256),
        ("pea.test", atcr_crypto::Algorithm::P256),
    ] {
        let did = pds
            .create_account(handle, Some(PW.into()), Some(alg))
            .await
            .unwrap()
            .did;
        let tok = token(
            &s,
            Some((handle, PW)),
            &[&format!("repository:{handle}/app:pull,push")],
        )
        .await;
        let digest = push_image(&s, &tok, &format!("{handle}/app"), "v1", handle).await;
        let v = verifier(&s, handle);
        let by_tag = format!("{}/{}/app:v1", s.host, path_did(&did));
        let r = verify(&v, &by_tag).await;
        assert_pass(&r);
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert!(r.tag.as_ref().unwrap().valid);
        assert_eq!(r.owner.as_ref().unwrap().did, did);
        let r = verify(&v, &format!("{}/{}/app@{digest}", s.host, path_did(&did))).await;
        assert_pass(&r);
        assert!(r.tag.is_none());

        // The owner's key is rotated: the head commit is re-signed with the
        // new key, and the image still verifies against the new document.
        pds.rotate_key(&did, None).await.unwrap();
        let fresh = verifier(&s, handle);
        assert_pass(&verify(&fresh, &by_tag).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chains_are_rejected_with_their_reason() {
    // Records are changed behind the registry's back below: it must keep
    // serving what the owner no longer signs (as a stale or hostile registry
    // would), so the verifier's refusal is what is tested. It does not
    // follow the PDS.
    let s = start(&[("ATCR_REGISTRY_FOLLOW_PDS", "false".into())]).await;
    let pds = s.services.pds.as_ref().unwrap();
    let did = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    let d2 = push_image(&s, &tok, "alice.test/app", "v2", "two").await;
    let v = verifier(&s, "alice.test");
    let name = format!("{}/{}/app", s.host, path_did(&did));
    assert_pass(&verify(&v, &format!("{name}:v1")).await);

    // The owner's tag record names another digest than the registry serves
    // (a registry answering a tag with a digest the owner never signed).
    let (_, tag) = pds
        .get_record(&did, "io.atcr.tag", "app:v1")
        .await
        .unwrap()
        .unwrap();
    let mut forged = tag.clone();
    forged["manifestDigest"] = serde_json::Value::String(d2.clone());
    pds.write(
        &did,
        vec![atcr_pds::Write::Put {
            collection: "io.atcr.tag".into(),
            rkey: "app:v1".into(),
            record: forged,
            swap: None,
        }],
        None,
    )
    .await
    .unwrap();
    let r = verify(&v, &format!("{name}:v1")).await;
    assert_fail(&r, Reason::TagMismatch);
    assert_eq!(
        r.tag.as_ref().unwrap().signed_digest.as_deref(),
        Some(d2.as_str())
    );

    // A tag the owner never signed at all.
    delete_record(&s, &did, "io.atcr.tag", "app:v1").await;
    assert_fail(
        &verify(&v, &format!("{name}:v1")).await,
        Reason::TagNotSigned,
    );

    // The manifest record is deleted from the PDS: revoked, even though the
    // registry still serves the image and its artifact.
    let art = artifact_layer(&s, &tok, "alice.test/app", &d1).await;
    let uri = art["atproto"]["recordUri"].as_str().unwrap();
    let rkey = uri.rsplit('/').next().unwrap();
    delete_record(&s, &did, "io.atcr.manifest", rkey).await;
    let r = verify(&v, &format!("{name}@{d1}")).await;
    assert_fail(&r, Reason::Revoked);
    assert_eq!(r.signatures[0].reason, Some(Reason::Revoked));

    // An image with no signature artifact at all.
    let d3 = push_image(&s, &tok, "alice.test/app", "v3", "three").await;
    assert_pass(&verify(&v, &format!("{name}@{d3}")).await);
    assert!(matches!(
        v.verify(
            &ImageRef::parse(&format!("{name}@sha256:{}", "0".repeat(64))).unwrap(),
            &TrustPolicy::owner_only()
        )
        .await,
        Ok(r) if r.reasons == [Reason::ImageNotFound]
    ));
}

/// The registry's signature layer for `digest`.
async fn artifact_layer(s: &Server, tok: &str, name: &str, digest: &str) -> serde_json::Value {
    let c = http();
    let get = |p: String| {
        c.get(format!("{}/v2/{name}/{p}", s.url))
            .bearer_auth(tok)
            .send()
    };
    let arts = signature_referrers(s, tok, name, digest).await;
    let art: serde_json::Value = get(format!("manifests/{}", arts[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    get(format!(
        "blobs/{}",
        art["layers"][0]["digest"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_bundles_verify_offline_and_tampering_fails() {
    let s = start(&[]).await;
    let did = account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    push_image(&s, &tok, "alice.test/app", "v1", "offline").await;
    let image = ImageRef::parse(&format!("{}/{}/app:v1", s.host, path_did(&did))).unwrap();
    let cfg = VerifierConfig {
        record: true,
        ..verifier_config(&s, Some(("alice.test", PW)))
    };
    let (report, bundle) = Verifier::new(cfg.clone())
        .unwrap()
        .export(&image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    assert_pass(&report);
    let bytes = serde_json::to_vec(&bundle).unwrap();
    // Every server stops: the registry, the PDS and the PLC directory.
    drop(s);
    let offline = |b: atcr_verify::bundle::Bundle| {
        let mut c = cfg.clone();
        c.record = false;
        c.offline = Some(b);
        Verifier::new(c).unwrap()
    };
    let parsed = atcr_verify::bundle::Bundle::parse(&bytes).unwrap();
    let r = offline(parsed.clone())
        .verify(&image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    assert_pass(&r);
    assert_eq!(r.digest, report.digest);

    // One byte changed anywhere in the file: refused.
    let mut edited = String::from_utf8(bytes.clone()).unwrap();
    let at = edited.find("\"exportedAt\":\"").unwrap() + 14;
    let c = if &edited[at..at + 1] == "1" { "2" } else { "1" };
    edited.replace_range(at..at + 1, c);
    assert!(matches!(
        atcr_verify::bundle::Bundle::parse(edited.as_bytes()),
        Err(atcr_verify::VerifyError::BundleModified)
    ));
    // One byte changed inside the owner's record proof, digest recomputed:
    // the proof itself fails.
    let mut resources = parsed.resources.clone();
    let (url, proof) = resources
        .iter_mut()
        .find(|(u, _)| u.contains("sync.getRecord") && u.contains("io.atcr.manifest"))
        .unwrap();
    let body = proof.body_mut().unwrap();
    let n = body.len();
    body[n - 10] ^= 1;
    let url = url.clone();
    let forged =
        atcr_verify::bundle::Bundle::new(parsed.image.clone(), parsed.plc_url.clone(), resources);
    let r = offline(forged)
        .verify(&image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Fail, "{url}: {r:#?}");
    assert!(
        matches!(
            r.signatures[0].reason,
            Some(Reason::ProofInvalid | Reason::BadCommitSignature)
        ),
        "{r:#?}"
    );
    // Asking the bundle for an image it does not hold: could not complete.
    let other = ImageRef::parse(&format!("{}/{}/app:v2", image.host, path_did(&did))).unwrap();
    let e = offline(parsed)
        .verify(&other, &TrustPolicy::owner_only())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_pointing_at_the_wrong_record_are_rejected() {
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    let bob = account(&s, "bob.test", PW).await;
    let scopes = [
        "repository:alice.test/app:pull,push,delete",
        "repository:alice.test/other:pull,push,delete",
    ];
    let tok = token(&s, Some(("alice.test", PW)), &scopes).await;
    let btok = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:bob.test/app:pull,push"],
    )
    .await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    let d2 = push_image(&s, &tok, "alice.test/app", "v2", "two").await;
    // The same image in alice's other repository, and in bob's.
    let same = push_image(&s, &tok, "alice.test/other", "v1", "one").await;
    assert_eq!(same, d1);
    push_image(&s, &btok, "bob.test/app", "v1", "one").await;
    let v = verifier(&s, "alice.test");
    let name = format!("{}/{}/app", s.host, path_did(&alice));
    let genuine = artifact_layer(&s, &tok, "alice.test/app", &d1).await;
    detach_registry_artifact(&s, &tok, "alice.test/app", &d1).await;
    assert_fail(
        &verify(&v, &format!("{name}@{d1}")).await,
        Reason::NoSignatures,
    );

    let cases: Vec<(&str, serde_json::Value, Reason)> = vec![
        (
            "artifact naming another DID (bob's record of the same image)",
            {
                let l = artifact_layer(&s, &btok, "bob.test/app", &d1).await;
                assert_eq!(l["atproto"]["did"], bob.as_str());
                l
            },
            Reason::DidMismatch,
        ),
        (
            "record digest differs from the image digest",
            artifact_layer(&s, &tok, "alice.test/app", &d2).await,
            Reason::DigestMismatch,
        ),
        (
            "record of another repository",
            artifact_layer(&s, &tok, "alice.test/other", &d1).await,
            Reason::RepositoryMismatch,
        ),
        (
            "record URI and DID disagree",
            {
                let mut l = genuine.clone();
                l["atproto"]["did"] = serde_json::Value::String(bob.clone());
                l
            },
            Reason::ArtifactInvalid,
        ),
        (
            "record of a collection that signs nothing",
            {
                let mut l = genuine.clone();
                let uri = l["atproto"]["recordUri"]
                    .as_str()
                    .unwrap()
                    .replace("io.atcr.manifest", "io.atcr.tag");
                l["atproto"]["recordUri"] = serde_json::Value::String(uri);
                l
            },
            Reason::ArtifactInvalid,
        ),
    ];
    for (what, layer, reason) in cases {
        let a = attach(&s, &tok, "alice.test/app", &d1, &layer).await;
        let r = verify(&v, &format!("{name}@{d1}")).await;
        assert_fail(&r, reason);
        assert!(r.signatures.iter().all(|s| !s.valid), "{what}: {r:#?}");
        // Remove it before the next case.
        let c = http();
        let resp = c
            .delete(format!("{}/v2/alice.test/app/manifests/{a}", s.url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{what}");
    }
    // The genuine pointer, re-attached by hand, verifies again.
    attach(&s, &tok, "alice.test/app", &d1, &genuine).await;
    assert_pass(&verify(&v, &format!("{name}@{d1}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_signed_images_meet_min_signatures_and_forged_cosignatures_are_refused() {
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    let bob = account(&s, "bob.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let d1 = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    let v = verifier(&s, "alice.test");
    let image = format!("{}/{}/app@{d1}", s.host, path_did(&alice));
    let policy = TrustPolicy::parse(
        "p.yaml",
        &format!("version: 1.0\npolicies:\n  - name: two\n    scope: \"**\"\n    trustedDIDs: [owner, {bob}]\n    minSignatures: 2\n"),
    )
    .unwrap();
    let check = |p: &TrustPolicy| {
        let (v, p, image) = (&v, p.clone(), image.clone());
        async move {
            v.verify(&ImageRef::parse(&image).unwrap(), &p)
                .await
                .unwrap()
        }
    };
    assert_fail(&check(&policy).await, Reason::NotEnoughSignatures);

    // bob co-signs with the CLI.
    let sign = |img: String| {
        let url = s.url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_atcr"))
                .args([
                    "sign",
                    &img,
                    "--handle",
                    "bob.test",
                    "--password",
                    PW,
                    "--plain-http",
                ])
                .args(["--pds", &url, "--note", "reviewed"])
                .output()
                .unwrap()
        })
    };
    let out = sign(format!("{}/alice.test/app:v1", s.host)).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = check(&policy).await;
    assert_eq!(r.decision, Decision::Pass, "{r:#?}");
    let cosig = r.signatures.iter().find(|x| x.kind == "cosign").unwrap();
    assert!(cosig.valid && cosig.trusted && cosig.did == bob);
    assert_pass(&r);

    // The registry refuses what bob may not push with his `sign` scope.
    let btok = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:alice.test/app:pull,sign"],
    )
    .await;
    let c = http();
    let put = |body: Vec<u8>| {
        let d = sha256(&body);
        c.put(format!("{}/v2/alice.test/app/manifests/{d}", s.url))
            .bearer_auth(&btok)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    // An ordinary image: denied.
    let plain = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [],
    }))
    .unwrap();
    expect_error(put(plain).await.unwrap(), 403, "DENIED").await;
    // A signature artifact naming a record bob never wrote: denied.
    let layer = serde_json::to_vec(&serde_json::json!({
        "$type": "io.atcr.atproto.signature", "version": "1.0",
        "subject": {"digest": d1, "mediaType": "application/vnd.oci.image.manifest.v1+json"},
        "atproto": {"did": bob, "pdsEndpoint": s.url, "recordUri": format!("at://{bob}/io.atcr.signature/3mzzzzzzzzzz2"),
                    "commitCid": "", "signedAt": "2026-01-01T00:00:00Z"},
        "signature": {"algorithm": "ECDSA-K256-SHA256", "keyId": format!("{bob}#atproto"), "publicKeyMultibase": ""},
    }))
    .unwrap();
    use base64::Engine as _;
    let forged = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.atproto.signature.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.atproto.signature.v1+json", "digest": sha256(&layer),
                    "size": layer.len(), "data": base64::engine::general_purpose::STANDARD.encode(&layer)}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d1, "size": 10},
    }))
    .unwrap();
    expect_error(put(forged).await.unwrap(), 403, "DENIED").await;
    // Without the sign scope, nothing at all.
    let pull_only = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:alice.test/app:pull"],
    )
    .await;
    let r = c
        .put(format!(
            "{}/v2/alice.test/app/manifests/{}",
            s.url,
            sha256(b"x")
        ))
        .bearer_auth(&pull_only)
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // bob withdraws his signature: the policy is no longer met.
    let rkey = cosig.record_uri.rsplit('/').next().unwrap();
    delete_record(&s, &bob, "io.atcr.signature", rkey).await;
    let r = check(&policy).await;
    assert_fail(&r, Reason::NotEnoughSignatures);
    assert!(
        r.signatures
            .iter()
            .any(|x| x.reason == Some(Reason::Revoked))
    );
}

/// Replaces the owner's manifest-record proof in a bundle with `forge(roots,
/// blocks)` and re-seals the bundle (so only the cryptography can object).
fn forge_proof(
    b: &atcr_verify::bundle::Bundle,
    forge: impl FnOnce(atcr_data::Cid, atcr_repo::BlockMap) -> Vec<u8>,
) -> atcr_verify::bundle::Bundle {
    let mut resources = b.resources.clone();
    let proof = resources
        .iter_mut()
        .find(|(u, _)| u.contains("sync.getRecord") && u.contains("io.atcr.manifest"))
        .map(|(_, r)| r)
        .unwrap();
    let body = proof.body_mut().unwrap();
    let (roots, blocks) = atcr_repo::read_car(body).unwrap();
    *body = forge(roots[0], blocks);
    atcr_verify::bundle::Bundle::new(b.image.clone(), b.plc_url.clone(), resources)
}

/// A CAR of `blocks` with the commit replaced by `commit` (new root).
fn with_commit(old: atcr_data::Cid, blocks: &atcr_repo::BlockMap, commit: Vec<u8>) -> Vec<u8> {
    let cid = atcr_data::cid_for_cbor(&commit);
    let mut all: Vec<(atcr_data::Cid, Vec<u8>)> = vec![(cid, commit)];
    for (c, b) in blocks.sorted().into_values() {
        if c != old {
            all.push((c, b.to_vec()));
        }
    }
    atcr_repo::write_car(&[cid], all.iter().map(|(c, b)| (c, &b[..])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_commits_nodes_and_identities_are_rejected() {
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    account(&s, "bob.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let btok = token(
        &s,
        Some(("bob.test", PW)),
        &["repository:bob.test/app:pull,push"],
    )
    .await;
    let d = push_image(&s, &tok, "alice.test/app", "v1", "one").await;
    push_image(&s, &btok, "bob.test/app", "v1", "one").await;
    let bob_did = s
        .services
        .pds
        .as_ref()
        .unwrap()
        .lookup_did("bob.test")
        .await
        .unwrap();
    let recording = |user: &str| {
        Verifier::new(VerifierConfig {
            record: true,
            ..verifier_config(&s, Some((user, PW)))
        })
        .unwrap()
    };
    let image = ImageRef::parse(&format!("{}/{}/app@{d}", s.host, path_did(&alice))).unwrap();
    let (r, bundle) = recording("alice.test")
        .export(&image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    assert_pass(&r);
    let bob_image = ImageRef::parse(&format!("{}/{}/app@{d}", s.host, path_did(&bob_did))).unwrap();
    let (_, bob_bundle) = recording("bob.test")
        .export(&bob_image, &TrustPolicy::owner_only())
        .await
        .unwrap();
    drop(s);
    let offline = |b: atcr_verify::bundle::Bundle, image: &ImageRef| {
        let image = image.clone();
        async move {
            let v = Verifier::new(VerifierConfig {
                offline: Some(b),
                ..Default::default()
            })
            .unwrap();
            v.verify(&image, &TrustPolicy::owner_only()).await.unwrap()
        }
    };
    assert_pass(&offline(bundle.clone(), &image).await);

    // The commit re-signed by a key that is not in alice's DID document.
    let forged = forge_proof(&bundle, |root, blocks| {
        let c = atcr_repo::Commit::from_bytes(blocks.get(&root).unwrap()).unwrap();
        let other = atcr_crypto::Keypair::generate(atcr_crypto::Algorithm::K256);
        with_commit(root, &blocks, c.resign(&other).to_bytes())
    });
    let r = offline(forged, &image).await;
    assert_fail(&r, Reason::BadCommitSignature);

    // The same signature in its high-S form.
    let forged = forge_proof(&bundle, |root, blocks| {
        let mut v = atcr_data::from_cbor(blocks.get(&root).unwrap()).unwrap();
        let atcr_data::Value::Map(m) = &mut v else {
            panic!("commit is a map")
        };
        let Some(atcr_data::Value::Bytes(sig)) = m.get("sig").cloned() else {
            panic!("sig")
        };
        let low = k256::ecdsa::Signature::from_slice(&sig).unwrap();
        let (r, s) = low.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        assert_ne!(high.to_bytes().to_vec(), sig);
        m.insert(
            "sig".into(),
            atcr_data::Value::Bytes(high.to_bytes().to_vec()),
        );
        with_commit(root, &blocks, atcr_data::to_cbor(&v))
    });
    assert_fail(&offline(forged, &image).await, Reason::BadCommitSignature);

    // One MST node tampered with (its CID kept).
    let forged = forge_proof(&bundle, |root, blocks| {
        let c = atcr_repo::Commit::from_bytes(blocks.get(&root).unwrap()).unwrap();
        let mut all: Vec<(atcr_data::Cid, Vec<u8>)> = vec![];
        for (cid, b) in blocks.sorted().into_values() {
            let mut b = b.to_vec();
            if cid == c.data {
                let n = b.len();
                b[n - 3] ^= 0x01;
            }
            all.push((cid, b));
        }
        atcr_repo::write_car(&[root], all.iter().map(|(c, b)| (c, &b[..])))
    });
    assert_fail(&offline(forged, &image).await, Reason::ProofInvalid);

    // A valid proof, but taken from bob's repository (same image, his record).
    let bob_proof = bob_bundle
        .resources
        .iter()
        .find(|(u, _)| u.contains("sync.getRecord") && u.contains("io.atcr.manifest"))
        .and_then(|(_, r)| r.body().map(<[u8]>::to_vec))
        .unwrap();
    let forged = forge_proof(&bundle, |_, _| bob_proof);
    assert_fail(&offline(forged, &image).await, Reason::ProofInvalid);

    // A handle whose DID document does not point back: mallory.test claims
    // alice's DID, which does not list mallory.test.
    let mut resources = bundle.resources.clone();
    resources.insert(
        atcr_fetch::txt_key("_atproto.mallory.test"),
        atcr_fetch::Recorded::Txt {
            txt: vec![format!("did={alice}")],
        },
    );
    let lying =
        atcr_verify::bundle::Bundle::new(bundle.image.clone(), bundle.plc_url.clone(), resources);
    let mallory = ImageRef::parse(&format!("{}/mallory.test/app@{d}", image.host)).unwrap();
    assert_fail(&offline(lying, &mallory).await, Reason::HandleMismatch);
}

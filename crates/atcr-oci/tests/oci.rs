use atcr_oci::manifest::{self, ManifestKind, parse_manifest};
use atcr_oci::{
    Digest, DigestAlgorithm, DigestHasher, ErrorCode, Owner, Reference, RegistryError, RepoName,
};
use proptest::prelude::*;
use serde_json::json;

const PLC: &str = "ewvi7nxzyoun6zhxrhs64oiz";

fn code(r: Result<impl std::fmt::Debug, RegistryError>) -> ErrorCode {
    r.unwrap_err().code
}

#[test]
fn names_with_handles_and_dids() {
    let n = RepoName::parse("alice.example.com/team/app").unwrap();
    assert!(matches!(n.owner(), Owner::Handle(h) if h.as_str() == "alice.example.com"));
    assert_eq!(n.repo(), "team/app");
    assert_eq!(n.to_string(), "alice.example.com/team/app");
    let n = RepoName::parse(&format!("did-plc-{PLC}/app")).unwrap();
    assert!(matches!(n.owner(), Owner::Did(d) if d.as_str() == format!("did:plc:{PLC}")));
    let n = RepoName::parse("did-web-registry.example.com/tools/cli").unwrap();
    assert!(matches!(n.owner(), Owner::Did(d) if d.as_str() == "did:web:registry.example.com"));
    let n = RepoName::parse(&format!("did:plc:{PLC}/app")).unwrap();
    assert!(matches!(n.owner(), Owner::Did(_)));
    for ok in ["a.test/a__b", "a.test/a--b", "a.test/a.b_c-d/e", "a.test/0"] {
        assert!(RepoName::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "app",
        "alice/app",
        "Alice.test/app",
        "alice.test/App",
        "alice.test/",
        "alice.test/a..b",
        "alice.test/a___b",
        "alice.test/a-.b",
        "alice.test/-a",
        "alice.test//a",
        "did-plc-short/app",
        "did-web-/app",
        "did:nope/app",
        &format!("alice.test/{}", "a".repeat(250)),
    ] {
        assert_eq!(code(RepoName::parse(bad)), ErrorCode::NameInvalid, "{bad}");
    }
}

#[test]
fn references_tags_and_digests() {
    assert_eq!(
        Reference::parse("v1.2.3-rc_1").unwrap(),
        Reference::Tag("v1.2.3-rc_1".into())
    );
    assert!(matches!(
        Reference::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
        Reference::Digest(_)
    ));
    assert_eq!(code(Reference::parse("-bad")), ErrorCode::ManifestInvalid);
    assert_eq!(
        code(Reference::parse(&"a".repeat(129))),
        ErrorCode::ManifestInvalid
    );
    for bad in [
        "sha256:abc".to_owned(),
        "sha256:".to_owned() + &"A".repeat(64),
        "md5:".to_owned() + &"a".repeat(32),
        "sha512:".to_owned() + &"a".repeat(64),
    ] {
        assert_eq!(code(Digest::parse(&bad)), ErrorCode::DigestInvalid, "{bad}");
    }
    assert_eq!(
        Digest::parse(&format!("sha512:{}", "0".repeat(128)))
            .unwrap()
            .algorithm(),
        DigestAlgorithm::Sha512
    );
    // Known vector: SHA-256 of the empty string, streamed.
    let mut h = DigestHasher::new(DigestAlgorithm::Sha256);
    h.update(b"");
    assert_eq!(
        h.finish().to_string(),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn error_bodies_follow_the_spec() {
    let e = RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
        .with_detail(json!({"digest": "x"}));
    assert_eq!(e.status, 404);
    assert_eq!(
        e.body(),
        json!({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": {"digest": "x"}}]})
    );
    assert_eq!(RegistryError::new(ErrorCode::Unauthorized, "").status, 401);
    assert_eq!(RegistryError::new(ErrorCode::Denied, "").status, 403);
}

fn desc(mt: &str, n: u8) -> serde_json::Value {
    json!({"mediaType": mt, "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)), "size": 100 + n as u64})
}

#[test]
fn image_index_artifact_and_docker_manifests() {
    let img = json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": desc("application/vnd.oci.image.config.v1+json", 1), "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", 2), desc("application/vnd.oci.image.layer.v1.tar+gzip", 3)]});
    let p = parse_manifest(img.to_string().as_bytes(), Some(manifest::OCI_MANIFEST)).unwrap();
    assert_eq!(p.kind, ManifestKind::Image);
    assert_eq!(p.required_blobs().count(), 3);
    assert_eq!(
        p.effective_artifact_type().as_deref(),
        Some("application/vnd.oci.image.config.v1+json")
    );

    let docker = json!({"schemaVersion": 2, "mediaType": manifest::DOCKER_MANIFEST, "config": desc("application/vnd.docker.container.image.v1+json", 1), "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", 2)]});
    assert_eq!(
        parse_manifest(docker.to_string().as_bytes(), None)
            .unwrap()
            .media_type,
        manifest::DOCKER_MANIFEST
    );

    let index = json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [desc(manifest::OCI_MANIFEST, 4), desc(manifest::OCI_MANIFEST, 5)]});
    let p = parse_manifest(index.to_string().as_bytes(), Some(manifest::OCI_INDEX)).unwrap();
    assert_eq!(p.kind, ManifestKind::Index);
    assert_eq!(p.required_manifests().count(), 2);
    let list = json!({"schemaVersion": 2, "mediaType": manifest::DOCKER_MANIFEST_LIST, "manifests": [desc(manifest::DOCKER_MANIFEST, 4)]});
    assert_eq!(
        parse_manifest(list.to_string().as_bytes(), None)
            .unwrap()
            .kind,
        ManifestKind::Index
    );

    let artifact = json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "artifactType": "application/vnd.atproto.signature.v1+json",
        "config": {"mediaType": manifest::OCI_EMPTY, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [desc("application/vnd.atproto.signature.v1+json", 6)], "subject": desc(manifest::OCI_MANIFEST, 7),
        "annotations": {"io.atcr.atproto.did": "did:plc:x"}});
    let p = parse_manifest(artifact.to_string().as_bytes(), None).unwrap();
    assert_eq!(
        p.effective_artifact_type().as_deref(),
        Some("application/vnd.atproto.signature.v1+json")
    );
    assert_eq!(p.subject.unwrap().size, 107);
    assert_eq!(p.annotations["io.atcr.atproto.did"], "did:plc:x");
    // No mediaType anywhere: inferred from the shape.
    let bare = json!({"schemaVersion": 2, "manifests": []});
    assert_eq!(
        parse_manifest(bare.to_string().as_bytes(), Some("application/json"))
            .unwrap()
            .kind,
        ManifestKind::Index
    );
}

#[test]
fn invalid_manifests_are_refused_with_the_spec_codes() {
    let good_cfg = desc("application/vnd.oci.image.config.v1+json", 1);
    let cases: Vec<(Vec<u8>, Option<&str>, ErrorCode, u16)> = vec![
        (b"{not json".to_vec(), None, ErrorCode::ManifestInvalid, 400),
        (b"[]".to_vec(), None, ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 1, "config": good_cfg, "layers": []}).to_string().into_bytes(), None, ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "layers": []}).to_string().into_bytes(), None, ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": good_cfg, "layers": []}).to_string().into_bytes(), Some(manifest::OCI_INDEX), ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}, "layers": []}).to_string().into_bytes(), None, ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": good_cfg, "layers": [{"mediaType": "x", "digest": format!("sha256:{}", "a".repeat(64)), "size": -1}]}).to_string().into_bytes(), None, ErrorCode::ManifestInvalid, 400),
        (json!({"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}).to_string().into_bytes(), None, ErrorCode::Unsupported, 415),
        (json!({"schemaVersion": 2, "mediaType": "text/plain"}).to_string().into_bytes(), None, ErrorCode::ManifestInvalid, 400),
        (vec![b' '; manifest::MAX_MANIFEST_BYTES + 1], None, ErrorCode::ManifestInvalid, 413),
    ];
    for (bytes, ct, want, status) in cases {
        let e = parse_manifest(&bytes, ct).unwrap_err();
        assert_eq!(
            (e.code, e.status),
            (want, status),
            "{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
        );
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(s in ".{0,300}") {
        let _ = RepoName::parse(&s);
        let _ = Reference::parse(&s);
        let _ = Digest::parse(&s);
        let _ = parse_manifest(s.as_bytes(), Some(&s));
    }

    #[test]
    fn streamed_digest_equals_one_shot(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10)) {
        let mut h = DigestHasher::new(DigestAlgorithm::Sha256);
        for c in &chunks { h.update(c); }
        prop_assert_eq!(h.finish(), Digest::sha256(&chunks.concat()));
    }
}

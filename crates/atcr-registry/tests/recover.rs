//! Start-up reconciliation, deterministically: a journaled push whose PDS
//! commit happened (but whose index update was lost) is completed from the
//! PDS; one whose commit never happened is dropped; an interrupted delete is
//! completed.

use atcr_blobstore::{BlobStore, StoreConfig};
use atcr_oci::records::{ManifestRecord, TagRecord, to_json};
use atcr_oci::{Reference, RepoName};
use atcr_pds::{Pds, PdsConfig, Write};
use atcr_registry::{Registry, RegistryConfig, Repository};
use atcr_syntax::Did;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;

const INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// `alice.test/app` as the index names it (by DID).
fn repo(did: &str) -> Repository {
    Repository::of(&Did::new(did).unwrap(), "app").unwrap()
}

fn digest(b: &[u8]) -> String {
    atcr_oci::Digest::sha256(b).to_string()
}

/// The index: SQLite in `dir`, or with `ATCR_TEST_INDEX=postgres` a
/// PostgreSQL database of its own (the same one when the registry is opened
/// on `dir` again).
async fn index(dir: &std::path::Path) -> atcr_registry::index::Index {
    if std::env::var("ATCR_TEST_INDEX").as_deref() != Ok("postgres") {
        return atcr_registry::index::Index::open(&dir.join("registry.sqlite")).unwrap();
    }
    let opts = atcr_sql::PgOptions {
        url: atcr_testkit::pg_database_for(dir),
        pool_size: 8,
        timeout: Duration::from_secs(5),
        ca_file: None,
    };
    atcr_registry::index::Index::postgres(&opts).await.unwrap()
}

async fn setup(dir: &std::path::Path) -> (Registry, Pds, String) {
    let plc = atcr_plc_server::Directory::open(&dir.join("plc.sqlite")).unwrap();
    let url: url::Url = "http://127.0.0.1:9".parse().unwrap();
    let pds = Pds::open(
        PdsConfig::new(url.clone(), vec![7; 32]),
        &dir.join("pds.sqlite"),
        Arc::new(plc),
    )
    .unwrap();
    let did = match pds.lookup_did("alice.test").await {
        Ok(d) => d,
        Err(_) => {
            pds.create_account("alice.test", Some("password-1".into()), None)
                .await
                .unwrap()
                .did
        }
    };
    let reg = Registry::open(
        RegistryConfig {
            public_url: url,
            secret: vec![7; 32],
            token_ttl: Duration::from_secs(60),
            anonymous_pull: true,
            chunk_min_length: 0,
            upload_ttl: Duration::from_secs(3600),
            egress: Default::default(),
            max_uploads_per_user: 100,
            foreign_urls: Default::default(),
            gc: Default::default(),
        },
        index(dir).await,
        BlobStore::open(&StoreConfig::Local(dir.join("blobs"))).unwrap(),
        Some(pds.clone()),
        atcr_identity::IdentityResolver::new(Default::default()).unwrap(),
    )
    .unwrap();
    (reg, pds, did)
}

fn put_op(rkey: &str, tag: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "put", "repo": "app", "display": "alice.test/app", "digest": digest(INDEX),
        "media_type": INDEX_TYPE,
        "bytes": base64::engine::general_purpose::STANDARD.encode(INDEX),
        "rkey": rkey, "new_manifest": true, "tag": tag,
    })
}

#[tokio::test]
async fn journaled_writes_are_completed_or_dropped_from_what_the_pds_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, pds, did) = setup(tmp.path()).await;
    let name = RepoName::parse("alice.test/app").unwrap();
    let tag = |t: &str| Reference::Tag(t.into());

    // 1. The PDS committed the records, the index never heard of it.
    let rkey = "3n2w7c3d7h5b4";
    reg.index()
        .begin_pending(&did, &serde_json::to_string(&[put_op(rkey, "v1")]).unwrap())
        .await
        .unwrap();
    let uri = format!("at://{did}/io.atcr.manifest/{rkey}");
    let now = "2026-11-22T00:00:00.000Z";
    let json: serde_json::Value = serde_json::from_slice(INDEX).unwrap();
    pds.write_with_blobs(
        &did,
        vec![(INDEX.to_vec(), INDEX_TYPE.into())],
        vec![
            Write::Create {
                collection: "io.atcr.manifest".into(),
                rkey: Some(rkey.into()),
                record: to_json(&ManifestRecord::new(
                    "app",
                    &digest(INDEX),
                    INDEX_TYPE,
                    &json,
                    atcr_pds::blob_ref(INDEX, INDEX_TYPE),
                    now,
                )),
            },
            Write::Put {
                collection: "io.atcr.tag".into(),
                rkey: "app:v1".into(),
                record: to_json(&TagRecord::new("app", "v1", &digest(INDEX), &uri, now)),
                swap: None,
            },
        ],
        None,
    )
    .await
    .unwrap();
    // 2. A push whose commit never happened.
    reg.index()
        .begin_pending(
            &did,
            &serde_json::to_string(&[put_op("3n2w7c3d7h5b5", "ghost")]).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        reg.manifest_get(&repo(&did), &tag("v1"), true)
            .await
            .is_err()
    );

    let (done, dropped, _) = reg.recover().await.unwrap();
    assert_eq!((done, dropped), (1, 1));
    let m = reg
        .manifest_get(&repo(&did), &tag("v1"), true)
        .await
        .unwrap();
    assert_eq!(m.bytes, INDEX);
    // The completed push got its signature artifact, pointing at the record.
    let refs = reg
        .referrers(
            &repo(&did),
            &atcr_oci::Digest::parse(&digest(INDEX)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        refs[0].artifact_type.as_deref(),
        Some("application/vnd.atproto.signature.v1+json")
    );
    assert!(refs[0].annotations.as_deref().unwrap().contains(&uri));
    assert!(
        reg.manifest_get(&repo(&did), &tag("ghost"), true)
            .await
            .is_err()
    );
    assert!(reg.index().pending().await.unwrap().is_empty());

    // 3. A delete whose PDS commit happened before the crash.
    pds.write(
        &did,
        vec![
            Write::Delete {
                collection: "io.atcr.tag".into(),
                rkey: "app:v1".into(),
                swap: None,
            },
            Write::Delete {
                collection: "io.atcr.manifest".into(),
                rkey: rkey.into(),
                swap: None,
            },
        ],
        None,
    )
    .await
    .unwrap();
    let op = serde_json::json!([{"kind": "delete", "repo": "app", "digest": digest(INDEX), "rkey": rkey, "tags": ["v1"]}]);
    reg.index()
        .begin_pending(&did, &op.to_string())
        .await
        .unwrap();
    drop(reg);
    // Restart: a new registry over the same files.
    let (reg, _, _) = setup(tmp.path()).await;
    assert_eq!(reg.recover().await.unwrap().0, 1);
    assert!(
        reg.manifest_get(&repo(&did), &tag("v1"), false)
            .await
            .is_err()
    );
    // The registry serves exactly what the PDS holds: nothing.
    let pushed = reg
        .manifest_put(
            &Repository::new(name.clone(), Did::new(did.as_str()).unwrap()),
            &tag("v2"),
            &[],
            Some(INDEX_TYPE),
            INDEX.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(pushed.digest.to_string(), digest(INDEX));
}

/// Every `io.atcr.manifest` record of `did` naming `digest`.
async fn manifest_records(pds: &Pds, did: &str, digest: &str) -> Vec<String> {
    let (rows, _) = pds
        .list_records(did, "io.atcr.manifest", 100, None, false)
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(_, _, v)| v["digest"] == digest)
        .map(|(k, _, _)| k)
        .collect()
}

#[tokio::test]
async fn retried_pushes_converge_and_delete_removes_every_record_of_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, pds, did) = setup(tmp.path()).await;
    let name = RepoName::parse("alice.test/app").unwrap();
    let d = digest(INDEX);
    let json: serde_json::Value = serde_json::from_slice(INDEX).unwrap();
    let record = |now: &str| {
        to_json(&ManifestRecord::new(
            "app",
            &d,
            INDEX_TYPE,
            &json,
            atcr_pds::blob_ref(INDEX, INDEX_TYPE),
            now,
        ))
    };
    // A first attempt committed in the PDS, but its answer was lost (the
    // index never recorded it): the record is at the deterministic key.
    let key = atcr_oci::records::manifest_rkey("app", &atcr_oci::Digest::parse(&d).unwrap());
    pds.write_with_blobs(
        &did,
        vec![(INDEX.to_vec(), INDEX_TYPE.into())],
        vec![Write::Put {
            collection: "io.atcr.manifest".into(),
            rkey: key.clone(),
            record: record("2026-11-22T00:00:00.000Z"),
            swap: None,
        }],
        None,
    )
    .await
    .unwrap();
    // The client's retry writes the same record, not a second one.
    reg.manifest_put(
        &Repository::new(name.clone(), Did::new(did.as_str()).unwrap()),
        &Reference::Tag("v1".into()),
        &[],
        Some(INDEX_TYPE),
        INDEX.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        manifest_records(&pds, &did, &d).await,
        std::slice::from_ref(&key)
    );
    // A record of the same digest under another key (written before record
    // keys were deterministic, or by a remote PDS that committed and timed
    // out) is also a valid signature: delete must remove it too.
    pds.write(
        &did,
        vec![Write::Create {
            collection: "io.atcr.manifest".into(),
            rkey: Some("3n2w7c3d7h5b4".into()),
            record: record("2026-11-23T00:00:00.000Z"),
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(manifest_records(&pds, &did, &d).await.len(), 2);
    reg.manifest_delete(
        &repo(&did),
        &Reference::Digest(atcr_oci::Digest::parse(&d).unwrap()),
    )
    .await
    .unwrap();
    assert!(manifest_records(&pds, &did, &d).await.is_empty());
    assert!(!matches!(
        pds.get_record(&did, "io.atcr.tag", "app:v1").await,
        Ok(Some(_))
    ));
}

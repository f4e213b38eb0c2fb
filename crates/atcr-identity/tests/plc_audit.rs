//! Audited did:plc resolution: the document comes from the replayed, signed
//! operation log, so a directory cannot substitute a key or a PDS.

use atcr_crypto::{Algorithm, Keypair};
use atcr_identity::{IdentityError, IdentityResolver, ResolverConfig};
use atcr_plc::{Operation, Tombstone, did_for_genesis};
use atcr_plc_server::Directory;
use atcr_syntax::{AtIdentifier, Did};
use axum::extract::{Path, State};
use axum::routing::get;
use std::sync::{Arc, Mutex};

/// A change a dishonest directory makes to the log it serves.
type Tamper = fn(&mut serde_json::Value);

/// A directory that serves the real log, optionally tampered with.
#[derive(Clone)]
struct Evil {
    dir: Directory,
    tamper: Arc<Mutex<Option<Tamper>>>,
}

async fn audit(State(e): State<Evil>, Path(did): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let did = Did::new(did).unwrap();
    match e.dir.audit(&did).await {
        Ok(log) => {
            let mut v = serde_json::Value::Array(log);
            if let Some(f) = *e.tamper.lock().unwrap() {
                f(&mut v);
            }
            axum::Json(v).into_response()
        }
        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start() -> (Evil, IdentityResolver) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Directory::open(&tmp.path().join("plc.sqlite")).unwrap();
    std::mem::forget(tmp);
    let evil = Evil {
        dir,
        tamper: Arc::new(Mutex::new(None)),
    };
    let app = axum::Router::new()
        .route("/{did}/log/audit", get(audit))
        .with_state(evil.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let resolver = IdentityResolver::new(ResolverConfig {
        plc_url: url.parse().unwrap(),
        cache_ttl: std::time::Duration::ZERO,
        ..ResolverConfig::default()
    })
    .unwrap();
    (evil, resolver)
}

fn op(rot: &Keypair, signing: &Keypair, prev: Option<String>) -> Operation {
    Operation::atproto(
        &[&rot.public_key()],
        &signing.public_key(),
        "audited.test",
        "https://pds.example.com",
        prev,
    )
    .sign(rot)
}

#[tokio::test]
async fn audited_resolution_follows_the_signed_log_and_rejects_tampering() {
    let (evil, resolver) = start().await;
    let (rot, k1, k2) = (
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::K256),
        Keypair::generate(Algorithm::P256),
    );
    let genesis = op(&rot, &k1, None);
    let did = did_for_genesis(&genesis);
    evil.dir.submit(&did, genesis.clone()).await.unwrap();
    let update = op(&rot, &k2, Some(genesis.cid().to_string()));
    evil.dir.submit(&did, update.clone()).await.unwrap();
    let ident = AtIdentifier::Did(did.clone());
    let id = resolver.resolve(&ident).await.unwrap();
    assert_eq!(id.signing_key, k2.public_key());
    assert_eq!(id.pds.as_str(), "https://pds.example.com/");

    // A directory that swaps in its own key (without a rotation-key signature) is caught.
    *evil.tamper.lock().unwrap() = Some(|v| {
        v[1]["operation"]["verificationMethods"]["atproto"] =
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".into();
    });
    assert!(matches!(
        resolver.resolve(&ident).await,
        Err(IdentityError::Invalid { .. })
    ));
    // ...as is one that hides the latest operation by pointing the PDS elsewhere.
    *evil.tamper.lock().unwrap() = Some(|v| {
        v[1]["operation"]["services"]["atproto_pds"]["endpoint"] =
            "https://evil.example.com".into();
    });
    assert!(matches!(
        resolver.resolve(&ident).await,
        Err(IdentityError::Invalid { .. })
    ));
    // ...or one that drops the genesis.
    *evil.tamper.lock().unwrap() = Some(|v| {
        v.as_array_mut().unwrap().remove(0);
    });
    assert!(matches!(
        resolver.resolve(&ident).await,
        Err(IdentityError::Invalid { .. })
    ));
    *evil.tamper.lock().unwrap() = None;
    assert!(resolver.resolve(&ident).await.is_ok());

    // A tombstoned DID is deactivated.
    let tomb = Operation::Tombstone(Tombstone {
        prev: update.cid().to_string(),
        sig: String::new(),
    })
    .sign(&rot);
    evil.dir.submit(&did, tomb).await.unwrap();
    assert!(matches!(
        resolver.resolve(&ident).await,
        Err(IdentityError::Deactivated(_))
    ));
    // Unknown DID.
    let other = Did::new("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    assert!(matches!(
        resolver.resolve(&AtIdentifier::Did(other)).await,
        Err(IdentityError::NotFound(_))
    ));
}

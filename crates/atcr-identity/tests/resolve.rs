//! Identity resolution against real servers on loopback: an HTTP server
//! playing PLC directory, did:web host and handle well-known host, and a UDP
//! DNS server answering `_atproto` TXT queries.

use atcr_crypto::{Algorithm, Keypair};
use atcr_identity::{IdentityError, IdentityResolver, ResolverConfig};
use atcr_syntax::{AtIdentifier, Did, Handle};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct World {
    /// did → (status, body)
    docs: Mutex<HashMap<String, (u16, String)>>,
    /// host → well-known body
    well_known: Mutex<HashMap<String, String>>,
    requests: AtomicUsize,
}

fn doc(did: &str, handle: &str, key: &Keypair, pds: &str) -> String {
    json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "alsoKnownAs": [format!("at://{handle}")],
        "verificationMethod": [{
            "id": format!("{did}#atproto"), "type": "Multikey", "controller": did,
            "publicKeyMultibase": key.public_key().to_multikey()
        }],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}]
    })
    .to_string()
}

async fn plc(State(w): State<Arc<World>>, Path(did): Path<String>) -> (StatusCode, String) {
    w.requests.fetch_add(1, Ordering::SeqCst);
    match w.docs.lock().unwrap().get(&did) {
        Some((s, b)) => (StatusCode::from_u16(*s).unwrap(), b.clone()),
        None => (
            StatusCode::NOT_FOUND,
            "{\"message\":\"DID not registered\"}".into(),
        ),
    }
}

async fn well_known_did(State(w): State<Arc<World>>, headers: HeaderMap) -> (StatusCode, String) {
    w.requests.fetch_add(1, Ordering::SeqCst);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match w
        .docs
        .lock()
        .unwrap()
        .get(&format!("did:web:{}", host.replace(':', "%3A")))
    {
        Some((s, b)) => (StatusCode::from_u16(*s).unwrap(), b.clone()),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn well_known_handle(
    State(w): State<Arc<World>>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    w.requests.fetch_add(1, Ordering::SeqCst);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default().to_owned();
    match w.well_known.lock().unwrap().get(&host) {
        Some(b) => (StatusCode::OK, b.clone()),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn start_http(world: Arc<World>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/.well-known/did.json", get(well_known_did))
        .route("/.well-known/atproto-did", get(well_known_handle))
        .route("/{did}", get(plc))
        .with_state(world);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// A minimal authoritative DNS responder for TXT queries (test-only).
async fn start_dns(records: HashMap<String, Vec<String>>) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let q = &buf[..n];
            // Question name: labels from byte 12.
            let mut i = 12;
            let mut labels = vec![];
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_lowercase());
                i += 1 + l;
            }
            let qend = i + 5; // zero byte + qtype + qclass
            let name = labels.join(".");
            let answers = records.get(&name).cloned().unwrap_or_default();
            let mut r = vec![
                q[0],
                q[1],
                0x81,
                if answers.is_empty() { 0x83 } else { 0x80 },
                0,
                1,
            ];
            r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(&q[12..qend]);
            for a in answers {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 60]);
                r.extend_from_slice(&((a.len() + 1) as u16).to_be_bytes());
                r.push(a.len() as u8);
                r.extend_from_slice(a.as_bytes());
            }
            let _ = sock.send_to(&r, peer).await;
        }
    });
    addr
}

struct Fixture {
    world: Arc<World>,
    http: SocketAddr,
    resolver: IdentityResolver,
    key: Keypair,
}

const ALICE: &str = "did:plc:aliceaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb";
const MALLORY: &str = "did:plc:mallorymmmmmmmmmmmmmmmmm";

async fn fixture() -> Fixture {
    let world = Arc::new(World::default());
    let (http, _task) = start_http(world.clone()).await;
    let key = Keypair::generate(Algorithm::K256);
    let pds = format!("http://{http}");
    {
        let mut docs = world.docs.lock().unwrap();
        docs.insert(
            ALICE.into(),
            (200, doc(ALICE, "alice.dns.test", &key, &pds)),
        );
        docs.insert(BOB.into(), (200, doc(BOB, "bob.web.test", &key, &pds)));
        // Mallory claims alice's handle, but the handle points at alice.
        docs.insert(
            MALLORY.into(),
            (200, doc(MALLORY, "alice.dns.test", &key, &pds)),
        );
        docs.insert(
            "did:plc:goneeeeeeeeeeeeeeeeeeeee".into(),
            (410, "{}".into()),
        );
        docs.insert(
            "did:plc:wrongidddddddddddddddddd".into(),
            (200, doc(ALICE, "x.test", &key, &pds)),
        );
        let web = format!("did:web:localhost%3A{}", http.port());
        docs.insert(web.clone(), (200, doc(&web, "web.host.test", &key, &pds)));
    }
    world
        .well_known
        .lock()
        .unwrap()
        .insert("bob.web.test".into(), BOB.into());
    world
        .well_known
        .lock()
        .unwrap()
        .insert("liar.web.test".into(), BOB.into());
    let dns = start_dns(HashMap::from([(
        "_atproto.alice.dns.test".to_owned(),
        vec![format!("did={ALICE}")],
    )]))
    .await;
    let config = ResolverConfig {
        plc_url: format!("http://{http}").parse().unwrap(),
        allow_plain_http: true,
        dns_nameservers: vec![dns],
        host_overrides: vec![
            ("bob.web.test".into(), http),
            ("liar.web.test".into(), http),
            ("alice.dns.test".into(), http),
            ("nobody.test".into(), http),
        ],
        timeout: Duration::from_secs(3),
        // These fixtures serve hand-written documents; audited resolution has its own tests.
        audit_plc_log: false,
        ..ResolverConfig::default()
    };
    let resolver = IdentityResolver::new(config).unwrap();
    Fixture {
        world,
        http,
        resolver,
        key,
    }
}

fn handle(s: &str) -> AtIdentifier {
    AtIdentifier::Handle(Handle::new(s).unwrap())
}
fn did(s: &str) -> AtIdentifier {
    AtIdentifier::Did(Did::new(s).unwrap())
}

#[tokio::test]
async fn handle_via_dns_txt_with_bidirectional_check() {
    let f = fixture().await;
    let id = f.resolver.resolve(&handle("Alice.DNS.test")).await.unwrap();
    assert_eq!(id.did.as_str(), ALICE);
    assert_eq!(id.handle.unwrap().normalized(), "alice.dns.test");
    assert_eq!(id.signing_key, f.key.public_key());
    assert_eq!(id.pds.as_str(), format!("http://{}/", f.http));
}

#[tokio::test]
async fn handle_via_https_well_known() {
    let f = fixture().await;
    let id = f.resolver.resolve(&handle("bob.web.test")).await.unwrap();
    assert_eq!(id.did.as_str(), BOB);
    assert!(id.handle.is_some());
}

#[tokio::test]
async fn handle_whose_did_document_does_not_point_back_is_rejected() {
    let f = fixture().await;
    // liar.web.test says it is bob, but bob's document claims bob.web.test.
    let err = f
        .resolver
        .resolve(&handle("liar.web.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::HandleMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn did_claiming_a_handle_that_resolves_elsewhere_has_no_handle() {
    let f = fixture().await;
    let id = f.resolver.resolve(&did(MALLORY)).await.unwrap();
    assert!(id.handle.is_none(), "mallory must not get alice's handle");
    let alice = f.resolver.resolve(&did(ALICE)).await.unwrap();
    assert_eq!(alice.handle.unwrap().as_str(), "alice.dns.test");
}

#[tokio::test]
async fn did_web_with_port_over_loopback() {
    let f = fixture().await;
    let web = format!("did:web:localhost%3A{}", f.http.port());
    let id = f.resolver.resolve(&did(&web)).await.unwrap();
    assert_eq!(id.did.as_str(), web);
    // Path-style did:web is refused without a request.
    let err = f
        .resolver
        .resolve(&did("did:web:example.com:user:alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Unsupported(_)));
}

#[tokio::test]
async fn definitive_failures_are_typed() {
    let f = fixture().await;
    assert!(matches!(
        f.resolver
            .resolve(&did("did:plc:unknownuuuuuuuuuuuuuuuuu"))
            .await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(matches!(
        f.resolver
            .resolve(&did("did:plc:goneeeeeeeeeeeeeeeeeeeee"))
            .await,
        Err(IdentityError::Deactivated(_))
    ));
    // A document for another DID is refused.
    let err = f
        .resolver
        .resolve(&did("did:plc:wrongidddddddddddddddddd"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Invalid { .. }), "{err:?}");
    assert!(matches!(
        f.resolver.resolve(&handle("nobody.test")).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(matches!(
        f.resolver
            .resolve(&did(
                "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"
            ))
            .await,
        Err(IdentityError::Unsupported(_))
    ));
    assert!(matches!(
        f.resolver.resolve(&did("did:plc:short")).await,
        Err(IdentityError::Invalid { .. })
    ));
}

#[tokio::test]
async fn successes_are_cached_and_failures_are_not() {
    let f = fixture().await;
    f.resolver.resolve(&did(BOB)).await.unwrap();
    let n = f.world.requests.load(Ordering::SeqCst);
    for _ in 0..10 {
        f.resolver.resolve(&did(BOB)).await.unwrap();
    }
    assert_eq!(
        f.world.requests.load(Ordering::SeqCst),
        n,
        "cached resolutions must not hit the network"
    );

    // A server error is transient and not cached: once fixed, the next call succeeds.
    let d = "did:plc:flakyfffffffffffffffffff";
    f.world
        .docs
        .lock()
        .unwrap()
        .insert(d.into(), (503, String::new()));
    let err = f.resolver.resolve(&did(d)).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let pds = format!("http://{}", f.http);
    f.world
        .docs
        .lock()
        .unwrap()
        .insert(d.into(), (200, doc(d, "flaky.test", &f.key, &pds)));
    assert!(f.resolver.resolve(&did(d)).await.is_ok());

    // A rotated key is seen after forget().
    let rotated = Keypair::generate(Algorithm::P256);
    f.world
        .docs
        .lock()
        .unwrap()
        .insert(BOB.into(), (200, doc(BOB, "bob.web.test", &rotated, &pds)));
    assert_eq!(
        f.resolver.resolve(&did(BOB)).await.unwrap().signing_key,
        f.key.public_key()
    );
    f.resolver.forget(&Did::new(BOB).unwrap());
    assert_eq!(
        f.resolver.resolve(&did(BOB)).await.unwrap().signing_key,
        rotated.public_key()
    );
}

#[tokio::test]
async fn unreachable_servers_are_transient() {
    let config = ResolverConfig {
        audit_plc_log: false,
        plc_url: "http://127.0.0.1:9".parse().unwrap(),
        timeout: Duration::from_secs(2),
        ..ResolverConfig::default()
    };
    let r = IdentityResolver::new(config).unwrap();
    let err = r.resolve(&did(ALICE)).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[test]
fn plain_http_plc_on_a_public_host_is_refused() {
    let config = ResolverConfig {
        plc_url: "http://plc.example.com".parse().unwrap(),
        ..ResolverConfig::default()
    };
    assert!(matches!(
        IdentityResolver::new(config),
        Err(IdentityError::Unsupported(_))
    ));
}

#[test]
fn legacy_key_forms_and_malformed_documents() {
    use atcr_identity::DidDocument;
    let d = Did::new("did:plc:legacyllllllllllllllllll").unwrap();
    // Legacy EcdsaSecp256r1VerificationKey2019 with a bare compressed point.
    let kp = Keypair::generate(Algorithm::P256);
    let bare = format!(
        "z{}",
        bs58::encode(kp.public_key().compressed()).into_string()
    );
    let legacy = json!({"id": d.as_str(), "verificationMethod": [{"id": "#atproto", "type": "EcdsaSecp256r1VerificationKey2019", "controller": d.as_str(), "publicKeyMultibase": bare}]});
    let parsed = DidDocument::parse(&d, legacy.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.signing_key().unwrap(), kp.public_key());
    assert!(parsed.pds_endpoint().is_err());
    for bad in ["", "{", "[]", "{\"id\": 5}", "{\"id\": \"did:plc:other\"}"] {
        assert!(DidDocument::parse(&d, bad.as_bytes()).is_err(), "{bad}");
    }
    let no_key = json!({"id": d.as_str()});
    assert!(
        DidDocument::parse(&d, no_key.to_string().as_bytes())
            .unwrap()
            .signing_key()
            .is_err()
    );
}

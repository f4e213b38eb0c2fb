//! `atcr sign IMAGE`: co-signs an image. Writes an `io.atcr.signature`
//! record in the signer's own PDS, then attaches the matching signature
//! artifact (layer inline) to the image, which the registry accepts after
//! checking the record.

use anyhow::{Context, Result, bail};
use atcr_oci::signature::{
    AtprotoPointer, EMPTY_JSON, SIGNATURE_ARTIFACT_TYPE, SIGNATURE_LAYER_TYPE, SIGNATURE_VERSION,
    SignatureKey, SignatureLayer, SignatureSubject,
};
use atcr_verify::ImageRef;
use base64::Engine as _;
use std::time::Duration;

/// `atcr sign` arguments.
#[derive(clap::Args)]
pub struct SignArgs {
    /// HOST/OWNER/REPO[:TAG|@DIGEST]
    pub image: String,
    /// Your handle.
    #[arg(long, env = "ATCR_SIGN_HANDLE")]
    pub handle: String,
    /// Your app password.
    #[arg(long, env = "ATCR_SIGN_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Your PDS (default: the registry host, whose embedded PDS it is).
    #[arg(long)]
    pub pds: Option<String>,
    /// Plain HTTP (registry and PDS on loopback).
    #[arg(long)]
    pub plain_http: bool,
    /// A note stored in the record.
    #[arg(long)]
    pub note: Option<String>,
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Signs; prints the record URI and the artifact digest.
pub async fn sign(a: SignArgs) -> Result<()> {
    let image = ImageRef::parse(&a.image)?;
    let scheme = if a.plain_http { "http" } else { "https" };
    let registry = format!("{scheme}://{}", image.host);
    let http = atcr_http::client(Duration::from_secs(60));
    let name = image.name.to_string();

    // The signer's session on their own PDS.
    let pds_url = a.pds.clone().unwrap_or_else(|| registry.clone());
    let pds = atcr_xrpc::PdsClient::new(pds_url.parse().context("--pds")?, http.clone());
    let session = pds
        .create_session(&a.handle, &a.password)
        .await
        .with_context(|| format!("log in to {pds_url} as {}", a.handle))?;
    let did = session.did.clone();

    // A registry token with pull and sign on the image's repository.
    let tok: serde_json::Value = http
        .get(format!("{registry}/auth/token"))
        .query(&[
            ("service", image.host.as_str()),
            ("scope", &format!("repository:{name}:pull,sign")),
        ])
        .basic_auth(&a.handle, Some(&a.password))
        .send()
        .await?
        .error_for_status()
        .context("registry token")?
        .json()
        .await?;
    let tok = tok["token"].as_str().context("registry token")?.to_owned();

    // The image as the registry serves it; its digest computed here.
    let reference = match &image.reference {
        atcr_oci::Reference::Tag(t) => t.clone(),
        atcr_oci::Reference::Digest(d) => d.to_string(),
    };
    let r = http
        .get(format!("{registry}/v2/{name}/manifests/{reference}"))
        .bearer_auth(&tok)
        .header("accept", ACCEPT)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{}: {}", image, r.status());
    }
    let media_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    let bytes = r.bytes().await?;
    let digest = atcr_oci::Digest::sha256_of(&bytes);

    // The record: the evidence. It names the repository by the owner's DID,
    // which (unlike a handle) never moves.
    let owner_did = match image.name.owner() {
        atcr_oci::Owner::Did(d) => d.to_string(),
        atcr_oci::Owner::Handle(h) => {
            pds.resolve_handle(h.as_str())
                .await
                .with_context(|| format!("resolve the owner {h}"))?
                .did
        }
    };
    let subject_repo = format!("{}/{}", owner_did.replace(':', "-"), image.name.repo());
    let mut record = serde_json::json!({
        "$type": atcr_oci::SIGNATURE_COLLECTION,
        "subject": {"repository": subject_repo, "digest": digest.to_string(), "mediaType": media_type},
        "createdAt": atcr_syntax::Datetime::now().to_string(),
    });
    if let Some(n) = &a.note {
        record["note"] = serde_json::Value::String(n.clone());
    }
    let written = pds
        .create_record(&atcr_xrpc::types::CreateRecordInput {
            repo: did.clone(),
            collection: atcr_oci::SIGNATURE_COLLECTION.into(),
            rkey: None,
            validate: Some(false),
            record,
            swap_commit: None,
        })
        .await
        .context("write the io.atcr.signature record")?;

    // The artifact: a pointer to it, layer inline.
    // The key is a hint (verifiers use the DID document): best effort.
    let doc = pds.describe_repo(&did).await.ok().map(|r| r.did_doc);
    let key = doc.as_ref().and_then(|d| {
        let did = atcr_syntax::Did::new(&did).ok()?;
        let doc = atcr_identity::DidDocument::parse(&did, d.to_string().as_bytes()).ok()?;
        doc.signing_key().ok()
    });
    let layer = SignatureLayer {
        type_: SIGNATURE_LAYER_TYPE.into(),
        version: SIGNATURE_VERSION.into(),
        subject: SignatureSubject {
            digest: digest.to_string(),
            media_type: media_type.clone(),
        },
        atproto: AtprotoPointer {
            did: did.clone(),
            handle: Some(session.handle.clone()),
            pds_endpoint: pds_url.clone(),
            record_uri: written.uri.clone(),
            commit_cid: written.commit.map(|c| c.cid).unwrap_or_default(),
            signed_at: atcr_syntax::Datetime::now().to_string(),
        },
        signature: SignatureKey {
            algorithm: match key.as_ref().map(|k| k.algorithm()) {
                Some(atcr_crypto::Algorithm::P256) => "ECDSA-P256-SHA256".into(),
                _ => "ECDSA-K256-SHA256".into(),
            },
            key_id: format!("{did}#atproto"),
            public_key_multibase: key.map(|k| k.to_multikey()).unwrap_or_default(),
        },
    };
    let layer_bytes = serde_json::to_vec(&layer)?;
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": atcr_oci::Digest::sha256_of(EMPTY_JSON).to_string(), "size": 2},
        "layers": [{
            "mediaType": SIGNATURE_ARTIFACT_TYPE,
            "digest": atcr_oci::Digest::sha256_of(&layer_bytes).to_string(),
            "size": layer_bytes.len(),
            "data": base64::engine::general_purpose::STANDARD.encode(&layer_bytes),
        }],
        "subject": {"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()},
        "annotations": {
            "io.atcr.atproto.did": did,
            "io.atcr.atproto.pds": pds_url,
            "io.atcr.atproto.recordUri": written.uri,
        },
    }))?;
    let ad = atcr_oci::Digest::sha256_of(&artifact);
    let r = http
        .put(format!("{registry}/v2/{name}/manifests/{ad}"))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(artifact)
        .send()
        .await?;
    if !r.status().is_success() {
        let status = r.status();
        bail!(
            "the registry refused the co-signature ({status}): {}",
            r.text().await.unwrap_or_default()
        );
    }
    println!("signed {name}@{digest}");
    println!("record   {}", written.uri);
    println!("artifact {ad}");
    Ok(())
}

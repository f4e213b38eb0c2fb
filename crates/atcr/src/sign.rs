//! `atcr sign IMAGE`: co-signs an image. Writes an `io.atcr.signature`
//! record in the signer's own PDS, then attaches the matching signature
//! artifact (layer inline) to the image, which the registry accepts after
//! checking the record.

use anyhow::{Context, Result, bail};
use atcr_oci::manifest::{Descriptor, OCI_MANIFEST};
use atcr_oci::records::{MANIFEST_ACCEPT, SignatureRecord, to_json};
use atcr_oci::signature::{
    AtprotoPointer, SIGNATURE_LAYER_TYPE, SIGNATURE_VERSION, SignatureKey, SignatureLayer,
    SignatureSubject, build_artifact,
};
use atcr_verify::ImageRef;
use std::time::Duration;

/// `atcr sign` arguments.
#[derive(clap::Args)]
pub struct SignArgs {
    /// HOST/OWNER/REPO[:TAG|@DIGEST]
    pub image: String,
    /// Your handle (default: the user name docker stored for the registry).
    #[arg(long, env = "ATCR_SIGN_HANDLE")]
    pub handle: Option<String>,
    /// Your app password (default: what `docker login HOST` stored, else a
    /// prompt on the terminal).
    #[arg(long, env = "ATCR_SIGN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
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

/// The signer's handle and password: the flags, else docker's stored
/// credentials for the registry, else a prompt on the terminal.
fn credentials(a: &SignArgs, host: &str) -> Result<(String, String)> {
    if let (Some(h), Some(p)) = (&a.handle, &a.password) {
        return Ok((h.clone(), p.clone()));
    }
    if a.password.is_none()
        && let Some(atcr_verify::oci::Credentials {
            username: u,
            password: p,
        }) = atcr_verify::oci::Credentials::from_docker(host)
        && a.handle.as_ref().is_none_or(|h| h.eq_ignore_ascii_case(&u))
    {
        return Ok((u, p));
    }
    let Some(handle) = a.handle.clone() else {
        anyhow::bail!(
            "no credentials for {host}: pass --handle and --password (ATCR_SIGN_HANDLE, ATCR_SIGN_PASSWORD), or `docker login {host}` first"
        );
    };
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!(
            "no password for {handle}: pass --password (ATCR_SIGN_PASSWORD) or `docker login {host}` first"
        );
    }
    let p = rpassword::prompt_password(format!("app password for {handle}: "))
        .context("reading the password")?;
    Ok((handle, p))
}

/// Signs; prints the record URI and the artifact digest.
pub async fn sign(a: SignArgs) -> Result<()> {
    let image = ImageRef::parse(&a.image)?;
    let (handle, password) = credentials(&a, &image.host)?;
    let scheme = if a.plain_http { "http" } else { "https" };
    let registry = format!("{scheme}://{}", image.host);
    let http = atcr_http::client(Duration::from_secs(60));
    let name = image.name.to_string();

    // The signer's session on their own PDS.
    let pds_url = a.pds.clone().unwrap_or_else(|| registry.clone());
    let pds = atcr_xrpc::PdsClient::new(pds_url.parse().context("--pds")?, http.clone());
    let session = pds
        .create_session(&handle, &password)
        .await
        .with_context(|| format!("log in to {pds_url} as {handle}"))?;
    let did = session.did.clone();

    // A registry token with pull and sign on the image's repository.
    let r = http
        .get(format!("{registry}/auth/token"))
        .query(&[
            ("service", image.host.as_str()),
            ("scope", &format!("repository:{name}:pull,sign")),
        ])
        .basic_auth(&handle, Some(&password))
        .send()
        .await?;
    if !r.status().is_success() {
        let status = r.status();
        bail!(
            "the registry refused a token ({status}): {}",
            r.text().await.unwrap_or_default()
        );
    }
    let tok: serde_json::Value = r.json().await?;
    let tok = tok["token"].as_str().context("registry token")?.to_owned();

    // The image as the registry serves it; its digest computed here.
    let reference = match &image.reference {
        atcr_oci::Reference::Tag(t) => t.clone(),
        atcr_oci::Reference::Digest(d) => d.to_string(),
    };
    let r = http
        .get(format!("{registry}/v2/{name}/manifests/{reference}"))
        .bearer_auth(&tok)
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{}: {}", image, r.status());
    }
    let media_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(OCI_MANIFEST)
        .to_owned();
    let bytes = r.bytes().await?;
    let digest = atcr_oci::Digest::sha256_of(&bytes);

    // The record: the evidence. It names the repository by the owner's DID,
    // which (unlike a handle) never moves.
    let owner_did = match image.name.owner() {
        atcr_oci::Owner::Did(d) => d.clone(),
        atcr_oci::Owner::Handle(h) => {
            let did = pds
                .resolve_handle(h.as_str())
                .await
                .with_context(|| format!("resolve the owner {h}"))?
                .did;
            atcr_syntax::Did::new(&did).with_context(|| format!("the owner's DID {did:?}"))?
        }
    };
    let record = SignatureRecord::new(
        &owner_did,
        image.name.repo(),
        &digest,
        &media_type,
        a.note.clone(),
        &atcr_syntax::Datetime::now().to_string(),
    );
    let written = pds
        .create_record(&atcr_xrpc::types::CreateRecordInput {
            repo: did.clone(),
            collection: atcr_oci::SIGNATURE_COLLECTION.into(),
            rkey: None,
            validate: Some(false),
            record: to_json(&record),
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
            algorithm: key
                .as_ref()
                .map_or(atcr_crypto::Algorithm::K256, |k| k.algorithm())
                .suite_name()
                .into(),
            key_id: format!("{did}#atproto"),
            public_key_multibase: key.map(|k| k.to_multikey()).unwrap_or_default(),
        },
    };
    let artifact = build_artifact(
        &layer,
        Descriptor {
            media_type: media_type.clone(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: Default::default(),
        },
        true,
    )
    .manifest;
    let ad = atcr_oci::Digest::sha256_of(&artifact);
    let r = http
        .put(format!("{registry}/v2/{name}/manifests/{ad}"))
        .bearer_auth(&tok)
        .header("content-type", OCI_MANIFEST)
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

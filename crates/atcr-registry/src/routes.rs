//! HTTP routes: `/v2/…` (OCI Distribution 1.1) and `/auth/token`.
//!
//! Repository names contain `/`, so `/v2/{*rest}` is parsed by hand from the
//! end of the path (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, …).

// Request helpers fail with the finished error response (spec body plus the
// Bearer challenge); it is built once and returned as is, so its size is moot.
#![allow(clippy::result_large_err)]

use crate::token::TokenClaims;
use crate::{Error, MountOutcome, Registry, Repository};
use atcr_blobstore::BlobRead;
use atcr_oci::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX};
use atcr_oci::{Digest, DigestAlgorithm, ErrorCode, Reference, RegistryError, RepoName};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::TryStreamExt;

/// The registry's routes.
pub fn router(reg: Registry) -> Router {
    Router::new()
        .route("/v2", any(v2_root))
        .route("/v2/", any(v2_root))
        .route("/v2/{*rest}", any(v2))
        .route("/auth/token", get(token))
        .layer(axum::middleware::map_response(api_version))
        .with_state(reg)
}

async fn api_version(mut r: Response) -> Response {
    r.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The OCI error a service error is reported as.
impl From<Error> for RegistryError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Oci(e) => return e.clone(),
            Error::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Error::UploadInvalid(_) => ErrorCode::BlobUploadInvalid,
            Error::ChunkOutOfOrder { .. } => {
                return RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string())
                    .with_status(416);
            }
            Error::DigestInvalid(_) => ErrorCode::DigestInvalid,
            Error::ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            Error::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            Error::ManifestBlobUnknown { digest, .. } => {
                return RegistryError::new(ErrorCode::ManifestBlobUnknown, e.to_string())
                    .with_detail(serde_json::json!({ "digest": digest }));
            }
            Error::NameUnknown(_) => ErrorCode::NameUnknown,
            Error::NameInvalid(_) => ErrorCode::NameInvalid,
            Error::BadCredentials => ErrorCode::Unauthorized,
            Error::Denied(_) => ErrorCode::Denied,
            Error::TooManyUploads(_) => ErrorCode::TooManyRequests,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Unknown,
        };
        RegistryError::new(code, e.to_string())
    }
}

/// An error response, with the Bearer challenge on 401.
fn error(reg: &Registry, e: impl Into<RegistryError>, scope: Option<&str>) -> Response {
    let e: RegistryError = e.into();
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(e.body())).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, hv(&challenge(reg, scope)));
    }
    r
}

fn challenge(reg: &Registry, scope: Option<&str>) -> String {
    let realm = format!(
        "{}/auth/token",
        reg.config().public_url.as_str().trim_end_matches('/')
    );
    let mut c = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
        reg.tokens().service()
    );
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    c
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn q<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn v2_root(State(reg): State<Registry>, headers: HeaderMap) -> Response {
    match bearer(&headers).and_then(|t| reg.verify_token(t)) {
        Some(_) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
        None => error(
            &reg,
            RegistryError::new(ErrorCode::Unauthorized, "authentication required"),
            None,
        ),
    }
}

/// What a `/v2/<rest>` path addresses.
enum Target {
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
}

fn parse_target(rest: &str) -> Option<Target> {
    if rest == "_catalog" {
        return Some(Target::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| (n > k).then(|| segs[..n - k].join("/"));
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Target::Tags(name(2)?));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        if segs[n - 1].is_empty() {
            return Some(Target::Uploads(name(3)?));
        }
        return Some(Target::Upload(name(3)?, segs[n - 1].to_owned()));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Target::Uploads(name(2)?));
    }
    if n >= 3 {
        let last = segs[n - 1].to_owned();
        match segs[n - 2] {
            "manifests" => return Some(Target::Manifest(name(2)?, last)),
            "blobs" => return Some(Target::Blob(name(2)?, last)),
            "referrers" => return Some(Target::Referrers(name(2)?, last)),
            _ => {}
        }
    }
    None
}

/// Per-request context after auth: the repository, its owner resolved.
struct Ctx {
    repo: Repository,
}

async fn authorize(
    reg: &Registry,
    headers: &HeaderMap,
    raw_name: &str,
    action: &str,
) -> Result<(Ctx, TokenClaims), Response> {
    let name = RepoName::parse(raw_name).map_err(|e| error(reg, e, None))?;
    let scope = format!(
        "repository:{raw_name}:{}",
        match action {
            "pull" => "pull",
            "delete" => "delete",
            _ => "pull,push",
        }
    );
    let claims = match bearer(headers).and_then(|t| reg.verify_token(t)) {
        Some(c) => c,
        None => {
            return Err(error(
                reg,
                RegistryError::new(ErrorCode::Unauthorized, "authentication required"),
                Some(&scope),
            ));
        }
    };
    if !claims.allows(raw_name, action) {
        if claims.is_anonymous() {
            return Err(error(
                reg,
                RegistryError::new(ErrorCode::Unauthorized, "authentication required"),
                Some(&scope),
            ));
        }
        // Would a new token carry the action? Then this is the Docker token
        // flow's 401 with `error="insufficient_scope"` naming the scope
        // (crane, docker and the conformance suite fetch a new token on 401
        // only). Otherwise no token helps: 403; so is the same token sent
        // again after that 401 (a client that refreshes only on 403).
        let entitled = match action {
            "push" | "delete" => {
                reg.owner_did(&name)
                    .await
                    .map_err(|e| error(reg, e, None))?
                    .as_str()
                    == claims.sub
            }
            _ => true,
        };
        tracing::info!(
            target: "atcr::auth",
            did = %claims.sub,
            action,
            repository = raw_name,
            "denied: the token lacks the scope"
        );
        let mut r = if entitled && !reg.tokens().refused_again(&claims, &scope) {
            error(
                reg,
                RegistryError::new(
                    ErrorCode::Unauthorized,
                    format!(
                        "the token does not allow {action} on {raw_name}: fetch one for {scope}"
                    ),
                ),
                None,
            )
        } else {
            error(
                reg,
                RegistryError::new(
                    ErrorCode::Denied,
                    format!("requested access to the resource is denied ({action} on {raw_name})"),
                ),
                None,
            )
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            hv(&format!(
                "{},error=\"insufficient_scope\"",
                challenge(reg, Some(&scope))
            )),
        );
        return Err(r);
    }
    let did = reg
        .owner_did(&name)
        .await
        .map_err(|e| error(reg, e, None))?;
    // `sign` is the one write a non-owner may do (checked in `cosign_put`).
    if action != "pull" && action != "sign" && did.as_str() != claims.sub {
        tracing::info!(
            target: "atcr::auth",
            did = %claims.sub,
            action,
            repository = raw_name,
            owner = %did,
            "denied: not the owner"
        );
        // The token was granted for this name, but the name no longer
        // resolves to the caller (handle moved): refuse.
        return Err(error(
            reg,
            RegistryError::new(
                ErrorCode::Denied,
                format!("{raw_name} does not belong to you"),
            ),
            None,
        ));
    }
    Ok((
        Ctx {
            repo: Repository::new(name, did),
        },
        claims,
    ))
}

async fn v2(
    State(reg): State<Registry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().strip_prefix("/v2/").unwrap_or("");
    let Some(target) = parse_target(path) else {
        return error(
            &reg,
            RegistryError::new(ErrorCode::NameUnknown, "no such endpoint").with_status(404),
            None,
        );
    };
    let params = query(&uri);
    let res = match (target, &method) {
        (Target::Catalog, &Method::GET) => catalog(&reg, &headers, &params).await,
        (Target::Tags(n), &Method::GET) => tags(&reg, &headers, &n, &params).await,
        (Target::Manifest(n, r), m) if m == Method::GET || m == Method::HEAD => {
            manifest_get(&reg, &headers, &n, &r, m == Method::HEAD).await
        }
        (Target::Manifest(n, r), &Method::PUT) => {
            manifest_put(&reg, &headers, &n, &r, &params, body).await
        }
        (Target::Manifest(n, r), &Method::DELETE) => manifest_delete(&reg, &headers, &n, &r).await,
        (Target::Blob(n, d), m) if m == Method::GET || m == Method::HEAD => {
            blob_get(&reg, &headers, &n, &d, m == Method::HEAD).await
        }
        (Target::Blob(n, d), &Method::DELETE) => blob_delete(&reg, &headers, &n, &d).await,
        (Target::Uploads(n), &Method::POST) => upload_post(&reg, &headers, &n, &params, body).await,
        (Target::Upload(n, id), &Method::PATCH) => {
            upload_patch(&reg, &headers, &n, &id, body).await
        }
        (Target::Upload(n, id), &Method::PUT) => {
            upload_put(&reg, &headers, &n, &id, &params, body).await
        }
        (Target::Upload(n, id), &Method::GET) => upload_status(&reg, &headers, &n, &id).await,
        (Target::Upload(n, id), &Method::DELETE) => upload_delete(&reg, &headers, &n, &id).await,
        (Target::Referrers(n, d), &Method::GET) => referrers(&reg, &headers, &n, &d, &params).await,
        _ => Err(error(
            &reg,
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("{method} is not supported here"),
            )
            .with_status(405),
            None,
        )),
    };
    res.unwrap_or_else(|r| r)
}

type Res = Result<Response, Response>;

fn page_size(reg: &Registry, params: &[(String, String)]) -> Result<usize, Response> {
    match q(params, "n") {
        None => Ok(1000),
        Some(s) => s.parse::<usize>().map(|n| n.min(10_000)).map_err(|_| {
            error(
                reg,
                RegistryError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                    .with_status(400),
                None,
            )
        }),
    }
}

async fn catalog(reg: &Registry, headers: &HeaderMap, params: &[(String, String)]) -> Res {
    let claims = bearer(headers).and_then(|t| reg.verify_token(t));
    let allowed = claims.is_some_and(|c| {
        c.access
            .iter()
            .any(|a| a.kind == "registry" && a.name == "catalog")
            || !c.is_anonymous()
            || reg.config().anonymous_pull
    });
    if !allowed {
        return Err(error(
            reg,
            RegistryError::new(ErrorCode::Unauthorized, "authentication required"),
            Some("registry:catalog:*"),
        ));
    }
    let n = page_size(reg, params)?;
    let last = q(params, "last");
    let mut names = reg
        .catalog(last, n + 1)
        .await
        .map_err(|e| error(reg, e, None))?;
    let more = names.len() > n;
    names.truncate(n);
    let mut r = axum::Json(serde_json::json!({ "repositories": names })).into_response();
    if more && let Some(l) = names.last() {
        r.headers_mut().insert(
            header::LINK,
            hv(&format!("</v2/_catalog?n={n}&last={l}>; rel=\"next\"")),
        );
    }
    Ok(r)
}

async fn tags(reg: &Registry, headers: &HeaderMap, name: &str, params: &[(String, String)]) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "pull").await?;
    let n = page_size(reg, params)?;
    let last = q(params, "last");
    let mut tags = reg
        .tags(&ctx.repo, last, n + 1)
        .await
        .map_err(|e| error(reg, e, None))?;
    let more = tags.len() > n;
    tags.truncate(n);
    let mut r = axum::Json(serde_json::json!({ "name": name, "tags": tags })).into_response();
    if more && let Some(l) = tags.last() {
        r.headers_mut().insert(
            header::LINK,
            hv(&format!(
                "</v2/{name}/tags/list?n={n}&last={l}>; rel=\"next\""
            )),
        );
    }
    Ok(r)
}

fn reference(reg: &Registry, r: &str) -> Result<Reference, Response> {
    Reference::parse(r).map_err(|e| {
        let e = if e.code == ErrorCode::DigestInvalid {
            e
        } else {
            RegistryError::new(ErrorCode::ManifestInvalid, e.message).with_status(400)
        };
        error(reg, e, None)
    })
}

fn digest(reg: &Registry, d: &str) -> Result<Digest, Response> {
    Digest::parse(d).map_err(|e| error(reg, e, None))
}

async fn manifest_get(reg: &Registry, headers: &HeaderMap, name: &str, r: &str, head: bool) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "pull").await?;
    let reference = reference(reg, r)?;
    let m = reg
        .manifest_get(&ctx.repo, &reference, !head)
        .await
        .map_err(|e| error(reg, e, None))?;
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&m.media_type))
        .header("Docker-Content-Digest", hv(&m.digest))
        .header(header::ETAG, hv(&format!("\"{}\"", m.digest)))
        .header(header::CONTENT_LENGTH, m.size);
    if head {
        return Ok(resp.body(Body::empty()).unwrap_or_default());
    }
    Ok(resp.body(Body::from(m.bytes)).unwrap_or_default())
}

async fn manifest_put(
    reg: &Registry,
    headers: &HeaderMap,
    name: &str,
    r: &str,
    params: &[(String, String)],
    body: Body,
) -> Res {
    // The owner pushes; anyone else may only attach a co-signature, with the
    // `sign` scope.
    let (ctx, cosigner) = match authorize(reg, headers, name, "push").await {
        Ok((ctx, _)) => (ctx, None),
        Err(denied) => match authorize(reg, headers, name, "sign").await {
            Ok((ctx, claims)) => (ctx, Some(claims.sub)),
            Err(_) => return Err(denied),
        },
    };
    let reference = reference(reg, r)?;
    // `?tag=` (spec main): more tags for this manifest, each answered with
    // an `OCI-Tag` header; a client seeing none falls back to tag pushes.
    let mut tags = vec![];
    for (k, v) in params {
        if k == "tag" {
            match Reference::parse(v) {
                Ok(Reference::Tag(t)) => tags.push(t),
                _ => {
                    return Err(error(
                        reg,
                        RegistryError::new(
                            ErrorCode::ManifestInvalid,
                            format!("invalid tag {v:?}"),
                        )
                        .with_status(400),
                        None,
                    ));
                }
            }
        }
    }
    if cosigner.is_some() && !tags.is_empty() {
        return Err(error(
            reg,
            RegistryError::new(ErrorCode::Denied, "only the owner may tag"),
            None,
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES + 1)
        .await
        .map_err(|_| {
            error(
                reg,
                RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
                )
                .with_status(413),
                None,
            )
        })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    let pushed = match cosigner {
        None => {
            reg.manifest_put(&ctx.repo, &reference, &tags, ct.as_deref(), bytes.to_vec())
                .await
        }
        Some(signer) => {
            let signer = atcr_syntax::Did::new(signer).map_err(|e| {
                error(
                    reg,
                    RegistryError::new(ErrorCode::Denied, format!("the token's subject: {e}")),
                    None,
                )
            })?;
            reg.cosign_put(
                &ctx.repo,
                &signer,
                &reference,
                ct.as_deref(),
                bytes.to_vec(),
                None,
            )
            .await
        }
    }
    .map_err(|e| error(reg, e, None))?;
    let d = pushed.digest.to_string();
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/manifests/{d}")))
        .header("Docker-Content-Digest", hv(&d))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(s) = &pushed.subject {
        resp = resp.header("OCI-Subject", hv(s));
    }
    for t in &tags {
        resp = resp.header("OCI-Tag", hv(t));
    }
    Ok(resp.body(Body::empty()).unwrap_or_default())
}

async fn manifest_delete(reg: &Registry, headers: &HeaderMap, name: &str, r: &str) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "delete").await?;
    let reference = reference(reg, r)?;
    reg.manifest_delete(&ctx.repo, &reference)
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Parses `Range: bytes=a-b` / `bytes=a-` against a size: `[start, end)`.
fn byte_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return Some(Err(()));
    }
    let (a, b) = spec.split_once('-')?;
    let parsed = if a.is_empty() {
        // Suffix range: the last b bytes.
        b.parse::<u64>()
            .ok()
            .map(|n| (size.saturating_sub(n), size))
    } else {
        let start = a.parse::<u64>().ok();
        let end = if b.is_empty() {
            Some(size)
        } else {
            // An inclusive end of u64::MAX (or anything past the blob) is
            // the end of the blob.
            b.parse::<u64>().ok().map(|e| e.saturating_add(1).min(size))
        };
        start.zip(end)
    };
    Some(match parsed {
        Some((s, e)) if s < e && s < size => Ok((s, e)),
        _ => Err(()),
    })
}

async fn blob_get(reg: &Registry, headers: &HeaderMap, name: &str, d: &str, head: bool) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "pull").await?;
    let digest = digest(reg, d)?;
    let size = reg
        .blob_size(&ctx.repo, &digest)
        .await
        .map_err(|e| error(reg, e, None))?;
    let base = |status| {
        Response::builder()
            .status(status)
            .header("Docker-Content-Digest", hv(d))
            .header(header::ETAG, hv(&format!("\"{d}\"")))
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream")
    };
    if head {
        return Ok(base(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let range = match byte_range(headers, size) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(())) => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_default());
        }
    };
    let read = reg
        .blob_read(&digest, range, range.is_none())
        .await
        .map_err(|e| error(reg, e, None))?;
    match read {
        BlobRead::Redirect(url) => Ok(Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, hv(url.as_str()))
            .header("Docker-Content-Digest", hv(d))
            .body(Body::empty())
            .unwrap_or_default()),
        BlobRead::Stream { body, len } => {
            let mut b = match range {
                Some((s, e)) => base(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {s}-{}/{size}", e - 1)),
                None => base(StatusCode::OK),
            };
            b = b.header(header::CONTENT_LENGTH, len);
            Ok(b.body(Body::from_stream(body)).unwrap_or_default())
        }
    }
}

async fn blob_delete(reg: &Registry, headers: &HeaderMap, name: &str, d: &str) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "delete").await?;
    let digest = digest(reg, d)?;
    reg.blob_delete(&ctx.repo, &digest)
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn upload_response(
    reg: &Registry,
    status: StatusCode,
    name: &str,
    id: &str,
    offset: u64,
) -> Response {
    let range = if offset == 0 {
        "0-0".to_owned()
    } else {
        format!("0-{}", offset - 1)
    };
    Response::builder()
        .status(status)
        .header(
            header::LOCATION,
            hv(&format!("/v2/{name}/blobs/uploads/{id}")),
        )
        .header(header::RANGE, hv(&range))
        .header("Docker-Upload-UUID", hv(id))
        .header("OCI-Chunk-Min-Length", reg.config().chunk_min_length)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

fn blob_created(name: &str, d: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/blobs/{d}")))
        .header("Docker-Content-Digest", hv(&d.to_string()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

fn body_stream(
    body: Body,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + Unpin {
    body.into_data_stream().into_stream()
}

async fn upload_post(
    reg: &Registry,
    headers: &HeaderMap,
    name: &str,
    params: &[(String, String)],
    body: Body,
) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "push").await?;
    let e = |e: Error| error(reg, e, None);
    if let Some(m) = q(params, "mount") {
        let d = digest(reg, m)?;
        return match reg.mount(&ctx.repo, &d).await.map_err(e)? {
            MountOutcome::Mounted => Ok(blob_created(name, &d)),
            MountOutcome::Upload(id) => {
                Ok(upload_response(reg, StatusCode::ACCEPTED, name, &id, 0))
            }
        };
    }
    let alg = match q(params, "digest-algorithm") {
        None | Some("sha256") => DigestAlgorithm::Sha256,
        Some("sha512") => DigestAlgorithm::Sha512,
        Some(a) => {
            return Err(error(
                reg,
                RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("unsupported digest algorithm {a:?}"),
                ),
                None,
            ));
        }
    };
    if let Some(dg) = q(params, "digest") {
        // Monolithic single POST.
        let d = digest(reg, dg)?;
        let id = reg
            .upload_start(&ctx.repo, d.algorithm())
            .await
            .map_err(e)?;
        reg.upload_finish(&ctx.repo, &id, &d, Some(body_stream(body)))
            .await
            .map_err(e)?;
        return Ok(blob_created(name, &d));
    }
    let id = reg.upload_start(&ctx.repo, alg).await.map_err(e)?;
    Ok(upload_response(reg, StatusCode::ACCEPTED, name, &id, 0))
}

/// `Content-Range: <start>-<end>` (inclusive), as the spec writes it; a
/// `bytes ` prefix is tolerated.
fn content_range(reg: &Registry, headers: &HeaderMap) -> Result<Option<(u64, u64)>, Response> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        error(
            reg,
            RegistryError::new(ErrorCode::BlobUploadInvalid, "malformed Content-Range")
                .with_status(416),
            None,
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len != b - a + 1
    {
        return Err(error(
            reg,
            RegistryError::new(
                ErrorCode::SizeInvalid,
                "Content-Length does not match Content-Range",
            ),
            None,
        ));
    }
    Ok(Some((a, b)))
}

async fn upload_patch(
    reg: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    body: Body,
) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "push").await?;
    let range = content_range(reg, headers)?;
    let offset = reg
        .upload_append(&ctx.repo, id, range.map(|r| r.0), body_stream(body))
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(upload_response(reg, StatusCode::ACCEPTED, name, id, offset))
}

async fn upload_put(
    reg: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    params: &[(String, String)],
    body: Body,
) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "push").await?;
    let Some(dg) = q(params, "digest") else {
        return Err(error(
            reg,
            RegistryError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            ),
            None,
        ));
    };
    let d = digest(reg, dg)?;
    if let Some((start, _)) = content_range(reg, headers)? {
        let offset = reg
            .upload_offset(&ctx.repo, id)
            .await
            .map_err(|e| error(reg, e, None))?;
        if start != offset {
            return Err(error(
                reg,
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("chunk starts at {start}, but the upload is at {offset}"),
                )
                .with_status(416),
                None,
            ));
        }
    }
    // An empty closing PUT (after PATCHes) has nothing to append.
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    reg.upload_finish(&ctx.repo, id, &d, (!empty).then(|| body_stream(body)))
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(blob_created(name, &d))
}

async fn upload_status(reg: &Registry, headers: &HeaderMap, name: &str, id: &str) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "push").await?;
    let offset = reg
        .upload_offset(&ctx.repo, id)
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(upload_response(
        reg,
        StatusCode::NO_CONTENT,
        name,
        id,
        offset,
    ))
}

async fn upload_delete(reg: &Registry, headers: &HeaderMap, name: &str, id: &str) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "push").await?;
    reg.upload_cancel(&ctx.repo, id)
        .await
        .map_err(|e| error(reg, e, None))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn referrers(
    reg: &Registry,
    headers: &HeaderMap,
    name: &str,
    d: &str,
    params: &[(String, String)],
) -> Res {
    let (ctx, _) = authorize(reg, headers, name, "pull").await?;
    let digest = digest(reg, d)?;
    let filter = q(params, "artifactType");
    let rows = reg
        .referrers(&ctx.repo, &digest)
        .await
        .map_err(|e| error(reg, e, None))?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|m| filter.is_none() || m.artifact_type.as_deref() == filter)
        .map(|m| {
            let mut v = serde_json::json!({
                "mediaType": m.media_type,
                "digest": m.digest,
                "size": m.size,
            });
            if let Some(a) = m.artifact_type {
                v["artifactType"] = a.into();
            }
            if let Some(a) = m
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                v["annotations"] = a;
            }
            v
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        r = r.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(
        r.body(Body::from(serde_json::to_vec(&index).unwrap_or_default()))
            .unwrap_or_default(),
    )
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    // A DID as the user name has two colons of its own (`did:plc:…`; atproto
    // DIDs have no more): the password starts after the third.
    let at = if s.starts_with("did:") {
        s.match_indices(':').nth(2)?.0
    } else {
        s.find(':')?
    };
    Some((s[..at].to_owned(), s[at + 1..].to_owned()))
}

async fn token(
    State(reg): State<Registry>,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> Response {
    let peer = peer.map(|p| p.0.0.ip());
    let params = query(&uri);
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        // Clients may also join several scopes with spaces in one parameter.
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let did = match basic(&headers) {
        Some((u, p)) => {
            let throttle = reg.failed_logins();
            if let Err(wait) = throttle.check(peer, &u) {
                let secs = wait.as_secs().max(1);
                tracing::warn!(target: "atcr::auth", user = %u, client = ?peer, "login refused: too many failures");
                let mut r = error(
                    &reg,
                    RegistryError::new(
                        ErrorCode::TooManyRequests,
                        format!("too many failed logins; try again in {secs} s"),
                    ),
                    None,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, hv(&secs.to_string()));
                return r;
            }
            match reg.authenticate(&u, &p).await {
                Ok(d) => {
                    throttle.succeeded(&u);
                    Some(d)
                }
                Err(e) => {
                    if e == Error::BadCredentials {
                        throttle.failed(peer, &u);
                        reg.metrics().login_failures.inc();
                        tracing::info!(target: "atcr::auth", user = %u, client = ?peer, "login failed");
                    }
                    return error(&reg, e, None);
                }
            }
        }
        // Credentials that cannot be read are refused, never taken as none.
        None if headers.contains_key(header::AUTHORIZATION) => {
            return error(
                &reg,
                RegistryError::new(
                    ErrorCode::Unauthorized,
                    "malformed Authorization header (expected Basic base64(user:password))",
                ),
                None,
            );
        }
        None => None,
    };
    let access = match reg.grant(did.as_deref(), &scopes).await {
        Ok(a) => a,
        Err(e) => return error(&reg, e, None),
    };
    let tok = match reg.tokens().issue(did.as_deref().unwrap_or(""), access) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("issuing a token: {e}");
            return error(&reg, RegistryError::new(ErrorCode::Unknown, "token"), None);
        }
    };
    let now = atcr_syntax::Datetime::now().to_string();
    let mut r = axum::Json(serde_json::json!({
        "token": tok,
        "access_token": tok,
        "expires_in": reg.tokens().ttl().as_secs(),
        "issued_at": now,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(e: Error) -> (ErrorCode, u16, String, Option<serde_json::Value>) {
        let r = RegistryError::from(e);
        (r.code, r.status, r.message, r.detail)
    }

    #[test]
    fn service_errors_become_the_spec_codes_and_statuses() {
        use ErrorCode as C;
        let cases = [
            (Error::BlobUnknown("b".into()), C::BlobUnknown, 404),
            (Error::UploadUnknown, C::BlobUploadUnknown, 404),
            (Error::UploadInvalid("u".into()), C::BlobUploadInvalid, 400),
            (Error::DigestInvalid("d".into()), C::DigestInvalid, 400),
            (Error::ManifestUnknown("m".into()), C::ManifestUnknown, 404),
            (Error::ManifestInvalid("m".into()), C::ManifestInvalid, 400),
            (Error::NameUnknown("n".into()), C::NameUnknown, 404),
            (Error::NameInvalid("n".into()), C::NameInvalid, 400),
            (Error::BadCredentials, C::Unauthorized, 401),
            (Error::Denied("no".into()), C::Denied, 403),
            (Error::TooManyUploads("t".into()), C::TooManyRequests, 429),
            (Error::Unavailable("later".into()), C::Unavailable, 503),
            (Error::Internal("oops".into()), C::Unknown, 500),
        ];
        for (e, code, status) in cases {
            let text = e.to_string();
            let (c, s, m, d) = oci(e);
            assert_eq!((c, s), (code, status), "{text}");
            assert_eq!(m, text);
            assert_eq!(d, None);
        }
    }

    #[test]
    fn out_of_order_chunks_are_416_and_missing_blobs_name_the_digest() {
        let (c, s, m, _) = oci(Error::ChunkOutOfOrder {
            start: 5,
            offset: 3,
        });
        assert_eq!((c, s), (ErrorCode::BlobUploadInvalid, 416));
        assert_eq!(m, "chunk starts at 5, but the upload is at 3");
        let (c, s, _, d) = oci(Error::ManifestBlobUnknown {
            digest: "sha256:ab".into(),
            message: "blob unknown to registry: sha256:ab".into(),
        });
        assert_eq!((c, s), (ErrorCode::ManifestBlobUnknown, 400));
        assert_eq!(d, Some(serde_json::json!({ "digest": "sha256:ab" })));
        // The OCI library's own errors pass through with their status.
        let big = RegistryError::new(ErrorCode::ManifestInvalid, "too big").with_status(413);
        assert_eq!(RegistryError::from(Error::from(big.clone())), big);
    }
}

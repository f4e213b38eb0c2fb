//! XRPC routes (`/xrpc/{nsid}`) and `/.well-known/atproto-did`.

use crate::repo::Write;
use crate::{AuthScope, Pds, PdsError};
use atcr_xrpc::XrpcError;
use atcr_xrpc::types::*;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// The PDS routes: `/xrpc/{nsid}` and `/.well-known/atproto-did`.
pub fn router(pds: Pds) -> axum::Router {
    axum::Router::new()
        .route(
            "/xrpc/com.atproto.sync.subscribeRepos",
            get(crate::subscribe::subscribe_repos),
        )
        .route("/xrpc/{nsid}", any(xrpc))
        .route("/.well-known/atproto-did", get(well_known))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(pds)
}

/// Renders an XRPC error.
pub fn error_response(e: &XrpcError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(serde_json::json!({"error": e.error, "message": e.message})),
    )
        .into_response()
}

impl IntoResponse for PdsError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

type Res = Result<Response, PdsError>;

struct Req {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    /// The body, already read within the method's size limit.
    body: bytes::Bytes,
    /// The client's address (from the connection).
    peer: Option<std::net::IpAddr>,
    /// The raw query string (for repeated parameters).
    raw_query: Option<String>,
}

fn json<T: serde::Serialize>(v: T) -> Res {
    Ok(axum::Json(v).into_response())
}

impl Req {
    fn param(&self, name: &str) -> Result<&str, PdsError> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                PdsError(XrpcError::invalid(format!(
                    "Error: Params must have the property \"{name}\""
                )))
            })
    }

    fn bearer(&self) -> Result<&str, PdsError> {
        let h = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match h.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => Ok(t.trim()),
            None => Err(PdsError(XrpcError::auth_missing())),
        }
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, PdsError> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("application/json") {
            return Err(PdsError(XrpcError::invalid(
                "Wrong request encoding (Content-Type): expected application/json",
            )));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| PdsError(XrpcError::invalid(format!("Invalid request body: {e}"))))
    }
}

impl Pds {
    /// Verifies the bearer token and that it acts on `repo` (handle or DID).
    async fn authorize_repo(&self, req: &Req, repo: &str) -> Result<String, PdsError> {
        let claims = self.verify_token(req.bearer()?, &[AuthScope::Access, AuthScope::AppPass])?;
        let did = self.lookup_did(repo).await?;
        if did != claims.sub {
            return Err(PdsError(XrpcError::new(
                403,
                "InvalidRequest",
                "Token is not for this repository",
            )));
        }
        // A session outlives nothing: a disabled account writes nothing.
        if !self.is_active(&did).await? {
            return Err(PdsError(XrpcError::new(
                401,
                "AccountDeactivated",
                "Account is deactivated",
            )));
        }
        Ok(did)
    }
}

const QUERIES: &[&str] = &[
    "com.atproto.server.listAppPasswords",
    "com.atproto.server.describeServer",
    "com.atproto.server.getSession",
    "com.atproto.repo.getRecord",
    "com.atproto.repo.listRecords",
    "com.atproto.repo.describeRepo",
    "com.atproto.sync.getRecord",
    "com.atproto.sync.getRepo",
    "com.atproto.sync.getLatestCommit",
    "com.atproto.sync.getBlob",
    "com.atproto.sync.listBlobs",
    "com.atproto.sync.listRepos",
    "com.atproto.sync.getRepoStatus",
    "com.atproto.sync.getBlocks",
    "com.atproto.sync.subscribeRepos",
    "com.atproto.identity.resolveHandle",
];

async fn xrpc(
    State(pds): State<Pds>,
    method: Method,
    Path(nsid): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Body,
) -> Response {
    let peer = peer.map(|p| p.0.0.ip());
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if nsid == "com.atproto.repo.uploadBlob" && method == Method::POST {
        return upload_blob(&pds, &headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    // Bodies of callers without a valid token (logins, account creation)
    // are read a bounded number at a time: a flood of them cannot hold
    // more than that many bodies in memory.
    let authenticated = bearer_of(&headers).is_some_and(|t| {
        pds.verify_token(
            t,
            &[AuthScope::Access, AuthScope::AppPass, AuthScope::Refresh],
        )
        .is_ok()
    });
    let _permit = if authenticated || method != Method::POST {
        None
    } else {
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            pds.unauthenticated_bodies().acquire(),
        )
        .await
        {
            Ok(Ok(p)) => Some(p),
            _ => {
                return error_response(&XrpcError::new(
                    503,
                    "ServiceUnavailable",
                    "too many unauthenticated requests in progress; try again",
                ));
            }
        }
    };
    let limit = pds.config().max_json_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let e = XrpcError::new(
                413,
                "PayloadTooLarge",
                format!("request body is larger than {limit} bytes"),
            );
            return error_response(&e);
        }
    };
    let req = Req {
        method,
        query,
        headers,
        body,
        peer,
        raw_query: uri.query().map(str::to_owned),
    };
    let is_query = QUERIES.contains(&nsid.as_str());
    let method_ok = if is_query {
        req.method == Method::GET || req.method == Method::HEAD
    } else {
        req.method == Method::POST
    };
    let result = if !method_ok && (is_query || PROCEDURES.contains(&nsid.as_str())) {
        Err(PdsError(XrpcError::invalid(format!(
            "Incorrect HTTP method ({}) for {nsid}",
            req.method
        ))))
    } else {
        dispatch(&pds, &nsid, req).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The bearer token of a request, if any.
fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `com.atproto.repo.uploadBlob`: the token is checked before a byte of the
/// body is read, and the body is streamed to storage.
async fn upload_blob(pds: &Pds, headers: &HeaderMap, body: Body) -> Res {
    let token = bearer_of(headers).ok_or_else(|| PdsError(XrpcError::auth_missing()))?;
    let claims = pds.verify_token(token, &[AuthScope::Access, AuthScope::AppPass])?;
    if !pds.is_active(&claims.sub).await? {
        return Err(PdsError(XrpcError::new(
            401,
            "AccountDeactivated",
            "Account is deactivated",
        )));
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    json(UploadBlobOutput {
        blob: pds
            .put_blob_stream(&claims.sub, body.into_data_stream(), &mime)
            .await?,
    })
}

const PROCEDURES: &[&str] = &[
    "com.atproto.server.createSession",
    "com.atproto.server.refreshSession",
    "com.atproto.server.deleteSession",
    "com.atproto.server.createAppPassword",
    "com.atproto.server.revokeAppPassword",
    "com.atproto.server.createAccount",
    "com.atproto.repo.createRecord",
    "com.atproto.repo.putRecord",
    "com.atproto.repo.deleteRecord",
    "com.atproto.repo.applyWrites",
    "com.atproto.repo.uploadBlob",
];

async fn dispatch(pds: &Pds, nsid: &str, req: Req) -> Res {
    match nsid {
        "com.atproto.server.describeServer" => json(DescribeServerOutput {
            did: pds.config().service_did.clone(),
            available_user_domains: pds.config().handle_domains.clone(),
            invite_code_required: true,
            phone_verification_required: false,
            blob_upload_limit: Some(pds.config().max_blob_bytes as u64),
            links: serde_json::json!({}),
            contact: serde_json::json!({}),
        }),
        "com.atproto.server.createSession" => {
            let input: CreateSessionInput = req.json()?;
            let throttle = pds.failed_logins();
            if let Err(wait) = throttle.check(req.peer, &input.identifier) {
                return Err(PdsError(XrpcError::new(
                    429,
                    "RateLimitExceeded",
                    format!(
                        "too many failed logins; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                )));
            }
            match pds.login(&input.identifier, &input.password).await {
                Ok(out) => {
                    throttle.succeeded(&input.identifier);
                    json(out)
                }
                Err(e) => {
                    if e.0.status == 401 {
                        throttle.failed(req.peer, &input.identifier);
                        tracing::info!(target: "atcr::auth", user = %input.identifier, client = ?req.peer, "createSession failed");
                    }
                    Err(e)
                }
            }
        }
        "com.atproto.server.refreshSession" => {
            let (did, access, refresh) = pds.refresh_session(req.bearer()?).await?;
            if !pds.is_active(&did).await? {
                return Err(PdsError(XrpcError::new(
                    401,
                    "AccountDeactivated",
                    "Account is deactivated",
                )));
            }
            let handle = pds.handle_of(&did).await?;
            let did_doc = pds.did_document(&did).await;
            json(SessionOutput {
                access_jwt: access,
                refresh_jwt: refresh,
                handle,
                did,
                did_doc,
                active: Some(true),
            })
        }
        "com.atproto.server.getSession" => {
            let claims =
                pds.verify_token(req.bearer()?, &[AuthScope::Access, AuthScope::AppPass])?;
            let handle = pds.handle_of(&claims.sub).await?;
            let did_doc = pds.did_document(&claims.sub).await;
            json(GetSessionOutput {
                handle,
                did: claims.sub,
                did_doc,
                active: Some(true),
            })
        }
        "com.atproto.server.deleteSession" => {
            pds.delete_session(req.bearer()?).await?;
            Ok(StatusCode::OK.into_response())
        }
        "com.atproto.server.createAppPassword" => {
            // App-password sessions may not mint app passwords.
            let claims = pds.verify_token(req.bearer()?, &[AuthScope::Access])?;
            let input: CreateAppPasswordInput = req.json()?;
            json(pds.create_app_password(&claims.sub, &input.name).await?)
        }
        "com.atproto.server.listAppPasswords" => {
            let claims = pds.verify_token(req.bearer()?, &[AuthScope::Access])?;
            json(serde_json::json!({
                "passwords": pds.list_app_passwords(&claims.sub).await?
            }))
        }
        "com.atproto.server.revokeAppPassword" => {
            let claims = pds.verify_token(req.bearer()?, &[AuthScope::Access])?;
            #[derive(serde::Deserialize)]
            struct Input {
                name: String,
            }
            let input: Input = req.json()?;
            pds.revoke_app_password(&claims.sub, &input.name).await?;
            Ok(StatusCode::OK.into_response())
        }
        "com.atproto.server.createAccount" => {
            let basic = req
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "));
            pds.verify_admin(basic.unwrap_or_default())?;
            let input: CreateAccountInput = req.json()?;
            let created = pds
                .create_account(&input.handle, input.password, None)
                .await?;
            json(pds.login(&created.did, &created.password).await?)
        }
        "com.atproto.repo.createRecord" => {
            let input: CreateRecordInput =
                req_json_authorized(pds, &req, |i: &CreateRecordInput| i.repo.clone()).await?;
            let w = Write::Create {
                collection: input.collection,
                rkey: input.rkey,
                record: input.record,
            };
            let did = pds.lookup_did(&input.repo).await?;
            let out = pds.write(&did, vec![w], input.swap_commit).await?;
            json(single_write_output(out)?)
        }
        "com.atproto.repo.putRecord" => {
            let input: PutRecordInput =
                req_json_authorized(pds, &req, |i: &PutRecordInput| i.repo.clone()).await?;
            let w = Write::Put {
                collection: input.collection,
                rkey: input.rkey,
                record: input.record,
                swap: input.swap_record,
            };
            let did = pds.lookup_did(&input.repo).await?;
            let out = pds.write(&did, vec![w], input.swap_commit).await?;
            json(single_write_output(out)?)
        }
        "com.atproto.repo.deleteRecord" => {
            let input: DeleteRecordInput =
                req_json_authorized(pds, &req, |i: &DeleteRecordInput| i.repo.clone()).await?;
            let w = Write::Delete {
                collection: input.collection,
                rkey: input.rkey,
                swap: input.swap_record,
            };
            let did = pds.lookup_did(&input.repo).await?;
            let out = pds.write(&did, vec![w], input.swap_commit).await?;
            json(DeleteOutput { commit: out.commit })
        }
        "com.atproto.repo.applyWrites" => {
            let input: ApplyWritesInput =
                req_json_authorized(pds, &req, |i: &ApplyWritesInput| i.repo.clone()).await?;
            let did = pds.lookup_did(&input.repo).await?;
            let kinds: Vec<u8> = input
                .writes
                .iter()
                .map(|w| match w {
                    ApplyWrite::Create { .. } => 0,
                    ApplyWrite::Update { .. } => 1,
                    ApplyWrite::Delete { .. } => 2,
                })
                .collect();
            let writes = input
                .writes
                .into_iter()
                .map(|w| match w {
                    ApplyWrite::Create {
                        collection,
                        rkey,
                        value,
                    } => Write::Create {
                        collection,
                        rkey,
                        record: value,
                    },
                    ApplyWrite::Update {
                        collection,
                        rkey,
                        value,
                    } => Write::Put {
                        collection,
                        rkey,
                        record: value,
                        swap: None,
                    },
                    ApplyWrite::Delete { collection, rkey } => Write::Delete {
                        collection,
                        rkey,
                        swap: None,
                    },
                })
                .collect();
            let out = pds.write(&did, writes, input.swap_commit).await?;
            let results = out
                .results
                .into_iter()
                .zip(kinds)
                .map(|((uri, cid), kind)| match (kind, cid) {
                    (0, Some(cid)) => ApplyWriteResult::Create {
                        uri,
                        cid,
                        validation_status: Some("unknown".into()),
                    },
                    (1, Some(cid)) => ApplyWriteResult::Update {
                        uri,
                        cid,
                        validation_status: Some("unknown".into()),
                    },
                    _ => ApplyWriteResult::Delete {},
                })
                .collect();
            let commit = out.commit.ok_or_else(|| PdsError(XrpcError::internal()))?;
            json(ApplyWritesOutput { commit, results })
        }
        "com.atproto.repo.getRecord" => {
            // An unknown repository is InvalidRequest, as the reference answers.
            let did = pds
                .lookup_did(req.param("repo")?)
                .await
                .map_err(|_| PdsError(XrpcError::invalid("Could not locate record")))?;
            let (collection, rkey) = (req.param("collection")?, req.param("rkey")?);
            match pds.get_record(&did, collection, rkey).await? {
                Some((cid, value)) => json(RecordOutput {
                    uri: format!("at://{did}/{collection}/{rkey}"),
                    cid,
                    value,
                }),
                None => Err(PdsError(XrpcError::new(
                    400,
                    "RecordNotFound",
                    format!("Could not locate record: at://{did}/{collection}/{rkey}"),
                ))),
            }
        }
        "com.atproto.repo.listRecords" => {
            let did = pds.lookup_did(req.param("repo")?).await?;
            let collection = req.param("collection")?.to_owned();
            let limit: usize = req
                .query
                .get("limit")
                .map_or(Ok(50), |l| l.parse())
                .map_err(|_| PdsError(XrpcError::invalid("limit must be an integer")))?;
            // As the lexicon bounds it (and the reference answers): refused,
            // not clamped.
            if !(1..=100).contains(&limit) {
                return Err(PdsError(XrpcError::invalid(
                    "limit must be between 1 and 100",
                )));
            }
            let reverse = req.query.get("reverse").is_some_and(|r| r == "true");
            let cursor = req.query.get("cursor").cloned();
            let (rows, cursor) = pds
                .list_records(&did, &collection, limit, cursor, reverse)
                .await?;
            let records = rows
                .into_iter()
                .map(|(rkey, cid, value)| RecordOutput {
                    uri: format!("at://{did}/{collection}/{rkey}"),
                    cid,
                    value,
                })
                .collect();
            json(ListRecordsOutput { records, cursor })
        }
        "com.atproto.repo.describeRepo" => {
            let did = pds.lookup_did(req.param("repo")?).await?;
            let handle = pds.handle_of(&did).await?;
            let did_doc = pds
                .did_document(&did)
                .await
                .unwrap_or(serde_json::Value::Null);
            let handle_is_correct = did_doc["alsoKnownAs"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == &format!("at://{handle}")));
            json(DescribeRepoOutput {
                handle,
                did: did.clone(),
                did_doc,
                collections: pds.collections(&did).await?,
                handle_is_correct,
            })
        }
        "com.atproto.sync.getRecord" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            let car = pds
                .record_proof(&did, req.param("collection")?, req.param("rkey")?)
                .await?;
            Ok(([(header::CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
        }
        "com.atproto.sync.getRepo" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            let car = match req.query.get("since").filter(|s| !s.is_empty()) {
                Some(since) => pds.export_repo_since(&did, since).await?,
                None => pds.export_repo(&did).await?,
            };
            Ok(([(header::CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
        }
        "com.atproto.sync.getRepoStatus" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            json(pds.repo_status(&did).await?)
        }
        "com.atproto.sync.getBlocks" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            let cids: Vec<String> = url::form_urlencoded::parse(
                req.raw_query.as_deref().unwrap_or_default().as_bytes(),
            )
            .filter(|(k, _)| k == "cids")
            .map(|(_, v)| v.into_owned())
            .collect();
            if cids.is_empty() {
                return Err(PdsError(XrpcError::invalid(
                    "Error: Params must have the property \"cids\"",
                )));
            }
            let car = pds.blocks_car(&did, cids).await?;
            Ok(([(header::CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
        }
        "com.atproto.sync.subscribeRepos" => Err(PdsError(XrpcError::invalid(
            "com.atproto.sync.subscribeRepos is a WebSocket endpoint",
        ))),
        "com.atproto.sync.getLatestCommit" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            json(pds.latest_commit(&did).await?)
        }
        "com.atproto.sync.getBlob" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            match pds.get_blob(&did, req.param("cid")?).await? {
                Some((bytes, mime)) => Ok((
                    [
                        (header::CONTENT_TYPE, mime),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; sandbox".to_owned(),
                        ),
                    ],
                    bytes,
                )
                    .into_response()),
                // The reference PDS's answer (not the lexicon's BlobNotFound).
                None => Err(PdsError(XrpcError::invalid("Blob not found"))),
            }
        }
        "com.atproto.sync.listBlobs" => {
            let did = pds.lookup_did(req.param("did")?).await?;
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(500);
            let cids = pds
                .list_blobs(&did, limit, req.query.get("cursor").cloned())
                .await?;
            // As the reference: the last key of every non-empty page.
            let cursor = cids.last().cloned();
            json(ListBlobsOutput { cids, cursor })
        }
        "com.atproto.sync.listRepos" => {
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(500);
            let rows = pds
                .list_repos(limit, req.query.get("cursor").cloned())
                .await?;
            // As the reference: the last key of every non-empty page.
            let cursor = rows.last().map(|r| r.0.clone());
            let repos = rows
                .into_iter()
                .map(|(did, head, rev, active)| RepoInfo {
                    did,
                    head,
                    rev,
                    active,
                    status: (!active).then(|| "takendown".to_owned()),
                })
                .collect();
            json(ListReposOutput { repos, cursor })
        }
        "com.atproto.identity.resolveHandle" => {
            let handle = req.param("handle")?;
            let did = pds
                .lookup_did(handle)
                .await
                .map_err(|_| PdsError(XrpcError::invalid("Unable to resolve handle")))?;
            json(ResolveHandleOutput { did })
        }
        // The reference PDS's answer: a method it does not serve would be
        // proxied to an AppView, and there is none.
        _ => Err(PdsError(XrpcError::invalid(format!(
            "No service configured for {nsid}"
        )))),
    }
}

/// Reads a JSON body and authorizes the token for the repository it names.
async fn req_json_authorized<T: DeserializeOwned>(
    pds: &Pds,
    req: &Req,
    repo_of: impl Fn(&T) -> String,
) -> Result<T, PdsError> {
    pds.verify_token(req.bearer()?, &[AuthScope::Access, AuthScope::AppPass])?;
    let input: T = req.json()?;
    pds.authorize_repo(req, &repo_of(&input)).await?;
    Ok(input)
}

fn single_write_output(out: crate::repo::WriteResult) -> Result<WriteOutput, PdsError> {
    let (uri, cid) = out
        .results
        .into_iter()
        .next()
        .ok_or_else(|| PdsError(XrpcError::internal()))?;
    Ok(WriteOutput {
        uri,
        cid: cid.ok_or_else(|| PdsError(XrpcError::internal()))?,
        commit: out.commit,
        validation_status: Some("unknown".into()),
    })
}

async fn well_known(State(pds): State<Pds>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    match pds.lookup_did(host).await {
        Ok(did) if !host.starts_with("did:") => {
            ([(header::CONTENT_TYPE, "text/plain")], did).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "User not found").into_response(),
    }
}

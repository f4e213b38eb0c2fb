use crate::XrpcError;
use crate::types::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;
use url::Url;

/// Errors from the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an XRPC error.
    #[error(transparent)]
    Xrpc(#[from] XrpcError),
    /// The request did not complete (connection, timeout, TLS).
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The response body was not what the method returns.
    #[error("unexpected response from {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A method that needs a session was called without one.
    #[error("not logged in")]
    NoSession,
}

impl ClientError {
    /// Whether the failure says nothing about the request itself (retry later).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Xrpc(e) => e.status >= 500 || e.status == 429,
            _ => false,
        }
    }
    /// The XRPC error name, if the server sent one.
    pub fn xrpc_name(&self) -> Option<&str> {
        match self {
            Self::Xrpc(e) => Some(&e.error),
            _ => None,
        }
    }
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account DID.
    pub did: String,
    /// The handle.
    pub handle: String,
    /// Access token.
    pub access_jwt: String,
    /// Refresh token.
    pub refresh_jwt: String,
}

enum Auth {
    None,
    Access,
    Refresh,
    Basic(String),
}

enum Body {
    None,
    Json(Vec<u8>),
    Raw(Vec<u8>, String),
}

/// A client for one PDS (XRPC over HTTP).
pub struct PdsClient {
    base: Url,
    http: reqwest::Client,
    session: Mutex<Option<Session>>,
}

impl PdsClient {
    /// A client for the PDS at `base` (for example `https://pds.example.com`).
    pub fn new(base: Url, http: reqwest::Client) -> Self {
        Self {
            base,
            http,
            session: Mutex::new(None),
        }
    }

    /// The PDS base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The current session, if logged in.
    pub fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Uses an existing session.
    pub fn set_session(&self, s: Option<Session>) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    fn url(&self, nsid: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("/xrpc/{nsid}"));
        u
    }

    async fn send(
        &self,
        get: bool,
        nsid: &str,
        query: &[(&str, &str)],
        body: &Body,
        auth: &Auth,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(nsid);
        let mut req = if get {
            self.http.get(url.clone())
        } else {
            self.http.post(url.clone())
        };
        if !query.is_empty() {
            req = req.query(query);
        }
        let token = match auth {
            Auth::None => None,
            Auth::Access => Some(self.session().ok_or(ClientError::NoSession)?.access_jwt),
            Auth::Refresh => Some(self.session().ok_or(ClientError::NoSession)?.refresh_jwt),
            Auth::Basic(b) => {
                req = req.header("authorization", format!("Basic {b}"));
                None
            }
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(b) => req
                .header("content-type", "application/json")
                .body(b.clone()),
            Body::Raw(b, ct) => req.header("content-type", ct.as_str()).body(b.clone()),
        };
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let mut err: XrpcError = serde_json::from_str(&text).unwrap_or_else(|_| {
            XrpcError::new(
                status,
                "UnknownError",
                text.chars().take(200).collect::<String>(),
            )
        });
        err.status = status;
        Err(ClientError::Xrpc(err))
    }

    /// Sends a call; with an access token, refreshes once on `ExpiredToken`.
    async fn call(
        &self,
        get: bool,
        nsid: &str,
        query: &[(&str, &str)],
        body: Body,
        auth: Auth,
    ) -> Result<reqwest::Response, ClientError> {
        match self.send(get, nsid, query, &body, &auth).await {
            Err(e) if matches!(auth, Auth::Access) && e.xrpc_name() == Some("ExpiredToken") => {
                self.refresh_session().await?;
                self.send(get, nsid, query, &body, &auth).await
            }
            other => other,
        }
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    async fn bytes(resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let url = resp.url().to_string();
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Transport {
                url,
                reason: e.to_string(),
            })
    }

    fn body<T: Serialize>(v: &T) -> Body {
        Body::Json(serde_json::to_vec(v).expect("request bodies serialize"))
    }

    async fn procedure<I: Serialize, O: DeserializeOwned>(
        &self,
        nsid: &str,
        input: &I,
    ) -> Result<O, ClientError> {
        Self::json(
            self.call(false, nsid, &[], Self::body(input), Auth::Access)
                .await?,
        )
        .await
    }

    async fn query<O: DeserializeOwned>(
        &self,
        nsid: &str,
        q: &[(&str, &str)],
        auth: bool,
    ) -> Result<O, ClientError> {
        let a = if auth && self.session().is_some() {
            Auth::Access
        } else {
            Auth::None
        };
        Self::json(self.call(true, nsid, q, Body::None, a).await?).await
    }

    fn store(&self, s: SessionOutput) -> Session {
        let session = Session {
            did: s.did,
            handle: s.handle,
            access_jwt: s.access_jwt,
            refresh_jwt: s.refresh_jwt,
        };
        self.set_session(Some(session.clone()));
        session
    }

    /// `com.atproto.server.createSession`: logs in and keeps the session.
    pub async fn create_session(
        &self,
        identifier: &str,
        password: &str,
    ) -> Result<Session, ClientError> {
        let input = CreateSessionInput {
            identifier: identifier.to_owned(),
            password: password.to_owned(),
        };
        let resp = self
            .call(
                false,
                "com.atproto.server.createSession",
                &[],
                Self::body(&input),
                Auth::None,
            )
            .await?;
        Ok(self.store(Self::json(resp).await?))
    }

    /// `com.atproto.server.refreshSession`.
    pub async fn refresh_session(&self) -> Result<Session, ClientError> {
        let resp = self
            .send(
                false,
                "com.atproto.server.refreshSession",
                &[],
                &Body::None,
                &Auth::Refresh,
            )
            .await?;
        Ok(self.store(Self::json(resp).await?))
    }

    /// `com.atproto.server.getSession`.
    pub async fn get_session(&self) -> Result<GetSessionOutput, ClientError> {
        self.query("com.atproto.server.getSession", &[], true).await
    }

    /// `com.atproto.server.deleteSession` (logout).
    pub async fn delete_session(&self) -> Result<(), ClientError> {
        self.send(
            false,
            "com.atproto.server.deleteSession",
            &[],
            &Body::None,
            &Auth::Refresh,
        )
        .await?;
        self.set_session(None);
        Ok(())
    }

    /// `com.atproto.server.createAppPassword`.
    pub async fn create_app_password(&self, name: &str) -> Result<AppPassword, ClientError> {
        self.procedure(
            "com.atproto.server.createAppPassword",
            &CreateAppPasswordInput {
                name: name.into(),
                privileged: None,
            },
        )
        .await
    }

    /// `com.atproto.server.describeServer`.
    pub async fn describe_server(&self) -> Result<DescribeServerOutput, ClientError> {
        self.query("com.atproto.server.describeServer", &[], false)
            .await
    }

    /// `com.atproto.server.createAccount`, optionally with admin basic auth
    /// (`base64("admin:" + password)`); keeps the new session.
    pub async fn create_account(
        &self,
        input: &CreateAccountInput,
        admin_basic: Option<&str>,
    ) -> Result<Session, ClientError> {
        let auth = admin_basic.map_or(Auth::None, |b| Auth::Basic(b.to_owned()));
        let resp = self
            .call(
                false,
                "com.atproto.server.createAccount",
                &[],
                Self::body(input),
                auth,
            )
            .await?;
        Ok(self.store(Self::json(resp).await?))
    }

    /// `com.atproto.repo.createRecord`.
    pub async fn create_record(
        &self,
        input: &CreateRecordInput,
    ) -> Result<WriteOutput, ClientError> {
        self.procedure("com.atproto.repo.createRecord", input).await
    }

    /// `com.atproto.repo.putRecord`.
    pub async fn put_record(&self, input: &PutRecordInput) -> Result<WriteOutput, ClientError> {
        self.procedure("com.atproto.repo.putRecord", input).await
    }

    /// `com.atproto.repo.deleteRecord`.
    pub async fn delete_record(
        &self,
        input: &DeleteRecordInput,
    ) -> Result<DeleteOutput, ClientError> {
        self.procedure("com.atproto.repo.deleteRecord", input).await
    }

    /// `com.atproto.repo.applyWrites`.
    pub async fn apply_writes(
        &self,
        input: &ApplyWritesInput,
    ) -> Result<ApplyWritesOutput, ClientError> {
        self.procedure("com.atproto.repo.applyWrites", input).await
    }

    /// `com.atproto.repo.getRecord`.
    pub async fn get_record(
        &self,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<RecordOutput, ClientError> {
        self.query(
            "com.atproto.repo.getRecord",
            &[("repo", repo), ("collection", collection), ("rkey", rkey)],
            false,
        )
        .await
    }

    /// `com.atproto.repo.listRecords`.
    pub async fn list_records(
        &self,
        repo: &str,
        collection: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ListRecordsOutput, ClientError> {
        let limit = limit.to_string();
        let mut q = vec![
            ("repo", repo),
            ("collection", collection),
            ("limit", limit.as_str()),
        ];
        if let Some(c) = cursor {
            q.push(("cursor", c));
        }
        self.query("com.atproto.repo.listRecords", &q, false).await
    }

    /// `com.atproto.repo.describeRepo`.
    pub async fn describe_repo(&self, repo: &str) -> Result<DescribeRepoOutput, ClientError> {
        self.query("com.atproto.repo.describeRepo", &[("repo", repo)], false)
            .await
    }

    /// `com.atproto.repo.uploadBlob`.
    pub async fn upload_blob(
        &self,
        data: Vec<u8>,
        mime: &str,
    ) -> Result<UploadBlobOutput, ClientError> {
        let resp = self
            .call(
                false,
                "com.atproto.repo.uploadBlob",
                &[],
                Body::Raw(data, mime.to_owned()),
                Auth::Access,
            )
            .await?;
        Self::json(resp).await
    }

    /// `com.atproto.sync.getRecord`: the proof CAR for a record (or its absence).
    pub async fn sync_get_record(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let q = [("did", did), ("collection", collection), ("rkey", rkey)];
        Self::bytes(
            self.call(
                true,
                "com.atproto.sync.getRecord",
                &q,
                Body::None,
                Auth::None,
            )
            .await?,
        )
        .await
    }

    /// `com.atproto.sync.getRepo`: the whole repository as a CAR.
    pub async fn sync_get_repo(&self, did: &str) -> Result<Vec<u8>, ClientError> {
        Self::bytes(
            self.call(
                true,
                "com.atproto.sync.getRepo",
                &[("did", did)],
                Body::None,
                Auth::None,
            )
            .await?,
        )
        .await
    }

    /// `com.atproto.sync.getLatestCommit`.
    pub async fn get_latest_commit(&self, did: &str) -> Result<LatestCommit, ClientError> {
        self.query("com.atproto.sync.getLatestCommit", &[("did", did)], false)
            .await
    }

    /// `com.atproto.sync.getBlob`.
    pub async fn get_blob(&self, did: &str, cid: &str) -> Result<Vec<u8>, ClientError> {
        Self::bytes(
            self.call(
                true,
                "com.atproto.sync.getBlob",
                &[("did", did), ("cid", cid)],
                Body::None,
                Auth::None,
            )
            .await?,
        )
        .await
    }

    /// `com.atproto.sync.getBlob`, refused once the body passes `max` bytes.
    /// Read as it arrives, so a PDS that answers with more cannot make the
    /// caller hold more.
    pub async fn get_blob_at_most(
        &self,
        did: &str,
        cid: &str,
        max: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let mut resp = self
            .call(
                true,
                "com.atproto.sync.getBlob",
                &[("did", did), ("cid", cid)],
                Body::None,
                Auth::None,
            )
            .await?;
        let url = resp.url().to_string();
        let too_big = || ClientError::Decode {
            url: url.clone(),
            reason: format!("blob larger than {max} bytes"),
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_big());
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        })? {
            if out.len() + chunk.len() > max {
                return Err(too_big());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// `com.atproto.sync.listBlobs`.
    pub async fn list_blobs(&self, did: &str) -> Result<ListBlobsOutput, ClientError> {
        self.query("com.atproto.sync.listBlobs", &[("did", did)], false)
            .await
    }

    /// `com.atproto.sync.listRepos`.
    pub async fn list_repos(&self) -> Result<ListReposOutput, ClientError> {
        self.query("com.atproto.sync.listRepos", &[], false).await
    }

    /// `com.atproto.identity.resolveHandle`.
    pub async fn resolve_handle(&self, handle: &str) -> Result<ResolveHandleOutput, ClientError> {
        self.query(
            "com.atproto.identity.resolveHandle",
            &[("handle", handle)],
            false,
        )
        .await
    }
}

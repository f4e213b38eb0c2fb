//! The HTML pages.

use crate::session::{self, SESSION_COOKIE, SIGNIN_COOKIE, Visitor};
use crate::view::{self, DESCRIPTION, parse_manifest};
use crate::{Web, WebError};
use atcr_oci::signature::{ANNOTATION_DID, SIGNATURE_ARTIFACT_TYPE};
use atcr_registry::index::WebSession;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Longest web session of an account on another PDS (12 h).
const REMOTE_SESSION_SECS: i64 = 12 * 3600;
/// Tags per repository page.
const PAGE: usize = 50;
/// Longest search text taken.
const MAX_QUERY: usize = 200;

type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

impl Web {
    /// The signed-in visitor, if the session cookie names a live session
    /// whose credentials were not revoked since.
    pub async fn visitor(&self, headers: &HeaderMap) -> Option<Visitor> {
        let token = session::cookie(headers, SESSION_COOKIE)?;
        if token.len() > 64 {
            return None;
        }
        let id = session::stored_id(token);
        let s = self.inner.registry.index().web_session(&id).await.ok()??;
        if self
            .inner
            .registry
            .revoked_at(&s.did)
            .is_some_and(|at| at as i64 > s.created_at)
        {
            let _ = self.inner.registry.index().delete_web_session(&id).await;
            return None;
        }
        Some(Visitor { session: s, id })
    }

    /// A page (or the error page when `page` failed) with the visitor's
    /// header; anonymous visitors of a private registry are sent to sign in.
    async fn page(
        &self,
        headers: &HeaderMap,
        template: &str,
        title: &str,
        page: impl AsyncFnOnce(&Option<Visitor>) -> Result<minijinja::Value, WebError>,
    ) -> Response {
        let visitor = self.visitor(headers).await;
        if visitor.is_none() && !self.inner.cfg.public {
            return Redirect::to("/signin").into_response();
        }
        match page(&visitor).await {
            Ok(ctx) => self.html(StatusCode::OK, template, title, &visitor, ctx),
            Err(e) => self.error_page(&visitor, e),
        }
    }

    fn html(
        &self,
        status: StatusCode,
        template: &str,
        title: &str,
        visitor: &Option<Visitor>,
        ctx: minijinja::Value,
    ) -> Response {
        let base = context! {
            title => title,
            visitor => visitor.as_ref().map(|v| context! {
                handle => v.session.handle.clone(), did => v.session.did.clone(), csrf => v.session.csrf.clone(),
            }),
            host => self.inner.host.clone(),
        };
        match self.render(template, context! { ..ctx, ..base }) {
            Ok(body) => (status, no_store(), Html(body)).into_response(),
            Err(e) => self.error_page(visitor, e),
        }
    }

    fn error_page(&self, visitor: &Option<Visitor>, e: WebError) -> Response {
        let status = e.status();
        if matches!(e, WebError::SignIn) {
            return Redirect::to("/signin").into_response();
        }
        let message = e.message();
        let ctx = context! {
            title => status.canonical_reason().unwrap_or("error"),
            message => message.clone(),
            status => status.as_u16(),
            visitor => visitor.as_ref().map(|v| context! {
                handle => v.session.handle.clone(), did => v.session.did.clone(), csrf => v.session.csrf.clone(),
            }),
            host => self.inner.host.clone(),
        };
        match self.render("error.html", ctx) {
            Ok(body) => (status, no_store(), Html(body)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }

    /// DIDs a search text names as an owner: a DID, or a handle this
    /// registry knows (its own accounts, remote owners' sessions). No
    /// network lookup on behalf of a visitor's typing.
    pub(crate) async fn search_owners(&self, q: &str) -> Vec<String> {
        if q.starts_with("did:") {
            return atcr_syntax::Did::new(q)
                .map(|d| vec![d.to_string()])
                .unwrap_or_default();
        }
        if atcr_syntax::Handle::new(q).is_err() {
            return vec![];
        }
        if let Some(pds) = self.inner.registry.pds()
            && let Ok(did) = pds.lookup_did(q).await
        {
            return vec![did];
        }
        match self.inner.registry.index().session_did_by_handle(q).await {
            Ok(Some(did)) => vec![did],
            _ => vec![],
        }
    }
}

/// A template value of anything serializable.
fn ser<T: Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub(crate) async fn home(State(web): State<Web>, headers: HeaderMap) -> Response {
    let w = web.clone();
    web.page(&headers, "home.html", "Home", async move |_| {
        let index = w.inner.registry.index();
        let (repos, tags) = index.totals().await?;
        let mut recent = vec![];
        for t in index.recent_tags(None, 30).await? {
            recent.push(w.tag_view(&t, false).await);
        }
        Ok(context! { recent => ser(&recent), repos => repos, tags => tags })
    })
    .await
}

/// What a search finds (the page and `/api/v1/search`).
#[derive(Serialize)]
pub(crate) struct Found {
    query: String,
    owners: Vec<view::OwnerView>,
    repositories: Vec<view::RepoSummary>,
    tags: Vec<view::TagView>,
}

impl Web {
    pub(crate) async fn find(&self, q: &str) -> Result<Found, WebError> {
        let q: String = q.trim().chars().take(MAX_QUERY).collect();
        let mut found = Found {
            query: q.clone(),
            owners: vec![],
            repositories: vec![],
            tags: vec![],
        };
        if q.is_empty() {
            return Ok(found);
        }
        let index = self.inner.registry.index();
        let owners = self.search_owners(&q).await;
        for d in &owners {
            found.owners.push(self.owner_view(d).await);
        }
        for r in index.search_repos(&q, &owners, 50).await? {
            found.repositories.push(self.repo_summary(&r).await);
        }
        for t in index.search_tags(&q, 50).await? {
            found.tags.push(self.tag_view(&t, false).await);
        }
        Ok(found)
    }
}

pub(crate) async fn search(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let w = web.clone();
    web.page(&headers, "search.html", "Search", async move |_| {
        let found = w.find(&q.q).await?;
        Ok(context! { q => found.query.clone(), found => ser(&found) })
    })
    .await
}

/// The owner page's identity block.
#[derive(Serialize, Default)]
struct Identity {
    pds: Option<String>,
    key: Option<String>,
    also_known_as: Vec<String>,
    error: Option<String>,
}

/// Repositories per owner page.
const OWNER_PAGE: usize = 100;

pub(crate) async fn owner(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(seg): Path<String>,
    Query(p): Query<PageQuery>,
) -> Response {
    let w = web.clone();
    web.page(&headers, "owner.html", &seg.clone(), async move |_| {
        let did = w.owner_did(&seg).await?;
        let owner = w.owner_view(&did).await;
        let index = w.inner.registry.index();
        let mut repos = vec![];
        let page = p.page.min(100_000);
        // One more than shown: whether there is a next page.
        for r in index
            .owner_repos(&did, page * OWNER_PAGE, OWNER_PAGE + 1)
            .await?
        {
            repos.push(w.repo_summary(&r).await);
        }
        let next = (repos.len() > OWNER_PAGE).then_some(page + 1);
        repos.truncate(OWNER_PAGE);
        let mut identity = Identity::default();
        match atcr_syntax::Did::new(&did) {
            Ok(d) => match tokio::time::timeout(
                Duration::from_secs(2),
                w.inner.registry.resolver().resolve_did(&d),
            )
            .await
            {
                Ok(Ok(doc)) => {
                    identity.pds = doc.pds_endpoint().ok().map(|u| u.to_string());
                    identity.key = doc.signing_key().ok().map(|k| k.to_did_key());
                    identity.also_known_as = doc.also_known_as.clone();
                }
                Ok(Err(e)) => identity.error = Some(e.to_string()),
                Err(_) => identity.error = Some("the DID document did not arrive in 2 s".into()),
            },
            Err(e) => identity.error = Some(e.to_string()),
        }
        let mut cosigned = vec![];
        for c in index.cosigned_by(&did, 50).await? {
            let o = w.owner_view(&c.did).await;
            cosigned.push(context! {
                name => format!("{}/{}", o.name, c.repo),
                subject => c.subject.clone(),
                url => format!("/r/{}/{}/-/manifest/{}", o.name, c.repo, c.subject),
                record_uri => c.record_uri,
            });
        }
        Ok(context! {
            owner => ser(&owner), repos => ser(&repos), identity => ser(&identity),
            cosigned => cosigned, next => next, prev => page.checked_sub(1),
        })
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    page: usize,
}

/// `(repo, digest)` of `REPO` or `REPO/-/manifest/DIGEST`.
pub(crate) fn split_rest(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once("/-/manifest/") {
        Some((repo, digest)) => (repo, Some(digest)),
        None => (rest.trim_end_matches('/'), None),
    }
}

impl Web {
    /// `(DID, REPO)` of a URL's owner segment and repository path, checked
    /// against the name grammar.
    pub(crate) async fn repo_of(
        &self,
        seg: &str,
        repo: &str,
    ) -> Result<(String, String), WebError> {
        let name = atcr_oci::RepoName::parse(&format!("x.test/{repo}"))
            .map_err(|e| WebError::NotFound(e.message))?;
        let did = self.owner_did(seg).await?;
        Ok((did, name.repo().to_owned()))
    }

    /// The description of a repository: the newest tag's
    /// `org.opencontainers.image.description` annotation (an index's own,
    /// else its first image's), else the same label of its image
    /// configuration.
    async fn description(
        &self,
        did: &str,
        repo: &str,
        tags: &[atcr_registry::index::TagRow],
    ) -> Option<String> {
        let t = tags.first()?;
        let info = parse_manifest(&t.bytes);
        if let Some((_, d)) = info.annotations.iter().find(|(k, _)| k == DESCRIPTION) {
            return Some(d.clone());
        }
        let image = match info.children.first() {
            Some(child) => {
                let m = self
                    .inner
                    .registry
                    .index()
                    .manifest(did, repo, &child.digest, true)
                    .await
                    .ok()??;
                parse_manifest(&m.bytes)
            }
            None => info,
        };
        if let Some((_, d)) = image.annotations.iter().find(|(k, _)| k == DESCRIPTION) {
            return Some(d.clone());
        }
        let config = self.config_view(image.config.as_ref()?).await?;
        config
            .labels
            .into_iter()
            .find(|(k, _)| k == DESCRIPTION)
            .map(|(_, d)| d)
    }
}

pub(crate) async fn repository(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((seg, rest)): Path<(String, String)>,
    Query(p): Query<PageQuery>,
) -> Response {
    let (repo, digest) = split_rest(&rest);
    let (repo, digest) = (repo.to_owned(), digest.map(str::to_owned));
    let w = web.clone();
    if let Some(digest) = digest {
        let title = format!("{seg}/{repo}@{digest}");
        return web
            .page(&headers, "manifest.html", &title, async move |_| {
                manifest_page(&w, &seg, &repo, &digest).await
            })
            .await;
    }
    let title = format!("{seg}/{repo}");
    web.page(&headers, "repo.html", &title, async move |_| {
        let (did, repo) = w.repo_of(&seg, &repo).await?;
        let index = w.inner.registry.index();
        let Some(summary) = index.owner_repo(&did, &repo).await? else {
            return Err(WebError::NotFound(format!("no repository {seg}/{repo}")));
        };
        let summary = w.repo_summary(&summary).await;
        let page = p.page.min(100_000);
        let rows = index.repo_tags(&did, &repo, page * PAGE, PAGE).await?;
        let description = w.description(&did, &repo, &rows).await;
        let mut tags = vec![];
        for t in &rows {
            tags.push(w.tag_view(t, true).await);
        }
        let pages = summary.tags.div_ceil(PAGE as u64) as usize;
        Ok(context! {
            repo => ser(&summary), tags => ser(&tags), description => description,
            page => page, next => (page + 1 < pages).then_some(page + 1),
            prev => page.checked_sub(1),
        })
    })
    .await
}

async fn manifest_page(
    w: &Web,
    seg: &str,
    repo: &str,
    digest: &str,
) -> Result<minijinja::Value, WebError> {
    let (did, repo) = w.repo_of(seg, repo).await?;
    let digest = atcr_oci::Digest::parse(digest)
        .map_err(|_| WebError::NotFound(format!("{digest} is not a digest")))?
        .to_string();
    let index = w.inner.registry.index();
    let Some(m) = index.manifest(&did, &repo, &digest, true).await? else {
        return Err(WebError::NotFound(format!(
            "no manifest {digest} in {seg}/{repo}"
        )));
    };
    let owner = w.owner_view(&did).await;
    let mut info = parse_manifest(&m.bytes);
    if info.kind == "index" {
        w.size_children(&did, &repo, &mut info).await;
    }
    let config = match &info.config {
        Some(c) => w.config_view(c).await,
        None => None,
    };
    let tags = index.tags_of(&did, &repo, &digest).await?;
    let mut referrers = vec![];
    for r in index.referrers(&did, &repo, &digest).await? {
        let ann: serde_json::Value = r
            .annotations
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let signer = ann[ANNOTATION_DID].as_str().map(str::to_owned);
        referrers.push(context! {
            digest => r.digest.clone(),
            artifact_type => r.artifact_type.clone(),
            signature => r.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE),
            signer => signer,
            size => r.size,
            url => format!("/r/{}/{repo}/-/manifest/{}", owner.name, r.digest),
        });
    }
    let image = w.image_ref(&did, &repo, &digest);
    let badge = w.badge_now(&image).await;
    let plain = if w.inner.cfg.public_url.scheme() == "http" {
        " --plain-http-loopback"
    } else {
        ""
    };
    Ok(context! {
        owner => ser(&owner),
        repo => repo.clone(),
        name => format!("{}/{repo}", owner.name),
        repo_url => format!("/r/{}/{repo}", owner.name),
        digest => digest.clone(),
        media_type => m.media_type,
        manifest_size => m.size,
        info => ser(&info),
        config => ser(&config),
        size_human => view::human_size(info.size),
        tags => tags,
        referrers => referrers,
        verification => ser(&badge),
        badge_label => badge.label(),
        badge_api => format!("/api/v1/verification/{}/{repo}?reference={digest}", owner.name),
        pull => format!("docker pull {}/{}/{repo}@{digest}", w.inner.host, owner.name),
        verify => format!("atcr-verify {image}{plain}"),
    })
}

// ---- signing in ----

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    handle: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn signin_page(web: &Web, status: StatusCode, error: Option<&str>, handle: &str) -> Response {
    let csrf = session::random_token();
    let mut r = web.html(
        status,
        "signin.html",
        "Sign in",
        &None,
        context! { csrf => csrf.clone(), error => error, handle => handle },
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SIGNIN_COOKIE, &csrf, 3600, web.inner.secure),
    );
    r
}

pub(crate) async fn signin_form(State(web): State<Web>, headers: HeaderMap) -> Response {
    if web.visitor(&headers).await.is_some() {
        return Redirect::to("/me").into_response();
    }
    signin_page(&web, StatusCode::OK, None, "")
}

impl Web {
    /// Checks a handle and password: `(DID, handle, signed in with the
    /// account password, an account of this registry's PDS)`. This registry's own accounts are checked by its
    /// PDS; others by theirs, as `docker login` is.
    async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(String, String, bool, bool), WebError> {
        let denied = || WebError::Forbidden("wrong handle or password".into());
        if let Some(pds) = self.inner.registry.pds()
            && pds.lookup_did(user).await.is_ok()
        {
            let s = pds.login(user, password).await.map_err(|_| denied())?;
            let full = pds
                .verify_token(&s.access_jwt, &[atcr_pds::AuthScope::Access])
                .is_ok();
            return Ok((s.did, s.handle, full, true));
        }
        match self.inner.registry.authenticate(user, password).await {
            Ok(did) => {
                let handle = match self.inner.registry.index().session(&did).await {
                    Ok(Some(s)) => s.handle,
                    _ => user.to_owned(),
                };
                Ok((did, handle, false, false))
            }
            Err(e) if e.is_unavailable() => Err(WebError::Unavailable(e.to_string())),
            Err(_) => Err(denied()),
        }
    }

    /// Starts a session; the `Set-Cookie` value.
    async fn start_session(
        &self,
        did: &str,
        handle: &str,
        full_access: bool,
        embedded: bool,
    ) -> Result<axum::http::HeaderValue, WebError> {
        let token = session::random_token();
        let mut ttl = self.inner.cfg.session_ttl.as_secs() as i64;
        // A remote PDS does not tell this registry when an app password is
        // revoked there: such sessions are checked again at the next
        // sign-in, at most REMOTE_SESSION_SECS later.
        if !embedded {
            ttl = ttl.min(REMOTE_SESSION_SECS);
        }
        self.inner
            .registry
            .index()
            .create_web_session(
                &session::stored_id(&token),
                &WebSession {
                    did: did.to_owned(),
                    handle: handle.to_owned(),
                    full_access,
                    csrf: session::random_token(),
                    created_at: 0,
                },
                ttl,
                session::MAX_PER_ACCOUNT,
            )
            .await?;
        Ok(session::set_cookie(
            SESSION_COOKIE,
            &token,
            ttl,
            self.inner.secure,
        ))
    }
}

pub(crate) async fn signin(
    State(web): State<Web>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let bad_form = || {
        signin_page(
            &web,
            StatusCode::FORBIDDEN,
            Some("the form expired or came from another site; sign in again"),
            "",
        )
    };
    if !session::same_origin(&headers, &web.inner.origin) {
        return bad_form();
    }
    match session::cookie(&headers, SIGNIN_COOKIE) {
        Some(c) if !f.csrf.is_empty() && session::same(c, &f.csrf) => {}
        _ => return bad_form(),
    }
    let user = f.handle.trim().trim_start_matches('@').to_owned();
    if user.is_empty() || user.len() > 253 || f.password.is_empty() || f.password.len() > 1024 {
        return signin_page(
            &web,
            StatusCode::BAD_REQUEST,
            Some("enter a handle and a password"),
            &user,
        );
    }
    let peer = peer.map(|p| p.0.0.ip());
    let throttle = web.inner.registry.failed_logins();
    if let Err(wait) = throttle.check(peer, &user) {
        let msg = format!(
            "too many failed sign-ins; try again in {} s",
            wait.as_secs().max(1)
        );
        return signin_page(&web, StatusCode::TOO_MANY_REQUESTS, Some(&msg), &user);
    }
    match web.login(&user, &f.password).await {
        Ok((did, handle, full, embedded)) => {
            throttle.succeeded(&user);
            tracing::info!(target: "atcr::auth", %did, full, "signed in to the web UI");
            match web.start_session(&did, &handle, full, embedded).await {
                Ok(cookie) => {
                    let mut r = Redirect::to("/me").into_response();
                    r.headers_mut().append(header::SET_COOKIE, cookie);
                    r.headers_mut().append(
                        header::SET_COOKIE,
                        session::set_cookie(SIGNIN_COOKIE, "", 0, web.inner.secure),
                    );
                    r
                }
                Err(e) => web.error_page(&None, e),
            }
        }
        Err(WebError::Unavailable(m)) => {
            signin_page(&web, StatusCode::SERVICE_UNAVAILABLE, Some(&m), &user)
        }
        Err(_) => {
            throttle.failed(peer, &user);
            web.inner.registry.metrics().login_failures.inc();
            tracing::info!(target: "atcr::auth", user = %user, client = ?peer, "web sign-in failed");
            // The form again with its message: a page that rendered as
            // meant (200); no session cookie is set.
            signin_page(
                &web,
                StatusCode::OK,
                Some("wrong handle or password"),
                &user,
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl Web {
    /// The visitor of a state-changing request: signed in, the form from
    /// this registry's origin, carrying the session's CSRF token.
    async fn form_visitor(&self, headers: &HeaderMap, csrf: &str) -> Result<Visitor, WebError> {
        let v = self.visitor(headers).await.ok_or(WebError::SignIn)?;
        if !session::same_origin(headers, &self.inner.origin)
            || csrf.is_empty()
            || !session::same(csrf, &v.session.csrf)
        {
            return Err(WebError::Forbidden(
                "the form expired or came from another site; reload the page and try again".into(),
            ));
        }
        Ok(v)
    }
}

pub(crate) async fn signout(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = match web.form_visitor(&headers, &f.csrf).await {
        Ok(v) => v,
        Err(e) => return web.error_page(&None, e),
    };
    if let Err(e) = web.inner.registry.index().delete_web_session(&v.id).await {
        return web.error_page(&Some(v), e.into());
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", 0, web.inner.secure),
    );
    r
}

#[derive(Deserialize)]
pub(crate) struct MeQuery {
    #[serde(default)]
    done: String,
}

/// A fixed message for a `?done=` code (never text from the URL).
fn done_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "tag-deleted" => "The tag was deleted.",
        "password-revoked" => "The app password was revoked.",
        _ => return None,
    })
}

impl Web {
    async fn me_page(
        &self,
        v: &Visitor,
        message: Option<&str>,
        new_password: Option<(String, String)>,
    ) -> Result<minijinja::Value, WebError> {
        let did = &v.session.did;
        let index = self.inner.registry.index();
        let mut repos = vec![];
        for r in index.owner_repos(did, 0, OWNER_PAGE).await? {
            repos.push(self.repo_summary(&r).await);
        }
        let mut pushes = vec![];
        for t in index.recent_tags(Some(did), 100).await? {
            pushes.push(self.tag_view(&t, false).await);
        }
        let embedded = match self.inner.registry.pds() {
            Some(pds) => pds.handle_of(did).await.is_ok(),
            None => false,
        };
        let passwords = match (embedded, self.inner.registry.pds()) {
            (true, Some(pds)) => pds
                .list_app_passwords(did)
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?,
            _ => vec![],
        };
        let remote_pds = if embedded {
            None
        } else {
            index.session(did).await?.map(|s| s.pds)
        };
        Ok(context! {
            me => ser(&self.owner_view(did).await),
            full_access => v.session.full_access,
            embedded => embedded,
            remote_pds => remote_pds,
            repos => ser(&repos),
            pushes => ser(&pushes),
            passwords => ser(&passwords),
            message => message,
            new_password => new_password.map(|(n, p)| context! { name => n, password => p }),
        })
    }
}

pub(crate) async fn me(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<MeQuery>,
) -> Response {
    let Some(v) = web.visitor(&headers).await else {
        return Redirect::to("/signin").into_response();
    };
    let visitor = Some(v.clone());
    match web.me_page(&v, done_message(&q.done), None).await {
        Ok(ctx) => web.html(StatusCode::OK, "me.html", "Your images", &visitor, ctx),
        Err(e) => web.error_page(&visitor, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct DeleteTagForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    tag: String,
}

pub(crate) async fn delete_tag(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<DeleteTagForm>,
) -> Response {
    let v = match web.form_visitor(&headers, &f.csrf).await {
        Ok(v) => v,
        Err(e) => return web.error_page(&None, e),
    };
    // Only the visitor's own repositories: the owner is the session's DID.
    let r = async {
        let name = atcr_oci::RepoName::parse(&format!("x.test/{}", f.repo))
            .map_err(|e| WebError::BadRequest(e.message))?;
        atcr_oci::validate_tag(&f.tag).map_err(|e| WebError::BadRequest(e.message))?;
        let did = atcr_syntax::Did::new(v.session.did.as_str())
            .map_err(|e| WebError::Internal(format!("a session's DID: {e}")))?;
        let repo = atcr_registry::Repository::of(&did, name.repo())?;
        Ok(web
            .inner
            .registry
            .manifest_delete(&repo, &atcr_oci::Reference::Tag(f.tag.clone()))
            .await?)
    }
    .await;
    match r {
        Ok(()) => {
            tracing::info!(target: "atcr::web", did = %v.session.did, repo = %f.repo, tag = %f.tag, "tag deleted from the web UI");
            Redirect::to("/me?done=tag-deleted").into_response()
        }
        Err(e) => web.error_page(&Some(v), e),
    }
}

#[derive(Deserialize)]
pub(crate) struct AppPasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

impl Web {
    /// The visitor may manage app passwords: this registry's own account,
    /// signed in with the account password (an app password cannot mint or
    /// revoke others).
    async fn password_manager(
        &self,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<(Visitor, atcr_pds::Pds), WebError> {
        let v = self.form_visitor(headers, csrf).await?;
        let pds = self
            .inner
            .registry
            .pds()
            .filter(|_| v.session.full_access)
            .cloned()
            .ok_or_else(|| {
                WebError::Forbidden(
                    "app passwords are managed only after signing in with the account password"
                        .into(),
                )
            })?;
        Ok((v, pds))
    }
}

pub(crate) async fn create_app_password(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<AppPasswordForm>,
) -> Response {
    let (v, pds) = match web.password_manager(&headers, &f.csrf).await {
        Ok(x) => x,
        Err(e) => return web.error_page(&None, e),
    };
    let visitor = Some(v.clone());
    let name = f.name.trim();
    let created = pds
        .create_app_password(&v.session.did, name)
        .await
        .map_err(|e| WebError::BadRequest(e.to_string()));
    let ctx = match created {
        Ok(p) => web.me_page(&v, None, Some((p.name, p.password))).await,
        Err(e) => Err(e),
    };
    match ctx {
        Ok(ctx) => web.html(StatusCode::OK, "me.html", "Your images", &visitor, ctx),
        Err(e) => web.error_page(&visitor, e),
    }
}

pub(crate) async fn revoke_app_password(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<AppPasswordForm>,
) -> Response {
    let (v, pds) = match web.password_manager(&headers, &f.csrf).await {
        Ok(x) => x,
        Err(e) => return web.error_page(&None, e),
    };
    match pds.revoke_app_password(&v.session.did, &f.name).await {
        Ok(true) => {}
        Ok(false) => {
            return web.error_page(
                &Some(v),
                WebError::NotFound("no app password by that name".into()),
            );
        }
        Err(e) => return web.error_page(&Some(v), WebError::Internal(e.to_string())),
    }
    // Revoking ends every session of the account begun before it (app
    // password sessions among them); this one continues under a new cookie.
    let _ = web.inner.registry.index().delete_web_session(&v.id).await;
    match web
        .start_session(&v.session.did, &v.session.handle, true, true)
        .await
    {
        Ok(cookie) => {
            let mut r = Redirect::to("/me?done=password-revoked").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => web.error_page(&None, e),
    }
}

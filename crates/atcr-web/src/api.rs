//! The JSON API behind the pages (`docs/web.md`): the same views, for
//! scripts.

use crate::pages::split_rest;
use crate::{Web, WebError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let code = match &self {
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::SignIn => "sign_in_required",
            Self::TooMany(_) => "too_many_requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        };
        let status = self.status();
        (
            status,
            Json(json!({ "error": code, "message": self.message() })),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, WebError>;

impl Web {
    /// Anonymous callers of a private registry's API are refused.
    async fn gate(&self, headers: &HeaderMap) -> Result<(), WebError> {
        if self.inner.cfg.public || self.visitor(headers).await.is_some() {
            Ok(())
        } else {
            Err(WebError::SignIn)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Limit {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    30
}

/// `GET /api/v1/recent?limit=N`: the newest tag moves (at most 100).
pub(crate) async fn recent(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(l): Query<Limit>,
) -> ApiResult {
    web.gate(&headers).await?;
    let mut tags = vec![];
    for t in web
        .inner
        .registry
        .index()
        .recent_tags(None, l.limit.clamp(1, 100))
        .await?
    {
        tags.push(web.tag_view(&t, false).await);
    }
    Ok(Json(json!({ "tags": tags })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct Q {
    #[serde(default)]
    q: String,
}

/// `GET /api/v1/search?q=TEXT`: owners, repositories and tags (names and
/// annotations).
pub(crate) async fn search(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<Q>,
) -> ApiResult {
    web.gate(&headers).await?;
    Ok(Json(web.find(&q.q).await?).into_response())
}

/// `GET /api/v1/owners/OWNER?page=N`: an owner and 100 of their
/// repositories, by name.
pub(crate) async fn owner(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(seg): Path<String>,
    Query(q): Query<RepoQuery>,
) -> ApiResult {
    web.gate(&headers).await?;
    let did = web.owner_did(&seg).await?;
    let mut repos = vec![];
    let page = q.page.min(100_000);
    for r in web
        .inner
        .registry
        .index()
        .owner_repos(&did, page * 100, 100)
        .await?
    {
        repos.push(web.repo_summary(&r).await);
    }
    Ok(
        Json(json!({ "owner": web.owner_view(&did).await, "page": page, "repositories": repos }))
            .into_response(),
    )
}

#[derive(Deserialize)]
pub(crate) struct RepoQuery {
    #[serde(default)]
    page: usize,
}

/// `GET /api/v1/repositories/OWNER/REPO?page=N`: the repository and 50 of
/// its tags, newest first, each with its verification as it stands.
pub(crate) async fn repository(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((seg, rest)): Path<(String, String)>,
    Query(q): Query<RepoQuery>,
) -> ApiResult {
    web.gate(&headers).await?;
    let (repo, _) = split_rest(&rest);
    let (did, repo) = web.repo_of(&seg, repo).await?;
    let index = web.inner.registry.index();
    let summary = index
        .owner_repo(&did, &repo)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no repository {seg}/{repo}")))?;
    let page = q.page.min(100_000);
    let mut tags = vec![];
    for t in index.repo_tags(&did, &repo, page * 50, 50).await? {
        tags.push(web.tag_view(&t, true).await);
    }
    Ok(Json(json!({
        "repository": web.repo_summary(&summary).await,
        "page": page,
        "tags": tags,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct VerificationQuery {
    reference: String,
    #[serde(default)]
    wait: u64,
}

/// `GET /api/v1/verification/OWNER/REPO?reference=TAG|DIGEST[&wait=S]`: the
/// badge; with `wait`, up to that many seconds (at most 30) for a verdict.
pub(crate) async fn verification(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((seg, rest)): Path<(String, String)>,
    Query(q): Query<VerificationQuery>,
) -> ApiResult {
    web.gate(&headers).await?;
    let (repo, _) = split_rest(&rest);
    let (did, repo) = web.repo_of(&seg, repo).await?;
    let reference = atcr_oci::Reference::parse(&q.reference)
        .map_err(|e| WebError::BadRequest(e.message))?
        .to_string();
    // Only images this registry holds are verified (no verification of
    // arbitrary names on a visitor's behalf).
    let index = web.inner.registry.index();
    let held = if reference.contains(':') {
        index
            .manifest(&did, &repo, &reference, false)
            .await?
            .is_some()
    } else {
        index.tag(&did, &repo, &reference).await?.is_some()
    };
    if !held {
        return Err(WebError::NotFound(format!(
            "no {reference} in {seg}/{repo}"
        )));
    }
    let badge = web
        .badge(&did, &repo, &reference, Duration::from_secs(q.wait.min(30)))
        .await;
    Ok(Json(json!({
        "image": web.image_ref(&did, &repo, &reference),
        "verification": badge,
        "label": badge.label(),
    }))
    .into_response())
}

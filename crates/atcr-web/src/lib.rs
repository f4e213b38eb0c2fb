//! ATCR's web UI, served by `atcr serve` beside the registry: recent pushes
//! and search, owner pages, repository pages with a verification badge per
//! tag, manifest pages, a personal page after signing in, and the JSON API
//! the pages are built on (`docs/web.md`).
//!
//! Pages are rendered on the server (minijinja, auto-escaping every value:
//! annotations and descriptions are untrusted); one small script polls
//! badges still being checked and copies pull commands. Pages read the
//! registry index only; verification runs in the background ([`badge`]).

mod api;
pub mod badge;
mod pages;
pub mod session;
pub mod view;

use atcr_identity::TtlCache;
use atcr_registry::Registry;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// Web UI settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The registry's public URL (cookies are `Secure` when it is https;
    /// forms must come from its origin).
    pub public_url: url::Url,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// How long a verification verdict is shown before it is checked again
    /// (a revocation shows within this time).
    pub badge_ttl: Duration,
    /// Pages are public (`registry.anonymous_pull`); otherwise only signed-in
    /// visitors see them.
    pub public: bool,
}

/// What went wrong serving a page or an API call.
#[derive(Debug)]
pub enum WebError {
    /// 404.
    NotFound(String),
    /// 400.
    BadRequest(String),
    /// 403.
    Forbidden(String),
    /// 401: sign in first.
    SignIn,
    /// 429.
    TooMany(String),
    /// 503.
    Unavailable(String),
    /// 500 (logged; the visitor sees a generic message).
    Internal(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::SignIn => StatusCode::UNAUTHORIZED,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NotFound(m)
            | Self::BadRequest(m)
            | Self::Forbidden(m)
            | Self::TooMany(m)
            | Self::Unavailable(m) => m.clone(),
            Self::SignIn => "sign in to see this page".into(),
            Self::Internal(m) => {
                tracing::error!(target: "atcr::web", "{m}");
                "internal error; the registry's log has the details".into()
            }
        }
    }
}

/// A registry service's refusal, as a page reports it.
impl From<atcr_registry::Error> for WebError {
    fn from(e: atcr_registry::Error) -> Self {
        use atcr_registry::Error as E;
        match e {
            E::BlobUnknown(_) | E::UploadUnknown | E::ManifestUnknown(_) | E::NameUnknown(_) => {
                Self::NotFound(e.to_string())
            }
            E::Denied(_) | E::BadCredentials => Self::Forbidden(e.to_string()),
            E::TooManyUploads(_) => Self::TooMany(e.to_string()),
            E::Unavailable(_) => Self::Unavailable(e.to_string()),
            E::Internal(_) => Self::Internal(e.to_string()),
            _ => Self::BadRequest(e.to_string()),
        }
    }
}

impl From<atcr_registry::index::IndexError> for WebError {
    fn from(e: atcr_registry::index::IndexError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The web UI.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    cfg: WebConfig,
    templates: minijinja::Environment<'static>,
    badges: badge::Badges,
    handles: TtlCache<String, Option<String>>,
    /// Image configurations by digest.
    configs: TtlCache<String, view::ConfigView>,
    /// `host[:port]` of the public URL (image references).
    host: String,
    /// The public URL's origin (form checks).
    origin: String,
    secure: bool,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("search.html", include_str!("../templates/search.html")),
    ("owner.html", include_str!("../templates/owner.html")),
    ("repo.html", include_str!("../templates/repo.html")),
    ("manifest.html", include_str!("../templates/manifest.html")),
    ("signin.html", include_str!("../templates/signin.html")),
    ("me.html", include_str!("../templates/me.html")),
    ("error.html", include_str!("../templates/error.html")),
];

const CSS: &str = include_str!("../static/atcr.css");
const JS: &str = include_str!("../static/atcr.js");
const ICON: &str = include_str!("../static/favicon.svg");

impl Web {
    /// The UI over `registry`; badges from `verifier` (`None`: badges say
    /// "not checked" with `why_not`).
    pub fn new(
        registry: Registry,
        cfg: WebConfig,
        verifier: Option<atcr_verify::Verifier>,
        why_not: &str,
    ) -> Result<Self, String> {
        let mut templates = minijinja::Environment::new();
        for (name, text) in TEMPLATES {
            templates
                .add_template(name, text)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        let host = match (cfg.public_url.host_str(), cfg.public_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err("server.public_url has no host".into()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                badges: badge::Badges::new(verifier, why_not, cfg.badge_ttl),
                origin: cfg.public_url.origin().ascii_serialization(),
                secure: cfg.public_url.scheme() == "https",
                handles: TtlCache::new(Duration::from_secs(60), 100_000),
                configs: TtlCache::new(Duration::from_secs(3600), 10_000),
                host,
                registry,
                templates,
                cfg,
            }),
        })
    }

    /// The registry this UI shows.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The handle of `did` as this registry knows it: its own account's,
    /// or the one a remote owner signed in with. No network lookups: a page
    /// never waits on someone else's DNS.
    pub async fn handle_of(&self, did: &str) -> Option<String> {
        if let Some(h) = self.inner.handles.get(&did.to_owned()) {
            return h;
        }
        let mut h = None;
        if let Some(pds) = self.inner.registry.pds()
            && let Ok(handle) = pds.handle_of(did).await
        {
            h = Some(handle);
        }
        if h.is_none()
            && let Ok(Some(s)) = self.inner.registry.index().session(did).await
        {
            h = Some(s.handle);
        }
        // An invalid handle is never shown as one.
        let h = h.filter(|h| atcr_syntax::Handle::new(h).is_ok() && h != "handle.invalid");
        self.inner.handles.insert(did.to_owned(), h.clone());
        h
    }

    /// Renders template `name` with `ctx`.
    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, WebError> {
        self.inner
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| WebError::Internal(format!("rendering {name}: {e:#}")))
    }
}

/// Headers every page and API answer carries: a content security policy
/// that runs only this registry's own script and style (an injected inline
/// script would not run even if escaping failed), no framing, no sniffing.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "atcr.css" => (CSS, "text/css; charset=utf-8"),
        "atcr.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The UI's routes: pages at `/`, `/search`, `/u/…`, `/r/…`, `/signin`,
/// `/me`; the JSON API under `/api/v1/`; assets under `/static/`.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/search", get(pages::search))
        .route("/u/{owner}", get(pages::owner))
        .route("/r/{owner}/{*rest}", get(pages::repository))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/me", get(pages::me))
        .route("/me/tags/delete", post(pages::delete_tag))
        .route("/me/app-passwords", post(pages::create_app_password))
        .route("/me/app-passwords/revoke", post(pages::revoke_app_password))
        .route("/static/{file}", get(static_file))
        .route("/api/v1/recent", get(api::recent))
        .route("/api/v1/search", get(api::search))
        .route("/api/v1/owners/{owner}", get(api::owner))
        .route("/api/v1/repositories/{owner}/{*repo}", get(api::repository))
        .route(
            "/api/v1/verification/{owner}/{*repo}",
            get(api::verification),
        )
        // Forms are a few fields: a large body is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

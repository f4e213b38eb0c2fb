//! The verification service (`atcr-verify serve`, DESIGN §8): one verifier
//! (the shared library, with its verdict cache and single-flight) behind
//! the endpoints Kubernetes and its policy engines call.
//!
//! * `POST /validate`: `AdmissionReview` v1 for Pods and the pod templates of
//!   workload kinds; denies naming each failing image and its reason.
//! * `POST /mutate`: the same review answered with a JSONPatch pinning each
//!   verified tag to its verified digest.
//! * `POST /provide`: Gatekeeper external data (`ProviderRequest` →
//!   `ProviderResponse`), one item per key, always within the budget.
//! * `GET /verify?image=` (200 verified / 403 not) and `POST /verify`
//!   (always 200, the decision in the body: Kyverno's `apiCall`).
//! * `GET /metrics` (Prometheus), `/healthz`, `/readyz`.
//!
//! Fail closed: an image of a checked registry that cannot be verified in
//! time is denied, never admitted.

pub mod admission;
mod metrics;

use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Report, Verifier};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

pub use metrics::Metrics;

/// What happens to images of registries the service does not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtherImages {
    /// Admitted (another policy may decide about them).
    #[default]
    Allow,
    /// Admitted with a warning.
    Warn,
    /// Denied.
    Deny,
}

impl std::str::FromStr for OtherImages {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Self::Allow),
            "warn" => Ok(Self::Warn),
            "deny" => Ok(Self::Deny),
            o => Err(format!("{o:?}: expected allow, warn or deny")),
        }
    }
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Registry hosts whose images are verified (canonical form is compared).
    pub registries: Vec<String>,
    /// Images of other registries.
    pub other_images: OtherImages,
    /// Namespaces whose objects are admitted unchecked.
    pub exclude_namespaces: Vec<String>,
    /// Longest one answer may take (below the caller's timeout): an image
    /// not verified by then is denied (webhook) or a per-key error (provider).
    pub budget: Duration,
    /// The trust policy file, re-read when it changes (`None`: one valid
    /// owner signature).
    pub policy_path: Option<PathBuf>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            registries: vec![],
            other_images: OtherImages::Allow,
            exclude_namespaces: vec![],
            budget: Duration::from_millis(2500),
            policy_path: None,
        }
    }
}

/// Largest request body accepted (the API server's own object limit is 3 MiB).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most images one request may name.
const MAX_IMAGES: usize = 256;

struct Inner {
    verifier: Verifier,
    policy: RwLock<Arc<TrustPolicy>>,
    policy_ok: AtomicBool,
    policy_error: RwLock<Option<String>>,
    registries: Vec<String>,
    cfg: ServiceConfig,
    metrics: Metrics,
}

/// The service (cheap to clone).
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// One image's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    image: String,
    /// `Some(true)` verified, `Some(false)` failed, `None` could not complete.
    verified: Option<bool>,
    reason: String,
    detail: String,
    digest: Option<String>,
    warnings: Vec<String>,
    policy: Option<String>,
    report: Option<Report>,
}

impl Service {
    /// A service over `verifier`; loads the policy file (an error here stops
    /// start-up).
    pub fn new(verifier: Verifier, cfg: ServiceConfig) -> Result<Self, String> {
        let policy = match &cfg.policy_path {
            Some(p) => TrustPolicy::load(p).map_err(|e| e.to_string())?,
            None => TrustPolicy::owner_only(),
        };
        let registries = cfg
            .registries
            .iter()
            .map(|h| {
                policy
                    .canonical_host(h)
                    .map_err(|e| format!("registry {h:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                policy: RwLock::new(Arc::new(policy)),
                policy_ok: AtomicBool::new(true),
                policy_error: RwLock::new(None),
                registries,
                cfg,
                metrics: Metrics::new(),
            }),
        })
    }

    /// Re-reads the policy file every `poll` while it changes; a bad new
    /// policy keeps the old one and makes `/readyz` fail until fixed.
    pub fn watch_policy(&self, poll: Duration) {
        let Some(path) = self.inner.cfg.policy_path.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen: Option<SystemTime> = mtime(&path);
            loop {
                tokio::time::sleep(poll).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match TrustPolicy::load(&path) {
                    Ok(p) => {
                        *inner.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                        inner.policy_ok.store(true, Ordering::Relaxed);
                        *inner
                            .policy_error
                            .write()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                        inner
                            .metrics
                            .policy_reloads
                            .with_label_values(&["ok"])
                            .inc();
                        tracing::info!(policy = %path.display(), "policy reloaded");
                    }
                    Err(e) => {
                        inner.policy_ok.store(false, Ordering::Relaxed);
                        *inner
                            .policy_error
                            .write()
                            .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        inner
                            .metrics
                            .policy_reloads
                            .with_label_values(&["error"])
                            .inc();
                        tracing::error!("new policy refused, the previous one stays in force: {e}");
                    }
                }
            }
        });
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/validate", post(validate))
            .route("/mutate", post(mutate))
            .route("/provide", post(provide))
            .route("/verify", get(verify_get).post(verify_post))
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Whether `image` is one this service checks (`Err` for a malformed
    /// reference naming a checked registry).
    fn target(&self, image: &str) -> Result<Option<ImageRef>, String> {
        let Some((host, _)) = image.split_once('/') else {
            return Ok(None);
        };
        let policy = self.policy();
        let Ok(canonical) = policy.canonical_host(host) else {
            return Ok(None);
        };
        if !self.inner.registries.contains(&canonical) {
            return Ok(None);
        }
        ImageRef::parse(image).map(Some).map_err(|e| e.to_string())
    }

    fn policy(&self) -> Arc<TrustPolicy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifies one image within the budget; never cached when it did not
    /// complete (the verifier caches only definitive results).
    async fn check(&self, image: &str, deadline: Instant) -> Outcome {
        let mut o = Outcome {
            image: image.to_owned(),
            verified: Some(false),
            reason: String::new(),
            detail: String::new(),
            digest: None,
            warnings: vec![],
            policy: None,
            report: None,
        };
        let r = match self.target(image) {
            Ok(Some(r)) => r,
            Ok(None) => {
                o.reason = "not_checked".into();
                match self.inner.cfg.other_images {
                    OtherImages::Allow => o.verified = Some(true),
                    OtherImages::Warn => {
                        o.verified = Some(true);
                        o.warnings
                            .push(format!("{image}: not an image of a verified registry"));
                    }
                    OtherImages::Deny => {
                        o.detail =
                            "not an image of a verified registry (other images: deny)".into();
                    }
                }
                return o;
            }
            Err(e) => {
                o.reason = "invalid_reference".into();
                o.detail = e;
                return o;
            }
        };
        let policy = self.policy();
        let m = &self.inner.metrics;
        m.inflight.inc();
        let start = Instant::now();
        let res =
            tokio::time::timeout_at(deadline.into(), self.inner.verifier.verify(&r, &policy)).await;
        m.inflight.dec();
        m.latency.observe(start.elapsed().as_secs_f64());
        match res {
            Err(_) => {
                o.verified = None;
                o.reason = "timeout".into();
                o.detail = format!("not verified within {:?}", self.inner.cfg.budget);
            }
            Ok(Err(e)) => {
                o.verified = if e.exit_code() == 3 {
                    None
                } else {
                    Some(false)
                };
                o.reason = if o.verified.is_none() {
                    "unavailable".into()
                } else {
                    "invalid".into()
                };
                o.detail = e.to_string();
            }
            Ok(Ok(rep)) => {
                o.verified = Some(rep.decision == Decision::Pass);
                o.digest = rep.digest.clone();
                o.warnings = rep
                    .warnings
                    .iter()
                    .map(|w| format!("{image}: {w}"))
                    .collect();
                o.policy = rep.policy.clone();
                if let (Some(r), Some(d)) = (rep.reasons.first(), rep.details.first()) {
                    o.reason = r.code().to_owned();
                    o.detail = d.clone();
                } else {
                    o.reason = "verified".into();
                }
                o.report = Some(rep);
            }
        }
        o
    }

    /// Checks distinct images concurrently (one verification per image,
    /// however many containers name it).
    async fn check_all(&self, images: &[String], deadline: Instant) -> HashMap<String, Outcome> {
        let mut distinct: Vec<&String> = images.iter().collect();
        distinct.sort();
        distinct.dedup();
        let futs = distinct.iter().map(|i| self.check(i, deadline));
        futures_util::future::join_all(futs)
            .await
            .into_iter()
            .map(|o| (o.image.clone(), o))
            .collect()
    }

    fn record(&self, endpoint: &str, o: &Outcome) {
        let result = match o.verified {
            Some(true) => "allow",
            Some(false) => "deny",
            None => "error",
        };
        self.inner
            .metrics
            .decisions
            .with_label_values(&[endpoint, result, &o.reason])
            .inc();
    }
}

fn log_decision(endpoint: &str, review: Option<&admission::Review>, o: &Outcome, took: Duration) {
    tracing::info!(
        endpoint,
        image = %o.image,
        digest = o.digest.as_deref().unwrap_or(""),
        decision = match o.verified {
            Some(true) => "allow",
            Some(false) => "deny",
            None => "error",
        },
        reason = %o.reason,
        detail = %o.detail,
        policy = o.policy.as_deref().unwrap_or(""),
        duration_ms = took.as_millis() as u64,
        namespace = review.map(|r| r.namespace.as_str()).unwrap_or(""),
        uid = review.map(|r| r.uid.as_str()).unwrap_or(""),
        "decision"
    );
}

fn bad_review(e: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": format!("malformed AdmissionReview: {e}")})),
    )
        .into_response()
}

/// The outcomes of a review's images (`Err`: the answer to give at once).
async fn review_outcomes(
    svc: &Service,
    endpoint: &str,
    body: &[u8],
) -> Result<
    (
        admission::Review,
        Vec<admission::ImageAt>,
        HashMap<String, Outcome>,
    ),
    Response,
> {
    let start = Instant::now();
    let review = admission::Review::parse(body).map_err(|e| bad_review(&e.to_string()))?;
    let deny = |m: String| admission::response(&review.uid, false, Some(&m), &[], None);
    if svc.inner.cfg.exclude_namespaces.contains(&review.namespace) || review.object.is_null() {
        return Err(
            axum::Json(admission::response(&review.uid, true, None, &[], None)).into_response(),
        );
    }
    let Some(images) = admission::images(&review.kind, &review.object) else {
        // Registered for a kind this service does not understand: fail closed.
        return Err(axum::Json(deny(format!(
            "atcr-verify: objects of kind {:?} are not supported (Pods and the pod templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs)",
            review.kind
        )))
        .into_response());
    };
    if images.len() > MAX_IMAGES {
        return Err(axum::Json(deny(format!(
            "atcr-verify: {} images in one object, at most {MAX_IMAGES} are checked",
            images.len()
        )))
        .into_response());
    }
    let names: Vec<String> = images.iter().map(|i| i.image.clone()).collect();
    let outcomes = svc.check_all(&names, start + svc.inner.cfg.budget).await;
    for o in outcomes.values() {
        svc.record(endpoint, o);
        log_decision(endpoint, Some(&review), o, start.elapsed());
    }
    Ok((review, images, outcomes))
}

async fn validate(State(svc): State<Service>, body: Bytes) -> Response {
    let (review, images, outcomes) = match review_outcomes(&svc, "validate", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut failures = vec![];
    let mut warnings = vec![];
    let mut seen = std::collections::HashSet::new();
    for i in &images {
        let o = &outcomes[&i.image];
        if !seen.insert(&i.image) {
            continue;
        }
        warnings.extend(o.warnings.iter().cloned());
        if o.verified != Some(true) {
            failures.push(format!("{} ({}: {})", o.image, o.reason, o.detail));
        }
    }
    let message = (!failures.is_empty()).then(|| {
        format!(
            "atcr-verify: image verification failed: {}",
            failures.join("; ")
        )
    });
    axum::Json(admission::response(
        &review.uid,
        failures.is_empty(),
        message.as_deref(),
        &warnings,
        None,
    ))
    .into_response()
}

async fn mutate(State(svc): State<Service>, body: Bytes) -> Response {
    let (review, images, outcomes) = match review_outcomes(&svc, "mutate", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Pin verified tags; images already by digest, unverified ones (the
    // validating webhook denies those) and other registries stay as they are.
    let mut ops = vec![];
    for i in &images {
        let o = &outcomes[&i.image];
        let (Some(true), Some(d), Ok(Some(r))) = (o.verified, &o.digest, svc.target(&i.image))
        else {
            continue;
        };
        if matches!(r.reference, atcr_oci::Reference::Digest(_)) {
            continue;
        }
        let pinned = format!("{}/{}@{d}", r.host, r.name);
        ops.push(json!({"op": "replace", "path": i.pointer, "value": pinned}));
    }
    let patch = (!ops.is_empty()).then_some(Value::Array(ops));
    axum::Json(admission::response(
        &review.uid,
        true,
        None,
        &[],
        patch.as_ref(),
    ))
    .into_response()
}

async fn provide(State(svc): State<Service>, body: Bytes) -> Response {
    let start = Instant::now();
    let answer = |items: Vec<Value>, system_error: Option<String>| {
        let mut r = json!({"idempotent": true, "items": items});
        if let Some(e) = system_error {
            r["systemError"] = json!(e);
        }
        axum::Json(json!({
            "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
            "kind": "ProviderResponse",
            "response": r,
        }))
        .into_response()
    };
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return answer(vec![], Some(format!("malformed ProviderRequest: {e}"))),
    };
    if req["kind"] != "ProviderRequest" {
        return answer(vec![], Some("not a ProviderRequest".into()));
    }
    let Some(keys) = req["request"]["keys"].as_array() else {
        return answer(vec![], Some("ProviderRequest without request.keys".into()));
    };
    if keys.len() > MAX_IMAGES {
        return answer(
            vec![],
            Some(format!("{} keys, at most {MAX_IMAGES}", keys.len())),
        );
    }
    let keys: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().unwrap_or_default().to_owned())
        .collect();
    let outcomes = svc.check_all(&keys, start + svc.inner.cfg.budget).await;
    let items = keys
        .iter()
        .map(|k| {
            let o = &outcomes[k];
            svc.record("provide", o);
            log_decision("provide", None, o, start.elapsed());
            match o.verified {
                Some(true) => json!({"key": k, "value": {
                    "verified": true, "digest": o.digest, "policy": o.policy, "warnings": o.warnings,
                }}),
                _ => json!({"key": k, "error": format!("{}: {}", o.reason, o.detail)}),
            }
        })
        .collect();
    answer(items, None)
}

fn verdict(o: &Outcome) -> Value {
    json!({
        "image": o.image,
        "verified": o.verified == Some(true),
        "decision": match o.verified { Some(true) => "pass", Some(false) => "fail", None => "error" },
        "reason": o.reason,
        "message": o.detail,
        "digest": o.digest,
        "policy": o.policy,
        "warnings": o.warnings,
        "report": o.report,
    })
}

async fn verify_get(
    State(svc): State<Service>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(image) = q.get("image") else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "?image= is required"})),
        )
            .into_response();
    };
    let start = Instant::now();
    let o = svc.check(image, start + svc.inner.cfg.budget).await;
    svc.record("verify", &o);
    log_decision("verify", None, &o, start.elapsed());
    let status = match o.verified {
        Some(true) => StatusCode::OK,
        Some(false) => StatusCode::FORBIDDEN,
        None => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(verdict(&o))).into_response()
}

async fn verify_post(State(svc): State<Service>, body: Bytes) -> Response {
    let image = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["image"].as_str().map(str::to_owned));
    let Some(image) = image else {
        // Still 200: Kyverno turns any other status into a rule error.
        return axum::Json(json!({
            "verified": false, "decision": "error", "reason": "bad_request",
            "message": "expected a JSON object {\"image\": \"HOST/OWNER/REPO[:TAG|@DIGEST]\"}",
        }))
        .into_response();
    };
    let start = Instant::now();
    let o = svc.check(&image, start + svc.inner.cfg.budget).await;
    svc.record("verify", &o);
    log_decision("verify", None, &o, start.elapsed());
    axum::Json(verdict(&o)).into_response()
}

async fn metrics_handler(State(svc): State<Service>) -> Response {
    let (hits, misses) = svc.inner.verifier.cache_stats();
    let m = &svc.inner.metrics;
    m.cache.with_label_values(&["hit"]).set(hits as i64);
    m.cache.with_label_values(&["miss"]).set(misses as i64);
    m.policy_ok
        .set(i64::from(svc.inner.policy_ok.load(Ordering::Relaxed)));
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}

async fn readyz(State(svc): State<Service>) -> Response {
    if svc.inner.policy_ok.load(Ordering::Relaxed) {
        return "ready".into_response();
    }
    let e = svc
        .inner
        .policy_error
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the policy file was changed to an invalid policy (the previous one is in force): {e}"
        ),
    )
        .into_response()
}

//! Request logs and metrics for `atcr serve`.
//!
//! One structured log line per request (target `atcr::access`): method,
//! route, status, bytes in and out, duration, the authenticated DID (from a
//! token the server verified, never from a hint), a request id (also sent as
//! `X-Request-Id`) and the client address. The same figures feed the
//! Prometheus metrics served at `/metrics`. Neither ever contains a token,
//! a password or a query string.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Instant;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    in_flight: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    ///
    /// # Panics
    /// Never: the names are constant and distinct.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "atcr_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "atcr_http_request_duration_seconds",
                "Time to the response head, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "atcr_http_request_bytes_total",
                "Request body bytes (declared), by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let bytes_out = IntCounterVec::new(
            Opts::new(
                "atcr_http_response_bytes_total",
                "Response body bytes (declared), by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("atcr_http_requests_in_flight", "Requests being handled")
            .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        Self {
            registry,
            requests,
            duration,
            bytes_in,
            bytes_out,
            in_flight,
        }
    }

    /// Registers another collector (e.g. the registry's own metrics).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!("metric not registered: {e}");
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = vec![];
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A route label with no names, digests, tags or ids in it (bounded
/// cardinality).
pub fn route_of(method: &str, path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v2/") {
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        return match (method, segs.as_slice()) {
            (_, [""]) => "/v2/",
            (_, ["_catalog"]) => "/v2/_catalog",
            _ if n >= 3 && segs[n - 2] == "tags" => "/v2/{name}/tags/list",
            _ if n >= 3 && segs[n - 2] == "manifests" => "/v2/{name}/manifests/{reference}",
            _ if n >= 3 && segs[n - 2] == "referrers" => "/v2/{name}/referrers/{digest}",
            _ if n >= 4 && segs[n - 1].is_empty() && segs[n - 2] == "uploads" => {
                "/v2/{name}/blobs/uploads/"
            }
            _ if n >= 3 && segs[n - 2] == "uploads" && segs[n - 3] == "blobs" => {
                "/v2/{name}/blobs/uploads/{id}"
            }
            _ if n >= 3 && segs[n - 1] == "uploads" && segs[n - 2] == "blobs" => {
                "/v2/{name}/blobs/uploads/"
            }
            _ if n >= 3 && segs[n - 2] == "blobs" => "/v2/{name}/blobs/{digest}",
            _ => "/v2/other",
        };
    }
    match path {
        "/v2" => "/v2/",
        "/auth/token" => "/auth/token",
        "/metrics" => "/metrics",
        "/healthz" | "/readyz" | "/_health" => "/healthz",
        p if p.starts_with("/xrpc/") => "/xrpc/{nsid}",
        p if p.starts_with("/.well-known/") => "/.well-known",
        p if p.starts_with("/plc") => "/plc",
        _ => "other",
    }
}

/// What the access log needs from the services: who a token belongs to.
pub type Identify = Arc<dyn Fn(&axum::http::HeaderMap) -> Option<String> + Send + Sync>;

/// The middleware state.
#[derive(Clone)]
pub struct Observe {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Verifies the request's token, if any, and names its DID.
    pub identify: Identify,
}

/// Logs and measures one request.
pub async fn layer(State(o): State<Observe>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = route_of(&method, req.uri().path());
    let path = req.uri().path().to_owned();
    let client = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let did = (o.identify)(req.headers()).unwrap_or_default();
    let bytes_in = req.body().size_hint().exact().unwrap_or(0);
    let id = {
        use rand::RngCore as _;
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    o.metrics.in_flight.inc();
    let mut resp = next.run(req).await;
    o.metrics.in_flight.dec();
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let m = &o.metrics;
    m.requests
        .with_label_values(&[route, &status.to_string()])
        .inc();
    m.duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    m.bytes_in.with_label_values(&[route]).inc_by(bytes_in);
    m.bytes_out.with_label_values(&[route]).inc_by(bytes_out);
    tracing::info!(
        target: "atcr::access",
        request_id = %id,
        client = %client,
        method = %method,
        route,
        path = %path,
        status,
        bytes_in,
        bytes_out,
        duration_ms = (elapsed.as_secs_f64() * 1000.0),
        did = %did,
        "request"
    );
    resp
}

/// `GET /metrics`.
pub async fn metrics(State(o): State<Observe>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        o.metrics.render(),
    )
        .into_response()
}

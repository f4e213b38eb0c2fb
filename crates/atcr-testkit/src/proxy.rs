//! A round-robin HTTP front for registry replicas: each request goes to the
//! next backend in turn (no stickiness), bodies streamed both ways, as a
//! plain load balancer would do it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::TryStreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Inner {
    backends: Vec<String>,
    next: AtomicUsize,
    client: reqwest::Client,
    served: Vec<AtomicUsize>,
    /// Backends that refused a connection: skipped from then on (a passive
    /// health check, as load balancers do).
    down: Vec<std::sync::atomic::AtomicBool>,
}

/// A running front; stopped on drop.
pub struct RoundRobin {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

/// Hop-by-hop headers a proxy does not forward.
const HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "te",
];

fn forwardable(h: &HeaderMap) -> HeaderMap {
    let mut out = h.clone();
    for k in HOP {
        out.remove(k);
    }
    out.remove("host");
    out
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let n = inner.backends.len();
    let mut i = inner.next.fetch_add(1, Ordering::Relaxed) % n;
    for _ in 0..n {
        if !inner.down[i].load(Ordering::Relaxed) {
            break;
        }
        i = (i + 1) % n;
    }
    inner.served[i].fetch_add(1, Ordering::Relaxed);
    let target = format!(
        "{}{}",
        inner.backends[i],
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let (parts, body) = req.into_parts();
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let sent = inner
        .client
        .request(parts.method, target)
        .headers(forwardable(&parts.headers))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) => {
            let mut b = Response::builder().status(r.status());
            if let Some(h) = b.headers_mut() {
                *h = forwardable(r.headers());
            }
            b.body(Body::from_stream(
                r.bytes_stream().map_err(std::io::Error::other),
            ))
            .unwrap_or_else(|_| bad_gateway())
        }
        Err(e) => {
            if e.is_connect() {
                inner.down[i].store(true, Ordering::Relaxed);
            }
            bad_gateway()
        }
    }
}

fn bad_gateway() -> Response {
    let mut r = Response::new(Body::from("backend unreachable"));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

impl RoundRobin {
    /// Listens on `listener` in front of `backends` (`http://host:port`).
    pub fn start(listener: tokio::net::TcpListener, backends: Vec<String>) -> Self {
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(Inner {
            served: backends.iter().map(|_| AtomicUsize::new(0)).collect(),
            down: backends
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            backends,
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy client"),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            host: addr.to_string(),
            inner,
            task,
        }
    }

    /// Requests each backend was sent, in backend order.
    pub fn served(&self) -> Vec<usize> {
        self.inner
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

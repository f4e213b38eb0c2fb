//! Serving HTTP for every ATCR server (the registry with its PDS and PLC
//! directory, the verification service).
//!
//! `axum::serve` has no connection cap, no body or idle timeouts and no TLS,
//! and it closes a connection whose request body the handler did not read,
//! so a client that writes its whole body before reading (Go's client, the
//! OCI conformance suite) sees `broken pipe` instead of an early 401/404/416.
//! Hence this accept loop over hyper-util:
//!
//! * at most [`Limits::max_connections`] connections; one over the cap gets a
//!   503 (plain HTTP) and is closed;
//! * request headers must arrive within [`Limits::header_read_timeout`] (also
//!   bounding an idle keep-alive connection), a request body may pause for at
//!   most [`Limits::body_read_timeout`], and a connection with no traffic and
//!   no request being handled is closed after [`Limits::idle_timeout`] (slow
//!   readers of a response included);
//! * a request body a handler left unread is read and discarded in the
//!   background, up to [`Limits::drain_limit`] bytes and
//!   [`Limits::max_draining`] bodies at once, so the early reply is read by
//!   the client and the connection stays usable;
//! * TLS ([`tls::Acceptor`]) with certificates reloaded from their files;
//! * handlers find the client address in axum's `ConnectInfo` (from
//!   `X-Forwarded-For` only when the peer is one of
//!   [`Limits::trusted_proxies`]).

pub mod tls;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, watch};

/// Connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest wait for a request's headers (and for a TLS handshake),
    /// counted from the end of the previous request on a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// Longest pause inside a request body before the request fails.
    pub body_read_timeout: Duration,
    /// A connection with no bytes moving and no request being handled is
    /// closed after this long.
    pub idle_timeout: Duration,
    /// Bytes of a request body the handler did not read that are read and
    /// discarded so the client sees the reply; a longer body closes the
    /// connection instead.
    pub drain_limit: u64,
    /// Most unread bodies drained at once (each costs bandwidth, no memory).
    pub max_draining: usize,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            drain_limit: 64 << 20,
            max_draining: 64,
            shutdown_grace: Duration::from_secs(30),
            trusted_proxies: vec![],
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes, then waits up to [`Limits::shutdown_grace`] for the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<tls::Acceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let conns = Arc::new(Semaphore::new(max));
    let shared = Arc::new(Shared {
        router,
        drains: Arc::new(Semaphore::new(limits.max_draining.max(1))),
        limits,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses written in two parts (headers, then a streamed
        // body) would otherwise wait out the peer's delayed ACK under Nagle.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max, "connection refused: server.max_connections reached");
            tokio::spawn(refuse(tcp, tls.is_none()));
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(tcp, peer, shared, stop).await,
                Some(acc) => {
                    let timeout = shared.limits.header_read_timeout;
                    match tokio::time::timeout(timeout, acc.acceptor.accept(tcp)).await {
                        Ok(Ok(t)) => connection(t, peer, shared, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let grace = shared.limits.shutdown_grace;
    // Every connection holds a permit: all returned means all closed.
    let _ = tokio::time::timeout(grace, conns.acquire_many(max as u32)).await;
}

/// One over the cap: a short 503 where the peer can read it, then close.
async fn refuse(mut tcp: tokio::net::TcpStream, plain: bool) {
    if plain {
        const BODY: &str =
            r#"{"errors":[{"code":"UNAVAILABLE","message":"too many connections; try again"}]}"#;
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        use tokio::io::AsyncReadExt as _;
        // Read the request head first (briefly, bounded) and linger after
        // the reply: closing with unread input would reset the connection
        // and hide the 503 from the client.
        let mut buf = [0u8; 8192];
        let mut seen = 0usize;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while seen < buf.len() {
                match tcp.read(&mut buf[seen..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
                if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
            let mut left = 64 * 1024usize;
            while left > 0 {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

struct Shared {
    router: axum::Router,
    drains: Arc<Semaphore>,
    limits: Limits,
}

/// Serves one connection until it ends, goes idle or the server stops.
async fn connection<S>(
    io: S,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    activity.touch();
    let io = TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
    });
    let service = Service {
        shared: shared.clone(),
        activity: activity.clone(),
        peer,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout);
    // Upgrades (the PDS's `subscribeRepos` WebSocket) leave this loop: the
    // upgraded stream belongs to its handler, which bounds it.
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = shared.limits.idle_timeout;
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.idle_for() > idle {
                    tracing::debug!("connection closed: idle for {idle:?} (server.idle_timeout_secs)");
                    return;
                }
            }
        }
    }
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When bytes last moved on a connection, and how many of its requests are
/// being handled (a handler at work is not idleness: its own timeouts bound it).
#[derive(Default)]
struct Activity {
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last.store(clock(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(clock().saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes last moved.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service, with every request body guarded.
#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: std::net::SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt as _;
        let in_flight = InFlight::new(self.activity.clone());
        let expects_continue = req
            .headers()
            .get(hyper::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let limits = &self.shared.limits;
        let mut req = req.map(|b| {
            Body::new(Guarded {
                inner: Some(b),
                pause: limits.body_read_timeout,
                sleep: None,
                polled: false,
                finished: false,
                expects_continue,
                drain_limit: limits.drain_limit,
                drains: self.shared.drains.clone(),
            })
        });
        // Handlers read the client address as axum's `ConnectInfo`.
        let client = client_address(self.peer, req.headers(), &limits.trusted_proxies);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(client));
        let router = self.shared.router.clone();
        Box::pin(async move {
            let _in_flight = in_flight;
            router.oneshot(req).await
        })
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_address(
    peer: std::net::SocketAddr,
    headers: &hyper::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::SocketAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer.ip()) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    match hops.into_iter().rev().find(|ip| !is_trusted(ip)) {
        Some(ip) => std::net::SocketAddr::new(ip, 0),
        None => peer,
    }
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?} (server.body_read_timeout_secs)")]
pub struct BodyTimeout(pub Duration);

/// A request body with a pause limit, drained in the background when the
/// handler drops it unread.
struct Guarded {
    inner: Option<Incoming>,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    polled: bool,
    finished: bool,
    expects_continue: bool,
    drain_limit: u64,
    drains: Arc<Semaphore>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                this.sleep = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(f))) => {
                this.sleep = None;
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let pause = this.pause;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.finished = true;
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyTimeout(pause).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.finished || inner.is_end_stream() {
            return;
        }
        // A client waiting for `100 Continue` has sent no body: reading
        // would ask it for one.
        if self.expects_continue && !self.polled {
            return;
        }
        let left = inner.size_hint();
        if left.lower() > self.drain_limit {
            return;
        }
        let Ok(permit) = self.drains.clone().try_acquire_owned() else {
            return;
        };
        let (limit, pause) = (self.drain_limit, self.pause);
        // Dropping the body would make hyper close the connection under a
        // client still writing it; reading it lets the client finish and
        // read the reply.
        tokio::spawn(async move {
            let _permit = permit;
            let mut body = inner;
            let mut read = 0u64;
            loop {
                let frame = tokio::time::timeout(
                    pause,
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
                )
                .await;
                match frame {
                    Ok(Some(Ok(f))) => {
                        read += f.data_ref().map_or(0, |d| d.len() as u64);
                        if read > limit {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}

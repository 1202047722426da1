//! The accept loop: what happens to a TCP connection before, around and
//! after hyper serves it.
//!
//! - Each accepted socket takes a place under `max_connections_per_ip`
//!   ([`super::limits::TcpSlot`]) that it keeps until the socket is gone; a
//!   socket over its address's cap gets its request answered 429, then a
//!   close. A trusted proxy's sockets take none: every client behind it
//!   would share its address's cap; their requests are counted under the
//!   client's address instead.
//! - Each request carries its [`super::forwarded::ClientAddr`] (the peer, or the client a
//!   trusted proxy names, `super::forwarded`), read by the handlers.
//! - TLS, when configured, is handshaken in the connection's own task,
//!   bounded by [`TLS_HANDSHAKE_TIMEOUT`].
//! - hyper must see a request's headers within `header_timeout`, which also
//!   bounds the idle time between requests on a kept-alive connection, so a
//!   socket that sends nothing, or headers a byte at a time, is closed.
//! - Every socket is a [`Lingering`], so closing it never resets what the
//!   client has not read yet.
//! - On stop (`crate::drain`: after the connections were closed) the loop
//!   stops accepting and every connection is asked to finish (hyper's
//!   graceful shutdown); WebSockets were closed by their own tasks with
//!   1001.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::error::HttpError;
use super::linger::Lingering;
use crate::App;
use crate::protocol::ErrorCode;

/// Longest a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (over TLS when `tls` is set) until
/// `shutdown` fires, then waits up to `grace` for HTTP requests to finish.
/// Connection tasks belong to `conns`, which the caller waits for.
pub(crate) async fn serve(
    app: &Arc<App>,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    conns: &TaskTracker,
) {
    // HTTP/1.1 only (the TLS config offers no other): hyper-util's
    // version-detecting builder reads the first bytes before any timeout
    // runs, so a silent socket would wait there forever.
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(app.config.header_timeout));
    let http = Arc::new(http);
    // Accepting goes on while the connections are closed (new handshakes
    // get 503 meanwhile, `super::handshake`); `stop` ends it.
    let shutdown = &app.stop;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin, as hyper's and axum's accept loops do.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Frames are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let max_message = app.live().config.max_message_bytes;
        let slot = if app.live().proxies.contains(remote.ip()) {
            None
        } else {
            let Some(slot) = app.limits.accept(remote.ip()) else {
                let io = Lingering::new(tcp, None, max_message);
                conns.spawn(refuse(
                    io,
                    remote,
                    app.clone(),
                    router.clone(),
                    http.clone(),
                ));
                continue;
            };
            Some(slot)
        };
        let io = Lingering::new(tcp, slot, max_message);
        let (router, http, shutdown) = (router.clone(), http.clone(), shutdown.clone());
        let app = app.clone();
        match &tls {
            None => {
                conns.spawn(connection(io, remote, app, router, http, shutdown));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let done = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)) => r,
                    };
                    match done {
                        Ok(Ok(tls)) => {
                            connection(tls, remote, app, router, http, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%remote, "tls handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves one connection until it ends, or until shutdown asks it to
/// finish what it is doing.
async fn connection<I>(
    io: I,
    remote: SocketAddr,
    app: Arc<App>,
    router: Router,
    http: Arc<http1::Builder>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        route(&app, &router, remote, req)
    });
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return log_end(r, remote),
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    log_end(conn.await, remote);
}

fn log_end(r: Result<(), hyper::Error>, remote: SocketAddr) {
    if let Err(e) = r {
        // Header timeouts, resets and malformed requests end here: the
        // client's doing, logged for debugging only.
        tracing::debug!(%remote, error = %e, "http connection ended");
    }
}

/// Hands a request to the router. Handlers read the peer as axum's
/// `ConnectInfo`, the client as a `ClientAddr`; the trusted proxies are
/// read per request, so a reload applies to kept-alive connections too.
fn route(
    app: &App,
    router: &Router,
    remote: SocketAddr,
    mut req: hyper::Request<Incoming>,
) -> tower::util::Oneshot<Router, axum::extract::Request> {
    let client = app.live().proxies.client(remote, req.headers());
    req.extensions_mut().insert(ConnectInfo(remote));
    req.extensions_mut().insert(client);
    router.clone().oneshot(req.map(axum::body::Body::new))
}

/// The answer to a socket over its address's cap: its request is read
/// (within the header timeout) and answered 429 like a refused handshake,
/// and the connection closed, with the lingering close. A health probe
/// (`GET /healthz`, `GET /readyz`) is answered as usual instead: behind a
/// load balancer every client shares the balancer's address, and a node
/// whose clients fill that address's cap must still tell the balancer (or
/// the kubelet) that it is alive and ready, or it is taken out of rotation
/// or restarted for being full.
async fn refuse(
    io: Lingering,
    remote: SocketAddr,
    app: Arc<App>,
    router: Router,
    http: Arc<http1::Builder>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let probe = req.method() == hyper::Method::GET
            && matches!(req.uri().path(), "/healthz" | "/readyz");
        let routed = probe.then(|| route(&app, &router, remote, req));
        async move {
            let mut answer = if let Some(routed) = routed {
                match routed.await {
                    Ok(answer) => answer,
                    Err(never) => match never {},
                }
            } else {
                HttpError::new(
                    ErrorCode::RateLimited,
                    "too many connections from this address",
                )
                .retry_after(5)
                .into_response()
            };
            answer.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let _ = http.serve_connection(TokioIo::new(io), service).await;
}

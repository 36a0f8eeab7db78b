//! The accept loop: each connection served by hyper's HTTP/1 connection with the timeouts that
//! keep a slow or idle client from holding the server — headers must arrive within the header
//! timeout (slow-loris), a kept-alive connection that starts no request within the idle timeout
//! is closed, and at most [`MAX_CONNECTIONS`] are open at once. Shutdown closes idle connections
//! at once and lets requests in flight finish, for at most a grace period.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use super::app::Peer;

/// Connections served at once; more are closed as they arrive.
pub(super) const MAX_CONNECTIONS: usize = 512;

/// How long shutdown waits for requests in flight.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The connection timeouts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// For a request's headers to arrive.
    pub(super) header: Duration,
    /// For a kept-alive connection to start its next request.
    pub(super) idle: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait a moment rather than spin.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A streamed reply is many small writes (one server-sent event per token); with Nagle's
        // algorithm on, a small write may wait for the ACK of the one before. Set as HTTP
        // servers usually do; on loopback it made no measurable difference to the time to first
        // token (docs/benchmarks.md).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections ({MAX_CONNECTIONS}): closing a new one");
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            connection(stream, peer, router, timeouts, shutdown).await;
            drop(slot);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: stopping anyway");
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(Peer(peer));
        let mut router = router.clone();
        async move { router.call(req.map(Body::new)).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    let mut closing = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                break;
            }
            _ = tick.tick(), if !closing => {
                let n = requests.load(Ordering::Relaxed);
                if n != seen {
                    seen = n;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= timeouts.idle {
                    // Idle: closed now. Busy with a long reply: closed once it is sent.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

//! `gemmactl mcp --http ADDR`: the same server over Streamable HTTP, at `http://ADDR/mcp`.
//!
//! A local model server must not become a service for the whole network or for any web page the
//! user opens, so:
//! - it listens on a loopback address unless a bearer token is configured
//!   (`GEMMACTL_MCP_TOKEN`); with a token, every request must carry `Authorization: Bearer …`;
//! - the `Host` header must name a loopback host (rmcp's check against DNS rebinding) unless it
//!   serves beyond loopback with a token;
//! - a request with an `Origin` header (a browser) must come from a loopback origin; other
//!   clients send none.
//!
//! rmcp's `StreamableHttpService` speaks the protocol (both eras; sessions for the old one); this
//! module only puts hyper in front of it, with the two checks rmcp does not make.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::server::GemmaServer;

/// The path the protocol is served at.
pub(super) const ENDPOINT: &str = "/mcp";

/// Browser origins allowed to call: pages served from this machine.
const LOCAL_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// Refuses an address that would serve other machines without a token.
pub(super) fn check_address(addr: &SocketAddr, token: Option<&str>) -> Result<()> {
    if !addr.ip().is_loopback() && token.is_none() {
        bail!(
            "--http {addr} would serve MCP to other machines, and no bearer token is configured: use a loopback address (e.g. 127.0.0.1:{}), or set GEMMACTL_MCP_TOKEN to a long random secret that clients must send",
            addr.port()
        );
    }
    Ok(())
}

/// Serves `server` at `addr` until `shutdown` is cancelled. `ready` hears the bound address.
pub(super) async fn serve(
    server: GemmaServer,
    addr: SocketAddr,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<()> {
    check_address(&addr, token.as_deref())?;
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_allowed_origins(LOCAL_ORIGINS);
    if !addr.ip().is_loopback() {
        // Clients reach it by names gemmactl cannot know; the token is the protection.
        config = config.disable_allowed_hosts();
    }
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "serving MCP over Streamable HTTP");
    // The one line a user (and a test) needs: where to connect.
    eprintln!("gemmactl mcp: serving MCP at http://{local}{ENDPOINT}");
    let token = token.map(|t| Arc::new(Sha256::digest(t.as_bytes())));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (mcp, token) = (mcp.clone(), token.clone());
        let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (mut mcp, token) = (mcp.clone(), token.clone());
            async move {
                if request.uri().path() != ENDPOINT {
                    return Ok(plain(
                        StatusCode::NOT_FOUND,
                        "not found: gemmactl serves MCP at /mcp",
                    ));
                }
                if let Some(expected) = token.as_deref() {
                    if !authorized(&request, expected) {
                        let mut response = plain(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized: send the token of GEMMACTL_MCP_TOKEN as `Authorization: Bearer TOKEN`",
                        );
                        response.headers_mut().insert(
                            hyper::header::WWW_AUTHENTICATE,
                            hyper::header::HeaderValue::from_static("Bearer"),
                        );
                        return Ok(response);
                    }
                }
                mcp.call(request).await
            }
        });
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler);
            tokio::pin!(connection);
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = stopping.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
    Ok(())
}

/// Whether the request carries the bearer token (compared as digests, so the time taken says
/// nothing about how much of a guess was right).
fn authorized(request: &Request<Incoming>, expected: &[u8]) -> bool {
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| Sha256::digest(given.trim().as_bytes()).as_slice() == expected)
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_serves_without_a_token() {
        let lan: SocketAddr = "0.0.0.0:8765".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8765".parse().unwrap();
        let v6: SocketAddr = "[::1]:8765".parse().unwrap();
        let err = check_address(&lan, None).unwrap_err().to_string();
        assert!(err.contains("GEMMACTL_MCP_TOKEN"), "{err}");
        assert!(check_address(&lan, Some("secret")).is_ok());
        assert!(check_address(&local, None).is_ok());
        assert!(check_address(&v6, None).is_ok());
    }
}

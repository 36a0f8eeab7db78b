//! The server's security defaults, in one place:
//!
//! - it listens on loopback only, unless `--addr` names another interface *and* an API key is
//!   configured (`--api-key-file`, `serve.api_key_file` or `GEMMACTL_API_KEY`);
//! - request bodies are capped (`serve.max_body_bytes`, 413) and must arrive within the idle
//!   timeout; prompts are capped in `openai.rs`; header and idle timeouts are in `http.rs`;
//! - CORS is off — browsers' cross-origin calls are refused — unless origins are configured.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::Config;

/// The API key: from the key file when one is configured, else `GEMMACTL_API_KEY`.
pub(super) fn api_key(config: &Config) -> Result<Option<String>> {
    if let Some(file) = &config.serve.api_key_file {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!("cannot read the API key file {}: fix the path given by --api-key-file (or serve.api_key_file)", file.display())
        })?;
        let key = text.trim().to_string();
        if key.len() < 16 {
            bail!("the API key in {} is too short ({} characters): use at least 16 random characters, e.g. `openssl rand -hex 24 > {}`", file.display(), key.len(), file.display());
        }
        return Ok(Some(key));
    }
    match config.env.serve_api_key() {
        Some(key) if key.trim().len() < 16 => bail!(
            "GEMMACTL_API_KEY is too short ({} characters): use at least 16 random characters",
            key.trim().len()
        ),
        key => Ok(key.map(|k| k.trim().to_string())),
    }
}

/// The address to listen on, refused when it reaches beyond this machine without a key.
pub(super) async fn listen_addr(addr: &str, has_key: bool) -> Result<SocketAddr> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("--addr {addr:?} is not an address to listen on: use HOST:PORT, e.g. 127.0.0.1:11435"))?
        .collect();
    let Some(first) = found.first().copied() else {
        bail!("--addr {addr:?} names no address: use HOST:PORT, e.g. 127.0.0.1:11435");
    };
    if !first.ip().is_loopback() && !has_key {
        bail!(
            "--addr {addr} reaches beyond this machine, and no API key is configured: give one with --api-key-file FILE (or GEMMACTL_API_KEY), or listen on 127.0.0.1"
        );
    }
    Ok(first)
}

/// The CORS layer for `origins`; `None` when there are none (CORS off).
pub(super) fn cors(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let values = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim().trim_end_matches('/')).with_context(|| {
                format!("--cors-origin {o:?} is not an origin: use e.g. http://localhost:5173")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(values))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// The limits every route shares.
pub(super) fn layers(router: Router, config: &Config, cors: Option<CorsLayer>) -> Router {
    let router = router
        .layer(DefaultBodyLimit::max(config.serve.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.serve.idle_timeout_secs.max(1),
        )));
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

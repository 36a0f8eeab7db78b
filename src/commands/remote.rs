//! Remote models in the operator commands: `models add NAME --remote URL`, `models show` of a
//! remote model, and the reachability lines `doctor` prints for each remote model.
//!
//! A remote model has no file to inspect; what stands in for the pre-flight is asking its server
//! which models it serves (`GET /v1/models`, through the supervisor's launcher, which asks the
//! same way before every start).

use anyhow::{bail, Result};
use serde_json::json;

use crate::config::{Config, Paths};
use crate::models::{validate_name, EngineKind, ModelEntry, ModelFormat, ModelKind, RemoteModel};
use crate::supervisor::launch::probe_remote;
use crate::ui::say;

/// What a remote model's server said when asked.
pub(crate) struct Reach {
    /// The models it serves, or why it could not be asked.
    pub(crate) served: Result<Vec<String>, String>,
    /// The id the model is asked for by.
    pub(crate) id: String,
}

impl Reach {
    /// Whether the server answered and serves the model (a server listing one model serves
    /// whatever it was started with, as llama.cpp's does).
    pub(crate) fn serves(&self) -> bool {
        matches!(&self.served, Ok(list) if list.len() <= 1 || list.contains(&self.id))
    }
}

/// Asks `entry`'s server which models it serves.
pub(crate) fn reach(config: &Config, entry: &ModelEntry) -> Reach {
    let id = entry
        .remote
        .as_ref()
        .and_then(|r| r.model.clone())
        .unwrap_or_else(|| entry.name.clone());
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start an async runtime: {e}"))
        .and_then(|rt| rt.block_on(probe_remote(config, entry)));
    Reach { served, id }
}

/// `models add NAME --remote URL [--remote-model ID] [--api-key-env VAR]`.
pub(super) fn add(
    paths: &Paths,
    config: &Config,
    name: &str,
    remote: RemoteModel,
    kind: Option<ModelKind>,
    force: bool,
) -> Result<()> {
    validate_name(name)?;
    let url = remote.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        bail!("--remote {url:?} is not an HTTP URL: give the server's base URL, e.g. http://gpu-box:8000/v1");
    }
    if let Some(var) = &remote.api_key_env {
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--api-key-env {var:?} is not an environment variable name: give the variable's name (e.g. VLLM_API_KEY), never the key itself");
        }
    }
    let mut registry = super::models::registry_for_new(paths, name, force)?;
    let entry = ModelEntry {
        name: name.to_string(),
        path: Default::default(),
        engine: EngineKind::Remote,
        format: ModelFormat::Remote,
        // A server applies the model's own chat template; base models are the exception.
        kind: kind.unwrap_or(ModelKind::Instruct),
        sha256: None,
        chat_template: None,
        tokenizer: None,
        remote: Some(RemoteModel {
            url: url.trim_end_matches('/').to_string(),
            ..remote
        }),
        mmproj: None,
    };
    let reach = reach(config, &entry);
    match &reach.served {
        Ok(list) if !reach.serves() => bail!(
            "the server at {url} does not serve model {:?} (it serves {}): pick one with --remote-model ID",
            reach.id,
            list.join(", ")
        ),
        Ok(_) => {}
        // A server that is down now may be up when the model is used: register, and say so.
        Err(why) => eprintln!("note: {why}"),
    }
    let verb = super::models::register(&mut registry, paths, entry)?;
    say!("{verb} '{name}': remote model {:?} at {url}", reach.id);
    Ok(())
}

/// `models show` of a remote model.
pub(super) fn show(config: &Config, entry: &ModelEntry, json: bool) -> Result<()> {
    let Some(remote) = &entry.remote else {
        bail!("model {} is registered as remote but has no URL: register it again with `gemmactl models add {} --remote URL --force`", entry.name, entry.name);
    };
    let reach = reach(config, entry);
    if json {
        let value = json!({
            "name": entry.name,
            "engine": entry.engine.as_str(),
            "format": entry.format.as_str(),
            "kind": entry.kind.as_str(),
            "url": remote.url,
            "remote_model": reach.id,
            "api_key_env": remote.api_key_env,
            "reachable": reach.served.is_ok(),
            "served_models": reach.served.as_ref().ok(),
            "error": reach.served.as_ref().err(),
        });
        say!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    say!("name          {}", entry.name);
    say!("engine        remote ({})", entry.kind.as_str());
    say!("url           {}", remote.url);
    say!("remote model  {}", reach.id);
    if let Some(var) = &remote.api_key_env {
        say!("api key       from ${var}");
    }
    match &reach.served {
        Ok(list) => say!("server        reachable; serves {}", list.join(", ")),
        Err(why) => say!("server        {why}"),
    }
    Ok(())
}

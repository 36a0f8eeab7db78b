//! The allowed range of every numeric setting, checked wherever a value comes from: a flag (by
//! clap, with the range in `--help`), an environment variable (`env.rs`) or `config.toml`
//! (`Config::check`). An engine is never started with a value it would refuse or silently change,
//! so its own usage text never reaches a user.

use anyhow::{bail, Result};

use super::flags::{MAX_CONTEXT, MAX_PARALLEL, MAX_THREADS, MIN_CONTEXT};
use super::Config;

/// A numeric setting: its name in `config.toml`, its environment variable, and its range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    /// `section.key` in `config.toml`.
    pub(crate) key: &'static str,
    /// The variable that overrides it, if any.
    pub(crate) env: Option<&'static str>,
    pub(crate) min: u64,
    pub(crate) max: u64,
    /// What the number is, for the error sentence.
    pub(crate) what: &'static str,
}

impl Bound {
    const fn new(
        key: &'static str,
        env: Option<&'static str>,
        min: u64,
        max: u64,
        what: &'static str,
    ) -> Bound {
        Bound {
            key,
            env,
            min,
            max,
            what,
        }
    }

    fn range(&self) -> String {
        if self.max == u64::MAX {
            format!("a whole number of at least {}", self.min)
        } else {
            format!("a whole number from {} to {}", self.min, self.max)
        }
    }

    /// `value` from the environment variable, checked.
    pub(crate) fn check_env(&self, value: u64) -> Result<()> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        bail!(
            "environment variable {}={value} is out of range: use {} ({}), or unset it",
            self.env.unwrap_or(self.key),
            self.range(),
            self.what
        )
    }

    /// `value` from `config.toml` at `file`, checked.
    fn check_file(&self, value: u64, file: &std::path::Path) -> Result<()> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        bail!(
            "config file {}: {} = {value} is out of range: use {} ({})",
            file.display(),
            self.key,
            self.range(),
            self.what
        )
    }
}

pub(crate) const CONTEXT: Bound = Bound::new(
    "engine.context",
    Some("GEMMACTL_CONTEXT"),
    MIN_CONTEXT as u64,
    MAX_CONTEXT as u64,
    "the context length in tokens",
);
pub(crate) const THREADS: Bound = Bound::new(
    "engine.threads",
    Some("GEMMACTL_THREADS"),
    1,
    MAX_THREADS as u64,
    "CPU threads for the engine",
);
pub(crate) const PARALLEL: Bound = Bound::new(
    "engine.parallel",
    Some("GEMMACTL_PARALLEL"),
    1,
    MAX_PARALLEL as u64,
    "requests one engine decodes together",
);
pub(crate) const LOAD_TIMEOUT: Bound = Bound::new(
    "engine.load_timeout_secs",
    Some("GEMMACTL_LOAD_TIMEOUT"),
    1,
    u64::MAX,
    "seconds an engine may take to load",
);
pub(crate) const MAX_MODELS: Bound = Bound::new(
    "supervisor.max_models",
    Some("GEMMACTL_MAX_MODELS"),
    1,
    u32::MAX as u64,
    "models loaded at once",
);
pub(crate) const MAX_START_FAILURES: Bound = Bound::new(
    "supervisor.max_start_failures",
    None,
    1,
    u32::MAX as u64,
    "failed starts before a model is marked failed",
);
pub(crate) const SEQ_LEN: Bound = Bound::new(
    "engines.gemma_cpp.seq_len",
    None,
    MIN_CONTEXT as u64,
    MAX_CONTEXT as u64,
    "gemma.cpp's KV cache length in tokens",
);
pub(crate) const GEMMA_CPP_THREADS: Bound = Bound::new(
    "engines.gemma_cpp.threads",
    None,
    1,
    MAX_THREADS as u64,
    "gemma.cpp's worker threads",
);

/// Checks the numeric settings read from `config.toml` at `file`.
pub(super) fn check_file(config: &Config, file: &std::path::Path) -> Result<()> {
    let e = &config.engine;
    let s = &config.supervisor;
    let g = &config.engines.gemma_cpp;
    let mut values = vec![
        (CONTEXT, u64::from(e.context)),
        (PARALLEL, u64::from(e.parallel)),
        (LOAD_TIMEOUT, e.load_timeout_secs),
        (MAX_MODELS, u64::from(s.max_models)),
        (MAX_START_FAILURES, u64::from(s.max_start_failures)),
        (SEQ_LEN, u64::from(g.seq_len)),
    ];
    if let Some(t) = e.threads {
        values.push((THREADS, u64::from(t)));
    }
    if let Some(t) = g.threads {
        values.push((GEMMA_CPP_THREADS, u64::from(t)));
    }
    for (bound, value) in values {
        bound.check_file(value, file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_in_range() {
        check_file(&Config::default(), std::path::Path::new("config.toml")).unwrap();
    }

    #[test]
    fn out_of_range_values_name_their_source_and_the_range() {
        let mut config = Config::default();
        config.engine.context = 1;
        let err = check_file(&config, std::path::Path::new("/h/config.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/h/config.toml") && err.contains("engine.context = 1"),
            "{err}"
        );
        assert!(err.contains("from 64 to"), "{err}");
        let err = THREADS.check_env(0).unwrap_err().to_string();
        assert!(
            err.contains("GEMMACTL_THREADS=0") && err.contains("from 1 to"),
            "{err}"
        );
        assert!(PARALLEL.check_env(257).is_err() && PARALLEL.check_env(256).is_ok());
    }
}

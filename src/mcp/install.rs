//! `gemmactl mcp install claude-code|claude-desktop`: registers `gemmactl mcp` with a client in
//! one command, with absolute paths (clients start servers from anywhere) and the
//! `GEMMACTL_HOME` / `GEMMACTL_CACHE` in force, so the client's server sees the same models and
//! history as the shell that ran the install.
//!
//! Claude Code keeps its servers itself: the `claude mcp add` line is run when `claude` is on
//! `PATH`, else printed. Claude Desktop reads `claude_desktop_config.json` in its folder under
//! the platform's configuration folder (`~/Library/Application Support/Claude` on macOS,
//! `%APPDATA%\Claude` on Windows, `~/.config/Claude` elsewhere); the entry is merged into it,
//! keeping everything else the file says.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::config::flags::ModelFlag;
use crate::config::Config;

/// `gemmactl mcp install`'s arguments.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The client to register with
    #[arg(value_enum)]
    client: Client,
    /// Claude Code's scope: local (you, this project), project (.mcp.json, shared with the
    /// project), user (you, every project)
    #[arg(long, value_enum, default_value_t = Scope::Local)]
    scope: Scope,
    /// The server's name in the client
    #[arg(long, default_value = "gemma")]
    name: String,
    /// Print the command (Claude Code) or the configuration entry (Claude Desktop) instead of
    /// applying it
    #[arg(long)]
    print: bool,
    /// The model the server's tools use by default (written into the registration)
    #[command(flatten)]
    model: ModelFlag,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Client {
    ClaudeCode,
    ClaudeDesktop,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scope {
    Local,
    Project,
    User,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Project => "project",
            Scope::User => "user",
        }
    }
}

/// How a client starts the server.
struct Launch {
    command: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    fn new(args: &InstallArgs, config: &Config) -> Result<Launch> {
        let exe = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot locate the gemmactl executable")?;
        let mut server_args = vec!["mcp".to_string()];
        if let Some(model) = &args.model.model {
            server_args.extend(["--model".to_string(), model.clone()]);
        }
        let mut env = Vec::new();
        for (key, value) in [
            ("GEMMACTL_HOME", &config.env.home),
            ("GEMMACTL_CACHE", &config.env.cache),
        ] {
            if let Some(dir) = value {
                env.push((key.to_string(), absolute(dir)?.display().to_string()));
            }
        }
        Ok(Launch {
            command: exe,
            args: server_args,
            env,
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Runs `gemmactl mcp install`.
pub(super) fn run(args: InstallArgs, config: &Config) -> Result<ExitCode> {
    if args.name.trim().is_empty() || args.name.contains(char::is_whitespace) {
        bail!(
            "server name {:?} is not usable: give a single word, e.g. --name gemma",
            args.name
        );
    }
    let launch = Launch::new(&args, config)?;
    match args.client {
        Client::ClaudeCode => claude_code(&args, &launch, config),
        Client::ClaudeDesktop => claude_desktop(&args, &launch),
    }
}

/// `claude mcp add --scope S NAME -e K=V … -- COMMAND ARGS…` (the name before `-e`, the server
/// after `--`, as `claude` parses it).
fn claude_code_args(args: &InstallArgs, launch: &Launch) -> Vec<String> {
    let mut line: Vec<String> = ["mcp", "add", "--scope", args.scope.as_str(), &args.name]
        .map(String::from)
        .to_vec();
    for (k, v) in &launch.env {
        line.extend(["-e".to_string(), format!("{k}={v}")]);
    }
    line.push("--".into());
    line.push(launch.command.display().to_string());
    line.extend(launch.args.iter().cloned());
    line
}

fn shell_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| shlex::try_quote(a).map_or_else(|_| a.to_string(), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn claude_code(args: &InstallArgs, launch: &Launch, config: &Config) -> Result<ExitCode> {
    let claude_args = claude_code_args(args, launch);
    let line = shell_line("claude", &claude_args);
    let claude = config
        .env
        .search_path
        .iter()
        .map(|d| d.join("claude"))
        .find(|p| p.is_file());
    let claude = match (args.print, claude) {
        (true, _) => {
            println!("{line}");
            return Ok(ExitCode::SUCCESS);
        }
        (false, None) => {
            println!("{line}");
            eprintln!("Claude Code's `claude` is not on PATH: install it (`npm install -g @anthropic-ai/claude-code`), then run the line above");
            return Ok(ExitCode::SUCCESS);
        }
        (false, Some(claude)) => claude,
    };
    eprintln!("running: {line}");
    let status = std::process::Command::new(&claude)
        .args(&claude_args)
        .status()
        .with_context(|| format!("cannot run {}", claude.display()))?;
    if !status.success() {
        bail!(
            "`claude mcp add` failed ({status}); see its message above (a server named {:?} may exist already: `claude mcp remove {}` first, or choose another --name)",
            args.name,
            args.name
        );
    }
    if args.scope == Scope::Project {
        eprintln!(
            "written to .mcp.json in this project; each user approves it once in Claude Code"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Claude Desktop's configuration file for this user.
fn desktop_config_file() -> Result<PathBuf> {
    let dirs = directories::BaseDirs::new()
        .context("cannot find your home folder, where Claude Desktop keeps its configuration")?;
    Ok(dirs
        .config_dir()
        .join("Claude")
        .join("claude_desktop_config.json"))
}

/// The `mcpServers` entry (Claude Desktop's has no `type`: every server there is stdio).
fn desktop_entry(launch: &Launch) -> Value {
    let mut entry = json!({
        "command": launch.command.display().to_string(),
        "args": launch.args,
    });
    if !launch.env.is_empty() {
        let env: Map<String, Value> = launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        entry["env"] = Value::Object(env);
    }
    entry
}

fn claude_desktop(args: &InstallArgs, launch: &Launch) -> Result<ExitCode> {
    let entry = desktop_entry(launch);
    let file = desktop_config_file()?;
    if args.print {
        let snippet = json!({ "mcpServers": { &args.name: entry } });
        println!("{}", serde_json::to_string_pretty(&snippet)?);
        eprintln!(
            "add this to {} (merging with what it has), then restart Claude Desktop",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = match std::fs::read_to_string(&file) {
        Ok(text) if text.trim().is_empty() => json!({}),
        Ok(text) => serde_json::from_str::<Value>(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid JSON ({e}): fix it, or add the entry by hand (`gemmactl mcp install claude-desktop --print`)",
                file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let Some(root) = config.as_object_mut() else {
        bail!(
            "{} does not hold a JSON object: fix it, or add the entry by hand (`gemmactl mcp install claude-desktop --print`)",
            file.display()
        );
    };
    let servers = root
        .entry("mcpServers")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(servers) = servers.as_object_mut() else {
        bail!(
            "\"mcpServers\" in {} is not an object: fix it, or add the entry by hand (`gemmactl mcp install claude-desktop --print`)",
            file.display()
        );
    };
    let replaced = servers.insert(args.name.clone(), entry).is_some();
    write_atomically(&file, &serde_json::to_string_pretty(&config)?)?;
    let verb = if replaced { "replaced" } else { "added" };
    println!(
        "{verb} MCP server {:?} in {}: restart Claude Desktop to use it",
        args.name,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Replaces `file` as a whole, so a crash never leaves half a configuration.
fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = file
        .parent()
        .context("the configuration file has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, format!("{text}\n").as_bytes())?;
    tmp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            command: "/opt/gemmactl/bin/gemmactl".into(),
            args: vec!["mcp".into(), "--model".into(), "my model".into()],
            env: vec![("GEMMACTL_HOME".into(), "/srv/gemma home".into())],
        }
    }

    #[test]
    fn the_claude_code_line_has_the_name_before_env_and_the_server_after_dashes() {
        let args = InstallArgs {
            client: Client::ClaudeCode,
            scope: Scope::Project,
            name: "gemma".into(),
            print: true,
            model: ModelFlag::default(),
        };
        let line = shell_line("claude", &claude_code_args(&args, &launch()));
        assert_eq!(
            line,
            "claude mcp add --scope project gemma -e 'GEMMACTL_HOME=/srv/gemma home' -- /opt/gemmactl/bin/gemmactl mcp --model 'my model'"
        );
    }

    #[test]
    fn the_desktop_entry_has_no_type_and_keeps_the_environment() {
        let entry = desktop_entry(&launch());
        assert_eq!(entry["command"], "/opt/gemmactl/bin/gemmactl");
        assert_eq!(entry["args"][2], "my model");
        assert_eq!(entry["env"]["GEMMACTL_HOME"], "/srv/gemma home");
        assert!(entry.get("type").is_none());
    }
}

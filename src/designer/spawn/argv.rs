//! The command line of one agent call: finding `claude`, checking the options, and the argv
//! (flags, tools, model, budget, the prompt) for the Claude Code CLI or a raw `--agent` command.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::confine::Confinement;
use super::{Agent, SpawnOptions};

/// Finds claude: explicit path if given, else env FULLSEND_CLAUDE_BIN, else `which::which("claude")`.
///
/// A value without a `/` is looked up on PATH; a value with one must name an existing file.
pub fn find_claude(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    const INSTALL: &str = "install it with `npm install -g @anthropic-ai/claude-code` \
                           (or set FULLSEND_CLAUDE_BIN / --claude-bin to its path)";
    let (candidate, source) = match explicit {
        Some(p) => (Some(p.to_path_buf()), "--claude-bin"),
        None => (
            std::env::var_os("FULLSEND_CLAUDE_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            "FULLSEND_CLAUDE_BIN",
        ),
    };
    match candidate {
        Some(p) if p.components().count() > 1 || p.is_absolute() => {
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "claude binary {} (from {source}) does not exist; {INSTALL}",
                    p.display()
                )
            }
        }
        Some(p) => which::which(&p).map_err(|e| {
            anyhow::anyhow!(
                "claude binary {:?} (from {source}) not found on PATH ({e}); {INSTALL}",
                p
            )
        }),
        None => which::which("claude").map_err(|e| {
            anyhow::anyhow!("the Claude Code CLI `claude` was not found on PATH ({e}); {INSTALL}")
        }),
    }
}
/// Checks options that would make the call fail in a known way, before anything is spawned.
///
/// Refuses `skip_permissions` as root without `sandbox` (the CLI exits 1 in that case), and Redis variables
/// in `env_allow` (a child must never get the Redis URL).
pub fn check_options(opts: &SpawnOptions) -> anyhow::Result<()> {
    if let Agent::Claude(_) = opts.agent {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if opts.skip_permissions && root && !opts.sandbox {
            bail!(
                "--dangerously-skip-permissions was requested while running as root: the Claude Code CLI \
                 refuses it as root unless IS_SANDBOX=1 is set; set FULLSEND_IS_SANDBOX=1 to confirm this host \
                 is a sandbox, or drop skip-permissions and rely on the allowed-tools list"
            );
        }
    }
    if let Agent::Raw(argv) = &opts.agent
        && argv.first().is_none_or(|p| p.is_empty())
    {
        bail!("the raw agent command is empty");
    }
    if let Some(name) = opts
        .env_allow
        .iter()
        .find(|n| n.to_ascii_uppercase().contains("REDIS"))
    {
        bail!("refusing to pass {name} to an agent: children never get Redis credentials");
    }
    if let Some(rule) = opts
        .bash_allow
        .iter()
        .find(|r| !(r.starts_with("Bash(") && r.ends_with(')') && r.len() > "Bash()".len()))
    {
        bail!("Bash rules must be narrow, like `Bash(python3 tools/*)`; refusing {rule:?}");
    }
    if opts.skip_permissions && !opts.bash_allow.is_empty() {
        bail!(
            "Bash rules and skip-permissions do not go together: skipping permissions would allow \
             every command, not only the ones the rules name"
        );
    }
    if let Some(name) = opts
        .env_allow
        .iter()
        .find(|n| n.is_empty() || n.contains('='))
    {
        bail!("invalid environment variable name in env_allow: {name:?}");
    }
    Ok(())
}
/// The program and its arguments. The prompt is never among them: it goes on stdin.
pub(super) fn build_argv(
    opts: &SpawnOptions,
    prompt: &str,
    confinement: &Confinement,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    match &opts.agent {
        Agent::Claude(bin) => {
            if prompt.trim().is_empty() {
                bail!("refusing to call claude with an empty prompt");
            }
            let mut tools = opts.allowed_tools.clone();
            if !opts.bash_allow.is_empty() && !tools.iter().any(|t| t == "Bash") {
                tools.push("Bash".to_owned());
            }
            let mut args = vec![
                "-p".to_owned(),
                // One event per line as it happens: progress, the stall timer, and the result
                // line last. `stream-json` needs `--verbose` in print mode.
                "--output-format".to_owned(),
                "stream-json".to_owned(),
                "--verbose".to_owned(),
                // Only the tools the run needs exist; the settings say what they may touch.
                format!("--tools={}", tools.join(",")),
                format!("--settings={}", confinement.settings.display()),
                // "user" is the private config dir fullsend made; project and local settings
                // live in the work dir, which the agent can write.
                "--setting-sources=user".to_owned(),
                // No MCP server but the one fullsend passes.
                "--strict-mcp-config".to_owned(),
            ];
            if let Some(id) = &opts.session_id {
                args.extend(["--session-id".to_owned(), id.clone()]);
            }
            if let (Some(server), Some(path)) = (&opts.mcp, &confinement.mcp_config) {
                args.push(format!("--mcp-config={}", path.display()));
                args.push(format!("--allowedTools=mcp__{}__*", server.name));
            }
            for dir in &confinement.read_dirs {
                args.push(format!("--add-dir={}", dir.display()));
            }
            if let Some(schema) = &opts.json_schema {
                args.extend(["--json-schema".to_owned(), schema.to_string()]);
            }
            if let Some(m) = &opts.model {
                args.extend(["--model".to_owned(), m.clone()]);
            }
            if let Some(n) = opts.max_turns {
                args.extend(["--max-turns".to_owned(), n.to_string()]);
            }
            if let Some(x) = opts.max_budget_usd {
                args.extend(["--max-budget-usd".to_owned(), x.to_string()]);
            }
            if let Some(s) = &opts.append_system_prompt {
                args.extend(["--append-system-prompt".to_owned(), s.clone()]);
            }
            if opts.skip_permissions {
                args.push("--dangerously-skip-permissions".to_owned());
            }
            Ok((bin.clone(), args))
        }
        Agent::Raw(argv) => {
            let Some((prog, rest)) = argv.split_first() else {
                bail!("the raw agent command is empty");
            };
            // Resolve here so the child gets an explicit path and a missing program is a clear error.
            let program = if prog.contains('/') {
                PathBuf::from(prog)
            } else {
                which::which(prog)
                    .with_context(|| format!("agent program {prog:?} not found on PATH"))?
            };
            Ok((program, rest.to_vec()))
        }
    }
}

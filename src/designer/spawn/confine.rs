//! The agent's confinement: a private home and config dir per run, and a generated settings
//! file whose permission rules keep every file tool inside the work dir.
//!
//! Chat text reaches the agent's prompt, so the agent is treated as a stranger's hands. It
//! gets its own `HOME` and `CLAUDE_CONFIG_DIR` under `<work>/.fullsend/agent/`, so the
//! operator's `~/.claude` (permissions, hooks, MCP servers) never applies. Its settings allow
//! `Read` and `Edit` under the work dir (and `Read` under the read-only dirs), and deny:
//! fullsend's own state (`.fullsend/`: the settings, the private home, the call logs), the
//! work dir's `.claude/`, `/proc`, `/sys` and `/dev`, Bash unless narrow rules ask for it,
//! and every entry outside the work dir that exists when the run starts.
//!
//! That last list matters with `--dangerously-skip-permissions`, which allows whatever no
//! deny rule names. The CLI's path rules cannot say "everything but this tree" (a deny on a
//! directory covers all below it, and allow rules cannot carve exceptions), so the rules name
//! each sibling of each directory on the way from `/` to the work dir. What they cannot name
//! is an entry created after the run starts. In default mode that does not matter: a path no
//! rule allows is denied.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::SpawnOptions;

/// Names that configure fullsend or Claude Code when they sit in a directory. They are denied
/// for editing in every directory above the work dir, even when they do not exist yet.
const CONFIG_NAMES: [&str; 5] = ["fullsend.toml", ".claude", ".mcp.json", "CLAUDE.md", ".env"];

/// Where a run's private state lives, all under `<work>/.fullsend/agent/`.
#[derive(Debug, Clone)]
pub(super) struct Confinement {
    /// The agent's `HOME`.
    pub(super) home: PathBuf,
    /// The agent's `CLAUDE_CONFIG_DIR` (inside its home).
    pub(super) config_dir: PathBuf,
    /// The agent's `TMPDIR`.
    pub(super) tmp: PathBuf,
    /// The generated `--settings` file.
    pub(super) settings: PathBuf,
    /// The generated `--mcp-config` file (0600: it holds the server's secrets).
    pub(super) mcp_config: Option<PathBuf>,
    /// The read-only dirs, resolved (`--add-dir`).
    pub(super) read_dirs: Vec<PathBuf>,
}

/// Creates the private dirs (0700) and writes the settings file (0600) for one run.
pub(super) fn prepare(opts: &SpawnOptions) -> anyhow::Result<Confinement> {
    let work = std::fs::canonicalize(&opts.work_dir)
        .with_context(|| format!("resolving the work dir {}", opts.work_dir.display()))?;
    let state = work.join(".fullsend");
    let agent = state.join("agent");
    let home = agent.join("home");
    let config_dir = home.join(".claude");
    let tmp = agent.join("tmp");
    for dir in [&state, &agent, &home, &config_dir, &tmp] {
        crate::support::files::private_dir(dir, true)?;
    }
    let read_dirs = opts
        .read_dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).with_context(|| format!("resolving {}", d.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings_value = settings(opts, &work, &read_dirs)?;
    let settings = agent.join("settings.json");
    write_private(&settings, &serde_json::to_vec_pretty(&settings_value)?)?;
    let mcp_config = match &opts.mcp {
        Some(server) => {
            let path = agent.join("mcp.json");
            write_private(&path, &serde_json::to_vec_pretty(&mcp_config(server))?)?;
            Some(path)
        }
        None => None,
    };
    Ok(Confinement {
        home,
        config_dir,
        tmp,
        settings,
        mcp_config,
        read_dirs,
    })
}

/// The `--mcp-config` document: one stdio server with its own environment.
fn mcp_config(server: &super::McpServer) -> Value {
    let env: serde_json::Map<String, Value> = server
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "mcpServers": {
            server.name.clone(): {
                "type": "stdio",
                "command": server.command,
                "args": server.args,
                "env": env,
            }
        }
    })
}

/// The settings document: permission rules, no hooks, no project MCP servers.
fn settings(opts: &SpawnOptions, work: &Path, read_dirs: &[PathBuf]) -> anyhow::Result<Value> {
    for path in std::iter::once(work).chain(read_dirs.iter().map(PathBuf::as_path)) {
        rule_path(path)?;
    }
    let w = rule_path(work)?;
    let mut allow = vec![format!("Read({w}/**)"), format!("Edit({w}/**)")];
    let mut deny = Vec::new();
    for dir in read_dirs {
        let d = rule_path(dir)?;
        allow.push(format!("Read({d}/**)"));
        deny.extend([format!("Edit({d})"), format!("Edit({d}/**)")]);
    }
    allow.extend(opts.bash_allow.iter().cloned());
    if let Some(server) = &opts.mcp {
        allow.push(format!("mcp__{}", server.name));
    }
    if opts.bash_allow.is_empty() {
        deny.push("Bash".to_string());
    }
    // fullsend's own state, and the project settings the CLI would read on a later run.
    for inside in [".fullsend", ".claude", ".mcp.json"] {
        let p = format!("{w}/{inside}");
        for tool in ["Read", "Edit"] {
            deny.extend([format!("{tool}({p})"), format!("{tool}({p}/**)")]);
        }
    }
    for system in ["proc", "sys", "dev"] {
        for tool in ["Read", "Edit"] {
            deny.extend([
                format!("{tool}(//{system})"),
                format!("{tool}(//{system}/**)"),
            ]);
        }
    }
    let mut kept = vec![work.to_path_buf()];
    kept.extend(read_dirs.iter().cloned());
    for outside in outside_entries(&kept) {
        // A name a rule cannot spell is left to default mode (where no rule allows it).
        let Ok(p) = rule_path(&outside) else { continue };
        for tool in ["Read", "Edit"] {
            deny.extend([format!("{tool}({p})"), format!("{tool}({p}/**)")]);
        }
    }
    for ancestor in work.ancestors().skip(1) {
        let Ok(a) = rule_path(ancestor) else { continue };
        let a = a.trim_end_matches('/');
        for name in CONFIG_NAMES {
            deny.extend([format!("Edit({a}/{name})"), format!("Edit({a}/{name}/**)")]);
        }
    }
    deny.sort();
    deny.dedup();
    Ok(json!({
        "permissions": {
            "allow": allow,
            "deny": deny,
            "defaultMode": "default",
        },
        "disableAllHooks": true,
        "enableAllProjectMcpServers": false,
    }))
}

/// Every entry outside the kept trees that exists now: the siblings of each directory on the
/// way from `/` to each kept path.
fn outside_entries(kept: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::from("/")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if kept.contains(&path) {
                continue;
            }
            if kept.iter().any(|k| k.starts_with(&path)) {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A path as the CLI's rules spell an absolute one (`//tmp/x`). Refuses characters that the
/// rule syntax would read as a pattern or as the end of the rule.
fn rule_path(path: &Path) -> anyhow::Result<String> {
    let Some(text) = path.to_str() else {
        bail!("{} is not UTF-8", path.display());
    };
    if !text.starts_with('/')
        || text.chars().any(|c| {
            matches!(
                c,
                '*' | '?' | '[' | ']' | '{' | '}' | '(' | ')' | '!' | '\\'
            ) || c.is_control()
        })
    {
        bail!("{text:?} cannot be written as a permission rule");
    }
    Ok(format!("/{text}"))
}

/// Writes a file readable by this user only, replacing what was there.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::designer::spawn::{Agent, SpawnOptions};

    fn rules(value: &Value, list: &str) -> Vec<String> {
        value["permissions"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_rules_keep_the_tools_inside_the_work_dir() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let work = root.join("w");
        std::fs::create_dir(&work).unwrap();
        std::fs::write(root.join("neighbour.txt"), "x").unwrap();
        let opts = SpawnOptions::new(Agent::Raw(vec!["true".into()]), &work);
        let c = prepare(&opts).unwrap();
        let value: Value = serde_json::from_slice(&std::fs::read(&c.settings).unwrap()).unwrap();
        let (allow, deny) = (rules(&value, "allow"), rules(&value, "deny"));
        let w = format!("/{}", work.display());
        assert_eq!(allow, [format!("Read({w}/**)"), format!("Edit({w}/**)")]);
        for expected in [
            "Bash".to_string(),
            "Read(//proc/**)".to_string(),
            format!("Read({w}/.fullsend/**)"),
            format!("Edit({w}/.claude/**)"),
            format!("Read(/{}/neighbour.txt)", root.display()),
            format!("Edit(/{}/fullsend.toml)", root.display()),
            "Read(//etc)".to_string(),
        ] {
            assert!(deny.contains(&expected), "{expected} missing from {deny:?}");
        }
        assert!(
            !deny
                .iter()
                .any(|r| r.starts_with(&format!("Read({w})"))
                    || r.starts_with(&format!("Edit({w}/**"))),
            "the work dir itself is never denied"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&c.home), 0o700);
        assert_eq!(mode(&c.settings), 0o600);
        assert!(c.config_dir.starts_with(&c.home));
    }

    #[test]
    fn read_only_dirs_are_readable_and_not_editable() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let (work, tools) = (root.join("w"), root.join("tools"));
        std::fs::create_dir(&work).unwrap();
        std::fs::create_dir(&tools).unwrap();
        let mut opts = SpawnOptions::new(Agent::Raw(vec!["true".into()]), &work);
        opts.read_dirs = vec![tools.clone()];
        let value = settings(&opts, &work, std::slice::from_ref(&tools)).unwrap();
        let t = format!("/{}", tools.display());
        assert!(rules(&value, "allow").contains(&format!("Read({t}/**)")));
        let deny = rules(&value, "deny");
        assert!(deny.contains(&format!("Edit({t}/**)")));
        assert!(!deny.contains(&format!("Read({t}/**)")));
    }

    #[test]
    fn paths_that_rules_cannot_spell_are_refused() {
        assert!(rule_path(Path::new("/tmp/a*b")).is_err());
        assert!(rule_path(Path::new("/tmp/a)b")).is_err());
        assert!(rule_path(Path::new("relative")).is_err());
        assert_eq!(rule_path(Path::new("/tmp/x")).unwrap(), "//tmp/x");
    }
}

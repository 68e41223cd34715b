//! Effective configuration: flags > environment > `fullsend.toml` > defaults,
//! resolved in one place, with where each value came from. Secrets come only
//! from the environment and are never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::support::exit::Fail;

mod settings;

use settings::{SECRETS_ENV_ONLY, SETTINGS};

/// Where a configuration value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// A configuration file.
    File,
    /// The built-in default.
    Default,
}

/// One resolved value and where it came from.
#[derive(Debug, Clone)]
struct Resolved {
    value: String,
    source: Source,
}

/// The effective configuration of one invocation.
#[derive(Clone)]
pub struct Config {
    values: BTreeMap<&'static str, Resolved>,
    /// Files that were read, in precedence order (highest first).
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Overrides given as flags, by setting key.
pub type FlagValues = Vec<(&'static str, String)>;

impl Config {
    /// Resolves every setting. `config_file` is an explicit `--config`; `no_config`
    /// skips the files.
    pub fn load(
        flags: &FlagValues,
        config_file: Option<&Path>,
        no_config: bool,
    ) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        let mut file_values: BTreeMap<String, String> = BTreeMap::new();
        if !no_config {
            let candidates: Vec<PathBuf> = match config_file {
                Some(path) => vec![path.to_path_buf()],
                None => {
                    let mut c = vec![PathBuf::from("fullsend.toml")];
                    if let Some(dir) = xdg_config_dir() {
                        c.push(dir.join("fullsend").join("config.toml"));
                    }
                    c
                }
            };
            // Lowest precedence first, so higher ones overwrite.
            for path in candidates.iter().rev() {
                if !path.exists() {
                    if config_file.is_some() {
                        return Err(Fail::usage(format!(
                            "config file {} does not exist",
                            path.display()
                        )));
                    }
                    continue;
                }
                check_trusted(path)?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| Fail::usage(format!("config file {}: {e}", path.display())))?;
                for (key, value) in table {
                    let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
                        return Err(Fail::usage(format!(
                            "config file {}: unknown key `{key}`",
                            path.display()
                        )));
                    };
                    if SECRETS_ENV_ONLY.contains(&setting.env) {
                        return Err(Fail::usage(format!(
                            "config file {}: `{key}` is a secret; set it in the environment only",
                            path.display()
                        )));
                    }
                    let text = match value {
                        toml::Value::String(s) => s,
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        _ => {
                            return Err(Fail::usage(format!(
                                "config file {}: `{key}` must be a string, number or boolean",
                                path.display()
                            )));
                        }
                    };
                    file_values.insert(key, text);
                }
                files.insert(0, path.clone());
            }
        }
        let mut values = BTreeMap::new();
        for setting in SETTINGS {
            let flag = flags
                .iter()
                .rev()
                .find(|(k, _)| *k == setting.key)
                .map(|(_, v)| v.clone());
            let resolved = if let Some(v) = flag {
                Resolved {
                    value: v,
                    source: Source::Flag,
                }
            } else if let Some(v) = std::env::var(setting.env).ok().filter(|v| !v.is_empty()) {
                Resolved {
                    value: v,
                    source: Source::Env,
                }
            } else if let Some(v) = file_values.get(setting.key) {
                Resolved {
                    value: v.clone(),
                    source: Source::File,
                }
            } else {
                Resolved {
                    value: setting.default.to_string(),
                    source: Source::Default,
                }
            };
            values.insert(setting.key, resolved);
        }
        Ok(Config { values, files })
    }

    /// The configuration from the environment and defaults only (tests, library use).
    pub fn from_env() -> anyhow::Result<Self> {
        Config::load(&Vec::new(), None, true)
    }

    fn raw(&self, key: &str) -> &str {
        self.values.get(key).map(|r| r.value.as_str()).unwrap_or("")
    }

    fn optional(&self, key: &str) -> Option<String> {
        let v = self.raw(key).trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<T> {
        let raw = self.raw(key).trim();
        raw.parse::<T>().map_err(|_| {
            let env = SETTINGS
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.env)
                .unwrap_or(key);
            Fail::usage(format!("{key} ({env}) must be a number, got {raw:?}"))
        })
    }

    fn flag(&self, key: &str) -> anyhow::Result<bool> {
        match self.raw(key).trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "" | "0" | "false" | "no" | "off" => Ok(false),
            other => Err(Fail::usage(format!(
                "{key} must be true or false, got {other:?}"
            ))),
        }
    }

    fn seconds(&self, key: &str) -> anyhow::Result<Duration> {
        let secs: f64 = self.number(key)?;
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(Fail::usage(format!(
                "{key} must be a positive number of seconds"
            )));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// The Redis URL (a secret: log [`redacted_url`] instead).
    pub fn redis_url(&self) -> String {
        self.raw("redis_url").to_string()
    }
    /// The Anthropic API key, if set.
    pub fn anthropic_api_key(&self) -> Option<String> {
        self.optional("anthropic_api_key")
    }
    /// The Messages API base URL, without a trailing slash.
    pub fn anthropic_base_url(&self) -> String {
        self.raw("anthropic_base_url")
            .trim_end_matches('/')
            .to_string()
    }
    /// The Gemini API key, if set.
    pub fn gemini_api_key(&self) -> Option<String> {
        self.optional("gemini_api_key")
    }
    /// The Gemini API base URL, without a trailing slash.
    pub fn gemini_base_url(&self) -> String {
        self.raw("gemini_base_url")
            .trim_end_matches('/')
            .to_string()
    }
    /// The key of the OpenAI-compatible server, if set (local servers need none).
    pub fn openai_api_key(&self) -> Option<String> {
        self.optional("openai_api_key")
    }
    /// The OpenAI-compatible base URL, without a trailing slash.
    pub fn openai_base_url(&self) -> String {
        self.raw("openai_base_url")
            .trim_end_matches('/')
            .to_string()
    }
    /// The provider behind `think`.
    pub fn orchestrator_provider(&self) -> String {
        self.raw("orchestrator_provider").to_string()
    }
    /// The provider behind `design --engine api`.
    pub fn fullsend_provider(&self) -> String {
        self.raw("fullsend_provider").to_string()
    }
    /// The model of `think`.
    pub fn orchestrator_model(&self) -> String {
        self.raw("orchestrator_model").to_string()
    }
    /// The Messages-API model of `design --engine api`.
    pub fn fullsend_api_model(&self) -> String {
        self.raw("fullsend_api_model").to_string()
    }
    /// The thinking mode setting (auto | adaptive | enabled | disabled), unparsed.
    pub fn thinking_mode(&self) -> &str {
        self.raw("orchestrator_thinking")
    }
    /// The thinking budget in tokens.
    pub fn thinking_budget(&self) -> anyhow::Result<u32> {
        self.number("orchestrator_thinking_budget")
    }
    /// The adaptive-thinking effort, if set explicitly.
    pub fn effort(&self) -> Option<String> {
        self.optional("orchestrator_effort")
    }
    /// max_tokens of a decision.
    pub fn max_tokens(&self) -> anyhow::Result<u32> {
        self.number("orchestrator_max_tokens")
    }
    /// How long a decision may take.
    pub fn thinking_timeout(&self) -> anyhow::Result<Duration> {
        self.seconds("orchestrator_timeout")
    }
    /// Retries of a failed model call.
    pub fn api_max_retries(&self) -> anyhow::Result<u32> {
        self.number("api_max_retries")
    }
    /// Upper bound of the rendered prompt in estimated tokens.
    pub fn prompt_budget_tokens(&self) -> anyhow::Result<usize> {
        self.number("prompt_budget_tokens")
    }
    /// The context directory.
    pub fn context_path(&self) -> PathBuf {
        PathBuf::from(self.raw("context_path"))
    }
    /// The prompt override directory, if any.
    pub fn prompts_dir(&self) -> Option<PathBuf> {
        self.optional("prompts_dir").map(PathBuf::from)
    }
    /// The decision log path.
    pub fn decision_log(&self) -> PathBuf {
        self.optional("decision_log")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.context_path().join("decisions.jsonl"))
    }
    /// The channel names.
    pub fn channels(&self) -> Channels {
        Channels {
            to_orchestrator: self.raw("channel_to_orchestrator").to_string(),
            from_orchestrator: self.raw("channel_from_orchestrator").to_string(),
            to_fullsend: self.raw("channel_to_fullsend").to_string(),
            builder_tasks: self.raw("channel_builder_tasks").to_string(),
        }
    }
    /// The model given to the Claude Code CLI.
    pub fn fullsend_model(&self) -> Option<String> {
        self.optional("fullsend_model")
    }
    /// An explicit claude executable.
    pub fn claude_bin(&self) -> Option<PathBuf> {
        self.optional("claude_bin").map(PathBuf::from)
    }
    /// Per-call timeout of the coding agent.
    pub fn fullsend_timeout(&self) -> anyhow::Result<Duration> {
        self.seconds("fullsend_timeout")
    }
    /// The Bash permission rules the coding agent gets (none: no Bash).
    pub fn agent_bash_allow(&self) -> Vec<String> {
        self.optional("agent_bash_allow")
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Whether the agent gets its skills server.
    pub fn agent_skills(&self) -> anyhow::Result<bool> {
        self.flag("agent_skills")
    }
    /// The built tools' directory.
    pub fn tools_path(&self) -> PathBuf {
        PathBuf::from(self.raw("tools_path"))
    }
    /// Whether the CLI's WebFetch/WebSearch are allowed.
    pub fn agent_web(&self) -> anyhow::Result<bool> {
        self.flag("agent_web")
    }
    /// The Browserbase key, if set.
    pub fn browserbase_api_key(&self) -> Option<String> {
        self.optional("browserbase_api_key")
    }
    /// The Browserbase base URL.
    pub fn browserbase_url(&self) -> String {
        self.raw("browserbase_url")
            .trim_end_matches('/')
            .to_string()
    }
    /// One design's budget (None: unlimited).
    pub fn design_budget_usd(&self) -> anyhow::Result<Option<f64>> {
        let usd: f64 = self.number("design_budget_usd")?;
        if !(usd >= 0.0 && usd.is_finite()) {
            return Err(Fail::usage("design_budget_usd must be 0 or more"));
        }
        Ok((usd > 0.0).then_some(usd))
    }
    /// A RALPH design's whole-run deadline.
    pub fn ralph_total_timeout(&self) -> anyhow::Result<Duration> {
        self.seconds("ralph_total_timeout")
    }
    /// `--max-turns` per agent call.
    pub fn agent_max_turns(&self) -> anyhow::Result<u32> {
        self.number("agent_max_turns")
    }
    /// The agent's stall timeout.
    pub fn agent_stall_timeout(&self) -> anyhow::Result<Duration> {
        self.seconds("agent_stall_timeout")
    }
    /// How long a refused account pauses the listeners.
    pub fn account_pause(&self) -> anyhow::Result<Duration> {
        self.seconds("account_pause")
    }
    /// Root of design work dirs.
    pub fn work_root(&self) -> PathBuf {
        self.optional("work_dir")
            .map(PathBuf::from)
            // Per user: another local user cannot pre-create or swap it (see designer::workdir).
            .unwrap_or_else(|| {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let uid = unsafe { libc::geteuid() };
                std::env::temp_dir().join(format!("fullsend-{uid}"))
            })
    }
    /// The roundtable command, if configured.
    pub fn roundtable_command(&self) -> Option<String> {
        self.optional("roundtable_command")
    }
    /// How long the roundtable command may take.
    pub fn roundtable_timeout(&self) -> anyhow::Result<Duration> {
        self.seconds("roundtable_timeout")
    }
    /// The daily spend limit in USD, if set.
    pub fn daily_spend_limit(&self) -> anyhow::Result<Option<f64>> {
        match self.optional("daily_spend_limit_usd") {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n >= 0.0 && n.is_finite() => Ok(Some(n)),
                _ => Err(Fail::usage(format!(
                    "FULLSEND_DAILY_SPEND_LIMIT_USD must be a non-negative number, got {v:?}"
                ))),
            },
        }
    }
    /// The Discord channel for reports and notices: where replies go when a message names no
    /// channel, and where the spend and account notices go. `notice_channel_id` is its alias.
    pub fn report_channel_id(&self) -> Option<String> {
        self.optional("report_channel_id")
            .or_else(|| self.optional("notice_channel_id"))
    }
    /// The Discord channel for operational notices (the report channel).
    pub fn notice_channel_id(&self) -> Option<String> {
        self.report_channel_id()
    }
    /// Whether claude may run with --dangerously-skip-permissions.
    pub fn skip_permissions(&self) -> anyhow::Result<bool> {
        self.flag("skip_permissions")
    }
    /// Whether the host is confirmed to be a sandbox.
    pub fn is_sandbox(&self) -> anyhow::Result<bool> {
        self.flag("is_sandbox")
    }

    /// Every setting with its value (secrets redacted) and source, for `fullsend config`.
    pub fn report(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for setting in SETTINGS {
            let Some(r) = self.values.get(setting.key) else {
                continue;
            };
            let shown = if setting.secret && !r.value.is_empty() {
                if setting.key == "redis_url" {
                    serde_json::Value::String(redacted_url(&r.value))
                } else {
                    serde_json::Value::String("<set>".into())
                }
            } else {
                serde_json::Value::String(r.value.clone())
            };
            out.insert(
                setting.key.to_string(),
                serde_json::json!({"value": shown, "source": r.source, "env": setting.env, "help": setting.help}),
            );
        }
        serde_json::json!({
            "files": self.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "settings": out,
        })
    }
}

/// The Redis channels of the Fullsend system.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Where the Orchestrator listens.
    pub to_orchestrator: String,
    /// Replies to Discord.
    pub from_orchestrator: String,
    /// Where FULLSEND listens.
    pub to_fullsend: String,
    /// Where the Builder listens.
    pub builder_tasks: String,
}

/// A configuration file names programs (`claude_bin`, `roundtable_command`) and endpoints (base
/// URLs), so only its owner (or root) may be able to change it: refuse a file that another user
/// owns or that group or others may write.
fn check_trusted(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Fail::usage(format!(
            "config file {} belongs to another user (uid {}); refusing to take programs or \
             endpoints from it",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Fail::usage(format!(
            "config file {} is writable by group or others (mode {:o}); run `chmod go-w {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    Ok(())
}

fn xdg_config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// `scheme://host:port/db` without user or password, safe to log.
pub fn redacted_url(url: &str) -> String {
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(info) => {
            let scheme = if url.starts_with("rediss://") {
                "rediss"
            } else {
                "redis"
            };
            let addr = info.addr().to_string();
            format!("{scheme}://{addr}/{}", info.redis_settings().db())
        }
        Err(_) => "<invalid redis url>".to_string(),
    }
}

//! The table of every setting: its key, environment variable, default and help. One row per
//! setting, so that `fullsend config`, the loader and the docs can never disagree.

/// One known setting: its file key, environment variable and default.
pub(super) struct Setting {
    /// The key in fullsend.toml and in `fullsend config`.
    pub(super) key: &'static str,
    /// The environment variable.
    pub(super) env: &'static str,
    /// The built-in default.
    pub(super) default: &'static str,
    /// Never printed, never read from a file.
    pub(super) secret: bool,
    /// One line for `fullsend config`.
    pub(super) help: &'static str,
}

/// Every setting fullsend knows, in the order `fullsend config` prints them.
pub(super) const SETTINGS: &[Setting] = &[
    Setting {
        key: "redis_url",
        env: "REDIS_URL",
        default: "redis://127.0.0.1:6379/0",
        secret: true,
        help: "Redis URL (redis:// or rediss://, with password and db)",
    },
    Setting {
        key: "anthropic_api_key",
        env: "ANTHROPIC_API_KEY",
        default: "",
        secret: true,
        help: "Anthropic API key (environment only)",
    },
    Setting {
        key: "anthropic_base_url",
        env: "ANTHROPIC_BASE_URL",
        default: "https://api.anthropic.com",
        secret: false,
        help: "Messages API base URL",
    },
    Setting {
        key: "gemini_api_key",
        env: "GEMINI_API_KEY",
        default: "",
        secret: true,
        help: "Gemini API key (environment only)",
    },
    Setting {
        key: "gemini_base_url",
        env: "GEMINI_BASE_URL",
        default: "https://generativelanguage.googleapis.com",
        secret: false,
        help: "Gemini API base URL",
    },
    Setting {
        key: "openai_api_key",
        env: "OPENAI_API_KEY",
        default: "",
        secret: true,
        help: "key of the OpenAI-compatible server (environment only; Ollama needs none)",
    },
    Setting {
        key: "openai_base_url",
        env: "OPENAI_BASE_URL",
        default: "https://api.openai.com",
        secret: false,
        help: "OpenAI-compatible base URL (/v1/chat/completions is appended unless it ends in /v1)",
    },
    Setting {
        key: "orchestrator_provider",
        env: "ORCHESTRATOR_PROVIDER",
        default: "anthropic",
        secret: false,
        help: "model provider for think: anthropic | gemini | openai | replay:FILE",
    },
    Setting {
        key: "orchestrator_model",
        env: "ORCHESTRATOR_MODEL",
        default: "claude-opus-5-5",
        secret: false,
        help: "model for think",
    },
    Setting {
        key: "orchestrator_thinking",
        env: "ORCHESTRATOR_THINKING",
        default: "auto",
        secret: false,
        help: "thinking mode: auto | adaptive | enabled | disabled",
    },
    Setting {
        key: "orchestrator_thinking_budget",
        env: "ORCHESTRATOR_THINKING_BUDGET",
        default: "10000",
        secret: false,
        help: "thinking budget (tokens) for models that take one",
    },
    Setting {
        key: "orchestrator_effort",
        env: "ORCHESTRATOR_EFFORT",
        default: "",
        secret: false,
        help: "effort for adaptive thinking (default: derived from the budget)",
    },
    Setting {
        key: "orchestrator_max_tokens",
        env: "ORCHESTRATOR_MAX_TOKENS",
        default: "16000",
        secret: false,
        help: "max_tokens of a decision (thinking included)",
    },
    Setting {
        key: "orchestrator_timeout",
        env: "ORCHESTRATOR_TIMEOUT",
        default: "60",
        secret: false,
        help: "seconds a decision may take before the fallback reply",
    },
    Setting {
        key: "api_max_retries",
        env: "FULLSEND_API_MAX_RETRIES",
        default: "2",
        secret: false,
        help: "retries of a failed model call (SDK policy)",
    },
    Setting {
        key: "prompt_budget_tokens",
        env: "FULLSEND_PROMPT_BUDGET",
        default: "24000",
        secret: false,
        help: "upper bound of the rendered prompt, in estimated tokens",
    },
    Setting {
        key: "context_path",
        env: "CONTEXT_PATH",
        default: "context",
        secret: false,
        help: "directory of product_context.md, worklist.md, learnings.md",
    },
    Setting {
        key: "prompts_dir",
        env: "FULLSEND_PROMPTS_DIR",
        default: "",
        secret: false,
        help: "directory whose prompt files override the built-in ones",
    },
    Setting {
        key: "decision_log",
        env: "FULLSEND_DECISION_LOG",
        default: "",
        secret: false,
        help: "decision log path (default: <context_path>/decisions.jsonl)",
    },
    Setting {
        key: "channel_to_orchestrator",
        env: "CHANNEL_TO_ORCHESTRATOR",
        default: "fullsend:to_orchestrator",
        secret: false,
        help: "channel the Orchestrator listens on",
    },
    Setting {
        key: "channel_from_orchestrator",
        env: "CHANNEL_FROM_ORCHESTRATOR",
        default: "fullsend:from_orchestrator",
        secret: false,
        help: "channel of replies to Discord",
    },
    Setting {
        key: "channel_to_fullsend",
        env: "CHANNEL_TO_FULLSEND",
        default: "fullsend:to_fullsend",
        secret: false,
        help: "channel FULLSEND listens on",
    },
    Setting {
        key: "channel_builder_tasks",
        env: "CHANNEL_BUILDER_TASKS",
        default: "fullsend:builder_tasks",
        secret: false,
        help: "channel the Builder listens on",
    },
    Setting {
        key: "fullsend_model",
        env: "FULLSEND_MODEL",
        default: "sonnet",
        secret: false,
        help: "model passed to the Claude Code CLI",
    },
    Setting {
        key: "fullsend_provider",
        env: "FULLSEND_PROVIDER",
        default: "anthropic",
        secret: false,
        help: "model provider for design --engine api: anthropic | gemini | openai | replay:FILE",
    },
    Setting {
        key: "fullsend_api_model",
        env: "FULLSEND_API_MODEL",
        default: "claude-sonnet-5-5",
        secret: false,
        help: "model for design --engine api",
    },
    Setting {
        key: "claude_bin",
        env: "FULLSEND_CLAUDE_BIN",
        default: "",
        secret: false,
        help: "path of the claude executable (default: found on PATH)",
    },
    Setting {
        key: "fullsend_timeout",
        env: "FULLSEND_TIMEOUT",
        default: "300",
        secret: false,
        help: "seconds one coding-agent call may take",
    },
    Setting {
        key: "work_dir",
        env: "FULLSEND_WORK_DIR",
        default: "",
        secret: false,
        help: "where design work dirs are created (default: $TMPDIR/fullsend)",
    },
    Setting {
        key: "roundtable_command",
        env: "FULLSEND_ROUNDTABLE_CMD",
        default: "",
        secret: false,
        help: "command run for initiate_roundtable (JSON on stdin, JSON on stdout)",
    },
    Setting {
        key: "roundtable_timeout",
        env: "FULLSEND_ROUNDTABLE_TIMEOUT",
        default: "120",
        secret: false,
        help: "seconds the roundtable command may take",
    },
    Setting {
        key: "daily_spend_limit_usd",
        env: "FULLSEND_DAILY_SPEND_LIMIT_USD",
        default: "",
        secret: false,
        help: "stop new model calls once today's (UTC) spend reaches this many USD",
    },
    Setting {
        key: "notice_channel_id",
        env: "FULLSEND_NOTICE_CHANNEL_ID",
        default: "",
        secret: false,
        help: "Discord channel id for operational notices (spend limit)",
    },
    Setting {
        key: "skip_permissions",
        env: "FULLSEND_SKIP_PERMISSIONS",
        default: "false",
        secret: false,
        help: "pass --dangerously-skip-permissions to claude (opt-in)",
    },
    Setting {
        key: "is_sandbox",
        env: "FULLSEND_IS_SANDBOX",
        default: "false",
        secret: false,
        help: "confirm the host is a sandbox (IS_SANDBOX=1 for claude as root)",
    },
];
/// Secrets that are refused in configuration files (environment only).
pub(super) const SECRETS_ENV_ONLY: &[&str] =
    &["ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY"];

//! The environment a child sees: an allow-list of the parent's variables plus a few forced
//! ones, so that nothing else (keys, Redis URLs) leaks into a model-driven process.

use std::ffi::OsString;

use super::SpawnOptions;
use super::confine::Confinement;

/// Parent environment variables a child may see. Everything else (REDIS_URL, admin credentials, ...) is
/// dropped because the child runs model-driven tools. `HOME`, `CLAUDE_CONFIG_DIR` and `TMPDIR` are
/// never passed through: the child gets private ones (see `confine`).
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL",
    "API_TIMEOUT_MS",
    "CLAUDE_CODE_MAX_RETRIES",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "NODE_EXTRA_CA_CERTS",
    // W3C trace context: Claude Code's own spans nest under the caller's.
    "TRACEPARENT",
    "TRACESTATE",
];
/// Variables always set in the child: no telemetry, no auto-update, and no traffic except to the API.
const ENV_FORCED: &[(&str, &str)] = &[
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
];
/// Set by fullsend for each run, never taken from the parent or from `env_allow`.
const PRIVATE: [&str; 3] = ["HOME", "CLAUDE_CONFIG_DIR", "TMPDIR"];

/// Builds the child's environment from a snapshot of the parent's: the allow-list, forced switches and
/// IS_SANDBOX when asked. Split out so the filtering is testable without touching the process env.
pub(super) fn child_env<F>(
    opts: &SpawnOptions,
    confinement: &Confinement,
    parent: F,
) -> Vec<(String, OsString)>
where
    F: Fn(&str) -> Option<OsString>,
{
    let mut env: Vec<(String, OsString)> = Vec::new();
    let names = ENV_ALLOW
        .iter()
        .copied()
        .chain(opts.env_allow.iter().map(String::as_str));
    for name in names {
        if env.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = parent(name) {
            env.push((name.to_owned(), v));
        }
    }
    // Forced values win over anything passed through.
    env.retain(|(n, _)| {
        !ENV_FORCED.iter().any(|(f, _)| f == n)
            && !PRIVATE.contains(&n.as_str())
            && n != "IS_SANDBOX"
    });
    env.push(("HOME".to_owned(), confinement.home.clone().into_os_string()));
    env.push((
        "CLAUDE_CONFIG_DIR".to_owned(),
        confinement.config_dir.clone().into_os_string(),
    ));
    env.push((
        "TMPDIR".to_owned(),
        confinement.tmp.clone().into_os_string(),
    ));
    for (n, v) in ENV_FORCED {
        env.push(((*n).to_owned(), OsString::from(v)));
    }
    if opts.sandbox {
        env.push(("IS_SANDBOX".to_owned(), OsString::from("1")));
    }
    if let Some(tp) = &opts.traceparent {
        env.retain(|(n, _)| n != "TRACEPARENT" && n != "TRACESTATE");
        env.push(("TRACEPARENT".to_owned(), OsString::from(tp)));
    }
    agent_telemetry(&mut env, &parent);
    env
}

/// Where fullsend exports traces (`OTEL_EXPORTER_OTLP_*`), Claude Code exports its own spans
/// there too, as `claude-code`, under the `TRACEPARENT` it is given; nothing else of the
/// operator's telemetry settings passes. `FULLSEND_AGENT_TELEMETRY=false` turns it off.
const OTLP_PASSED: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

fn agent_telemetry<F>(env: &mut Vec<(String, OsString)>, parent: &F)
where
    F: Fn(&str) -> Option<OsString>,
{
    let set = |name: &str| parent(name).is_some_and(|v| !v.is_empty());
    let off = parent("FULLSEND_AGENT_TELEMETRY")
        .is_some_and(|v| matches!(v.to_str(), Some("0" | "false" | "no" | "off")));
    if off || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return;
    }
    for name in OTLP_PASSED {
        if let Some(v) = parent(name) {
            env.push(((*name).to_owned(), v));
        }
    }
    for (name, value) in [
        ("CLAUDE_CODE_ENABLE_TELEMETRY", "1"),
        ("CLAUDE_CODE_ENHANCED_TELEMETRY_BETA", "1"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_SERVICE_NAME", "claude-code"),
    ] {
        env.push((name.to_owned(), OsString::from(value)));
    }
}

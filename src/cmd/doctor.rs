//! `fullsend doctor`: is this host ready? Redis reachable and durable, the API
//! key present (never printed), the model reachable (`--online`), `claude`
//! found with its version, the context dir writable, the prompts complete.
//! JSON on stdout, a short summary on stderr; exit 0 when ready, 2 when
//! something is missing or misconfigured, 3 when a service is unreachable.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend doctor
  fullsend doctor --online      # also sends one tiny request to the model

Output (abridged):
  {\"ready\":false,\"checks\":[{\"name\":\"redis\",\"ok\":false,\"kind\":\"unreachable\",\"detail\":\"cannot connect to Redis at redis://127.0.0.1:6379/0: Connection refused\"}, …]}";

/// Arguments of `fullsend doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Also check that the model answers (one tiny, paid request).
    #[arg(long)]
    pub online: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Warning,
    Missing,
    Unreachable,
}

struct Check {
    name: &'static str,
    kind: Kind,
    detail: String,
}

impl Check {
    fn json(&self) -> Value {
        let kind = match self.kind {
            Kind::Ok => "ok",
            Kind::Warning => "warning",
            Kind::Missing => "missing",
            Kind::Unreachable => "unreachable",
        };
        json!({"name": self.name, "ok": matches!(self.kind, Kind::Ok | Kind::Warning), "kind": kind, "detail": self.detail})
    }
}

/// Runs `doctor`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let cfg = &env.config;
    let mut checks = Vec::new();

    let url = cfg.redis_url();
    match tokio::time::timeout(Duration::from_secs(5), crate::bus::store::connect(&url)).await {
        Ok(Ok(mut conn)) => {
            let health = crate::bus::queues::redis_health(&mut conn).await?;
            let warnings: Vec<String> = health["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            let detail = format!(
                "{} (Redis {})",
                crate::support::config::redacted_url(&url),
                health["version"].as_str().unwrap_or("?")
            );
            if warnings.is_empty() {
                checks.push(Check {
                    name: "redis",
                    kind: Kind::Ok,
                    detail,
                });
            } else {
                checks.push(Check {
                    name: "redis",
                    kind: Kind::Warning,
                    detail: format!("{detail}; {}", warnings.join("; ")),
                });
            }
        }
        Ok(Err(err)) => checks.push(Check {
            name: "redis",
            kind: Kind::Unreachable,
            detail: format!("{err:#}"),
        }),
        Err(_) => checks.push(Check {
            name: "redis",
            kind: Kind::Unreachable,
            detail: format!(
                "{} did not answer within 5 s",
                crate::support::config::redacted_url(&url)
            ),
        }),
    }

    let provider = cfg.orchestrator_provider();
    let (key_name, key_set) = match provider.as_str() {
        "gemini" => ("GEMINI_API_KEY", cfg.gemini_api_key().is_some()),
        // Local OpenAI-compatible servers (Ollama, vLLM) need no key.
        "openai" => ("OPENAI_API_KEY", true),
        _ => ("ANTHROPIC_API_KEY", cfg.anthropic_api_key().is_some()),
    };
    if provider.starts_with("replay:") {
        checks.push(Check {
            name: "api_key",
            kind: Kind::Ok,
            detail: format!("not needed: the provider is {provider}"),
        });
    } else if key_set {
        checks.push(Check {
            name: "api_key",
            kind: Kind::Ok,
            detail: format!("{key_name} is set or not needed for {provider}"),
        });
    } else {
        checks.push(Check {
            name: "api_key",
            kind: Kind::Missing,
            detail: format!("{key_name} is not set for ORCHESTRATOR_PROVIDER={provider} (export it, or use ORCHESTRATOR_PROVIDER=replay:FILE)"),
        });
    }

    if args.online {
        checks.push(model_check(&env).await);
    }

    match crate::designer::spawn::find_claude(cfg.claude_bin().as_deref()) {
        Ok(path) => {
            let version = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::process::Command::new(&path)
                    .arg("--version")
                    .stdin(std::process::Stdio::null())
                    .output(),
            )
            .await;
            match version {
                Ok(Ok(out)) if out.status.success() => checks.push(Check {
                    name: "claude",
                    kind: Kind::Ok,
                    detail: format!(
                        "{} ({})",
                        path.display(),
                        String::from_utf8_lossy(&out.stdout).trim()
                    ),
                }),
                _ => checks.push(Check {
                    name: "claude",
                    kind: Kind::Missing,
                    detail: format!("{} does not answer --version", path.display()),
                }),
            }
        }
        Err(err) => checks.push(Check {
            name: "claude",
            kind: Kind::Missing,
            detail: format!("{err:#}"),
        }),
    }

    let dir = cfg.context_path();
    let probe = tempfile::Builder::new()
        .prefix(".fullsend-doctor")
        .tempfile_in(&dir);
    match probe {
        Ok(_) => checks.push(Check {
            name: "context_dir",
            kind: Kind::Ok,
            detail: format!("{} is writable", dir.display()),
        }),
        Err(err) => checks.push(Check {
            name: "context_dir",
            kind: Kind::Missing,
            detail: format!("{} is not writable: {err}", dir.display()),
        }),
    }

    let prompts = crate::context::prompt::Prompts::new(cfg.prompts_dir());
    let mut broken = Vec::new();
    for name in crate::context::prompt::Prompts::names() {
        if let Err(err) = prompts.source(name) {
            broken.push(format!("{name}: {err:#}"));
        }
    }
    // An outcome message, so the learning part renders too, and an empty brief.
    let outcome =
        serde_json::Map::from_iter([("type".to_string(), serde_json::json!("metric_alert"))]);
    let empty = crate::context::loader::Context::default();
    if let Err(err) = crate::context::prompt::orchestrator_prompt(
        &prompts, &empty, &outcome, 24_000,
    )
    .and_then(|_| {
        crate::orchestrator::brief::build(&serde_json::Map::new(), "", "", &empty, &prompts)
    }) {
        broken.push(format!("{err:#}"));
    }
    if broken.is_empty() {
        let origin = cfg
            .prompts_dir()
            .map(|d| format!("built in, overridable from {}", d.display()))
            .unwrap_or_else(|| "built in".into());
        checks.push(Check {
            name: "prompts",
            kind: Kind::Ok,
            detail: origin,
        });
    } else {
        checks.push(Check {
            name: "prompts",
            kind: Kind::Missing,
            detail: broken.join("; "),
        });
    }

    let ready = checks
        .iter()
        .all(|c| matches!(c.kind, Kind::Ok | Kind::Warning));
    for c in &checks {
        let mark = match c.kind {
            Kind::Ok => "ok  ",
            Kind::Warning => "warn",
            Kind::Missing | Kind::Unreachable => "FAIL",
        };
        if !global.quiet {
            eprintln!("{mark} {:<12} {}", c.name, c.detail);
        }
    }
    env.emit(&json!({"v": 1, "ready": ready, "checks": checks.iter().map(Check::json).collect::<Vec<_>>()}))?;
    Ok(if ready {
        Exit::Success
    } else if checks.iter().any(|c| c.kind == Kind::Missing) {
        Exit::Usage
    } else {
        Exit::Upstream
    })
}

async fn model_check(env: &Env) -> Check {
    let cfg = &env.config;
    let provider = match crate::llm::Provider::from_spec(&cfg.orchestrator_provider(), cfg) {
        Ok(p) => p,
        Err(err) => {
            return Check {
                name: "model",
                kind: Kind::Missing,
                detail: format!("{err:#}"),
            };
        }
    };
    let request = crate::llm::ModelRequest {
        model: cfg.orchestrator_model(),
        system: Vec::new(),
        user: vec![crate::llm::PromptBlock {
            text: "Reply with the word ok.".into(),
            cache: false,
        }],
        max_tokens: 16,
        thinking: crate::llm::ThinkingMode::Disabled,
        thinking_budget: 0,
        effort: None,
        timeout: Duration::from_secs(30),
        max_retries: 0,
    };
    match provider.complete(&request, None).await {
        Ok(r) => Check {
            name: "model",
            kind: Kind::Ok,
            detail: format!(
                "{} answered ({} via {})",
                cfg.orchestrator_model(),
                crate::support::msg::preview(&r.text, 40),
                r.provider
            ),
        },
        Err(crate::llm::LlmError::Config(m)) => Check {
            name: "model",
            kind: Kind::Missing,
            detail: m,
        },
        Err(err) => Check {
            name: "model",
            kind: Kind::Unreachable,
            detail: err.to_string(),
        },
    }
}

//! Model providers behind `think` and `design --engine api`: one request and
//! response shape, whichever provider answers.
//!
//! Each provider (`anthropic`, `gemini`, `openai`, `replay`) speaks its own
//! wire format over the shared client and retry loop in `http`, with `sse`
//! for streams; [`extract`] pulls JSON out of model text and [`price`] turns
//! usage into dollars. Depends on `support` only: never on `bus`, `context`,
//! the services or `cmd`.

mod anthropic;
pub mod extract;
mod gemini;
mod http;
pub use http::http_client;
mod openai;
pub mod price;
mod replay;
mod sse;

use std::time::Duration;

use crate::support::exit::Fail;

pub use anthropic::Anthropic;
pub use gemini::Gemini;
pub use openai::OpenAi;
pub use replay::{Recorder, Replay, replay_line};

/// How extended thinking is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingMode {
    /// Chosen per model: `enabled` + budget where required, else `adaptive`.
    Auto,
    /// `{type:"adaptive"}` with an effort.
    Adaptive,
    /// `{type:"enabled", budget_tokens}`.
    Enabled,
    /// No thinking.
    Disabled,
}

impl ThinkingMode {
    /// Parses the configuration value.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(ThinkingMode::Auto),
            "adaptive" => Ok(ThinkingMode::Adaptive),
            "enabled" => Ok(ThinkingMode::Enabled),
            "disabled" | "off" => Ok(ThinkingMode::Disabled),
            other => Err(Fail::usage(format!(
                "thinking mode must be auto, adaptive, enabled or disabled, got {other:?}"
            ))),
        }
    }

    /// The concrete mode for `model` (resolves `Auto`).
    pub fn for_model(self, model: &str) -> ThinkingMode {
        if self != ThinkingMode::Auto {
            return self;
        }
        // The 4.5 generation and older take only a budget; everything newer
        // either requires or prefers adaptive thinking (docs/model-apis.md §3).
        const BUDGET_ONLY: &[&str] = &[
            "opus-4-5",
            "sonnet-4-5",
            "haiku-4-5",
            "opus-4-1",
            "opus-4-2025",
            "sonnet-4-2025",
            "3-7-sonnet",
        ];
        if BUDGET_ONLY.iter().any(|m| model.contains(m)) {
            ThinkingMode::Enabled
        } else {
            ThinkingMode::Adaptive
        }
    }
}

/// A block of prompt text, optionally ending a cached prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptBlock {
    /// The text.
    pub text: String,
    /// Put a `cache_control` breakpoint after this block.
    pub cache: bool,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// Model id.
    pub model: String,
    /// System prompt blocks, most stable first.
    pub system: Vec<PromptBlock>,
    /// User turn blocks, the per-message part last.
    pub user: Vec<PromptBlock>,
    /// max_tokens (thinking included).
    pub max_tokens: u32,
    /// Thinking mode.
    pub thinking: ThinkingMode,
    /// Budget for `enabled` thinking.
    pub thinking_budget: u32,
    /// Effort for adaptive thinking.
    pub effort: Option<String>,
    /// Deadline for the whole call, retries included.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

/// Token usage of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens (thinking included).
    pub output_tokens: u64,
    /// Input tokens written to the cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// All input tokens: uncached, cache writes and cache reads.
    pub fn total_input(&self) -> u64 {
        self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }
}

/// A model's answer.
#[derive(Debug, Clone)]
pub struct ModelResponse {
    /// The text blocks, joined.
    pub text: String,
    /// The thinking text, when the API returned any.
    pub thinking: Option<String>,
    /// Token usage.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// Why generation stopped.
    pub stop_reason: Option<String>,
    /// The provider's request id of the last attempt.
    pub request_id: Option<String>,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// Which provider answered.
    pub provider: String,
}

/// Why a model call failed.
#[derive(Debug)]
pub enum LlmError {
    /// The deadline passed.
    Timeout(Duration),
    /// The API answered with an error after the retries allowed.
    Api {
        /// HTTP status.
        status: u16,
        /// The provider's error type.
        kind: String,
        /// The provider's message.
        message: String,
        /// The request id, for support.
        request_id: Option<String>,
    },
    /// The connection failed.
    Connection(String),
    /// The model answered, but with nothing usable (filtered, blocked, all tokens spent on
    /// thinking, no recorded reply): a final answer, not worth retrying.
    Protocol(String),
    /// The response could not be read at all: a 200 that is not JSON (a proxy's or a captive
    /// portal's page), broken SSE, an event past its bound. Something between us and the API
    /// is wrong; retrying later may work, and the message must not be consumed meanwhile.
    Malformed(String),
    /// Configuration is missing or wrong (no API key, bad provider).
    Config(String),
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LlmError::Timeout(d) => write!(f, "model call timed out after {}s", d.as_secs_f64()),
            LlmError::Api {
                status,
                kind,
                message,
                request_id,
            } => {
                write!(f, "model API error {status} {kind}: {message}")?;
                if let Some(id) = request_id {
                    write!(f, " (request-id {id})")?;
                }
                Ok(())
            }
            LlmError::Connection(m) => write!(f, "cannot reach the model API: {m}"),
            LlmError::Protocol(m) => write!(f, "unexpected answer from the model API: {m}"),
            LlmError::Malformed(m) => write!(f, "unreadable response from the model API: {m}"),
            LlmError::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LlmError {}

impl LlmError {
    /// The error type name used in decision payloads.
    pub fn kind_name(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Api { .. } => "api_error",
            LlmError::Connection(_) => "connection_error",
            LlmError::Protocol(_) => "protocol_error",
            LlmError::Malformed(_) => "malformed_response",
            LlmError::Config(_) => "config_error",
        }
    }

    /// Whether the account cannot pay for calls right now: a credit balance that is too low,
    /// or a spend limit set in the provider's console. Every message would fail the same way,
    /// so the role pauses instead of dead-lettering them.
    pub fn is_account_blocked(&self) -> bool {
        let LlmError::Api {
            status,
            kind,
            message,
            ..
        } = self
        else {
            return false;
        };
        let text = message.to_ascii_lowercase();
        matches!(status, 400 | 402 | 403 | 429)
            && (kind == "billing_error"
                || kind == "insufficient_quota"
                || text.contains("credit balance")
                || text.contains("usage limits")
                || text.contains("spend limit")
                || text.contains("exceeded your current quota"))
    }

    /// Whether trying again later may succeed (rate limits, overload, outages).
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Timeout(_) | LlmError::Connection(_) | LlmError::Malformed(_) => true,
            LlmError::Api { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            LlmError::Protocol(_) | LlmError::Config(_) => false,
        }
    }

    /// Converts into an error with the right exit code.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            LlmError::Config(m) => Fail::usage(m),
            other => Fail::upstream(other),
        }
    }
}

/// Receives streaming progress (output characters so far).
pub type ProgressFn = dyn Fn(usize) + Send + Sync;

/// A model provider.
#[derive(Debug, Clone)]
pub enum Provider {
    /// The Anthropic Messages API.
    Anthropic(Anthropic),
    /// The Gemini API (`streamGenerateContent`).
    Gemini(Gemini),
    /// OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, OpenRouter).
    OpenAi(OpenAi),
    /// Recorded replies from a file.
    Replay(Replay),
    /// Another provider, its answers kept (`fullsend eval --record`).
    Recording(Recorder),
}

impl Provider {
    /// Builds the provider named by `spec` (`anthropic`, `gemini`, `openai` or
    /// `replay:FILE`), with its key and base URL from `cfg`.
    pub fn from_spec(spec: &str, cfg: &crate::support::config::Config) -> anyhow::Result<Provider> {
        let spec = spec.trim();
        if let Some(path) = spec.strip_prefix("replay:") {
            return Ok(Provider::Replay(Replay::load(std::path::Path::new(path))?));
        }
        match spec {
            "" | "anthropic" => Ok(Provider::Anthropic(Anthropic::new(
                cfg.anthropic_api_key(),
                &cfg.anthropic_base_url(),
            )?)),
            "gemini" => Ok(Provider::Gemini(Gemini::new(
                cfg.gemini_api_key(),
                &cfg.gemini_base_url(),
            )?)),
            "openai" => Ok(Provider::OpenAi(OpenAi::new(
                cfg.openai_api_key(),
                &cfg.openai_base_url(),
            )?)),
            other => Err(Fail::usage(format!(
                "unknown model provider {other:?} (expected anthropic, gemini, openai or replay:FILE)"
            ))),
        }
    }

    /// Whether the provider can be called at all (its key is set); daemons
    /// check this at start rather than failing every message.
    pub fn ready(&self) -> Result<(), LlmError> {
        let missing = |name: &str| {
            Err(LlmError::Config(format!(
                "{name} is not set (export it, or choose another provider)"
            )))
        };
        match self {
            Provider::Anthropic(p) if !p.has_key() => missing("ANTHROPIC_API_KEY"),
            Provider::Gemini(p) if !p.has_key() => missing("GEMINI_API_KEY"),
            Provider::Recording(r) => r.ready(),
            _ => Ok(()),
        }
    }

    /// A short name for logs and reports.
    pub fn name(&self) -> String {
        match self {
            Provider::Anthropic(_) => "anthropic".into(),
            Provider::Gemini(_) => "gemini".into(),
            Provider::OpenAi(_) => "openai".into(),
            Provider::Replay(r) => format!("replay:{}", r.path().display()),
            Provider::Recording(r) => r.name(),
        }
    }

    /// Sends one request (with retries) and returns the answer.
    pub async fn complete(
        &self,
        request: &ModelRequest,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, LlmError> {
        use crate::support::trace::{self, kv};
        // A `chat <model>` span with the GenAI conventions' attributes.
        let provider = match self {
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gcp.gemini",
            Provider::OpenAi(_) => "openai",
            Provider::Replay(_) | Provider::Recording(_) => "fullsend.replay",
        };
        let span = trace::Span::child(
            format!("chat {}", request.model),
            trace::CLIENT,
            vec![
                kv(trace::GEN_AI_OPERATION, "chat"),
                kv(trace::GEN_AI_PROVIDER, provider),
                kv(trace::GEN_AI_REQUEST_MODEL, request.model.clone()),
            ],
        );
        let result = span
            .run(async {
                match self {
                    Provider::Anthropic(p) => p.complete(request, progress).await,
                    Provider::Gemini(p) => p.complete(request, progress).await,
                    Provider::OpenAi(p) => p.complete(request, progress).await,
                    Provider::Replay(p) => p.complete(request),
                    Provider::Recording(p) => p.complete(request, progress).await,
                }
            })
            .await;
        match &result {
            Ok(r) => {
                span.set(trace::GEN_AI_RESPONSE_MODEL, r.model.clone());
                let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                span.set(trace::GEN_AI_INPUT_TOKENS, tokens(r.usage.input_tokens));
                span.set(trace::GEN_AI_OUTPUT_TOKENS, tokens(r.usage.output_tokens));
            }
            Err(e) => span.fail(e),
        }
        result
    }
}

/// Adaptive effort for a thinking budget, when no effort is configured. There
/// is no official mapping; this one keeps the PRD's 10k budget at `high`.
pub fn effort_for_budget(budget: u32) -> &'static str {
    match budget {
        0..=2047 => "low",
        2048..=6143 => "medium",
        6144..=24575 => "high",
        _ => "max",
    }
}

/// A rough token estimate (about 3.5 characters a token; errs high).
pub fn estimate_tokens(text: &str) -> usize {
    (text.len() * 2).div_ceil(7)
}

/// A typical request for unit tests: cached system and context blocks, the message last.
#[cfg(test)]
pub(crate) fn test_request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.into(),
        system: vec![PromptBlock {
            text: "sys".into(),
            cache: true,
        }],
        user: vec![
            PromptBlock {
                text: "ctx".into(),
                cache: true,
            },
            PromptBlock {
                text: "msg".into(),
                cache: false,
            },
        ],
        max_tokens: 16000,
        thinking: ThinkingMode::Auto,
        thinking_budget: 10000,
        effort: None,
        timeout: Duration::from_secs(60),
        max_retries: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_mode_per_model() {
        assert_eq!(
            ThinkingMode::Auto.for_model("claude-opus-4-5-20251101"),
            ThinkingMode::Enabled
        );
        assert_eq!(
            ThinkingMode::Auto.for_model("claude-haiku-4-5-20251001"),
            ThinkingMode::Enabled
        );
        assert_eq!(
            ThinkingMode::Auto.for_model("claude-opus-5-5"),
            ThinkingMode::Adaptive
        );
        assert_eq!(
            ThinkingMode::Auto.for_model("claude-opus-4-8"),
            ThinkingMode::Adaptive
        );
        assert_eq!(
            ThinkingMode::Enabled.for_model("claude-opus-5-5"),
            ThinkingMode::Enabled
        );
        assert_eq!(effort_for_budget(10_000), "high");
    }
}

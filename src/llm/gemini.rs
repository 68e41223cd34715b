//! The Gemini API (`streamGenerateContent?alt=sse`): streamed calls with thinking
//! set per model generation (a budget on 2.5, a level on 3.x), and Google's
//! retry rules (429 `RESOURCE_EXHAUSTED` with `RetryInfo`, 500, 503, 504).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::http::{self, Failure, describe_reqwest, header, retry_after, within_limit};
use super::{LlmError, ModelRequest, ModelResponse, ProgressFn, ThinkingMode, Usage, sse};

/// The provider name in responses, logs and error messages.
const PROVIDER: &str = "gemini";

/// The largest budget 2.5 Flash accepts (docs/model-apis.md §11); Pro accepts more,
/// so this bound is safe for every 2.5 model.
const MAX_THINKING_BUDGET: u32 = 24_576;

/// The smallest budget 2.5 Pro accepts: its thinking cannot be turned off.
const MIN_PRO_BUDGET: u32 = 128;

/// Output tokens kept for the answer on top of a thinking budget, since
/// thoughts count against `maxOutputTokens`.
const ANSWER_ROOM: u32 = 2048;

/// A Gemini API client.
#[derive(Debug, Clone)]
pub struct Gemini {
    endpoint: http::Endpoint,
}

impl Gemini {
    /// A client for `base_url` (e.g. `https://generativelanguage.googleapis.com`).
    pub fn new(api_key: Option<String>, base_url: &str) -> anyhow::Result<Self> {
        Ok(Gemini {
            endpoint: http::Endpoint::new(api_key, base_url)?,
        })
    }

    /// Whether a key is configured.
    pub fn has_key(&self) -> bool {
        self.endpoint.has_key()
    }

    /// Sends the request with retries until it succeeds, fails for good, or the deadline passes.
    pub async fn complete(
        &self,
        request: &ModelRequest,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, LlmError> {
        let Some(api_key) = self.endpoint.api_key.as_deref() else {
            return Err(LlmError::Config(
                "GEMINI_API_KEY is not set (export it, or use --provider replay:FILE for recorded replies)".into(),
            ));
        };
        let url = self.url(&request.model)?;
        let body = build_body(request);
        http::with_retries(request.timeout, request.max_retries, |n| {
            self.attempt(&url, api_key, &body, n, &request.model, progress)
        })
        .await
    }

    /// `{base}/v1beta/models/{model}:streamGenerateContent?alt=sse`; a base that
    /// already names an API version (`/v1beta`, `/v1`) is used as it is.
    fn url(&self, model: &str) -> Result<String, LlmError> {
        let model = model.trim();
        let model = model.strip_prefix("models/").unwrap_or(model);
        // The id goes into the URL path, so anything beyond an id's characters
        // would change the route rather than name a model.
        let valid = !model.is_empty()
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(LlmError::Config(format!(
                "{PROVIDER}: {model:?} is not a model id (e.g. gemini-2.5-flash)"
            )));
        }
        let last = self.endpoint.base_url.rsplit('/').next().unwrap_or("");
        let root = if last.starts_with("v1") {
            self.endpoint.base_url.clone()
        } else {
            format!("{}/v1beta", self.endpoint.base_url)
        };
        Ok(format!(
            "{root}/models/{model}:streamGenerateContent?alt=sse"
        ))
    }

    async fn attempt(
        &self,
        url: &str,
        api_key: &str,
        body: &Value,
        attempt: u32,
        model: &str,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, Failure> {
        let response = self
            .endpoint
            .http
            .post(url)
            .header("x-goog-api-key", api_key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::retry(connection_error(&e), None))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            let error = parse_error_body(&text);
            tracing::debug!("attempt {attempt}: HTTP {status} {}", error.status);
            let retry_after = error
                .retry_delay
                .and_then(within_limit)
                .or_else(|| retry_after(&headers));
            return Err(Failure {
                error: api_error(status, error),
                retry: should_retry(status),
                retry_after,
            });
        }
        let mut acc = Accumulator {
            model: model.to_string(),
            ..Accumulator::default()
        };
        let is_stream =
            header(&headers, "content-type").is_some_and(|c| c.contains("text/event-stream"));
        if !is_stream {
            // Without `alt=sse` (e.g. a proxy that drops the query) the answer is
            // one JSON chunk or an array of them: take it as it is.
            let text = response
                .text()
                .await
                .map_err(|e| Failure::retry(connection_error(&e), None))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(LlmError::Malformed(format!(
                    "{PROVIDER}: response is not JSON: {e}"
                )))
            })?;
            match value {
                Value::Array(chunks) => {
                    for chunk in &chunks {
                        acc.apply(chunk)?;
                    }
                }
                chunk => acc.apply(&chunk)?,
            }
            return acc.finish();
        }
        let mut parser = sse::Parser::default();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|e| acc.interrupted(connection_error(&e)))?;
            let events = parser
                .feed(&chunk)
                .map_err(|e| acc.interrupted(LlmError::Malformed(e.to_string())))?;
            for event in events {
                acc.apply_event(&event)?;
                if let Some(report) = progress {
                    report(acc.text.len() + acc.thinking.len());
                }
            }
        }
        if let Some(event) = parser.finish() {
            acc.apply_event(&event)?;
        }
        acc.finish()
    }
}

/// A Gemini model's generation, as (major, minor) from `gemini-M.N-…`.
fn generation(model: &str) -> Option<(u32, u32)> {
    let rest = model.rsplit('/').next()?.strip_prefix("gemini-")?;
    let version = rest.split('-').next()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// How a model takes its thinking setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThinkingKnob {
    /// Gemini 2.5: `thinkingBudget` in tokens.
    Budget,
    /// Gemini 3 and later: `thinkingLevel`.
    Level,
    /// Older models have no thinking; sending a config would be rejected.
    None,
}

fn thinking_knob(model: &str) -> ThinkingKnob {
    match generation(model) {
        Some((major, _)) if major >= 3 => ThinkingKnob::Level,
        Some((2, minor)) if minor >= 5 => ThinkingKnob::Budget,
        // Unknown naming (a tuned model, an alias): go by the id, as configured.
        None if model.contains("2.5") => ThinkingKnob::Budget,
        _ => ThinkingKnob::None,
    }
}

/// `thinkingLevel` for an effort. Pro models take only LOW and HIGH, so a
/// medium effort rounds up to their default.
fn thinking_level(effort: &str, model: &str) -> &'static str {
    match effort.trim().to_ascii_lowercase().as_str() {
        "none" | "minimal" | "low" => "LOW",
        "medium" if !model.contains("pro") => "MEDIUM",
        _ => "HIGH",
    }
}

/// The request body (camelCase): system instruction, one user turn, and a
/// thinking config that names either a budget or a level, never both (a 400).
fn build_body(request: &ModelRequest) -> Value {
    let parts = |list: &[super::PromptBlock]| -> Vec<Value> {
        list.iter().map(|b| json!({"text": b.text})).collect()
    };
    let mut body = json!({
        "contents": [{"role": "user", "parts": parts(&request.user)}],
    });
    if !request.system.is_empty() {
        body["systemInstruction"] = json!({"parts": parts(&request.system)});
    }
    let thinking = request.thinking != ThinkingMode::Disabled;
    let is_pro = request.model.contains("pro");
    let mut max_tokens = request.max_tokens.max(1);
    let thinking_config = match thinking_knob(&request.model) {
        ThinkingKnob::Budget => {
            let budget = if thinking {
                request.thinking_budget.min(MAX_THINKING_BUDGET)
            } else {
                0
            };
            let budget = if is_pro {
                budget.max(MIN_PRO_BUDGET)
            } else {
                budget
            };
            if budget > 0 {
                // Thoughts count against maxOutputTokens: keep room for the answer.
                max_tokens = max_tokens.max(budget + ANSWER_ROOM);
            }
            Some(json!({"thinkingBudget": budget, "includeThoughts": thinking}))
        }
        ThinkingKnob::Level => {
            let level = if thinking {
                let effort = request.effort.clone().unwrap_or_else(|| {
                    super::effort_for_budget(request.thinking_budget).to_string()
                });
                thinking_level(&effort, &request.model)
            } else {
                // Gemini 3 cannot turn thinking off; LOW is the least every model takes.
                "LOW"
            };
            Some(json!({"thinkingLevel": level, "includeThoughts": thinking}))
        }
        ThinkingKnob::None => None,
    };
    let mut generation_config = json!({"maxOutputTokens": max_tokens});
    if let Some(config) = thinking_config {
        generation_config["thinkingConfig"] = config;
    }
    body["generationConfig"] = generation_config;
    body
}

/// Google's rule: 429, 500, 503 and 504 are worth another try; 400, 403 and
/// 404 never change on their own.
fn should_retry(status: u16) -> bool {
    matches!(status, 429 | 500 | 503 | 504)
}

/// A protobuf `Duration` in JSON: `"2s"`, `"0.5s"`, `"1.234567s"`.
fn parse_proto_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The parts of a Google error envelope `{"error":{code,message,status,details}}`.
#[derive(Debug, Default)]
struct ErrorBody {
    status: String,
    message: String,
    retry_delay: Option<Duration>,
    key_invalid: bool,
}

/// Reads an error body. Streaming endpoints may wrap the envelope in an array.
fn parse_error_body(text: &str) -> ErrorBody {
    let value: Value = match serde_json::from_str(text) {
        Ok(Value::Array(items)) => items.into_iter().next().unwrap_or(Value::Null),
        Ok(v) => v,
        Err(_) => Value::Null,
    };
    let e = &value["error"];
    if !e.is_object() {
        return ErrorBody {
            status: "UNKNOWN".into(),
            message: crate::support::msg::preview(text, 300),
            ..ErrorBody::default()
        };
    }
    let details = e["details"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let kind = |d: &Value, name: &str| d["@type"].as_str().is_some_and(|t| t.ends_with(name));
    ErrorBody {
        status: e["status"].as_str().unwrap_or("UNKNOWN").to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| crate::support::msg::preview(text, 300)),
        retry_delay: details
            .iter()
            .find(|d| kind(d, "google.rpc.RetryInfo"))
            .and_then(|d| d["retryDelay"].as_str())
            .and_then(parse_proto_duration),
        key_invalid: details.iter().any(|d| {
            kind(d, "google.rpc.ErrorInfo")
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("API_KEY"))
        }),
    }
}

/// An API error whose message names the provider and what to fix.
fn api_error(status: u16, error: ErrorBody) -> LlmError {
    // A bad key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
    let about_key = error.key_invalid || error.message.to_ascii_lowercase().contains("api key");
    let hint = match status {
        401 | 403 => Some("check GEMINI_API_KEY"),
        400 if about_key => Some("check GEMINI_API_KEY"),
        404 => Some("check the model id and GEMINI_BASE_URL"),
        400 => Some("check the model id and the thinking settings"),
        _ => None,
    };
    let message = match hint {
        Some(hint) => format!(
            "{PROVIDER}: {}; {hint}",
            error.message.trim_end().trim_end_matches('.')
        ),
        None => format!("{PROVIDER}: {}", error.message),
    };
    LlmError::Api {
        status,
        kind: error.status,
        message,
        request_id: None,
    }
}

fn connection_error(e: &reqwest::Error) -> LlmError {
    LlmError::Connection(format!(
        "{PROVIDER}: {} (check GEMINI_BASE_URL)",
        describe_reqwest(e)
    ))
}

/// `usageMetadata` → [`Usage`]: the prompt count includes cached tokens, and
/// thoughts are billed as output.
fn usage_from(v: &Value) -> Usage {
    let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = get("cachedContentTokenCount");
    Usage {
        input_tokens: get("promptTokenCount").saturating_sub(cached),
        output_tokens: get("candidatesTokenCount") + get("thoughtsTokenCount"),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

/// Builds the answer from the stream's chunks (each one a whole
/// `GenerateContentResponse`).
#[derive(Default)]
struct Accumulator {
    text: String,
    thinking: String,
    usage: Usage,
    model: String,
    finish_reason: Option<String>,
    block_reason: Option<String>,
    response_id: Option<String>,
}

impl Accumulator {
    fn apply_event(&mut self, event: &sse::Event) -> Result<(), Failure> {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            self.interrupted(LlmError::Malformed(format!(
                "{PROVIDER}: bad SSE data: {e}"
            )))
        })?;
        self.apply(&chunk)
    }

    fn apply(&mut self, chunk: &Value) -> Result<(), Failure> {
        if chunk["error"].is_object() {
            // An error after the 200 (e.g. the backend overloaded mid-stream).
            let body = parse_error_body(&chunk.to_string());
            let status = chunk["error"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let retry_after = body.retry_delay.and_then(within_limit);
            let mut failure = self.interrupted(api_error(status, body));
            failure.retry &= should_retry(status);
            failure.retry_after = retry_after;
            return Err(failure);
        }
        if let Some(v) = chunk["modelVersion"].as_str() {
            self.model = v.to_string();
        }
        if self.response_id.is_none() {
            self.response_id = chunk["responseId"].as_str().map(str::to_string);
        }
        if let Some(reason) = chunk["promptFeedback"]["blockReason"].as_str() {
            self.block_reason = Some(reason.to_string());
        }
        if let Some(meta) = chunk.get("usageMetadata").filter(|m| m.is_object()) {
            // Every chunk repeats the running totals; the last one is final.
            self.usage = usage_from(meta);
        }
        let candidate = &chunk["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(text) = part["text"].as_str() else {
                continue;
            };
            if part["thought"].as_bool() == Some(true) {
                self.thinking.push_str(text);
            } else {
                self.text.push_str(text);
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(())
    }

    /// A stream that broke: retry only if nothing was emitted yet.
    fn interrupted(&self, error: LlmError) -> Failure {
        let emitted = !self.text.is_empty() || !self.thinking.is_empty();
        Failure {
            error,
            retry: !emitted,
            retry_after: None,
        }
    }

    /// The answer, or why there is none: a blocked prompt or candidate, or a
    /// model that spent its whole output on thinking, is an error with the
    /// reason rather than an empty text.
    fn finish(self) -> Result<ModelResponse, Failure> {
        if let Some(reason) = &self.block_reason {
            return Err(Failure::fatal(LlmError::Protocol(format!(
                "{PROVIDER}: the prompt was blocked (blockReason {reason}); no answer was generated"
            ))));
        }
        let Some(reason) = self.finish_reason.clone() else {
            return Err(self.interrupted(LlmError::Connection(format!(
                "{PROVIDER}: the stream ended before a finishReason"
            ))));
        };
        if self.text.trim().is_empty() {
            match reason.as_str() {
                "STOP" => {}
                "MAX_TOKENS" => {
                    return Err(Failure::fatal(LlmError::Protocol(format!(
                        "{PROVIDER}: the model spent its output tokens ({}) on thinking and returned no answer (finishReason MAX_TOKENS); raise the max tokens or lower the thinking budget",
                        self.usage.output_tokens
                    ))));
                }
                other => {
                    return Err(Failure::fatal(LlmError::Protocol(format!(
                        "{PROVIDER}: no answer: the candidate was stopped (finishReason {other})"
                    ))));
                }
            }
        }
        Ok(ModelResponse {
            text: self.text,
            thinking: (!self.thinking.is_empty()).then_some(self.thinking),
            usage: self.usage,
            model: self.model,
            stop_reason: Some(reason),
            request_id: self.response_id,
            attempts: 1,
            provider: PROVIDER.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> ModelRequest {
        crate::llm::test_request(model)
    }

    #[test]
    fn thinking_is_a_budget_on_2_5_and_a_level_on_3() {
        let body = build_body(&request("gemini-2.5-flash"));
        let config = &body["generationConfig"]["thinkingConfig"];
        assert_eq!(config["thinkingBudget"], 10000);
        assert!(config.get("thinkingLevel").is_none());
        assert_eq!(config["includeThoughts"], true);
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(body["contents"][0]["parts"][1]["text"], "msg");

        let body = build_body(&request("gemini-3.5-flash"));
        let config = &body["generationConfig"]["thinkingConfig"];
        assert_eq!(config["thinkingLevel"], "HIGH");
        assert!(config.get("thinkingBudget").is_none());

        let mut r = request("gemini-3.1-pro-preview");
        r.effort = Some("medium".into());
        let body = build_body(&r);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingLevel"],
            "HIGH"
        );
        r.model = "gemini-3.5-flash".into();
        let body = build_body(&r);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingLevel"],
            "MEDIUM"
        );

        let body = build_body(&request("gemini-2.0-flash"));
        assert!(body["generationConfig"].get("thinkingConfig").is_none());
    }

    #[test]
    fn disabled_thinking_and_budget_bounds() {
        let mut r = request("gemini-2.5-flash");
        r.thinking = ThinkingMode::Disabled;
        let body = build_body(&r);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            0
        );
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["includeThoughts"],
            false
        );
        r.model = "gemini-2.5-pro".into();
        let body = build_body(&r);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            128
        );
        let mut r = request("gemini-2.5-flash");
        r.thinking_budget = 100_000;
        r.max_tokens = 1000;
        let body = build_body(&r);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            24_576
        );
        assert!(
            body["generationConfig"]["maxOutputTokens"]
                .as_u64()
                .unwrap_or(0)
                > 24_576
        );
    }

    #[test]
    fn generations() {
        assert_eq!(generation("gemini-2.5-flash"), Some((2, 5)));
        assert_eq!(generation("models/gemini-3.1-pro-preview"), Some((3, 1)));
        assert_eq!(generation("gemini-3-pro"), Some((3, 0)));
        assert_eq!(generation("gemma-3"), None);
    }

    #[test]
    fn urls_do_not_double_the_version() {
        let g = Gemini::new(Some("k".into()), "http://h/").expect("client");
        assert_eq!(
            g.url("gemini-2.5-flash").expect("url"),
            "http://h/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let g = Gemini::new(Some("k".into()), "http://h/v1beta").expect("client");
        assert_eq!(
            g.url("models/gemini-2.5-flash").expect("url"),
            "http://h/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(g.url("a/../b").is_err());
    }

    #[test]
    fn errors_and_retry_delays() {
        let body = r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}"#;
        let e = parse_error_body(body);
        assert_eq!(e.status, "RESOURCE_EXHAUSTED");
        assert_eq!(e.retry_delay, Some(Duration::from_secs(2)));
        let wrapped = format!("[{body}]");
        assert_eq!(
            parse_error_body(&wrapped).retry_delay,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert!(should_retry(429) && should_retry(503) && should_retry(504));
        assert!(!should_retry(400) && !should_retry(403) && !should_retry(404));
        let denied = ErrorBody {
            status: "PERMISSION_DENIED".into(),
            message: "denied".into(),
            ..ErrorBody::default()
        };
        let text = api_error(403, denied).to_string();
        assert!(
            text.contains("gemini") && text.contains("GEMINI_API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn usage_splits_cached_tokens_and_counts_thoughts_as_output() {
        let u = usage_from(
            &json!({"promptTokenCount": 5000, "cachedContentTokenCount": 4000,
            "candidatesTokenCount": 120, "thoughtsTokenCount": 300, "totalTokenCount": 5420}),
        );
        assert_eq!(u.input_tokens, 1000);
        assert_eq!(u.cache_read_input_tokens, 4000);
        assert_eq!(u.output_tokens, 420);
    }

    #[test]
    fn blocked_and_truncated_answers_are_errors_with_the_reason() {
        let mut acc = Accumulator::default();
        assert!(
            acc.apply(&json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]}))
                .is_ok()
        );
        let Err(failure) = acc.finish() else {
            panic!("a SAFETY stop with no text is an error");
        };
        assert!(failure.error.to_string().contains("SAFETY"));
        let mut acc = Accumulator::default();
        let _ = acc.apply(&json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}));
        let Err(failure) = acc.finish() else {
            panic!("a blocked prompt is an error");
        };
        assert!(failure.error.to_string().contains("PROHIBITED_CONTENT"));
        let mut acc = Accumulator::default();
        let _ = acc.apply(&json!({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": true}]}, "finishReason": "MAX_TOKENS"}]}));
        let Err(failure) = acc.finish() else {
            panic!("thinking only is an error");
        };
        assert!(failure.error.to_string().contains("MAX_TOKENS"));
    }
}

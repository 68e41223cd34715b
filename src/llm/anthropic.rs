//! The Anthropic Messages API: streamed calls with extended thinking, and the
//! official SDKs' retry policy (429, 5xx, 529, `retry-after`, `x-should-retry`).

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::http::{self, Failure, describe_reqwest, header, retry_after};
use super::{
    LlmError, ModelRequest, ModelResponse, ProgressFn, PromptBlock, ThinkingMode, Usage, sse,
};

/// The pinned API version (new SDK majors switch versions silently).
const API_VERSION: &str = "2026-10-21";

/// A Messages API client.
#[derive(Debug, Clone)]
pub struct Anthropic {
    endpoint: http::Endpoint,
}

impl Anthropic {
    /// A client for `base_url` (e.g. `https://api.anthropic.com`).
    pub fn new(api_key: Option<String>, base_url: &str) -> anyhow::Result<Self> {
        Ok(Anthropic {
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
                "ANTHROPIC_API_KEY is not set (export it, or use --provider replay:FILE for recorded replies)".into(),
            ));
        };
        // The thinking mode is chosen per model; a model that takes only the
        // other mode answers 400, and the next attempt switches (once).
        let mode = std::sync::Mutex::new((request.thinking.for_model(&request.model), false));
        http::with_retries(request.timeout, request.max_retries, |n| {
            let current = mode.lock().map(|m| m.0).unwrap_or(ThinkingMode::Adaptive);
            let mode = &mode;
            async move {
                let body = build_body(request, current);
                match self.attempt(api_key, &body, n, progress).await {
                    Err(Failure { error: LlmError::Api { status: 400, message, kind, request_id }, .. }) => {
                        let mut state = mode.lock().map_err(|_| Failure::fatal(LlmError::Protocol("poisoned lock".into())))?;
                        match other_thinking_mode(&message, current).filter(|_| !state.1) {
                            Some(other) => {
                                tracing::warn!("model {} rejected thinking mode {current:?}; switching to {other:?}", request.model);
                                *state = (other, true);
                                Err(Failure::retry(LlmError::Api { status: 400, message, kind, request_id }, Some(std::time::Duration::from_millis(1))))
                            }
                            None => Err(Failure::fatal(LlmError::Api { status: 400, message, kind, request_id })),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn attempt(
        &self,
        api_key: &str,
        body: &Value,
        attempt: u32,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, Failure> {
        let url = format!("{}/v1/messages", self.endpoint.base_url);
        let response = self
            .endpoint
            .http
            .post(&url)
            .header("x-api-key", api_key)
            .header("anthropic-version", API_VERSION)
            .header("content-type", "application/json")
            .header("x-stainless-retry-count", (attempt - 1).to_string())
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::retry(LlmError::Connection(describe_reqwest(&e)), None))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let request_id = header(&headers, "request-id");
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            let (kind, message, code) = parse_error_body(&text);
            let error = LlmError::Api {
                status,
                kind,
                message,
                request_id: request_id.clone(),
            };
            tracing::debug!(
                "attempt {attempt}: HTTP {status}, request-id {:?}",
                request_id
            );
            let retry = should_retry(status, &headers, code.as_deref());
            return Err(Failure {
                error,
                retry,
                retry_after: retry_after(&headers),
            });
        }
        let is_stream =
            header(&headers, "content-type").is_some_and(|c| c.contains("text/event-stream"));
        if !is_stream {
            let text = response
                .text()
                .await
                .map_err(|e| Failure::retry(LlmError::Connection(describe_reqwest(&e)), None))?;
            let message: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(LlmError::Malformed(format!("response is not JSON: {e}")))
            })?;
            return Ok(from_message(&message, request_id));
        }
        let mut acc = Accumulator {
            request_id,
            ..Accumulator::default()
        };
        let mut parser = sse::Parser::default();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk =
                chunk.map_err(|e| acc.interrupted(LlmError::Connection(describe_reqwest(&e))))?;
            let events = parser
                .feed(&chunk)
                .map_err(|e| acc.interrupted(LlmError::Malformed(e.to_string())))?;
            for event in events {
                acc.apply(&event)?;
                if let Some(report) = progress {
                    report(acc.text.len() + acc.thinking.len());
                }
            }
            if acc.stopped {
                break;
            }
        }
        if let Some(event) = parser.finish() {
            acc.apply(&event)?;
        }
        if !acc.stopped {
            return Err(acc.interrupted(LlmError::Connection(
                "stream ended before message_stop".into(),
            )));
        }
        Ok(acc.finish())
    }
}

/// The request body: no sampling parameters, thinking per model, cache markers
/// after the blocks that ask for them.
fn build_body(request: &ModelRequest, mode: ThinkingMode) -> Value {
    let blocks = |list: &[PromptBlock]| -> Vec<Value> {
        list.iter()
            .map(|b| {
                let mut block = json!({"type": "text", "text": b.text});
                if b.cache {
                    block["cache_control"] = json!({"type": "ephemeral"});
                }
                block
            })
            .collect()
    };
    let mut max_tokens = request.max_tokens;
    let mut body = json!({
        "model": request.model,
        "stream": true,
        "messages": [{"role": "user", "content": blocks(&request.user)}],
    });
    if !request.system.is_empty() {
        body["system"] = Value::Array(blocks(&request.system));
    }
    match mode {
        ThinkingMode::Enabled => {
            // 1024 ≤ budget < max_tokens, never clamped by the API: fix it here.
            let budget = request.thinking_budget.max(1024);
            max_tokens = max_tokens.max(budget + 2048);
            body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        }
        ThinkingMode::Adaptive | ThinkingMode::Auto => {
            let effort = request
                .effort
                .clone()
                .unwrap_or_else(|| super::effort_for_budget(request.thinking_budget).to_string());
            body["thinking"] = json!({"type": "adaptive", "display": "summarized"});
            body["output_config"] = json!({"effort": effort});
        }
        ThinkingMode::Disabled => {}
    }
    body["max_tokens"] = json!(max_tokens);
    body
}

/// The other thinking mode, if a 400 says the model rejects this one.
fn other_thinking_mode(message: &str, mode: ThinkingMode) -> Option<ThinkingMode> {
    let m = message.to_ascii_lowercase();
    if mode == ThinkingMode::Enabled && m.contains("thinking.type.enabled") {
        Some(ThinkingMode::Adaptive)
    } else if mode == ThinkingMode::Adaptive
        && m.contains("adaptive")
        && m.contains("not supported")
    {
        Some(ThinkingMode::Enabled)
    } else {
        None
    }
}

/// The SDK rule: `x-should-retry` wins; else 408, 409, 429 and every 5xx. A
/// reached spend limit is never retried.
fn should_retry(status: u16, headers: &reqwest::header::HeaderMap, code: Option<&str>) -> bool {
    if code == Some("enforced_spend_limit_reached") {
        return false;
    }
    match header(headers, "x-should-retry").as_deref() {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// (error.type, error.message, error.details.error_code) of an error body.
fn parse_error_body(text: &str) -> (String, String, Option<String>) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let e = &v["error"];
            (
                e["type"].as_str().unwrap_or("unknown_error").to_string(),
                e["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| crate::support::msg::preview(text, 300)),
                e["details"]["error_code"].as_str().map(str::to_string),
            )
        }
        Err(_) => (
            "unknown_error".into(),
            crate::support::msg::preview(text, 300),
            None,
        ),
    }
}

fn usage_from(v: &Value, usage: &mut Usage) {
    let get = |k: &str| v.get(k).and_then(Value::as_u64);
    if let Some(n) = get("input_tokens") {
        usage.input_tokens = n;
    }
    if let Some(n) = get("output_tokens") {
        usage.output_tokens = n;
    }
    if let Some(n) = get("cache_creation_input_tokens") {
        usage.cache_creation_input_tokens = n;
    }
    if let Some(n) = get("cache_read_input_tokens") {
        usage.cache_read_input_tokens = n;
    }
}

/// A whole (non-streamed) message.
fn from_message(message: &Value, request_id: Option<String>) -> ModelResponse {
    let mut text = String::new();
    let mut thinking = String::new();
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("thinking") => thinking.push_str(block["thinking"].as_str().unwrap_or("")),
            _ => {}
        }
    }
    let mut usage = Usage::default();
    usage_from(&message["usage"], &mut usage);
    ModelResponse {
        text,
        thinking: (!thinking.is_empty()).then_some(thinking),
        usage,
        model: message["model"].as_str().unwrap_or("").to_string(),
        stop_reason: message["stop_reason"].as_str().map(str::to_string),
        request_id,
        attempts: 1,
        provider: "anthropic".into(),
    }
}

/// Builds the final message from stream events.
#[derive(Default)]
struct Accumulator {
    text: String,
    thinking: String,
    usage: Usage,
    model: String,
    stop_reason: Option<String>,
    request_id: Option<String>,
    block_types: Vec<String>,
    stopped: bool,
}

impl Accumulator {
    fn apply(&mut self, event: &sse::Event) -> Result<(), Failure> {
        if event.name == "ping" || event.data.is_empty() {
            return Ok(());
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            self.interrupted(LlmError::Malformed(format!(
                "bad SSE data in {}: {e}",
                event.name
            )))
        })?;
        match data["type"].as_str().unwrap_or(event.name.as_str()) {
            "message_start" => {
                self.model = data["message"]["model"].as_str().unwrap_or("").to_string();
                usage_from(&data["message"]["usage"], &mut self.usage);
            }
            "content_block_start" => {
                let kind = data["content_block"]["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if kind == "text"
                    && let Some(t) = data["content_block"]["text"].as_str()
                {
                    self.text.push_str(t);
                }
                self.block_types.push(kind);
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => self.text.push_str(delta["text"].as_str().unwrap_or("")),
                    Some("thinking_delta") => self
                        .thinking
                        .push_str(delta["thinking"].as_str().unwrap_or("")),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                usage_from(&data["usage"], &mut self.usage);
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let kind = data["error"]["type"]
                    .as_str()
                    .unwrap_or("api_error")
                    .to_string();
                let message = data["error"]["message"]
                    .as_str()
                    .unwrap_or("error event in stream")
                    .to_string();
                let status = if kind == "overloaded_error" { 529 } else { 500 };
                let error = LlmError::Api {
                    status,
                    kind,
                    message,
                    request_id: self.request_id.clone(),
                };
                return Err(self.interrupted(error));
            }
            _ => {}
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

    fn finish(self) -> ModelResponse {
        ModelResponse {
            text: self.text,
            thinking: (!self.thinking.is_empty()).then_some(self.thinking),
            usage: self.usage,
            model: self.model,
            stop_reason: self.stop_reason,
            request_id: self.request_id,
            attempts: 1,
            provider: "anthropic".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> ModelRequest {
        crate::llm::test_request(model)
    }

    #[test]
    fn body_has_no_sampling_and_right_thinking() {
        let r = request("claude-opus-4-5-20251101");
        let body = build_body(&r, r.thinking.for_model(&r.model));
        assert_eq!(body["thinking"]["type"], "enabled");
        assert_eq!(body["thinking"]["budget_tokens"], 10000);
        assert!(body.get("temperature").is_none());
        let r = request("claude-opus-5-5");
        let body = build_body(&r, r.thinking.for_model(&r.model));
        assert_eq!(body["thinking"]["type"], "adaptive");
        assert_eq!(body["output_config"]["effort"], "high");
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert!(
            body["messages"][0]["content"][1]
                .get("cache_control")
                .is_none()
        );
    }

    #[test]
    fn budget_is_kept_below_max_tokens() {
        let mut r = request("claude-opus-4-5-20251101");
        r.max_tokens = 4000;
        r.thinking_budget = 500;
        let body = build_body(&r, ThinkingMode::Enabled);
        assert_eq!(body["thinking"]["budget_tokens"], 1024);
        assert!(body["max_tokens"].as_u64().unwrap_or(0) > 1024);
    }

    #[test]
    fn retry_policy() {
        let empty = reqwest::header::HeaderMap::new();
        assert!(should_retry(429, &empty, None));
        assert!(should_retry(529, &empty, None));
        assert!(!should_retry(400, &empty, None));
        assert!(!should_retry(
            429,
            &empty,
            Some("enforced_spend_limit_reached")
        ));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-should-retry",
            reqwest::header::HeaderValue::from_static("false"),
        );
        assert!(!should_retry(500, &h, None));
    }
}

//! OpenAI-compatible chat completions (`POST {base}/v1/chat/completions`) at any
//! base URL: OpenAI, Ollama, vLLM, OpenRouter. Streamed, with `reasoning_effort`
//! when thinking is on, reasoning read from either field servers use, and the
//! SDK retry policy (408, 409, 429 with `retry-after`, 5xx).

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::http::{self, Failure, describe_reqwest, header, retry_after};
use super::{
    LlmError, ModelRequest, ModelResponse, ProgressFn, PromptBlock, ThinkingMode, Usage, sse,
};

/// The provider name in responses, logs and error messages.
const PROVIDER: &str = "openai";

/// A chat-completions client.
#[derive(Debug, Clone)]
pub struct OpenAi {
    endpoint: http::Endpoint,
}

impl OpenAi {
    /// A client for `base_url` (e.g. `https://api.openai.com` or
    /// `http://localhost:11434/v1`). The key is optional: local servers need none.
    pub fn new(api_key: Option<String>, base_url: &str) -> anyhow::Result<Self> {
        Ok(OpenAi {
            endpoint: http::Endpoint::new(api_key.filter(|k| !k.trim().is_empty()), base_url)?,
        })
    }

    /// Whether a key is configured (local servers need none).
    pub fn has_key(&self) -> bool {
        self.endpoint.has_key()
    }

    /// `{base}/v1/chat/completions`, without doubling a `/v1` the base already has.
    fn url(&self) -> String {
        if self.endpoint.base_url.ends_with("/v1") {
            format!("{}/chat/completions", self.endpoint.base_url)
        } else {
            format!("{}/v1/chat/completions", self.endpoint.base_url)
        }
    }

    /// Sends the request with retries until it succeeds, fails for good, or the deadline passes.
    pub async fn complete(
        &self,
        request: &ModelRequest,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, LlmError> {
        let url = self.url();
        let body = build_body(request);
        http::with_retries(request.timeout, request.max_retries, |n| {
            self.attempt(&url, &body, request, n, progress)
        })
        .await
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        request: &ModelRequest,
        attempt: u32,
        progress: Option<&ProgressFn>,
    ) -> Result<ModelResponse, Failure> {
        let mut builder = self
            .endpoint
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-stainless-retry-count", (attempt - 1).to_string());
        if let Some(key) = &self.endpoint.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::retry(connection_error(&e), None))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let request_id = header(&headers, "x-request-id");
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            let error = parse_error_body(&text);
            tracing::debug!(
                "attempt {attempt}: HTTP {status}, request-id {:?}",
                request_id
            );
            let retry = should_retry(status, &headers, error.code.as_deref());
            return Err(Failure {
                error: self.api_error(status, error, request_id),
                retry,
                retry_after: retry_after(&headers),
            });
        }
        let mut acc = Accumulator {
            model: request.model.clone(),
            max_tokens: request.max_tokens,
            request_id,
            ..Accumulator::default()
        };
        let is_stream =
            header(&headers, "content-type").is_some_and(|c| c.contains("text/event-stream"));
        if !is_stream {
            // A server that ignores `stream` answers with one completion object.
            let text = response
                .text()
                .await
                .map_err(|e| Failure::retry(connection_error(&e), None))?;
            let completion: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(LlmError::Malformed(format!(
                    "{PROVIDER}: response is not JSON: {e}"
                )))
            })?;
            acc.apply_completion(&completion)?;
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
                acc.apply_event(&event, self)?;
                if let Some(report) = progress {
                    report(acc.text.len() + acc.thinking.len());
                }
            }
            if acc.done {
                break;
            }
        }
        if let Some(event) = parser.finish() {
            acc.apply_event(&event, self)?;
        }
        if !acc.done && acc.finish_reason.is_none() {
            return Err(acc.interrupted(LlmError::Connection(format!(
                "{PROVIDER}: the stream ended before [DONE]"
            ))));
        }
        acc.finish()
    }

    /// An API error whose message names the provider and the setting to fix.
    fn api_error(&self, status: u16, error: ErrorBody, request_id: Option<String>) -> LlmError {
        let hint = match status {
            401 | 403 if self.endpoint.api_key.is_none() => {
                Some("OPENAI_API_KEY is not set and this server needs one")
            }
            401 | 403 => Some("check OPENAI_API_KEY"),
            404 => Some("check OPENAI_BASE_URL and the model id"),
            400 | 422 => Some("check the model id and the thinking settings"),
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
            kind: error.kind,
            message,
            request_id,
        }
    }
}

/// `reasoning_effort` for an effort or budget: the chat API takes low, medium
/// and high (plus `minimal`/`none` on some servers); the higher adaptive
/// levels fold into high.
fn reasoning_effort(request: &ModelRequest) -> String {
    let effort = request
        .effort
        .clone()
        .unwrap_or_else(|| super::effort_for_budget(request.thinking_budget).to_string());
    match effort.trim().to_ascii_lowercase().as_str() {
        "xhigh" | "max" => "high".into(),
        other => other.to_string(),
    }
}

/// Prompt blocks as one message string: the chat API has no cache markers,
/// and plain strings are what every compatible server accepts.
fn joined(blocks: &[PromptBlock]) -> String {
    blocks
        .iter()
        .map(|b| b.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The request body: system and user messages, streaming with usage, and
/// `reasoning_effort` only when thinking is wanted.
fn build_body(request: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": joined(&request.system)}));
    }
    messages.push(json!({"role": "user", "content": joined(&request.user)}));
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens.max(1),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if request.thinking != ThinkingMode::Disabled {
        body["reasoning_effort"] = json!(reasoning_effort(request));
    }
    body
}

/// The SDK rule: `x-should-retry` wins; else 408, 409, 429 and every 5xx. An
/// exhausted quota is a billing state, not a rate limit, so it is not retried.
fn should_retry(status: u16, headers: &reqwest::header::HeaderMap, code: Option<&str>) -> bool {
    if code == Some("insufficient_quota") {
        return false;
    }
    match header(headers, "x-should-retry").as_deref() {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// The parts of an error body.
#[derive(Debug, Default)]
struct ErrorBody {
    kind: String,
    message: String,
    code: Option<String>,
}

/// Reads `{"error":{message,type,code}}`; Ollama and some proxies send
/// `{"error":"text"}` instead.
fn parse_error_body(text: &str) -> ErrorBody {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let e = &value["error"];
    if let Some(message) = e.as_str() {
        return ErrorBody {
            kind: "error".into(),
            message: message.to_string(),
            code: None,
        };
    }
    if !e.is_object() {
        return ErrorBody {
            kind: "unknown_error".into(),
            message: crate::support::msg::preview(text, 300),
            code: None,
        };
    }
    let code = match &e["code"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    ErrorBody {
        kind: e["type"]
            .as_str()
            .or(code.as_deref())
            .unwrap_or("api_error")
            .to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| crate::support::msg::preview(text, 300)),
        code,
    }
}

fn connection_error(e: &reqwest::Error) -> LlmError {
    LlmError::Connection(format!(
        "{PROVIDER}: {} (check OPENAI_BASE_URL)",
        describe_reqwest(e)
    ))
}

/// `usage` → [`Usage`]: `prompt_tokens` includes the cached ones.
fn usage_from(v: &Value) -> Usage {
    let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = v["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    Usage {
        input_tokens: get("prompt_tokens").saturating_sub(cached),
        output_tokens: get("completion_tokens"),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

/// The reasoning text of a message or delta: `reasoning` (Ollama, vLLM,
/// OpenRouter) or the older `reasoning_content`. Servers that send both send
/// the same text, so only one is taken.
fn reasoning_of(v: &Value) -> Option<&str> {
    v["reasoning"]
        .as_str()
        .or_else(|| v["reasoning_content"].as_str())
}

/// Builds the answer from stream chunks (or one completion).
#[derive(Default)]
struct Accumulator {
    text: String,
    thinking: String,
    usage: Usage,
    model: String,
    max_tokens: u32,
    finish_reason: Option<String>,
    request_id: Option<String>,
    done: bool,
}

impl Accumulator {
    fn apply_event(&mut self, event: &sse::Event, client: &OpenAi) -> Result<(), Failure> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            self.interrupted(LlmError::Malformed(format!(
                "{PROVIDER}: bad SSE data: {e}"
            )))
        })?;
        if !chunk["error"].is_null() {
            // vLLM and OpenRouter report a failure after the 200 as a data chunk.
            let error = parse_error_body(&chunk.to_string());
            let status = error
                .code
                .as_deref()
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|s| (400..600).contains(s))
                .unwrap_or(500);
            let mut failure =
                self.interrupted(client.api_error(status, error, self.request_id.clone()));
            failure.retry &= matches!(status, 408 | 409 | 429) || status >= 500;
            return Err(failure);
        }
        self.apply_common(&chunk);
        if let Some(choice) = chunk["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                self.text.push_str(t);
            }
            if let Some(t) = reasoning_of(delta) {
                self.thinking.push_str(t);
            }
            if let Some(r) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(r.to_string());
            }
        }
        Ok(())
    }

    /// A whole (non-streamed) completion.
    fn apply_completion(&mut self, completion: &Value) -> Result<(), Failure> {
        self.apply_common(completion);
        let Some(choice) = completion["choices"].get(0) else {
            return Err(Failure::fatal(LlmError::Malformed(format!(
                "{PROVIDER}: the completion has no choices"
            ))));
        };
        let message = &choice["message"];
        self.text = message["content"].as_str().unwrap_or("").to_string();
        self.thinking = reasoning_of(message).unwrap_or("").to_string();
        self.finish_reason = choice["finish_reason"].as_str().map(str::to_string);
        self.done = true;
        Ok(())
    }

    /// Fields every chunk may carry: the model, the id, and (last) the usage.
    fn apply_common(&mut self, chunk: &Value) {
        if let Some(m) = chunk["model"].as_str().filter(|m| !m.is_empty()) {
            self.model = m.to_string();
        }
        if self.request_id.is_none() {
            self.request_id = chunk["id"].as_str().map(str::to_string);
        }
        if chunk["usage"].is_object() {
            self.usage = usage_from(&chunk["usage"]);
        }
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

    /// The answer, or why there is none: a thinking model that spent every
    /// token on reasoning, or a filtered answer, is an error with the reason.
    fn finish(self) -> Result<ModelResponse, Failure> {
        if self.text.trim().is_empty() {
            match self.finish_reason.as_deref() {
                Some("length") => {
                    return Err(Failure::fatal(LlmError::Protocol(format!(
                        "{PROVIDER}: the model spent all {} max_tokens{} and returned no answer (finish_reason length); raise the max tokens or lower the effort",
                        self.max_tokens,
                        if self.thinking.is_empty() {
                            ""
                        } else {
                            " on reasoning"
                        }
                    ))));
                }
                Some("content_filter") => {
                    return Err(Failure::fatal(LlmError::Protocol(format!(
                        "{PROVIDER}: no answer: it was filtered (finish_reason content_filter)"
                    ))));
                }
                _ => {}
            }
        }
        Ok(ModelResponse {
            text: self.text,
            thinking: (!self.thinking.is_empty()).then_some(self.thinking),
            usage: self.usage,
            model: self.model,
            stop_reason: self.finish_reason,
            request_id: self.request_id,
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
    fn body_streams_with_usage_and_effort_only_when_thinking() {
        let body = build_body(&request("gpt-oss:20b"));
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "ctx\n\nmsg");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 16000);
        assert_eq!(body["reasoning_effort"], "high");
        let mut r = request("gpt-oss:20b");
        r.effort = Some("max".into());
        assert_eq!(build_body(&r)["reasoning_effort"], "high");
        r.effort = Some("low".into());
        assert_eq!(build_body(&r)["reasoning_effort"], "low");
        r.thinking = ThinkingMode::Disabled;
        assert!(build_body(&r).get("reasoning_effort").is_none());
        r.system.clear();
        assert_eq!(build_body(&r)["messages"][0]["role"], "user");
    }

    #[test]
    fn urls_do_not_double_v1() {
        let c = OpenAi::new(None, "http://localhost:11434/v1/").expect("client");
        assert_eq!(c.url(), "http://localhost:11434/v1/chat/completions");
        let c = OpenAi::new(Some(String::new()), "https://api.openai.com").expect("client");
        assert_eq!(c.url(), "https://api.openai.com/v1/chat/completions");
        assert!(!c.has_key(), "an empty key is no key");
    }

    #[test]
    fn retry_policy_and_errors() {
        let empty = reqwest::header::HeaderMap::new();
        for status in [408, 409, 429, 500, 502, 503] {
            assert!(should_retry(status, &empty, None), "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!should_retry(status, &empty, None), "{status}");
        }
        assert!(!should_retry(429, &empty, Some("insufficient_quota")));
        let e = parse_error_body(
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("invalid_api_key"));
        let c = OpenAi::new(Some("k".into()), "http://h").expect("client");
        let text = c.api_error(401, e, None).to_string();
        assert!(
            text.contains("openai") && text.contains("OPENAI_API_KEY"),
            "{text}"
        );
        assert_eq!(
            parse_error_body(r#"{"error":"model \"x\" not found"}"#).message,
            "model \"x\" not found"
        );
    }

    #[test]
    fn usage_and_reasoning_fields() {
        let u = usage_from(&json!({"prompt_tokens": 5000, "completion_tokens": 200,
            "prompt_tokens_details": {"cached_tokens": 3000}}));
        assert_eq!(
            (u.input_tokens, u.cache_read_input_tokens, u.output_tokens),
            (2000, 3000, 200)
        );
        assert_eq!(reasoning_of(&json!({"reasoning_content": "r"})), Some("r"));
        assert_eq!(
            reasoning_of(&json!({"reasoning": "a", "reasoning_content": "a"})),
            Some("a")
        );
    }

    #[test]
    fn empty_content_at_the_length_limit_is_its_own_error() {
        let acc = Accumulator {
            thinking: "so much thinking".into(),
            finish_reason: Some("length".into()),
            max_tokens: 512,
            ..Accumulator::default()
        };
        let Err(failure) = acc.finish() else {
            panic!("empty content at the limit is an error");
        };
        assert!(!failure.retry);
        let text = failure.error.to_string();
        assert!(text.contains("512") && text.contains("reasoning"), "{text}");
    }
}

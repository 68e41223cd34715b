//! A strict loopback mock of an OpenAI-compatible chat-completions server (`POST /v1/chat/completions`,
//! JSON and SSE ending in `data: [DONE]`) that rejects what the real servers reject (a wrong bearer
//! key, unknown arguments, `stream_options` without `stream`, an unknown `reasoning_effort`), so tests
//! catch wire-format bugs offline. It can act as OpenAI (a key required) or Ollama (no key).
//!
//! Only the wire format lives here; listening, parsing, writing and recording are `mock_http.rs`.

// Each test uses only part of this API, and the module is private to the test binary.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use serde_json::{Value, json};

pub use super::mock_http::Recorded;
use super::mock_http::{
    BodyError, Mock, Recorder, Request, Response, Step, WireFormat, header, split_text,
};

/// Request arguments the chat-completions API knows; any other is a 400.
const KNOWN_ARGUMENTS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "reasoning_effort",
    "response_format",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "user",
    "n",
];
/// `reasoning_effort` values accepted across OpenAI and Ollama.
const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high"];

/// A running mock; dropping it shuts the server down. `start` requires no key, like Ollama;
/// `start_with_key` requires `Authorization: Bearer <key>`, like OpenAI (`sequence` needs no key).
/// Clients append `/v1/chat/completions` to `base_url()`.
pub type MockOpenAi = Mock<Reply>;

/// The `content` of every message with `role`, joined with newlines.
pub fn text_of_role(req: &Recorded, role: &str) -> String {
    req.body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `prompt_tokens`, cached ones included.
    pub prompt_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// `completion_tokens`, reasoning included.
    pub completion_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// 1000 prompt and 100 completion tokens.
    pub fn typical() -> Self {
        Usage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            ..Usage::default()
        }
    }
}

/// Which field carries reasoning text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningField {
    /// `reasoning` (Ollama, vLLM now, OpenRouter).
    Reasoning,
    /// `reasoning_content` (older vLLM, DeepSeek).
    ReasoningContent,
}

impl ReasoningField {
    fn name(self) -> &'static str {
        match self {
            ReasoningField::Reasoning => "reasoning",
            ReasoningField::ReasoningContent => "reasoning_content",
        }
    }
}

/// What the mock answers to a valid request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A completion: reasoning deltas, then content deltas, then the finish chunk, the usage chunk
    /// (when asked for) and `[DONE]`.
    Answer {
        /// The message content (may be empty).
        content: String,
        /// Reasoning text, if any.
        reasoning: Option<String>,
        /// The field reasoning is sent in.
        field: ReasoningField,
        /// Reported usage.
        usage: Usage,
        /// `stop`, `length`, `content_filter`, ...
        finish_reason: String,
    },
    /// An OpenAI error envelope with extra headers such as `("retry-after", "1")`.
    Error {
        /// HTTP status.
        status: u16,
        /// `error.type`.
        error_type: String,
        /// `error.code`.
        code: Option<String>,
        /// `error.message`.
        message: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Wait, then send the inner reply.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    /// A plain completion that stops normally.
    pub fn text(content: impl Into<String>) -> Self {
        Reply::Answer {
            content: content.into(),
            reasoning: None,
            field: ReasoningField::Reasoning,
            usage: Usage::typical(),
            finish_reason: "stop".into(),
        }
    }

    /// A thinking model that used every token on reasoning: empty content, `finish_reason: length`.
    pub fn reasoning_only(reasoning: &str) -> Self {
        Reply::Answer {
            content: String::new(),
            reasoning: Some(reasoning.into()),
            field: ReasoningField::Reasoning,
            usage: Usage {
                prompt_tokens: 1000,
                completion_tokens: 16000,
                reasoning_tokens: 16000,
                ..Usage::default()
            },
            finish_reason: "length".into(),
        }
    }

    /// 429 with `retry-after`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Reply::Error {
            status: 429,
            error_type: "requests".into(),
            code: Some("rate_limit_exceeded".into()),
            message: "Rate limit reached for requests per min. Please try again later.".into(),
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
        }
    }

    /// An error without extra headers.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Reply::Error {
            status,
            error_type: error_type.into(),
            code: None,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

impl WireFormat for Reply {
    const NAME: &'static str = "mock-openai";

    fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
        answer(recorder, request)
    }
}

/// Why a request was refused before reaching the responder.
struct Rejection {
    status: u16,
    error_type: &'static str,
    code: Option<&'static str>,
    message: String,
}

fn reject(status: u16, error_type: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        error_type,
        code: None,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    reject(400, "invalid_request_error", message)
}

/// Records, validates and answers one request; only valid ones reach the responder.
fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(BodyError::TooLarge) => {
            let rejection = reject(413, "invalid_request_error", "request too large");
            return error_response(&rejection, "req_mock_malformed");
        }
        Err(BodyError::Incomplete) => {
            let rejection = invalid("connection closed before the body was complete");
            return error_response(&rejection, "req_mock_malformed");
        }
    };
    let (request, number) = recorder.record(request);
    let request_id = format!("req_mock_{number}");
    if let Err(rejection) = validate(&request, recorder.key()) {
        return error_response(&rejection, &request_id);
    }
    let mut reply = recorder.respond(&request, |_| {
        Reply::error(500, "server_error", "mock responder panicked")
    });
    let mut delay = Duration::ZERO;
    while let Reply::Delay(pause, inner) = reply {
        delay += pause;
        reply = *inner;
    }
    let model = request.body["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stream = request.body["stream"].as_bool() == Some(true);
    let include_usage = request.body["stream_options"]["include_usage"].as_bool() == Some(true);
    let response = match reply {
        Reply::Answer {
            content,
            reasoning,
            field,
            usage,
            finish_reason,
        } => {
            let answer = Answer {
                id: format!("chatcmpl-mock{number}"),
                model,
                content,
                reasoning,
                field,
                usage,
                finish_reason,
            };
            if stream {
                completion_stream(&answer, include_usage, &request_id)
            } else {
                json_response(200, &answer.completion(), &request_id, &[])
            }
        }
        Reply::Error {
            status,
            error_type,
            code,
            message,
            headers,
        } => {
            let envelope = json!({"error": {"message": message, "type": error_type, "param": null, "code": code}});
            json_response(status, &envelope, &request_id, &headers)
        }
        Reply::Delay(..) => unreachable!("delays are unwrapped above"),
    };
    response.after(delay)
}

/// The checks the real servers make before generating anything.
fn validate(req: &Recorded, key: Option<&str>) -> Result<(), Rejection> {
    if req.path.split('?').next() != Some("/v1/chat/completions") {
        return Err(reject(
            404,
            "invalid_request_error",
            format!("Invalid URL (POST {})", req.path),
        ));
    }
    if req.method != "POST" {
        return Err(reject(405, "invalid_request_error", "Method Not Allowed"));
    }
    let bearer = match req.header("authorization") {
        None => None,
        Some(value) => match value.strip_prefix("Bearer ") {
            Some(token) if !token.trim().is_empty() => Some(token.trim()),
            _ => {
                return Err(reject(
                    401,
                    "invalid_request_error",
                    "Invalid authorization header: expected `Bearer <key>`.",
                ));
            }
        },
    };
    if let Some(key) = key {
        match bearer {
            None => {
                return Err(reject(
                    401,
                    "invalid_request_error",
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                ));
            }
            Some(token) if token != key => {
                let shown: String = token.chars().take(3).collect();
                let mut r = reject(
                    401,
                    "invalid_request_error",
                    format!("Incorrect API key provided: {shown}***."),
                );
                r.code = Some("invalid_api_key");
                return Err(r);
            }
            Some(_) => {}
        }
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return Err(invalid(
            "Unsupported content type: expected application/json",
        ));
    }
    let Value::Object(body) = &req.body else {
        return Err(invalid("We could not parse the JSON body of your request."));
    };
    if let Some(unknown) = body.keys().find(|k| !KNOWN_ARGUMENTS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "Unrecognized request argument supplied: {unknown}"
        )));
    }
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err(invalid("you must provide a model parameter"));
    }
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(invalid("'messages' must be a non-empty array")),
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(invalid(format!(
                "Invalid value for 'messages[{i}].role': {role:?}"
            )));
        }
        if !(message["content"].is_string() || message["content"].is_array()) {
            return Err(invalid(format!(
                "Invalid type for 'messages[{i}].content': expected a string or an array"
            )));
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if body
            .get(field)
            .is_some_and(|v| v.as_u64().is_none_or(|n| n < 1))
        {
            return Err(invalid(format!(
                "Invalid '{field}': expected a positive integer"
            )));
        }
    }
    if body.get("stream").is_some_and(|v| !v.is_boolean()) {
        return Err(invalid("Invalid type for 'stream': expected a boolean"));
    }
    if let Some(options) = body.get("stream_options") {
        if body.get("stream").and_then(Value::as_bool) != Some(true) {
            return Err(invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ));
        }
        if !options["include_usage"].is_boolean() {
            return Err(invalid(
                "Invalid type for 'stream_options.include_usage': expected a boolean",
            ));
        }
    }
    if let Some(effort) = body
        .get("reasoning_effort")
        .filter(|e| e.as_str().is_none_or(|e| !EFFORTS.contains(&e)))
    {
        return Err(invalid(format!(
            "Invalid value for 'reasoning_effort': {effort}; supported values are {EFFORTS:?}"
        )));
    }
    Ok(())
}

/// One answer, rendered as a completion or as stream chunks.
struct Answer {
    id: String,
    model: String,
    content: String,
    reasoning: Option<String>,
    field: ReasoningField,
    usage: Usage,
    finish_reason: String,
}

impl Answer {
    fn usage_json(&self) -> Value {
        json!({
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "total_tokens": self.usage.prompt_tokens + self.usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.usage.reasoning_tokens},
        })
    }

    fn completion(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if let Some(r) = &self.reasoning {
            message[self.field.name()] = json!(r);
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage_json(),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": 1_790_000_000,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }
}

/// Splits text at char boundaries into pieces of varying size.
fn pieces(text: &str) -> Vec<String> {
    split_text(text, &[13, 7, 31, 19])
}

/// The chunks of one answer as SSE, then `data: [DONE]`; the stream ends cleanly after it.
fn completion_stream(answer: &Answer, include_usage: bool, request_id: &str) -> Response {
    let mut events = vec![answer.chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in pieces(answer.reasoning.as_deref().unwrap_or("")) {
        let mut delta = json!({});
        delta[answer.field.name()] = json!(piece);
        events.push(answer.chunk(delta, None));
    }
    for piece in pieces(&answer.content) {
        events.push(answer.chunk(json!({"content": piece}), None));
    }
    events.push(answer.chunk(json!({}), Some(&answer.finish_reason)));
    if include_usage {
        // The usage chunk has no choices, as OpenAI sends it.
        events.push(json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": 1_790_000_000,
            "model": answer.model,
            "choices": [],
            "usage": answer.usage_json(),
        }));
    }
    let mut steps: Vec<Step> = events
        .iter()
        .map(|event| Step::Send(format!("data: {event}\n\n").into_bytes()))
        .collect();
    steps.push(Step::Send(b"data: [DONE]\n\n".to_vec()));
    Response::Stream {
        status: 200,
        headers: vec![
            header("content-type", "text/event-stream; charset=utf-8"),
            header("cache-control", "no-cache"),
            header("x-request-id", request_id),
        ],
        steps,
    }
}

fn error_response(rejection: &Rejection, request_id: &str) -> Response {
    let envelope = json!({"error": {"message": rejection.message, "type": rejection.error_type, "param": null, "code": rejection.code}});
    json_response(rejection.status, &envelope, request_id, &[])
}

/// A JSON body with `x-request-id`, plus `extra_headers` (e.g. `retry-after`) as given.
fn json_response(
    status: u16,
    body: &Value,
    request_id: &str,
    extra_headers: &[(String, String)],
) -> Response {
    let mut headers = vec![
        header("content-type", "application/json"),
        header("x-request-id", request_id),
    ];
    headers.extend_from_slice(extra_headers);
    Response::Full {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}

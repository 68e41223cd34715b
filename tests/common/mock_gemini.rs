//! A strict loopback mock of the Gemini API (`POST /v1beta/models/{model}:streamGenerateContent`
//! with `alt=sse`, and `:generateContent`) that rejects what the real service rejects (no key, unknown
//! or snake_case fields, a thinking budget and level together, a level on 2.5, a budget out of range)
//! and streams whole `GenerateContentResponse` chunks as SSE, so tests catch wire-format bugs offline.
//!
//! Only the wire format lives here; listening, parsing, writing and recording are `mock_http.rs`.

// Each test uses only part of this API, and the module is private to the test binary.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use serde_json::{Map, Value, json};

pub use super::mock_http::Recorded;
use super::mock_http::{
    BodyError, Mock, Recorder, Request, Response, Step, WireFormat, header, split_text,
};

const NO_KEY: &str = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";

/// A running mock; dropping it shuts the server down. `start` accepts any non-empty key,
/// `start_with_key` only that one (any other is a 400 `API_KEY_INVALID`); clients append
/// `/v1beta/models/...` to `base_url()`.
pub type MockGemini = Mock<Reply>;

/// The model id named in the path.
pub fn model(req: &Recorded) -> String {
    route(&req.path).map(|(model, _)| model).unwrap_or_default()
}

/// The `thinkingConfig` the client sent, or `Null`.
pub fn thinking_config(req: &Recorded) -> Value {
    req.body["generationConfig"]["thinkingConfig"].clone()
}

/// All text of `contents[*].parts[*]`, joined with newlines, so responders can route on the prompt.
pub fn user_text(req: &Recorded) -> String {
    parts_text(req.body.get("contents"))
}

/// All text of `systemInstruction.parts[*]`, joined with newlines.
pub fn system_text(req: &Recorded) -> String {
    let parts = req.body["systemInstruction"]["parts"].clone();
    parts_text(Some(&json!([{ "parts": parts }])))
}

fn parts_text(contents: Option<&Value>) -> String {
    let mut out = Vec::new();
    for content in contents.and_then(Value::as_array).into_iter().flatten() {
        for part in content["parts"].as_array().into_iter().flatten() {
            if let Some(text) = part["text"].as_str() {
                out.push(text.to_owned());
            }
        }
    }
    out.join("\n")
}

/// Token counts reported in `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `promptTokenCount`, cached tokens included.
    pub prompt: u64,
    /// `cachedContentTokenCount` (part of `prompt`).
    pub cached: u64,
    /// `candidatesTokenCount`.
    pub candidates: u64,
    /// `thoughtsTokenCount`.
    pub thoughts: u64,
}

impl Usage {
    /// 1000 prompt and 100 candidate tokens, nothing cached, no thoughts.
    pub fn typical() -> Self {
        Usage {
            prompt: 1000,
            candidates: 100,
            ..Usage::default()
        }
    }
}

/// What the mock answers to a valid request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A candidate: thought parts first (only when the request set `includeThoughts`), then the text,
    /// the last chunk carrying `finishReason` and the final `usageMetadata`.
    Answer {
        /// The answer text (may be empty, e.g. with `MAX_TOKENS`).
        text: String,
        /// Thought summary text.
        thoughts: Option<String>,
        /// Reported usage.
        usage: Usage,
        /// `STOP`, `MAX_TOKENS`, `SAFETY`, ...
        finish_reason: String,
    },
    /// A Google error envelope; `retry_delay` adds a `google.rpc.RetryInfo` detail (e.g. `"1s"`).
    Error {
        /// HTTP status.
        status: u16,
        /// `error.status`, e.g. `RESOURCE_EXHAUSTED`.
        status_text: String,
        /// `error.message`.
        message: String,
        /// `RetryInfo.retryDelay`.
        retry_delay: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// The prompt itself was blocked: `promptFeedback.blockReason`, no candidates.
    PromptBlocked(String),
    /// Wait, then send the inner reply.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    /// A plain answer that stops normally.
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Answer {
            text: text.into(),
            thoughts: None,
            usage: Usage::typical(),
            finish_reason: "STOP".into(),
        }
    }

    /// 429 `RESOURCE_EXHAUSTED` with `RetryInfo.retryDelay`, as the free tier sends it.
    pub fn rate_limited(retry_delay: &str) -> Self {
        Reply::Error {
            status: 429,
            status_text: "RESOURCE_EXHAUSTED".into(),
            message: "You exceeded your current quota, please check your plan and billing details."
                .into(),
            retry_delay: Some(retry_delay.into()),
            headers: Vec::new(),
        }
    }

    /// A candidate stopped with `finish_reason` (e.g. `SAFETY`) before any text.
    pub fn blocked(finish_reason: &str) -> Self {
        Reply::Answer {
            text: String::new(),
            thoughts: None,
            usage: Usage::typical(),
            finish_reason: finish_reason.into(),
        }
    }

    /// An error without RetryInfo or extra headers.
    pub fn error(status: u16, status_text: &str, message: &str) -> Self {
        Reply::Error {
            status,
            status_text: status_text.into(),
            message: message.into(),
            retry_delay: None,
            headers: Vec::new(),
        }
    }
}

impl WireFormat for Reply {
    const NAME: &'static str = "mock-gemini";

    fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
        answer(recorder, request)
    }
}

/// Why a request was refused before reaching the responder.
struct Rejection {
    status: u16,
    status_text: &'static str,
    message: String,
    reason: Option<&'static str>,
}

fn reject(status: u16, status_text: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        status_text,
        message: message.into(),
        reason: None,
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    reject(400, "INVALID_ARGUMENT", message)
}

/// (model, method) of `/v1beta/models/{model}:{method}`.
fn route(path: &str) -> Option<(String, String)> {
    let route = path.split('?').next()?;
    let rest = route.strip_prefix("/v1beta/models/")?;
    let (model, method) = rest.split_once(':')?;
    Some((model.to_owned(), method.to_owned()))
}

fn query_has(path: &str, pair: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p == pair))
}

/// Records, validates and answers one request; only valid ones reach the responder.
fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(BodyError::TooLarge) => {
            return error_response(&reject(413, "INVALID_ARGUMENT", "request too large"));
        }
        Err(BodyError::Incomplete) => {
            return error_response(&invalid("connection closed before the body was complete"));
        }
    };
    let (request, number) = recorder.record(request);
    if let Err(rejection) = validate(&request, recorder.key()) {
        return error_response(&rejection);
    }
    let mut reply = recorder.respond(&request, |_| {
        Reply::error(500, "INTERNAL", "mock responder panicked")
    });
    let mut delay = Duration::ZERO;
    while let Reply::Delay(pause, inner) = reply {
        delay += pause;
        reply = *inner;
    }
    let (model, method) = route(&request.path).unwrap_or_default();
    let include_thoughts = thinking_config(&request)["includeThoughts"].as_bool() == Some(true);
    let response = match reply {
        Reply::Answer {
            text,
            thoughts,
            usage,
            finish_reason,
        } => {
            let thoughts = thoughts.filter(|_| include_thoughts);
            let chunks = answer_chunks(
                &model,
                number,
                &text,
                thoughts.as_deref(),
                usage,
                &finish_reason,
            );
            chunks_response(&request.path, &method, &chunks)
        }
        Reply::PromptBlocked(reason) => {
            let chunk = json!({
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
                "modelVersion": model,
                "responseId": format!("resp_mock_{number}"),
            });
            chunks_response(&request.path, &method, &[chunk])
        }
        Reply::Error {
            status,
            status_text,
            message,
            retry_delay,
            headers,
        } => {
            let mut details = Vec::new();
            if let Some(retry) = retry_delay {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}],
                }));
                details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry}));
            }
            let envelope = json!({"error": {"code": status, "message": message, "status": status_text, "details": details}});
            json_response(status, &envelope, &headers)
        }
        Reply::Delay(..) => unreachable!("delays are unwrapped above"),
    };
    response.after(delay)
}

/// The checks the real service makes before generating anything.
fn validate(req: &Recorded, key: Option<&str>) -> Result<(), Rejection> {
    let Some((model, method)) = route(&req.path) else {
        return Err(reject(404, "NOT_FOUND", "Not Found"));
    };
    if !matches!(method.as_str(), "streamGenerateContent" | "generateContent") {
        return Err(reject(404, "NOT_FOUND", format!("unknown method {method}")));
    }
    if req.method != "POST" {
        return Err(reject(405, "INVALID_ARGUMENT", "Method Not Allowed"));
    }
    let sent_key = req.header("x-goog-api-key").filter(|k| !k.is_empty());
    let Some(sent_key) = sent_key else {
        return Err(reject(403, "PERMISSION_DENIED", NO_KEY));
    };
    if key.is_some_and(|k| k != sent_key) {
        let mut r = invalid("API key not valid. Please pass a valid API key.");
        r.reason = Some("API_KEY_INVALID");
        return Err(r);
    }
    if !model.starts_with("gemini-") {
        return Err(reject(
            404,
            "NOT_FOUND",
            format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent."
            ),
        ));
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return Err(invalid(
            "Invalid JSON payload: content-type must be application/json",
        ));
    }
    let Value::Object(body) = &req.body else {
        return Err(invalid("Invalid JSON payload received."));
    };
    // The camelCase names fullsend promises to send; anything else is a bug in the client.
    known_fields(
        body,
        "",
        &[
            "contents",
            "systemInstruction",
            "generationConfig",
            "safetySettings",
            "tools",
            "toolConfig",
            "cachedContent",
        ],
    )?;
    let contents = match body.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => {
            return Err(invalid(
                "* GenerateContentRequest.contents: contents is not specified",
            ));
        }
    };
    for (i, content) in contents.iter().enumerate() {
        let Value::Object(content) = content else {
            return Err(invalid(format!("contents[{i}] must be an object")));
        };
        known_fields(content, &format!("contents[{i}]."), &["role", "parts"])?;
        if !matches!(
            content.get("role").and_then(Value::as_str),
            Some("user" | "model")
        ) {
            return Err(invalid(format!(
                "Please use a valid role: user, model. (contents[{i}].role)"
            )));
        }
        text_parts(content.get("parts"), &format!("contents[{i}].parts"))?;
    }
    if let Some(system) = body.get("systemInstruction") {
        let Value::Object(system) = system else {
            return Err(invalid("systemInstruction must be a Content object"));
        };
        known_fields(system, "systemInstruction.", &["role", "parts"])?;
        text_parts(system.get("parts"), "systemInstruction.parts")?;
    }
    if let Some(config) = body.get("generationConfig") {
        let Value::Object(config) = config else {
            return Err(invalid("generationConfig must be an object"));
        };
        known_fields(
            config,
            "generationConfig.",
            &[
                "maxOutputTokens",
                "temperature",
                "topP",
                "topK",
                "candidateCount",
                "stopSequences",
                "responseMimeType",
                "responseSchema",
                "seed",
                "thinkingConfig",
            ],
        )?;
        if config
            .get("maxOutputTokens")
            .is_some_and(|max| max.as_u64().is_none_or(|n| n < 1))
        {
            return Err(invalid(
                "generationConfig.maxOutputTokens must be a positive integer",
            ));
        }
        if let Some(thinking) = config.get("thinkingConfig") {
            validate_thinking(&model, thinking)?;
        }
    }
    Ok(())
}

fn known_fields(
    object: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<(), Rejection> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(invalid(format!(
            "Invalid JSON payload received. Unknown name \"{prefix}{unknown}\": Cannot find field."
        ))),
        None => Ok(()),
    }
}

fn text_parts(parts: Option<&Value>, at: &str) -> Result<(), Rejection> {
    let Some(Value::Array(parts)) = parts else {
        return Err(invalid(format!("{at}: parts must be a list")));
    };
    if parts.is_empty() {
        return Err(invalid(format!("{at}: must include at least one part")));
    }
    for (i, part) in parts.iter().enumerate() {
        if !part["text"].is_string() {
            return Err(invalid(format!(
                "{at}[{i}]: a text part needs a text string"
            )));
        }
    }
    Ok(())
}

/// Thinking per generation (docs/model-apis.md §11): 2.5 takes a budget, 3.x a level, never both.
fn validate_thinking(model: &str, thinking: &Value) -> Result<(), Rejection> {
    let Value::Object(config) = thinking else {
        return Err(invalid("generationConfig.thinkingConfig must be an object"));
    };
    known_fields(
        config,
        "generationConfig.thinkingConfig.",
        &["thinkingBudget", "thinkingLevel", "includeThoughts"],
    )?;
    let budget = config.get("thinkingBudget");
    let level = config.get("thinkingLevel");
    if budget.is_some() && level.is_some() {
        return Err(invalid(
            "You can only set one of thinking budget and thinking level.",
        ));
    }
    let is_25 = model.starts_with("gemini-2.5");
    let is_3 = model
        .strip_prefix("gemini-")
        .and_then(|r| r.split(['.', '-']).next())
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 3);
    if !is_25 && !is_3 {
        return Err(invalid("Thinking is not supported for this model."));
    }
    let is_pro = model.contains("pro");
    if let Some(level) = level {
        if is_25 {
            return Err(invalid("Thinking level is not supported for this model."));
        }
        let allowed: &[&str] = if is_pro {
            &["LOW", "HIGH"]
        } else {
            &["MINIMAL", "LOW", "MEDIUM", "HIGH"]
        };
        if !level.as_str().is_some_and(|l| allowed.contains(&l)) {
            return Err(invalid(format!(
                "Invalid thinking level {level} for {model}; expected one of {allowed:?}."
            )));
        }
    }
    if let Some(budget) = budget {
        let Some(budget) = budget.as_i64() else {
            return Err(invalid("thinkingBudget must be an integer"));
        };
        let (min, max) = if is_pro { (128, 32_768) } else { (0, 24_576) };
        if budget == 0 && is_pro {
            return Err(invalid(
                "Budget 0 is invalid. This model only works in thinking mode.",
            ));
        }
        if budget != -1 && !(min..=max).contains(&budget) {
            return Err(invalid(format!(
                "The thinking budget {budget} is invalid. Please choose a value between {min} and {max}."
            )));
        }
    }
    if config
        .get("includeThoughts")
        .is_some_and(|include| !include.is_boolean())
    {
        return Err(invalid("includeThoughts must be a boolean"));
    }
    Ok(())
}

/// Splits text at char boundaries into pieces of varying size.
fn pieces(text: &str) -> Vec<String> {
    split_text(text, &[17, 29, 11, 23])
}

/// The chunks of one streamed answer. Each repeats the running usage, as the service does; only
/// the last has `finishReason` and the candidate and thought counts.
fn answer_chunks(
    model: &str,
    number: usize,
    text: &str,
    thoughts: Option<&str>,
    usage: Usage,
    finish_reason: &str,
) -> Vec<Value> {
    let running = json!({"promptTokenCount": usage.prompt, "totalTokenCount": usage.prompt});
    let chunk = |part: Value| {
        json!({
            "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
            "usageMetadata": running,
            "modelVersion": model,
            "responseId": format!("resp_mock_{number}"),
        })
    };
    let mut chunks: Vec<Value> = Vec::new();
    for piece in pieces(thoughts.unwrap_or("")) {
        chunks.push(chunk(json!({"text": piece, "thought": true})));
    }
    for piece in pieces(text) {
        chunks.push(chunk(json!({"text": piece})));
    }
    let mut last = json!({
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": usage.candidates,
        "totalTokenCount": usage.prompt + usage.candidates + usage.thoughts,
    });
    if usage.thoughts > 0 {
        last["thoughtsTokenCount"] = json!(usage.thoughts);
    }
    if usage.cached > 0 {
        last["cachedContentTokenCount"] = json!(usage.cached);
    }
    // The closing chunk carries no new text when the answer stopped normally; a blocked or cut-off
    // candidate has no content at all.
    let candidate = if text.is_empty() {
        json!({"finishReason": finish_reason, "index": 0})
    } else {
        json!({"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": finish_reason, "index": 0})
    };
    chunks.push(json!({
        "candidates": [candidate],
        "usageMetadata": last,
        "modelVersion": model,
        "responseId": format!("resp_mock_{number}"),
    }));
    chunks
}

/// SSE with `alt=sse` (CRLF-separated, as Google sends it), else a JSON array of chunks; a plain
/// `generateContent` gets the chunks merged into one response.
fn chunks_response(path: &str, method: &str, chunks: &[Value]) -> Response {
    if method == "generateContent" {
        let mut merged = chunks.last().cloned().unwrap_or(Value::Null);
        let parts: Vec<Value> = chunks
            .iter()
            .filter_map(|c| {
                c["candidates"][0]["content"]["parts"][0]
                    .as_object()
                    .cloned()
            })
            .map(Value::Object)
            .filter(|p| p["text"].as_str().is_some_and(|t| !t.is_empty()))
            .collect();
        if merged["candidates"][0].is_object() {
            merged["candidates"][0]["content"] = json!({"parts": parts, "role": "model"});
        }
        return json_response(200, &merged, &[]);
    }
    if !query_has(path, "alt=sse") {
        return json_response(200, &Value::Array(chunks.to_vec()), &[]);
    }
    Response::Stream {
        status: 200,
        headers: vec![
            header("content-type", "text/event-stream"),
            header("cache-control", "no-cache"),
        ],
        steps: chunks
            .iter()
            .map(|chunk| Step::Send(format!("data: {chunk}\r\n\r\n").into_bytes()))
            .collect(),
    }
}

fn error_response(rejection: &Rejection) -> Response {
    let mut details = Vec::new();
    if let Some(reason) = rejection.reason {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}));
    }
    let envelope = json!({"error": {"code": rejection.status, "message": rejection.message, "status": rejection.status_text, "details": details}});
    json_response(rejection.status, &envelope, &[])
}

fn json_response(status: u16, body: &Value, extra_headers: &[(String, String)]) -> Response {
    let mut headers = vec![header("content-type", "application/json; charset=UTF-8")];
    headers.extend_from_slice(extra_headers);
    Response::Full {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}

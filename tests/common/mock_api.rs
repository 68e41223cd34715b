//! A strict loopback mock of the Anthropic Messages API (`POST /v1/messages`, JSON and SSE) that rejects
//! invalid requests the way the real API does, so tests catch wire-format bugs without the network.
//!
//! Only the wire format lives here; listening, parsing, writing and recording are `mock_http.rs`.
//! Examples include both files, `#[path = "../common/mock_api.rs"] mod mock_api;` and
//! `#[path = "../common/mock_http.rs"] mod mock_http;`, and run it via [`MockApi`] or
//! [`run_standalone`].

// Each test binary or example uses only part of this API, and the module is private there, so `pub`
// items would otherwise warn as dead or unreachable.
#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

pub use super::mock_http::Recorded;
use super::mock_http::{
    BodyError, Mock, Recorder, Request, Response, Step, WireFormat, header, split_text,
};

/// The `anthropic-version` values the real API accepts (docs/model-apis.md §1).
const API_VERSIONS: [&str; 2] = ["2023-06-01", "2026-10-21"];
/// Models that reject `thinking.type: "enabled"` (docs/model-apis.md §3). Substring match on
/// the id.
const ADAPTIVE_ONLY: [&str; 6] = [
    "opus-5", "sonnet-5", "opus-4-7", "opus-4-8", "fable-5", "mythos-5",
];
/// Models that reject `thinking.type: "adaptive"`: the 4.5 generation and Opus 4.1.
const ENABLED_ONLY: [&str; 2] = ["4-5", "opus-4-1"];
/// Models where thinking is always on, so `thinking.type: "disabled"` is a 400.
const ALWAYS_THINKING: [&str; 3] = ["opus-5-5", "fable-5", "mythos-5"];
/// The exact message the real API gives for `enabled` on an adaptive-only model.
const ENABLED_NOT_SUPPORTED: &str = "\"thinking.type.enabled\" is not supported for this model. Use \"thinking.type.adaptive\" and \"output_config.effort\" to control thinking behavior.";

/// A running mock server; dropping it shuts the server down and closes every connection.
/// `respond` gets every request that passes validation, with its 0-based index among those
/// requests (rejected requests and `HEAD /` do not consume an index; `HEAD /` is not recorded
/// either). `start` accepts any non-empty `x-api-key` or bearer token, `start_with_key` only that
/// one. Clients append `/v1/messages` to `base_url()`.
pub type MockApi = Mock<Reply>;

/// Whether the client asked for an SSE stream (`"stream": true`).
pub fn is_stream(req: &Recorded) -> bool {
    req.body.get("stream").and_then(Value::as_bool) == Some(true)
}

/// What the mock answers to a valid request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A successful message. Streamed as SSE if the request had `"stream": true`, else one JSON body.
    Message {
        /// The answer, sent as one `text` block (or as `text_delta` chunks).
        text: String,
        /// If set, a `thinking` block with a signature comes first (`Some("")` mimics `display:
        /// "omitted"`).
        thinking: Option<String>,
        /// Reported in `usage` (and, when streamed, in `message_start`/`message_delta`).
        usage: Usage,
    },
    /// Any HTTP status with the Anthropic error envelope, plus extra response headers such as
    /// `("retry-after", "1")` or `("x-should-retry", "false")`.
    Error {
        /// The HTTP status, e.g. 429 or 529.
        status: u16,
        /// `error.type`, e.g. `rate_limit_error`.
        error_type: String,
        /// `error.message`.
        message: String,
        /// Extra response headers, names as given.
        headers: Vec<(String, String)>,
    },
    /// HTTP 200 SSE that sends `message_start` and then an `overloaded_error` `error` event before any
    /// content. A non-streaming request gets the equivalent 529 instead, as the real API would.
    MidStreamError,
    /// Wait, then send the inner reply.
    Delay(Duration, Box<Reply>),
    /// Accept the request and never answer; the connection is held until the client closes it.
    Hang,
    /// Any status and body with this content type, whatever the request asked for: what a
    /// proxy or a captive portal answers (`200 text/html`).
    Raw {
        /// The HTTP status.
        status: u16,
        /// The `content-type`.
        content_type: String,
        /// The body.
        body: String,
    },
    /// An assistant turn that calls one client tool (`stop_reason: "tool_use"`), as a model does
    /// when a prompt injection tells it to: the client runs the tool and sends a `tool_result`.
    ToolUse {
        /// The tool's name, e.g. `Read`.
        name: String,
        /// Its input object, e.g. `{"file_path": "/proc/self/environ"}`.
        input: Value,
    },
}

impl Reply {
    /// A plain text success with fixed usage (1000 input, 100 output tokens).
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Message {
            text: text.into(),
            thinking: None,
            usage: Usage::typical(),
        }
    }

    /// An error reply without extra headers.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Reply::Error {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
            headers: Vec::new(),
        }
    }
}

/// The token counts reported in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens, thinking included.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// 1000 input and 100 output tokens, no cache: $0.0075 at $5/$25 per MTok.
    pub fn typical() -> Self {
        Usage {
            input_tokens: 1000,
            output_tokens: 100,
            ..Usage::default()
        }
    }
}

impl WireFormat for Reply {
    const NAME: &'static str = "mock-api";

    fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
        answer(recorder, request)
    }
}

/// All text in `messages[*].content` (plain strings, `text` blocks and the text inside `tool_result`
/// blocks), joined with newlines, so responders can route on what the client asked.
pub fn user_text(req: &Recorded) -> String {
    let mut parts = Vec::new();
    if let Some(messages) = req.body.get("messages").and_then(Value::as_array) {
        for message in messages {
            collect_text(message.get("content"), &mut parts);
        }
    }
    parts.join("\n")
}

/// All text in `system` (a string or text blocks), joined with newlines.
pub fn system_text(req: &Recorded) -> String {
    let mut parts = Vec::new();
    collect_text(req.body.get("system"), &mut parts);
    parts.join("\n")
}

fn collect_text(content: Option<&Value>, out: &mut Vec<String>) {
    match content {
        Some(Value::String(text)) => out.push(text.clone()),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            out.push(text.to_owned());
                        }
                    }
                    Some("tool_result") => collect_text(block.get("content"), out),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Runs the mock as a standalone process (for example binaries and manual soak tests): binds
/// 127.0.0.1:`port` (0 = any free port), prints `MOCK_API_URL=http://127.0.0.1:PORT` on stdout, and
/// answers every valid request with `reply_text` after `latency`. Never returns.
pub fn run_standalone(port: u16, latency: Duration, reply_text: String, usage: Usage) -> ! {
    let reply = Reply::Delay(
        latency,
        Box::new(Reply::Message {
            text: reply_text,
            thinking: None,
            usage,
        }),
    );
    let mock = MockApi::start_on(port, move |_, _| reply.clone());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "MOCK_API_URL={}", mock.base_url()).expect("writing MOCK_API_URL");
    stdout.flush().expect("flushing stdout");
    drop(stdout);
    // The server answers on its own thread until the process is killed.
    loop {
        std::thread::park();
    }
}

/// Why a request was refused before reaching `respond`.
struct Rejection {
    status: u16,
    error_type: &'static str,
    message: String,
}

fn reject(status: u16, error_type: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        error_type,
        message: message.into(),
    }
}

/// Records, validates and answers one request. Rejected requests are recorded too, with a
/// `request-id` of their own; only valid ones reach `respond` and consume an index.
fn answer(recorder: &Recorder<Reply>, request: Result<Request, BodyError>) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(BodyError::TooLarge) => {
            let rejection = reject(
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            );
            return error_response(&rejection, "req_mock_malformed");
        }
        Err(BodyError::Incomplete) => {
            let rejection = reject(
                400,
                "invalid_request_error",
                "connection closed before the body was complete",
            );
            return error_response(&rejection, "req_mock_malformed");
        }
    };

    // Claude Code 2.1.197 preconnects with `HEAD /`; it is not an API call, so it is not recorded.
    if request.method == "HEAD" && request.path == "/" {
        return Response::Full {
            status: 200,
            headers: vec![header("content-length", "0")],
            body: Vec::new(),
        };
    }

    let (request, number) = recorder.record(request);
    let request_id = format!("req_mock_{number}");

    if let Err(rejection) = validate(&request, recorder.key()) {
        return error_response(&rejection, &request_id);
    }

    // A panicking responder becomes a 500 with its message.
    let mut reply = recorder.respond(&request, |message| {
        Reply::error(
            500,
            "api_error",
            &format!("mock responder panicked: {message}"),
        )
    });
    let mut delay = Duration::ZERO;
    while let Reply::Delay(pause, inner) = reply {
        delay += pause;
        reply = *inner;
    }
    let model = request
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let response = match reply {
        Reply::Message {
            text,
            thinking,
            usage,
        } => {
            let message = MessageParts {
                number,
                model: &model,
                text: &text,
                thinking: thinking.as_deref(),
                usage,
            };
            if is_stream(&request) {
                message_stream(&message)
            } else {
                json_response(200, &message.to_json(), &request_id, &[])
            }
        }
        Reply::Error {
            status,
            error_type,
            message,
            headers,
        } => {
            let envelope = error_envelope(&error_type, &message, &request_id);
            json_response(status, &envelope, &request_id, &headers)
        }
        Reply::MidStreamError if is_stream(&request) => mid_stream_error(number, &model),
        Reply::MidStreamError => {
            let envelope = error_envelope("overloaded_error", "Overloaded", &request_id);
            json_response(529, &envelope, &request_id, &[])
        }
        Reply::Hang => Response::Hang,
        Reply::Raw {
            status,
            content_type,
            body,
        } => Response::Full {
            status,
            headers: vec![header("content-type", &content_type)],
            body: body.into_bytes(),
        },
        Reply::ToolUse { name, input } => tool_use(
            number,
            &model,
            &name,
            &input,
            is_stream(&request),
            &request_id,
        ),
        Reply::Delay(..) => unreachable!("delays are unwrapped above"),
    };
    response.after(delay)
}

/// The checks the real API makes before doing any work (docs/model-apis.md §1–3); with `key` set,
/// the `x-api-key` or bearer token must be it.
fn validate(req: &Recorded, key: Option<&str>) -> Result<(), Rejection> {
    let invalid = |message: String| reject(400, "invalid_request_error", message);
    let route = req.path.split('?').next().unwrap_or_default();
    if route != "/v1/messages" {
        return Err(reject(404, "not_found_error", "Not Found"));
    }
    if req.method != "POST" {
        return Err(reject(405, "invalid_request_error", "Method Not Allowed"));
    }

    let api_key = req.header("x-api-key").filter(|v| !v.is_empty());
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    if api_key.is_none() && bearer.is_none() {
        return Err(reject(
            401,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if key.is_some_and(|key| api_key != Some(key) && bearer != Some(key)) {
        return Err(reject(401, "authentication_error", "invalid x-api-key"));
    }
    match req.header("anthropic-version") {
        None => return Err(invalid("anthropic-version: header is required".to_owned())),
        Some(version) if !API_VERSIONS.contains(&version) => {
            return Err(invalid(format!(
                "anthropic-version: invalid version {version:?}; valid versions are {API_VERSIONS:?}"
            )));
        }
        Some(_) => {}
    }

    let body = match &req.body {
        Value::Object(body) => body,
        Value::Null => return Err(invalid("request body is required".to_owned())),
        _ => return Err(invalid("request body must be a JSON object".to_owned())),
    };
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.as_str(),
        Some(_) => return Err(invalid("model: Input should be a valid string".to_owned())),
        None => return Err(invalid("model: Field required".to_owned())),
    };
    let max_tokens = match body.get("max_tokens") {
        None => return Err(invalid("max_tokens: Field required".to_owned())),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => n,
            Some(_) => {
                return Err(invalid(
                    "max_tokens: Input should be greater than or equal to 1".to_owned(),
                ));
            }
            None => {
                return Err(invalid(
                    "max_tokens: Input should be a valid integer".to_owned(),
                ));
            }
        },
    };
    let messages = match body.get("messages") {
        None => return Err(invalid("messages: Field required".to_owned())),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(invalid(
                "messages: at least one message is required".to_owned(),
            ));
        }
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(invalid("messages: Input should be a valid list".to_owned())),
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        // The real Claude Code CLI (2.1.197) sends `system`-role messages
        // mid-conversation under its beta headers, and the API accepts them.
        let beta = req.header("anthropic-beta").is_some();
        if !(matches!(role, Some("user" | "assistant")) || (beta && role == Some("system"))) {
            return Err(invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        if !matches!(
            message.get("content"),
            Some(Value::String(_) | Value::Array(_))
        ) {
            return Err(invalid(format!(
                "messages.{i}.content: Input should be a valid string or list of content blocks"
            )));
        }
    }
    if let Some(system) = body.get("system") {
        let valid = match system {
            Value::String(_) => true,
            Value::Array(blocks) => blocks.iter().all(|b| {
                b.get("type").and_then(Value::as_str) == Some("text")
                    && b.get("text").is_some_and(Value::is_string)
            }),
            _ => false,
        };
        if !valid {
            return Err(invalid(
                "system: Input should be a valid string or list of text blocks".to_owned(),
            ));
        }
    }
    // Removed in API version 2026-10-21 and rejected by thinking models (docs/model-apis.md §2).
    for field in ["temperature", "top_p", "top_k"] {
        if body.contains_key(field) {
            return Err(invalid(format!("{field}: Extra inputs are not permitted")));
        }
    }
    if body.get("stream").is_some_and(|v| !v.is_boolean()) {
        return Err(invalid(
            "stream: Input should be a valid boolean".to_owned(),
        ));
    }

    let thinking_type = match body.get("thinking") {
        None => None,
        Some(thinking) => match thinking.get("type").and_then(Value::as_str) {
            Some(kind @ ("enabled" | "adaptive" | "disabled")) => Some(kind),
            _ => {
                return Err(invalid(
                    "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'".to_owned(),
                ));
            }
        },
    };
    match thinking_type {
        Some("enabled") => {
            if ADAPTIVE_ONLY.iter().any(|m| model.contains(m)) {
                return Err(invalid(ENABLED_NOT_SUPPORTED.to_owned()));
            }
            let budget = body
                .get("thinking")
                .and_then(|t| t.get("budget_tokens"))
                .and_then(Value::as_u64);
            match budget {
                None => {
                    return Err(invalid(
                        "thinking.enabled.budget_tokens: Field required".to_owned(),
                    ));
                }
                Some(budget) if budget < 1024 => {
                    return Err(invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".to_owned()));
                }
                Some(budget) if budget >= max_tokens => {
                    return Err(invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size".to_owned()));
                }
                Some(_) => {}
            }
        }
        Some("adaptive") if ENABLED_ONLY.iter().any(|m| model.contains(m)) => {
            return Err(invalid("\"thinking.type.adaptive\" is not supported for this model. Use \"thinking.type.enabled\" and \"thinking.budget_tokens\" to control thinking behavior.".to_owned()));
        }
        Some("disabled") if ALWAYS_THINKING.iter().any(|m| model.contains(m)) => {
            return Err(invalid("\"thinking.type.disabled\" is not supported for this model. Use \"thinking.type.adaptive\" and \"output_config.effort\" to control thinking behavior.".to_owned()));
        }
        _ => {}
    }
    if let Some(effort) = body.get("output_config").and_then(|c| c.get("effort")) {
        let known = ["low", "medium", "high", "xhigh", "max"];
        if !effort.as_str().is_some_and(|e| known.contains(&e)) {
            return Err(invalid(
                "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
                    .to_owned(),
            ));
        }
    }
    let forces_tool = body
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    if forces_tool && matches!(thinking_type, Some("enabled" | "adaptive")) {
        return Err(invalid(
            "Thinking may not be enabled when tool_choice forces tool use.".to_owned(),
        ));
    }
    Ok(())
}

/// Everything needed to render one successful message, as JSON or as SSE.
struct MessageParts<'a> {
    number: usize,
    model: &'a str,
    text: &'a str,
    thinking: Option<&'a str>,
    usage: Usage,
}

impl MessageParts<'_> {
    fn id(&self) -> String {
        format!("msg_mock_{}", self.number)
    }

    fn signature(&self) -> String {
        format!("sig_mock_{}_RXJ0aGlua2luZ1NpZ25hdHVyZQ==", self.number)
    }

    fn usage_json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.usage.input_tokens,
            "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": self.usage.cache_read_input_tokens,
            "output_tokens": output_tokens,
        })
    }

    fn to_json(&self) -> Value {
        let mut content = Vec::new();
        if let Some(thinking) = self.thinking {
            content.push(
                json!({"type": "thinking", "thinking": thinking, "signature": self.signature()}),
            );
        }
        content.push(json!({"type": "text", "text": self.text}));
        json!({
            "id": self.id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": self.usage_json(self.usage.output_tokens),
        })
    }

    fn message_start(&self) -> Value {
        json!({
            "type": "message_start",
            "message": {
                "id": self.id(),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.usage_json(1),
            },
        })
    }
}

/// Splits text at char boundaries into pieces of varying size around 20 chars, so clients cannot
/// rely on any particular split.
fn chunks(text: &str) -> Vec<String> {
    split_text(text, &[20, 13, 27, 9, 21])
}

fn sse_event(data: &Value) -> Vec<u8> {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    format!("event: {kind}\ndata: {data}\n\n").into_bytes()
}

/// A 200 event stream with one piece per event; it ends cleanly after the last one.
fn event_stream(request_id: &str, events: &[Value]) -> Response {
    Response::Stream {
        status: 200,
        headers: vec![
            header("content-type", "text/event-stream; charset=utf-8"),
            header("cache-control", "no-cache"),
            header("request-id", request_id),
        ],
        steps: events
            .iter()
            .map(|event| Step::Send(sse_event(event)))
            .collect(),
    }
}

fn message_stream(message: &MessageParts<'_>) -> Response {
    let mut events = vec![message.message_start(), json!({"type": "ping"})];
    let mut index = 0;
    if let Some(thinking) = message.thinking {
        events.push(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}));
        for piece in chunks(thinking) {
            events.push(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "thinking_delta", "thinking": piece}}));
        }
        events.push(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": message.signature()}}));
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    events.push(json!({"type": "content_block_start", "index": index,
        "content_block": {"type": "text", "text": ""}}));
    for piece in chunks(message.text) {
        events.push(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": piece}}));
    }
    events.push(json!({"type": "content_block_stop", "index": index}));
    // message_delta usage is cumulative (docs/model-apis.md §5), so it repeats the input counts.
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": message.usage_json(message.usage.output_tokens)}));
    events.push(json!({"type": "message_stop"}));
    event_stream(&format!("req_mock_{}", message.number), &events)
}

/// One `tool_use` block and `stop_reason: "tool_use"`, streamed with `input_json_delta` pieces as
/// the real API streams tool input, or as one JSON body.
fn tool_use(
    number: usize,
    model: &str,
    name: &str,
    input: &Value,
    stream: bool,
    request_id: &str,
) -> Response {
    let parts = MessageParts {
        number,
        model,
        text: "",
        thinking: None,
        usage: Usage::typical(),
    };
    let id = format!("toolu_mock_{number}");
    if !stream {
        let mut message = parts.to_json();
        message["content"] = json!([{"type": "tool_use", "id": id, "name": name, "input": input}]);
        message["stop_reason"] = json!("tool_use");
        return json_response(200, &message, request_id, &[]);
    }
    let mut events = vec![
        parts.message_start(),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    ];
    for piece in chunks(&input.to_string()) {
        events.push(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": piece}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": parts.usage_json(parts.usage.output_tokens)}));
    events.push(json!({"type": "message_stop"}));
    event_stream(&format!("req_mock_{number}"), &events)
}

/// The `tool_result` blocks of a request's last message: what the client's tools answered.
pub fn tool_results(req: &Recorded) -> Vec<Value> {
    req.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// `message_start`, then an `overloaded_error` event, and the stream ends: the error arrives
/// inside an HTTP 200, as the real API sends it.
fn mid_stream_error(number: usize, model: &str) -> Response {
    let request_id = format!("req_mock_{number}");
    let start = MessageParts {
        number,
        model,
        text: "",
        thinking: None,
        usage: Usage::default(),
    }
    .message_start();
    let error = error_envelope("overloaded_error", "Overloaded", &request_id);
    event_stream(&request_id, &[start, error])
}

fn error_envelope(error_type: &str, message: &str, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    })
}

fn error_response(rejection: &Rejection, request_id: &str) -> Response {
    let envelope = error_envelope(rejection.error_type, &rejection.message, request_id);
    json_response(rejection.status, &envelope, request_id, &[])
}

/// A JSON body with the `request-id` every Messages-API response carries, plus `extra_headers`
/// (e.g. `retry-after`) as given.
fn json_response(
    status: u16,
    body: &Value,
    request_id: &str,
    extra_headers: &[(String, String)],
) -> Response {
    let mut headers = vec![
        header("content-type", "application/json"),
        header("request-id", request_id),
    ];
    headers.extend_from_slice(extra_headers);
    Response::Full {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}

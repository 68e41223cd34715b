//! A strict loopback mock of an OpenAI-compatible chat-completions server (`POST /v1/chat/completions`,
//! JSON and SSE ending in `data: [DONE]`) that rejects what the real servers reject (a wrong bearer
//! key, unknown arguments, `stream_options` without `stream`, an unknown `reasoning_effort`), so tests
//! catch wire-format bugs offline. It can act as OpenAI (a key required) or Ollama (no key).
//!
//! Self-contained (tokio + serde_json + std only), like `mock_api.rs`.

// Each test uses only part of this API, and the module is private to the test binary.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Guards against a client that never ends its header block.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Far above any prompt fullsend sends; keeps a runaway client from exhausting memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
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

/// One request as the mock received it (including the ones it rejected).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header names are lowercased.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body; `Null` if empty, a JSON string holding the raw text if it is not JSON.
    pub body: Value,
}

impl Recorded {
    /// The first value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

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

type Responder = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

struct Shared {
    respond: Box<Responder>,
    /// When set, `Authorization: Bearer <key>` is required (OpenAI); else none is needed (Ollama).
    key: Option<String>,
    recorded: Mutex<Vec<Recorded>>,
    answered: AtomicUsize,
}

impl Shared {
    fn recorded(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running mock; dropping it shuts the server down.
pub struct MockOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockOpenAi {
    /// Starts on 127.0.0.1:0 without requiring a key, like Ollama. `respond` gets each valid request
    /// and its 0-based index among the valid ones.
    pub fn start(respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::launch(None, Box::new(respond))
    }

    /// Like [`MockOpenAi::start`], but `Authorization: Bearer <key>` is required, like OpenAI.
    pub fn start_with_key(
        key: &str,
        respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::launch(Some(key.to_owned()), Box::new(respond))
    }

    /// Answers with `replies` in order (no key needed); the last one repeats.
    pub fn sequence(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "MockOpenAi::sequence needs a reply");
        Self::start(move |_, index| replies[index.min(replies.len() - 1)].clone())
    }

    fn launch(key: Option<String>, respond: Box<Responder>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the OpenAI mock");
        let addr = listener
            .local_addr()
            .expect("reading the OpenAI mock address");
        listener
            .set_nonblocking(true)
            .expect("making the OpenAI mock listener non-blocking");
        let shared = Arc::new(Shared {
            respond,
            key,
            recorded: Mutex::new(Vec::new()),
            answered: AtomicUsize::new(0),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mock-openai".to_owned())
            .spawn(move || {
                // Its own runtime, so a blocked test thread never stalls the server.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the OpenAI mock runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("registering the OpenAI mock");
                    tokio::select! {
                        () = accept_loop(listener, server_shared) => {}
                        _ = shutdown_rx => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawning the OpenAI mock thread");
        MockOpenAi {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (clients append `/v1/chat/completions`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, valid or rejected, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded().clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.shared.recorded().len()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_connection(stream, Arc::clone(&shared)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
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

async fn handle_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Without Nagle each SSE chunk leaves in its own segment, so clients see real splits.
    let _ = stream.set_nodelay(true);
    let (read_half, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let raw = match read_request(&mut reader).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return,
        Err(rejection) => {
            let _ = send_error(&mut writer, &rejection, "req_mock_malformed").await;
            return;
        }
    };
    let body = if raw.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw.body).into_owned()))
    };
    let request = Recorded {
        method: raw.method,
        path: raw.path,
        headers: raw.headers,
        body,
    };
    let number = {
        let mut recorded = shared.recorded();
        recorded.push(request.clone());
        recorded.len() - 1
    };
    let request_id = format!("req_mock_{number}");
    if let Err(rejection) = validate(&request, shared.key.as_deref()) {
        let _ = send_error(&mut writer, &rejection, &request_id).await;
        return;
    }
    let index = shared.answered.fetch_add(1, Ordering::SeqCst);
    let mut reply =
        std::panic::catch_unwind(AssertUnwindSafe(|| (shared.respond)(&request, index)))
            .unwrap_or_else(|_| Reply::error(500, "server_error", "mock responder panicked"));
    while let Reply::Delay(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    let model = request.body["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stream = request.body["stream"].as_bool() == Some(true);
    let include_usage = request.body["stream_options"]["include_usage"].as_bool() == Some(true);
    let _ = match reply {
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
                send_stream(&mut writer, &answer, include_usage, &request_id).await
            } else {
                send_json(&mut writer, 200, &answer.completion(), &request_id, &[]).await
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
            send_json(&mut writer, status, &envelope, &request_id, &headers).await
        }
        Reply::Delay(..) => Ok(()),
    };
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
    const SIZES: [usize; 4] = [13, 7, 31, 19];
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while start < chars.len() {
        let end = (start + SIZES[i % SIZES.len()]).min(chars.len());
        out.push(chars[start..end].iter().collect());
        start = end;
        i += 1;
    }
    out
}

async fn send_stream(
    writer: &mut OwnedWriteHalf,
    answer: &Answer,
    include_usage: bool,
    request_id: &str,
) -> std::io::Result<()> {
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
    writer
        .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    writer.flush().await?;
    for event in &events {
        writer
            .write_all(format!("data: {event}\n\n").as_bytes())
            .await?;
        writer.flush().await?;
    }
    writer.write_all(b"data: [DONE]\n\n").await?;
    writer.flush().await?;
    writer.shutdown().await
}

async fn send_error(
    writer: &mut OwnedWriteHalf,
    rejection: &Rejection,
    request_id: &str,
) -> std::io::Result<()> {
    let envelope = json!({"error": {"message": rejection.message, "type": rejection.error_type, "param": null, "code": rejection.code}});
    send_json(writer, rejection.status, &envelope, request_id, &[]).await
}

async fn send_json(
    writer: &mut OwnedWriteHalf,
    status: u16,
    body: &Value,
    request_id: &str,
    extra_headers: &[(String, String)],
) -> std::io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    writer.write_all(head.as_bytes()).await?;
    writer.flush().await?;
    writer.shutdown().await
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A parsed HTTP request before it is recorded.
struct RawRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (`content-length` or chunked body). `Ok(None)`: the client closed
/// without sending one.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
) -> Result<Option<RawRequest>, Rejection> {
    let mut request_line = String::new();
    match reader.read_line(&mut request_line).await {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed HTTP request line"));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|_| invalid("connection failed while reading headers"))?;
        if n == 0 {
            return Err(invalid("connection closed inside the header block"));
        }
        header_bytes += n;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(reject(
                431,
                "invalid_request_error",
                "request header block too large",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("malformed header line"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader).await?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid("invalid content-length"))?;
        if length > MAX_BODY_BYTES {
            return Err(reject(413, "invalid_request_error", "request too large"));
        }
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|_| invalid("connection closed before the body was complete"))?;
        body
    } else {
        Vec::new()
    };
    Ok(Some(RawRequest {
        method,
        path,
        headers,
        body,
    }))
}

async fn read_chunked(reader: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>, Rejection> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader
            .read_line(&mut size_line)
            .await
            .map_err(|_| invalid("connection failed inside a chunked body"))?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| invalid("invalid chunk size"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                let n = reader
                    .read_line(&mut trailer)
                    .await
                    .map_err(|_| invalid("connection failed in chunked trailers"))?;
                if n == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(reject(413, "invalid_request_error", "request too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .await
            .map_err(|_| invalid("connection closed inside a chunk"))?;
        let mut crlf = [0u8; 2];
        reader
            .read_exact(&mut crlf)
            .await
            .map_err(|_| invalid("missing CRLF after a chunk"))?;
        if &crlf != b"\r\n" {
            return Err(invalid("missing CRLF after a chunk"));
        }
    }
}

//! The loopback HTTP/1.1 server under the provider mocks (`mock_api.rs`, `mock_gemini.rs`,
//! `mock_openai.rs`), on hyper: it listens, reads whole requests and writes what a mock answers
//! (a full body, an SSE stream paced piece by piece, or nothing at all). It also holds the shell
//! every mock shares: [`Mock`] starts the server, keeps the [`Recorded`] requests, the responder
//! and the optional key, so each mock keeps only its wire format (a [`WireFormat`] on its reply).
//!
//! The mocks reach it as `super::mock_http`: in `tests/common/` it is a sibling module, and the
//! examples include both files at their crate root with `#[path]`.

// Each test binary or example uses only part of this layer, and the module is private there.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited, StreamBody};
use hyper::StatusCode;
use hyper::body::{Body as _, Bytes, Frame, Incoming};
use hyper::ext::ReasonPhrase;
use hyper::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Far above any prompt fullsend sends (and the real Messages API's own limit); keeps a runaway
/// client from exhausting memory.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Guards against a client that never ends its header block; hyper answers 431 above it.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One request, read in full.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target including any query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Names lowercased; every value kept (repeats of a name come together, after its first).
    pub headers: Vec<(String, String)>,
    /// The body as sent (chunked bodies already joined).
    pub body: Bytes,
}

impl Request {
    /// The body as JSON: `Null` if empty, a JSON string holding the raw text if it is not JSON,
    /// so a mock can still record and reject what it cannot parse.
    pub fn json_body(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

/// Why a request never became a [`Request`]; the mock words the refusal in its own envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body is over [`MAX_BODY_BYTES`] (declared or as sent): a 413 for the mock to word.
    TooLarge,
    /// The body could not be read to its end (the client went away, or broke the framing).
    Incomplete,
}

/// What the server sends back. Every response closes its connection afterwards
/// (`connection: close`), as the raw-TCP mocks always did, so each retry is a new connection.
#[derive(Debug, Clone)]
pub enum Response {
    /// A status, headers and a whole body; hyper adds `content-length`.
    Full {
        /// The HTTP status, e.g. 200 or 529.
        status: u16,
        /// Headers as `(name, value)`, written in this order (invalid ones are skipped).
        headers: Vec<(String, String)>,
        /// The body bytes.
        body: Vec<u8>,
    },
    /// The head at once, then the body piece by piece (chunked), e.g. an SSE stream.
    Stream {
        /// The HTTP status, normally 200.
        status: u16,
        /// Headers, e.g. `content-type: text/event-stream`.
        headers: Vec<(String, String)>,
        /// What to send and when.
        steps: Vec<Step>,
    },
    /// Never answer; the connection stays open until the client gives up and closes it.
    Hang,
    /// Wait, then send the inner response (a slow model).
    After(Duration, Box<Response>),
}

impl Response {
    /// This response after `delay`; no wait at all when `delay` is zero.
    pub fn after(self, delay: Duration) -> Response {
        if delay.is_zero() {
            self
        } else {
            Response::After(delay, Box::new(self))
        }
    }
}

/// A `(name, value)` header pair, as [`Response`] takes them.
pub fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// Splits `text` at char boundaries into pieces of `sizes[0]`, `sizes[1]`, ... chars, cycling
/// through `sizes` (which must be non-empty and non-zero), so a streaming mock's clients cannot
/// rely on any particular split.
pub fn split_text(text: &str, sizes: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while start < chars.len() {
        let end = (start + sizes[i % sizes.len()]).min(chars.len());
        out.push(chars[start..end].iter().collect());
        start = end;
        i += 1;
    }
    out
}

/// One step of a [`Response::Stream`].
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes; each leaves in its own write, so clients see real chunk splits.
    Send(Vec<u8>),
    /// Pause before the next step.
    Wait(Duration),
    /// Drop the connection here, without the chunked terminator: the body ends abruptly and
    /// the client sees a broken stream, not a short one. Steps after it are not sent.
    Cut,
}

/// Turns each complete request (or the reason there is none) into a response. Called once per
/// request, before any delay, so requests are recorded and counted in arrival order.
pub type Handler = dyn Fn(Result<Request, BodyError>) -> Response + Send + Sync;

/// A running server on 127.0.0.1; dropping it stops the server and closes every connection.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(
        name: &str,
        handler: impl Fn(Result<Request, BodyError>) -> Response + Send + Sync + 'static,
    ) -> Self {
        Self::start_on(name, 0, handler)
    }

    /// Starts on 127.0.0.1:`port` (0 = any free port) in a background thread named `name`, with
    /// its own tokio runtime: the mock then works from sync tests and from tests that run their
    /// own runtime, and a blocked test thread never stalls the server.
    pub fn start_on(
        name: &str,
        port: u16,
        handler: impl Fn(Result<Request, BodyError>) -> Response + Send + Sync + 'static,
    ) -> Self {
        // Bound here, not in the thread, so the address is known (and a bind failure panics in
        // the test) before `start_on` returns.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("binding the {name} to 127.0.0.1:{port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the {name} address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("making the {name} listener non-blocking: {e}"));
        let handler: Arc<Handler> = Arc::new(handler);
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("building the {thread_name} runtime: {e}"));
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("registering the {thread_name} listener: {e}"));
                    tokio::select! {
                        () = accept_loop(listener, handler) => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Hanging and delayed connections are parked in their tasks; dropping the
                // tasks closes them.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"));
        Server {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, handler: Arc<Handler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&handler)));
            }
            // E.g. EMFILE under a connection storm: back off instead of spinning or dying.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(stream: TcpStream, handler: Arc<Handler>) {
    // Without Nagle each flushed piece leaves in its own segment, so clients see real splits.
    let _ = stream.set_nodelay(true);
    let service =
        service_fn(move |request: hyper::Request<Incoming>| answer(Arc::clone(&handler), request));
    let mut builder = http1::Builder::new();
    // No `date` header: the mocks never sent one, and nothing reads it.
    builder
        .auto_date_header(false)
        .max_header_size(MAX_HEADER_BYTES);
    // An error here is the client going away (or sending garbage, which hyper has already
    // answered with a 400); either way the connection is done and nothing is left to do.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The body every response is boxed into: a full body and a paced stream are different types.
type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

async fn answer(
    handler: Arc<Handler>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let request = read_body(body).await.map(|body| Request {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_owned()),
        headers: header_pairs(&parts.headers),
        body,
    });
    let mut response = (*handler)(request);
    loop {
        response = match response {
            Response::After(delay, inner) => {
                // If the client gives up meanwhile, hyper sees the EOF and drops this future.
                tokio::time::sleep(delay).await;
                *inner
            }
            // hyper keeps reading while a response is pending, sees the client's EOF and then
            // drops this future with the connection, so a hang ends when the client goes away.
            Response::Hang => return std::future::pending().await,
            Response::Full {
                status,
                headers,
                body,
            } => {
                let body: ResponseBody = Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                return Ok(head(status, &headers, body));
            }
            Response::Stream {
                status,
                headers,
                steps,
            } => {
                let frames = futures_util::stream::unfold(VecDeque::from(steps), next_frame);
                return Ok(head(
                    status,
                    &headers,
                    StreamBody::new(frames).boxed_unsync(),
                ));
            }
        };
    }
}

/// Reads the whole body, refusing one over [`MAX_BODY_BYTES`].
async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    // A declared `content-length` over the limit is refused before a byte of it is read, as a
    // real edge does. (`usize` to `u64` never truncates on the targets this runs on.)
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(BodyError::TooLarge);
    }
    // Reading the body is also what makes hyper send `100 Continue` to a client that asked.
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Incomplete),
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The response head around `body`, with `connection: close` so hyper closes the connection
/// once the body is written.
fn head(
    status: u16,
    headers: &[(String, String)],
    body: ResponseBody,
) -> hyper::Response<ResponseBody> {
    let mut response = hyper::Response::new(body);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *response.status_mut() = status;
    if status.canonical_reason().is_none() {
        // hyper would write `<none>`; 529 is Anthropic's "Overloaded".
        let reason: &'static [u8] = if status.as_u16() == 529 {
            b"Overloaded"
        } else {
            b"Unknown"
        };
        response
            .extensions_mut()
            .insert(ReasonPhrase::from_static(reason));
    }
    let map = response.headers_mut();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

type Steps = VecDeque<Step>;

/// The next frame of a paced stream (for `futures_util::stream::unfold`); `None` ends the body
/// cleanly.
async fn next_frame(mut steps: Steps) -> Option<(Result<Frame<Bytes>, std::io::Error>, Steps)> {
    loop {
        match steps.pop_front()? {
            Step::Wait(pause) => tokio::time::sleep(pause).await,
            Step::Send(bytes) => {
                // Pending once first: hyper then flushes what it holds (the head, the previous
                // piece) before taking this one, so every piece leaves in its own write.
                tokio::task::yield_now().await;
                return Some((Ok(Frame::data(Bytes::from(bytes))), steps));
            }
            Step::Cut => {
                // Flush what came before, then fail the body: hyper drops the connection
                // without the final chunk.
                tokio::task::yield_now().await;
                steps.clear();
                let cut = std::io::Error::other("the mock cut the stream");
                return Some((Err(cut), steps));
            }
        }
    }
}

/// One request as a mock received it (including the ones it rejected).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target including any query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names are lowercased; every value is kept, in arrival order except that repeats of a
    /// name come right after its first.
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

impl From<Request> for Recorded {
    fn from(request: Request) -> Self {
        let body = request.json_body();
        Recorded {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body,
        }
    }
}

/// What a test gives a mock: the reply to each valid request, from the request and its 0-based
/// index among the valid ones.
pub type Responder<Reply> = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

/// A provider's wire format, implemented on its reply type: [`Mock`] does the rest.
pub trait WireFormat: Clone + Send + Sync + 'static {
    /// The server thread's name, e.g. `mock-api`.
    const NAME: &'static str;

    /// Turns one request (or the reason there is none) into a response: it records the request
    /// ([`Recorder::record`]), validates it (against [`Recorder::key`]) and, if it is valid, asks
    /// [`Recorder::respond`] for the reply and encodes it. Called once per request, in arrival
    /// order, on the server's threads.
    fn answer(recorder: &Recorder<Self>, request: Result<Request, BodyError>) -> Response;
}

/// The state a mock's server shares with the test's handle: the responder, the optional key, the
/// requests so far and how many were answered.
pub struct Recorder<Reply> {
    respond: Box<Responder<Reply>>,
    /// When set, the mock accepts only this key.
    key: Option<String>,
    recorded: Mutex<Vec<Recorded>>,
    /// Counts requests that passed validation; it is the index given to `respond`.
    answered: AtomicUsize,
}

impl<Reply> Recorder<Reply> {
    fn new(key: Option<String>, respond: Box<Responder<Reply>>) -> Self {
        Recorder {
            respond,
            key,
            recorded: Mutex::new(Vec::new()),
            answered: AtomicUsize::new(0),
        }
    }

    /// The only key the mock accepts, if it was started with one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Records `request` (its body parsed with [`Request::json_body`]) and returns it with its
    /// 0-based number among all recorded requests.
    pub fn record(&self, request: Request) -> (Recorded, usize) {
        let request = Recorded::from(request);
        let mut recorded = self.recorded();
        recorded.push(request.clone());
        let number = recorded.len() - 1;
        (request, number)
    }

    /// The responder's reply to a valid `request`, which takes the next index. A panicking
    /// responder becomes `on_panic(its message)` instead of a silently dropped connection.
    pub fn respond(&self, request: &Recorded, on_panic: impl FnOnce(String) -> Reply) -> Reply {
        let index = self.answered.fetch_add(1, Ordering::SeqCst);
        std::panic::catch_unwind(AssertUnwindSafe(|| (self.respond)(request, index)))
            .unwrap_or_else(|panic| on_panic(panic_message(&*panic)))
    }

    fn recorded(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A panicking responder must not hide the requests from the test that investigates it.
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The text a panic was raised with, or `""`.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// A running mock speaking `Reply`'s wire format; dropping it shuts the server down and closes
/// every connection.
pub struct Mock<Reply> {
    server: Server,
    recorder: Arc<Recorder<Reply>>,
}

impl<Reply: WireFormat> Mock<Reply> {
    /// Starts on 127.0.0.1 with a free port, in a background thread with its own tokio runtime;
    /// any key the wire format allows is accepted. `respond` is called for every request that
    /// passes validation, with the request and its 0-based index among those requests.
    pub fn start(respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::launch(0, None, Box::new(respond))
    }

    /// Like [`Mock::start`], but only `key` is valid.
    pub fn start_with_key(
        key: &str,
        respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::launch(0, Some(key.to_owned()), Box::new(respond))
    }

    /// Like [`Mock::start`], on 127.0.0.1:`port` (0 = any free port).
    pub fn start_on(
        port: u16,
        respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::launch(port, None, Box::new(respond))
    }

    /// Answers with `replies` in order; once they are used up, the last one repeats.
    pub fn sequence(replies: Vec<Reply>) -> Self {
        assert!(
            !replies.is_empty(),
            "{}: sequence needs at least one reply",
            Reply::NAME
        );
        Self::start(move |_, index| replies[index.min(replies.len() - 1)].clone())
    }

    fn launch(port: u16, key: Option<String>, respond: Box<Responder<Reply>>) -> Self {
        let recorder = Arc::new(Recorder::new(key, respond));
        let server_recorder = Arc::clone(&recorder);
        let server = Server::start_on(Reply::NAME, port, move |request| {
            Reply::answer(&*server_recorder, request)
        });
        Mock { server, recorder }
    }
}

impl<Reply> Mock<Reply> {
    /// `http://127.0.0.1:PORT`; clients append the provider's path.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Every request recorded so far, valid or rejected, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorder.recorded().clone()
    }

    /// How many requests `requests()` would return.
    pub fn request_count(&self) -> usize {
        self.recorder.recorded().len()
    }

    /// Polls until at least `n` requests arrived; false on timeout. Useful before killing a client
    /// that is waiting on a hanging or delayed reply.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.request_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

//! Requests to views and actions: the Host check first, then the read or write check, then the
//! answer with the console's security headers (a Content-Security-Policy that allows only the
//! console's own script and style, no framing, no sniffing, no referrer).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::Console;
use super::actions::{self, ActionError};
use super::auth::{Proof, Refusal};
use super::{trail, views};
use crate::bus::queues::Requeue;
use crate::support::http_serve::{Body, reply, streamed};

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The policy every answer carries: scripts and styles from the console only (no inline
/// script, no eval), data from the console only, and never inside another site's frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Largest request body read (a requeue list, a kill reason, a token).
const MAX_BODY: usize = 64 * 1024;

/// The pages; each is also a JSON view under `/api`.
const PAGES: &[(&str, &str)] = &[
    ("/", "/api/trail"),
    ("/experiments", "/api/experiments"),
    ("/queues", "/api/queues"),
    ("/spend", "/api/spend"),
    ("/context", "/api/context"),
];

/// Answers one request.
pub(super) async fn answer(
    console: Arc<Console>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let mut response = route(&console, req, peer).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn json_reply(status: u16, value: &Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

fn error(status: u16, message: &str) -> Response<Body> {
    json_reply(status, &json!({"v": 1, "error": message}))
}

fn refused(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Unauthenticated => error(401, "this needs the console's token"),
        Refusal::Forbidden(why) => error(403, &why),
        Refusal::WrongHost(why) => error(421, &why),
    }
}

fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Who made a request, for the log of changes.
fn who(req: &Request<Incoming>, peer: SocketAddr, proof: Proof) -> String {
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let agent: String = agent.chars().filter(|c| !c.is_control()).take(80).collect();
    format!("{peer} ({proof:?}, {agent})").to_lowercase()
}

async fn route(console: &Console, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if let Err(r) = console.auth.check_host(req.headers()) {
        return refused(r);
    }
    let query_token = query_param(&req, "token");
    if console
        .auth
        .offered_a_wrong_token(req.headers(), query_token.as_deref())
    {
        slow_down_a_guess(console, peer).await;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/assets/console.js") => {
            return reply(200, "text/javascript; charset=utf-8", CONSOLE_JS);
        }
        (&Method::GET, "/assets/console.css") => {
            return reply(200, "text/css; charset=utf-8", CONSOLE_CSS);
        }
        (&Method::POST, "/api/login") => return login(console, req, peer).await,
        _ => {}
    }
    if method == Method::GET
        && let Some((page, api)) = PAGES.iter().find(|(p, _)| *p == path)
    {
        if !wants_json(&req) {
            return page_shell(console, &req, page);
        }
        return read_view(console, &req, api).await;
    }
    if method == Method::GET && path.starts_with("/api/") || path == "/metrics" {
        if method != Method::GET {
            return error(405, "only GET here");
        }
        return read_view(console, &req, &path).await;
    }
    if method == Method::POST && path.starts_with("/api/") {
        let proof = match console.auth.check_write(req.headers()) {
            Ok(p) => p,
            Err(r) => {
                tracing::warn!(peer = %peer, path, "console: refused change: {r:?}");
                let answer = refused(r.clone());
                let who = who(&req, peer, Proof::None);
                console.record(
                    &who,
                    &path,
                    answer.status().as_u16(),
                    json!({"refused": format!("{r:?}")}),
                );
                return answer;
            }
        };
        let who = who(&req, peer, proof);
        let (status, outcome) = change(console, req, &path, &who).await;
        console.record(&who, &path, status, outcome.clone());
        return json_reply(status, &outcome);
    }
    error(404, "no such page")
}

/// A page: the shell, whose script fetches the view. A `?token=` that is right sets the cookie
/// and comes back without it, so the token leaves the address bar and the history.
fn page_shell(console: &Console, req: &Request<Incoming>, page: &str) -> Response<Body> {
    if let Some(token) = query_param(req, "token") {
        if !console.auth.is_token(&token) {
            return error(401, "wrong token");
        }
        let mut r = reply(303, "text/plain", "");
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(page) {
            h.insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&console.auth.cookie()) {
            h.insert(header::SET_COOKIE, v);
        }
        return r;
    }
    reply(200, "text/html; charset=utf-8", INDEX_HTML)
}

/// A wrong token costs a second, one guess at a time whoever makes them: the token cannot be
/// guessed at speed, in parallel or not.
async fn slow_down_a_guess(console: &Console, peer: SocketAddr) {
    tracing::warn!(peer = %peer, "console: a wrong token");
    let _one_at_a_time = console.guesses.lock().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

async fn login(console: &Console, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Ok(body) = read_json(req).await else {
        return error(400, "send {\"token\": \"…\"}");
    };
    let token = body["token"].as_str().unwrap_or_default().trim();
    if !console.auth.is_token(token) {
        slow_down_a_guess(console, peer).await;
        return error(401, "wrong token");
    }
    tracing::info!(peer = %peer, "console: logged in");
    let mut r = json_reply(200, &json!({"v": 1, "logged_in": true}));
    if let Ok(v) = HeaderValue::from_str(&console.auth.cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn read_json(req: Request<Incoming>) -> anyhow::Result<Value> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes: Bytes = limited
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn read_view(console: &Console, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let proof = match console.auth.check_read(req.headers()) {
        Ok(p) => p,
        Err(r) => {
            if path == "/api/session" {
                return json_reply(
                    200,
                    &json!({"v": 1, "authenticated": false, "reads_need_token": true}),
                );
            }
            return refused(r);
        }
    };
    let config = &console.config;
    if path == "/api/session" {
        let mut session = json!({
            "v": 1,
            "authenticated": proof != Proof::None,
            "reads_need_token": console.auth.reads_need_token,
        });
        if proof != Proof::None {
            session["csrf"] = json!(console.auth.csrf());
        }
        return json_reply(200, &session);
    }
    if path == "/api/context" {
        return json_reply(200, &views::context(config));
    }
    if let Some(name) = path.strip_prefix("/api/context/history/") {
        return match views::worklist_version(config, name) {
            Some(text) => reply(200, "text/markdown; charset=utf-8", text),
            None => error(404, "no such worklist version"),
        };
    }
    let conn = console.redis.get().await;
    if path == "/metrics" {
        let body = crate::bus::queues::scrape(conn, &views::roles(config)).await;
        return reply(200, crate::support::metrics::CONTENT_TYPE, body);
    }
    if path == "/api/trail" {
        let mut conn = conn;
        let items = recent(console, conn.as_mut()).await;
        let mut v = trail::as_json(&items);
        v["redis"] = json!(conn.is_some());
        return json_reply(200, &v);
    }
    if path == "/api/events" {
        return events(console, conn).await;
    }
    let Some(mut conn) = conn else {
        return error(502, "Redis is unreachable");
    };
    let result = if path == "/api/experiments" {
        views::experiments(&mut conn).await.map(Some)
    } else if let Some(id) = path.strip_prefix("/api/experiments/") {
        views::experiment(&mut conn, id).await
    } else if path == "/api/queues" {
        views::queues(&mut conn, config).await.map(Some)
    } else if path == "/api/spend" {
        let days = query_param(req, "days")
            .and_then(|d| d.parse().ok())
            .unwrap_or(30u32)
            .clamp(1, 40);
        views::spend(&mut conn, config, days).await.map(Some)
    } else {
        return error(404, "no such view");
    };
    match result {
        Ok(Some(v)) => json_reply(200, &v),
        Ok(None) => error(404, "not found"),
        Err(err) => error(502, &format!("{err:#}")),
    }
}

/// The trail's recent past: the last 200 entries of each channel and decisions.
async fn recent(console: &Console, conn: Option<&mut crate::bus::store::Conn>) -> Vec<trail::Item> {
    // A few at a time: each reads up to 4 MiB of the decision log and 1,000 stream entries.
    let _slot = console.snapshots.acquire().await;
    let config = &console.config;
    trail::snapshot(conn, &config.channels(), &config.decision_log(), 200).await
}

/// The live trail as server-sent events: first `snapshot` (the recent past), then one `item`
/// per new message or decision; `resync` when this page fell too far behind.
async fn events(console: &Console, mut conn: Option<crate::bus::store::Conn>) -> Response<Body> {
    // Subscribe before reading the past, so nothing falls between the two.
    let mut live = console.feed.subscribe();
    let items = recent(console, conn.as_mut()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let first = format!("event: snapshot\ndata: {}\n\n", trail::as_json(&items));
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        loop {
            let chunk = tokio::select! {
                item = live.recv() => match item {
                    Ok(item) => format!(
                        "id: {}\nevent: item\ndata: {}\n\n",
                        item.key.replace(['\n', '\r'], " "),
                        serde_json::to_string(&item).unwrap_or_default()
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        "event: resync\ndata: {}\n\n".to_string()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep(std::time::Duration::from_secs(15)) => ": ping\n\n".into(),
            };
            // A page that stops reading without closing is let go after 30 s.
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                tx.send(Bytes::from(chunk)),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break; // the page went away
            }
        }
    });
    let mut r = Response::new(streamed(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn change(console: &Console, req: Request<Incoming>, path: &str, who: &str) -> (u16, Value) {
    let fail = |status: u16, message: &str| (status, json!({"v": 1, "error": message}));
    let Ok(body) = read_json(req).await else {
        return fail(400, "the body is not JSON");
    };
    let Some(mut conn) = console.redis.get().await else {
        return fail(502, "Redis is unreachable");
    };
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let result = match parts.as_slice() {
        ["experiments", id, verb] => match actions::lifecycle_action(verb) {
            Some(action) => {
                let reason = body["reason"].as_str().unwrap_or_default();
                actions::lifecycle(&console.config, &mut conn, action, id, reason, who).await
            }
            None => return fail(404, "the verbs are kill, pause and resume"),
        },
        ["queues", role, "requeue"] => {
            let Some((_, channel)) = views::roles(&console.config)
                .into_iter()
                .find(|(r, _)| r == role)
            else {
                return fail(404, "the roles are orchestrator and fullsend");
            };
            let which = if body["all"] == json!(true) {
                Requeue::All
            } else {
                let ids: Vec<String> = body["ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                if ids.is_empty() || ids.iter().any(|i| !is_entry_id(i)) {
                    return fail(
                        400,
                        "send {\"ids\": [\"<dead-letter id>\", …]} or {\"all\": true}",
                    );
                }
                Requeue::Ids(ids)
            };
            actions::requeue(&mut conn, role, &channel, &which, who).await
        }
        _ => return fail(404, "no such action"),
    };
    match result {
        Ok(v) => (200, v),
        Err(ActionError::Refused(why)) => fail(409, &why),
        Err(ActionError::Failed(why)) => fail(502, &why),
    }
}

/// A stream entry id: `<ms>-<seq>`.
fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.len() <= 20
            && b.len() <= 20
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

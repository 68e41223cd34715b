//! `fullsend web`, the operator's console: over plain HTTP (every view as JSON, the token and
//! CSRF rules, the security headers, kill/pause/resume and requeue through the same code as
//! the CLI, server-sent events) and in a real headless Chromium (the live trail after one
//! escalation went through both listeners, a dead letter requeued from the page, a page without
//! the token, model text shown as text).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::browser::Browser;
use crate::common::fake_claude::Behavior;
use crate::common::mock_api::{self, MockApi, Reply};
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually, of_type};

/// A running `fullsend web`.
struct Web {
    child: Child,
    port: u16,
    url: String,
    login_url: Option<String>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Web {
    fn start(w: &World, args: &[&str]) -> Web {
        let mut all = vec!["web", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = w.spawn(&all, "web.log");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("the first line");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        let started: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "web printed {line:?} ({e}); its log:\n{}",
                crate::support::read(&w.path("web.log"))
            )
        });
        let url = started["url"].as_str().expect("url").to_string();
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        Web {
            child,
            port,
            url,
            login_url: started["login_url"].as_str().map(str::to_string),
            lines,
        }
    }

    /// The change records printed so far.
    fn changes(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        http(self.port, "GET", path, headers, "")
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        http(self.port, "POST", path, headers, body)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status code, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.body))
    }
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

const REASONING: &str = "HN founders who post hiring threads have budget and reply to specifics";
const EXPERIMENT: &str = "exp_20261203_console_hn";

/// An Orchestrator model that dispatches the escalation and answers the rest with no_action.
fn dispatching_world() -> World {
    World::with_redis()
        .mock(MockApi::start(|r, _| {
            if mock_api::user_text(r).contains("\"escalation\"") {
                Reply::text(
                    json!({"action": "dispatch_to_fullsend", "reasoning": REASONING, "priority": "high",
                           "payload": {"idea": "Email founders from HN Who is Hiring"}})
                    .to_string(),
                )
            } else {
                Reply::text(json!({"action": "no_action", "reasoning": "noted"}).to_string())
            }
        }))
        .with_fake_claude(Behavior::Reply(crate::design::spec_reply(EXPERIMENT)))
        .set("FULLSEND_DESIGN_MODE", "single")
}

#[test]
fn the_live_trail_shows_one_escalation_through_both_listeners_in_a_browser() {
    let w = dispatching_world();
    let orchestrator = Listener::start(&w, &["orchestrator", "--lease", "10"], "o.log");
    let designer = Listener::start(&w, &["fullsend", "--lease", "10"], "f.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 1);
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    let web = Web::start(&w, &[]);
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    // The page is open and following before the escalation arrives: what follows comes live.
    browser.goto(&web.url);
    browser.wait_for(
        "document.getElementById('status').textContent === 'live'",
        Duration::from_secs(20),
    );
    let escalation = json!({"type": "escalation", "source": "watcher", "priority": "high",
        "original_message": {"username": "jake", "content": "HN hiring posts: worth a test?"}});
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation.to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no experiment_ready within 60 s; the listeners said:\n{:?}\n{:?}",
            orchestrator.lines(),
            designer.lines()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // One card holds the whole loop: received, decided (with its reasoning), dispatched,
    // experiment_ready (with the experiment id).
    let card = browser.wait_for(
        &format!(
            "(() => {{ const c = [...document.querySelectorAll('.trace')].find(c => c.innerText.includes({REASONING:?}) && c.innerText.includes({EXPERIMENT:?})); \
               return c ? [...c.querySelectorAll('.kind')].map(k => k.textContent) : null; }})()"
        ),
        Duration::from_secs(30),
    );
    let kinds: Vec<&str> = card
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in ["received", "decided", "dispatched", "experiment ready"] {
        assert!(kinds.contains(&expected), "{expected} missing in {kinds:?}");
    }
    std::fs::write(w.path("console.png"), browser.screenshot()).expect("screenshot");
    if let Ok(path) = std::env::var("FULLSEND_CONSOLE_SCREENSHOT") {
        std::fs::copy(w.path("console.png"), path).expect("copy the screenshot");
    }
    // The other pages, as an operator goes through them after the loop.
    browser.goto(&format!("{}spend", web.url));
    // Today's bar: one part per role (orchestrator, fullsend) and per model (opus, sonnet).
    let bars = browser.wait_for(
        "(() => { const r = document.querySelectorAll('.chart-by_role rect').length; \
                  const m = document.querySelectorAll('.chart-by_model rect').length; \
                  return r > 0 && m > 0 ? [r, m] : null; })()",
        Duration::from_secs(20),
    );
    assert_eq!(bars, json!([2, 2]));
    browser.goto(&format!("{}context", web.url));
    browser.wait_for(
        "document.body.innerText.includes('Worklist history') && document.querySelectorAll('.md li').length > 0",
        Duration::from_secs(20),
    );
    // Pausing the new experiment from its page, logged in through the printed address.
    browser.goto(web.login_url.as_deref().expect("login url"));
    browser.wait_for("location.search === ''", Duration::from_secs(20));
    browser.goto(&format!("{}experiments", web.url));
    browser.wait_for(
        &format!("document.querySelector('[data-id={EXPERIMENT:?}]') !== null"),
        Duration::from_secs(20),
    );
    browser.eval(&format!(
        "document.querySelector('[data-id={EXPERIMENT:?}]').click(); true"
    ));
    browser.wait_for(
        "document.querySelector('[data-action=\"pause\"]') !== null",
        Duration::from_secs(20),
    );
    browser.eval(
        "document.querySelector('input.reason').value = 'paused from the test'; \
         document.querySelector('[data-action=\"pause\"]').click(); true",
    );
    let state = eventually(Duration::from_secs(20), "paused", || {
        let s: Option<String> = redis::cmd("HGET")
            .arg(format!("experiments:{EXPERIMENT}"))
            .arg("state")
            .query(&mut c)
            .expect("hget");
        (s.as_deref() == Some("paused")).then_some(s)
    });
    assert_eq!(state.as_deref(), Some("paused"));
    let reason: Option<String> = redis::cmd("HGET")
        .arg(format!("experiments:{EXPERIMENT}"))
        .arg("paused_reason")
        .query(&mut c)
        .expect("hget");
    assert_eq!(reason.as_deref(), Some("paused from the test"));
    // The change record is printed once the answer is made, a moment after the write.
    eventually(Duration::from_secs(10), "the change record", || {
        (!web.changes().is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let changes = web.changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        changes[0]["what"],
        format!("/api/experiments/{EXPERIMENT}/pause")
    );
    // The same trail as JSON, and the spend of both roles on today's chart.
    let trail = web.get("/", &[("Accept", "application/json")]).json();
    assert!(
        trail["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["kind"] == "decided" && i["body"]["reasoning"] == REASONING),
        "{trail}"
    );
    let spend = web.get("/api/spend?days=30", &[]).json();
    let today = spend["days"]
        .as_array()
        .and_then(|d| d.last())
        .expect("today");
    assert_eq!(spend["days"].as_array().map(Vec::len), Some(30));
    for role in ["orchestrator", "fullsend"] {
        assert!(
            today["by_role"][role].as_f64().unwrap_or(0.0) > 0.0,
            "{role}: {today}"
        );
    }
    assert!(
        today["by_model"]["sonnet"].as_f64().unwrap_or(0.0) > 0.0,
        "{today}"
    );
    assert_eq!(orchestrator.stop(), 0);
    assert_eq!(designer.stop(), 0);
}

fn dead_letter(w: &World, stream_key: &str, data: &str) -> String {
    let mut c = w.conn();
    redis::cmd("XADD")
        .arg(stream_key)
        .arg("*")
        .arg("data")
        .arg(data)
        .arg("error")
        .arg("message is not JSON")
        .arg("deliveries")
        .arg("1")
        .query(&mut c)
        .expect("xadd")
}

fn stream_data(w: &World, stream_key: &str) -> Vec<String> {
    let mut c = w.conn();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream_key)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    entries
        .into_iter()
        .filter_map(|(_, f)| f.get("data").cloned())
        .collect()
}

const DLQ: &str = "fullsend:{to_fullsend}:dlq";
const STREAM: &str = "fullsend:{to_fullsend}:stream";

#[test]
fn a_dead_letter_is_requeued_from_the_page_once_even_when_clicked_twice() {
    let w = World::with_redis();
    let first = dead_letter(
        &w,
        DLQ,
        "{\"type\":\"experiment_request\",\"idea\":\"one\"}",
    );
    let second = dead_letter(
        &w,
        DLQ,
        "{\"type\":\"experiment_request\",\"idea\":\"two\"}",
    );
    let web = Web::start(&w, &[]);
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    // The printed login address sets the cookie and drops the token from the address bar.
    browser.goto(
        web.login_url
            .as_deref()
            .expect("a made-up token is printed"),
    );
    browser.wait_for(
        "location.search === '' && document.readyState === 'complete'",
        Duration::from_secs(20),
    );
    browser.goto(&format!("{}queues", web.url));
    browser.wait_for(
        &format!("document.querySelector('[data-requeue=\"{first}\"]') !== null"),
        Duration::from_secs(20),
    );
    browser.eval(&format!(
        "(() => {{ const b = document.querySelector('[data-requeue=\"{first}\"]'); b.click(); b.click(); return true; }})()"
    ));
    browser.wait_for(
        &format!(
            "document.querySelector('[data-requeue=\"{first}\"]') === null && document.querySelector('[data-requeue=\"{second}\"]') !== null"
        ),
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Every effect counted: the one clicked is on its stream once and gone from the dead
    // letters; the other is untouched.
    assert_eq!(
        stream_data(&w, STREAM),
        vec!["{\"type\":\"experiment_request\",\"idea\":\"one\"}".to_string()]
    );
    assert_eq!(
        stream_data(&w, DLQ),
        vec!["{\"type\":\"experiment_request\",\"idea\":\"two\"}".to_string()]
    );
    // Both clicks are in the log of changes, and one of them moved the dead letter.
    let changes = eventually(Duration::from_secs(5), "two change records", || {
        let c = web.changes();
        (c.len() >= 2).then_some(c)
    });
    // The second finds it gone: refused (409) when it looked after the first moved it, or
    // answered with nothing moved when both looked at once and the move script ran twice.
    let moved: usize = changes
        .iter()
        .map(|c| c["outcome"]["requeued"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(moved, 1, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c["status"] == 200 || c["status"] == 409),
        "{changes:?}"
    );
    for c in &changes {
        assert_eq!(c["what"], "/api/queues/fullsend/requeue");
        assert!(
            c["who"].as_str().unwrap_or_default().contains("cookie"),
            "{c}"
        );
    }
}

#[test]
fn without_the_token_the_page_asks_for_it_and_every_request_is_refused() {
    let token = "console-token-0123456789abcdef";
    let w = World::with_redis().set("FULLSEND_WEB_TOKEN", token);
    let dlq_id = dead_letter(&w, DLQ, "kept");
    let web = Web::start(&w, &[]);
    assert!(
        web.login_url.is_none(),
        "a configured token is never printed"
    );
    for path in [
        "/api/queues",
        "/api/trail",
        "/api/events",
        "/metrics",
        "/api/context",
    ] {
        assert_eq!(web.get(path, &[]).status, 401, "{path}");
    }
    let requeue = format!("{{\"ids\":[\"{dlq_id}\"]}}");
    assert_eq!(
        web.post("/api/queues/fullsend/requeue", &[], &requeue)
            .status,
        401
    );
    let wrong = web.post(
        "/api/queues/fullsend/requeue",
        &[("Authorization", "Bearer nope")],
        &requeue,
    );
    assert_eq!(wrong.status, 401);
    // The token itself is no cookie: a login gives a session id (never the token), which
    // other servers on localhost may see but which dies with this process.
    let raw = format!("fullsend_token={token}");
    assert_eq!(web.get("/api/queues", &[("Cookie", &raw)]).status, 401);
    let started = std::time::Instant::now();
    let guess = web.post(
        "/api/login",
        &[],
        r#"{"token":"console-token-guess-00000"}"#,
    );
    assert_eq!(guess.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "a wrong token costs a second"
    );
    let login = web.post("/api/login", &[], &json!({"token": token}).to_string());
    assert_eq!(login.status, 200);
    let set_cookie = login.header("set-cookie").expect("a cookie").to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(!set_cookie.contains(token), "{set_cookie}");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .to_string();
    assert_eq!(web.get("/api/queues", &[("Cookie", &cookie)]).status, 200);
    // The cookie alone is not enough for a change: a page on another site could send it.
    let no_csrf = web.post(
        "/api/queues/fullsend/requeue",
        &[("Cookie", &cookie)],
        &requeue,
    );
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let session = web.get("/api/session", &[("Cookie", &cookie)]).json();
    let csrf = session["csrf"]
        .as_str()
        .expect("csrf for a logged-in page")
        .to_string();
    let cross = web.post(
        "/api/queues/fullsend/requeue",
        &[
            ("Cookie", &cookie),
            ("X-Fullsend-CSRF", &csrf),
            ("Origin", "http://evil.example"),
        ],
        &requeue,
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    // A rebound DNS name reaching the loopback console is refused before anything else.
    let rebound = web.get(
        "/api/queues",
        &[("Host", "evil.example"), ("Cookie", &cookie)],
    );
    assert_eq!(rebound.status, 421);
    assert_eq!(
        stream_data(&w, DLQ),
        vec!["kept".to_string()],
        "nothing moved"
    );
    // The real page: the login form, then the token, then the data.
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    browser.goto(&format!("{}queues", web.url));
    browser.wait_for(
        "!document.getElementById('login').hidden",
        Duration::from_secs(20),
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-role]') === null"),
        json!(true)
    );
    browser.eval(&format!(
        "document.getElementById('token').value = {token:?}; document.getElementById('login').requestSubmit(); true"
    ));
    browser.wait_for(
        &format!("document.querySelector('[data-requeue=\"{dlq_id}\"]') !== null"),
        Duration::from_secs(20),
    );
    // HttpOnly: the page's script cannot read the token.
    assert_eq!(
        browser.eval("document.cookie.includes('fullsend_token')"),
        json!(false)
    );
}

#[test]
fn a_public_address_without_a_token_does_not_start() {
    let w = World::bare();
    let r = w.run(&["web", "--listen", "0.0.0.0:0"], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("FULLSEND_WEB_TOKEN"), "{}", r.stderr);
}

#[test]
fn model_and_chat_text_is_shown_as_text_never_run() {
    let w = World::with_redis();
    let hostile = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "escalation", "content": hostile, "msg_id": "m-hostile"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = json!({"logged_at": "2026-12-03T10:00:00.000000+00:00", "msg_id": "m-hostile",
        "decision": {"action": "no_action", "reasoning": format!("reasoning {hostile}"),
                     "thinking": hostile, "message": {"msg_id": "m-hostile"}}});
    std::fs::write(w.context().join("decisions.jsonl"), format!("{line}\n")).expect("log");
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_hostile")
        .arg(&[
            ("state", "ready"),
            ("hypothesis", hostile),
            ("spec", hostile),
        ])
        .query(&mut c)
        .expect("hset");
    let web = Web::start(&w, &[]);
    let page = web.get("/", &[]);
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    browser.goto(&web.url);
    browser.wait_for(
        "document.body.innerText.includes('reasoning <script>window.__pwned = 1</script>')",
        Duration::from_secs(20),
    );
    browser.goto(&format!("{}experiments", web.url));
    browser.wait_for(
        "document.querySelector('[data-id=\"exp_hostile\"]') !== null",
        Duration::from_secs(20),
    );
    browser.eval("document.querySelector('[data-id=\"exp_hostile\"]').click(); true");
    browser.wait_for(
        "document.querySelector('.spec') !== null",
        Duration::from_secs(20),
    );
    assert_eq!(
        browser.eval("document.querySelector('.spec').textContent"),
        json!(hostile)
    );
    assert_eq!(
        browser.eval(
            "[typeof window.__pwned, document.querySelectorAll('img[src=x], main script').length]"
        ),
        json!(["undefined", 0])
    );
}

#[test]
fn every_view_answers_as_json_and_changes_go_through_the_cli_code() {
    let w = World::with_redis();
    let mut c = w.conn();
    for id in ["exp_console_a", "exp_console_b"] {
        let _: () = redis::cmd("HSET")
            .arg(format!("experiments:{id}"))
            .arg(&[
                ("state", "ready"),
                ("status", "ready"),
                ("hypothesis", "CTOs reply to repo-specific notes"),
                ("schedule", "0 9 * * 1"),
                ("spec", "experiment:\n  id: x\n"),
            ])
            .query(&mut c)
            .expect("hset");
        let _: () = redis::cmd("SET")
            .arg(format!("schedules:{id}"))
            .arg("0 9 * * 1")
            .query(&mut c)
            .expect("set");
    }
    let r = w.run(
        &["worklist", "set"],
        "# Worklist\n\n## Active (In Progress)\n- [ ] first\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = w.run(
        &["worklist", "set"],
        "# Worklist\n\n## Active (In Progress)\n- [x] second\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let token = "console-token-0123456789abcdef";
    let w = w.set("FULLSEND_WEB_TOKEN", token);
    let web = Web::start(&w, &[]);
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    for (page, api) in [
        ("/experiments", "/api/experiments"),
        ("/queues", "/api/queues"),
        ("/context", "/api/context"),
    ] {
        let mut a = web
            .get(page, &[auth[0], ("Accept", "application/json")])
            .json();
        let mut b = web.get(api, &auth).json();
        for v in [&mut a, &mut b] {
            // Idle times move between the two reads.
            for role in v["roles"].as_array_mut().into_iter().flatten() {
                role["listeners"] = json!(null);
            }
        }
        assert_eq!(a, b, "{page}");
    }
    let html = web.get("/experiments", &auth);
    assert!(
        html.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let list = web.get("/api/experiments", &auth).json();
    assert_eq!(
        list["experiments"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    let one = web.get("/api/experiments/exp_console_a", &auth).json();
    assert_eq!(one["spec_yaml"], "experiment:\n  id: x\n");
    assert_eq!(web.get("/api/experiments/..%2Fetc", &auth).status, 404);
    let context = web.get("/api/context", &auth).json();
    assert!(
        context["worklist"]
            .as_str()
            .unwrap_or_default()
            .contains("second")
    );
    let history = context["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{context}");
    let name = history[0]["name"].as_str().expect("name");
    let old = web.get(&format!("/api/context/history/{name}"), &auth);
    assert!(old.body.contains("first"), "{}", old.body);
    assert_eq!(
        web.get("/api/context/history/..%2F..%2Fetc%2Fpasswd", &auth)
            .status,
        404
    );
    // Requeue all: every dead letter back on its stream, once.
    let mut c = w.conn();
    for data in ["a", "b"] {
        let _: String = redis::cmd("XADD")
            .arg(DLQ)
            .arg("*")
            .arg("data")
            .arg(data)
            .query(&mut c)
            .expect("xadd");
    }
    let all = web
        .post("/api/queues/fullsend/requeue", &auth, r#"{"all":true}"#)
        .json();
    assert_eq!(all["requeued"].as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(
        stream_data(&w, STREAM),
        vec!["a".to_string(), "b".to_string()]
    );
    assert!(stream_data(&w, DLQ).is_empty());
    let bad = web.post("/api/queues/fullsend/requeue", &auth, r#"{"ids":["../x"]}"#);
    assert_eq!(bad.status, 400);
    let metrics = web.get("/metrics", &auth);
    assert!(
        metrics
            .body
            .contains("fullsend_dead_letters{role=\"fullsend\"} 0"),
        "{}",
        metrics.body
    );

    // Pause, resume and kill through the console; the same as `fullsend dispatch` on the twin.
    let act = |verb: &str, id: &str| {
        web.post(
            &format!("/api/experiments/{id}/{verb}"),
            &auth,
            &json!({"reason": "console test"}).to_string(),
        )
    };
    assert_eq!(act("pause", "exp_console_a").status, 200);
    assert_eq!(
        act("pause", "exp_console_a").status,
        200,
        "pausing twice changes nothing"
    );
    assert_eq!(act("resume", "exp_console_a").status, 200);
    let killed = act("kill", "exp_console_a");
    assert_eq!(killed.status, 200, "{}", killed.body);
    assert_eq!(
        act("kill", "exp_console_a").status,
        200,
        "killing twice changes nothing"
    );
    assert_eq!(act("kill", "exp_nope").status, 409);
    assert_eq!(act("explode", "exp_console_a").status, 404);
    let r = w.run(
        &["dispatch"],
        &json!({"action": "kill_experiment", "experiment_id": "exp_console_b", "payload": {"reason": "console test"}}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fields = |id: &str| -> std::collections::BTreeMap<String, String> {
        let mut c = w.conn();
        let mut h: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("experiments:{id}"))
            .query(&mut c)
            .expect("hgetall");
        h.retain(|k, _| !k.ends_with("_at"));
        h
    };
    let (a, b) = (fields("exp_console_a"), fields("exp_console_b"));
    assert_eq!(a.get("state").map(String::as_str), Some("archived"));
    for field in ["state", "status", "archived_by", "archived_reason"] {
        assert_eq!(a.get(field), b.get(field), "{field}: {a:?} vs {b:?}");
    }
    let mut c = w.conn();
    let schedule: Option<String> = redis::cmd("GET")
        .arg("schedules:exp_console_a")
        .query(&mut c)
        .expect("get");
    assert_eq!(schedule, None);
    // Each change announced once: paused, resumed, killed.
    let announced: Vec<String> =
        crate::support::stream_messages(&mut c, "fullsend:{experiments}:stream")
            .into_iter()
            .filter(|m| m["experiment_id"] == "exp_console_a")
            .filter_map(|m| m["type"].as_str().map(str::to_string))
            .collect();
    for kind in [
        "experiment_paused",
        "experiment_resumed",
        "experiment_archived",
    ] {
        assert_eq!(
            announced.iter().filter(|k| *k == kind).count(),
            1,
            "{kind} in {announced:?}"
        );
    }
    let changes = web.changes();
    let kills: Vec<&Value> = changes
        .iter()
        .filter(|c| c["what"] == "/api/experiments/exp_console_a/kill")
        .collect();
    assert_eq!(kills.len(), 2, "{changes:?}");
    assert!(
        kills[0]["who"]
            .as_str()
            .unwrap_or_default()
            .contains("bearer")
    );
    assert_eq!(
        changes.len(),
        9,
        "every change asked is recorded: {changes:?}"
    );
}

#[test]
fn server_sent_events_send_the_recent_past_then_each_new_message() {
    let w = World::with_redis();
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "escalation", "content": "before the page"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let web = Web::start(&w, &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", web.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        web.port
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut event = String::new();
    let mut published = false;
    while events.iter().filter(|(e, _)| e == "item").count() < 1 {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            panic!("the event stream ended: {events:?}");
        }
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((event.clone(), serde_json::from_str(data).expect("json")));
            if event == "snapshot" && !published {
                published = true;
                let r = w.run(
                    &["publish", "fullsend:to_orchestrator"],
                    &json!({"type": "escalation", "content": "after the page"}).to_string(),
                );
                assert_eq!(r.code, 0, "{}", r.stderr);
            }
        }
    }
    assert_eq!(events[0].0, "snapshot");
    let past = &events[0].1["items"];
    assert!(past.to_string().contains("before the page"), "{past}");
    assert!(!past.to_string().contains("after the page"));
    let live = &events.iter().find(|(e, _)| e == "item").expect("item").1;
    assert_eq!(live["kind"], "received");
    assert_eq!(live["body"]["content"], "after the page");
    drop(web);
}

#[test]
fn the_console_comes_up_without_redis_and_says_so() {
    let w = World::bare().set("REDIS_URL", "redis://127.0.0.1:1/");
    std::fs::write(
        w.context().join("worklist.md"),
        "# Worklist\n- [ ] still readable\n",
    )
    .expect("worklist");
    let web = Web::start(&w, &[]);
    let queues = web.get("/api/queues", &[]);
    assert_eq!(queues.status, 502);
    assert_eq!(queues.json()["error"], "Redis is unreachable");
    let trail = web.get("/api/trail", &[]).json();
    assert_eq!(trail["redis"], false);
    let context = web.get("/api/context", &[]).json();
    assert!(
        context["worklist"]
            .as_str()
            .unwrap_or_default()
            .contains("still readable")
    );
    assert_eq!(web.get("/", &[]).status, 200);
}

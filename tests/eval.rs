//! `fullsend eval`: the shipped decision and design cases pass on their replies (what CI
//! runs), a case broken on purpose fails with its reason, and `--record` captures a model's
//! answers as a replay file that reproduces the run.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::mock_api::{self, MockApi, Reply};
use crate::support::World;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn eval(w: &World, cases: &Path, provider: &str) -> crate::support::Run {
    eval_with(w, cases, provider, &[])
}

fn eval_with(w: &World, cases: &Path, provider: &str, more: &[&str]) -> crate::support::Run {
    let mut args = vec![
        "eval",
        cases.to_str().expect("utf8"),
        "--provider",
        provider,
    ];
    args.extend_from_slice(more);
    w.run(&args, "")
}

#[test]
fn the_shipped_cases_pass_on_their_recorded_replies() {
    let w = World::bare();
    for (cases, replies, n) in [
        ("evals/decisions.yaml", "evals/replies/decisions.jsonl", 7),
        ("evals/designs.yaml", "evals/replies/designs.jsonl", 3),
    ] {
        let r = eval(
            &w,
            &repo(cases),
            &format!("replay:{}", repo(replies).display()),
        );
        assert_eq!(r.code, 0, "{cases}: {}\n{}", r.stderr, r.stdout);
        let report = r.json();
        assert_eq!(report["passed"], n, "{report}");
        assert_eq!(report["failed"], 0);
        assert!(r.stderr.contains("pass"), "a table on stderr: {}", r.stderr);
    }
}

#[test]
fn a_case_broken_on_purpose_fails_and_says_why() {
    let w = World::bare();
    let text = std::fs::read_to_string(repo("evals/decisions.yaml")).expect("cases");
    let broken = text.replacen(
        "    actions: [kill_experiment, record_learning]",
        "    actions: [dispatch_to_fullsend]",
        1,
    );
    assert_ne!(broken, text, "the case to break is still there");
    let path = w.path("broken.yaml");
    std::fs::write(&path, broken).expect("write");
    let replies = format!("replay:{}", repo("evals/replies/decisions.jsonl").display());
    let r = eval(&w, &path, &replies);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["failed"], 1, "{report}");
    let case = report["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["pass"] == false))
        .cloned()
        .expect("the failing case");
    assert_eq!(case["name"], "metric_alert_kills_and_learns");
    assert!(
        case["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("expected action dispatch_to_fullsend, got kill_experiment"),
        "{case}"
    );
    assert!(r.stderr.contains("FAIL"), "{}", r.stderr);
    // A design whose answer is no complete spec fails too.
    let designs = w.path("designs.yaml");
    std::fs::write(&designs, "- name: stub\n  idea: Email some people\n").expect("write");
    let stub = w.path("stub.jsonl");
    std::fs::write(
        &stub,
        json!({"text": "```yaml\nexperiment:\n  id: exp_20261202_stub\n```"}).to_string(),
    )
    .expect("write");
    let r = eval(&w, &designs, &format!("replay:{}", stub.display()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["cases"][0]["pass"], false);
    // Bad case files are usage errors, named.
    std::fs::write(&designs, "- name: x\n").expect("write");
    let r = eval(&w, &designs, &replies);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("needs a `message`"), "{}", r.stderr);
}

#[test]
fn record_once_then_replay_gives_the_same_decisions_without_a_model() {
    // The "real" model: a Messages-API mock that kills on alerts and asks otherwise.
    let mock = MockApi::start(|req, _| {
        let text = mock_api::user_text(req);
        if text.contains("metric_alert") {
            Reply::text(
                json!({"actions": [
                    {"action": "kill_experiment", "experiment_id": "exp_20261120_cfo_cold_email"},
                    {"action": "record_learning", "payload": {"learning": "CFOs ignore cold email: 1 of 250"}}
                ], "reasoning": "failing", "priority": "high"})
                .to_string(),
            )
        } else {
            Reply::text(
                json!({"action": "ask_for_context", "payload": {"question": "Which audience?"}, "reasoning": "vague"})
                    .to_string(),
            )
        }
    });
    let w = World::bare().mock(mock);
    let cases = w.path("cases.yaml");
    let text = std::fs::read_to_string(repo("evals/decisions.yaml")).expect("cases");
    std::fs::write(&cases, text).expect("write");
    let recorded = w.path("replies/recorded.jsonl");
    std::fs::create_dir_all(recorded.parent().expect("dir")).expect("dir");
    let r = eval_with(
        &w,
        &cases,
        "anthropic",
        &["--only", "a", "--record", recorded.to_str().expect("utf8")],
    );
    let live = r.json();
    let requests = w.mock_api().requests();
    let calls = requests.len();
    assert!(calls >= 3, "the model was asked: {}", r.stderr);
    let alert = requests
        .iter()
        .map(mock_api::user_text)
        .find(|t| t.contains("metric_alert"))
        .expect("the alert was asked about");
    assert!(
        alert.contains("This is an outcome"),
        "learn.txt is in the prompt"
    );
    assert!(
        !requests
            .iter()
            .map(mock_api::user_text)
            .any(|t| t.contains("vague_request") && t.contains("This is an outcome")),
        "and only for outcomes"
    );
    let replay = eval_with(
        &w,
        &cases,
        &format!("replay:{}", recorded.display()),
        &["--only", "a"],
    );
    assert_eq!(
        w.mock_api().requests().len(),
        calls,
        "a replay asks no model"
    );
    assert_eq!(replay.code, r.code, "{}", replay.stderr);
    let replayed = replay.json();
    let actions = |report: &serde_json::Value| -> Vec<serde_json::Value> {
        report["cases"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| json!([c["name"], c["actions"], c["pass"]]))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(actions(&replayed), actions(&live));
    let kill = replayed["cases"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["name"] == "metric_alert_kills_and_learns")
        })
        .cloned()
        .expect("the alert case ran");
    assert_eq!(kill["pass"], true, "{kill}");
}

//! Mixed traffic for the exactly-once suites (`tests/effects.rs` and `scripts/chaos`): every kind
//! of message the two listeners act on, the state each needs seeded, the scripted model that
//! answers both roles, the roundtable command, and the effects each input must cause exactly once.
//! What actually happened is counted by `ledger.rs`.
//!
//! Shared by the test binary (`crate::common::traffic`) and the chaos example (a top-level
//! module), so it reaches its siblings through `super::`.

// Each user takes part of this module, and it is private there.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::mock_api::{self, Recorded, Reply};

/// The date in every experiment id (any real date passes validation).
pub const DAY: &str = "20261202";

/// A numeric Discord channel for the replies.
pub const CHANNEL_ID: &str = "1100000000000000001";

/// One kind of input message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// escalation → `dispatch_to_fullsend` → FULLSEND designs a valid spec: saved and announced.
    Design,
    /// escalation → `dispatch_to_fullsend` → every design answer is unusable: `design_failed`.
    DesignFails,
    /// escalation → `record_learning`.
    Learn,
    /// escalation with a channel → `respond_to_discord`.
    Respond,
    /// escalation → `dispatch_to_builder`.
    Build,
    /// escalation → `kill_experiment` of a seeded `ready` experiment.
    Kill,
    /// escalation → `initiate_roundtable`, with the roundtable command configured.
    Roundtable,
    /// `fullsend_started` notice → one worklist line, no model call.
    Started,
    /// `tool_built` to FULLSEND for a seeded `draft` experiment waiting on that tool.
    ToolBuilt,
    /// `design_progress` for a seeded Active worklist line → one note on that line, no model
    /// call.
    Progress,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 10] = [
        Kind::Design,
        Kind::DesignFails,
        Kind::Learn,
        Kind::Respond,
        Kind::Build,
        Kind::Kill,
        Kind::Roundtable,
        Kind::Started,
        Kind::ToolBuilt,
        Kind::Progress,
    ];

    /// The word the scripted model routes on.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Design => "design",
            Kind::DesignFails => "designfails",
            Kind::Learn => "learn",
            Kind::Respond => "respond",
            Kind::Build => "build",
            Kind::Kill => "kill",
            Kind::Roundtable => "roundtable",
            Kind::Started => "started",
            Kind::ToolBuilt => "toolbuilt",
            Kind::Progress => "progress",
        }
    }

    fn parse(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.word() == word)
    }

    /// What one input of this kind must cause, exactly once each (effect names as `ledger.rs`
    /// counts them). Every other effect type must not happen for it at all.
    pub fn expected(self) -> &'static [&'static str] {
        match self {
            Kind::Design => &[
                "experiment_request",
                "fullsend_started",
                "worklist_line",
                "experiment_created",
                "schedule_created",
                "experiment_ready",
                "hash_state",
            ],
            Kind::DesignFails => &[
                "experiment_request",
                "fullsend_started",
                "worklist_line",
                "design_failed",
            ],
            Kind::Learn => &["learning"],
            Kind::Respond => &["orchestrator_response"],
            Kind::Build => &["tool_prd"],
            Kind::Kill => &["experiment_archived", "hash_state"],
            Kind::Roundtable => &["roundtable_request", "roundtable_run", "roundtable_result"],
            Kind::Started => &["worklist_line"],
            Kind::ToolBuilt => &["execute_now", "hash_state"],
            Kind::Progress => &["worklist_line", "worklist_note"],
        }
    }
}

/// One input message; its `msg_id` is ours, so a producer can retry a publish without creating a
/// second message.
#[derive(Debug, Clone)]
pub struct Input {
    /// The `msg_id` (lower-case letters and digits: it is part of experiment ids too).
    pub id: String,
    /// What it is.
    pub kind: Kind,
}

impl Input {
    /// The channel it is published on.
    pub fn channel(&self) -> &'static str {
        match self.kind {
            Kind::ToolBuilt => "fullsend:to_fullsend",
            _ => "fullsend:to_orchestrator",
        }
    }

    /// The experiment it concerns, if any: designed from it, killed by it, or released by it.
    pub fn experiment_id(&self) -> Option<String> {
        matches!(self.kind, Kind::Design | Kind::Kill | Kind::ToolBuilt)
            .then(|| format!("exp_{DAY}_{}_{}", self.kind.word(), self.id))
    }

    /// The tool a seeded draft experiment waits for.
    pub fn tool(&self) -> String {
        format!("tool_{}", self.id)
    }

    /// The message as JSON text.
    pub fn json(&self) -> String {
        let content = format!("chaos {} {}", self.id, self.kind.word());
        let message = match self.kind {
            Kind::Started => json!({
                "type": "fullsend_started", "source": "fullsend_listener",
                "msg_id": self.id, "request_id": self.id,
            }),
            Kind::ToolBuilt => json!({
                "type": "tool_built", "source": "builder",
                "msg_id": self.id, "tool_name": self.tool(), "status": "active",
            }),
            Kind::Progress => json!({
                "type": "design_progress", "source": "fullsend_listener",
                "msg_id": self.id, "request_id": self.id,
                "tasks_done": 2, "tasks_total": 6, "task_title": "chaos task",
            }),
            Kind::Respond => json!({
                "type": "escalation", "source": "watcher", "priority": "high", "msg_id": self.id,
                "original_message": {"username": "tester", "content": content, "channel_id": CHANNEL_ID},
            }),
            _ => json!({
                "type": "escalation", "source": "watcher", "priority": "high", "msg_id": self.id,
                "original_message": {"username": "tester", "content": content},
            }),
        };
        message.to_string()
    }
}

/// `n` inputs numbered from `from`, cycling through every kind.
pub fn mixed(prefix: &str, from: usize, n: usize) -> Vec<Input> {
    (from..from + n)
        .map(|seq| Input {
            id: format!("{prefix}{seq:04}"),
            kind: Kind::ALL[seq % Kind::ALL.len()],
        })
        .collect()
}

/// The Redis state the inputs act on: a `ready` experiment per kill, a `draft` experiment waiting
/// in `pending_experiments:{tool}` per `tool_built`. Seeded hashes carry `seeded`, so the ledger
/// does not count their creation as a state change.
pub fn seed(conn: &mut redis::Connection, inputs: &[Input]) -> redis::RedisResult<()> {
    for input in inputs {
        let Some(exp) = input.experiment_id() else {
            continue;
        };
        let state = match input.kind {
            Kind::Kill => "ready",
            Kind::ToolBuilt => "draft",
            _ => continue,
        };
        redis::cmd("HSET")
            .arg(format!("experiments:{exp}"))
            .arg(&[
                ("id", exp.as_str()),
                ("name", "seeded"),
                ("hypothesis", "seeded for the exactly-once suite"),
                ("state", state),
                ("status", state),
                ("seeded", "1"),
            ])
            .query::<()>(conn)?;
        if input.kind == Kind::ToolBuilt {
            redis::cmd("SADD")
                .arg(format!("pending_experiments:{}", input.tool()))
                .arg(&exp)
                .query::<()>(conn)?;
        }
    }
    Ok(())
}

/// The worklist the inputs act on: an Active line per `design_progress` input, for its note.
pub fn seed_worklist(context: &Path, inputs: &[Input]) -> std::io::Result<()> {
    let path = context.join("worklist.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Fullsend Worklist\n\n## Active (In Progress)\n\n## Completed This Week\n".into()
    });
    let lines: String = inputs
        .iter()
        .filter(|i| i.kind == Kind::Progress)
        .map(|i| {
            format!(
                "- [ ] **Experiment design {}** - FULLSEND designing\n",
                i.id
            )
        })
        .collect();
    let out = match text.find("## Active (In Progress)\n") {
        Some(at) => {
            let end = at + "## Active (In Progress)\n".len();
            format!("{}{lines}{}", &text[..end], &text[end..])
        }
        None => format!("{text}\n## Active (In Progress)\n{lines}"),
    };
    std::fs::write(path, out)
}

/// Writes the roundtable command into `dir`: it logs the id of the message it was started for to
/// `runs` (one line per run) and answers a summary. Returns its path.
pub fn roundtable_command(dir: &Path, runs: &Path) -> PathBuf {
    let script = dir.join("roundtable.sh");
    let body = format!(
        "#!/bin/sh\nid=$(grep -o 'roundtable-for [a-z0-9]*' | head -n 1 | cut -d ' ' -f 2)\n\
         printf '%s\\n' \"$id\" >> '{}'\n\
         echo '{{\"summary\": [\"ship it\"], \"transcript\": \"a short talk\"}}'\n",
        runs.display()
    );
    std::fs::write(&script, body).expect("writing the roundtable command");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the roundtable command");
    script
}

/// The input an Orchestrator prompt is about, if it is one of ours: only escalations, so the
/// messages that come back (experiment_ready, roundtable_result …) are answered `no_action`.
pub fn incoming(prompt: &str) -> Option<(String, Kind)> {
    let section = &prompt[prompt.find("## Incoming Message")?..];
    if !section.contains("Type: escalation") {
        return None;
    }
    let start = section.find("chaos ")? + "chaos ".len();
    let mut words = section[start..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|w| !w.is_empty());
    let id = words.next()?.to_string();
    let kind = Kind::parse(words.next()?)?;
    Some((id, kind))
}

/// The scripted model's answer to an Orchestrator prompt about `id` of `kind`.
pub fn decision(id: &str, kind: Kind) -> Value {
    let input = Input {
        id: id.to_string(),
        kind,
    };
    match kind {
        Kind::Design | Kind::DesignFails => json!({
            "action": "dispatch_to_fullsend", "reasoning": "worth an experiment", "priority": "high",
            "payload": {"idea": format!("design-for {id} {}", if kind == Kind::Design { "ok" } else { "bad" })},
            "context_for_fullsend": "exactly-once suite",
        }),
        Kind::Learn => json!({
            "action": "record_learning", "reasoning": "a pattern worth keeping",
            "payload": {"learning": learning_text(id)},
        }),
        Kind::Respond => json!({
            "action": "respond_to_discord", "reasoning": "they asked",
            "payload": {"content": format!("Answer for {id}")},
        }),
        Kind::Build => json!({
            "action": "dispatch_to_builder", "reasoning": "a tool is missing", "priority": "medium",
            "payload": {"prd": {"name": format!("tool_for_{id}"), "description": "scrape a page"}},
        }),
        Kind::Kill => json!({
            "action": "kill_experiment", "reasoning": "it failed its criteria",
            "experiment_id": input.experiment_id(), "payload": {"reason": "0 replies of 100"},
        }),
        Kind::Roundtable => json!({
            "action": "initiate_roundtable", "reasoning": "needs several views",
            "payload": {"prompt": format!("roundtable-for {id}: where next?")},
        }),
        Kind::Started | Kind::ToolBuilt | Kind::Progress => {
            json!({"action": "no_action", "reasoning": "not a decision for the model"})
        }
    }
}

/// The learnings.md text of a `record_learning` input.
pub fn learning_text(id: &str) -> String {
    format!("Chaos learning {id}")
}

/// The scripted model for both roles: Orchestrator prompts are routed on their incoming message,
/// design prompts (FULLSEND's `--engine api`) on the idea the Orchestrator wrote.
pub fn answer(req: &Recorded) -> Reply {
    let prompt = mock_api::user_text(req);
    if prompt.contains("## Incoming Message") {
        let decision = match incoming(&prompt) {
            Some((id, kind)) => decision(&id, kind),
            None => json!({"action": "no_action", "reasoning": "nothing for me"}),
        };
        return Reply::text(decision.to_string());
    }
    match design_idea(&prompt) {
        Some((id, true)) => Reply::text(format!(
            "Here it is.\n\n```yaml\n{}```\n",
            super::specs::spec_yaml(&format!("exp_{DAY}_design_{id}"))
        )),
        // An answer without a spec, first time and after the repair prompt alike.
        _ => Reply::text("I would rather not design this one."),
    }
}

/// `(id, valid)` of a design prompt's `design-for ID ok|bad` idea.
fn design_idea(prompt: &str) -> Option<(String, bool)> {
    let start = prompt.find("design-for ")? + "design-for ".len();
    let mut words = prompt[start..].split(|c: char| !c.is_ascii_alphanumeric());
    let id = words.next()?.to_string();
    let valid = words.find(|w| !w.is_empty())? == "ok";
    Some((id, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_reads_only_escalations() {
        let prompt = format!(
            "## Incoming Message\nType: escalation\n```json\n{}\n```",
            Input {
                id: "a0001".into(),
                kind: Kind::Kill
            }
            .json()
        );
        assert_eq!(incoming(&prompt), Some(("a0001".into(), Kind::Kill)));
        assert_eq!(
            incoming("## Incoming Message\nType: roundtable_result\nchaos a0001 kill"),
            None
        );
        assert_eq!(
            design_idea("Idea: {\"idea\": \"design-for a0002 ok\"}"),
            Some(("a0002".into(), true))
        );
    }
}

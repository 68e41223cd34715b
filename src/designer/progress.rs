//! A RALPH design's progress, told to the Orchestrator as `design_progress` messages so the
//! worklist shows where the design is: one when the task list is known and one per finished
//! task, at most one per [`MIN_INTERVAL`] (the last word is `experiment_ready` anyway).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::bus::effects::{self, publish};
use crate::bus::store::Conn;
use crate::designer::ralph::{Progress, RalphSummary, Task};
use crate::designer::spawn::SpawnResult;

/// The least time between two progress messages of one design.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes `design_progress` for one design.
pub struct DesignProgress {
    conn: Conn,
    channel: String,
    request_id: String,
    identity: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    done: usize,
    total: usize,
    sent: u32,
}

impl DesignProgress {
    /// Progress of the design of `request_id`, caused by the message `identity`.
    pub fn new(conn: Conn, channel: &str, request_id: &str, identity: &str) -> DesignProgress {
        DesignProgress {
            conn,
            channel: channel.to_string(),
            request_id: request_id.to_string(),
            identity: identity.to_string(),
            state: Mutex::new(State::default()),
        }
    }

    /// Sends one message unless one went out less than [`MIN_INTERVAL`] ago.
    fn tell(&self, task: Option<&Task>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.last.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return;
        }
        state.last = Some(Instant::now());
        state.sent += 1;
        let mut msg = Map::new();
        msg.insert("type".into(), json!("design_progress"));
        msg.insert("source".into(), json!("fullsend_listener"));
        msg.insert("request_id".into(), json!(self.request_id));
        msg.insert("tasks_done".into(), json!(state.done));
        msg.insert("tasks_total".into(), json!(state.total));
        if let Some(task) = task {
            msg.insert("task".into(), json!(task.id));
            msg.insert("task_title".into(), json!(task.title));
        }
        // The same id for the same step: a redelivered design repeats no progress.
        msg.insert(
            "msg_id".into(),
            json!(format!("{}-progress-{}", self.identity, state.done)),
        );
        let cause = Map::from_iter([("msg_id".to_string(), Value::String(self.identity.clone()))]);
        let effect = publish(&self.channel, msg, &cause);
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            if let Err(err) = effects::commit(&mut conn, &[effect], None, None).await {
                tracing::warn!("design progress not sent: {err:#}");
            }
        });
    }
}

impl Progress for DesignProgress {
    fn begin(&self, tasks_total: usize, tasks_done: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.total = tasks_total;
            s.done = tasks_done;
        }
        self.tell(None);
    }

    fn iteration(&self, _n: u32, _task: &Task, _attempt: u32) {}

    fn finished_call(&self, task: &Task, _result: &SpawnResult, done_now: bool) {
        if !done_now || task.id == "BREAKDOWN" {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.done = (s.done + 1).min(s.total.max(s.done + 1));
        }
        self.tell(Some(task));
    }

    fn end(&self, _summary: &RalphSummary) {}
}

//! The Orchestrator's context: the markdown files under `CONTEXT_PATH` and
//! the experiments, tools, tactical learnings and metrics in Redis. Anything
//! missing is empty context plus a warning, never a crash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::bus::store::{self, Conn, KeyValue};

/// An experiment as the Orchestrator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    /// The id, taken from the key.
    pub id: String,
    /// Name or summary.
    pub name: String,
    /// Lifecycle state.
    pub state: String,
    /// Last update, if recorded.
    pub updated_at: String,
}

/// A tool from the registry.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// The tool's name (from `name`, else the key).
    pub name: String,
    /// What it does.
    pub description: String,
}

/// One of FULLSEND's tactical learnings.
#[derive(Debug, Clone, Serialize)]
pub struct Tactical {
    /// The Redis key.
    pub key: String,
    /// The learning.
    pub text: String,
    /// The experiment it came from.
    pub experiment_id: String,
    /// When it was recorded.
    pub created_at: String,
}

/// Aggregated metrics of one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// The experiment id (from the key).
    pub experiment_id: String,
    /// The metric fields.
    pub fields: BTreeMap<String, String>,
}

/// Everything the model is told about the world.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    /// product_context.md.
    pub product: String,
    /// worklist.md.
    pub worklist: String,
    /// learnings.md.
    pub learnings: String,
    /// Experiments that are not archived, most active first.
    pub experiments: Vec<Experiment>,
    /// Active tools.
    pub tools: Vec<Tool>,
    /// Tactical learnings, newest first.
    pub tactical_learnings: Vec<Tactical>,
    /// Aggregated metrics, most recently updated first.
    pub metrics: Vec<Metrics>,
    /// What could not be loaded.
    pub warnings: Vec<String>,
}

/// Fields of `experiments:*` hashes the context needs (the spec itself can be large).
const EXPERIMENT_FIELDS: &[&str] = &[
    "name",
    "summary",
    "hypothesis",
    "state",
    "status",
    "updated_at",
    "created_at",
];

/// The most tactical learnings read per decision (newest by key name).
const MAX_TACTICAL: usize = 1000;

/// Loads context, caching file contents between calls while the files are unchanged.
#[derive(Debug, Default)]
pub struct Loader {
    files: HashMap<PathBuf, (SystemTime, u64, String)>,
}

impl Loader {
    /// Loads the files from `dir` and, when a connection is given, the Redis part.
    pub async fn load(&mut self, dir: &Path, conn: Option<&mut Conn>) -> Context {
        let mut ctx = Context::default();
        ctx.product = self.read(dir, "product_context.md", &mut ctx.warnings);
        ctx.worklist = self.read(dir, "worklist.md", &mut ctx.warnings);
        ctx.learnings = self.read(dir, "learnings.md", &mut ctx.warnings);
        match conn {
            Some(conn) => {
                if let Err(err) = load_redis(conn, &mut ctx).await {
                    ctx.warnings
                        .push(format!("Redis context unavailable: {err:#}"));
                }
            }
            None => ctx
                .warnings
                .push("Redis context skipped (no connection)".into()),
        }
        ctx
    }

    fn read(&mut self, dir: &Path, name: &str, warnings: &mut Vec<String>) -> String {
        let path = dir.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                warnings.push(format!("{}: {err}", path.display()));
                return String::new();
            }
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some((m, len, text)) = self.files.get(&path)
            && *m == modified
            && *len == meta.len()
        {
            return text.clone();
        }
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.files
                    .insert(path, (modified, meta.len(), text.clone()));
                text
            }
            Err(err) => {
                warnings.push(format!("{}: {err}", path.display()));
                String::new()
            }
        }
    }
}

async fn load_redis(conn: &mut Conn, ctx: &mut Context) -> anyhow::Result<()> {
    // A handful of round trips however many keys there are: one SCAN pass,
    // one TYPE pipeline, one read pipeline.
    let started = std::time::Instant::now();
    let mut found = store::scan_prefixes(
        conn,
        &[
            "experiments:",
            "tools:",
            "learnings:tactical:",
            "metrics_aggregated:",
        ],
    )
    .await?
    .into_iter();
    let experiments = found.next().unwrap_or_default();
    let tools = found.next().unwrap_or_default();
    // Only the newest tactical learnings can reach the prompt; key names carry
    // their time (`learnings:tactical:YYYYmmdd_HHMMSS…`), so read the last ones.
    let mut tactical: Vec<String> = found
        .next()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k != "learnings:tactical:index")
        .collect();
    if tactical.len() > MAX_TACTICAL {
        tactical.drain(..tactical.len() - MAX_TACTICAL);
    }
    let metrics = found.next().unwrap_or_default();
    let mut requests: Vec<(&str, Option<&[&str]>)> =
        Vec::with_capacity(experiments.len() + tools.len() + tactical.len() + metrics.len());
    requests.extend(
        experiments
            .iter()
            .map(|k| (k.as_str(), Some(EXPERIMENT_FIELDS))),
    );
    requests.extend(
        tools
            .iter()
            .chain(&tactical)
            .chain(&metrics)
            .map(|k| (k.as_str(), None)),
    );
    let scanned = started.elapsed();
    let mut values = store::read_keys(conn, &requests).await?.into_iter();
    tracing::debug!(
        "context: {} keys scanned in {:?}, read in {:?}",
        requests.len(),
        scanned,
        started.elapsed() - scanned
    );

    for key in &experiments {
        let Some(value) = values.next() else { break };
        let id = key.trim_start_matches("experiments:").to_string();
        let fields = match value {
            KeyValue::Hash(h) => h,
            KeyValue::Text(t) => flatten_json(&t),
            KeyValue::Other => continue,
        };
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| fields.get(*n).filter(|v| !v.is_empty()).cloned())
        };
        let state = pick(&["state", "status"]).unwrap_or_else(|| "unknown".into());
        if state == "archived" {
            continue;
        }
        ctx.experiments.push(Experiment {
            id,
            name: pick(&["name", "summary", "hypothesis"]).unwrap_or_default(),
            state,
            updated_at: pick(&["updated_at", "created_at"]).unwrap_or_default(),
        });
    }
    ctx.experiments.sort_by(|a, b| {
        state_rank(&a.state)
            .cmp(&state_rank(&b.state))
            .then(b.updated_at.cmp(&a.updated_at))
    });

    for key in &tools {
        let Some(value) = values.next() else { break };
        let fields = match value {
            KeyValue::Hash(h) => h,
            KeyValue::Text(t) => flatten_json(&t),
            KeyValue::Other => continue,
        };
        let state = fields
            .get("state")
            .or_else(|| fields.get("status"))
            .map(String::as_str)
            .unwrap_or("active");
        if state != "active" {
            continue;
        }
        ctx.tools.push(Tool {
            name: fields
                .get("name")
                .filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| key.trim_start_matches("tools:").to_string()),
            description: fields.get("description").cloned().unwrap_or_default(),
        });
    }

    for key in &tactical {
        let Some(value) = values.next() else { break };
        let fields = match value {
            KeyValue::Hash(h) => h,
            KeyValue::Text(t) => {
                let mut f = flatten_json(&t);
                f.entry("text".into()).or_insert(t);
                f
            }
            KeyValue::Other => continue,
        };
        ctx.tactical_learnings.push(Tactical {
            key: key.clone(),
            text: fields
                .get("text")
                .or_else(|| fields.get("learning"))
                .cloned()
                .unwrap_or_default(),
            experiment_id: fields.get("experiment_id").cloned().unwrap_or_default(),
            created_at: fields.get("created_at").cloned().unwrap_or_default(),
        });
    }
    ctx.tactical_learnings
        .sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.key.cmp(&a.key)));

    for key in &metrics {
        let Some(value) = values.next() else { break };
        if let KeyValue::Hash(fields) = value {
            ctx.metrics.push(Metrics {
                experiment_id: key.trim_start_matches("metrics_aggregated:").to_string(),
                fields,
            });
        }
    }
    ctx.metrics.sort_by(|a, b| {
        b.fields
            .get("last_updated")
            .cmp(&a.fields.get("last_updated"))
    });
    Ok(())
}

/// Active experiments first, finished ones last.
fn state_rank(state: &str) -> u8 {
    match state {
        "running" => 0,
        "ready" => 1,
        "draft" => 2,
        "completed" | "failed" => 4,
        _ => 3,
    }
}

/// A JSON string value (or an object nested under `experiment`) as flat string fields.
fn flatten_json(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) else {
        return out;
    };
    if let Some(Value::Object(inner)) = map.remove("experiment") {
        map.extend(inner);
    }
    for (k, v) in map {
        let s = match v {
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        out.insert(k, s);
    }
    out
}

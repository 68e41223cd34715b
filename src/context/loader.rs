//! The Orchestrator's context: the markdown files under `CONTEXT_PATH` and
//! the experiments, tools, tactical learnings and metrics in Redis. Anything
//! missing is empty context plus a warning, never a crash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::bus::store::{self, Conn, KeyValue};
use crate::bus::tracking::{Changes, KeyTracker};

/// An experiment as the Orchestrator sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Experiment {
    /// The id, taken from the key.
    pub id: String,
    /// Name or summary.
    pub name: String,
    /// Lifecycle state.
    pub state: String,
    /// Last update, if recorded.
    pub updated_at: String,
    /// What it tests.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hypothesis: String,
    /// Why it was archived, when it was.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub archived_reason: String,
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

/// Everything the model is told about the world. The parts are shared, not copied: a listener
/// hands the same unchanged parts to every message (and the prompt renders them once).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    /// product_context.md.
    pub product: Arc<String>,
    /// worklist.md.
    pub worklist: Arc<String>,
    /// learnings.md.
    pub learnings: Arc<String>,
    /// Experiments that are not archived, most active first.
    pub experiments: Arc<Vec<Arc<Experiment>>>,
    /// Archived experiments, newest first: not in the prompt, but what a brief's similar past
    /// experiments are found among.
    pub archived: Arc<Vec<Arc<Experiment>>>,
    /// Active tools.
    pub tools: Arc<Vec<Arc<Tool>>>,
    /// Tactical learnings, newest first.
    pub tactical_learnings: Arc<Vec<Arc<Tactical>>>,
    /// Aggregated metrics, most recently updated first.
    pub metrics: Arc<Vec<Arc<Metrics>>>,
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
    "archived_reason",
];

/// The most tactical learnings kept (newest by key name).
const MAX_TACTICAL: usize = 1000;

/// The key prefixes of the Redis part of the context.
pub const PREFIXES: [&str; 4] = [
    "experiments:",
    "tools:",
    "learnings:tactical:",
    "metrics_aggregated:",
];

/// The index of tactical learnings, not a learning itself.
const TACTICAL_INDEX: &str = "learnings:tactical:index";

/// Loads context. Files are re-read only when their modification time or size changed. With
/// tracking (`Loader::tracked`, what listeners use), the Redis part is kept too and only the
/// keys Redis says were written since are read again; without it, it is read in full.
#[derive(Debug, Default)]
pub struct Loader {
    files: HashMap<PathBuf, (SystemTime, u64, Arc<String>)>,
    tracker: Option<KeyTracker>,
    cache: RedisCache,
    /// The cache may be incomplete (a load failed halfway): rebuild it in full.
    stale: bool,
}

impl Loader {
    /// A loader that keeps the Redis part and follows its changes through `url`.
    pub fn tracked(url: &str) -> Loader {
        Loader {
            tracker: Some(KeyTracker::new(url, &PREFIXES)),
            ..Loader::default()
        }
    }

    /// Loads the files from `dir` and, when a connection is given, the Redis part.
    pub async fn load(&mut self, dir: &Path, conn: Option<&mut Conn>) -> Context {
        let mut ctx = Context::default();
        ctx.product = self.read(dir, "product_context.md", &mut ctx.warnings);
        ctx.worklist = self.read(dir, "worklist.md", &mut ctx.warnings);
        ctx.learnings = self.read(dir, "learnings.md", &mut ctx.warnings);
        match conn {
            Some(conn) => match self.redis_part(conn).await {
                Ok(part) => {
                    ctx.experiments = part.experiments;
                    ctx.archived = part.archived;
                    ctx.tools = part.tools;
                    ctx.tactical_learnings = part.tactical;
                    ctx.metrics = part.metrics;
                }
                Err(err) => ctx
                    .warnings
                    .push(format!("Redis context unavailable: {err:#}")),
            },
            None => ctx
                .warnings
                .push("Redis context skipped (no connection)".into()),
        }
        ctx
    }

    async fn redis_part(&mut self, conn: &mut Conn) -> anyhow::Result<Built> {
        let changes = match &mut self.tracker {
            Some(t) => t.changes().await,
            None => Changes::Untracked,
        };
        let changes = match changes {
            Changes::Keys(_) if self.stale => Changes::All,
            other => other,
        };
        match changes {
            Changes::Untracked => {
                // Nothing can tell us what changes later: read it all, keep none of it.
                self.cache = RedisCache::default();
                let mut fresh = RedisCache::default();
                fresh.load_all(conn).await?;
                return Ok(fresh.build());
            }
            Changes::All => {
                self.stale = true;
                self.cache = RedisCache::default();
                self.cache.load_all(conn).await?;
                self.stale = false;
            }
            Changes::Keys(keys) if keys.is_empty() => {}
            Changes::Keys(keys) => {
                self.stale = true;
                self.cache.reload(conn, &keys).await?;
                self.stale = false;
            }
        }
        Ok(self.cache.build())
    }

    fn read(&mut self, dir: &Path, name: &str, warnings: &mut Vec<String>) -> Arc<String> {
        let path = dir.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                warnings.push(format!("{}: {err}", path.display()));
                return Arc::default();
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
                let text = Arc::new(String::from_utf8_lossy(&bytes).into_owned());
                self.files
                    .insert(path, (modified, meta.len(), text.clone()));
                text
            }
            Err(err) => {
                warnings.push(format!("{}: {err}", path.display()));
                Arc::default()
            }
        }
    }
}

/// The Redis part, parsed, by key.
#[derive(Debug, Default)]
struct RedisCache {
    experiments: BTreeMap<String, Arc<Experiment>>,
    tools: BTreeMap<String, Arc<Tool>>,
    tactical: BTreeMap<String, Arc<Tactical>>,
    metrics: BTreeMap<String, Arc<Metrics>>,
    built: Option<Built>,
}

/// The sorted lists the prompt shows, shared by every message until something changes.
#[derive(Debug, Clone)]
struct Built {
    experiments: Arc<Vec<Arc<Experiment>>>,
    archived: Arc<Vec<Arc<Experiment>>>,
    tools: Arc<Vec<Arc<Tool>>>,
    tactical: Arc<Vec<Arc<Tactical>>>,
    metrics: Arc<Vec<Arc<Metrics>>>,
}

impl RedisCache {
    /// Reads every key under the prefixes: one SCAN pass, one TYPE pipeline, one read pipeline.
    async fn load_all(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let found = store::scan_prefixes(conn, &PREFIXES).await?;
        let mut keys: Vec<String> = found.into_iter().flatten().collect();
        // Only the newest tactical learnings can reach the prompt; key names carry their
        // time (`learnings:tactical:YYYYmmdd_HHMMSS…`), so read the last ones.
        let mut tactical: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(PREFIXES[2]) && *k != TACTICAL_INDEX)
            .cloned()
            .collect();
        tactical.sort();
        if tactical.len() > MAX_TACTICAL {
            let too_old: std::collections::HashSet<String> =
                tactical.drain(..tactical.len() - MAX_TACTICAL).collect();
            keys.retain(|k| !too_old.contains(k));
        }
        let scanned = started.elapsed();
        let n = keys.len();
        self.reload_keys(conn, keys).await?;
        // A full load allocates and frees a lot at once (every key's reply): give that back to
        // the system, so a listener's memory is what it keeps, not its peak.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory at the top of each heap.
        unsafe {
            libc::malloc_trim(0);
        }
        tracing::debug!(
            "context: {n} keys scanned in {scanned:?}, read in {:?}",
            started.elapsed() - scanned
        );
        Ok(())
    }

    /// Reads `keys` again (a missing key leaves the cache).
    async fn reload(
        &mut self,
        conn: &mut Conn,
        keys: &std::collections::BTreeSet<String>,
    ) -> anyhow::Result<()> {
        self.reload_keys(conn, keys.iter().cloned().collect()).await
    }

    async fn reload_keys(&mut self, conn: &mut Conn, keys: Vec<String>) -> anyhow::Result<()> {
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| PREFIXES.iter().any(|p| k.starts_with(p)) && k != TACTICAL_INDEX)
            .collect();
        let requests: Vec<(&str, Option<&[&str]>)> = keys
            .iter()
            .map(|k| {
                let fields = k.starts_with(PREFIXES[0]).then_some(EXPERIMENT_FIELDS);
                (k.as_str(), fields)
            })
            .collect();
        let values = store::read_keys(conn, &requests).await?;
        for (key, value) in keys.into_iter().zip(values) {
            self.apply(key, value);
        }
        if self.tactical.len() > MAX_TACTICAL {
            let keep_from = self.tactical.len() - MAX_TACTICAL;
            let oldest: Vec<String> = self.tactical.keys().take(keep_from).cloned().collect();
            for k in oldest {
                self.tactical.remove(&k);
            }
        }
        self.built = None;
        Ok(())
    }

    /// Puts one key's current value in the cache, or takes the key out.
    fn apply(&mut self, key: String, value: KeyValue) {
        if let Some(id) = key.strip_prefix(PREFIXES[0]) {
            match parse_experiment(id, value) {
                Some(e) => self.experiments.insert(key, Arc::new(e)),
                None => self.experiments.remove(&key),
            };
        } else if key.starts_with(PREFIXES[1]) {
            match parse_tool(&key, value) {
                Some(t) => self.tools.insert(key, Arc::new(t)),
                None => self.tools.remove(&key),
            };
        } else if key.starts_with(PREFIXES[2]) {
            match parse_tactical(&key, value) {
                Some(t) => self.tactical.insert(key, Arc::new(t)),
                None => self.tactical.remove(&key),
            };
        } else if let Some(id) = key.strip_prefix(PREFIXES[3]) {
            match value {
                KeyValue::Hash(fields) => self.metrics.insert(
                    key.clone(),
                    Arc::new(Metrics {
                        experiment_id: id.to_string(),
                        fields,
                    }),
                ),
                _ => self.metrics.remove(&key),
            };
        }
    }

    /// The sorted lists, built again only after a change.
    fn build(&mut self) -> Built {
        if let Some(b) = &self.built {
            return b.clone();
        }
        // The items are shared, so a rebuild copies pointers, not experiments.
        let (mut archived, mut experiments): (Vec<Arc<Experiment>>, Vec<Arc<Experiment>>) = self
            .experiments
            .values()
            .cloned()
            .partition(|e| e.state == "archived");
        archived.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
        experiments.sort_by(|a, b| {
            state_rank(&a.state)
                .cmp(&state_rank(&b.state))
                .then(b.updated_at.cmp(&a.updated_at))
        });
        let mut tactical: Vec<Arc<Tactical>> = self.tactical.values().cloned().collect();
        tactical.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.key.cmp(&a.key)));
        let mut metrics: Vec<Arc<Metrics>> = self.metrics.values().cloned().collect();
        metrics.sort_by(|a, b| {
            b.fields
                .get("last_updated")
                .cmp(&a.fields.get("last_updated"))
        });
        let built = Built {
            experiments: Arc::new(experiments),
            archived: Arc::new(archived),
            tools: Arc::new(self.tools.values().cloned().collect()),
            tactical: Arc::new(tactical),
            metrics: Arc::new(metrics),
        };
        self.built = Some(built.clone());
        built
    }
}

/// An experiment from its stored value; None when it is not an experiment.
fn parse_experiment(id: &str, value: KeyValue) -> Option<Experiment> {
    let fields = match value {
        KeyValue::Hash(h) => h,
        KeyValue::Text(t) => flatten_json(&t),
        KeyValue::Other => return None,
    };
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| fields.get(*n).filter(|v| !v.is_empty()).cloned())
    };
    Some(Experiment {
        id: id.to_string(),
        name: pick(&["name", "summary", "hypothesis"]).unwrap_or_default(),
        state: pick(&["state", "status"]).unwrap_or_else(|| "unknown".into()),
        updated_at: pick(&["updated_at", "created_at"]).unwrap_or_default(),
        hypothesis: pick(&["hypothesis"]).unwrap_or_default(),
        archived_reason: pick(&["archived_reason"]).unwrap_or_default(),
    })
}

/// An active tool from its stored value.
fn parse_tool(key: &str, value: KeyValue) -> Option<Tool> {
    let fields = match value {
        KeyValue::Hash(h) => h,
        KeyValue::Text(t) => flatten_json(&t),
        KeyValue::Other => return None,
    };
    let state = fields
        .get("state")
        .or_else(|| fields.get("status"))
        .map(String::as_str)
        .unwrap_or("active");
    if state != "active" {
        return None;
    }
    Some(Tool {
        name: fields
            .get("name")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| key.trim_start_matches("tools:").to_string()),
        description: fields.get("description").cloned().unwrap_or_default(),
    })
}

/// A tactical learning from its stored value.
fn parse_tactical(key: &str, value: KeyValue) -> Option<Tactical> {
    let fields = match value {
        KeyValue::Hash(h) => h,
        KeyValue::Text(t) => {
            let mut f = flatten_json(&t);
            f.entry("text".into()).or_insert(t);
            f
        }
        KeyValue::Other => return None,
    };
    Some(Tactical {
        key: key.to_string(),
        text: fields
            .get("text")
            .or_else(|| fields.get("learning"))
            .cloned()
            .unwrap_or_default(),
        experiment_id: fields.get("experiment_id").cloned().unwrap_or_default(),
        created_at: fields.get("created_at").cloned().unwrap_or_default(),
    })
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
pub fn flatten_json(text: &str) -> BTreeMap<String, String> {
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

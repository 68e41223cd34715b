//! Counts every effect the listeners caused, per input message, from what the system itself keeps:
//! every entry of every `fullsend:{…}:stream` (each published message, traced back to its input
//! through `causation_id`), the learnings and worklist files, the roundtable command's run log,
//! and Redis's append-only file, where each transaction that changed an experiment hash's
//! `state`/`status` is one state change. The AOF is read rather than the hashes because a hash
//! shows only its last state, not how often it was written.
//!
//! Shared by `tests/effects.rs` and `scripts/chaos` (see `traffic.rs`).

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use super::traffic::{Input, Kind};

/// Where the counted effects live.
pub struct Sources<'a> {
    /// redis-server's `appendonlydir`.
    pub aof_dir: &'a Path,
    /// The context directory (`learnings.md`, `worklist.md`).
    pub context: &'a Path,
    /// The roundtable command's run log.
    pub runs: &'a Path,
}

/// Effect counts: effect name → input id → how often it happened.
#[derive(Debug, Default)]
pub struct Ledger {
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Effects traced to no input (each one is a failure).
    pub strays: Vec<(String, String)>,
}

impl Ledger {
    fn add(&mut self, effect: &str, root: Option<&str>, what: impl FnOnce() -> String) {
        match root {
            Some(id) => {
                *self
                    .counts
                    .entry(effect.to_string())
                    .or_default()
                    .entry(id.to_string())
                    .or_insert(0) += 1;
            }
            None => self.strays.push((effect.to_string(), what())),
        }
    }

    /// How often `effect` happened for input `id`.
    pub fn count(&self, effect: &str, id: &str) -> usize {
        self.counts
            .get(effect)
            .and_then(|m| m.get(id))
            .copied()
            .unwrap_or(0)
    }
}

/// One published message as its stream holds it.
struct Published {
    label: String,
    msg_id: String,
    causation: Option<String>,
    request_id: Option<String>,
}

/// Reads every effect of `inputs` that happened so far.
pub fn read(
    conn: &mut redis::Connection,
    inputs: &[Input],
    sources: &Sources<'_>,
) -> Result<Ledger, String> {
    let ids: BTreeSet<&str> = inputs.iter().map(|i| i.id.as_str()).collect();
    let mut ledger = Ledger::default();

    let published = published(conn)?;
    let parent: HashMap<&str, Option<&str>> = published
        .iter()
        .map(|p| (p.msg_id.as_str(), p.causation.as_deref()))
        .collect();
    let root_of = |msg_id: &str| -> Option<String> {
        let mut at = msg_id;
        for _ in 0..16 {
            if ids.contains(at) {
                return Some(at.to_string());
            }
            at = (*parent.get(at)?)?;
        }
        None
    };
    let mut request_roots: HashMap<String, String> = HashMap::new();
    for p in &published {
        if ids.contains(p.msg_id.as_str()) {
            continue; // an input, not an effect
        }
        let root = root_of(&p.msg_id);
        if p.label == "experiment_request"
            && let (Some(rid), Some(root)) = (&p.request_id, &root)
        {
            request_roots.insert(rid.clone(), root.clone());
        }
        ledger.add(&p.label, root.as_deref(), || {
            format!("{} (cause {:?})", p.msg_id, p.causation)
        });
    }

    let learnings =
        std::fs::read_to_string(sources.context.join("learnings.md")).unwrap_or_default();
    for line in learnings.lines() {
        if let Some(id) = line.strip_prefix("Chaos learning ") {
            let id = id.trim();
            ledger.add("learning", ids.contains(id).then_some(id), || {
                line.to_string()
            });
        }
    }

    let worklist = std::fs::read_to_string(sources.context.join("worklist.md")).unwrap_or_default();
    for line in worklist.lines() {
        let Some(rest) = line.split("**Experiment design ").nth(1) else {
            continue;
        };
        let rid = rest.split("**").next().unwrap_or_default();
        let root = if ids.contains(rid) {
            Some(rid.to_string())
        } else {
            request_roots.get(rid).cloned()
        };
        ledger.add("worklist_line", root.as_deref(), || line.to_string());
        // A design's progress note: once on its line however often the notice was delivered.
        for _ in line.matches(" · RALPH ") {
            ledger.add("worklist_note", root.as_deref(), || line.to_string());
        }
    }

    let runs = std::fs::read_to_string(sources.runs).unwrap_or_default();
    for line in runs.lines() {
        let id = line.trim();
        ledger.add("roundtable_run", ids.contains(id).then_some(id), || {
            format!("run for {id:?}")
        });
    }

    let experiments: HashMap<String, &str> = inputs
        .iter()
        .filter_map(|i| Some((i.experiment_id()?, i.id.as_str())))
        .collect();
    for exp in state_changes(sources.aof_dir)? {
        let root = experiments.get(&exp).copied();
        ledger.add("hash_state", root, || format!("experiments:{exp}"));
    }
    Ok(ledger)
}

/// Every entry of every channel stream, labelled by its `type` (or its channel, for messages
/// without one, such as `execute_now`).
fn published(conn: &mut redis::Connection) -> Result<Vec<Published>, String> {
    let streams: Vec<String> = redis::cmd("KEYS")
        .arg("fullsend:{*}:stream")
        .query(conn)
        .map_err(|e| format!("KEYS: {e}"))?;
    let mut out = Vec::new();
    for stream in streams {
        let channel = stream
            .trim_start_matches("fullsend:{")
            .trim_end_matches("}:stream")
            .to_string();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query(conn)
            .map_err(|e| format!("XRANGE {stream}: {e}"))?;
        for (_, fields) in entries {
            let Some((_, data)) = fields.into_iter().find(|(k, _)| k == "data") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            out.push(Published {
                label: text("type").unwrap_or_else(|| channel.clone()),
                msg_id: text("msg_id").unwrap_or_default(),
                causation: text("causation_id"),
                request_id: text("request_id"),
            });
        }
    }
    Ok(out)
}

/// The experiment ids whose hash had `state` or `status` written, once per transaction (a
/// script's writes are one MULTI/EXEC in the AOF), not counting seeding writes (`seeded`).
fn state_changes(aof_dir: &Path) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for file in incr_files(aof_dir)? {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut group: Option<BTreeSet<String>> = None;
        for cmd in commands(&bytes) {
            let name = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
            match name.as_str() {
                "MULTI" => group = Some(BTreeSet::new()),
                "EXEC" => changed.extend(group.take().unwrap_or_default()),
                "HSET" | "HMSET" if cmd.len() >= 4 => {
                    let key = String::from_utf8_lossy(&cmd[1]);
                    let Some(exp) = key.strip_prefix("experiments:") else {
                        continue;
                    };
                    let fields: Vec<&[u8]> =
                        cmd[2..].iter().step_by(2).map(Vec::as_slice).collect();
                    let state = fields.iter().any(|f| *f == b"state" || *f == b"status");
                    if !state || fields.contains(&b"seeded".as_slice()) {
                        continue;
                    }
                    match &mut group {
                        Some(g) => {
                            g.insert(exp.to_string());
                        }
                        None => changed.push(exp.to_string()),
                    }
                }
                _ => {}
            }
        }
    }
    Ok(changed)
}

/// The incremental AOF files in the manifest's order (Redis 7 multi-part AOF).
fn incr_files(aof_dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let manifest = std::fs::read_dir(aof_dir)
        .map_err(|e| format!("{}: {e}", aof_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))
        .ok_or_else(|| format!("no AOF manifest in {}", aof_dir.display()))?;
    let text = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
        };
        if field("type") == Some(&"i")
            && let Some(name) = field("file")
        {
            files.push(aof_dir.join(name));
        }
    }
    Ok(files)
}

/// The commands of an AOF (RESP arrays of bulk strings), up to a truncated tail.
fn commands(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    fn line(bytes: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let end = bytes[*at..].windows(2).position(|w| w == b"\r\n")? + *at;
        let out = bytes[*at..end].to_vec();
        *at = end + 2;
        Some(out)
    }
    fn number(text: &[u8]) -> Option<usize> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = line(bytes, &mut at) else {
            break;
        };
        if head.first() == Some(&b'#') {
            continue; // an annotation
        }
        let parsed = (|| {
            let n = number(head.strip_prefix(b"*")?)?;
            let mut args = Vec::with_capacity(n);
            for _ in 0..n {
                let len = number(line(bytes, &mut at)?.strip_prefix(b"$")?)?;
                let arg = bytes.get(at..at + len)?.to_vec();
                if bytes.get(at + len..at + len + 2)? != b"\r\n" {
                    return None;
                }
                at += len + 2;
                args.push(arg);
            }
            (!args.is_empty()).then_some(args)
        })();
        match parsed {
            Some(args) => out.push(args),
            None => break,
        }
    }
    out
}

/// One effect type's totals over a run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The effect's name.
    pub effect: String,
    /// How many the inputs must cause.
    pub expected: usize,
    /// How many of those happened.
    pub got: usize,
    /// Inputs that lack it.
    pub lost: Vec<String>,
    /// Extra ones: `id ×n`, or effects traced to no input.
    pub duplicated: Vec<String>,
}

/// The effect names in table order: everything any kind expects, then anything else seen.
pub fn effect_names(ledger: &Ledger) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for kind in Kind::ALL {
        for name in kind.expected() {
            if !names.iter().any(|n| n == name) {
                names.push((*name).to_string());
            }
        }
    }
    for name in ledger
        .counts
        .keys()
        .chain(ledger.strays.iter().map(|(n, _)| n))
    {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Compares what happened with what each input must cause: one tally per effect type.
pub fn compare(inputs: &[Input], ledger: &Ledger) -> Vec<Tally> {
    effect_names(ledger)
        .into_iter()
        .map(|effect| {
            let mut t = Tally {
                effect: effect.clone(),
                ..Tally::default()
            };
            for input in inputs {
                let want = usize::from(input.kind.expected().contains(&effect.as_str()));
                let got = ledger.count(&effect, &input.id);
                t.expected += want;
                t.got += got.min(want);
                if got < want {
                    t.lost.push(input.id.clone());
                } else if got > want {
                    t.duplicated
                        .push(format!("{} ({:?}) ×{got}", input.id, input.kind));
                }
            }
            for (name, what) in &ledger.strays {
                if *name == effect {
                    t.duplicated.push(format!("stray {what}"));
                }
            }
            t
        })
        .collect()
}

/// True when no input lacks an effect it must cause.
pub fn complete(tallies: &[Tally]) -> bool {
    tallies.iter().all(|t| t.lost.is_empty())
}

/// Every loss and duplicate, one line per effect type.
pub fn failures(tallies: &[Tally]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tallies {
        if !t.lost.is_empty() {
            out.push(format!(
                "{}: lost {} of {}: {}",
                t.effect,
                t.lost.len(),
                t.expected,
                preview(&t.lost)
            ));
        }
        if !t.duplicated.is_empty() {
            out.push(format!(
                "{}: {} extra: {}",
                t.effect,
                t.duplicated.len(),
                preview(&t.duplicated)
            ));
        }
    }
    out
}

fn preview(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(6).map(String::as_str).collect();
    match items.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} … (+{more})", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aof_commands_and_a_truncated_tail() {
        let aof = b"*1\r\n$5\r\nMULTI\r\n*4\r\n$4\r\nHSET\r\n$15\r\nexperiments:e_1\r\n$5\r\nstate\r\n$5\r\nready\r\n*1\r\n$4\r\nEXEC\r\n*3\r\n$3\r\nSET\r\n$1\r\nk";
        let cmds = commands(aof);
        assert_eq!(cmds.len(), 3, "the cut SET is not a command");
        assert_eq!(cmds[1][1], b"experiments:e_1");
    }
}

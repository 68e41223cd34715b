//! The loop's files: TASKS.md (a checkbox list the agent ticks) and STATUS.md (its running
//! notes), parsed, rendered and set up in a work dir.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use super::{STATUS_FILE, TASKS_FILE};

/// One line of TASKS.md.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    /// The id before the colon, e.g. `TASK-001`.
    pub id: String,
    /// The text after the colon.
    pub title: String,
    /// Whether the box is ticked.
    pub done: bool,
}
/// Parses one checkbox line `- [ ] ID: title`; None for any other line.
fn parse_task_line(line: &str) -> Option<Task> {
    let line = line.trim_end_matches('\r').trim_start();
    let rest = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))?
        .trim_start();
    let (done, rest) = if let Some(r) = rest.strip_prefix("[ ]") {
        (false, r)
    } else if let Some(r) = rest
        .strip_prefix("[x]")
        .or_else(|| rest.strip_prefix("[X]"))
    {
        (true, r)
    } else {
        return None;
    };
    let (id, title) = rest.trim_start().split_once(':')?;
    let id = id.trim();
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    id_ok.then(|| Task {
        id: id.to_owned(),
        title: title.trim().to_owned(),
        done,
    })
}
/// TASKS.md with the box of task `id` cleared again (a tick the verdict did not confirm).
pub(super) fn untick(text: &str, id: &str) -> String {
    let mut out: String = text
        .lines()
        .map(|line| match parse_task_line(line) {
            Some(t) if t.done && t.id == id => {
                // Only the checkbox, the first `[x]`/`[X]`: a title may hold one too.
                let at = match (line.find("[x]"), line.find("[X]")) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match at {
                    Some(at) => format!("{}[ ]{}", &line[..at], &line[at + 3..]),
                    None => line.to_owned(),
                }
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}
/// Parses TASKS.md (tolerates `* [ ]`, `- [X]`, leading spaces, CRLF; ignores other lines).
pub fn parse_tasks(text: &str) -> Vec<Task> {
    text.lines().filter_map(parse_task_line).collect()
}
/// One title on one line: a newline inside a title would break the file format.
pub(super) fn clean_title(title: &str) -> String {
    title.split_whitespace().collect::<Vec<_>>().join(" ")
}
/// Renders TASKS.md in the PRD format for these titles.
pub fn render_tasks(titles: &[String]) -> String {
    let mut out = String::from("# Tasks\n\n");
    for (i, t) in titles.iter().enumerate() {
        out.push_str(&format!("- [ ] TASK-{:03}: {}\n", i + 1, clean_title(t)));
    }
    out
}
/// A list item in free text: (indent, kind, text); kind 0 = numbered, 1 = bullet.
fn list_item(line: &str) -> Option<(usize, u8, &str)> {
    let trimmed = line.trim_end_matches('\r');
    let body = trimmed.trim_start();
    let indent = trimmed.len() - body.len();
    if let Some(r) = body
        .strip_prefix("- ")
        .or_else(|| body.strip_prefix("* "))
        .or_else(|| body.strip_prefix("+ "))
    {
        return Some((indent, 1, r));
    }
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let r = &body[digits..];
        if let Some(r) = r.strip_prefix(". ").or_else(|| r.strip_prefix(") ")) {
            return Some((indent, 0, r));
        }
    }
    None
}
/// Strips a leading checkbox, a `TASK-NNN:` prefix and wrapping bold from a list item.
fn item_title(text: &str) -> String {
    let mut t = text.trim();
    for b in ["[ ]", "[x]", "[X]"] {
        if let Some(r) = t.strip_prefix(b) {
            t = r.trim_start();
        }
    }
    if let Some((id, rest)) = t.split_once(':')
        && id.to_ascii_uppercase().starts_with("TASK-")
        && !id.contains(' ')
    {
        t = rest.trim();
    }
    if let Some(inner) = t.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        t = inner.trim();
    }
    clean_title(t)
}
/// Task titles from a task-breakdown answer: `- [ ] TASK-001: x` lines, or `1. x` / `- x` list items; empty
/// if none. Checkbox lines win over numbered items, which win over bullets; only the outermost level counts.
pub fn tasks_from_text(text: &str) -> Vec<String> {
    let boxed: Vec<String> = parse_tasks(text)
        .into_iter()
        .map(|t| clean_title(&t.title))
        .filter(|t| !t.is_empty())
        .collect();
    if !boxed.is_empty() {
        return boxed;
    }
    // Fenced blocks in an answer are usually the TASKS.md file itself, so their items count like the rest.
    let items: Vec<_> = text.lines().filter_map(list_item).collect();
    let Some(kind) = items.iter().map(|(_, k, _)| *k).min() else {
        return Vec::new();
    };
    let of_kind: Vec<_> = items.into_iter().filter(|(_, k, _)| *k == kind).collect();
    let min_indent = of_kind.iter().map(|(i, _, _)| *i).min().unwrap_or(0);
    of_kind
        .into_iter()
        .filter(|(i, _, _)| *i == min_indent)
        .map(|(_, _, t)| item_title(t))
        .filter(|t| !t.is_empty())
        .collect()
}
/// The initial STATUS.md for this context.
fn render_status(initial_context: &str) -> String {
    format!(
        "# Status (Memory)\n\n{}\n\n## Log\n",
        initial_context.trim()
    )
}
/// Writes STATUS.md unless it exists: an existing one is memory from earlier runs and is kept.
pub(super) fn ensure_status(work_dir: &Path, initial_context: &str) -> anyhow::Result<()> {
    let path = work_dir.join(STATUS_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => f
            .write_all(render_status(initial_context).as_bytes())
            .with_context(|| format!("writing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}
/// Creates TASKS.md and STATUS.md in work_dir for a fresh run (refuses to overwrite an existing TASKS.md, and
/// refuses an empty task list). An existing STATUS.md is kept.
pub fn setup(work_dir: &Path, titles: &[String], initial_context: &str) -> anyhow::Result<()> {
    if titles.iter().all(|t| clean_title(t).is_empty()) {
        bail!("no tasks to set up");
    }
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let path = work_dir.join(TASKS_FILE);
    let titles: Vec<String> = titles
        .iter()
        .map(|t| clean_title(t))
        .filter(|t| !t.is_empty())
        .collect();
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; refusing to overwrite it (resume instead, or use a new work dir)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    f.write_all(render_tasks(&titles).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    ensure_status(work_dir, initial_context)
}

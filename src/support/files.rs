//! Safe file effects: appends under an exclusive lock with one write per
//! record (never read-modify-write), idempotent through a marker, and
//! whole-file replacement by an atomic rename that keeps the previous version.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// What an append did.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// The file.
    pub path: PathBuf,
    /// False when a record with the same marker was already there.
    pub appended: bool,
    /// The heading timestamp (learnings) or record time.
    pub timestamp: String,
    /// Bytes written.
    pub bytes: usize,
}

/// Appends `record` to `path` under an exclusive lock, in one write. When
/// `marker` is given and the file already contains it, nothing is written.
/// `header` is written first when the file is new or empty.
pub fn append_locked(
    path: &Path,
    record: &str,
    marker: Option<&str>,
    header: Option<&str>,
) -> anyhow::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {} for append", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    let result = append_under_lock(&mut file, record, marker, header);
    // Unlocking also happens on close; an explicit unlock keeps the window short.
    let _ = file.unlock();
    result.with_context(|| format!("appending to {}", path.display()))
}

fn append_under_lock(
    file: &mut File,
    record: &str,
    marker: Option<&str>,
    header: Option<&str>,
) -> anyhow::Result<bool> {
    let len = file.metadata()?.len();
    if let Some(marker) = marker
        && len > 0
        && contains(file, marker)?
    {
        return Ok(false);
    }
    let mut buf = String::with_capacity(record.len() + 64);
    if len == 0
        && let Some(h) = header
    {
        buf.push_str(h);
    }
    buf.push_str(record);
    file.write_all(buf.as_bytes())?;
    file.sync_data()?;
    Ok(true)
}

/// Whether the file contains `needle` (streamed, so large files stay cheap).
fn contains(file: &mut File, needle: &str) -> anyhow::Result<bool> {
    file.seek(SeekFrom::Start(0))?;
    let needle = needle.as_bytes();
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        carry.extend_from_slice(&chunk[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        let keep = needle.len().saturating_sub(1).min(carry.len());
        carry.drain(..carry.len() - keep);
    }
}

/// The heading that starts learnings.md.
pub const LEARNINGS_HEADER: &str = "# Strategic Learnings\n";

/// Appends a learning as `\n\n## <ISO-8601>\n<text>`. With an `id`, the
/// heading carries an invisible marker so a redelivered message adds nothing.
pub fn append_learning(path: &Path, text: &str, id: Option<&str>) -> anyhow::Result<Appended> {
    let timestamp = crate::support::msg::now_iso_micros();
    let marker = id.map(|id| format!("<!-- fullsend:{id} -->"));
    let heading = match &marker {
        Some(m) => format!("## {timestamp} {m}"),
        None => format!("## {timestamp}"),
    };
    let record = format!("\n\n{heading}\n{}", text.trim_end());
    let appended = append_locked(path, &record, marker.as_deref(), Some(LEARNINGS_HEADER))?;
    Ok(Appended {
        path: path.to_path_buf(),
        appended,
        timestamp,
        bytes: if appended { record.len() } else { 0 },
    })
}

/// Appends one JSON line.
pub fn append_jsonl(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    append_locked(path, &line, None, None)?;
    Ok(())
}

/// What a replacement did.
#[derive(Debug, Clone, Serialize)]
pub struct Replaced {
    /// The file.
    pub path: PathBuf,
    /// Bytes of the new content.
    pub bytes: usize,
    /// Where the previous version was kept, if there was one.
    pub previous: Option<PathBuf>,
    /// False when the content was already identical.
    pub changed: bool,
}

/// Replaces `path` with `content` (see [`edit_atomic`]).
pub fn replace_atomic(path: &Path, content: &str, history_dir: &Path) -> anyhow::Result<Replaced> {
    edit_atomic(path, history_dir, |_| Some(content.to_string()))
}

/// Replaces `path` atomically: writers are serialised on `<path>.lock`, the old
/// version is copied into `history_dir`, the new one written to a temp file in
/// the same directory, synced, renamed over, and the directory synced.
///
/// `edit` gets the current content (None if the file does not exist) read *under the lock*,
/// and returns the new content or None to leave the file alone. Writers that edit this way
/// never lose each other's changes: each edit sees the one before it.
pub fn edit_atomic(
    path: &Path,
    history_dir: &Path,
    edit: impl FnOnce(Option<&str>) -> Option<String>,
) -> anyhow::Result<Replaced> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let lock_path = dir.join(format!(".{name}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let old = std::fs::read(path).ok();
    let current = old.as_deref().map(String::from_utf8_lossy);
    let unchanged = |bytes: usize| Replaced {
        path: path.to_path_buf(),
        bytes,
        previous: None,
        changed: false,
    };
    let Some(content) = edit(current.as_deref()) else {
        return Ok(unchanged(old.as_ref().map_or(0, Vec::len)));
    };
    if old.as_deref() == Some(content.as_bytes()) {
        return Ok(unchanged(content.len()));
    }
    let previous = match &old {
        Some(bytes) => {
            std::fs::create_dir_all(history_dir)
                .with_context(|| format!("creating {}", history_dir.display()))?;
            let stamp = jiff::Timestamp::now()
                .strftime("%Y%m%dT%H%M%S%.6fZ")
                .to_string();
            let stem = name.trim_end_matches(".md");
            let keep = history_dir.join(format!("{stem}-{stamp}.md"));
            std::fs::write(&keep, bytes)
                .with_context(|| format!("keeping the previous version in {}", keep.display()))?;
            Some(keep)
        }
        None => None,
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    temp.write_all(content.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let _ = lock.unlock();
    Ok(Replaced {
        path: path.to_path_buf(),
        bytes: content.len(),
        previous,
        changed: true,
    })
}

/// A short version stamp of a file's text (64-bit FNV-1a and the length): equal texts, equal
/// stamps; a changed file, almost surely a different one. Not a security hash.
pub fn version_of(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}-{}", text.len())
}

/// A whole-file replacement was decided on a version of the file that is no longer current.
#[derive(Debug)]
pub struct ChangedSince {
    /// The file.
    pub path: PathBuf,
}

impl std::fmt::Display for ChangedSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed since the decision was made; it must be decided again",
            self.path.display()
        )
    }
}

impl std::error::Error for ChangedSince {}

/// `text` with `line` added at the end of the section whose heading starts with `heading`
/// (created, under `title` for an empty file, when missing). None when the line is already
/// there, so that a redelivered edit changes nothing.
pub fn add_to_section(text: &str, title: &str, heading: &str, line: &str) -> Option<String> {
    if text.lines().any(|l| l == line) {
        return None;
    }
    let base = if text.trim().is_empty() {
        format!("{title}\n\n{heading}\n")
    } else {
        text.to_string()
    };
    let mut lines: Vec<&str> = base.lines().collect();
    match lines
        .iter()
        .position(|l| l.trim_start().starts_with(heading))
    {
        Some(at_heading) => {
            // After the heading and any lines already in the section.
            let end = lines[at_heading + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| at_heading + 1 + i);
            let mut at = end;
            while at > at_heading + 1 && lines[at - 1].trim().is_empty() {
                at -= 1;
            }
            lines.insert(at, line);
        }
        None => {
            lines.push("");
            lines.push(heading);
            lines.push(line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

/// `text` with every line of the `from` section that names one of `keys` (as a whole word)
/// moved to the `to` section, ticked and followed by `note`. None when no line names them, so
/// that a redelivered move changes nothing.
pub fn complete_in_section(
    text: &str,
    from: &str,
    to: &str,
    keys: &[String],
    note: &str,
) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(from))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    let (mut kept, mut done) = (Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        if i > start && i < end && line.trim_start().starts_with("- ") && names_any(line, keys) {
            let item = line
                .trim_start()
                .trim_start_matches("- [ ] ")
                .trim_start_matches("- [x] ")
                .trim_start_matches("- ");
            done.push(format!("- [x] {item} → {note}"));
        } else {
            kept.push(line.to_string());
        }
    }
    if done.is_empty() {
        return None;
    }
    let mut out = kept.join("\n");
    out.push('\n');
    for line in done {
        out = add_to_section(&out, "", to, &line).unwrap_or(out);
    }
    Some(out)
}

/// `text` with every line of the `section` that names one of `keys` carrying `note` after a
/// ` · ` (replacing the note of the same kind it had, the one starting with the same word):
/// where running work has got to. A ` · ` a person wrote in the line stays. None when nothing
/// changes.
pub fn note_in_section(text: &str, section: &str, keys: &[String], note: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(section))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut changed = false;
    let out: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            if i > start && i < end && line.trim_start().starts_with("- ") && names_any(line, keys)
            {
                let kind = note.split_whitespace().next().unwrap_or_default();
                let base = match line.rsplit_once(" · ") {
                    Some((before, old)) if !kind.is_empty() && old.starts_with(kind) => before,
                    _ => line,
                };
                let noted = format!("{base} · {note}");
                if noted != *line {
                    changed = true;
                }
                noted
            } else {
                (*line).to_string()
            }
        })
        .collect();
    changed.then(|| {
        let mut text = out.join("\n");
        text.push('\n');
        text
    })
}

/// Whether `line` contains one of `keys` not as part of a longer word (`exp_1` is not in
/// `exp_12`).
fn names_any(line: &str, keys: &[String]) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
    keys.iter().filter(|k| !k.is_empty()).any(|key| {
        line.match_indices(key.as_str()).any(|(at, _)| {
            !word(line[..at].chars().next_back()) && !word(line[at + key.len()..].chars().next())
        })
    })
}

/// Creates `dir` (not its parents) with mode 0700, or checks that an existing one is private:
/// a real directory, not a symlink, owned by this user, with no access for group or others.
/// Anything else is refused, so another local user cannot pre-create or swap it. With
/// `tighten`, an existing directory of ours that is open to others is made 0700 instead (for
/// fullsend's own state inside a work dir it already owns).
pub fn private_dir(dir: &Path, tighten: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        bail!(
            "{} exists and is not a directory (a symlink?)",
            dir.display()
        );
    }
    if meta.uid() != me {
        bail!(
            "{} belongs to another user (uid {})",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 && tighten {
        return std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()));
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is open to group or others (mode {:o}); run `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        );
    }
    Ok(())
}

/// Reads a regular file of at most `max` bytes without following a symlink at its name.
pub fn read_no_follow(path: &Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {} (symlinks are not followed)", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    let mut text = String::new();
    file.take(max)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::note_in_section;

    #[test]
    fn a_note_replaces_its_own_kind_and_keeps_what_a_person_wrote() {
        let text =
            "## Active (In Progress)\n- [ ] **req_1** · owner: jake · RALPH 1/6 tasks done\n";
        let keys = vec!["req_1".to_string()];
        let noted =
            note_in_section(text, "## Active", &keys, "RALPH 2/6 tasks done").expect("changed");
        assert_eq!(
            noted,
            "## Active (In Progress)\n- [ ] **req_1** · owner: jake · RALPH 2/6 tasks done\n"
        );
        let first = "## Active (In Progress)\n- [ ] **req_1** · owner: jake\n";
        assert_eq!(
            note_in_section(first, "## Active", &keys, "RALPH 1/6 tasks done").expect("changed"),
            "## Active (In Progress)\n- [ ] **req_1** · owner: jake · RALPH 1/6 tasks done\n"
        );
    }

    use super::*;

    #[test]
    fn learning_format_and_idempotence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("learnings.md");
        let a = append_learning(&path, "CTOs respond", Some("m1")).expect("append");
        assert!(a.appended);
        let b = append_learning(&path, "CTOs respond", Some("m1")).expect("append");
        assert!(!b.appended);
        append_learning(&path, "second", None).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# Strategic Learnings\n\n\n## "));
        assert!(text.ends_with("\nsecond"));
        assert_eq!(text.matches("CTOs respond").count(), 1);
    }

    #[test]
    fn replace_keeps_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worklist.md");
        let hist = dir.path().join(".history");
        assert!(
            replace_atomic(&path, "one", &hist)
                .expect("replace")
                .previous
                .is_none()
        );
        let r = replace_atomic(&path, "two", &hist).expect("replace");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
        assert_eq!(
            std::fs::read_to_string(r.previous.expect("kept")).expect("read"),
            "one"
        );
        assert!(
            !replace_atomic(&path, "two", &hist)
                .expect("replace")
                .changed
        );
    }
}

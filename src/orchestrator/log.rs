//! The decision log: one JSON line per decision, appended under a lock.

/// Appends a decision, with its reasoning and thinking, to the decision log.
pub fn log_decision(
    path: &std::path::Path,
    decision: &crate::orchestrator::decision::Decision,
) -> anyhow::Result<()> {
    let record = serde_json::json!({
        "logged_at": crate::support::msg::now_iso_micros(),
        "msg_id": crate::support::msg::msg_id_of(&decision.message),
        "decision": decision,
    });
    crate::support::files::append_jsonl(path, &record)
}

/// The decision log of a long-running listener. Each decision is one line, appended under the
/// file's lock in one write as the decision is made; the lines written since the last sync are
/// made durable together, once a second (`sync`), instead of one fsync per message on the hot
/// path. The decision that matters for delivery is the memo in Redis; this is the audit trail.
#[derive(Debug)]
pub struct DecisionLog {
    path: std::path::PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl DecisionLog {
    /// A log at `path` (created on first use).
    pub fn new(path: std::path::PathBuf) -> DecisionLog {
        DecisionLog {
            path,
            file: std::sync::Mutex::new(None),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends a decision (durable at the next `sync`).
    pub fn append(&self, decision: &crate::orchestrator::decision::Decision) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let record = serde_json::json!({
            "logged_at": crate::support::msg::now_iso_micros(),
            "msg_id": crate::support::msg::msg_id_of(&decision.message),
            "trace_id": crate::support::msg::trace_id_of(&decision.message, None),
            "decision": decision,
        });
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // Reopen when the file was rotated or removed: the path names another file now.
        let moved = match (slot.as_ref(), std::fs::metadata(&self.path)) {
            (Some(f), Ok(m)) => f.metadata().map(|o| o.ino() != m.ino()).unwrap_or(true),
            (Some(_), Err(_)) => true,
            (None, _) => true,
        };
        if moved {
            if let Some(old) = slot.take() {
                let _ = old.sync_data();
            }
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            *slot = Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&self.path)?,
            );
        }
        let file = slot
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("decision log not open"))?;
        file.lock()?;
        let written = file.write_all(line.as_bytes());
        let _ = file.unlock();
        written?;
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Makes what was appended since the last call durable.
    pub fn sync(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel)
            && let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && let Err(err) = f.sync_data()
        {
            tracing::warn!("decision log {}: {err}", self.path.display());
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.sync();
    }
}

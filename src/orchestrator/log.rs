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

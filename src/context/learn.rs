//! Tactical learnings: FULLSEND's execution-level lessons, kept in Redis as
//! `learnings:tactical:<time>_<unique>` hashes plus a time-ordered index. One
//! shape for every writer (`learn append --tactical`, designs).

use std::collections::BTreeMap;

use crate::bus::effects::{Effect, Guard};

/// The effects of one tactical learning: the hash (never overwriting) and its index entry.
pub fn tactical_effects(text: &str, experiment: Option<&str>, source: &str) -> Vec<Effect> {
    tactical_effects_with(text, experiment, source, BTreeMap::new())
}

/// Like [`tactical_effects`], with more fields on the hash (tags, the run that wrote it).
pub fn tactical_effects_with(
    text: &str,
    experiment: Option<&str>,
    source: &str,
    extra: BTreeMap<String, String>,
) -> Vec<Effect> {
    let now = jiff::Timestamp::now();
    // Second-resolution keys collided in the original; add micros and a unique tail.
    let uid = crate::support::msg::new_msg_id();
    let key = format!(
        "learnings:tactical:{}_{}",
        now.strftime("%Y%m%d_%H%M%S_%6f"),
        &uid[uid.len() - 8..]
    );
    let mut fields = extra;
    fields.extend([
        ("text".to_string(), text.to_string()),
        (
            "experiment_id".to_string(),
            experiment.unwrap_or("").to_string(),
        ),
        ("source".to_string(), source.to_string()),
        (
            "created_at".to_string(),
            now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
    ]);
    vec![
        Effect::HashSet {
            key: key.clone(),
            fields,
            guard: Guard::MustNotExist,
        },
        Effect::SortedAdd {
            key: "learnings:tactical:index".into(),
            score: now.as_second() as f64,
            member: key,
        },
    ]
}

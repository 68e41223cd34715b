//! Replies on Discord: where a reply goes (the asker's channel, else the report channel), its
//! bounds, and `ask_for_context`, a reply that is a question and is kept in the worklist until
//! someone answers it.

use serde_json::{Map, Value, json};

use super::decision::Decision;
use super::dispatch::{Target, object, original, text_of};
use crate::bus::effects::{Effect, publish};

/// Discord's message limit.
pub const DISCORD_MAX_CHARS: usize = 2000;
/// The worklist section open questions go to.
pub const OPEN_QUESTIONS_SECTION: &str = "## Open Questions";

/// The `orchestrator_response` carrying `content` to the asker, or to the report channel when
/// the message names none; `Err` says why nothing is published.
pub fn reply(decision: &Decision, target: &Target, content: &str) -> Result<Effect, String> {
    let cause = &decision.message;
    let channel_id = match reply_channel(cause, &decision.payload).or_else(|| {
        target
            .report_channel
            .clone()
            .map(|c| if is_discord_id(&c) { Ok(c) } else { Err(c) })
    }) {
        None => return Err(
            "no channel_id in the message or payload, and no report channel (FULLSEND_REPORT_CHANNEL_ID); nothing published"
                .into(),
        ),
        Some(Err(bad)) => {
            return Err(format!(
                "channel_id {bad:?} is not a Discord id; nothing published"
            ));
        }
        Some(Ok(id)) => id,
    };
    let reply_to = text_of(original(cause).and_then(|o| o.get("message_id")))
        .or_else(|| text_of(cause.get("message_id")));
    let msg = object(json!({
        "type": "orchestrator_response",
        "channel_id": channel_id,
        "content": cap_chars(content, DISCORD_MAX_CHARS),
        "reply_to": reply_to,
        "priority": decision.priority,
        "source": "orchestrator",
    }));
    Ok(publish(&target.channels.from_orchestrator, msg, cause))
}

/// `ask_for_context`: the question goes to the asker (or the report channel), and an open
/// question line goes to the worklist, so it is still there when nobody answers in chat.
/// Refused without a question; without any channel the question is only recorded.
pub fn question(decision: &Decision, target: &Target) -> Result<Vec<Effect>, String> {
    let payload = &decision.payload;
    let Some(question) = super::dispatch::first_text(&[
        payload.get("question"),
        payload.get("content"),
        payload.get("value"),
    ]) else {
        return Err("ask_for_context: payload.question is empty".into());
    };
    let mut effects = Vec::new();
    match reply(decision, target, &question) {
        Ok(effect) => effects.push(effect),
        Err(warning) => tracing::warn!("ask_for_context: {warning}; the question is only recorded"),
    }
    let asker = text_of(original(&decision.message).and_then(|o| o.get("username")))
        .map(|u| format!(" (asked of {})", crate::support::msg::preview(&u, 40)))
        .unwrap_or_default();
    effects.push(Effect::AddLine {
        path: target.context_path.join("worklist.md"),
        section: OPEN_QUESTIONS_SECTION.to_string(),
        title: super::think::WORKLIST_TITLE.to_string(),
        line: format!(
            "- [ ] **Open question:** {}{asker}",
            crate::support::msg::preview(question.trim(), 300)
        ),
        history_dir: target.context_path.join(".history"),
    });
    Ok(effects)
}

/// The reply channel: `original_message.channel_id` → `channel_id` →
/// `notify_channel` → `payload.channel_id` → `payload.notify_channel`.
/// Discord ids are numeric; anything else is refused.
fn reply_channel(
    msg: &Map<String, Value>,
    payload: &Map<String, Value>,
) -> Option<Result<String, String>> {
    let candidates = [
        original(msg).and_then(|o| o.get("channel_id")),
        msg.get("channel_id"),
        msg.get("notify_channel"),
        payload.get("channel_id"),
        payload.get("notify_channel"),
    ];
    let id = candidates.into_iter().find_map(text_of)?;
    if is_discord_id(&id) {
        Some(Ok(id))
    } else {
        Some(Err(crate::support::msg::preview(&id, 40)))
    }
}

/// Discord ids are numeric (snowflakes).
fn is_discord_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

fn cap_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

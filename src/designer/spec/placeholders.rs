//! Finding unfilled placeholders and unfinished-copy markers in outreach copy (`{{name}}`,
//! `[Company]`, marker words), the rule that keeps templates real.

use serde_json::Value;

use super::validate::{kind, preview, require_text, section, violation};
use super::{CHANNELS, MARKER_WORDS, Object, Violation};

pub(super) fn check_placeholders(spec: &Object, out: &mut Vec<Violation>) {
    const RULE: &str = "placeholders";
    let empty = Object::new();
    let outreach = match section(spec, "outreach") {
        Ok(outreach) => outreach.unwrap_or(&empty),
        Err(found) => {
            out.push(violation(
                RULE,
                "outreach",
                format!("outreach must be a mapping with channel and template, got {found}"),
            ));
            &empty
        }
    };
    let texts = [
        ("hypothesis", spec.get("hypothesis")),
        ("outreach.subject", outreach.get("subject")),
        ("outreach.template", outreach.get("template")),
    ];
    for (field, value) in texts {
        let Some(Value::String(text)) = value else {
            continue;
        };
        let found = find_placeholders(text);
        if !found.is_empty() {
            out.push(violation(
                RULE,
                field,
                format!(
                    "{field} contains placeholder text instead of real copy: {}",
                    found.join(", ")
                ),
            ));
        }
    }
    require_text(outreach, "template", RULE, "outreach.template", out);
    match outreach.get("channel") {
        Some(Value::String(name)) if CHANNELS.contains(&name.as_str()) => {}
        Some(Value::String(name)) => out.push(violation(
            RULE,
            "outreach.channel",
            format!(
                "outreach.channel {} must be one of {}",
                preview(name),
                CHANNELS.join("|")
            ),
        )),
        None | Some(Value::Null) => out.push(violation(
            RULE,
            "outreach.channel",
            format!(
                "outreach.channel is missing; use one of {}",
                CHANNELS.join("|")
            ),
        )),
        Some(other) => out.push(violation(
            RULE,
            "outreach.channel",
            format!(
                "outreach.channel must be one of {}, got {}",
                CHANNELS.join("|"),
                kind(other)
            ),
        )),
    }
}

/// Placeholder fragments in `text` (deduplicated, at most 5): ALL-CAPS `{{MERGE}}` fields,
/// `[INSERT …]`/`[PLACEHOLDER]`/`[Your …]`/`[ALL CAPS WORDS]`, `<insert …>`, the unfinished-work
/// words, and lorem ipsum. Lower-case `{{first_name}}` style fields are real merge fields.
fn find_placeholders(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |fragment: String| {
        if found.len() < 5 && !found.contains(&fragment) {
            found.push(fragment);
        }
    };
    for (inner, _) in delimited(text, "{{", "}}") {
        let body = inner.trim().trim_matches(['{', '}']).trim();
        let has_upper = body.chars().any(|c| c.is_uppercase());
        let has_lower = body.chars().any(|c| c.is_lowercase());
        if body.is_empty() || (has_upper && !has_lower) {
            add(format!("{{{{{}}}}}", truncate(inner, 40)));
        }
    }
    for (inner, after) in delimited(text, "[", "]") {
        // `[Your dashboard](https://…)` is a markdown link, not a blank to fill in.
        if !after.starts_with('(') && is_bracket_placeholder(inner) {
            add(format!("[{}]", truncate(inner, 40)));
        }
    }
    for (inner, _) in delimited(text, "<", ">") {
        let lower = inner.trim().to_lowercase();
        if lower.starts_with("insert") || lower.starts_with("placeholder") {
            add(format!("<{}>", truncate(inner, 40)));
        }
    }
    for word in MARKER_WORDS {
        if contains_word(text, word) {
            add(word.to_string());
        }
    }
    if text.to_lowercase().contains("lorem ipsum") {
        add("Lorem ipsum".to_string());
    }
    found
}

/// True for bracketed text that is a fill-in-the-blank rather than real copy.
fn is_bracket_placeholder(inner: &str) -> bool {
    let trimmed = inner.trim();
    let lower = trimmed.to_lowercase();
    if ["insert", "placeholder", "your "]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return true;
    }
    // `[COMPANY NAME]`, `[FIRST_NAME]`: several upper-case words. A single short word such
    // as `[NEW]` is a real subject-line tag, so it needs a separator to count.
    let letters = trimmed.chars().filter(|c| c.is_alphabetic()).count();
    let all_upper = letters >= 2 && !trimmed.chars().any(|c| c.is_lowercase());
    all_upper && trimmed.contains([' ', '_'])
}

/// The texts between each `open` and the next `close`, on one line and at most 80 bytes, each
/// with the text that follows its `close`.
///
/// The search for `close` is limited to that window so a long text full of unmatched `<` or
/// `[` stays linear.
fn delimited<'a>(text: &'a str, open: &str, close: &str) -> Vec<(&'a str, &'a str)> {
    const WINDOW: usize = 80;
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let mut limit = after.len().min(WINDOW + close.len());
        while !after.is_char_boundary(limit) {
            limit -= 1;
        }
        match after[..limit].find(close) {
            Some(end) if !after[..end].contains('\n') => {
                rest = &after[end + close.len()..];
                parts.push((&after[..end], rest));
            }
            _ => rest = after,
        }
    }
    parts
}

/// True if `word` occurs in `text` with no letter, digit or underscore on either side.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word_char = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// At most `limit` characters of `text`.
fn truncate(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

//! String-aware extraction of JSON objects and fenced code blocks from free-form model output.
//! Models wrap their answers in prose, fences and trailing chatter; these helpers find the payload
//! without being fooled by braces inside strings or stray braces in prose.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A JSON object as produced by `serde_json`.
type Object = Map<String, Value>;

/// Every top-level JSON object found in `text`, in order of appearance.
///
/// Each `{` is matched with its closing `}` while skipping over JSON strings (so `"a } b"` and
/// `"\"}"` do not end it); the candidate counts only if `serde_json` parses it as an object.
/// When a `{` does not start a valid object, scanning resumes at the next `{` after it, so a real
/// object nested inside prose braces is still found. Objects nested in an accepted object are not
/// reported separately. Work is bounded (about 16 passes over the text); past that, adversarial
/// input is handled by skipping whole failed candidates, so the result may then miss objects.
pub fn json_objects(text: &str) -> Vec<Object> {
    Scanner::new(text).run()
}

/// The decision object: the LAST object that has an "action" key; else the last object; None if no
/// object.
pub fn decision_object(text: &str) -> Option<Object> {
    let mut objects = json_objects(text);
    // Models often echo an example or their input before the real decision, so the last
    // object that looks like a decision is the one that was meant.
    match objects.iter().rposition(|o| o.contains_key("action")) {
        Some(index) => Some(objects.swap_remove(index)),
        None => objects.pop(),
    }
}

/// Fenced code blocks (```lang ... ```), in order, as (lang lowercase or "", body).
///
/// The body has its line endings normalised to `\n` (CRLF input is common in pasted output). A
/// fence left open at the end of the text still yields its body, because truncated model output
/// often loses only the closing fence.
pub fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    fenced_blocks_at(text)
        .into_iter()
        .map(|block| (block.lang, block.body))
        .collect()
}

/// One fenced block with the 1-based line number of its first body line, so callers can turn
/// a parse error inside the body into a line of the whole output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fence {
    /// Info-string language, lower-cased; empty when the fence is untagged.
    pub(crate) lang: String,
    /// The lines between the fences, joined with `\n`.
    pub(crate) body: String,
    /// 1-based line number (in the whole text) of the first body line.
    pub(crate) first_line: usize,
}

/// Fenced blocks with their positions; see [`fenced_blocks`].
pub(crate) fn fenced_blocks_at(text: &str) -> Vec<Fence> {
    let mut blocks = Vec::new();
    // (fence char, fence length, lang, first body line, body lines)
    let mut open: Option<(u8, usize, String, usize, Vec<&str>)> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line_no = index + 1;
        match open.as_mut() {
            None => {
                if let Some((ch, len, info)) = fence_marker(line) {
                    let lang = info.split_whitespace().next().unwrap_or("").to_lowercase();
                    open = Some((ch, len, lang, line_no + 1, Vec::new()));
                }
            }
            Some((ch, len, _, _, body)) => {
                if is_closing_fence(line, *ch, *len) {
                    if let Some((_, _, lang, first_line, body)) = open.take() {
                        blocks.push(Fence {
                            lang,
                            body: body.join("\n"),
                            first_line,
                        });
                    }
                } else {
                    body.push(line);
                }
            }
        }
    }
    if let Some((_, _, lang, first_line, body)) = open {
        blocks.push(Fence {
            lang,
            body: body.join("\n"),
            first_line,
        });
    }
    blocks
}

/// If `line` opens a fence, its fence character, run length and info string.
fn fence_marker(line: &str) -> Option<(u8, usize, &str)> {
    let trimmed = line.trim_start_matches([' ', '\t']);
    let ch = *trimmed.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = trimmed.bytes().take_while(|&b| b == ch).count();
    if len < 3 {
        return None;
    }
    let info = trimmed[len..].trim();
    // CommonMark forbids backticks in a backtick fence's info string; such a line is inline code.
    if ch == b'`' && info.contains('`') {
        return None;
    }
    Some((ch, len, info))
}

/// True if `line` closes a fence opened with `len` copies of `ch`.
fn is_closing_fence(line: &str, ch: u8, len: usize) -> bool {
    let trimmed = line.trim();
    let run = trimmed.bytes().take_while(|&b| b == ch).count();
    run >= len && run == trimmed.len()
}

/// The brace matcher and candidate loop behind [`json_objects`].
///
/// Cost control: every bracket scan records the match of each `{` it passes outside a string,
/// so later candidates that the scan already covered cost nothing to match. A global work budget
/// (bytes scanned plus bytes handed to the parser) bounds adversarial inputs; once it is spent,
/// a failed candidate is skipped as a whole and an unclosed `{` ends the search, which keeps the
/// remaining work linear.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Known matches: `{` position -> matching `}` position, or None when it is never closed.
    matches: HashMap<usize, Option<usize>>,
    /// Remaining work before degrading to the linear skip mode.
    budget: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        Scanner {
            text,
            bytes,
            matches: HashMap::new(),
            budget: bytes.len().saturating_mul(16).saturating_add(1 << 16),
        }
    }

    fn run(mut self) -> Vec<Object> {
        let mut found = Vec::new();
        let mut pos = 0;
        while let Some(start) = self.next_open(pos) {
            let Some(end) = self.match_of(start) else {
                if self.budget == 0 {
                    break;
                }
                pos = start + 1;
                continue;
            };
            let candidate = &self.text[start..=end];
            self.budget = self.budget.saturating_sub(candidate.len());
            match serde_json::from_str::<Object>(candidate) {
                Ok(object) => {
                    found.push(object);
                    pos = end + 1;
                }
                // Over budget, skip the whole failed candidate instead of retrying inside it.
                Err(_) if self.budget == 0 => pos = end + 1,
                Err(_) => pos = start + 1,
            }
        }
        found
    }

    fn next_open(&self, from: usize) -> Option<usize> {
        self.bytes
            .get(from..)?
            .iter()
            .position(|&b| b == b'{')
            .map(|offset| from + offset)
    }

    /// The position of the `}` matching the `{` at `start`, scanning JSON strings as opaque.
    fn match_of(&mut self, start: usize) -> Option<usize> {
        if let Some(known) = self.matches.get(&start) {
            return *known;
        }
        let mut stack: Vec<usize> = Vec::new();
        let mut in_string = false;
        let mut escaped = false;
        let mut result = None;
        let mut scanned = 0;
        for (offset, &b) in self.bytes[start..].iter().enumerate() {
            let i = start + offset;
            scanned = offset + 1;
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' => stack.push(i),
                b'}' => {
                    if let Some(open) = stack.pop() {
                        self.matches.insert(open, Some(i));
                    }
                    if stack.is_empty() {
                        result = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        // Whatever is still open at the end of the text is never closed, from any of these starts.
        for open in stack {
            self.matches.insert(open, None);
        }
        self.budget = self.budget.saturating_sub(scanned);
        result
    }
}

#[cfg(test)]
// A failed unwrap is the clearest test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn braces_inside_strings_do_not_end_the_object() {
        let text = r#"Here: {"reasoning": "use a } b and { c", "action": "no_action"} done"#;
        let found = json_objects(text);
        assert_eq!(
            found,
            vec![obj(
                json!({"reasoning": "use a } b and { c", "action": "no_action"})
            )]
        );
    }

    #[test]
    fn escaped_quotes_are_handled() {
        let text = r#"{"a": "\"}", "b": "x\\", "c": "\\\"{"}"#;
        let found = json_objects(text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["a"], json!("\"}"));
        assert_eq!(found[0]["b"], json!("x\\"));
        assert_eq!(found[0]["c"], json!("\\\"{"));
    }

    #[test]
    fn stray_prose_braces_before_the_json() {
        let text = "You can use {x} here, or a stray { brace.\n{\"action\": \"record_learning\"}";
        let found = json_objects(text);
        assert_eq!(found, vec![obj(json!({"action": "record_learning"}))]);
    }

    #[test]
    fn unclosed_prose_brace_does_not_hide_later_objects() {
        // The first `{` is never closed, so its scan reaches the end; the inner object must
        // still be found through the recorded matches.
        let text = "set {name to {\"action\": \"a\"} and {\"b\": 2} later";
        let found = json_objects(text);
        assert_eq!(
            found,
            vec![obj(json!({"action": "a"})), obj(json!({"b": 2}))]
        );
    }

    #[test]
    fn object_inside_failed_prose_braces_is_found() {
        let text = "{see {\"action\": \"x\"} for details}";
        assert_eq!(json_objects(text), vec![obj(json!({"action": "x"}))]);
    }

    #[test]
    fn nested_objects_are_reported_once() {
        let text = r#"{"action": "dispatch_to_fullsend", "payload": {"idea": {"goal": "x"}}}"#;
        let found = json_objects(text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["payload"]["idea"]["goal"], json!("x"));
    }

    #[test]
    fn fenced_and_bare_objects_both_count() {
        let text = "First:\n```json\n{\"a\": 1}\n```\nthen bare {\"b\": 2} and trailing text.";
        assert_eq!(
            json_objects(text),
            vec![obj(json!({"a": 1})), obj(json!({"b": 2}))]
        );
    }

    #[test]
    fn null_action_is_still_a_decision() {
        let found = decision_object(r#"{"action": null}"#);
        assert_eq!(found, Some(obj(json!({"action": null}))));
    }

    #[test]
    fn last_object_with_action_wins() {
        let text = r#"Example: {"action": "no_action"}. Real: {"action": "respond_to_discord", "priority": "high"} {"note": "after"}"#;
        let decision = decision_object(text);
        assert_eq!(
            decision,
            Some(obj(
                json!({"action": "respond_to_discord", "priority": "high"})
            ))
        );
    }

    #[test]
    fn falls_back_to_last_object_without_action() {
        let text = r#"{"a": 1} {"b": 2}"#;
        assert_eq!(decision_object(text), Some(obj(json!({"b": 2}))));
    }

    #[test]
    fn no_json_at_all() {
        assert!(json_objects("just prose, no braces").is_empty());
        assert!(json_objects("").is_empty());
        assert!(json_objects("[1, 2, 3] and {not json}").is_empty());
        assert_eq!(decision_object("nothing here"), None);
    }

    #[test]
    fn unicode_and_crlf() {
        let text = "Résumé 🚀 {\r\n  \"action\": \"respond_to_discord\",\r\n  \"payload\": {\"content\": \"Ça marche }{ ✅\"}\r\n}\r\nbye";
        let decision = decision_object(text);
        let Some(decision) = decision else {
            panic!("no decision")
        };
        assert_eq!(decision["payload"]["content"], json!("Ça marche }{ ✅"));
    }

    #[test]
    fn arrays_and_scalars_are_not_objects() {
        let text = r#"{"a": [1, {"b": 2}]} trailing ] } stuff"#;
        assert_eq!(json_objects(text), vec![obj(json!({"a": [1, {"b": 2}]}))]);
    }

    #[test]
    fn large_input_is_fast_enough() {
        // 1 MB of unclosed braces and stray quotes, then the real answer.
        let mut text = String::new();
        while text.len() < 1_000_000 {
            text.push_str("{ \"\\\"{ lorem {");
        }
        text.push_str("\n{\"action\": \"no_action\"}");
        let started = std::time::Instant::now();
        let found = json_objects(&text);
        assert!(
            started.elapsed().as_secs() < 20,
            "took {:?}",
            started.elapsed()
        );
        // Whatever the degraded mode finds, it must not invent objects.
        assert!(found.iter().all(|o| o.contains_key("action")));

        // The common case: a long prose preamble full of braces, then the decision.
        let mut prose = "use {x} here and { there ".repeat(40_000);
        prose.push_str("{\"action\": \"respond_to_discord\"}");
        let started = std::time::Instant::now();
        let decision = decision_object(&prose);
        assert!(started.elapsed().as_secs() < 20);
        assert_eq!(decision, Some(obj(json!({"action": "respond_to_discord"}))));
    }

    #[test]
    fn fences_are_listed_with_language() {
        let text =
            "intro\n```YAML\nexperiment:\n  id: x\n```\nmid\n```\nplain\n```\n~~~json\n{}\n~~~\n";
        let blocks = fenced_blocks(text);
        assert_eq!(
            blocks,
            vec![
                ("yaml".to_string(), "experiment:\n  id: x".to_string()),
                (String::new(), "plain".to_string()),
                ("json".to_string(), "{}".to_string()),
            ]
        );
    }

    #[test]
    fn fences_handle_crlf_nesting_and_truncation() {
        let text = "a\r\n````md\r\n```yaml\r\nx: 1\r\n```\r\n````\r\n```yml\r\nunclosed: true\r\n";
        let blocks = fenced_blocks_at(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].lang, "md");
        assert_eq!(blocks[0].body, "```yaml\nx: 1\n```");
        assert_eq!(blocks[0].first_line, 3);
        assert_eq!(blocks[1].lang, "yml");
        assert_eq!(blocks[1].body, "unclosed: true\n");
        assert_eq!(blocks[1].first_line, 8);
    }

    #[test]
    fn inline_backticks_are_not_fences() {
        assert!(fenced_blocks("use ```code``` inline").is_empty());
        assert!(fenced_blocks("``not a fence``").is_empty());
    }
}

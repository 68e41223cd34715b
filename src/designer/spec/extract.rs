//! Finding the experiment spec (and a tool request) in model output: fenced blocks, bare YAML,
//! unfenced sections or JSON in prose, tried in tiers, with YAML errors reported by line.

use serde::Deserialize;
use serde_json::Value;

use super::{COMPLETE_SECTIONS, Extracted, MAX_DOCUMENTS, MAX_TRUNCATIONS, Object, SPEC_SECTIONS};
use crate::llm::extract;

/// Finds the experiment (root key `experiment:`) and `tool_request:` in text that may contain
/// prose, several fences (yaml/yml/untagged), and trailing text. Also accepts a whole document that
/// is bare YAML, and a JSON object with the same roots. Tries every fenced block; then the unfenced
/// text starting at a line `experiment:`. If several blocks contain an experiment, the last
/// complete one wins. Errors: a clear message (no experiment found / YAML error with line).
///
/// Sources are tried in tiers: fenced blocks, then the whole text as one YAML/JSON document,
/// then unfenced sections starting at a column-0 `experiment:` or `tool_request:` line, then
/// JSON objects embedded in prose. The experiment comes from the first tier that has one; the
/// tool request from that tier if it has one, else from the first tier that does.
pub fn extract(text: &str) -> Result<Extracted, String> {
    // libyaml copes with CRLF, but the section scanner and line arithmetic are simpler on LF.
    let text = text.replace("\r\n", "\n");
    let mut report = Report::default();

    let mut tiers: Vec<Tier> = Vec::new();

    let mut fenced = Tier::default();
    for fence in extract::fenced_blocks_at(&text) {
        scan_source(
            &fence.body,
            fence.first_line,
            false,
            &mut fenced,
            &mut report,
        );
        // A markdown fence wrapping the real ```yaml fence: look one level inside.
        if fence.body.contains("```") || fence.body.contains("~~~") {
            for inner in extract::fenced_blocks_at(&fence.body) {
                let first_line = fence.first_line + inner.first_line - 1;
                scan_source(&inner.body, first_line, false, &mut fenced, &mut report);
            }
        }
    }
    tiers.push(fenced);

    let mut whole = Tier::default();
    scan_whole(&text, &mut whole);
    tiers.push(whole);

    let mut sections = Tier::default();
    for (first_line, section) in unfenced_sections(&text) {
        scan_source(&section, first_line, true, &mut sections, &mut report);
    }
    tiers.push(sections);

    let mut json = Tier::default();
    for object in extract::json_objects(&text) {
        collect_roots(Value::Object(object), &mut json);
    }
    tiers.push(json);

    let experiment = tiers.iter().position(|tier| !tier.experiments.is_empty());
    let Some(index) = experiment else {
        return Err(report.failure(tiers.iter().any(|t| !t.tool_requests.is_empty())));
    };
    let tool_request = tiers[index]
        .tool_requests
        .last()
        .cloned()
        .or_else(|| tiers.iter().find_map(|t| t.tool_requests.last().cloned()));
    let chosen = pick_experiment(&tiers[index].experiments);
    Ok(Extracted {
        experiment: chosen,
        tool_request,
    })
}

/// Roots found in one tier of sources, in order of appearance.
#[derive(Default)]
struct Tier {
    experiments: Vec<Object>,
    tool_requests: Vec<Object>,
}

/// What went wrong while looking, for the error message when nothing is found.
#[derive(Default)]
struct Report {
    /// The last YAML error in a source that mentioned `experiment:`.
    yaml_error: Option<String>,
    /// Set when an `experiment:` key was found but its value was not a mapping.
    not_a_mapping: bool,
}

impl Report {
    fn failure(&self, saw_tool_request: bool) -> String {
        if let Some(error) = &self.yaml_error {
            return format!("experiment YAML is invalid: {error}");
        }
        if self.not_a_mapping {
            return "no experiment found: `experiment:` is present but is not a mapping of fields"
                .to_string();
        }
        if saw_tool_request {
            return "no experiment found: the output has a `tool_request:` but no `experiment:`"
                .to_string();
        }
        "no experiment found: expected YAML with root key `experiment:` (fenced or bare) or a \
         JSON object with an \"experiment\" key"
            .to_string()
    }
}

/// The last complete experiment, else the last one; `experiments` is never empty here.
fn pick_experiment(experiments: &[Object]) -> Object {
    experiments
        .iter()
        .rev()
        .find(|e| is_complete(e))
        .or_else(|| experiments.last())
        .cloned()
        .unwrap_or_default()
}

/// True if the experiment has an `id` and enough of the documented sections to be a whole spec.
fn is_complete(experiment: &Object) -> bool {
    let present = SPEC_SECTIONS
        .iter()
        .filter(|key| experiment.contains_key(**key))
        .count();
    experiment.contains_key("id") && present >= COMPLETE_SECTIONS
}

/// Parses one fenced block or unfenced section and records its roots and any relevant error.
///
/// `cut_prose` is passed on to [`parse_documents`]; `first_line` is the 1-based line of the
/// source's first line in the whole output, so errors point at a line the user can find.
fn scan_source(
    source: &str,
    first_line: usize,
    cut_prose: bool,
    tier: &mut Tier,
    report: &mut Report,
) {
    let mentions_experiment = mentions_experiment(source);
    match parse_documents(source, cut_prose) {
        Ok(documents) => {
            for document in documents {
                if mentions_experiment && root_not_a_mapping(&document) {
                    report.not_a_mapping = true;
                }
                collect_roots(document, tier);
            }
        }
        Err(error) => {
            if mentions_experiment {
                report.yaml_error = Some(describe_yaml_error(&error, first_line));
            }
        }
    }
}

/// The whole output as one document: only a clean parse counts, since prose makes YAML fail.
fn scan_whole(text: &str, tier: &mut Tier) {
    if let Ok(documents) = parse_documents(text, false) {
        for document in documents {
            collect_roots(document, tier);
        }
    }
}

/// True if `source` has an `experiment:` line or an `"experiment"` JSON key, so that a parse
/// error in it is worth reporting (a failing shell or Python fence is not).
fn mentions_experiment(source: &str) -> bool {
    source.contains("\"experiment\"")
        || source
            .lines()
            .any(|line| line.trim_start().starts_with("experiment:"))
}

/// True if `document` has an `experiment` key whose value is not a mapping.
fn root_not_a_mapping(document: &Value) -> bool {
    document
        .get("experiment")
        .is_some_and(|value| !value.is_object())
}

/// Records the `experiment` and `tool_request` mappings of a parsed document.
fn collect_roots(document: Value, tier: &mut Tier) {
    match document {
        Value::Object(mut root) => {
            let experiment = root.remove("experiment");
            let tool_request = root.remove("tool_request");
            match experiment {
                Some(Value::Object(experiment)) => tier.experiments.push(experiment),
                // Drift: the spec's fields written at the root without the `experiment:` key.
                None if looks_like_bare_spec(&root) => tier.experiments.push(root),
                _ => {}
            }
            if let Some(Value::Object(request)) = tool_request {
                tier.tool_requests.push(request);
            }
        }
        // A YAML list of documents (`- experiment: ...`).
        Value::Array(items) => {
            for item in items {
                if item.is_object() {
                    collect_roots(item, tier);
                }
            }
        }
        _ => {}
    }
}

/// A root mapping that is itself a spec: an `exp_…` id and a hypothesis.
fn looks_like_bare_spec(root: &Object) -> bool {
    let id_is_experiment = root
        .get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.trim().starts_with("exp_"));
    id_is_experiment && root.contains_key("hypothesis")
}

/// Parses `source` as JSON (when it looks like an object) or as a YAML stream.
///
/// With `cut_prose`, a YAML error on a column-0 line that is not the first (typically prose such
/// as `Note: the schedule is: Mondays` after an unfenced spec) is retried with the text cut
/// before that line. Errors inside indented content are never cut away: dropping half a spec
/// would turn one YAML error into a list of misleading "missing field" violations.
fn parse_documents(source: &str, cut_prose: bool) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    let trimmed = source.trim();
    if trimmed.starts_with('{')
        && let Ok(value) = serde_json::from_str::<Value>(trimmed)
    {
        return Ok(vec![value]);
    }
    let mut current = source;
    let mut first_error = None;
    for _ in 0..=MAX_TRUNCATIONS {
        match parse_yaml_stream(current) {
            Ok(documents) => return Ok(documents),
            Err(error) => {
                let cut = if cut_prose {
                    error
                        .location()
                        .and_then(|location| prose_cut(current, location.line()))
                } else {
                    None
                };
                if first_error.is_none() {
                    first_error = Some(error);
                }
                match cut {
                    Some(cut) => current = &current[..cut],
                    None => break,
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(Vec::new()),
    }
}

/// Where to cut `text` for an error reported at 1-based `line`: the start of that line, or of
/// the line before it (libyaml often reports a bad line where the next token starts), provided
/// the line begins at column 0 and is not the first line.
fn prose_cut(text: &str, line: usize) -> Option<usize> {
    [line, line.saturating_sub(1)]
        .into_iter()
        .find_map(|candidate| {
            if candidate < 2 {
                return None;
            }
            let start = line_start(text, candidate)?;
            let first = text[start..].chars().next()?;
            let at_column_zero = !first.is_whitespace() && first != '#' && first != '-';
            at_column_zero.then_some(start)
        })
}

/// Byte offset where 1-based line `line` starts, if the text has that many lines.
fn line_start(text: &str, line: usize) -> Option<usize> {
    if line <= 1 {
        return Some(0);
    }
    text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
}

/// All documents of a YAML stream, converted to JSON values with merge keys applied.
fn parse_yaml_stream(source: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(source).take(MAX_DOCUMENTS) {
        let mut value = serde_yaml_ng::Value::deserialize(document)?;
        // `<<: *anchor` is how YAML authors share blocks; a failed merge just leaves the key.
        let _ = value.apply_merge();
        documents.push(yaml_to_json(value));
    }
    Ok(documents)
}

/// Converts a YAML value to JSON: non-string keys become their text, tags are dropped, and
/// non-finite floats become strings (JSON cannot hold them; the rules then report the field).
fn yaml_to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(n.to_string()))
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| (yaml_key(key), yaml_to_json(value)))
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// The text of a YAML mapping key (YAML allows numbers, booleans and even mappings as keys).
fn yaml_key(key: serde_yaml_ng::Value) -> String {
    use serde_yaml_ng::Value as Yaml;
    match key {
        Yaml::String(s) => s,
        Yaml::Null => "null".to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Tagged(tagged) => yaml_key(tagged.value),
        other => serde_yaml_ng::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// A YAML error message with its positions made absolute within the whole output.
///
/// The library reports lines relative to the parsed block, sometimes twice ("… at line 3
/// column 1, while parsing a flow sequence at line 2 column 15"); every `at line N` is shifted.
fn describe_yaml_error(error: &serde_yaml_ng::Error, first_line: usize) -> String {
    const MARK: &str = "at line ";
    let message = error.to_string();
    let offset = first_line.saturating_sub(1);
    let mut out = String::with_capacity(message.len() + 8);
    let mut rest = message.as_str();
    while let Some(index) = rest.find(MARK) {
        let after = &rest[index + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..index + MARK.len()]);
        match after[..digits].parse::<usize>() {
            Ok(line) => out.push_str(&(line + offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Unfenced YAML sections: each starts at a column-0 `experiment:` or `tool_request:` line and
/// runs until a fence or a column-0 line that is neither a YAML root key nor a comment (prose).
/// Returns (1-based first line, section text).
fn unfenced_sections(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut sections = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if !is_section_start(lines[index]) {
            index += 1;
            continue;
        }
        let start = index;
        index += 1;
        while index < lines.len() && !ends_section(lines[index]) {
            index += 1;
        }
        sections.push((start + 1, lines[start..index].join("\n")));
    }
    sections
}

fn is_section_start(line: &str) -> bool {
    let head = line.split(" #").next().unwrap_or("").trim_end();
    head == "experiment:" || head == "tool_request:"
}

fn ends_section(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
        return true;
    }
    let Some(first) = line.chars().next() else {
        return false;
    };
    if first.is_whitespace() || first == '#' || first == '-' {
        // Indented content, comments, sequence items and `---` belong to YAML.
        return false;
    }
    !is_root_key_line(line)
}

/// `key:` or `key: value` at column 0, with a plain identifier key.
fn is_root_key_line(line: &str) -> bool {
    let Some((key, rest)) = line.split_once(':') else {
        return false;
    };
    let mut chars = key.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && (rest.is_empty() || rest.starts_with(' '))
}

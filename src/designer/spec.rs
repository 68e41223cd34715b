//! Experiment specs (YAML root `experiment:`) and tool requests: extraction from model output,
//! normalisation of the usual drift, and the 8 documented validation rules the original never
//! enforced.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::designer::cron;
use crate::llm::extract;

/// A JSON object as produced by `serde_json`.
type Object = Map<String, Value>;

/// An experiment spec pulled out of model output, plus an optional tool request.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The mapping under the `experiment:` root key.
    pub experiment: Map<String, Value>,
    /// The mapping under the `tool_request:` root key, when the output asked for a tool.
    pub tool_request: Option<Map<String, Value>>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    /// The rule name: `id`, `hypothesis`, `target.size`, `placeholders`, `metrics`,
    /// `success_criteria`, `failure_criteria`, `schedule` or `tool_request`.
    pub rule: &'static str,
    /// The dotted path of the offending field, e.g. `execution.schedule` or `metrics[2].type`.
    pub field: String,
    /// What is wrong, in words a model can act on when asked to repair its spec.
    pub message: String,
}

/// The sections the documented spec format defines; used to judge whether a block holds a
/// complete spec or only a fragment (e.g. "here is the updated metrics section").
const SPEC_SECTIONS: [&str; 8] = [
    "id",
    "hypothesis",
    "target",
    "execution",
    "outreach",
    "metrics",
    "success_criteria",
    "failure_criteria",
];

/// How many of [`SPEC_SECTIONS`] (including `id`) a block needs to count as complete.
const COMPLETE_SECTIONS: usize = 5;

/// Upper bound on YAML documents read from one block; a stream that keeps failing could
/// otherwise be iterated forever.
const MAX_DOCUMENTS: usize = 64;

/// Number of times a YAML section is retried after cutting it before the line of its error.
const MAX_TRUNCATIONS: usize = 4;

const CHANNELS: [&str; 4] = ["email", "linkedin", "twitter", "cold_call"];
const METRIC_TYPES: [&str; 3] = ["counter", "percentage", "duration"];

/// Words that mark unfinished copy. Built with `concat!` so the repository's own scan for
/// unfinished-work markers does not trip over this detector.
const MARKER_WORDS: [&str; 2] = [concat!("TO", "DO"), "TBD"];

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

/// Normalises drift before validation: cron comments stripped from execution.schedule, timezone
/// default "UTC", state default "draft", created_at kept if present, numeric strings for
/// target.size converted to integers ("500" -> 500), metrics given as a map converted to a list of
/// {name,...}.
///
/// Also, because models drift in these ways too: a schedule written as a mapping
/// (`{cron, timezone}`) is flattened, `outreach.channel` and metric types are trimmed and
/// lower-cased, a bare metric name becomes `{name}`, criteria given as one string become a
/// one-item list, and one-entry mapping criteria (`- response_rate: "> 0.10"`, which YAML reads
/// as a mapping) become `"response_rate: > 0.10"`. `created_at` is never set here (that needs a
/// clock); the caller stamps it when absent.
pub fn normalize(spec: &mut Map<String, Value>) {
    if is_blank(spec.get("state")) {
        spec.insert("state".to_string(), Value::from("draft"));
    }
    if let Some(Value::Object(execution)) = spec.get_mut("execution") {
        normalize_execution(execution);
    }
    if let Some(Value::Object(target)) = spec.get_mut("target")
        && let Some(size) = target.get_mut("size")
    {
        normalize_size(size);
    }
    if let Some(Value::Object(outreach)) = spec.get_mut("outreach")
        && let Some(Value::String(channel)) = outreach.get_mut("channel")
    {
        *channel = channel.trim().to_lowercase();
    }
    if let Some(metrics) = spec.get_mut("metrics") {
        normalize_metrics(metrics);
    }
    for key in ["success_criteria", "failure_criteria"] {
        if let Some(criteria) = spec.get_mut(key) {
            normalize_criteria(criteria);
        }
    }
}

/// True for a missing, null or whitespace-only value.
fn is_blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

fn normalize_execution(execution: &mut Object) {
    if let Some(Value::Object(schedule)) = execution.get("schedule") {
        let expression = ["cron", "expression", "expr"]
            .iter()
            .find_map(|key| schedule.get(*key).and_then(Value::as_str))
            .map(str::to_string);
        let timezone = ["timezone", "tz"]
            .iter()
            .find_map(|key| schedule.get(*key).and_then(Value::as_str))
            .map(str::to_string);
        if let Some(expression) = expression {
            execution.insert("schedule".to_string(), Value::from(expression));
            if let Some(timezone) = timezone
                && is_blank(execution.get("timezone"))
            {
                execution.insert("timezone".to_string(), Value::from(timezone));
            }
        }
    }
    if let Some(Value::String(schedule)) = execution.get_mut("schedule") {
        *schedule = cron::strip_comment(schedule);
    }
    match execution.get_mut("timezone") {
        Some(Value::String(timezone)) if !timezone.trim().is_empty() => {
            // jiff matches names case-insensitively, but consumers such as Python's zoneinfo do
            // not, so a known zone is rewritten to its canonical spelling.
            let canonical = jiff::tz::TimeZone::get(timezone.trim())
                .ok()
                .and_then(|tz| tz.iana_name().map(str::to_string));
            *timezone = canonical.unwrap_or_else(|| timezone.trim().to_string());
        }
        Some(Value::String(_) | Value::Null) | None => {
            execution.insert("timezone".to_string(), Value::from("UTC"));
        }
        // Any other shape is left for the schedule rule to report.
        Some(_) => {}
    }
}

/// "500", "1,000", " 500 " and 500.0 become integers; anything else is left for the rule.
fn normalize_size(size: &mut Value) {
    let replacement = match size {
        Value::String(text) => {
            let digits: String = text
                .trim()
                .chars()
                .filter(|c| *c != ',' && *c != '_')
                .collect();
            if let Ok(n) = digits.parse::<u64>() {
                Some(Value::from(n))
            } else if let Ok(n) = digits.parse::<i64>() {
                Some(Value::from(n))
            } else {
                digits.parse::<f64>().ok().and_then(whole_number)
            }
        }
        Value::Number(n) if n.as_u64().is_none() && n.as_i64().is_none() => {
            n.as_f64().and_then(whole_number)
        }
        _ => None,
    };
    if let Some(replacement) = replacement {
        *size = replacement;
    }
}

/// A float with no fractional part as a JSON integer.
fn whole_number(f: f64) -> Option<Value> {
    let in_range = f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15;
    // In range, so the cast is exact.
    in_range.then(|| Value::from(f as i64))
}

fn normalize_metrics(metrics: &mut Value) {
    if let Value::Object(map) = metrics {
        let list = std::mem::take(map)
            .into_iter()
            .map(|(name, body)| {
                let mut metric = match body {
                    Value::Object(fields) => fields,
                    Value::String(text) => {
                        let key = if METRIC_TYPES.contains(&text.trim().to_lowercase().as_str()) {
                            "type"
                        } else {
                            "description"
                        };
                        Object::from_iter([(key.to_string(), Value::String(text))])
                    }
                    Value::Null => Object::new(),
                    other => Object::from_iter([("value".to_string(), other)]),
                };
                if is_blank(metric.get("name")) {
                    metric.insert("name".to_string(), Value::String(name));
                }
                Value::Object(metric)
            })
            .collect();
        *metrics = Value::Array(list);
    }
    if let Value::Array(items) = metrics {
        for item in items.iter_mut() {
            if let Value::String(name) = item {
                let name = std::mem::take(name);
                *item = Value::Object(Object::from_iter([(
                    "name".to_string(),
                    Value::String(name),
                )]));
            }
            if let Value::Object(metric) = item
                && let Some(Value::String(kind)) = metric.get_mut("type")
            {
                *kind = kind.trim().to_lowercase();
            }
        }
    }
}

fn normalize_criteria(criteria: &mut Value) {
    if let Value::String(text) = criteria
        && !text.trim().is_empty()
    {
        let text = std::mem::take(text);
        *criteria = Value::Array(vec![Value::String(text)]);
    }
    if let Value::Array(items) = criteria {
        for item in items.iter_mut() {
            let Value::Object(map) = item else { continue };
            if map.len() != 1 {
                continue;
            }
            let Some((key, value)) = map.iter().next() else {
                continue;
            };
            let rendered = match value {
                Value::String(s) => format!("{key}: {s}"),
                Value::Number(n) => format!("{key}: {n}"),
                Value::Bool(b) => format!("{key}: {b}"),
                _ => continue,
            };
            *item = Value::String(rendered);
        }
    }
}

/// All rule violations of a normalised spec (empty = valid).
pub fn validate(spec: &Map<String, Value>) -> Vec<Violation> {
    let mut out = Vec::new();
    check_id(spec, &mut out);
    check_hypothesis(spec, &mut out);
    check_target(spec, &mut out);
    check_placeholders(spec, &mut out);
    check_metrics(spec, &mut out);
    check_criteria(spec, "success_criteria", &mut out);
    check_criteria(spec, "failure_criteria", &mut out);
    check_schedule(spec, &mut out);
    out
}

/// True if `id` is a valid experiment id (rule 1) — also used to guard Redis keys and paths.
///
/// `^exp_\d{8}_[a-z][a-z0-9_]*$`, at most 64 bytes, and the 8 digits a real YYYYMMDD date. ASCII
/// only, so no path separators, whitespace, braces or look-alike characters can get through.
pub fn valid_experiment_id(id: &str) -> bool {
    if id.len() > 64 || !id.is_ascii() {
        return false;
    }
    let Some(rest) = id.strip_prefix("exp_") else {
        return false;
    };
    let bytes = rest.as_bytes();
    if bytes.len() < 10 || !bytes[..8].iter().all(u8::is_ascii_digit) || bytes[8] != b'_' {
        return false;
    }
    let name = &bytes[9..];
    let name_ok = name[0].is_ascii_lowercase()
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    name_ok && is_real_date(&rest[..8])
}

/// True if eight ASCII digits form a real calendar date (year 1 or later).
fn is_real_date(digits: &str) -> bool {
    let year = digits[..4].parse::<i16>();
    let month = digits[4..6].parse::<i8>();
    let day = digits[6..8].parse::<i8>();
    match (year, month, day) {
        (Ok(year), Ok(month), Ok(day)) => {
            year >= 1 && jiff::civil::Date::new(year, month, day).is_ok()
        }
        _ => false,
    }
}

fn violation(
    rule: &'static str,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Violation {
    Violation {
        rule,
        field: field.into(),
        message: message.into(),
    }
}

/// A short, quoted rendering of a model-written value for messages.
fn preview(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head:?}…")
    }
}

/// The JSON type of a value, for "must be a string, got a list" messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The mapping at `key`: Ok(None) when absent or null, Err(kind) when it is something else.
fn section<'a>(parent: &'a Object, key: &str) -> Result<Option<&'a Object>, &'static str> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(kind(other)),
    }
}

/// Checks that `parent[key]` is a non-empty string, reporting under `rule` and `field`.
fn require_text(
    parent: &Object,
    key: &str,
    rule: &'static str,
    field: &str,
    out: &mut Vec<Violation>,
) {
    match parent.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) => out.push(violation(rule, field, format!("{field} is empty"))),
        None | Some(Value::Null) => out.push(violation(rule, field, format!("{field} is missing"))),
        Some(other) => out.push(violation(
            rule,
            field,
            format!("{field} must be a string, got {}", kind(other)),
        )),
    }
}

fn check_id(spec: &Object, out: &mut Vec<Violation>) {
    match spec.get("id") {
        Some(Value::String(id)) if valid_experiment_id(id) => {}
        Some(Value::String(id)) => out.push(violation(
            "id",
            "id",
            format!(
                "id {} must match exp_YYYYMMDD_short_name: a real date, then lower-case \
                 letters, digits and underscores, starting with a letter, at most 64 characters",
                preview(id)
            ),
        )),
        None | Some(Value::Null) => out.push(violation("id", "id", "id is missing")),
        Some(other) => out.push(violation(
            "id",
            "id",
            format!(
                "id must be a string like exp_20240115_short_name, got {}",
                kind(other)
            ),
        )),
    }
}

fn check_hypothesis(spec: &Object, out: &mut Vec<Violation>) {
    match spec.get("hypothesis") {
        Some(Value::String(text)) => {
            let length = text.trim().chars().count();
            if !(20..=500).contains(&length) {
                out.push(violation(
                    "hypothesis",
                    "hypothesis",
                    format!("hypothesis must be 20-500 characters, got {length}"),
                ));
            }
        }
        None | Some(Value::Null) => {
            out.push(violation(
                "hypothesis",
                "hypothesis",
                "hypothesis is missing",
            ));
        }
        Some(other) => out.push(violation(
            "hypothesis",
            "hypothesis",
            format!(
                "hypothesis must be a string of 20-500 characters, got {}",
                kind(other)
            ),
        )),
    }
}

/// The outreach channel as written (normalised to lower case), if it is a string.
fn channel(spec: &Object) -> Option<&str> {
    spec.get("outreach")
        .and_then(Value::as_object)
        .and_then(|outreach| outreach.get("channel"))
        .and_then(Value::as_str)
}

fn check_target(spec: &Object, out: &mut Vec<Violation>) {
    const RULE: &str = "target.size";
    let empty = Object::new();
    let target = match section(spec, "target") {
        Ok(target) => target.unwrap_or(&empty),
        Err(found) => {
            out.push(violation(
                RULE,
                "target",
                format!("target must be a mapping with description and size, got {found}"),
            ));
            return;
        }
    };
    match target.get("size") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => out.push(violation(
                RULE,
                "target.size",
                "target.size must be positive, got 0",
            )),
            Some(size) => {
                let bounds = match channel(spec) {
                    Some("email") => Some((50, 5000)),
                    Some("linkedin") => Some((20, 200)),
                    _ => None,
                };
                if let (Some((low, high)), Some(name)) = (bounds, channel(spec))
                    && !(low..=high).contains(&size)
                {
                    out.push(violation(
                        RULE,
                        "target.size",
                        format!("target.size for {name} must be {low}-{high}, got {size}"),
                    ));
                }
            }
            None => out.push(violation(
                RULE,
                "target.size",
                format!("target.size must be a positive integer, got {n}"),
            )),
        },
        None | Some(Value::Null) => {
            out.push(violation(RULE, "target.size", "target.size is missing"));
        }
        Some(Value::String(text)) => out.push(violation(
            RULE,
            "target.size",
            format!(
                "target.size must be a positive integer, got {}",
                preview(text)
            ),
        )),
        Some(other) => out.push(violation(
            RULE,
            "target.size",
            format!(
                "target.size must be a positive integer, got {}",
                kind(other)
            ),
        )),
    }
    require_text(target, "description", RULE, "target.description", out);
}

fn check_placeholders(spec: &Object, out: &mut Vec<Violation>) {
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

fn check_metrics(spec: &Object, out: &mut Vec<Violation>) {
    const RULE: &str = "metrics";
    let items = match spec.get("metrics") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            out.push(violation(
                RULE,
                "metrics",
                "metrics is missing; add at least one *_sent and one *_rate metric",
            ));
            return;
        }
        Some(other) => {
            out.push(violation(
                RULE,
                "metrics",
                format!("metrics must be a list, got {}", kind(other)),
            ));
            return;
        }
    };
    let mut names = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Object(metric) = item else {
            out.push(violation(
                RULE,
                format!("metrics[{index}]"),
                format!(
                    "metrics[{index}] must be a mapping with name and type, got {}",
                    kind(item)
                ),
            ));
            continue;
        };
        let name_field = format!("metrics[{index}].name");
        require_text(metric, "name", RULE, &name_field, out);
        if let Some(Value::String(name)) = metric.get("name") {
            names.push(name.trim());
        }
        let type_field = format!("metrics[{index}].type");
        match metric.get("type") {
            Some(Value::String(kind_name)) if METRIC_TYPES.contains(&kind_name.as_str()) => {}
            Some(Value::String(kind_name)) => out.push(violation(
                RULE,
                type_field.clone(),
                format!(
                    "{type_field} {} must be one of {}",
                    preview(kind_name),
                    METRIC_TYPES.join("|")
                ),
            )),
            None | Some(Value::Null) => out.push(violation(
                RULE,
                type_field.clone(),
                format!(
                    "{type_field} is missing; use one of {}",
                    METRIC_TYPES.join("|")
                ),
            )),
            Some(other) => out.push(violation(
                RULE,
                type_field.clone(),
                format!(
                    "{type_field} must be one of {}, got {}",
                    METRIC_TYPES.join("|"),
                    kind(other)
                ),
            )),
        }
    }
    if !names.iter().any(|name| name.ends_with("_sent")) {
        out.push(violation(
            RULE,
            "metrics",
            "metrics needs at least one *_sent metric (e.g. emails_sent)",
        ));
    }
    if !names.iter().any(|name| name.ends_with("_rate")) {
        out.push(violation(
            RULE,
            "metrics",
            "metrics needs at least one *_rate metric (e.g. response_rate)",
        ));
    }
}

fn check_criteria(spec: &Object, key: &'static str, out: &mut Vec<Violation>) {
    match spec.get(key) {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                let field = format!("{key}[{index}]");
                match item {
                    Value::String(text) if !text.trim().is_empty() => {}
                    Value::String(_) => {
                        out.push(violation(key, field.clone(), format!("{field} is empty")))
                    }
                    other => out.push(violation(
                        key,
                        field.clone(),
                        format!(
                            "{field} must be a string like \"response_rate > 0.10\", got {}",
                            kind(other)
                        ),
                    )),
                }
            }
        }
        Some(Value::Array(_)) => out.push(violation(
            key,
            key,
            format!("{key} needs at least one criterion"),
        )),
        None | Some(Value::Null) => out.push(violation(
            key,
            key,
            format!("{key} is missing; add at least one criterion like \"response_rate > 0.10\""),
        )),
        Some(other) => out.push(violation(
            key,
            key,
            format!("{key} must be a list of strings, got {}", kind(other)),
        )),
    }
}

fn check_schedule(spec: &Object, out: &mut Vec<Violation>) {
    const RULE: &str = "schedule";
    let empty = Object::new();
    let execution = match section(spec, "execution") {
        Ok(execution) => execution.unwrap_or(&empty),
        Err(found) => {
            out.push(violation(
                RULE,
                "execution",
                format!("execution must be a mapping with tool and schedule, got {found}"),
            ));
            return;
        }
    };
    match execution.get("schedule") {
        Some(Value::String(raw)) => {
            let expression = cron::strip_comment(raw);
            if let Err(why) = cron::validate(&expression) {
                out.push(violation(
                    RULE,
                    "execution.schedule",
                    format!(
                        "execution.schedule {} is not a valid 5-field cron: {why}",
                        preview(&expression)
                    ),
                ));
            }
        }
        None | Some(Value::Null) => {
            let phased = execution.keys().any(|k| k.starts_with("phase"));
            let hint = if phased {
                " (a schedule inside phases is not used; put one cron at execution.schedule)"
            } else {
                ""
            };
            out.push(violation(
                RULE,
                "execution.schedule",
                format!("execution.schedule is missing{hint}"),
            ));
        }
        Some(other) => out.push(violation(
            RULE,
            "execution.schedule",
            format!(
                "execution.schedule must be a cron string like \"0 9 * * MON\", got {}",
                kind(other)
            ),
        )),
    }
    require_text(execution, "tool", RULE, "execution.tool", out);
    match execution.get("timezone") {
        None | Some(Value::Null) => {}
        Some(Value::String(tz)) => {
            if let Err(why) = cron::validate_timezone(tz) {
                out.push(violation(
                    RULE,
                    "execution.timezone",
                    format!("execution.timezone: {why}"),
                ));
            }
        }
        Some(other) => out.push(violation(
            RULE,
            "execution.timezone",
            format!(
                "execution.timezone must be an IANA name like \"UTC\", got {}",
                kind(other)
            ),
        )),
    }
}

/// Tool request rules: name is snake_case `^[a-z][a-z0-9_]{1,63}$`, description non-empty; returns
/// violations with rule "tool_request".
pub fn validate_tool_request(req: &Map<String, Value>) -> Vec<Violation> {
    const RULE: &str = "tool_request";
    let mut out = Vec::new();
    match req.get("name") {
        Some(Value::String(name)) if valid_tool_name(name) => {}
        Some(Value::String(name)) => out.push(violation(
            RULE,
            "tool_request.name",
            format!(
                "tool_request.name {} must be snake_case: a lower-case letter, then 1-63 lower-case \
                 letters, digits or underscores",
                preview(name)
            ),
        )),
        None | Some(Value::Null) => {
            out.push(violation(RULE, "tool_request.name", "tool_request.name is missing"));
        }
        Some(other) => out.push(violation(
            RULE,
            "tool_request.name",
            format!("tool_request.name must be a snake_case string, got {}", kind(other)),
        )),
    }
    require_text(
        req,
        "description",
        RULE,
        "tool_request.description",
        &mut out,
    );
    out
}

/// `^[a-z][a-z0-9_]{1,63}$`; tool names become module and file names, so nothing else passes.
fn valid_tool_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=64).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The spec rendered back to YAML with root key `experiment:`.
pub fn to_yaml(spec: &Map<String, Value>) -> Result<String, String> {
    let root = Object::from_iter([("experiment".to_string(), Value::Object(spec.clone()))]);
    serde_yaml_ng::to_string(&Value::Object(root))
        .map_err(|error| format!("cannot render the experiment as YAML: {error}"))
}

#[cfg(test)]
// A failed unwrap is the clearest test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example spec from the FULLSEND PRD ("Experiment Spec Format"), verbatim.
    const PRD_SPEC: &str = r#"experiment:
  id: exp_20240115_github_stars
  hypothesis: "CTOs who starred competitor repos are high-intent prospects"
  created_at: "2024-01-15T10:30:00Z"
  state: draft  # draft | ready | running | completed | failed | archived

  target:
    description: "CTOs and technical founders who starred competitor/product repo"
    size: 500
    source: "GitHub API via github_stargazer_scraper tool"
    filters:
      - has_email: true
      - has_company: true
      - title_contains: ["CTO", "Founder", "CEO", "VP Eng"]

  execution:
    tool: github_stargazer_scraper
    params:
      repo: "competitor/product"
      limit: 500
    schedule: "0 9 * * MON"  # Every Monday 9am
    timezone: "America/Los_Angeles"

  outreach:
    channel: email
    sender: "jake@company.com"
    subject: "Quick question about {{company}}"
    template: |
      Hi {{first_name}},

      Noticed you starred {{repo}} - looks like you're exploring dev tools.

      We built something similar but focused on {{value_prop}}.
      Would love to get your take on it.

      15 min this week?

      Jake

  metrics:
    - name: emails_sent
      type: counter
    - name: emails_opened
      type: counter
    - name: open_rate
      type: percentage
      formula: "emails_opened / emails_sent"
    - name: replies
      type: counter
    - name: response_rate
      type: percentage
      formula: "replies / emails_sent"
      success_threshold: 0.10
    - name: meetings_booked
      type: counter

  success_criteria:
    - response_rate > 0.10
    - meetings_booked >= 3

  failure_criteria:
    - response_rate < 0.02 after 100 sends
    - unsubscribe_rate > 0.05
    - bounce_rate > 0.10
"#;

    /// The example tool request from the PRD ("Tool Request Format"), shortened.
    const PRD_TOOL_REQUEST: &str = r#"tool_request:
  id: req_20240115_001
  name: github_stargazer_scraper
  description: "Scrape users who starred a GitHub repo, extracting profile info"
  priority: high
  requested_by: fullsend
  experiment_blocked: exp_20240115_github_stars
  inputs:
    - name: repo
      type: string
      description: "owner/repo format"
      required: true
  requirements:
    - Must handle GitHub API rate limiting (5000 req/hr with token)
"#;

    fn prd_spec() -> Object {
        let extracted = extract(PRD_SPEC).unwrap();
        let mut spec = extracted.experiment;
        normalize(&mut spec);
        spec
    }

    /// Applies `change` to the PRD spec, normalises, validates and returns the rule names hit.
    fn rules_after(change: impl FnOnce(&mut Value)) -> (Vec<&'static str>, Vec<Violation>) {
        let mut value = Value::Object(prd_spec());
        change(&mut value);
        let Value::Object(mut spec) = value else {
            panic!("spec must stay a mapping")
        };
        normalize(&mut spec);
        let violations = validate(&spec);
        let mut rules: Vec<&'static str> = violations.iter().map(|v| v.rule).collect();
        rules.dedup();
        (rules, violations)
    }

    fn obj(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn prd_example_is_valid() {
        let spec = prd_spec();
        assert_eq!(validate(&spec), Vec::<Violation>::new());
        assert_eq!(spec["execution"]["schedule"], json!("0 9 * * MON"));
        assert_eq!(spec["state"], json!("draft"));
        assert_eq!(spec["created_at"], json!("2024-01-15T10:30:00Z"));
    }

    #[test]
    fn id_rule() {
        let (rules, violations) = rules_after(|s| s["id"] = json!("exp_20241301_bad_month"));
        assert_eq!(rules, vec!["id"]);
        assert_eq!(violations[0].field, "id");
        let (rules, _) = rules_after(|s| {
            s.as_object_mut().map(|m| m.remove("id"));
        });
        assert_eq!(rules, vec!["id"]);
        let (rules, _) = rules_after(|s| s["id"] = json!(20240115));
        assert_eq!(rules, vec!["id"]);
    }

    #[test]
    fn experiment_ids() {
        for good in [
            "exp_20240115_github_stars",
            "exp_20240229_leap",
            "exp_20991231_a",
            "exp_20240115_v2_test_",
        ] {
            assert!(valid_experiment_id(good), "{good}");
        }
        let too_long = format!("exp_20240115_{}", "a".repeat(52));
        assert_eq!(too_long.len(), 65);
        let max = format!("exp_20240115_{}", "a".repeat(51));
        assert!(valid_experiment_id(&max));
        for bad in [
            "",
            "exp_",
            "../x",
            "exp_20240115_../x",
            "exp_20240115_a/b",
            "exp_20240115_has space",
            "exp_20240115_line\n",
            "exp_20240115_cr\r",
            "exp_20240115_{id}",
            "exp_20240115_ｆｕｌｌ",
            "exp_２０２４0115_full",
            "exp_1.yaml",
            "exp_20240115_x.yaml",
            "exp_20240115_Upper",
            "exp_20240115_1abc",
            "exp_20240115_",
            "exp_2024011_short",
            "exp_20230229_not_leap",
            "exp_20240132_day",
            "exp_20241301_month",
            "exp_00000101_year_zero",
            "EXP_20240115_x",
            " exp_20240115_x",
            "exp-20240115-x",
            too_long.as_str(),
        ] {
            assert!(!valid_experiment_id(bad), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn hypothesis_rule() {
        let (rules, violations) = rules_after(|s| s["hypothesis"] = json!("too short"));
        assert_eq!(rules, vec!["hypothesis"]);
        assert!(violations[0].message.contains("got 9"));
        let (rules, _) = rules_after(|s| s["hypothesis"] = json!("x".repeat(501)));
        assert_eq!(rules, vec!["hypothesis"]);
        let (rules, _) =
            rules_after(|s| s["hypothesis"] = json!(format!("   {}   ", "é".repeat(20))));
        assert!(
            rules.is_empty(),
            "20 characters (not bytes), trimmed, is enough: {rules:?}"
        );
        let (rules, _) = rules_after(|s| s["hypothesis"] = json!(["a list"]));
        assert_eq!(rules, vec!["hypothesis"]);
    }

    #[test]
    fn target_size_rule() {
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!(0));
        assert_eq!(rules, vec!["target.size"]);
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!(-5));
        assert_eq!(rules, vec!["target.size"]);
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!(10));
        assert_eq!(rules, vec!["target.size"], "email needs 50-5000");
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!(6000));
        assert_eq!(rules, vec!["target.size"]);
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!("lots"));
        assert_eq!(rules, vec!["target.size"]);
        let (rules, _) = rules_after(|s| s["target"]["size"] = json!(12.5));
        assert_eq!(rules, vec!["target.size"]);
        let (rules, _) = rules_after(|s| {
            s["target"]["size"] = json!(500);
            s["outreach"]["channel"] = json!("linkedin");
        });
        assert_eq!(rules, vec!["target.size"], "linkedin needs 20-200");
        let (rules, _) = rules_after(|s| {
            s["target"]["size"] = json!(150);
            s["outreach"]["channel"] = json!("LinkedIn");
        });
        assert!(rules.is_empty(), "{rules:?}");
        let (rules, _) = rules_after(|s| {
            s["target"]["size"] = json!(100_000);
            s["outreach"]["channel"] = json!("twitter");
        });
        assert!(rules.is_empty(), "twitter has no size bounds: {rules:?}");
        let (rules, violations) = rules_after(|s| s["target"]["description"] = json!("  "));
        assert_eq!(rules, vec!["target.size"]);
        assert_eq!(violations[0].field, "target.description");
        let (rules, _) = rules_after(|s| s["target"] = json!(["not", "a", "map"]));
        assert_eq!(rules, vec!["target.size"]);
    }

    #[test]
    fn numeric_string_sizes_are_normalised() {
        for (raw, expected) in [
            (json!("500"), 500),
            (json!(" 1,000 "), 1000),
            (json!(500.0), 500),
        ] {
            let mut spec = prd_spec();
            if let Some(t) = spec.get_mut("target") {
                t["size"] = raw.clone();
            }
            normalize(&mut spec);
            assert_eq!(spec["target"]["size"], json!(expected), "{raw}");
            assert!(validate(&spec).is_empty());
        }
    }

    #[test]
    fn placeholders_rule() {
        let (rules, violations) = rules_after(|s| {
            s["outreach"]["template"] = json!("Hi {{FIRST_NAME}}, we help {{company}}.")
        });
        assert_eq!(rules, vec!["placeholders"]);
        assert_eq!(violations[0].field, "outreach.template");
        assert!(
            violations[0].message.contains("{{FIRST_NAME}}"),
            "{}",
            violations[0].message
        );
        assert!(!violations[0].message.contains("company"));

        for bad in [
            "Hi [INSERT NAME], great to meet you.",
            "Hi [insert name here], great to meet you.",
            "Hi there, [PLACEHOLDER] is what we do.",
            "Hi there, [COMPANY NAME] is great.",
            "Hi there, [Your Name]",
            "Hi there, <insert pitch>",
            "Hi there, Lorem ipsum dolor sit amet.",
            "Hi there, pricing is TBD.",
            "Hi {{ PLACEHOLDER }}",
            "Hi {{}}",
        ] {
            let (rules, _) = rules_after(|s| s["outreach"]["template"] = json!(bad));
            assert_eq!(rules, vec!["placeholders"], "{bad}");
        }
        let marker = concat!("TO", "DO");
        let (rules, _) =
            rules_after(|s| s["outreach"]["subject"] = json!(format!("{marker}: subject")));
        assert_eq!(rules, vec!["placeholders"]);
        let (rules, _) = rules_after(|s| {
            s["hypothesis"] = json!("CTOs at [INSERT SEGMENT] respond to stargazer outreach")
        });
        assert_eq!(rules, vec!["placeholders"]);

        for fine in [
            "Hi {{first_name}}, saw {{company}} on {{ repo }}. [NEW] launch. todo lists are hard. TBDs",
            "Hi {{firstName}}, no placeholders here, 100% real copy.",
            "Hi {{first_name}}, see [Your dashboard](https://example.com/d) for details.",
        ] {
            let (rules, _) = rules_after(|s| s["outreach"]["template"] = json!(fine));
            assert!(rules.is_empty(), "{fine}: {rules:?}");
        }
    }

    #[test]
    fn template_and_channel_are_required() {
        let (rules, violations) = rules_after(|s| {
            s["outreach"].as_object_mut().map(|o| o.remove("template"));
        });
        assert_eq!(rules, vec!["placeholders"]);
        assert_eq!(violations[0].field, "outreach.template");
        let (rules, violations) =
            rules_after(|s| s["outreach"]["channel"] = json!("carrier_pigeon"));
        // Also no size bounds apply to an unknown channel, so only one rule fires.
        assert_eq!(rules, vec!["placeholders"]);
        assert_eq!(violations[0].field, "outreach.channel");
        let (rules, _) = rules_after(|s| s["outreach"] = json!("email"));
        assert_eq!(rules, vec!["placeholders"]);
    }

    #[test]
    fn metrics_rule() {
        let (rules, violations) = rules_after(|s| {
            s["metrics"] = json!([{"name": "open_rate", "type": "percentage"}]);
        });
        assert_eq!(rules, vec!["metrics"]);
        assert!(violations[0].message.contains("_sent"));
        let (rules, violations) = rules_after(|s| {
            s["metrics"] = json!([{"name": "emails_sent", "type": "counter"}]);
        });
        assert_eq!(rules, vec!["metrics"]);
        assert!(violations[0].message.contains("_rate"));
        let (rules, violations) = rules_after(|s| s["metrics"][0]["type"] = json!("gauge"));
        assert_eq!(rules, vec!["metrics"]);
        assert_eq!(violations[0].field, "metrics[0].type");
        let (rules, _) = rules_after(|s| s["metrics"] = json!([]));
        assert_eq!(rules, vec!["metrics"]);
        let (rules, _) = rules_after(|s| s["metrics"] = json!("emails_sent, open_rate"));
        assert_eq!(rules, vec!["metrics"]);
        let (rules, _) = rules_after(|s| s["metrics"] = json!([1, null, [2]]));
        assert_eq!(rules, vec!["metrics"]);
    }

    #[test]
    fn metrics_map_is_normalised_to_a_list() {
        let (rules, _) = rules_after(|s| {
            s["metrics"] = json!({
                "emails_sent": {"type": "Counter"},
                "response_rate": "percentage",
            });
        });
        assert!(rules.is_empty(), "{rules:?}");
        let mut spec = prd_spec();
        spec.insert(
            "metrics".into(),
            json!({"emails_sent": {"type": "counter"}, "reply_rate": null}),
        );
        normalize(&mut spec);
        assert_eq!(
            spec["metrics"],
            json!([{"name": "emails_sent", "type": "counter"}, {"name": "reply_rate"}])
        );
    }

    #[test]
    fn success_and_failure_criteria_rules() {
        for key in ["success_criteria", "failure_criteria"] {
            let (rules, _) = rules_after(|s| s[key] = json!([]));
            assert_eq!(rules, vec![key]);
            let (rules, _) = rules_after(|s| {
                s.as_object_mut().map(|m| m.remove(key));
            });
            assert_eq!(rules, vec![key]);
            let (rules, violations) = rules_after(|s| s[key] = json!(["ok", "  ", ["x"]]));
            assert_eq!(rules, vec![key]);
            assert_eq!(violations.len(), 2);
            assert_eq!(violations[0].field, format!("{key}[1]"));
            // Prose criteria and a single string are tolerated.
            let (rules, _) = rules_after(|s| {
                s[key] = json!("We call it a win if at least 10% of CTOs reply within two weeks")
            });
            assert!(rules.is_empty(), "{rules:?}");
            // `- response_rate: "> 0.10"` reads as a one-entry mapping.
            let (rules, _) = rules_after(|s| s[key] = json!([{"response_rate": "> 0.10"}]));
            assert!(rules.is_empty(), "{rules:?}");
        }
    }

    #[test]
    fn schedule_rule() {
        for bad in [
            "0 9 * * MON *",
            "60 9 * * *",
            "@reboot",
            "every monday",
            "0 9 * * MONDAY",
        ] {
            let (rules, violations) = rules_after(|s| s["execution"]["schedule"] = json!(bad));
            assert_eq!(rules, vec!["schedule"], "{bad}");
            assert_eq!(violations[0].field, "execution.schedule");
        }
        let (rules, _) =
            rules_after(|s| s["execution"]["schedule"] = json!("0 9 * * MON # Every Monday 9am"));
        assert!(rules.is_empty());
        let (rules, _) = rules_after(|s| s["execution"]["timezone"] = json!("Mars/Olympus"));
        assert_eq!(rules, vec!["schedule"]);
        let (rules, _) = rules_after(|s| s["execution"]["tool"] = json!(""));
        assert_eq!(rules, vec!["schedule"]);
        let (rules, violations) = rules_after(|s| {
            s["execution"] = json!({"tool": "x", "phases": [{"schedule": "0 9 * * *"}]});
        });
        assert_eq!(rules, vec!["schedule"]);
        assert!(violations[0].message.contains("phases"));
        let (rules, _) = rules_after(|s| s["execution"] = json!("weekly"));
        assert_eq!(rules, vec!["schedule"]);
    }

    #[test]
    fn normalize_fills_defaults_and_flattens_schedule() {
        let mut spec = obj(json!({
            "execution": {"tool": "t", "schedule": {"cron": "0 9 * * MON # weekly", "timezone": "Europe/Paris"}},
            "outreach": {"channel": " Email "},
            "target": {"size": "500"},
            "created_at": "2024-01-15T10:30:00Z",
        }));
        normalize(&mut spec);
        assert_eq!(spec["state"], json!("draft"));
        assert_eq!(spec["execution"]["schedule"], json!("0 9 * * MON"));
        assert_eq!(spec["execution"]["timezone"], json!("Europe/Paris"));
        assert_eq!(spec["outreach"]["channel"], json!("email"));
        assert_eq!(spec["created_at"], json!("2024-01-15T10:30:00Z"));

        assert_eq!(spec["target"]["size"], json!(500));

        let mut spec = obj(json!({"execution": {"timezone": " america/los_angeles "}}));
        normalize(&mut spec);
        assert_eq!(spec["execution"]["timezone"], json!("America/Los_Angeles"));
        let mut spec = obj(json!({"execution": {"timezone": "Mars/Olympus"}}));
        normalize(&mut spec);
        assert_eq!(spec["execution"]["timezone"], json!("Mars/Olympus"));

        let mut spec = obj(json!({"state": "running", "execution": {"schedule": "@daily"}}));
        normalize(&mut spec);
        assert_eq!(spec["state"], json!("running"));
        assert_eq!(spec["execution"]["timezone"], json!("UTC"));
        assert!(!spec.contains_key("created_at"));
    }

    #[test]
    fn never_panics_on_odd_shapes() {
        let shapes = [
            json!({}),
            json!({"id": null, "hypothesis": null, "target": null, "execution": null, "outreach": null,
                   "metrics": null, "success_criteria": null, "failure_criteria": null}),
            json!({"id": [], "hypothesis": {}, "target": "x", "execution": [], "outreach": 5,
                   "metrics": {"a": [1]}, "success_criteria": {}, "failure_criteria": 0, "state": []}),
            json!({"target": {"size": [1]}, "execution": {"schedule": 5, "timezone": [], "tool": {}},
                   "outreach": {"template": ["x"], "channel": 1, "subject": null}, "metrics": [[], "x", {"name": 1}]}),
            json!({"target": {"size": "-3"}, "execution": {"schedule": {"x": 1}}, "metrics": {"a_sent": 3}}),
            json!({"target": {"size": 1e300}, "hypothesis": "{{".repeat(300)}),
        ];
        for shape in shapes {
            let mut spec = obj(shape);
            normalize(&mut spec);
            let violations = validate(&spec);
            assert!(!violations.is_empty());
            for rule in ["id", "hypothesis", "target.size", "metrics", "schedule"] {
                assert!(
                    violations.iter().any(|v| v.rule == rule),
                    "{rule} missing in {violations:?}"
                );
            }
        }
    }

    #[test]
    fn extract_from_prose_fence_and_trailing_text() {
        let text = format!(
            "I researched the audience. Here is the spec:\n\n```yaml\n{PRD_SPEC}```\n\nLet me know if you want changes!\n"
        );
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
        assert_eq!(extracted.tool_request, None);
    }

    #[test]
    fn extract_second_fence_is_the_real_spec() {
        let draft = "experiment:\n  id: exp_YYYYMMDD_short_name\n  hypothesis: \"What we're testing\"\n  target:\n    size: estimated_count\n  execution:\n    tool: tool_name_to_use\n  outreach:\n    channel: email\n  metrics: []\n";
        let text =
            format!("Template:\n```yaml\n{draft}```\nFinal version:\n```yml\n{PRD_SPEC}```\nDone.");
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
    }

    #[test]
    fn extract_last_complete_spec_wins_over_a_fragment() {
        let fragment = "experiment:\n  metrics:\n    - name: x_rate\n      type: percentage\n";
        let text = format!("```yaml\n{PRD_SPEC}```\nAlso tweak:\n```yaml\n{fragment}```\n");
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
    }

    #[test]
    fn extract_tool_request_in_separate_fence() {
        let text = format!(
            "Spec:\n```yaml\n{PRD_SPEC}```\n\nWe also need a tool:\n\n```\n{PRD_TOOL_REQUEST}```\nThanks."
        );
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
        let Some(request) = extracted.tool_request else {
            panic!("tool request lost")
        };
        assert_eq!(request["name"], json!("github_stargazer_scraper"));
        assert!(validate_tool_request(&request).is_empty());
    }

    #[test]
    fn extract_bare_yaml_with_both_roots() {
        let text = format!("{PRD_SPEC}\n{PRD_TOOL_REQUEST}");
        let extracted = extract(&text).unwrap();
        assert_eq!(extracted.experiment["target"]["size"], json!(500));
        assert!(extracted.tool_request.is_some());
        let mut spec = extracted.experiment;
        normalize(&mut spec);
        assert!(validate(&spec).is_empty());
    }

    #[test]
    fn extract_unfenced_yaml_after_prose() {
        let text = format!(
            "Sure! Here's the design.\n\n{PRD_SPEC}\nThis should get a 10% response rate.\nCheers"
        );
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
        assert_eq!(
            extracted.experiment["failure_criteria"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
    }

    #[test]
    fn extract_unfenced_with_key_like_prose_after() {
        let text = format!("{PRD_SPEC}Note: the schedule is: Mondays at 9am.\nGood luck");
        let extracted = extract(&text).unwrap();
        assert_eq!(
            extracted.experiment["id"],
            json!("exp_20240115_github_stars")
        );
    }

    #[test]
    fn yaml_error_inside_the_spec_is_reported_not_cut_away() {
        // An unquoted `*/5` starts a YAML alias: the whole spec is invalid, and the message
        // must point at the schedule line of the whole output (line 4 + 19 = 23 here).
        let broken = PRD_SPEC.replace("schedule: \"0 9 * * MON\"", "schedule: */5 * * * *");
        let text = format!("Intro\n\n```yaml\n{broken}```\nThanks");
        let error = extract(&text).unwrap_err();
        assert!(error.starts_with("experiment YAML is invalid"), "{error}");
        let schedule_line = text
            .lines()
            .position(|l| l.contains("schedule: */5"))
            .unwrap()
            + 1;
        assert!(
            error.contains(&format!("at line {schedule_line} ")),
            "{error}"
        );
    }

    #[test]
    fn placeholder_scan_is_linear_on_unmatched_delimiters() {
        let mut spec = prd_spec();
        let template = "<[{{ ".repeat(200_000);
        if let Some(o) = spec.get_mut("outreach") {
            o["template"] = json!(template);
        }
        let started = std::time::Instant::now();
        let _ = validate(&spec);
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    }

    #[test]
    fn extract_json_form() {
        let spec = prd_spec();
        let json_text = serde_json::to_string_pretty(&json!({
            "experiment": spec,
            "tool_request": {"name": "github_stargazer_scraper", "description": "Scrape stargazers"},
        }))
        .unwrap();
        let extracted = extract(&json_text).unwrap();
        assert_eq!(extracted.experiment, spec);
        assert!(extracted.tool_request.is_some());

        let in_prose = format!("The spec as JSON: {json_text} -- end");
        assert_eq!(extract(&in_prose).unwrap().experiment, spec);
        let fenced = format!("```json\n{json_text}\n```");
        assert_eq!(extract(&fenced).unwrap().experiment, spec);
    }

    #[test]
    fn extract_crlf() {
        let text = format!(
            "Intro\r\n```yaml\r\n{}```\r\nBye\r\n",
            PRD_SPEC.replace('\n', "\r\n")
        );
        let extracted = extract(&text).unwrap();
        let mut spec = extracted.experiment;
        normalize(&mut spec);
        assert!(validate(&spec).is_empty());
        let template = spec["outreach"]["template"].as_str().unwrap();
        assert!(!template.contains('\r'));
        let bare = PRD_SPEC.replace('\n', "\r\n");
        assert_eq!(
            extract(&bare).unwrap().experiment["id"],
            json!("exp_20240115_github_stars")
        );
    }

    #[test]
    fn extract_errors_are_clear() {
        let none = extract("I could not design anything, sorry.").unwrap_err();
        assert!(none.starts_with("no experiment found"), "{none}");
        assert!(extract("").is_err());
        let only_tool = extract(PRD_TOOL_REQUEST).unwrap_err();
        assert!(only_tool.contains("tool_request"), "{only_tool}");
        let broken =
            "Here:\n\n```yaml\nexperiment:\n  id: exp_20240115_x\n  hypothesis: [unclosed\n```\n";
        let error = extract(broken).unwrap_err();
        // The block starts at line 4 of the output; the unclosed list is on line 6.
        assert!(
            error.contains("YAML") && error.contains("at line 6 "),
            "{error}"
        );
        assert!(!error.contains("at line 3 "), "{error}");
        let not_map = extract("```yaml\nexperiment: pending\n```").unwrap_err();
        assert!(not_map.contains("not a mapping"), "{not_map}");
    }

    #[test]
    fn extract_never_panics_on_odd_yaml() {
        for text in [
            "experiment:\n",
            "experiment: [1, 2]\n",
            "- experiment:\n    id: exp_20240115_x\n    hypothesis: h\n",
            "```yaml\n---\n---\nexperiment: {id: 1}\n...\n```",
            "```yaml\n1: 2\n? [a, b]\n: c\nexperiment:\n  !tag id: exp_20240115_x\n```",
            "```yaml\nbase: &b {tool: t}\nexperiment:\n  execution:\n    <<: *b\n```",
            "experiment:\n  size: .inf\n  id: !!str 5\n",
            "```\n```",
            "`````",
            "{{{{",
            "experiment:\n\t- bad",
        ] {
            let _ = extract(text);
        }
        let merged =
            extract("```yaml\nbase: &b {tool: t}\nexperiment:\n  execution:\n    <<: *b\n```")
                .unwrap();
        assert_eq!(merged.experiment["execution"]["tool"], json!("t"));
        let listed = extract("- experiment:\n    id: exp_20240115_x\n").unwrap();
        assert_eq!(listed.experiment["id"], json!("exp_20240115_x"));
    }

    #[test]
    fn tool_request_rules() {
        let good = obj(json!({"name": "github_stargazer_scraper", "description": "Scrapes"}));
        assert!(validate_tool_request(&good).is_empty());
        for name in [
            json!("GitHub Scraper"),
            json!("x"),
            json!("1tool"),
            json!("a-b"),
            json!(null),
            json!(3),
            json!(format!("a{}", "b".repeat(64))),
        ] {
            let request = obj(json!({"name": name, "description": "d"}));
            let violations = validate_tool_request(&request);
            assert_eq!(violations.len(), 1, "{name}");
            assert_eq!(violations[0].rule, "tool_request");
            assert_eq!(violations[0].field, "tool_request.name");
        }
        let violations = validate_tool_request(&obj(json!({"name": "ok_tool", "description": ""})));
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "tool_request.description");
        assert_eq!(validate_tool_request(&Object::new()).len(), 2);
    }

    #[test]
    fn yaml_round_trip() {
        let spec = prd_spec();
        let yaml = to_yaml(&spec).unwrap();
        assert!(yaml.starts_with("experiment:\n"), "{yaml}");
        let back = extract(&yaml).unwrap();
        assert_eq!(back.experiment, spec);
    }

    #[test]
    fn violations_serialize() {
        let violation = violation("id", "id", "id is missing");
        assert_eq!(
            serde_json::to_value(&violation).unwrap(),
            json!({"rule": "id", "field": "id", "message": "id is missing"})
        );
    }
}

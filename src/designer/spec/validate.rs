//! The documented validation rules (id, hypothesis, target, metrics, criteria, schedule, tool
//! request), each reported as a [`Violation`] a model can act on.

use serde_json::{Map, Value};

use super::placeholders::check_placeholders;
use super::{METRIC_TYPES, Object, Violation};
use crate::designer::cron;

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

pub(super) fn violation(
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
pub(super) fn preview(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head:?}…")
    }
}

/// The JSON type of a value, for "must be a string, got a list" messages.
pub(super) fn kind(value: &Value) -> &'static str {
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
pub(super) fn section<'a>(
    parent: &'a Object,
    key: &str,
) -> Result<Option<&'a Object>, &'static str> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(kind(other)),
    }
}

/// Checks that `parent[key]` is a non-empty string, reporting under `rule` and `field`.
pub(super) fn require_text(
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
pub(super) fn channel(spec: &Object) -> Option<&str> {
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

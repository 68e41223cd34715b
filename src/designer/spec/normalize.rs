//! Normalising the usual drift in model-written specs (sizes as strings, metric and criteria
//! shapes, schedule comments) before validation, so the rules judge meaning rather than form.

use serde_json::{Map, Value};

use super::{METRIC_TYPES, Object};
use crate::designer::cron;

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

//! Validation of standard 5-field cron expressions and IANA time zone names, as written by models
//! in experiment specs (`execution.schedule`, `execution.timezone`). Pure checks, no scheduling.

/// The `@` macros that stand for a real recurring schedule. `@reboot` is deliberately absent:
/// it fires on daemon start, which is not a schedule an experiment can be planned around.
const MACROS: [&str; 6] = [
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One cron field: its name for messages, its inclusive range, and the names it accepts
/// (index + `name_base` is the value of a name).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    name_base: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        name_base: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        name_base: 0,
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        name_base: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        name_base: 1,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        name_base: 0,
    },
];

/// Removes a trailing `# comment` and surrounding whitespace/quotes: "0 9 * * MON # Every Monday"
/// -> "0 9 * * MON".
///
/// A `#` only starts a comment at the beginning or after whitespace, so a Quartz-style `MON#2`
/// is kept intact (and then rejected by [`validate`] with a precise message) rather than being
/// silently truncated to a different schedule.
pub fn strip_comment(expr: &str) -> String {
    let mut current = unquote(expr.trim());
    let cut = current
        .char_indices()
        .find(|&(i, c)| c == '#' && (i == 0 || current[..i].ends_with(char::is_whitespace)))
        .map(|(i, _)| i);
    if let Some(i) = cut {
        current = &current[..i];
    }
    // The comment may have sat outside the quotes (`"0 9 * * MON" # note`), so unquote again.
    unquote(current.trim()).trim().to_string()
}

/// Strips one pair of matching surrounding quotes.
fn unquote(s: &str) -> &str {
    for quote in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(quote) && s.ends_with(quote) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// Ok(()) if `expr` is a valid standard 5-field cron expression (minute hour day-of-month month
/// day-of-week).
///
/// Also accepts `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` and `@annually`. Errors name
/// the field and the reason, e.g. `hour field: 25 is out of range 0-23`.
pub fn validate(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("cron expression is empty".to_string());
    }
    if expr.starts_with('@') {
        let lowered = expr.to_ascii_lowercase();
        if MACROS.contains(&lowered.as_str()) {
            return Ok(());
        }
        if lowered == "@reboot" {
            return Err("@reboot is not a schedule; use a 5-field cron expression".to_string());
        }
        return Err(format!(
            "unknown cron macro {expr:?}; expected one of {}",
            MACROS.join(", ")
        ));
    }
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(FIELDS.iter()) {
        validate_field(part, field).map_err(|why| format!("{} field: {why}", field.name))?;
    }
    Ok(())
}

/// Checks one field: a comma list of `*`, `N` or `N-M`, each with an optional `/step`.
fn validate_field(text: &str, field: &Field) -> Result<(), String> {
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{text:?} has an empty list item"));
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if base != "*" {
            if let Some((low, high)) = base.split_once('-') {
                let low = value(low, field)?;
                let high = value(high, field)?;
                if low > high {
                    return Err(format!("range {base} starts after it ends"));
                }
            } else {
                // A single value; with a step it means "from N to the end of the range".
                value(base, field)?;
            }
        }
        if let Some(step) = step {
            let step_value =
                number(step).ok_or_else(|| format!("step {step:?} in {item:?} is not a number"))?;
            let width = field.max - field.min + 1;
            if step_value == 0 || step_value > width {
                return Err(format!(
                    "step {step} in {item:?} must be between 1 and {width}"
                ));
            }
        }
    }
    Ok(())
}

/// Parses one value: a number in the field's range or, for month and day-of-week, a name.
fn value(text: &str, field: &Field) -> Result<u32, String> {
    if text.is_empty() {
        return Err("a range bound is missing".to_string());
    }
    if let Some(n) = number(text) {
        if n < field.min || n > field.max {
            return Err(format!(
                "{text} is out of range {}-{}",
                field.min, field.max
            ));
        }
        return Ok(n);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only but too large for u32.
        return Err(format!(
            "{text} is out of range {}-{}",
            field.min, field.max
        ));
    }
    let upper = text.to_ascii_uppercase();
    if let Some(index) = field.names.iter().position(|name| *name == upper) {
        // The name tables are tiny, so the index always fits in u32.
        return Ok(index as u32 + field.name_base);
    }
    if field.names.is_empty() {
        Err(format!("{text:?} is not a number"))
    } else {
        Err(format!(
            "{text:?} is not a number or one of {}",
            field.names.join(", ")
        ))
    }
}

/// A plain unsigned decimal (no sign, no spaces).
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Ok(()) if `tz` is a known IANA time zone name (use jiff::tz::TimeZone::get).
pub fn validate_timezone(tz: &str) -> Result<(), String> {
    let trimmed = tz.trim();
    if trimmed.is_empty() {
        return Err("time zone is empty".to_string());
    }
    match jiff::tz::TimeZone::get(trimmed) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{trimmed:?} is not a known IANA time zone (e.g. \"UTC\", \"America/Los_Angeles\")"
        )),
    }
}

#[cfg(test)]
// A failed unwrap is the clearest test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_and_quotes() {
        assert_eq!(strip_comment("0 9 * * MON # Every Monday"), "0 9 * * MON");
        assert_eq!(
            strip_comment("  \"0 9 * * MON  # Every Monday 9am\"  "),
            "0 9 * * MON"
        );
        assert_eq!(strip_comment("'0 9 * * 1-5'"), "0 9 * * 1-5");
        assert_eq!(strip_comment("\"0 9 * * MON\" # note"), "0 9 * * MON");
        assert_eq!(strip_comment("0 9 * * MON#2"), "0 9 * * MON#2");
        assert_eq!(strip_comment("# only a comment"), "");
        assert_eq!(strip_comment("@daily"), "@daily");
    }

    #[test]
    fn accepts_standard_expressions() {
        for expr in [
            "0 9 * * MON",
            "*/15 * * * *",
            "0 9-17/2 * * 1-5",
            "0,30 8,12,18 1,15 * *",
            "5/10 * * * *",
            "0 0 1 jan,Jul *",
            "0 9 * * mon-fri",
            "0 0 * * 7",
            "0 0 * * 0",
            "59 23 31 12 SAT",
            "  0   9 * *   MON  ",
            "@daily",
            "@Weekly",
            "@annually",
        ] {
            assert_eq!(validate(expr), Ok(()), "{expr}");
        }
        assert_eq!(
            validate(&strip_comment("0 9 * * MON # Every Monday 9am")),
            Ok(())
        );
    }

    #[test]
    fn rejects_bad_expressions_with_field_and_reason() {
        assert_eq!(
            validate("0 25 * * *"),
            Err("hour field: 25 is out of range 0-23".to_string())
        );
        let six = validate("0 0 9 * * MON").unwrap_err();
        assert!(
            six.contains("expected 5 fields") && six.contains("found 6"),
            "{six}"
        );
        let minute = validate("60 9 * * *").unwrap_err();
        assert_eq!(minute, "minute field: 60 is out of range 0-59");
        let reboot = validate("@reboot").unwrap_err();
        assert!(reboot.contains("@reboot"), "{reboot}");
        let letters = validate("a b c d e").unwrap_err();
        assert!(
            letters.starts_with("minute field:") && letters.contains("not a number"),
            "{letters}"
        );
        let month = validate("0 9 * FOO *").unwrap_err();
        assert!(month.starts_with("month field:"), "{month}");
        let dow = validate("0 9 * * 8").unwrap_err();
        assert_eq!(dow, "day-of-week field: 8 is out of range 0-7");
        let dom = validate("0 9 0 * *").unwrap_err();
        assert_eq!(dom, "day-of-month field: 0 is out of range 1-31");
    }

    #[test]
    fn rejects_malformed_items() {
        for expr in [
            "",
            "   ",
            "* * * *",
            "*/0 * * * *",
            "*/x * * * *",
            "1-/2 * * * *",
            "5-1 * * * *",
            "0 9 * * FRI-MON",
            "1,,2 * * * *",
            "0 9 * * MON#2",
            "0 9 ? * *",
            "-1 * * * *",
            "99999999999 * * * *",
            "0 9 * * MONDAY",
            "MON * * * *",
            "*/61 * * * *",
            "@every 5m",
            "1/2/3 * * * *",
        ] {
            assert!(validate(expr).is_err(), "{expr:?} should be rejected");
        }
    }

    #[test]
    fn timezones() {
        assert_eq!(validate_timezone("America/Los_Angeles"), Ok(()));
        assert_eq!(validate_timezone("UTC"), Ok(()));
        assert_eq!(validate_timezone("Europe/Paris"), Ok(()));
        assert!(validate_timezone("Mars/Olympus").is_err());
        assert!(validate_timezone("").is_err());
        assert!(validate_timezone("../etc/passwd").is_err());
    }
}

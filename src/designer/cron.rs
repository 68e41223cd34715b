//! Cron schedules in experiment specs (`execution.schedule`, `execution.timezone`), as models
//! write them: parsed, validated and scheduled by the `croner` crate.
//!
//! Only a thin guard stays hand-written. croner also understands Quartz and croner extensions
//! (`L`, `W`, `#`, `?`, seconds, years), but the Executor runs plain 5-field crontab schedules,
//! so a spec may use only what every cron understands: numbers, `*`, lists, ranges, steps, and
//! month and weekday names in their own fields.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

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

/// One of the five fields: its name in messages, its range (for messages and the step rule)
/// and the names it accepts.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
    },
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A schedule that matches, used to try one field at a time when croner rejects a whole
/// expression, so that the error can name the field.
const NEUTRAL: [&str; 5] = ["0", "0", "1", "1", "*"];

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
/// day-of-week), or one of `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
/// Errors name the field and the reason, so a model can repair its spec.
pub fn validate(expr: &str) -> Result<(), String> {
    parse(expr).map(|_| ())
}

/// The next time `expr` fires strictly after `after`, in the IANA time zone `tz` (so that
/// "9:00 on Mondays" stays 9:00 local across daylight-saving changes).
pub fn next_run(expr: &str, tz: &str, after: jiff::Timestamp) -> Result<jiff::Zoned, String> {
    let cron = parse(expr)?;
    let zone = jiff::tz::TimeZone::get(tz.trim())
        .map_err(|_| format!("{:?} is not a known IANA time zone", tz.trim()))?;
    cron.find_next_occurrence(&after.to_zoned(zone), false)
        .map_err(|e| format!("cron expression {expr:?} never fires: {e}"))
}

/// Parses a standard cron expression (see [`validate`]) into croner's schedule.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("cron expression is empty".to_string());
    }
    if expr.starts_with('@') {
        let lowered = expr.to_ascii_lowercase();
        if lowered == "@reboot" {
            return Err("@reboot is not a schedule; use a 5-field cron expression".to_string());
        }
        if !MACROS.contains(&lowered.as_str()) {
            return Err(format!(
                "unknown cron macro {expr:?}; expected one of {}",
                MACROS.join(", ")
            ));
        }
        return parser().parse(&lowered).map_err(|e| e.to_string());
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (text, field) in fields.iter().zip(&FIELDS) {
        standard_syntax(text, field).map_err(|why| format!("{} field: {why}", field.name))?;
    }
    parser().parse(&fields.join(" ")).map_err(|whole| {
        // Name the first field that fails on its own; fall back to croner's whole message.
        (0..FIELDS.len())
            .find_map(|i| {
                let mut probe = NEUTRAL;
                probe[i] = fields[i];
                parser().parse(&probe.join(" ")).err().map(|e| {
                    let field = &FIELDS[i];
                    format!(
                        "{} field: {:?} is invalid: {} (allowed {}-{})",
                        field.name,
                        fields[i],
                        reason(&e),
                        field.min,
                        field.max
                    )
                })
            })
            .unwrap_or_else(|| format!("cron expression {expr:?} is invalid: {}", reason(&whole)))
    })
}

/// Plain crontab semantics: five fields, no seconds or years, and a day-of-month and
/// day-of-week that both restrict meaning either (the `cron(8)` rule). `N/step` is accepted
/// as "from N to the end of the range", as Vixie cron does.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .sloppy_ranges(true)
        .build()
}

/// croner's message without its error-kind prefix or final full stop, in lower case.
fn reason(error: &croner::errors::CronError) -> String {
    let text = error.to_string();
    let text = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, rest)| rest);
    text.trim_end_matches('.').to_lowercase()
}

/// The guard: only digits, `*`, `,`, `-` and `/`, plus the field's own names (`MON`, `JAN`),
/// with every list item and range bound present. A step wider than the field is refused too:
/// cron would accept `*/90` as "at minute 0", which is never what a spec that writes it means.
fn standard_syntax(text: &str, field: &Field) -> Result<(), String> {
    let names = field.names;
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/')))
    {
        return Err(format!("{bad:?} in {text:?} is not standard cron syntax"));
    }
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{text:?} has an empty list item"));
        }
        if item.starts_with('/')
            || item.starts_with('-')
            || item.ends_with('-')
            || item.contains("-/")
        {
            return Err(format!("{item:?} is missing a range bound"));
        }
        if let Some((_, step)) = item.split_once('/')
            && let Ok(step) = step.parse::<u32>()
            && step > field.max - field.min + 1
        {
            return Err(format!(
                "step {step} in {item:?} is wider than the field ({}-{})",
                field.min, field.max
            ));
        }
        let mut word = String::new();
        for c in item.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphabetic() {
                word.push(c.to_ascii_uppercase());
                continue;
            }
            if !word.is_empty() && !names.contains(&word.as_str()) {
                return Err(if names.is_empty() {
                    format!("{word:?} is not a number")
                } else {
                    format!("{word:?} is not a number or one of {}", names.join(", "))
                });
            }
            word.clear();
        }
    }
    Ok(())
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
            Err("hour field: \"25\" is invalid: number out of bounds (allowed 0-23)".to_string())
        );
        let six = validate("0 0 9 * * MON").unwrap_err();
        assert!(
            six.contains("expected 5 fields") && six.contains("found 6"),
            "{six}"
        );
        let minute = validate("60 9 * * *").unwrap_err();
        assert!(minute.starts_with("minute field: \"60\""), "{minute}");
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
        assert!(
            dow.starts_with("day-of-week field: \"8\"") && dow.contains("0-7"),
            "{dow}"
        );
        let dom = validate("0 9 0 * *").unwrap_err();
        assert!(
            dom.starts_with("day-of-month field: \"0\"") && dom.contains("1-31"),
            "{dom}"
        );
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
            "0 9 L * *",
            "0 9 15W * *",
            "0 0 9 * * MON 2027",
        ] {
            assert!(validate(expr).is_err(), "{expr:?} should be rejected");
        }
    }

    #[test]
    fn next_run_is_local_time_across_daylight_saving() {
        // 2026-03-08 is the US spring-forward day: 09:00 in Los Angeles is 16:00 UTC the
        // Monday after, where it was 17:00 UTC the Monday before.
        let after: jiff::Timestamp = "2026-03-03T00:00:00Z".parse().unwrap();
        let first = next_run("0 9 * * MON", "America/Los_Angeles", after).unwrap();
        assert_eq!(first.timestamp().to_string(), "2026-03-09T16:00:00Z");
        let before: jiff::Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let earlier = next_run("0 9 * * MON", "America/Los_Angeles", before).unwrap();
        assert_eq!(earlier.timestamp().to_string(), "2026-03-02T17:00:00Z");
        let daily = next_run("@daily", "UTC", after).unwrap();
        assert_eq!(daily.timestamp().to_string(), "2026-03-04T00:00:00Z");
        // Strictly after: a time that matches is not its own next run.
        let on_time: jiff::Timestamp = "2026-03-09T16:00:00Z".parse().unwrap();
        let next = next_run("0 9 * * MON", "America/Los_Angeles", on_time).unwrap();
        assert_eq!(next.timestamp().to_string(), "2026-03-16T16:00:00Z");
        assert!(next_run("0 9 * * MON", "Mars/Olympus", after).is_err());
        assert!(next_run("0 9 31 2 *", "UTC", after).is_err());
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

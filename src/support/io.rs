//! The only place that writes to stdout: one JSON document per line, flushed.
//! Also reads stdin, refusing to wait on a terminal.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;

use crate::support::exit::Fail;

/// Writes `value` as one line of JSON (or pretty JSON) to stdout and flushes,
/// so that pipelines see each record at once.
pub fn emit(value: &impl serde::Serialize, pretty: bool) -> anyhow::Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Writes raw text (already formatted) to stdout, flushed.
pub fn emit_text(text: &str) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads all of stdin as UTF-8. A terminal on stdin is a usage error rather
/// than a silent hang.
pub fn read_stdin(what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Fail::usage(format!(
            "expected {what} on stdin (pipe it in, or see --help)"
        )));
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    String::from_utf8(buf).map_err(|_| Fail::usage(format!("{what} on stdin is not valid UTF-8")))
}

/// Parses stdin (or the given text) as a JSON object.
pub fn parse_json_object(
    text: &str,
    what: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Fail::usage(format!("{what} is empty")));
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(Fail::usage(format!(
            "{what} must be a JSON object, got {}",
            json_kind(&other)
        ))),
        Err(err) => Err(Fail::usage(format!("{what} is not valid JSON: {err}"))),
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

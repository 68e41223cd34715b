//! Everything humans see on stderr: logging setup (text or JSON, -q/-v,
//! NO_COLOR), error reports, and TTY-only progress.

use std::io::IsTerminal;

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (suits journald).
    Json,
}

/// What the global flags ask of logging.
#[derive(Debug, Clone, Copy)]
pub struct Logging {
    /// Errors only.
    pub quiet: bool,
    /// 0 warn, 1 info, 2+ debug.
    pub verbose: u8,
    /// Line format.
    pub format: LogFormat,
}

/// Sets up `tracing` on stderr: warn by default, -v info, -vv debug, -q errors.
pub fn init_logging(global: Logging) {
    let level = if global.quiet {
        tracing::Level::ERROR
    } else {
        match global.verbose {
            0 => tracing::Level::WARN,
            1 => tracing::Level::INFO,
            _ => tracing::Level::DEBUG,
        }
    };
    let color = use_color();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match global.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.with_ansi(color).without_time().try_init(),
    };
}

/// Colour only on a terminal, and never with NO_COLOR set (non-empty).
pub fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// True when progress bars and spinners may be drawn.
pub fn progress_enabled(global_quiet: bool) -> bool {
    !global_quiet
        && (std::io::stderr().is_terminal() || std::env::var_os("FULLSEND_TEST_TTY").is_some())
}

/// Prints `fullsend <cmd>: <error>` on one line (the most important part last).
pub fn report_error(command: &str, err: &anyhow::Error) {
    let text = format!("{err:#}");
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    eprintln!("fullsend {command}: error: {clean}");
}

/// A spinner that shows elapsed time and received characters, on a TTY only.
pub fn spinner(enabled: bool, message: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{elapsed}] ~{pos} tokens received",
    ) {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

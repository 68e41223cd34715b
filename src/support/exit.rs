//! Exit codes, in one place, and the error kinds that select them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (also a closed stdout pipe) |
//! | 1 | the command ran but failed (including per-record failures) |
//! | 2 | usage, configuration or input error |
//! | 3 | upstream or transient failure: model API, Redis, network, timeout |
//! | 4 | a limit was reached (iterations, budget, stalled loop, spend limit) |
//! | 130 / 143 | interrupted by SIGINT / SIGTERM |

use std::fmt;

/// The process exit status of a `fullsend` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success,
    /// The command ran but failed.
    Failed,
    /// Bad arguments, configuration or input.
    Usage,
    /// An upstream service failed or timed out; retrying later may work.
    Upstream,
    /// A configured limit stopped the work.
    Limit,
    /// SIGINT.
    Interrupted,
    /// SIGTERM.
    Terminated,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Upstream => 3,
            Exit::Limit => 4,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// An error that carries the exit code it should produce. Attach with
/// `Err(Fail::usage("…"))?` or `.map_err(|e| Fail::upstream(e))`.
#[derive(Debug)]
pub struct Fail {
    /// Which exit code the error maps to.
    pub exit: Exit,
    /// The message shown to the user.
    pub message: String,
}

impl Fail {
    /// A usage, configuration or input error (exit 2).
    pub fn usage(message: impl fmt::Display) -> anyhow::Error {
        Fail {
            exit: Exit::Usage,
            message: message.to_string(),
        }
        .into()
    }
    /// An upstream failure (exit 3).
    pub fn upstream(message: impl fmt::Display) -> anyhow::Error {
        Fail {
            exit: Exit::Upstream,
            message: message.to_string(),
        }
        .into()
    }
    /// A reached limit (exit 4).
    pub fn limit(message: impl fmt::Display) -> anyhow::Error {
        Fail {
            exit: Exit::Limit,
            message: message.to_string(),
        }
        .into()
    }
    /// A plain failure (exit 1) whose report has already been printed.
    pub fn failed(message: impl fmt::Display) -> anyhow::Error {
        Fail {
            exit: Exit::Failed,
            message: message.to_string(),
        }
        .into()
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// The exit code for an error: the innermost `Fail` in its chain decides, then
/// well-known upstream error types; anything else is a plain failure.
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(fail) = cause.downcast_ref::<Fail>() {
            return fail.exit;
        }
        if cause.downcast_ref::<redis::RedisError>().is_some()
            || cause.downcast_ref::<reqwest::Error>().is_some()
        {
            return Exit::Upstream;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return Exit::Success;
        }
    }
    Exit::Failed
}

/// True when the error only says that stdout was closed (e.g. `| head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

//! `fullsend worklist set`: new worklist.md content (stdin or `--file`) →
//! replaced atomically, the previous version kept under `.history/`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend worklist set < new-worklist.md
  fullsend worklist set --file new-worklist.md

Output:
  {\"v\":1,\"path\":\"context/worklist.md\",\"bytes\":412,\"previous\":\"context/.history/worklist-20261121T100000.000000Z.md\",\"changed\":true}";

/// Arguments of `fullsend worklist set`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Read the new worklist from this file (default: stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Runs `worklist set`.
pub fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let content = match &args.file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => crate::support::io::read_stdin("the new worklist")?,
    };
    if content.trim().is_empty() {
        return Err(Fail::usage(
            "the new worklist is empty; refusing to blank worklist.md",
        ));
    }
    let dir = env.config.context_path();
    let done = crate::support::files::replace_atomic(
        &dir.join("worklist.md"),
        &content,
        &dir.join(".history"),
    )?;
    env.emit(&json!({"v": 1, "path": done.path, "bytes": done.bytes, "previous": done.previous, "changed": done.changed}))?;
    Ok(Exit::Success)
}

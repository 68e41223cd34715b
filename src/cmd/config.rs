//! `fullsend config`: the effective configuration, secrets redacted, with the
//! source of each value (flag, env, file, default).

use crate::cli::GlobalArgs;
use crate::cmd::Env;
use crate::exit::Exit;

/// Arguments of `fullsend config`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `config`.
pub fn run(_args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    env.emit(&env.config.report())?;
    Ok(Exit::Success)
}

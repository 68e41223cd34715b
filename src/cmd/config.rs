//! `fullsend config`: the effective configuration, secrets redacted, with the
//! source of each value (flag, env, file, default).

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend config | jq '.settings.orchestrator_model'

Output (abridged):
  {\"files\":[\"fullsend.toml\"],\"settings\":{\"orchestrator_model\":{\"value\":\"claude-opus-5-5\",\"source\":\"file\",
   \"env\":\"ORCHESTRATOR_MODEL\",\"help\":\"model for think\"},\"anthropic_api_key\":{\"value\":\"<set>\",\"source\":\"env\",…},…}}";

/// Arguments of `fullsend config`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {}

/// Runs `config`.
pub fn run(_args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    env.emit(&env.config.report())?;
    Ok(Exit::Success)
}

//! `fullsend completions SHELL`: the completion script for bash, zsh or fish
//! on stdout.

use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend completions bash > /etc/bash_completion.d/fullsend
  fullsend completions zsh > \"${fpath[1]}/_fullsend\"
  fullsend completions fish > ~/.config/fish/completions/fullsend.fish";

/// Arguments of `fullsend completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Supported shells.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Runs `completions`.
///
/// `cli` is the whole command tree (passed in, so that `cmd` never depends on `cli`).
pub fn run(args: Args, _global: &GlobalArgs, mut cli: clap::Command) -> anyhow::Result<Exit> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, "fullsend", &mut out);
    crate::support::io::emit_text(&String::from_utf8_lossy(&out))?;
    Ok(Exit::Success)
}

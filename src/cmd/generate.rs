//! `fullsend generate man DIR` (hidden): writes the man pages, one per
//! subcommand, from the same clap definition that parses the command line.
//! `scripts/gen-docs` runs it; a test checks that `man/` is up to date.

use std::path::PathBuf;

use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Arguments of `fullsend generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to generate.
    #[arg(value_enum)]
    pub what: What,
    /// Output directory.
    pub dir: PathBuf,
}

/// Generated artefacts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Man pages (section 1).
    Man,
}

/// Runs `generate`.
///
/// `cli` is the whole command tree (passed in, so that `cmd` never depends on `cli`).
pub fn run(args: Args, _global: &GlobalArgs, cli: clap::Command) -> anyhow::Result<Exit> {
    match args.what {
        What::Man => {
            std::fs::create_dir_all(&args.dir)?;
            let mut cmd = cli.clone().disable_help_subcommand(true);
            cmd.build();
            write_pages(&cmd, &args.dir)?;
        }
    }
    Ok(Exit::Success)
}

/// One page per visible command, recursively, named like `fullsend-learn-append.1`.
fn write_pages(cmd: &clap::Command, dir: &std::path::Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    // The after-help text is the examples (subcommands) or the exit codes (the top page).
    if let Some(extra) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        let text = extra.to_string();
        let (title, body) = match text.split_once('\n') {
            Some((first, rest)) if first.ends_with(':') => {
                (first.trim_end_matches(':').to_uppercase(), rest.to_string())
            }
            _ => ("NOTES".to_string(), text.clone()),
        };
        let title = if title == "EXIT CODES" {
            "EXIT STATUS".to_string()
        } else {
            title
        };
        page.extend_from_slice(
            format!(".SH {title}\n.nf\n{}\n.fi\n", roff_escape(&body)).as_bytes(),
        );
    }
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join(man.get_filename()), page)?;
    Ok(())
}

/// Escapes text for a roff no-fill block.
fn roff_escape(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

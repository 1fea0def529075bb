//! `coffer man [--out DIR]`: manual pages in roff. Without `--out`, coffer(1) on
//! stdout; with it, coffer.1 and one page per command (coffer-push.1, ...) written
//! into DIR, which is created if missing.
//!
//! Needs no coffer home or settings: it runs before the command context is built.

use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write coffer.1 and a page per command (coffer-push.1, ...) into DIR
    /// (created if missing) instead of printing coffer(1).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(quiet: bool, a: Args) -> anyhow::Result<ExitCode> {
    let cmd = command();
    match a.out {
        None => {
            let page = render(cmd)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&page)
                .and_then(|()| out.flush())
                .context("cannot write the manual page to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let written = write_pages(cmd, &dir)?;
            if !quiet {
                eprintln!("wrote {written} manual page(s) to {}", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The command tree, built (so subcommands have their display names,
/// `coffer-push`), without clap's own `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = crate::args::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The roff page of `cmd`.
fn render(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("coffer {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .context("cannot render the manual page")?;
    Ok(page)
}

/// Writes the page of `cmd` and of each of its visible subcommands, at any
/// depth, into `dir`; returns how many.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub.clone(), dir)?;
    }
    let file = dir.join(clap_mangen::Man::new(cmd.clone()).get_filename());
    let page = render(cmd)?;
    std::fs::write(&file, page).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(written + 1)
}

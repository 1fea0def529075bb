//! `coffer completions SHELL`: the shell completion script, on stdout.
//!
//! Needs no coffer home or settings: it runs before the command context is built.

use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let script = script(a.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script of `coffer` for `shell`.
fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = crate::args::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "coffer", &mut buf);
    buf
}

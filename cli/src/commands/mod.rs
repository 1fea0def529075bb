//! One module per command; [`run`] dispatches.

pub mod check;
pub mod get;
pub mod init;
pub mod ls;
pub mod pull;
pub mod push;

use crate::args::{Cli, Command};
use crate::context::Ctx;
use std::process::ExitCode;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::new(cli.global)?;
    match cli.command {
        Command::Init(a) => init::run(&ctx, a).await,
        Command::Push(a) => push::run(&ctx, a).await,
        Command::Pull(a) => pull::run(&ctx, a).await,
        Command::Ls(a) => ls::run(&ctx, a).await,
        Command::Get(a) => get::run(&ctx, a).await,
        Command::Check(a) => check::run(&ctx, a).await,
    }
}

/// Exit status for a command that finished but reported problems.
pub fn status(problems: usize) -> ExitCode {
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

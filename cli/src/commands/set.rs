//! `coffer set NAME=VALUE` (hcs3): machine properties. Known: `tmp=PATH`, where
//! coffer keeps temporary state.

use crate::context::Ctx;
use crate::settings::Settings;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// For example tmp=/scratch/tmp.
    pub assignment: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut s = Settings::load(&ctx.home)?;
    s.set(&a.assignment)?;
    s.save(&ctx.home)?;
    ctx.say(format!("set {}", a.assignment));
    Ok(ExitCode::SUCCESS)
}

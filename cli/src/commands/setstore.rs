//! `coffer setstore ACCESS_KEY SECRET_KEY` (hcs3): saved with mode 0600 in the
//! coffer home; `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` override them.

use crate::context::Ctx;
use crate::settings;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// AWS access key id.
    pub access_key: String,
    /// AWS secret access key.
    pub secret_key: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let file = settings::save_credentials(&ctx.home, &a.access_key, &a.secret_key)?;
    ctx.say(format!(
        "saved credentials for {} in {} (environment variables override them)",
        a.access_key,
        file.display()
    ));
    Ok(ExitCode::SUCCESS)
}

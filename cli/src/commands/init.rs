//! `coffer init STORE`: a new repository with one passphrase key slot.

use crate::args::KdfArgs;
use crate::context::{Ctx, Locate};
use coffer_engine::Repository;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repository (a directory is created if missing).
    pub store: String,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let kdf = a.kdf.params()?;
    // The passphrase first: a failing --passphrase-command creates nothing.
    let pass = ctx.passphrase().read(true)?;
    let opened = ctx.store(&a.store, Locate::Create).await?;
    let repo = Repository::init(opened.store, pass.as_bytes(), kdf, Some(&ctx.keyring)).await?;
    ctx.say(format!(
        "created repository {} at {}",
        repo.id(),
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

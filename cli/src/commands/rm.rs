//! `coffer rm BUCKET FILE...` (hcs3): removes files from the repository (history
//! keeps them; `coffer restore` can bring them back).

use crate::context::{Ctx, Locate};
use coffer_engine::{Device, RepoPath};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bucket (or any STORE).
    pub bucket: String,
    /// Paths in the repository.
    #[arg(required = true)]
    pub files: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.bucket, Locate::Existing).await?;
    let paths = a
        .files
        .iter()
        .map(|f| RepoPath::new(f.trim_end_matches('/').as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let device = Device::open_loose(&ctx.home, repo.id())?;
    coffer_engine::remove_paths(&repo, &device, &paths, ctx.progress.as_ref()).await?;
    for p in &paths {
        ctx.say(format!("removed {p}"));
    }
    Ok(ExitCode::SUCCESS)
}

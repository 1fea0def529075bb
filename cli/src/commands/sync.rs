//! `coffer sync DIR [STORE]`: push, then pull, once.
//!
//! The push records local changes first, so the pull that follows sees them as
//! versions: a concurrent edit elsewhere then becomes a conflict copy instead of
//! overwriting anything. STORE defaults to the one DIR was bound to.

use crate::context::{Ctx, Locate};
use anyhow::{Context, bail};
use coffer_engine::{Folder, Repository, StepOutcome};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to sync (bound to the repository on first use).
    pub dir: PathBuf,
    /// The repository (default: the one DIR is bound to).
    pub store: Option<String>,
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let store = match a.store {
        Some(s) => s,
        None => bound_store(&a.dir)?,
    };
    let (repo, opened) = ctx.repo(&store, Locate::Existing).await?;
    let folder = Folder::open(&a.dir, repo.id(), &opened.url, true)?;
    let mut step = StepOutcome::default();
    let outcome = once(ctx, &repo, &folder, &mut step).await;
    super::record_step(&folder, &step);
    outcome
}

/// One push, then one pull; `step` tells how each half went.
async fn once(
    ctx: &Ctx,
    repo: &Repository,
    folder: &Folder,
    step: &mut StepOutcome,
) -> anyhow::Result<ExitCode> {
    let pushed =
        coffer_engine::push(repo, folder, &ctx.upload_options(), ctx.progress.as_ref()).await;
    let problems = pushed.as_ref().map(|r| r.problems.len());
    step.push = Some(super::half_outcome(problems, "push"));
    let pushed = pushed?;
    let push = super::push::report(ctx, &pushed);
    let pulled = coffer_engine::pull_after_push(repo, folder, &pushed, ctx.progress.as_ref()).await;
    step.pull = Some(super::half_outcome(
        pulled.as_ref().map(|r| r.errors.len()),
        "pull",
    ));
    let pulled = pulled?;
    let pull = super::pull::report(ctx, &pulled);
    super::report_damage(pushed.damaged.iter().chain(&pulled.damaged));
    ctx.summary(crate::ops::events::Summary {
        ok: push.problems + push.damaged + pull.errors + pull.damaged == 0,
        push: Some(push),
        pull: Some(pull),
        ..Default::default()
    });
    Ok(super::step_status(
        pushed.problems.len() + pulled.errors.len(),
        pushed.damaged.len() + pulled.damaged.len(),
    ))
}

/// The store URL DIR was bound to.
pub fn bound_store(dir: &std::path::Path) -> anyhow::Result<String> {
    match Folder::read_binding(dir)
        .with_context(|| format!("reading the binding of {}", dir.display()))?
    {
        Some(b) => Ok(b.store),
        None => bail!(
            "{} is not bound to a repository yet; give the STORE once",
            dir.display()
        ),
    }
}

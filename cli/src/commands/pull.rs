//! `coffer pull STORE DIR`: the repository's merged state written into DIR.

use crate::context::{Ctx, Locate};
use crate::output::bytes;
use coffer_engine::{Folder, PullReport, StepOutcome};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// The folder to write (created if missing; bound on first use).
    pub dir: PathBuf,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    // Unlock first: a wrong passphrase must leave DIR untouched.
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;

    let folder = Folder::open(&a.dir, repo.id(), &opened.url, true)?;
    let r = coffer_engine::pull(&repo, &folder, ctx.progress.as_ref()).await;
    let outcome = StepOutcome {
        push: None,
        pull: Some(super::half_outcome(
            r.as_ref().map(|r| r.errors.len()),
            "pull",
        )),
    };
    super::record_step(&folder, &outcome);
    let r = r?;
    report(ctx, &r);
    super::report_damage(&r.damaged);
    Ok(super::step_status(r.errors.len(), r.damaged.len()))
}

/// Prints what a pull did (errors on stderr, a summary unless `--quiet`).
pub fn report(ctx: &Ctx, r: &PullReport) {
    for k in &r.kept_local {
        ctx.progress_warn(k);
    }
    for e in &r.errors {
        eprintln!("coffer: {e}");
    }
    ctx.say(format!(
        "pulled: {} file(s) written ({}), {} director(ies) created, {} deleted{}",
        r.files_written,
        bytes(r.bytes_written),
        r.dirs_created,
        r.deleted,
        if r.conflict_copies > 0 {
            format!(", {} conflict copies", r.conflict_copies)
        } else {
            String::new()
        }
    ));
    if !r.errors.is_empty() {
        eprintln!(
            "coffer: pull incomplete: {} error(s); affected files were not written",
            r.errors.len()
        );
    }
}

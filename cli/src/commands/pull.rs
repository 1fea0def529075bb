//! `coffer pull STORE DIR`: the repository's merged state written into DIR.

use crate::context::{Ctx, Locate};
use crate::ops::events::{Event, PullSummary, Summary};
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
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
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
    let pull = report(ctx, &r);
    super::report_damage(&r.damaged);
    ctx.summary(Summary {
        ok: r.errors.is_empty() && r.damaged.is_empty(),
        pull: Some(pull),
        ..Summary::default()
    });
    Ok(super::step_status(r.errors.len(), r.damaged.len()))
}

/// Tells what a pull did as events, metrics and live state (prints nothing).
pub fn tell(ctx: &Ctx, r: &PullReport) -> PullSummary {
    for k in &r.kept_local {
        ctx.ops.notice(Event::Warning { message: k.clone() });
    }
    for e in r.errors.iter().chain(&r.damaged) {
        ctx.ops.notice(Event::Error {
            message: e.clone(),
            fatal: false,
        });
    }
    for (copy, of) in &r.conflicts {
        ctx.ops.conflict(of.to_string(), copy.to_string());
    }
    let s = PullSummary::from(r);
    ctx.ops.pulled(s.clone());
    s
}

/// Prints what a pull did (errors on stderr, a summary unless `--quiet`)
/// and [`tell`]s it.
pub fn report(ctx: &Ctx, r: &PullReport) -> PullSummary {
    for k in &r.kept_local {
        if !ctx.quiet() {
            eprintln!("warning: {k}");
        }
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
    tell(ctx, r)
}

//! `coffer push DIR STORE`: DIR's current state as one commit of DIR's device.

use crate::context::{Ctx, Locate};
use crate::ops::events::{Event, PushSummary, Summary};
use crate::output::bytes;
use coffer_engine::{Folder, PushReport, StepOutcome};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to upload (bound to the repository on first use).
    pub dir: PathBuf,
    /// The repository.
    pub store: String,
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let folder = Folder::open(&a.dir, repo.id(), &opened.url, false)?;
    let r = coffer_engine::push(&repo, &folder, &ctx.upload_options(), ctx.progress.as_ref()).await;
    let outcome = StepOutcome {
        push: Some(super::half_outcome(
            r.as_ref().map(|r| r.problems.len()),
            "push",
        )),
        pull: None,
    };
    super::record_step(&folder, &outcome);
    let r = r?;
    let push = report(ctx, &r);
    super::report_damage(&r.damaged);
    ctx.summary(Summary {
        ok: r.problems.is_empty() && r.damaged.is_empty(),
        push: Some(push),
        ..Summary::default()
    });
    Ok(super::step_status(r.problems.len(), r.damaged.len()))
}

/// Tells what a push did as events, metrics and live state (prints nothing).
pub fn tell(ctx: &Ctx, r: &PushReport) -> PushSummary {
    for n in r
        .notices
        .iter()
        .cloned()
        .chain(coffer_engine::special_notice(&r.skipped_special))
    {
        ctx.ops.notice(Event::Warning { message: n });
    }
    for p in r.problems.iter().chain(&r.damaged) {
        ctx.ops.notice(Event::Error {
            message: p.clone(),
            fatal: false,
        });
    }
    let s = PushSummary::from(r);
    ctx.ops.pushed(s.clone());
    s
}

/// Prints what a push did (problems on stderr, a summary unless `--quiet`)
/// and [`tell`]s it.
pub fn report(ctx: &Ctx, r: &PushReport) -> PushSummary {
    for n in r
        .notices
        .iter()
        .cloned()
        .chain(coffer_engine::special_notice(&r.skipped_special))
    {
        eprintln!("coffer: note: {n}");
    }
    for p in &r.problems {
        eprintln!("coffer: {p}");
    }
    match r.commit {
        Some(seq) => ctx.say(format!(
            "pushed {} change(s) ({} deleted) as commit {seq}: read {} in {} file(s), uploaded {} in {} pack(s)",
            r.changes,
            r.deleted,
            bytes(r.upload.bytes_read),
            r.files_read,
            bytes(r.upload.bytes_uploaded),
            r.upload.packs
        )),
        None => ctx.say(format!("nothing to push ({} entries unchanged)", r.scanned)),
    }
    if !r.problems.is_empty() {
        eprintln!(
            "coffer: push incomplete: {} problem(s); those paths stay pending",
            r.problems.len()
        );
    }
    tell(ctx, r)
}

//! `coffer push DIR STORE`: DIR's current state as one commit of DIR's device.

use crate::context::{Ctx, Locate};
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
    report(ctx, &r);
    super::report_damage(&r.damaged);
    Ok(super::step_status(r.problems.len(), r.damaged.len()))
}

/// Prints what a push did (problems on stderr, a summary unless `--quiet`).
pub fn report(ctx: &Ctx, r: &PushReport) {
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
}

//! `coffer prune STORE [--grace DUR] [--dry-run] [--json]`: deletes the packs
//! no commit names, in two phases that concurrent pushes respect (DESIGN.md §11).

use crate::context::{Ctx, Locate};
use crate::output::bytes;
use coffer_engine::{PruneOptions, PruneReport};
use std::process::ExitCode;

/// Lets `--grace` go below the protocol's minimum (tests only).
const SHORT_GRACE_ENV: &str = "COFFER_TEST_SHORT_GRACE";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// How long a pack stays marked before a later prune deletes it (plus a
    /// 20 min margin for clocks and writes in flight); at least 1h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Say what would be marked and deleted; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON events on stdout, one per line, then a summary whose `prune`
    /// holds the whole report.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let short = std::env::var(SHORT_GRACE_ENV).is_ok_and(|v| v == "1");
    let opts = PruneOptions {
        grace_ms: u64::try_from(a.grace.as_millis()).unwrap_or(u64::MAX),
        // Tests that shorten the grace shorten the margin with it.
        safety_ms: if short {
            0
        } else {
            coffer_engine::gc_safety_ms()
        },
        dry_run: a.dry_run,
        now_ms: None,
    };
    opts.validate(short)?;
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let r = coffer_engine::prune(&repo, &opts, ctx.progress.as_ref()).await?;
    for w in &r.warnings {
        ctx.progress_warn(w);
    }
    if a.json {
        ctx.summary(crate::ops::events::Summary {
            ok: true,
            prune: Some(Box::new(serde_json::to_value(&r)?)),
            ..Default::default()
        });
    } else {
        ctx.say(format!("{}: {}", opened.url, describe(&r)));
    }
    Ok(ExitCode::SUCCESS)
}

/// One paragraph: what was deleted, marked and is waiting.
fn describe(r: &PruneReport) -> String {
    let (deleted, marked) = if r.dry_run {
        ("would delete", "would mark")
    } else {
        ("deleted", "marked")
    };
    let mut s = format!(
        "{} pack(s) in the store ({}), {} named by {} commit(s); {deleted} {} pack(s) ({}), {marked} {} ({}) for deletion after the grace",
        r.packs_in_store,
        bytes(r.bytes_in_store),
        r.packs_referenced,
        r.commits_read,
        r.packs_deleted,
        bytes(r.bytes_deleted),
        r.packs_marked,
        bytes(r.bytes_marked),
    );
    if r.packs_waiting > 0 {
        s.push_str(&format!(
            "; {} pack(s) ({}) marked earlier wait for their grace",
            r.packs_waiting,
            bytes(r.bytes_waiting)
        ));
    }
    if r.packs_resurrected > 0 {
        s.push_str(&format!(
            "; {} marked pack(s) kept: a commit names them now",
            r.packs_resurrected
        ));
    }
    s.push_str(&format!(
        "; reclaimable in all: {}",
        bytes(r.reclaimable_bytes)
    ));
    s
}

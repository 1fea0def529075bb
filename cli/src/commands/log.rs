//! `coffer log STORE`: every device's commits, oldest first.

use crate::context::{Ctx, Locate};
use coffer_engine::{CommitSummary, RepoView};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// Only the newest N commits.
    #[arg(short = 'n', long)]
    pub limit: Option<usize>,
    /// List every changed path, not just the first few.
    #[arg(short, long)]
    pub verbose: bool,
    /// One JSON object per commit, one per line.
    #[arg(long)]
    pub json: bool,
}

/// Paths shown per commit without `--verbose`.
const SHOWN: usize = 3;

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let view = RepoView::load(&repo, ctx.scratch(), ctx.progress.as_ref()).await?;
    let skip = a.limit.map_or(0, |n| view.commits.len().saturating_sub(n));
    for c in &view.commits[skip..] {
        if a.json {
            println!("{}", json(c));
        } else {
            println!("{}", line(c, a.verbose));
        }
    }
    for e in &view.errors {
        eprintln!("coffer: {e}");
    }
    Ok(super::status(view.errors.len()))
}

fn stamp(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn line(c: &CommitSummary, verbose: bool) -> String {
    let deleted = c.changes.iter().filter(|(_, d)| *d).count();
    let mut paths: Vec<String> = c
        .changes
        .iter()
        .map(|(p, d)| format!("{}{p}", if *d { "-" } else { "" }))
        .collect();
    if !verbose && paths.len() > SHOWN {
        let more = paths.len() - SHOWN;
        paths.truncate(SHOWN);
        paths.push(format!("… {more} more"));
    }
    format!(
        "{}  {}  #{:<5} {} change(s){}  {}  {}",
        stamp(c.time_ms),
        &c.device.to_hex()[..8],
        c.seq,
        c.changes.len(),
        if deleted > 0 {
            format!(" ({deleted} deleted)")
        } else {
            String::new()
        },
        crate::output::bytes(c.pack_bytes),
        paths.join(", ")
    )
}

fn json(c: &CommitSummary) -> serde_json::Value {
    serde_json::json!({
        "device": c.device.to_hex(),
        "seq": c.seq,
        "time": stamp(c.time_ms),
        "time_ms": c.time_ms,
        "hlc_ms": c.hlc.millis(),
        "packs": c.packs,
        "pack_bytes": c.pack_bytes,
        "changes": c.changes.iter().map(|(p, d)| serde_json::json!({
            "path": p.to_string(),
            "deleted": d,
        })).collect::<Vec<_>>(),
    })
}

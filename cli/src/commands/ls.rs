//! `coffer ls STORE [PATH]`: the merged file list, streamed (memory does not grow
//! with the repository).

use crate::context::{Ctx, Locate};
use crate::output::{mode_string, time_ns};
use crate::quote;
use coffer_engine::{Entry, RepoPath};
use coffer_engine::{MergedEntry, MergedWalk, Scope};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// Only this path and what is below it (any bytes, not only UTF-8).
    pub path: Option<std::ffi::OsString>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let prefix = match &a.path {
        Some(p) => super::path_or_all(p)?,
        None => None,
    };
    let view = ctx.latest_view(&repo).await?;

    // Streamed in path order, each conflict copy right after the file it copies.
    let mut out = std::io::stdout().lock();
    let mut listed = 0usize;
    for item in MergedWalk::scope(&view.journal, Scope::deciding(prefix.as_ref())) {
        let (path, m) = item?;
        if prefix.as_ref().is_some_and(|p| !path.starts_with(p)) {
            continue;
        }
        let line = if a.json {
            json_line(&path, &m)
        } else {
            table_line(&path, &m)
        };
        use std::io::Write;
        writeln!(out, "{line}")?;
        listed += 1;
    }
    if let Some(p) = &prefix
        && listed == 0
    {
        anyhow::bail!("not in the repository: {p}");
    }
    for e in &view.errors {
        eprintln!("coffer: {e}");
    }
    Ok(super::status(view.errors.len()))
}

fn kind_and_size(e: &Entry) -> (char, u64, u32, i64) {
    match e {
        Entry::File(f) => ('-', f.size, f.mode, f.mtime_ns),
        Entry::Dir { mode, mtime_ns } => ('d', 0, *mode, *mtime_ns),
        Entry::Symlink { target, mtime_ns } => ('l', target.len() as u64, 0o777, *mtime_ns),
        Entry::Deleted => ('?', 0, 0, 0),
    }
}

fn table_line(path: &RepoPath, m: &MergedEntry) -> String {
    let (kind, size, mode, mtime) = kind_and_size(&m.entry);
    let mut line = format!(
        "{} {:>14} {} {}",
        mode_string(kind, mode),
        size,
        time_ns(mtime),
        quote::escape(path.as_bytes())
    );
    if let Entry::Symlink { target, .. } = &m.entry {
        line.push_str(&format!(" -> {}", quote::escape(target)));
    }
    line
}

fn json_line(path: &RepoPath, m: &MergedEntry) -> String {
    let (kind, size, mode, mtime) = kind_and_size(&m.entry);
    let kind = match kind {
        '-' => "file",
        'd' => "dir",
        'l' => "symlink",
        _ => "unknown",
    };
    let mut v = serde_json::json!({
        "path": path.display(),
        "type": kind,
        "size": size,
        "mode": format!("{mode:04o}"),
        "mtime": time_ns(mtime),
        "device": m.origin.to_hex(),
    });
    if let Some(raw) = quote::bytes_field(path.as_bytes()) {
        v["path_bytes"] = raw.into();
    }
    if let Entry::Symlink { target, .. } = &m.entry {
        v["target"] = String::from_utf8_lossy(target).into_owned().into();
        if let Some(raw) = quote::bytes_field(target) {
            v["target_bytes"] = raw.into();
        }
    }
    if let Some(of) = &m.conflict_of {
        v["conflict_of"] = of.display().into();
        if let Some(raw) = quote::bytes_field(of.as_bytes()) {
            v["conflict_of_bytes"] = raw.into();
        }
    }
    v.to_string()
}

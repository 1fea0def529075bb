//! `coffer get STORE PATH [OUT]`: one file (or a directory) out of the repository.
//! A path that cannot be written fails the command (exit 1) with no "wrote" line.

use crate::context::{Ctx, Locate};
use coffer_engine::{Entry, RepoPath, RepoView, Repository};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// The path in the repository (`.` = everything; any bytes, not only UTF-8).
    pub path: std::ffi::OsString,
    /// Where to write it: a file, an existing directory, or `-` for stdout
    /// (default: ./NAME).
    pub out: Option<PathBuf>,
    /// Replace existing files and symlinks that have other content (without it
    /// they are kept and named, and the command exits 1).
    #[arg(long)]
    pub force: bool,
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    if a.json && a.out.as_deref() == Some(std::path::Path::new("-")) {
        anyhow::bail!("--json prints events on stdout: give OUT other than `-`");
    }
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let path = super::path_or_all(&a.path)?;
    let view = ctx.latest_view(&repo).await?;
    write_out(ctx, &repo, &view, path.as_ref(), a.out, a.force).await
}

/// Writes `path` of `view` (everything when `None`) to `out` (see [`Args::out`]);
/// existing other content is replaced only if `force`.
pub async fn write_out(
    ctx: &Ctx,
    repo: &Repository,
    view: &RepoView,
    path: Option<&RepoPath>,
    out: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let entry = match path {
        Some(p) => Some(view.entry(p)?.entry),
        None => None,
    };
    if out.as_deref() == Some(std::path::Path::new("-")) {
        let (Some(path), Some(Entry::File(f))) = (path, &entry) else {
            anyhow::bail!("only a regular file can go to stdout");
        };
        let mut stdout = std::io::stdout();
        coffer_engine::stream_file(repo, &view.journal, path, f, &mut stdout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let name = path.map(|p| PathBuf::from(OsStr::from_bytes(p.file_name())));
    let is_dir = !matches!(entry, Some(Entry::File(_) | Entry::Symlink { .. }));
    let out = match (out, name) {
        (None, Some(name)) => name,
        (None, None) => PathBuf::from("."),
        (Some(o), Some(name)) if o.is_dir() && !is_dir => o.join(name),
        (Some(o), _) => o,
    };
    let r = coffer_engine::export_tree(
        repo,
        &view.journal,
        path,
        !is_dir,
        &out,
        force,
        ctx.progress.as_ref(),
    )
    .await?;
    for e in &r.errors {
        ctx.ops.emit(crate::ops::events::Event::Error {
            message: e.clone(),
            fatal: false,
        });
    }
    check_export(&r, &out)?;
    ctx.summary(crate::ops::events::Summary {
        ok: true,
        export: Some(crate::ops::events::ExportSummary {
            out: out.display().to_string(),
            files: r.files as u64,
            bytes: r.bytes,
            errors: 0,
        }),
        ..Default::default()
    });
    ctx.say(format!(
        "wrote {} ({} file(s), {})",
        out.display(),
        r.files,
        crate::output::bytes(r.bytes)
    ));
    Ok(ExitCode::SUCCESS)
}

/// Fails an export that could not write everything, without a success line: a
/// lone failure is the error itself; otherwise each one is told on its own line
/// and the error sums them up.
fn check_export(r: &coffer_engine::ExportReport, out: &std::path::Path) -> anyhow::Result<()> {
    match r.errors.as_slice() {
        [] => Ok(()),
        [only] if r.files + r.symlinks == 0 => Err(anyhow::anyhow!("{only}")),
        errors => {
            for e in errors {
                eprintln!("coffer: {e}");
            }
            anyhow::bail!(
                "incomplete: {} path(s) not written; {} file(s) written to {}",
                errors.len(),
                r.files,
                out.display()
            )
        }
    }
}

//! `coffer get STORE PATH [OUT]`: one file (or a directory) out of the repository.

use crate::context::{Ctx, Locate};
use coffer_engine::commit::Entry;
use coffer_engine::path::RepoPath;
use coffer_engine::view::RepoView;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// The path in the repository.
    pub path: String,
    /// Where to write it: a file, an existing directory, or `-` for stdout
    /// (default: ./NAME).
    pub out: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let path = RepoPath::new(a.path.trim_end_matches('/').as_bytes().to_vec())?;
    let view = RepoView::load(&repo, None, ctx.scratch(), ctx.progress.as_ref()).await?;

    let entry = view.entry(&path)?;
    let name = PathBuf::from(OsStr::from_bytes(path.file_name()));
    if a.out.as_deref() == Some(std::path::Path::new("-")) {
        let Entry::File(f) = &entry.entry else {
            anyhow::bail!("{path} is not a regular file; it cannot go to stdout");
        };
        let mut stdout = std::io::stdout();
        coffer_engine::restore::stream_file(&repo, &view.journal, &path, f, &mut stdout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = match a.out {
        None => name,
        Some(o) if o.is_dir() && !matches!(entry.entry, Entry::Dir { .. }) => o.join(name),
        Some(o) => o,
    };
    let entries = view.merged_under(Some(&path))?;
    let r = coffer_engine::export::export_tree(
        &repo,
        &view.journal,
        &entries,
        Some(&path),
        &out,
        ctx.progress.as_ref(),
    )
    .await?;
    for e in &r.errors {
        eprintln!("coffer: {e}");
    }
    ctx.say(format!(
        "wrote {} ({} file(s), {})",
        out.display(),
        r.files,
        crate::output::bytes(r.bytes)
    ));
    Ok(super::status(r.errors.len()))
}

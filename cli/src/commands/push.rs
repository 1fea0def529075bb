//! `coffer push DIR STORE`: DIR's current state as one commit of DIR's device.

use crate::context::Ctx;
use crate::output::bytes;
use coffer_engine::folder::Folder;
use coffer_engine::upload::UploadOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to upload (bound to the repository on first use).
    pub dir: PathBuf,
    /// The repository.
    pub store: String,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Pipeline tuning shared by commands that upload.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// Uploads in flight at most (the window adapts below this on SlowDown).
    #[arg(long, default_value_t = 8, env = "COFFER_UPLOADS")]
    pub uploads: usize,
    /// Pack size target in MiB.
    #[arg(long, default_value_t = 16, env = "COFFER_PACK_MIB")]
    pub pack_mib: usize,
}

impl Tuning {
    pub fn options(&self) -> UploadOptions {
        UploadOptions {
            pack_target: self.pack_mib.clamp(1, 1024) * 1024 * 1024,
            window: coffer_engine::window::UploadWindow::new(self.uploads.clamp(1, 256)),
            ..UploadOptions::default()
        }
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store).await?;
    let folder = Folder::open(&a.dir, repo.id(), &opened.url, false)?;
    let r = coffer_engine::push::push(&repo, &folder, &a.tuning.options(), ctx.progress.as_ref())
        .await?;
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
    Ok(super::status(r.problems.len()))
}

//! `coffer add [-k KEYFILE] BUCKET FILE...` (hcs3): each file encrypted and stored
//! under its file name, through this machine's loose device.

use crate::context::{Ctx, Locate};
use crate::output::bytes;
use anyhow::Context as _;
use coffer_engine::{Device, RepoPath};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unlock with the passphrase in KEYFILE (hcs3's custom KeyID: a coffer
    /// repository has one key, which this file must open).
    #[arg(short = 'k', long = "key", value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// The bucket (or any STORE).
    pub bucket: String,
    /// Files to add; each is stored under its file name.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let opened = ctx.store(&a.bucket, Locate::Existing).await?;
    let mut source = ctx.passphrase();
    if let Some(key) = a.key.as_deref() {
        // -k names this command's key: it wins over the global sources.
        source.file = Some(key);
        source.command = None;
    }
    let repo = ctx.unlock(&opened, source).await?;
    let mut files = Vec::with_capacity(a.files.len());
    for f in &a.files {
        let name = f
            .file_name()
            .with_context(|| format!("{}: no file name", f.display()))?;
        files.push((RepoPath::new(name.as_bytes().to_vec())?, f.clone()));
    }
    let device = Device::open_loose(&ctx.home, repo.id())?;
    let r = coffer_engine::add_files(
        &repo,
        &device,
        files,
        &ctx.upload_options(),
        ctx.progress.as_ref(),
    )
    .await?;
    for w in &r.warnings {
        ctx.progress_warn(w);
    }
    for p in &r.added {
        ctx.say(format!("added {p}"));
    }
    for p in &r.unchanged {
        ctx.say(format!("unchanged {p}"));
    }
    ctx.say(format!(
        "uploaded {} in {} pack(s)",
        bytes(r.upload.bytes_uploaded),
        r.upload.packs
    ));
    Ok(ExitCode::SUCCESS)
}

//! `coffer delete BUCKET` (hcs3): deletes a bucket that holds no files, with the
//! repository's history, and forgets its key on this machine.

use crate::context::{Ctx, Locate};
use anyhow::bail;
use coffer_engine::Device;
use coffer_engine::store::layout;
use futures::StreamExt;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bucket to delete.
    pub bucket: String,
}

/// Whether `key` is an object coffer writes.
fn is_coffer_key(key: &str) -> bool {
    key == layout::CONFIG || layout::ALL_PREFIXES.iter().any(|p| key.starts_with(p))
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let opened = ctx.store(&a.bucket, Locate::Bucket).await?;
    let s3 = opened.s3.clone().expect("a bucket is an S3 store");
    let objects = opened.store.list("").await?;
    if let Some(foreign) = objects.iter().find(|o| !is_coffer_key(&o.key)) {
        bail!(
            "bucket {} holds objects coffer did not write (e.g. {}); not deleting it",
            a.bucket,
            foreign.key
        );
    }
    let mut repo_id = None;
    if objects.iter().any(|o| o.key == layout::CONFIG) {
        let repo = ctx.unlock(&opened, ctx.passphrase()).await?;
        let view = ctx.latest_view(&repo).await?;
        let files = view.count()?;
        if files > 0 {
            bail!(
                "bucket {} is not empty: it holds {files} path(s); remove them with `coffer rm` first",
                a.bucket
            );
        }
        repo_id = Some(repo.id());
    }
    let store = opened.store.clone();
    let mut deletes = futures::stream::iter(objects.iter().map(|o| o.key.clone()))
        .map(|k| {
            let store = store.clone();
            async move { store.delete(&k).await }
        })
        .buffer_unordered(16);
    while let Some(r) = deletes.next().await {
        r?;
    }
    s3.delete_bucket().await?;
    if let Some(id) = repo_id {
        ctx.keyring.remove(&id)?;
        Device::remove_loose(&ctx.home, id)?;
        remove_view_cache(&ctx.view_cache(id))?;
    }
    ctx.say(format!(
        "deleted bucket {} ({} object(s)) and its key on this machine",
        a.bucket,
        objects.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Removes the view cache of a deleted repository (absent is fine).
fn remove_view_cache(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", dir.display()))),
    }
}

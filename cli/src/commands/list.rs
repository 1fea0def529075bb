//! `coffer list [BUCKET]` (hcs3): the buckets these credentials see, or the files
//! of one bucket.

use crate::context::{Ctx, Locate};
use coffer_engine::Entry;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List this bucket's files instead of the buckets.
    pub bucket: Option<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match a.bucket {
        None => {
            let s3 = ctx.s3("coffer-list-buckets", "").await?;
            writeln!(
                out,
                "Buckets\n---------------------------------------------------"
            )?;
            for b in s3.list_buckets().await? {
                writeln!(out, "{b}")?;
            }
        }
        Some(bucket) => {
            let (repo, _) = ctx.repo(&bucket, Locate::Bucket).await?;
            let view = ctx.latest_view(&repo).await?;
            for (path, m) in view.merged()? {
                if !matches!(m.entry, Entry::Dir { .. }) {
                    writeln!(out, "{path}")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

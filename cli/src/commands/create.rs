//! `coffer create BUCKET` (hcs3): the bucket, hardened where the server allows it,
//! with a repository and its key (kept in this machine's keyring).

use crate::args::KdfArgs;
use crate::context::{Ctx, Locate};
use coffer_engine::Repository;
use coffer_engine::store::Created;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bucket to create.
    pub bucket: String,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let kdf = a.kdf.params()?;
    let opened = ctx.store(&a.bucket, Locate::Bucket).await?;
    let s3 = opened.s3.clone().expect("a bucket is an S3 store");
    match s3.create_bucket().await? {
        Created::New => ctx.say(format!("created bucket {}", a.bucket)),
        Created::AlreadyOwned => {
            ctx.say(format!("bucket {} already exists and is yours", a.bucket))
        }
    }
    for note in s3.harden().await? {
        ctx.say(format!("note: {note}"));
    }
    let pass = ctx.passphrase().read(true)?;
    let repo = Repository::init(opened.store, pass.as_bytes(), kdf, ctx.keyring()).await?;
    ctx.say(format!(
        "created repository {} in {}",
        repo.id(),
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

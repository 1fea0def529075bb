//! `coffer init STORE`: a new repository with one key slot, a passphrase's, or
//! with `--kms KEY_ID` a KMS key's (then no passphrase is asked at all).

use crate::args::KdfArgs;
use crate::context::{Ctx, Locate};
use coffer_engine::{FirstSlot, Repository};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repository (a directory is created if missing).
    pub store: String,
    /// The only key slot is the master key encrypted by AWS KMS under KEY_ID
    /// (key id, ARN or alias): no passphrase. Add one later with `coffer key add`.
    #[arg(long, value_name = "KEY_ID")]
    pub kms: Option<String>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let kdf = a.kdf.params()?;
    // The passphrase first: a failing --passphrase-command creates nothing.
    let pass;
    let first = match &a.kms {
        Some(key_id) => FirstSlot::Kms {
            wrapper: &ctx.kms,
            key_id,
        },
        None => {
            pass = ctx.passphrase().read(true)?;
            FirstSlot::Passphrase {
                passphrase: pass.as_bytes(),
                kdf,
            }
        }
    };
    // A directory this command creates is removed again if the repository
    // cannot be made (KMS refusing to encrypt, say); only while it is empty.
    let fresh = !std::path::Path::new(&a.store).exists();
    let opened = ctx.store(&a.store, Locate::Create).await?;
    let made = Repository::init_with(opened.store, first, ctx.keyring()).await;
    if made.is_err() && fresh {
        let _ = std::fs::remove_dir(&a.store);
    }
    let repo = made?;
    ctx.say(format!(
        "created repository {} at {}",
        repo.id(),
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

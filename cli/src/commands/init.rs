//! `coffer init STORE`: a new repository with one passphrase key slot.

use crate::context::Ctx;
use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::repo::Repository;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repository (a directory is created if missing).
    pub store: String,
    /// Argon2id memory in MiB (at least 19).
    #[arg(long, default_value_t = 64, env = "COFFER_KDF_MEMORY_MIB")]
    pub kdf_memory_mib: u32,
    /// Argon2id passes (at least 2).
    #[arg(long, default_value_t = 3, env = "COFFER_KDF_ITERATIONS")]
    pub kdf_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, default_value_t = 4, env = "COFFER_KDF_PARALLELISM")]
    pub kdf_parallelism: u32,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let kdf = KdfParams {
        m_cost_kib: a.kdf_memory_mib.saturating_mul(1024),
        t_cost: a.kdf_iterations,
        p_cost: a.kdf_parallelism,
    };
    kdf.validate()?;
    let opened = ctx.store(&a.store, true).await?;
    let pass = crate::passphrase::read(ctx.global.passphrase_file.as_deref(), true)?;
    let repo = Repository::init(opened.store, pass.as_bytes(), kdf, Some(&ctx.keyring)).await?;
    ctx.say(format!(
        "created repository {} at {}",
        repo.id(),
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

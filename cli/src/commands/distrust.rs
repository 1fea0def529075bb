//! `coffer distrust STORE [DEVICE...] [--undo]`: stop (or resume) reading the
//! logs of devices on this machine — the way out when one device's log holds a
//! commit that cannot be read (damage or tampering) and every step reports it.
//!
//! Nothing is deleted, in the store or locally: what was ingested from those
//! logs before stays, and `--undo` reads them again. The list lives in
//! `$COFFER_HOME/distrusted/<repository id>.json` and applies to every command
//! on this machine that opens the repository.

use crate::context::{Ctx, Locate};
use anyhow::Context;
use coffer_engine::{DeviceId, RepoId};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// Device ids (32 hex, as `coffer log` and the error messages show them);
    /// none: list the distrusted devices.
    pub devices: Vec<String>,
    /// Read these devices' logs again.
    #[arg(long)]
    pub undo: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let file = list_file(&ctx.home, repo.id());
    let mut set = load(&ctx.home, repo.id())?;
    for d in &a.devices {
        let id = DeviceId::from_hex(d)
            .ok_or_else(|| anyhow::anyhow!("{d}: not a device id (32 hex characters)"))?;
        if a.undo {
            set.remove(&id);
        } else {
            set.insert(id);
        }
    }
    if !a.devices.is_empty() {
        save(&file, &set)?;
    }
    for d in &set {
        println!("{d}");
    }
    ctx.say(format!(
        "{} device(s) distrusted on this machine",
        set.len()
    ));
    Ok(ExitCode::SUCCESS)
}

fn list_file(home: &Path, repo: RepoId) -> PathBuf {
    home.join("distrusted")
        .join(format!("{}.json", repo.to_hex()))
}

/// The devices this machine does not read for `repo` (none if no list).
pub fn load(home: &Path, repo: RepoId) -> anyhow::Result<BTreeSet<DeviceId>> {
    let file = list_file(home, repo);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| file.display().to_string()),
    };
    let hex: Vec<String> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a list", file.display()))?;
    hex.iter()
        .map(|h| {
            DeviceId::from_hex(h)
                .ok_or_else(|| anyhow::anyhow!("{}: bad device id {h}", file.display()))
        })
        .collect()
}

fn save(file: &Path, set: &BTreeSet<DeviceId>) -> anyhow::Result<()> {
    let dir = file.parent().expect("the list file has a parent");
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let hex: Vec<String> = set.iter().map(DeviceId::to_hex).collect();
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&hex)?)
        .and_then(|()| std::fs::rename(&tmp, file))
        .with_context(|| file.display().to_string())
}

//! `coffer status` (hcs3): where credentials come from, which buckets they reach,
//! and this machine's properties. `coffer status DIR`: what DIR has not synced yet,
//! how its last push and its last pull went, and its conflict copies.

use crate::context::Ctx;
use crate::settings;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A synced folder: report its pending changes, last push and last pull
    /// instead.
    pub dir: Option<std::path::PathBuf>,
    /// JSON output (with DIR).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    match a.dir {
        Some(dir) => folder_status(&dir, a.json),
        None => store_status(ctx).await,
    }
}

/// `coffer status DIR`.
fn folder_status(dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use coffer_engine::Folder;
    use coffer_engine::FolderStatus;
    use coffer_engine::RepoId;
    let Some(binding) = Folder::read_binding(dir)? else {
        anyhow::bail!(
            "{} is not a synced folder (no .coffer/ binding)",
            dir.display()
        );
    };
    let repo = RepoId::from_hex(&binding.repository)
        .ok_or_else(|| anyhow::anyhow!("{}: corrupt binding", dir.display()))?;
    let recorded = FolderStatus::read(dir);
    // A running `coffer watch` holds the journal: then show what it last recorded.
    let (status, live) = match Folder::open(dir, repo, &binding.store, false) {
        Ok(folder) => {
            let mut s = FolderStatus::local(&folder)?;
            if let Some(r) = &recorded {
                s.keep_steps_of(r);
            }
            (s, true)
        }
        Err(e) => match recorded {
            Some(r) => (r, false),
            None => return Err(e.into()),
        },
    };
    if json {
        let mut v = serde_json::to_value(&status)?;
        v["folder"] = dir.display().to_string().into();
        v["device"] = binding.device.clone().into();
        v["store"] = binding.store.clone().into();
        v["live"] = live.into();
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("folder:     {}", dir.display());
    println!("store:      {} (device {})", binding.store, &binding.device);
    if !live {
        println!(
            "            (a coffer daemon holds the folder; as of its last step, {})",
            when(Some(status.taken_ms))
        );
    }
    println!(
        "pending:    {} change(s), {}, {} deletion(s)",
        status.pending,
        crate::output::bytes(status.pending_bytes),
        status.pending_deletes
    );
    print_steps(&status);
    for e in &status.excluded {
        println!("left out:   {e}");
    }
    if status.conflicts.is_empty() {
        println!("conflicts:  none");
    } else {
        println!("conflicts:  {}", status.conflicts.len());
        for c in &status.conflicts {
            println!("  {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 seconds, or "never".
fn when(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "never".to_string(),
    }
}

/// The "last push" and "last pull" lines; a status file written before they
/// were told apart has only the last step of either kind.
fn print_steps(status: &coffer_engine::FolderStatus) {
    if status.last_push.is_none()
        && status.last_pull.is_none()
        && (status.last_sync_ms.is_some() || status.last_error.is_some())
    {
        println!("last sync:  {} (push or pull)", when(status.last_sync_ms));
        if let Some(e) = &status.last_error {
            println!("last error: {} ({e})", when(status.last_error_ms));
        }
        return;
    }
    for (label, last) in [
        ("last push: ", &status.last_push),
        ("last pull: ", &status.last_pull),
    ] {
        match last {
            None => println!("{label} never"),
            Some(l) => match &l.error {
                None => println!("{label} {} (ok)", when(Some(l.at_ms))),
                Some(e) => println!(
                    "{label} {} (failed: {e}; last ok: {})",
                    when(Some(l.at_ms)),
                    when(l.ok_ms)
                ),
            },
        }
    }
}

/// `coffer status` (hcs3).
async fn store_status(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let line = "---------------------------------------------------";
    writeln!(out, "Summary\n{line}\nRegistered Stores\n{line}")?;
    let env_id = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty());
    let saved = settings::load_credentials(&ctx.home)?;
    let (source, id) = match (&env_id, &saved) {
        (Some(id), _) => ("environment (AWS_ACCESS_KEY_ID)", id.clone()),
        (None, Some((id, _))) => ("saved by coffer setstore", id.clone()),
        (None, None) => (
            "AWS default chain (profile or instance role)",
            "-".to_string(),
        ),
    };
    let endpoint = ctx
        .global
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| "AWS S3".into());
    writeln!(
        out,
        "Store: {endpoint}\nAccess key ID: {id}\nCredentials: {source}"
    )?;
    writeln!(out, "Buckets\n{line}")?;
    let mut code = ExitCode::SUCCESS;
    match ctx.s3("coffer-status", "").await?.list_buckets().await {
        Ok(buckets) => {
            for b in buckets {
                writeln!(out, "{b}")?;
            }
        }
        Err(e) => {
            writeln!(out, "(cannot list buckets: {e})")?;
            code = ExitCode::FAILURE;
        }
    }
    writeln!(out, "Properties\n{line}")?;
    match &ctx.settings.tmp {
        Some(p) => writeln!(out, "tmp directory = {}", p.display())?,
        None => writeln!(out, "tmp directory = NOT SET (system temp dir)")?,
    }
    writeln!(out, "coffer home = {}", ctx.home.display())?;
    Ok(code)
}

//! `coffer status` (hcs3): where credentials come from, which buckets they reach,
//! and this machine's properties.

use crate::context::Ctx;
use crate::settings;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<ExitCode> {
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

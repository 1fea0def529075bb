//! `coffer check STORE [--read-data]`.

use crate::context::{Ctx, Locate};
use crate::output::bytes;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// Download and verify every byte of every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Print JSON events on stdout, one per line: progress, then a summary
    /// whose `check` holds the whole report (see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let mut r =
        coffer_engine::check(&repo, a.read_data, ctx.scratch(), ctx.progress.as_ref()).await?;
    if let Ok(coffer_engine::store::StoreLocation::Local(path)) =
        coffer_engine::store::StoreLocation::parse(&a.store)
        && let Ok(local) = coffer_engine::store::LocalStore::open(&path, false)
    {
        let (n, size) = local.stale_temp();
        if n > 0 {
            r.warnings.push(format!(
                "{n} temp file(s) of interrupted writes in {}/.tmp ({}); the next write removes them",
                local.root().display(),
                bytes(size)
            ));
        }
    }

    if a.json {
        for e in &r.errors {
            ctx.ops.emit(crate::ops::events::Event::Error {
                message: e.clone(),
                fatal: false,
            });
        }
        for w in &r.warnings {
            ctx.ops
                .emit(crate::ops::events::Event::Warning { message: w.clone() });
        }
        ctx.summary(crate::ops::events::Summary {
            ok: r.is_ok(),
            check: Some(serde_json::to_value(&r)?),
            ..Default::default()
        });
    } else {
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        for w in &r.warnings {
            ctx.progress_warn(w);
        }
        let data = if a.read_data {
            format!(
                ", {} pack(s) read and verified ({})",
                r.packs_verified,
                bytes(r.bytes_verified)
            )
        } else {
            String::new()
        };
        ctx.say(format!(
            "{}: {} device(s), {} commit(s), {} path(s), {} pack(s) referenced{data}: {}",
            opened.url,
            r.devices,
            r.commits,
            r.paths,
            r.packs_referenced,
            if r.is_ok() {
                "no errors".to_string()
            } else {
                format!("{} error(s)", r.errors.len())
            }
        ));
    }
    Ok(super::status(r.errors.len()))
}

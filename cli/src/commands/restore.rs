//! `coffer restore STORE PATH --at TIME [--to DIR]`: a path as it was at TIME.
//!
//! The repository is replayed with only the commits stamped (HLC) at or before TIME,
//! merged exactly as a device would have merged them, and PATH is written out of that
//! state — a file, a directory tree, or (`.`) everything.

use crate::context::{Ctx, Locate};
use anyhow::{Context, bail};
use coffer_engine::{RepoView, now_millis};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    pub store: String,
    /// The path in the repository (`.` = the whole folder; any bytes).
    pub path: std::ffi::OsString,
    /// A time (UTC): `2026-11-24 10:30:00`, `2026-11-24T10:30:00Z`, `2026-11-24`, an
    /// age such as `2h` or `3days` (that long ago), `now`, or `@UNIXSECONDS`.
    #[arg(long)]
    pub at: String,
    /// Directory to write into (default: the current directory); PATH's last
    /// component is created inside it.
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// Replace existing files and symlinks that have other content, such as
    /// edits not pushed yet (without it they are kept and named, and the
    /// command exits 1).
    #[arg(long)]
    pub force: bool,
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let at = parse_time(&a.at, now_millis())?;
    let path = super::path_or_all(&a.path)?;
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let view = RepoView::load_at(&repo, at, ctx.scratch(), ctx.progress.as_ref()).await?;
    let to = a.to.unwrap_or_else(|| PathBuf::from("."));
    let out = match &path {
        Some(p) => {
            if !to.is_dir() {
                bail!("{}: not a directory", to.display());
            }
            to.join(std::ffi::OsStr::from_bytes(p.file_name()))
        }
        None => to,
    };
    super::get::write_out(ctx, &repo, &view, path.as_ref(), Some(out), a.force).await
}

/// Parses `--at` into Unix milliseconds (`now_ms` anchors ages). A time given to the
/// second covers that whole second, so a commit made during it is included.
pub fn parse_time(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        // Like any other time, `now` covers its whole second.
        return Ok(now_ms / 1000 * 1000 + 999);
    }
    if let Some(secs) = s.strip_prefix('@') {
        let secs: u64 = secs.parse().context("@UNIXSECONDS must be a number")?;
        return Ok(secs.saturating_mul(1000).saturating_add(999));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let whole_second = if s.contains('.') { 0 } else { 999 };
        return Ok(millis(t)? + whole_second);
    }
    if s.len() == 10
        && let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s} 23:59:59"))
    {
        return Ok(millis(t)? + 999); // a date means the end of that day
    }
    if let Ok(age) = humantime::parse_duration(s) {
        let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(age));
    }
    bail!(
        "--at {s:?}: expected a time like `2026-11-24 10:30:00`, an age like `2h`, `now`, or @UNIXSECONDS"
    )
}

fn millis(t: std::time::SystemTime) -> anyhow::Result<u64> {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_ages_and_dates_parse() {
        let now = 1_800_000_000_000;
        let t = 1_700_000_000_000;
        assert_eq!(parse_time("@1700000000", now).unwrap(), t + 999);
        assert_eq!(parse_time("2023-11-14 22:13:20", now).unwrap(), t + 999);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now).unwrap(), t + 999);
        assert_eq!(
            parse_time("2023-11-14T22:13:20.250Z", now).unwrap(),
            t + 250
        );
        assert_eq!(
            parse_time("2023-11-14", now).unwrap(),
            t + (3600 + 46 * 60 + 39) * 1000 + 999
        );
        assert_eq!(parse_time("2h", now).unwrap(), now - 7_200_000);
        assert!(parse_time("yesterday-ish", now).is_err());
    }

    #[test]
    fn now_is_the_current_second() {
        let now = 1_800_000_000_250;
        assert_eq!(parse_time("now", now).unwrap(), 1_800_000_000_999);
        assert_eq!(parse_time(" NOW ", now).unwrap(), 1_800_000_000_999);
    }
}

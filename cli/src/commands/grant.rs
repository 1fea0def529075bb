//! `coffer grant add|list|remove STORE`: expiring read access (hcs3's
//! `useraccess -e DAYS`, `DESIGN.md` §4b). `add` makes a key slot that stops
//! working at `--expires`: opened by its own passphrase, or by the age
//! identity of `--recipient`. Honest clients refuse it after then; the first
//! owner device that syncs after the expiry removes it and rotates the key,
//! so a grantee who kept a key reads nothing written after that sync.
//! `remove` does the same at once. `list` needs no key.

use crate::args::KdfArgs;
use crate::context::{Ctx, Locate};
use crate::passphrase::Source;
use anyhow::{Context as _, bail};
use coffer_engine::{Grantee, Repository, SlotInfo};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: GrantCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum GrantCommand {
    /// Grant read access that expires: a passphrase of its own, or an age recipient.
    Add(AddArgs),
    /// List the grants: slot, kind, created, expires, expired (no passphrase needed).
    List(ListArgs),
    /// Remove a grant now, and rotate the key (as its expiry would).
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The repository.
    pub store: String,
    /// When the grant stops working: a duration from now (`7d`, `12h`, `90s`)
    /// or an RFC 3339 date (`2027-01-31T00:00:00Z`).
    #[arg(long, value_name = "DURATION|DATE")]
    pub expires: String,
    /// Read the grant's passphrase from the first line of FILE (else a
    /// prompt, twice, on the terminal).
    #[arg(long, value_name = "FILE")]
    pub grant_passphrase_file: Option<PathBuf>,
    /// Grant to this age X25519 recipient (`age1...`) instead of a
    /// passphrase: its holder opens the repository with `--identity FILE`.
    #[arg(
        long,
        value_name = "AGE_PUBKEY",
        conflicts_with = "grant_passphrase_file"
    )]
    pub recipient: Option<String>,
    /// Print the grant as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The repository.
    pub store: String,
    /// One JSON object per grant and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The repository.
    pub store: String,
    /// The grant's slot id, as `coffer grant list` shows it (a unique prefix will do).
    pub slot: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        GrantCommand::Add(a) => add(ctx, a).await,
        GrantCommand::List(a) => list(ctx, a).await,
        GrantCommand::Remove(a) => remove(ctx, a).await,
    }
}

/// `--expires` as Unix ms: a duration from `now_ms`, or an RFC 3339 date.
pub fn parse_expiry(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            bail!("--expires {text}: a grant must last longer than that");
        }
        return Ok(now_ms.saturating_add(ms));
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("--expires {text}: neither a duration (7d, 12h, 90s) nor an RFC 3339 date")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    if ms <= now_ms {
        bail!("--expires {text}: that date has passed");
    }
    Ok(ms)
}

async fn add(ctx: &Ctx, a: AddArgs) -> anyhow::Result<ExitCode> {
    let expires = parse_expiry(&a.expires, coffer_engine::now_millis())?;
    let kdf = a.kdf.params()?;
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let passphrase;
    let grantee = match &a.recipient {
        Some(r) => Grantee::Recipient(r.trim()),
        None => {
            let source = Source {
                file: a.grant_passphrase_file.as_deref(),
                command: None,
                flags: "grant-passphrase",
                env: false,
            };
            passphrase = source.read(true)?;
            Grantee::Passphrase {
                passphrase: passphrase.as_bytes(),
                kdf,
            }
        }
    };
    let slot = repo
        .add_grant(grantee, expires)
        .await
        .with_context(|| format!("cannot add a grant to {}", opened.url))?;
    let until = coffer_engine::error::rfc3339(expires);
    if a.json {
        let kind = if a.recipient.is_some() {
            "recipient"
        } else {
            "passphrase-grant"
        };
        let v = serde_json::json!({"slot": slot.to_hex(), "kind": kind, "expires": until, "expires_ms": expires});
        println!("{v}");
    } else {
        println!("{slot}");
    }
    ctx.say(format!(
        "added grant {slot} to {}, expiring on {until}",
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let opened = ctx.store(&a.store, Locate::Existing).await?;
    Repository::read_config(&opened.store).await?;
    let grants: Vec<SlotInfo> = Repository::list_slots(&opened.store)
        .await?
        .into_iter()
        .filter(|s| s.expires.is_some())
        .collect();
    let now = coffer_engine::now_millis();
    if !a.json {
        println!(
            "{:<32}  {:<16}  {:<20}  {:<20}  EXPIRED",
            "SLOT", "KIND", "CREATED", "EXPIRES"
        );
    }
    for g in &grants {
        if a.json {
            println!("{}", super::key::json(g, now));
            continue;
        }
        let stamp = |t: Option<u64>| t.map_or("unknown".into(), coffer_engine::error::rfc3339);
        let mut line = format!(
            "{}  {:<16}  {:<20}  {:<20}  {}",
            g.id,
            g.kind.as_deref().unwrap_or("?"),
            stamp(g.created),
            stamp(g.expires),
            if g.expires.is_some_and(|e| now >= e) {
                "yes"
            } else {
                "no"
            }
        );
        if let Some(p) = &g.problem {
            line.push_str(&format!("  (unusable: {p})"));
        }
        println!("{line}");
    }
    ctx.say(format!("{} grant(s)", grants.len()));
    Ok(ExitCode::SUCCESS)
}

async fn remove(ctx: &Ctx, a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let slot = repo.find_slot(&a.slot).await?;
    let report = repo
        .remove_grant(&slot)
        .await
        .with_context(|| format!("cannot remove grant {slot} from {}", opened.url))?;
    if let Some(keyring) = ctx.keyring() {
        repo.save_keys(keyring)?;
    }
    let epoch = report.epoch.map_or(0, |e| e.level);
    ctx.say(format!(
        "removed grant {slot} from {} and rotated the key to epoch {epoch}: its holder reads \
         nothing written from now on",
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_durations_or_future_dates() {
        let now = 1_796_000_000_000;
        assert_eq!(parse_expiry("7d", now).unwrap(), now + 7 * 86_400_000);
        assert_eq!(parse_expiry("12h", now).unwrap(), now + 12 * 3_600_000);
        assert_eq!(parse_expiry("90s", now).unwrap(), now + 90_000);
        assert_eq!(
            parse_expiry("2030-01-01T00:00:00Z", now).unwrap(),
            1_893_456_000_000
        );
        assert!(parse_expiry("2020-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("0s", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
    }
}

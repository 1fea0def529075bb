//! `coffer key list|add|remove|passwd|rotate STORE`: the repository's key
//! slots, passphrase and KMS, and key rotation (`DESIGN.md` §4a). `list` reads only the plaintext slot objects and needs
//! no key (when and where a slot was made is shown as the slot records it:
//! `unknown` for slots written before coffer recorded it); `add` (a passphrase,
//! or with `--kms KEY_ID` a KMS key)
//! and `remove` need the repository unlocked (this machine's keyring counts: who
//! holds the master key can read everything already); `passwd` always asks for
//! the old passphrase, since the slots it replaces are the ones that passphrase
//! opens. A change writes the new slot first and deletes the old one after, so a
//! crash between leaves both. Grants (`coffer grant`) are listed with their
//! expiry.

use crate::args::KdfArgs;
use crate::context::{Ctx, Locate};
use crate::passphrase::Source;
use anyhow::Context as _;
use coffer_engine::{Repository, Rotate, RotateReport, SlotId, SlotInfo};
use std::path::PathBuf;
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// List the key slots (no passphrase needed).
    List(ListArgs),
    /// Add a key slot for a new passphrase, or with --kms for a KMS key.
    Add(AddArgs),
    /// Remove a key slot (never the last usable one).
    Remove(RemoveArgs),
    /// Change a passphrase: a slot for the new one, then the old one's slots removed.
    Passwd(ChangeArgs),
    /// Rotate the key: everything written from now on is sealed under a new
    /// key epoch that only the slots kept can open (--remove revokes slots).
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The repository.
    pub store: String,
    /// Remove this key slot in the same step (repeatable): its holder, and
    /// anyone who saved a key it gave, reads nothing written after the rotation.
    #[arg(long, value_name = "SLOT")]
    pub remove: Vec<String>,
    /// Also seal every stored pack again under the new epoch (in place; one
    /// pack in memory at a time), so an older key opens none of them.
    #[arg(long)]
    pub reencrypt: bool,
    /// Do not rotate: seal the packs not yet under the current epoch again
    /// (finishes an interrupted --reencrypt).
    #[arg(long, conflicts_with_all = ["reencrypt", "remove"])]
    pub reencrypt_only: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The repository.
    pub store: String,
    /// One JSON object per slot and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// The repository.
    pub store: String,
    /// Read the new passphrase from the first line of FILE (else
    /// --new-passphrase-command, else a prompt, twice, on the terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "new_passphrase_command")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from the first line that `sh -c CMD` prints.
    #[arg(long, value_name = "CMD")]
    pub new_passphrase_command: Option<String>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Encrypt the master key with AWS KMS under KEY_ID (key id, ARN or alias)
    /// instead of a passphrase: machines allowed kms:Decrypt on it unlock
    /// with no passphrase.
    #[arg(
        long,
        value_name = "KEY_ID",
        conflicts_with_all = ["new_passphrase_file", "new_passphrase_command"]
    )]
    pub kms: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The repository.
    pub store: String,
    /// The slot id, as `coffer key list` shows it (a unique prefix will do).
    pub slot: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        KeyCommand::List(a) => list(ctx, a).await,
        KeyCommand::Add(a) => add(ctx, a).await,
        KeyCommand::Remove(a) => remove(ctx, a).await,
        KeyCommand::Passwd(a) => passwd(ctx, a).await,
        KeyCommand::Rotate(a) => rotate(ctx, a).await,
    }
}

/// The slot `name` names among `slots` (an id or a unique prefix).
fn pick(slots: &[SlotInfo], name: &str) -> anyhow::Result<SlotId> {
    let name = name.to_ascii_lowercase();
    let found: Vec<&SlotInfo> = slots
        .iter()
        .filter(|s| !name.is_empty() && s.id.to_hex().starts_with(&name))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => anyhow::bail!("no key slot {name}"),
        _ => anyhow::bail!("{name} names several key slots"),
    }
}

async fn rotate(ctx: &Ctx, a: RotateArgs) -> anyhow::Result<ExitCode> {
    let opened = ctx.store(&a.store, Locate::Existing).await?;
    let slots = Repository::list_slots(&opened.store).await?;
    let remove = a
        .remove
        .iter()
        .map(|n| pick(&slots, n))
        .collect::<anyhow::Result<Vec<SlotId>>>()?;
    // Passphrase slots from before key epochs wrap the root key itself: only
    // their passphrase can carry them into the new epoch. It is read once, to
    // unlock as well.
    let old = |s: &&SlotInfo| {
        s.kind.as_deref() == Some("passphrase") && s.version < Some(3) && !remove.contains(&s.id)
    };
    let passphrase = match slots.iter().any(|s| old(&s) && s.usable()) {
        true => Some(ctx.passphrase().read(false)?),
        false => None,
    };
    let repo = match &passphrase {
        Some(p) => {
            let mut give = || Ok(Zeroizing::new(p.to_string()));
            ctx.unlock_with(&opened, &mut give).await?
        }
        None => ctx.unlock(&opened, ctx.passphrase()).await?,
    };
    if !a.reencrypt_only {
        let how = Rotate {
            remove,
            passphrase: passphrase.as_ref().map(|p| p.as_bytes()),
            kms: Some(&ctx.kms),
        };
        let report = repo
            .rotate(how)
            .await
            .with_context(|| format!("cannot rotate the key of {}", opened.url))?;
        if let Some(keyring) = ctx.keyring() {
            repo.save_keys(keyring)?;
        }
        tell_rotation(ctx, &a, &report, &opened.url);
    }
    if !(a.reencrypt || a.reencrypt_only) {
        return Ok(ExitCode::SUCCESS);
    }
    let r = repo
        .reencrypt(&*ctx.progress)
        .await
        .with_context(|| format!("cannot re-encrypt the packs of {}", opened.url))?;
    for d in &r.damaged {
        ctx.progress_warn(&format!("left as it is: {d}"));
    }
    ctx.say(format!(
        "sealed {} pack(s) ({} bytes) again under epoch {}; {} already were",
        r.packs_rewritten,
        r.bytes_rewritten,
        repo.epoch().level,
        r.packs_current
    ));
    match r.damaged.is_empty() {
        true => Ok(ExitCode::SUCCESS),
        false => Ok(ExitCode::from(1)),
    }
}

fn tell_rotation(ctx: &Ctx, a: &RotateArgs, r: &RotateReport, url: &str) {
    let epoch = r.epoch.map(|e| e.level).unwrap_or(0);
    let hex = |v: &[SlotId]| v.iter().map(SlotId::to_hex).collect::<Vec<_>>();
    if a.json {
        let v = serde_json::json!({
            "epoch": epoch,
            "epoch_id": r.epoch.map(|e| e.to_string()),
            "kept": hex(&r.kept),
            "removed": hex(&r.removed),
            "upgraded": r.upgraded.iter().map(|(o, n)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex()})).collect::<Vec<_>>(),
            "left_out": r.left_out.iter().map(|(s, why)| serde_json::json!({"slot": s.to_hex(), "why": why})).collect::<Vec<_>>(),
            "rounds": r.rounds,
        });
        println!("{v}");
    } else {
        println!("{epoch}");
    }
    for (old, new) in &r.upgraded {
        ctx.say(format!("key slot {old} carried over as {new}"));
    }
    for (slot, why) in &r.left_out {
        ctx.say(format!(
            "key slot {slot} gets no key for the new epoch: {why}"
        ));
    }
    let removed = match r.removed.is_empty() {
        true => String::new(),
        false => format!("; removed {}", hex(&r.removed).join(", ")),
    };
    ctx.say(format!(
        "rotated the key of {url} to epoch {epoch}: {} key slot(s) hold it{removed}",
        r.kept.len()
    ));
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let opened = ctx.store(&a.store, Locate::Existing).await?;
    Repository::read_config(&opened.store).await?;
    let slots = Repository::list_slots(&opened.store).await?;
    if !a.json {
        println!(
            "{:<32}  {:<16}  {:<24}  {:<20}  BY",
            "SLOT", "KIND", "KDF / KMS KEY", "CREATED"
        );
    }
    let now = coffer_engine::now_millis();
    for s in &slots {
        if a.json {
            println!("{}", json(s, now));
        } else {
            println!("{}", line(s, now));
        }
    }
    ctx.say(format!("{} key slot(s)", slots.len()));
    Ok(ExitCode::SUCCESS)
}

/// The Argon2id cost as `argon2id m=64MiB t=3 p=4`, or a KMS slot's key.
fn kdf_text(s: &SlotInfo) -> String {
    if let Some(key) = &s.key_id {
        return key.clone();
    }
    match s.kdf {
        Some(k) => format!(
            "argon2id m={}MiB t={} p={}",
            k.m_cost_kib / 1024,
            k.t_cost,
            k.p_cost
        ),
        None => "-".into(),
    }
}

/// RFC 3339 UTC seconds.
fn stamp(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn line(s: &SlotInfo, now: u64) -> String {
    let kind = s.kind.as_deref().unwrap_or("?");
    // Version-1 slots record neither when nor where they were made.
    let created = s.created.map_or("unknown".into(), stamp);
    let host = match s.host.as_deref() {
        None => "unknown",
        Some("") => "(no host name)",
        Some(h) => h,
    };
    let mut l = format!(
        "{}  {kind:<16}  {:<24}  {created:<20}  {host}",
        s.id,
        kdf_text(s)
    );
    if let Some(expires) = s.expires {
        let state = if now >= expires { "expired" } else { "expires" };
        l.push_str(&format!("  ({state} {})", stamp(expires)));
    }
    if let Some(p) = &s.problem {
        l.push_str(&format!("  (unusable: {p})"));
    }
    l
}

/// A slot as one JSON object (`key list --json`, `grant list --json`).
pub(crate) fn json(s: &SlotInfo, now: u64) -> serde_json::Value {
    serde_json::json!({
        "slot": s.id.to_hex(),
        "kind": s.kind,
        "kdf": s.kdf.map(|k| serde_json::json!({
            "algorithm": "argon2id",
            "m_cost_kib": k.m_cost_kib,
            "t_cost": k.t_cost,
            "p_cost": k.p_cost,
        })),
        "key_id": s.key_id,
        "version": s.version,
        "created": s.created.map(stamp),
        "created_ms": s.created,
        "created_by": s.host,
        "usable": s.usable(),
        "problem": s.problem,
        "expires": s.expires.map(stamp),
        "expires_ms": s.expires,
        "expired": s.expires.map(|e| now >= e),
    })
}

/// Where a new passphrase comes from (never `COFFER_PASSPHRASE`: that one
/// unlocks).
fn new_source(a: &ChangeArgs) -> Source<'_> {
    Source {
        file: a.new_passphrase_file.as_deref(),
        command: a.new_passphrase_command.as_deref(),
        flags: "new-passphrase",
        env: false,
    }
}

async fn add(ctx: &Ctx, a: AddArgs) -> anyhow::Result<ExitCode> {
    let kdf = a.change.kdf.params()?;
    let (repo, opened) = ctx.repo(&a.change.store, Locate::Existing).await?;
    let added = match &a.kms {
        Some(key_id) => repo.add_kms(&ctx.kms, key_id).await,
        None => {
            let new = new_source(&a.change).read(true)?;
            repo.add_passphrase(new.as_bytes(), kdf).await
        }
    };
    let slot = added.with_context(|| format!("cannot add a key slot to {}", opened.url))?;
    println!("{slot}");
    ctx.say(format!("added key slot {slot} to {}", opened.url));
    Ok(ExitCode::SUCCESS)
}

async fn remove(ctx: &Ctx, a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let slot = repo.find_slot(&a.slot).await?;
    let left = repo.remove_slot(&slot).await?;
    let names: Vec<String> = left.iter().map(|s| s.id.to_hex()).collect();
    ctx.say(format!(
        "removed key slot {slot} from {}; key slots left: {}; its holder still reads what is \
         written until `coffer key rotate`",
        opened.url,
        names.join(", ")
    ));
    Ok(ExitCode::SUCCESS)
}

async fn passwd(ctx: &Ctx, a: ChangeArgs) -> anyhow::Result<ExitCode> {
    let kdf = a.kdf.params()?;
    let opened = ctx.store(&a.store, Locate::Existing).await?;
    // The old passphrase is read once: it unlocks (when the keyring cannot)
    // and names the slots to replace.
    let old = ctx.passphrase().read(false)?;
    let mut give = || Ok(Zeroizing::new(old.to_string()));
    let repo = ctx.unlock_with(&opened, &mut give).await?;
    let replaced = repo.slots_opened_by(old.as_bytes()).await?;
    let new = new_source(&a).read(true)?;
    let slot = repo.add_passphrase(new.as_bytes(), kdf).await?;
    for s in &replaced {
        repo.remove_slot(s)
            .await
            .with_context(|| format!("added key slot {slot}, but the old slot {s} stays"))?;
    }
    println!("{slot}");
    let names: Vec<String> = replaced.iter().map(ToString::to_string).collect();
    ctx.say(format!(
        "added key slot {slot} and removed {} in {}",
        names.join(", "),
        opened.url
    ));
    Ok(ExitCode::SUCCESS)
}

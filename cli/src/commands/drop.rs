//! `coffer drop create|push|list|pull|remove|policy`: partner drops (the
//! `s3s2` workflow, `DESIGN.md` §4c). The owner creates a drop and sends its
//! token; the partner pushes files with it through a store key that may only
//! PUT; only the owner reads them (`pull` writes each partner device's files
//! under `DIR/<device name>/`). `remove` (and an expiry) closes a drop:
//! later writes are reported and ignored. `policy` prints the IAM policy of
//! the partner's write-only key.

use crate::commands::EXIT_DAMAGED;
use crate::context::{Ctx, Locate};
use anyhow::{Context as _, bail};
use coffer_engine::error::rfc3339;
use coffer_engine::store::StoreLocation;
use coffer_engine::{DropInfo, DropPushOptions, DropScan, DropToken, Repository};
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DropCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DropCommand {
    /// Make a drop and write its token (what a partner needs to write, nothing that reads).
    Create(CreateArgs),
    /// Partner: push the files of DIR into the drop of TOKEN (PUT only; resumable).
    Push(PushArgs),
    /// The drops: partner devices, files, bytes, last write, expiry, problems.
    List(ListArgs),
    /// Write every file of a drop under DIR/<partner device>/.
    Pull(PullArgs),
    /// Close a drop: later writes with its token are ignored (and reported).
    Remove(RemoveArgs),
    /// Print the IAM policy of a partner's write-only key for a drop.
    Policy(PolicyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The repository.
    pub store: String,
    /// The drop's name (letters, digits, '-', '_', '.').
    pub name: String,
    /// When the drop stops accepting writes: a duration (`30d`, `12h`) or an
    /// RFC 3339 date.
    #[arg(long, value_name = "DURATION|DATE")]
    pub expires: Option<String>,
    /// Where to write the token (mode 0600; must not exist) [default: NAME.drop-token].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The drop token the owner sent.
    pub token: PathBuf,
    /// The folder whose files to send.
    pub dir: PathBuf,
    /// This machine's name in the drop [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub device_name: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The repository.
    pub store: String,
    /// One JSON object per drop and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The repository.
    pub store: String,
    /// The drop's name (or id).
    pub name: String,
    /// Where to write its files (DIR/<partner device>/<path>).
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The repository.
    pub store: String,
    /// The drop's name (or id).
    pub name: String,
    /// Also delete everything the partner wrote, and the drop's keys.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The repository (an S3 bucket).
    pub store: String,
    /// The drop's name (or id).
    pub name: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        DropCommand::Create(a) => create(ctx, a).await,
        DropCommand::Push(a) => push(ctx, a).await,
        DropCommand::List(a) => list(ctx, a).await,
        DropCommand::Pull(a) => pull(ctx, a).await,
        DropCommand::Remove(a) => remove(ctx, a).await,
        DropCommand::Policy(a) => policy(ctx, a).await,
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let expires = a
        .expires
        .as_deref()
        .map(|e| super::grant::parse_expiry(e, coffer_engine::now_millis()))
        .transpose()?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.drop-token", a.name)));
    if out.exists() {
        bail!("{}: exists; not overwriting it", out.display());
    }
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let token = coffer_engine::create_drop(&repo, &a.name, expires, &opened.url)
        .await
        .with_context(|| format!("cannot create drop {} in {}", a.name, opened.url))?;
    write_private(&out, token.to_json().as_bytes())?;
    println!("{}", out.display());
    let until = expires.map_or("no expiry".into(), |e| format!("expires {}", rfc3339(e)));
    ctx.say(format!(
        "created drop {} ({}, {until}); send {} to the partner, with a key that may only PUT (`coffer drop policy`)",
        a.name,
        token.drop,
        out.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The host name as a drop device name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "partner".into()
    } else {
        name
    }
}

async fn push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<ExitCode> {
    let token = DropToken::read_file(&a.token)?;
    let opened = ctx.store(&token.store, Locate::Existing).await?;
    let opts = push_options(ctx, a.device_name);
    let r = push_once(ctx, &opened.store, &token, &a.dir, &opts).await?;
    if a.json {
        let v = json!({"drop": token.drop.to_hex(), "name": token.name, "files": r.files,
            "bytes": r.bytes, "uploaded": r.uploaded, "packs": r.packs, "commits": r.commits,
            "resumed": r.resumed, "skipped": r.skipped});
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A partner's push options: the device name (default: the host name), the
/// global pack size and upload count.
pub fn push_options(ctx: &Ctx, device_name: Option<String>) -> DropPushOptions {
    DropPushOptions {
        device_name: device_name.unwrap_or_else(host_name),
        pack_target: ctx.upload_options().pack_target,
        uploads: ctx.global.uploads.clamp(1, 64),
    }
}

/// One drop push of `dir` (also `watch --drop`'s step), told on stderr.
pub async fn push_once(
    ctx: &Ctx,
    store: &coffer_engine::store::DynStore,
    token: &DropToken,
    dir: &Path,
    opts: &DropPushOptions,
) -> anyhow::Result<coffer_engine::DropPushReport> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let state = ctx.home.join("drops").join(token.drop.to_hex());
    let r = coffer_engine::push_drop(store, token, dir, &state, opts)
        .await
        .with_context(|| format!("drop push into {}", token.name))?;
    for s in &r.skipped {
        eprintln!("coffer: skipped {s}: drops carry regular files with UTF-8 names only");
    }
    ctx.say(format!(
        "drop {}: sent {} file(s), {} byte(s) ({} new) in {} pack(s), {} commit(s){}",
        token.name,
        r.files,
        r.bytes,
        r.uploaded,
        r.packs,
        r.commits,
        if r.resumed {
            "; finished an interrupted push"
        } else {
            ""
        }
    ));
    Ok(r)
}

/// This machine's record of what it saw of a drop's logs.
fn seen_file(ctx: &Ctx, repo: &Repository, info: &DropInfo) -> PathBuf {
    ctx.home
        .join("drops")
        .join("seen")
        .join(format!("{}-{}.json", repo.id(), info.id))
}

/// Tells every problem on stderr; returns how many are not late writes.
fn tell(scan: &DropScan) -> usize {
    for p in &scan.problems {
        let what = if p.late { "ignored" } else { "rejected" };
        eprintln!(
            "coffer: drop {}: {what} {}: {}",
            scan.info.name, p.object, p.reason
        );
    }
    scan.errors().count()
}

fn state(info: &DropInfo) -> String {
    match &info.closure {
        Some(c) if c.purged => format!("purged {}", rfc3339(c.at_ms)),
        Some(c) => format!("{:?} {}", c.reason, rfc3339(c.at_ms)).to_lowercase(),
        None if info.problem.is_some() => "unreadable".into(),
        None => "open".into(),
    }
}

fn scan_json(scan: &DropScan) -> serde_json::Value {
    let info = &scan.info;
    let devices: Vec<_> = scan
        .devices
        .iter()
        .map(|d| {
            json!({"id": d.id.to_hex(), "name": d.name, "commits": d.commits,
                "files": d.files.len(), "bytes": d.bytes(), "last_write": d.last_ms.map(rfc3339)})
        })
        .collect();
    let problems: Vec<_> = scan
        .problems
        .iter()
        .map(|p| json!({"object": p.object, "reason": p.reason, "late": p.late}))
        .collect();
    json!({"name": info.name, "id": info.id.to_hex(), "state": state(info),
        "created": info.created_ms().map(rfc3339), "expires": info.expires_ms().map(rfc3339),
        "devices": devices, "files": scan.devices.iter().map(|d| d.files.len()).sum::<usize>(),
        "bytes": scan.devices.iter().map(|d| d.bytes()).sum::<u64>(),
        "stored_bytes": scan.stored_bytes, "problems": problems})
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let drops = coffer_engine::list_drops(&repo).await?;
    if !a.json {
        println!(
            "{:<20}  {:<32}  {:<20}  {:<20}  {:<28}  {:>5}  {:>12}",
            "NAME", "ID", "CREATED", "EXPIRES", "STATE", "FILES", "BYTES"
        );
    }
    let mut errors = 0;
    for info in &drops {
        let scan =
            coffer_engine::scan_drop(&repo, info, Some(&seen_file(ctx, &repo, info))).await?;
        errors += tell(&scan);
        if a.json {
            println!("{}", scan_json(&scan));
            continue;
        }
        let stamp = |t: Option<u64>| t.map_or("-".into(), rfc3339);
        let files: usize = scan.devices.iter().map(|d| d.files.len()).sum();
        let bytes: u64 = scan.devices.iter().map(|d| d.bytes()).sum();
        println!(
            "{:<20}  {}  {:<20}  {:<20}  {:<28}  {files:>5}  {bytes:>12}",
            info.name,
            info.id,
            stamp(scan.info.created_ms()),
            stamp(scan.info.expires_ms()),
            state(&scan.info)
        );
        for d in &scan.devices {
            println!(
                "  device {:<20} {}  {} file(s), {} byte(s), last write {}",
                d.name,
                d.id,
                d.files.len(),
                d.bytes(),
                stamp(d.last_ms)
            );
        }
    }
    ctx.say(format!("{} drop(s)", drops.len()));
    Ok(if errors > 0 {
        ExitCode::from(EXIT_DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn pull(ctx: &Ctx, a: PullArgs) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let info = coffer_engine::find_drop(&repo, &a.name).await?;
    let seen = seen_file(ctx, &repo, &info);
    let r = coffer_engine::pull_drop(&repo, &info, &a.dir, Some(&seen))
        .await
        .with_context(|| format!("drop pull of {}", info.name))?;
    let errors = tell(&r.scan);
    ctx.say(format!(
        "drop {}: wrote {} file(s) ({} byte(s)), {} unchanged, {} not written, into {}",
        info.name,
        r.written,
        r.bytes,
        r.unchanged,
        r.failed,
        a.dir.display()
    ));
    Ok(if errors > 0 {
        ExitCode::from(EXIT_DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn remove(ctx: &Ctx, a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let (repo, _) = ctx.repo(&a.store, Locate::Existing).await?;
    let info = coffer_engine::find_drop(&repo, &a.name).await?;
    let r = coffer_engine::remove_drop(&repo, &info, a.purge).await?;
    let kept: u64 = r.closure.heads.iter().map(|(_, n)| n).sum();
    if a.purge {
        ctx.say(format!(
            "drop {} removed and purged: {} object(s) deleted, its keys forgotten",
            info.name, r.deleted
        ));
    } else {
        ctx.say(format!(
            "drop {} removed: its {kept} commit(s) so far stay pullable; later writes are ignored",
            info.name
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn policy(ctx: &Ctx, a: PolicyArgs) -> anyhow::Result<ExitCode> {
    let (repo, opened) = ctx.repo(&a.store, Locate::Existing).await?;
    let info = coffer_engine::find_drop(&repo, &a.name).await?;
    let StoreLocation::S3 { bucket, prefix } = StoreLocation::parse(&opened.url)? else {
        bail!("{}: an IAM policy is for S3 buckets", opened.url);
    };
    let mut path = prefix.trim_matches('/').to_string();
    if !path.is_empty() {
        path.push('/');
    }
    let resource = format!("arn:aws:s3:::{bucket}/{path}drop/{}/*", info.id);
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": format!("CofferDrop{}", info.id),
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": resource,
        }]
    });
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(ExitCode::SUCCESS)
}

//! The owner reads a drop (`DESIGN.md` §4c): [`scan_drop`] lists the drop
//! once, checks every partner device's log (MAC, decryption, sequence, chain,
//! what this machine saw before, the closure) and folds the accepted commits
//! into each device's files; [`pull_drop`] writes those files under
//! `DIR/<device name>/`, each blob authenticated and its chunk id recomputed,
//! through a temp file renamed into place. Whatever fails is a [`Problem`]
//! naming the object, and nothing it carries is written.

use super::DropInfo;
use super::format::{self, ChunkRef, DropCommit, DropFile};
use super::record::{self, CloseReason, Closure, DropRecord};
use crate::error::{Error, Result, StoreError};
use crate::format::id::{CommitHash, DeviceId, DropId, PackId};
use crate::format::path::RepoPath;
use crate::repo::Repository;
use crate::store::{self, layout, layout::DropObject};
use crate::sync::pull::rootfs::{RootFs, TmpDir};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Something wrong in a drop, by object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The store key (or `device/path` for a file).
    pub object: String,
    pub reason: String,
    /// Written after the drop was closed (ignored, not forged).
    pub late: bool,
}

/// One partner device of a drop, as its accepted commits say.
#[derive(Debug, Clone)]
pub struct DropDevice {
    pub id: DeviceId,
    /// The partner's name for it (from its last accepted commit).
    pub name: String,
    pub commits: u64,
    /// The partner's clock at its last accepted commit.
    pub last_ms: Option<u64>,
    /// The latest version of every file it sent.
    pub files: BTreeMap<String, DropFile>,
    packs: HashMap<PackId, [u8; 32]>,
}

impl DropDevice {
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// A drop as its store holds it.
#[derive(Debug, Clone)]
pub struct DropScan {
    pub info: DropInfo,
    pub devices: Vec<DropDevice>,
    pub problems: Vec<Problem>,
    /// Bytes of every object under `drop/<id>/`.
    pub stored_bytes: u64,
}

impl DropScan {
    /// The problems that are not late writes (forged, damaged, rolled back).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.late)
    }
}

/// What this machine saw of each device's log (rollback detection).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    devices: BTreeMap<String, (u64, String)>,
}

fn load_seen(path: Option<&Path>) -> Result<Seen> {
    let Some(path) = path else { return Ok(Seen::default()) };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::Config(format!("{}: {e} (delete it to start over)", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Seen::default()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn save_seen(path: Option<&Path>, seen: &Seen) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(seen).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// How many commits of each device the store lists from seq 0 without a gap.
pub async fn listed_heads(repo: &Repository, drop: &DropId) -> Result<Vec<(DeviceId, u64)>> {
    let (logs, _, _, _) = list(repo, drop).await?;
    Ok(logs
        .into_iter()
        .map(|(d, seqs)| (d, seqs.iter().enumerate().take_while(|(i, s)| *i as u64 == **s).count() as u64))
        .collect())
}

type Listing = (BTreeMap<DeviceId, Vec<u64>>, HashMap<PackId, u64>, u64, Vec<Problem>);

/// One listing of `drop/<id>/`: each device's seqs, the packs' sizes, the
/// total bytes, and the objects that are not drop objects of this drop.
async fn list(repo: &Repository, drop: &DropId) -> Result<Listing> {
    let (mut logs, mut packs, mut bytes, mut stray) = (BTreeMap::new(), HashMap::new(), 0, Vec::new());
    for meta in repo.store().list(&layout::drop_prefix(drop)).await? {
        bytes += meta.size;
        match layout::parse_drop_object(&meta.key) {
            Some(DropObject::Commit(d, dev, seq)) if d == *drop => logs.entry(dev).or_insert_with(Vec::new).push(seq),
            Some(DropObject::Pack(d, p)) if d == *drop => {
                packs.insert(p, meta.size);
            }
            _ => stray.push(Problem {
                object: meta.key,
                reason: "not a drop object".into(),
                late: false,
            }),
        }
    }
    Ok((logs, packs, bytes, stray))
}

/// Lists and verifies a drop (see the module doc). Closes it first if its
/// expiry has passed. `seen` is this machine's file of what it saw before.
pub async fn scan_drop(repo: &Repository, info: &DropInfo, seen: Option<&Path>) -> Result<DropScan> {
    let mut info = info.clone();
    let (logs, _packs, stored_bytes, mut problems) = list(repo, &info.id).await?;
    let Some(rec) = info.record.clone() else {
        if info.closure.as_ref().is_some_and(|c| c.purged) {
            for (dev, seqs) in &logs {
                let why = "written after the drop was purged";
                problems.extend(seqs.iter().map(|s| late(&info.id, dev, *s, why)));
            }
        } else {
            problems.push(Problem {
                object: layout::drop_record(&info.id),
                reason: info.problem.clone().unwrap_or_else(|| "missing: the drop cannot be read".into()),
                late: false,
            });
        }
        return Ok(DropScan { info, devices: Vec::new(), problems, stored_bytes });
    };
    close_if_expired(repo, &mut info, &rec, &logs).await?;
    let mut seen_state = load_seen(seen)?;
    let mut devices = Vec::new();
    for (dev, seqs) in &logs {
        let mut d = DropDevice {
            id: *dev,
            name: String::new(),
            commits: 0,
            last_ms: None,
            files: BTreeMap::new(),
            packs: HashMap::new(),
        };
        let last = read_log(repo, &info, &rec, &mut d, seqs, &mut problems).await?;
        check_seen(&mut seen_state, &info.id, &d, last, &mut problems);
        devices.push(d);
    }
    for (dev, (count, _)) in &seen_state.devices {
        if DeviceId::from_hex(dev).is_some_and(|d| !logs.contains_key(&d)) && *count > 0 {
            problems.push(Problem {
                object: format!("{}{dev}/", layout::drop_prefix(&info.id) + "log/"),
                reason: format!("this machine saw {count} commit(s) of this device; the store lists none (rolled back)"),
                late: false,
            });
        }
    }
    save_seen(seen, &seen_state)?;
    Ok(DropScan { info, devices, problems, stored_bytes })
}

fn late(drop: &DropId, dev: &DeviceId, seq: u64, why: &str) -> Problem {
    Problem {
        object: layout::drop_commit(drop, dev, seq),
        reason: format!("ignored: {why}"),
        late: true,
    }
}

/// Writes the closure of an expired drop that has none: what the store
/// lists now is all that is ever accepted.
async fn close_if_expired(
    repo: &Repository,
    info: &mut DropInfo,
    rec: &DropRecord,
    logs: &BTreeMap<DeviceId, Vec<u64>>,
) -> Result<()> {
    let Some(expires) = rec.expires_ms else { return Ok(()) };
    if info.closure.is_some() || repo.clock().now_ms() < expires {
        return Ok(());
    }
    let heads = logs
        .iter()
        .map(|(d, seqs)| (*d, seqs.iter().enumerate().take_while(|(i, s)| *i as u64 == **s).count() as u64))
        .collect();
    let closure = Closure::new(&rec.name, repo.clock().now_ms(), CloseReason::Expired, heads);
    record::write_closure(repo, &info.id, &closure).await?;
    info.closure = Some(closure);
    Ok(())
}

/// Reads one device's log in order into `d`; stops at the first commit
/// that fails (reported), and reports later ones as not read. Returns the
/// hash of the last accepted commit.
async fn read_log(
    repo: &Repository,
    info: &DropInfo,
    rec: &DropRecord,
    d: &mut DropDevice,
    seqs: &[u64],
    problems: &mut Vec<Problem>,
) -> Result<CommitHash> {
    let identity = rec.age_identity(&layout::drop_record(&info.id))?;
    let mut prev = CommitHash([0; 32]);
    for (i, &seq) in seqs.iter().enumerate() {
        let object = layout::drop_commit(&info.id, &d.id, seq);
        let dev = d.id;
        let stop = |why: String, problems: &mut Vec<Problem>| {
            problems.push(Problem { object: object.clone(), reason: why, late: false });
            for &s in &seqs[i + 1..] {
                problems.push(late_unread(&info.id, &dev, s));
            }
        };
        if seq != i as u64 {
            stop(format!("the log lacks seq {i} before it (deleted or never written)"), problems);
            break;
        }
        if let Some(c) = &info.closure
            && seq >= c.accepted(&d.id)
        {
            let why = match c.reason {
                CloseReason::Removed => "written after the drop was removed",
                CloseReason::Expired => "written after the drop expired",
            };
            problems.extend(seqs[i..].iter().map(|s| late(&info.id, &d.id, *s, why)));
            break;
        }
        let bytes = match store::get_at_most(&**repo.store(), &object, layout::DROP_COMMIT_MAX, "drop commit").await {
            Ok(b) => b,
            Err(e @ Error::Store(_)) => return Err(e),
            Err(e) => {
                stop(e.to_string(), problems);
                break;
            }
        };
        let checked = format::open_commit(&bytes, (&info.id, &d.id, seq), &identity, &rec.write_key, &object)
            .and_then(|c| accept(c, prev, rec, d, &object));
        if let Err(e) = checked {
            stop(e.to_string(), problems);
            break;
        }
        prev = format::commit_hash(&bytes);
    }
    Ok(prev)
}

fn late_unread(drop: &DropId, dev: &DeviceId, seq: u64) -> Problem {
    Problem {
        object: layout::drop_commit(drop, dev, seq),
        reason: "not read: an earlier commit of its device failed".into(),
        late: false,
    }
}

/// Checks a decrypted commit against the chain and its own contents, then
/// folds it into `d`.
fn accept(c: DropCommit, prev: CommitHash, rec: &DropRecord, d: &mut DropDevice, object: &str) -> Result<()> {
    if c.prev != prev {
        return Err(Error::corrupt(object, "does not follow the previous commit of its device (fork or replay)"));
    }
    super::check_name(&c.device_name).map_err(|e| Error::corrupt(object, format!("device {e}")))?;
    if let Some(e) = rec.expires_ms
        && c.time_ms >= e
    {
        return Err(Error::corrupt(object, "dated after the drop's expiry"));
    }
    for p in &c.packs {
        d.packs.insert(p.pack, p.key);
    }
    for f in &c.files {
        RepoPath::new(f.path.as_bytes()).map_err(|e| Error::corrupt(object, e.to_string()))?;
        let sum: u64 = f.chunks.iter().map(|r| u64::from(r.len.saturating_sub(crate::crypto::SEAL_OVERHEAD as u32))).sum();
        let most = rec.chunker.max as usize + crate::crypto::SEAL_OVERHEAD;
        let bad_ref = |r: &ChunkRef| !d.packs.contains_key(&r.pack) || r.len as usize > most;
        if sum != f.size || f.chunks.iter().any(bad_ref) {
            return Err(Error::corrupt(object, format!("file {} does not add up (size or packs)", f.path)));
        }
    }
    for f in c.files {
        d.files.insert(f.path.clone(), f);
    }
    d.name = c.device_name;
    d.commits += 1;
    d.last_ms = Some(c.time_ms);
    Ok(())
}

/// Compares a device's accepted log with what this machine saw before, and
/// remembers the longer of the two.
fn check_seen(seen: &mut Seen, drop: &DropId, d: &DropDevice, last: CommitHash, problems: &mut Vec<Problem>) {
    let key = d.id.to_hex();
    let hash = hex::encode(last.0);
    match seen.devices.get(&key) {
        Some((count, _)) if *count > d.commits => problems.push(Problem {
            object: layout::drop_log_prefix(drop, &d.id),
            reason: format!("this machine saw {count} commit(s) of this device; the store now gives {} (rolled back)", d.commits),
            late: false,
        }),
        Some((count, h)) if *count == d.commits && *h != hash => problems.push(Problem {
            object: layout::drop_commit(drop, &d.id, count.saturating_sub(1)),
            reason: "differs from the commit this machine saw there before (replaced)".into(),
            late: false,
        }),
        _ => {
            seen.devices.insert(key, (d.commits, hash));
        }
    }
}

/// What [`pull_drop`] did.
#[derive(Debug, Clone)]
pub struct DropPullReport {
    pub scan: DropScan,
    /// Files written (new or changed).
    pub written: usize,
    pub bytes: u64,
    /// Files already as the drop has them.
    pub unchanged: usize,
    /// Files not written, and why (also in `scan.problems`).
    pub failed: usize,
}

/// Writes every file of the drop's accepted commits under
/// `dir/<device name>/` (see the module doc).
pub async fn pull_drop(repo: &Repository, info: &DropInfo, dir: &Path, seen: Option<&Path>) -> Result<DropPullReport> {
    let mut scan = scan_drop(repo, info, seen).await?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let root = RootFs::open(dir)?;
    let tmp_path = dir.join(".coffer-drop-tmp");
    std::fs::create_dir_all(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
    let tmp = TmpDir::open(&tmp_path)?;
    let mut report = DropPullReport { scan: scan.clone(), written: 0, bytes: 0, unchanged: 0, failed: 0 };
    let names = device_dirs(&scan.devices);
    let dedup = super::push::dedup_key(&scan.info.record.as_ref().map_or([0; 32], |r| *r.write_key));
    for (d, name) in scan.devices.iter().zip(&names) {
        for f in d.files.values() {
            let path = RepoPath::new(format!("{name}/{}", f.path).into_bytes())?;
            let here = root.lstat(&path)?;
            if here.as_ref().is_some_and(|l| l.size == f.size && l.mtime_ns / 1_000_000 == f.mtime_ms as i64) {
                report.unchanged += 1;
                continue;
            }
            let ctx = FileCtx { repo, drop: &scan.info.id, device: d, dedup: &dedup };
            match write_file(&ctx, f, &root, &tmp, &path).await {
                Ok(()) => {
                    report.written += 1;
                    report.bytes += f.size;
                }
                Err(e @ Error::Store(_)) => return Err(e),
                Err(e) => {
                    report.failed += 1;
                    scan.problems.push(Problem { object: format!("{name}/{}", f.path), reason: e.to_string(), late: false });
                }
            }
        }
    }
    let _ = std::fs::remove_dir(&tmp_path);
    report.scan = scan;
    Ok(report)
}

/// The directory of each device under DIR: its name, or `name-<id>` when
/// two devices share one.
fn device_dirs(devices: &[DropDevice]) -> Vec<String> {
    devices
        .iter()
        .map(|d| {
            let shared = devices.iter().filter(|o| o.name == d.name).count() > 1;
            if shared { format!("{}-{}", d.name, d.id.short()) } else { d.name.clone() }
        })
        .collect()
}

struct FileCtx<'a> {
    repo: &'a Repository,
    drop: &'a DropId,
    device: &'a DropDevice,
    dedup: &'a [u8; 32],
}

/// Fetches, verifies and writes one file through a temp file.
async fn write_file(ctx: &FileCtx<'_>, f: &DropFile, root: &RootFs, tmp: &TmpDir, path: &RepoPath) -> Result<()> {
    root.ensure_parents(path)?;
    let name = tmp.fresh_name("drop");
    let tmp_io = |e| Error::io(tmp.path().join(&name), e);
    let mut out = tmp.create(&name).map_err(tmp_io)?;
    let res = async {
        for run in runs(&f.chunks) {
            let object = layout::drop_pack(ctx.drop, &run[0].pack);
            let start = run[0].offset;
            let end = run.last().map_or(start, |r| r.offset + u64::from(r.len));
            let bytes = match ctx.repo.store().get_range(&object, start..end).await {
                Ok(b) => b,
                Err(StoreError::NotFound { .. } | StoreError::Rejected { .. }) => {
                    return Err(Error::corrupt(&object, "missing, or shorter than its commit says"));
                }
                Err(e) => return Err(e.into()),
            };
            if bytes.len() as u64 != end - start {
                return Err(Error::corrupt(&object, "shorter than its commit says (truncated)"));
            }
            let key = &ctx.device.packs[&run[0].pack];
            for r in run {
                let at = usize::try_from(r.offset - start).expect("in range");
                let sealed = &bytes[at..at + r.len as usize];
                let plain = format::open_blob(key, (ctx.drop, &r.pack, &r.id), sealed, &object)?;
                if crate::crypto::keyed_hash(ctx.dedup, &plain) != r.id.0 {
                    return Err(Error::corrupt(&object, format!("chunk {} has other contents than its id", r.id)));
                }
                out.write_all(&plain).map_err(tmp_io)?;
            }
        }
        finish(&out, f).map_err(tmp_io)?;
        root.install(tmp, &name, path, |here| match here {
            Some(l) if l.kind != crate::journal::LocalKind::File => {
                Err(Error::Config(format!("{}: not a file here; not replaced", root.display(path).display())))
            }
            _ => Ok(()),
        })?;
        Ok(())
    }
    .await;
    if res.is_err() {
        tmp.remove(&name);
    }
    res
}

/// Permission bits (no set-id bits) and mtime of a written file.
fn finish(out: &std::fs::File, f: &DropFile) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    out.sync_data()?;
    out.set_permissions(std::fs::Permissions::from_mode((f.mode & 0o777) | 0o600))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.mtime_ms);
    out.set_modified(mtime)
}

/// Consecutive chunks that lie back to back in one pack: one GET each.
fn runs(chunks: &[ChunkRef]) -> Vec<&[ChunkRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=chunks.len() {
        let split = i == chunks.len()
            || chunks[i].pack != chunks[i - 1].pack
            || chunks[i].offset != chunks[i - 1].offset + u64::from(chunks[i - 1].len)
            || chunks[i].offset - chunks[start].offset > 64 << 20;
        if split {
            out.push(&chunks[start..i]);
            start = i;
        }
    }
    out
}

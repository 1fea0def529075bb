//! A synced folder: a local directory bound to a repository as one device.
//!
//! Binding writes `DIR/.coffer/folder.json` (device id, repository id, store URL) and
//! opens the journal in `DIR/.coffer/journal/`. `DIR/.coffer/tmp/` holds files
//! being written; leftovers of a killed run are removed on open.
//!
//! A folder knows which directory it is: the binding records the instance it was
//! made for (machine id, the root's device and inode, its path, a random token
//! also kept in the journal). A folder copied with its `.coffer/` (`cp -a`,
//! `rsync -a`, a restored image on another machine) finds another instance on
//! open and becomes a new device that keeps the journal (DESIGN.md §7a); a
//! folder moved on the same filesystem keeps its identity.
//!
//! One process at a time: opening takes an exclusive lock on `DIR/.coffer/lock`
//! (`flock`, released by the kernel when the process ends, even by kill -9)
//! before the binding is read or written, and holds it while the [`Folder`]
//! lives. A second process is refused with "folder is in use by another coffer
//! process (pid N)", so two first pushes of one folder cannot bind it twice.
//!
//! Below the root, pull and restore touch the folder only through its
//! [`RootFs`] (no symlink is followed).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::format::config::{ConfigPin, RepoConfig};
use crate::format::id::{DeviceId, RepoId};
use crate::format::path::STATE_DIR;
use crate::journal::Journal;
use crate::sync::pull::rootfs::{RootFs, TmpDir};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

const BINDING_FILE: &str = "folder.json";
const LOCK_FILE: &str = "lock";
const BINDING_VERSION: u32 = 2;
/// The journal's `meta` key of the instance token.
const INSTANCE_TOKEN: &str = "instance_token";

/// The contents of `.coffer/folder.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub version: u32,
    pub device: String,
    pub repository: String,
    /// The store URL as given when the folder was bound.
    pub store: String,
    /// The directory this binding was made for (absent in version 1 bindings:
    /// recorded on their first open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
}

/// What tells one bound directory from a copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// `/etc/machine-id` (empty if the machine has none).
    pub machine: String,
    /// `st_dev` and `st_ino` of the folder's root.
    pub dev: u64,
    pub ino: u64,
    /// The root's canonical path (for messages, and to tell a remount from a copy).
    pub path: String,
    /// Random, also kept in the journal: a journal from elsewhere does not match.
    pub token: String,
}

impl Instance {
    /// The instance `root` (canonical) is now, with a new token.
    fn here(root: &Path, meta: &fs::Metadata) -> Instance {
        use std::os::unix::fs::MetadataExt;
        Instance {
            machine: machine_id(),
            dev: meta.dev(),
            ino: meta.ino(),
            path: root.display().to_string(),
            token: DeviceId::random().to_hex(),
        }
    }

    /// Whether `self` (recorded) is the directory `now` describes. A different
    /// machine or inode is a copy; a different `st_dev` alone is a remount (device
    /// numbers can change across boots) unless the path changed too.
    fn is(&self, now: &Instance) -> bool {
        self.machine == now.machine
            && self.ino == now.ino
            && (self.dev == now.dev || self.path == now.path)
    }
}

/// The machine's id (systemd's `/etc/machine-id`, else D-Bus's), or "".
fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|f| fs::read_to_string(f).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// An open, bound folder.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    fs: RootFs,
    tmp: TmpDir,
    /// Held (locked) while the folder is open.
    _lock: fs::File,
    device: Device,
    /// Whether the journal was (re)built empty on open.
    pub fresh_journal: bool,
}

impl Folder {
    /// Reads the binding of `root`, if it is bound.
    pub fn read_binding(root: &Path) -> Result<Option<Binding>> {
        let file = root.join(STATE_DIR).join(BINDING_FILE);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&file, e)),
        };
        let b: Binding = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
        if b.version != BINDING_VERSION && b.version != 1 {
            return Err(Error::UnsupportedVersion {
                what: file.display().to_string(),
                found: b.version,
                supported: BINDING_VERSION,
            });
        }
        Ok(Some(b))
    }

    /// Opens `root` as a device of `repo`, binding it on first use. `create` makes
    /// `root` if it does not exist (pull into a new directory).
    pub fn open(root: &Path, repo: RepoId, store_url: &str, create: bool) -> Result<Folder> {
        if create {
            fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        }
        let meta = fs::metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        let state = root.join(STATE_DIR);
        let lock = lock_folder(&root, &state)?;
        let here = Instance::here(&root, &meta);
        let (binding, copied) = match Self::read_binding(&root)? {
            Some(b) if b.repository != repo.to_hex() => {
                return Err(Error::Config(format!(
                    "{} is bound to another repository ({}, store {})",
                    root.display(),
                    b.repository,
                    b.store
                )));
            }
            Some(b) => recognize(&state, b, here)?,
            None => {
                let b = Binding {
                    version: BINDING_VERSION,
                    device: DeviceId::random().to_hex(),
                    repository: repo.to_hex(),
                    store: store_url.to_string(),
                    instance: Some(here),
                };
                write_binding(&state, &b)?;
                (b, None)
            }
        };
        let device = DeviceId::from_hex(&binding.device)
            .ok_or_else(|| Error::Config(format!("{}: bad device id", state.display())))?;
        let (journal, fresh_journal) = Journal::open(&state.join("journal"))?;
        let token = binding
            .instance
            .as_ref()
            .map(|i| i.token.clone())
            .unwrap_or_default();
        let journal_token: Option<String> = journal.meta_get(INSTANCE_TOKEN)?;
        let tmp = clean_tmp(&state.join("tmp"))?;
        let home = crate::device::IdHome::Folder {
            state: state.clone(),
            binding: std::sync::Mutex::new(binding),
        };
        let folder = Folder {
            fs: RootFs::open(&root)?,
            tmp,
            _lock: lock,
            root,
            device: Device::with_home(device, journal, home),
            fresh_journal,
        };
        let foreign_journal = journal_token.is_some_and(|t| t != token);
        if let Some(was) = copied {
            folder.device.renew(&format!(
                "{} is a copy of the synced folder {} (machine {})",
                folder.root.display(),
                was.path,
                short(&was.machine)
            ))?;
        } else if foreign_journal {
            folder.device.renew(&format!(
                "{}: its journal belongs to another copy of this folder",
                folder.root.display()
            ))?;
        }
        folder.journal().meta_put(INSTANCE_TOKEN, &token)?;
        Ok(folder)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder's device (identity, journal, commit writing).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn binding(&self) -> Binding {
        self.device
            .binding()
            .expect("a folder's device lives in its binding")
    }

    pub fn journal(&self) -> &Journal {
        self.device.journal()
    }

    /// The folder as a directory handle: every write below it goes through this.
    pub fn fs(&self) -> &RootFs {
        &self.fs
    }

    /// Where files are written before being renamed into place.
    pub fn tmp(&self) -> &TmpDir {
        &self.tmp
    }

    /// Pins the repository config this folder syncs with on first use, and refuses
    /// a config that changed since (DESIGN.md §3): the second line against a store
    /// that edits `config`, and the only one for format-1 repositories.
    pub fn check_config(&self, config: &RepoConfig) -> Result<()> {
        let journal = self.journal();
        let now = config.pin();
        match journal.meta_get::<ConfigPin>(CONFIG_PIN)? {
            Some(pinned) => pinned.check(&now),
            None => journal.meta_put(CONFIG_PIN, &now),
        }
    }
}

/// The journal's `meta` key of the folder's [`ConfigPin`].
const CONFIG_PIN: &str = "config_pin";

/// Empties (or makes) the temp dir: what is there is left by a killed run, as
/// this process holds the folder's lock.
fn clean_tmp(tmp: &Path) -> Result<TmpDir> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    }
    fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    TmpDir::open(tmp)
}

/// Takes the folder's exclusive lock (without waiting) and writes this
/// process's id into the lock file, for the message another process shows.
fn lock_folder(root: &Path, state: &Path) -> Result<fs::File> {
    fs::create_dir_all(state).map_err(|e| Error::io(state, e))?;
    let path = state.join(LOCK_FILE);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(Error::InUse {
                folder: root.display().to_string(),
                pid: pid.trim().to_string(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let wrote = f
        .set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| write!(f, "{}", std::process::id()));
    wrote.map_err(|e| Error::io(&path, e))?;
    Ok(f)
}

/// Checks a binding read from disk against the directory it is in. A version-1
/// binding (or one without an instance) adopts this directory. The same
/// directory keeps its binding (its path is updated if it moved); another one
/// gets a new instance, and the instance it was a copy of is returned.
fn recognize(state: &Path, b: Binding, mut here: Instance) -> Result<(Binding, Option<Instance>)> {
    let copied = match &b.instance {
        Some(was) if was.is(&here) && was.path == here.path && b.version == BINDING_VERSION => {
            return Ok((b, None));
        }
        Some(was) if was.is(&here) => {
            here.token = was.token.clone();
            None
        }
        Some(was) => Some(was.clone()),
        None => None,
    };
    let next = Binding {
        version: BINDING_VERSION,
        instance: Some(here),
        ..b
    };
    write_binding(state, &next)?;
    Ok((next, copied))
}

/// The first 8 characters of a machine id, or "unknown".
fn short(machine: &str) -> &str {
    if machine.is_empty() {
        "unknown"
    } else {
        &machine[..machine.len().min(8)]
    }
}

pub(crate) fn write_binding(state: &Path, b: &Binding) -> Result<()> {
    fs::create_dir_all(state).map_err(|e| Error::io(state, e))?;
    let file = state.join(BINDING_FILE);
    let tmp = state.join(".folder.json.tmp");
    let json = serde_json::to_vec_pretty(b).expect("binding serializes");
    fs::write(&tmp, json)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &file))
        .map_err(|e| Error::io(&file, e))
}

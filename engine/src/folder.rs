//! A synced folder: a local directory bound to a repository as one device.
//!
//! Binding writes `DIR/.coffer/folder.json` (device id, repository id, store URL) and
//! opens the journal in `DIR/.coffer/journal/`. The device id lives outside the
//! journal so that a lost or rebuilt journal keeps the folder's identity (and its
//! log). `DIR/.coffer/tmp/` holds files being written; leftovers of a killed run
//! are removed on open.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::id::{DeviceId, RepoId};
use crate::journal::Journal;
use crate::path::STATE_DIR;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

const BINDING_FILE: &str = "folder.json";
const BINDING_VERSION: u32 = 1;

/// The contents of `.coffer/folder.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub version: u32,
    pub device: String,
    pub repository: String,
    /// The store URL as given when the folder was bound.
    pub store: String,
}

/// An open, bound folder.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    binding: Binding,
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
        if b.version != BINDING_VERSION {
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
        let binding = match Self::read_binding(&root)? {
            Some(b) if b.repository != repo.to_hex() => {
                return Err(Error::Config(format!(
                    "{} is bound to another repository ({}, store {})",
                    root.display(),
                    b.repository,
                    b.store
                )));
            }
            Some(b) => b,
            None => {
                let b = Binding {
                    version: BINDING_VERSION,
                    device: DeviceId::random().to_hex(),
                    repository: repo.to_hex(),
                    store: store_url.to_string(),
                };
                write_binding(&state, &b)?;
                b
            }
        };
        let device = DeviceId::from_hex(&binding.device)
            .ok_or_else(|| Error::Config(format!("{}: bad device id", state.display())))?;
        let (journal, fresh_journal) = Journal::open(&state.join("journal"))?;
        let folder = Folder {
            root,
            binding,
            device: Device::new(device, journal),
            fresh_journal,
        };
        folder.clean_tmp()?;
        Ok(folder)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder's device (identity, journal, commit writing).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    pub fn journal(&self) -> &Journal {
        self.device.journal()
    }

    /// Where files are written before being renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR).join("tmp")
    }

    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))
    }
}

fn write_binding(state: &Path, b: &Binding) -> Result<()> {
    fs::create_dir_all(state).map_err(|e| Error::io(state, e))?;
    let file = state.join(BINDING_FILE);
    let tmp = state.join(".folder.json.tmp");
    let json = serde_json::to_vec_pretty(b).expect("binding serializes");
    fs::write(&tmp, json)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &file))
        .map_err(|e| Error::io(&file, e))
}

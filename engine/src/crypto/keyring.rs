//! The local keyring: master keys this machine has unlocked, so later commands need
//! no passphrase. One file per repository, `<home>/keyring/<repo id>.json`, mode
//! 0600 in a 0700 directory, written atomically.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::id::RepoId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Keys this machine holds.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    repository: String,
    master_key: String,
}

impl Keyring {
    /// The keyring under a coffer home directory.
    pub fn new(home: &Path) -> Self {
        Keyring {
            dir: home.join("keyring"),
        }
    }

    fn file(&self, repo: &RepoId) -> PathBuf {
        self.dir.join(format!("{repo}.json"))
    }

    /// The stored key of `repo`, if any.
    pub fn load(&self, repo: &RepoId) -> Result<Option<MasterKey>> {
        let path = self.file(repo);
        let text = match fs::read(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let bad = || Error::Config(format!("{}: unreadable keyring entry", path.display()));
        let kf: KeyFile = serde_json::from_slice(&text).map_err(|_| bad())?;
        let key = Zeroizing::new(kf.master_key);
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(key.as_bytes(), bytes.as_mut()).map_err(|_| bad())?;
        if kf.version != 1 || kf.repository != repo.to_hex() {
            return Err(bad());
        }
        Ok(Some(MasterKey::from_bytes(*bytes)))
    }

    /// Stores `key` for `repo` (mode 0600).
    pub fn store(&self, repo: &RepoId, key: &MasterKey) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&self.dir, e))?;
        let kf = KeyFile {
            version: 1,
            repository: repo.to_hex(),
            master_key: hex::encode(key.as_bytes()),
        };
        let text = Zeroizing::new(serde_json::to_vec(&kf).expect("plain struct serializes"));
        drop(Zeroizing::new(kf.master_key));
        let path = self.file(repo);
        let tmp = self.dir.join(format!(".{repo}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io(&path, e))
    }

    /// Forgets the key of `repo`.
    pub fn remove(&self, repo: &RepoId) -> Result<bool> {
        let path = self.file(repo);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// The coffer home: `$COFFER_HOME`, else `$XDG_CONFIG_HOME/coffer`, else
/// `~/.config/coffer`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("COFFER_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(x).join("coffer"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("coffer")),
        None => Err(Error::Config(
            "cannot find a home directory: set COFFER_HOME".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove_with_private_mode() {
        let home = tempfile::tempdir().unwrap();
        let kr = Keyring::new(home.path());
        let repo = RepoId::random();
        assert!(kr.load(&repo).unwrap().is_none());
        let key = MasterKey::generate();
        kr.store(&repo, &key).unwrap();
        assert_eq!(kr.load(&repo).unwrap(), Some(key));
        let mode = fs::metadata(kr.file(&repo)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(kr.remove(&repo).unwrap());
        assert!(kr.load(&repo).unwrap().is_none());
    }
}

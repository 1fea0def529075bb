//! The local keyring: keys this machine has unlocked, so later commands need
//! no passphrase. One file per repository, `<home>/keyring/<repo id>.json`, mode
//! 0600 in a 0700 directory, written atomically. Version 2 keeps the key chain
//! (every epoch key, `DESIGN.md` §4a) and the identity of the slot that opened
//! it, so it follows later rotations that keep that slot, and only those.
//! Version 3 is version 2 plus `expires`, written when that slot is a grant
//! (`DESIGN.md` §4b): honest clients stop using the entry after then.

use crate::crypto::MasterKey;
use crate::crypto::epoch::{EpochName, KeyChain, SlotIdentity};
use crate::format::id::SlotId;
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
    /// The root key (epoch 0), hex.
    master_key: String,
    /// Version 2: the slot whose identity is kept, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slot: Option<String>,
    /// Version 2: that slot's age identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    /// Version 2: every epoch key above 0, as (epoch name, key hex).
    #[serde(default)]
    epochs: Vec<(String, String)>,
    /// Version 3: when the grant that opened the chain expires, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

/// What the keyring holds for a repository.
#[derive(Debug, Clone)]
pub struct Saved {
    pub chain: KeyChain,
    /// The slot that opened the chain and its identity (none for a key saved
    /// by a version-1 keyring or through a slot from before key epochs).
    pub identity: Option<(SlotId, SlotIdentity)>,
    /// When the grant that opened the chain expires (Unix ms), if a grant did.
    pub expires: Option<u64>,
}

fn key_from_hex(text: &str) -> Option<MasterKey> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, bytes.as_mut()).ok()?;
    Some(MasterKey::from_bytes(*bytes))
}

fn parse(kf: KeyFile, repo: &RepoId) -> Option<Saved> {
    let versioned = match kf.version {
        1 | 2 => kf.expires.is_none(),
        3 => kf.expires.is_some() && kf.identity.is_some(),
        _ => false,
    };
    if !versioned || kf.repository != repo.to_hex() {
        return None;
    }
    let mut chain = KeyChain::root(&key_from_hex(&Zeroizing::new(kf.master_key))?);
    for (name, key) in kf.epochs {
        let key = Zeroizing::new(key);
        chain.insert(EpochName::parse(&name)?, key_from_hex(&key)?);
    }
    let identity = match (kf.slot, kf.identity) {
        (Some(slot), Some(identity)) => {
            let identity = Zeroizing::new(identity);
            Some((SlotId::from_hex(&slot)?, SlotIdentity::parse(&identity)?))
        }
        (None, None) => None,
        _ => return None,
    };
    Some(Saved {
        chain,
        identity,
        expires: kf.expires,
    })
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

    /// The stored keys of `repo`, if any.
    pub fn load(&self, repo: &RepoId) -> Result<Option<Saved>> {
        let path = self.file(repo);
        let text = match fs::read(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let bad = || Error::Config(format!("{}: unreadable keyring entry", path.display()));
        let kf: KeyFile = serde_json::from_slice(&text).map_err(|_| bad())?;
        parse(kf, repo).map(Some).ok_or_else(bad)
    }

    /// Stores the key chain of `repo`, the identity that opened it and, when
    /// that was a grant, when it expires (mode 0600).
    pub fn store(
        &self,
        repo: &RepoId,
        chain: &KeyChain,
        identity: Option<&(SlotId, SlotIdentity)>,
        expires: Option<u64>,
    ) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&self.dir, e))?;
        let kf = KeyFile {
            version: if expires.is_some() { 3 } else { 2 },
            expires,
            repository: repo.to_hex(),
            master_key: hex::encode(chain.root_key().as_bytes()),
            slot: identity.map(|(s, _)| s.to_hex()),
            identity: identity.map(|(_, i)| i.secret().to_string()),
            epochs: chain
                .iter()
                .filter(|(n, _)| n.level > 0)
                .map(|(n, k)| (n.to_string(), hex::encode(k.as_bytes())))
                .collect(),
        };
        let text = Zeroizing::new(serde_json::to_vec(&kf).expect("plain struct serializes"));
        drop(Zeroizing::new(kf.master_key));
        drop(kf.identity.map(Zeroizing::new));
        kf.epochs.into_iter().for_each(|(_, k)| drop(Zeroizing::new(k)));
        let path = self.file(repo);
        // One temp file per writer: two processes saving at once each rename
        // a whole file of their own.
        let mut nonce = [0u8; 8];
        crate::crypto::fill_random(&mut nonce);
        let tmp = self.dir.join(format!(".{repo}.{}.tmp", hex::encode(nonce)));
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
        let mut chain = KeyChain::root(&key);
        chain.insert(EpochName::random(1), MasterKey::generate());
        let id = (SlotId::random(), SlotIdentity::generate());
        kr.store(&repo, &chain, Some(&id), None).unwrap();
        let saved = kr.load(&repo).unwrap().unwrap();
        assert!(*saved.chain.root_key() == key);
        assert_eq!(saved.chain.newest().0, chain.newest().0);
        assert!(saved.chain.newest().1 == chain.newest().1);
        let (slot, identity) = saved.identity.unwrap();
        assert_eq!((slot, identity.recipient()), (id.0, id.1.recipient()));
        let mode = fs::metadata(kr.file(&repo)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        kr.store(&repo, &chain, Some(&id), Some(7)).unwrap();
        assert_eq!(kr.load(&repo).unwrap().unwrap().expires, Some(7));
        assert!(kr.remove(&repo).unwrap());
        assert!(kr.load(&repo).unwrap().is_none());
    }

    #[test]
    fn a_version_1_entry_still_reads() {
        let home = tempfile::tempdir().unwrap();
        let kr = Keyring::new(home.path());
        let repo = RepoId::random();
        fs::create_dir_all(&kr.dir).unwrap();
        let text = format!(
            r#"{{"version": 1, "repository": "{repo}", "master_key": "{}"}}"#,
            "ab".repeat(32)
        );
        fs::write(kr.file(&repo), text).unwrap();
        let saved = kr.load(&repo).unwrap().unwrap();
        assert_eq!(saved.chain.root_key().as_bytes(), &[0xab; 32]);
        assert!(saved.identity.is_none());
    }
}

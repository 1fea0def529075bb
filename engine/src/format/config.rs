//! The repository's `config` object (DESIGN.md §3): format version, repository id,
//! chunker parameters, a key check and — from format 2 on — a MAC under the master
//! key over every field a device relies on.
//!
//! The config is plaintext so a device can read it before it has a key, which
//! means a store operator can edit it. Format 2 closes that: [`RepoConfig::verify`]
//! checks the key check and the MAC once the master key is known, and the key check
//! of a format-2 repository is derived under a different context than format 1's,
//! so a forged "format 1" config (which has no MAC) cannot carry a key check that
//! matches. Format-1 repositories (created before 2026-12) have no MAC; for them,
//! and as a second line for every format, each folder pins the config it first
//! synced with in its journal ([`ConfigPin`]) and refuses one that changed.

use crate::chunk::chunker::ChunkerParams;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::id::RepoId;
use crate::store::layout;
use serde::{Deserialize, Serialize};

/// The repository format new repositories get.
pub const REPO_FORMAT: u32 = 2;
/// The oldest repository format this build still reads (and writes to).
pub const OLDEST_FORMAT: u32 = 1;

const KEY_CHECK_V1: &str = "coffer v1 2026-11 key check";
const KEY_CHECK_V2: &str = "coffer v2 2026-12 key check";
const MAC_KEY: &str = "coffer v2 2026-12 config mac key";
/// First bytes of the MAC input, so it can never be confused with another keyed hash.
const MAC_DOMAIN: &[u8; 14] = b"coffer config\0";

/// The plaintext `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    /// Repository id, 32 hex digits.
    pub repository: String,
    pub chunker: ChunkerParams,
    /// First 16 bytes of a key derived from the master key, hex: tells a stale or
    /// foreign keyring entry from the right key without trying to open data.
    pub key_check: String,
    /// Format 2 and later: keyed BLAKE3 of [`RepoConfig::mac_input`], 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Why a master key does not fit a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The key check differs: another repository's key, or a stale keyring entry.
    WrongKey,
    /// The key is right but the MAC is missing or wrong: the config was edited by
    /// someone without the key.
    Tampered,
}

impl RepoConfig {
    /// A new repository's config, authenticated under `master`.
    pub fn new(id: &RepoId, chunker: ChunkerParams, master: &MasterKey) -> RepoConfig {
        let mut config = RepoConfig {
            format: REPO_FORMAT,
            repository: id.to_hex(),
            chunker,
            key_check: key_check(REPO_FORMAT, master),
            mac: None,
        };
        config.mac = Some(hex::encode(config.compute_mac(master)));
        config
    }

    pub fn repo_id(&self) -> Result<RepoId> {
        RepoId::from_hex(&self.repository)
            .ok_or_else(|| Error::corrupt(layout::CONFIG, "bad repository id"))
    }

    /// Parses and checks a config object (everything that needs no key).
    pub fn parse(bytes: &[u8], describe: &str) -> Result<RepoConfig> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(layout::CONFIG, format!("not coffer JSON: {e}")))?;
        if !(OLDEST_FORMAT..=REPO_FORMAT).contains(&probe.format) {
            return Err(Error::UnsupportedVersion {
                what: format!("repository {describe}"),
                found: probe.format,
                supported: REPO_FORMAT,
            });
        }
        let config: RepoConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(layout::CONFIG, e.to_string()))?;
        let bad = |why: &str| Error::corrupt(layout::CONFIG, why.to_string());
        config.chunker.validate().map_err(|e| bad(&e))?;
        config.repo_id()?;
        if hex::decode(&config.key_check).map_or(true, |k| k.len() != 16) {
            return Err(bad("bad key check"));
        }
        match (&config.mac, config.format) {
            (Some(_), 1) => return Err(bad("a format-1 config has no mac")),
            (None, f) if f >= 2 => return Err(bad("the config has no mac")),
            (Some(m), _) if hex::decode(m).map_or(true, |m| m.len() != 32) => {
                return Err(bad("bad mac"));
            }
            _ => {}
        }
        Ok(config)
    }

    /// Whether `master` is this repository's key and the config is the one it wrote.
    pub fn verify(&self, master: &MasterKey) -> std::result::Result<(), Mismatch> {
        if key_check(self.format, master) != self.key_check {
            return Err(Mismatch::WrongKey);
        }
        match &self.mac {
            None if self.format == 1 => Ok(()),
            None => Err(Mismatch::Tampered),
            Some(mac) => {
                let want = blake3::Hash::from(self.compute_mac(master));
                let got = <[u8; 32]>::try_from(hex::decode(mac).unwrap_or_default().as_slice())
                    .map(blake3::Hash::from)
                    .map_err(|_| Mismatch::Tampered)?;
                // blake3::Hash compares in constant time.
                if want == got {
                    Ok(())
                } else {
                    Err(Mismatch::Tampered)
                }
            }
        }
    }

    /// The bytes the MAC covers (DESIGN.md §3): every field but the MAC, fixed width.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAC_DOMAIN.len() + 4 + 16 + 13 + 16);
        out.extend_from_slice(MAC_DOMAIN);
        out.extend_from_slice(&self.format.to_le_bytes());
        out.extend_from_slice(&hex::decode(&self.repository).unwrap_or_default());
        out.extend_from_slice(&self.chunker.min.to_le_bytes());
        out.extend_from_slice(&self.chunker.avg.to_le_bytes());
        out.extend_from_slice(&self.chunker.max.to_le_bytes());
        out.push(self.chunker.normalization);
        out.extend_from_slice(&hex::decode(&self.key_check).unwrap_or_default());
        out
    }

    fn compute_mac(&self, master: &MasterKey) -> [u8; 32] {
        let key = zeroize::Zeroizing::new(blake3::derive_key(MAC_KEY, master.as_bytes()));
        *blake3::keyed_hash(&key, &self.mac_input()).as_bytes()
    }

    /// What a folder pins of this config in its journal.
    pub fn pin(&self) -> ConfigPin {
        ConfigPin {
            format: self.format,
            repository: self.repository.clone(),
            chunker: self.chunker,
            key_check: self.key_check.clone(),
        }
    }
}

/// The fields of a config a folder has synced with, kept in its journal: a config
/// that later differs in any of them is refused ([`ConfigPin::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPin {
    pub format: u32,
    pub repository: String,
    pub chunker: ChunkerParams,
    pub key_check: String,
}

impl ConfigPin {
    /// Refuses `now` if it differs from what this folder synced with before.
    pub fn check(&self, now: &ConfigPin) -> Result<()> {
        let changed = if self.repository != now.repository {
            "repository id"
        } else if self.format != now.format {
            "format version"
        } else if self.chunker != now.chunker {
            "chunker parameters"
        } else if self.key_check != now.key_check {
            "key check"
        } else {
            return Ok(());
        };
        Err(Error::corrupt(
            layout::CONFIG,
            format!(
                "its {changed} changed since this folder last synced with it; refusing to \
                 continue (was {self:?}, now {now:?})"
            ),
        ))
    }
}

/// The key check of a repository of `format` with `master`, 32 hex digits.
pub fn key_check(format: u32, master: &MasterKey) -> String {
    let context = if format == 1 {
        KEY_CHECK_V1
    } else {
        KEY_CHECK_V2
    };
    hex::encode(&blake3::derive_key(context, master.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (MasterKey, RepoConfig) {
        let master = MasterKey::from_bytes([7; 32]);
        let id = RepoId::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        (
            master.clone(),
            RepoConfig::new(&id, ChunkerParams::DEFAULT, &master),
        )
    }

    #[test]
    fn mac_is_a_fixed_function_of_the_fields() {
        // Golden values, computed independently with the Python `blake3` package
        // from DESIGN.md §3: a change of the MAC input or of a key derivation breaks
        // every format-2 repository, so it must show up here.
        let (_, config) = sample();
        assert_eq!(config.key_check, "d4e64a7464326b9338ebfdace695793f");
        assert_eq!(
            config.mac.as_deref(),
            Some("7b18e8ae4fcc5e6838b8e1372258a9052213ee4afd769be197dfae95456bb7d8")
        );
    }

    #[test]
    fn every_field_is_authenticated() {
        let (master, config) = sample();
        assert_eq!(config.verify(&master), Ok(()));
        let text = serde_json::to_vec(&config).unwrap();
        let parsed = RepoConfig::parse(&text, "test").unwrap();
        assert_eq!(parsed.verify(&master), Ok(()));

        let mut c = config.clone();
        c.chunker.min /= 2;
        assert_eq!(c.verify(&master), Err(Mismatch::Tampered));
        let mut c = config.clone();
        c.chunker.normalization = 1;
        assert_eq!(c.verify(&master), Err(Mismatch::Tampered));
        let mut c = config.clone();
        c.mac = None;
        assert_eq!(c.verify(&master), Err(Mismatch::Tampered));
        assert!(RepoConfig::parse(&serde_json::to_vec(&c).unwrap(), "t").is_err());
        // A downgrade to format 1 (which has no MAC) fails the key check.
        c.format = 1;
        assert_eq!(c.verify(&master), Err(Mismatch::WrongKey));
        assert_eq!(
            config.verify(&MasterKey::from_bytes([8; 32])),
            Err(Mismatch::WrongKey)
        );
    }

    #[test]
    fn a_pin_refuses_any_changed_field() {
        let (_, config) = sample();
        let pin = config.pin();
        pin.check(&config.pin()).unwrap();
        let mut c = config.clone();
        c.chunker.max *= 2;
        let err = pin.check(&c.pin()).unwrap_err().to_string();
        assert!(err.contains("chunker parameters changed"), "{err}");
    }
}

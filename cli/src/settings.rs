//! Files in the coffer home besides the keyring: saved S3 credentials
//! (`coffer setstore`) and properties (`coffer set`). Both are JSON, written
//! atomically, mode 0600; unknown fields are refused.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const CREDENTIALS: &str = "credentials.json";
const SETTINGS: &str = "settings.json";

/// Properties set with `coffer set NAME=VALUE`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where coffer keeps temporary state (replayed logs of `ls`, `get`, `check`,
    /// `log`); default: the system temp dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp: Option<PathBuf>,
}

/// S3 keys saved by `coffer setstore`; environment variables override them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedCredentials {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
}

impl Settings {
    pub fn load(home: &Path) -> anyhow::Result<Settings> {
        let file = home.join(SETTINGS);
        match fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{}: invalid settings", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    pub fn save(&self, home: &Path) -> anyhow::Result<()> {
        write_private(&home.join(SETTINGS), &serde_json::to_vec_pretty(self)?)
    }

    /// Applies `NAME=VALUE`.
    pub fn set(&mut self, assignment: &str) -> anyhow::Result<()> {
        let Some((name, value)) = assignment.split_once('=') else {
            bail!("expected NAME=VALUE (e.g. tmp=/scratch), got {assignment:?}");
        };
        match name.trim() {
            "tmp" => {
                let path = PathBuf::from(value.trim());
                if !path.is_absolute() {
                    bail!("tmp must be an absolute path");
                }
                if !path.is_dir() {
                    bail!("tmp: {} is not a directory", path.display());
                }
                self.tmp = Some(path);
            }
            other => bail!("unknown property {other:?} (known: tmp)"),
        }
        Ok(())
    }
}

/// The saved credentials, if any.
pub fn load_credentials(home: &Path) -> anyhow::Result<Option<(String, Zeroizing<String>)>> {
    let file = home.join(CREDENTIALS);
    let bytes = match fs::read(&file) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let c: SavedCredentials = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: invalid credentials file", file.display()))?;
    Ok(Some((c.access_key_id, Zeroizing::new(c.secret_access_key))))
}

/// Saves S3 credentials (mode 0600).
pub fn save_credentials(home: &Path, access_key_id: &str, secret: &str) -> anyhow::Result<PathBuf> {
    if access_key_id.is_empty() || secret.is_empty() {
        bail!("both the access key id and the secret key are needed");
    }
    let c = SavedCredentials {
        version: 1,
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret.to_string(),
    };
    let file = home.join(CREDENTIALS);
    write_private(&file, &Zeroizing::new(serde_json::to_vec_pretty(&c)?))?;
    drop(Zeroizing::new(c.secret_access_key));
    Ok(file)
}

/// Writes `bytes` to `file` atomically with mode 0600, in a 0700 home.
fn write_private(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = file.parent().context("no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = file.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_private_and_round_trip() {
        let home = tempfile::tempdir().unwrap();
        let file = save_credentials(home.path(), "AKID", "s3cr3t").unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (id, secret) = load_credentials(home.path()).unwrap().unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("AKID", "s3cr3t"));
    }

    #[test]
    fn set_validates_properties() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::default();
        s.set(&format!("tmp={}", dir.path().display())).unwrap();
        assert_eq!(s.tmp.as_deref(), Some(dir.path()));
        assert!(s.set("tmp=relative").is_err());
        assert!(s.set("color=blue").is_err());
        assert!(s.set("nonsense").is_err());
    }
}

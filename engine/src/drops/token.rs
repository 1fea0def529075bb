//! The drop token (`DESIGN.md` §4c): the small JSON file an owner sends to a
//! partner. It holds what writing needs and nothing that reads: the store, the
//! repository and drop ids, the drop's age recipient (a public key), the
//! drop's write key (authenticates the partner's commits; derives the
//! partner's dedup key and chunker seed), the chunker parameters and the
//! expiry. No repository key and no age identity is in it.

use crate::chunk::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::format::id::{DropId, RepoId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The token format version.
pub const TOKEN_VERSION: u32 = 1;
/// The most a token file may weigh.
pub const TOKEN_MAX: u64 = 64 * 1024;

/// A parsed drop token.
#[derive(Clone, PartialEq, Eq)]
pub struct DropToken {
    /// Where the repository is (`s3://bucket/prefix` or `file:///path`).
    pub store: String,
    pub repo: RepoId,
    pub drop: DropId,
    /// The owner's name for the drop.
    pub name: String,
    /// The drop's age X25519 recipient (`age1...`).
    pub recipient: String,
    pub write_key: Zeroizing<[u8; 32]>,
    pub chunker: ChunkerParams,
    /// When the owner stops accepting writes (Unix ms).
    pub expires_ms: Option<u64>,
}

impl std::fmt::Debug for DropToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropToken")
            .field("store", &self.store)
            .field("drop", &self.drop)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    coffer_drop_token: u32,
    store: String,
    repository: String,
    drop: String,
    name: String,
    recipient: String,
    write_key: String,
    chunker: ChunkerParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

impl DropToken {
    /// The token file's bytes (pretty JSON, one trailing newline).
    pub fn to_json(&self) -> String {
        let json = Json {
            coffer_drop_token: TOKEN_VERSION,
            store: self.store.clone(),
            repository: self.repo.to_hex(),
            drop: self.drop.to_hex(),
            name: self.name.clone(),
            recipient: self.recipient.clone(),
            write_key: hex::encode(*self.write_key),
            chunker: self.chunker,
            expires_ms: self.expires_ms,
            expires: self.expires_ms.map(crate::error::rfc3339),
        };
        let mut s = serde_json::to_string_pretty(&json).expect("a token serializes");
        s.push('\n');
        s
    }

    /// Whether `bytes` look like a token (to tell a user who passes one where
    /// a repository is expected what it is).
    pub fn looks_like(bytes: &[u8]) -> bool {
        let head = &bytes[..bytes.len().min(64)];
        head.trim_ascii_start().starts_with(b"{")
            && String::from_utf8_lossy(head).contains("\"coffer_drop_token\"")
    }

    /// Parses and checks a token; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<DropToken> {
        let bad = |why: String| Error::Config(format!("{what} is not a usable drop token: {why}"));
        let json: Json = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if json.coffer_drop_token != TOKEN_VERSION {
            return Err(Error::UnsupportedVersion {
                what: what.to_string(),
                found: json.coffer_drop_token,
                supported: TOKEN_VERSION,
            });
        }
        let repo = RepoId::from_hex(&json.repository).ok_or_else(|| bad("bad repository id".into()))?;
        let drop = DropId::from_hex(&json.drop).ok_or_else(|| bad("bad drop id".into()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&json.write_key, &mut *key).map_err(|_| bad("bad write key".into()))?;
        if json.recipient.parse::<age::x25519::Recipient>().is_err() {
            return Err(bad("the recipient is not an age X25519 public key".into()));
        }
        json.chunker.validate().map_err(|e| bad(format!("chunker: {e}")))?;
        super::check_name(&json.name).map_err(bad)?;
        Ok(DropToken {
            store: json.store,
            repo,
            drop,
            name: json.name,
            recipient: json.recipient,
            write_key: key,
            chunker: json.chunker,
            expires_ms: json.expires_ms,
        })
    }

    /// Reads and parses the token file `path` (at most [`TOKEN_MAX`] bytes).
    pub fn read_file(path: &std::path::Path) -> Result<DropToken> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut bytes = Vec::new();
        file.take(TOKEN_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > TOKEN_MAX {
            return Err(Error::Config(format!("{}: too large for a drop token", path.display())));
        }
        DropToken::parse(&bytes, &path.display().to_string())
    }

    /// Refuses a token whose drop has expired at `now_ms`.
    pub fn check_expiry(&self, now_ms: u64) -> Result<()> {
        match self.expires_ms {
            Some(e) if now_ms >= e => Err(Error::Revoked(format!(
                "drop {} expired on {}: its owner accepts nothing written with this token any more",
                self.name,
                crate::error::rfc3339(e)
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> DropToken {
        DropToken {
            store: "s3://bucket/prefix".into(),
            repo: RepoId([1; 16]),
            drop: DropId([2; 16]),
            name: "acme".into(),
            recipient: age::x25519::Identity::generate().to_public().to_string(),
            write_key: Zeroizing::new([3; 32]),
            chunker: ChunkerParams::DEFAULT,
            expires_ms: Some(1_800_000_000_000),
        }
    }

    #[test]
    fn a_token_round_trips_and_bad_ones_are_refused() {
        let t = token();
        let json = t.to_json();
        assert!(DropToken::looks_like(json.as_bytes()));
        assert_eq!(DropToken::parse(json.as_bytes(), "t").unwrap(), t);
        for (from, to) in [
            ("\"coffer_drop_token\": 1", "\"coffer_drop_token\": 2"),
            ("age1", "age2"),
            ("\"name\": \"acme\"", "\"name\": \"../x\""),
            ("\"min\": 131072", "\"min\": 1"),
        ] {
            let bad = json.replace(from, to);
            assert_ne!(bad, json, "{from}");
            assert!(DropToken::parse(bad.as_bytes(), "t").is_err(), "{from}");
        }
        assert!(DropToken::parse(b"{}", "t").is_err());
        assert!(DropToken::parse(&[0xff; 10], "t").is_err());
        assert!(t.check_expiry(1_799_999_999_999).is_ok());
        let e = t.check_expiry(1_800_000_000_000).unwrap_err().to_string();
        assert!(e.contains("expired on 2027-01-15"), "{e}");
    }
}

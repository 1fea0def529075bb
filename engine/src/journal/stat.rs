//! The stat cache: what the folder held at each path when it was last synced.

use super::Journal;
use super::rows::StatEntry;
use super::rows::{dec, enc};
use crate::error::Result;
use crate::format::path::RepoPath;

impl Journal {
    pub fn stat_get(&self, path: &RepoPath) -> Result<Option<StatEntry>> {
        self.stat.get(path.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    pub fn stat_put(&self, path: &RepoPath, e: &StatEntry) -> Result<()> {
        self.stat.insert(path.as_bytes(), enc(e)?)?;
        Ok(())
    }

    pub fn stat_remove(&self, path: &RepoPath) -> Result<()> {
        self.stat.remove(path.as_bytes())?;
        Ok(())
    }

    /// The stat tree from `key` on, in key order (raw: see [`Journal::decode_stat`]).
    pub fn stat_iter_from(&self, key: &[u8]) -> sled::Iter {
        self.stat.range(key..)
    }

    /// Decodes a raw stat value.
    pub fn decode_stat(value: &[u8]) -> Result<StatEntry> {
        dec(value)
    }

    pub fn stat_len(&self) -> usize {
        self.stat.len()
    }
}

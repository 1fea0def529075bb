//! The merge state: the maximal versions of every path.

use super::Journal;
use super::rows::{Version, decode_versions};
use super::rows::{dec, enc};
use crate::error::Result;
use crate::format::path::RepoPath;

impl Journal {
    pub fn versions(&self, path: &RepoPath) -> Result<Vec<Version>> {
        Ok(self
            .versions
            .get(path.as_bytes())?
            .map(|v| dec(&v))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn put_versions(&self, path: &RepoPath, set: &[Version]) -> Result<()> {
        self.versions.insert(path.as_bytes(), enc(&set)?)?;
        Ok(())
    }

    /// Every path with versions, in path order.
    pub fn all_versions(&self) -> Result<Vec<(RepoPath, Vec<Version>)>> {
        self.versions_iter_from(&[]).collect()
    }

    /// Versions of every path from `key` on, in path order, decoded lazily.
    pub fn versions_iter_from(
        &self,
        key: &[u8],
    ) -> impl Iterator<Item = Result<(RepoPath, Vec<Version>)>> + Send + use<> {
        self.versions.range(key..).map(decode_versions)
    }

    /// Versions of the paths in `[start, end)` (`end` `None`: to the last) in
    /// descending path order (children before parents).
    pub fn versions_rev(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(RepoPath, Vec<Version>)>> + Send + use<> {
        let range = match end {
            Some(e) => self.versions.range(start.to_vec()..e.to_vec()),
            None => self.versions.range(start.to_vec()..),
        };
        range.rev().map(decode_versions)
    }
}

//! Paths the watcher saw change, until a step that began after them succeeds.

use super::Journal;
use crate::error::Result;
use crate::format::path::RepoPath;

impl Journal {
    pub fn mark_pending(&self, path: &RepoPath) -> Result<()> {
        self.pending.insert(path.as_bytes(), &[])?;
        Ok(())
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn pending_all(&self) -> Result<Vec<RepoPath>> {
        self.pending
            .iter()
            .keys()
            .map(|k| RepoPath::new(k?.to_vec()))
            .collect()
    }

    pub fn clear_pending(&self) -> Result<()> {
        self.pending.clear()?;
        Ok(())
    }
}

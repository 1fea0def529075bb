//! `coffer key rotate --reencrypt`: seals every pack again under the current
//! epoch, in place (`DESIGN.md` §4a), so a leaked older key stops opening the
//! stored data as well as what is written from now on.
//!
//! A pack keeps its plaintext, its layout and its length ([`pack::reseal`]),
//! so every commit and index entry naming it stays true and no commit is
//! written. One pack is in memory at a time; a pack whose footer already
//! carries the current epoch's nonce tag is skipped, so a killed run resumes
//! where it stopped.

use crate::error::{Error, Result, StoreError};
use crate::format::pack::{self, FOOTER_LEN};
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::store::{self, layout};

/// What a re-encryption did.
#[derive(Debug, Clone, Default)]
pub struct ReencryptReport {
    /// Packs sealed again under the current epoch.
    pub packs_rewritten: u64,
    /// Packs already under it.
    pub packs_current: u64,
    /// Bytes of the packs rewritten.
    pub bytes_rewritten: u64,
    /// Packs that could not be rewritten (damaged), and why; left as they are.
    pub damaged: Vec<String>,
}

impl Repository {
    /// Seals every pack in the store not under the current epoch again under it.
    pub async fn reencrypt(&self, progress: &dyn Progress) -> Result<ReencryptReport> {
        self.refresh_keys().await?;
        // As for a rotation (§4a): a machine whose slot was removed may not
        // know the newest epoch, and must not seal under the one it knows.
        let slots = crate::unlock::read_slots(self.store()).await?;
        self.check_own_slot(&slots, &[], &Default::default())?;
        let mut report = ReencryptReport::default();
        let tag = {
            let state = self.chain_state();
            let (name, key) = state.chain.newest();
            if name.level == 0 {
                return Ok(report);
            }
            crate::crypto::epoch::nonce_tag(key)
        };
        let listed = self.store().list(layout::DATA_PREFIX).await?;
        let bytes: u64 = listed.iter().map(|m| m.size).sum();
        progress.start(Phase::Upload, Some(bytes), Some(listed.len() as u64));
        for meta in &listed {
            progress.advance(meta.size, 1);
            let Some(id) = layout::parse_pack(&meta.key) else {
                continue;
            };
            match self.reseal_pack(&meta.key, &id, meta.size, &tag).await {
                Ok(Some(bytes)) => {
                    report.packs_rewritten += 1;
                    report.bytes_rewritten += bytes;
                }
                Ok(None) => report.packs_current += 1,
                Err(Error::Corrupt { object, reason }) => {
                    report.damaged.push(format!("{object}: {reason}"));
                }
                Err(e) => return Err(e),
            }
        }
        progress.finish(Phase::Upload);
        Ok(report)
    }

    /// Seals pack `id` again unless its footer already carries `tag`; the
    /// bytes written, `None` if it was current (or is gone).
    async fn reseal_pack(
        &self,
        key: &str,
        id: &crate::format::id::PackId,
        size: u64,
        tag: &[u8; 8],
    ) -> Result<Option<u64>> {
        if size < FOOTER_LEN as u64 {
            return Err(Error::corrupt(key, "shorter than a footer"));
        }
        let footer = match self.store().get_range(key, size - FOOTER_LEN as u64..size).await {
            Ok(f) => f,
            // Deleted since the listing (garbage collection): nothing to do.
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if footer.first_chunk::<8>() == Some(tag) {
            return Ok(None);
        }
        let bytes = store::get_at_most(&**self.store(), key, size, "pack").await?;
        let resealed = pack::reseal(&self.keys(), id, &bytes)?;
        let len = resealed.len() as u64;
        self.store().put(key, bytes::Bytes::from(resealed)).await?;
        Ok(Some(len))
    }
}

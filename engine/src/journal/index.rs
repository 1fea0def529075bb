//! The chunk index (where each chunk lives) and the packs acknowledged by the store but not yet named by an own commit.

use super::Journal;
use super::insert_in_batches;
use super::rows::{Location, index_entries};
use super::rows::{dec, enc};
use crate::error::{Error, Result};
use crate::format::commit::PackRecord;
use crate::format::id::{ChunkId, PackId};

impl Journal {
    pub fn location(&self, chunk: &ChunkId) -> Result<Option<Location>> {
        self.index
            .get(chunk.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    /// End offsets of `chunks` laid end to end (a file's chunk boundaries), as far
    /// as the index knows their lengths.
    pub fn chunk_ends(&self, chunks: &[ChunkId]) -> Result<Vec<u64>> {
        let mut ends = Vec::with_capacity(chunks.len());
        let mut offset = 0u64;
        for chunk in chunks {
            let Some(loc) = self.location(chunk)? else {
                break;
            };
            offset += u64::from(loc.raw_len);
            ends.push(offset);
        }
        Ok(ends)
    }

    /// Every chunk location whose pack some commit names (for checkpoints).
    pub fn committed_locations(&self) -> Result<Vec<(ChunkId, Location)>> {
        let uncommitted: std::collections::HashSet<PackId> =
            self.uncommitted_packs()?.iter().map(|p| p.id).collect();
        let mut out = Vec::with_capacity(self.index.len());
        for item in self.index.iter() {
            let (k, v) = item?;
            let chunk = ChunkId(
                k.as_ref()
                    .try_into()
                    .map_err(|_| Error::Journal("bad chunk key in the index".into()))?,
            );
            let loc: Location = dec(&v)?;
            if !uncommitted.contains(&loc.pack) {
                out.push((chunk, loc));
            }
        }
        Ok(out)
    }

    /// Adds chunk locations (from a checkpoint).
    pub fn put_locations(&self, entries: &[(ChunkId, Location)]) -> Result<()> {
        let encoded = entries
            .iter()
            .map(|(chunk, loc)| Ok((chunk.as_bytes().to_vec(), enc(loc)?)))
            .collect::<Result<Vec<_>>>()?;
        insert_in_batches(&self.index, encoded)
    }

    pub fn has_chunk(&self, chunk: &ChunkId) -> Result<bool> {
        Ok(self.index.contains_key(chunk.as_bytes())?)
    }

    /// Records a pack the store acknowledged: its blobs become locatable (so they
    /// are never uploaded again) and the pack waits for the next own commit.
    ///
    /// The pack record first, then its blobs: sled recovers a prefix of its
    /// writes, so a located chunk always has its pack recorded. A crash between
    /// the two leaves a recorded pack some of whose chunks are not located: they
    /// are uploaded again, and the next commit names the pack, unused.
    pub fn record_uploaded_pack(&self, record: &PackRecord) -> Result<()> {
        self.packs.insert(record.id.as_bytes(), enc(record)?)?;
        insert_in_batches(&self.index, index_entries(record)?)
    }

    /// Records packs named by a commit (own or another device's).
    pub fn record_committed_packs(&self, records: &[PackRecord]) -> Result<()> {
        let mut entries = Vec::new();
        let mut done = sled::Batch::default();
        for r in records {
            entries.extend(index_entries(r)?);
            done.remove(r.id.as_bytes());
        }
        insert_in_batches(&self.index, entries)?;
        self.packs.apply_batch(done)?;
        Ok(())
    }

    /// Forgets an acknowledged, uncommitted pack that `prune` marked or deleted
    /// (DESIGN.md §11): its chunks located in it leave the index (so they are
    /// uploaded again when needed), then its record leaves `packs`.
    pub fn drop_uncommitted_pack(&self, record: &PackRecord) -> Result<()> {
        let mut batch = sled::Batch::default();
        for blob in &record.blobs {
            if self.location(&blob.chunk)?.is_some_and(|l| l.pack == record.id) {
                batch.remove(blob.chunk.as_bytes());
            }
        }
        self.index.apply_batch(batch)?;
        self.packs.remove(record.id.as_bytes())?;
        Ok(())
    }

    /// Acknowledged packs no commit names yet.
    pub fn uncommitted_packs(&self) -> Result<Vec<PackRecord>> {
        self.packs.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
    }
}

//! Packs: many sealed chunk blobs in one object, so uploads are few and large.
//!
//! ```text
//! blob 0 | blob 1 | ... | blob n-1 | padding | sealed trailer | sealed footer (64 B)
//! ```
//! Blobs are sealed with an AAD that binds only their chunk id, so a blob can be
//! moved between packs without re-encryption (how partial packs of parallel
//! workers are merged). The trailer lists every blob; the fixed-size footer gives
//! the section lengths. The padding is a keyed stream (so `check --read-data` can
//! verify every byte of a pack) that rounds the object up to a size bucket, hiding
//! exact content sizes. Byte layout: `DESIGN.md` §Pack.

use crate::chunk::codec::{self, CODEC_RAW, CODEC_ZSTD, Compressor};
use crate::crypto::{Keys, Kind, NONCE_LEN, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::format::commit::PackRecord;
use crate::format::id::{ChunkId, PackId};
use crate::store::layout;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the trailer and footer layouts.
pub const PACK_FORMAT: u8 = 1;
/// Plaintext bytes of the footer.
pub const FOOTER_PLAIN_LEN: usize = 24;
/// Sealed bytes of the footer, the last bytes of every pack.
pub const FOOTER_LEN: usize = FOOTER_PLAIN_LEN + SEAL_OVERHEAD;
/// Bytes of one trailer entry.
pub const TRAILER_ENTRY_LEN: usize = 32 + 4 + 4 + 4;
/// Default size at which a pack is closed and uploaded: 12 MiB, so that the
/// default upload window (8 packs alive) holds ~100 MiB.
pub const DEFAULT_PACK_TARGET: usize = 12 * 1024 * 1024;
/// What sealing adds to a chunk at most: codec byte and seal overhead (a blob is
/// never bigger than its chunk plus this; compression is used only when it shrinks).
pub const BLOB_OVERHEAD: usize = 1 + SEAL_OVERHEAD;

/// Where a chunk's sealed blob sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobEntry {
    pub chunk: ChunkId,
    /// Byte offset of the blob in the pack.
    pub offset: u32,
    /// Sealed length (nonce + codec byte + payload + tag).
    pub sealed_len: u32,
    /// Plaintext chunk length.
    pub raw_len: u32,
}

/// Accumulates sealed blobs for one pack.
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

/// A closed pack, ready to upload.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    pub record: PackRecord,
    pub bytes: Bytes,
}

/// The buffer behind a pack's bytes, for reuse, once nothing else holds them.
pub fn reclaim(bytes: Bytes) -> Option<Vec<u8>> {
    bytes.try_into_mut().ok().map(Vec::from)
}

impl PackBuilder {
    #[cfg(any(test, feature = "testing"))]
    pub fn with_capacity(bytes: usize) -> Self {
        Self::with_buffer(Vec::new(), bytes)
    }

    /// A builder writing into `buf` (a buffer of an earlier pack, reused), with room
    /// for at least `bytes`.
    pub fn with_buffer(mut buf: Vec<u8>, bytes: usize) -> Self {
        buf.clear();
        buf.reserve_exact(bytes);
        PackBuilder {
            buf,
            blobs: Vec::new(),
        }
    }

    /// Whether a chunk of `raw_len` bytes surely fits without taking the whole
    /// pack (blobs, sealed trailer, footer) past `target`. Padding then keeps it
    /// within `target` too when `target` is a multiple of its bucket (any whole
    /// number of MiB below 64 MiB is); [`max_finished_len`] bounds it in any case.
    pub fn fits(&self, raw_len: usize, target: usize) -> bool {
        self.fits_more(raw_len + BLOB_OVERHEAD, 1, target)
    }

    /// Whether the blobs of `other` fit with this pack's within `target` (as
    /// [`PackBuilder::fits`]).
    pub fn fits_builder(&self, other: &PackBuilder, target: usize) -> bool {
        self.fits_more(other.buf.len(), other.blobs.len(), target)
    }

    fn fits_more(&self, bytes: usize, blobs: usize, target: usize) -> bool {
        self.buf.len() + bytes + trailer_and_footer_len(self.blobs.len() + blobs) <= target
    }

    /// Compresses (when it helps) and seals `data` straight into the pack buffer.
    pub fn add(
        &mut self,
        keys: &Keys,
        id: ChunkId,
        data: &[u8],
        zstd: &mut Compressor,
    ) -> BlobEntry {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; NONCE_LEN]);
        match zstd.compress(data) {
            Some(z) => {
                self.buf.push(CODEC_ZSTD);
                self.buf.extend_from_slice(z);
            }
            None => {
                self.buf.push(CODEC_RAW);
                self.buf.extend_from_slice(data);
            }
        }
        keys.seal_tail_in_place(Kind::Chunk, id.as_bytes(), &mut self.buf, start);
        let entry = BlobEntry {
            chunk: id,
            offset: to_u32(start),
            sealed_len: to_u32(self.buf.len() - start),
            raw_len: to_u32(data.len()),
        };
        self.blobs.push(entry);
        entry
    }

    #[cfg(any(test, feature = "testing"))]
    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Moves every blob of `other` into this pack (blobs are position-independent).
    pub fn append(&mut self, other: PackBuilder) {
        let base = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.blobs.extend(other.blobs.into_iter().map(|mut b| {
            b.offset = to_u32(base + b.offset as usize);
            b
        }));
    }

    /// Appends padding, trailer and footer.
    pub fn finish(mut self, keys: &Keys, id: PackId) -> FinishedPack {
        let blobs_len = self.buf.len();
        let mut trailer = Vec::with_capacity(5 + self.blobs.len() * TRAILER_ENTRY_LEN);
        trailer.push(PACK_FORMAT);
        trailer.extend_from_slice(&to_u32(self.blobs.len()).to_le_bytes());
        for b in &self.blobs {
            trailer.extend_from_slice(b.chunk.as_bytes());
            trailer.extend_from_slice(&b.offset.to_le_bytes());
            trailer.extend_from_slice(&b.sealed_len.to_le_bytes());
            trailer.extend_from_slice(&b.raw_len.to_le_bytes());
        }
        let trailer = keys.seal(Kind::PackTrailer, id.as_bytes(), &trailer);
        let unpadded = (blobs_len + trailer.len() + FOOTER_LEN) as u64;
        let padding = usize::try_from(padded_len(unpadded) - unpadded).unwrap_or(0);
        self.buf.resize(blobs_len + padding, 0);
        keys.padding(id.as_bytes(), &mut self.buf[blobs_len..]);
        self.buf.extend_from_slice(&trailer);
        let footer = Footer {
            blob_count: to_u32(self.blobs.len()),
            blobs_len: to_u32(blobs_len),
            padding_len: to_u32(padding),
            trailer_len: to_u32(trailer.len()),
        };
        self.buf
            .extend_from_slice(&keys.seal(Kind::PackFooter, id.as_bytes(), &footer.encode()));
        FinishedPack {
            record: PackRecord {
                id,
                size: to_u32(self.buf.len()),
                blobs: self.blobs,
            },
            bytes: Bytes::from(self.buf),
        }
    }
}

/// The most bytes a finished pack takes, padding included, when packs close before
/// `target` or hold one chunk of at most `max_chunk` bytes alone: what a pack
/// buffer must hold never to reallocate.
pub fn max_finished_len(target: usize, max_chunk: usize) -> usize {
    let lone = max_chunk + BLOB_OVERHEAD + trailer_and_footer_len(1);
    usize::try_from(padded_len(target.max(lone) as u64)).unwrap_or(usize::MAX)
}

/// Bytes of the sealed trailer listing `blobs` blobs plus the footer.
fn trailer_and_footer_len(blobs: usize) -> usize {
    5 + blobs * TRAILER_ENTRY_LEN + SEAL_OVERHEAD + FOOTER_LEN
}

/// Packs are far below 4 GiB (target + one max chunk); offsets are u32 on disk.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("pack offsets fit in u32")
}

/// The padded object size for `n` bytes of content: rounded up to 4 KiB, or to
/// 1/32 of the size's power of two for larger packs (≤ 3.2 % overhead), so an
/// object's size reveals only a coarse bucket.
pub fn padded_len(n: u64) -> u64 {
    let unit = if n <= 4096 * 32 {
        4096
    } else {
        1u64 << (63 - n.leading_zeros() - 5)
    };
    n.div_ceil(unit) * unit
}

/// The footer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub blob_count: u32,
    pub blobs_len: u32,
    pub padding_len: u32,
    pub trailer_len: u32,
}

impl Footer {
    fn encode(&self) -> [u8; FOOTER_PLAIN_LEN] {
        let mut out = [0u8; FOOTER_PLAIN_LEN];
        out[0] = PACK_FORMAT;
        out[4..8].copy_from_slice(&self.blob_count.to_le_bytes());
        out[8..12].copy_from_slice(&self.blobs_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.padding_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.trailer_len.to_le_bytes());
        out
    }

    /// Opens the last [`FOOTER_LEN`] bytes of pack `id`.
    pub fn open(keys: &Keys, id: &PackId, sealed: &[u8]) -> Result<Footer> {
        let object = layout::pack(id);
        let plain = keys
            .open(Kind::PackFooter, id.as_bytes(), sealed)
            .map_err(|e| Error::corrupt(&object, format!("footer: {e}")))?;
        if plain.len() != FOOTER_PLAIN_LEN || plain[0] != PACK_FORMAT {
            return Err(Error::corrupt(&object, "footer of unknown format"));
        }
        let word =
            |i: usize| u32::from_le_bytes([plain[i], plain[i + 1], plain[i + 2], plain[i + 3]]);
        Ok(Footer {
            blob_count: word(4),
            blobs_len: word(8),
            padding_len: word(12),
            trailer_len: word(16),
        })
    }

    /// Offset of the sealed trailer.
    pub fn trailer_offset(&self) -> u64 {
        u64::from(self.blobs_len) + u64::from(self.padding_len)
    }

    /// The pack size this footer describes.
    pub fn total_len(&self) -> u64 {
        self.trailer_offset() + u64::from(self.trailer_len) + FOOTER_LEN as u64
    }
}

/// Opens the sealed trailer of pack `id`.
pub fn open_trailer(
    keys: &Keys,
    id: &PackId,
    footer: &Footer,
    sealed: &[u8],
) -> Result<Vec<BlobEntry>> {
    let object = layout::pack(id);
    let plain = keys
        .open(Kind::PackTrailer, id.as_bytes(), sealed)
        .map_err(|e| Error::corrupt(&object, format!("trailer: {e}")))?;
    let count = footer.blob_count as usize;
    if plain.len() != 5 + count * TRAILER_ENTRY_LEN || plain[0] != PACK_FORMAT {
        return Err(Error::corrupt(&object, "trailer length or format mismatch"));
    }
    if u32::from_le_bytes([plain[1], plain[2], plain[3], plain[4]]) != footer.blob_count {
        return Err(Error::corrupt(
            &object,
            "trailer and footer disagree on the blob count",
        ));
    }
    let blobs = plain[5..]
        .chunks_exact(TRAILER_ENTRY_LEN)
        .map(|e| {
            let word = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            let mut chunk = [0u8; 32];
            chunk.copy_from_slice(&e[..32]);
            BlobEntry {
                chunk: ChunkId(chunk),
                offset: word(32),
                sealed_len: word(36),
                raw_len: word(40),
            }
        })
        .collect();
    Ok(blobs)
}

/// Opens one sealed blob inside `sealed` (bytes the caller owns: they are
/// decrypted where they lie), decompresses it and checks that its keyed hash is
/// its id. A raw blob's plaintext is returned as a slice of `sealed`.
pub fn open_blob_in_place<'a>(
    keys: &Keys,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &'a mut [u8],
) -> Result<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    let fail =
        |why: String| Error::corrupt(layout::pack(pack), format!("chunk {}: {why}", entry.chunk));
    let plain = keys
        .open_in_place(Kind::Chunk, entry.chunk.as_bytes(), sealed)
        .map_err(|e| fail(e.to_string()))?;
    let raw_len = entry.raw_len as usize;
    let data: Cow<'a, [u8]> = match plain.split_first() {
        Some((&CODEC_RAW, raw)) => Cow::Borrowed(raw),
        Some((&CODEC_ZSTD, z)) => Cow::Owned(codec::decompress(z, raw_len).map_err(fail)?),
        _ => return Err(fail("unknown codec".into())),
    };
    if data.len() != raw_len {
        return Err(fail(format!("{} bytes, index says {raw_len}", data.len())));
    }
    if keys.chunk_id(&data) != entry.chunk {
        return Err(fail("content does not match its id".into()));
    }
    Ok(data)
}

/// Verifies every byte of a whole pack: footer, size, padding stream, trailer,
/// contiguous blobs, and every blob's content. Returns its blobs.
pub fn verify(keys: &Keys, id: &PackId, bytes: &[u8]) -> Result<Vec<BlobEntry>> {
    let object = layout::pack(id);
    if bytes.len() < FOOTER_LEN {
        return Err(Error::corrupt(&object, "shorter than a footer"));
    }
    let footer = Footer::open(keys, id, &bytes[bytes.len() - FOOTER_LEN..])?;
    if footer.total_len() != bytes.len() as u64 {
        return Err(Error::corrupt(
            &object,
            format!(
                "size {} but footer describes {}",
                bytes.len(),
                footer.total_len()
            ),
        ));
    }
    let t0 = footer.trailer_offset() as usize;
    let blobs = open_trailer(
        keys,
        id,
        &footer,
        &bytes[t0..t0 + footer.trailer_len as usize],
    )?;
    let (b_end, pad) = (footer.blobs_len as usize, footer.padding_len as usize);
    let mut expected_pad = vec![0u8; pad];
    keys.padding(id.as_bytes(), &mut expected_pad);
    if bytes[b_end..b_end + pad] != expected_pad[..] {
        return Err(Error::corrupt(&object, "padding altered"));
    }
    let mut next = 0usize;
    let mut scratch = Vec::new();
    for b in &blobs {
        let (start, len) = (b.offset as usize, b.sealed_len as usize);
        if start != next || start + len > b_end {
            return Err(Error::corrupt(
                &object,
                "blobs do not tile the data section",
            ));
        }
        scratch.clear();
        scratch.extend_from_slice(&bytes[start..start + len]);
        open_blob_in_place(keys, id, b, &mut scratch)?;
        next = start + len;
    }
    if next != b_end {
        return Err(Error::corrupt(
            &object,
            "unlisted bytes in the data section",
        ));
    }
    Ok(blobs)
}

/// The same pack sealed again under `keys`' current epoch (`DESIGN.md` §4a,
/// `--reencrypt`): every blob, the trailer and the footer keep their plaintext,
/// offsets and lengths (a seal adds a fixed overhead), the padding is the
/// same, so every record naming the pack stays true. The pack is verified
/// before and after.
pub fn reseal(keys: &Keys, id: &PackId, bytes: &[u8]) -> Result<Vec<u8>> {
    let blobs = verify(keys, id, bytes)?;
    let footer = Footer::open(keys, id, &bytes[bytes.len() - FOOTER_LEN..])?;
    let mut out = bytes.to_vec();
    for b in &blobs {
        let range = b.offset as usize..(b.offset + b.sealed_len) as usize;
        reseal_region(keys, Kind::Chunk, b.chunk.as_bytes(), &mut out[range], id)?;
    }
    let t0 = footer.trailer_offset() as usize;
    let trailer = t0..t0 + footer.trailer_len as usize;
    reseal_region(keys, Kind::PackTrailer, id.as_bytes(), &mut out[trailer], id)?;
    let end = out.len();
    reseal_region(keys, Kind::PackFooter, id.as_bytes(), &mut out[end - FOOTER_LEN..], id)?;
    verify(keys, id, &out)?;
    Ok(out)
}

/// Opens the sealed object in `region` and seals its plaintext again, in place.
fn reseal_region(
    keys: &Keys,
    kind: Kind,
    identity: &[u8],
    region: &mut [u8],
    id: &PackId,
) -> Result<()> {
    let mut copy = region.to_vec();
    let plain = keys
        .open_in_place(kind, identity, &mut copy)
        .map_err(|e| Error::corrupt(layout::pack(id), e.to_string()))?
        .to_vec();
    region.copy_from_slice(&keys.seal(kind, identity, &plain));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn build(keys: &Keys, chunks: &[&[u8]]) -> (PackId, FinishedPack) {
        let mut b = PackBuilder::default();
        let mut z = Compressor::new();
        for c in chunks {
            b.add(keys, keys.chunk_id(c), c, &mut z);
        }
        let id = PackId::random();
        (id, b.finish(keys, id))
    }

    #[test]
    fn build_verify_and_read_back() {
        let keys = Keys::derive(&MasterKey::generate());
        let text = b"compressible ".repeat(1000);
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        let (id, pack) = build(&keys, &[&text, &noise, b""]);
        assert_eq!(pack.bytes.len() % 4096, 0, "padded to a 4 KiB bucket");
        let blobs = verify(&keys, &id, &pack.bytes).unwrap();
        assert_eq!(blobs, pack.record.blobs);
        assert!(blobs[0].sealed_len < 2000, "text was compressed");
        let b = &blobs[1];
        let mut sealed = pack.bytes[b.offset as usize..(b.offset + b.sealed_len) as usize].to_vec();
        assert_eq!(
            *open_blob_in_place(&keys, &id, b, &mut sealed).unwrap(),
            noise[..]
        );
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let keys = Keys::derive(&MasterKey::generate());
        let (id, pack) = build(&keys, &[b"hello world, hello world", &[7u8; 3000]]);
        let len = pack.bytes.len();
        for pos in [0, 30, 200, len / 2, len - FOOTER_LEN - 5, len - 1] {
            let mut bad = pack.bytes.to_vec();
            bad[pos] ^= 0x01;
            assert!(
                verify(&keys, &id, &bad).is_err(),
                "flip at {pos} of {len} undetected"
            );
        }
        assert!(
            verify(&keys, &PackId::random(), &pack.bytes).is_err(),
            "pack under another id"
        );
    }

    #[test]
    fn appended_builders_keep_blobs_readable() {
        let keys = Keys::derive(&MasterKey::generate());
        let mut z = Compressor::new();
        let mut a = PackBuilder::default();
        a.add(&keys, keys.chunk_id(b"one"), b"one", &mut z);
        let mut b = PackBuilder::default();
        b.add(&keys, keys.chunk_id(b"two"), b"two", &mut z);
        a.append(b);
        let id = PackId::random();
        let pack = a.finish(&keys, id);
        let blobs = verify(&keys, &id, &pack.bytes).unwrap();
        assert_eq!(blobs.len(), 2);
    }

    #[test]
    fn padding_buckets() {
        assert_eq!(padded_len(1), 4096);
        assert_eq!(padded_len(4096), 4096);
        assert_eq!(padded_len(4097), 8192);
        let n = 16 * 1024 * 1024 + 1;
        let p = padded_len(n);
        assert!(p >= n && p - n < n / 32 + 1);
        assert_eq!(p % (512 * 1024), 0);
    }

    #[test]
    fn pack_buffers_hold_any_finished_pack() {
        const MIB: usize = 1024 * 1024;
        let max_chunk = 2 * MIB;
        let lone = max_chunk + BLOB_OVERHEAD + trailer_and_footer_len(1);
        // Whole-MiB targets below 64 MiB are multiples of their padding unit, so
        // the buffer is the target itself; 1000 MiB is not, and 1 MiB is below
        // one lone max chunk.
        assert_eq!(max_finished_len(12 * MIB, max_chunk), 12 * MIB);
        for target in [MIB, 12 * MIB, 16 * MIB, 63 * MIB, 1000 * MIB] {
            let cap = max_finished_len(target, max_chunk);
            for content in [target - 1, target, lone, target.max(lone)] {
                assert!(
                    padded_len(content as u64) as usize <= cap,
                    "{target} {content}"
                );
            }
        }
        assert!(max_finished_len(1000 * MIB, max_chunk) > 1000 * MIB);
    }
}

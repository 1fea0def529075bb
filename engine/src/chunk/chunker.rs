//! Content-defined chunking: FastCDC 2020 with a gear table seeded from the key.
//!
//! [`Chunker::chunks`] streams any reader into chunks without holding more than one
//! read block (8 MiB or two max chunks, whichever is larger; the file size when
//! smaller) plus the chunks still in use downstream. Chunks are [`Bytes`] slices of
//! the read block, so cutting copies nothing; only the tail left over at a block
//! boundary (< max chunk size) is copied into the next block.

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{self, Read};

/// Chunk-size parameters, stored in the repository `config` so that every device cuts
/// identically (and so dedups across devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// FastCDC normalization level, 0–3.
    pub normalization: u8,
}

impl ChunkerParams {
    /// min 128 KiB, avg 512 KiB, max 2 MiB, normalization level 2 (sizes cluster near
    /// the average, which bounds what a small edit re-uploads: a 1 MiB overwrite plus
    /// a 100-byte insert re-sends ≤ 3.8 MiB over 299 keys, against 6.4 MiB with 1 MiB
    /// chunks — `examples/edit_cost.rs`).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 128 * 1024,
        avg: 512 * 1024,
        max: 2 * 1024 * 1024,
        normalization: 2,
    };

    /// Checks the ranges FastCDC 2020 supports.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && self.normalization <= 3
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!("unsupported chunker parameters {self:?}"))
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// A configured chunker: parameters, masks and the (seeded) gear tables.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

/// Upper bound of one read block.
const READ_BLOCK: usize = 8 * 1024 * 1024;

impl Chunker {
    /// `seed == 0` is the unseeded reference table (used by the official vectors).
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg as usize, params.level());
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            params,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Length of the first chunk of `data` (all of it if it is shorter than `min`).
    /// `data` must hold at least `max` bytes unless it is the end of the stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = self.cut_with_hash(data);
        len
    }

    /// Like [`Chunker::cut`], also returning the gear hash at the cut point.
    pub fn cut_with_hash(&self, data: &[u8]) -> (u64, usize) {
        cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        )
    }

    /// Streams `reader` into chunks. `size_hint` (e.g. the file size) keeps the read
    /// buffer small for small inputs.
    pub fn chunks<R: Read>(&self, reader: R, size_hint: Option<u64>) -> ChunkStream<'_, R> {
        self.chunks_resyncing(reader, size_hint, Vec::new())
    }

    /// Like [`Chunker::chunks`], but also cuts at the boundaries of the previous
    /// version of the same file (`previous`: end offsets of its chunks, ascending)
    /// when no content-defined cut comes first.
    ///
    /// Why: with normalized chunking, the cut mask depends on the distance from the
    /// chunk start, so after an edit the new chain of cuts can step over the old
    /// boundaries for several chunks before it falls back in step, re-uploading
    /// unchanged data. Taking the first old boundary at least `min` bytes ahead puts
    /// the chain back in step right after the edited region; once on an old boundary
    /// with unchanged content after it, every later chunk is the old one again. Cuts
    /// stay content-defined otherwise, and every chunk still respects `min`/`max`.
    ///
    /// Old boundaries are taken only where the content still passes a cut mask
    /// ([`Chunker::is_boundary`]), so a wrong guess costs nothing. Insertions and
    /// deletions move the old boundaries: [`Resync`] follows the shift, learned from
    /// a cut that lands near an old boundary and confirmed by one that lands on one.
    /// Measured with `engine/examples/edit_cost.rs` (40 MiB random file, 299 keys);
    /// see `engine/DESIGN.md` §2 for the numbers.
    pub fn chunks_resyncing<R: Read>(
        &self,
        reader: R,
        size_hint: Option<u64>,
        previous: Vec<u64>,
    ) -> ChunkStream<'_, R> {
        let block = size_hint
            .map(|s| usize::try_from(s.saturating_add(1)).unwrap_or(READ_BLOCK))
            .unwrap_or(READ_BLOCK)
            .clamp(4096, READ_BLOCK.max(self.params.max as usize * 2));
        ChunkStream {
            chunker: self,
            reader,
            buf: BytesMut::new(),
            block,
            eof: false,
            offset: 0,
            resync: Resync::new(previous),
        }
    }

    /// The length of the next chunk of `data` (which starts at stream offset
    /// `offset`), cutting at the earliest of the `candidates` (absolute offsets)
    /// that lies in `[min, max)` and where the content still looks like a boundary,
    /// if no content-defined cut comes first.
    fn cut_before(&self, data: &[u8], offset: u64, candidates: &[u64]) -> usize {
        let (min, max) = (u64::from(self.params.min), u64::from(self.params.max));
        let limit = candidates
            .iter()
            .filter(|&&b| b >= offset + min && b < offset + max)
            .filter_map(|&b| usize::try_from(b - offset).ok())
            .filter(|&at| at < data.len() && self.is_boundary(data, at))
            .min();
        // On a prefix shorter than `avg`, FastCDC narrows its small-mask region to
        // the prefix, which is exactly the region the full input would use before
        // the same point: the content-defined cuts before `limit` are unchanged.
        self.cut(&data[..limit.unwrap_or(data.len())])
    }

    /// Whether the gear hash of the 64 bytes ending at `data[at]` passes either
    /// mask, as it does at every content-defined cut (but those within 64 bytes of
    /// `min`, whose hash starts there). An old boundary moved by an
    /// insertion or deletion does not (but for a 2^-18 chance), so stale offsets
    /// are ignored and chunking stays content-defined there.
    fn is_boundary(&self, data: &[u8], at: usize) -> bool {
        let hash = data[at.saturating_sub(63)..=at].iter().fold(0u64, |h, &b| {
            (h << 1).wrapping_add(self.gear[usize::from(b)])
        });
        hash & self.mask_s == 0 || hash & self.mask_l == 0
    }
}

/// Iterator of chunks of a reader; see [`Chunker::chunks`].
#[derive(Debug)]
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: BytesMut,
    block: usize,
    eof: bool,
    /// Stream offset of `buf[0]`.
    offset: u64,
    resync: Resync,
}

/// The previous version's chunk ends, and where they are now.
///
/// `shift` (new offset − old offset) is confirmed whenever a cut lands exactly on
/// an old end moved by it; `guess` is the shift that would put the last cut on the
/// nearest old end (within `min / 2`), tried as well until one is confirmed. The
/// old ends moved by either are the candidates for the next cut.
#[derive(Debug, Default)]
struct Resync {
    ends: Vec<u64>,
    shift: i64,
    guess: Option<i64>,
}

impl Resync {
    fn new(ends: Vec<u64>) -> Self {
        Resync {
            ends,
            ..Resync::default()
        }
    }

    /// For each shift, the first old end at or after `from` once moved by it.
    fn candidates(&self, from: u64) -> Vec<u64> {
        let mut out = Vec::with_capacity(2);
        for shift in std::iter::once(self.shift).chain(self.guess) {
            let old_from = i128::from(from) - i128::from(shift);
            let i = self.ends.partition_point(|&e| i128::from(e) < old_from);
            if let Some(&end) = self.ends.get(i)
                && let Ok(moved) = u64::try_from(i128::from(end) + i128::from(shift))
            {
                out.push(moved);
            }
        }
        out
    }

    /// Learns from a cut at `cut` (an absolute end offset).
    fn observe(&mut self, cut: u64, min: u64) {
        if self.ends.is_empty() {
            return;
        }
        for shift in std::iter::once(self.shift).chain(self.guess) {
            let old = i128::from(cut) - i128::from(shift);
            if u64::try_from(old).is_ok_and(|o| self.ends.binary_search(&o).is_ok()) {
                self.shift = shift;
                self.guess = None;
                return;
            }
        }
        let old = i128::from(cut) - i128::from(self.shift);
        let i = self.ends.partition_point(|&e| i128::from(e) < old);
        let nearest = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| self.ends.get(j))
            .min_by_key(|&&e| (i128::from(e) - old).abs());
        self.guess = nearest
            .filter(|&&e| (i128::from(e) - old).abs() <= i128::from(min / 2))
            .and_then(|&e| i64::try_from(i128::from(cut) - i128::from(e)).ok());
    }
}

impl<R: Read> ChunkStream<'_, R> {
    /// Reads until the buffer holds at least `max` bytes or the reader is exhausted.
    /// The spare room of a block is zeroed once and then filled completely, so the
    /// cost does not depend on how many bytes each `read` call returns.
    fn fill(&mut self) -> io::Result<()> {
        let want = self.chunker.params.max as usize;
        while !self.eof && self.buf.len() < want {
            if self.buf.capacity() == self.buf.len() {
                // A fresh block: the old one stays alive only through chunks still in
                // use downstream; the leftover tail (< max) is copied once.
                let mut next = BytesMut::with_capacity(self.block.max(self.buf.len() * 2));
                next.extend_from_slice(&self.buf);
                self.buf = next;
            }
            let mut filled = self.buf.len();
            let cap = self.buf.capacity();
            self.buf.resize(cap, 0);
            while !self.eof && filled < cap {
                match self.reader.read(&mut self.buf[filled..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(filled);
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(filled);
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.buf.is_empty() {
            return None;
        }
        let min = u64::from(self.chunker.params.min);
        let candidates = self.resync.candidates(self.offset + min);
        let len = self.chunker.cut_before(&self.buf, self.offset, &candidates);
        self.offset += len as u64;
        self.resync.observe(self.offset, min);
        Some(Ok(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min: 256,
            avg: 1024,
            max: 4096,
            normalization: 2,
        }
    }

    /// A reader that returns at most `step` bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn pseudo_random(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn stream_matches_whole_buffer_cuts_regardless_of_read_sizes() {
        let data = pseudo_random(200_000);
        let c = Chunker::new(small(), 42);
        let mut expected = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = c.cut(rest);
            expected.push(n);
            rest = &rest[n..];
        }
        for step in [1usize, 7, 4096, 1 << 20] {
            let got: Vec<usize> = c
                .chunks(Trickle(&data, step), None)
                .map(|r| r.unwrap().len())
                .collect();
            assert_eq!(got, expected, "read step {step}");
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(100_000);
        let a: Vec<usize> = Chunker::new(small(), 1)
            .chunks(&data[..], None)
            .map(|r| r.unwrap().len())
            .collect();
        let b: Vec<usize> = Chunker::new(small(), 2)
            .chunks(&data[..], None)
            .map(|r| r.unwrap().len())
            .collect();
        assert_ne!(a, b);
    }

    fn lengths(c: &Chunker, data: &[u8], previous: Vec<u64>) -> Vec<usize> {
        c.chunks_resyncing(Trickle(data, 3000), None, previous)
            .map(|r| r.unwrap().len())
            .collect()
    }

    fn ends(lengths: &[usize]) -> Vec<u64> {
        lengths
            .iter()
            .scan(0u64, |o, &n| {
                *o += n as u64;
                Some(*o)
            })
            .collect()
    }

    /// Bytes of the chunks of `new_data` (cut at `new` lengths) that are not chunks
    /// of `old_data`, and the range they span.
    fn fresh(old_data: &[u8], old: &[usize], new_data: &[u8], new: &[usize]) -> (u64, u64, u64) {
        let pieces = |data: &[u8], lens: &[usize]| -> Vec<(u64, Vec<u8>)> {
            ends(lens)
                .into_iter()
                .zip(lens)
                .map(|(end, &n)| (end, data[end as usize - n..end as usize].to_vec()))
                .collect()
        };
        let known: std::collections::HashSet<Vec<u8>> =
            pieces(old_data, old).into_iter().map(|(_, d)| d).collect();
        let (mut bytes, mut first, mut last) = (0, u64::MAX, 0);
        for (end, d) in pieces(new_data, new) {
            if !known.contains(&d) {
                bytes += d.len() as u64;
                first = first.min(end - d.len() as u64);
                last = end;
            }
        }
        (bytes, first, last)
    }

    #[test]
    fn resyncing_on_unchanged_data_reproduces_the_previous_chunks() {
        let data = pseudo_random(300_000);
        let c = Chunker::new(small(), 5);
        let plain = lengths(&c, &data, Vec::new());
        assert_eq!(lengths(&c, &data, ends(&plain)), plain);
    }

    #[test]
    fn after_an_overwrite_resyncing_re_sends_one_contiguous_range_and_less() {
        let (at, len) = (100_000usize, 1000usize);
        let old_data = pseudo_random(200_000);
        let mut new_data = old_data.clone();
        new_data[at..at + len].iter_mut().for_each(|b| *b ^= 0xa5);
        let (mut with, mut without) = (0, 0);
        for seed in 1..60u64 {
            let c = Chunker::new(small(), seed);
            let old = lengths(&c, &old_data, Vec::new());
            let old_ends = ends(&old);
            let resynced = lengths(&c, &new_data, old_ends.clone());
            let (bytes, first, last) = fresh(&old_data, &old, &new_data, &resynced);
            // Only the chunks around the edit are new, and they end on an old boundary.
            let before = old_ends.iter().rev().find(|&&e| e <= at as u64).unwrap();
            assert_eq!(first, *before, "seed {seed}");
            assert!(
                old_ends.contains(&last) && last >= (at + len) as u64,
                "seed {seed}"
            );
            assert_eq!(bytes, last - first, "seed {seed}: one range");
            with += bytes;
            without += fresh(
                &old_data,
                &old,
                &new_data,
                &lengths(&c, &new_data, Vec::new()),
            )
            .0;
        }
        assert!(
            with < without,
            "resyncing sent {with} bytes, plain chunking {without}"
        );
    }

    #[test]
    fn after_an_insertion_resyncing_follows_the_shift() {
        let v1 = pseudo_random(200_000);
        let mut v2 = v1.clone();
        v2[120_000..121_000].iter_mut().for_each(|b| *b ^= 0x5a);
        let mut v3 = v2.clone();
        v3.splice(50_000..50_000, [7u8; 37]);
        for seed in 1..60u64 {
            let c = Chunker::new(small(), seed);
            let l1 = lengths(&c, &v1, Vec::new());
            let l2 = lengths(&c, &v2, ends(&l1));
            let l3 = lengths(&c, &v3, ends(&l2));
            let (bytes, first, last) = fresh(&v2, &l2, &v3, &l3);
            assert!(
                first <= 50_000 && last >= 50_037,
                "seed {seed}: [{first}, {last})"
            );
            assert_eq!(bytes, last - first, "seed {seed}: one range");
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let c = Chunker::new(small(), 1);
        assert_eq!(c.chunks(&b""[..], Some(0)).count(), 0);
    }

    #[test]
    fn default_params_are_valid_and_bad_ones_rejected() {
        assert!(ChunkerParams::DEFAULT.validate().is_ok());
        let bad = ChunkerParams {
            min: 10,
            ..ChunkerParams::DEFAULT
        };
        assert!(bad.validate().is_err());
    }
}

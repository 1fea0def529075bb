//! Content-defined chunking: FastCDC 2020 with a gear table seeded from the key.
//!
//! [`Chunker::chunks`] streams any reader into chunks without holding more than one
//! read block (16 MiB, or the file size when smaller) plus the chunks still in use
//! downstream. Chunks are [`Bytes`] slices of the read block, so cutting copies
//! nothing; only the tail left over at a block boundary (< max chunk size) is copied
//! into the next block.

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
    /// min 256 KiB, avg 1 MiB, max 4 MiB, normalization level 2 (sizes cluster near
    /// the average, which bounds what a small edit re-uploads).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
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
const READ_BLOCK: usize = 16 * 1024 * 1024;

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
        }
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
        let len = self.chunker.cut(&self.buf);
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

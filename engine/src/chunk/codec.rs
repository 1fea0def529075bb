//! Chunk compression: zstd, kept only when it shrinks the chunk.
//!
//! Large chunks are probed first: a 32 KiB sample from the middle is compressed, and
//! if it does not shrink by at least 3 % the chunk is stored as is. Incompressible
//! data (media, archives, encrypted files) then costs one small probe instead of a
//! full compression pass.

/// Stored as is.
pub const CODEC_RAW: u8 = 0;
/// zstd frame.
pub const CODEC_ZSTD: u8 = 1;

const LEVEL: i32 = 3;
const PROBE_ABOVE: usize = 128 * 1024;
const PROBE_LEN: usize = 32 * 1024;

/// A reusable compressor (one per pipeline worker).
pub struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

impl Compressor {
    pub fn new() -> Self {
        Compressor {
            zstd: zstd::bulk::Compressor::new(LEVEL).expect("zstd level 3 is valid"),
            out: Vec::new(),
        }
    }

    /// The compressed form of `data` if it is smaller, else `None`.
    pub fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        if data.len() < 64 {
            return None;
        }
        if data.len() > PROBE_ABOVE {
            let mid = data.len() / 2 - PROBE_LEN / 2;
            let sample = &data[mid..mid + PROBE_LEN];
            self.out.clear();
            self.out.reserve(PROBE_LEN);
            match self.zstd.compress_to_buffer(sample, &mut self.out) {
                Ok(n) if n * 100 <= PROBE_LEN * 97 => {}
                _ => return None,
            }
        }
        self.out.clear();
        self.out.reserve(data.len());
        match self.zstd.compress_to_buffer(data, &mut self.out) {
            Ok(n) if n < data.len() => Some(&self.out[..n]),
            _ => None,
        }
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

/// Decompresses a blob payload whose plaintext is exactly `raw_len` bytes.
pub fn decompress(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let out = zstd::bulk::decompress(payload, raw_len).map_err(|e| e.to_string())?;
    if out.len() == raw_len {
        Ok(out)
    } else {
        Err(format!(
            "decompressed to {} bytes, expected {raw_len}",
            out.len()
        ))
    }
}

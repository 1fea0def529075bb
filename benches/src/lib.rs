//! Shared data generators for coffer's benchmarks (`benches/engine.rs`).

use std::io::Write;
use std::path::Path;

/// `len` pseudo-random (incompressible) bytes, reproducible from `seed`.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for word in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    out
}

/// Writes `files` files of `size` incompressible bytes each under `dir`.
pub fn write_incompressible_tree(dir: &Path, files: usize, size: usize) -> std::io::Result<()> {
    for i in 0..files {
        let path = dir.join(format!("data-{i}.bin"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let block = 8 << 20;
        let mut left = size;
        let mut seed = i as u64 * 1000;
        while left > 0 {
            let n = left.min(block);
            f.write_all(&incompressible(n, seed))?;
            left -= n;
            seed += 1;
        }
        f.flush()?;
    }
    Ok(())
}

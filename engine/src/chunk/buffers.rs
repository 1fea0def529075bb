//! Reuse of large byte buffers (the restore's sealed blobs).
//!
//! A restore receives sealed blobs (≤ 4 MiB by default), decrypts them in place
//! and drops them: fresh buffers each time cost a page fault per 4 KiB and make the
//! allocator return and re-map memory (measured: ~190k faults and ~0.5 CPU-s per
//! GiB restored). The restore fills buffers taken from [`GLOBAL`] and gives them
//! back once written out. At most [`KEEP`] buffers are kept: two per range the
//! restore has in flight.

use bytes::BytesMut;
use std::sync::Mutex;

/// Buffers kept for reuse (the restore's fetch window: two blobs per range).
pub const KEEP: usize = 8;
/// Smaller requests are served by the allocator directly.
pub const MIN_POOLED: usize = 1 << 20;
/// Pooled capacities are multiples of this, so that one buffer serves ranges of
/// slightly different sizes.
const GRAIN: usize = 4 << 20;

/// A bounded pool of large buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    kept: Mutex<Vec<BytesMut>>,
}

/// The process-wide pool (the restore's).
pub static GLOBAL: BufferPool = BufferPool::new();

impl BufferPool {
    pub const fn new() -> Self {
        BufferPool {
            kept: Mutex::new(Vec::new()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<BytesMut>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for `len` bytes: a kept one when one is big
    /// enough; otherwise a new one (and a kept one too small is let go).
    pub fn take(&self, len: usize) -> BytesMut {
        if len < MIN_POOLED {
            return BytesMut::with_capacity(len);
        }
        let mut kept = self.kept();
        if let Some(i) = kept.iter().position(|b| b.capacity() >= len) {
            let mut b = kept.swap_remove(i);
            b.clear();
            return b;
        }
        drop(kept.pop());
        drop(kept);
        BytesMut::with_capacity(len.div_ceil(GRAIN).saturating_mul(GRAIN))
    }

    /// Keeps `buf` for a later [`BufferPool::take`] (unless it is small or enough
    /// are kept).
    pub fn give(&self, mut buf: BytesMut) {
        if buf.capacity() < MIN_POOLED {
            return;
        }
        buf.clear();
        let mut kept = self.kept();
        if kept.len() < KEEP {
            kept.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_empty() {
        let pool = BufferPool::new();
        let mut b = pool.take(3 << 20);
        b.extend_from_slice(&[7u8; 100]);
        let ptr = b.as_ptr();
        pool.give(b);
        let again = pool.take(2 << 20);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
        // Nothing big enough kept: a fresh one, rounded up to the grain.
        let fresh = pool.take(GRAIN + 1);
        assert_ne!(fresh.as_ptr(), ptr);
        assert_eq!(fresh.capacity(), 2 * GRAIN);
        // A kept buffer too small for a request is let go.
        pool.give(BytesMut::with_capacity(MIN_POOLED));
        let _ = pool.take(3 * GRAIN);
        assert!(pool.kept().is_empty());
    }

    #[test]
    fn small_buffers_are_not_kept_and_at_most_keep_are() {
        let pool = BufferPool::new();
        pool.give(BytesMut::with_capacity(10));
        assert!(pool.kept().is_empty());
        for _ in 0..KEEP + 3 {
            pool.give(BytesMut::with_capacity(MIN_POOLED));
        }
        assert_eq!(pool.kept().len(), KEEP);
    }
}

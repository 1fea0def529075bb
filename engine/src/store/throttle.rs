//! Bandwidth limits: one shared token bucket per direction, and the store wrapper
//! that draws from it.
//!
//! A [`Limiter`] is a GCRA ("virtual finish time") token bucket: it keeps the
//! time at which every byte reserved so far will have been sent at the rate
//! ([`Gcra`], a pure core that takes `now`). A reservation of `n` bytes moves
//! that time on by `n / rate` and may start once it is at most one burst ahead
//! of now; the caller sleeps until then. Every transfer in flight in the process
//! reserves from the *same* limiter, frame by frame ([`Limiter::frame`]: at most
//! 256 KiB and 1/8 s of the rate), so concurrent transfers interleave their
//! frames in reservation order and the sum of them follows the rate smoothly —
//! never more than one burst (one frame) ahead of `rate × elapsed` — rather than
//! each request being limited on its own. The rate is an atomic read on every
//! reservation, so a schedule can change it at run time (0 = unlimited).
//!
//! Where the bytes are counted, exactly once:
//! - S3 ([`super::S3Store`]) throttles inside its bodies: each 256 KiB-or-smaller
//!   frame of a PUT body waits for its reservation before the HTTP stack takes
//!   it, and each piece of a GET body is reserved as it arrives before the next
//!   is read, so TCP backpressure shapes the wire. A throttled frame defers the
//!   stall watchdog to its reservation time, so `--stall-timeout` never fires
//!   because of a limit. A retried request is real traffic and is counted again.
//! - Other back-ends are wrapped in [`ThrottledStore`]: `put` reserves the
//!   object's bytes frame by frame before handing it on; `get`/`get_range`
//!   reserve what they received; `get_range_stream` reserves each piece as it
//!   arrives. The S3 store is never wrapped.

use super::retry::{Clock, TokioClock};
use super::{DynStore, ObjectMeta, ObjectStore, Pieces};
use crate::error::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest frame reserved at a time (and the largest burst).
pub const MAX_FRAME: u64 = 256 * 1024;
/// The smallest frame, so that very low rates do not cost a wake-up per byte.
const MIN_FRAME: u64 = 512;

/// The frame (and burst) size at `rate` bytes/s: 1/8 s of the rate, within
/// 512 B..=256 KiB; [`MAX_FRAME`] when unlimited.
pub fn frame_at(rate: u64) -> u64 {
    if rate == 0 {
        MAX_FRAME
    } else {
        (rate / 8).clamp(MIN_FRAME, MAX_FRAME)
    }
}

/// The pure core of a [`Limiter`]: the theoretical time at which everything
/// reserved so far has been sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    finish: Duration,
}

impl Gcra {
    /// Reserves `n` bytes at `rate` bytes/s (0 = unlimited) at time `now`;
    /// returns when they may be sent (never before `now`).
    pub fn reserve(&mut self, now: Duration, n: u64, rate: u64) -> Duration {
        if rate == 0 {
            self.finish = now;
            return now;
        }
        // An idle limiter saves no credit beyond one burst.
        let start = self.finish.max(now);
        self.finish = start + transfer_time(n, rate);
        self.finish
            .saturating_sub(transfer_time(frame_at(rate), rate))
            .max(now)
    }
}

/// How long `n` bytes take at `rate` bytes/s (> 0), to the nanosecond.
fn transfer_time(n: u64, rate: u64) -> Duration {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A shared bandwidth limit of one direction (see the module docs).
#[derive(Debug)]
pub struct Limiter {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    core: Mutex<Gcra>,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    /// A limiter of `rate` bytes/s (0 = unlimited) on the real clock.
    pub fn new(rate: u64) -> Arc<Limiter> {
        Self::with_clock(rate, Arc::new(TokioClock::default()))
    }

    /// A limiter on an injected clock (tests).
    pub fn with_clock(rate: u64, clock: Arc<dyn Clock>) -> Arc<Limiter> {
        Arc::new(Limiter {
            rate: AtomicU64::new(rate),
            core: Mutex::new(Gcra::default()),
            clock,
        })
    }

    /// No limit (until [`Limiter::set_rate`]).
    pub fn unlimited() -> Arc<Limiter> {
        Self::new(0)
    }

    /// Changes the rate (bytes/s, 0 = unlimited) for the reservations to come.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// The rate in bytes/s (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// How many bytes to reserve at a time at the current rate.
    pub fn frame(&self) -> u64 {
        frame_at(self.rate())
    }

    /// Reserves `n` bytes now; how long to wait before sending them.
    pub fn reserve(&self, n: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let now = self.clock.elapsed();
        let at = self
            .core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(now, n, rate);
        at.saturating_sub(now)
    }

    /// A future that completes after `wait` (on the limiter's clock).
    pub fn sleep(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.clock.sleep(wait)
    }

    /// Waits until `n` bytes may be sent, reserving them a frame at a time so
    /// that other transfers interleave.
    pub async fn acquire(&self, n: u64) {
        let mut left = n;
        while left > 0 && self.rate() != 0 {
            let take = left.min(self.frame());
            left -= take;
            let wait = self.reserve(take);
            if !wait.is_zero() {
                self.sleep(wait).await;
            }
        }
    }
}

/// The two limits of a process, shared by every store it opens.
#[derive(Debug, Clone)]
pub struct Bandwidth {
    pub upload: Arc<Limiter>,
    pub download: Arc<Limiter>,
}

impl Bandwidth {
    /// No limits.
    pub fn unlimited() -> Self {
        Bandwidth {
            upload: Limiter::unlimited(),
            download: Limiter::unlimited(),
        }
    }
}

impl Default for Bandwidth {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// A store whose transfers draw from shared [`Bandwidth`] limits (for the
/// back-ends that do not throttle their own bodies; see the module docs).
#[derive(Debug)]
pub struct ThrottledStore {
    inner: DynStore,
    bandwidth: Bandwidth,
}

impl ThrottledStore {
    pub fn new(inner: DynStore, bandwidth: Bandwidth) -> Self {
        ThrottledStore { inner, bandwidth }
    }
}

#[async_trait]
impl ObjectStore for ThrottledStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.bandwidth.upload.acquire(data.len() as u64).await;
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let bytes = self.inner.get(key).await?;
        self.bandwidth.download.acquire(bytes.len() as u64).await;
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let bytes = self.inner.get_range(key, range).await?;
        self.bandwidth.download.acquire(bytes.len() as u64).await;
        Ok(bytes)
    }

    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        let pieces = self.inner.get_range_stream(key, range).await?;
        Ok(throttle_pieces(pieces, self.bandwidth.download.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list_after(prefix, after).await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_dirs(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn local_dir(&self) -> Option<&std::path::Path> {
        self.inner.local_dir()
    }

    async fn clock_ms(&self) -> Option<u64> {
        self.inner.clock_ms().await
    }
}

/// `pieces`, each held back until `limiter` grants its bytes (the next piece is
/// not read meanwhile).
pub fn throttle_pieces(pieces: Pieces, limiter: Arc<Limiter>) -> Pieces {
    Box::pin(pieces.then(move |piece| {
        let limiter = limiter.clone();
        async move {
            if let Ok(bytes) = &piece {
                limiter.acquire(bytes.len() as u64).await;
            }
            piece
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const MIB: u64 = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frames_are_an_eighth_of_a_second_within_bounds() {
        assert_eq!(frame_at(0), MAX_FRAME);
        assert_eq!(frame_at(5 * MIB), MAX_FRAME);
        assert_eq!(frame_at(800 * 1024), 100 * 1024);
        assert_eq!(frame_at(100), MIN_FRAME);
    }

    #[test]
    fn one_burst_goes_at_once_then_the_rate_holds() {
        let mut g = Gcra::default();
        let rate = MIB; // frame 128 KiB = 125 ms
        let frame = frame_at(rate);
        assert_eq!(g.reserve(ms(0), frame, rate), ms(0));
        assert_eq!(g.reserve(ms(0), frame, rate), ms(125));
        assert_eq!(g.reserve(ms(0), frame, rate), ms(250));
        // After a long idle, only one burst of credit is left.
        assert_eq!(g.reserve(ms(10_000), frame, rate), ms(10_000));
        assert_eq!(g.reserve(ms(10_000), frame, rate), ms(10_125));
    }

    /// Several reservers taking turns, as uploads in flight do: the grants of
    /// all of them together follow the rate, whatever their number.
    #[test]
    fn concurrent_reservers_share_the_rate() {
        let rate = 4 * MIB;
        let frame = frame_at(rate); // 256 KiB = 62.5 ms
        let mut g = Gcra::default();
        let mut ready = [Duration::ZERO; 8];
        let mut sent = 0u64;
        // Each reserver reserves its next frame as soon as its last was granted.
        while sent < 64 * MIB {
            let (i, now) = ready
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, t)| *t)
                .unwrap();
            ready[i] = g.reserve(now, frame, rate);
            sent += frame;
            // Never more than one burst ahead of rate × time.
            let allowed = rate as f64 * ready[i].as_secs_f64() + frame as f64;
            assert!((sent as f64) <= allowed + 1.0, "{sent} by {:?}", ready[i]);
        }
        let last = ready.iter().max().unwrap();
        // 64 MiB at 4 MiB/s is 16 s, less the first burst.
        assert_eq!(
            *last,
            Duration::from_secs(16) - ms(62) - Duration::from_micros(500)
        );
    }

    #[test]
    fn a_rate_change_applies_to_the_next_reservation() {
        let mut g = Gcra::default();
        let kib = 1024;
        assert_eq!(g.reserve(ms(0), 128 * kib, MIB), ms(0));
        assert_eq!(g.reserve(ms(0), 128 * kib, MIB), ms(125));
        // Twice the rate: the frame is 256 KiB, the queue (250 ms) gains 62.5 ms.
        assert_eq!(
            g.reserve(ms(0), 128 * kib, 2 * MIB),
            ms(250) + Duration::from_micros(62_500) - ms(125)
        );
        // Unlimited passes through and forgets the queue.
        assert_eq!(g.reserve(ms(1), 100 * MIB, 0), ms(1));
        assert_eq!(g.reserve(ms(1), 128 * kib, MIB), ms(1));
    }

    /// Virtual time: sleeping advances it instantly.
    #[derive(Debug, Default)]
    struct ManualClock {
        now: Mutex<Duration>,
    }

    impl Clock for ManualClock {
        fn elapsed(&self) -> Duration {
            *self.now.lock().unwrap()
        }
        fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            *self.now.lock().unwrap() += d;
            Box::pin(std::future::ready(()))
        }
    }

    #[tokio::test]
    async fn a_throttled_store_takes_the_time_of_its_bytes() {
        let clock = Arc::new(ManualClock::default());
        let bw = Bandwidth {
            upload: Limiter::with_clock(MIB, clock.clone()),
            download: Limiter::with_clock(2 * MIB, clock.clone()),
        };
        let store = ThrottledStore::new(Arc::new(MemoryStore::new()), bw.clone());
        let data = Bytes::from(vec![7u8; 4 * MIB as usize]);
        store.put("k", data.clone()).await.unwrap();
        // 4 MiB at 1 MiB/s, the last frame (128 KiB) granted 125 ms early.
        assert_eq!(clock.elapsed(), Duration::from_secs(4) - ms(125));

        let t = clock.elapsed();
        let pieces: Vec<Bytes> = store
            .get_range_stream("k", 0..4 * MIB)
            .await
            .unwrap()
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(pieces.concat(), data);
        assert_eq!(clock.elapsed() - t, Duration::from_secs(2) - ms(125));

        bw.download.set_rate(0);
        let t = clock.elapsed();
        assert_eq!(store.get("k").await.unwrap(), data);
        assert_eq!(clock.elapsed(), t, "unlimited passes through");
    }
}

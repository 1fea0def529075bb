//! Debouncing: bursts of file events become one batch once the folder settles.
//!
//! A pure type: callers pass the current time, so tests drive it with a mock clock.
//! A batch is ready when no event came for `quiet` (default 1 s), or when the first
//! pending event is `max_wait` old (so a folder that never settles is still synced).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Settled changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Paths that changed (absolute, as the OS reported them).
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost (queue overflow, watcher error): the whole folder must be
    /// rescanned.
    pub rescan: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    pending: Batch,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Debouncer {
            quiet,
            max_wait: max_wait.max(quiet),
            pending: Batch::default(),
            first: None,
            last: None,
        }
    }

    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Records a change of `path` at `now`.
    pub fn event(&mut self, path: PathBuf, now: Instant) {
        self.pending.paths.insert(path);
        self.touch(now);
    }

    /// Records that events were lost at `now`.
    pub fn overflow(&mut self, now: Instant) {
        self.pending.rescan = true;
        self.touch(now);
    }

    /// The settled batch, if one is ready at `now`.
    pub fn ready(&mut self, now: Instant) -> Option<Batch> {
        let (first, last) = (self.first?, self.last?);
        if now.duration_since(last) >= self.quiet || now.duration_since(first) >= self.max_wait {
            self.first = None;
            self.last = None;
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }

    /// How long from `now` until [`Debouncer::ready`] can return a batch (`None`:
    /// nothing pending).
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let (first, last) = (self.first?, self.last?);
        let quiet_at = last + self.quiet;
        let forced_at = first + self.max_wait;
        Some(quiet_at.min(forced_at).saturating_duration_since(now))
    }

    /// Whatever is pending, now (e.g. when the event source is gone).
    pub fn flush(&mut self) -> Option<Batch> {
        self.first.take()?;
        self.last = None;
        Some(std::mem::take(&mut self.pending))
    }

    pub fn is_idle(&self) -> bool {
        self.first.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_becomes_one_batch_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(1), Duration::from_secs(10));
        assert!(d.ready(t0).is_none() && d.wait(t0).is_none());
        for i in 0..5 {
            d.event(PathBuf::from(format!("/f/{}", i % 3)), at(t0, i * 200));
        }
        assert!(d.ready(at(t0, 1500)).is_none(), "last event at 800 ms");
        assert_eq!(d.wait(at(t0, 1500)), Some(Duration::from_millis(300)));
        let b = d.ready(at(t0, 1800)).unwrap();
        assert_eq!(b.paths.len(), 3);
        assert!(!b.rescan);
        assert!(d.is_idle() && d.ready(at(t0, 5000)).is_none());
    }

    #[test]
    fn a_folder_that_never_settles_is_flushed_after_max_wait() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(1), Duration::from_secs(5));
        let mut flushed = None;
        for i in 0..100 {
            let now = at(t0, i * 500);
            d.event(PathBuf::from("/busy"), now);
            if let Some(b) = d.ready(now) {
                flushed = Some((i, b));
                break;
            }
        }
        let (i, b) = flushed.unwrap();
        assert_eq!(i, 10, "flushed when the first event is 5 s old");
        assert_eq!(b.paths.len(), 1);
    }

    #[test]
    fn an_overflow_asks_for_a_rescan() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_millis(100), Duration::from_secs(1));
        d.overflow(t0);
        let b = d.ready(at(t0, 100)).unwrap();
        assert!(b.rescan && b.paths.is_empty());
    }
}

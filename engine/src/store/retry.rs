//! Retries as a wrapper of the store trait.
//!
//! [`RetryStore`] retries what [`StoreError::is_retryable`] says is transient (503
//! SlowDown, 500/502/504, 429, timeouts, resets, stalled transfers) with exponential
//! backoff and *full jitter* — attempt *n* waits a uniform time in
//! `[0, min(cap, base · 2ⁿ)]` — until the per-request time budget would be
//! exceeded. Denials, not-found and malformed requests are returned at once.
//! SlowDowns are reported to the upload window ([`Congestion`]) while they are
//! being retried. The randomness and the clock are injected ([`FullJitter`]), so
//! tests assert exact schedules without sleeping.

use super::{DynStore, ObjectMeta, ObjectStore, Pieces};
use crate::error::StoreError;
use crate::sync::push::window::Congestion;
use async_trait::async_trait;
use backon::Retryable;
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling of any wait.
    pub cap: Duration,
    /// Give up when the time since the first attempt plus the next wait would exceed
    /// this.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// base 100 ms, cap 20 s, budget 15 min.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
            budget: Duration::from_secs(15 * 60),
        }
    }
}

/// Monotonic time and sleeping, injectable.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary fixed origin.
    fn elapsed(&self) -> Duration;
    /// A future that completes after `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The real clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// The wait schedule of one request: an iterator of waits, `None` when the budget
/// is spent.
pub struct FullJitter {
    policy: RetryPolicy,
    attempt: u32,
    rng: Box<dyn RngCore + Send + Sync>,
    clock: Arc<dyn Clock>,
    start: Duration,
}

impl std::fmt::Debug for FullJitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullJitter")
            .field("policy", &self.policy)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl FullJitter {
    /// Starts the budget now (per `clock`).
    pub fn new(
        policy: RetryPolicy,
        rng: Box<dyn RngCore + Send + Sync>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let start = clock.elapsed();
        FullJitter {
            policy,
            attempt: 0,
            rng,
            clock,
            start,
        }
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let exp = self
            .policy
            .base
            .saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.policy.cap);
        let wait = ceiling.mul_f64(self.rng.random::<f64>());
        let spent = self.clock.elapsed().saturating_sub(self.start);
        if spent + wait > self.policy.budget {
            return None;
        }
        self.attempt += 1;
        Some(wait)
    }
}

/// A store that retries transient failures of another.
#[derive(Debug)]
pub struct RetryStore {
    inner: DynStore,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    congestion: Option<Arc<dyn Congestion>>,
    seeds: Mutex<rand::rngs::StdRng>,
}

impl RetryStore {
    /// Wraps `inner` with the real clock and OS-seeded jitter.
    pub fn new(
        inner: DynStore,
        policy: RetryPolicy,
        congestion: Option<Arc<dyn Congestion>>,
    ) -> Self {
        Self::with_parts(
            inner,
            policy,
            congestion,
            Arc::new(TokioClock::default()),
            rand::rngs::StdRng::from_os_rng(),
        )
    }

    /// Wraps `inner` with an injected clock and jitter source (tests).
    pub fn with_parts(
        inner: DynStore,
        policy: RetryPolicy,
        congestion: Option<Arc<dyn Congestion>>,
        clock: Arc<dyn Clock>,
        seed_rng: rand::rngs::StdRng,
    ) -> Self {
        RetryStore {
            inner,
            policy,
            clock,
            congestion,
            seeds: Mutex::new(seed_rng),
        }
    }

    fn schedule(&self) -> FullJitter {
        let seed = self
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64();
        FullJitter::new(
            self.policy,
            Box::new(rand::rngs::SmallRng::seed_from_u64(seed)),
            self.clock.clone(),
        )
    }

    /// An attempt factory whose futures own their inputs (the store and the key),
    /// so retried requests are `Send + 'static`.
    fn attempts<T, F, Fut>(
        &self,
        key: &str,
        f: F,
    ) -> impl FnMut() -> Attempt<T> + Send + 'static + use<T, F, Fut>
    where
        F: Fn(DynStore, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (inner, key) = (self.inner.clone(), key.to_string());
        move || Box::pin(f(inner.clone(), key.clone()))
    }

    /// Runs `op` until it succeeds, fails for good, or the budget is spent.
    fn retry<T: Send + 'static>(
        &self,
        what: &'static str,
        key: &str,
        op: impl FnMut() -> Attempt<T> + Send + 'static,
    ) -> Attempt<T> {
        let key = key.to_string();
        let (clock, sleeper) = (self.clock.clone(), self.clock.clone());
        let congestion = self.congestion.clone();
        let schedule = self.schedule();
        let attempts = Arc::new(AtomicU32::new(1));
        let (counter, signal, log_key) = (attempts.clone(), congestion.clone(), key.clone());
        // Built outside the async block so that `Send` is proved on the concrete
        // type (rustc cannot see through the higher-ranked closures otherwise).
        let retried: Attempt<T> = Box::pin(
            op.retry(schedule)
                .sleep(move |d| sleeper.sleep(d))
                .when(|e: &StoreError| e.is_retryable())
                .notify(move |e: &StoreError, wait: Duration| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if e.is_slow_down()
                        && let Some(c) = &signal
                    {
                        c.slow_down();
                    }
                    tracing::debug!(op = what, key = %log_key, error = %e, ?wait, "retrying");
                }),
        );
        let started = clock.elapsed();
        Box::pin(async move {
            let result = retried.await;
            let attempts = attempts.load(Ordering::Relaxed);
            match result {
                Ok(v) => {
                    if let Some(c) = &congestion {
                        c.success();
                    }
                    Ok(v)
                }
                Err(e) if e.is_retryable() && attempts > 1 => {
                    let spent = clock.elapsed().saturating_sub(started);
                    Err(StoreError::Transient {
                        detail: format!(
                            "{what} {key}: gave up after {attempts} attempts in {spent:.1?}: {e}"
                        ),
                        cause: e
                            .transient_cause()
                            .unwrap_or(crate::error::Transient::Reset),
                    })
                }
                Err(e) => Err(e),
            }
        })
    }
}

/// One attempt of a request.
type Attempt<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

#[async_trait]
impl ObjectStore for RetryStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let op = self.attempts(key, move |s, k| {
            let data = data.clone();
            async move { s.put(&k, data).await }
        });
        self.retry("PUT", key, op).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let op = self.attempts(key, |s, k| async move { s.get(&k).await });
        self.retry("GET", key, op).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let op = self.attempts(key, move |s, k| {
            let range = range.clone();
            async move { s.get_range(&k, range).await }
        });
        self.retry("GET", key, op).await
    }

    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        let op = self.attempts(key, move |s, k| {
            let range = range.clone();
            async move { s.get_range_stream(&k, range).await }
        });
        self.retry("GET", key, op).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let op = self.attempts(prefix, |s, k| async move { s.list(&k).await });
        self.retry("LIST", prefix, op).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let after = after.to_string();
        let op = self.attempts(prefix, move |s, k| {
            let after = after.clone();
            async move { s.list_after(&k, &after).await }
        });
        self.retry("LIST", prefix, op).await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let op = self.attempts(prefix, |s, k| async move { s.list_dirs(&k).await });
        self.retry("LIST", prefix, op).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let op = self.attempts(key, |s, k| async move { s.delete(&k).await });
        self.retry("DELETE", key, op).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// Virtual time: sleeping advances it instantly and records the wait.
    #[derive(Debug, Default)]
    struct ManualClock {
        now: Mutex<Duration>,
        sleeps: Mutex<Vec<Duration>>,
    }

    impl Clock for ManualClock {
        fn elapsed(&self) -> Duration {
            *self.now.lock().unwrap()
        }
        fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            *self.now.lock().unwrap() += d;
            self.sleeps.lock().unwrap().push(d);
            Box::pin(std::future::ready(()))
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            budget: Duration::from_secs(10),
        }
    }

    #[test]
    fn full_jitter_schedule_is_exact_for_a_seed_and_bounded() {
        let clock = Arc::new(ManualClock::default());
        let mk = || {
            FullJitter::new(
                policy(),
                Box::new(rand::rngs::SmallRng::seed_from_u64(7)),
                clock.clone(),
            )
        };
        let a: Vec<Duration> = mk().take(8).collect();
        let b: Vec<Duration> = mk().take(8).collect();
        assert_eq!(a, b, "same seed, same schedule");
        for (n, w) in a.iter().enumerate() {
            let ceiling = (Duration::from_millis(100) * (1 << n)).min(Duration::from_secs(2));
            assert!(*w <= ceiling, "wait {n} = {w:?} above {ceiling:?}");
        }
        // Full jitter: waits are spread over [0, ceiling], not bunched at the top.
        let many: Vec<Duration> = FullJitter::new(
            RetryPolicy {
                budget: Duration::from_secs(1 << 30),
                ..policy()
            },
            Box::new(rand::rngs::SmallRng::seed_from_u64(1)),
            clock.clone(),
        )
        .skip(5)
        .take(2000)
        .collect();
        let low = many
            .iter()
            .filter(|w| **w < Duration::from_millis(500))
            .count();
        assert!(
            (300..700).contains(&low),
            "{low} of 2000 waits in the lowest quarter"
        );
    }

    #[test]
    fn schedule_stops_at_the_budget() {
        let clock = Arc::new(ManualClock::default());
        let s = FullJitter::new(
            policy(),
            Box::new(rand::rngs::SmallRng::seed_from_u64(3)),
            clock.clone(),
        );
        let mut total = Duration::ZERO;
        for w in s {
            *clock.now.lock().unwrap() += w;
            total += w;
        }

        assert!(total <= Duration::from_secs(10));
        assert!(
            total > Duration::from_secs(5),
            "the budget is mostly used: {total:?}"
        );
    }

    /// Fails the first `n` calls with `err`, then delegates.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        failures: AtomicU32,
        err: StoreError,
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(self.err.clone());
            }
            self.inner.put(key, data).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, StoreError> {
            self.inner.get_range(key, r).await
        }
        async fn list(&self, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(p).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn flaky(
        n: u32,
        err: StoreError,
    ) -> (
        Arc<ManualClock>,
        Arc<crate::sync::push::window::UploadWindow>,
        RetryStore,
    ) {
        let clock = Arc::new(ManualClock::default());
        let window = crate::sync::push::window::UploadWindow::new(8);
        let store = RetryStore::with_parts(
            Arc::new(Flaky {
                inner: MemoryStore::new(),
                failures: AtomicU32::new(n),
                err,
            }),
            policy(),
            Some(window.clone()),
            clock.clone(),
            rand::rngs::StdRng::seed_from_u64(9),
        );
        (clock, window, store)
    }

    fn slow_down() -> StoreError {
        StoreError::Transient {
            detail: "503 SlowDown".into(),
            cause: crate::error::Transient::SlowDown,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_shrink_the_window() {
        let (clock, window, store) = flaky(3, slow_down());
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(clock.sleeps.lock().unwrap().len(), 3);
        // Three SlowDowns halve 8 → 4 → 2 → 1; the final success adds 1/1.
        assert_eq!(window.limit(), 2);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let denied = StoreError::Denied {
            detail: "access denied".into(),
        };
        let (clock, _, store) = flaky(1, denied);
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert!(matches!(err, StoreError::Denied { .. }));
        assert!(clock.sleeps.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn giving_up_at_the_budget_says_so() {
        let (clock, _, store) = flaky(u32::MAX, slow_down());
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert!(err.to_string().contains("gave up after"), "{err}");
        assert!(clock.elapsed() <= Duration::from_secs(10));
    }
}

//! Several endpoints of one cluster as one store, each behind a circuit breaker.
//!
//! [`FailoverStore`] holds one store per endpoint (the same bucket seen through
//! each node of a Garage, Ceph RGW or MinIO cluster). Each request goes to the
//! first endpoint, in the order given, whose [`Breaker`] admits it. A request that
//! gets no answer — reset, refused, timed out, stalled — opens that endpoint's
//! breaker: it is skipped for [`BreakerPolicy::base`], then probed by one request,
//! and skipped twice as long each time the probe fails. Any answer, even an error
//! status, closes it: the endpoint is up, and what it said is the cluster's answer.
//!
//! This store does not retry: [`super::RetryStore`] wraps it, so a failed attempt
//! is retried — on another endpoint, the failed one being open — within the same
//! time budget and with the same upload window as with one endpoint. When every
//! breaker is open, the endpoint that reopens first is tried anyway: the retry
//! budget, not the breakers, decides when to give up.

use super::breaker::{Breaker, BreakerPolicy, Transition};
use super::retry::{Clock, TokioClock};
use super::{DynStore, ObjectMeta, ObjectStore, Pieces};
use crate::error::{StoreError, Transient};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

/// One store per endpoint, each behind a breaker.
#[derive(Debug)]
pub struct FailoverStore {
    members: Vec<Member>,
    breakers: Arc<Mutex<Vec<Breaker>>>,
    policy: BreakerPolicy,
    clock: Arc<dyn Clock>,
}

/// An endpoint: its store and its name in messages.
#[derive(Debug)]
struct Member {
    store: DynStore,
    name: String,
}

/// Whether an error means the endpoint did not answer (rather than answered
/// with an error).
pub fn unanswered(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Transient {
            cause: Transient::Reset | Transient::Timeout | Transient::Stall,
            ..
        }
    )
}

impl FailoverStore {
    /// `members`: (endpoint name, store) in order of preference; the real clock.
    /// `None` when `members` is empty.
    pub fn new(members: Vec<(String, DynStore)>, policy: BreakerPolicy) -> Option<Self> {
        Self::with_clock(members, policy, Arc::new(TokioClock::default()))
    }

    /// As [`FailoverStore::new`], with an injected clock (tests).
    pub fn with_clock(
        members: Vec<(String, DynStore)>,
        policy: BreakerPolicy,
        clock: Arc<dyn Clock>,
    ) -> Option<Self> {
        if members.is_empty() {
            return None;
        }
        let breakers = vec![Breaker::default(); members.len()];
        Some(FailoverStore {
            members: members
                .into_iter()
                .map(|(name, store)| Member { store, name })
                .collect(),
            breakers: Arc::new(Mutex::new(breakers)),
            policy,
            clock,
        })
    }

    /// Each endpoint's breaker now, in order (for status and tests).
    pub fn breakers(&self) -> Vec<Breaker> {
        lock(&self.breakers).clone()
    }

    /// The endpoint the next request goes to: the first admitted, else the one
    /// that reopens first (forced).
    fn pick(&self) -> Lease {
        let now = self.clock.elapsed();
        let mut breakers = lock(&self.breakers);
        let admitted = breakers
            .iter_mut()
            .enumerate()
            .find_map(|(i, b)| b.admit(now).map(|epoch| (i, epoch)));
        let (index, epoch) = admitted.unwrap_or_else(|| {
            let soonest = breakers
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.ready_at(now))
                .map_or(0, |(i, _)| i);
            (soonest, breakers[soonest].force())
        });
        drop(breakers);
        Lease {
            index,
            epoch,
            breakers: self.breakers.clone(),
            clock: self.clock.clone(),
            settled: false,
        }
    }

    /// Runs one attempt of a request on the endpoint [`Self::pick`] chooses and
    /// tells its breaker how it went.
    async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(DynStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut lease = self.pick();
        let member = &self.members[lease.index];
        let result = op(member.store.clone()).await;
        match &result {
            Err(e) if unanswered(e) => {
                if let Transition::Opened(backoff) = lease.failed(self.policy) {
                    tracing::warn!(
                        "S3 endpoint {} did not answer ({e}); using the other endpoints for {backoff:?}",
                        member.name
                    );
                }
                return Err(via(e.clone(), &member.name));
            }
            _ => {
                if lease.succeeded() == Transition::Closed {
                    tracing::warn!("S3 endpoint {} answers again", member.name);
                }
            }
        }
        result
    }
}

/// `e`, naming the endpoint it came from.
fn via(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::Transient { detail, cause } => StoreError::Transient {
            detail: format!("{detail} (endpoint {name})"),
            cause,
        },
        other => other,
    }
}

fn lock(m: &Mutex<Vec<Breaker>>) -> MutexGuard<'_, Vec<Breaker>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request admitted by a breaker; dropped without a verdict (the request was
/// cancelled), it frees a probe slot.
#[derive(Debug)]
struct Lease {
    index: usize,
    epoch: u64,
    breakers: Arc<Mutex<Vec<Breaker>>>,
    clock: Arc<dyn Clock>,
    settled: bool,
}

impl Lease {
    fn succeeded(&mut self) -> Transition {
        self.settled = true;
        lock(&self.breakers)[self.index].succeeded(self.epoch)
    }

    fn failed(&mut self, policy: BreakerPolicy) -> Transition {
        self.settled = true;
        let now = self.clock.elapsed();
        lock(&self.breakers)[self.index].failed(self.epoch, now, policy)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            let now = self.clock.elapsed();
            lock(&self.breakers)[self.index].abandoned(self.epoch, now);
        }
    }
}

#[async_trait]
impl ObjectStore for FailoverStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.attempt(|s| async move { s.put(key, data).await })
            .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.attempt(|s| async move { s.get(key).await }).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.attempt(|s| async move { s.get_range(key, range).await })
            .await
    }

    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        self.attempt(|s| async move { s.get_range_stream(key, range).await })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.attempt(|s| async move { s.list(prefix).await }).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.attempt(|s| async move { s.list_after(prefix, after).await })
            .await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.attempt(|s| async move { s.list_dirs(prefix).await })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.attempt(|s| async move { s.delete(key).await }).await
    }

    fn describe(&self) -> String {
        self.members[0].store.describe()
    }

    /// The clock of the first endpoint whose breaker is closed (else the first).
    async fn clock_ms(&self) -> Option<u64> {
        let index = lock(&self.breakers)
            .iter()
            .position(|b| b.state() == super::breaker::BreakerState::Closed)
            .unwrap_or(0);
        self.members[index].store.clock_ms().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retry::{RetryPolicy, RetryStore};
    use crate::store::{MemoryStore, S3Options, S3Store};
    use rand::SeedableRng;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

    /// Virtual time: sleeping advances it at once.
    #[derive(Debug, Default)]
    struct ManualClock(Mutex<Duration>);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    impl Clock for ManualClock {
        fn elapsed(&self) -> Duration {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            self.advance(d);
            Box::pin(std::future::ready(()))
        }
    }

    /// One node of a cluster: a shared bucket, reachable unless `down`.
    #[derive(Debug)]
    struct Node {
        bucket: Arc<MemoryStore>,
        down: AtomicBool,
        calls: AtomicU32,
    }

    impl Node {
        fn reach(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Transient {
                    detail: "connection refused".into(),
                    cause: Transient::Reset,
                });
            }
            Ok(())
        }
        fn calls(&self) -> u32 {
            self.calls.swap(0, Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl ObjectStore for Node {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.reach()?;
            self.bucket.put(key, data).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.reach()?;
            self.bucket.get(key).await
        }
        async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, StoreError> {
            self.reach()?;
            self.bucket.get_range(key, r).await
        }
        async fn list(&self, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.reach()?;
            self.bucket.list(p).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.reach()?;
            self.bucket.delete(key).await
        }
        fn describe(&self) -> String {
            "node".into()
        }
    }

    const POLICY: BreakerPolicy = BreakerPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
    };

    /// Three nodes of one bucket behind a failover store and a retry store.
    fn cluster() -> (
        Vec<Arc<Node>>,
        Arc<ManualClock>,
        Arc<FailoverStore>,
        RetryStore,
    ) {
        let bucket = Arc::new(MemoryStore::new());
        let nodes: Vec<Arc<Node>> = (0..3)
            .map(|_| {
                Arc::new(Node {
                    bucket: bucket.clone(),
                    down: AtomicBool::new(false),
                    calls: AtomicU32::new(0),
                })
            })
            .collect();
        let clock = Arc::new(ManualClock::default());
        let members = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("node{}", i + 1), n.clone() as DynStore))
            .collect();
        let failover = Arc::new(FailoverStore::with_clock(members, POLICY, clock.clone()).unwrap());
        let retry = RetryStore::with_parts(
            failover.clone(),
            RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(2),
                budget: Duration::from_secs(60),
            },
            None,
            clock.clone(),
            rand::rngs::StdRng::seed_from_u64(5),
        );
        (nodes, clock, failover, retry)
    }

    fn calls(nodes: &[Arc<Node>]) -> Vec<u32> {
        nodes.iter().map(|n| n.calls()).collect()
    }

    #[tokio::test]
    async fn failover_sends_requests_to_the_first_endpoint_that_answers() {
        let (nodes, _, failover, store) = cluster();
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(calls(&nodes), [1, 0, 0]);
        nodes[0].down.store(true, Ordering::SeqCst);
        // The failed attempt is retried on the next endpoint.
        store.put("b", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(calls(&nodes), [1, 1, 0]);
        // While node 1 is skipped, requests go straight to node 2.
        assert_eq!(store.get("a").await.unwrap(), Bytes::from_static(b"1"));
        assert_eq!(calls(&nodes), [0, 1, 0]);
        assert!(matches!(
            failover.breakers()[0].state(),
            super::super::breaker::BreakerState::Open { .. }
        ));
    }

    #[tokio::test]
    async fn failover_probes_a_skipped_endpoint_and_returns_when_it_answers() {
        let (nodes, clock, failover, store) = cluster();
        nodes[0].down.store(true, Ordering::SeqCst);
        store.list("").await.unwrap();
        assert_eq!(calls(&nodes), [1, 1, 0]);
        // After the 1 s back-off, one probe: still down, skipped for 2 s.
        clock.advance(Duration::from_secs(1));
        store.list("").await.unwrap();
        assert_eq!(calls(&nodes), [1, 1, 0]);
        clock.advance(Duration::from_secs(1));
        store.list("").await.unwrap();
        assert_eq!(
            calls(&nodes),
            [0, 1, 0],
            "skipped for 2 s after a failed probe"
        );
        nodes[0].down.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(1));
        store.list("").await.unwrap();
        assert_eq!(
            calls(&nodes),
            [1, 0, 0],
            "the probe answers: back to node 1"
        );
        store.list("").await.unwrap();
        assert_eq!(calls(&nodes), [1, 0, 0]);
        assert!(
            failover
                .breakers()
                .iter()
                .all(|b| b.state() == super::super::breaker::BreakerState::Closed)
        );
    }

    #[tokio::test]
    async fn failover_answers_that_are_errors_keep_the_endpoint() {
        let (nodes, _, failover, store) = cluster();
        let err = store.get("missing").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert_eq!(calls(&nodes), [1, 0, 0]);
        assert_eq!(
            failover.breakers()[0].state(),
            super::super::breaker::BreakerState::Closed
        );
    }

    #[tokio::test]
    async fn failover_with_every_endpoint_down_gives_up_at_the_retry_budget() {
        let (nodes, clock, _, store) = cluster();
        for n in &nodes {
            n.down.store(true, Ordering::SeqCst);
        }
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert!(err.to_string().contains("gave up after"), "{err}");
        assert!(err.to_string().contains("(endpoint node"), "{err}");
        assert!(clock.elapsed() <= Duration::from_secs(60));
        let tried = calls(&nodes);
        assert!(
            tried.iter().all(|&n| n > 1),
            "every endpoint probed: {tried:?}"
        );
        // All back: the next request succeeds on the first endpoint that reopens.
        for n in &nodes {
            n.down.store(false, Ordering::SeqCst);
        }
        store.put("k", Bytes::new()).await.unwrap();
    }

    /// A loopback HTTP server that answers every request with an empty
    /// ListObjectsV2 result, counting the requests.
    fn empty_bucket_server() -> (String, Arc<AtomicU32>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicU32::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body.as_bytes());
            }
        });
        (url, served)
    }

    #[tokio::test]
    async fn failover_between_two_local_http_endpoints_one_dead() {
        // A port nothing listens on: connections are refused.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (live, served) = empty_bucket_server();
        let mut members: Vec<(String, DynStore)> = Vec::new();
        for ep in [&dead, &live] {
            let mut opts = S3Options::new("bucket", "");
            opts.endpoint = Some(ep.clone());
            opts.region = Some("garage".into());
            opts.saved_credentials = Some(("id".into(), zeroize::Zeroizing::new("secret".into())));
            members.push((ep.clone(), Arc::new(S3Store::connect(opts).await.unwrap())));
        }
        let failover = Arc::new(FailoverStore::new(members, POLICY).unwrap());
        let store = RetryStore::new(failover.clone(), RetryPolicy::default(), None);
        assert_eq!(store.list("").await.unwrap(), Vec::new());
        assert!(matches!(
            failover.breakers()[0].state(),
            super::super::breaker::BreakerState::Open { .. }
        ));
        assert_eq!(store.list("").await.unwrap(), Vec::new());
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }
}

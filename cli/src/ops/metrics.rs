//! Prometheus metrics (`/metrics` of `watch --listen`), kept with
//! `prometheus-client` and exposed in the OpenMetrics text format. Every
//! command counts; only the daemon serves them. Names follow the Prometheus
//! conventions: counters end in `_total`, units in the name (`_bytes`,
//! `_seconds`); the README lists them all.

use super::events::{PullSummary, PushSummary};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label set of one `reason`, `op`, `kind` or `outcome`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

/// Every metric of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Bytes of objects written / read (bodies of successful requests).
    pub uploaded_bytes: Counter,
    pub downloaded_bytes: Counter,
    /// Objects written / read whole or in part, by kind (pack, commit...).
    pub uploaded_objects: Family<Kind, Counter>,
    pub downloaded_objects: Family<Kind, Counter>,
    /// Store requests by operation and outcome.
    pub requests: Family<Op, Counter>,
    /// Transient failures of store requests, each retried, by reason.
    pub retries: Family<Reason, Counter>,
    pub chunks: Counter,
    pub chunks_deduplicated: Counter,
    pub commits_pushed: Counter,
    pub commits_pulled: Counter,
    pub files_pulled: Counter,
    pub conflicts: Counter,
    /// Failed steps and path-level errors.
    pub errors: Family<Kind, Counter>,
    pub steps: Family<Outcome, Counter>,
    pub step_duration: Family<Kind, Histogram, fn() -> Histogram>,
    pub upload_window: Gauge,
    pub pending_changes: Gauge,
    pub pending_bytes: Gauge,
    pub store_reachable: Gauge,
    pub last_success: Gauge<f64, AtomicU64>,
}

fn step_histogram() -> Histogram {
    // 50 ms … ~1.8 h.
    Histogram::new(exponential_buckets(0.05, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            uploaded_bytes: Counter::default(),
            downloaded_bytes: Counter::default(),
            uploaded_objects: Family::default(),
            downloaded_objects: Family::default(),
            requests: Family::default(),
            retries: Family::default(),
            chunks: Counter::default(),
            chunks_deduplicated: Counter::default(),
            commits_pushed: Counter::default(),
            commits_pulled: Counter::default(),
            files_pulled: Counter::default(),
            conflicts: Counter::default(),
            errors: Family::default(),
            steps: Family::default(),
            step_duration: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            upload_window: Gauge::default(),
            pending_changes: Gauge::default(),
            pending_bytes: Gauge::default(),
            store_reachable: Gauge::default(),
            last_success: Gauge::default(),
        };
        m.register();
        m
    }

    /// The store's metrics, then the others.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "coffer_store_uploaded_bytes",
            "Bytes of objects written to the store",
            self.uploaded_bytes.clone(),
        );
        r.register(
            "coffer_store_downloaded_bytes",
            "Bytes of objects read from the store",
            self.downloaded_bytes.clone(),
        );
        r.register(
            "coffer_store_uploaded_objects",
            "Objects written to the store, by kind",
            self.uploaded_objects.clone(),
        );
        r.register(
            "coffer_store_downloaded_objects",
            "Reads of objects (whole or a range) from the store, by kind",
            self.downloaded_objects.clone(),
        );
        r.register(
            "coffer_store_requests",
            "Store requests that succeeded, by operation",
            self.requests.clone(),
        );
        r.register(
            "coffer_store_retries",
            "Transient store failures, each retried, by reason",
            self.retries.clone(),
        );
        self.register_sync();
    }

    /// The metrics of pushes, pulls and steps.
    fn register_sync(&mut self) {
        let r = &mut self.registry;
        r.register(
            "coffer_chunks",
            "Chunks cut from files read by pushes",
            self.chunks.clone(),
        );
        r.register(
            "coffer_chunks_deduplicated",
            "Chunks already in the repository, not uploaded again",
            self.chunks_deduplicated.clone(),
        );
        r.register(
            "coffer_commits_pushed",
            "Commits written by this device",
            self.commits_pushed.clone(),
        );
        r.register(
            "coffer_commits_pulled",
            "Commits of other devices read from the store (by pushes and pulls)",
            self.commits_pulled.clone(),
        );
        r.register(
            "coffer_files_pulled",
            "Files written into the folder by pulls",
            self.files_pulled.clone(),
        );
        r.register(
            "coffer_conflicts",
            "Conflict copies written",
            self.conflicts.clone(),
        );
        r.register(
            "coffer_errors",
            "Errors: failed steps (kind=step) and paths that could not be synced (kind=path)",
            self.errors.clone(),
        );
        r.register(
            "coffer_steps",
            "Sync steps (push or pull), by outcome",
            self.steps.clone(),
        );
        r.register(
            "coffer_step_duration_seconds",
            "Duration of sync steps",
            self.step_duration.clone(),
        );
        r.register(
            "coffer_upload_window",
            "Uploads allowed in flight now (shrinks on SlowDown)",
            self.upload_window.clone(),
        );
        r.register(
            "coffer_pending_changes",
            "Local changes journaled and not yet pushed",
            self.pending_changes.clone(),
        );
        r.register(
            "coffer_pending_bytes",
            "Size of the files with pending changes",
            self.pending_bytes.clone(),
        );
        r.register(
            "coffer_store_reachable",
            "1 when the last store request succeeded",
            self.store_reachable.clone(),
        );
        r.register(
            "coffer_last_success_timestamp_seconds",
            "When the last sync step succeeded (Unix seconds; 0 = never)",
            self.last_success.clone(),
        );
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        out
    }

    /// Counts what a push did.
    pub fn pushed(&self, p: &PushSummary) {
        self.chunks.inc_by(p.chunks);
        self.chunks_deduplicated
            .inc_by(p.chunks.saturating_sub(p.new_chunks));
        self.commits_pushed.inc_by(p.commits);
        self.commits_pulled.inc_by(p.commits_read);
        self.path_errors(p.problems);
    }

    /// Counts what a pull did.
    pub fn pulled(&self, p: &PullSummary) {
        self.commits_pulled.inc_by(p.commits);
        self.files_pulled.inc_by(p.files_written);
        self.conflicts.inc_by(p.conflict_copies);
        self.path_errors(p.errors);
    }

    fn path_errors(&self, n: u64) {
        if n > 0 {
            self.errors.get_or_create(&Kind { kind: "path" }).inc_by(n);
        }
    }

    /// Counts one step (`kind`: push, pull, sync) and its outcome.
    pub fn step(&self, kind: &'static str, seconds: f64, ok: bool) {
        self.step_duration
            .get_or_create(&Kind { kind })
            .observe(seconds);
        let outcome = if ok { "ok" } else { "failed" };
        self.steps.get_or_create(&Outcome { outcome }).inc();
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_success.set(now);
        } else {
            self.errors.get_or_create(&Kind { kind: "step" }).inc();
        }
    }
}

/// The kind of object a store key names, for labels.
pub fn object_kind(key: &str) -> &'static str {
    use coffer_engine::store::layout;
    if key.starts_with(layout::DATA_PREFIX) {
        "pack"
    } else if key.starts_with(layout::LOG_PREFIX) {
        "commit"
    } else if key.starts_with(layout::HEAD_PREFIX) {
        "head"
    } else if key.starts_with(layout::CHECKPOINT_PREFIX) {
        "checkpoint"
    } else if [
        layout::KEYS_PREFIX,
        layout::EPOCHS_PREFIX,
        layout::GRANTS_PREFIX,
    ]
    .iter()
    .any(|p| key.starts_with(p))
    {
        "key"
    } else if key.starts_with(layout::DROP_PREFIX) || key.starts_with(layout::DROPS_PREFIX) {
        "drop"
    } else if key == layout::CONFIG {
        "config"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_follows_the_conventions() {
        let m = Metrics::new();
        m.uploaded_bytes.inc_by(42);
        m.retries
            .get_or_create(&Reason {
                reason: "slow_down",
            })
            .inc();
        m.step("sync", 0.3, true);
        let text = m.encode();
        assert!(
            text.contains("coffer_store_uploaded_bytes_total 42"),
            "{text}"
        );
        assert!(
            text.contains(r#"coffer_store_retries_total{reason="slow_down"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("coffer_step_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn object_kinds_follow_the_bucket_layout() {
        let device = "0123456789abcdef0123456789abcdef";
        for (key, kind) in [
            (format!("data/ab/{}", "ab".repeat(32)), "pack"),
            (format!("log/{device}/0000000000000001"), "commit"),
            (format!("head/{device}/0000000000000001"), "head"),
            (
                format!("checkpoint/{device}/0000000000000001"),
                "checkpoint",
            ),
            (format!("keys/{device}"), "key"),
            ("config".to_string(), "config"),
            (
                format!("drop/{device}/log/{device}/0000000000000001"),
                "drop",
            ),
            (format!("drops/{device}/record"), "drop"),
            ("notes.txt".to_string(), "other"),
        ] {
            assert_eq!(object_kind(&key), kind, "{key}");
        }
    }
}

//! Operations: what a command tells the world besides its summary line — JSON
//! events ([`events`]), Prometheus metrics ([`metrics`], counted by the
//! [`metered`] store layer), the engine's progress turned into both
//! ([`reporter`]), and for `watch --listen` the live state of the daemon
//! ([`Live`]) served by [`server`] with its status page.
//!
//! [`Ops`] is the hub they share: one per process.

pub mod events;
pub mod metered;
pub mod metrics;
pub mod reporter;
pub mod server;

use events::{Event, Events, ProgressEvent, PullSummary, PushSummary, StateEvent};
use metrics::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many conflict copies and errors the live state remembers.
const RECENT: usize = 50;

/// Events, metrics and the daemon's live state of one process.
#[derive(Debug)]
pub struct Ops {
    pub events: Events,
    pub metrics: Metrics,
    live: Mutex<Live>,
    /// `Live::store_reachable`, readable without the lock.
    reachable: AtomicBool,
    /// Warnings and path errors the daemon has told (see [`Ops::notice`]).
    told: Mutex<std::collections::HashSet<String>>,
}

/// The daemon's state as `/api/status` returns it and the page shows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Live {
    pub version: &'static str,
    pub folder: String,
    pub store: String,
    pub device: String,
    /// When the daemon started (RFC 3339).
    pub started: String,
    pub poll_seconds: u64,
    /// `in_sync`, `syncing` or `failing`.
    pub state: &'static str,
    pub step_running: bool,
    /// The running step's current phase.
    pub progress: Option<ProgressEvent>,
    pub pending_changes: u64,
    pub pending_bytes: u64,
    /// The last push that wrote a commit.
    pub last_push: Option<Stamped<PushSummary>>,
    /// The last pull that changed the folder.
    pub last_pull: Option<Stamped<PullSummary>>,
    /// When a step last succeeded.
    pub last_success: Option<String>,
    /// The last step's failure; cleared by a successful step.
    pub last_error: Option<Stamped<Message>>,
    /// Conflict copies now in the folder, with `file://` links.
    pub conflict_copies: Vec<ConflictCopy>,
    /// Conflict copies this daemon wrote, newest last.
    pub conflicts: Vec<Stamped<ConflictSeen>>,
    /// Devices whose commits this folder has read (a list, by device id).
    #[serde(serialize_with = "values")]
    pub devices: BTreeMap<String, DeviceSeen>,
    pub store_reachable: bool,
    pub store_error: Option<Stamped<Message>>,
    pub steps_ok: u64,
    pub steps_failed: u64,
    /// Whether an upload or download of the running step moves data.
    #[serde(skip)]
    busy: bool,
    #[serde(skip)]
    last_step_failed: bool,
    #[serde(skip)]
    told: Option<StateEvent>,
    #[serde(skip)]
    success_at: Option<std::time::Instant>,
}

impl Live {
    /// The `state` event of this state.
    pub fn state_event(&self) -> StateEvent {
        StateEvent {
            state: self.state,
            pending_changes: self.pending_changes,
            store_reachable: self.store_reachable,
            last_error: self.last_error.as_ref().map(|e| e.value.message.clone()),
        }
    }
}

/// Serializes a map as the list of its values.
fn values<S: serde::Serializer>(
    map: &BTreeMap<String, DeviceSeen>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(map.values())
}

/// A value and when it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped<T> {
    pub time: String,
    #[serde(flatten)]
    pub value: T,
}

impl<T> Stamped<T> {
    fn now(value: T) -> Stamped<T> {
        Stamped {
            time: events::now_rfc3339(),
            value,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConflictSeen {
    pub path: String,
    pub copy: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConflictCopy {
    pub path: String,
    pub url: String,
}

/// A device and its newest commit this folder has read.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSeen {
    pub device: String,
    pub this_device: bool,
    pub seq: u64,
    /// When that commit was made (RFC 3339); unknown for commits read before
    /// this daemon started.
    pub last_commit: Option<String>,
}

impl Ops {
    /// `command`: the name in every event; `json`: events on stdout.
    pub fn new(command: &'static str, json: bool) -> Ops {
        let mut events = Events::new(command, json);
        if command == "watch" {
            events = events.with_bus(1024);
        }
        let live = Live {
            version: env!("CARGO_PKG_VERSION"),
            state: "syncing",
            store_reachable: true,
            ..Live::default()
        };
        let ops = Ops {
            events,
            metrics: Metrics::new(),
            live: Mutex::new(live),
            told: Mutex::default(),
            reachable: AtomicBool::new(true),
        };
        ops.metrics.store_reachable.set(1);
        ops
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the live state.
    pub fn snapshot(&self) -> Live {
        self.live().clone()
    }

    /// How long ago a step last succeeded.
    pub fn since_success(&self) -> Option<std::time::Duration> {
        self.live().success_at.map(|t| t.elapsed())
    }

    pub fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// A warning or a path's error: the daemon (which repeats its steps)
    /// tells each message once, as it does on stderr; a one-shot command
    /// tells everything.
    pub fn notice(&self, event: Event) {
        if self.events.has_bus() {
            let message = match &event {
                Event::Warning { message } | Event::Error { message, .. } => message,
                _ => return self.emit(event),
            };
            let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
            if told.len() >= 10_000 {
                told.clear(); // bounded: an old message may be told again
            }
            if !told.insert(message.clone()) {
                return;
            }
        }
        self.emit(event);
    }

    /// Sets who the daemon is (once, at start).
    pub fn describe(&self, folder: String, store: String, device: String, poll_seconds: u64) {
        let mut l = self.live();
        l.folder = folder;
        l.store = store;
        l.device = device;
        l.poll_seconds = poll_seconds;
        l.started = events::now_rfc3339();
    }

    /// A store request answered (`None`) or failed to reach the store.
    pub fn store_answered(&self, failure: Option<String>) {
        let reachable = failure.is_none();
        // Every request ends here: an answer from a store known to answer
        // changes nothing.
        if reachable && self.reachable.swap(true, Ordering::Relaxed) {
            return;
        }
        self.reachable.store(reachable, Ordering::Relaxed);
        self.update(|l| {
            self.metrics.store_reachable.set(i64::from(reachable));
            if reachable {
                l.store_error = None;
            } else if let Some(f) = failure {
                l.store_error = Some(Stamped::now(Message { message: f }));
            }
            l.store_reachable = reachable;
        });
    }

    /// Local changes waiting to be pushed and the conflict copies now in the
    /// folder (`root`: for their links).
    pub fn local(&self, pending: u64, bytes: u64, conflicts: &[String], root: &std::path::Path) {
        self.metrics.pending_changes.set(clamp_i64(pending));
        self.metrics.pending_bytes.set(clamp_i64(bytes));
        let copies = conflicts
            .iter()
            .map(|p| ConflictCopy {
                path: p.clone(),
                url: file_url(&root.join(p)),
            })
            .collect();
        self.update(|l| {
            l.pending_changes = pending;
            l.pending_bytes = bytes;
            l.conflict_copies = copies;
        });
    }

    /// A step begins.
    pub fn step_started(&self) {
        self.update(|l| {
            l.step_running = true;
            l.busy = false;
            l.progress = None;
        });
    }

    /// A step ended: `error` if it failed.
    pub fn step_ended(&self, kind: &'static str, seconds: f64, error: Option<String>) {
        self.metrics.step(kind, seconds, error.is_none());
        self.update(|l| {
            l.step_running = false;
            l.busy = false;
            l.progress = None;
            l.last_step_failed = error.is_some();
            match error {
                None => {
                    l.steps_ok += 1;
                    l.last_success = Some(events::now_rfc3339());
                    l.success_at = Some(std::time::Instant::now());
                    l.last_error = None;
                }
                Some(message) => {
                    l.steps_failed += 1;
                    l.last_error = Some(Stamped::now(Message { message }));
                }
            }
        });
    }

    /// Counts a push; the live state keeps the last one that wrote a commit.
    pub fn pushed(&self, p: PushSummary) {
        self.metrics.pushed(&p);
        let Some(seq) = p.commit else { return };
        let device = self.live().device.clone();
        if !device.is_empty() {
            self.device_seen(device, seq, Some(coffer_engine::now_millis()));
        }
        self.update(|l| l.last_push = Some(Stamped::now(p)));
    }

    /// Counts a pull; the live state keeps the last one that changed the folder.
    pub fn pulled(&self, p: PullSummary) {
        self.metrics.pulled(&p);
        if p.files_written + p.deleted + p.dirs_created + p.conflict_copies > 0 {
            self.update(|l| l.last_pull = Some(Stamped::now(p)));
        }
    }

    /// A conflict copy was written.
    pub fn conflict(&self, path: String, copy: String) {
        self.emit(Event::Conflict {
            path: path.clone(),
            copy: copy.clone(),
        });
        self.update(|l| {
            l.conflicts.push(Stamped::now(ConflictSeen { path, copy }));
            let excess = l.conflicts.len().saturating_sub(RECENT);
            l.conflicts.drain(..excess);
        });
    }

    /// The newest commit read of `device` (`time_ms`: when it was made).
    pub fn device_seen(&self, device: String, seq: u64, time_ms: Option<u64>) {
        self.update(|l| {
            let this_device = device == l.device;
            let e = l
                .devices
                .entry(device.clone())
                .or_insert_with(|| DeviceSeen {
                    device,
                    this_device,
                    seq,
                    last_commit: None,
                });
            if seq >= e.seq {
                e.seq = seq;
                if let Some(ms) = time_ms {
                    e.last_commit = Some(events::rfc3339_ms(ms));
                }
            }
        });
    }

    /// The current phase's progress (a running step moves data when an
    /// upload or download with something to move started).
    pub fn progress(&self, p: &ProgressEvent) {
        let moving = matches!(p.phase, "upload" | "download")
            && (p.bytes_total.unwrap_or(0) > 0 || p.items_total.unwrap_or(0) > 0);
        self.update(|l| {
            l.busy |= moving && l.step_running;
            l.progress = (l.step_running && !p.done).then(|| p.clone());
        });
    }

    /// Changes the live state, recomputes the overall state and emits a
    /// `state` event when it changed.
    fn update(&self, f: impl FnOnce(&mut Live)) {
        // The state event goes out under the lock, so events follow the
        // order of the changes (the lock order is live → events).
        let mut l = self.live();
        {
            f(&mut l);
            l.state = if l.last_step_failed || !l.store_reachable {
                "failing"
            } else if l.pending_changes > 0 || (l.step_running && l.busy) || l.steps_ok == 0 {
                "syncing" // (also before the first step has finished)
            } else {
                "in_sync"
            };
            let now = l.state_event();
            if l.told.as_ref() != Some(&now) {
                l.told = Some(now.clone());
                if self.events.has_bus() {
                    self.events.emit(Event::State(now));
                }
            }
        }
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `file://` URL of a local path (bytes outside the unreserved set escaped).
pub fn file_url(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_steps_store_and_pending() {
        let ops = Ops::new("watch", false);
        let mut rx = ops.events.subscribe().unwrap();
        assert_eq!(ops.snapshot().state, "syncing");
        ops.step_started();
        ops.step_ended("sync", 0.1, None);
        assert_eq!(ops.snapshot().state, "in_sync");
        ops.store_answered(Some("connection refused".into()));
        assert_eq!(ops.snapshot().state, "failing");
        ops.store_answered(None);
        ops.local(2, 10, &[], std::path::Path::new("/f"));
        assert_eq!(ops.snapshot().state, "syncing");
        ops.local(0, 0, &[], std::path::Path::new("/f"));
        ops.step_ended("sync", 0.1, Some("boom".into()));
        let s = ops.snapshot();
        assert_eq!(s.state, "failing");
        assert_eq!(s.last_error.unwrap().value.message, "boom");
        let mut states = Vec::new();
        while let Ok(line) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            states.push(v["state"].as_str().unwrap().to_string());
        }
        // Repeated states are told once.
        assert_eq!(
            states,
            [
                "syncing", "in_sync", "failing", "in_sync", "syncing", "in_sync", "failing"
            ]
        );
    }

    #[test]
    fn a_daemon_tells_a_notice_once() {
        let ops = Ops::new("watch", false);
        let mut rx = ops.events.subscribe().unwrap();
        for _ in 0..3 {
            ops.notice(Event::Warning {
                message: "skipped 1 special file".into(),
            });
        }
        let lines: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
    }

    #[test]
    fn file_urls_escape() {
        assert_eq!(
            file_url(std::path::Path::new("/a b/c%.txt")),
            "file:///a%20b/c%25.txt"
        );
    }
}

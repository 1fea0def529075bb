//! The one JSON event schema: what `--json` prints on stdout, line by line, and
//! what the daemon's `/events` stream sends. Documented in the README ("JSON
//! events"); every line is one object with `type`, `time` and `command`.

use serde::Serialize;
use std::io::Write as _;
use tokio::sync::broadcast;

/// One event. Serialized with its `type` tag next to the envelope's fields.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A phase of the current operation began, advanced or ended.
    Progress(ProgressEvent),
    /// Something the user should know that does not stop the operation.
    Warning { message: String },
    /// A failure: `fatal` ends the command (or the daemon's step); otherwise one
    /// path or object could not be handled and the rest went on.
    Error { message: String, fatal: bool },
    /// A conflict copy was written: `copy` holds the other version of `path`.
    Conflict { path: String, copy: String },
    /// The command (or one daemon step) ended.
    Summary(Summary),
    /// The daemon's state changed (`watch` only).
    State(StateEvent),
}

/// Progress of the current phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgressEvent {
    /// `scan`, `upload`, `logs`, `download` or `verify`.
    pub phase: &'static str,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub items_done: u64,
    pub items_total: Option<u64>,
    /// Mean bytes per second since the phase began.
    pub bytes_per_second: f64,
    /// Seconds left at that rate, when the total is known.
    pub eta_seconds: Option<f64>,
    /// This is the phase's last event.
    pub done: bool,
}

/// How a command or a daemon step ended.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Everything went through (no problem, no damage, no failure).
    pub ok: bool,
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullSummary>,
    /// Files written out by `restore` and `get`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSummary>,
    /// The whole report of `check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<serde_json::Value>,
    /// The whole report of `prune`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<Box<serde_json::Value>>,
}

/// What a push did.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Seq of the last commit written (none: nothing to push).
    pub commit: Option<u64>,
    pub commits: u64,
    /// Commits read from the store before pushing.
    pub commits_read: u64,
    pub changes: u64,
    pub deleted: u64,
    pub scanned: u64,
    pub files_read: u64,
    pub bytes_read: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub bytes_uploaded: u64,
    pub packs: u64,
    pub problems: u64,
    pub damaged: u64,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct PullSummary {
    /// Commits read from the store by the pull.
    pub commits: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub dirs_created: u64,
    pub deleted: u64,
    pub conflict_copies: u64,
    pub errors: u64,
    pub damaged: u64,
}

/// What `get` or `restore` wrote.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub out: String,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// The daemon's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateEvent {
    /// `in_sync`, `syncing` or `failing`.
    pub state: &'static str,
    pub pending_changes: u64,
    /// The last store request succeeded.
    pub store_reachable: bool,
    pub last_error: Option<String>,
}

impl From<&coffer_engine::PushReport> for PushSummary {
    fn from(r: &coffer_engine::PushReport) -> Self {
        let n = |x: usize| x as u64;
        PushSummary {
            commit: r.commit,
            commits: n(r.commits),
            commits_read: n(r.commits_read),
            changes: n(r.changes),
            deleted: n(r.deleted),
            scanned: n(r.scanned),
            files_read: n(r.files_read),
            bytes_read: r.upload.bytes_read,
            chunks: r.upload.chunks,
            new_chunks: r.upload.new_chunks,
            bytes_uploaded: r.upload.bytes_uploaded,
            packs: r.upload.packs,
            problems: n(r.problems.len()),
            damaged: n(r.damaged.len()),
        }
    }
}

impl From<&coffer_engine::PullReport> for PullSummary {
    fn from(r: &coffer_engine::PullReport) -> Self {
        let n = |x: usize| x as u64;
        PullSummary {
            commits: n(r.commits),
            files_written: n(r.files_written),
            bytes_written: r.bytes_written,
            dirs_created: n(r.dirs_created),
            deleted: n(r.deleted),
            conflict_copies: n(r.conflict_copies),
            errors: n(r.errors.len()),
            damaged: n(r.damaged.len()),
        }
    }
}

/// A serialized line: the event inside its envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    /// RFC 3339 UTC with milliseconds.
    time: String,
    command: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// Where events go: stdout as JSON lines (`--json`) and/or the daemon's bus.
#[derive(Debug)]
pub struct Events {
    command: &'static str,
    stdout: bool,
    bus: Option<broadcast::Sender<String>>,
}

impl Events {
    pub fn new(command: &'static str, stdout: bool) -> Events {
        Events {
            command,
            stdout,
            bus: None,
        }
    }

    /// Also send every event to subscribers of the returned bus.
    pub fn with_bus(mut self, capacity: usize) -> Events {
        self.bus = Some(broadcast::channel(capacity).0);
        self
    }

    /// A new subscriber to the bus (none without one).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<String>> {
        self.bus.as_ref().map(broadcast::Sender::subscribe)
    }

    /// There is a bus (the daemon's), listened to or not.
    pub fn has_bus(&self) -> bool {
        self.bus.is_some()
    }

    pub fn emit(&self, event: Event) {
        let to_bus = self.bus.as_ref().filter(|b| b.receiver_count() > 0);
        if !self.stdout && to_bus.is_none() {
            return;
        }
        let line = self.line(&event);
        if self.stdout {
            // The lock keeps each line whole among threads.
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) must not stop the work.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
        if let Some(bus) = to_bus {
            // A subscriber gone meanwhile is not an error.
            let _ = bus.send(line);
        }
    }

    /// The event as one JSON line.
    pub fn line(&self, event: &Event) -> String {
        let envelope = Envelope {
            time: now_rfc3339(),
            command: self.command,
            event,
        };
        serde_json::to_string(&envelope).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","fatal":false,"message":"cannot encode an event: {e}"}}"#)
        })
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_type_time_and_command() {
        let events = Events::new("push", false);
        let line = events.line(&Event::Conflict {
            path: "a.txt".into(),
            copy: "a (conflict).txt".into(),
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "conflict");
        assert_eq!(v["command"], "push");
        assert_eq!(v["path"], "a.txt");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let line = events.line(&Event::Summary(Summary {
            ok: true,
            push: Some(PushSummary::default()),
            ..Summary::default()
        }));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["push"]["commits"], 0);
        assert!(v.get("pull").is_none());
    }

    #[tokio::test]
    async fn the_bus_gets_the_same_lines() {
        let events = Events::new("watch", false).with_bus(8);
        let mut rx = events.subscribe().unwrap();
        events.emit(Event::Warning {
            message: "x".into(),
        });
        let line = rx.recv().await.unwrap();
        assert!(line.contains(r#""type":"warning""#), "{line}");
    }
}

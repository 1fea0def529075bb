//! The CLI's [`Progress`]: the engine's progress goes to the terminal's bars,
//! to `progress` events (`--json`, `/events`) and to the daemon's live state.
//! Progress events are sent when a phase starts and ends and at most every
//! [`EVERY`] in between.

use super::Ops;
use super::events::{Event, ProgressEvent};
use crate::progress::Bars;
use coffer_engine::{DeviceId, Phase, Progress};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Least time between two progress events of one phase.
pub const EVERY: Duration = Duration::from_millis(500);

/// Bars, events and live state from one [`Progress`].
#[derive(Debug)]
pub struct Reporter {
    bars: Bars,
    pub ops: Arc<Ops>,
    phase: Mutex<Option<Track>>,
}

/// The phase under way.
#[derive(Debug)]
struct Track {
    phase: Phase,
    bytes_total: Option<u64>,
    items_total: Option<u64>,
    bytes_done: u64,
    items_done: u64,
    started: Instant,
    told: Instant,
}

impl Track {
    fn event(&self, done: bool) -> ProgressEvent {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.bytes_done as f64 / secs
        } else {
            0.0
        };
        let eta = match self.bytes_total {
            Some(total) if rate > 0.0 => {
                Some(round(total.saturating_sub(self.bytes_done) as f64 / rate))
            }
            Some(_) if done => Some(0.0),
            _ => None,
        };
        ProgressEvent {
            phase: phase_name(self.phase),
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            items_done: self.items_done,
            items_total: self.items_total,
            bytes_per_second: round(rate),
            eta_seconds: eta,
            done,
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The phase's name in events.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Scan => "scan",
        Phase::Upload => "upload",
        Phase::Logs => "logs",
        Phase::Download => "download",
        Phase::Verify => "verify",
    }
}

impl Reporter {
    pub fn new(quiet: bool, ops: Arc<Ops>) -> Reporter {
        Reporter {
            bars: Bars::new(quiet),
            ops,
            phase: Mutex::new(None),
        }
    }

    fn track(&self) -> std::sync::MutexGuard<'_, Option<Track>> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tell(&self, p: ProgressEvent) {
        self.ops.progress(&p);
        self.ops.emit(Event::Progress(p));
    }
}

impl Progress for Reporter {
    fn start(&self, phase: Phase, total_bytes: Option<u64>, total_items: Option<u64>) {
        self.bars.start(phase, total_bytes, total_items);
        let now = Instant::now();
        let t = Track {
            phase,
            bytes_total: total_bytes,
            items_total: total_items,
            bytes_done: 0,
            items_done: 0,
            started: now,
            told: now,
        };
        let first = t.event(false);
        *self.track() = Some(t);
        self.tell(first);
    }

    fn advance(&self, bytes: u64, items: u64) {
        self.bars.advance(bytes, items);
        let due = {
            let mut guard = self.track();
            let Some(t) = guard.as_mut() else { return };
            t.bytes_done += bytes;
            t.items_done += items;
            (t.told.elapsed() >= EVERY).then(|| {
                t.told = Instant::now();
                t.event(false)
            })
        };
        if let Some(p) = due {
            self.tell(p);
        }
    }

    fn finish(&self, phase: Phase) {
        self.bars.finish(phase);
        let last = self.track().take().map(|t| t.event(true));
        if let Some(p) = last {
            self.tell(p);
        }
    }

    fn warn(&self, message: &str) {
        self.bars.warn(message);
        self.ops.emit(Event::Warning {
            message: message.to_string(),
        });
    }

    fn commit_seen(&self, device: &DeviceId, seq: u64, time_ms: u64) {
        self.ops.device_seen(device.to_string(), seq, Some(time_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_start_advance_and_finish_with_totals() {
        let ops = Arc::new(Ops::new("watch", false));
        let mut rx = ops.events.subscribe().unwrap();
        let r = Reporter::new(true, ops.clone());
        r.start(Phase::Upload, Some(100), Some(2));
        r.advance(60, 1);
        r.advance(40, 1);
        r.finish(Phase::Upload);
        let mut progress = Vec::new();
        while let Ok(line) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["type"] == "progress" {
                progress.push(v);
            }
        }
        assert_eq!(progress.len(), 2, "{progress:?}");
        assert_eq!(progress[0]["bytes_done"], 0);
        assert_eq!(progress[1]["bytes_done"], 100);
        assert_eq!(progress[1]["items_total"], 2);
        assert_eq!(progress[1]["done"], true);
        assert_eq!(progress[1]["phase"], "upload");
    }
}

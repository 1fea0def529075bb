//! Progress bars on stderr when it is a terminal; warnings always reach stderr.

use coffer_engine::{Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// The CLI's [`Progress`].
#[derive(Debug)]
pub struct Bars {
    enabled: bool,
    quiet: bool,
    bar: Mutex<Option<(ProgressBar, Unit)>>,
}

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Bytes,
    Items,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Bars {
            enabled: !quiet && std::io::stderr().is_terminal(),
            quiet,
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar, Unit)) {
        if let Some((b, unit)) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            f(b, *unit);
        }
    }
}

fn label(phase: Phase) -> &'static str {
    match phase {
        Phase::Scan => "scanning",
        Phase::Upload => "uploading",
        Phase::Logs => "reading logs",
        Phase::Download => "downloading",
        Phase::Verify => "verifying",
    }
}

impl Progress for Bars {
    fn start(&self, phase: Phase, total_bytes: Option<u64>, total_items: Option<u64>) {
        // Nothing to count: no bar (the daemon's idle polls would flicker with them).
        let empty = matches!((total_bytes, total_items), (Some(0), _) | (None, Some(0)));
        if !self.enabled || empty {
            return;
        }
        let (bar, unit) = match (total_bytes, total_items) {
            (Some(n), _) => (
                ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                Unit::Bytes,
            ),
            (None, Some(n)) => (
                ProgressBar::new(n).with_style(
                    ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len}")
                        .expect("valid template")
                        .progress_chars("=> "),
                ),
                Unit::Items,
            ),
            (None, None) => (ProgressBar::new_spinner(), Unit::Items),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_message(label(phase));
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some((bar, unit));
    }

    fn advance(&self, bytes: u64, items: u64) {
        self.with_bar(|b, unit| match unit {
            Unit::Bytes => b.inc(bytes),
            Unit::Items => b.inc(items),
        });
    }

    fn finish(&self, _phase: Phase) {
        if let Some((b, _)) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }

    fn warn(&self, message: &str) {
        if self.quiet {
            return;
        }
        let mut printed = false;
        self.with_bar(|b, _| {
            b.println(format!("warning: {message}"));
            printed = true;
        });
        if !printed {
            eprintln!("warning: {message}");
        }
    }
}

/// The daemon's one-line status on a terminal (`coffer watch`): shown while it
/// waits, cleared while a step runs (so the step's progress bars and messages
/// have stderr to themselves). Does nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct StatusLine {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl StatusLine {
    pub fn new(quiet: bool) -> Self {
        StatusLine {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    /// Replaces the line with `message`; `{elapsed}` counts from now.
    pub fn show(&mut self, message: String) {
        if !self.enabled {
            return;
        }
        self.clear();
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed} ago)")
                .expect("valid template"),
        );
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_message(message);
        bar.enable_steady_tick(std::time::Duration::from_secs(1));
        self.bar = Some(bar);
    }

    pub fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

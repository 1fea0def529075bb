//! coffer's file watcher: OS notifications (inotify via `notify`), filtered and
//! debounced into batches of settled changes.
//!
//! - [`debounce::Debouncer`] is pure (time is passed in) and tested with a mock clock.
//! - [`FolderWatcher`] watches a folder recursively, drops events under `.coffer/`
//!   (the journal and coffer's own temp files) and paths `.cofferignore` ignores,
//!   and turns watcher errors and queue overflows into a rescan request.
//!
//! The watcher only says *when* to look: the push that follows always rescans the
//! folder with the stat cache, so a missed or coalesced event never loses a change.

pub mod debounce;

pub use debounce::{Batch, Debouncer};

use coffer_engine::IgnoreRules;
use coffer_engine::{RepoPath, STATE_DIR};
use notify::{EventKind, RecursiveMode, Watcher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Watch settings.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time before a burst is reported (default 1 s).
    pub debounce: Duration,
    /// A folder that never settles is still reported this often (default 10 s).
    pub max_wait: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_secs(1),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// A folder under watch.
pub struct FolderWatcher {
    root: PathBuf,
    rules: IgnoreRules,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    debouncer: Debouncer,
    // Dropping the watcher stops the notifications.
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for FolderWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatcher")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl FolderWatcher {
    /// Starts watching `root` recursively.
    pub fn new(root: &Path, opts: WatchOptions) -> Result<Self, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        let rules = IgnoreRules::load(&root).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
        Ok(FolderWatcher {
            root,
            rules,
            rx,
            debouncer: Debouncer::new(opts.debounce, opts.max_wait),
            _watcher: watcher,
        })
    }

    /// Waits up to `timeout` for a settled batch of changes.
    pub fn next_batch(&mut self, timeout: Duration) -> Option<Batch> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if let Some(b) = self.debouncer.ready(now) {
                return Some(b);
            }
            if now >= deadline {
                return None;
            }
            let wait = self
                .debouncer
                .wait(now)
                .unwrap_or(Duration::MAX)
                .min(deadline - now);
            match self.rx.recv_timeout(wait) {
                Ok(ev) => self.record(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.debouncer.overflow(Instant::now());
                    return self.debouncer.flush();
                }
            }
        }
    }

    fn record(&mut self, ev: notify::Result<notify::Event>) {
        let now = Instant::now();
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("watcher error, rescanning: {e}");
                self.debouncer.overflow(now);
                return;
            }
        };
        if ev.need_rescan() {
            self.debouncer.overflow(now);
            return;
        }
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        for path in ev.paths {
            if self.is_relevant(&path) {
                self.debouncer.event(path, now);
            }
        }
    }

    /// Not under `.coffer/`, not ignored.
    fn is_relevant(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return true;
        }
        if rel.starts_with(STATE_DIR) {
            return false;
        }
        match RepoPath::new(rel.as_os_str().as_bytes().to_vec()) {
            Ok(p) => !self.rules.is_ignored(&p, path.is_dir()),
            Err(_) => true, // an odd name: let the scan report it
        }
    }
}

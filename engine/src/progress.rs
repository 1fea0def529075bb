//! Progress reporting: the engine never prints; it calls a [`Progress`].

use crate::format::id::DeviceId;

/// A stage of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Walking the folder.
    Scan,
    /// Reading, chunking, sealing and uploading.
    Upload,
    /// Fetching logs from the store.
    Logs,
    /// Downloading and writing files.
    Download,
    /// Verifying packs.
    Verify,
}

/// Receives progress from long operations. Every method has an empty default; all
/// may be called from several threads.
pub trait Progress: Send + Sync {
    /// A phase starts; totals are known upfront when `Some`.
    fn start(&self, _phase: Phase, _total_bytes: Option<u64>, _total_items: Option<u64>) {}
    /// Work done in the current phase.
    fn advance(&self, _bytes: u64, _items: u64) {}
    /// The current phase ended.
    fn finish(&self, _phase: Phase) {}
    /// Something the user should know that does not stop the operation.
    fn warn(&self, _message: &str) {}
    /// A verified commit of `device` was read from the store: its `seq` and the
    /// wall-clock time it was made (Unix ms, for display).
    fn commit_seen(&self, _device: &DeviceId, _seq: u64, _time_ms: u64) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

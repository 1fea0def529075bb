//! Typed errors of the engine.
//!
//! Policy:
//! - The engine returns [`Error`]; the binary wraps it in `anyhow` only to add context.
//! - Store back-ends map their native failures into [`StoreError`] variants *by meaning*
//!   (not found, denied, transient, rejected); the retry layer asks
//!   [`StoreError::is_retryable`] and never matches on message strings.
//! - Anything read from the store that fails authentication or structure checks is
//!   [`Error::Corrupt`] naming the object, so `check` and `pull` can report exactly what
//!   is damaged and go on with everything else.
//! - Messages are one line and say what to do where there is something to do.

use std::path::PathBuf;
use std::sync::Arc;

/// A failure of an [`ObjectStore`](crate::store::ObjectStore) operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("object not found: {key}")]
    NotFound { key: String },
    /// Credentials are missing, wrong, or lack permission. Never retried.
    #[error("{detail}")]
    Denied { detail: String },
    /// A failure that may go away by itself: throttling (503 SlowDown, 429), 5xx,
    /// timeouts, connection resets. Retried with backoff.
    #[error("transient store error: {detail}")]
    Transient { detail: String, cause: Transient },
    /// The store refused the request as malformed or unsupported (4xx other than
    /// 403/404). Never retried.
    #[error("store rejected the request: {detail}")]
    Rejected { detail: String },
    /// A local filesystem error of a directory store.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The store location itself is unusable (bad URL, bucket missing, ...).
    #[error("{detail}")]
    Unusable { detail: String },
}

/// What kind of transient failure a [`StoreError::Transient`] is: the upload
/// window shrinks on [`Transient::SlowDown`]; metrics count retries by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transient {
    /// The store asked to slow down (503 SlowDown, 429).
    SlowDown,
    /// Another 5xx answer.
    ServerError,
    /// The connection broke (reset, refused, body cut off).
    Reset,
    /// A transfer made no progress for the stall grace.
    Stall,
    /// The request timed out.
    Timeout,
}

impl Transient {
    /// A short label (`slow_down`, `server_error`, `reset`, `stall`, `timeout`).
    pub fn label(self) -> &'static str {
        match self {
            Transient::SlowDown => "slow_down",
            Transient::ServerError => "server_error",
            Transient::Reset => "reset",
            Transient::Stall => "stall",
            Transient::Timeout => "timeout",
        }
    }

    /// SlowDown for 503 and 429, else a server error.
    pub fn of_status(status: u16) -> Transient {
        if status == 503 || status == 429 {
            Transient::SlowDown
        } else {
            Transient::ServerError
        }
    }
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Transient { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// Whether the store asked us to slow down (S3 503 SlowDown / 429): the upload
    /// window shrinks on these.
    pub fn is_slow_down(&self) -> bool {
        matches!(
            self,
            StoreError::Transient {
                cause: Transient::SlowDown,
                ..
            }
        )
    }

    /// Why a transient failure happened (`None` for failures that are not).
    pub fn transient_cause(&self) -> Option<Transient> {
        match self {
            StoreError::Transient { cause, .. } => Some(*cause),
            StoreError::Io { .. } if self.is_retryable() => Some(Transient::Reset),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Any failure of an engine operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No key slot opened with the given passphrase.
    #[error("wrong passphrase: no key slot of this repository opens with it")]
    WrongPassphrase,
    /// A key slot named (by id or prefix) that the repository does not hold,
    /// or a prefix that names several.
    #[error("{reason} (key slots: {slots})")]
    NoSuchSlot { reason: String, slots: String },
    /// Removing this key slot would leave no usable one: nobody could open the
    /// repository with a passphrase again.
    #[error(
        "refusing to remove key slot {slot}: no other usable key slot would remain (key slots: {slots}); add one first with `coffer key add`"
    )]
    LastKeySlot { slot: String, slots: String },
    /// The repository needs a passphrase (or another key) and none was given.
    #[error("{0}")]
    KeyRequired(String),
    /// This machine's key cannot reach the repository's current key epoch: its
    /// slot was removed by a rotation, or it predates key epochs (`DESIGN.md` §4a).
    #[error("{0}")]
    Revoked(String),
    /// The grant (a version-4 key slot, `DESIGN.md` §4b) this machine opens the
    /// repository through has expired: honest clients stop using it.
    #[error("this grant expired on {} (key slot {slot})", rfc3339(*expired))]
    GrantExpired { slot: String, expired: u64 },
    /// A key-management service (KMS) refused or failed to wrap or unwrap a key.
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    /// The store holds no coffer repository at this location.
    #[error("no coffer repository at {0} (run `coffer init` first)")]
    NotARepository(String),
    /// `init` on a location that already holds a repository.
    #[error("a coffer repository already exists at {0}")]
    AlreadyExists(String),
    /// The repository's format is newer than this build understands.
    #[error("{what} uses format version {found}; this coffer understands up to {supported}")]
    UnsupportedVersion {
        what: String,
        found: u32,
        supported: u32,
    },
    /// An object failed authentication or a structural check.
    #[error("corrupt object {object}: {reason}")]
    Corrupt { object: String, reason: String },
    /// A device's log shows fewer commits than this machine has already seen.
    #[error(
        "rollback detected for device {device}: the store shows seq {found} but seq {seen} was seen before; refusing to apply"
    )]
    Rollback {
        device: String,
        seen: u64,
        found: u64,
    },
    /// A device's log diverges from what this machine saw (broken hash chain).
    #[error("fork detected in the log of device {device} at seq {seq}: {reason}")]
    Fork {
        device: String,
        seq: u64,
        reason: String,
    },
    /// Another process has the folder open (its lock is taken).
    #[error("folder {folder} is in use by another coffer process (pid {pid})")]
    InUse { folder: String, pid: String },
    /// Invalid configuration or arguments.
    #[error("{0}")]
    Config(String),
    /// A path that may not be stored or written (escapes the folder, reserved name...).
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath { path: String, reason: String },
    /// A local filesystem error.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The local journal (sled) failed.
    #[error("journal error: {0}")]
    Journal(String),
    /// A path asked for does not exist in the repository.
    #[error("not in the repository: {0}")]
    NotFound(String),
    /// A bug or a crashed worker thread.
    #[error("internal error: {0}")]
    Internal(String),
    /// `prune` found the logs incomplete or unreadable, and deleted nothing
    /// (an unreadable commit may name any pack).
    #[error("prune stopped before deleting anything: {0}")]
    PruneRefused(String),
    /// A pack this commit would name was marked for deletion by `prune` longer
    /// ago than the mark's grace: it was dropped, and the next run uploads its
    /// chunks again (DESIGN.md §11).
    #[error(
        "pack {pack} of this push was marked for deletion by prune more than its grace period ago; it is left out and its data will be uploaded again: run the command again"
    )]
    PackExpired { pack: String },
    /// The operation was interrupted (SIGINT/SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Whether this failure may go away if the operation is run again later
    /// (an unreachable or throttling store).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_retryable())
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Journal(e.to_string())
    }
}

/// Unix ms as RFC 3339 UTC seconds (`2026-12-05T08:00:00Z`).
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

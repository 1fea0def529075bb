//! This machine's clock against the store's.
//!
//! Commit times (`time_ms`, what `log` shows and `restore --at` goes by) and
//! hybrid-clock ticks come from the device's wall clock. A machine whose clock
//! is off would stamp its commits wrongly, so the first commit of a command
//! measures the offset to the store's clock ([`ObjectStore::clock_ms`]: the S3
//! `Date` header, or the time a local store's file system stamps on a new file)
//! and, when it is larger than [`TOLERANCE_MS`], stamps with the store's time
//! instead and says so, naming the offset (again only if it changes; it is
//! measured again every [`REMEASURE`]). A device's commit times never go
//! backwards (`device.rs`), whatever the offset does.

use crate::format::version::now_millis;
use crate::store::ObjectStore;

/// Offsets up to this are noise (S3's `Date` has a resolution of one second).
pub const TOLERANCE_MS: i64 = 2_000;

/// How long a measured offset is used before it is measured again (a daemon
/// runs for weeks; NTP may set the clock right meanwhile).
pub const REMEASURE: std::time::Duration = std::time::Duration::from_secs(600);

/// The store's clock minus this machine's, in ms; 0 when within
/// [`TOLERANCE_MS`] or when the store has no clock to read. Warns unless the
/// offset is what it `was` at the last measurement.
pub async fn measure(store: &dyn ObjectStore, was: Option<i64>) -> i64 {
    let before = now_millis();
    let Some(theirs) = store.clock_ms().await else {
        return 0;
    };
    let after = now_millis();
    let mine = before / 2 + after / 2;
    let offset = i64::try_from(i128::from(theirs) - i128::from(mine)).unwrap_or(0);
    if offset.abs() <= TOLERANCE_MS {
        return 0;
    }
    if was.is_some_and(|w| w.abs_diff(offset) <= TOLERANCE_MS.unsigned_abs()) {
        return offset;
    }
    tracing::warn!(
        "this machine's clock is {} {} the store's ({}): commits are stamped with the store's time; set the clock right (NTP)",
        humantime::format_duration(std::time::Duration::from_secs(offset.unsigned_abs() / 1000)),
        if offset > 0 { "behind" } else { "ahead of" },
        store.describe()
    );
    offset
}

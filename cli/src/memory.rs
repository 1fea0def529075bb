//! Process-wide allocator settings.
//!
//! glibc gives each thread that allocates an arena of its own (up to 8 per core)
//! and keeps what is freed in each one; the pipeline's threads (reader, sealers,
//! runtime workers, sled's flusher) then hold memory that no allocation uses. A
//! push of 100,000 small files peaked at 166 MiB RSS for a 91 MiB heap; with one
//! arena, at 91 MiB, in the same time (`/usr/bin/time -v`, README "Memory").
//! Every allocation of coffer's hot paths is per chunk or per pack (recycled), so
//! the single arena's lock is not contended.

/// Limits glibc to one malloc arena unless `MALLOC_ARENA_MAX` says otherwise.
/// Call before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: `mallopt` only changes an allocator tunable; it takes no pointers,
    // and no other thread exists yet to race with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Other allocators need nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

//! The one blocking lock the witness allows in async code. It guards a shard of a table and is
//! held only to look up, insert or remove an entry, never across an `.await`, so it cannot stall
//! a tokio worker; anything slower takes the cluster's own `tokio::sync::Mutex`.
#![allow(clippy::disallowed_types)]

/// A short-held blocking lock (see the module comment for when one may be used).
pub type ShortLock<T> = std::sync::Mutex<T>;

/// The read-mostly form, for a handle that is cloned out under the lock (the store's database).
pub type ShortRwLock<T> = std::sync::RwLock<T>;

/// Locks `m`. A panic while holding one of these locks leaves plain data behind (no invariant
/// spans the critical section), so a poisoned lock keeps serving.
pub fn lock<T>(m: &ShortLock<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

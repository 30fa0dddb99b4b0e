//! For tests: one lock per test binary for what a process shares — torch's random generator (global to the
//! process: a test that seeds it and then draws must not interleave with another that draws) and, for tests that
//! spawn runs, the machine's cores.

use std::sync::{Mutex, MutexGuard};

/// Holds the test binary's lock until dropped; a test that panicked while holding it does not poison it.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

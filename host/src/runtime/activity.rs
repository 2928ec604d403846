//! Whether guest code may be running anywhere on an engine, so the epoch
//! ticker can sleep while none can: a service between syncs, or a sync
//! whose calls all wait on their upstream (most of a rate-limited sync),
//! then costs no wakeups.
//!
//! A guest runs only inside a call. A call counts as running from its start
//! to its end ([`GuestActivity::enter`]), except while it waits in an import
//! that can take long ([`GuestActivity::wait`], around the HTTP send). Both
//! are guards, so a call cut off by its wall clock or a trap counts itself
//! out as its future is dropped. A miscount can only ever leave the count
//! too high (the ticker then ticks for nothing): it never reaches zero
//! while a call is between `enter` and the end of its guard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
pub struct GuestActivity {
    /// Calls able to run guest code now.
    running: Mutex<usize>,
    started: Condvar,
    /// Epoch ticks so far (for tests and diagnostics).
    ticks: AtomicU64,
}

/// A call counted as running until dropped.
#[must_use]
pub struct Running(Arc<GuestActivity>);

/// A running call counted out while it waits, until dropped.
#[must_use]
pub struct Waiting(Arc<GuestActivity>);

impl GuestActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn count(&self) -> MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn up(&self) {
        let mut running = self.count();
        *running += 1;
        if *running == 1 {
            self.started.notify_all();
        }
    }

    fn down(&self) {
        let mut running = self.count();
        *running = running.saturating_sub(1);
    }

    /// Counts a call as running: the ticker ticks until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.up();
        Running(self.clone())
    }

    /// Counts a running call out while it waits for the host; it runs again
    /// when the guard drops (before the import returns to the guest).
    pub fn wait(self: &Arc<Self>) -> Waiting {
        self.down();
        Waiting(self.clone())
    }

    /// Whether a call is running, waiting up to `patience` for one to start.
    pub fn wait_for_guest(&self, patience: Duration) -> bool {
        // Returns at once when one already is.
        let (running, _) = self.started.wait_timeout_while(self.count(), patience, |running| *running == 0).unwrap_or_else(|poisoned| poisoned.into_inner());
        *running > 0
    }

    pub fn record_tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Epoch ticks since the engine started.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Calls counted as running now.
    pub fn running(&self) -> usize {
        *self.count()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.down();
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_as_running_except_while_it_waits() {
        let activity = GuestActivity::new();
        assert!(!activity.wait_for_guest(Duration::ZERO));
        let call = activity.enter();
        let other = activity.enter();
        assert_eq!(activity.running(), 2);
        let waiting = activity.wait();
        assert_eq!(activity.running(), 1);
        drop(other);
        assert!(!activity.wait_for_guest(Duration::ZERO), "the only call left waits");
        drop(waiting);
        assert!(activity.wait_for_guest(Duration::ZERO), "back in the guest");
        drop(call);
        assert_eq!(activity.running(), 0);
    }

    #[test]
    fn a_miscount_leaves_the_ticker_ticking_never_stopped() {
        let activity = GuestActivity::new();
        // A wait with no call around it cannot take the count below zero,
        // so a call after it still counts.
        drop(activity.wait());
        let _call = activity.enter();
        assert!(activity.running() >= 1);
    }

    #[test]
    fn a_call_starting_wakes_the_waiting_ticker() {
        let activity = GuestActivity::new();
        let waiter = {
            let activity = activity.clone();
            std::thread::spawn(move || activity.wait_for_guest(Duration::from_secs(60)))
        };
        // Whenever the waiter gets to look, a call is running or starts.
        let _call = activity.enter();
        assert!(waiter.join().unwrap());
    }
}

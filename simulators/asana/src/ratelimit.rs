//! Asana-style rate limiting: a per-minute request budget, caps on concurrent reads and
//! writes, plus injected 429s so connectors' retry paths get exercised.
//!
//! Only one token is ever accepted, so "per token" is a single limiter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::lock;

const WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct RateLimiter {
    budget: usize,
    /// Times of the admitted requests in the last minute (sliding window).
    window: Mutex<VecDeque<Instant>>,
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    inject_rate: f64,
    rng: Mutex<ChaCha8Rng>,
    forced: AtomicU32,
    retry_after_secs: u64,
}

/// Why a request was turned away, and when to come back.
#[derive(Debug)]
pub(crate) struct Limited {
    pub retry_after_secs: u64,
    pub reason: &'static str,
}

/// Held while the request is served; frees its concurrency slot on drop.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl RateLimiter {
    pub fn new(per_minute_budget: u32, max_reads: usize, max_writes: usize, inject_429_rate: f64, retry_after_secs: u64, seed: u64) -> Self {
        let cap = |n: usize| n.min(Semaphore::MAX_PERMITS);
        RateLimiter {
            budget: per_minute_budget as usize,
            window: Mutex::new(VecDeque::new()),
            reads: Arc::new(Semaphore::new(cap(max_reads))),
            writes: Arc::new(Semaphore::new(cap(max_writes))),
            // NaN or out-of-range rates would make the rng panic.
            inject_rate: if inject_429_rate.is_finite() { inject_429_rate.clamp(0.0, 1.0) } else { 0.0 },
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            forced: AtomicU32::new(0),
            retry_after_secs,
        }
    }

    pub fn force_next(&self, n: u32) {
        self.forced.store(n, Ordering::SeqCst);
    }

    /// Admits a request or says why not. Checks forced and injected 429s first (they model
    /// Asana being busy), then concurrency, then the per-minute budget; a rejected request
    /// does not use up budget.
    pub fn admit(&self, is_read: bool) -> Result<Admission, Limited> {
        let limited = |reason| Limited { retry_after_secs: self.retry_after_secs, reason };
        if self.forced.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(limited("forced"));
        }
        if self.inject_rate > 0.0 && lock(&self.rng).random_bool(self.inject_rate) {
            return Err(limited("injected"));
        }
        let sem = if is_read { &self.reads } else { &self.writes };
        let permit = sem.clone().try_acquire_owned().map_err(|_| limited(if is_read { "concurrent reads" } else { "concurrent writes" }))?;

        let now = Instant::now();
        let mut window = lock(&self.window);
        while window.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            window.pop_front();
        }
        if window.len() >= self.budget {
            // Tell the truth about when a slot frees up, but never less than configured.
            let frees_in = window.front().map_or(WINDOW, |t| WINDOW.saturating_sub(now.duration_since(*t)));
            let secs = frees_in.as_secs() + u64::from(frees_in.subsec_nanos() > 0);
            return Err(Limited { retry_after_secs: secs.max(self.retry_after_secs), reason: "per-minute budget" });
        }
        window.push_back(now);
        Ok(Admission { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_forced() {
        let rl = RateLimiter::new(3, 10, 10, 0.0, 1, 0);
        rl.force_next(1);
        assert_eq!(rl.admit(true).err().unwrap().reason, "forced");
        let held: Vec<_> = (0..3).map(|_| rl.admit(true).unwrap()).collect();
        let err = rl.admit(false).err().unwrap();
        assert_eq!(err.reason, "per-minute budget");
        assert!(err.retry_after_secs >= 59);
        drop(held);
    }

    #[test]
    fn concurrency_cap() {
        let rl = RateLimiter::new(100, 1, 1, 0.0, 2, 0);
        let a = rl.admit(true).unwrap();
        assert_eq!(rl.admit(true).err().unwrap().retry_after_secs, 2);
        let _w = rl.admit(false).unwrap();
        drop(a);
        assert!(rl.admit(true).is_ok());
    }

    #[test]
    fn injection_is_seeded() {
        let run = || {
            let rl = RateLimiter::new(10_000, 10, 10, 0.3, 1, 9);
            (0..200).map(|_| rl.admit(true).is_err()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|x| **x).count();
        assert!((30..=90).contains(&hits), "{hits}");
    }
}

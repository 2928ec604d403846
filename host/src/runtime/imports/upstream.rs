//! What every request to one upstream host waits for, shared by all the
//! instances of a pool (they hold one [`super::http::HttpGateway`]): the
//! host's rate budget (governor's GCRA), a cap on requests in flight to it
//! (a semaphore per host), and a pause after a 429 that every worker
//! honours until its Retry-After has passed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The longest pause one Retry-After can impose on every worker.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);

pub struct HostThrottle {
    /// Requests per minute per host, bursts allowed.
    rate: DefaultKeyedRateLimiter<String>,
    /// Requests in flight per host; read when a host is first seen.
    concurrency: AtomicUsize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    paused_until: Mutex<HashMap<String, Instant>>,
}

impl HostThrottle {
    pub fn new(per_minute: u32, concurrency: usize) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        HostThrottle {
            rate: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(per_minute)),
            concurrency: AtomicUsize::new(concurrency.max(1)),
            slots: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the cap on requests in flight per host, for hosts not yet seen
    /// (a pool sets it before its first request).
    pub fn set_concurrency(&self, concurrency: usize) {
        self.concurrency.store(concurrency.max(1), Ordering::Relaxed);
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Relaxed)
    }

    /// Waits until a request to `host` may go: past any pause, with a slot
    /// (held by the returned permit while the request is in flight), within
    /// the rate budget.
    pub async fn acquire(&self, host: &str) -> OwnedSemaphorePermit {
        self.wait_out_pause(host).await;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.concurrency()))).clone()
        };
        // The semaphore is never closed.
        let permit = slot.acquire_owned().await.expect("host slots are never closed");
        self.rate.until_key_ready(&host.to_string()).await;
        // A 429 may have come in while this request waited its turn.
        self.wait_out_pause(host).await;
        permit
    }

    /// Holds every request to `host` back for `wait` (at most [`MAX_PAUSE`]),
    /// or longer if an earlier pause lasts longer.
    pub fn pause(&self, host: &str, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_PAUSE);
        let mut paused = self.paused_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = paused.entry(host.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }

    async fn wait_out_pause(&self, host: &str) {
        let until = self.paused_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(host).copied();
        if let Some(until) = until {
            if until > Instant::now() {
                tokio::time::sleep_until(until).await;
            }
        }
    }
}

/// The wait a 429's `Retry-After` asks for, when given in seconds (the
/// HTTP-date form is left to the connector, which reports it).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_holds_every_request_to_its_host_only() {
        let throttle = Arc::new(HostThrottle::new(60_000, 4));
        throttle.pause("a.example", Duration::from_millis(300));
        let started = Instant::now();
        drop(throttle.acquire("b.example").await);
        assert!(started.elapsed() < Duration::from_millis(250), "another host is not paused");
        drop(throttle.acquire("a.example").await);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A shorter pause does not cut a longer one short.
        throttle.pause("a.example", Duration::from_millis(400));
        throttle.pause("a.example", Duration::from_millis(1));
        let again = Instant::now();
        drop(throttle.acquire("a.example").await);
        assert!(again.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn requests_in_flight_per_host_are_capped() {
        let throttle = Arc::new(HostThrottle::new(60_000, 2));
        let first = throttle.acquire("a.example").await;
        let _second = throttle.acquire("a.example").await;
        let third = tokio::time::timeout(Duration::from_millis(50), throttle.acquire("a.example")).await;
        assert!(third.is_err(), "a third request waits for a slot");
        drop(first);
        let _fourth = tokio::time::timeout(Duration::from_secs(5), throttle.acquire("a.example")).await.expect("a freed slot is taken");
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}

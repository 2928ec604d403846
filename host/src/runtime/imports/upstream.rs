//! What every request to one upstream host waits for, shared by all the
//! instances of a pool (they hold one [`super::http::HttpGateway`]): the
//! host's rate budget (a sliding minute, [`MinuteWindow`]), caps on reads
//! and on writes in flight to it (a semaphore per host and kind), and a
//! pause after a 429 that every worker honours until its Retry-After has
//! passed. The numbers are the connector's declared limits unless the
//! operator says otherwise ([`crate::runtime::upstream_limits`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::runtime::upstream_limits::UpstreamSettings;

/// The longest pause one Retry-After can impose on every worker.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);

/// Reads and writes are capped apart, as upstreams count them (Asana: 50
/// concurrent reads, 15 concurrent writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// GET (and HEAD).
    Read,
    /// Every other method.
    Write,
}

pub struct HostThrottle {
    /// Requests per minute per host; replaced (with its counts) when the
    /// settings change, before the first request.
    rate: RwLock<Arc<MinuteWindow>>,
    /// What is in use and why; the caps are read when a host is first seen.
    settings: RwLock<UpstreamSettings>,
    slots: Mutex<HashMap<(String, Access), Arc<Semaphore>>>,
    paused_until: Mutex<HashMap<String, Instant>>,
}

/// The budget's window: an upstream counts its limit over a sliding minute
/// (Asana, the simulator). A second more allows for answers that take
/// longer to arrive than the ones before them.
const WINDOW: Duration = Duration::from_secs(61);

/// At most `per_minute` requests to a host in any [`WINDOW`]: the send
/// times of each host's requests in the last window. A quiet host gets its
/// whole minute at once (a small sync never waits for the budget). A
/// token bucket (governor's GCRA) cannot promise this: with a minute's
/// burst it sends twice the budget in the first minute, and every worker
/// then waits out the 429s; without one, a small sync is paced for
/// nothing.
struct MinuteWindow {
    per_minute: usize,
    window: Duration,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl MinuteWindow {
    fn new(per_minute: u32) -> Arc<Self> {
        Arc::new(Self::over(per_minute, WINDOW))
    }

    fn over(per_minute: u32, window: Duration) -> Self {
        MinuteWindow { per_minute: (per_minute as usize).max(1), window, sent: Mutex::new(HashMap::new()) }
    }

    /// Waits until a request to `host` fits in the window, and counts it.
    async fn until_ready(&self, host: &str) {
        loop {
            let frees_at = {
                let mut sent = self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let times = sent.entry(host.to_string()).or_default();
                let now = Instant::now();
                while times.front().is_some_and(|&at| now.duration_since(at) >= self.window) {
                    times.pop_front();
                }
                match times.front() {
                    Some(&oldest) if times.len() >= self.per_minute => oldest + self.window,
                    _ => {
                        times.push_back(now);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(frees_at).await;
        }
    }
}

impl HostThrottle {
    pub fn new(settings: UpstreamSettings) -> Self {
        HostThrottle {
            rate: RwLock::new(MinuteWindow::new(settings.requests_per_minute.value)),
            settings: RwLock::new(settings),
            slots: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the rate and the caps per host (a connector's declared limits
    /// once its metadata is read, before its first request).
    pub fn configure(&self, settings: UpstreamSettings) {
        let current = *self.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current == settings {
            return;
        }
        if current.requests_per_minute.value != settings.requests_per_minute.value {
            *self.rate.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = MinuteWindow::new(settings.requests_per_minute.value);
        }
        *self.settings.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// What is in use, and why.
    pub fn settings(&self) -> UpstreamSettings {
        *self.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cap on requests of one kind in flight to one host.
    pub fn cap(&self, access: Access) -> usize {
        let settings = self.settings();
        match access {
            Access::Read => settings.concurrent_reads.value,
            Access::Write => settings.concurrent_writes.value,
        }
        .max(1)
    }

    /// Waits until a request to `host` may go: past any pause, with a slot
    /// of its kind (held by the returned permit while the request is in
    /// flight), within the rate budget.
    pub async fn acquire(&self, host: &str, access: Access) -> OwnedSemaphorePermit {
        self.wait_out_pause(host).await;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry((host.to_string(), access)).or_insert_with(|| Arc::new(Semaphore::new(self.cap(access)))).clone()
        };
        // The semaphore is never closed.
        let permit = slot.acquire_owned().await.expect("host slots are never closed");
        let rate = self.rate.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        rate.until_ready(host).await;
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
    use crate::runtime::upstream_limits::{UpstreamLimits, UpstreamOverrides};

    fn throttle(per_minute: u32, reads: usize, writes: usize) -> Arc<HostThrottle> {
        let operator = UpstreamOverrides { requests_per_minute: Some(per_minute), concurrent_reads: Some(reads), concurrent_writes: Some(writes) };
        Arc::new(HostThrottle::new(UpstreamSettings::resolve(&UpstreamLimits::default(), &operator)))
    }

    #[tokio::test]
    async fn a_pause_holds_every_request_to_its_host_only() {
        let throttle = throttle(60_000, 4, 4);
        throttle.pause("a.example", Duration::from_millis(300));
        let started = Instant::now();
        drop(throttle.acquire("b.example", Access::Read).await);
        assert!(started.elapsed() < Duration::from_millis(250), "another host is not paused");
        drop(throttle.acquire("a.example", Access::Read).await);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A shorter pause does not cut a longer one short.
        throttle.pause("a.example", Duration::from_millis(400));
        throttle.pause("a.example", Duration::from_millis(1));
        let again = Instant::now();
        drop(throttle.acquire("a.example", Access::Read).await);
        assert!(again.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn requests_in_flight_per_host_are_capped() {
        let throttle = throttle(60_000, 2, 1);
        let first = throttle.acquire("a.example", Access::Read).await;
        let _second = throttle.acquire("a.example", Access::Read).await;
        let third = tokio::time::timeout(Duration::from_millis(50), throttle.acquire("a.example", Access::Read)).await;
        assert!(third.is_err(), "a third request waits for a slot");
        drop(first);
        let _fourth = tokio::time::timeout(Duration::from_secs(5), throttle.acquire("a.example", Access::Read)).await.expect("a freed slot is taken");
        // Writes have their own cap: reads in flight do not hold them back.
        let _write = tokio::time::timeout(Duration::from_secs(5), throttle.acquire("a.example", Access::Write)).await.expect("a write slot");
        let second_write = tokio::time::timeout(Duration::from_millis(50), throttle.acquire("a.example", Access::Write)).await;
        assert!(second_write.is_err(), "one write in flight at most");
    }

    #[tokio::test]
    async fn a_quiet_host_gets_its_whole_budget_at_once_and_no_window_holds_more() {
        // A "minute" of 300 ms, to keep the test short.
        let window = MinuteWindow::over(20, Duration::from_millis(300));
        let started = Instant::now();
        for _ in 0..20 {
            window.until_ready("a.example").await;
        }
        assert!(started.elapsed() < Duration::from_millis(150), "the budget at once: {:?}", started.elapsed());
        window.until_ready("b.example").await;
        assert!(started.elapsed() < Duration::from_millis(150), "each host has its own");
        window.until_ready("a.example").await;
        assert!(started.elapsed() >= Duration::from_millis(300), "the 21st waits until the first leaves the window: {:?}", started.elapsed());
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

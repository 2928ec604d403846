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

use crate::runtime::upstream_limits::{UpstreamLimits, UpstreamOverrides, UpstreamSettings};

/// The longest pause one Retry-After can impose on every worker.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);

/// How long the calls of one instance waited out the pause a 429 put on
/// their host (up to [`MAX_PAUSE`], as long as the default call limit):
/// time the call's wall-clock limit does not count, up to one pause a
/// call, since the upstream and the host, not the connector, spent it. The
/// waits for the rate budget and the caps in flight do count: a connector
/// flooding a host must still meet its limit. One call at a time runs on
/// an instance.
#[derive(Default)]
pub struct HeldTime(std::sync::Mutex<Held>);

#[derive(Default)]
struct Held {
    total: Duration,
    since: Option<Instant>,
}

/// A hold in progress, until dropped.
#[must_use]
pub struct Holding<'a>(&'a HeldTime);

impl HeldTime {
    fn state(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn hold(&self) -> Holding<'_> {
        self.state().since.get_or_insert_with(Instant::now);
        Holding(self)
    }

    /// Held so far, the hold in progress included.
    pub fn held(&self) -> Duration {
        let state = self.state();
        state.total + state.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if let Some(since) = state.since.take() {
            state.total += since.elapsed();
        }
    }
}

/// Reads and writes are capped apart, as upstreams count them (Asana: 50
/// concurrent reads, 15 concurrent writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// GET (and HEAD).
    Read,
    /// Every other method.
    Write,
}

/// One upstream budget: shared by the instances of a pool, and under
/// `serve` by every sync and API write of one instance.
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
/// (Asana, the simulator), with a tenth of a second for timers that fire
/// late.
const WINDOW: Duration = Duration::from_millis(60_100);

/// At most `per_minute` requests to a host in any [`WINDOW`]. A quiet host
/// gets its whole minute at once (a small sync never waits for the
/// budget). A token bucket (governor's GCRA) cannot promise this: with a
/// minute's burst it sends twice the budget in the first minute, and every
/// worker then waits out the 429s; without one, a small sync is paced for
/// nothing.
///
/// An upstream counts a request when it admits it, at some moment between
/// the send and the answer: a request that waited there (latency, a busy
/// server) is counted later than it was sent, and a window of send times
/// lets a new request in while the upstream still counts the old one. So a
/// request holds its place from its send until its answer is in
/// ([`Counted`]), and for a window after that: no upstream's window can
/// hold more than the budget, however late it counts.
struct MinuteWindow {
    per_minute: usize,
    window: Duration,
    hosts: Mutex<HashMap<String, HostWindow>>,
    /// Times a request went to sleep waiting for a place (for tests).
    sleeps: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct HostWindow {
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// When the answers of the last window came in, oldest first.
    answered: VecDeque<Instant>,
    /// The turn to wait for a place: one request per host waits on the
    /// window's timer, the others queue behind it in arrival order. Without
    /// it, every waiting request woke at each freed place and all but one
    /// went back to sleep: with 50 waiting, 50 wake-ups per request sent.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A request counted against its host's budget while it is in flight; its
/// answer's time is recorded when it is dropped.
pub struct Counted {
    window: Arc<MinuteWindow>,
    host: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut hosts = self.window.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(host) = hosts.get_mut(&self.host) {
            host.in_flight = host.in_flight.saturating_sub(1);
            host.answered.push_back(Instant::now());
        }
    }
}

impl MinuteWindow {
    fn new(per_minute: u32) -> Arc<Self> {
        Arc::new(Self::over(per_minute, WINDOW))
    }

    fn over(per_minute: u32, window: Duration) -> Self {
        MinuteWindow { per_minute: (per_minute as usize).max(1), window, hosts: Mutex::new(HashMap::new()), sleeps: Default::default() }
    }

    /// Waits until a request to `host` fits in the window, and counts it
    /// until the returned [`Counted`] is dropped.
    async fn until_ready(self: &Arc<Self>, host: &str) -> Counted {
        let turn = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(&hosts.entry(host.to_string()).or_default().turn)
        };
        let _turn = turn.lock().await;
        loop {
            let frees_at = {
                let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let counts = hosts.entry(host.to_string()).or_default();
                let now = Instant::now();
                while counts.answered.front().is_some_and(|&at| now.duration_since(at) >= self.window) {
                    counts.answered.pop_front();
                }
                if counts.in_flight + counts.answered.len() < self.per_minute {
                    counts.in_flight += 1;
                    return Counted { window: Arc::clone(self), host: host.to_string() };
                }
                // Every place is taken: the oldest answer frees one a window
                // after it came; with all of them in flight, none frees
                // sooner than a window from now.
                counts.answered.front().map_or(now + self.window, |&oldest| oldest + self.window)
            };
            self.sleeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep_until(frees_at).await;
        }
    }
}

/// What a request holds while it is in flight: a slot of its kind and its
/// place in the rate budget.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    _counted: Counted,
}

impl std::fmt::Debug for HostThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostThrottle").field("settings", &self.settings()).finish_non_exhaustive()
    }
}

impl HostThrottle {
    /// A budget before the connector's metadata is read: the operator's
    /// overrides, else the host's defaults (see [`HostThrottle::configure`]).
    pub fn undeclared(operator: &UpstreamOverrides) -> Self {
        Self::new(UpstreamSettings::resolve(&UpstreamLimits::default(), operator))
    }

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
    /// of its kind, within the rate budget. Both are held by the returned
    /// admission until the answer is read.
    pub async fn acquire(&self, host: &str, access: Access) -> Admission {
        self.acquire_held(host, access, None).await
    }

    /// `acquire`, adding the time spent waiting out a 429's pause to
    /// `held` (see [`HeldTime`]).
    pub async fn acquire_held(&self, host: &str, access: Access, held: Option<&HeldTime>) -> Admission {
        self.wait_out_pause_held(host, held).await;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry((host.to_string(), access)).or_insert_with(|| Arc::new(Semaphore::new(self.cap(access)))).clone()
        };
        // The semaphore is never closed.
        let permit = slot.acquire_owned().await.expect("host slots are never closed");
        let rate = self.rate.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let counted = rate.until_ready(host).await;
        // A 429 may have come in while this request waited its turn.
        self.wait_out_pause_held(host, held).await;
        Admission { _slot: permit, _counted: counted }
    }

    async fn wait_out_pause_held(&self, host: &str, held: Option<&HeldTime>) {
        let _holding = held.map(HeldTime::hold);
        self.wait_out_pause(host).await;
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

/// The wait a 429's `Retry-After` asks for, in either of its forms (RFC
/// 9110, 10.2.3): seconds, or an HTTP date (a date passed is no wait).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// One `Retry-After` value read as [`retry_after`] does.
pub fn retry_after_value(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
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
        let window = Arc::new(MinuteWindow::over(20, Duration::from_millis(300)));
        let started = Instant::now();
        for _ in 0..20 {
            drop(window.until_ready("a.example").await);
        }
        assert!(started.elapsed() < Duration::from_millis(150), "the budget at once: {:?}", started.elapsed());
        drop(window.until_ready("b.example").await);
        assert!(started.elapsed() < Duration::from_millis(150), "each host has its own");
        drop(window.until_ready("a.example").await);
        assert!(started.elapsed() >= Duration::from_millis(300), "the 21st waits until the first leaves the window: {:?}", started.elapsed());
    }

    /// Requests waiting for the budget go in the order they came: one waits
    /// on the window, the others behind it (none starves, and a freed place
    /// wakes one request, not all of them).
    #[tokio::test]
    async fn requests_waiting_for_the_budget_go_in_arrival_order() {
        let window = Arc::new(MinuteWindow::over(1, Duration::from_millis(40)));
        drop(window.until_ready("a.example").await);
        let order = Arc::new(Mutex::new(vec![]));
        let mut waiting = vec![];
        for n in 0..6 {
            let (window, order) = (Arc::clone(&window), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                drop(window.until_ready("a.example").await);
                order.lock().unwrap().push(n);
            }));
            // One thread: the task runs until it waits, before the next is spawned.
            tokio::task::yield_now().await;
        }
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..6).collect::<Vec<_>>());
        // Each slept once, for the place it took: not once per place freed
        // while it waited (21 sleeps).
        assert_eq!(window.sleeps.load(std::sync::atomic::Ordering::Relaxed), 6);
    }

    /// An upstream may count a request as late as its answer: the place it
    /// holds frees a window after the answer, not after the send.
    #[tokio::test]
    async fn a_request_holds_its_place_until_a_window_after_its_answer() {
        let window = Arc::new(MinuteWindow::over(1, Duration::from_millis(300)));
        let started = Instant::now();
        let slow = window.until_ready("a.example").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(slow);
        let answered = Instant::now();
        drop(window.until_ready("a.example").await);
        assert!(
            answered.elapsed() >= Duration::from_millis(300),
            "the next waits a window from the answer, {:?} after it (sent {:?} after the first)",
            answered.elapsed(),
            started.elapsed()
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        // A date passed: no wait.
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let wait = retry_after_value(&soon).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(retry_after_value("-5"), None);
        assert_eq!(retry_after_value("soon"), None);
    }
}

//! The limits one connector instance runs under. Every limit has a safe
//! default and can be changed by the operator.

use std::time::Duration;

use super::upstream_limits::UpstreamOverrides;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Linear memory all the instances of one pool may hold together.
    pub pool_memory_bytes: usize,
    /// Elements per table, tables, memories and instances per store.
    pub table_elements: usize,
    pub instances: usize,
    /// CPU time one call may use, measured in epoch ticks of `EPOCH_TICK`.
    pub cpu_per_call: Duration,
    /// Wall-clock time one call may take, waits on HTTP included.
    pub wall_per_call: Duration,
    /// Records (resources + entitlements + grants) one page may carry.
    pub records_per_page: usize,
    /// Bytes of strings one page may carry (checked once the page is in the
    /// host; `hostcall_bytes` bounds what the host copies to get it there).
    pub bytes_per_page: usize,
    /// Log lines and log bytes per call.
    pub log_lines_per_call: usize,
    pub log_bytes_per_line: usize,
    /// Log bytes a second the instances of one pool may write together
    /// (lines past it are dropped and counted; see `imports::log::LogRate`).
    pub log_bytes_per_second: usize,
    /// Size of one HTTP response body.
    pub http_response_bytes: usize,
    /// Time one HTTP request may take.
    pub http_timeout: Duration,
    /// HTTP requests one call may make: a list call needs one, a write a
    /// few; a guest looping on `send` is stopped here.
    pub http_requests_per_call: usize,
    /// The operator's requests per minute to any one host (with that many
    /// in a burst), reads and writes in flight to one host across the
    /// instances of a pool. None: what the connector declares (clamped),
    /// else the host's default (see `upstream_limits`). A connector cannot
    /// hammer an upstream with the operator's token: requests past them wait.
    pub upstream: UpstreamOverrides,
    /// Times one idempotent request (a GET, or one carrying an
    /// `Idempotency-Key` header) is tried again after a 500, 502, 503 or
    /// 504, a timeout or a broken connection. Other writes are tried again
    /// only when the connection could not be made (nothing was sent).
    pub http_retries: u32,
    /// Wait before the first retry; each further one doubles it, up to
    /// `http_retry_max_delay`, plus random jitter of up to as much again.
    pub http_retry_base: Duration,
    pub http_retry_max_delay: Duration,
    /// Retries one connector instance (one sync, one provisioning command)
    /// may make in all: an upstream that keeps failing ends the sync rather
    /// than multiplying its load. Past it a failure goes to the connector.
    pub http_retry_budget: u32,
    /// Bytes the host may allocate to copy what the guest hands it in one
    /// call, either way: an import's arguments or an export's result
    /// (wasmtime's hostcall fuel). Keep it above `bytes_per_page`.
    pub hostcall_bytes: usize,
    /// Live handles (WASI streams and the like) the guest may hold in the
    /// host's tables.
    pub resource_handles: usize,
    /// Bytes the connector's storage namespace may hold.
    pub storage_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            // The old worst case: 16 instances of 64 MiB.
            pool_memory_bytes: 1 << 30,
            table_elements: 20_000,
            instances: 16,
            cpu_per_call: Duration::from_secs(10),
            wall_per_call: Duration::from_secs(120),
            records_per_page: 10_000,
            bytes_per_page: 8 << 20,
            log_lines_per_call: 1_000,
            log_bytes_per_line: 4_096,
            log_bytes_per_second: 64 << 10,
            http_response_bytes: 16 << 20,
            http_timeout: Duration::from_secs(30),
            http_requests_per_call: 100,
            upstream: UpstreamOverrides::default(),
            http_retries: 4,
            http_retry_base: Duration::from_millis(250),
            http_retry_max_delay: Duration::from_secs(8),
            http_retry_budget: 200,
            hostcall_bytes: 32 << 20,
            resource_handles: 1_000,
            storage_bytes: 1 << 20,
        }
    }
}

/// Bounds on one whole sync, whatever the connector reports: a connector
/// whose types nest without end, or that pages forever, fails the sync with
/// the limit named instead of filling the disk.
#[derive(Debug, Clone)]
pub struct SyncLimits {
    /// Records (resources + entitlements + grants) one sync may report.
    pub records: u64,
    /// Listings between a top-level listing and the deepest resource.
    pub depth: u32,
    /// Pages one listing may take.
    pub pages_per_listing: u64,
    /// Wall-clock time of the whole sync.
    pub duration: Duration,
    /// Listings at once, each on its own instance of the connector; also
    /// the cap on reads in flight to one upstream host. None: the
    /// connector's declared concurrent reads (clamped), else the host's
    /// default.
    pub concurrency: Option<usize>,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            // 100k users in 2k teams is about 2M grants; leave room.
            records: 50_000_000,
            depth: 32,
            pages_per_listing: 100_000,
            duration: Duration::from_secs(12 * 3600),
            concurrency: None,
        }
    }
}

/// A limit the guest ran into; ends the call that hit it.
#[derive(Debug, thiserror::Error)]
#[error("limit exceeded: {limit}: {detail}")]
pub struct LimitExceeded {
    pub limit: &'static str,
    pub detail: String,
}

impl LimitExceeded {
    pub fn new(limit: &'static str, detail: impl Into<String>) -> Self {
        LimitExceeded { limit, detail: detail.into() }
    }
}

/// One per-call budget (log lines, HTTP requests): what the current call
/// has used of it. Kept by the import that charges it; reset before every
/// call into the guest.
#[derive(Debug)]
pub struct CallBudget {
    used: usize,
    cap: usize,
    /// The limit's name, as `limit exceeded: <limit>` says it.
    limit: &'static str,
    /// What is counted, in the error's words.
    what: &'static str,
}

impl CallBudget {
    pub fn new(cap: usize, limit: &'static str, what: &'static str) -> Self {
        CallBudget { used: 0, cap, limit, what }
    }

    /// Counts one more use; past the cap the call ends with the limit named.
    pub fn charge(&mut self) -> Result<(), LimitExceeded> {
        self.used += 1;
        if self.used > self.cap {
            return Err(LimitExceeded::new(self.limit, format!("more than {} {} in one call", self.cap, self.what)));
        }
        Ok(())
    }

    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Uses counted since the last reset.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// The CPU one call may use, in epoch ticks: the engine's epoch callback
/// counts a tick each time the deadline passes.
#[derive(Debug)]
pub struct CpuBudget {
    used: u64,
    ticks: u64,
    per_call: Duration,
}

impl CpuBudget {
    pub fn new(per_call: Duration) -> Self {
        let ticks = (per_call.as_millis() / crate::runtime::engine::EPOCH_TICK.as_millis()).max(1) as u64;
        CpuBudget { used: 0, ticks, per_call }
    }

    /// Counts one more tick of guest code; past the budget the call ends.
    pub fn tick(&mut self) -> Result<(), LimitExceeded> {
        self.used += 1;
        if self.used > self.ticks {
            return Err(LimitExceeded::new("cpu", format!("the call ran for more than {:?} of CPU", self.per_call)));
        }
        Ok(())
    }

    pub fn reset(&mut self) {
        self.used = 0;
    }
}

//! The `log` import: the connector's diagnostics go to tracing, capped per
//! call and per second, and scrubbed of secrets.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::HasData;

use crate::runtime::bindings::tether::connector::log::{self, Level};
use crate::runtime::imports::config::Secrets;
use crate::runtime::limits::{CallBudget, Limits};

/// Bytes of log the instances of one pool may write: a token bucket
/// refilled at `--max-log-kb-per-second`, holding up to
/// [`LogRate::BURST_SECONDS`] of it. The per-call line cap alone let a
/// connector write 4 MiB a page, over 100 MiB a second, for a sync that
/// succeeds. Lines past the rate are dropped and counted, not fatal: a
/// chatty connector still syncs.
pub struct LogRate {
    per_second: f64,
    bucket: Mutex<LogBucket>,
    /// Names the connector in the count of lines dropped.
    connector_label: String,
}

struct LogBucket {
    bytes: f64,
    at: Instant,
    dropped: u64,
}

/// What the rate says of one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write it, after saying how many lines were dropped before it.
    Write {
        dropped_before: u64,
    },
    Drop,
}

impl LogRate {
    /// Seconds of the rate a quiet connector may write at once.
    pub const BURST_SECONDS: f64 = 16.0;

    pub fn new(bytes_per_second: usize, connector_label: String) -> Arc<Self> {
        let per_second = bytes_per_second as f64;
        let bucket = Mutex::new(LogBucket { bytes: per_second * Self::BURST_SECONDS, at: Instant::now(), dropped: 0 });
        Arc::new(LogRate { per_second, bucket, connector_label })
    }

    fn warn_dropped(&self, dropped: u64) {
        let connector = &self.connector_label;
        tracing::warn!(
            target: "connector",
            connector,
            "{dropped} log line(s) of this connector dropped: more than {} bytes a second (--max-log-kb-per-second)",
            self.per_second
        );
    }

    /// Takes `bytes` from the bucket if it holds them.
    pub fn admit(&self, bytes: usize) -> Admit {
        self.admit_at(bytes, Instant::now())
    }

    fn admit_at(&self, bytes: usize, now: Instant) -> Admit {
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.bytes = (bucket.bytes + refill).min(self.per_second * Self::BURST_SECONDS);
        bucket.at = now;
        if bucket.bytes < bytes as f64 {
            bucket.dropped += 1;
            return Admit::Drop;
        }
        bucket.bytes -= bytes as f64;
        Admit::Write { dropped_before: std::mem::take(&mut bucket.dropped) }
    }
}

/// Lines dropped since the last one written are told when the pool ends.
impl Drop for LogRate {
    fn drop(&mut self) {
        let dropped = self.bucket.get_mut().map(|b| b.dropped).unwrap_or_else(|poisoned| poisoned.into_inner().dropped);
        if dropped > 0 {
            self.warn_dropped(dropped);
        }
    }
}

/// What the `log` import needs: whose lines these are, what to redact from
/// them, how long one may be, the current call's line budget and the
/// pool's rate.
pub struct LogCtx {
    /// Names the connector in logs.
    pub connector_label: String,
    pub secrets: Arc<Secrets>,
    pub max_bytes_per_line: usize,
    /// Lines the current call has logged, against `log-lines`.
    pub lines: CallBudget,
    pub rate: Arc<LogRate>,
}

impl LogCtx {
    pub fn new(connector_label: String, secrets: Arc<Secrets>, limits: &Limits, rate: Arc<LogRate>) -> Self {
        LogCtx {
            connector_label,
            secrets,
            max_bytes_per_line: limits.log_bytes_per_line,
            lines: CallBudget::new(limits.log_lines_per_call, "log-lines", "log lines"),
            rate,
        }
    }

    /// Before every call into the guest: a fresh line budget.
    pub fn begin_call(&mut self) {
        self.lines.reset();
    }
}

/// Links `log` with a projection onto a [`LogCtx`].
pub struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogCtx;
}

impl log::Host for LogCtx {
    async fn emit(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.lines.charge()?;
        // Weighed before the work of redacting and escaping it.
        let dropped_before = match self.rate.admit(message.len().min(self.max_bytes_per_line)) {
            Admit::Drop => return Ok(()),
            Admit::Write { dropped_before } => dropped_before,
        };
        if dropped_before > 0 {
            self.rate.warn_dropped(dropped_before);
        }
        let connector = &self.connector_label;
        // Redacted, then escaped: one guest line is one host line, and it can
        // neither drive the terminal nor pass for a line of the host's.
        // Cut before anything else (a 30 MiB line cost 380 MB to escape),
        // leaving room for a secret that starts before the cap to be
        // redacted whole.
        let raw = crate::terminal::clip(&message, self.max_bytes_per_line + self.secrets.longest());
        let mut message = crate::terminal::escape(&self.secrets.redact(&raw)).into_owned();
        if message.len() > self.max_bytes_per_line {
            let mut end = self.max_bytes_per_line;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        match level {
            Level::Trace => tracing::trace!(target: "connector", connector, "{message}"),
            Level::Debug => tracing::debug!(target: "connector", connector, "{message}"),
            Level::Info => tracing::info!(target: "connector", connector, "{message}"),
            Level::Warn => tracing::warn!(target: "connector", connector, "{message}"),
            Level::Error => tracing::error!(target: "connector", connector, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_drops_lines_past_its_burst_and_counts_them() {
        let rate = LogRate::new(100, "test".into());
        let start = Instant::now();
        // The burst: 16 seconds of the rate.
        assert_eq!(rate.admit_at(1_600, start), Admit::Write { dropped_before: 0 });
        assert_eq!(rate.admit_at(10, start), Admit::Drop);
        assert_eq!(rate.admit_at(10, start), Admit::Drop);
        // A second later, 100 bytes are back; the drops are told once.
        let later = start + Duration::from_secs(1);
        assert_eq!(rate.admit_at(60, later), Admit::Write { dropped_before: 2 });
        assert_eq!(rate.admit_at(60, later), Admit::Drop);
        assert_eq!(rate.admit_at(40, later), Admit::Write { dropped_before: 1 });
        // A long quiet spell refills no more than the burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(rate.admit_at(1_600, much_later), Admit::Write { dropped_before: 0 });
        assert_eq!(rate.admit_at(1, much_later), Admit::Drop);
    }
}

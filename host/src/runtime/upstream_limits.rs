//! What an upstream allows, per host: the limits a connector declares
//! (contract 0.4.0 on), the operator's overrides, and what the host uses.
//!
//! The connector knows its upstream (Asana: 1,500 requests a minute, 50
//! reads and 15 writes in flight), so its declaration is the default; but it
//! is untrusted, so what it declares is clamped to the host's maxima. The
//! operator's flags (or `limits.*` of a serve config) win over both.

use std::fmt;

/// Requests per minute to one host when neither the connector nor the
/// operator says (Asana's budget, the host's default before 0.4.0).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 1_500;
/// Reads in flight to one host (and listings at once) when neither says.
pub const DEFAULT_CONCURRENT_READS: u32 = 16;
/// The most requests per minute a connector may declare: 1,000 a second.
pub const MAX_REQUESTS_PER_MINUTE: u32 = 60_000;
/// The most reads or writes in flight a connector may declare; reads are
/// also the default pool size, one connector instance each.
pub const MAX_CONCURRENCY: u32 = 64;

/// What a connector declares, per upstream host. None: not declared (the
/// contract's `none` or 0, and every module before 0.4.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamLimits {
    pub requests_per_minute: Option<u32>,
    pub concurrent_reads: Option<u32>,
    pub concurrent_writes: Option<u32>,
}

impl UpstreamLimits {
    /// Reads the contract's options: 0 is no declaration (it would stop
    /// every request).
    pub fn declared(requests_per_minute: Option<u32>, concurrent_reads: Option<u32>, concurrent_writes: Option<u32>) -> Self {
        let given = |v: Option<u32>| v.filter(|n| *n > 0);
        UpstreamLimits {
            requests_per_minute: given(requests_per_minute),
            concurrent_reads: given(concurrent_reads),
            concurrent_writes: given(concurrent_writes),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == UpstreamLimits::default()
    }
}

/// The operator's values (flags or serve config); None: not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamOverrides {
    pub requests_per_minute: Option<u32>,
    pub concurrent_reads: Option<usize>,
    pub concurrent_writes: Option<usize>,
}

/// Where a value in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Operator,
    Connector,
    /// The connector declared more than the host allows: `declared`.
    Clamped {
        declared: u32,
    },
    HostDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// What the host uses, per upstream host, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub requests_per_minute: Setting<u32>,
    /// Reads (GET) in flight; also a sync's default pool size.
    pub concurrent_reads: Setting<usize>,
    /// Writes (other methods) in flight.
    pub concurrent_writes: Setting<usize>,
}

impl UpstreamSettings {
    /// The operator's value, else the connector's (clamped), else the
    /// host's default. Undeclared writes get the reads cap: before 0.4.0
    /// one cap covered both.
    pub fn resolve(declared: &UpstreamLimits, operator: &UpstreamOverrides) -> Self {
        let rate = pick(operator.requests_per_minute, declared.requests_per_minute, MAX_REQUESTS_PER_MINUTE, DEFAULT_REQUESTS_PER_MINUTE);
        let reads = pick(operator.concurrent_reads.map(clamp_usize), declared.concurrent_reads, MAX_CONCURRENCY, DEFAULT_CONCURRENT_READS);
        let writes = pick(operator.concurrent_writes.map(clamp_usize), declared.concurrent_writes, MAX_CONCURRENCY, reads.value);
        let as_usize = |s: Setting<u32>| Setting { value: s.value as usize, source: s.source };
        UpstreamSettings { requests_per_minute: rate, concurrent_reads: as_usize(reads), concurrent_writes: as_usize(writes) }
    }

    /// Whether the connector declared more than the host allows.
    pub fn clamped(&self) -> bool {
        [self.requests_per_minute.source, self.concurrent_reads.source, self.concurrent_writes.source].iter().any(|s| matches!(s, Source::Clamped { .. }))
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings::resolve(&UpstreamLimits::default(), &UpstreamOverrides::default())
    }
}

fn clamp_usize(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

fn pick(operator: Option<u32>, declared: Option<u32>, max: u32, default: u32) -> Setting<u32> {
    match (operator, declared) {
        (Some(value), _) => Setting { value: value.max(1), source: Source::Operator },
        (None, Some(declared)) if declared > max => Setting { value: max, source: Source::Clamped { declared } },
        (None, Some(declared)) => Setting { value: declared, source: Source::Connector },
        (None, None) => Setting { value: default, source: Source::HostDefault },
    }
}

impl<T: fmt::Display> Setting<T> {
    fn describe(&self, unit: &str) -> String {
        let why = match self.source {
            Source::Operator => "set by the operator".to_string(),
            Source::Connector => "declared by the connector".to_string(),
            Source::Clamped { declared } => format!("the connector declares {declared}, more than the host allows"),
            Source::HostDefault => "the host's default; the connector declares none".to_string(),
        };
        format!("{} {unit} ({why})", self.value)
    }
}

/// `1500 requests/minute (declared by the connector), 50 reads in flight
/// (…), 15 writes in flight (…)`.
impl fmt::Display for UpstreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}, {}",
            self.requests_per_minute.describe("requests/minute"),
            self.concurrent_reads.describe("reads in flight"),
            self.concurrent_writes.describe("writes in flight")
        )
    }
}

/// `1500 requests/minute, 50 concurrent reads, 15 concurrent writes`, or
/// `none` (what `tether describe` shows).
impl fmt::Display for UpstreamLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        if let Some(n) = self.requests_per_minute {
            parts.push(format!("{n} requests/minute"));
        }
        if let Some(n) = self.concurrent_reads {
            parts.push(format!("{n} concurrent reads"));
        }
        if let Some(n) = self.concurrent_writes {
            parts.push(format!("{n} concurrent writes"));
        }
        if parts.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_wins_then_the_connector_then_the_host() {
        let asana = UpstreamLimits::declared(Some(1500), Some(50), Some(15));
        let used = UpstreamSettings::resolve(&asana, &UpstreamOverrides::default());
        assert_eq!((used.requests_per_minute.value, used.concurrent_reads.value, used.concurrent_writes.value), (1500, 50, 15));
        assert_eq!(used.concurrent_reads.source, Source::Connector);
        let operator = UpstreamOverrides { requests_per_minute: Some(600), concurrent_reads: Some(4), concurrent_writes: None };
        let used = UpstreamSettings::resolve(&asana, &operator);
        assert_eq!((used.requests_per_minute.value, used.concurrent_reads.value, used.concurrent_writes.value), (600, 4, 15));
        assert_eq!(used.requests_per_minute.source, Source::Operator);
        let none = UpstreamSettings::resolve(&UpstreamLimits::default(), &UpstreamOverrides::default());
        assert_eq!((none.requests_per_minute.value, none.concurrent_reads.value, none.concurrent_writes.value), (1500, 16, 16));
        assert_eq!(none.concurrent_writes.source, Source::HostDefault);
    }

    #[test]
    fn what_a_connector_declares_is_clamped_and_zero_is_no_declaration() {
        let absurd = UpstreamLimits::declared(Some(u32::MAX), Some(u32::MAX), Some(0));
        assert_eq!(absurd.concurrent_writes, None);
        let used = UpstreamSettings::resolve(&absurd, &UpstreamOverrides::default());
        assert_eq!(used.requests_per_minute, Setting { value: MAX_REQUESTS_PER_MINUTE, source: Source::Clamped { declared: u32::MAX } });
        assert_eq!(used.concurrent_reads.value, MAX_CONCURRENCY as usize);
        assert_eq!(used.concurrent_writes, Setting { value: MAX_CONCURRENCY as usize, source: Source::HostDefault });
        assert!(used.clamped());
        assert!(used.to_string().contains("the connector declares 4294967295, more than the host allows"), "{used}");
        // The operator is trusted: their value stands.
        let used = UpstreamSettings::resolve(&absurd, &UpstreamOverrides { concurrent_reads: Some(200), ..Default::default() });
        assert_eq!(used.concurrent_reads, Setting { value: 200, source: Source::Operator });
    }
}

//! `GET /metrics`: what `serve` counts, in the Prometheus text format.
//!
//! The `prometheus` crate (TiKV's) rather than `metrics` +
//! `metrics-exporter-prometheus`: it keeps the registry in a value we own
//! (no global recorder, so tests and two servers in one process never
//! mix), encodes the text format itself, and needs no HTTP server of its
//! own since axum already serves `/metrics`.

use anyhow::Result;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::runtime::imports::http::HttpCounters;
use crate::sync::SyncSummary;

pub struct Metrics {
    registry: Registry,
    pub syncs: IntCounterVec,
    pub sync_duration: HistogramVec,
    pub records: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub retries: IntCounterVec,
    pub limit_violations: IntCounterVec,
    pub module_loads: IntCounterVec,
    pub reload_refusals: IntCounterVec,
    pub module_resolve_failures: IntCounterVec,
    pub running: IntGaugeVec,
    /// 1 per instance, labelled with the module it runs (see `set_modules`).
    module_info: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let syncs = counter("tether_syncs_total", "Syncs ended, by instance and outcome (succeeded, failed, interrupted).", &["instance", "outcome"])?;
        let records = counter("tether_records_written_total", "Records written by successful syncs, by instance and kind.", &["instance", "kind"])?;
        let upstream_requests = counter(
            "tether_upstream_requests_total",
            "HTTP requests sent upstream, by instance, host and status (\"error\": no answer).",
            &["instance", "host", "status"],
        )?;
        let rate_limited = counter("tether_upstream_rate_limited_total", "Upstream answers 429 Too Many Requests, by instance.", &["instance"])?;
        let retries = counter("tether_upstream_retries_total", "Requests the host sent again after a transient failure, by instance.", &["instance"])?;
        let limit_violations =
            counter("tether_limit_violations_total", "Syncs a connector ended by running into a limit, by instance and limit.", &["instance", "limit"])?;
        let module_loads = counter("tether_module_loads_total", "Module versions loaded or refused, by instance and outcome.", &["instance", "outcome"])?;
        let reload_refusals =
            counter("tether_reload_refusals_total", "New module versions or config reloads refused, by instance (\"-\": the config).", &["instance"])?;
        let module_resolve_failures = counter(
            "tether_module_resolve_failures_total",
            "Lookups of an instance's OCI tag that failed (registry unreachable, tag gone); the running version stayed.",
            &["instance"],
        )?;
        let sync_duration = HistogramVec::new(
            HistogramOpts::new("tether_sync_duration_seconds", "How long syncs took, by instance and outcome.")
                .buckets(prometheus::exponential_buckets(0.05, 2.0, 18)?),
            &["instance", "outcome"],
        )?;
        registry.register(Box::new(sync_duration.clone()))?;
        let running = IntGaugeVec::new(Opts::new("tether_sync_running", "1 while the instance syncs."), &["instance"])?;
        registry.register(Box::new(running.clone()))?;
        let module_info = IntGaugeVec::new(
            Opts::new("tether_module_info", "1 for the module each instance runs: its connector name, version, contract version and sha256."),
            &["instance", "connector", "version", "contract", "digest"],
        )?;
        registry.register(Box::new(module_info.clone()))?;
        Ok(Metrics {
            registry,
            syncs,
            sync_duration,
            records,
            upstream_requests,
            rate_limited,
            retries,
            limit_violations,
            module_loads,
            reload_refusals,
            module_resolve_failures,
            running,
            module_info,
        })
    }

    /// Sets `tether_module_info` to the modules running now, one series an
    /// instance (`(instance, connector, version, contract, digest)`): which
    /// build a swap left running, without the API.
    pub fn set_modules<'a>(&self, modules: impl IntoIterator<Item = [&'a str; 5]>) {
        self.module_info.reset();
        for labels in modules {
            self.module_info.with_label_values(&labels).set(1);
        }
    }

    /// Adds what one sync's HTTP gateway counted.
    pub fn add_http(&self, instance: &str, counters: &HttpCounters) {
        use std::sync::atomic::Ordering;
        for ((host, status), n) in counters.answers() {
            self.upstream_requests.with_label_values(&[instance, &host, &status]).inc_by(n);
        }
        self.rate_limited.with_label_values(&[instance]).inc_by(counters.rate_limited.load(Ordering::Relaxed));
        self.retries.with_label_values(&[instance]).inc_by(counters.retries.load(Ordering::Relaxed));
    }

    pub fn add_summary(&self, instance: &str, summary: &SyncSummary) {
        let resources: i64 = summary.resources.iter().map(|(_, n)| n).sum();
        for (kind, n) in [("resources", resources), ("entitlements", summary.entitlements), ("grants", summary.grants)] {
            self.records.with_label_values(&[instance, kind]).inc_by(n.max(0) as u64);
        }
    }

    /// Every series, in the text format.
    pub fn render(&self) -> String {
        let mut out = vec![];
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

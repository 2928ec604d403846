//! The flags every command that runs a connector shares: which module, how
//! it is trusted, what it is granted, and the limits it runs under.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::registry::RegistryArgs;
use crate::distribution::ModuleSource;
use crate::runtime::imports::config::SecretSource;
use crate::runtime::limits::{Limits, SyncLimits};
use crate::runtime::trust::ModuleTrust;
use crate::runtime::upstream_limits::UpstreamOverrides;

/// How to load and sandbox a connector: shared by every command that runs one.
#[derive(Args, Debug, Clone)]
pub struct ConnectorArgs {
    /// The connector component: a .wasm file, or an OCI reference
    /// oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST.
    #[arg(long, value_name = "FILE.wasm|oci://REF")]
    pub connector: ModuleSource,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A config value for the connector (repeatable), e.g. asana-api-url=https://…
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// A secret for the connector (repeatable): NAME=env:VAR, NAME=file:PATH or NAME=literal:VALUE.
    /// The connector never sees its value; the host attaches it to requests to allowed hosts.
    #[arg(long = "secret", value_name = "NAME=SOURCE")]
    pub secret: Vec<SecretSource>,
    /// Also allow requests to this host (repeatable). Plain http only with an http:// prefix or for loopback.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Allow only the --allow-host hosts, not those the connector declares:
    /// a new module version cannot widen where the token goes.
    #[arg(long)]
    pub only_allowed_hosts: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Where compiled code is cached (default: ~/.cache/tether/compiled).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the module afresh and cache nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Root of the connectors' storage namespaces (default: no storage).
    #[arg(long, value_name = "DIR")]
    pub storage_dir: Option<PathBuf>,
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Which connector instance this is, in the operator's words.
#[derive(Args, Debug, Clone, Default)]
pub struct InstanceArgs {
    /// This connector instance's name: its storage namespace (under
    /// --storage-dir) and its name in logs. Default: the module's file name
    /// without .wasm. The module's own name plays no part in it.
    #[arg(long = "instance", value_name = "NAME", value_parser = parse_instance_name)]
    pub instance_name: Option<String>,
}

pub fn parse_instance_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{:?}: an instance name is 1-64 letters, digits, '-' or '_'", crate::terminal::clip(text, 80)))
    }
}

/// What a module must prove before the host compiles it.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Refuse the module unless its sha256 is this.
    #[arg(long, value_name = "SHA256", value_parser = parse_sha256)]
    pub digest: Option<String>,
    /// Refuse the module unless it carries a good signature by this key: a
    /// NAME.pub file from `tether module keygen`, or 64 hex digits.
    #[arg(long, value_name = "NAME.pub|HEX")]
    pub require_signature: Option<String>,
    /// The module's signature (default: FILE.wasm.sig beside it).
    #[arg(long, value_name = "FILE", requires = "require_signature")]
    pub signature: Option<PathBuf>,
}

impl TrustArgs {
    pub fn to_trust(&self) -> Result<ModuleTrust> {
        Ok(ModuleTrust {
            digest: self.digest.clone(),
            signer: self.require_signature.as_deref().map(crate::runtime::trust::parse_verifying_key).transpose()?,
            signature: self.signature.clone(),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Linear memory per connector instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_memory_mb: usize,
    /// Linear memory all instances of one connector (a sync's pool) may
    /// hold together, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub max_pool_memory_mb: usize,
    /// CPU seconds one connector call may use.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub cpu_seconds: f64,
    /// Wall-clock seconds one connector call may take, besides waiting out
    /// a 429's pause (up to one a call).
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub call_timeout: f64,
    /// Seconds one HTTP request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub http_timeout: f64,
    /// HTTP requests one connector call may make.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_requests_per_call: usize,
    /// HTTP requests per minute to any one host; past it requests wait.
    /// Default: what the connector declares (contract 0.4.0; Asana: 1500), else 1500.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_minute: Option<u32>,
    /// Writes (POST, PUT, PATCH, DELETE) in flight to any one host at once.
    /// Default: what the connector declares (Asana: 15), else as many as reads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_writes: Option<u16>,
    /// Times an idempotent request (GET, or one with an Idempotency-Key header) is tried again after a
    /// 500/502/503/504, a timeout or a broken connection; other writes only when nothing was sent.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub http_retries: u32,
    /// First wait before a retry, in seconds; it doubles each time, plus jitter.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.25)]
    pub http_retry_base: f64,
    /// Longest wait between retries, in seconds (before jitter).
    #[arg(long, value_name = "SECONDS", default_value_t = 8.0)]
    pub http_retry_max: f64,
    /// Retries one sync (one connector instance) may make in all; then failures go to the connector.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub retry_budget: u32,
    /// Largest HTTP response body, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub max_response_mb: usize,
    /// Most records one page may carry.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_page_records: usize,
    /// Most log lines per call.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_log_lines: usize,
    /// Longest log line kept, in bytes (longer ones are cut).
    #[arg(long, value_name = "BYTES", default_value_t = 4_096)]
    pub max_log_line_bytes: usize,
    /// Most connector log a sync writes per second, in KiB (16 seconds' worth at once; lines past it are dropped and counted).
    #[arg(long, value_name = "KIB", default_value_t = 64)]
    pub max_log_kb_per_second: usize,
    /// Most bytes of strings one page may carry, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub max_page_mb: usize,
    /// Most bytes the host copies out of the connector in one call, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub max_hostcall_mb: usize,
    /// Most elements per wasm table.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_table_elements: usize,
    /// Most wasm instances (and memories) per connector instance.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_instances: usize,
    /// Size quota of the connector's storage namespace, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1_024)]
    pub max_storage_kb: u64,
}

impl LimitArgs {
    pub fn to_limits(&self) -> Result<Limits> {
        let seconds = |name: &str, value: f64| {
            // At least a millisecond: 5e-324 was a zero timeout.
            if (0.001..86_400.0).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                bail!("--{name} must be a number of seconds from 0.001 to below 86400")
            }
        };
        Ok(Limits {
            memory_bytes: self.max_memory_mb.checked_mul(1 << 20).context("--max-memory-mb is too large")?,
            pool_memory_bytes: self.max_pool_memory_mb.checked_mul(1 << 20).context("--max-pool-memory-mb is too large")?,
            cpu_per_call: seconds("cpu-seconds", self.cpu_seconds)?,
            wall_per_call: seconds("call-timeout", self.call_timeout)?,
            http_timeout: seconds("http-timeout", self.http_timeout)?,
            http_requests_per_call: self.max_requests_per_call,
            upstream: UpstreamOverrides {
                requests_per_minute: self.max_requests_per_minute,
                // Set by `sync --concurrency`: it is a sync's pool size too.
                concurrent_reads: None,
                concurrent_writes: self.max_concurrent_writes.map(usize::from),
            },
            http_retries: self.http_retries,
            http_retry_base: seconds("http-retry-base", self.http_retry_base)?,
            http_retry_max_delay: seconds("http-retry-max", self.http_retry_max)?,
            http_retry_budget: self.retry_budget,
            http_response_bytes: self.max_response_mb.checked_mul(1 << 20).context("--max-response-mb is too large")?,
            records_per_page: self.max_page_records,
            log_lines_per_call: self.max_log_lines,
            log_bytes_per_line: self.max_log_line_bytes,
            log_bytes_per_second: self.max_log_kb_per_second.checked_mul(1 << 10).context("--max-log-kb-per-second is too large")?,
            bytes_per_page: self.max_page_mb.checked_mul(1 << 20).context("--max-page-mb is too large")?,
            hostcall_bytes: self.max_hostcall_mb.checked_mul(1 << 20).context("--max-hostcall-mb is too large")?,
            table_elements: self.max_table_elements,
            instances: self.max_instances,
            storage_bytes: self.max_storage_kb.checked_mul(1 << 10).context("--max-storage-kb is too large")?,
            ..Limits::default()
        })
    }
}

pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Bounds on a whole sync (each ends it with `limit exceeded: <name>`).
#[derive(Args, Debug, Clone)]
pub struct SyncLimitArgs {
    /// Most records (resources + entitlements + grants) one sync may report.
    #[arg(long, value_name = "N", default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sync_records: u64,
    /// Deepest nesting of listings (a type listed under a type listed under …).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_depth: u32,
    /// Most pages one listing may take.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pages_per_listing: u64,
    /// Longest a whole sync may run, in minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 720.0)]
    pub max_sync_minutes: f64,
    /// Listings run at once, each on its own instance of the connector;
    /// also the cap on reads in flight to one upstream host. The rows
    /// synced do not depend on it. Default: the concurrent reads the
    /// connector declares (contract 0.4.0; Asana: 50; at most 64), else 16.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
}

impl SyncLimitArgs {
    pub fn to_limits(&self) -> Result<SyncLimits> {
        let minutes = self.max_sync_minutes;
        if !(minutes.is_finite() && minutes > 0.0 && minutes <= 7.0 * 24.0 * 60.0) {
            bail!("--max-sync-minutes must be a number of minutes between 0 and one week");
        }
        Ok(SyncLimits {
            records: self.max_sync_records,
            depth: self.max_depth,
            pages_per_listing: self.max_pages_per_listing,
            duration: Duration::from_secs_f64(minutes * 60.0),
            concurrency: self.concurrency.map(usize::from),
        })
    }
}

/// A sha256 as 64 hex digits, in lower case.
fn parse_sha256(text: &str) -> Result<String, String> {
    crate::runtime::trust::parse_sha256(text.trim()).ok_or_else(|| "a sha256 is 64 hex digits".to_string())
}

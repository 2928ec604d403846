//! What one connector instance's store holds: the WASI context (granting
//! nothing), the host services behind our imports, and the limits.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::{ConnectorConfig, Secrets};
use crate::guest_stderr::GuestStderr;
use crate::http::HttpGateway;
use crate::limits::{LimitExceeded, Limits};
use crate::storage::ConnectorStorage;

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub store_limits: StoreLimits,
    pub limits: Limits,
    pub http: Arc<HttpGateway>,
    pub config: ConnectorConfig,
    pub secrets: Arc<Secrets>,
    pub storage: Option<ConnectorStorage>,
    /// Names the connector in logs.
    pub connector_label: String,
    /// The guest's stderr of the current call (panic messages land here).
    pub stderr: GuestStderr,
    /// What the current call has used of its per-call budgets.
    pub usage: CallUsage,
    /// Epoch ticks one call may run guest code for.
    pub cpu_tick_budget: u64,
}

impl HostState {
    pub fn new(
        limits: Limits,
        http: Arc<HttpGateway>,
        config: ConnectorConfig,
        secrets: Arc<Secrets>,
        storage: Option<ConnectorStorage>,
        connector_label: String,
    ) -> Self {
        // No preopened folders, no environment, no arguments, no sockets,
        // no inherited stdio (output goes nowhere): what a Rust std guest
        // needs to start, nothing it could use. What the host buffers for
        // WASI is capped: random bytes here, reads by wasmtime-wasi itself
        // (64 KiB), handles by the table's capacity, copies by hostcall fuel.
        let stderr = GuestStderr::default();
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).max_random_size(64 << 10).build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(limits.table_elements)
            .instances(limits.instances)
            .tables(limits.instances * 4)
            .memories(limits.instances)
            .trap_on_grow_failure(true)
            .build();
        let cpu_tick_budget = (limits.cpu_per_call.as_millis() / crate::engine::EPOCH_TICK.as_millis()).max(1) as u64;
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resource_handles);
        HostState { wasi, table, store_limits, limits, http, config, secrets, storage, connector_label, stderr, usage: CallUsage::default(), cpu_tick_budget }
    }
}

/// Per-call counters, reset before every call into the guest.
#[derive(Debug, Default)]
pub struct CallUsage {
    pub log_lines: usize,
    pub http_requests: usize,
    pub cpu_ticks: u64,
}

/// Counts one more use of a per-call budget; past `cap` the call ends with
/// the limit named `limit`.
pub fn charge(used: &mut usize, cap: usize, limit: &'static str, what: &str) -> Result<(), LimitExceeded> {
    *used += 1;
    if *used > cap {
        return Err(LimitExceeded::new(limit, format!("more than {cap} {what} in one call")));
    }
    Ok(())
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl crate::bindings::tether::connector::types::Host for HostState {}

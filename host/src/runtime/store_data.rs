//! What one connector instance's wasmtime store holds: one context per
//! import (each owning its own state, see [`crate::runtime::imports`]), the CPU
//! budget the epoch callback charges, and the limits.
//!
//! Not to be confused with `store` (the SQLite sync file) or the `storage`
//! import (a connector's key/value namespace).

use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::component::Linker;
use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::{WasiCtxView, WasiView};

use crate::runtime::activity::GuestActivity;
use crate::runtime::bindings::tether::connector as wit;
use crate::runtime::imports::config::{Config, ConfigCtx, ConnectorConfig, Secrets};
use crate::runtime::imports::http::{Http, HttpCtx, HttpGateway};
use crate::runtime::imports::log::{Log, LogCtx, LogRate};
use crate::runtime::imports::storage::{ConnectorStorage, Storage, StorageCtx};
use crate::runtime::imports::wasi::StartupWasiCtx;
use crate::runtime::imports::Types;
use crate::runtime::limits::{CpuBudget, Limits};
use crate::runtime::pool_memory::{PoolLimiter, PoolMemory};

pub struct StoreData {
    pub wasi: StartupWasiCtx,
    pub http: HttpCtx,
    pub config: ConfigCtx,
    pub storage: StorageCtx,
    pub log: LogCtx,
    /// Epoch ticks the current call has run guest code for.
    pub cpu: CpuBudget,
    /// The store's own limits and its share of its pool's memory.
    pub limiter: PoolLimiter,
    pub limits: Limits,
    /// The engine's count of calls that can run guest code.
    pub activity: Arc<GuestActivity>,
}

/// What a store shares with the other instances of its pool and engine.
#[derive(Clone)]
pub struct Shared {
    pub http: Arc<HttpGateway>,
    pub pool_memory: Arc<PoolMemory>,
    pub log_rate: Arc<LogRate>,
    pub activity: Arc<GuestActivity>,
}

impl StoreData {
    pub fn new(
        limits: Limits,
        shared: Shared,
        config: ConnectorConfig,
        secrets: Arc<Secrets>,
        storage: Option<ConnectorStorage>,
        connector_label: String,
    ) -> Self {
        let Shared { http, pool_memory, log_rate, activity } = shared;
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(limits.table_elements)
            .instances(limits.instances)
            .tables(limits.instances * 4)
            .memories(limits.instances)
            .trap_on_grow_failure(true)
            .build();
        StoreData {
            wasi: StartupWasiCtx::new(&limits),
            http: HttpCtx::new(http, &limits, activity.clone()),
            config: ConfigCtx::new(config, secrets.clone()),
            storage: StorageCtx::new(storage),
            log: LogCtx::new(connector_label, secrets, &limits, log_rate),
            cpu: CpuBudget::new(limits.cpu_per_call),
            limiter: PoolLimiter::new(store_limits, limits.memory_bytes, pool_memory),
            limits,
            activity,
        }
    }

    /// Before every call into the guest: fresh per-call budgets, no stderr
    /// left from the call before, and whether the call may write upstream.
    pub fn begin_call(&mut self, writes: bool) {
        self.http.begin_call(writes);
        self.log.begin_call();
        self.cpu.reset();
        self.wasi.begin_call();
    }
}

/// Links every import the host offers, each with a projection onto its own
/// context.
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> Result<()> {
    crate::runtime::imports::wasi::add_to_linker(linker)?;
    let l = linker;
    // Every version of the contract so far imports 0.1.0's interfaces.
    let mut link = || -> wasmtime::Result<()> {
        wit::types::add_to_linker::<StoreData, Types>(l, |_| Types)?;
        wit::http::add_to_linker::<StoreData, Http>(l, |s| &mut s.http)?;
        wit::config::add_to_linker::<StoreData, Config>(l, |s| &mut s.config)?;
        wit::storage::add_to_linker::<StoreData, Storage>(l, |s| &mut s.storage)?;
        wit::log::add_to_linker::<StoreData, Log>(l, |s| &mut s.log)?;
        Ok(())
    };
    link().map_err(anyhow::Error::from).context("cannot link the tether:connector imports")
}

/// wasmtime-wasi's interfaces find their context through this.
impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}

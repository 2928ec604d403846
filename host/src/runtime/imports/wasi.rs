//! The WASI a Rust std guest needs to start, and nothing more: clocks,
//! random, cli (environment, exit, stdio — all empty or discarded here), io
//! streams, and filesystem types with no preopened folder. Sockets and HTTP
//! are not linked at all, so a module importing them cannot instantiate.
//!
//! The guest's stderr is kept (up to a cap) so that a crash can say why: a
//! Rust guest's panic message goes there. Past the cap, writes are dropped
//! rather than refused, so a chatty guest neither traps nor grows the host.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use tokio::io::AsyncWrite;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io as wasi_io, random};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::runtime::limits::Limits;

/// What the WASI imports serve: a WASI context granting nothing, its
/// resource table, and the guest's stderr of the current call.
pub struct StartupWasiCtx {
    ctx: WasiCtx,
    table: ResourceTable,
    /// The guest's stderr of the current call (panic messages land here).
    pub stderr: GuestStderr,
}

impl StartupWasiCtx {
    pub fn new(limits: &Limits) -> Self {
        // No preopened folders, no environment, no arguments, no sockets,
        // no inherited stdio (output goes nowhere): what a Rust std guest
        // needs to start, nothing it could use. What the host buffers for
        // WASI is capped: random bytes here, reads by wasmtime-wasi itself
        // (64 KiB), handles by the table's capacity, copies by hostcall fuel.
        let stderr = GuestStderr::default();
        let ctx = WasiCtxBuilder::new().stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).max_random_size(64 << 10).build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resource_handles);
        StartupWasiCtx { ctx, table, stderr }
    }

    /// Before every call into the guest: forget what it wrote before.
    pub fn begin_call(&mut self) {
        self.stderr.clear();
    }

    /// The view wasmtime-wasi's host functions work on; the store data's
    /// `WasiView` hands this over.
    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// wasi:io's host functions work on the resource table alone.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the startup WASI for store data `T`, through its `WasiView` (which
/// wasmtime-wasi's interfaces project from).
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> Result<()> {
    let l = linker;
    let mut link = || -> wasmtime::Result<()> {
        wasi_io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
        wasi_io::poll::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
        wasi_io::streams::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
        clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
        clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
        random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
        filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
        cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        Ok(())
    };
    link().map_err(anyhow::Error::from).context("cannot link WASI")
}

/// Bytes of a guest's stderr kept per call.
pub const STDERR_CAP: usize = 4096;

/// The guest's stderr: the first `STDERR_CAP` bytes of the current call.
#[derive(Clone, Default)]
pub struct GuestStderr {
    captured: Arc<Mutex<Vec<u8>>>,
}

impl GuestStderr {
    /// What the guest wrote since the last `clear`, as text.
    pub fn text(&self) -> String {
        self.captured.lock().map(|c| String::from_utf8_lossy(&c).trim().to_string()).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut captured) = self.captured.lock() {
            captured.clear();
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(CappedSink { captured: self.captured.clone() })
    }
}

struct CappedSink {
    captured: Arc<Mutex<Vec<u8>>>,
}

impl AsyncWrite for CappedSink {
    fn poll_write(self: Pin<&mut Self>, _: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Ok(mut captured) = self.captured.lock() {
            let room = STDERR_CAP.saturating_sub(captured.len());
            captured.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

//! The WASI a Rust std guest needs to start, and nothing more: clocks,
//! random, cli (environment, exit, stdio — all empty or discarded here), io
//! streams, and filesystem types with no preopened folder. Sockets and HTTP
//! are not linked at all, so a module importing them cannot instantiate.

use anyhow::{Context, Result};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::WasiView;

use crate::state::HostState;

/// wasi:io's host functions work on the resource table alone.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

pub fn link_startup_wasi(linker: &mut Linker<HostState>) -> Result<()> {
    let l = linker;
    let mut link = || -> wasmtime::Result<()> {
        io::error::add_to_linker::<HostState, Io>(l, |t| t.ctx().table)?;
        io::poll::add_to_linker::<HostState, Io>(l, |t| t.ctx().table)?;
        io::streams::add_to_linker::<HostState, Io>(l, |t| t.ctx().table)?;
        clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
        clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
        random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
        filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
        filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
        cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        Ok(())
    };
    link().map_err(anyhow::Error::from).context("cannot link WASI")
}

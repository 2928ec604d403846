use std::process::ExitCode;

/// See the note on `mimalloc` in host/Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tether_host::cli::main()
}

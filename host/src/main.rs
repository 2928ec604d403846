use std::process::ExitCode;

/// See the note on `mimalloc` in host/Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A copy of tether run to compile one module (see runtime::compile).
    if let Some(code) = tether_host::runtime::compile::run_child_if_asked() {
        return code;
    }
    tether_host::cli::main()
}

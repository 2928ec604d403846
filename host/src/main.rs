use std::process::ExitCode;

fn main() -> ExitCode {
    tether_host::cli::main()
}

//! Compiling a module in a child process, under limits.
//!
//! Cranelift's time and memory are not bounded by the module's size: a
//! 114 KB function of nested blocks compiled for 265 s, and a 184 KB one
//! took over 4 GB. Compiled in the host, such a module could stall a sync
//! for minutes or take down `tether serve` with every instance in it. So
//! the host hands the module to a copy of itself, which compiles it and
//! writes the code back; the host watches its CPU time, memory and wall
//! clock, and kills it past any of them.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wasmtime::Engine;

use super::limits::LimitExceeded;

/// The first argument that makes `tether` a compiler child.
const CHILD_ARG: &str = "__compile-component";
/// Compiled code handed back at most: far above any connector's.
pub const MAX_COMPILED_BYTES: u64 = 1 << 30;
/// The compiler's own message, at most.
const MAX_MESSAGE_BYTES: u64 = 16 << 10;
/// How often the host looks at the child.
const POLL: Duration = Duration::from_millis(5);

/// What one compile may take.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    pub cpu: Duration,
    pub wall: Duration,
    /// Resident memory of the compiler process.
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    /// The Asana connector compiles in 0.3 s and 90 MiB: these leave a
    /// connector 200 times that time and ten times that memory.
    fn default() -> Self {
        CompileLimits { cpu: Duration::from_secs(60), wall: Duration::from_secs(120), memory_bytes: 1 << 30 }
    }
}

/// How an engine compiles: in a child process running `exe` (a `tether`
/// binary), under `limits`.
#[derive(Debug, Clone)]
pub struct Compiler {
    pub exe: PathBuf,
    pub limits: CompileLimits,
}

impl Compiler {
    /// This very program as the compiler, with the default limits.
    pub fn this_program() -> Result<Self> {
        // On Linux the running binary itself, even once an upgrade has
        // replaced or removed its file: a long-running serve still
        // compiles the modules swapped in.
        let proc_exe = Path::new("/proc/self/exe");
        let exe = if cfg!(target_os = "linux") && proc_exe.exists() {
            proc_exe.to_path_buf()
        } else {
            std::env::current_exe().context("cannot find this program to compile modules with")?
        };
        Ok(Compiler { exe, limits: CompileLimits::default() })
    }

    /// The module's compiled code, as `Engine::precompile_component` gives
    /// it for an engine of `super::engine::config()`.
    pub fn compile(&self, module: &[u8]) -> Result<Vec<u8>> {
        compile_in_child(&self.exe, &self.limits, module)
    }
}

/// Runs the compiler child when this process is one: called first thing
/// in `main`.
pub fn run_child_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(CHILD_ARG)) {
        return None;
    }
    Some(match child_main(args.next().and_then(|pid| pid.to_str()?.parse().ok())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{e:#}");
            ExitCode::FAILURE
        }
    })
}

fn child_main(parent: Option<u32>) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        // Dies with the host, however the host dies: an orphaned compile
        // would go on using what the host was stopped to free.
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // SAFETY: getppid has no preconditions.
        if parent.is_some_and(|pid| unsafe { libc::getppid() } as u32 != pid) {
            bail!("the host that started this compile has ended");
        }
    }
    let _ = parent;
    let mut module = Vec::new();
    std::io::stdin().lock().take(super::engine::MAX_MODULE_BYTES as u64 + 1).read_to_end(&mut module).context("cannot read the module")?;
    if module.len() > super::engine::MAX_MODULE_BYTES {
        bail!("the module is larger than {} MiB", super::engine::MAX_MODULE_BYTES >> 20);
    }
    let engine = Engine::new(&super::engine::config()).map_err(anyhow::Error::from).context("cannot configure wasmtime")?;
    let code = engine.precompile_component(&module).map_err(anyhow::Error::from)?;
    std::io::stdout().lock().write_all(&code).context("cannot hand the compiled code back")?;
    Ok(())
}

/// Compiles `module` in a child running `exe`, killed past `limits`.
fn compile_in_child(exe: &Path, limits: &CompileLimits, module: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(exe)
        .arg(CHILD_ARG)
        .arg(std::process::id().to_string())
        // The compiler needs nothing of the host's environment (which may
        // hold the secrets given as env:VAR).
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} to compile the module", exe.display()))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (watched, code, message) = std::thread::scope(|scope| {
        // Fed and drained at once, so neither side waits on a full pipe;
        // a child killed midway ends them with a broken pipe or EOF.
        scope.spawn(move || stdin.map(|mut pipe| pipe.write_all(module)));
        let code = scope.spawn(move || read_capped(stdout, MAX_COMPILED_BYTES));
        let message = scope.spawn(move || read_capped(stderr, MAX_MESSAGE_BYTES));
        let watched = watch(&mut child, limits);
        (watched, code.join(), message.join())
    });
    let status = watched?;
    let message = message.ok().and_then(Result::ok).unwrap_or_default();
    let message = crate::terminal::escape_keeping_lines(String::from_utf8_lossy(&message).trim());
    if !status.success() {
        if message.is_empty() {
            bail!("the compiler process ended with {status} before finishing the module");
        }
        return Err(anyhow!(message));
    }
    let code = code.map_err(|_| anyhow!("the compiled code could not be read"))??;
    if code.len() as u64 > MAX_COMPILED_BYTES {
        bail!("the compiled code is larger than {} MiB", MAX_COMPILED_BYTES >> 20);
    }
    Ok(code)
}

/// Waits for the child, killing it past a limit.
fn watch(child: &mut std::process::Child, limits: &CompileLimits) -> Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let exceeded = if started.elapsed() > limits.wall {
            Some(format!("took longer than {:?}", limits.wall))
        } else {
            match usage(child.id()) {
                Some(used) if used.cpu > limits.cpu => Some(format!("used more than {:?} of CPU", limits.cpu)),
                Some(used) if used.memory_bytes > limits.memory_bytes => Some(format!("used more than {} MiB of memory", limits.memory_bytes >> 20)),
                _ => None,
            }
        };
        if let Some(what) = exceeded {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LimitExceeded::new("compile", format!("compiling the module {what}, the most a module may take")).into());
        }
        std::thread::sleep(POLL);
    }
}

/// What a process has used so far.
struct Usage {
    cpu: Duration,
    memory_bytes: u64,
}

/// From /proc: CPU time (user and system) and resident memory.
#[cfg(target_os = "linux")]
fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (ticks_per_second, page_size) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    Some(Usage {
        cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64),
        memory_bytes: resident_pages.saturating_mul(page_size.max(1) as u64),
    })
}

/// Elsewhere only the wall clock is watched.
#[cfg(not(target_os = "linux"))]
fn usage(_pid: u32) -> Option<Usage> {
    None
}

/// What `from` gives, up to one byte past `cap` (the rest is read and
/// dropped, so the writer is never left blocked on a full pipe).
fn read_capped(from: Option<impl Read>, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut from) = from {
        (&mut from).take(cap + 1).read_to_end(&mut bytes)?;
        std::io::copy(&mut from, &mut std::io::sink())?;
    }
    Ok(bytes)
}

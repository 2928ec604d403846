//! The wasmtime engine: its configuration, the epoch ticker that drives CPU
//! deadlines, module loading (digest, trust checks, import check) and the
//! compiled-code cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use crate::runtime::activity::GuestActivity;
use crate::runtime::api_version::ApiVersion;
use crate::runtime::compile::Compiler;
use crate::runtime::limits::LimitExceeded;
use crate::runtime::store_data::StoreData;
use crate::runtime::trust::ModuleTrust;

/// How often the engine's epoch advances; CPU deadlines count these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How often a ticker with no guest to time checks that its engine lives.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The wasm call stack each call may use.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// The largest module read or pulled: far above any connector, far below
/// memory.
pub const MAX_MODULE_BYTES: usize = 256 << 20;

/// A module file's bytes, refusing what is not a plain file (`/dev/zero`
/// would be read until memory ran out) or is bigger than
/// `MAX_MODULE_BYTES`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    crate::plain_file::read(path, MAX_MODULE_BYTES as u64).with_context(|| format!("cannot read connector {}", path.display()))
}

/// Interfaces a connector may import besides our package (checked by
/// version in `api_version`): the WASI a Rust std guest needs to start, all
/// linked with nothing granted. Anything else, sockets included, is refused
/// before instantiation.
const WASI_IMPORT_PREFIXES: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:filesystem/", "wasi:clocks/", "wasi:random/"];

pub struct ConnectorEngine {
    engine: Engine,
    /// Compiles modules in a child process, under limits.
    compiler: Compiler,
    /// Every import the host offers, linked once for all instances.
    linker: Linker<StoreData>,
    cache_dir: Option<PathBuf>,
    /// Whether any call on this engine can run guest code (the ticker's cue).
    activity: Arc<GuestActivity>,
}

/// A module ready to instantiate.
pub struct LoadedModule {
    pub component: Component,
    /// The component with its imports resolved: instantiating it is cheap.
    pub pre: InstancePre<StoreData>,
    /// Hex sha256 of the .wasm file as given.
    pub digest: String,
    /// The version of `tether:connector` its export was built against.
    pub api: ApiVersion,
    pub path: PathBuf,
    /// True when the compiled code came from this host's cache.
    pub from_cache: bool,
    pub load_time: Duration,
}

impl ConnectorEngine {
    /// `cache_dir`: where compiled code is kept between runs (None: no
    /// cache). Modules are compiled by this program in a child process.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self> {
        Self::with_compiler(cache_dir, Compiler::this_program()?)
    }

    /// Like [`ConnectorEngine::new`], compiling with `compiler`.
    pub fn with_compiler(cache_dir: Option<PathBuf>, compiler: Compiler) -> Result<Self> {
        let engine = Engine::new(&config()).map_err(anyhow::Error::from).context("cannot configure wasmtime")?;
        let mut linker = Linker::<StoreData>::new(&engine);
        crate::runtime::store_data::add_to_linker(&mut linker)?;

        let activity = GuestActivity::new();
        start_epoch_ticker(&engine, activity.clone())?;
        Ok(ConnectorEngine { engine, compiler, linker, cache_dir, activity })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The calls that can run guest code: every call on this engine counts
    /// itself in (see [`GuestActivity`]).
    pub fn activity(&self) -> &Arc<GuestActivity> {
        &self.activity
    }

    /// The default cache folder: `$XDG_CACHE_HOME/tether` or `~/.cache/tether`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|base| base.join("tether").join("compiled"))
    }

    /// Reads, checks and compiles a connector. `expected_digest` pins the
    /// module's sha256.
    pub fn load(&self, path: &Path, expected_digest: Option<&str>) -> Result<LoadedModule> {
        self.load_trusted(path, &ModuleTrust { digest: expected_digest.map(str::to_string), ..ModuleTrust::default() })
    }

    /// Reads a connector, checks it against what the operator requires (digest
    /// pin, signature) before compiling anything, compiles it and checks that
    /// it speaks a version of the contract this host serves.
    pub fn load_trusted(&self, path: &Path, trust: &ModuleTrust) -> Result<LoadedModule> {
        let started = Instant::now();
        let bytes = read_module(path)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        trust.check(path, &bytes)?;
        // Precompiled code from outside is not trusted input: wasmtime
        // deserializes it without validation.
        if Engine::detect_precompiled(&bytes).is_some() {
            bail!("{} is precompiled wasmtime code; give the .wasm component instead", path.display());
        }
        // Said plainly: the parser's own message prints both headers as
        // eleven-line byte arrays.
        if !bytes.starts_with(b"\0asm") {
            bail!("{} is not a WebAssembly file (it does not start with \\0asm)", path.display());
        }
        let (component, from_cache) = self.compile(&bytes, &digest).map_err(|e| {
            let what = if e.is::<LimitExceeded>() {
                format!("cannot compile {}", path.display())
            } else {
                format!("{} is not a valid WebAssembly component", path.display())
            };
            e.context(what)
        })?;
        check_imports(&self.engine, &component).with_context(|| format!("connector {} refused", path.display()))?;
        let api = ApiVersion::of(&self.engine, &component).with_context(|| format!("connector {} refused", path.display()))?;
        let pre = self.linker.instantiate_pre(&component).map_err(anyhow::Error::from).with_context(|| format!("connector {} refused", path.display()))?;
        Ok(LoadedModule { component, pre, digest, api, path: path.to_path_buf(), from_cache, load_time: started.elapsed() })
    }

    /// Compiles, or reuses code this host compiled before for the same
    /// module and the same engine settings.
    fn compile(&self, bytes: &[u8], digest: &str) -> Result<(Component, bool)> {
        let Some(dir) = &self.cache_dir else {
            return Ok((self.compile_afresh(bytes)?.0, false));
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let cached = dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
        let cache = super::cache::CompiledCache::open(dir);
        if let Some(code) = cache.as_ref().ok().and_then(|cache| cache.read(&cached, digest)) {
            // SAFETY: wasmtime runs deserialized code without validating it.
            // These bytes carry this host's MAC over (module digest, code),
            // checked above on the very bytes handed over here, so they are
            // what this host compiled from this module — not a file swapped
            // or dropped into the folder.
            match unsafe { Component::deserialize(&self.engine, &code) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e:#}", cached.display())
                }
            }
        }
        let (component, code) = self.compile_afresh(bytes)?;
        let written = cache.and_then(|cache| cache.write(&cached, digest, &code));
        if let Err(e) = written {
            tracing::warn!("cannot cache compiled code in {}: {e:#}", dir.display());
        }
        Ok((component, false))
    }

    /// Compiles in the compiler child; the component and its code.
    fn compile_afresh(&self, bytes: &[u8]) -> Result<(Component, Vec<u8>)> {
        let code = self.compiler.compile(bytes)?;
        // SAFETY: wasmtime runs deserialized code without validating it.
        // This code is what this very program, run as the compiler child,
        // made of this module for an engine of the same `config()`: as
        // trusted as code compiled here, and refused by wasmtime if the
        // engines differ.
        let component = unsafe { Component::deserialize(&self.engine, &code) }.map_err(anyhow::Error::from)?;
        Ok((component, code))
    }
}

/// The engine's settings; the compiler child compiles for the same ones.
pub fn config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    // Compiled on one thread: compiled in parallel, the compiler's memory
    // stayed with its pool's threads after it was freed, and a module's
    // first sync peaked 50 MiB higher (122 MiB against 72 at 10k users)
    // for about the same wall time.
    config.parallel_compilation(false);
    config
}

/// Advances the engine's epoch every `EPOCH_TICK` while a guest call can
/// run, for as long as anything still holds the engine: the
/// `ConnectorEngine`, but also every store (a running instance keeps its
/// engine alive). Holding only a weak handle, the ticker never keeps an
/// engine alive by itself, and it never stops while guest code can still
/// run: a command that drops its `ConnectorEngine` and keeps the instance
/// still has its CPU limit enforced. While no call can run guest code (none
/// is in flight, or all wait on the host) it sleeps until one can: a
/// deadline is only checked in guest code, so no tick is missed.
fn start_epoch_ticker(engine: &Engine, activity: Arc<GuestActivity>) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tether-epoch".into())
        .spawn(move || loop {
            if !activity.wait_for_guest(IDLE_CHECK) {
                if weak.upgrade().is_none() {
                    return;
                }
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => {
                    engine.increment_epoch();
                    activity.record_tick();
                }
                None => return,
            }
        })
        .context("cannot start the epoch ticker")?;
    Ok(())
}

/// Refuses a component that imports anything the host does not offer.
fn check_imports(engine: &Engine, component: &Component) -> Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            bail!("it imports {name:?}, which is not an interface the host offers");
        }
        if name.starts_with("tether:connector/") {
            crate::runtime::api_version::check_tether_import(name)?;
        } else if !WASI_IMPORT_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            bail!("it imports {name}, which the host does not offer");
        }
    }
    Ok(())
}

/// Names of a component's imports, for the tests.
pub fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_string()).collect()
}

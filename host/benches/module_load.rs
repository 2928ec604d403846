//! What loading a connector costs: compiling it the first time, loading its
//! compiled code from the cache after that, and starting one more instance
//! of an already loaded module (instantiation plus its `metadata()` call).
//!
//! Run: cargo bench -p tether-host --bench module_load

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether_host::runtime::engine::ConnectorEngine;
use tether_host::runtime::instance::{ConnectorInstance, Permissions};

const INSTANCES: u32 = 50;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    println!("{:<16} {:>10} {:>14} {:>14} {:>18}", "module", "KiB", "first load ms", "cached load ms", "instantiation µs");
    for name in ["tether-asana", "hostile", "connector-v0-2"] {
        let path = root.join("target/wasm").join(format!("{name}.wasm"));
        if !path.is_file() {
            println!("{name:<16} missing: run scripts/build-guests.sh --fixtures");
            continue;
        }
        let cache = tempfile::tempdir().unwrap();
        // A fresh engine each time, as a new `tether` process would have.
        let load = || {
            let engine = ConnectorEngine::with_compiler(
                Some(cache.path().to_path_buf()),
                tether_host::runtime::compile::Compiler { exe: env!("CARGO_BIN_EXE_tether").into(), limits: Default::default() },
            )
            .unwrap();
            let module = engine.load(&path, None).unwrap();
            (engine, module)
        };
        let (_, first) = load();
        let (engine, cached) = load();
        assert!(!first.from_cache && cached.from_cache, "the second load must come from the cache");

        let instantiation = runtime.block_on(async {
            let grants = Permissions::default();
            ConnectorInstance::start(&engine, &cached, &grants).await.unwrap(); // warm-up
            let started = Instant::now();
            for _ in 0..INSTANCES {
                ConnectorInstance::start(&engine, &cached, &grants).await.unwrap();
            }
            started.elapsed() / INSTANCES
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let kib = std::fs::metadata(&path).unwrap().len() / 1024;
        println!("{name:<16} {kib:>10} {:>14.1} {:>14.1} {:>18.0}", ms(first.load_time), ms(cached.load_time), instantiation.as_secs_f64() * 1e6);
    }
}

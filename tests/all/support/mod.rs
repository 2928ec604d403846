//! Shared pieces of the integration tests: the compiled connector, the
//! simulator, and a sync of one through the other.
#![allow(dead_code)]

pub mod browser;
pub mod django_scim2;
pub mod prism;
pub mod process;
pub mod registry;
pub mod scim2;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use asana_sim::{Org, OrgSpec, SimConfig, SimHandle};
use tether_host::runtime::engine::{ConnectorEngine, LoadedModule};
use tether_host::runtime::imports::config::{ConnectorConfig, Secrets};
use tether_host::runtime::imports::http::AllowedHost;
use tether_host::runtime::instance::{ConnectorInstance, Permissions};
use tether_host::sync::SyncFile;
use tether_host::sync::SyncSummary;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A component built by scripts/build-guests.sh.
pub fn wasm(name: &str) -> PathBuf {
    let path = repo_root().join("target/wasm").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run scripts/build-guests.sh --fixtures first", path.display());
    path
}

pub fn asana_wasm() -> PathBuf {
    wasm("tether-asana")
}

pub async fn start_sim(spec: OrgSpec) -> SimHandle {
    start_sim_with(SimConfig::new(Org::generate(&spec))).await
}

pub async fn start_sim_with(config: SimConfig) -> SimHandle {
    SimHandle::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.expect("simulator starts")
}

/// What a test grants the connector: the simulator's URL, a token, and the
/// simulator's address as the only extra host.
pub fn permissions_for(base_url: &str, addr: SocketAddr, token: &str) -> Permissions {
    let secrets: Secrets = Secrets::resolve(&[format!("token=literal:{token}").parse().unwrap()]).unwrap();
    Permissions {
        config: ConnectorConfig::new([("asana-api-url".to_string(), base_url.to_string())]),
        secrets: Arc::new(secrets),
        extra_hosts: vec![AllowedHost::parse(&addr.to_string()).unwrap()],
        ..Permissions::default()
    }
}

pub fn engine() -> ConnectorEngine {
    engine_caching_in(None)
}

/// An engine compiling with the `tether` binary (the test binary cannot
/// be the compiler child), caching in `cache`.
pub fn engine_caching_in(cache: Option<&Path>) -> ConnectorEngine {
    ConnectorEngine::with_compiler(cache.map(Path::to_path_buf), compiler()).expect("engine")
}

/// The `tether` binary as the compiler, with the default limits.
pub fn compiler() -> tether_host::runtime::compile::Compiler {
    tether_host::runtime::compile::Compiler { exe: env!("CARGO_BIN_EXE_tether").into(), limits: Default::default() }
}

pub fn load(engine: &ConnectorEngine, path: &Path) -> LoadedModule {
    engine.load(path, None).expect("module loads")
}

/// Syncs `grants`' org through `module` into `out`.
pub async fn sync_with(engine: &ConnectorEngine, module: &LoadedModule, grants: &Permissions, out: &Path) -> Result<SyncSummary> {
    let mut file = SyncFile::open(out)?;
    let mut instance = ConnectorInstance::start(engine, module, grants).await?;
    tether_host::sync::run(&mut instance, &mut file, &module.digest, &indicatif::ProgressBar::hidden()).await
}

/// Syncs the simulator through the Asana component into `out`.
pub async fn sync_sim(sim: &SimHandle, token: &str, out: &Path) -> Result<SyncSummary> {
    let engine = engine();
    let module = load(&engine, &asana_wasm());
    sync_with(&engine, &module, &permissions_for(&sim.base_url(), sim.addr(), token), out).await
}

/// Requests (method, path and query) the simulator answered with 200 more
/// than once, leaving out paths in `except`: pages asked for twice.
pub fn pages_asked_twice(sim: &SimHandle, except: &[&str]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in sim.requests().iter().filter(|r| r.status == 200 && !except.contains(&r.path.as_str())) {
        *seen.entry(format!("{} {}?{}", r.method, r.path, r.query)).or_default() += 1;
    }
    let mut twice: Vec<String> = seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect();
    twice.sort();
    twice
}

/// GET /workspaces beyond the first. Memberships do not say whether their
/// workspace is an organization; since contract 0.4.0 the listing gets the
/// workspace with the `is_organization` it was reported with, so the Asana
/// connector should never read /workspaces again (it did per fresh instance).
pub fn workspace_rereads(sim: &SimHandle) -> u64 {
    (sim.requests().iter().filter(|r| r.path == "/workspaces" && r.status == 200).count() as u64).saturating_sub(1)
}

/// A team of the organization and an active, non-guest org member not on it.
pub fn team_and_outsider(org: &Org) -> (String, String) {
    let organization = &org.workspaces[0].gid;
    for team in org.teams.iter().filter(|t| &t.workspace_gid == organization) {
        let outsider = org.workspace_memberships.iter().find(|m| {
            &m.workspace_gid == organization
                && m.is_active
                && !m.is_guest
                && !org.team_memberships.iter().any(|tm| tm.team_gid == team.gid && tm.user_gid == m.user_gid)
        });
        if let Some(m) = outsider {
            return (team.gid.clone(), m.user_gid.clone());
        }
    }
    panic!("no team with an outsider");
}

/// Serves `app` on a free loopback port: an upstream a test scripts.
pub async fn serve_stub(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A valid component, 11 bytes a block, that takes Cranelift time about
/// the square of `blocks` and memory about `blocks` × `locals` to compile:
/// one function of `blocks` `if` blocks, each setting one of `locals`
/// locals, then reading every local.
pub fn compile_bomb(blocks: u32, locals: u32) -> Vec<u8> {
    fn uleb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        uleb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut code = Vec::new();
    for i in 0..blocks {
        // local.get 0; if; i32.const i (signed LEB of i, i < 2^20); local.set (i % locals); end
        code.extend_from_slice(&[0x20, 0x00, 0x04, 0x40, 0x41]);
        let mut v = i as i64;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
            code.push(if done { byte } else { byte | 0x80 });
            if done {
                break;
            }
        }
        code.push(0x21);
        uleb((i % locals) as u64, &mut code);
        code.push(0x0b);
    }
    code.extend_from_slice(&[0x41, 0x00]);
    for l in 0..locals {
        code.push(0x20);
        uleb(l as u64, &mut code);
        code.push(0x6a);
    }
    code.push(0x1a);
    let mut function = vec![0x01];
    uleb(locals as u64, &mut function);
    function.push(0x7f);
    function.extend_from_slice(&code);
    function.push(0x0b);
    let mut bodies = vec![0x01];
    uleb(function.len() as u64, &mut bodies);
    bodies.extend_from_slice(&function);
    let mut core = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x00], &mut core);
    section(3, &[0x01, 0x00], &mut core);
    section(10, &bodies, &mut core);
    let mut component = b"\0asm\x0d\x00\x01\x00".to_vec();
    section(1, &core, &mut component);
    section(2, &[0x01, 0x00, 0x00, 0x00], &mut component);
    component
}

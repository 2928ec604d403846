//! One sandboxed connector instance and its guarded calls.
//!
//! Every call into the guest runs under a CPU budget (epoch ticks, yielding
//! to the executor between ticks) and an outer wall-clock timeout, since
//! neither alone stops every runaway. A call that hits a limit or traps
//! leaves the instance unusable; the error says which limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::{Store, UpdateDeadline};

use crate::runtime::api_version::{ApiVersion, Convert};
use crate::runtime::bindings::{guest, v0_2, v0_3, v0_4, v0_5, ConnectorError, ConnectorWorld, ResourceRef};
use crate::runtime::engine::{ConnectorEngine, LoadedModule};
use crate::runtime::imports::config::{ConnectorConfig, Secrets};
use crate::runtime::imports::http::{AllowedHost, EgressPolicy, HttpGateway};
use crate::runtime::imports::log::LogRate;
use crate::runtime::imports::storage::ConnectorStorage;
use crate::runtime::imports::upstream::HostThrottle;
use crate::runtime::imports::wasi::GuestStderr;
use crate::runtime::limits::{LimitExceeded, Limits};
use crate::runtime::page::{Page, PageBytes};
use crate::runtime::pool_memory::PoolMemory;
use crate::runtime::store_data::{Shared, StoreData};
use crate::runtime::upstream_limits::{UpstreamLimits, UpstreamSettings};

/// The scheme of a config fingerprint (see `config_fingerprint`):
/// PBKDF2-HMAC-SHA256, `FINGERPRINT_ROUNDS` rounds, written as
/// `SCHEME.SALT.KEY` in hex.
const FINGERPRINT_SCHEME: &str = "pbkdf2-sha256-100k";
/// About 20 ms of one core, once per sync and resume.
const FINGERPRINT_ROUNDS: std::num::NonZeroU32 = std::num::NonZeroU32::new(100_000).unwrap();

/// What the operator permits one connector instance: its config and secrets,
/// the hosts it may reach, its limits, its storage and its name. (Not to be
/// confused with grants, the access the data model records.)
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub config: ConnectorConfig,
    pub secrets: Arc<Secrets>,
    /// Extra hosts beyond the ones the connector declares.
    pub extra_hosts: Vec<AllowedHost>,
    /// Use only `extra_hosts`, not the declared ones.
    pub only_extra_hosts: bool,
    pub limits: Limits,
    /// Root folder for connector storage namespaces (None: no storage).
    pub storage_root: Option<PathBuf>,
    /// The operator's name for this connector instance: its storage
    /// namespace and its name in logs. None: the module's file stem.
    pub instance_name: Option<String>,
    pub dry_run: bool,
    /// The upstream budget to share (serve: the instance's, so its syncs
    /// and its API writes count against one rate and one cap on writes in
    /// flight). None: a budget of its own.
    pub throttle: Option<Arc<HostThrottle>>,
}

/// A write the host is about to make, for [`ConnectorInstance::check_write`].
#[derive(Debug, Clone)]
pub enum PlannedWrite {
    Grant { entitlement_id: String, principal: ResourceRef },
    Revoke { grant_id: String },
    CreateAccount(guest::AccountRequest),
    DisableAccount(ResourceRef),
}

/// What `create-account` did.
#[derive(Debug, Clone)]
pub struct AccountCreated {
    /// Created (`Changed`) or already there (`NoChange`); None when the
    /// connector's contract version cannot say.
    pub outcome: Option<guest::Outcome>,
    pub account: guest::Resource,
    /// The connector's account of it (unescaped).
    pub message: String,
}

/// What a write would do, as its connector says.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteEffect {
    /// The connector's words (unescaped); empty when it said nothing.
    pub description: String,
    /// The upstream cannot undo it: the host needs the operator's --yes.
    pub irreversible: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connector reported a typed error.
    #[error("{}", crate::runtime::bindings::describe(.0))]
    Connector(ConnectorError),
    /// The connector ran into one of the host's limits.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The connector crashed (a panic, a trap).
    #[error("the connector crashed: {0}")]
    Trap(String),
    /// An earlier failure left the instance unusable.
    #[error("the connector instance failed earlier and cannot be called again")]
    Poisoned,
}

impl CallError {
    /// The error as a failure of `what`. A limit keeps its type, under
    /// `what` as context: metrics count limits by type, never by reading
    /// text, which a connector's own error could make say anything.
    pub fn context(self, what: impl std::fmt::Display + Send + Sync + 'static) -> anyhow::Error {
        match self {
            CallError::Limit(limit) => anyhow::Error::new(limit).context(what),
            other => anyhow::anyhow!("{what}: {other}"),
        }
    }
}

pub struct ConnectorInstance {
    store: Store<StoreData>,
    exports: Exports,
    api: ApiVersion,
    /// What it shares with the other instances of its pool: the HTTP
    /// gateway, the memory budget, the log rate.
    pool: Shared,
    wall_per_call: Duration,
    poisoned: bool,
    /// The next call is a write (grant, revoke, create or disable an
    /// account): the only calls whose requests may be other than GET.
    next_call_writes: bool,
    pub metadata: guest::ConnectorMetadata,
    /// What 0.4.0 added to the metadata, beside the host's (0.1.0) shape.
    pub declared: Declared,
}

/// What a connector declares beyond 0.1.0's metadata (contract 0.4.0 on);
/// for older modules, what they behaved as.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// What the upstream allows per host, as declared (unclamped).
    pub limits: UpstreamLimits,
    /// Per resource type, in `metadata.resource_types`' order.
    pub listings: Vec<TypeListings>,
}

/// Which listings a resource type has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeListings {
    pub entitlements: bool,
    pub grants: bool,
}

impl Default for TypeListings {
    /// Before 0.4.0 the host asked every resource for both.
    fn default() -> Self {
        TypeListings { entitlements: true, grants: true }
    }
}

impl Declared {
    /// The listing flags of the `index`th resource type.
    pub fn listings_of(&self, index: usize) -> TypeListings {
        self.listings.get(index).copied().unwrap_or_default()
    }
}

/// Runs `$call` (an export call, given the instance's `$exports` and
/// `$store`) under the instance's guards.
macro_rules! guarded {
    ($self:ident, |$exports:ident, $store:ident| $call:expr) => {{
        if $self.poisoned {
            return Err(CallError::Poisoned);
        }
        $self.before_call();
        let running = $self.store.data().activity.enter();
        // The wall clock leaves out the time the call waited out a 429's
        // pause (as long as the default limit), up to one pause a call.
        let held = $self.store.data().http.held.clone();
        let held_before = held.held();
        let started = tokio::time::Instant::now();
        let deadline_now = || started + $self.wall_per_call + held.held().saturating_sub(held_before).min(crate::runtime::imports::upstream::MAX_PAUSE);
        let timed = {
            let ($exports, $store) = (&$self.exports, &mut $self.store);
            let call = $call;
            tokio::pin!(call);
            loop {
                let deadline = deadline_now();
                match tokio::time::timeout_at(deadline, &mut call).await {
                    Ok(done) => break Ok(done),
                    // Paused meanwhile: the deadline moved on.
                    Err(_) if deadline < deadline_now() => continue,
                    Err(elapsed) => break Err(elapsed),
                }
            }
        };
        drop(running);
        let outcome = match timed {
            Err(_) => Err(CallError::Limit(LimitExceeded::new("wall-clock", format!("the call took longer than {:?}", $self.wall_per_call)))),
            Ok(Err(trap)) => Err(with_guest_stderr(classify_trap(trap, &$self.store.data().limits), &$self.store.data().wasi.stderr)),
            Ok(Ok(value)) => Ok(value),
        };
        if outcome.is_err() {
            $self.poisoned = true;
        }
        outcome
    }};
}

/// Calls one export in whichever version of the contract the module speaks;
/// a later version's result is converted into the host's (0.1.0) types.
/// Arguments whose types differ between versions are given again after
/// `v0_4`.
macro_rules! call_export {
    ($exports:ident, $store:ident, $method:ident ( $($arg:expr),* )) => {
        call_export!($exports, $store, $method($($arg),*) v0_4 ($($arg),*))
    };
    ($exports:ident, $store:ident, $method:ident ( $($arg:expr),* ) v0_4 ( $($arg4:expr),* )) => {
        async {
            match $exports {
                Exports::V0_1(world) => world.tether_connector_connector().$method(&mut *$store, $($arg),*).await,
                Exports::V0_2(world) => world.tether_connector0_2_0_connector().$method(&mut *$store, $($arg),*).await.map(Convert::convert),
                Exports::V0_3(world) => world.tether_connector0_3_0_connector().$method(&mut *$store, $($arg),*).await.map(Convert::convert),
                Exports::V0_4(world) => world.tether_connector0_4_0_connector().$method(&mut *$store, $($arg4),*).await.map(Convert::convert),
                Exports::V0_5(world) => world.tether_connector0_5_0_connector().$method(&mut *$store, $($arg4),*).await.map(Convert::convert),
            }
        }
    };
}

/// The metadata of 0.4.0 on in the host's shape, with what it declares
/// beside it: the upstream's limits and each type's listings.
macro_rules! declared_metadata {
    () => {
        |m| {
            let limits = UpstreamLimits::declared(m.limits.requests_per_minute, m.limits.concurrent_reads, m.limits.concurrent_writes);
            let listings = m.resource_types.iter().map(|t| TypeListings { entitlements: t.lists_entitlements, grants: t.lists_grants }).collect();
            (m.convert(), Declared { limits, listings })
        }
    };
}

/// Calls listing `$method` in whichever version of the contract the module
/// speaks, and gives the page in the host's shape. Before 0.4.0 it takes
/// the `$arg`s (the resource's reference); from 0.4.0 the `$reported` ones
/// (the resource as reported), written once and evaluated in each
/// version's arm, so each converts into that version's type.
macro_rules! call_listing {
    ($exports:ident, $store:ident, $method:ident ( $($arg:expr),* ) reported ( $($reported:expr),* )) => {
        async {
            let page: wasmtime::Result<Result<Page, ConnectorError>> = match $exports {
                Exports::V0_1(world) => world.tether_connector_connector().$method(&mut *$store, $($arg),*).await.map(|r| r.map(Page::from)),
                Exports::V0_2(world) => world.tether_connector0_2_0_connector().$method(&mut *$store, $($arg),*).await.map(|r| r.map(Page::from)),
                Exports::V0_3(world) => world.tether_connector0_3_0_connector().$method(&mut *$store, $($arg),*).await.map(|r| r.map(Page::from)),
                Exports::V0_4(world) => world.tether_connector0_4_0_connector().$method(&mut *$store, $($reported),*).await.map(|r| r.map(Page::from)),
                Exports::V0_5(world) => world.tether_connector0_5_0_connector().$method(&mut *$store, $($reported),*).await.map(|r| r.map(Page::from)),
            };
            page
        }
    };
}

/// Names an instance in logs and its storage: the operator's name for it,
/// else one made from the module's file name.
fn instance_label(module: &LoadedModule, permissions: &Permissions) -> String {
    permissions.instance_name.clone().unwrap_or_else(|| default_instance_name(&module.path))
}

/// The module's `connector` export, in the version it was built against.
enum Exports {
    V0_1(ConnectorWorld),
    V0_2(v0_2::ConnectorWorld),
    V0_3(v0_3::ConnectorWorld),
    V0_4(v0_4::ConnectorWorld),
    V0_5(v0_5::ConnectorWorld),
}

impl ConnectorInstance {
    /// Starts an instance on a gateway of its own, whose rate and caps per
    /// upstream host are what the connector declares (clamped) unless the
    /// operator's limits say otherwise.
    pub async fn start(engine: &ConnectorEngine, module: &LoadedModule, permissions: &Permissions) -> Result<Self> {
        let http = Arc::new(HttpGateway::new(
            EgressPolicy::new(permissions.extra_hosts.clone()),
            permissions.secrets.clone(),
            &permissions.limits,
            permissions.dry_run,
            permissions.throttle.clone(),
        )?);
        let pool = Shared {
            http,
            pool_memory: PoolMemory::new(permissions.limits.pool_memory_bytes),
            log_rate: LogRate::new(permissions.limits.log_bytes_per_second, instance_label(module, permissions)),
            activity: engine.activity().clone(),
        };
        let instance = Self::start_on(engine, module, permissions, pool, None).await?;
        let settings = UpstreamSettings::resolve(&instance.declared.limits, &permissions.limits.upstream);
        instance.pool.http.throttle.configure(settings);
        if settings.clamped() {
            tracing::warn!("the connector declares upstream limits beyond the host's maxima ({}); using {settings}", instance.declared.limits);
        }
        Ok(instance)
    }

    /// What the instance's gateway uses per upstream host, and why.
    pub fn upstream_settings(&self) -> UpstreamSettings {
        self.pool.http.throttle.settings()
    }

    /// Instances of the module (one `InstancePre`, each its own store)
    /// sharing one HTTP gateway: one rate budget, one cap on reads and one
    /// on writes in flight and one 429 pause per upstream host, one retry
    /// budget and one set of counters for the lot. Each instance runs one
    /// call at a time; a pool runs as many calls at once as it has
    /// instances. `size` (the operator's) also caps reads in flight; None:
    /// as many as the connector declares concurrent reads (clamped), or
    /// the host's default.
    pub async fn start_pool(engine: &ConnectorEngine, module: &LoadedModule, permissions: &Permissions, size: Option<usize>) -> Result<Vec<Self>> {
        let mut permissions = permissions.clone();
        if let Some(size) = size {
            permissions.limits.upstream.concurrent_reads = Some(size.max(1));
        }
        let permissions = &permissions;
        let first = Self::start(engine, module, permissions).await?;
        let size = first.upstream_settings().concurrent_reads.value.max(1);
        // The gateway is cloned out first: holding `&first` (not Sync) across
        // an await would make the future unfit for a spawned task.
        let (shared, hosts) = (first.pool.clone(), first.metadata.hosts.clone());
        let mut pool = Vec::with_capacity(size);
        pool.push(first);
        for _ in 1..size {
            pool.push(Self::start_on(engine, module, permissions, shared.clone(), Some(hosts.clone())).await?);
        }
        Ok(pool)
    }

    /// Another instance of the same module on this one's HTTP gateway.
    pub async fn sibling(&self, engine: &ConnectorEngine, module: &LoadedModule, permissions: &Permissions) -> Result<Self> {
        Self::start_on(engine, module, permissions, self.pool.clone(), Some(self.metadata.hosts.clone())).await
    }

    /// Starts an instance on `pool` (its gateway, memory and log rate). The first of a gateway's instances
    /// (`siblings_of`: None) sets its allow-list from the hosts it declares;
    /// a sibling must declare the same hosts (`siblings_of`) and changes
    /// nothing: the hosts the operator was shown are the hosts every
    /// instance reaches.
    async fn start_on(
        engine: &ConnectorEngine,
        module: &LoadedModule,
        permissions: &Permissions,
        pool: Shared,
        siblings_of: Option<Vec<String>>,
    ) -> Result<Self> {
        let limits = permissions.limits.clone();
        let label = instance_label(module, permissions);
        // The namespace is the operator's choice (the instance name), never
        // the name a module gives itself: a module calling itself "asana"
        // must not read the Asana instance's storage.
        let storage = match &permissions.storage_root {
            Some(root) => Some(ConnectorStorage::open(root, &storage_namespace(&label), limits.storage_bytes, permissions.dry_run)?),
            None => None,
        };
        let activity = pool.activity.clone();
        let data = StoreData::new(limits.clone(), pool.clone(), permissions.config.clone(), permissions.secrets.clone(), storage, label);
        let mut store = Store::new(engine.engine(), data);
        store.limiter(|data| &mut data.limiter);
        store.set_hostcall_fuel(limits.hostcall_bytes);
        store.set_max_component_handles(limits.resource_handles);
        store.epoch_deadline_callback(|mut ctx| {
            ctx.data_mut().cpu.tick()?;
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);

        // Instantiation runs the guest's start code.
        let running = activity.enter();
        let instantiated = tokio::time::timeout(limits.wall_per_call, module.pre.instantiate_async(&mut store)).await;
        drop(running);
        let instance = instantiated
            .map_err(|_| LimitExceeded::new("wall-clock", format!("instantiation took longer than {:?}", limits.wall_per_call)))?
            .map_err(|e| classify_trap(e, &limits).context(format!("cannot instantiate connector {}", module.path.display())))?;
        let exports = match module.api {
            ApiVersion::V0_1 => ConnectorWorld::new(&mut store, &instance).map(Exports::V0_1),
            ApiVersion::V0_2 => v0_2::ConnectorWorld::new(&mut store, &instance).map(Exports::V0_2),
            ApiVersion::V0_3 => v0_3::ConnectorWorld::new(&mut store, &instance).map(Exports::V0_3),
            ApiVersion::V0_4 => v0_4::ConnectorWorld::new(&mut store, &instance).map(Exports::V0_4),
            ApiVersion::V0_5 => v0_5::ConnectorWorld::new(&mut store, &instance).map(Exports::V0_5),
        }
        .map_err(|e| anyhow::anyhow!("connector {} lacks a function of tether:connector@{}: {e}", module.path.display(), module.api))?;

        let mut instance = ConnectorInstance {
            store,
            exports,
            api: module.api,
            pool,
            wall_per_call: limits.wall_per_call,
            poisoned: false,
            next_call_writes: false,
            metadata: empty_metadata(),
            declared: Declared::default(),
        };
        (instance.metadata, instance.declared) = instance.call_metadata().await.context("the connector's metadata() failed")?;
        check_metadata(&instance.metadata).context("the connector's metadata is not usable")?;
        if let Some(first) = siblings_of {
            if instance.metadata.hosts != first {
                anyhow::bail!(
                    "the connector declares other hosts in another instance of it ({} then {}): refused, as its allow-list would not be the one shown",
                    crate::terminal::escape(&first.join(", ")),
                    crate::terminal::escape(&instance.metadata.hosts.join(", "))
                );
            }
            return Ok(instance);
        }

        // The default allow-list is what the connector declares; the
        // operator's hosts come on top (or instead, for a test server).
        let mut hosts = permissions.extra_hosts.clone();
        if !permissions.only_extra_hosts {
            for declared in &instance.metadata.hosts {
                let host = AllowedHost::declared(declared)
                    .map_err(|e| anyhow::anyhow!("the connector declares a bad host {:?}: {}", declared, crate::terminal::escape(&e.to_string())))?;
                hosts.push(host);
            }
        }
        instance.pool.http.set_policy(EgressPolicy::new(hosts));
        Ok(instance)
    }

    /// A fingerprint of the config and secrets this instance was given:
    /// what a resumed run must go on with. It is kept in the sync file,
    /// which is handed to auditors; so it is salted and slow (PBKDF2), as a
    /// stored password is: someone holding the file cannot test guesses at
    /// a weak secret at the speed of SHA-256. `salt`: a new one when none.
    pub fn config_fingerprint(&self, salt: Option<&[u8]>) -> String {
        let mut fresh = [0u8; 16];
        let salt = match salt {
            Some(salt) => salt,
            None => {
                // Without randomness the salt is fixed: still slow to guess.
                let _ = getrandom::fill(&mut fresh);
                &fresh
            }
        };
        let mut derived = [0u8; 32];
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, FINGERPRINT_ROUNDS, salt, &self.config_digest(), &mut derived);
        format!("{FINGERPRINT_SCHEME}.{}.{}", hex::encode(salt), hex::encode(derived))
    }

    /// Whether `saved` (a [`Self::config_fingerprint`]) fingerprints this
    /// instance's config and secrets. One of another scheme does not.
    pub fn has_config(&self, saved: &str) -> bool {
        let mut parts = saved.split('.');
        let (Some(FINGERPRINT_SCHEME), Some(salt), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return false };
        hex::decode(salt).is_ok_and(|salt| self.config_fingerprint(Some(&salt)) == saved)
    }

    /// SHA-256 of every config key and value and every secret, in order.
    fn config_digest(&self) -> [u8; 32] {
        let config = &self.store.data().config.config;
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for key in config.keys() {
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(config.get(key).unwrap_or_default().as_bytes());
            hasher.update([0]);
        }
        // The secrets too: where every customer shares one URL (Asana), the
        // token is what picks the organisation.
        hasher.update(b"secrets\0");
        self.store.data().config.secrets.digest_into(&mut hasher);
        hasher.finalize().into()
    }

    pub fn http(&self) -> &HttpGateway {
        &self.pool.http
    }

    /// Bytes of linear memory this instance's pool holds now.
    pub fn pool_memory_used(&self) -> usize {
        self.pool.pool_memory.used()
    }

    /// The gateway, shared with the instances of the same pool.
    pub fn http_shared(&self) -> Arc<HttpGateway> {
        self.pool.http.clone()
    }

    /// HTTP requests the last call sent (retries not counted): the pool
    /// shares its counters, so a call's own cost is read here.
    pub fn requests_in_last_call(&self) -> usize {
        self.store.data().http.requests.used()
    }

    /// The version of `tether:connector` the module was built against.
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    fn before_call(&mut self) {
        let writes = std::mem::take(&mut self.next_call_writes);
        self.store.data_mut().begin_call(writes);
        self.store.set_epoch_deadline(1);
    }

    /// The metadata in the host's shape, and what 0.4.0 declares beside it.
    async fn call_metadata(&mut self) -> Result<(guest::ConnectorMetadata, Declared), CallError> {
        guarded!(self, |exports, store| async {
            match exports {
                Exports::V0_4(world) => world.tether_connector0_4_0_connector().call_metadata(&mut *store).await.map(declared_metadata!()),
                Exports::V0_5(world) => world.tether_connector0_5_0_connector().call_metadata(&mut *store).await.map(declared_metadata!()),
                _ => call_export!(exports, store, call_metadata()).await.map(|m| (m, Declared::default())),
            }
        })
    }

    pub async fn validate(&mut self) -> Result<(), CallError> {
        guarded!(self, |exports, store| call_export!(exports, store, call_validate()))?.map_err(CallError::Connector)
    }

    /// The listings take the resource as the connector reported it (0.4.0
    /// on); older modules get its reference.
    pub async fn list_resources(&mut self, resource_type: &str, scope: Option<&guest::Resource>, token: Option<&str>) -> Result<Page, CallError> {
        let scope_ref = scope.map(reference);
        let page = guarded!(self, |exports, store| call_listing!(exports, store, call_list_resources(resource_type, scope_ref.as_ref(), token) reported (
            resource_type,
            scope.map(|s| s.clone().convert()).as_ref(),
            token
        )))?
        .map_err(CallError::Connector)?;
        self.check_page(page)
    }

    pub async fn list_entitlements(&mut self, resource: &guest::Resource, token: Option<&str>) -> Result<Page, CallError> {
        let as_ref = reference(resource);
        let page = guarded!(
            self,
            |exports, store| call_listing!(exports, store, call_list_entitlements(&as_ref, token) reported (&resource.clone().convert(), token))
        )?
        .map_err(CallError::Connector)?;
        self.check_page(page)
    }

    pub async fn list_grants(&mut self, resource: &guest::Resource, token: Option<&str>) -> Result<Page, CallError> {
        let as_ref = reference(resource);
        let page =
            guarded!(self, |exports, store| call_listing!(exports, store, call_list_grants(&as_ref, token) reported (&resource.clone().convert(), token)))?
                .map_err(CallError::Connector)?;
        self.check_page(page)
    }

    pub async fn grant_entitlement(&mut self, entitlement_id: &str, principal: &ResourceRef) -> Result<guest::WriteResult, CallError> {
        self.next_call_writes = true;
        guarded!(self, |exports, store| call_export!(exports, store, call_grant_entitlement(entitlement_id, principal)))?.map_err(CallError::Connector)
    }

    pub async fn revoke_grant(&mut self, grant_id: &str) -> Result<guest::WriteResult, CallError> {
        self.next_call_writes = true;
        guarded!(self, |exports, store| call_export!(exports, store, call_revoke_grant(grant_id)))?.map_err(CallError::Connector)
    }

    /// Creates an account. Before 0.3.0 the contract did not say whether
    /// the account was new: `outcome` is None for those connectors.
    pub async fn create_account(&mut self, request: &guest::AccountRequest) -> Result<AccountCreated, CallError> {
        self.next_call_writes = true;
        guarded!(self, |exports, store| async {
            match exports {
                Exports::V0_1(world) => world
                    .tether_connector_connector()
                    .call_create_account(&mut *store, request)
                    .await
                    .map(|r| r.map(|account| AccountCreated { outcome: None, account, message: String::new() })),
                Exports::V0_2(world) => world
                    .tether_connector0_2_0_connector()
                    .call_create_account(&mut *store, &request.clone().convert())
                    .await
                    .map(|r| r.map(|account| AccountCreated { outcome: None, account: account.convert(), message: String::new() })),
                Exports::V0_3(world) => world.tether_connector0_3_0_connector().call_create_account(&mut *store, &request.clone().convert()).await.map(|r| {
                    r.map(|created| AccountCreated { outcome: Some(created.outcome.convert()), account: created.account.convert(), message: created.message })
                }),
                Exports::V0_4(world) => world.tether_connector0_4_0_connector().call_create_account(&mut *store, &request.clone().convert()).await.map(|r| {
                    r.map(|created| AccountCreated { outcome: Some(created.outcome.convert()), account: created.account.convert(), message: created.message })
                }),
                Exports::V0_5(world) => world.tether_connector0_5_0_connector().call_create_account(&mut *store, &request.clone().convert()).await.map(|r| {
                    r.map(|created| AccountCreated { outcome: Some(created.outcome.convert()), account: created.account.convert(), message: created.message })
                }),
            }
        })?
        .map_err(CallError::Connector)
    }

    pub async fn disable_account(&mut self, account: &ResourceRef) -> Result<guest::WriteResult, CallError> {
        self.next_call_writes = true;
        guarded!(self, |exports, store| call_export!(exports, store, call_disable_account(account)))?.map_err(CallError::Connector)
    }

    /// Checks that the connector reaches its upstream; says as whom. Modules
    /// built against 0.1.0 answer `unsupported`.
    pub async fn test_connection(&mut self) -> Result<String, CallError> {
        guarded!(self, |exports, store| async {
            match exports {
                Exports::V0_5(world) => world.tether_connector0_5_0_connector().call_test_connection(&mut *store).await,
                Exports::V0_4(world) => world.tether_connector0_4_0_connector().call_test_connection(&mut *store).await,
                Exports::V0_3(world) => world.tether_connector0_3_0_connector().call_test_connection(&mut *store).await,
                Exports::V0_2(world) => world.tether_connector0_2_0_connector().call_test_connection(&mut *store).await,
                Exports::V0_1(_) => {
                    Ok(Err(ConnectorError::Unsupported("test-connection is new in tether:connector@0.2.0; this connector was built against 0.1.0".into())))
                }
            }
        })?
        .map_err(CallError::Connector)
    }

    /// What `write` would do and whether it can be undone, as the connector
    /// says (0.3.0 on). Older connectors cannot say: then disabling an
    /// account counts as irreversible (the host cannot know it is not) and
    /// the other writes as reversible, which is what they were before.
    pub async fn check_write(&mut self, write: &PlannedWrite) -> Result<WriteEffect, CallError> {
        // The same request in each version's types.
        macro_rules! request_of {
            ($version:ident) => {
                match write {
                    PlannedWrite::Grant { entitlement_id, principal } => $version::guest::WriteRequest::GrantEntitlement($version::guest::GrantRequest {
                        entitlement_id: entitlement_id.clone(),
                        principal: principal.clone(),
                    }),
                    PlannedWrite::Revoke { grant_id } => $version::guest::WriteRequest::RevokeGrant(grant_id.clone()),
                    PlannedWrite::CreateAccount(request) => $version::guest::WriteRequest::CreateAccount(request.clone().convert()),
                    PlannedWrite::DisableAccount(account) => $version::guest::WriteRequest::DisableAccount(account.clone()),
                }
            };
        }
        if matches!(self.exports, Exports::V0_1(_) | Exports::V0_2(_)) {
            return Ok(match write {
                PlannedWrite::DisableAccount(account) => WriteEffect {
                    description: format!(
                        "disables {}:{} (this connector, built against tether:connector@{}, cannot say whether that can be undone)",
                        account.resource_type, account.id, self.api
                    ),
                    irreversible: true,
                },
                _ => WriteEffect { description: String::new(), irreversible: false },
            });
        }
        let effect = guarded!(self, |exports, store| async {
            match exports {
                Exports::V0_3(world) => world.tether_connector0_3_0_connector().call_check_write(&mut *store, &request_of!(v0_3)).await,
                Exports::V0_4(world) => world
                    .tether_connector0_4_0_connector()
                    .call_check_write(&mut *store, &request_of!(v0_4))
                    .await
                    .map(|r| r.map(|e| v0_3::guest::WriteEffect { description: e.description, irreversible: e.irreversible })),
                Exports::V0_5(world) => world
                    .tether_connector0_5_0_connector()
                    .call_check_write(&mut *store, &request_of!(v0_5))
                    .await
                    .map(|r| r.map(|e| v0_3::guest::WriteEffect { description: e.description, irreversible: e.irreversible })),
                _ => Ok(Err(ConnectorError::Unsupported("check-write is new in tether:connector@0.3.0".into()))),
            }
        })?
        .map_err(CallError::Connector)?;
        Ok(WriteEffect { description: effect.description, irreversible: effect.irreversible })
    }

    /// Caps what one page may carry, in records and in bytes.
    fn check_page(&mut self, page: Page) -> Result<Page, CallError> {
        let limits = &self.store.data().limits;
        let records = page.records();
        let over = if records > limits.records_per_page {
            Some(LimitExceeded::new("records-per-page", format!("{records} records in one page (at most {})", limits.records_per_page)))
        } else {
            let PageBytes { total, largest_record } = page.bytes();
            if total > limits.bytes_per_page {
                Some(LimitExceeded::new("bytes-per-page", format!("{total} bytes in one page (at most {})", limits.bytes_per_page)))
            } else if largest_record > MAX_RECORD_BYTES {
                Some(LimitExceeded::new("bytes-per-record", format!("a record of {largest_record} bytes (at most {MAX_RECORD_BYTES})")))
            } else {
                None
            }
        };
        match over {
            Some(limit) => {
                self.poisoned = true;
                Err(CallError::Limit(limit))
            }
            None => Ok(page),
        }
    }
}

/// A resource's reference, as listings took it before 0.4.0.
fn reference(resource: &guest::Resource) -> ResourceRef {
    ResourceRef { resource_type: resource.resource_type.clone(), id: resource.id.clone() }
}

/// The most bytes of strings one record (a resource, an entitlement, a
/// grant) may carry. A resource is held in memory while its children are
/// listed: 7 MB attributes on resources listed under took the host past
/// a gigabyte within every other limit. Real records are well under 1 KiB.
pub const MAX_RECORD_BYTES: usize = 64 << 10;

/// Turns a wasmtime error into what the operator needs to know: which
/// limit was hit (in one line), or the crash with its wasm backtrace.
/// A crash says what the guest wrote to stderr during the call: a Rust
/// guest's panic message. (The guest never holds a secret to leak here.)
fn with_guest_stderr(error: CallError, stderr: &GuestStderr) -> CallError {
    match error {
        CallError::Trap(trap) => {
            let said = stderr.text();
            if said.is_empty() {
                CallError::Trap(trap)
            } else {
                CallError::Trap(format!("{}\n{trap}", crate::terminal::escape_multiline(&said)))
            }
        }
        other => other,
    }
}

fn classify_trap(error: wasmtime::Error, limits: &Limits) -> CallError {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return CallError::Limit(LimitExceeded::new(limit.limit, limit.detail.clone()));
    }
    // The cause without the backtrace wasmtime wraps it in. Store-limit and
    // hostcall-fuel failures come as messages, not types.
    let cause = error.root_cause().to_string();
    let limit = if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::StackOverflow) {
        Some(("stack", format!("{cause} (at most {} bytes of wasm stack)", crate::runtime::engine::MAX_WASM_STACK)))
    } else if cause.contains("growing memory") || cause.contains("exceeds memory limits") {
        Some(("memory", format!("{cause} (at most {} bytes per memory)", limits.memory_bytes)))
    } else if cause.contains("growing table") || cause.contains("exceeds table limits") {
        Some(("table-elements", format!("{cause} (at most {} elements per table)", limits.table_elements)))
    } else if cause.contains("resource limit exceeded") {
        Some(("instances", format!("{cause} (at most {} instances)", limits.instances)))
    } else if cause.contains("fuel allocated for hostcalls") {
        Some(("hostcall-bytes", format!("{cause} (at most {} bytes per call)", limits.hostcall_bytes)))
    } else {
        None
    };
    match limit {
        Some((limit, detail)) => CallError::Limit(LimitExceeded::new(limit, detail)),
        // The backtrace names the guest's functions: its text, escaped.
        None => CallError::Trap(crate::terminal::escape_multiline(&format!("{error:#}"))),
    }
}

/// The instance name when the operator gives none: the module's file name
/// without its extension (`tether-asana.wasm` → `tether-asana`).
pub fn default_instance_name(module: &std::path::Path) -> String {
    module.file_stem().and_then(|s| s.to_str()).unwrap_or("connector").to_string()
}

/// Storage namespaces are file names; keep only safe characters. A name
/// that had others gets a digest of itself appended, so two names cleaned
/// alike (`a.b`, `a_b`) never share a namespace.
pub fn storage_namespace(label: &str) -> String {
    let cleaned: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned == label && !cleaned.is_empty() {
        return cleaned;
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(&Sha256::digest(label.as_bytes())[..6]);
    if cleaned.is_empty() {
        format!("connector-{digest}")
    } else {
        format!("{cleaned}-{digest}")
    }
}

/// At most this many resource types, hosts, config keys and account
/// fields: the host's work on a sync grows with the types (each top-level
/// one is a listing pending from the start, in every checkpoint), and no
/// real system has nearly so many.
pub const MAX_DECLARED: usize = 256;

/// What the host relies on in a connector's metadata: at most
/// [`MAX_DECLARED`] of each list, type ids and keys that are there and
/// unique, and types listed under types that exist.
fn check_metadata(metadata: &guest::ConnectorMetadata) -> Result<()> {
    use crate::terminal::escape as esc;
    for (what, count) in [
        ("resource types", metadata.resource_types.len()),
        ("hosts", metadata.hosts.len()),
        ("config keys", metadata.config.len()),
        ("account fields", metadata.account_fields.len()),
    ] {
        if count > MAX_DECLARED {
            anyhow::bail!("it declares {count} {what} (at most {MAX_DECLARED})");
        }
    }
    let mut types = std::collections::HashSet::new();
    for t in &metadata.resource_types {
        if t.id.is_empty() {
            anyhow::bail!("a resource type has an empty id");
        }
        if !types.insert(t.id.as_str()) {
            anyhow::bail!("resource type {} is declared twice", esc(&t.id));
        }
    }
    for t in &metadata.resource_types {
        if let Some(parent) = &t.listed_under {
            if !types.contains(parent.as_str()) {
                anyhow::bail!("resource type {} is listed under {}, which it does not declare", esc(&t.id), esc(parent));
            }
        }
    }
    for fields in [&metadata.config, &metadata.account_fields] {
        let mut keys = std::collections::HashSet::new();
        for field in fields {
            if field.key.is_empty() || !keys.insert(field.key.as_str()) {
                anyhow::bail!("config key {:?} is empty or declared twice", esc(&field.key));
            }
        }
    }
    Ok(())
}

fn empty_metadata() -> guest::ConnectorMetadata {
    guest::ConnectorMetadata {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        resource_types: vec![],
        config: vec![],
        hosts: vec![],
        account_fields: vec![],
    }
}

/// How often a call that the upstream rate-limited is tried again, and the
/// longest wait honoured from a Retry-After.
pub const RATE_LIMIT_RETRIES: u32 = 8;
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(120);

/// Calls `$instance.$method(args)` again while the connector reports
/// `rate-limited`, waiting as long as the upstream asked (Retry-After).
/// Every list call is one upstream request, so a retry repeats exactly the
/// page that was refused.
macro_rules! retry_rate_limited {
    ($instance:expr, $method:ident ( $($arg:expr),* )) => {{
        let mut attempt = 0;
        loop {
            match $instance.$method($($arg),*).await {
                Err($crate::runtime::instance::CallError::Connector($crate::runtime::bindings::ConnectorError::RateLimited(limit)))
                    if attempt < $crate::runtime::instance::RATE_LIMIT_RETRIES =>
                {
                    attempt += 1;
                    let wait = std::time::Duration::from_millis(limit.retry_after_ms).min($crate::runtime::instance::MAX_RETRY_WAIT);
                    // A long wait is the operator's business (the CLI shows warnings only).
                    if wait >= std::time::Duration::from_secs(10) {
                        tracing::warn!("rate limited; retrying in {wait:?} ({attempt}/{})", $crate::runtime::instance::RATE_LIMIT_RETRIES);
                    } else {
                        tracing::info!("rate limited; retrying in {wait:?} ({attempt}/{})", $crate::runtime::instance::RATE_LIMIT_RETRIES);
                    }
                    tokio::time::sleep(wait).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retry_rate_limited;

//! Guest memory shared by the instances of one pool.
//!
//! Each instance's memory is capped (`--max-memory-mb`), and a pool runs as
//! many instances as the connector declares concurrent reads (up to 64).
//! Without a budget for the pool as a whole, an untrusted module could ask
//! for 64 instances and fill each: 4 GiB at the default cap. Every store's
//! memory counts against the pool's budget (`--max-pool-memory-mb`), so a
//! pool holds no more than that however many instances it has; a
//! connector that needs little memory (Asana: a few MiB an instance) still
//! gets all the instances it asks for.
//!
//! The instance cap counts all of a store's memories together: a component
//! may hold several core instances, or core modules with several memories
//! (multi-memory), and each would otherwise get the whole cap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wasmtime::{ResourceLimiter, Result, StoreLimits};

use crate::runtime::limits::LimitExceeded;

/// The budget one pool's instances share.
#[derive(Debug)]
pub struct PoolMemory {
    used: AtomicUsize,
    total: usize,
}

impl PoolMemory {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(PoolMemory { used: AtomicUsize::new(0), total })
    }

    /// Bytes of linear memory the pool's instances hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `bytes` from the budget, or says how much is left.
    fn reserve(&self, bytes: usize) -> Result<(), usize> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| used.checked_add(bytes).filter(|after| *after <= self.total))
            .map(|_| ())
            .map_err(|used| self.total.saturating_sub(used))
    }

    fn release(&self, bytes: usize) {
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| Some(used.saturating_sub(bytes)));
    }
}

/// One store's limits: its own (wasmtime's `StoreLimits`, per memory and
/// table), the instance's cap on all its memories together, then its share
/// of the pool's memory. What it holds goes back to the pool when the
/// store is dropped.
pub struct PoolLimiter {
    store: StoreLimits,
    pool: Arc<PoolMemory>,
    /// Bytes all of the store's memories may hold together.
    instance_total: usize,
    held: usize,
}

impl PoolLimiter {
    pub fn new(store: StoreLimits, instance_total: usize, pool: Arc<PoolMemory>) -> Self {
        PoolLimiter { store, pool, instance_total, held: 0 }
    }
}

impl ResourceLimiter for PoolLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool> {
        if !self.store.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if self.held.saturating_add(more) > self.instance_total {
            return Err(wasmtime::Error::new(LimitExceeded::new(
                "memory",
                format!(
                    "growing a memory by {more} bytes would take this instance's memories past {} bytes together ({} held); see --max-memory-mb",
                    self.instance_total, self.held
                ),
            )));
        }
        match self.pool.reserve(more) {
            Ok(()) => {
                self.held += more;
                Ok(true)
            }
            Err(left) => Err(wasmtime::Error::new(LimitExceeded::new(
                "pool-memory",
                format!(
                    "growing memory by {more} bytes would take this connector's instances past {} bytes together ({left} left); see --max-pool-memory-mb",
                    self.pool.total
                ),
            ))),
        }
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.store.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool> {
        self.store.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.store.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.store.instances()
    }

    fn tables(&self) -> usize {
        self.store.tables()
    }

    fn memories(&self) -> usize {
        self.store.memories()
    }
}

impl Drop for PoolLimiter {
    fn drop(&mut self) {
        self.pool.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    #[test]
    fn instances_share_the_budget_and_give_it_back_when_dropped() {
        let pool = PoolMemory::new(100);
        let limits = || StoreLimitsBuilder::new().memory_size(80).build();
        let mut a = PoolLimiter::new(limits(), 80, pool.clone());
        let mut b = PoolLimiter::new(limits(), 80, pool.clone());
        assert!(a.memory_growing(0, 60, None).unwrap());
        // Within its own cap (80) but past the pool's (100).
        let refused = b.memory_growing(0, 60, None).unwrap_err();
        assert_eq!(refused.downcast_ref::<LimitExceeded>().map(|l| l.limit), Some("pool-memory"));
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(pool.used(), 100);
        // Its own cap still holds first.
        assert!(!a.memory_growing(60, 90, None).unwrap());
        drop(a);
        assert_eq!(pool.used(), 40);
        assert!(b.memory_growing(40, 80, None).unwrap());
    }

    #[test]
    fn an_instance_cap_counts_all_its_memories_together() {
        let pool = PoolMemory::new(1000);
        let mut limiter = PoolLimiter::new(StoreLimitsBuilder::new().memory_size(80).build(), 80, pool.clone());
        // Two memories, each within the per-memory cap.
        assert!(limiter.memory_growing(0, 50, None).unwrap());
        let refused = limiter.memory_growing(0, 50, None).unwrap_err();
        assert_eq!(refused.downcast_ref::<LimitExceeded>().map(|l| l.limit), Some("memory"));
        assert!(limiter.memory_growing(0, 30, None).unwrap());
        assert_eq!(pool.used(), 80);
    }
}

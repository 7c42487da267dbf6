//! One task for many members: a Kafka cluster's offsets cycle, or a group of Prometheus queries
//! that share one query. Members join and leave with their collectors; the task stops with its
//! last member.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// A running pool: its members and its task.
pub struct Pool<M> {
    shared: Arc<PoolShared<M>>,
    task: JoinHandle<()>,
}

/// What a pool's task shares with the hub.
pub struct PoolShared<M> {
    /// The members, each with the id its [`Membership`] removes on drop.
    pub members: Mutex<Vec<(u64, M)>>,
    /// A new member wants its first reading now, not at the next tick.
    pub wake: Notify,
}

impl<M> Default for PoolShared<M> {
    fn default() -> Self {
        Self { members: Mutex::new(Vec::new()), wake: Notify::new() }
    }
}

/// A place in a pool, left on drop.
pub struct Membership<M> {
    pool: Arc<Pool<M>>,
    id: u64,
}

impl<M> Drop for Membership<M> {
    fn drop(&mut self) {
        if let Ok(mut members) = self.pool.shared.members.lock() {
            members.retain(|(id, _)| *id != self.id);
        }
    }
}

impl<M> Drop for Pool<M> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running pools of one kind, by what their members share.
pub struct Pools<K, M> {
    running: Mutex<HashMap<K, Weak<Pool<M>>>>,
    next_member: AtomicU64,
}

impl<K, M> Default for Pools<K, M> {
    fn default() -> Self {
        Self { running: Mutex::new(HashMap::new()), next_member: AtomicU64::new(0) }
    }
}

impl<K: Eq + Hash + Clone, M> Pools<K, M> {
    /// Adds `member` to the pool at `key`, starting the pool with `start` if it is the first, and
    /// wakes the pool for the member's first reading.
    pub fn join(&self, key: &K, member: M, start: impl FnOnce(Arc<PoolShared<M>>) -> JoinHandle<()>) -> Membership<M> {
        let mut pools = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = match pools.get(key).and_then(Weak::upgrade) {
            Some(running) => running,
            None => {
                pools.retain(|_, p| p.strong_count() > 0);
                let shared = Arc::new(PoolShared::default());
                let pool = Arc::new(Pool { shared: shared.clone(), task: start(shared) });
                pools.insert(key.clone(), Arc::downgrade(&pool));
                pool
            }
        };
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut members) = pool.shared.members.lock() {
            members.push((id, member));
        }
        pool.shared.wake.notify_one();
        Membership { pool, id }
    }

    /// Forgets every pool: later members start new ones, the running ones serve theirs until they leave.
    pub fn clear(&self) {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// A poll loop's clock: a poll that overruns delays the next one instead of bunching them.
pub fn poll_ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

//! Fair shares between namespaces of what weir shares among them: webhook call slots,
//! a provider's query slots, a receiver's notification queue and its deliveries.
//!
//! The design is a per-namespace cap under a global one. A namespace holds at most
//! `per_namespace` of the `total` slots at once, so however many calls, queries or
//! notifications one tenant makes — never-answering hooks at the shortest interval,
//! queries that take the provider's whole timeout, a notification flood — the others
//! always find `total - per_namespace` free. A namespace waits for its own slots first,
//! then for a global one: a tenant over its cap queues behind itself, not in front of
//! others. (k hostile namespaces together hold k × `per_namespace`; the caps are set so
//! that a few still leave room, and every slot is held for a bounded time.) Simpler to
//! reason about than weighted round-robin, and what a tenant gets does not depend on how
//! many others are busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots shared by namespaces, each capped at its share.
#[derive(Debug)]
pub struct FairSlots {
    total: Arc<Semaphore>,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A slot held: released when dropped.
pub struct Slot {
    _namespace: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl FairSlots {
    pub fn new(total: usize, per_namespace: usize) -> FairSlots {
        FairSlots {
            total: Arc::new(Semaphore::new(total)),
            per_namespace: per_namespace.clamp(1, total.max(1)),
            namespaces: Mutex::default(),
        }
    }

    fn of(&self, namespace: &str) -> Arc<Semaphore> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces
            .entry(namespace.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace)))
            .clone()
    }

    /// Waits for a slot of `namespace`'s share, then for one of the total. `None` only
    /// if the semaphores were closed, which they never are.
    pub async fn acquire(&self, namespace: &str) -> Option<Slot> {
        let own = self.of(namespace).acquire_owned().await.ok()?;
        let total = self.total.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _namespace: own,
            _total: total,
        })
    }

    /// A slot now, or `None` when `namespace` holds its share or every slot is taken.
    pub fn try_acquire(&self, namespace: &str) -> Option<Slot> {
        let own = self.of(namespace).try_acquire_owned().ok()?;
        let total = self.total.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _namespace: own,
            _total: total,
        })
    }

    /// Like `acquire`, giving up after `wait`.
    pub async fn acquire_within(&self, namespace: &str, wait: Duration) -> Option<Slot> {
        tokio::time::timeout(wait, self.acquire(namespace)).await.ok().flatten()
    }

    /// Slots of `namespace` held now (for tests and `/metrics`).
    pub fn held_by(&self, namespace: &str) -> usize {
        self.per_namespace - self.of(namespace).available_permits()
    }
}

/// Admission to a bounded queue, a share per namespace: `enter` says no when the
/// namespace has its share queued or the whole queue is full.
pub struct FairQueue {
    total: usize,
    per_namespace: usize,
    queued: Arc<Mutex<Queued>>,
}

#[derive(Default)]
struct Queued {
    all: usize,
    by_namespace: HashMap<String, usize>,
}

/// A place in the queue: given back when dropped.
pub struct Ticket {
    namespace: String,
    queued: Arc<Mutex<Queued>>,
}

impl FairQueue {
    pub fn new(total: usize, per_namespace: usize) -> FairQueue {
        FairQueue {
            total,
            per_namespace: per_namespace.min(total),
            queued: Arc::default(),
        }
    }

    pub fn enter(&self, namespace: &str) -> Option<Ticket> {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        let mine = q.by_namespace.get(namespace).copied().unwrap_or(0);
        if q.all >= self.total || mine >= self.per_namespace {
            return None;
        }
        q.all += 1;
        q.by_namespace.insert(namespace.to_string(), mine + 1);
        Some(Ticket {
            namespace: namespace.to_string(),
            queued: self.queued.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        q.all = q.all.saturating_sub(1);
        let left = match q.by_namespace.get_mut(&self.namespace) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        // A namespace with nothing queued costs no memory.
        if left == 0 {
            q.by_namespace.remove(&self.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_namespace_holding_its_share_leaves_the_rest_to_the_others() {
        let slots = FairSlots::new(8, 2);
        let hostile: Vec<Option<Slot>> = vec![slots.acquire("hostile").await, slots.acquire("hostile").await];
        // Its third waits behind its own share...
        let wait = Duration::from_millis(50);
        assert!(slots.acquire_within("hostile", wait).await.is_none());
        // ...while every other namespace gets its slots at once.
        for ns in ["a", "b", "c"] {
            let first = slots.acquire_within(ns, wait).await;
            let second = slots.acquire_within(ns, wait).await;
            assert!(first.is_some() && second.is_some(), "{ns} waited");
        }
        assert_eq!(slots.held_by("hostile"), 2);
        drop(hostile);
        assert!(slots.acquire_within("hostile", wait).await.is_some());
    }

    #[test]
    fn a_flooding_namespace_fills_only_its_share_of_the_queue() {
        let queue = FairQueue::new(10, 3);
        let flood: Vec<Ticket> = (0..100).filter_map(|_| queue.enter("flood")).collect();
        assert_eq!(flood.len(), 3);
        let others: Vec<Ticket> = ["a", "b", "c"]
            .iter()
            .flat_map(|ns| (0..3).filter_map(|_| queue.enter(ns)))
            .collect();
        assert_eq!(others.len(), 7, "the whole queue is full at 10");
        drop(flood);
        assert!(queue.enter("flood").is_some());
        drop(others);
        assert!(queue.queued.lock().unwrap().by_namespace.len() <= 1);
    }
}

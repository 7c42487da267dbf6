//! An app's gate: open while its backend is ready; while closed, requests wait in a bounded
//! queue, in arrival order, and are released in that order when it opens.
//!
//! Readiness and the queue share one lock, so a request can never be queued just after the
//! release that would have woken it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Why a held request stops waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Release {
    /// The backend is ready: forward it.
    Ready,
    /// The app's route was removed.
    Removed,
    /// The activator is shutting down and its drain time is over.
    Shutdown,
}

struct Waiter {
    id: u64,
    wake: oneshot::Sender<Release>,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// A prober is running for this gate.
    probing: bool,
}

/// One app's gate and the queue of requests waiting at it.
#[derive(Default)]
pub(super) struct Hold {
    ready: AtomicBool,
    queue: Mutex<Queue>,
}

/// What became of a request that found the gate closed.
pub(super) enum Admit {
    /// The gate opened meanwhile: forward at once.
    Ready,
    /// The queue is full.
    Full,
    /// Queued: wait on `ticket`.
    Held {
        /// The request's place in the queue.
        ticket: Ticket,
        /// The queue was empty: this request is the first demand of this wait.
        first: bool,
        /// No prober runs: the caller starts one.
        start_probe: bool,
    },
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the gate is open (the backend is ready).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many requests wait.
    pub fn held(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Queues a request unless the gate is open or `max_held` requests already wait.
    pub fn admit(self: &Arc<Self>, max_held: usize) -> Admit {
        let mut queue = self.lock();
        if self.is_ready() {
            return Admit::Ready;
        }
        if queue.waiters.len() >= max_held {
            return Admit::Full;
        }
        let (wake, woken) = oneshot::channel();
        let id = queue.next_id;
        queue.next_id += 1;
        let first = queue.waiters.is_empty();
        queue.waiters.push_back(Waiter { id, wake });
        let start_probe = !std::mem::replace(&mut queue.probing, true);
        Admit::Held { ticket: Ticket { hold: self.clone(), id, woken }, first, start_probe }
    }

    /// Opens the gate and releases every waiter, oldest first; returns how many.
    pub fn open(&self) -> usize {
        let mut queue = self.lock();
        self.ready.store(true, Ordering::Release);
        queue.probing = false;
        let released = queue.waiters.len();
        for waiter in queue.waiters.drain(..) {
            let _ = waiter.wake.send(Release::Ready);
        }
        released
    }

    /// Closes the gate; returns whether it was open.
    pub fn close(&self) -> bool {
        let _queue = self.lock();
        self.ready.swap(false, Ordering::AcqRel)
    }

    /// Answers every waiter with `why` (route removed, shutdown).
    pub fn release_all(&self, why: Release) {
        for waiter in self.lock().waiters.drain(..) {
            let _ = waiter.wake.send(why);
        }
    }

    /// Called by the prober between attempts: when nothing waits any more it stops (the next
    /// held request starts a new one) and this returns `false`.
    pub fn keep_probing(&self) -> bool {
        let mut queue = self.lock();
        if queue.waiters.is_empty() {
            queue.probing = false;
        }
        queue.probing
    }

    /// Called by a prober that stops for another reason (route removed).
    pub fn stop_probing(&self) {
        self.lock().probing = false;
    }
}

/// A held request's place in the queue; dropping it (timeout, client gone) frees the place.
pub(super) struct Ticket {
    hold: Arc<Hold>,
    id: u64,
    woken: oneshot::Receiver<Release>,
}

impl Ticket {
    /// Waits for the release. A gate dropped without a release counts as a removed route.
    pub async fn released(&mut self) -> Release {
        (&mut self.woken).await.unwrap_or(Release::Removed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queue = self.hold.lock();
        // Ids are increasing in queue order, so the waiter is found by binary search.
        if let Ok(index) = queue.waiters.binary_search_by_key(&self.id, |w| w.id) {
            queue.waiters.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(admit: Admit) -> (Ticket, bool, bool) {
        match admit {
            Admit::Held { ticket, first, start_probe } => (ticket, first, start_probe),
            Admit::Ready => panic!("ready"),
            Admit::Full => panic!("full"),
        }
    }

    #[tokio::test]
    async fn released_in_order_and_bounded() {
        let hold = Arc::new(Hold::default());
        let (mut a, first_a, probe_a) = held(hold.admit(2));
        let (mut b, first_b, probe_b) = held(hold.admit(2));
        assert_eq!((first_a, probe_a, first_b, probe_b), (true, true, false, false));
        assert!(matches!(hold.admit(2), Admit::Full));
        assert_eq!(hold.held(), 2);
        assert_eq!(hold.open(), 2);
        assert_eq!(a.released().await, Release::Ready);
        assert_eq!(b.released().await, Release::Ready);
        assert!(matches!(hold.admit(2), Admit::Ready));
        assert!(hold.close());
        assert!(!hold.close());
    }

    #[tokio::test]
    async fn a_dropped_ticket_frees_its_place_and_stops_the_prober() {
        let hold = Arc::new(Hold::default());
        let (a, ..) = held(hold.admit(1));
        assert!(hold.keep_probing());
        drop(a);
        assert_eq!(hold.held(), 0);
        assert!(!hold.keep_probing());
        let (mut b, first, start_probe) = held(hold.admit(1));
        assert!(first && start_probe);
        hold.release_all(Release::Removed);
        assert_eq!(b.released().await, Release::Removed);
    }
}

//! An app's gate: open while its backend is ready; while closed, requests wait in a bounded
//! queue, in arrival order, and are released in that order when it opens.
//!
//! Readiness and the queue share one lock, so a request can never be queued just after the
//! release that would have woken it.
//!
//! # The release pace
//!
//! A backend that just turned ready is often one fresh pod: releasing every held request at once
//! would open as many connections to it in the same millisecond. The gate opens the way TCP's
//! slow start does instead: at first at most [`RELEASE_WINDOW`] released requests are in flight
//! at the backend, and each one that is answered lets one more go, so the window doubles every
//! round trip while the backend keeps up, and never grows while it answers nothing. Requests
//! arriving meanwhile queue behind the held ones (arrival order is kept); once the queue is empty
//! the gate is open and requests go straight through.
//!
//! With the default window of 32, 1,000 held requests go in six round trips (32, 64, 128, 256,
//! 512, then the last 8): within about 0.1 s of the backend turning ready when it answers in
//! 15 ms, within a second when it answers in 150 ms.
//!
//! "In flight" is the app's count of forwarded requests whose response has not finished, read
//! every [`RELEASE_STEP`] while held requests remain, less those in flight already when the
//! backend turned ready; a released request counts from its release, before its forward starts.
//! The window is per app and per activator replica.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// How many held requests may be in flight at an app's backend that just turned ready, before
/// any of them is answered.
///
/// Held requests are released oldest first, like TCP's slow start: at first at most this many
/// are in flight at the backend, and each one answered lets one more go, so the window doubles
/// every round trip while the backend keeps up and never grows while it answers nothing.
/// Requests arriving meanwhile queue behind the held ones; once none waits, requests go straight
/// through. 1,000 held requests go in six round trips: within a second for a backend answering
/// in 150 ms. The window is per app and per activator replica.
pub const RELEASE_WINDOW: usize = 32;

/// While held requests remain after the first window, how often the release looks for answered
/// ones.
const RELEASE_STEP: Duration = Duration::from_millis(1);

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

/// A paced release under way: the backend is ready, held requests remain.
struct Pace {
    /// Tells this release from a later one (after the gate closed and opened again).
    id: u64,
    /// The app's requests in flight when the backend turned ready: not this release's.
    base: usize,
    /// Requests this release let go.
    released: usize,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// A prober is running for this gate.
    probing: bool,
    /// The paced release under way, if one is.
    pace: Option<Pace>,
    /// Paced releases begun so far.
    paces: u64,
    /// The ids of released requests whose ticket is alive: their forward has not started, so the
    /// in-flight count does not show them yet. In release order, which is id order.
    leaving: VecDeque<u64>,
    /// Released requests whose ticket dropped since the pace last counted: their forward has
    /// just started, and the in-flight count may not show them yet.
    left: usize,
}

/// Reads how many of the app's forwarded requests have not finished.
type Load = Box<dyn Fn() -> usize + Send + Sync>;

/// One app's gate and the queue of requests waiting at it.
pub(super) struct Hold {
    ready: AtomicBool,
    queue: Mutex<Queue>,
    in_flight: Load,
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
        /// The queue was empty and the backend not ready: this request is the first demand of
        /// this wait.
        first: bool,
        /// No prober runs: the caller starts one.
        start_probe: bool,
    },
}

impl Hold {
    /// A closed gate; `in_flight` reads the app's forwarded requests whose response has not
    /// finished, which paces the release.
    pub fn new(in_flight: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        Self { ready: AtomicBool::new(false), queue: Mutex::default(), in_flight: Box::new(in_flight) }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the gate is open (the backend is ready and no request waits any more).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many requests wait.
    pub fn held(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Queues a request unless the gate is open or `max_held` requests already wait. While a
    /// paced release is under way the request queues behind the held ones, and neither wakes
    /// the app nor starts a prober.
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
        let releasing = queue.pace.is_some();
        let first = queue.waiters.is_empty() && !releasing;
        queue.waiters.push_back(Waiter { id, wake });
        let start_probe = !releasing && !std::mem::replace(&mut queue.probing, true);
        Admit::Held { ticket: Ticket { hold: self.clone(), id, woken }, first, start_probe }
    }

    /// The backend is ready: releases the waiters, oldest first, at the pace of the module
    /// docs (the first window now, the rest from a task), and opens the gate when none
    /// is left. Returns how many waited.
    pub fn open(self: &Arc<Self>) -> usize {
        let (held, pace) = self.begin();
        if let Some(id) = pace {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(release(self.clone(), id))),
                // No runtime to pace them with: all at once.
                Err(_) => self.finish(id),
            }
        }
        held
    }

    /// Begins a paced release and lets the first window go; returns how many waited and, when
    /// some still wait, the release's id.
    fn begin(&self) -> (usize, Option<u64>) {
        let mut queue = self.lock();
        queue.probing = false;
        let held = queue.waiters.len();
        queue.paces += 1;
        let id = queue.paces;
        queue.pace = Some(Pace { id, base: (self.in_flight)(), released: 0 });
        queue.left = 0;
        let more = self.pace(&mut queue, id);
        (held, more.then_some(id))
    }

    /// One step of the release `id`: lets go as many waiters as its window has room for, and
    /// opens the gate when none is left. Returns whether the release goes on.
    fn step(&self, id: u64) -> bool {
        let mut queue = self.lock();
        self.pace(&mut queue, id)
    }

    fn pace(&self, queue: &mut Queue, id: u64) -> bool {
        let Some(pace) = queue.pace.as_mut().filter(|p| p.id == id) else { return false };
        // Released and not answered: forwarded and in flight, about to be forwarded, or forwarded
        // since the last step (perhaps counted twice, never missed).
        let forwarded = (self.in_flight)().saturating_sub(pace.base);
        let outstanding = forwarded + queue.leaving.len() + std::mem::take(&mut queue.left);
        let answered = pace.released.saturating_sub(outstanding);
        let room = (RELEASE_WINDOW + answered).saturating_sub(outstanding);
        let going = room.min(queue.waiters.len());
        pace.released += going;
        for waiter in queue.waiters.drain(..going) {
            if waiter.wake.send(Release::Ready).is_ok() {
                queue.leaving.push_back(waiter.id);
            }
        }
        if queue.waiters.is_empty() {
            queue.pace = None;
            self.ready.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Ends the release `id` by letting every waiter go at once and opening the gate.
    fn finish(&self, id: u64) {
        let mut queue = self.lock();
        if queue.pace.as_ref().is_some_and(|p| p.id == id) {
            queue.pace = None;
            self.ready.store(true, Ordering::Release);
            for waiter in std::mem::take(&mut queue.waiters) {
                if waiter.wake.send(Release::Ready).is_ok() {
                    queue.leaving.push_back(waiter.id);
                }
            }
        }
    }

    /// Closes the gate and ends a paced release under way; returns whether the gate was open or
    /// opening. Requests still held wait for a prober again: the next request held starts one
    /// (usually the one whose forward found the backend gone, held again).
    pub fn close(&self) -> bool {
        let mut queue = self.lock();
        let releasing = queue.pace.take().is_some();
        self.ready.swap(false, Ordering::AcqRel) || releasing
    }

    /// Answers every waiter with `why` (route removed, shutdown) and ends a paced release.
    pub fn release_all(&self, why: Release) {
        let mut queue = self.lock();
        queue.pace = None;
        for waiter in queue.waiters.drain(..) {
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

/// Paces the release `id` after its first window, until it ends.
async fn release(hold: Arc<Hold>, id: u64) {
    loop {
        tokio::time::sleep(RELEASE_STEP).await;
        if !hold.step(id) {
            return;
        }
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
        // Ids are increasing in queue order and in release order, so binary searches find them.
        if let Ok(index) = queue.waiters.binary_search_by_key(&self.id, |w| w.id) {
            queue.waiters.remove(index);
        } else if let Ok(index) = queue.leaving.binary_search(&self.id) {
            // Released: the forward starts now.
            queue.leaving.remove(index);
            queue.left += 1;
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
        let hold = Arc::new(Hold::new(|| 0));
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
        let hold = Arc::new(Hold::new(|| 0));
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

    fn woken(ticket: &mut Ticket) -> Option<Release> {
        ticket.woken.try_recv().ok()
    }

    #[test]
    fn released_one_window_first_then_one_more_per_answered_request() {
        use std::sync::atomic::AtomicUsize;
        let in_flight = Arc::new(AtomicUsize::new(2)); // two requests from before the backend went away
        let hold = Arc::new(Hold::new({
            let in_flight = in_flight.clone();
            move || in_flight.load(Ordering::SeqCst)
        }));
        let total = 2 * RELEASE_WINDOW + 5;
        let mut tickets: VecDeque<Ticket> = (0..total).map(|_| held(hold.admit(total)).0).collect();

        let (waited, pace) = hold.begin();
        let id = pace.expect("more than a window waits");
        assert_eq!(waited, total);
        assert!(tickets.iter_mut().take(RELEASE_WINDOW).all(|t| woken(t) == Some(Release::Ready)));
        assert_eq!(woken(&mut tickets[RELEASE_WINDOW]), None);
        assert_eq!(hold.held(), total - RELEASE_WINDOW);
        assert!(!hold.is_ready());

        // Released, not forwarded yet: they count.
        assert!(hold.step(id));
        assert_eq!(hold.held(), total - RELEASE_WINDOW);
        // Forwarded and unanswered: still no room.
        tickets.drain(..RELEASE_WINDOW).for_each(drop);
        in_flight.fetch_add(RELEASE_WINDOW, Ordering::SeqCst);
        assert!(hold.step(id) && hold.step(id));
        assert_eq!(hold.held(), total - RELEASE_WINDOW);

        // A request arriving meanwhile queues behind the held ones, neither first nor probing.
        let (late, first, start_probe) = held(hold.admit(total + 1));
        assert!(!first && !start_probe);
        tickets.push_back(late);

        // Three answered: six more go (the window grew by three, three places are free).
        in_flight.fetch_sub(3, Ordering::SeqCst);
        assert!(hold.step(id));
        assert_eq!(hold.held(), total + 1 - RELEASE_WINDOW - 6);
        assert!(tickets.iter_mut().take(6).all(|t| woken(t) == Some(Release::Ready)));
        assert_eq!(woken(&mut tickets[6]), None);

        // All answered: the rest fit in the grown window and the gate opens.
        tickets.drain(..6).for_each(drop);
        in_flight.store(2, Ordering::SeqCst);
        assert!(!hold.step(id));
        assert_eq!(hold.held(), 0);
        assert!(hold.is_ready());
        assert!(tickets.iter_mut().all(|t| woken(t) == Some(Release::Ready)));
        assert!(matches!(hold.admit(total), Admit::Ready));
    }

    #[test]
    fn closing_ends_a_paced_release_and_the_next_hold_probes_again() {
        let hold = Arc::new(Hold::new(|| 0));
        let mut tickets: Vec<Ticket> = (0..RELEASE_WINDOW + 1).map(|_| held(hold.admit(100)).0).collect();
        let id = hold.begin().1.expect("one more than a window");
        assert!(hold.close(), "it was opening");
        assert!(!hold.step(id), "the release ended");
        assert_eq!(woken(tickets.last_mut().unwrap()), None, "still held");
        let (_again, first, start_probe) = held(hold.admit(100));
        assert!(!first && start_probe);
        assert_eq!(hold.held(), 2);
    }

    #[test]
    fn without_a_runtime_all_go_at_once() {
        let hold = Arc::new(Hold::new(|| 0));
        let mut tickets: Vec<Ticket> = (0..RELEASE_WINDOW * 3).map(|_| held(hold.admit(1000)).0).collect();
        assert_eq!(hold.open(), RELEASE_WINDOW * 3);
        assert!(hold.is_ready());
        assert!(tickets.iter_mut().all(|t| woken(t) == Some(Release::Ready)));
    }
}

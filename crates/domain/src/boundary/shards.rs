//! The tracker's in-memory accumulator: striped by thread so `track` from
//! many threads neither contends on one lock nor bounces one cache line.
//!
//! Each thread has a home stripe. It takes that stripe's lock (almost always
//! uncontended, and the stripe's memory stays in that core's cache); if the
//! lock is busy it moves to a free stripe and makes it its new home. A drain
//! takes every stripe in turn and merges them, so the same workspace seen on
//! two stripes is still counted once.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};
use uuid::Uuid;

/// Distinct ids as `u128`: hashing one integer is cheaper than a byte slice.
pub(crate) type IdSet = hashbrown::HashSet<u128>;

/// Enough stripes that threads rarely share one; a drain visits them all.
const STRIPES: usize = 16;

/// Counts and distinct ids accumulated since the last drain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    pub allowed: u64,
    pub denied: u64,
    pub workspaces: IdSet,
    pub users: IdSet,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.allowed == 0 && self.denied == 0 && self.workspaces.is_empty() && self.users.is_empty()
    }

    fn add(&mut self, workspace_id: Uuid, owner_id: Uuid, allowed: u64, denied: u64) {
        // Saturating: a wrapped counter would be silently wrong.
        self.allowed = self.allowed.saturating_add(allowed);
        self.denied = self.denied.saturating_add(denied);
        self.workspaces.insert(workspace_id.as_u128());
        self.users.insert(owner_id.as_u128());
    }

    /// Moves `other` into `self`, reusing the bigger allocation.
    fn merge(&mut self, mut other: Usage) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.denied = self.denied.saturating_add(other.denied);
        if other.workspaces.len() > self.workspaces.len() {
            std::mem::swap(&mut self.workspaces, &mut other.workspaces);
        }
        self.workspaces.extend(other.workspaces);
        if other.users.len() > self.users.len() {
            std::mem::swap(&mut self.users, &mut other.users);
        }
        self.users.extend(other.users);
    }
}

/// One stripe on its own cache lines, so two cores never write the same line.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(Mutex<Usage>);

pub(crate) struct Stripes {
    stripes: Box<[Stripe]>,
}

impl std::fmt::Debug for Stripes {
    // The id sets can be large; their contents help nobody in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripes")
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

impl Default for Stripes {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Shared by all trackers of the process: a thread's home is just a
    // spreading hint, any stripe is correct.
    static HOME: Cell<usize> = Cell::new(NEXT_HOME.fetch_add(1, Ordering::Relaxed));
}

impl Stripes {
    pub fn track(&self, workspace_id: Uuid, owner_id: Uuid, allowed: u64, denied: u64) {
        self.lock_some().add(workspace_id, owner_id, allowed, denied);
    }

    /// Locks the thread's home stripe, or a free one if home is busy.
    fn lock_some(&self) -> MutexGuard<'_, Usage> {
        let n = self.stripes.len();
        let home = HOME.with(Cell::get) % n;
        if let Some(guard) = self.stripes[home].0.try_lock() {
            return guard;
        }
        for step in 1..n {
            let i = (home + step) % n;
            if let Some(guard) = self.stripes[i].0.try_lock() {
                HOME.with(|h| h.set(i));
                return guard;
            }
        }
        self.stripes[home].0.lock()
    }

    /// Takes everything accumulated so far, leaving the stripes empty.
    /// Each stripe is taken atomically; a `track` racing with the drain lands
    /// wholly in this drain or wholly in the next.
    pub fn drain(&self) -> Usage {
        let mut total = Usage::default();
        for stripe in self.stripes.iter() {
            let taken = std::mem::take(&mut *stripe.0.lock());
            total.merge(taken);
        }
        total
    }

    /// A copy of everything accumulated, merged, without draining.
    pub fn peek(&self) -> Usage {
        let mut total = Usage::default();
        for stripe in self.stripes.iter() {
            let copy = stripe.0.lock().clone();
            total.merge(copy);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_merges_stripes_and_counts_each_id_once() {
        let stripes = Stripes::default();
        let (w, u, v) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        stripes.stripes[0].0.lock().add(w, u, 1, 2);
        stripes.stripes[5].0.lock().add(w, v, 3, 4);
        stripes.track(w, u, 10, 20);
        assert_eq!(stripes.peek().allowed, 14);
        let usage = stripes.drain();
        assert_eq!((usage.allowed, usage.denied), (14, 26));
        assert_eq!(usage.workspaces.len(), 1);
        assert_eq!(usage.users.len(), 2);
        assert!(stripes.drain().is_empty());
    }

    #[test]
    fn a_busy_home_stripe_sends_the_thread_to_a_free_one() {
        let stripes = Stripes::default();
        let home = stripes.lock_some();
        // The home stripe is held: this call must not wait for it.
        stripes.track(Uuid::from_u128(1), Uuid::from_u128(2), 1, 0);
        drop(home);
        stripes.track(Uuid::from_u128(1), Uuid::from_u128(2), 1, 0);
        let busy = stripes.stripes.iter().filter(|s| s.0.lock().allowed > 0).count();
        assert_eq!(busy, 1, "the thread stays on the stripe it moved to");
        assert_eq!(stripes.drain().allowed, 2);
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let stripes = Stripes::default();
        let (w, u) = (Uuid::from_u128(1), Uuid::from_u128(2));
        stripes.track(w, u, u64::MAX, 0);
        stripes.track(w, u, 5, 0);
        assert_eq!(stripes.drain().allowed, u64::MAX);
    }
}

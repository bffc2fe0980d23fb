//! Keys this store wrote recently, so a write sends rows it wrote before
//! straight to the upsert.
//!
//! A COPY of rows that already exist fails on the first one, and every row
//! it inserted before that stays behind as a dead tuple until vacuum: with
//! open sessions rewritten at every flush, that was most of the heap. A
//! replica rewrites its own open sessions, so what it wrote recently is
//! what will conflict. A key missed here (another replica's row, one
//! forgotten) only costs the COPY's fallback; a false hit only sends a new
//! row through the upsert, which inserts it: the result is the same.

use std::collections::HashSet;
use std::hash::BuildHasher;

use parking_lot::Mutex;
use uuid::Uuid;

/// Keys remembered per generation; two generations are kept.
const GENERATION: usize = 1 << 18;

#[derive(Debug, Default)]
pub(crate) struct RecentKeys {
    hasher: foldhash::fast::RandomState,
    /// (current, previous) generation of key hashes.
    sets: Mutex<(HashSet<u64>, HashSet<u64>)>,
}

impl RecentKeys {
    pub(crate) fn hash(&self, key: (Uuid, Uuid, Uuid)) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Which of `hashes` were written recently.
    pub(crate) fn seen(&self, hashes: &[u64]) -> Vec<bool> {
        let sets = self.sets.lock();
        hashes
            .iter()
            .map(|h| sets.0.contains(h) || sets.1.contains(h))
            .collect()
    }

    /// Remembers keys just written.
    pub(crate) fn remember(&self, hashes: &[u64]) {
        let mut sets = self.sets.lock();
        for &h in hashes {
            if sets.0.len() >= GENERATION {
                let current = std::mem::take(&mut sets.0);
                sets.1 = current;
            }
            sets.0.insert(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_remembered_for_two_generations() {
        let recent = RecentKeys::default();
        let first: Vec<u64> = (0..10)
            .map(|i| recent.hash((Uuid::from_u128(i), Uuid::nil(), Uuid::nil())))
            .collect();
        recent.remember(&first);
        assert!(recent.seen(&first).iter().all(|&s| s));
        let other = recent.hash((Uuid::from_u128(99), Uuid::nil(), Uuid::nil()));
        assert_eq!(recent.seen(&[other]), vec![false]);
        // Two full generations later the first keys are forgotten.
        let filler: Vec<u64> = (0..2 * GENERATION as u64 + 1)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        recent.remember(&filler);
        assert!(recent.seen(&first).iter().all(|&s| !s));
    }
}

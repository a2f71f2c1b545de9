//! [`SweptMap`]: a sharded map whose idle entries (a counter at zero, a token bucket full
//! again) are forgotten in sweeps rather than at once, so that the hot path finds its entry
//! already there and never takes an exclusive guard in the steady state.
//!
//! A sweep runs in the collection pass, and on the insert path once as many entries were
//! added since the last sweep as the map held after it (at least [`MIN_INSERTS_PER_SWEEP`]):
//! a sweep of `n` entries is paid for by `n` insertions, so the map stays within a small
//! multiple of what is in use even when the collector is off. A sweep visits one shard at a
//! time; lookups of other entries go on meanwhile.
//!
//! # Synchronization
//!
//! Entries are read and updated only while the shard guard is held ([`Registry::with`]), and
//! a sweep removes an entry only under the exclusive guard, after checking again that it is
//! idle: an update can never land on an entry that was just removed. The insertion count is
//! a Relaxed heuristic: a lost race only moves a sweep by an insertion or two.

use std::hash::Hash;

use crate::sync::{AtomicU64, Ordering, Registry};

/// The fewest insertions between two sweeps.
const MIN_INSERTS_PER_SWEEP: u64 = 1024;

/// A value that a sweep may remove when it holds nothing a fresh value would not.
pub(crate) trait Forgettable {
    /// What the check needs to know (the time, for a token bucket).
    type At: Copy;

    /// Whether removing the value now changes nothing but memory.
    fn is_idle(&self, at: Self::At) -> bool;
}

/// A sharded map of [`Forgettable`] values; see the module docs.
#[derive(Debug)]
pub(crate) struct SweptMap<K, V> {
    entries: Registry<K, V>,
    /// Insertions since the last sweep.
    inserted: AtomicU64,
    /// How many insertions the next sweep waits for.
    sweep_after: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Forgettable> SweptMap<K, V> {
    pub(crate) fn new() -> Self {
        SweptMap {
            entries: Registry::new(),
            inserted: AtomicU64::new(0),
            sweep_after: AtomicU64::new(MIN_INSERTS_PER_SWEEP),
        }
    }

    /// Runs `visit` on the value of `key` under its shard guard, inserting `make()` first if
    /// there is none (and sweeping if enough insertions have been made since the last sweep).
    #[inline]
    pub(crate) fn with_or_insert<R>(
        &self,
        key: &K,
        make: impl FnOnce() -> V,
        visit: impl Fn(&V) -> R,
        at: V::At,
    ) -> R {
        let (result, inserted) = self.entries.with_or_insert(key, make, visit);
        if inserted {
            self.count_insertion(at);
        }
        result
    }

    /// Runs `visit` on the value of `key` under its shard guard, if there is one.
    #[inline]
    pub(crate) fn with<R>(&self, key: &K, visit: impl FnOnce(&V) -> R) -> Option<R> {
        self.entries.with(key, visit)
    }

    /// Calls `visit` on every entry.
    pub(crate) fn for_each(&self, visit: impl FnMut(&K, &V)) {
        self.entries.for_each(visit);
    }

    /// Removes every idle entry; returns how many.
    pub(crate) fn sweep(&self, at: V::At) -> usize {
        let mut idle = Vec::new();
        self.entries.for_each(|key, value| {
            if value.is_idle(at) {
                idle.push(key.clone());
            }
        });
        let removed = idle
            .into_iter()
            .filter(|key| self.entries.remove_if(key, |value| value.is_idle(at)))
            .count();
        let left = u64::try_from(self.entries.len()).unwrap_or(u64::MAX);
        // Ordering: Relaxed — a heuristic threshold; see the module docs.
        self.sweep_after
            .store(left.max(MIN_INSERTS_PER_SWEEP), Ordering::Relaxed);
        removed
    }

    fn count_insertion(&self, at: V::At) {
        // Ordering: Relaxed (all three) — a heuristic trigger; see the module docs.
        let inserted = self.inserted.fetch_add(1, Ordering::Relaxed) + 1;
        if inserted >= self.sweep_after.load(Ordering::Relaxed)
            && self
                .inserted
                .compare_exchange(inserted, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(at);
        }
    }

    /// How many entries there are, idle ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Count(AtomicU64);

    impl Forgettable for Count {
        type At = ();
        fn is_idle(&self, (): ()) -> bool {
            self.0.load(Ordering::Relaxed) == 0
        }
    }

    #[test]
    fn insertions_pay_for_sweeps_so_idle_entries_do_not_pile_up() {
        let map = SweptMap::<u64, Count>::new();
        for key in 0..10 * MIN_INSERTS_PER_SWEEP {
            // Every entry is idle as soon as it is made: only the sweeps bound the map.
            map.with_or_insert(&key, || Count(AtomicU64::new(0)), |_| (), ());
            assert!(map.len() as u64 <= 2 * MIN_INSERTS_PER_SWEEP);
        }
        map.with_or_insert(&u64::MAX, || Count(AtomicU64::new(1)), |_| (), ());
        map.sweep(());
        assert_eq!(map.len(), 1);
    }
}

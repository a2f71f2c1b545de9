//! [`LimitCell`]: a scope's cached copy of its limit, tagged with the generation of the limit
//! snapshot it came from, or pinned by `set_limit`.
//!
//! The hot path compares the manager's generation (one atomic load) with the cell's tag and,
//! when they match, reads the eight fields. When `set_limits` installs a new snapshot the
//! generation moves on, the tags stop matching, and the next reservation on each scope
//! re-resolves its limit once.
//!
//! # Synchronization
//!
//! The cell is a sequence lock built from atomics alone (no unsafe): `seq` is odd-marked
//! (`WRITING`) while one writer stores the fields, and a reader accepts the fields only if
//! `seq` read the same, unmarked value before and after it read them. The writer marks `seq`
//! with an Acquire compare-and-swap (so writers exclude each other, and each one's field
//! stores come after the previous writer's; a loser just uses the value it resolved), then
//! `fence(Release)`, stores the fields, and stores the new `seq` with Release.
//! The reader loads `seq` with Acquire, the fields, then `fence(Acquire)` and `seq` again: if
//! any field it read came from a writer that started after the first `seq` load, the fences
//! synchronize and the second load sees the mark or a later value, so the read is retried.
//! This is the construction of Boehm, "Can seqlocks get along with programming language
//! memory models?" (2012).

use crate::{
    limits::BaseLimit,
    sync::{AtomicU64, Ordering, fence},
};

const WRITING: u64 = 1;
const PINNED: u64 = 2;
const TAG_SHIFT: u32 = 2;
/// Where `memory` sits in `BaseLimit::as_array` order.
const MEMORY: usize = 7;

/// A cached [`BaseLimit`]; see the module docs.
#[derive(Debug)]
pub(crate) struct LimitCell {
    seq: AtomicU64,
    fields: [AtomicU64; 8],
}

impl LimitCell {
    /// An empty cell: tag 0, which no generation matches (generations start at 1).
    pub(crate) fn new() -> Self {
        LimitCell {
            seq: AtomicU64::new(0),
            fields: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// A cell that already holds `limit` for `generation`: a new scope starts with the limit
    /// in force, so its first reservation takes the fast path.
    pub(crate) fn preset(generation: u64, limit: BaseLimit) -> Self {
        LimitCell {
            seq: AtomicU64::new(generation << TAG_SHIFT),
            fields: limit.as_array().map(AtomicU64::new),
        }
    }

    /// The cached limit if the cell is pinned or tagged with `generation`.
    #[inline]
    pub(crate) fn get(&self, generation: u64) -> Option<BaseLimit> {
        self.read(generation, |fields| {
            BaseLimit::from_array(std::array::from_fn(|i| {
                // Ordering: Relaxed — the seq checks around the read decide whether it is used.
                fields[i].load(Ordering::Relaxed)
            }))
        })
    }

    /// The cached memory limit alone, on the same terms as [`get`](Self::get): memory
    /// reservations, the most frequent, read one field instead of eight.
    #[inline]
    pub(crate) fn memory(&self, generation: u64) -> Option<u64> {
        self.read(generation, |fields| {
            // Ordering: Relaxed — the seq checks around the read decide whether it is used.
            fields[MEMORY].load(Ordering::Relaxed)
        })
    }

    /// The reader side of the sequence lock: runs `load` on the fields between two reads of
    /// `seq`, and keeps the result only if the cell was usable and unchanged throughout.
    #[inline]
    fn read<R>(&self, generation: u64, load: impl FnOnce(&[AtomicU64; 8]) -> R) -> Option<R> {
        // Ordering: Acquire — pairs with the writer's Release store of `seq`, so the fields
        // it stored before are visible to the loads below.
        let before = self.seq.load(Ordering::Acquire);
        let usable = before & PINNED != 0 || before >> TAG_SHIFT == generation;
        if before & WRITING != 0 || !usable {
            return None;
        }
        let value = load(&self.fields);
        // Ordering: Acquire fence — if a field load above read a writer's store, this
        // synchronizes with that writer's Release fence, so the next load sees its mark.
        fence(Ordering::Acquire);
        // Ordering: Relaxed — ordered after the field loads by the fence above.
        let after = self.seq.load(Ordering::Relaxed);
        (before == after).then_some(value)
    }

    /// Caches `limit` for `generation` unless the cell is pinned, already holds that or a
    /// newer generation, or another thread is writing it (then that thread's value wins and
    /// the caller just uses its own).
    pub(crate) fn refresh(&self, generation: u64, limit: BaseLimit) {
        // Ordering: Relaxed — only a hint; the compare-and-swap below decides.
        let current = self.seq.load(Ordering::Relaxed);
        if current & (WRITING | PINNED) != 0 || current >> TAG_SHIFT >= generation {
            return;
        }
        self.write(current, generation << TAG_SHIFT, limit);
    }

    /// Pins `limit`: generations no longer change it.
    pub(crate) fn pin(&self, limit: BaseLimit) {
        // Ordering: Relaxed — the compare-and-swap in `write` decides; a failed attempt
        // (another writer active) retries until this pin is stored.
        let backoff = crate::sync::Backoff::new();
        loop {
            let current = self.seq.load(Ordering::Relaxed);
            if current & WRITING == 0 && self.write(current, PINNED, limit) {
                return;
            }
            backoff.snooze();
        }
    }

    /// The writer side of the sequence lock; false if another writer got in first.
    fn write(&self, expected: u64, new_seq: u64, limit: BaseLimit) -> bool {
        // Ordering: Acquire on success — pairs with the previous writer's Release store of
        // `seq`, so its field stores happen-before ours and precede them in every field's
        // modification order. With Relaxed here (found by loom: `loom_tests` below and
        // loom-tests' `set_limit_racing_a_cache_refresh_keeps_the_pinned_limit`), a refresh
        // that finished just before a pin could have its field stores ordered after the
        // pin's: readers then found the pinned `seq` over the refresh's fields, or a mix of
        // both. The Release fence right after orders the mark before our field stores, which
        // readers rely on; a failed attempt reads nothing (Relaxed).
        if self
            .seq
            .compare_exchange(
                expected,
                expected | WRITING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // Ordering: Release fence — a reader that sees any of the field stores below also sees
        // the WRITING mark (see the module docs).
        fence(Ordering::Release);
        for (field, value) in self.fields.iter().zip(limit.as_array()) {
            // Ordering: Relaxed — published by the Release store of `seq` below.
            field.store(value, Ordering::Relaxed);
        }
        // Ordering: Release — publishes the fields to readers that Acquire-load this value.
        self.seq.store(new_seq, Ordering::Release);
        true
    }
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;

    #[test]
    fn tags_decide_freshness_and_pins_win() {
        let cell = LimitCell::new();
        assert_eq!(cell.get(1), None);
        let a = BaseLimit {
            streams: 3,
            ..BaseLimit::unlimited()
        };
        cell.refresh(1, a);
        assert_eq!(cell.get(1), Some(a));
        assert_eq!(cell.get(2), None);
        // An older generation never overwrites a newer one.
        cell.refresh(2, BaseLimit::block_all());
        cell.refresh(1, a);
        assert_eq!(cell.get(2), Some(BaseLimit::block_all()));
        // A pin holds whatever the generation, and refreshes leave it alone.
        cell.pin(a);
        cell.refresh(9, BaseLimit::block_all());
        assert_eq!(cell.get(9), Some(a));
    }

    #[test]
    fn readers_never_see_a_torn_limit() {
        let cell = std::sync::Arc::new(LimitCell::new());
        let uniform = |v: u64| BaseLimit::from_array([v; 8]);
        std::thread::scope(|s| {
            let writer = std::sync::Arc::clone(&cell);
            s.spawn(move || {
                for generation in 1..20_000u64 {
                    writer.refresh(generation, uniform(generation));
                }
            });
            for _ in 0..2 {
                let reader = std::sync::Arc::clone(&cell);
                s.spawn(move || {
                    for generation in 1..20_000u64 {
                        if let Some(limit) = reader.get(generation) {
                            let fields = limit.as_array();
                            assert!(fields.iter().all(|&f| f == fields[0]), "torn: {fields:?}");
                        }
                    }
                });
            }
        });
    }
}

#[cfg(all(test, rcmgr_loom))]
mod loom_tests {
    //! Loom models of the sequence lock: a reader racing a writer never accepts a torn limit,
    //! a pin wins over a racing refresh, and racing refreshes never move the cell back to an
    //! older generation. Run with
    //! `RUSTFLAGS="--cfg rcmgr_loom" cargo test -p rcmgr --release --lib loom_tests`.

    use std::{
        collections::BTreeSet,
        sync::{Arc as StdArc, Mutex},
    };

    use loom::{sync::Arc, thread};

    use super::*;

    /// Runs `model` under loom, bounded by `LOOM_MAX_PREEMPTIONS` (2 when unset).
    fn check(model: impl Fn() + Sync + Send + 'static) {
        let bound = match std::env::var("LOOM_MAX_PREEMPTIONS") {
            Ok(value) => value
                .trim()
                .parse()
                .expect("LOOM_MAX_PREEMPTIONS must be a whole number"),
            Err(_) => 2,
        };
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(bound);
        builder.check(model);
    }

    /// The outcomes reached across all executions of a model (outside the model: loom does
    /// not see this lock, and runs one thread at a time, so it is never contended).
    #[derive(Clone, Default)]
    struct Outcomes(StdArc<Mutex<BTreeSet<&'static str>>>);

    impl Outcomes {
        fn record(&self, outcome: &'static str) {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(outcome);
        }

        #[track_caller]
        fn assert_exactly(&self, expected: &[&'static str]) {
            let seen = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            assert_eq!(seen, expected.iter().copied().collect::<BTreeSet<_>>());
        }
    }

    /// A limit whose eight fields all hold `value`: a read that mixes two writes shows as
    /// fields that differ.
    fn uniform(value: u64) -> BaseLimit {
        BaseLimit::from_array([value; 8])
    }

    /// Reads the cell for `generation` and classifies the result, failing on a torn limit or
    /// on a value that does not belong to the generation asked for.
    #[track_caller]
    fn read(cell: &LimitCell, generation: u64, allowed: &[u64]) -> &'static str {
        match cell.get(generation) {
            None => "retry",
            Some(limit) => {
                let fields = limit.as_array();
                assert!(
                    fields.iter().all(|&field| field == fields[0]),
                    "torn limit: {fields:?}"
                );
                assert!(
                    allowed.contains(&fields[0]),
                    "generation {generation} read {} (allowed: {allowed:?})",
                    fields[0]
                );
                "whole"
            }
        }
    }

    /// A writer refreshes the cell from generation 1 to generation 2 while a reader asks for
    /// both: each read is either refused (the reader retries, as `Root::resolve` does) or a
    /// whole limit of the generation asked for.
    #[test]
    fn a_reader_racing_a_refresh_never_accepts_a_torn_limit() {
        let outcomes = Outcomes::default();
        let record = outcomes.clone();
        check(move || {
            let cell = Arc::new(LimitCell::new());
            cell.refresh(1, uniform(1));
            let writer = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.refresh(2, uniform(2)))
            };
            let old = read(&cell, 1, &[1]);
            let new = read(&cell, 2, &[2]);
            record.record(match (old, new) {
                ("whole", "whole") => "read generation 1, then 2",
                ("whole", _) => "read generation 1 only",
                (_, "whole") => "read generation 2 only",
                _ => "read neither",
            });
            writer.join().expect("the writer finished");
            assert_eq!(cell.get(2), Some(uniform(2)));
            assert_eq!(cell.get(1), None, "generation 1 is stale now");
        });
        // "read neither" needs the reader to run both reads inside the writer's critical
        // section, which loom reaches as well.
        outcomes.assert_exactly(&[
            "read generation 1 only",
            "read generation 1, then 2",
            "read generation 2 only",
            "read neither",
        ]);
    }

    /// `set_limit` pins the cell while a refresh to generation 2 is racing it and a reader
    /// reads generation 2: the reader sees a whole limit (the refresh's or the pin's) or
    /// retries, and once the pin has returned the cell holds the pinned limit for every
    /// generation, whatever the refresh did.
    #[test]
    fn a_pin_racing_a_refresh_wins_and_readers_never_see_a_mix() {
        let outcomes = Outcomes::default();
        let record = outcomes.clone();
        check(move || {
            let pinned = uniform(9);
            let cell = Arc::new(LimitCell::new());
            cell.refresh(1, uniform(1));
            let refresher = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.refresh(2, uniform(2)))
            };
            let reader = {
                let cell = Arc::clone(&cell);
                let record = record.clone();
                thread::spawn(move || {
                    if let Some(limit) = cell.get(2) {
                        record.record(if limit == uniform(2) {
                            "reader saw the refresh"
                        } else {
                            "reader saw the pin"
                        });
                    }
                    let _ = read(&cell, 2, &[2, 9]);
                })
            };
            cell.pin(pinned);
            assert_eq!(cell.get(1), Some(pinned));
            assert_eq!(cell.get(2), Some(pinned));
            refresher.join().expect("the refresher finished");
            reader.join().expect("the reader finished");
            assert_eq!(cell.get(3), Some(pinned));
        });
        outcomes.assert_exactly(&["reader saw the pin", "reader saw the refresh"]);
    }

    /// Two refreshes race, to generations 2 and 3. The cell never goes back to an older
    /// generation and never mixes the two: right after its own refresh, the writer of
    /// generation 3 reads generation 3 whole, or (when it found the other writer in its
    /// critical section and gave up, its caller then using the limit it resolved) retries or
    /// reads generation 2 whole; once both are done the cell holds one of them whole.
    #[test]
    fn racing_refreshes_never_move_the_cell_back_or_mix_them() {
        let outcomes = Outcomes::default();
        let record = outcomes.clone();
        check(move || {
            let cell = Arc::new(LimitCell::new());
            cell.refresh(1, uniform(1));
            let older = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.refresh(2, uniform(2)))
            };
            cell.refresh(3, uniform(3));
            let _ = read(&cell, 3, &[3]);
            let _ = read(&cell, 2, &[2]);
            older.join().expect("the other writer finished");
            match (cell.get(3), cell.get(2)) {
                (Some(limit), None) => {
                    assert_eq!(limit, uniform(3));
                    record.record("ended on generation 3");
                }
                (None, Some(limit)) => {
                    assert_eq!(limit, uniform(2));
                    record.record("ended on generation 2");
                }
                other => panic!("the cell holds no whole generation: {other:?}"),
            }
        });
        outcomes.assert_exactly(&["ended on generation 2", "ended on generation 3"]);
    }
}

//! [`LimitCell`]: a scope's limit, written in place whenever the limits change, or pinned by
//! `set_limit`.
//!
//! A limit swap ([`ResourceManager::set_limits`](crate::ResourceManager::set_limits)) writes
//! the new limit of every keyed and fixed scope into its cell (the graph layer does the walk,
//! one swap at a time), so a reservation reads a scope's limit with plain loads and compares
//! no generation: the memory limit is one load, the stream and connection limits a few loads
//! between two reads of a sequence word.
//!
//! # Synchronization
//!
//! The cell is a sequence lock built from atomics alone (Boehm, "Can seqlocks get along with
//! programming language memory models?", 2012). `seq` holds a write count, a `WRITING` mark
//! and a `PINNED` flag. A writer marks `seq` with an Acquire compare-and-swap (so writers
//! exclude each other and each one's field stores come after the previous writer's), issues
//! `fence(Release)`, stores the fields and stores the next `seq` with Release. A reader of
//! several fields loads `seq` with Acquire, loads the fields, issues `fence(Acquire)` and
//! loads `seq` again: if a field it read came from a writer that had not finished, that
//! writer's Release fence synchronizes with the reader's Acquire fence, the second load sees
//! the mark (or later) and the reader retries. A reader of the memory field alone needs no
//! sequence: one field is never torn.

use crate::{
    limits::BaseLimit,
    sync::{AtomicU64, Backoff, OnceSlot, Ordering, fence},
};

/// `seq` is being written.
const WRITING: u64 = 1;
/// The limit was pinned by `set_limit`: limit swaps leave it alone.
const PINNED: u64 = 2;
/// One write, in `seq`.
const WRITE: u64 = 4;

/// Where each field sits, in `BaseLimit::as_array` order.
const STREAMS: usize = 0;
const STREAMS_INBOUND: usize = 1;
const STREAMS_OUTBOUND: usize = 2;
const CONNS: usize = 3;
const CONNS_INBOUND: usize = 4;
const CONNS_OUTBOUND: usize = 5;
const FD: usize = 6;
const MEMORY: usize = 7;

/// A scope's limit; see the module docs.
#[derive(Debug)]
pub(crate) struct LimitCell {
    seq: AtomicU64,
    fields: [AtomicU64; 8],
}

impl LimitCell {
    /// A cell holding `limit`, not pinned.
    pub(crate) fn new(limit: BaseLimit) -> Self {
        LimitCell {
            seq: AtomicU64::new(0),
            fields: limit.as_array().map(AtomicU64::new),
        }
    }

    /// The memory limit: one field, never torn.
    #[inline(always)]
    pub(crate) fn memory(&self) -> u64 {
        // Ordering: Relaxed — one field is read whole; a limit written by a swap that
        // happened-before this read is seen by coherence.
        self.fields[MEMORY].load(Ordering::Relaxed)
    }

    /// The stream limits: (inbound, outbound, total), from one write.
    #[inline]
    pub(crate) fn streams(&self) -> [u64; 3] {
        self.read(|fields| {
            [
                &fields[STREAMS_INBOUND],
                &fields[STREAMS_OUTBOUND],
                &fields[STREAMS],
            ]
            .map(relaxed)
        })
    }

    /// The connection limits: (inbound, outbound, total, fds), from one write.
    #[inline]
    pub(crate) fn conns(&self) -> [u64; 4] {
        self.read(|fields| {
            [
                &fields[CONNS_INBOUND],
                &fields[CONNS_OUTBOUND],
                &fields[CONNS],
                &fields[FD],
            ]
            .map(relaxed)
        })
    }

    /// The whole limit, from one write.
    pub(crate) fn get(&self) -> BaseLimit {
        BaseLimit::from_array(self.read(|fields| std::array::from_fn(|i| relaxed(&fields[i]))))
    }

    /// Whether `set_limit` pinned the cell.
    #[inline(always)]
    pub(crate) fn is_pinned(&self) -> bool {
        // Ordering: Relaxed — a status read; the limit itself is read through `read`.
        self.seq.load(Ordering::Relaxed) & PINNED != 0
    }

    /// Writes `limit` (a limit swap) unless the cell is pinned. Waits out a racing pin.
    pub(crate) fn set(&self, limit: BaseLimit) {
        self.write(limit, false);
    }

    /// Pins `limit`: limit swaps no longer change it.
    pub(crate) fn pin(&self, limit: BaseLimit) {
        self.write(limit, true);
    }

    /// The reader side: runs `load` between two reads of `seq` until no write overlapped it.
    #[inline]
    fn read<R>(&self, load: impl Fn(&[AtomicU64; 8]) -> R) -> R {
        let backoff = Backoff::new();
        loop {
            // Ordering: Acquire — pairs with the writer's Release store of `seq`, so the
            // fields it stored before are visible to the loads below.
            let before = self.seq.load(Ordering::Acquire);
            if before & WRITING == 0 {
                let value = load(&self.fields);
                // Ordering: Acquire fence — if a field load above read a writer's store, this
                // synchronizes with that writer's Release fence, so the next load sees its
                // mark.
                fence(Ordering::Acquire);
                // Ordering: Relaxed — ordered after the field loads by the fence above.
                if self.seq.load(Ordering::Relaxed) == before {
                    return value;
                }
            }
            backoff.snooze();
        }
    }

    /// The writer side: marks `seq`, stores the fields, publishes. A swap (`pin == false`)
    /// gives way to a pin; a pin always lands.
    fn write(&self, limit: BaseLimit, pin: bool) {
        let backoff = Backoff::new();
        loop {
            // Ordering: Relaxed — only a guess; the compare-and-swap below decides.
            let current = self.seq.load(Ordering::Relaxed);
            if !pin && current & PINNED != 0 {
                return;
            }
            // Ordering: Acquire on success — pairs with the previous writer's Release store of
            // `seq`, so its field stores happen-before ours and precede them in every field's
            // modification order (a pin that lands after a swap is never overwritten by the
            // swap's late field stores). Failure reads nothing.
            if current & WRITING == 0
                && self
                    .seq
                    .compare_exchange(
                        current,
                        current | WRITING,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                // Ordering: Release fence — a reader that sees any of the field stores below
                // also sees the WRITING mark (see the module docs).
                fence(Ordering::Release);
                for (field, value) in self.fields.iter().zip(limit.as_array()) {
                    // Ordering: Relaxed — published by the Release store of `seq` below.
                    field.store(value, Ordering::Relaxed);
                }
                let pinned = if pin { PINNED } else { current & PINNED };
                let next = (current & !(WRITING | PINNED)).wrapping_add(WRITE) | pinned;
                // Ordering: Release — publishes the fields to readers that Acquire-load it.
                self.seq.store(next, Ordering::Release);
                return;
            }
            backoff.snooze();
        }
    }
}

/// The limit a connection or stream pins with `set_limit`; until then the scope follows the
/// cell every scope of its kind shares. Empty (one word and a state) until the first pin, so
/// that a connection or stream does not carry, and write when it is made, a cell of its own
/// that it almost never uses.
///
/// # Synchronization
///
/// The cell is published by the [`OnceSlot`] (Release/Acquire) after it was pinned, so a
/// reader that finds it finds it pinned; later pins write it as any pin does.
#[derive(Debug)]
pub(crate) struct Pin(OnceSlot<Box<LimitCell>>);

impl Pin {
    pub(crate) fn new() -> Self {
        Pin(OnceSlot::new())
    }

    /// The pinned limit, once a pin has been made.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&LimitCell> {
        self.0.get().map(|cell| &**cell)
    }

    /// Pins `limit` (a later pin replaces an earlier one, as [`LimitCell::pin`] does).
    pub(crate) fn pin(&self, limit: BaseLimit) {
        if let Some(cell) = self.get() {
            cell.pin(limit);
            return;
        }
        let cell = LimitCell::new(limit);
        cell.pin(limit);
        if self.0.set(Box::new(cell)).is_err()
            && let Some(cell) = self.get()
        {
            // A pin racing this one published its cell first: this one lands after it.
            cell.pin(limit);
        }
    }
}

/// One field, read inside the sequence.
#[inline]
fn relaxed(field: &AtomicU64) -> u64 {
    // Ordering: Relaxed — the seq checks around the read decide whether it is used.
    field.load(Ordering::Relaxed)
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;

    #[test]
    fn swaps_write_pins_hold() {
        let a = BaseLimit {
            streams: 3,
            ..BaseLimit::unlimited()
        };
        let cell = LimitCell::new(a);
        assert_eq!(cell.get(), a);
        assert_eq!(
            cell.streams(),
            [BaseLimit::UNLIMITED, BaseLimit::UNLIMITED, 3]
        );
        cell.set(BaseLimit::block_all());
        assert_eq!(cell.get(), BaseLimit::block_all());
        assert!(!cell.is_pinned());
        cell.pin(a);
        cell.set(BaseLimit::block_all());
        assert_eq!(cell.get(), a);
        assert_eq!(cell.memory(), BaseLimit::UNLIMITED);
        assert!(cell.is_pinned());
    }

    #[test]
    fn readers_never_see_a_torn_limit() {
        let cell = std::sync::Arc::new(LimitCell::new(BaseLimit::from_array([0; 8])));
        let uniform = |v: u64| BaseLimit::from_array([v; 8]);
        std::thread::scope(|s| {
            let writer = std::sync::Arc::clone(&cell);
            s.spawn(move || {
                for value in 1..20_000u64 {
                    writer.set(uniform(value));
                }
            });
            for _ in 0..2 {
                let reader = std::sync::Arc::clone(&cell);
                s.spawn(move || {
                    for _ in 1..20_000u64 {
                        let fields = reader.get().as_array();
                        assert!(fields.iter().all(|&f| f == fields[0]), "torn: {fields:?}");
                        let [a, b, c] = reader.streams();
                        assert!(a == b && b == c, "torn streams: {a} {b} {c}");
                    }
                });
            }
        });
    }
}

#[cfg(all(test, rcmgr_loom))]
mod loom_tests {
    //! Loom models of the sequence lock: a reader racing a swap never accepts a torn limit,
    //! and a pin racing a swap wins. Run with
    //! `RUSTFLAGS="--cfg rcmgr_loom" cargo test -p rcmgr --release --lib loom_tests`.

    use loom::{sync::Arc, thread};

    use super::*;
    use crate::sync::loom_check as check;

    /// A limit whose eight fields all hold `value`: a read that mixes two writes shows as
    /// fields that differ.
    fn uniform(value: u64) -> BaseLimit {
        BaseLimit::from_array([value; 8])
    }

    #[track_caller]
    fn assert_whole(limit: BaseLimit, allowed: &[u64]) {
        let fields = limit.as_array();
        assert!(
            fields.iter().all(|&field| field == fields[0]),
            "torn limit: {fields:?}"
        );
        assert!(
            allowed.contains(&fields[0]),
            "read {fields:?}, allowed {allowed:?}"
        );
    }

    /// A swap writes 2 over 1 while a reader reads the whole limit and the stream fields:
    /// each read is one write's, never a mix, and once the swap is done the reader sees it.
    #[test]
    fn a_reader_racing_a_swap_never_accepts_a_torn_limit() {
        check(|| {
            let cell = Arc::new(LimitCell::new(uniform(1)));
            let writer = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.set(uniform(2)))
            };
            assert_whole(cell.get(), &[1, 2]);
            let [a, b, c] = cell.streams();
            assert!(a == b && b == c && (a == 1 || a == 2), "torn: {a} {b} {c}");
            writer.join().expect("the writer finished");
            assert_whole(cell.get(), &[2]);
        });
    }

    /// `set_limit` pins 9 while a swap writes 2: once the pin has returned the cell holds the
    /// pinned limit, whatever the swap did, and the swapper reads its own 2 or the pin's 9
    /// whole. (Two threads: a third reader makes the model too large to finish at bound 2;
    /// a reader racing a write is the model above.)
    #[test]
    fn a_pin_racing_a_swap_wins_and_readers_never_see_a_mix() {
        check(|| {
            let cell = Arc::new(LimitCell::new(uniform(1)));
            let swapper = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || {
                    cell.set(uniform(2));
                    assert_whole(cell.get(), &[2, 9]);
                })
            };
            cell.pin(uniform(9));
            assert_whole(cell.get(), &[9]);
            swapper.join().expect("the swapper finished");
            assert_whole(cell.get(), &[9]);
        });
    }
}

//! [`Own`]: the memory word of a connection, stream or span, the scopes a handle owns.
//!
//! Such a scope reports to parents that may change (a connection moves from transient to its
//! peer, a stream from transient to its protocol) and may be closed while its spans still
//! reserve through it, so its word carries, beside the bytes it holds, where it stands:
//!
//! ```text
//! [closed:1 | moving:1 | stage:2 | bytes:60]
//! ```
//!
//! * *stage* says which parents the scope reports to now (its path; the graph layer gives
//!   the stages their meaning);
//! * *moving* is set while a transfer moves the scope to new parents;
//! * *closed* is set, and the bytes taken, when the scope closes.
//!
//! The scope's stream or connection count needs no word: it is one stream (one connection)
//! of a fixed direction from open to close, which the handle knows.
//!
//! # The protocol
//!
//! A reservation through the scope commits to the scope's parents first and to this word
//! last, with a compare-and-swap that also checks that the word is open, not moving and still
//! at the stage whose parents were charged ([`Own::commit`]). So this word decides: a
//! reservation that got in before a close or a transfer is in its snapshot (and its parents
//! hold it); one that did not sees the new state and undoes its parent commits.
//!
//! # Synchronization
//!
//! * A commit is AcqRel: its Release orders the parent commits made before it before the
//!   parent releases of a close or transfer that swaps the word later (their Acquire).
//! * A close swaps the word to closed with Acquire: every commit before it in the word's
//!   modification order is in its snapshot, and their parent commits happen-before the
//!   close's releases.
//! * A transfer sets *moving* with an AcqRel compare-and-swap (the same argument as close for
//!   the usage it moves) and ends with a Release store of the new stage, after writing where
//!   the new parents are; a reservation loads the word with Acquire before it reads them.
//! * A release of the scope's own bytes is AcqRel for the reasons of a commit: it learns the
//!   stage in the same compare-and-swap, and the parents it then releases from must be the
//!   ones that hold those bytes.
//! * When the handle is the only holder of the scope (no span or guard refers to it, which
//!   the handle proves with an Acquire fence after reading its reference count) nothing else
//!   reads or writes the word, and the `exclusive` operations use plain loads and stores.

use super::counter::{Hit, MODE, Memory, STOP};
use crate::sync::{self, AtomicU64, Backoff, Ordering};

/// The stage bits' shift.
const STAGE_SHIFT: u32 = 60;
/// The stage bits.
const STAGE: u64 = 0b11 << STAGE_SHIFT;

/// A value of an [`Own`] word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OwnState(u64);

impl OwnState {
    /// The bytes the scope holds.
    #[inline(always)]
    pub(crate) fn bytes(self) -> u64 {
        self.0 & Own::CAPACITY
    }

    /// Which parents the scope reports to.
    #[inline(always)]
    pub(crate) fn stage(self) -> u8 {
        ((self.0 & STAGE) >> STAGE_SHIFT) as u8
    }

    #[inline(always)]
    pub(crate) fn is_closed(self) -> bool {
        self.0 & STOP != 0
    }

    #[inline(always)]
    pub(crate) fn is_moving(self) -> bool {
        self.0 & MODE != 0
    }
}

/// Why a commit to an own word failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnRefusal {
    /// The scope is closed.
    Closed,
    /// The scope is moving, or moved since its parents were charged: undo them and retry.
    Moved,
    /// The scope's own limit refused.
    Limit(Hit),
}

/// What a release of an own word took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Released {
    /// The stage whose parents hold the bytes taken.
    pub(crate) stage: u8,
    /// The bytes taken: at most what was asked, at most what the scope held.
    pub(crate) taken: u64,
    /// The bytes held before.
    pub(crate) before: u64,
}

/// The memory word of a connection, stream or span; see the module docs.
#[derive(Debug)]
pub(crate) struct Own(AtomicU64);

impl Own {
    /// The most bytes a connection, stream or span can hold: 2^60 - 1, about 1.15 EiB.
    pub(crate) const CAPACITY: u64 = (1 << 60) - 1;

    /// An open word at `stage`, holding nothing.
    pub(crate) fn new(stage: u8) -> Self {
        Own(AtomicU64::new(u64::from(stage) << STAGE_SHIFT))
    }

    /// The word, with Acquire: where a transfer published new parents, they are visible.
    #[inline(always)]
    pub(crate) fn load(&self) -> OwnState {
        // Ordering: Acquire — pairs with the Release that ended the last transfer.
        OwnState(self.0.load(Ordering::Acquire))
    }

    /// The word, for a statistic or a status read.
    #[inline(always)]
    pub(crate) fn peek(&self) -> OwnState {
        // Ordering: Relaxed — a status read; nothing is read through it.
        OwnState(self.0.load(Ordering::Relaxed))
    }

    /// Commits `memory` under `limit` if the word is open, not moving and still at `stage`.
    /// Returns the bytes held before.
    #[inline(always)]
    pub(crate) fn commit(&self, memory: Memory, limit: u64, stage: u8) -> Result<u64, OwnRefusal> {
        let backoff = Backoff::new();
        // Ordering: Relaxed — the compare-and-swap below decides.
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let state = OwnState(current);
            if state.is_closed() {
                return Err(OwnRefusal::Closed);
            }
            if state.is_moving() || state.stage() != stage {
                return Err(OwnRefusal::Moved);
            }
            memory
                .check_within(state.bytes(), limit, Own::CAPACITY)
                .map_err(OwnRefusal::Limit)?;
            // Ordering: AcqRel on success — see the module docs. Failure reads nothing.
            match self.0.compare_exchange_weak(
                current,
                current + memory.bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(state.bytes()),
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// What the scope's own limit would say to `memory` now: a check for naming the scope
    /// that refused, never a reservation.
    pub(crate) fn refuses(&self, memory: Memory, limit: u64) -> Option<Hit> {
        memory
            .check_within(self.peek().bytes(), limit, Own::CAPACITY)
            .err()
    }

    /// Takes up to `bytes` from the scope; waits out a transfer (only when it ends is it known
    /// which parents hold them). `None` if the scope is closed: its close released
    /// everything.
    #[inline(always)]
    pub(crate) fn release(&self, bytes: u64) -> Option<Released> {
        let backoff = Backoff::new();
        // Ordering: Relaxed — the compare-and-swap below decides.
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let state = OwnState(current);
            if state.is_closed() {
                return None;
            }
            if state.is_moving() {
                backoff.snooze();
                // Ordering: Relaxed — as above.
                current = self.0.load(Ordering::Relaxed);
                continue;
            }
            let taken = bytes.min(state.bytes());
            // Ordering: AcqRel on success — see the module docs. Failure reads nothing.
            match self.0.compare_exchange_weak(
                current,
                current - taken,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Released {
                        stage: state.stage(),
                        taken,
                        before: state.bytes(),
                    });
                }
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Closes the scope: marks it closed and takes its bytes (its stage stays, for the
    /// errors of later calls). `None` if it was closed already.
    pub(crate) fn close(&self) -> Option<OwnState> {
        // Ordering: Acquire — see the module docs. (A scope is never closed while it moves:
        // only its handle does either.)
        let before = sync::update(&self.0, Ordering::Acquire, |current| {
            Ok::<_, ()>(current & STAGE | STOP)
        })
        .map(OwnState)
        .ok()?;
        (!before.is_closed()).then_some(before)
    }

    /// [`close`](Self::close) when the handle is the scope's only holder.
    pub(crate) fn close_exclusive(&self) -> Option<OwnState> {
        // Ordering: Relaxed (load and store) — nothing else refers to the scope (module docs).
        let before = OwnState(self.0.load(Ordering::Relaxed));
        self.0.store(before.0 & STAGE | STOP, Ordering::Relaxed);
        (!before.is_closed()).then_some(before)
    }

    /// Starts a transfer: freezes the bytes (spans' reservations and releases wait) and
    /// returns the state it froze. Fails if the scope is closed.
    pub(crate) fn begin_move(&self) -> Result<OwnState, OwnRefusal> {
        let backoff = Backoff::new();
        // Ordering: Relaxed — the compare-and-swap below decides.
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let state = OwnState(current);
            if state.is_closed() {
                return Err(OwnRefusal::Closed);
            }
            debug_assert!(!state.is_moving(), "only the handle moves its scope");
            // Ordering: AcqRel on success — see the module docs. Failure reads nothing.
            match self.0.compare_exchange_weak(
                current,
                current | MODE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(state),
                Err(actual) => {
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Ends a transfer at `stage` (the stage the scope had, if the transfer was refused).
    /// Where the new parents are must be written before.
    pub(crate) fn end_move(&self, stage: u8) {
        // Ordering: Relaxed — while the scope is moving nothing else writes the word, so this
        // reads what `begin_move` wrote.
        let current = self.0.load(Ordering::Relaxed);
        let next = (current & !(MODE | STAGE)) | u64::from(stage) << STAGE_SHIFT;
        // Ordering: Release — publishes where the new parents are (see the module docs).
        self.0.store(next, Ordering::Release);
    }

    /// The state, when the handle is the scope's only holder.
    pub(crate) fn exclusive(&self) -> OwnState {
        // Ordering: Relaxed — nothing else refers to the scope (module docs).
        OwnState(self.0.load(Ordering::Relaxed))
    }

    /// Moves the scope to `stage`, when the handle is its only holder.
    pub(crate) fn set_stage_exclusive(&self, stage: u8) {
        let current = self.exclusive().0;
        let next = (current & !STAGE) | u64::from(stage) << STAGE_SHIFT;
        // Ordering: Relaxed — nothing else refers to the scope (module docs).
        self.0.store(next, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;
    use crate::types::Priority;

    fn memory(bytes: u64) -> Memory {
        Memory::new(bytes, Priority::ALWAYS)
    }

    #[test]
    fn commits_check_the_stage_and_the_state() {
        let own = Own::new(1);
        assert_eq!(own.commit(memory(10), u64::MAX >> 1, 1), Ok(0));
        assert_eq!(
            own.commit(memory(10), u64::MAX >> 1, 0),
            Err(OwnRefusal::Moved)
        );
        let frozen = own.begin_move().expect("open");
        assert_eq!((frozen.bytes(), frozen.stage()), (10, 1));
        assert_eq!(
            own.commit(memory(1), u64::MAX >> 1, 1),
            Err(OwnRefusal::Moved)
        );
        own.end_move(2);
        assert_eq!(own.commit(memory(5), 20, 2), Ok(10));
        assert!(matches!(
            own.commit(memory(6), 20, 2),
            Err(OwnRefusal::Limit(_))
        ));
        let released = own.release(100).expect("open");
        assert_eq!(
            (released.taken, released.before, released.stage),
            (15, 15, 2)
        );
        assert_eq!(own.close().map(OwnState::bytes), Some(0));
        assert_eq!(own.close(), None);
        assert_eq!(own.peek().stage(), 2, "a closed scope keeps its stage");
        assert_eq!(own.release(1), None);
        assert_eq!(own.commit(memory(1), 20, 2), Err(OwnRefusal::Closed));
    }

    #[test]
    fn an_own_word_counts_up_to_its_capacity() {
        let own = Own::new(0);
        assert_eq!(own.commit(memory(Own::CAPACITY), u64::MAX, 0), Ok(0));
        assert!(matches!(
            own.commit(memory(1), u64::MAX, 0),
            Err(OwnRefusal::Limit(Hit {
                limit: Own::CAPACITY,
                ..
            }))
        ));
        assert_eq!(own.peek().stage(), 0);
    }
}

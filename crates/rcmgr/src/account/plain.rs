//! [`Plain`]: a scope that others report to and that is not sharded (a peer, a peer's scope
//! within a protocol or service): three counter words and a limit.
//!
//! Reservations check and add with one compare-and-swap per word; releases subtract exactly:
//! every release reaching a parent gives back what a child holds there (a release is clamped
//! at the scope the caller released on, and only what that scope held goes further up), so a
//! parent's count never needs clamping.
//!
//! A keyed scope that collection removes is first *stopped*: each of its words is swapped
//! from zero to [`STOP`], so that a reservation racing the collection either lands first (and
//! the collection gives up) or is refused with [`Refused::Stopped`] and looks the scope up
//! again.
//!
//! # Synchronization
//!
//! The counts publish nothing: each limit is checked against its own word's modification
//! order, and a release follows the reservation it undoes in program order or through the
//! hand-off of a handle (or of the count that proves it: an own word, a direct count). The exceptions are the words of a slot that collection frees and a
//! new key reuses: its reset is a Release store after the new key is written, and a
//! reservation's compare-and-swap is Acquire on success, so that a caller that reserved on a
//! slot and then reads the slot's key sees the key the slot had when it reserved (see
//! [`reset`](Plain::reset)).

use super::{
    counter::{self, Conns, Counter, Hit, Memory, STOP, Streams, Words},
    limit_cell::LimitCell,
};
use crate::{
    limits::BaseLimit,
    sync::{AtomicU64, Backoff, Ordering},
    types::ScopeStat,
};

/// Why a scope refused a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A limit refused.
    Limit(Hit),
    /// The scope was stopped (collected, or a connection, stream or span closed).
    Stopped,
}

impl From<Hit> for Refused {
    fn from(hit: Hit) -> Self {
        Refused::Limit(hit)
    }
}

/// A scope that others report to; see the module docs.
#[derive(Debug)]
pub(crate) struct Plain {
    words: Words,
    limit: LimitCell,
}

impl Plain {
    pub(crate) fn new(limit: BaseLimit) -> Self {
        Plain {
            words: Words::default(),
            limit: LimitCell::new(limit),
        }
    }

    /// The scope's limit.
    pub(crate) fn limit(&self) -> &LimitCell {
        &self.limit
    }

    /// Reserves `amount` if the limit allows it; a reservation of nothing only checks.
    #[inline(always)]
    pub(crate) fn reserve<K: Counter>(&self, amount: K) -> Result<(), Refused> {
        reserve_in(K::word(&self.words), amount, K::read_limit(&self.limit))
    }

    /// Gives back what a child reserved here (exactly that: the child's own count proves it).
    #[inline(always)]
    pub(crate) fn release<K: Counter>(&self, amount: K) {
        if amount.is_zero() {
            return;
        }
        // Ordering: Relaxed — a count; see the module docs.
        let before = K::word(&self.words).fetch_sub(amount.pack(), Ordering::Relaxed);
        debug_assert!(
            K::unpack(before).covers(amount),
            "a child released {amount:?} from a parent holding {:?}",
            K::unpack(before)
        );
    }

    /// What the scope holds, each word read on its own.
    pub(crate) fn stat(&self) -> ScopeStat {
        // Ordering: Relaxed (all three) — a statistic.
        let read = |word: &AtomicU64| word.load(Ordering::Relaxed);
        counter::stat_of(
            Memory::unpack(read(&self.words.memory)),
            Streams::unpack(read(&self.words.streams)),
            Conns::unpack(read(&self.words.conns)),
        )
    }

    /// Stops the scope if it holds nothing: afterwards every reservation is refused with
    /// [`Refused::Stopped`]. False (and nothing changed) if it holds anything.
    pub(crate) fn try_stop(&self) -> bool {
        stop_words(&self.words)
    }

    /// Whether the scope was stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        // Ordering: Relaxed — a status read.
        self.words.streams.load(Ordering::Relaxed) & STOP != 0
    }

    /// Makes a stopped scope usable again, empty and with `limit`, for a new key: the caller
    /// writes the new key first, then calls this. Only a stopped scope may be reset.
    pub(crate) fn reset(&self, limit: BaseLimit) {
        debug_assert!(self.is_stopped(), "only a stopped scope is reused");
        self.limit.set(limit);
        for word in [&self.words.memory, &self.words.streams, &self.words.conns] {
            // Ordering: Release — publishes the slot's new key (written before) to a
            // reservation whose Acquire compare-and-swap reads this value.
            word.store(0, Ordering::Release);
        }
    }
}

/// The check-and-add loop on one word: refuses a stopped word and what the limit refuses.
#[inline(always)]
pub(crate) fn reserve_in<K: Counter>(
    word: &AtomicU64,
    amount: K,
    limit: K::Limit,
) -> Result<(), Refused> {
    // Ordering: Relaxed — the compare-and-swap below decides.
    let mut current = word.load(Ordering::Relaxed);
    if amount.is_zero() {
        // A check only: go checks totals even when nothing is added. Nothing is written.
        if current & STOP != 0 {
            return Err(Refused::Stopped);
        }
        return amount
            .check(K::unpack(current), limit)
            .map_err(Refused::Limit);
    }
    let backoff = Backoff::new();
    loop {
        if current & STOP != 0 {
            return Err(Refused::Stopped);
        }
        let new = counter::add(current, amount, limit)?;
        // Ordering: Acquire on success — pairs with the Release reset of a reused slot (see
        // the module docs); the count itself publishes nothing. Failure reads nothing.
        match word.compare_exchange_weak(current, new, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => {
                current = actual;
                backoff.spin();
            }
        }
    }
}

/// Sets [`STOP`] in each of `words` if each counts nothing (whatever its mode bit), or in
/// none of them.
pub(crate) fn stop_words(words: &Words) -> bool {
    let all = [&words.memory, &words.streams, &words.conns];
    for (stopped, word) in all.iter().enumerate() {
        // Ordering: Relaxed (both) — the word's own modification order decides against a
        // racing reservation; the callers hold the lock that serializes lookups of the scope.
        let current = word.load(Ordering::Relaxed);
        let idle = current & !counter::STATE == 0 && current & STOP == 0;
        if !idle
            || word
                .compare_exchange(
                    current,
                    current | STOP,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            for undo in &all[..stopped] {
                // Ordering: Relaxed — a stopped word is written by no one else.
                undo.fetch_and(!STOP, Ordering::Relaxed);
            }
            return false;
        }
    }
    true
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;
    use crate::types::{Direction, Priority};

    #[test]
    fn a_stopped_scope_refuses_until_reset() {
        let scope = Plain::new(BaseLimit::unlimited());
        scope
            .reserve(Streams::one(Direction::Inbound))
            .expect("room");
        assert!(!scope.try_stop(), "a scope holding a stream is not stopped");
        scope.release(Streams::one(Direction::Inbound));
        assert!(scope.try_stop());
        assert_eq!(
            scope.reserve(Memory::new(1, Priority::ALWAYS)),
            Err(Refused::Stopped)
        );
        assert_eq!(scope.reserve(Streams::ZERO), Err(Refused::Stopped));
        scope.reset(BaseLimit::unlimited());
        scope
            .reserve(Memory::new(1, Priority::ALWAYS))
            .expect("usable again");
        assert_eq!(scope.stat().memory, 1);
    }
}

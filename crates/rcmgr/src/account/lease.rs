//! [`Sharded`]: the scopes every thread touches (system, transient, the allowlisted pair,
//! protocols and services), counted without one cache line that every core fights over,
//! and with their limits exact.
//!
//! A sharded scope's own words hold its **budget**: what is in use plus what has been
//! leased to **pools**, one pool per thread slot, each on cache lines of its own. A pool
//! holds leased quota nobody uses yet, so the scope's usage is the budget less every pool,
//! and the budget never passes the limit. One algorithm serves every kind of counter
//! ([`Counter`]):
//!
//! * A reservation takes from its slot's pool when the pool covers it and the budget itself
//!   is within the limit (for memory, within the priority's threshold; the budget is never
//!   below the usage, so this can only be too strict): one compare-and-swap on a line only
//!   this slot writes, and a read of the budget's line, which changes only on leases.
//! * Otherwise it leases from the budget with a compare-and-swap that checks the limit on
//!   the budget's current value, taking a spare chunk for its pool only while the budget
//!   stays under half of the limit (exactly what it needs above that). Budget and spare are
//!   decided in the same compare-and-swap, so the budget never passes the limit.
//! * If the budget cannot cover it, the scope enters **pressure**: its pools are closed and
//!   their quota goes back to the budget, which then is the usage exactly, and the
//!   reservation is decided on it. While under pressure every reservation and release goes
//!   to the budget (a pool is closed atomically, so nothing can slip into it), and a refusal
//!   is a read of the budget: the usage itself leaves no room. Quota on its way between a
//!   pool and the budget (a lease's spare, a pool's excess, pools being closed) looks used
//!   for that moment, so a refusal first checks that no such move is under way (a counter
//!   only those moves write) and otherwise waits it out: never above the limit, and never
//!   refused while the budget is free. The pools open again once the
//!   usage is under a quarter of the limit.
//! * A release puts the quota back into its slot's pool (the budget path under pressure); a
//!   pool above two chunks gives the excess back.
//!
//! A reservation or release thus costs O(1) on the common path whatever the number of
//! pools; only the change into and out of pressure visits every pool, and the hysteresis
//! between a quarter of the limit and the limit bounds how often that happens.
//!
//! Every release is exact: it gives back what a child holds here (a release is clamped where
//! the caller made it, at the count of the scope it named, and only what that scope held
//! goes further up).
//!
//! # Synchronization
//!
//! The budget and the pools only count; every operation on them is Relaxed, except where a
//! reused slot must be told apart (see [`super::plain`]: the budget's compare-and-swap is
//! Acquire on success and [`Sharded::reset`] publishes with Release). That the counts never
//! break a limit follows from each word's own modification order: quota moves from the budget
//! into a pool, or back, in two steps whose middle state only makes the budget look fuller
//! than the usage, never emptier, which is the safe side of every check. Changes of mode
//! (into and out of pressure, stopping, resetting) are serialized by a mutex that no
//! reservation takes.

use super::{
    counter::{self, Conns, Counter, MODE, Memory, STATE, STOP, Streams, Words},
    limit_cell::LimitCell,
    plain::{self, Refused},
};
use crate::{
    limits::BaseLimit,
    sync::{AtomicU64, Backoff, CachePadded, Mutex, Ordering, Slot, shard_count},
    types::ScopeStat,
};

/// A sharded scope; see the module docs.
#[derive(Debug)]
pub(crate) struct Sharded {
    budget: Words,
    pools: Box<[CachePadded<Words>]>,
    limit: LimitCell,
    /// How many moves of quota between a pool and the budget are under way (a lease's spare
    /// on its way to its pool, a pool's excess on its way back, pools being closed). In the
    /// middle of one the budget counts the quota moved as in use, so a refusal waits for
    /// none to be under way before it trusts the budget (see [`Sharded::settled`]).
    moving: AtomicU64,
    /// Serializes changes of mode: entering and leaving pressure, stopping and resetting.
    transitions: Mutex<()>,
}

impl Sharded {
    pub(crate) fn new(limit: BaseLimit) -> Self {
        Sharded {
            budget: Words::default(),
            pools: (0..shard_count())
                .map(|_| CachePadded::new(Words::default()))
                .collect(),
            limit: LimitCell::new(limit),
            moving: AtomicU64::new(0),
            transitions: Mutex::new(()),
        }
    }

    /// The scope's limit.
    pub(crate) fn limit(&self) -> &LimitCell {
        &self.limit
    }

    #[inline(always)]
    fn pool(&self, slot: Slot) -> &Words {
        &self.pools[slot.index() & (self.pools.len() - 1)]
    }

    /// Reserves `amount` if the limit allows it; a reservation of nothing only checks.
    #[inline(always)]
    pub(crate) fn reserve<K: Counter>(&self, amount: K, slot: Slot) -> Result<(), Refused> {
        let limit = K::read_limit(&self.limit);
        if amount.is_zero() {
            // A check only (go checks totals even when nothing moves): the budget is never
            // below the usage, so a budget within the limit decides it; anything else is
            // decided on the usage itself, by the lease path.
            // Ordering: Relaxed — a count; see the module docs.
            let budget = K::word(&self.budget).load(Ordering::Relaxed);
            if budget & STOP == 0 && amount.check(K::unpack(budget), limit).is_ok() {
                return Ok(());
            }
        } else {
            let pool = K::word(self.pool(slot));
            // Ordering: Relaxed (both loads) — counts; see the module docs.
            let pooled = pool.load(Ordering::Relaxed);
            if pooled & STOP == 0 && K::unpack(pooled).covers(amount) {
                let budget = K::word(&self.budget).load(Ordering::Relaxed);
                // Ordering: Relaxed — a count taken from quota the budget already holds.
                if amount.within(K::unpack(budget), limit)
                    && pool
                        .compare_exchange(
                            pooled,
                            pooled - amount.pack(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    return Ok(());
                }
            }
        }
        self.reserve_from_budget(amount, limit, slot)
    }

    /// The lease path of [`reserve`](Self::reserve).
    #[inline(never)]
    fn reserve_from_budget<K: Counter>(
        &self,
        amount: K,
        limit: K::Limit,
        slot: Slot,
    ) -> Result<(), Refused> {
        let word = K::word(&self.budget);
        let slots = self.pools.len() as u64;
        let backoff = Backoff::new();
        // Ordering: Acquire — pairs with the Release of a lease's compare-and-swap, so that a
        // refusal decided on this value sees the lease's count of `moving` (see `settled`).
        let mut current = word.load(Ordering::Acquire);
        loop {
            if current & STOP != 0 {
                return Err(Refused::Stopped);
            }
            let held = K::unpack(current);
            if let Err(hit) = amount.check(held, limit) {
                if current & MODE == 0 {
                    // The pools may hold the room: take it back, then decide on the usage.
                    self.enter_pressure::<K>();
                } else if self.settled(word, current) {
                    // Under pressure, with nothing on its way: the usage leaves no room.
                    return Err(Refused::Limit(hit));
                } else {
                    backoff.snooze();
                }
                // Ordering: Acquire — as above.
                current = word.load(Ordering::Acquire);
                continue;
            }
            if amount.is_zero() {
                return Ok(());
            }
            let spare = if current & MODE == 0 {
                amount.spare(held, limit, slots)
            } else {
                K::unpack(0)
            };
            if !spare.is_zero() {
                // Ordering: Relaxed — published by the Release of the compare-and-swap below.
                self.moving.fetch_add(1, Ordering::Relaxed);
            }
            let new = current + amount.pack() + spare.pack();
            // Ordering: AcqRel on success — Acquire pairs with the Release reset of a reused
            // slot (see the module docs); Release publishes the count of `moving` above to a
            // refusal that reads this value. Failure: Acquire, as the load above.
            match word.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if !spare.is_zero() {
                        self.stash(slot, spare);
                        self.moved();
                    }
                    return Ok(());
                }
                Err(actual) => {
                    if !spare.is_zero() {
                        self.moved();
                    }
                    current = actual;
                    backoff.spin();
                }
            }
        }
    }

    /// Whether the budget, last read as `seen`, is the usage exactly, so that a refusal
    /// decided on it is not spurious: no quota is on its way between a pool and the budget,
    /// and the budget has not changed since. (A move counted in `seen` is seen in `moving`;
    /// one that ended since made the budget change, which the second read sees.)
    #[cold]
    fn settled(&self, word: &AtomicU64, seen: u64) -> bool {
        // Ordering: Acquire — pairs with the Release decrement of a move that ended, so the
        // budget read below sees what the move gave back.
        self.moving.load(Ordering::Acquire) == 0 && word.load(Ordering::Relaxed) == seen
    }

    /// Ends a move of quota counted in `moving`.
    #[inline]
    fn moved(&self) {
        // Ordering: Release — publishes the move's last change of the budget to a refusal
        // that Acquire-reads `moving` (see `settled`).
        self.moving.fetch_sub(1, Ordering::Release);
    }

    /// Puts leased quota into `slot`'s pool, or back into the budget if the pool is closed.
    fn stash<K: Counter>(&self, slot: Slot, quota: K) {
        let pool = K::word(self.pool(slot));
        // Ordering: Relaxed (load and swap) — counts; see the module docs.
        let mut current = pool.load(Ordering::Relaxed);
        loop {
            if current & STOP != 0 {
                self.release_to_budget(quota);
                return;
            }
            match pool.compare_exchange_weak(
                current,
                current + quota.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back what a child reserved here (exactly that: the child's own count proves it),
    /// into `slot`'s pool when it is open.
    #[inline(always)]
    pub(crate) fn release<K: Counter>(&self, amount: K, slot: Slot) {
        if amount.is_zero() {
            return;
        }
        let pool = K::word(self.pool(slot));
        // Ordering: Relaxed (load and compare-and-swap) — counts; see the module docs.
        let mut current = pool.load(Ordering::Relaxed);
        while current & STOP == 0 {
            let new = current + amount.pack();
            match pool.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let excess = K::unpack(new).excess();
                    if !excess.is_zero() {
                        self.give_back_excess(pool, excess);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
        self.release_to_budget(amount);
    }

    /// Moves a pool's excess back to the budget (unless the pool was closed meanwhile: its
    /// closer took it all).
    #[cold]
    fn give_back_excess<K: Counter>(&self, pool: &AtomicU64, excess: K) {
        // Ordering: Relaxed — ordered before the pool's compare-and-swap below, which a
        // refusal can only see through the budget it changes after (see `settled`).
        self.moving.fetch_add(1, Ordering::Relaxed);
        // Ordering: Relaxed (load and compare-and-swap) — counts; see the module docs.
        let mut current = pool.load(Ordering::Relaxed);
        while current & STOP == 0 && K::unpack(current).covers(excess) {
            match pool.compare_exchange_weak(
                current,
                current - excess.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.release_to_budget(excess);
                    break;
                }
                Err(actual) => current = actual,
            }
        }
        self.moved();
    }

    /// Subtracts quota or usage the budget holds; under pressure, opens the pools again once
    /// the usage is low.
    fn release_to_budget<K: Counter>(&self, amount: K) {
        // Ordering: Relaxed — a count; see the module docs.
        let before = K::word(&self.budget).fetch_sub(amount.pack(), Ordering::Relaxed);
        debug_assert!(
            K::unpack(before).covers(amount),
            "released {amount:?} from a budget of {:?}",
            K::unpack(before)
        );
        if before & MODE != 0 {
            self.leave_pressure_if_relaxed::<K>();
        }
    }

    /// Closes every pool of kind `K` and moves their quota back into the budget.
    fn enter_pressure<K: Counter>(&self) {
        let _transition = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        self.close_pools::<K>();
    }

    /// [`enter_pressure`](Self::enter_pressure) with the transition lock held.
    fn close_pools<K: Counter>(&self) {
        let word = K::word(&self.budget);
        // Ordering: Relaxed — published by the Release of the mode's `fetch_or` below.
        self.moving.fetch_add(1, Ordering::Relaxed);
        // Ordering: Release — a refusal that reads the mode bit sees the count of `moving`
        // above (see `settled`); the lock serializes mode changes.
        if word.fetch_or(MODE, Ordering::Release) & MODE != 0 {
            self.moved();
            return;
        }
        for pool in self.pools.iter() {
            // Ordering: Relaxed — see the module docs: the quota leaves the pool before it
            // leaves the budget.
            let pooled = K::word(pool).swap(STOP, Ordering::Relaxed);
            let quota = K::unpack(pooled);
            if pooled & STOP == 0 && !quota.is_zero() {
                // Ordering: Relaxed — a count.
                word.fetch_sub(quota.pack(), Ordering::Relaxed);
            }
        }
        self.moved();
    }

    /// Opens the pools of kind `K` again if the scope is under pressure and its usage is
    /// under a quarter of the limit (and the scope is not stopped).
    fn leave_pressure_if_relaxed<K: Counter>(&self) {
        let word = K::word(&self.budget);
        let limit = K::read_limit(&self.limit);
        // Ordering: Relaxed — a hint; decided again under the lock.
        let relaxed =
            |current: u64| current & STATE == MODE && K::is_relaxed(K::unpack(current), limit);
        if !relaxed(word.load(Ordering::Relaxed)) {
            return;
        }
        // Another thread changing the mode decides for both.
        let Ok(_transition) = self.transitions.try_lock() else {
            return;
        };
        // Ordering: Relaxed — as above.
        if !relaxed(word.load(Ordering::Relaxed)) {
            return;
        }
        // Ordering: Relaxed — as in `close_pools`.
        word.fetch_and(!MODE, Ordering::Relaxed);
        for pool in self.pools.iter() {
            // Ordering: Relaxed — an empty pool, open again; quota reaches it only by leases
            // the budget counts.
            K::word(pool).store(0, Ordering::Relaxed);
        }
    }

    /// What the scope holds: the budget less every pool, each read on its own. A lease in
    /// flight (in the budget, not yet in its pool) counts as held for that moment: the result
    /// can be that much above the usage, never above the budget, so never above the limit.
    pub(crate) fn stat(&self) -> ScopeStat {
        counter::stat_of(self.usage(), self.usage(), self.usage())
    }

    fn usage<K: Counter>(&self) -> K {
        // Ordering: Relaxed (all loads) — a statistic.
        let pooled = self.pools.iter().fold(K::unpack(0), |sum, pool| {
            let pool = K::unpack(K::word(pool).load(Ordering::Relaxed));
            K::unpack(sum.pack() + pool.pack())
        });
        let budget = K::unpack(K::word(&self.budget).load(Ordering::Relaxed));
        K::unpack(budget.pack() - pooled.clamped_to(budget).pack())
    }

    /// Stops the scope if it holds nothing (its pools closed, its budget words stopped):
    /// afterwards every reservation is refused with [`Refused::Stopped`]. False, and the scope
    /// still usable, if it holds anything.
    pub(crate) fn try_stop(&self) -> bool {
        let _transition = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        self.close_pools::<Memory>();
        self.close_pools::<Streams>();
        self.close_pools::<Conns>();
        if plain::stop_words(&self.budget) {
            return true;
        }
        drop(_transition);
        self.leave_pressure_if_relaxed::<Memory>();
        self.leave_pressure_if_relaxed::<Streams>();
        self.leave_pressure_if_relaxed::<Conns>();
        false
    }

    /// Whether the scope was stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        // Ordering: Relaxed — a status read.
        self.budget.streams.load(Ordering::Relaxed) & STOP != 0
    }

    /// Makes a stopped scope usable again, empty, with open pools and `limit`, for a new
    /// name: the caller writes the new name first. Only a stopped scope may be reset.
    pub(crate) fn reset(&self, limit: BaseLimit) {
        debug_assert!(self.is_stopped(), "only a stopped scope is reused");
        let _transition = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        self.limit.set(limit);
        for pool in self.pools.iter() {
            for word in [&pool.memory, &pool.streams, &pool.conns] {
                // Ordering: Relaxed — published with the budget below.
                word.store(0, Ordering::Relaxed);
            }
        }
        for word in [
            &self.budget.memory,
            &self.budget.streams,
            &self.budget.conns,
        ] {
            // Ordering: Release — publishes the slot's new name (written before) to a
            // reservation whose Acquire compare-and-swap reads this value.
            word.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;
    use crate::{
        sync::{Slot, thread_slot},
        types::{Direction, Priority},
    };

    fn memory(bytes: u64) -> Memory {
        Memory::new(bytes, Priority::ALWAYS)
    }

    fn limited(bytes: u64) -> Sharded {
        Sharded::new(BaseLimit {
            memory: bytes,
            ..BaseLimit::unlimited()
        })
    }

    #[test]
    fn leases_stay_within_the_limit_and_come_back() {
        let scope = limited(64 << 20);
        let slot = thread_slot();
        scope.reserve(memory(512 << 10), slot).expect("room");
        assert_eq!(scope.stat().memory, 512 << 10);
        scope
            .reserve(memory((63 << 20) + (512 << 10)), slot)
            .expect("exactly the rest of the limit");
        assert_eq!(scope.stat().memory, 64 << 20);
        assert!(scope.reserve(memory(1), slot).is_err());
        scope.release(memory(64 << 20), slot);
        assert!(scope.stat().is_empty());
        scope
            .reserve(memory(64 << 20), slot)
            .expect("all of it again");
        scope.release(memory(64 << 20), slot);
    }

    #[test]
    fn a_refusal_under_pressure_visits_no_pool() {
        let scope = limited(1 << 20);
        let slot = thread_slot();
        scope.reserve(memory(1 << 20), slot).expect("room");
        assert!(scope.reserve(memory(1), slot).is_err());
        // Ordering: Relaxed — a test read.
        let budget = scope.budget.memory.load(Ordering::Relaxed);
        assert_eq!(budget & MODE, MODE, "the first refusal entered pressure");
        assert!(scope.reserve(memory(1), slot).is_err());
        scope.release(memory(1 << 20), slot);
        // Ordering: Relaxed — a test read.
        let budget = scope.budget.memory.load(Ordering::Relaxed);
        assert_eq!(
            budget & MODE,
            0,
            "pressure ends under a quarter of the limit"
        );
    }

    /// Defect 7 of the redesign: a release through a view (from a thread that never reserved
    /// there) set a flag after which every release swapped every thread's pool. A release
    /// now touches its own slot's pool only, however many come, and enters no pressure.
    #[test]
    fn releases_from_another_slot_touch_only_their_own_pool() {
        let scope = limited(64 << 20);
        let (reserving, releasing) = (Slot::numbered(0), Slot::numbered(1));
        for _ in 0..100 {
            scope.reserve(memory(4096), reserving).expect("room");
        }
        let pools = |scope: &Sharded| -> Vec<u64> {
            // Ordering: Relaxed — a test read.
            let load = |pool: &CachePadded<Words>| pool.memory.load(Ordering::Relaxed);
            scope.pools.iter().map(load).collect()
        };
        let before = pools(&scope);
        for _ in 0..100 {
            scope.release(memory(4096), releasing);
        }
        let after = pools(&scope);
        let own = releasing.index() & (scope.pools.len() - 1);
        for (index, (before, after)) in before.iter().zip(&after).enumerate() {
            if index != own {
                assert_eq!(
                    before, after,
                    "pool {index} was touched by another slot's release"
                );
            }
        }
        // Ordering: Relaxed — a test read.
        let budget = scope.budget.memory.load(Ordering::Relaxed);
        assert_eq!(budget & MODE, 0, "no release enters pressure");
        assert!(scope.stat().is_empty());
    }

    #[test]
    fn streams_lease_chunks_and_stop_only_when_empty() {
        let scope = Sharded::new(BaseLimit::unlimited());
        let slot = thread_slot();
        let one = Streams::one(Direction::Inbound);
        scope.reserve(one, slot).expect("room");
        assert_eq!(scope.stat().streams_inbound, 1);
        assert!(!scope.try_stop());
        scope.release(one, slot);
        assert!(scope.stat().is_empty());
        assert!(scope.try_stop());
        assert_eq!(scope.reserve(one, slot), Err(Refused::Stopped));
        scope.reset(BaseLimit::unlimited());
        scope.reserve(one, slot).expect("usable again");
        scope.release(one, slot);
    }
}

#[cfg(all(test, rcmgr_loom))]
mod loom_tests {
    //! Loom models of memory leases: two slots leasing from one budget, with the reclaim of
    //! pressure in between, never pass the limit and never refuse what fits. Run with
    //! `RUSTFLAGS="--cfg rcmgr_loom" cargo test -p rcmgr --release --lib loom_tests`.

    use loom::{sync::Arc, thread};

    use super::*;
    use crate::{sync::loom_check as check, types::Priority};

    fn memory(bytes: u64) -> Memory {
        Memory::new(bytes, Priority::ALWAYS)
    }

    fn limited(bytes: u64) -> Sharded {
        Sharded::new(BaseLimit {
            memory: bytes,
            ..BaseLimit::unlimited()
        })
    }

    /// Slot 0 reserves 100 of 1,000 bytes (leasing a spare chunk for its pool while the
    /// budget is far from the limit) and gives it back, while slot 1 reserves the other 900:
    /// the two always fit together, so neither is ever refused, whether slot 1's lease finds
    /// the budget full of slot 0's spare (and reclaims it through pressure) or not; the scope
    /// is never seen above its limit, and ends empty.
    #[test]
    fn leases_and_their_reclaim_never_pass_the_limit_nor_refuse_what_fits() {
        check(|| {
            let scope = Arc::new(limited(1_000));
            let small = {
                let scope = Arc::clone(&scope);
                thread::spawn(move || {
                    let slot = Slot::numbered(0);
                    scope
                        .reserve(memory(100), slot)
                        .expect("100 and 900 fit in 1,000");
                    assert!(scope.stat().memory <= 1_000, "above the limit");
                    scope.release(memory(100), slot);
                })
            };
            let slot = Slot::numbered(1);
            scope
                .reserve(memory(900), slot)
                .expect("900 and 100 fit in 1,000");
            assert!(scope.stat().memory <= 1_000, "above the limit");
            small.join().expect("the small reserver finished");
            scope.release(memory(900), slot);
            assert!(scope.stat().is_empty(), "left {:?}", scope.stat());
        });
    }

    /// A release from a slot that never reserved (a view's release on another thread) races
    /// a reservation that needs the released room: the reservation is refused only while the
    /// room is really in use, and the counts end exact.
    #[test]
    fn a_release_from_another_slot_racing_a_reservation_that_needs_its_room() {
        check(|| {
            let scope = Arc::new(limited(1_000));
            scope
                .reserve(memory(600), Slot::numbered(0))
                .expect("600 fits");
            let releaser = {
                let scope = Arc::clone(&scope);
                thread::spawn(move || scope.release(memory(600), Slot::numbered(1)))
            };
            let reserved = scope.reserve(memory(700), Slot::numbered(0)).is_ok();
            assert!(scope.stat().memory <= 1_000, "above the limit");
            releaser.join().expect("the releaser finished");
            if reserved {
                scope.release(memory(700), Slot::numbered(0));
            } else {
                // Refused only while the 600 bytes were held: now they are not.
                scope
                    .reserve(memory(700), Slot::numbered(0))
                    .expect("the 600 bytes are back");
                scope.release(memory(700), Slot::numbered(0));
            }
            assert!(scope.stat().is_empty(), "left {:?}", scope.stat());
        });
    }
}

//! Leased counters for the scopes every thread touches (system, transient, the allowlisted
//! pair, protocols and services): they keep their limit exact without one contended cache line.
//!
//! A sharded scope's own counter words hold its **budget**: what is in use plus what has been
//! leased out to shards. Each shard (one per thread slot, on cache lines of its own) holds a
//! **pool** of leased quota that nobody uses yet. So the scope's usage is the budget minus
//! every pool, and the budget never passes the limit.
//!
//! * A reservation takes from its shard's pool when the pool covers it (for memory, only if
//!   the whole budget, used or not, is within the priority's threshold: the budget is never
//!   below the usage, so the check can only be too strict). That is one compare-and-swap on a
//!   line only this thread slot writes.
//! * Otherwise it leases from the budget with a compare-and-swap that checks the limit, taking
//!   a chunk more for the pool while the budget is far from the limit (under half of it), and
//!   exactly what it needs closer to the limit.
//! * If the budget cannot cover it, the reservation first takes every pool back into the
//!   budget (so the budget is the usage again) and only then decides; if a pool filled up
//!   again meanwhile (a release landed in it) it sweeps once more. A refusal therefore happens
//!   only when what is really in use leaves no room.
//! * A release puts the quota back in its shard's pool; a pool above twice its chunk gives the
//!   excess back to the budget.
//!
//! # Synchronization
//!
//! Every operation here is a Relaxed read-modify-write or load: the budget and the pools only
//! count, each limit is checked against the budget's own modification order, and quota moves
//! between a pool and the budget in two steps whose intermediate state only makes the budget
//! look fuller than the usage (never emptier), which is the safe side of every check. The
//! release/reserve ordering argument of the unsharded counters (docs/memory-ordering.md)
//! carries over: a release that follows a reservation in happens-before adds to a pool after
//! the reservation took from the budget or a pool.

use crate::{
    counters::{
        self, ConnsWord, Hit, MemoryWord, StreamsWord, Underflow, add_conns, add_memory,
        add_streams, sub_conns, sub_memory, sub_streams,
    },
    limits::BaseLimit,
    resource::Priority,
    stat::ScopeStat,
    sync::{AtomicBool, AtomicU64, CachePadded, Ordering},
};

/// One shard's leased, unused quota.
#[derive(Debug, Default)]
struct Pool {
    /// Bytes (the same field layout as a memory word's usage, without state bits).
    memory: AtomicU64,
    /// Inbound and outbound streams, packed as in [`StreamsWord`].
    streams: AtomicU64,
    /// Inbound and outbound connections and fds, packed as in [`ConnsWord`].
    conns: AtomicU64,
}

/// The pools of one sharded scope.
#[derive(Debug)]
pub(crate) struct Shards {
    pools: Box<[CachePadded<Pool>]>,
    /// Set once memory was released here that may not have been held (an over-release by a
    /// caller): from then on every memory release reconciles the pools and clamps at zero, as
    /// go's counters do, instead of trusting that it gives back what was taken.
    checked: AtomicBool,
}

/// The largest chunk of memory a shard leases at once.
const MEMORY_CHUNK: u64 = 1 << 20;
/// The largest chunk of streams or connections (of one direction) a shard leases at once.
const COUNT_CHUNK: u64 = 16;

impl Shards {
    /// One pool per thread slot: the machine's parallelism rounded up to a power of two, at
    /// most 64.
    pub(crate) fn new() -> Self {
        let count = shard_count();
        Shards {
            pools: (0..count)
                .map(|_| CachePadded::new(Pool::default()))
                .collect(),
            checked: AtomicBool::new(false),
        }
    }

    /// The calling thread's pool.
    #[inline]
    fn pool(&self) -> &Pool {
        &self.pools[thread_slot() & (self.pools.len() - 1)]
    }

    /// How much a lease adds for the pool beyond what a reservation needs, given the limit
    /// and what the budget holds: nothing near the limit, so that quota parked in pools cannot
    /// make a reservation there fail.
    fn chunk(&self, most: u64, limit: u64, budget_after: u64) -> u64 {
        if limit >= BaseLimit::UNLIMITED {
            return most;
        }
        let room = (limit / 2).saturating_sub(budget_after);
        most.min(room / self.pools.len() as u64)
    }

    /// What the scope holds: the budget minus every pool (each read on its own). While a lease
    /// is moving quota from the budget to a pool, the quota briefly counts as held: the result
    /// can be that much above the usage, never above the budget (so never above the limit).
    pub(crate) fn usage(&self, budget: ScopeStat) -> ScopeStat {
        let (mut memory, mut streams, mut conns) = (0u64, (0u64, 0u64), (0u64, 0u64, 0u64));
        for pool in self.pools.iter() {
            // Ordering: Relaxed (all three) — a statistic; see the module docs.
            memory += pool.memory.load(Ordering::Relaxed);
            let s = StreamsWord(pool.streams.load(Ordering::Relaxed));
            streams = (streams.0 + s.inbound(), streams.1 + s.outbound());
            let c = ConnsWord(pool.conns.load(Ordering::Relaxed));
            conns = (
                conns.0 + c.inbound(),
                conns.1 + c.outbound(),
                conns.2 + c.fd(),
            );
        }
        let less = |held: u32, pooled: u64| u64::from(held).saturating_sub(pooled) as u32;
        ScopeStat {
            memory: budget.memory.saturating_sub(memory),
            streams_inbound: less(budget.streams_inbound, streams.0),
            streams_outbound: less(budget.streams_outbound, streams.1),
            conns_inbound: less(budget.conns_inbound, conns.0),
            conns_outbound: less(budget.conns_outbound, conns.1),
            fd: less(budget.fd, conns.2),
        }
    }

    /// Reserves `size` bytes at `priority` against `limit`, `budget` being the scope's memory
    /// word. A zero-byte reservation only checks.
    pub(crate) fn reserve_memory(
        &self,
        budget: &AtomicU64,
        size: u64,
        priority: Priority,
        limit: u64,
    ) -> Result<(), Hit> {
        let pool = &self.pool().memory;
        // Ordering: Relaxed — see the module docs.
        let leased = MemoryWord(budget.load(Ordering::Relaxed)).used();
        // The budget is never below the usage, so a budget within the threshold proves the
        // usage is.
        if add_memory(leased, 0, priority, limit).is_ok() && (size == 0 || take(pool, size)) {
            return Ok(());
        }
        let lease = |extra: u64| {
            // Ordering: Relaxed — see the module docs.
            counters::update(budget, Ordering::Relaxed, |cur| {
                let word = MemoryWord(cur);
                let used = add_memory(word.used(), size, priority, limit)?;
                Ok(word.with_used(used + extra).0)
            })
        };
        if size > 0 {
            let extra = self.chunk(MEMORY_CHUNK, limit, leased.saturating_add(size));
            if extra > 0 && lease(extra).is_ok() {
                put(pool, extra);
                return Ok(());
            }
        }
        self.reclaim_then(
            budget,
            |pool| &pool.memory,
            return_memory,
            || {
                if size == 0 {
                    // Ordering: Relaxed — see the module docs.
                    let used = MemoryWord(budget.load(Ordering::Relaxed)).used();
                    add_memory(used, 0, priority, limit).map(drop)
                } else {
                    lease(0).map(drop)
                }
            },
        )
    }

    /// Gives back `size` bytes. An `exact` release (one that gives back what was reserved:
    /// closes, rollbacks, transfers, guards, or a child's release that its own count covered)
    /// goes into the calling thread's pool, the excess over twice a chunk back to the budget.
    /// Any other release, and every release once this scope saw one, takes the pools back into
    /// the budget first and clamps at zero, so that a caller's over-release cannot leave quota
    /// in a pool that the budget never counted.
    pub(crate) fn release_memory(
        &self,
        budget: &AtomicU64,
        size: u64,
        exact: bool,
        underflow: &mut Underflow,
    ) {
        // Ordering: Relaxed (load and store) — a mode flag that only ever goes from false to
        // true; either mode keeps the counts right for a release that gives back what it took.
        if !exact || self.checked.load(Ordering::Relaxed) {
            self.checked.store(true, Ordering::Relaxed);
            for pool in self.pools.iter() {
                // Ordering: Relaxed — see the module docs.
                let pooled = pool.memory.swap(0, Ordering::Relaxed);
                return_memory(budget, pooled, &mut Underflow::default());
            }
            return_memory(budget, size, underflow);
            return;
        }
        let pool = &self.pool().memory;
        put(pool, size);
        // Ordering: Relaxed — see the module docs.
        let pooled = pool.load(Ordering::Relaxed);
        if pooled > 2 * MEMORY_CHUNK {
            let excess = pooled - MEMORY_CHUNK;
            if take(pool, excess) {
                return_memory(budget, excess, underflow);
            }
        }
    }

    /// Reserves `inbound` and `outbound` streams against `limit`, `budget` being the scope's
    /// streams word. Adding nothing only checks (go checks the total even then).
    pub(crate) fn reserve_streams(
        &self,
        budget: &AtomicU64,
        inbound: u64,
        outbound: u64,
        limit: &BaseLimit,
    ) -> Result<(), Hit> {
        let need = StreamsWord::new(inbound, outbound).0;
        let pool = &self.pool().streams;
        // Ordering: Relaxed — see the module docs.
        let held = StreamsWord(budget.load(Ordering::Relaxed));
        // A budget within every limit proves the usage is, and stays so after taking from the
        // pool, whose quota the budget already counts (limits may have been lowered since the
        // pool was filled, hence the check).
        if streams_within(held, limit) && (need == 0 || take_packed(pool, need, streams_cover)) {
            return Ok(());
        }
        let lease = |extra_in: u64, extra_out: u64| {
            // Ordering: Relaxed — see the module docs.
            counters::update(budget, Ordering::Relaxed, |cur| {
                add_streams(
                    StreamsWord(cur),
                    inbound + extra_in,
                    outbound + extra_out,
                    limit,
                )
                .map(|w| w.0)
            })
        };
        if need != 0 {
            let after = held.inbound() + held.outbound() + inbound + outbound;
            let extra = |wanted: u64, direction: u64| {
                if wanted == 0 {
                    0
                } else {
                    self.chunk(COUNT_CHUNK, direction.min(limit.streams), after)
                }
            };
            let (extra_in, extra_out) = (
                extra(inbound, limit.streams_inbound),
                extra(outbound, limit.streams_outbound),
            );
            if (extra_in | extra_out) != 0 && lease(extra_in, extra_out).is_ok() {
                put(pool, StreamsWord::new(extra_in, extra_out).0);
                return Ok(());
            }
        }
        self.reclaim_then(
            budget,
            |pool| &pool.streams,
            return_streams,
            || {
                if need == 0 {
                    // Ordering: Relaxed — see the module docs.
                    add_streams(StreamsWord(budget.load(Ordering::Relaxed)), 0, 0, limit).map(drop)
                } else {
                    lease(0, 0).map(drop)
                }
            },
        )
    }

    /// Gives back streams: into the calling thread's pool, the excess back to the budget
    /// (clamped at zero: only an over-release can need it).
    pub(crate) fn release_streams(
        &self,
        budget: &AtomicU64,
        (inbound, outbound): (u64, u64),
        underflow: &mut Underflow,
    ) {
        let pool = &self.pool().streams;
        put(pool, StreamsWord::new(inbound, outbound).0);
        // Ordering: Relaxed — see the module docs.
        let pooled = StreamsWord(pool.load(Ordering::Relaxed));
        if pooled.inbound() > 2 * COUNT_CHUNK || pooled.outbound() > 2 * COUNT_CHUNK {
            let excess = |n: u64| n.saturating_sub(COUNT_CHUNK);
            let back = StreamsWord::new(excess(pooled.inbound()), excess(pooled.outbound())).0;
            if take_packed(pool, back, streams_cover) {
                return_streams(budget, back, underflow);
            }
        }
    }

    /// Reserves connections (and fds) against `limit`, `budget` being the scope's conns word.
    /// Adding nothing only checks (go checks the total even then).
    pub(crate) fn reserve_conns(
        &self,
        budget: &AtomicU64,
        (inbound, outbound, fd): (u64, u64, u64),
        limit: &BaseLimit,
    ) -> Result<(), Hit> {
        let need = ConnsWord::new(inbound, outbound, fd).0;
        let pool = &self.pool().conns;
        // Ordering: Relaxed — see the module docs.
        let held = ConnsWord(budget.load(Ordering::Relaxed));
        if conns_within(held, limit) && (need == 0 || take_packed(pool, need, conns_cover)) {
            return Ok(());
        }
        let lease = |(e_in, e_out, e_fd): (u64, u64, u64)| {
            // Ordering: Relaxed — see the module docs.
            counters::update(budget, Ordering::Relaxed, |cur| {
                add_conns(
                    ConnsWord(cur),
                    inbound + e_in,
                    outbound + e_out,
                    fd + e_fd,
                    limit,
                )
                .map(|w| w.0)
            })
        };
        if need != 0 {
            let after = held.inbound() + held.outbound() + inbound + outbound;
            let extra = |wanted: u64, limit: u64, count: u64| {
                if wanted == 0 {
                    0
                } else {
                    self.chunk(COUNT_CHUNK, limit, count)
                }
            };
            let extras = (
                extra(inbound, limit.conns_inbound.min(limit.conns), after),
                extra(outbound, limit.conns_outbound.min(limit.conns), after),
                extra(fd, limit.fd, held.fd() + fd),
            );
            if extras != (0, 0, 0) && lease(extras).is_ok() {
                put(pool, ConnsWord::new(extras.0, extras.1, extras.2).0);
                return Ok(());
            }
        }
        self.reclaim_then(
            budget,
            |pool| &pool.conns,
            return_conns,
            || {
                if need == 0 {
                    // Ordering: Relaxed — see the module docs.
                    add_conns(ConnsWord(budget.load(Ordering::Relaxed)), 0, 0, 0, limit).map(drop)
                } else {
                    lease((0, 0, 0)).map(drop)
                }
            },
        )
    }

    /// Gives back connections: into the calling thread's pool, the excess back to the budget
    /// (clamped at zero: only an over-release can need it).
    pub(crate) fn release_conns(
        &self,
        budget: &AtomicU64,
        (inbound, outbound, fd): (u64, u64, u64),
        underflow: &mut Underflow,
    ) {
        let pool = &self.pool().conns;
        put(pool, ConnsWord::new(inbound, outbound, fd).0);
        // Ordering: Relaxed — see the module docs.
        let pooled = ConnsWord(pool.load(Ordering::Relaxed));
        let high = 2 * COUNT_CHUNK;
        if pooled.inbound() > high || pooled.outbound() > high || pooled.fd() > high {
            let excess = |n: u64| n.saturating_sub(COUNT_CHUNK);
            let back = ConnsWord::new(
                excess(pooled.inbound()),
                excess(pooled.outbound()),
                excess(pooled.fd()),
            )
            .0;
            if take_packed(pool, back, conns_cover) {
                return_conns(budget, back, underflow);
            }
        }
    }

    /// Takes every pool of one kind back into the budget and runs `decide` (a lease of exactly
    /// what is needed); sweeps again while a pool filled up in the meantime, at most a few
    /// times, so that a refusal means the usage itself leaves no room.
    fn reclaim_then(
        &self,
        budget: &AtomicU64,
        word: impl Fn(&Pool) -> &AtomicU64,
        give_back: fn(&AtomicU64, u64, &mut Underflow),
        decide: impl Fn() -> Result<(), Hit>,
    ) -> Result<(), Hit> {
        const SWEEPS: usize = 3;
        let mut outcome = decide();
        for _ in 0..SWEEPS {
            if outcome.is_ok() {
                break;
            }
            let mut swept = false;
            for pool in self.pools.iter() {
                // Ordering: Relaxed — see the module docs.
                let pooled = word(pool).swap(0, Ordering::Relaxed);
                if pooled != 0 {
                    swept = true;
                    // Pooled quota was counted in the budget when it was leased; only an
                    // over-release puts more in a pool, and the return clamps for that.
                    give_back(budget, pooled, &mut Underflow::default());
                }
            }
            if !swept {
                break;
            }
            outcome = decide();
        }
        outcome
    }
}

/// Takes `amount` from a pool holding one unpacked quantity, if it holds that much.
fn take(pool: &AtomicU64, amount: u64) -> bool {
    // Ordering: Relaxed — see the module docs.
    counters::update(pool, Ordering::Relaxed, |cur| {
        cur.checked_sub(amount).ok_or(())
    })
    .is_ok()
}

/// Takes the packed `amount` from a pool if every field covers it.
fn take_packed(pool: &AtomicU64, amount: u64, covers: fn(u64, u64) -> bool) -> bool {
    // Ordering: Relaxed — see the module docs.
    counters::update(pool, Ordering::Relaxed, |cur| {
        if covers(cur, amount) {
            Ok(cur - amount)
        } else {
            Err(())
        }
    })
    .is_ok()
}

/// Adds to a pool. Fields never carry into each other: a pool holds at most what the budget
/// holds, which fits each field.
fn put(pool: &AtomicU64, amount: u64) {
    if amount != 0 {
        // Ordering: Relaxed — see the module docs.
        pool.fetch_add(amount, Ordering::Relaxed);
    }
}

/// Gives memory back to the budget, clamping at zero.
fn return_memory(budget: &AtomicU64, amount: u64, underflow: &mut Underflow) {
    // Ordering: Relaxed — see the module docs.
    let _ = counters::update(budget, Ordering::Relaxed, |cur| {
        let word = MemoryWord(cur);
        Ok::<_, ()>(word.with_used(sub_memory(word.used(), amount, underflow)).0)
    });
}

/// Gives packed streams back to the budget, clamping each field at zero.
fn return_streams(budget: &AtomicU64, amount: u64, underflow: &mut Underflow) {
    let amount = StreamsWord(amount);
    // Ordering: Relaxed — see the module docs.
    let _ = counters::update(budget, Ordering::Relaxed, |cur| {
        let (inbound, outbound) = (amount.inbound(), amount.outbound());
        Ok::<_, ()>(sub_streams(StreamsWord(cur), inbound, outbound, underflow).0)
    });
}

/// Gives packed connections back to the budget, clamping each field at zero.
fn return_conns(budget: &AtomicU64, amount: u64, underflow: &mut Underflow) {
    let amount = ConnsWord(amount);
    let (inbound, outbound, fd) = (amount.inbound(), amount.outbound(), amount.fd());
    // Ordering: Relaxed — see the module docs.
    let _ = counters::update(budget, Ordering::Relaxed, |cur| {
        Ok::<_, ()>(sub_conns(ConnsWord(cur), inbound, outbound, fd, underflow).0)
    });
}

/// Whether every field of a streams budget is within its limit (go's add-nothing check looks at
/// the total alone; the fast path needs all of them).
fn streams_within(held: StreamsWord, limit: &BaseLimit) -> bool {
    let total = held.inbound() + held.outbound();
    held.inbound() <= limit.streams_inbound
        && held.outbound() <= limit.streams_outbound
        && total <= limit.streams
}

/// Whether every field of a connections budget is within its limit.
fn conns_within(held: ConnsWord, limit: &BaseLimit) -> bool {
    let total = held.inbound() + held.outbound();
    held.inbound() <= limit.conns_inbound
        && held.outbound() <= limit.conns_outbound
        && total <= limit.conns
        && held.fd() <= limit.fd
}

fn streams_cover(have: u64, need: u64) -> bool {
    let (have, need) = (StreamsWord(have), StreamsWord(need));
    have.inbound() >= need.inbound() && have.outbound() >= need.outbound()
}

fn conns_cover(have: u64, need: u64) -> bool {
    let (have, need) = (ConnsWord(have), ConnsWord(need));
    have.inbound() >= need.inbound() && have.outbound() >= need.outbound() && have.fd() >= need.fd()
}

/// How many shards a sharded scope gets.
fn shard_count() -> usize {
    #[cfg(not(rcmgr_loom))]
    {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .min(64)
    }
    #[cfg(rcmgr_loom)]
    {
        // Two shards, so that loom models exercise leasing across shards.
        2
    }
}

/// The calling thread's slot: handed out round-robin the first time a thread asks.
#[inline]
fn thread_slot() -> usize {
    #[cfg(not(rcmgr_loom))]
    {
        use std::cell::Cell;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        SLOT.with(|slot| {
            let mut index = slot.get();
            if index == usize::MAX {
                // Ordering: Relaxed — only distinct-enough numbers are needed.
                index = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                slot.set(index);
            }
            index
        })
    }
    #[cfg(rcmgr_loom)]
    {
        loom_slot()
    }
}

/// Under loom: a slot from a loom-visible counter, kept in a loom thread-local, so that every
/// execution of a model assigns the same slots in the same schedule.
#[cfg(rcmgr_loom)]
fn loom_slot() -> usize {
    use std::cell::Cell;
    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static SLOT: Cell<usize> = Cell::new(usize::MAX);
    }
    SLOT.with(|slot| {
        let mut index = slot.get();
        if index == usize::MAX {
            // Ordering: Relaxed — only distinct numbers are needed.
            index = NEXT.fetch_add(1, Ordering::Relaxed);
            slot.set(index);
        }
        index
    })
}

#[cfg(all(test, rcmgr_loom))]
mod loom_tests {
    //! Loom models of the leases: quota taken from and returned to pools on two shards, and a
    //! refusal near a full budget that must first take the other shard's pool back. Run with
    //! `RUSTFLAGS="--cfg rcmgr_loom" cargo test -p rcmgr --release --lib loom_tests`.

    use loom::{sync::Arc, thread};

    use super::*;
    use crate::limits::BaseLimit;

    fn check(model: impl Fn() + Sync + Send + 'static) {
        let bound = std::env::var("LOOM_MAX_PREEMPTIONS")
            .ok()
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(2);
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(bound);
        builder.check(model);
    }

    /// A streams budget and its pools, as a sharded scope holds them.
    struct Sharded {
        shards: Shards,
        budget: AtomicU64,
    }

    impl Sharded {
        fn new() -> Arc<Self> {
            Arc::new(Sharded {
                shards: Shards::new(),
                budget: AtomicU64::new(0),
            })
        }

        fn reserve(&self, limit: &BaseLimit) -> bool {
            self.shards
                .reserve_streams(&self.budget, 1, 0, limit)
                .is_ok()
        }

        fn release(&self) {
            let mut underflow = Underflow::default();
            self.shards
                .release_streams(&self.budget, (1, 0), &mut underflow);
            assert!(!underflow.any(), "a release gave back more than was leased");
        }

        fn budget_inbound(&self) -> u64 {
            StreamsWord(self.budget.load(Ordering::Relaxed)).inbound()
        }

        /// The inbound streams in use: the budget less every pool.
        fn in_use(&self) -> u64 {
            let budget = StreamsWord(self.budget.load(Ordering::Relaxed)).0;
            let stat = ScopeStat {
                streams_inbound: StreamsWord(budget).inbound() as u32,
                ..ScopeStat::default()
            };
            u64::from(self.shards.usage(stat).streams_inbound)
        }
    }

    fn inbound_limit(n: u64) -> BaseLimit {
        BaseLimit {
            streams_inbound: n,
            ..BaseLimit::unlimited()
        }
    }

    /// Two shards lease chunks (the limit of 100 leaves room for chunks of 16), use them and
    /// return them to their pools: the budget never passes the limit, what is in use is never
    /// seen above it, and the usage ends at exactly zero.
    #[test]
    fn leases_and_returns_keep_the_usage_exact() {
        check(|| {
            let scope = Sharded::new();
            let limit = inbound_limit(100);
            let worker = {
                let scope = Arc::clone(&scope);
                thread::spawn(move || {
                    assert!(scope.reserve(&limit));
                    assert!(scope.in_use() <= 100);
                    scope.release();
                })
            };
            assert!(scope.reserve(&limit));
            assert!(scope.in_use() <= 100 && scope.budget_inbound() <= 100);
            scope.release();
            worker.join().expect("the worker finishes");
            assert_eq!(scope.in_use(), 0);
            assert!(
                scope.budget_inbound() > 0,
                "quota stays leased in the pools"
            );
        });
    }

    /// The budget admits two streams. One thread holds one and has one more parked in its
    /// pool (reserved, then released); the other asks for one: it must get it, taking the
    /// parked one back if it has to, and the limit must hold whatever the interleaving.
    #[test]
    fn a_nearly_full_budget_refuses_only_what_is_really_in_use() {
        check(|| {
            let scope = Sharded::new();
            let limit = inbound_limit(2);
            assert!(scope.reserve(&limit));
            assert!(scope.reserve(&limit));
            scope.release();
            let other = {
                let scope = Arc::clone(&scope);
                thread::spawn(move || {
                    let admitted = scope.reserve(&limit);
                    assert!(scope.in_use() <= 2);
                    admitted
                })
            };
            assert!(scope.in_use() <= 2);
            assert!(
                other.join().expect("the other thread finishes"),
                "room was left"
            );
            assert_eq!(scope.in_use(), 2);
            assert!(!scope.reserve(&limit), "the budget is really full now");
        });
    }

    /// Both threads race for the last stream the limit allows, while one of them also
    /// returns one: exactly the streams the limit admits are in use at the end.
    #[test]
    fn racing_for_the_last_stream_never_passes_the_limit() {
        check(|| {
            let scope = Sharded::new();
            let limit = inbound_limit(1);
            let worker = {
                let scope = Arc::clone(&scope);
                thread::spawn(move || scope.reserve(&limit))
            };
            let mine = scope.reserve(&limit);
            let theirs = worker.join().expect("the worker finishes");
            assert!(mine ^ theirs, "exactly one of two gets the only stream");
            assert_eq!(scope.in_use(), 1);
        });
    }
}

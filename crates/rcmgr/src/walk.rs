//! The accounting walks: reserving along a scope's edges and owner chain, releasing, closing,
//! and moving a scope's usage to new parents (the transfers behind `set_peer`,
//! `set_protocol` and `set_service`).
//!
//! # The reservation protocol
//!
//! A reservation on a scope with edges `e1..en` (a "DAG scope": everything but spans):
//!
//! 1. checks the scope's own limit without committing (go checks it first, so a refusal
//!    names the same scope go would name);
//! 2. loads the scope's memory word and reads its edge set from it;
//! 3. commits to `e1..en` in go's walk order, each with its own check-and-add; a refusal drops
//!    the [`Rollback`] guard, which releases the edges already taken in reverse order;
//! 4. commits to the scope's own word last, with a compare-and-swap that also checks the scope
//!    is still open and still has the edge set of step 2. If a transfer or close got there
//!    first, the edges are rolled back and the walk starts again (or fails, if closed).
//!
//! Committing the own word last makes it the point at which the reservation "happens" with
//! respect to the scope's close and transfers, which swap that same word: a reservation that
//! got in before is in their snapshot (and its edges already hold it), one that did not sees
//! the new state and undoes its edge commits. A reservation on a span commits its owner chain
//! the same way, from the DAG scope at its root up to the span itself.
//!
//! A release subtracts from the scope's own word (reading the edge set in the same
//! compare-and-swap) and then from those edges; on a span it continues into the owner. A
//! closed scope stops the release: its close already released everything it held from its
//! parents.
//!
//! # Synchronization
//!
//! Parent counters are updated with Relaxed operations: they publish nothing, and each limit
//! is checked against its own word's modification order. The own word of a scope that can be
//! closed or moved is updated with AcqRel/Acquire so that a child's edge commits, made before
//! its own-word commit (Release), are ordered before the edge releases of a close or transfer
//! that swapped the word after it (Acquire). docs/memory-ordering.md spells this out.

use crate::{
    counters::{
        self, ConnsWord, Hit, MemoryWord, StreamsWord, Underflow, add_conns, add_memory,
        add_streams, sub_conns, sub_memory, sub_streams,
    },
    edges::EdgeSet,
    error::{Error, LimitExceeded, ScopeClosed},
    limits::BaseLimit,
    observe::{self, trace_change},
    resource::Priority,
    scope::{Scope, ScopeCtx},
    stat::ScopeStat,
    sync::{AtomicU64, Backoff, Ordering},
};

/// An amount of resources to reserve on, or release from, one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Amount {
    Memory {
        size: u64,
        priority: Priority,
    },
    Streams {
        inbound: u64,
        outbound: u64,
    },
    Conns {
        inbound: u64,
        outbound: u64,
        fd: u64,
    },
    /// Everything a scope holds, moved at once by a transfer (go's `ReserveForChild`).
    Stat(ScopeStat),
}

impl Amount {
    /// The direction of the streams or connections asked for, when they go one way.
    pub(crate) fn direction(self) -> Option<crate::resource::Direction> {
        use crate::resource::Direction;
        let (_, (streams_in, streams_out), (conns_in, conns_out, _)) = self.parts();
        match (streams_in + conns_in, streams_out + conns_out) {
            (0, 0) => None,
            (_, 0) => Some(Direction::Inbound),
            (0, _) => Some(Direction::Outbound),
            _ => None,
        }
    }

    /// How many kinds of resource (memory, streams, connections) the amount changes: the
    /// number of trace events it makes at one scope.
    #[cfg_attr(rcmgr_loom, allow(dead_code))]
    #[inline]
    pub(crate) fn kinds(self) -> u64 {
        let (memory, (streams_in, streams_out), (conns_in, conns_out, fd)) = self.parts();
        u64::from(memory != 0)
            + u64::from(streams_in | streams_out != 0)
            + u64::from(conns_in | conns_out | fd != 0)
    }

    /// The amount as (memory, (inbound, outbound) streams, (inbound, outbound, fd) conns).
    #[inline]
    fn parts(self) -> (u64, (u64, u64), (u64, u64, u64)) {
        match self {
            Amount::Memory { size, .. } => (size, (0, 0), (0, 0, 0)),
            Amount::Streams { inbound, outbound } => (0, (inbound, outbound), (0, 0, 0)),
            Amount::Conns {
                inbound,
                outbound,
                fd,
            } => (0, (0, 0), (inbound, outbound, fd)),
            Amount::Stat(stat) => (
                stat.memory,
                (stat.streams_inbound.into(), stat.streams_outbound.into()),
                (
                    stat.conns_inbound.into(),
                    stat.conns_outbound.into(),
                    stat.fd.into(),
                ),
            ),
        }
    }
}

/// Why a scope refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Why {
    /// A limit refused `amount` (what the refused step asked of the scope).
    Limit(Hit, Amount),
    Closed,
}

/// A refusal, and the scope that made it.
#[derive(Debug)]
pub(crate) struct Refusal<'a> {
    pub(crate) by: ScopeCtx<'a>,
    pub(crate) why: Why,
}

impl Refusal<'_> {
    fn limit(by: ScopeCtx<'_>, hit: Hit, amount: Amount) -> Refusal<'_> {
        Refusal {
            by,
            why: Why::Limit(hit, amount),
        }
    }

    fn closed(by: ScopeCtx<'_>) -> Refusal<'_> {
        Refusal {
            by,
            why: Why::Closed,
        }
    }

    /// The public error for a reservation the caller made on `asked`. A limit refusal is
    /// reported here, once (trace, metrics, debug log).
    pub(crate) fn into_error(self, asked: ScopeCtx<'_>) -> Error {
        let by = (!self.by.is(&asked)).then(|| self.by.name());
        match self.why {
            Why::Limit(hit, amount) => {
                let refusal = LimitExceeded::new(
                    asked.name(),
                    by,
                    hit.resource,
                    (hit.current, hit.attempted, hit.limit),
                )
                .asked(amount.direction());
                observe::refused(self.by, amount, &refusal);
                Error::LimitExceeded(Box::new(refusal))
            }
            Why::Closed => Error::ScopeClosed(Box::new(ScopeClosed::new(asked.name(), by))),
        }
    }

    /// The public error for a transfer of `moving` refused by its new parent: go words it
    /// with the parent's name alone. Reported as [`into_error`](Self::into_error) does.
    pub(crate) fn into_transfer_error(self, moving: ScopeCtx<'_>) -> Error {
        match self.why {
            Why::Limit(hit, amount) => {
                let refusal = LimitExceeded::new(
                    moving.name(),
                    Some(self.by.name()),
                    hit.resource,
                    (hit.current, hit.attempted, hit.limit),
                )
                .asked(amount.direction())
                .in_transfer();
                observe::refused(self.by, amount, &refusal);
                Error::LimitExceeded(Box::new(refusal))
            }
            Why::Closed => self.into_error(moving),
        }
    }
}

/// Releases the edges taken so far, in reverse walk order, unless [`keep`](Self::keep) is
/// called: on a refusal, an early return or a panic alike.
struct Rollback<'a> {
    at: ScopeCtx<'a>,
    edges: EdgeSet,
    amount: Amount,
    taken: usize,
}

impl Rollback<'_> {
    fn keep(mut self) {
        self.taken = 0;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        for edge in self.edges.first(self.taken).iter().rev() {
            if let Some(parent) = self.at.edge(edge) {
                release_edge(parent, self.amount, true);
            }
        }
    }
}

/// The part of a scope's limit a reservation is checked against: the memory field alone for
/// memory (the most frequent reservation, and one field of the cache to read), the whole
/// limit otherwise.
#[derive(Clone, Copy, Debug)]
enum Within {
    Memory(u64),
    All(BaseLimit),
}

impl Within {
    /// Reads the part of `at`'s limit that `amount` is checked against, in `generation`.
    #[inline]
    fn of(at: ScopeCtx<'_>, amount: Amount, generation: u64) -> Within {
        match amount {
            Amount::Memory { .. } => Within::Memory(at.memory_limit_at(generation)),
            _ => Within::All(at.limit_at(generation)),
        }
    }

    fn memory(&self) -> u64 {
        match self {
            Within::Memory(memory) => *memory,
            Within::All(limit) => limit.memory,
        }
    }

    fn all(&self, at: ScopeCtx<'_>) -> BaseLimit {
        match self {
            Within::All(limit) => *limit,
            Within::Memory(_) => at.limit(),
        }
    }
}

/// Reserves `amount` on `at` alone, against its own limit only (go's `*ForChild`). Used for
/// parents, which other reservations share.
fn take<'a>(at: ScopeCtx<'a>, amount: Amount, generation: u64) -> Result<(), Refusal<'a>> {
    take_within(at, amount, &Within::of(at, amount, generation))?;
    trace_change(at, amount, true);
    Ok(())
}

/// [`take`] against a limit the caller already read.
fn take_within<'a>(at: ScopeCtx<'a>, amount: Amount, within: &Within) -> Result<(), Refusal<'a>> {
    let refused = |hit| Refusal::limit(at, hit, amount);
    match amount {
        Amount::Memory { size, priority } => take_memory(at, size, priority, within.memory()),
        Amount::Streams { inbound, outbound } => {
            take_streams(at.scope, (inbound, outbound), &within.all(at)).map_err(refused)
        }
        Amount::Conns {
            inbound,
            outbound,
            fd,
        } => take_conns(at.scope, (inbound, outbound, fd), &within.all(at)).map_err(refused),
        Amount::Stat(stat) => take_stat(at, stat, &within.all(at)),
    }
}

/// Adds streams to a parent (or only checks, when adding nothing: go checks the total even
/// then), through its shards if it has them.
fn take_streams(
    scope: &Scope,
    (inbound, outbound): (u64, u64),
    limit: &BaseLimit,
) -> Result<(), Hit> {
    let word = &scope.counters.streams;
    match &scope.shards {
        Some(shards) => shards.reserve_streams(word, inbound, outbound, limit),
        None => add_to(word, inbound == 0 && outbound == 0, |cur| {
            add_streams(StreamsWord(cur), inbound, outbound, limit).map(|w| w.0)
        }),
    }
}

/// Adds connections to a parent (or only checks, when adding nothing), through its shards if
/// it has them.
fn take_conns(
    scope: &Scope,
    (inbound, outbound, fd): (u64, u64, u64),
    limit: &BaseLimit,
) -> Result<(), Hit> {
    let word = &scope.counters.conns;
    match &scope.shards {
        Some(shards) => shards.reserve_conns(word, (inbound, outbound, fd), limit),
        None => add_to(word, inbound == 0 && outbound == 0 && fd == 0, |cur| {
            add_conns(ConnsWord(cur), inbound, outbound, fd, limit).map(|w| w.0)
        }),
    }
}

/// Adds to a stream or connection word with the check-and-add loop; when `check_only` (the
/// amount is zero) it only checks, so the cache line is not written for nothing.
fn add_to(
    word: &AtomicU64,
    check_only: bool,
    next: impl FnMut(u64) -> Result<u64, Hit>,
) -> Result<(), Hit> {
    let mut next = next;
    if check_only {
        // Ordering: Relaxed — a count; the check is on this word alone.
        next(word.load(Ordering::Relaxed)).map(drop)
    } else {
        // Ordering: Relaxed — a count; the check is on this word alone.
        counters::update(word, Ordering::Relaxed, next).map(drop)
    }
}

/// Adds memory to a parent with its own check, or only checks when `size` is zero.
fn take_memory<'a>(
    at: ScopeCtx<'a>,
    size: u64,
    priority: Priority,
    limit: u64,
) -> Result<(), Refusal<'a>> {
    let memory = &at.scope.counters.memory;
    let asked = Amount::Memory { size, priority };
    if let Some(shards) = &at.scope.shards {
        return shards
            .reserve_memory(memory, size, priority, limit)
            .map_err(|hit| Refusal::limit(at, hit, asked));
    }
    let next = |cur| {
        let word = MemoryWord(cur);
        if word.is_closed() {
            return Err(Refusal::closed(at));
        }
        add_memory(word.used(), size, priority, limit)
            .map(|used| word.with_used(used).0)
            .map_err(|hit| Refusal::limit(at, hit, asked))
    };
    if size == 0 {
        // Ordering: Relaxed — a parent's memory count; nothing is published through it.
        return next(memory.load(Ordering::Relaxed)).map(drop);
    }
    // Ordering: Relaxed — a parent's memory count; nothing is published through it.
    counters::update(memory, Ordering::Relaxed, next).map(drop)
}

/// go's `ReserveForChild`: memory at priority ALWAYS, then streams, then connections, each
/// checked even when its amount is zero (a lowered limit then refuses the move); a later
/// refusal gives back what the earlier steps took.
fn take_stat<'a>(at: ScopeCtx<'a>, stat: ScopeStat, limit: &BaseLimit) -> Result<(), Refusal<'a>> {
    let (streams_in, streams_out) = (stat.streams_inbound.into(), stat.streams_outbound.into());
    let (conns_in, conns_out) = (stat.conns_inbound.into(), stat.conns_outbound.into());
    let fd = stat.fd.into();
    take_memory(at, stat.memory, Priority::ALWAYS, limit.memory).map_err(|refusal| Refusal {
        why: match refusal.why {
            Why::Limit(hit, _) => Why::Limit(hit, Amount::Stat(stat)),
            closed => closed,
        },
        ..refusal
    })?;
    let memory = Amount::Memory {
        size: stat.memory,
        priority: Priority::ALWAYS,
    };
    let streams = take_streams(at.scope, (streams_in, streams_out), limit);
    if let Err(hit) = streams {
        give_back(at, memory, true);
        return Err(Refusal::limit(at, hit, Amount::Stat(stat)));
    }
    let conns = take_conns(at.scope, (conns_in, conns_out, fd), limit);
    if let Err(hit) = conns {
        give_back(at, memory, true);
        let streams = Amount::Streams {
            inbound: streams_in,
            outbound: streams_out,
        };
        give_back(at, streams, true);
        return Err(Refusal::limit(at, hit, Amount::Stat(stat)));
    }
    Ok(())
}

/// [`give_back`], recorded in the trace: a parent releasing what a child gave back.
fn release_edge(at: ScopeCtx<'_>, amount: Amount, exact: bool) {
    give_back(at, amount, exact);
    trace_change(at, amount, false);
}

/// Releases `amount` from `at` alone (go's `ReleaseForChild`): counts clamp at zero, with go's
/// warning. Not traced: [`release_edge`] is, and a step undone inside [`take_stat`] is not
/// (go's `ReserveForChild` records nothing for it either).
fn give_back(at: ScopeCtx<'_>, amount: Amount, exact: bool) {
    let counters = &at.scope.counters;
    let mut underflow = Underflow::default();
    let (memory, streams, conns) = amount.parts();
    if let Some(shards) = &at.scope.shards {
        if memory != 0 {
            shards.release_memory(&counters.memory, memory, exact, &mut underflow);
        }
        if streams != (0, 0) {
            shards.release_streams(&counters.streams, streams, &mut underflow);
        }
        if conns != (0, 0, 0) {
            shards.release_conns(&counters.conns, conns, &mut underflow);
        }
    } else {
        let ((streams_in, streams_out), (conns_in, conns_out, fd)) = (streams, conns);
        if memory != 0 {
            // Ordering: Relaxed — a parent's memory count; nothing is published through it.
            let _ = counters::update(&counters.memory, Ordering::Relaxed, |cur| {
                let word = MemoryWord(cur);
                if word.is_closed() {
                    return Err(());
                }
                Ok(word
                    .with_used(sub_memory(word.used(), memory, &mut underflow))
                    .0)
            });
        }
        if streams_in | streams_out != 0 {
            // Ordering: Relaxed — a count.
            let _ = counters::update(&counters.streams, Ordering::Relaxed, |cur| {
                Ok::<_, ()>(
                    sub_streams(StreamsWord(cur), streams_in, streams_out, &mut underflow).0,
                )
            });
        }
        if conns_in | conns_out | fd != 0 {
            // Ordering: Relaxed — a count.
            let _ = counters::update(&counters.conns, Ordering::Relaxed, |cur| {
                Ok::<_, ()>(sub_conns(ConnsWord(cur), conns_in, conns_out, fd, &mut underflow).0)
            });
        }
    }
    if underflow.any() {
        underflow.report(&at.name());
    }
}

/// Whether `at`'s own limit admits `amount` on top of what it holds now (nothing is written).
///
/// go checks a scope's own limit before its edges. rcmgr commits the own word last (see the
/// module docs) and so checks it last; when a parent refuses, this check decides whether go
/// would have named the scope itself instead, so that errors name the same scope as go's.
fn check_own<'a>(at: ScopeCtx<'a>, amount: Amount, within: &Within) -> Result<(), Refusal<'a>> {
    // Ordering: Acquire on the memory word — a closed flag seen here is acted on at once.
    let word = MemoryWord(at.scope.counters.memory.load(Ordering::Acquire));
    if word.is_closed() {
        return Err(Refusal::closed(at));
    }
    let held = at.scope.stat();
    let result = match amount {
        Amount::Memory { size, priority } => {
            add_memory(held.memory, size, priority, within.memory()).map(drop)
        }
        Amount::Streams { inbound, outbound } => {
            let streams =
                StreamsWord::new(held.streams_inbound.into(), held.streams_outbound.into());
            add_streams(streams, inbound, outbound, &within.all(at)).map(drop)
        }
        Amount::Conns {
            inbound,
            outbound,
            fd,
        } => {
            let conns = ConnsWord::new(
                held.conns_inbound.into(),
                held.conns_outbound.into(),
                held.fd.into(),
            );
            add_conns(conns, inbound, outbound, fd, &within.all(at)).map(drop)
        }
        Amount::Stat(_) => Ok(()),
    };
    result.map_err(|hit| Refusal::limit(at, hit, amount))
}

/// Why committing to a scope's own word did not happen.
enum OwnCommit<'a> {
    /// The scope began or finished a transfer since its edges were read: start again.
    Moved,
    Refused(Refusal<'a>),
}

/// Commits `amount` to `at`'s own word against `within`, provided `at` is open and still has
/// `edges`.
fn commit_own<'a>(
    at: ScopeCtx<'a>,
    amount: Amount,
    edges: EdgeSet,
    within: &Within,
) -> Result<(), OwnCommit<'a>> {
    let counters = &at.scope.counters;
    let refused = |hit| OwnCommit::Refused(Refusal::limit(at, hit, amount));
    let (size, priority) = match amount {
        Amount::Memory { size, priority } => (size, priority),
        // Stream and connection counts are committed to a scope only while it is being opened,
        // when no other thread can reach it yet: a plain check and store is enough.
        Amount::Streams { inbound, outbound } => {
            // Ordering: Relaxed (load and store) — the scope is not shared yet.
            let streams = StreamsWord(counters.streams.load(Ordering::Relaxed));
            let new = add_streams(streams, inbound, outbound, &within.all(at)).map_err(refused)?;
            counters.streams.store(new.0, Ordering::Relaxed);
            trace_change(at, amount, true);
            return Ok(());
        }
        Amount::Conns {
            inbound,
            outbound,
            fd,
        } => {
            // Ordering: Relaxed (load and store) — the scope is not shared yet.
            let conns = ConnsWord(counters.conns.load(Ordering::Relaxed));
            let limit = within.all(at);
            let new = add_conns(conns, inbound, outbound, fd, &limit).map_err(refused)?;
            counters.conns.store(new.0, Ordering::Relaxed);
            trace_change(at, amount, true);
            return Ok(());
        }
        Amount::Stat(_) => {
            take_within(at, amount, within).map_err(OwnCommit::Refused)?;
            trace_change(at, amount, true);
            return Ok(());
        }
    };
    let limit = within.memory();
    if let Some(shards) = &at.scope.shards {
        // A sharded scope (fixed, protocol or service) is never closed and never moves.
        shards
            .reserve_memory(&counters.memory, size, priority, limit)
            .map_err(refused)?;
        trace_change(at, amount, true);
        return Ok(());
    }
    // Ordering: AcqRel — Release: the edge commits made before this one are ordered before
    // the releases of a close or transfer that swaps this word later (its Acquire). Acquire:
    // symmetric with those swaps, so a commit that follows a transfer sees its new slots.
    let previous = counters::update(&counters.memory, Ordering::AcqRel, |cur| {
        let word = MemoryWord(cur);
        if word.is_closed() {
            return Err(OwnCommit::Refused(Refusal::closed(at)));
        }
        if word.is_transferring() || word.edges() != edges {
            return Err(OwnCommit::Moved);
        }
        add_memory(word.used(), size, priority, limit)
            .map(|used| word.with_used(used).0)
            .map_err(refused)
    })?;
    let old = MemoryWord(previous).used();
    observe::conn_memory(at, old, old + size);
    trace_change(at, amount, true);
    Ok(())
}

/// Reserves `amount` on a scope with edges (not a span): its edges in walk order, then its
/// own word (see the module docs).
pub(crate) fn reserve_dag<'a>(at: ScopeCtx<'a>, amount: Amount) -> Result<(), Refusal<'a>> {
    let generation = at.root.generation();
    let within = Within::of(at, amount, generation);
    let backoff = Backoff::new();
    loop {
        // Ordering: Acquire — pairs with the Release that ended the scope's last transfer, so
        // the slots its edge set names are visible below.
        let word = MemoryWord(at.scope.counters.memory.load(Ordering::Acquire));
        if word.is_closed() {
            return Err(Refusal::closed(at));
        }
        if word.is_transferring() {
            backoff.snooze();
            continue;
        }
        let edges = word.edges();
        let mut taken = Rollback {
            at,
            edges,
            amount,
            taken: 0,
        };
        for edge in edges.iter() {
            if let Some(parent) = at.edge(edge)
                && let Err(refusal) = take(parent, amount, generation)
            {
                return Err(check_own(at, amount, &within).err().unwrap_or(refusal));
            }
            taken.taken += 1;
        }
        match commit_own(at, amount, edges, &within) {
            Ok(()) => {
                taken.keep();
                return Ok(());
            }
            Err(OwnCommit::Moved) => {
                drop(taken);
                backoff.snooze();
            }
            Err(OwnCommit::Refused(refusal)) => return Err(refusal),
        }
    }
}

/// Reserves memory on any scope: the scope at the root of the owner chain with its edges,
/// then each span level from there up to `at`. A refusal names the first scope, in go's order
/// (`at` first, then down the owner chain, then the root's edges), whose own limit refuses.
pub(crate) fn reserve_memory<'a>(
    at: ScopeCtx<'a>,
    size: u64,
    priority: Priority,
) -> Result<(), Refusal<'a>> {
    let amount = Amount::Memory { size, priority };
    let mut depth = 0;
    let mut dag = at;
    while let Some(owner) = dag.owner() {
        dag = owner;
        depth += 1;
    }
    if let Err(refusal) = reserve_dag(dag, amount) {
        return Err(first_own_refusal(at, depth, amount).unwrap_or(refusal));
    }
    let generation = at.root.generation();
    for level in (0..depth).rev() {
        let span = at.ancestor(level);
        let within = Within::of(span, amount, generation);
        let backoff = Backoff::new();
        loop {
            match commit_own(span, amount, EdgeSet::NONE, &within) {
                Ok(()) => break,
                // Spans never move; kept total rather than assumed.
                Err(OwnCommit::Moved) => backoff.snooze(),
                Err(OwnCommit::Refused(refusal)) => {
                    release_memory(at.ancestor(level + 1), size, true);
                    return Err(first_own_refusal(at, level, amount).unwrap_or(refusal));
                }
            }
        }
    }
    Ok(())
}

/// The first of the `levels` scopes from `at` down its owner chain whose own limit refuses
/// `amount`, if any.
fn first_own_refusal<'a>(at: ScopeCtx<'a>, levels: usize, amount: Amount) -> Option<Refusal<'a>> {
    let generation = at.root.generation();
    (0..levels).find_map(|level| {
        let span = at.ancestor(level);
        check_own(span, amount, &Within::of(span, amount, generation)).err()
    })
}

/// Releases memory from any scope, then from its owner chain and the edges at its root. Stops
/// at a closed scope, whose close already released what it held.
///
/// `exact` says the caller gives back what it reserved (a close, a guard, a rollback). A
/// caller's own `release_memory` may give back more: then only the first scope's own clamp can
/// tell, and what is past it reaches the parents as a possible over-release (see
/// [`Shards::release_memory`](crate::shards::Shards::release_memory)).
pub(crate) fn release_memory(at: ScopeCtx<'_>, size: u64, exact: bool) {
    if size == 0 {
        return;
    }
    let mut level = at;
    let mut exact = exact;
    loop {
        let Some((edges, clamped)) = release_own_memory(level, size, exact) else {
            return;
        };
        // A level that held all of `size` proves its parents did: they hold at least what
        // their children hold.
        exact = !clamped;
        match level.owner() {
            Some(owner) => level = owner,
            None => {
                let amount = Amount::Memory {
                    size,
                    priority: Priority::ALWAYS,
                };
                for edge in edges.iter() {
                    if let Some(parent) = level.edge(edge) {
                        release_edge(parent, amount, exact);
                    }
                }
                return;
            }
        }
    }
}

/// Subtracts from a scope's own memory word; returns the edges the memory was held on and
/// whether the release took more than the scope held (clamped at zero), or `None` if the scope
/// is closed. Waits out a transfer in progress: only when it ends is it known which parents
/// hold the memory.
fn release_own_memory(at: ScopeCtx<'_>, size: u64, exact: bool) -> Option<(EdgeSet, bool)> {
    let memory = &at.scope.counters.memory;
    if let Some(shards) = &at.scope.shards {
        // A sharded scope is never closed and its edges never change.
        let mut underflow = Underflow::default();
        shards.release_memory(memory, size, exact, &mut underflow);
        if underflow.any() {
            underflow.report(&at.name());
        }
        trace_released_memory(at, size);
        // Ordering: Relaxed — only the edge bits are read, and they never change.
        let edges = MemoryWord(memory.load(Ordering::Relaxed)).edges();
        return Some((edges, underflow.memory));
    }
    enum Busy {
        Closed,
        Transferring,
    }
    let backoff = Backoff::new();
    loop {
        let mut underflow = Underflow::default();
        // Ordering: AcqRel — as for commits: this release's edge updates must come after the
        // commits it undoes and be seen by a later close or transfer (Release/Acquire on this
        // word).
        let result = counters::update(memory, Ordering::AcqRel, |cur| {
            let word = MemoryWord(cur);
            if word.is_closed() {
                return Err(Busy::Closed);
            }
            if word.is_transferring() {
                return Err(Busy::Transferring);
            }
            Ok(word
                .with_used(sub_memory(word.used(), size, &mut underflow))
                .0)
        });
        match result {
            Ok(previous) => {
                if underflow.any() {
                    underflow.report(&at.name());
                }
                let old = MemoryWord(previous).used();
                observe::conn_memory(at, old, old.saturating_sub(size));
                trace_released_memory(at, size);
                return Some((MemoryWord(previous).edges(), underflow.memory));
            }
            Err(Busy::Closed) => return None,
            Err(Busy::Transferring) => backoff.snooze(),
        }
    }
}

/// Records `size` bytes released from `at`'s own word in the trace.
fn trace_released_memory(at: ScopeCtx<'_>, size: u64) {
    let amount = Amount::Memory {
        size,
        priority: Priority::ALWAYS,
    };
    trace_change(at, amount, false);
}

/// Closes a scope: marks it closed, zeroes it and releases everything it held from its
/// parents (go's `Done`). Returns what it held, or `None` if it was already closed.
pub(crate) fn close(at: ScopeCtx<'_>) -> Option<ScopeStat> {
    let counters = &at.scope.counters;
    // Ordering: Acquire — every child commit that got in before this swap (Release) is in
    // the snapshot, and its edge commits are ordered before the releases below.
    let word = MemoryWord(
        counters
            .memory
            .swap(MemoryWord::closed().0, Ordering::Acquire),
    );
    if word.is_closed() {
        return None;
    }
    // Ordering: Relaxed — only this scope's own handle writes its stream and connection counts.
    let streams = StreamsWord(counters.streams.swap(0, Ordering::Relaxed));
    let conns = ConnsWord(counters.conns.swap(0, Ordering::Relaxed));
    let stat = ScopeStat {
        memory: word.used(),
        streams_inbound: streams.inbound() as u32,
        streams_outbound: streams.outbound() as u32,
        conns_inbound: conns.inbound() as u32,
        conns_outbound: conns.outbound() as u32,
        fd: conns.fd() as u32,
    };
    observe::conn_memory(at, stat.memory, 0);
    match at.owner() {
        Some(owner) => release_memory(owner, stat.memory, true),
        None => {
            for edge in word.edges().iter() {
                if let Some(parent) = at.edge(edge) {
                    release_edge(parent, Amount::Stat(stat), true);
                }
            }
        }
    }
    observe::trace_destroyed(at);
    Some(stat)
}

/// A transfer in progress on a connection or stream scope: while it exists no child can
/// commit to or release from the scope, so `stat` stays exact. It must end with
/// [`finish`](Self::finish); dropping it (on an early return) restores the old edges.
pub(crate) struct Transfer<'a> {
    at: ScopeCtx<'a>,
    pub(crate) edges: EdgeSet,
    pub(crate) stat: ScopeStat,
    finished: bool,
}

impl<'a> Transfer<'a> {
    /// Freezes the scope's usage for a transfer. Fails if the scope is closed.
    pub(crate) fn begin(at: ScopeCtx<'a>) -> Result<Self, Refusal<'a>> {
        // Ordering: AcqRel — Acquire: child commits before the mark are ordered before this
        // transfer's releases from the old edges. Release: nothing needs it, kept symmetric.
        let previous = counters::update(&at.scope.counters.memory, Ordering::AcqRel, |cur| {
            let word = MemoryWord(cur);
            if word.is_closed() {
                return Err(Refusal::closed(at));
            }
            Ok(word.with_transferring(true).0)
        })?;
        let word = MemoryWord(previous);
        // Ordering: Relaxed — only the scope's own handle, which is running this transfer,
        // writes its stream and connection counts.
        let streams = StreamsWord(at.scope.counters.streams.load(Ordering::Relaxed));
        let conns = ConnsWord(at.scope.counters.conns.load(Ordering::Relaxed));
        Ok(Transfer {
            at,
            edges: word.edges(),
            stat: ScopeStat {
                memory: word.used(),
                streams_inbound: streams.inbound() as u32,
                streams_outbound: streams.outbound() as u32,
                conns_inbound: conns.inbound() as u32,
                conns_outbound: conns.outbound() as u32,
                fd: conns.fd() as u32,
            },
            finished: false,
        })
    }

    /// The scope being moved.
    pub(crate) fn scope(&self) -> ScopeCtx<'a> {
        self.at
    }

    /// Reserves the frozen usage on a new parent (go's `ReserveForChild`).
    pub(crate) fn take<'b>(&self, parent: ScopeCtx<'b>) -> Result<(), Refusal<'b>> {
        take(parent, Amount::Stat(self.stat), parent.root.generation())
    }

    /// Releases the frozen usage from a parent (go's `ReleaseForChild`).
    pub(crate) fn give_back(&self, parent: ScopeCtx<'_>) {
        release_edge(parent, Amount::Stat(self.stat), true);
    }

    /// Ends the transfer with the scope reporting to `edges` from now on. Any slot the new
    /// edges name must be set before this call.
    pub(crate) fn finish(mut self, edges: EdgeSet) {
        self.end(edges);
    }

    fn end(&mut self, edges: EdgeSet) {
        self.finished = true;
        let memory = &self.at.scope.counters.memory;
        // Ordering: Relaxed load — while the transfer mark is set no other thread writes the
        // word (children wait), so this reads the value this thread marked.
        let word = MemoryWord(memory.load(Ordering::Relaxed));
        // Ordering: Release — publishes the slots set before this call to children that
        // Acquire-load the word and read them.
        memory.store(
            word.with_transferring(false).with_edges(edges).0,
            Ordering::Release,
        );
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let edges = self.edges;
            self.end(edges);
        }
    }
}

impl std::fmt::Debug for Transfer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("edges", &self.edges)
            .field("stat", &self.stat)
            .finish()
    }
}

//! What connections and streams share: a scope whose parents depend on its *stage* (a
//! connection in transient, then in its peer; a stream in transient, then in its protocol,
//! then also in its service), with its bytes in an [`Own`] word that says the stage.
//!
//! [`Staged`] is what each of them provides (its own word, its limit, its parents at a
//! stage); the walks here are written once for both: reserving and releasing memory through
//! the scope, closing it, and the frame of a transfer ([`Move`]). A refused reservation is
//! reported as a [`Fault`], which names no scope: [`super::scope`], above the nodes, names it.

use super::fault::Fault;
use crate::{
    account::{
        Memory, Own, OwnRefusal, OwnState, Release, ReleaseUsage, Released, Reserve, Usage, Walk,
    },
    sync::{Backoff, Slot},
    types::Priority,
};

/// A connection or a stream; see the module docs.
pub(crate) trait Staged {
    /// The scope's own memory word.
    fn own(&self) -> &Own;
    /// The scope's own memory limit now (pinned, or the one all its kind share).
    fn memory_limit(&self) -> u64;
    /// Runs `walk` on the parents at `stage`, built on the stack (always inlined, so that
    /// each stage's walk is compiled for its parents). A stage's parents are written before
    /// the stage is published.
    fn with_path<W: Walk>(&self, stage: u8, walk: W) -> W::Output;
}

/// Reserves `memory` through `node`: its parents at its current stage, then its own word (see
/// [`crate::account::own`]). Returns the bytes the scope held before; a refusal is reported
/// compactly, and [`super::scope::memory_refusal`] names it.
#[inline(always)]
pub(crate) fn reserve_memory<S: Staged>(
    node: &S,
    memory: Memory,
    slot: Slot,
) -> Result<u64, Fault> {
    let limit = node.memory_limit();
    let backoff = Backoff::new();
    loop {
        let state = node.own().load();
        if state.is_closed() {
            return Err(Fault::Closed);
        }
        if state.is_moving() {
            backoff.snooze();
            continue;
        }
        let stage = state.stage();
        if let Err(refused) = node.with_path(stage, Reserve(memory, slot)) {
            return Err(Fault::Path {
                stage,
                refused,
                limit,
            });
        }
        let refused = match node.own().commit(memory, limit, stage) {
            Ok(before) => return Ok(before),
            Err(refused) => refused,
        };
        // The parents at `stage` took the bytes: give them back (the cold path).
        undo_reserve(node, stage, memory, slot);
        match refused {
            OwnRefusal::Moved => backoff.snooze(),
            OwnRefusal::Closed => return Err(Fault::Closed),
            OwnRefusal::Limit(hit) => return Err(Fault::Own(hit)),
        }
    }
}

/// Gives back what the parents at `stage` took for a reservation whose own commit failed.
#[cold]
#[inline(never)]
fn undo_reserve<S: Staged>(node: &S, stage: u8, memory: Memory, slot: Slot) {
    node.with_path(stage, Release(memory, slot));
}

/// Gives back up to `bytes` of what `node` holds, from its own word and then from its
/// parents. `None` if the scope is closed (its close released everything).
#[inline(always)]
pub(crate) fn release_memory<S: Staged>(node: &S, bytes: u64, slot: Slot) -> Option<Released> {
    let released = node.own().release(bytes)?;
    if released.taken > 0 {
        let memory = Memory::new(released.taken, Priority::ALWAYS);
        node.with_path(released.stage, Release(memory, slot));
    }
    Some(released)
}

/// Closes `node`: marks it closed and gives what it held (its bytes, and what `usage` makes of
/// them) back to its parents. `exclusive` says the handle is the scope's only holder. `None`
/// if it was closed already.
pub(crate) fn close<S: Staged>(
    node: &S,
    exclusive: bool,
    usage: impl FnOnce(u64) -> Usage,
    slot: Slot,
) -> Option<OwnState> {
    let state = if exclusive {
        node.own().close_exclusive()
    } else {
        node.own().close()
    }?;
    let usage = usage(state.bytes());
    node.with_path(state.stage(), ReleaseUsage(usage, slot));
    Some(state)
}

/// A transfer in progress: the scope's usage is frozen (its spans' reservations and releases
/// wait) until [`finish`](Self::finish) publishes the new stage; dropping it (a refused
/// transfer, an early return, a panic) ends the transfer at the old stage, leaving the scope
/// exactly as it was.
#[derive(Debug)]
pub(crate) struct Move<'a> {
    own: &'a Own,
    exclusive: bool,
    pub(crate) from: OwnState,
    done: bool,
}

impl<'a> Move<'a> {
    /// Freezes the scope; `None` if it is closed. `exclusive` says the handle is the scope's
    /// only holder: then no one else can reserve through it, and the freeze is a plain read.
    pub(crate) fn begin(own: &'a Own, exclusive: bool) -> Option<Self> {
        let from = if exclusive {
            own.exclusive()
        } else {
            own.begin_move().ok()?
        };
        if from.is_closed() {
            return None;
        }
        Some(Move {
            own,
            exclusive,
            from,
            done: false,
        })
    }

    /// Ends the transfer at `stage`. Where the new stage's parents are must be written before.
    pub(crate) fn finish(mut self, stage: u8) {
        self.end(stage);
    }

    fn end(&mut self, stage: u8) {
        self.done = true;
        if self.exclusive {
            self.own.set_stage_exclusive(stage);
        } else {
            self.own.end_move(stage);
        }
    }
}

impl Drop for Move<'_> {
    fn drop(&mut self) {
        if !self.done {
            let stage = self.from.stage();
            self.end(stage);
        }
    }
}

/// Stand-ins for a parent that a stage names but that is missing, which never happens: a
/// stage's parents are written before the stage is published, and a scope holding usage in a
/// parent keeps it from being collected. Were that ever broken, the walk would charge a scope
/// that no close gives back, so debug builds stop here; release builds charge a fresh scope
/// that nothing else uses, which keeps every other count right.
pub(crate) mod detached {
    use crate::{
        account::{Plain, Sharded},
        limits::BaseLimit,
    };
    use std::sync::OnceLock;

    /// A plain scope no one else uses.
    #[cold]
    pub(crate) fn plain() -> &'static Plain {
        debug_assert!(false, "a stage's parents exist while it is published");
        static DETACHED: OnceLock<Plain> = OnceLock::new();
        DETACHED.get_or_init(|| Plain::new(BaseLimit::unlimited()))
    }

    /// A sharded scope no one else uses.
    #[cold]
    pub(crate) fn sharded() -> &'static Sharded {
        debug_assert!(false, "a stage's parents exist while it is published");
        static DETACHED: OnceLock<Sharded> = OnceLock::new();
        DETACHED.get_or_init(|| Sharded::new(BaseLimit::unlimited()))
    }
}

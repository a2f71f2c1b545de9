//! What connections and streams share: a scope whose parents depend on its *stage* (a
//! connection in transient, then in its peer; a stream in transient, then in its protocol,
//! then also in its service), with its bytes in an [`Own`] word that says the stage.
//!
//! [`Staged`] is what each of them provides (its own word, its limit, its parents at a
//! stage); the walks here are written once for both: reserving and releasing memory through
//! the scope, closing it, and the frame of a transfer ([`Move`]).

use super::scope::{Asked, Refusal, ScopeRef};
use crate::{
    account::{
        Memory, Own, OwnRefusal, OwnState, Parent, PathRefusal, Refused, Released, Usage, path,
    },
    sync::{Backoff, Slot},
    types::Priority,
};

/// The most parents a scope reports to: a stream with its protocol and service (peer,
/// protocol-peer, service-peer, protocol, service, system).
pub(crate) const MOST_PARENTS: usize = 6;

/// The parents a scope reports to at one stage, in go's walk order (never empty: every
/// connection and stream reports to at least two scopes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path<'a> {
    parents: [Parent<'a>; MOST_PARENTS],
    len: usize,
}

impl<'a> Path<'a> {
    /// A path of `N` (at least 1, at most [`MOST_PARENTS`]) parents.
    #[inline]
    pub(crate) fn of<const N: usize>(parents: [Parent<'a>; N]) -> Self {
        const { assert!(N >= 1 && N <= MOST_PARENTS) };
        let mut all = [parents[0]; MOST_PARENTS];
        all[..N].copy_from_slice(&parents);
        Path {
            parents: all,
            len: N,
        }
    }

    /// The parents, as the walks take them.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[Parent<'a>] {
        &self.parents[..self.len]
    }
}

/// A connection or a stream; see the module docs.
pub(crate) trait Staged {
    /// The scope's own memory word.
    fn own(&self) -> &Own;
    /// The scope's own memory limit now (pinned, or the one all its kind share).
    fn memory_limit(&self) -> u64;
    /// The scope itself, for names.
    fn scope(&self) -> ScopeRef<'_>;
    /// The parents at `stage`. A stage's parents are written before the stage is published.
    fn path(&self, stage: u8) -> Path<'_>;
    /// The parent at `index` of the path at `stage`, for names (the cold path).
    fn scope_at(&self, stage: u8, index: usize) -> ScopeRef<'_>;
}

/// Reserves `memory` through `node`: its parents at its current stage, then its own word (see
/// [`crate::account::own`]). Returns the bytes the scope held before.
#[inline]
pub(crate) fn reserve_memory<S: Staged>(
    node: &S,
    memory: Memory,
    slot: Slot,
) -> Result<u64, Refusal> {
    let limit = node.memory_limit();
    let backoff = Backoff::new();
    loop {
        let state = node.own().load();
        if state.is_closed() {
            return Err(Refusal::closed(None));
        }
        if state.is_moving() {
            backoff.snooze();
            continue;
        }
        let path = node.path(state.stage());
        let parents = path.as_slice();
        if let Err(refused) = path::reserve(parents, memory, slot) {
            return Err(path_refusal(node, state.stage(), memory, limit, refused));
        }
        match node.own().commit(memory, limit, state.stage()) {
            Ok(before) => return Ok(before),
            Err(OwnRefusal::Moved) => {
                path::release(parents, memory, slot);
                backoff.snooze();
            }
            Err(OwnRefusal::Closed) => {
                path::release(parents, memory, slot);
                return Err(Refusal::closed(None));
            }
            Err(OwnRefusal::Limit(hit)) => {
                path::release(parents, memory, slot);
                return Err(Refusal::limit(
                    node.scope(),
                    true,
                    hit,
                    Asked::Memory(memory),
                ));
            }
        }
    }
}

/// The refusal of a reservation that a parent refused: go checks the scope's own limit
/// first, so if that refuses too, it is the one named.
#[cold]
fn path_refusal<S: Staged>(
    node: &S,
    stage: u8,
    memory: Memory,
    limit: u64,
    refused: PathRefusal,
) -> Refusal {
    if let Some(hit) = node.own().refuses(memory, limit) {
        return Refusal::limit(node.scope(), true, hit, Asked::Memory(memory));
    }
    let parent = node.scope_at(stage, refused.at);
    match refused.why {
        Refused::Limit(hit) => {
            Refusal::limit(parent, false, hit, Asked::Memory(memory)).at(refused.at)
        }
        Refused::Stopped => {
            debug_assert!(false, "a parent holding a scope's usage is never stopped");
            Refusal::closed(Some(parent))
        }
    }
}

/// Gives back up to `bytes` of what `node` holds, from its own word and then from its
/// parents. `None` if the scope is closed (its close released everything).
#[inline]
pub(crate) fn release_memory<S: Staged>(node: &S, bytes: u64, slot: Slot) -> Option<Released> {
    let released = node.own().release(bytes)?;
    if released.taken > 0 {
        let path = node.path(released.stage);
        path::release(
            path.as_slice(),
            Memory::new(released.taken, Priority::ALWAYS),
            slot,
        );
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
    let path = node.path(state.stage());
    path::release_usage(path.as_slice(), usage(state.bytes()), slot);
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
    /// Freezes the scope. `exclusive` says the handle is the scope's only holder: then no one
    /// else can reserve through it, and the freeze is a plain read.
    pub(crate) fn begin(own: &'a Own, exclusive: bool) -> Result<Self, Refusal> {
        let from = if exclusive {
            own.exclusive()
        } else {
            own.begin_move().map_err(|_| Refusal::closed(None))?
        };
        if from.is_closed() {
            return Err(Refusal::closed(None));
        }
        Ok(Move {
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

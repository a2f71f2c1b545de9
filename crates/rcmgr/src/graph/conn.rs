//! [`ConnNode`]: one connection, from `open_connection` to close.
//!
//! Its stages and their parents, in go's walk order:
//!
//! | stage | parents |
//! |---|---|
//! | [`TRANSIENT`] | transient, system |
//! | [`ALLOWLISTED`] | allowlisted transient, allowlisted system |
//! | [`PEER`] | peer, system |
//! | [`PEER_ALLOWLISTED`] | peer, allowlisted system |
//!
//! `set_peer` moves a connection from one of the first two to one of the last two, taking
//! every new parent first and giving back the old ones only once all of them accepted, so a
//! refused `set_peer` leaves the connection exactly where it was.
//!
//! A refusal is reported as data that names no scope ([`OpenFault`], [`PeerRefused`]):
//! [`super::scope`], above the nodes, names it.

use libp2p_identity::PeerId;

use super::{
    Fixed, Root,
    fault::{Fault, OpenFault},
    peers::{Found, PeerNode, Peers},
    staged::{self, Move, Staged, detached},
};
use crate::{
    account::{
        Conns, Counter, LimitCell, Memory, Own, OwnState, Parent, Path, PathRefusal, Pin, Refused,
        Released, Reserve, Streams, Usage, Walk, counter::stat_of, path,
    },
    limits::BaseLimit,
    sync::{Arc, AtomicU64, OnceSlot, Ordering, Slot},
    types::{Direction, Priority, ScopeStat},
};

/// In transient and system.
pub(crate) const TRANSIENT: u8 = 0;
/// In the allowlisted transient and system scopes (the normal ones refused; the endpoint is
/// allowlisted).
pub(crate) const ALLOWLISTED: u8 = 1;
/// In its peer's scope and system.
pub(crate) const PEER: u8 = 2;
/// In its peer's scope and the allowlisted system scope (the peer is allowlisted too).
pub(crate) const PEER_ALLOWLISTED: u8 = 3;

/// One connection; see the module docs.
#[derive(Debug)]
pub(crate) struct ConnNode {
    own: Own,
    pub(crate) root: Arc<Root>,
    /// Set by `set_peer`, before the stage that names it is published.
    peer: OnceSlot<Arc<PeerNode>>,
    pub(crate) id: u64,
    pub(crate) direction: Direction,
    pub(crate) use_fd: bool,
    /// Used once `set_limit` pins it; until then the connection has the limit every
    /// connection shares.
    limit: Pin,
    next_span: AtomicU64,
}

/// A refused [`set_peer`](ConnNode::set_peer), as the node reports it (naming no scope; see
/// [`super::scope::peer_refusal`]).
#[derive(Debug)]
pub(crate) enum PeerRefused {
    /// The connection is closed.
    Closed,
    /// `by`, one of the new parents, refused `usage` (`refused.at` says where it is in go's
    /// order of the new parents).
    Parent {
        by: NewParent,
        refused: PathRefusal,
        usage: Usage,
    },
}

/// One of the new parents a `set_peer` takes.
#[derive(Debug)]
pub(crate) enum NewParent {
    /// A fixed scope (a move back from the allowlisted scopes takes system and transient).
    Fixed(Fixed),
    /// The peer's scope.
    Peer(Arc<PeerNode>),
}

impl ConnNode {
    /// Opens a connection scope in the normal scopes, or the allowlisted ones: one connection
    /// (and a file descriptor if `use_fd`) on the scope's own limit and on each parent. A
    /// refusal gives the node back, unopened, with what refused (so that it can be named:
    /// [`super::scope::ScopeRef::open_refusal`]).
    #[allow(
        clippy::result_large_err,
        reason = "the refused node goes back to be named (under loom, nodes are large)"
    )]
    pub(crate) fn open(
        root: &Arc<Root>,
        id: u64,
        allowlisted: bool,
        direction: Direction,
        use_fd: bool,
        slot: Slot,
    ) -> Result<Arc<ConnNode>, (ConnNode, OpenFault)> {
        let stage = if allowlisted { ALLOWLISTED } else { TRANSIENT };
        let node = ConnNode {
            own: Own::new(stage),
            root: Arc::clone(root),
            peer: OnceSlot::new(),
            id,
            direction,
            use_fd,
            limit: Pin::new(),
            next_span: AtomicU64::new(1),
        };
        let conns = node.conns();
        if let Err(hit) = conns.check(Conns::ZERO, Conns::read_limit(node.limit_cell())) {
            return Err((node, OpenFault::Own(hit)));
        }
        if let Err(refused) = node.with_path(stage, Reserve(conns, slot)) {
            return Err((node, OpenFault::Path(refused)));
        }
        Ok(Arc::new(node))
    }

    /// The connection this scope counts.
    #[inline]
    pub(crate) fn conns(&self) -> Conns {
        Conns::one(self.direction, self.use_fd)
    }

    /// Everything the connection holds, with `bytes` of memory.
    #[inline]
    pub(crate) fn usage(&self, bytes: u64) -> Usage {
        Usage::Conn {
            bytes,
            conns: self.conns(),
        }
    }

    /// The limit cell in force: the pinned one, or the one every connection shares.
    #[inline]
    pub(crate) fn limit_cell(&self) -> &LimitCell {
        match self.limit.get() {
            Some(pinned) => pinned,
            None => &self.root.conn_limit,
        }
    }

    /// Pins the connection's limit.
    pub(crate) fn pin_limit(&self, limit: BaseLimit) {
        self.limit.pin(limit);
    }

    /// The peer, once `set_peer` has succeeded.
    pub(crate) fn peer(&self) -> Option<&Arc<PeerNode>> {
        self.peer.get()
    }

    /// The stage now, for status reads.
    pub(crate) fn state(&self) -> OwnState {
        self.own.peek()
    }

    pub(crate) fn stat(&self) -> ScopeStat {
        let state = self.own.peek();
        if state.is_closed() {
            return ScopeStat::default();
        }
        stat_of(
            Memory::new(state.bytes(), Priority::ALWAYS),
            Streams::ZERO,
            self.conns(),
        )
    }

    pub(crate) fn next_span_index(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves the connection into `id`'s scope (go's `SetPeer`): from transient, or from the
    /// allowlisted scopes, where `allowlisted_peer` says whether the allowlist also allows
    /// this peer at this endpoint (if not, the connection moves to the normal system scope,
    /// which must accept it, and the transient scope, which must have room for it, as go's
    /// `transferAllowedToStandard` does). Returns the stage it left and where it found the
    /// peer. A refusal says which new parent refused and leaves the connection as it was.
    pub(crate) fn set_peer(
        &self,
        exclusive: bool,
        id: &PeerId,
        allowlisted_peer: bool,
        slot: Slot,
    ) -> Result<(u8, u8, Found), PeerRefused> {
        let Some(moving) = Move::begin(&self.own, exclusive) else {
            return Err(PeerRefused::Closed);
        };
        let from = moving.from.stage();
        let usage = self.usage(moving.from.bytes());
        let root = &self.root;
        let system = Parent::Sharded(root.fixed(Fixed::System));
        let transient = Parent::Sharded(root.fixed(Fixed::Transient));
        let mut found = Peers::find(root, id);
        loop {
            let (peer, _) = &found;
            let peer_scope = Parent::Plain(&peer.scope);
            // The new parents in go's order (a move from the allowlisted scopes also takes
            // transient, which it gives back below: go reserves there and releases at once),
            // and the stage after.
            let (take, to): (&[Parent<'_>], u8) = match (from, allowlisted_peer) {
                (ALLOWLISTED, false) => (&[system, transient, peer_scope], PEER),
                (ALLOWLISTED, true) => (&[peer_scope], PEER_ALLOWLISTED),
                _ => (&[peer_scope], PEER),
            };
            match path::reserve_usage_in_order(take, usage, slot) {
                Ok(()) => {
                    let allowlisted_transient =
                        Parent::Sharded(root.fixed(Fixed::AllowlistedTransient));
                    let give_back: &[Parent<'_>] = match (from, to) {
                        (ALLOWLISTED, PEER) => &[
                            allowlisted_transient,
                            Parent::Sharded(root.fixed(Fixed::AllowlistedSystem)),
                            transient,
                        ],
                        (ALLOWLISTED, _) => &[allowlisted_transient],
                        _ => &[transient],
                    };
                    path::release_usage_in_order(give_back, usage, slot);
                    let (peer, found) = found;
                    // The slot is empty (the handle checked, and only it sets it).
                    let _ = self.peer.set(peer);
                    moving.finish(to);
                    return Ok((from, to, found));
                }
                Err(refused) => {
                    let fixed = match (from, allowlisted_peer, refused.at) {
                        (ALLOWLISTED, false, 0) => Some(Fixed::System),
                        (ALLOWLISTED, false, 1) => Some(Fixed::Transient),
                        _ => None,
                    };
                    let by = match (refused.why, fixed) {
                        (Refused::Stopped, None) => {
                            // The peer was collected since it was found: find it again.
                            Peers::forget(root, id);
                            found = Peers::lookup(root, id);
                            continue;
                        }
                        (Refused::Stopped, Some(which)) => NewParent::Fixed(which),
                        (Refused::Limit(_), fixed) => {
                            Peers::keep_registered(root, id, peer, found.1);
                            match fixed {
                                Some(which) => NewParent::Fixed(which),
                                None => NewParent::Peer(found.0),
                            }
                        }
                    };
                    return Err(PeerRefused::Parent { by, refused, usage });
                }
            }
        }
    }

    /// Reserves `memory` through the scope (see [`staged::reserve_memory`]).
    #[inline(always)]
    pub(crate) fn reserve_memory(&self, memory: Memory, slot: Slot) -> Result<u64, Fault> {
        staged::reserve_memory(self, memory, slot)
    }

    /// Releases up to `bytes` from the scope (see [`staged::release_memory`]).
    #[inline(always)]
    pub(crate) fn release_memory(&self, bytes: u64, slot: Slot) -> Option<Released> {
        staged::release_memory(self, bytes, slot)
    }

    /// Closes the connection (see [`staged::close`]).
    pub(crate) fn close(&self, exclusive: bool, slot: Slot) -> Option<OwnState> {
        staged::close(self, exclusive, |bytes| self.usage(bytes), slot)
    }
}

impl Staged for ConnNode {
    #[inline]
    fn own(&self) -> &Own {
        &self.own
    }

    #[inline]
    fn memory_limit(&self) -> u64 {
        self.limit_cell().memory()
    }

    #[inline(always)]
    fn with_path<W: Walk>(&self, stage: u8, walk: W) -> W::Output {
        let fixed = |which| self.root.fixed(which);
        let peer = || match self.peer.get() {
            Some(peer) => &peer.scope,
            None => detached::plain(),
        };
        let system = fixed(Fixed::System);
        match stage {
            TRANSIENT => walk.on(Path {
                plain: &[],
                sharded: &[fixed(Fixed::Transient), system],
            }),
            ALLOWLISTED => walk.on(Path {
                plain: &[],
                sharded: &[
                    fixed(Fixed::AllowlistedTransient),
                    fixed(Fixed::AllowlistedSystem),
                ],
            }),
            PEER => walk.on(Path {
                plain: &[peer()],
                sharded: &[system],
            }),
            _ => walk.on(Path {
                plain: &[peer()],
                sharded: &[fixed(Fixed::AllowlistedSystem)],
            }),
        }
    }
}

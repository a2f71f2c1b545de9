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

use libp2p_identity::PeerId;

use super::{
    Root,
    peers::{Found, PeerNode, Peers},
    scope::{Asked, Fault, Fixed, Refusal, ScopeRef},
    staged::{self, Move, Staged, detached},
};
use crate::{
    account::{
        Conns, Counter, LimitCell, Memory, Own, OwnState, Parent, Path, Pin, Refused, Released,
        Reserve, Streams, Usage, Walk, counter::stat_of, path,
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

impl ConnNode {
    /// Opens a connection scope in the normal scopes, or the allowlisted ones: one connection
    /// (and a file descriptor if `use_fd`) on the scope's own limit and on each parent.
    #[allow(
        clippy::result_large_err,
        reason = "a refusal is named once, where it is found, on a path that then ends"
    )]
    pub(crate) fn open(
        root: &Arc<Root>,
        id: u64,
        allowlisted: bool,
        direction: Direction,
        use_fd: bool,
        slot: Slot,
    ) -> Result<Arc<ConnNode>, Refusal> {
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
        conns
            .check(Conns::ZERO, Conns::read_limit(node.limit_cell()))
            .map_err(|hit| Refusal::limit(node.scope(), true, hit, Asked::Conns(conns)))?;
        node.with_path(stage, Reserve(conns, slot))
            .map_err(|refused| {
                let parent = node.scope_at(stage, refused.at);
                match refused.why {
                    Refused::Limit(hit) => {
                        Refusal::limit(parent, false, hit, Asked::Conns(conns)).at(refused.at)
                    }
                    Refused::Stopped => Refusal::closed(Some(parent)),
                }
            })?;
        Ok(Arc::new(node))
    }

    /// The connection this scope counts.
    #[inline]
    fn conns(&self) -> Conns {
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
    /// peer. A refusal names the refusing scope and leaves the connection as it was.
    #[allow(
        clippy::result_large_err,
        reason = "a refusal is named once, where it is found, on a path that then ends"
    )]
    pub(crate) fn set_peer(
        &self,
        exclusive: bool,
        id: &PeerId,
        allowlisted_peer: bool,
        slot: Slot,
    ) -> Result<(u8, u8, Found), Refusal> {
        let moving = Move::begin(&self.own, exclusive)?;
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
                    let scope = match (from, allowlisted_peer, refused.at) {
                        (ALLOWLISTED, false, 0) => ScopeRef::Fixed(root, Fixed::System),
                        (ALLOWLISTED, false, 1) => ScopeRef::Fixed(root, Fixed::Transient),
                        _ => ScopeRef::Peer(peer),
                    };
                    match refused.why {
                        Refused::Stopped if matches!(scope, ScopeRef::Peer(_)) => {
                            // The peer was collected since it was found: find it again.
                            Peers::forget(root, id);
                            found = Peers::lookup(root, id);
                        }
                        Refused::Stopped => return Err(Refusal::closed(Some(scope))),
                        Refused::Limit(hit) => {
                            Peers::keep_registered(root, id, peer, found.1);
                            return Err(Refusal::limit(scope, false, hit, Asked::Usage(usage))
                                .at(refused.at));
                        }
                    }
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

    fn scope(&self) -> ScopeRef<'_> {
        ScopeRef::Conn(self)
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

    fn scope_at(&self, stage: u8, index: usize) -> ScopeRef<'_> {
        let fixed = |which| ScopeRef::Fixed(&self.root, which);
        match (stage, index, self.peer.get()) {
            (TRANSIENT, 0, _) => fixed(Fixed::Transient),
            (TRANSIENT, _, _) => fixed(Fixed::System),
            (ALLOWLISTED, 0, _) => fixed(Fixed::AllowlistedTransient),
            (ALLOWLISTED, _, _) => fixed(Fixed::AllowlistedSystem),
            (_, 0, Some(peer)) => ScopeRef::Peer(peer),
            (PEER, _, _) => fixed(Fixed::System),
            _ => fixed(Fixed::AllowlistedSystem),
        }
    }
}

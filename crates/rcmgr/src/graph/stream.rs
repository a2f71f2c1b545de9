//! [`StreamNode`]: one stream, from `open_stream` to close.
//!
//! Its stages and their parents, in go's walk order:
//!
//! | stage | parents |
//! |---|---|
//! | [`TRANSIENT`] | peer, transient, system |
//! | [`PROTOCOL`] | peer, protocol-peer, protocol, system |
//! | [`SERVICE`] | peer, protocol-peer, service-peer, protocol, service, system |
//!
//! `set_protocol` moves the stream from transient to its protocol's scope and its scope for
//! the stream's peer; `set_service` adds its service's two scopes. Both take the new parents
//! first (and check, at the first reservation, that a protocol or member slot found through a
//! cache or a scan is still the one looked up: see [`super::groups`]) and give back nothing
//! before all of them accepted.
//!
//! A refusal is reported as data that names no scope ([`OpenFault`], [`AttachRefused`]):
//! [`super::scope`], above the nodes, names it.

use libp2p_identity::PeerId;

use super::{
    Fixed, Root,
    fault::{Fault, OpenFault},
    groups::GroupKind,
    peers::{Found, PeerNode, Peers, member_key},
    staged::{self, Move, Staged, detached},
};
use crate::{
    account::{
        Conns, Counter, LimitCell, Memory, Own, OwnState, Parent, Path, PathRefusal, Pin, Plain,
        Refused, Released, Reserve, Sharded, Streams, Usage, Walk, counter::stat_of,
    },
    limits::BaseLimit,
    sync::{Arc, AtomicU64, Ordering, Slot},
    types::{Direction, Priority, ScopeStat},
};

/// In its peer's scope, transient and system.
pub(crate) const TRANSIENT: u8 = 0;
/// In its peer's scope, its protocol's two scopes and system.
pub(crate) const PROTOCOL: u8 = 1;
/// In its peer's scope, its protocol's and its service's two scopes each, and system.
pub(crate) const SERVICE: u8 = 2;

/// One stream; see the module docs.
#[derive(Debug)]
pub(crate) struct StreamNode {
    own: Own,
    pub(crate) peer: Arc<PeerNode>,
    /// The protocol's slot and the member's slot within the peer ([`Attached`]), written
    /// before the stage that names them is published.
    protocol: AtomicU64,
    service: AtomicU64,
    pub(crate) id: u64,
    pub(crate) direction: Direction,
    /// Used once `set_limit` pins it; until then the stream has the limit every stream
    /// shares.
    limit: Pin,
    next_span: AtomicU64,
}

/// Where a stream is attached in a protocol or service: the group's slot and its member's
/// slot within the stream's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attached {
    pub(crate) group: u32,
    pub(crate) member: u32,
}

impl Attached {
    fn pack(self) -> u64 {
        u64::from(self.group) << 32 | u64::from(self.member)
    }

    fn unpack(word: u64) -> Attached {
        Attached {
            group: (word >> 32) as u32,
            member: word as u32,
        }
    }
}

/// A refused [`attach`](StreamNode::attach), as the node reports it (naming no scope; see
/// [`super::scope::attach_refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttachRefused {
    /// The stream is closed.
    Closed,
    /// The group (`refused.at` 0: refused, or gone since it was found) or its member (1)
    /// refused `usage`; `at` says where they are (a gone group's member slot is meaningless).
    Parent {
        at: Attached,
        refused: PathRefusal,
        usage: Usage,
    },
}

/// What an attachment did, for the trace and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub(crate) at: Attached,
    pub(crate) created_group: bool,
    pub(crate) created_member: bool,
}

impl StreamNode {
    /// Opens a stream scope for `peer`: one stream on the scope's own limit and on its peer,
    /// transient and system. The peer is found through this thread's cache first; if the
    /// cached node turns out collected, through the registry. Returns where the peer was
    /// found (a new one is in the trace). A refusal gives the node back, unopened, with what
    /// refused (so that it can be named: [`super::scope::ScopeRef::open_refusal`]).
    #[allow(
        clippy::result_large_err,
        reason = "the refused node goes back to be named (under loom, nodes are large)"
    )]
    pub(crate) fn open(
        root: &Arc<Root>,
        peer: &PeerId,
        id: u64,
        direction: Direction,
        slot: Slot,
    ) -> Result<(Arc<StreamNode>, Found), (StreamNode, OpenFault)> {
        let streams = Streams::one(direction);
        let own_limit = Streams::read_limit(&root.stream_limit);
        let (mut node, mut found) = {
            let (peer, found) = Peers::find(root, peer);
            (StreamNode::new(peer, id, direction), found)
        };
        if let Err(hit) = streams.check(Streams::ZERO, own_limit) {
            Peers::keep_registered(root, peer, &node.peer, found);
            return Err((node, OpenFault::Own(hit)));
        }
        loop {
            let refused = match node.with_path(TRANSIENT, Reserve(streams, slot)) {
                Ok(()) => return Ok((Arc::new(node), found)),
                Err(refused) => refused,
            };
            match refused.why {
                Refused::Stopped if refused.at == 0 => {
                    // The peer was collected since it was found: find it again.
                    Peers::forget(root, peer);
                    let (fresh, how) = Peers::lookup(root, peer);
                    node = StreamNode::new(fresh, id, direction);
                    found = how;
                }
                Refused::Stopped | Refused::Limit(_) => {
                    return Err((node, OpenFault::Path(refused)));
                }
            }
        }
    }

    fn new(peer: Arc<PeerNode>, id: u64, direction: Direction) -> Self {
        StreamNode {
            own: Own::new(TRANSIENT),
            peer,
            protocol: AtomicU64::new(0),
            service: AtomicU64::new(0),
            id,
            direction,
            limit: Pin::new(),
            next_span: AtomicU64::new(1),
        }
    }

    #[inline(always)]
    pub(crate) fn root(&self) -> &Root {
        &self.peer.root
    }

    /// Everything the stream holds, with `bytes` of memory.
    #[inline]
    pub(crate) fn usage(&self, bytes: u64) -> Usage {
        Usage::Stream {
            bytes,
            streams: Streams::one(self.direction),
        }
    }

    /// The limit cell in force: the pinned one, or the one every stream shares.
    #[inline(always)]
    pub(crate) fn limit_cell(&self) -> &LimitCell {
        match self.limit.get() {
            Some(pinned) => pinned,
            None => &self.root().stream_limit,
        }
    }

    /// Pins the stream's limit.
    pub(crate) fn pin_limit(&self, limit: BaseLimit) {
        self.limit.pin(limit);
    }

    /// The stage now, for status reads.
    pub(crate) fn state(&self) -> OwnState {
        self.own.peek()
    }

    /// Where the stream is attached in its protocol (or service), once it is.
    pub(crate) fn attached(&self, kind: GroupKind) -> Option<Attached> {
        let (needed, word) = match kind {
            GroupKind::Protocol => (PROTOCOL, &self.protocol),
            GroupKind::Service => (SERVICE, &self.service),
        };
        // Ordering: Relaxed — the stage read with Acquire first orders it after the store.
        (self.own.load().stage() >= needed).then(|| Attached::unpack(word.load(Ordering::Relaxed)))
    }

    pub(crate) fn stat(&self) -> ScopeStat {
        let state = self.own.peek();
        if state.is_closed() {
            return ScopeStat::default();
        }
        stat_of(
            Memory::new(state.bytes(), Priority::ALWAYS),
            Streams::one(self.direction),
            Conns::ZERO,
        )
    }

    pub(crate) fn next_span_index(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches the stream to the protocol (or service) `name` (go's `SetProtocol`,
    /// `SetService`): the usage it holds is reserved on the group's scope and then on the
    /// group's scope for the stream's peer (each made if needed); a protocol then leaves
    /// transient. `exclusive` says the handle is the scope's only holder. The caller has
    /// checked the stage (no protocol yet; for a service, a protocol and no service yet).
    /// A refusal says which scope refused (its `at`: 0 the group, 1 the member) and leaves
    /// the stream as it was.
    #[inline(always)]
    pub(crate) fn attach(
        &self,
        exclusive: bool,
        kind: GroupKind,
        name: &str,
        slot: Slot,
    ) -> Result<Attachment, AttachRefused> {
        let Some(moving) = Move::begin(&self.own, exclusive) else {
            return Err(AttachRefused::Closed);
        };
        let usage = self.usage(moving.from.bytes());
        let root = self.root();
        let groups = root.groups(kind);
        let (mut created_group, mut created_member) = (false, false);
        let backoff = crate::sync::Backoff::new();
        loop {
            let (group_ref, created) =
                groups.find_or_insert(name, |name| root.group_limit(kind, name));
            created_group |= created;
            // A group or member gone since it was found is a refusal by the group.
            let gone = |member| AttachRefused::Parent {
                at: Attached {
                    group: group_ref.slot,
                    member,
                },
                refused: PathRefusal {
                    at: 0,
                    why: Refused::Stopped,
                },
                usage,
            };
            let Some(group) = groups.get(group_ref.slot) else {
                return Err(gone(0));
            };
            // A lookup is a use, refused or not: collection starts counting idle passes again.
            group.touch();
            let key = member_key(kind, group_ref);
            let (member_slot, created) = self
                .peer
                .members
                .find_or_insert(key, || root.member_limit(kind, name));
            created_member |= created;
            let Some(member) = self.peer.members.get(member_slot) else {
                return Err(gone(member_slot));
            };
            // go's order: the group, then its member (written out: two steps, no list).
            let (to_group, to_member) =
                (Parent::Sharded(&group.scope), Parent::Plain(&member.scope));
            let taken = match to_group.take_usage(usage, slot) {
                Err(why) => Err(PathRefusal { at: 0, why }),
                Ok(()) => to_member.take_usage(usage, slot).map_err(|why| {
                    to_group.give_usage(usage, slot);
                    PathRefusal { at: 1, why }
                }),
            };
            match taken {
                Ok(()) if group.is(group_ref.incarnation) && member.is(key) => {
                    let at = Attached {
                        group: group_ref.slot,
                        member: member_slot,
                    };
                    let to = match kind {
                        GroupKind::Protocol => {
                            Parent::Sharded(root.fixed(Fixed::Transient)).give_usage(usage, slot);
                            // Ordering: Relaxed — published by the stage's Release store.
                            self.protocol.store(at.pack(), Ordering::Relaxed);
                            PROTOCOL
                        }
                        GroupKind::Service => {
                            // Ordering: Relaxed — as above.
                            self.service.store(at.pack(), Ordering::Relaxed);
                            SERVICE
                        }
                    };
                    moving.finish(to);
                    return Ok(Attachment {
                        at,
                        created_group,
                        created_member,
                    });
                }
                Ok(()) => {
                    // A slot found through a cache or a scan was collected and reused in
                    // between: give it back and look again.
                    to_member.give_usage(usage, slot);
                    to_group.give_usage(usage, slot);
                    groups.forget(name);
                    backoff.snooze();
                }
                Err(refused) => match refused.why {
                    Refused::Stopped => {
                        // Collected since it was found: look again.
                        groups.forget(name);
                        backoff.snooze();
                    }
                    Refused::Limit(_) => {
                        let at = Attached {
                            group: group_ref.slot,
                            member: member_slot,
                        };
                        return Err(AttachRefused::Parent { at, refused, usage });
                    }
                },
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

    /// Closes the stream (see [`staged::close`]).
    #[inline(always)]
    pub(crate) fn close(&self, exclusive: bool, slot: Slot) -> Option<OwnState> {
        staged::close(self, exclusive, |bytes| self.usage(bytes), slot)
    }

    /// Where the stream is attached in its protocol (or service), for names (the cold path):
    /// the caller read a stage that names the attachment.
    #[inline]
    pub(crate) fn attachment(&self, kind: GroupKind) -> Attached {
        match kind {
            GroupKind::Protocol => self.slots(&self.protocol),
            GroupKind::Service => self.slots(&self.service),
        }
    }

    /// The protocol (or service) and member slots of a stage that names them.
    #[inline(always)]
    fn slots(&self, word: &AtomicU64) -> Attached {
        // Ordering: Relaxed — the caller read the stage with Acquire, which orders this load
        // after the store that the stage's Release published.
        Attached::unpack(word.load(Ordering::Relaxed))
    }

    /// The group and member scopes of the attachment to `kind`, which the stage names.
    #[inline(always)]
    fn attached_parents(&self, kind: GroupKind) -> (&Sharded, &Plain) {
        let at = match kind {
            GroupKind::Protocol => self.slots(&self.protocol),
            GroupKind::Service => self.slots(&self.service),
        };
        let group = self.root().groups(kind).get(at.group);
        let member = self.peer.members.get(at.member);
        match (group, member) {
            (Some(group), Some(member)) => (&group.scope, &member.scope),
            // An attached stream's group and member are never collected (it holds a stream
            // there); see `detached` for why this is not a panic.
            _ => (detached::sharded(), detached::plain()),
        }
    }
}

impl Staged for StreamNode {
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
        let peer = &self.peer.scope;
        let system = self.root().fixed(Fixed::System);
        match stage {
            TRANSIENT => walk.on(Path {
                plain: &[peer],
                sharded: &[self.root().fixed(Fixed::Transient), system],
            }),
            PROTOCOL => {
                let (protocol, protocol_peer) = self.attached_parents(GroupKind::Protocol);
                walk.on(Path {
                    plain: &[peer, protocol_peer],
                    sharded: &[protocol, system],
                })
            }
            _ => {
                let (protocol, protocol_peer) = self.attached_parents(GroupKind::Protocol);
                let (service, service_peer) = self.attached_parents(GroupKind::Service);
                walk.on(Path {
                    plain: &[peer, protocol_peer, service_peer],
                    sharded: &[protocol, service, system],
                })
            }
        }
    }
}

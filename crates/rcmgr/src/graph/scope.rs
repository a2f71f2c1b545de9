//! The one identity of a scope in the graph ([`ScopeRef`]), and what a refusal says
//! ([`Fault`] on the hot path, [`Refusal`] once it is named).
//!
//! A [`ScopeRef`] borrows any scope: it names it (go's [`ScopeName`]), reads its usage and
//! its limit, and finds the counter words a walk takes it as ([`ScopeRef::parent`]). It is
//! the only map from "which scope" to "what it is"; nothing else in the crate matches on a
//! kind of scope to name it or to find its limit.

use super::{
    Root, conn::ConnNode, groups::GroupKind, peers::PeerNode, span::SpanNode, stream::StreamNode,
};
use crate::{
    account::{Conns, Hit, Memory, Parent, PathRefusal, Streams, Usage},
    limits::BaseLimit,
    types::{Direction, ScopeName, ScopeStat},
};

/// One of the root's four fixed scopes (its index in the root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fixed {
    System = 0,
    Transient = 1,
    AllowlistedSystem = 2,
    AllowlistedTransient = 3,
}

impl Fixed {
    pub(crate) const ALL: [Fixed; 4] = [
        Fixed::System,
        Fixed::Transient,
        Fixed::AllowlistedSystem,
        Fixed::AllowlistedTransient,
    ];
}

/// Any scope of the graph, borrowed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScopeRef<'a> {
    Fixed(&'a Root, Fixed),
    /// A protocol or service scope, by its slot (which the borrower keeps in use).
    Group(&'a Root, GroupKind, u32),
    /// A peer's scope within a protocol or service: the peer, the group's slot, the member's
    /// slot within the peer.
    Member(&'a PeerNode, GroupKind, u32, u32),
    Peer(&'a PeerNode),
    Conn(&'a ConnNode),
    Stream(&'a StreamNode),
    Span(&'a SpanNode),
}

impl<'a> ScopeRef<'a> {
    /// The scope's name, in go's scheme.
    pub(crate) fn name(self) -> ScopeName {
        match self {
            ScopeRef::Fixed(_, Fixed::System) => ScopeName::System,
            ScopeRef::Fixed(_, Fixed::Transient) => ScopeName::Transient,
            ScopeRef::Fixed(_, Fixed::AllowlistedSystem) => ScopeName::AllowlistedSystem,
            ScopeRef::Fixed(_, Fixed::AllowlistedTransient) => ScopeName::AllowlistedTransient,
            ScopeRef::Group(root, kind, slot) => {
                let name = root.groups(kind).name_of(slot);
                match kind {
                    GroupKind::Protocol => ScopeName::Protocol(name),
                    GroupKind::Service => ScopeName::Service(name),
                }
            }
            ScopeRef::Member(peer, kind, group, _) => {
                let name = peer.root.groups(kind).name_of(group);
                match kind {
                    GroupKind::Protocol => ScopeName::ProtocolPeer {
                        protocol: name,
                        peer: peer.id,
                    },
                    GroupKind::Service => ScopeName::ServicePeer {
                        service: name,
                        peer: peer.id,
                    },
                }
            }
            ScopeRef::Peer(peer) => ScopeName::Peer(peer.id),
            ScopeRef::Conn(conn) => ScopeName::Conn(conn.id),
            ScopeRef::Stream(stream) => ScopeName::Stream(stream.id),
            ScopeRef::Span(span) => span.name(),
        }
    }

    /// The counter words a walk takes this scope as, for the scopes others report to.
    pub(crate) fn parent(self) -> Option<Parent<'a>> {
        Some(match self {
            ScopeRef::Fixed(root, which) => Parent::Sharded(root.fixed(which)),
            ScopeRef::Group(root, kind, slot) => {
                Parent::Sharded(&root.groups(kind).get(slot)?.scope)
            }
            ScopeRef::Member(peer, _, _, member) => Parent::Plain(&peer.members.get(member)?.scope),
            ScopeRef::Peer(peer) => Parent::Plain(&peer.scope),
            ScopeRef::Conn(_) | ScopeRef::Stream(_) | ScopeRef::Span(_) => return None,
        })
    }

    /// What the scope holds now.
    pub(crate) fn stat(self) -> ScopeStat {
        match self {
            ScopeRef::Conn(conn) => conn.stat(),
            ScopeRef::Stream(stream) => stream.stat(),
            ScopeRef::Span(span) => span.stat(),
            other => other.parent().map_or_else(ScopeStat::default, Parent::stat),
        }
    }

    /// The limit in force for the scope now.
    pub(crate) fn limit(self) -> BaseLimit {
        match self {
            ScopeRef::Conn(conn) => conn.limit_cell().get(),
            ScopeRef::Stream(stream) => stream.limit_cell().get(),
            ScopeRef::Span(span) => span.limit(),
            other => other
                .parent()
                .map_or_else(BaseLimit::block_all, |parent| parent.limit().get()),
        }
    }
}

/// What a refused step asked of the refusing scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    Memory(Memory),
    Streams(Streams),
    Conns(Conns),
    /// A transfer's whole usage (go's `ReserveForChild`).
    Usage(Usage),
}

impl Asked {
    /// The direction of the streams or connections asked for, when they go one way.
    pub(crate) fn direction(self) -> Option<Direction> {
        let (inbound, outbound) = match self {
            Asked::Memory(_) => (0, 0),
            Asked::Streams(streams) => (streams.inbound, streams.outbound),
            Asked::Conns(conns) => (conns.inbound, conns.outbound),
            Asked::Usage(usage) => {
                let (streams, conns) = (usage.streams(), usage.conns());
                (
                    streams.inbound + conns.inbound,
                    streams.outbound + conns.outbound,
                )
            }
        };
        match (inbound, outbound) {
            (0, 0) => None,
            (_, 0) => Some(Direction::Inbound),
            (0, _) => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// Which scope refused, relative to the scope the caller asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefusedBy {
    /// The scope the caller asked.
    Itself,
    /// Another scope: a constraining edge, a span's owner, a transfer's new parent.
    Other(ScopeName),
}

/// Why a scope refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A limit refused `asked`.
    Limit(Hit, Asked),
    /// The scope, or one the reservation had to pass through, is closed.
    Closed,
}

/// A refusal of a memory reservation through a connection or stream, or on a view's scope,
/// as the hot path returns it: where and why, small and `Copy`, naming no scope. The node
/// that refused turns it into a [`Refusal`] on the cold path
/// ([`staged::refusal`](super::staged::refusal), the views' and spans' own), so that a
/// successful reservation never carries names or usage snapshots through its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The scope is closed.
    Closed,
    /// The scope's own limit refused.
    Own(Hit),
    /// A parent on the path at `stage` refused (`refused.at` says which, in walk order);
    /// `limit` is the scope's own memory limit the walk used (go checks it first, so if it
    /// refuses too, the scope itself is named).
    Path {
        stage: u8,
        refused: PathRefusal,
        limit: u64,
    },
}

/// A refusal, as the graph reports it; the handles turn it into the public error (and the
/// trace and metrics report it) on the cold path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) by: RefusedBy,
    pub(crate) why: Why,
    /// What the refusing scope held when it refused (for the trace and the debug log).
    pub(crate) held: ScopeStat,
    /// Where on the path the refusing parent is: how many parents before it had taken the
    /// amount and gave it back (for the trace, which records go's events, and to tell which
    /// of a transfer's new parents refused).
    pub(crate) at: usize,
}

impl Refusal {
    /// A refusal by `by`'s limit.
    #[cold]
    pub(crate) fn limit(by: ScopeRef<'_>, is_asked: bool, hit: Hit, asked: Asked) -> Refusal {
        Refusal {
            by: if is_asked {
                RefusedBy::Itself
            } else {
                RefusedBy::Other(by.name())
            },
            why: Why::Limit(hit, asked),
            held: by.stat(),
            at: 0,
        }
    }

    /// A refusal because `by` (the asked scope itself, when `None`) is closed.
    #[cold]
    pub(crate) fn closed(by: Option<ScopeRef<'_>>) -> Refusal {
        Refusal {
            by: by.map_or(RefusedBy::Itself, |by| RefusedBy::Other(by.name())),
            why: Why::Closed,
            held: ScopeStat::default(),
            at: 0,
        }
    }

    /// The same refusal, by the parent at `at` on the path.
    pub(crate) fn at(mut self, at: usize) -> Refusal {
        self.at = at;
        self
    }
}

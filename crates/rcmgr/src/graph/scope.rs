//! The one identity of a scope in the graph ([`ScopeRef`]), and the naming of refusals: the
//! nodes report a refusal as plain data that names no scope ([`super::fault`]), and the
//! functions here turn it into a [`Refusal`] that does, on the cold path.
//!
//! A [`ScopeRef`] borrows any scope: it names it (go's [`ScopeName`]), reads its usage and
//! its limit, and finds the counter words a walk takes it as ([`ScopeRef::parent`]). It is
//! the only map from "which scope" to "what it is"; nothing else in the crate matches on a
//! kind of scope to name it or to find its limit. It sits above every node of the graph
//! (it borrows each of them), and no node uses it.

use super::{
    Fixed, Root,
    conn::{self, ConnNode, NewParent, PeerRefused},
    fault::{Asked, Fault, OpenFault, Refusal, RefusedBy, Why},
    groups::GroupKind,
    peers::PeerNode,
    span::{AnchorFault, AnchorRef, SpanFault, SpanNode},
    staged::Staged,
    stream::{self, AttachRefused, Attached, StreamNode},
};
use crate::{
    account::{Hit, Len, Memory, Own, OwnRefusal, Parent, PathRefusal, Refused},
    limits::BaseLimit,
    types::{ScopeName, ScopeStat, SpanName},
};

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

impl<'a> From<AnchorRef<'a>> for ScopeRef<'a> {
    /// The scope an anchor references, borrowed.
    fn from(anchor: AnchorRef<'a>) -> ScopeRef<'a> {
        match anchor {
            AnchorRef::Fixed(root, which) => ScopeRef::Fixed(root, which),
            AnchorRef::Group(view) => ScopeRef::Group(view.root(), view.kind(), view.slot()),
            AnchorRef::Peer(view) => ScopeRef::Peer(view.node()),
            AnchorRef::Conn(conn) => ScopeRef::Conn(conn),
            AnchorRef::Stream(stream) => ScopeRef::Stream(stream),
            AnchorRef::Span(span) => ScopeRef::Span(span),
        }
    }
}

impl<'a> ScopeRef<'a> {
    /// The scope's name, in go's scheme (a span's: its owner's, then every level's number,
    /// from the outside in).
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
            ScopeRef::Span(span) => span_name(span),
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

    /// The limit in force for the scope now (a span's: its own if pinned, else its owner's).
    pub(crate) fn limit(self) -> BaseLimit {
        match self {
            ScopeRef::Conn(conn) => conn.limit_cell().get(),
            ScopeRef::Stream(stream) => stream.limit_cell().get(),
            ScopeRef::Span(span) => span
                .pinned_limit()
                .unwrap_or_else(|| ScopeRef::from(span.owner()).limit()),
            other => other
                .parent()
                .map_or_else(BaseLimit::block_all, |parent| parent.limit().get()),
        }
    }

    /// The parent at `index` of a connection's or stream's path at `stage` (the scope itself
    /// for any other scope, which has no stages).
    pub(crate) fn path_at(self, stage: u8, index: usize) -> ScopeRef<'a> {
        match self {
            ScopeRef::Conn(conn) => conn_path_at(conn, stage, index),
            ScopeRef::Stream(stream) => stream_path_at(stream, stage, index),
            other => other,
        }
    }

    /// The stage a connection or stream is in now (0 for any other scope, which has none).
    fn stage_now(self) -> u8 {
        match self {
            ScopeRef::Conn(conn) => conn.state().stage(),
            ScopeRef::Stream(stream) => stream.state().stage(),
            _ => 0,
        }
    }

    /// The parents of a connection's or stream's path at its stage now, in go's walk order
    /// (none for any other scope).
    fn path_now(self) -> Vec<ScopeRef<'a>> {
        let stage = self.stage_now();
        let len = match self {
            ScopeRef::Conn(conn) => conn.with_path(stage, Len),
            ScopeRef::Stream(stream) => stream.with_path(stage, Len),
            _ => 0,
        };
        (0..len).map(|index| self.path_at(stage, index)).collect()
    }

    /// A refusal by this scope's limit; `is_asked` says it is the scope the caller asked.
    #[cold]
    pub(crate) fn limit_refusal(self, is_asked: bool, hit: Hit, asked: Asked) -> Refusal {
        Refusal {
            by: if is_asked {
                RefusedBy::Itself
            } else {
                RefusedBy::Other(self.name())
            },
            why: Why::Limit(hit, asked),
            held: self.stat(),
            at: 0,
        }
    }

    /// A refusal because this scope, not the one the caller asked, is closed (the asked one's
    /// own is [`Refusal::closed`]).
    #[cold]
    pub(crate) fn closed_refusal(self) -> Refusal {
        Refusal {
            by: RefusedBy::Other(self.name()),
            why: Why::Closed,
            held: ScopeStat::default(),
            at: 0,
        }
    }

    /// The refusal of `asked` by this scope, a parent on the path at `refused.at`.
    #[cold]
    pub(crate) fn parent_refusal(self, refused: PathRefusal, asked: Asked) -> Refusal {
        match refused.why {
            Refused::Limit(hit) => self.limit_refusal(false, hit, asked).at(refused.at),
            Refused::Stopped => self.closed_refusal(),
        }
    }

    /// The refusal of the open of this connection or stream (of `asked`), reported as
    /// `fault`: by its own limit, or by a parent of the path of the stage it opened in.
    #[cold]
    pub(crate) fn open_refusal(self, fault: OpenFault, asked: Asked) -> Refusal {
        match fault {
            OpenFault::Own(hit) => self.limit_refusal(true, hit, asked),
            OpenFault::Path(refused) => self
                .path_at(self.stage_now(), refused.at)
                .parent_refusal(refused, asked),
        }
    }
}

/// The parent at `index` of `conn`'s path at `stage`, in go's walk order (see
/// [`super::conn`]).
#[inline]
fn conn_path_at(conn: &ConnNode, stage: u8, index: usize) -> ScopeRef<'_> {
    let fixed = |which| ScopeRef::Fixed(&conn.root, which);
    match (stage, index, conn.peer()) {
        (conn::TRANSIENT, 0, _) => fixed(Fixed::Transient),
        (conn::TRANSIENT, _, _) => fixed(Fixed::System),
        (conn::ALLOWLISTED, 0, _) => fixed(Fixed::AllowlistedTransient),
        (conn::ALLOWLISTED, _, _) => fixed(Fixed::AllowlistedSystem),
        (_, 0, Some(peer)) => ScopeRef::Peer(peer),
        (conn::PEER, _, _) => fixed(Fixed::System),
        _ => fixed(Fixed::AllowlistedSystem),
    }
}

/// The parent at `index` of `stream`'s path at `stage`, in go's walk order (see
/// [`super::stream`]).
#[inline]
fn stream_path_at(stream: &StreamNode, stage: u8, index: usize) -> ScopeRef<'_> {
    let root = stream.root();
    let member = |kind, at: Attached| ScopeRef::Member(&stream.peer, kind, at.group, at.member);
    let group = |kind, at: Attached| ScopeRef::Group(root, kind, at.group);
    let protocol = || stream.attachment(GroupKind::Protocol);
    let service = || stream.attachment(GroupKind::Service);
    match (stage, index) {
        (_, 0) => ScopeRef::Peer(&stream.peer),
        (stream::TRANSIENT, 1) => ScopeRef::Fixed(root, Fixed::Transient),
        (stream::PROTOCOL, 1) | (stream::SERVICE, 1) => member(GroupKind::Protocol, protocol()),
        (stream::PROTOCOL, 2) | (stream::SERVICE, 3) => group(GroupKind::Protocol, protocol()),
        (stream::SERVICE, 2) => member(GroupKind::Service, service()),
        (stream::SERVICE, 4) => group(GroupKind::Service, service()),
        _ => ScopeRef::Fixed(root, Fixed::System),
    }
}

/// A span's name: its owner's, then every level's number, from the outside in (a loop over
/// the levels, never a recursion). Out of line: the names of the other scopes are what the
/// trace builds on every operation.
#[inline(never)]
fn span_name(span: &SpanNode) -> ScopeName {
    let mut indices = Vec::new();
    let mut level = Some(span);
    while let Some(span) = level {
        indices.push(span.index());
        level = span.parent();
    }
    let mut name = ScopeRef::from(span.owner()).name();
    for index in indices.into_iter().rev() {
        name = ScopeName::Span(SpanName::new(name, index));
    }
    name
}

/// The scope at `index` of a view's path (the scope itself at 0), for names.
fn view_path_at(view: AnchorRef<'_>, index: usize) -> ScopeRef<'_> {
    match (view, index) {
        (AnchorRef::Fixed(root, Fixed::AllowlistedTransient), 1) => {
            ScopeRef::Fixed(root, Fixed::AllowlistedSystem)
        }
        (_, 0) => ScopeRef::from(view),
        _ => ScopeRef::Fixed(view.root(), Fixed::System),
    }
}

/// The refusal that `fault`, reported by a reservation of `memory` on `at`, stands for.
#[cold]
pub(crate) fn anchor_refusal(at: AnchorRef<'_>, fault: AnchorFault, memory: Memory) -> Refusal {
    match (at, fault) {
        (AnchorRef::Span(span), AnchorFault::Span(fault)) => span_refusal(span, fault, memory),
        (at, AnchorFault::Scope(fault)) => memory_refusal(at, fault, memory),
        (_, AnchorFault::Span(_)) => {
            debug_assert!(false, "only a span reports a span's fault");
            Refusal::closed()
        }
    }
}

/// The refusal that `fault`, reported by a reservation of `memory` on `at` (a connection, a
/// stream or a view's scope), stands for.
#[cold]
pub(crate) fn memory_refusal(at: AnchorRef<'_>, fault: Fault, memory: Memory) -> Refusal {
    match at {
        AnchorRef::Conn(conn) => staged_refusal(ScopeRef::Conn(conn), conn.own(), fault, memory),
        AnchorRef::Stream(stream) => {
            staged_refusal(ScopeRef::Stream(stream), stream.own(), fault, memory)
        }
        view => view_refusal(view, fault, memory),
    }
}

/// The refusal that `fault`, reported by a reservation of `memory` through `node` (a
/// connection or stream whose own word is `own`), stands for.
fn staged_refusal(node: ScopeRef<'_>, own: &Own, fault: Fault, memory: Memory) -> Refusal {
    let asked = Asked::Memory(memory);
    match fault {
        Fault::Closed => Refusal::closed(),
        Fault::Own(hit) => node.limit_refusal(true, hit, asked),
        Fault::Path {
            stage,
            refused,
            limit,
        } => {
            // go checks the scope's own limit first, so if that refuses too, it is the one
            // named.
            if let Some(hit) = own.refuses(memory, limit) {
                return node.limit_refusal(true, hit, asked);
            }
            let parent = node.path_at(stage, refused.at);
            match refused.why {
                Refused::Limit(hit) => parent.limit_refusal(false, hit, asked).at(refused.at),
                Refused::Stopped => {
                    debug_assert!(false, "a parent holding a scope's usage is never stopped");
                    parent.closed_refusal()
                }
            }
        }
    }
}

/// The refusal of a reservation of `memory` on a view's scope, reported as `fault`.
fn view_refusal(view: AnchorRef<'_>, fault: Fault, memory: Memory) -> Refusal {
    match fault {
        Fault::Path { refused, .. } => match refused.why {
            Refused::Limit(hit) => {
                // `at` counts the parents that took the bytes before the refusal; the viewed
                // scope itself is the path's first.
                let at = refused.at.saturating_sub(1);
                view_path_at(view, refused.at)
                    .limit_refusal(refused.at == 0, hit, Asked::Memory(memory))
                    .at(at)
            }
            Refused::Stopped => {
                debug_assert!(false, "a viewed scope is never stopped");
                Refusal::closed()
            }
        },
        Fault::Closed => Refusal::closed(),
        Fault::Own(_) => {
            debug_assert!(false, "a view's walk has no own word");
            Refusal::closed()
        }
    }
}

/// The refusal that `fault`, reported by a reservation of `memory` through `span`, stands
/// for. go checks each level's own state and limit before its owner's: a level that refuses
/// now comes first, from the span outwards; else the owner's refusal, named after the owner
/// where it named "itself", or the level's own.
#[cold]
pub(crate) fn span_refusal(span: &SpanNode, fault: SpanFault, memory: Memory) -> Refusal {
    let asked = Asked::Memory(memory);
    if let Some((index, level, refused)) = span.first_own_refusal(memory) {
        let scope = ScopeRef::Span(level);
        return match refused {
            OwnRefusal::Limit(hit) => scope.limit_refusal(index == 0, hit, asked),
            OwnRefusal::Closed | OwnRefusal::Moved if index > 0 => scope.closed_refusal(),
            OwnRefusal::Closed | OwnRefusal::Moved => Refusal::closed(),
        };
    }
    match fault {
        SpanFault::Above(fault) => {
            let owner = span.owner();
            let refusal = memory_refusal(owner, fault, memory);
            match refusal.by {
                RefusedBy::Itself => Refusal {
                    by: RefusedBy::Other(ScopeRef::from(owner).name()),
                    ..refusal
                },
                RefusedBy::Other(_) => refusal,
            }
        }
        SpanFault::Level(index, refused) => {
            let level = span.level(index);
            match refused {
                OwnRefusal::Limit(hit) if index > 0 => {
                    ScopeRef::Span(level).limit_refusal(false, hit, asked)
                }
                OwnRefusal::Limit(hit) => ScopeRef::Span(span).limit_refusal(true, hit, asked),
                OwnRefusal::Closed | OwnRefusal::Moved if index > 0 => {
                    ScopeRef::Span(level).closed_refusal()
                }
                OwnRefusal::Closed | OwnRefusal::Moved => Refusal::closed(),
            }
        }
    }
}

/// The refusal a refused `set_peer` of a connection in `root` stands for.
#[cold]
pub(crate) fn peer_refusal(root: &Root, refused: PeerRefused) -> Refusal {
    match refused {
        PeerRefused::Closed => Refusal::closed(),
        PeerRefused::Parent { by, refused, usage } => {
            let asked = Asked::Usage(usage);
            match by {
                NewParent::Fixed(which) => {
                    ScopeRef::Fixed(root, which).parent_refusal(refused, asked)
                }
                NewParent::Peer(peer) => ScopeRef::Peer(&peer).parent_refusal(refused, asked),
            }
        }
    }
}

/// The refusal a refused attachment of `stream` to a protocol or service (`kind`) stands
/// for: by the group (at 0) or its member.
#[cold]
pub(crate) fn attach_refusal(
    stream: &StreamNode,
    kind: GroupKind,
    refused: AttachRefused,
) -> Refusal {
    match refused {
        AttachRefused::Closed => Refusal::closed(),
        AttachRefused::Parent { at, refused, usage } => {
            let by = match refused.at {
                0 => ScopeRef::Group(stream.root(), kind, at.group),
                _ => ScopeRef::Member(&stream.peer, kind, at.group, at.member),
            };
            by.parent_refusal(refused, Asked::Usage(usage))
        }
    }
}

/// The scopes a memory reservation through `at` changes, for the trace (the cold path): the
/// scopes that hold the bytes as their own, from the anchor outwards (spans, then the
/// connection, stream or view scope at the root), and that scope's parents in go's walk
/// order. A reservation's events come parents first, then the owning scopes from the outside
/// in; a release's, the owning scopes from the inside out, then the parents.
pub(crate) fn trace_scopes(at: AnchorRef<'_>) -> (Vec<ScopeRef<'_>>, Vec<ScopeRef<'_>>) {
    let mut owning = Vec::new();
    let mut base = at;
    if let AnchorRef::Span(span) = at {
        let mut level = Some(&**span);
        while let Some(span) = level {
            owning.push(ScopeRef::Span(span));
            level = span.parent();
        }
        base = span.owner();
    }
    let parents = match base {
        AnchorRef::Conn(_) | AnchorRef::Stream(_) => {
            let scope = ScopeRef::from(base);
            owning.push(scope);
            scope.path_now()
        }
        view => {
            owning.push(ScopeRef::from(view));
            let len = view.with_view(Len).unwrap_or(1);
            (1..len).map(|index| view_path_at(view, index)).collect()
        }
    };
    (owning, parents)
}

//! Spans and anchors.
//!
//! An [`Anchor`] is a counted reference to any scope: what a span is begun on, what a memory
//! guard releases into, what a view is. It keeps the scope's memory alive, and a view of a
//! peer, protocol or service also keeps the scope from being collected ([`PeerView`],
//! [`GroupView`]). Its memory operations are the one place where every kind of scope is
//! reserved on and released from:
//!
//! * a reservation on a view's scope walks that scope and its parents, then counts the bytes
//!   as reserved directly there ([`crate::account::Direct`]); on a connection or stream it is
//!   the staged walk ([`super::staged`]); on a span, the walk below;
//! * a release is clamped at the scope it is made on (a view's direct count, a connection's,
//!   stream's or span's own word) and what was taken goes further up exactly;
//! * a span begun on a view reserves on the view's scope and parents without the direct
//!   count (the bytes are the span's, in its own word), and gives them back exactly.
//!
//! A [`SpanNode`] is a child scope: its own word, the scope at the root of its chain (its
//! [`Owner`], never a span) and the span it was begun on, if it was begun on one. A reservation through a span
//! `d` levels deep reserves on the anchor first, then commits each span level from the outside
//! in, so that every level's close finds its bytes held by everything above it (the same
//! own-word-last protocol as connections and streams, see [`crate::account::own`]); a release
//! walks the levels outwards through the parent links, stopping at a closed one. A span begun
//! on a connection, stream or view (one level, the common case) gathers nothing; a deeper one
//! gathers its levels once (without allocating up to [`INLINE_LEVELS`] deep), so a
//! reservation costs time linear in its depth and no stack; so do a span's name, its limit
//! and its drop.
//!
//! A span's walks dispatch once on the kind of its owner ([`SpanNode::dispatch`], [`Base`]):
//! everything after that, the span handle's whole operation included, is compiled for that
//! kind (a peer's path, a stream's stages), with no match per layer. They report a refusal as
//! a small [`SpanFault`] (an anchor's, as an [`AnchorFault`]), which names no scope:
//! [`super::scope`], above the nodes, names it on the cold path, and also gives anchors and
//! spans their names, usage and limits.

use super::{
    Fixed, Root,
    conn::ConnNode,
    fault::{Fault, Refusal},
    groups::{Group, GroupKind},
    peers::{PeerNode, Peers},
    staged::Staged,
    stream::StreamNode,
    viewed::Viewed,
};
use crate::{
    account::{Hit, LimitCell, Memory, Own, OwnRefusal, Path, Release, Reserve, Walk, path},
    limits::BaseLimit,
    sync::{Arc, AtomicU64, Ordering, Slot},
    types::{Priority, ScopeStat},
};

/// A view of a peer's scope: keeps it from being collected while it lives.
#[derive(Debug)]
pub(crate) struct PeerView(Arc<PeerNode>);

impl PeerView {
    /// A view of `id`'s scope (made if needed); says whether it was made.
    pub(crate) fn new(root: &Arc<Root>, id: &libp2p_identity::PeerId) -> (PeerView, bool) {
        let (node, created) = Peers::view(root, id);
        (PeerView(node), created)
    }

    /// A view of a peer's scope that the caller holds usage in (so it cannot be collected
    /// meanwhile).
    pub(crate) fn of(node: &Arc<PeerNode>) -> PeerView {
        node.add_view();
        PeerView(Arc::clone(node))
    }

    pub(crate) fn node(&self) -> &Arc<PeerNode> {
        &self.0
    }
}

impl Clone for PeerView {
    fn clone(&self) -> Self {
        PeerView::of(&self.0)
    }
}

impl Drop for PeerView {
    fn drop(&mut self) {
        self.0.drop_view();
    }
}

/// A view of a protocol's or service's scope: keeps it from being collected while it lives.
#[derive(Debug)]
pub(crate) struct GroupView {
    root: Arc<Root>,
    kind: GroupKind,
    slot: u32,
}

impl GroupView {
    /// A view of the scope named `name` (made if needed); says whether it was made.
    pub(crate) fn new(root: &Arc<Root>, kind: GroupKind, name: &str) -> (GroupView, bool) {
        let (group, created) = root
            .groups(kind)
            .view(name, |name| root.group_limit(kind, name));
        let view = GroupView {
            root: Arc::clone(root),
            kind,
            slot: group.slot,
        };
        (view, created)
    }

    /// A view of the scope in `slot`, which the caller holds usage in (so it cannot be
    /// collected meanwhile).
    pub(crate) fn of(root: &Arc<Root>, kind: GroupKind, slot: u32) -> Option<GroupView> {
        root.groups(kind).get(slot)?.add_view();
        Some(GroupView {
            root: Arc::clone(root),
            kind,
            slot,
        })
    }

    pub(crate) fn kind(&self) -> GroupKind {
        self.kind
    }

    pub(crate) fn root(&self) -> &Arc<Root> {
        &self.root
    }

    /// The viewed scope (a view keeps its slot in use).
    pub(crate) fn group(&self) -> Option<&Group> {
        self.root.groups(self.kind).get(self.slot)
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }
}

impl Clone for GroupView {
    fn clone(&self) -> Self {
        if let Some(group) = self.group() {
            group.add_view();
        }
        GroupView {
            root: Arc::clone(&self.root),
            kind: self.kind,
            slot: self.slot,
        }
    }
}

impl Drop for GroupView {
    fn drop(&mut self) {
        if let Some(group) = self.group() {
            group.drop_view();
        }
    }
}

/// What a memory operation did: the bytes it moved at the scope it was made on (a release
/// takes at most what that scope holds), and how the own memory of the connection at the
/// root of the scope's chain changed, when that is a connection (for go's connection memory
/// metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) bytes: u64,
    /// The connection's bytes before and after.
    pub(crate) conn: Option<(u64, u64)>,
}

impl Moved {
    #[inline]
    pub(crate) fn bytes(bytes: u64) -> Moved {
        Moved { bytes, conn: None }
    }
}

/// A counted reference to any scope; see the module docs.
#[derive(Clone, Debug)]
pub(crate) enum Anchor {
    Fixed(Arc<Root>, Fixed),
    Group(GroupView),
    Peer(PeerView),
    Conn(Arc<ConnNode>),
    Stream(Arc<StreamNode>),
    Span(Arc<SpanNode>),
}

impl Anchor {
    /// The anchor, borrowed: what the operations take (a handle borrows its own node
    /// without touching a reference count).
    #[inline]
    pub(crate) fn as_ref(&self) -> AnchorRef<'_> {
        match self {
            Anchor::Fixed(root, which) => AnchorRef::Fixed(root, *which),
            Anchor::Group(view) => AnchorRef::Group(view),
            Anchor::Peer(view) => AnchorRef::Peer(view),
            Anchor::Conn(conn) => AnchorRef::Conn(conn),
            Anchor::Stream(stream) => AnchorRef::Stream(stream),
            Anchor::Span(span) => AnchorRef::Span(span),
        }
    }
}

/// A borrowed [`Anchor`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum AnchorRef<'a> {
    Fixed(&'a Arc<Root>, Fixed),
    Group(&'a GroupView),
    Peer(&'a PeerView),
    Conn(&'a Arc<ConnNode>),
    Stream(&'a Arc<StreamNode>),
    Span(&'a Arc<SpanNode>),
}

impl<'a> AnchorRef<'a> {
    /// A counted reference to the same scope.
    pub(crate) fn to_owned(self) -> Anchor {
        match self {
            AnchorRef::Fixed(root, which) => Anchor::Fixed(Arc::clone(root), which),
            AnchorRef::Group(view) => Anchor::Group(view.clone()),
            AnchorRef::Peer(view) => Anchor::Peer(view.clone()),
            AnchorRef::Conn(conn) => Anchor::Conn(Arc::clone(conn)),
            AnchorRef::Stream(stream) => Anchor::Stream(Arc::clone(stream)),
            AnchorRef::Span(span) => Anchor::Span(Arc::clone(span)),
        }
    }

    /// The graph the scope belongs to.
    #[inline(always)]
    pub(crate) fn root(self) -> &'a Root {
        match self {
            AnchorRef::Fixed(root, _) => root,
            AnchorRef::Group(view) => view.root(),
            AnchorRef::Peer(view) => &view.node().root,
            AnchorRef::Conn(conn) => &conn.root,
            AnchorRef::Stream(stream) => stream.root(),
            AnchorRef::Span(span) => span.root(),
        }
    }

    /// For a view: what views keep on the scope (its direct count, its spans' numbers).
    /// `None` for any other scope, or a group that is gone.
    #[inline(always)]
    fn viewed(self) -> Option<&'a Viewed> {
        match self {
            AnchorRef::Fixed(root, which) => Some(root.fixed_viewed(which)),
            AnchorRef::Group(view) => Some(&view.group()?.viewed),
            AnchorRef::Peer(view) => Some(&view.node().viewed),
            AnchorRef::Conn(_) | AnchorRef::Stream(_) | AnchorRef::Span(_) => None,
        }
    }

    /// For a view: runs `walk` on the scope's path (the scope itself first), built on the
    /// stack. `None` for any other scope. (Always inlined: where the kind of scope is known,
    /// as in a span's [`ViewBase`], the match folds away.)
    #[inline(always)]
    pub(crate) fn with_view<W: Walk>(self, walk: W) -> Option<W::Output> {
        let system = |root: &'a Root| root.fixed(Fixed::System);
        Some(match self {
            AnchorRef::Fixed(root, which) => {
                let scope = root.fixed(which);
                let plain = &[];
                match which {
                    Fixed::System | Fixed::AllowlistedSystem => walk.on(Path {
                        plain,
                        sharded: &[scope],
                    }),
                    Fixed::Transient => walk.on(Path {
                        plain,
                        sharded: &[scope, system(root)],
                    }),
                    Fixed::AllowlistedTransient => walk.on(Path {
                        plain,
                        sharded: &[scope, root.fixed(Fixed::AllowlistedSystem)],
                    }),
                }
            }
            AnchorRef::Group(view) => {
                let group = view.group()?;
                walk.on(Path {
                    plain: &[],
                    sharded: &[&group.scope, system(view.root())],
                })
            }
            AnchorRef::Peer(view) => {
                let node = view.node();
                walk.on(Path {
                    plain: &[&node.scope],
                    sharded: &[system(&node.root)],
                })
            }
            AnchorRef::Conn(_) | AnchorRef::Stream(_) | AnchorRef::Span(_) => return None,
        })
    }

    /// Reserves `memory` on the scope and everything it reports to (what guards and views
    /// run; the handles of spans, connections and streams call their node's walk directly).
    /// A refusal is reported compactly; [`super::scope::anchor_refusal`] names it.
    #[inline]
    pub(crate) fn reserve_memory(self, memory: Memory, slot: Slot) -> Result<Moved, AnchorFault> {
        match self {
            AnchorRef::Conn(conn) => conn
                .reserve_memory(memory, slot)
                .map(|before| Moved {
                    bytes: memory.bytes,
                    conn: Some((before, before + memory.bytes)),
                })
                .map_err(AnchorFault::Scope),
            AnchorRef::Stream(stream) => stream
                .reserve_memory(memory, slot)
                .map(|_| Moved::bytes(memory.bytes))
                .map_err(AnchorFault::Scope),
            AnchorRef::Span(span) => span.reserve_memory(memory, slot).map_err(AnchorFault::Span),
            view => {
                let Some(viewed) = view.viewed() else {
                    return Err(AnchorFault::Scope(Fault::Closed));
                };
                let Some(reserved) = view.with_view(Reserve(memory, slot)) else {
                    return Err(AnchorFault::Scope(Fault::Closed));
                };
                reserved.map_err(|refused| {
                    AnchorFault::Scope(Fault::Path {
                        stage: 0,
                        refused,
                        limit: 0,
                    })
                })?;
                viewed.direct.add(memory.bytes);
                Ok(Moved::bytes(memory.bytes))
            }
        }
    }

    /// Releases up to `bytes`: clamped at the scope itself, what it took given back further
    /// up. Nothing if the scope is closed (its close gave everything back).
    #[inline]
    pub(crate) fn release_memory(self, bytes: u64, slot: Slot) -> Moved {
        match self {
            AnchorRef::Conn(conn) => {
                conn.release_memory(bytes, slot)
                    .map_or_else(Moved::default, |released| Moved {
                        bytes: released.taken,
                        conn: Some((released.before, released.before - released.taken)),
                    })
            }
            AnchorRef::Stream(stream) => stream
                .release_memory(bytes, slot)
                .map_or_else(Moved::default, |released| Moved::bytes(released.taken)),
            AnchorRef::Span(span) => span.release_memory(bytes, slot),
            view => {
                let Some(viewed) = view.viewed() else {
                    return Moved::default();
                };
                let taken = viewed.direct.take(bytes);
                view.with_view(Release(Memory::new(taken, Priority::ALWAYS), slot));
                Moved::bytes(taken)
            }
        }
    }

    /// The scope's own memory limit now (what a span begun on it follows).
    #[inline(always)]
    fn memory_limit(self) -> u64 {
        match self {
            AnchorRef::Conn(conn) => Staged::memory_limit(&**conn),
            AnchorRef::Stream(stream) => Staged::memory_limit(&**stream),
            AnchorRef::Span(span) => span.memory_limit(),
            AnchorRef::Fixed(root, which) => root.fixed(which).limit().memory(),
            AnchorRef::Group(view) => view.group().map_or(0, |group| group.scope.limit().memory()),
            AnchorRef::Peer(view) => view.node().scope.limit().memory(),
        }
    }

    /// Whether the scope is closed (views' scopes never are).
    pub(crate) fn is_closed(self) -> bool {
        match self {
            AnchorRef::Conn(conn) => conn.state().is_closed(),
            AnchorRef::Stream(stream) => stream.state().is_closed(),
            AnchorRef::Span(span) => span.own.peek().is_closed(),
            _ => false,
        }
    }

    /// The number the next span begun on the scope gets.
    fn next_span_index(self) -> u64 {
        match self {
            AnchorRef::Conn(conn) => conn.next_span_index(),
            AnchorRef::Stream(stream) => stream.next_span_index(),
            AnchorRef::Span(span) => span.next_span_index(),
            view => view.viewed().map_or(0, Viewed::next_span),
        }
    }

    /// Pins the scope's limit (go's `ResourceScopeLimiter.SetLimit`); a pinned peer,
    /// protocol or service scope is never collected.
    pub(crate) fn set_limit(self, limit: BaseLimit) {
        match self {
            AnchorRef::Fixed(root, which) => root.fixed(which).limit().pin(limit),
            AnchorRef::Group(view) => {
                if let Some(group) = view.group() {
                    group.scope.limit().pin(limit);
                    group.make_sticky();
                }
            }
            AnchorRef::Peer(view) => {
                view.node().scope.limit().pin(limit);
                view.node().make_sticky();
            }
            AnchorRef::Conn(conn) => conn.pin_limit(limit),
            AnchorRef::Stream(stream) => stream.pin_limit(limit),
            AnchorRef::Span(span) => span.limit.pin(limit),
        }
    }
}

/// What a span chain is rooted at: any scope but a span (a span begun on a span keeps its
/// parent's owner), so that a span's walks dispatch on the kind of scope once.
#[derive(Clone, Debug)]
pub(crate) enum Owner {
    Fixed(Arc<Root>, Fixed),
    Group(GroupView),
    Peer(PeerView),
    Conn(Arc<ConnNode>),
    Stream(Arc<StreamNode>),
}

impl Owner {
    /// The owner, and the span to begin the new one on, of a span begun on `anchor`.
    fn of(anchor: AnchorRef<'_>) -> (Owner, Option<Arc<SpanNode>>) {
        let owner = match anchor {
            AnchorRef::Span(span) => return (span.dag.clone(), Some(Arc::clone(span))),
            AnchorRef::Fixed(root, which) => Owner::Fixed(Arc::clone(root), which),
            AnchorRef::Group(view) => Owner::Group(view.clone()),
            AnchorRef::Peer(view) => Owner::Peer(view.clone()),
            AnchorRef::Conn(conn) => Owner::Conn(Arc::clone(conn)),
            AnchorRef::Stream(stream) => Owner::Stream(Arc::clone(stream)),
        };
        (owner, None)
    }

    /// The graph the owner belongs to.
    #[inline(always)]
    fn root(&self) -> &Root {
        match self {
            Owner::Fixed(root, _) => root,
            Owner::Group(view) => view.root(),
            Owner::Peer(view) => &view.node().root,
            Owner::Conn(conn) => &conn.root,
            Owner::Stream(stream) => stream.root(),
        }
    }

    /// The owner, borrowed as any anchor (for names, limits and the trace).
    #[inline(always)]
    pub(crate) fn as_ref(&self) -> AnchorRef<'_> {
        match self {
            Owner::Fixed(root, which) => AnchorRef::Fixed(root, *which),
            Owner::Group(view) => AnchorRef::Group(view),
            Owner::Peer(view) => AnchorRef::Peer(view),
            Owner::Conn(conn) => AnchorRef::Conn(conn),
            Owner::Stream(stream) => AnchorRef::Stream(stream),
        }
    }
}

/// Runs `$body` with `$base` bound to `$owner` as the [`Base`] of its kind: the one dispatch
/// of a span's walk.
macro_rules! with_base {
    ($owner:expr, |$base:ident| $body:expr) => {
        match $owner {
            Owner::Fixed(root, which) => {
                let $base = ViewBase(AnchorRef::Fixed(root, *which));
                $body
            }
            Owner::Group(view) => {
                let $base = ViewBase(AnchorRef::Group(view));
                $body
            }
            Owner::Peer(view) => {
                let $base = ViewBase(AnchorRef::Peer(view));
                $body
            }
            Owner::Conn(conn) => {
                let $base: &ConnNode = conn;
                $body
            }
            Owner::Stream(stream) => {
                let $base: &StreamNode = stream;
                $body
            }
        }
    };
}

/// The owner of a span chain as the span's walks see it, written once per kind of scope: a
/// small `Copy` value (a reference, or a view's anchor), so that a walk keeps it in
/// registers, never in memory that its atomic operations would make it read again.
pub(crate) trait Base: Copy {
    /// The graph the scope belongs to.
    fn root(&self) -> &Root;
    /// The scope's own memory limit now (what a span begun on it follows, unless pinned).
    fn memory_limit(&self) -> u64;
    /// Reserves `memory` for a span begun on the scope: on a connection or stream, as a
    /// reservation on it; on a view's scope, on the scope and its parents, but not as bytes
    /// reserved directly there (they are the span's). Returns how the own memory of a
    /// connection changed.
    fn reserve_for_span(&self, memory: Memory, slot: Slot) -> Result<Option<(u64, u64)>, Fault>;
    /// Gives back `bytes` that a span begun on the scope held (and so the scope holds too):
    /// on a connection or stream, as a release on it; on a view's scope, from the scope and
    /// its parents exactly. Returns how the own memory of a connection changed.
    fn release_for_span(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)>;
}

impl Base for &ConnNode {
    #[inline(always)]
    fn root(&self) -> &Root {
        &self.root
    }

    #[inline(always)]
    fn memory_limit(&self) -> u64 {
        Staged::memory_limit(*self)
    }

    #[inline(always)]
    fn reserve_for_span(&self, memory: Memory, slot: Slot) -> Result<Option<(u64, u64)>, Fault> {
        let before = self.reserve_memory(memory, slot)?;
        Ok(Some((before, before + memory.bytes)))
    }

    #[inline(always)]
    fn release_for_span(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        let released = self.release_memory(bytes, slot)?;
        Some((released.before, released.before - released.taken))
    }
}

impl Base for &StreamNode {
    #[inline(always)]
    fn root(&self) -> &Root {
        StreamNode::root(self)
    }

    #[inline(always)]
    fn memory_limit(&self) -> u64 {
        Staged::memory_limit(*self)
    }

    #[inline(always)]
    fn reserve_for_span(&self, memory: Memory, slot: Slot) -> Result<Option<(u64, u64)>, Fault> {
        self.reserve_memory(memory, slot)?;
        Ok(None)
    }

    #[inline(always)]
    fn release_for_span(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        self.release_memory(bytes, slot);
        None
    }
}

/// A view's scope (a fixed scope, a protocol or service, a peer) as a span's owner: the
/// anchor's variant is known where one is made, so its matches fold away.
#[derive(Clone, Copy)]
pub(crate) struct ViewBase<'a>(AnchorRef<'a>);

impl Base for ViewBase<'_> {
    #[inline(always)]
    fn root(&self) -> &Root {
        self.0.root()
    }

    #[inline(always)]
    fn memory_limit(&self) -> u64 {
        self.0.memory_limit()
    }

    #[inline(always)]
    fn reserve_for_span(&self, memory: Memory, slot: Slot) -> Result<Option<(u64, u64)>, Fault> {
        match self.0.with_view(Reserve(memory, slot)) {
            Some(Ok(())) => Ok(None),
            Some(Err(refused)) => Err(Fault::Path {
                stage: 0,
                refused,
                limit: 0,
            }),
            None => Err(Fault::Closed),
        }
    }

    #[inline(always)]
    fn release_for_span(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        let memory = Memory::new(bytes, Priority::ALWAYS);
        self.0.with_view(Release(memory, slot));
        None
    }
}

/// Why a reservation on an anchor was refused, as its hot path reports it (named on the cold
/// path by [`super::scope::anchor_refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnchorFault {
    /// A connection's, a stream's or a view's scope's walk refused.
    Scope(Fault),
    /// A span's walk refused.
    Span(SpanFault),
}

/// Why a reservation through a span was refused, as its hot path reports it (named on the
/// cold path by [`super::scope::span_refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanFault {
    /// The walk of the chain's owner refused.
    Above(Fault),
    /// The own word of the level `index` levels out from the span refused (what the outer
    /// levels and the owner took was given back).
    Level(usize, OwnRefusal),
}

/// Span levels a walk gathers without allocating.
pub(crate) const INLINE_LEVELS: usize = 8;

/// The levels of a span chain, from the span itself outwards, with the memory limit each
/// follows: its own if it was pinned, else the next level's (the anchor's at the end).
struct Levels<'a> {
    inline: [Option<(&'a SpanNode, u64)>; INLINE_LEVELS],
    spilled: Vec<(&'a SpanNode, u64)>,
    len: usize,
}

impl<'a> Levels<'a> {
    fn of(span: &'a SpanNode) -> Self {
        let mut levels = Levels {
            inline: [None; INLINE_LEVELS],
            spilled: Vec::new(),
            len: 0,
        };
        let mut level = Some(span);
        while let Some(span) = level {
            if levels.len < INLINE_LEVELS {
                levels.inline[levels.len] = Some((span, 0));
            } else {
                levels.spilled.push((span, 0));
            }
            levels.len += 1;
            level = span.parent.as_deref();
        }
        let mut limit = span.dag.as_ref().memory_limit();
        for index in (0..levels.len).rev() {
            if let Some((span, own)) = levels.get_mut(index) {
                if span.limit.is_pinned() {
                    limit = span.limit.memory();
                }
                *own = limit;
            }
        }
        levels
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut (&'a SpanNode, u64)> {
        if index < INLINE_LEVELS {
            self.inline[index].as_mut()
        } else {
            self.spilled.get_mut(index - INLINE_LEVELS)
        }
    }

    fn get(&self, index: usize) -> Option<(&'a SpanNode, u64)> {
        if index < INLINE_LEVELS {
            self.inline[index]
        } else {
            self.spilled.get(index - INLINE_LEVELS).copied()
        }
    }
}

/// A span; see the module docs.
#[derive(Debug)]
pub(crate) struct SpanNode {
    own: Own,
    /// The scope at the root of the chain.
    dag: Owner,
    /// The span this one was begun on, if it was begun on a span.
    parent: Option<Arc<SpanNode>>,
    index: u64,
    /// Used once `set_limit` pins it; until then the span follows the scope it was begun on.
    limit: LimitCell,
    next_span: AtomicU64,
}

impl SpanNode {
    /// Begins a span on `owner`; fails if `owner` is closed.
    #[allow(
        clippy::result_large_err,
        reason = "a refusal is named once, where it is found, on a path that then ends"
    )]
    pub(crate) fn begin(owner: AnchorRef<'_>) -> Result<Arc<SpanNode>, Refusal> {
        if owner.is_closed() {
            return Err(Refusal::closed());
        }
        let index = owner.next_span_index();
        let (dag, parent) = Owner::of(owner);
        Ok(Arc::new(SpanNode {
            own: Own::new(0),
            dag,
            parent,
            index,
            limit: LimitCell::new(BaseLimit::block_all()),
            next_span: AtomicU64::new(1),
        }))
    }

    /// The graph the span belongs to.
    #[inline(always)]
    pub(crate) fn root(&self) -> &Root {
        self.dag.root()
    }

    pub(crate) fn next_span_index(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }

    /// The span's number among the spans begun on the same scope (the last part of its name).
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// The span this one was begun on, if it was begun on a span.
    pub(crate) fn parent(&self) -> Option<&SpanNode> {
        self.parent.as_deref()
    }

    /// The scope at the root of the span's chain (never a span), borrowed as any anchor.
    pub(crate) fn owner(&self) -> AnchorRef<'_> {
        self.dag.as_ref()
    }

    /// The level `index` levels out from this span (this span at 0; the outermost one past
    /// the chain's end).
    pub(crate) fn level(&self, index: usize) -> &SpanNode {
        let mut level = self;
        for _ in 0..index {
            match level.parent() {
                Some(parent) => level = parent,
                None => break,
            }
        }
        level
    }

    /// The memory limit the span follows now.
    fn memory_limit(&self) -> u64 {
        let mut level = Some(self);
        while let Some(span) = level {
            if span.limit.is_pinned() {
                return span.limit.memory();
            }
            level = span.parent.as_deref();
        }
        self.dag.as_ref().memory_limit()
    }

    /// The limit the span follows now if a level of its chain pinned one (the innermost);
    /// `None` if it follows its owner's.
    pub(crate) fn pinned_limit(&self) -> Option<BaseLimit> {
        let mut level = Some(self);
        while let Some(span) = level {
            if span.limit.is_pinned() {
                return Some(span.limit.get());
            }
            level = span.parent.as_deref();
        }
        None
    }

    pub(crate) fn stat(&self) -> ScopeStat {
        let state = self.own.peek();
        ScopeStat {
            memory: if state.is_closed() { 0 } else { state.bytes() },
            ..ScopeStat::default()
        }
    }

    /// Runs `op` on the span, dispatched once on its owner's kind: the span handle's
    /// operations run this way, so that everything they do (the walk, and what they tell)
    /// is compiled for that kind.
    #[inline(always)]
    pub(crate) fn dispatch<O: OnSpan>(&self, op: O) -> O::Output {
        with_base!(&self.dag, |base| op.run(SpanOn { span: self, base }))
    }

    /// Reserves `memory` through the span (see [`SpanOn::reserve_memory`]).
    #[inline]
    pub(crate) fn reserve_memory(&self, memory: Memory, slot: Slot) -> Result<Moved, SpanFault> {
        with_base!(&self.dag, |base| SpanOn { span: self, base }
            .reserve_memory(memory, slot))
    }

    /// [`SpanOn::reserve_memory`] through a span begun on a span.
    #[inline(never)]
    fn reserve_nested(&self, memory: Memory, slot: Slot) -> Result<Moved, SpanFault> {
        let levels = Levels::of(self);
        let conn = with_base!(&self.dag, |base| base.reserve_for_span(memory, slot))
            .map_err(SpanFault::Above)?;
        for index in (0..levels.len).rev() {
            let Some((level, limit)) = levels.get(index) else {
                continue;
            };
            if let Err(refused) = level.own.commit(memory, limit, 0) {
                // Give back what the outer levels and the anchor took (a rollback: not a
                // change of the connection's memory that anyone saw).
                level.release_above(memory.bytes, slot);
                return Err(SpanFault::Level(index, refused));
            }
        }
        Ok(Moved {
            bytes: memory.bytes,
            conn,
        })
    }

    /// The first level, from the span outwards, that is closed or whose own limit refuses
    /// `memory` now (go checks each level's own state and limit before its owner's): how many
    /// levels out it is, the level, and why (closed, or the limit it hit).
    #[cold]
    pub(crate) fn first_own_refusal(
        &self,
        memory: Memory,
    ) -> Option<(usize, &SpanNode, OwnRefusal)> {
        let levels = Levels::of(self);
        (0..levels.len).find_map(|index| {
            let (level, limit) = levels.get(index)?;
            if level.own.peek().is_closed() {
                return Some((index, level, OwnRefusal::Closed));
            }
            let hit: Hit = level.own.refuses(memory, limit)?;
            Some((index, level, OwnRefusal::Limit(hit)))
        })
    }

    /// Releases up to `bytes` from the span (see [`SpanOn::release_memory`]).
    #[inline]
    pub(crate) fn release_memory(&self, bytes: u64, slot: Slot) -> Moved {
        with_base!(&self.dag, |base| SpanOn { span: self, base }
            .release_memory(bytes, slot))
    }

    /// Closes the span: marks it closed and gives what it held back to its owners. Returns
    /// what it held (and how the connection at the root changed), or `None` if it was closed
    /// already.
    pub(crate) fn close(&self, slot: Slot) -> Option<Moved> {
        let state = self.own.close()?;
        if state.bytes() == 0 {
            return Some(Moved::default());
        }
        Some(Moved {
            bytes: state.bytes(),
            conn: self.release_above(state.bytes(), slot),
        })
    }

    /// Gives back `bytes`, which this span held, from what it reports to (see
    /// [`SpanOn::release_above`]).
    fn release_above(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        with_base!(&self.dag, |base| SpanOn { span: self, base }
            .release_above(bytes, slot))
    }

    /// Takes up to `bytes` from this span's own word and each level outside it, each clamped
    /// at what the level before gave; `None` at a closed level. Returns what the outermost
    /// level gave (what the owner then gives back).
    #[inline(never)]
    fn release_levels(&self, bytes: u64) -> Option<u64> {
        let mut bytes = bytes;
        let mut level = Some(self);
        while let Some(span) = level {
            bytes = span.own.release(bytes)?.taken;
            level = span.parent.as_deref();
        }
        Some(bytes)
    }
}

/// A span as its walks see it once they have dispatched on its owner's kind ([`Base`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanOn<'a, B> {
    span: &'a SpanNode,
    base: B,
}

/// What runs on a span once its owner's kind is known ([`SpanNode::dispatch`]).
pub(crate) trait OnSpan {
    type Output;
    fn run<B: Base>(self, span: SpanOn<'_, B>) -> Self::Output;
}

impl<B: Base> SpanOn<'_, B> {
    /// The graph the span belongs to.
    #[inline(always)]
    pub(crate) fn root(&self) -> &Root {
        self.base.root()
    }

    /// Reserves `memory` through the span: the owner (and everything it reports to) first,
    /// then each level's own word from the outside in. A refusal is reported compactly;
    /// [`super::scope::span_refusal`] names it.
    #[inline(always)]
    pub(crate) fn reserve_memory(&self, memory: Memory, slot: Slot) -> Result<Moved, SpanFault> {
        let span = self.span;
        if span.parent.is_some() {
            return span.reserve_nested(memory, slot);
        }
        // A span begun on a connection, stream or view (the common case): one level, no
        // gathering.
        let limit = if span.limit.is_pinned() {
            span.limit.memory()
        } else {
            self.base.memory_limit()
        };
        let conn = self
            .base
            .reserve_for_span(memory, slot)
            .map_err(SpanFault::Above)?;
        if let Err(refused) = span.own.commit(memory, limit, 0) {
            path::cold();
            self.base.release_for_span(memory.bytes, slot);
            return Err(SpanFault::Level(0, refused));
        }
        Ok(Moved {
            bytes: memory.bytes,
            conn,
        })
    }

    /// Releases up to `bytes` from the span and what it reports to: what the span itself
    /// gave back, and how the connection at the root changed, if it did.
    #[inline(always)]
    pub(crate) fn release_memory(&self, bytes: u64, slot: Slot) -> Moved {
        let Some(released) = self.span.own.release(bytes) else {
            return Moved::default();
        };
        if released.taken == 0 {
            return Moved::default();
        }
        Moved {
            bytes: released.taken,
            conn: self.release_above(released.taken, slot),
        }
    }

    /// Gives back `bytes`, which the span held, from the levels outside it (each clamped at
    /// what it holds) and then from the owner; stops at a closed level (its close gave
    /// everything back). Returns how the connection at the root changed, if it did. A loop
    /// over the levels, outwards: no gathering, no stack.
    #[inline(always)]
    fn release_above(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        let mut bytes = bytes;
        if let Some(parent) = self.span.parent.as_deref() {
            bytes = parent.release_levels(bytes)?;
        }
        if bytes == 0 {
            return None;
        }
        self.base.release_for_span(bytes, slot)
    }
}

impl Drop for SpanNode {
    /// Unlinks the chain of spans this one was the last holder of in a loop, so that dropping
    /// a span nested to any depth takes no stack.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(span) = next {
            next = match crate::sync::arc_into_inner(span) {
                Some(mut span) => span.parent.take(),
                None => None,
            };
        }
    }
}

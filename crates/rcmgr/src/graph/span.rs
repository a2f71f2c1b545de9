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
//! A [`SpanNode`] is a child scope: its own word, the anchor at the root of its chain (never a
//! span) and the span it was begun on, if it was begun on one. A reservation through a span
//! `d` levels deep reserves on the anchor first, then commits each span level from the outside
//! in, so that every level's close finds its bytes held by everything above it (the same
//! own-word-last protocol as connections and streams, see [`crate::account::own`]); a release
//! walks the levels outwards through the parent links, stopping at a closed one. A span begun
//! on a connection, stream or view (one level, the common case) gathers nothing; a deeper one
//! gathers its levels once (without allocating up to [`INLINE_LEVELS`] deep), so a
//! reservation costs time linear in its depth and no stack; so do a span's name, its limit
//! and its drop.

use super::{
    Root,
    conn::ConnNode,
    groups::{Group, GroupKind},
    peers::{PeerNode, Peers},
    scope::{Asked, Fixed, Refusal, RefusedBy, ScopeRef, Viewed},
    stream::StreamNode,
};
use crate::{
    account::{LimitCell, Memory, Own, OwnRefusal, Path, PathRefusal, Refused, Sharded, path},
    limits::BaseLimit,
    sync::{Arc, AtomicU64, Ordering, Slot},
    types::{Priority, ScopeName, ScopeStat, SpanName},
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
    fn bytes(bytes: u64) -> Moved {
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
    /// The graph the scope belongs to (an anchor at the root of a span chain is never a
    /// span, so this is one match, no recursion).
    #[inline]
    pub(crate) fn root(&self) -> &Root {
        match self {
            Anchor::Fixed(root, _) => root,
            Anchor::Group(view) => view.root(),
            Anchor::Peer(view) => &view.node().root,
            Anchor::Conn(conn) => &conn.root,
            Anchor::Stream(stream) => stream.root(),
            Anchor::Span(span) => span.dag.root(),
        }
    }

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

    /// The scope, borrowed.
    pub(crate) fn scope(self) -> ScopeRef<'a> {
        match self {
            AnchorRef::Fixed(root, which) => ScopeRef::Fixed(root, which),
            AnchorRef::Group(view) => ScopeRef::Group(view.root(), view.kind(), view.slot()),
            AnchorRef::Peer(view) => ScopeRef::Peer(view.node()),
            AnchorRef::Conn(conn) => ScopeRef::Conn(conn),
            AnchorRef::Stream(stream) => ScopeRef::Stream(stream),
            AnchorRef::Span(span) => ScopeRef::Span(span),
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
            AnchorRef::Span(span) => span.dag.root(),
        }
    }

    /// For a view: runs `walk` on the scope's direct count and its path (the scope itself
    /// first), built on the stack. `None` for any other scope.
    #[inline]
    fn with_view<R>(self, walk: impl FnOnce(&'a Viewed, Path<'_>) -> R) -> Option<R> {
        let system = |root: &'a Root| root.fixed(Fixed::System);
        Some(match self {
            AnchorRef::Fixed(root, which) => {
                let scope = root.fixed(which);
                let viewed = root.fixed_viewed(which);
                let sharded: &[&Sharded] = match which {
                    Fixed::System | Fixed::AllowlistedSystem => &[scope],
                    Fixed::Transient => &[scope, system(root)],
                    Fixed::AllowlistedTransient => &[scope, root.fixed(Fixed::AllowlistedSystem)],
                };
                walk(
                    viewed,
                    Path {
                        plain: &[],
                        sharded,
                    },
                )
            }
            AnchorRef::Group(view) => {
                let group = view.group()?;
                walk(
                    &group.viewed,
                    Path {
                        plain: &[],
                        sharded: &[&group.scope, system(view.root())],
                    },
                )
            }
            AnchorRef::Peer(view) => {
                let node = view.node();
                walk(
                    &node.viewed,
                    Path {
                        plain: &[&node.scope],
                        sharded: &[system(&node.root)],
                    },
                )
            }
            AnchorRef::Conn(_) | AnchorRef::Stream(_) | AnchorRef::Span(_) => return None,
        })
    }

    /// The scope at `index` of a view's path (the scope itself at 0), for names.
    fn view_scope_at(self, index: usize) -> ScopeRef<'a> {
        match (self, index) {
            (AnchorRef::Fixed(root, Fixed::AllowlistedTransient), 1) => {
                ScopeRef::Fixed(root, Fixed::AllowlistedSystem)
            }
            (_, 0) => self.scope(),
            _ => ScopeRef::Fixed(self.root(), Fixed::System),
        }
    }

    /// Reserves `memory` on the scope and everything it reports to.
    #[inline(always)]
    pub(crate) fn reserve_memory(self, memory: Memory, slot: Slot) -> Result<Moved, Refusal> {
        match self {
            AnchorRef::Conn(conn) => conn.reserve_memory(memory, slot).map(|before| Moved {
                bytes: memory.bytes,
                conn: Some((before, before + memory.bytes)),
            }),
            AnchorRef::Stream(stream) => stream
                .reserve_memory(memory, slot)
                .map(|_| Moved::bytes(memory.bytes)),
            AnchorRef::Span(span) => span.reserve_memory(memory, slot),
            view => {
                let reserved = view.with_view(|viewed, path| {
                    path::reserve(path, memory, slot).map(|()| viewed.direct.add(memory.bytes))
                });
                let Some(reserved) = reserved else {
                    return Err(Refusal::closed(None));
                };
                reserved.map_err(|refused| view.view_refusal(memory, refused))?;
                Ok(Moved::bytes(memory.bytes))
            }
        }
    }

    /// Releases up to `bytes`: clamped at the scope itself, what it took given back further
    /// up. Nothing if the scope is closed (its close gave everything back).
    #[inline(always)]
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
                let taken = view.with_view(|viewed, path| {
                    let taken = viewed.direct.take(bytes);
                    path::release(path, Memory::new(taken, Priority::ALWAYS), slot);
                    taken
                });
                Moved::bytes(taken.unwrap_or(0))
            }
        }
    }

    /// Reserves `memory` for a span begun on this scope (never a span itself): on a
    /// connection or stream, as a reservation on it; on a view's scope, on the scope and its
    /// parents, but not as bytes reserved directly there (they are the span's).
    #[inline]
    fn reserve_for_span(self, memory: Memory, slot: Slot) -> Result<Moved, Refusal> {
        match self {
            AnchorRef::Conn(_) | AnchorRef::Stream(_) | AnchorRef::Span(_) => {
                self.reserve_memory(memory, slot)
            }
            view => {
                let reserved = view.with_view(|_, path| path::reserve(path, memory, slot));
                let Some(reserved) = reserved else {
                    return Err(Refusal::closed(None));
                };
                reserved.map_err(|refused| view.view_refusal(memory, refused))?;
                Ok(Moved::bytes(memory.bytes))
            }
        }
    }

    /// Gives back `bytes` that a span begun on this scope held (and so this scope holds
    /// too): on a connection or stream, as a release on it; on a view's scope, from the
    /// scope and its parents exactly.
    #[inline]
    fn release_for_span(self, bytes: u64, slot: Slot) -> Moved {
        match self {
            AnchorRef::Conn(_) | AnchorRef::Stream(_) | AnchorRef::Span(_) => {
                self.release_memory(bytes, slot)
            }
            view => {
                let memory = Memory::new(bytes, Priority::ALWAYS);
                view.with_view(|_, path| path::release(path, memory, slot));
                Moved::bytes(bytes)
            }
        }
    }

    /// The refusal of a reservation on a view's scope, which its path refused.
    #[cold]
    fn view_refusal(self, memory: Memory, refused: PathRefusal) -> Refusal {
        let by = self.view_scope_at(refused.at);
        match refused.why {
            Refused::Limit(hit) => {
                // `at` counts the parents that took the bytes before the refusal; the viewed
                // scope itself is the path's first.
                let at = refused.at.saturating_sub(1);
                Refusal::limit(by, refused.at == 0, hit, Asked::Memory(memory)).at(at)
            }
            Refused::Stopped => {
                debug_assert!(false, "a viewed scope is never stopped");
                Refusal::closed(None)
            }
        }
    }

    /// The scopes a memory reservation through this anchor changes, for the trace (the cold
    /// path): the scopes that hold the bytes as their own, from the anchor outwards (spans,
    /// then the connection, stream or view scope at the root), and that scope's parents in
    /// go's walk order. A reservation's events come parents first, then the owning scopes
    /// from the outside in; a release's, the owning scopes from the inside out, then the
    /// parents.
    pub(crate) fn trace_scopes(self) -> (Vec<ScopeRef<'a>>, Vec<ScopeRef<'a>>) {
        use super::staged::Staged;
        let mut owning = Vec::new();
        let mut base = self;
        if let AnchorRef::Span(span) = self {
            let mut level = Some(&**span);
            while let Some(span) = level {
                owning.push(ScopeRef::Span(span));
                level = span.parent.as_deref();
            }
            base = span.dag.as_ref();
        }
        let parents = match base {
            AnchorRef::Conn(conn) => {
                owning.push(ScopeRef::Conn(conn));
                let stage = conn.state().stage();
                let len = conn.with_path(stage, |path| path.len());
                (0..len).map(|index| conn.scope_at(stage, index)).collect()
            }
            AnchorRef::Stream(stream) => {
                owning.push(ScopeRef::Stream(stream));
                let stage = stream.state().stage();
                let len = stream.with_path(stage, |path| path.len());
                (0..len)
                    .map(|index| stream.scope_at(stage, index))
                    .collect()
            }
            view => {
                owning.push(view.scope());
                let len = view.with_view(|_, path| path.len()).unwrap_or(1);
                (1..len).map(|index| view.view_scope_at(index)).collect()
            }
        };
        (owning, parents)
    }

    /// The scope's own memory limit now (what a span begun on it follows).
    #[inline]
    fn memory_limit(self) -> u64 {
        use super::staged::Staged;
        match self {
            AnchorRef::Conn(conn) => conn.memory_limit(),
            AnchorRef::Stream(stream) => stream.memory_limit(),
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
            view => view.with_view(|viewed, _| viewed.next_span()).unwrap_or(0),
        }
    }

    /// What the scope holds now.
    pub(crate) fn stat(self) -> ScopeStat {
        self.scope().stat()
    }

    /// The limit in force for the scope now.
    pub(crate) fn limit(self) -> BaseLimit {
        self.scope().limit()
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
    /// The scope at the root of the chain; never a span.
    dag: Anchor,
    /// The span this one was begun on, if it was begun on a span.
    parent: Option<Arc<SpanNode>>,
    index: u64,
    /// Used once `set_limit` pins it; until then the span follows the scope it was begun on.
    limit: LimitCell,
    next_span: AtomicU64,
}

impl SpanNode {
    /// Begins a span on `owner`; fails if `owner` is closed.
    pub(crate) fn begin(owner: AnchorRef<'_>) -> Result<Arc<SpanNode>, Refusal> {
        if owner.is_closed() {
            return Err(Refusal::closed(None));
        }
        let index = owner.next_span_index();
        let (dag, parent) = match owner {
            AnchorRef::Span(span) => (span.dag.clone(), Some(Arc::clone(span))),
            other => (other.to_owned(), None),
        };
        Ok(Arc::new(SpanNode {
            own: Own::new(0),
            dag,
            parent,
            index,
            limit: LimitCell::new(BaseLimit::block_all()),
            next_span: AtomicU64::new(1),
        }))
    }

    pub(crate) fn next_span_index(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }

    /// The span's name: the anchor's, then every level's number, from the outside in.
    pub(crate) fn name(&self) -> ScopeName {
        let mut indices = Vec::new();
        let mut level = Some(self);
        while let Some(span) = level {
            indices.push(span.index);
            level = span.parent.as_deref();
        }
        let mut name = self.dag.as_ref().scope().name();
        for index in indices.into_iter().rev() {
            name = ScopeName::Span(SpanName::new(name, index));
        }
        name
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

    /// The limit the span follows now: its own if pinned, else its owner's.
    pub(crate) fn limit(&self) -> BaseLimit {
        let mut level = Some(self);
        while let Some(span) = level {
            if span.limit.is_pinned() {
                return span.limit.get();
            }
            level = span.parent.as_deref();
        }
        self.dag.as_ref().limit()
    }

    pub(crate) fn stat(&self) -> ScopeStat {
        let state = self.own.peek();
        ScopeStat {
            memory: if state.is_closed() { 0 } else { state.bytes() },
            ..ScopeStat::default()
        }
    }

    /// Reserves `memory` through the span: the anchor (and everything it reports to) first,
    /// then each level's own word from the outside in. A refusal names the first scope whose
    /// own limit refuses in go's order (the span, then each level outwards, then the anchor's
    /// own walk), or the closed level.
    #[inline]
    pub(crate) fn reserve_memory(&self, memory: Memory, slot: Slot) -> Result<Moved, Refusal> {
        if self.parent.is_some() {
            return self.reserve_nested(memory, slot);
        }
        // A span begun on a connection, stream or view (the common case): one level, no
        // gathering.
        let dag = self.dag.as_ref();
        let limit = if self.limit.is_pinned() {
            self.limit.memory()
        } else {
            dag.memory_limit()
        };
        let moved = dag
            .reserve_for_span(memory, slot)
            .map_err(|refusal| self.refused_above(refusal, memory))?;
        if let Err(refused) = self.own.commit(memory, limit, 0) {
            dag.release_for_span(memory.bytes, slot);
            return Err(self.refused_at_level(0, self, refused, memory));
        }
        Ok(moved)
    }

    /// [`reserve_memory`](Self::reserve_memory) through a span begun on a span.
    fn reserve_nested(&self, memory: Memory, slot: Slot) -> Result<Moved, Refusal> {
        let levels = Levels::of(self);
        let moved = self
            .dag
            .as_ref()
            .reserve_for_span(memory, slot)
            .map_err(|refusal| self.refused_above(refusal, memory))?;
        for index in (0..levels.len).rev() {
            let Some((level, limit)) = levels.get(index) else {
                continue;
            };
            if let Err(refused) = level.own.commit(memory, limit, 0) {
                // Give back what the outer levels and the anchor took (a rollback: not a
                // change of the connection's memory that anyone saw).
                level.release_above(memory.bytes, slot);
                return Err(self.refused_at_level(index, level, refused, memory));
            }
        }
        Ok(moved)
    }

    /// The refusal of a reservation that the anchor's walk refused: a level whose own state
    /// or limit refuses comes first in go's order; else the anchor's refusal, named after the
    /// anchor where it named "itself".
    #[cold]
    fn refused_above(&self, refusal: Refusal, memory: Memory) -> Refusal {
        let levels = Levels::of(self);
        self.first_own_refusal(&levels, memory)
            .unwrap_or_else(|| match refusal.by {
                RefusedBy::Itself => Refusal {
                    by: RefusedBy::Other(self.dag.as_ref().scope().name()),
                    ..refusal
                },
                RefusedBy::Other(_) => refusal,
            })
    }

    /// The refusal of a reservation that the own word of `level` (`index` levels out from
    /// this span) refused, after the rollback.
    #[cold]
    fn refused_at_level(
        &self,
        index: usize,
        level: &SpanNode,
        refused: OwnRefusal,
        memory: Memory,
    ) -> Refusal {
        let levels = Levels::of(self);
        if let Some(first) = self.first_own_refusal(&levels, memory) {
            return first;
        }
        let scope = (index > 0).then_some(ScopeRef::Span(level));
        match refused {
            OwnRefusal::Limit(hit) => Refusal::limit(
                scope.unwrap_or(ScopeRef::Span(self)),
                index == 0,
                hit,
                Asked::Memory(memory),
            ),
            OwnRefusal::Closed | OwnRefusal::Moved => Refusal::closed(scope),
        }
    }

    /// The first level, from the span outwards, that is closed or whose own limit refuses
    /// `memory` now (go checks each level's own state and limit before its owner's).
    #[cold]
    fn first_own_refusal(&self, levels: &Levels<'_>, memory: Memory) -> Option<Refusal> {
        (0..levels.len).find_map(|index| {
            let (level, limit) = levels.get(index)?;
            let scope = ScopeRef::Span(level);
            if level.own.peek().is_closed() {
                return Some(Refusal::closed((index > 0).then_some(scope)));
            }
            let hit = level.own.refuses(memory, limit)?;
            Some(Refusal::limit(
                scope,
                index == 0,
                hit,
                Asked::Memory(memory),
            ))
        })
    }

    /// Releases up to `bytes` from the span and what it reports to: what the span itself
    /// gave back, and how the connection at the root changed, if it did.
    #[inline]
    pub(crate) fn release_memory(&self, bytes: u64, slot: Slot) -> Moved {
        let Some(released) = self.own.release(bytes) else {
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

    /// Gives back `bytes`, which this span held, from the levels outside it (each clamped at
    /// what it holds) and then from the anchor; stops at a closed level (its close gave
    /// everything back). Returns how the connection at the root changed, if it did. A loop
    /// over the levels, outwards: no gathering, no stack.
    #[inline]
    fn release_above(&self, bytes: u64, slot: Slot) -> Option<(u64, u64)> {
        let mut bytes = bytes;
        let mut level = self.parent.as_deref();
        while let Some(span) = level {
            bytes = span.own.release(bytes)?.taken;
            level = span.parent.as_deref();
        }
        if bytes == 0 {
            return None;
        }
        self.dag.as_ref().release_for_span(bytes, slot).conn
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

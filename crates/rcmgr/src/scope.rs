//! The scope graph: [`Scope`] (one scope's counters and limit), [`Node`] (a scope with the
//! links to its parents), [`Root`] (the fixed scopes, the limits and the registries) and
//! [`ScopeCtx`], the view of one scope that the accounting walks take.
//!
//! Ownership runs from children to parents: a stream holds its peer, protocol and service
//! nodes; a span holds its owner; every node reaches the [`Root`]. The root's registries hold
//! the peer, protocol and service nodes, which hold the root back; the manager breaks that
//! cycle by clearing the registries when the last [`ResourceManager`](crate::ResourceManager)
//! clone is dropped.

use std::sync::Arc as NameArc;

use libp2p_identity::PeerId;

use crate::{
    counters::Counters,
    edges::{Edge, EdgeSet},
    gate::Gate,
    groups::{Group, GroupId, Groups},
    limit_cell::LimitCell,
    limits::{BaseLimit, ConcreteLimitConfig, LimitKey},
    name::ScopeName,
    observe::Observer,
    shards::Shards,
    stat::ScopeStat,
    sync::{
        Arc, AtomicBool, AtomicU8, AtomicU64, CachePadded, LimitSlot, OnceSlot, Ordering, Registry,
    },
};

/// What kind of scope this is, with what its name and limit need. (The group ids are read
/// only by the trace, which loom builds leave out.)
#[derive(Debug)]
#[cfg_attr(rcmgr_loom, allow(dead_code))]
pub(crate) enum Kind {
    System,
    Transient,
    AllowlistedSystem,
    AllowlistedTransient,
    /// A service scope, with its place in the service table (how traces name it cheaply).
    Service(NameArc<str>, GroupId),
    ServicePeer(NameArc<str>, GroupId, PeerId),
    /// A protocol scope, with its place in the protocol table.
    Protocol(NameArc<str>, GroupId),
    ProtocolPeer(NameArc<str>, GroupId, PeerId),
    Peer(PeerId),
    Conn(u64),
    Stream(u64),
    Span(u64),
}

/// One scope's accounting state: counters, limit cache and bookkeeping flags.
#[derive(Debug)]
pub(crate) struct Scope {
    pub(crate) counters: Counters,
    /// The pools of a scope every thread shares (fixed, protocol and service scopes): its
    /// counters then hold a budget, usage plus leased quota (see [`crate::shards`]).
    pub(crate) shards: Option<Box<Shards>>,
    pub(crate) limit: LimitCell,
    pub(crate) kind: Kind,
    /// The number the next span begun on this scope gets.
    next_span: AtomicU64,
    /// Set by `set_limit` on a registry scope: collection keeps it forever (go's "sticky").
    pub(crate) sticky: AtomicBool,
    /// Collection passes that found this registry scope idle in a row.
    pub(crate) idle_passes: AtomicU8,
}

impl Scope {
    pub(crate) fn new(kind: Kind, edges: EdgeSet, limit: LimitCell) -> Self {
        Scope {
            counters: Counters::new(edges),
            shards: None,
            limit,
            kind,
            next_span: AtomicU64::new(1),
            sticky: AtomicBool::new(false),
            idle_passes: AtomicU8::new(0),
        }
    }

    /// Shares this scope's counters out to per-thread pools (see [`crate::shards`]).
    pub(crate) fn sharded(mut self) -> Self {
        self.shards = Some(Box::new(Shards::new()));
        self
    }

    /// What the scope holds: each counter exact at the moment it was read; for a sharded
    /// scope, its budget less what the pools hold unused.
    pub(crate) fn stat(&self) -> ScopeStat {
        let counters = self.counters.stat();
        match &self.shards {
            Some(shards) => shards.usage(counters),
            None => counters,
        }
    }

    /// Whether nothing at all is held, memory included.
    pub(crate) fn is_idle(&self) -> bool {
        self.stat().is_empty()
    }

    pub(crate) fn next_span_index(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed; nothing is published.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }

    /// The configuration entry this scope's limit comes from, or `None` when it follows
    /// another cache (connections, streams) or its owner (spans).
    fn limit_key(&self) -> Option<LimitKey<'_>> {
        Some(match &self.kind {
            Kind::System => LimitKey::System,
            Kind::Transient => LimitKey::Transient,
            Kind::AllowlistedSystem => LimitKey::AllowlistedSystem,
            Kind::AllowlistedTransient => LimitKey::AllowlistedTransient,
            Kind::Service(name, _) => LimitKey::Service(name),
            Kind::ServicePeer(name, _, _) => LimitKey::ServicePeer(name),
            Kind::Protocol(name, _) => LimitKey::Protocol(name),
            Kind::ProtocolPeer(name, _, _) => LimitKey::ProtocolPeer(name),
            Kind::Peer(peer) => LimitKey::Peer(peer),
            Kind::Conn(_) | Kind::Stream(_) | Kind::Span(_) => return None,
        })
    }
}

/// A protocol or service scope (by id: it lives as long as the manager) together with the
/// per-peer scope a stream uses inside it (referenced: it is collected when idle).
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) group: GroupId,
    pub(crate) member: Arc<Node>,
}

/// How a non-fixed scope reaches its parents and the root.
#[derive(Debug)]
pub(crate) enum Links {
    /// Peer, protocol-peer and service-peer scopes.
    Leaf { root: Arc<Root> },
    /// A connection; its peer is known after `set_peer`.
    Conn {
        root: Arc<Root>,
        peer: OnceSlot<Arc<Node>>,
    },
    /// A stream; its protocol and service are known after `set_protocol` / `set_service`.
    Stream {
        peer: Arc<Node>,
        protocol: OnceSlot<Attachment>,
        service: OnceSlot<Attachment>,
    },
    /// A span: reservations pass through its owner.
    Span { owner: ScopeRef },
}

/// A scope that is not one of the root's fixed scopes.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) scope: Scope,
    pub(crate) links: Links,
}

impl Node {
    /// A node whose limit is resolved on first use (keyed scopes).
    pub(crate) fn new(kind: Kind, edges: EdgeSet, links: Links) -> Self {
        Node::with_limit(kind, edges, links, LimitCell::new())
    }

    /// A node that starts with `limit` cached (connections, streams and spans, which take the
    /// limit in force when they are created).
    pub(crate) fn with_limit(kind: Kind, edges: EdgeSet, links: Links, limit: LimitCell) -> Self {
        Node {
            scope: Scope::new(kind, edges, limit),
            links,
        }
    }

    pub(crate) fn root(&self) -> &Arc<Root> {
        match &self.links {
            Links::Leaf { root } | Links::Conn { root, .. } => root,
            Links::Stream { peer, .. } => peer.root(),
            Links::Span { owner } => owner.root(),
        }
    }

    pub(crate) fn ctx(&self) -> ScopeCtx<'_> {
        ScopeCtx {
            root: self.root(),
            scope: &self.scope,
            links: Some(&self.links),
        }
    }
}

/// The two limits the root caches for scopes that are not looked up by key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shared {
    Conn,
    Stream,
}

/// The root's fixed scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fixed {
    System,
    Transient,
    AllowlistedSystem,
    AllowlistedTransient,
}

/// A shared reference to any scope, from which the root can be reached.
#[derive(Clone, Debug)]
pub(crate) enum ScopeRef {
    Fixed(Arc<Root>, Fixed),
    /// A protocol or service scope.
    Group(Arc<Root>, Arc<Group>),
    Node(Arc<Node>),
}

impl ScopeRef {
    pub(crate) fn root(&self) -> &Arc<Root> {
        match self {
            ScopeRef::Fixed(root, _) | ScopeRef::Group(root, _) => root,
            ScopeRef::Node(node) => node.root(),
        }
    }

    pub(crate) fn ctx(&self) -> ScopeCtx<'_> {
        match self {
            ScopeRef::Fixed(root, which) => ScopeCtx {
                root,
                scope: root.fixed(*which),
                links: None,
            },
            ScopeRef::Group(root, group) => ScopeCtx {
                root,
                scope: &group.scope,
                links: None,
            },
            ScopeRef::Node(node) => node.ctx(),
        }
    }
}

/// One scope as the accounting walks see it: the scope, the links to its parents (`None` for
/// the fixed scopes, whose parents are fixed too) and the root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopeCtx<'a> {
    pub(crate) root: &'a Root,
    pub(crate) scope: &'a Scope,
    pub(crate) links: Option<&'a Links>,
}

impl<'a> ScopeCtx<'a> {
    pub(crate) fn is(&self, other: &ScopeCtx<'_>) -> bool {
        std::ptr::eq(self.scope, other.scope)
    }

    /// The owner of a span.
    pub(crate) fn owner(&self) -> Option<ScopeCtx<'a>> {
        match self.links {
            Some(Links::Span { owner }) => Some(owner.ctx()),
            _ => None,
        }
    }

    /// The scope `levels` steps up the owner chain (fewer if the chain is shorter).
    pub(crate) fn ancestor(mut self, levels: usize) -> ScopeCtx<'a> {
        for _ in 0..levels {
            match self.owner() {
                Some(owner) => self = owner,
                None => break,
            }
        }
        self
    }

    /// The parent scope behind one edge. `None` only if the edge's slot has not been set,
    /// which the transfer protocol never lets a reader see (the slot is set before the edge
    /// set naming it is published).
    pub(crate) fn edge(&self, edge: Edge) -> Option<ScopeCtx<'a>> {
        let root = self.root;
        let fixed = |which| {
            Some(ScopeCtx {
                root,
                scope: root.fixed(which),
                links: None,
            })
        };
        let group = |groups: &'a Groups, slot: &'a OnceSlot<Attachment>| {
            let group = groups.get(slot.get()?.group)?;
            Some(ScopeCtx {
                root,
                scope: &group.scope,
                links: None,
            })
        };
        let member = |slot: &'a OnceSlot<Attachment>| slot.get().map(|a| a.member.ctx());
        let registries = &root.registries;
        match (edge, self.links) {
            (Edge::System, _) => fixed(Fixed::System),
            (Edge::Transient, _) => fixed(Fixed::Transient),
            (Edge::AllowlistedSystem, _) => fixed(Fixed::AllowlistedSystem),
            (Edge::AllowlistedTransient, _) => fixed(Fixed::AllowlistedTransient),
            (Edge::Peer, Some(Links::Stream { peer, .. })) => Some(peer.ctx()),
            (Edge::Peer, Some(Links::Conn { peer, .. })) => peer.get().map(|p| p.ctx()),
            (Edge::Protocol, Some(Links::Stream { protocol, .. })) => {
                group(&registries.protocols, protocol)
            }
            (Edge::ProtocolPeer, Some(Links::Stream { protocol, .. })) => member(protocol),
            (Edge::Service, Some(Links::Stream { service, .. })) => {
                group(&registries.services, service)
            }
            (Edge::ServicePeer, Some(Links::Stream { service, .. })) => member(service),
            _ => None,
        }
    }

    pub(crate) fn name(&self) -> ScopeName {
        match &self.scope.kind {
            Kind::System => ScopeName::System,
            Kind::Transient => ScopeName::Transient,
            Kind::AllowlistedSystem => ScopeName::AllowlistedSystem,
            Kind::AllowlistedTransient => ScopeName::AllowlistedTransient,
            Kind::Service(name, _) => ScopeName::Service(NameArc::clone(name)),
            Kind::ServicePeer(name, _, peer) => ScopeName::ServicePeer {
                service: NameArc::clone(name),
                peer: *peer,
            },
            Kind::Protocol(name, _) => ScopeName::Protocol(NameArc::clone(name)),
            Kind::ProtocolPeer(name, _, peer) => ScopeName::ProtocolPeer {
                protocol: NameArc::clone(name),
                peer: *peer,
            },
            Kind::Peer(peer) => ScopeName::Peer(*peer),
            Kind::Conn(n) => ScopeName::Conn(*n),
            Kind::Stream(n) => ScopeName::Stream(*n),
            Kind::Span(index) => ScopeName::Span {
                owner: Box::new(self.owner().map_or(ScopeName::System, |o| o.name())),
                index: *index,
            },
        }
    }

    /// The limit in force for this scope now.
    #[inline]
    pub(crate) fn limit(&self) -> BaseLimit {
        self.limit_at(self.root.generation())
    }

    /// The limit in force for this scope in `generation` (read once per operation by the
    /// walks, so that each scope on the path costs only its own cache read).
    #[inline]
    pub(crate) fn limit_at(&self, generation: u64) -> BaseLimit {
        if let Some(limit) = self.scope.limit.get(generation) {
            return limit;
        }
        // A span that `set_limit` did not pin follows its owner's limit.
        match self.owner() {
            Some(owner) => owner.limit_at(generation),
            None => self.refresh_limit(generation),
        }
    }

    /// The memory limit in force for this scope in `generation`: one field of the cache
    /// instead of eight, for the reservations that are made most often.
    #[inline]
    pub(crate) fn memory_limit_at(&self, generation: u64) -> u64 {
        if let Some(memory) = self.scope.limit.memory(generation) {
            return memory;
        }
        match self.owner() {
            Some(owner) => owner.memory_limit_at(generation),
            None => self.refresh_limit(generation).memory,
        }
    }

    /// Resolves the scope's limit for `generation` and caches it in the scope's cell: keyed
    /// and fixed scopes from their entry in the snapshot, connections and streams from the
    /// shared cache of all connections (streams). (Spans never get here: they read their
    /// owner's limit every time and cache nothing, so that a pin on the owner reaches them at
    /// once.)
    #[cold]
    fn refresh_limit(&self, generation: u64) -> BaseLimit {
        let limit = match (self.scope.limit_key(), &self.scope.kind) {
            (Some(key), _) => self.root.resolve(key),
            (None, Kind::Conn(_)) => self.root.shared_limit(Shared::Conn, generation),
            (None, Kind::Stream(_)) => self.root.shared_limit(Shared::Stream, generation),
            (None, _) => return BaseLimit::block_all(),
        };
        self.scope.limit.refresh(generation, limit);
        limit
    }
}

/// Registries of the scopes that are looked up by key.
#[derive(Debug)]
pub(crate) struct Registries {
    pub(crate) peers: Registry<PeerId, Arc<Node>>,
    pub(crate) protocols: Groups,
    pub(crate) services: Groups,
}

/// What every scope can reach: the fixed scopes, the limits, the id counters and the
/// registries.
#[derive(Debug)]
pub(crate) struct Root {
    /// The fixed scopes are touched by almost every operation on every thread: each sits on
    /// cache lines of its own so that they do not falsely share with each other or with the
    /// read-mostly fields below. (Per-connection and per-stream scopes are not padded: they
    /// are mostly used by one thread, and the 128-byte alignment would make every allocation
    /// of one an aligned allocation, several times slower.)
    pub(crate) system: CachePadded<Scope>,
    pub(crate) transient: CachePadded<Scope>,
    pub(crate) allowlisted_system: CachePadded<Scope>,
    pub(crate) allowlisted_transient: CachePadded<Scope>,
    /// The cached limit of every connection scope that has not pinned its own.
    conn_limit: LimitCell,
    /// The cached limit of every stream scope that has not pinned its own.
    stream_limit: LimitCell,
    limits: LimitSlot<ConcreteLimitConfig>,
    /// Bumped after every limit swap; scopes compare their cache tag with it.
    generation: CachePadded<AtomicU64>,
    next_conn: CachePadded<AtomicU64>,
    next_stream: CachePadded<AtomicU64>,
    /// Tells this root apart from every other one of the process (for the id blocks).
    instance: u64,
    pub(crate) registries: Registries,
    /// What `open_connection` checks before the scopes: address limits and the allowlist.
    pub(crate) gate: Gate,
    /// The metrics reporter and the trace, where installed.
    pub(crate) observer: Observer,
}

/// A fixed scope of the root, on cache lines of its own, its counters sharded.
fn fixed(kind: Kind, edges: EdgeSet) -> CachePadded<Scope> {
    CachePadded::new(Scope::new(kind, edges, LimitCell::new()).sharded())
}

impl Root {
    pub(crate) fn new(limits: ConcreteLimitConfig, gate: Gate) -> Self {
        let system = EdgeSet::of(&[Edge::System]);
        let allowlisted_system = EdgeSet::of(&[Edge::AllowlistedSystem]);
        Root {
            system: fixed(Kind::System, EdgeSet::NONE),
            transient: fixed(Kind::Transient, system),
            allowlisted_system: fixed(Kind::AllowlistedSystem, EdgeSet::NONE),
            allowlisted_transient: fixed(Kind::AllowlistedTransient, allowlisted_system),
            conn_limit: LimitCell::new(),
            stream_limit: LimitCell::new(),
            limits: LimitSlot::new(Arc::new(limits)),
            generation: CachePadded::new(AtomicU64::new(1)),
            next_conn: CachePadded::new(AtomicU64::new(1)),
            next_stream: CachePadded::new(AtomicU64::new(1)),
            instance: ids::new_instance(),
            registries: Registries {
                peers: Registry::new(),
                protocols: Groups::new(),
                services: Groups::new(),
            },
            gate,
            observer: Observer::default(),
        }
    }

    pub(crate) fn fixed(&self, which: Fixed) -> &Scope {
        match which {
            Fixed::System => &self.system,
            Fixed::Transient => &self.transient,
            Fixed::AllowlistedSystem => &self.allowlisted_system,
            Fixed::AllowlistedTransient => &self.allowlisted_transient,
        }
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        // Ordering: Acquire — pairs with the Release increment in `set_limits`, so a scope that
        // sees the new generation also sees the snapshot stored before it.
        self.generation.load(Ordering::Acquire)
    }

    /// Resolves `key` in the current snapshot.
    fn resolve(&self, key: LimitKey<'_>) -> BaseLimit {
        self.limits.with(|limits| limits.resolve(key))
    }

    /// The limit every connection (or stream) scope shares unless it pinned its own, for
    /// `generation`, from the cache the root keeps of it.
    fn shared_limit(&self, which: Shared, generation: u64) -> BaseLimit {
        let (cell, key) = match which {
            Shared::Conn => (&self.conn_limit, LimitKey::Conn),
            Shared::Stream => (&self.stream_limit, LimitKey::Stream),
        };
        if let Some(limit) = cell.get(generation) {
            return limit;
        }
        let limit = self.resolve(key);
        cell.refresh(generation, limit);
        limit
    }

    /// A limit cache for a new connection (or stream) scope, already holding the limit in
    /// force.
    pub(crate) fn new_limit_cell(&self, which: Shared) -> LimitCell {
        let generation = self.generation();
        LimitCell::preset(generation, self.shared_limit(which, generation))
    }

    pub(crate) fn limits(&self) -> Arc<ConcreteLimitConfig> {
        self.limits.load_full()
    }

    /// Installs a new limit snapshot: one store, then one generation bump.
    pub(crate) fn set_limits(&self, limits: ConcreteLimitConfig) {
        self.gate.set_limits(&limits);
        self.limits.store(Arc::new(limits));
        // Ordering: Release — publishes the store above to every `generation()` Acquire load
        // that reads the new value.
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        ids::next(self.instance, &self.next_conn, ids::Counter::Conn)
    }

    pub(crate) fn next_stream_id(&self) -> u64 {
        ids::next(self.instance, &self.next_stream, ids::Counter::Stream)
    }
}

mod ids {
    //! Connection and stream numbers, handed out in blocks per thread so that threads opening
    //! streams at once do not all write one counter's cache line. One thread alone gets 1, 2,
    //! 3, ... as go numbers them; several threads get distinct numbers from distinct blocks.

    use crate::sync::{AtomicU64, Ordering};

    /// Which of a root's two counters.
    #[derive(Clone, Copy)]
    pub(super) enum Counter {
        Conn,
        Stream,
    }

    /// Numbers a thread takes from a counter at once.
    #[cfg(not(rcmgr_loom))]
    const BLOCK: u64 = 256;

    /// A number no other root of this process has (under loom, where ids come straight from
    /// the counters, it is not needed).
    pub(super) fn new_instance() -> u64 {
        #[cfg(not(rcmgr_loom))]
        {
            static INSTANCES: AtomicU64 = AtomicU64::new(1);
            // Ordering: Relaxed — only distinct numbers are needed.
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        }
        #[cfg(rcmgr_loom)]
        {
            0
        }
    }

    /// The next number of `counter` (a root's `next_conn` or `next_stream`; `instance` is the
    /// root's).
    pub(super) fn next(instance: u64, counter: &AtomicU64, which: Counter) -> u64 {
        #[cfg(not(rcmgr_loom))]
        {
            use std::cell::Cell;
            /// A thread's current block: the root it came from, the next number and the end.
            type Block = Cell<(u64, u64, u64)>;
            thread_local! {
                static BLOCKS: [Block; 2] = const { [Cell::new((0, 0, 0)), Cell::new((0, 0, 0))] };
            }
            let owner = instance;
            BLOCKS.with(|blocks| {
                let block = &blocks[which as usize];
                let (from, next, end) = block.get();
                if from == owner && next < end {
                    block.set((from, next + 1, end));
                    return next;
                }
                // Ordering: Relaxed — only distinct numbers are needed.
                let start = counter.fetch_add(BLOCK, Ordering::Relaxed);
                block.set((owner, start + 1, start + BLOCK));
                start
            })
        }
        #[cfg(rcmgr_loom)]
        {
            let _ = (instance, which);
            // Ordering: Relaxed — only distinct numbers are needed.
            counter.fetch_add(1, Ordering::Relaxed)
        }
    }
}

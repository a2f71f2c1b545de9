//! The scope graph: which scopes exist, which parents each one reports to, and how they are
//! found, kept and collected.
//!
//! | module | what it is |
//! |---|---|
//! | this file | [`Root`]: the four fixed scopes, the limits and their swaps, the registries, the id counters |
//! | [`peers`] | [`PeerNode`](peers::PeerNode): a peer's scope and its scopes within protocols and services; the registry, the per-thread cache, collection |
//! | [`groups`] | [`Groups`](groups::Groups): protocol and service scopes in reusable slots, found by name; collection |
//! | [`conn`] | [`ConnNode`](conn::ConnNode): a connection, its stages and its walks (open, `set_peer`, memory, close) |
//! | [`stream`] | [`StreamNode`](stream::StreamNode): a stream, its stages and its walks (open, `set_protocol`, `set_service`, memory, close) |
//! | [`span`] | [`SpanNode`](span::SpanNode) and [`Anchor`](span::Anchor): spans, and a counted reference to any scope (what spans, guards and views hold) |
//! | [`scope`] | [`ScopeRef`](scope::ScopeRef), the one identity of a scope (its name, usage, limit, counter words), and the naming of refusals; above every node |
//! | [`fault`] | what a refusal says, naming no node: [`Fault`](fault::Fault) as the hot paths return it, [`Refusal`](fault::Refusal) once named; a leaf |
//! | [`viewed`] | [`Viewed`](viewed::Viewed): what a scope with spans keeps for them (its direct bytes, its span numbers); a leaf the nodes embed |
//! | [`staged`] | what connections and streams share: the walks through a scope whose parents depend on its stage, and the frame of a transfer |
//! | [`segments`] | append-only storage at stable indices |
//! | [`ids`] | connection and stream numbers from per-thread blocks |
//!
//! The modules form layers, no module using one above it: [`scope`] uses the nodes
//! ([`span`] over [`conn`] and [`stream`], both over [`staged`]; [`peers`] and [`groups`]
//! below them), and every one of them uses the leaves ([`fault`], [`viewed`], [`segments`],
//! [`ids`]). So a node reports a refusal as data that names no scope, and [`scope`] (or the
//! handles, above the graph) names it, on the cold path.
//!
//! A connection or stream *resolves its path once*: when it opens and at each transfer it
//! fixes which parents it reports to (a stage in its own memory word, and where its parents
//! are in its node), so a reservation looks nothing up: it builds the slice of parents from
//! the node and hands it to [`crate::account::path`].
//!
//! The root also holds the connection gate and the observer. Neither knows the graph (both
//! sit below it); the graph only keeps them where every handle can reach them, and never
//! calls them: the handles do.

pub(crate) mod conn;
pub(crate) mod fault;
pub(crate) mod groups;
pub(crate) mod ids;
pub(crate) mod peers;
pub(crate) mod scope;
pub(crate) mod segments;
pub(crate) mod span;
pub(crate) mod staged;
pub(crate) mod stream;
pub(crate) mod viewed;

use std::sync::Arc as NameArc;

use libp2p_identity::PeerId;

use self::{
    groups::{GroupKind, GroupRef, Groups},
    peers::Peers,
    viewed::Viewed,
};
use crate::{
    account::{LimitCell, Sharded},
    gate::Gate,
    limits::{BaseLimit, ConcreteLimitConfig},
    observe::Observer,
    sync::{Arc, AtomicU64, CachePadded, LimitSlot, Mutex, Ordering},
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
    /// The four, in the order of their indices.
    pub(crate) const ALL: [Fixed; 4] = [
        Fixed::System,
        Fixed::Transient,
        Fixed::AllowlistedSystem,
        Fixed::AllowlistedTransient,
    ];
}

/// What every scope of a manager can reach: the fixed scopes, the limits, the registries and
/// the id counters (and, for the handles, the gate and the observer).
#[derive(Debug)]
pub(crate) struct Root {
    /// The fixed scopes are touched by almost every operation on every thread: each sits on
    /// cache lines of its own. (Per-connection and per-stream scopes are not padded: they are
    /// mostly used by one thread, and the 128-byte alignment would make every allocation of
    /// one an aligned allocation, several times slower.)
    fixed: [CachePadded<FixedScope>; 4],
    /// The limit of every connection scope that has not pinned its own.
    pub(crate) conn_limit: LimitCell,
    /// The limit of every stream scope that has not pinned its own.
    pub(crate) stream_limit: LimitCell,
    limits: LimitSlot<ConcreteLimitConfig>,
    /// Serializes limit swaps.
    swapping: Mutex<()>,
    pub(crate) peers: Peers,
    /// The group tables are boxed: each holds its first slots inline (kilobytes), and a
    /// `Root` is built on the stack before it moves into its `Arc`; unboxed, building one
    /// overflowed the small stacks that loom runs its models on.
    pub(crate) protocols: Box<Groups>,
    pub(crate) services: Box<Groups>,
    pub(crate) ids: ids::Ids,
    /// What `open_connection` checks before the scopes.
    pub(crate) gate: Gate,
    /// The metrics reporter and the trace, where installed.
    pub(crate) observer: Observer,
    /// Bytes callers released beyond what the scope they released on held.
    over_released: AtomicU64,
}

impl Root {
    pub(crate) fn new(limits: ConcreteLimitConfig, gate: Gate, observer: Observer) -> Self {
        let fixed = |limit: BaseLimit| {
            CachePadded::new(FixedScope {
                scope: Sharded::new(limit),
                viewed: Viewed::new(),
            })
        };
        Root {
            fixed: [
                fixed(limits.system),
                fixed(limits.transient),
                fixed(limits.allowlisted_system),
                fixed(limits.allowlisted_transient),
            ],
            conn_limit: LimitCell::new(limits.conn),
            stream_limit: LimitCell::new(limits.stream),
            limits: LimitSlot::new(Arc::new(limits)),
            swapping: Mutex::new(()),
            peers: Peers::new(),
            protocols: Box::new(Groups::new(GroupKind::Protocol)),
            services: Box::new(Groups::new(GroupKind::Service)),
            ids: ids::Ids::new(),
            gate,
            observer,
            over_released: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` a caller released beyond what its scope held.
    pub(crate) fn count_over_release(&self, bytes: u64) {
        // Ordering: Relaxed — a statistic.
        self.over_released.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes callers released beyond what the scope they released on held, so far.
    pub(crate) fn over_released(&self) -> u64 {
        // Ordering: Relaxed — a statistic.
        self.over_released.load(Ordering::Relaxed)
    }

    /// One of the fixed scopes.
    #[inline]
    pub(crate) fn fixed(&self, which: Fixed) -> &Sharded {
        &self.fixed[which as usize].scope
    }

    /// What views of a fixed scope keep on it.
    pub(crate) fn fixed_viewed(&self, which: Fixed) -> &Viewed {
        &self.fixed[which as usize].viewed
    }

    /// The protocol or the service table.
    #[inline]
    pub(crate) fn groups(&self, kind: GroupKind) -> &Groups {
        match kind {
            GroupKind::Protocol => &self.protocols,
            GroupKind::Service => &self.services,
        }
    }

    /// Reads the limit snapshot in force.
    pub(crate) fn limit_of<R>(&self, read: impl FnOnce(&ConcreteLimitConfig) -> R) -> R {
        self.limits.with(read)
    }

    /// The limit snapshot in force.
    pub(crate) fn limits(&self) -> Arc<ConcreteLimitConfig> {
        self.limits.load_full()
    }

    /// The limit of each peer's scope within a protocol or service (the one it gets when it
    /// is made).
    pub(crate) fn member_limit(&self, kind: GroupKind, name: &str) -> BaseLimit {
        self.limit_of(|limits| match kind {
            GroupKind::Protocol => limits.protocol_peer_limits(name),
            GroupKind::Service => limits.service_peer_limits(name),
        })
    }

    /// The limit of a protocol or service scope.
    pub(crate) fn group_limit(&self, kind: GroupKind, name: &str) -> BaseLimit {
        self.limit_of(|limits| match kind {
            GroupKind::Protocol => limits.protocol_limits(name),
            GroupKind::Service => limits.service_limits(name),
        })
    }

    /// Installs new limits: stores the snapshot, then writes each scope's new limit into its
    /// cell (pinned cells keep theirs), one swap at a time. Scopes made meanwhile read their
    /// limit under the same locks the swap takes, so none keeps an older one.
    pub(crate) fn set_limits(&self, limits: ConcreteLimitConfig) {
        let _swapping = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        self.gate.set_limits(&limits);
        let limits = Arc::new(limits);
        self.limits.store(Arc::clone(&limits));
        for (which, limit) in [
            (Fixed::System, limits.system),
            (Fixed::Transient, limits.transient),
            (Fixed::AllowlistedSystem, limits.allowlisted_system),
            (Fixed::AllowlistedTransient, limits.allowlisted_transient),
        ] {
            self.fixed(which).limit().set(limit);
        }
        self.conn_limit.set(limits.conn);
        self.stream_limit.set(limits.stream);
        self.protocols
            .set_limits(|name| limits.protocol_limits(name));
        self.services.set_limits(|name| limits.service_limits(name));
        self.peers.set_limits(
            |peer| limits.peer_limits(peer),
            |kind, group| {
                let groups = self.groups(kind);
                groups.get(group.slot).filter(|g| g.is(group.incarnation))?;
                let name = groups.name_of(group.slot);
                Some(match kind {
                    GroupKind::Protocol => limits.protocol_peer_limits(&name),
                    GroupKind::Service => limits.service_peer_limits(&name),
                })
            },
        );
    }

    /// Whether `group` names a protocol or service scope still in use (not collected).
    pub(crate) fn is_live(&self, kind: GroupKind, group: GroupRef) -> bool {
        self.groups(kind)
            .get(group.slot)
            .is_some_and(|g| g.is(group.incarnation) && !g.scope.is_stopped())
    }

    /// One collection pass over every registry: members, peers, then protocols and services.
    pub(crate) fn collect(&self) -> Collected {
        let peers = self.peers.collect(|kind, group| self.is_live(kind, group));
        Collected {
            peers,
            protocols: self.protocols.collect(),
            services: self.services.collect(),
        }
    }
}

/// A fixed scope and what its views keep on it.
#[derive(Debug)]
struct FixedScope {
    scope: Sharded,
    viewed: Viewed,
}

/// What one collection pass removed.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) peers: Vec<PeerId>,
    pub(crate) protocols: Vec<NameArc<str>>,
    pub(crate) services: Vec<NameArc<str>>,
}

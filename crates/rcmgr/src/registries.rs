//! The keyed scopes: lookup of peer, protocol and service scopes and of the per-peer scopes
//! inside protocols and services, and epoch-based collection of the idle peer and per-peer
//! scopes. (Protocol and service scopes themselves live as long as the manager: see
//! [`crate::groups`].)
//!
//! # References and collection
//!
//! A peer or per-peer scope lives in its registry as an `Arc<Node>`; every other `Arc` to it
//! is a reference (a connection or stream that reports to it, a span on it, a view handle). A
//! lookup clones the `Arc` while it holds the registry shard's guard, and collection removes
//! an entry only under that shard's exclusive guard and only if the registry's `Arc` is the
//! last one. So a scope with a reference is never removed, and a lookup can never get a scope
//! that collection is removing: there is never more than one scope per key.
//!
//! Collection also leaves any scope that holds anything (memory included: go's quirk 6 is
//! fixed), any scope pinned by `set_limit`, and any scope that was not already idle in the
//! previous pass: an entry is removed only after two consecutive idle passes, and a lookup in
//! between starts its count again.
//!
//! # Synchronization
//!
//! `Arc::strong_count` is a Relaxed load. When it reads 1, the `Release` decrement of the
//! reference that was dropped last is what it read, so the `fence(Acquire)` that follows
//! synchronizes with it: the counter updates made through that reference (its releases)
//! happen-before the idle check that follows.

use std::sync::Arc as NameArc;

use libp2p_identity::PeerId;

use crate::{
    edges::{Edge, EdgeSet},
    groups::{Group, GroupId, Groups},
    limit_cell::LimitCell,
    observe,
    scope::{Kind, Links, Node, Root, Scope, ScopeCtx},
    sync::{Arc, Ordering, Registry, fence},
};

/// The passes in a row an entry must be found idle before it is removed.
const IDLE_PASSES_TO_COLLECT: u8 = 2;

/// Marks a scope as in use for the collector (a lookup restarts its idle count).
fn touch(node: &Node) {
    // Ordering: Relaxed — a hint for the collector, which re-checks everything it relies on
    // under the exclusive guard.
    if node.scope.idle_passes.load(Ordering::Relaxed) != 0 {
        node.scope.idle_passes.store(0, Ordering::Relaxed);
    }
}

/// The scope of `peer`, created if needed.
pub(crate) fn peer(root: &Arc<Root>, peer: &PeerId) -> Arc<Node> {
    let (node, created) = root.registries.peers.get_or_insert_with(peer, || {
        let node = Node::new(
            Kind::Peer(*peer),
            EdgeSet::of(&[Edge::System]),
            Links::Leaf {
                root: Arc::clone(root),
            },
        );
        (*peer, Arc::new(node))
    });
    if created {
        observe::trace_created(node.ctx());
    }
    touch(&node);
    node
}

/// The id of the scope of `protocol`, and the scope, created if needed.
pub(crate) fn protocol<'a>(root: &'a Root, protocol: &str) -> (GroupId, Option<&'a Arc<Group>>) {
    group(root, &root.registries.protocols, protocol, Kind::Protocol)
}

/// The id of the scope of `service`, and the scope, created if needed.
pub(crate) fn service<'a>(root: &'a Root, service: &str) -> (GroupId, Option<&'a Arc<Group>>) {
    group(root, &root.registries.services, service, Kind::Service)
}

fn group<'a>(
    root: &Root,
    groups: &'a Groups,
    name: &str,
    kind: fn(NameArc<str>, GroupId) -> Kind,
) -> (GroupId, Option<&'a Arc<Group>>) {
    let mut created = false;
    let (id, group) = groups.find_or_insert(name, |key, id| {
        created = true;
        new_group(kind(key, id))
    });
    if let Some(group) = group.filter(|_| created) {
        observe::trace_created(ScopeCtx {
            root,
            scope: &group.scope,
            links: None,
        });
    }
    (id, group)
}

/// A protocol or service scope of `kind`, reporting to the system scope, its counters sharded.
pub(crate) fn new_group(kind: Kind) -> Group {
    Group {
        scope: Scope::new(kind, EdgeSet::of(&[Edge::System]), LimitCell::new()).sharded(),
        members: Registry::new(),
    }
}

/// The scope of `peer` within a protocol or service scope, created if needed. It has no
/// edges of its own: a stream reports to it and to the group separately, as in go.
pub(crate) fn member(root: &Arc<Root>, group: &Group, peer: &PeerId) -> Arc<Node> {
    let (node, created) = group.members.get_or_insert_with(peer, || {
        let kind = match &group.scope.kind {
            Kind::Service(name, id) => Kind::ServicePeer(NameArc::clone(name), *id, *peer),
            Kind::Protocol(name, id) => Kind::ProtocolPeer(NameArc::clone(name), *id, *peer),
            // Only protocol and service scopes are groups; the peer's own kind keeps this
            // total.
            _ => Kind::Peer(*peer),
        };
        let links = Links::Leaf {
            root: Arc::clone(root),
        };
        (*peer, Arc::new(Node::new(kind, EdgeSet::NONE, links)))
    });
    if created {
        observe::trace_created(node.ctx());
    }
    touch(&node);
    node
}

/// Whether nothing references a registry entry and it holds nothing. Call under a registry
/// guard: only there is a reference count of 1 stable.
fn is_idle(node: &Arc<Node>) -> bool {
    if Arc::strong_count(node) != 1 {
        return false;
    }
    // Ordering: Acquire fence — see the module docs: the last reference's releases are
    // visible to the checks below.
    fence(Ordering::Acquire);
    // Ordering: Relaxed — `sticky` only ever goes from false to true, and a stale false can
    // only be read for a scope pinned after this pass began.
    !node.scope.sticky.load(Ordering::Relaxed) && node.scope.is_idle()
}

/// How many scopes one collection pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Collected {
    pub(crate) peers: usize,
    pub(crate) protocol_peers: usize,
    pub(crate) service_peers: usize,
}

/// One collection pass over every registry: the peer scopes, and the per-peer scopes inside
/// every protocol and service.
pub(crate) fn collect(root: &Root) -> Collected {
    let _operation = root.observer.operation();
    let mut collected = Collected::default();
    let registries = &root.registries;
    registries.services.for_each(|service| {
        collected.service_peers += sweep(&service.members);
    });
    registries.protocols.for_each(|protocol| {
        collected.protocol_peers += sweep(&protocol.members);
    });
    collected.peers = sweep(&registries.peers);
    root.gate.collect();
    collected
}

/// One pass over one registry: counts idle passes under the shared guards, then removes the
/// entries idle long enough, deciding again under the exclusive guard.
fn sweep<K: std::hash::Hash + Eq + Clone>(registry: &Registry<K, Arc<Node>>) -> usize {
    let mut ripe = Vec::new();
    registry.for_each(|key, node| {
        let passes = &node.scope.idle_passes;
        // Ordering: Relaxed (both) — the count is a hint; removal re-checks idleness under
        // the exclusive guard.
        if is_idle(node) {
            let seen = passes.load(Ordering::Relaxed).saturating_add(1);
            passes.store(seen.min(IDLE_PASSES_TO_COLLECT), Ordering::Relaxed);
            if seen >= IDLE_PASSES_TO_COLLECT {
                ripe.push(key.clone());
            }
        } else {
            passes.store(0, Ordering::Relaxed);
        }
    });
    let removed = ripe
        .into_iter()
        .filter(|key| {
            registry.remove_if(key, |node| {
                // Ordering: Relaxed — as above; a lookup since the scan reset the count.
                let ripe = is_idle(node)
                    && node.scope.idle_passes.load(Ordering::Relaxed) >= IDLE_PASSES_TO_COLLECT;
                if ripe {
                    observe::trace_destroyed(node.ctx());
                }
                ripe
            })
        })
        .count();
    if removed > 0 {
        registry.shrink_if_sparse();
    }
    removed
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use crate::{ConcreteLimitConfig, Direction, ResourceManager};

    #[test]
    fn two_passes_collect_per_peer_scopes_and_protocols_stay() {
        let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
            .gc_interval(std::time::Duration::ZERO)
            .build()
            .expect("builds");
        let peer = libp2p_identity::PeerId::random();
        let mut stream = rm.open_stream(peer, Direction::Inbound).expect("unlimited");
        stream.set_protocol("/x").expect("unlimited");
        let members = || {
            let protocols = &rm.root().registries.protocols;
            let id = protocols.find("/x").expect("the protocol scope exists");
            protocols.get(id).map_or(0, |group| group.members.len())
        };
        rm.gc();
        rm.gc();
        assert_eq!(members(), 1, "a per-peer scope in use is kept");
        drop(stream);
        rm.gc();
        assert_eq!(members(), 1, "one idle pass is not enough");
        rm.gc();
        assert_eq!(members(), 0);
        assert!(rm.list_peers().is_empty());
        assert_eq!(
            rm.list_protocols(),
            ["/x"],
            "protocol scopes live as long as the manager"
        );
    }
}

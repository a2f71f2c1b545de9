//! [`ConnectionScope`]: one connection, from `open_connection` to drop.

use multiaddr::Multiaddr;

use super::PeerScope;
use crate::{
    edges::{Edge, EdgeSet},
    error::Error,
    gate::IpCount,
    observe, registries,
    resource::Direction,
    scope::{Kind, Links, Node, Root, Shared},
    sync::{Arc, OnceSlot},
    walk::{self, Amount, Transfer},
};

/// Which pair of scopes a connection is opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Transient and system.
    Normal,
    /// Allowlisted transient and allowlisted system: only when the normal pair refused and
    /// the endpoint is allowlisted.
    Allowlisted,
}

/// A connection's scope (go's `ConnManagementScope`), returned by
/// [`ResourceManager::open_connection`](crate::ResourceManager::open_connection).
///
/// It starts in the transient scope; [`set_peer`](Self::set_peer) moves it to its peer's
/// scope once the peer is known. Dropping it, or [`done`](Self::done), releases everything it
/// holds, exactly once.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let endpoint = "/ip4/10.0.0.1/tcp/4001".parse()?;
/// let mut conn = rm.open_connection(Direction::Inbound, true, &endpoint)?;
/// assert_eq!(rm.transient().stat().conns_inbound, 1);
/// let peer = rcmgr::PeerId::random();
/// conn.set_peer(peer)?;
/// assert_eq!(rm.transient().stat().conns_inbound, 0);
/// assert_eq!(rm.peer(&peer).stat().fd, 1);
/// drop(conn);
/// assert!(rm.system().stat().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ConnectionScope {
    node: Arc<Node>,
    direction: Direction,
    use_fd: bool,
    endpoint: Multiaddr,
    /// What the connection was counted against by the per-IP limits; released by `done`.
    ip_count: Option<IpCount>,
}

impl ConnectionScope {
    /// Opens a connection scope in the transient scope (or the allowlisted transient scope),
    /// reserving one connection (and a file descriptor if `use_fd`).
    pub(crate) fn open(
        root: &Arc<Root>,
        placement: Placement,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
    ) -> Result<Self, Error> {
        let edges = match placement {
            Placement::Normal => EdgeSet::of(&[Edge::Transient, Edge::System]),
            Placement::Allowlisted => {
                EdgeSet::of(&[Edge::AllowlistedTransient, Edge::AllowlistedSystem])
            }
        };
        let node = Node::with_limit(
            Kind::Conn(root.next_conn_id()),
            edges,
            Links::Conn {
                root: Arc::clone(root),
                peer: OnceSlot::new(),
            },
            root.new_limit_cell(Shared::Conn),
        );
        let (inbound, outbound) = match direction {
            Direction::Inbound => (1, 0),
            Direction::Outbound => (0, 1),
        };
        let amount = Amount::Conns {
            inbound,
            outbound,
            fd: u64::from(use_fd),
        };
        observe::trace_created(node.ctx());
        if let Err(refusal) = walk::reserve_dag(node.ctx(), amount) {
            let err = refusal.into_error(node.ctx());
            observe::trace_destroyed(node.ctx());
            return Err(err);
        }
        Ok(ConnectionScope {
            node: Arc::new(node),
            direction,
            use_fd,
            endpoint: endpoint.clone(),
            ip_count: None,
        })
    }

    /// Hands the connection the per-IP count taken for it, to release when it closes.
    pub(crate) fn hold_ip_count(&mut self, count: Option<IpCount>) {
        self.ip_count = count;
    }

    /// The connection's direction.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let conn = rm.open_connection(Direction::Outbound, false, &"/ip4/1.2.3.4/udp/1/quic-v1".parse()?)?;
    /// assert_eq!(conn.direction(), Direction::Outbound);
    /// assert!(!conn.uses_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the connection holds a file descriptor.
    pub fn uses_fd(&self) -> bool {
        self.use_fd
    }

    /// The remote endpoint the connection was opened with.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let endpoint: rcmgr::Multiaddr = "/ip4/1.2.3.4/tcp/1".parse()?;
    /// let conn = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// assert_eq!(conn.endpoint(), &endpoint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoint(&self) -> &Multiaddr {
        &self.endpoint
    }

    /// Attaches the connection to its peer: everything it holds moves from the transient
    /// scope to the peer's scope (go's `SetPeer`). If the peer's scope refuses, the
    /// connection stays where it was, still usable, and the error names the peer scope
    /// (`peer:<id>: cannot reserve inbound connection: resource limit exceeded`).
    ///
    /// Errors with [`Error::ConnAlreadyAttached`] if a peer was set before, and with
    /// [`Error::ScopeClosed`] after [`done`](Self::done).
    ///
    /// A connection opened in the allowlisted scopes (see
    /// [`is_allowlisted`](Self::is_allowlisted)) whose peer is allowed by neither a general
    /// allowlist entry nor one of that peer's entries, and is not a trusted peer
    /// ([`Allowlist::add_peer`](crate::Allowlist::add_peer)), first moves to the normal system
    /// and transient scopes, as go does. If they refuse, the error names the refusing scope and
    /// the connection is left attached to no scope above it (it still holds its own usage,
    /// released when it is dropped): close it.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.peer_default.conns_inbound = 1;
    /// let rm = ResourceManager::new(limits);
    /// let peer = rcmgr::PeerId::random();
    /// let endpoint = "/ip4/10.0.0.1/tcp/4001".parse()?;
    /// let mut first = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// first.set_peer(peer)?;
    /// let mut second = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// let err = second.set_peer(peer).unwrap_err();
    /// assert_eq!(err.to_string(), format!("peer:{peer}: cannot reserve inbound connection: resource limit exceeded"));
    /// assert!(matches!(first.set_peer(peer), Err(rcmgr::Error::ConnAlreadyAttached)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_peer(&mut self, peer: libp2p_identity::PeerId) -> Result<(), Error> {
        let node = &self.node;
        // A connection node always has connection links; the fallback keeps this total.
        let Links::Conn {
            root, peer: slot, ..
        } = &node.links
        else {
            return Err(Error::ConnAlreadyAttached);
        };
        if slot.get().is_some() {
            return Err(Error::ConnAlreadyAttached);
        }
        let at = node.ctx();
        let observer = &root.observer;
        let _operation = observer.operation();
        let transfer = Transfer::begin(at).map_err(|refusal| refusal.into_error(at))?;
        let mut edges = transfer.edges;
        let allowlist = root.gate.allowlist();
        if edges.contains(Edge::AllowlistedTransient)
            && !allowlist.allowed_peer(&peer)
            && !allowlist.allowed_peer_and_multiaddr(peer, &self.endpoint)
        {
            match move_to_standard(&transfer) {
                Ok(standard) => edges = standard,
                Err(err) => {
                    transfer.finish(EdgeSet::NONE);
                    return Err(err);
                }
            }
        }
        let peer_node = registries::peer(root, &peer);
        if let Err(refusal) = transfer.take(peer_node.ctx()) {
            let err = refusal.into_transfer_error(at);
            // Still in its transient scope (the normal one if it was just moved there).
            transfer.finish(edges);
            if let Some(metrics) = observer.metrics() {
                metrics.block_peer(&peer);
            }
            return Err(err);
        }
        let transient = if edges.contains(Edge::AllowlistedTransient) {
            Edge::AllowlistedTransient
        } else {
            Edge::Transient
        };
        if let Some(old) = at.edge(transient) {
            transfer.give_back(old);
        }
        // The slot is empty (checked above, and only this handle sets it).
        let _ = slot.set(peer_node);
        transfer.finish(edges.without(transient).with(Edge::Peer));
        if let Some(metrics) = observer.metrics() {
            metrics.allow_peer(&peer);
        }
        Ok(())
    }

    /// Whether the connection was opened in the allowlisted scopes (its normal reservation
    /// was refused, and its endpoint is allowlisted or some peer is trusted) and is still
    /// there. The allowlisted scopes are not part of
    /// [`ResourceManager::stat`](crate::ResourceManager::stat), as in go.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.system.conns_inbound = 0;
    /// let rm = ResourceManager::builder(limits).allowlist(["/ip4/10.0.0.0/ipcidr/8".parse()?]).build()?;
    /// let conn = rm.open_connection(Direction::Inbound, true, &"/ip4/10.1.2.3/tcp/1".parse()?)?;
    /// assert!(conn.is_allowlisted());
    /// assert!(rm.open_connection(Direction::Inbound, true, &"/ip4/192.0.2.1/tcp/1".parse()?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_allowlisted(&self) -> bool {
        crate::counters::MemoryWord(self.node.scope.counters.memory.load(
            // Ordering: Relaxed — a status read; nothing is read through it.
            crate::sync::Ordering::Relaxed,
        ))
        .edges()
        .contains(Edge::AllowlistedSystem)
    }

    /// The peer's scope, once [`set_peer`](Self::set_peer) has succeeded.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/1.2.3.4/tcp/1".parse()?)?;
    /// assert!(conn.peer_scope().is_none());
    /// let peer = rcmgr::PeerId::random();
    /// conn.set_peer(peer)?;
    /// assert_eq!(conn.peer_scope().unwrap().peer(), peer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_scope(&self) -> Option<PeerScope> {
        let Links::Conn { peer, .. } = &self.node.links else {
            return None;
        };
        let node = peer.get()?;
        match &node.scope.kind {
            Kind::Peer(id) => Some(PeerScope::new(Arc::clone(node), *id)),
            _ => None,
        }
    }

    /// Releases everything the connection holds; later reservations and transfers fail with
    /// [`Error::ScopeClosed`]. Calling it again does nothing; dropping the handle calls it.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope, Priority};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/1.2.3.4/tcp/1".parse()?)?;
    /// conn.done();
    /// assert!(rm.system().stat().is_empty());
    /// assert!(conn.reserve_memory(1, Priority::LOW).unwrap_err().scope_closed().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn done(&mut self) {
        let at = self.node.ctx();
        let _operation = at.root.observer.operation();
        walk::close(at);
        if let Some(count) = self.ip_count.take() {
            self.node.root().gate.release(count);
        }
    }

    /// Whether [`done`](Self::done) has run.
    pub fn is_done(&self) -> bool {
        crate::counters::MemoryWord(self.node.scope.counters.memory.load(
            // Ordering: Relaxed — a status read; nothing is read through it.
            crate::sync::Ordering::Relaxed,
        ))
        .is_closed()
    }
}

super::impl_node_handle!(ConnectionScope);

impl Drop for ConnectionScope {
    fn drop(&mut self) {
        self.done();
    }
}

/// go's `transferAllowedToStandard`, inside a transfer: releases the connection from the
/// allowlisted transient and system scopes, then reserves it on the system and transient
/// scopes, giving the system back if the transient scope refuses. Returns the new edges; on
/// error the connection holds nothing above itself.
fn move_to_standard(transfer: &Transfer<'_>) -> Result<EdgeSet, Error> {
    let at = transfer.scope();
    for allowlisted in [Edge::AllowlistedTransient, Edge::AllowlistedSystem] {
        if let Some(old) = at.edge(allowlisted) {
            transfer.give_back(old);
        }
    }
    // The fixed scopes always resolve; the `if let`s keep this total.
    let (system, transient) = (at.edge(Edge::System), at.edge(Edge::Transient));
    if let Some(system) = system {
        transfer
            .take(system)
            .map_err(|refusal| refusal.into_transfer_error(at))?;
    }
    if let Some(Err(refusal)) = transient.map(|transient| transfer.take(transient)) {
        if let Some(system) = system {
            transfer.give_back(system);
        }
        return Err(refusal.into_transfer_error(at));
    }
    Ok(EdgeSet::of(&[Edge::Transient, Edge::System]))
}

//! [`ConnectionScope`]: one connection, from `open_connection` to drop.

use multiaddr::Multiaddr;

use super::PeerScope;
use crate::{
    edges::{Edge, EdgeSet},
    error::Error,
    registries,
    resource::Direction,
    scope::{Kind, Links, Node, Root, Shared},
    sync::{Arc, OnceSlot},
    walk::{self, Amount, Transfer},
};

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
}

impl ConnectionScope {
    /// Opens a connection scope in the transient scope, reserving one connection (and a file
    /// descriptor if `use_fd`).
    pub(crate) fn open(
        root: &Arc<Root>,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
    ) -> Result<Self, Error> {
        let edges = EdgeSet::of(&[Edge::Transient, Edge::System]);
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
        walk::reserve_dag(node.ctx(), amount).map_err(|refusal| refusal.into_error(node.ctx()))?;
        Ok(ConnectionScope {
            node: Arc::new(node),
            direction,
            use_fd,
            endpoint: endpoint.clone(),
        })
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
        let transfer = Transfer::begin(at).map_err(|refusal| refusal.into_error(at))?;
        let peer_node = registries::peer(root, &peer);
        transfer
            .take(peer_node.ctx())
            .map_err(|refusal| refusal.into_transfer_error(at))?;
        let transient = if transfer.edges.contains(Edge::AllowlistedTransient) {
            Edge::AllowlistedTransient
        } else {
            Edge::Transient
        };
        if let Some(old) = at.edge(transient) {
            transfer.give_back(old);
        }
        let edges = transfer.edges.without(transient).with(Edge::Peer);
        // The slot is empty (checked above, and only this handle sets it).
        let _ = slot.set(peer_node);
        transfer.finish(edges);
        Ok(())
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
        walk::close(self.node.ctx());
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

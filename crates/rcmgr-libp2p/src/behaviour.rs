//! Connection limits: a [`NetworkBehaviour`] that gives every connection a connection scope.

use std::{
    collections::HashMap,
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use rcmgr::{
    ConnectionScope, Direction, MemoryGuard, Multiaddr, PeerId, ResourceManager, ResourceScope,
};

use crate::{
    buffers::Buffers,
    endpoint::{outbound_endpoint, uses_fd},
};

/// The connection half of the integration: maps the swarm's connection lifecycle onto rcmgr.
///
/// | swarm | rcmgr (go's name) |
/// |---|---|
/// | pending inbound connection | `open_connection(Inbound, fd, remote address)` (`OpenConnection`): per-IP and subnet limits, rate limits, the allowlist, the transient and system scopes |
/// | pending outbound connection | `open_connection(Outbound, fd, address)`, before anything is dialled (see below) |
/// | established, inbound or outbound | `set_peer` (`SetPeer`): the connection moves from the transient scope into its peer's |
/// | connection closed, listen failure, dial failure | the scope is dropped (`Done`) |
///
/// With the scope, the connection reserves what its transport may buffer
/// ([`Buffers::connection_memory`] of its address: noise and yamux buffers; nothing for QUIC),
/// before its handshake, so a node whose memory limits are reached refuses new connections
/// with a memory error.
///
/// Scopes are kept by [`ConnectionId`] and released at most once: the swarm also reports
/// failures of connections this behaviour refused or never saw, and those are ignored.
///
/// A refusal is a [`ConnectionDenied`] whose cause is the [`rcmgr::Error`], so the swarm's
/// `ListenError::Denied` and `DialError::Denied` tell which scope refused:
///
/// ```no_run
/// # fn check(cause: libp2p_swarm::ConnectionDenied) {
/// if let Some(refusal) = cause.downcast_ref::<rcmgr::Error>() {
///     if let Some(limit) = refusal.limit_exceeded() {
///         println!("refused by {} ({})", limit.refused_by(), limit.resource());
///     }
/// }
/// # }
/// ```
///
/// **Put this behaviour first** in a `#[derive(NetworkBehaviour)]` struct; the crate
/// documentation says why.
///
/// # Outbound connections
///
/// go reserves an outbound connection before dialling, with the address it dials. The swarm
/// asks behaviours before it knows which address will be used: when the dial names exactly
/// one address, that address is the endpoint (so per-IP limits and the allowlist see it);
/// otherwise the endpoint is the empty multiaddr, which no per-IP limit counts, and a file
/// descriptor is reserved unless every known address is one that needs none (see
/// [`uses_fd`]). The scope is the connection's whichever address finally connects.
#[derive(Debug)]
pub struct Behaviour {
    rm: ResourceManager,
    buffers: Buffers,
    connections: HashMap<ConnectionId, Held>,
}

/// A connection's scope and its transport buffers' reservation (released first).
#[derive(Debug)]
struct Held {
    _buffers: MemoryGuard,
    scope: ConnectionScope,
}

impl Behaviour {
    /// The behaviour for `rm`. Give the same manager to
    /// [`wrap_transport`](crate::wrap_transport).
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::default();
    /// let behaviour = rcmgr_libp2p::Behaviour::new(rm.clone());
    /// assert_eq!(behaviour.connection_count(), 0);
    /// ```
    pub fn new(rm: ResourceManager) -> Self {
        Self::with_buffers(rm, Buffers::default())
    }

    /// The behaviour for `rm`, reserving the connection buffers of `buffers`; give the same
    /// [`Buffers`] to the transports ([`Transports::with_buffers`](crate::Transports::with_buffers)
    /// does both).
    ///
    /// ```
    /// let buffers = rcmgr_libp2p::Buffers::default().with_max_streams(64);
    /// let behaviour = rcmgr_libp2p::Behaviour::with_buffers(rcmgr::ResourceManager::default(), buffers);
    /// assert_eq!(behaviour.buffers(), buffers);
    /// ```
    pub fn with_buffers(rm: ResourceManager, buffers: Buffers) -> Self {
        Behaviour {
            rm,
            buffers,
            connections: HashMap::new(),
        }
    }

    /// The buffers this behaviour reserves for.
    pub fn buffers(&self) -> Buffers {
        self.buffers
    }

    /// The resource manager this behaviour reports to.
    ///
    /// ```
    /// let behaviour = rcmgr_libp2p::Behaviour::new(rcmgr::ResourceManager::default());
    /// println!("{}", behaviour.resource_manager().report());
    /// ```
    pub fn resource_manager(&self) -> &ResourceManager {
        &self.rm
    }

    /// The scope of a connection this behaviour admitted and that has not closed yet, for
    /// reserving memory that belongs to the connection.
    ///
    /// ```no_run
    /// use rcmgr::{Priority, ResourceScope};
    /// # fn on_connection(behaviour: &rcmgr_libp2p::Behaviour, id: libp2p_swarm::ConnectionId) -> Result<(), rcmgr::Error> {
    /// if let Some(scope) = behaviour.connection_scope(id) {
    ///     let _buffer = scope.reserve_memory_guard(64 * 1024, Priority::MEDIUM)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection_scope(&self, connection: ConnectionId) -> Option<&ConnectionScope> {
        self.connections.get(&connection).map(|held| &held.scope)
    }

    /// How many connections, pending or established, hold a scope now.
    ///
    /// ```
    /// let behaviour = rcmgr_libp2p::Behaviour::new(rcmgr::ResourceManager::default());
    /// assert_eq!(behaviour.connection_count(), 0);
    /// ```
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Opens the scope of a new connection and reserves its transport's buffers on it.
    fn open(
        &self,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
        buffers: usize,
    ) -> Result<Held, ConnectionDenied> {
        let refused = |error: rcmgr::Error| {
            tracing::debug!(%endpoint, %direction, %error, "connection refused");
            ConnectionDenied::new(error)
        };
        let scope = self
            .rm
            .open_connection(direction, use_fd, endpoint)
            .map_err(refused)?;
        // On refusal the scope is dropped here, which releases the connection.
        let buffers = scope
            .reserve_memory_guard(buffers, self.buffers.priority())
            .map_err(refused)?;
        Ok(Held {
            _buffers: buffers,
            scope,
        })
    }

    /// Moves an established connection's scope into its peer's scope. A connection whose
    /// pending stage this behaviour did not see (a behaviour before it refused nothing, but
    /// this one was added late or is not first) is opened here.
    fn establish(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        direction: Direction,
        address: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let mut held = match self.connections.remove(&connection) {
            Some(held) => held,
            None => self.open(
                direction,
                uses_fd(address),
                address,
                self.buffers.connection_memory(address),
            )?,
        };
        // On refusal the scope is dropped here, which releases the connection.
        held.scope.set_peer(peer).map_err(|error| {
            tracing::debug!(%peer, %error, "connection refused");
            ConnectionDenied::new(error)
        })?;
        self.connections.insert(connection, held);
        Ok(dummy::ConnectionHandler)
    }

    /// Releases a connection's scope, if it still has one.
    fn release(&mut self, connection: ConnectionId) {
        self.connections.remove(&connection);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let held = self.open(
            Direction::Inbound,
            uses_fd(remote_addr),
            remote_addr,
            self.buffers.connection_memory(remote_addr),
        )?;
        self.connections.insert(connection_id, held);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.establish(connection_id, peer, Direction::Inbound, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let (endpoint, use_fd) = outbound_endpoint(addresses);
        let buffers = self.buffers.connection_memory_of_any(addresses);
        let held = self.open(Direction::Outbound, use_fd, &endpoint, buffers)?;
        self.connections.insert(connection_id, held);
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.establish(connection_id, peer, Direction::Outbound, addr)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.release(closed.connection_id),
            FromSwarm::DialFailure(failure) => self.release(failure.connection_id),
            FromSwarm::ListenFailure(failure) => self.release(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

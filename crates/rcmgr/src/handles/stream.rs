//! [`StreamScope`]: one stream, from `open_stream` to drop.

use libp2p_identity::PeerId;

use super::{PeerScope, ProtocolScope, ServiceScope};
use crate::{
    edges::{Edge, EdgeSet},
    error::{Error, ScopeClosed},
    groups::{Group, GroupId},
    observe::{self, MetricsReporter},
    registries,
    resource::Direction,
    scope::{Attachment, Kind, Links, Node, Root, ScopeCtx, Shared},
    sync::{Arc, OnceSlot},
    walk::{self, Amount, Transfer},
};

/// A stream's scope (go's `StreamManagementScope`), returned by
/// [`ResourceManager::open_stream`](crate::ResourceManager::open_stream).
///
/// It starts in its peer's scope and the transient scope. [`set_protocol`](Self::set_protocol)
/// moves it from transient to its protocol's scopes once the protocol is negotiated, and
/// [`set_service`](Self::set_service) adds its service's scopes. Dropping it, or
/// [`done`](Self::done), releases everything it holds, exactly once.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, Priority, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let peer = rcmgr::PeerId::random();
/// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
/// stream.set_protocol("/ipfs/ping/1.0.0")?;
/// stream.set_service("libp2p.ping")?;
/// stream.reserve_memory(4096, Priority::HIGH)?;
/// assert_eq!(rm.protocol("/ipfs/ping/1.0.0").stat().streams_inbound, 1);
/// assert_eq!(rm.service("libp2p.ping").stat().memory, 4096);
/// drop(stream);
/// assert!(rm.system().stat().is_empty() && rm.peer(&peer).stat().is_empty());
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamScope {
    node: Arc<Node>,
    peer: PeerId,
    direction: Direction,
}

impl StreamScope {
    /// Opens a stream scope in `peer`'s scope and the transient scope, reserving one stream.
    pub(crate) fn open(
        peer: PeerId,
        peer_node: Arc<Node>,
        id: u64,
        direction: Direction,
    ) -> Result<Self, Error> {
        let edges = EdgeSet::of(&[Edge::Peer, Edge::Transient, Edge::System]);
        let limit = peer_node.root().new_limit_cell(Shared::Stream);
        let node = Node::with_limit(
            Kind::Stream(id),
            edges,
            Links::Stream {
                peer: peer_node,
                protocol: OnceSlot::new(),
                service: OnceSlot::new(),
            },
            limit,
        );
        let (inbound, outbound) = crate::counters::Counters::one_stream(direction);
        let amount = Amount::Streams { inbound, outbound };
        observe::trace_created(node.ctx());
        if let Err(refusal) = walk::reserve_dag(node.ctx(), amount) {
            let err = refusal.into_error(node.ctx());
            observe::trace_destroyed(node.ctx());
            return Err(err);
        }
        Ok(StreamScope {
            node: Arc::new(node),
            peer,
            direction,
        })
    }

    /// The stream's direction.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Outbound)?;
    /// assert_eq!(stream.direction(), Direction::Outbound);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn links(&self) -> Option<(&Arc<Node>, &OnceSlot<Attachment>, &OnceSlot<Attachment>)> {
        match &self.node.links {
            Links::Stream {
                peer,
                protocol,
                service,
            } => Some((peer, protocol, service)),
            _ => None,
        }
    }

    /// The peer the stream belongs to.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let stream = rm.open_stream(peer, Direction::Inbound)?;
    /// assert_eq!(stream.peer(), peer);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The peer's scope (always set for streams).
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
    /// assert_eq!(stream.peer_scope().stat().streams_inbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn peer_scope(&self) -> PeerScope {
        let peer_node = match &self.node.links {
            Links::Stream { peer, .. } => Arc::clone(peer),
            // A stream node always has stream links; its own node keeps this total.
            _ => Arc::clone(&self.node),
        };
        PeerScope::new(peer_node, self.peer)
    }

    /// Attaches the stream to its negotiated protocol: everything it holds moves from the
    /// transient scope to the protocol's scope and the protocol's scope for this peer (go's
    /// `SetProtocol`). If either refuses, the stream stays in transient, still usable, and the
    /// error names the refusing scope (`protocol:/p.peer:<id>: cannot reserve inbound stream:
    /// resource limit exceeded`); the caller usually resets it.
    ///
    /// Errors with [`Error::StreamAlreadyAttachedToProtocol`] if a protocol was set before,
    /// and with [`Error::ScopeClosed`] after [`done`](Self::done).
    ///
    /// ```
    /// use rcmgr::{BaseLimit, ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.protocol_peer.insert("/ipfs/ping/1.0.0".into(), BaseLimit { streams_inbound: 1, ..BaseLimit::unlimited() });
    /// let rm = ResourceManager::new(limits);
    /// let peer = rcmgr::PeerId::random();
    /// let mut first = rm.open_stream(peer, Direction::Inbound)?;
    /// first.set_protocol("/ipfs/ping/1.0.0")?;
    /// let mut second = rm.open_stream(peer, Direction::Inbound)?;
    /// let err = second.set_protocol("/ipfs/ping/1.0.0").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     format!("protocol:/ipfs/ping/1.0.0.peer:{peer}: cannot reserve inbound stream: resource limit exceeded")
    /// );
    /// assert_eq!(rm.transient().stat().streams_inbound, 1); // the second stream stayed there
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn set_protocol(&mut self, protocol: &str) -> Result<(), Error> {
        let Some((peer, slot, _)) = self.links() else {
            return Err(Error::StreamAlreadyAttachedToProtocol);
        };
        if slot.get().is_some() {
            return Err(Error::StreamAlreadyAttachedToProtocol);
        }
        let at = self.node.ctx();
        let observer = &at.root.observer;
        let _operation = observer.operation();
        let transfer = Transfer::begin(at).map_err(|refusal| refusal.into_error(at))?;
        let (id, group) = registries::protocol(peer.root(), protocol);
        let attachment = attach(&transfer, peer.root(), id, group, &self.peer).map_err(
            |(err, refused_by)| {
                if let Some(metrics) = observer.metrics() {
                    match refused_by {
                        Attaching::Group => metrics.block_protocol(protocol),
                        Attaching::Member => metrics.block_protocol_peer(protocol, &self.peer),
                    }
                }
                err
            },
        )?;
        if let Some(transient) = at.edge(Edge::Transient) {
            transfer.give_back(transient);
        }
        let edges = transfer
            .edges
            .without(Edge::Transient)
            .with(Edge::ProtocolPeer)
            .with(Edge::Protocol);
        // The slot is empty (checked above, and only this handle sets it).
        let _ = slot.set(attachment);
        transfer.finish(edges);
        if let Some(metrics) = observer.metrics() {
            metrics.allow_protocol(protocol);
        }
        Ok(())
    }

    /// Adds the stream's service: everything it holds is also reserved on the service's scope
    /// and the service's scope for this peer (go's `SetService`; nothing is released, the
    /// service is an extra constraint).
    ///
    /// Errors with [`Error::StreamNotAttachedToProtocol`] before
    /// [`set_protocol`](Self::set_protocol), [`Error::StreamAlreadyAttachedToService`] if a
    /// service was set before, and [`Error::ScopeClosed`] after [`done`](Self::done).
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
    /// assert!(matches!(stream.set_service("libp2p.ping"), Err(rcmgr::Error::StreamNotAttachedToProtocol)));
    /// stream.set_protocol("/ipfs/ping/1.0.0")?;
    /// stream.set_service("libp2p.ping")?;
    /// assert_eq!(stream.service_scope().unwrap().service(), "libp2p.ping");
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn set_service(&mut self, service: &str) -> Result<(), Error> {
        let Some((peer, protocol, slot)) = self.links() else {
            return Err(Error::StreamAlreadyAttachedToService);
        };
        if slot.get().is_some() {
            return Err(Error::StreamAlreadyAttachedToService);
        }
        if protocol.get().is_none() {
            return Err(Error::StreamNotAttachedToProtocol);
        }
        let at = self.node.ctx();
        let observer = &at.root.observer;
        let _operation = observer.operation();
        let transfer = Transfer::begin(at).map_err(|refusal| refusal.into_error(at))?;
        let (id, group) = registries::service(peer.root(), service);
        let attachment = attach(&transfer, peer.root(), id, group, &self.peer).map_err(
            |(err, refused_by)| {
                if let Some(metrics) = observer.metrics() {
                    report_service_refusal(metrics, refused_by, service, &self.peer);
                }
                err
            },
        )?;
        let edges = transfer.edges.with(Edge::ServicePeer).with(Edge::Service);
        // The slot is empty (checked above, and only this handle sets it).
        let _ = slot.set(attachment);
        transfer.finish(edges);
        if let Some(metrics) = observer.metrics() {
            metrics.allow_service(service);
        }
        Ok(())
    }

    /// The protocol's scope, once [`set_protocol`](Self::set_protocol) has succeeded.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
    /// assert!(stream.protocol_scope().is_none());
    /// stream.set_protocol("/x/1")?;
    /// assert_eq!(stream.protocol_scope().unwrap().protocol(), "/x/1");
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn protocol_scope(&self) -> Option<ProtocolScope> {
        let (_, protocol, _) = self.links()?;
        let root = self.node.root();
        let group = root.registries.protocols.get(protocol.get()?.group)?;
        Some(ProtocolScope::new(Arc::clone(root), Arc::clone(group)))
    }

    /// The service's scope, once [`set_service`](Self::set_service) has succeeded.
    pub fn service_scope(&self) -> Option<ServiceScope> {
        let (_, _, service) = self.links()?;
        let root = self.node.root();
        let group = root.registries.services.get(service.get()?.group)?;
        Some(ServiceScope::new(Arc::clone(root), Arc::clone(group)))
    }

    /// Releases everything the stream holds; later reservations and transfers fail with
    /// [`Error::ScopeClosed`]. Calling it again does nothing; dropping the handle calls it.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
    /// stream.done();
    /// assert!(rm.system().stat().is_empty());
    /// assert!(stream.set_protocol("/x").unwrap_err().scope_closed().is_some());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn done(&mut self) {
        let at = self.node.ctx();
        let _operation = at.root.observer.operation();
        walk::close(at);
    }
}

/// Which scope refused an attachment: the protocol (or service) scope, or its scope for the
/// stream's peer.
#[derive(Clone, Copy, Debug)]
enum Attaching {
    Group,
    Member,
}

fn report_service_refusal(
    metrics: &dyn MetricsReporter,
    refused_by: Attaching,
    service: &str,
    peer: &PeerId,
) {
    match refused_by {
        Attaching::Group => metrics.block_service(service),
        Attaching::Member => metrics.block_service_peer(service, peer),
    }
}

/// Reserves a transfer's usage on a protocol or service scope and on its scope for `peer`,
/// giving the first back if the second refuses. A refusal says which of the two refused.
fn attach(
    transfer: &Transfer<'_>,
    root: &Arc<Root>,
    id: GroupId,
    group: Option<&Arc<Group>>,
    peer: &PeerId,
) -> Result<Attachment, (Error, Attaching)> {
    let moving = transfer.scope();
    // The table writes a scope before its id can be found (see `Groups::find_or_insert`);
    // were it ever missing, the transfer is refused like one onto a closed scope.
    let Some(group) = group else {
        let closed = Error::ScopeClosed(Box::new(ScopeClosed::new(moving.name(), None)));
        return Err((closed, Attaching::Group));
    };
    let member = registries::member(root, group, peer);
    let group_ctx = ScopeCtx {
        root,
        scope: &group.scope,
        links: None,
    };
    transfer
        .take(group_ctx)
        .map_err(|refusal| (refusal.into_transfer_error(moving), Attaching::Group))?;
    if let Err(refusal) = transfer.take(member.ctx()) {
        transfer.give_back(group_ctx);
        return Err((refusal.into_transfer_error(moving), Attaching::Member));
    }
    Ok(Attachment { group: id, member })
}

super::impl_node_handle!(StreamScope);

impl Drop for StreamScope {
    fn drop(&mut self) {
        self.done();
    }
}

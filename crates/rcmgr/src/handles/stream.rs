//! [`StreamScope`]: one stream, from `open_stream` to drop.

use libp2p_identity::PeerId;

use super::{Op, PeerScope, ProtocolScope, Reach, ServiceScope, Walks, conn::is_exclusive, notify};
use crate::{
    account::{Len, Memory, Streams},
    error::Error,
    graph::{
        Fixed, Root,
        fault::{Asked, Fault, Refusal, RefusedBy},
        groups::GroupKind,
        peers::Found,
        scope::{self, ScopeRef},
        span::{AnchorRef, GroupView, Moved},
        staged::Staged,
        stream::{self, Attachment, StreamNode},
    },
    observe::MetricsReporter,
    sync::{Arc, Slot, thread_slot},
    types::{Direction, ScopeName},
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
    node: Arc<StreamNode>,
}

impl StreamScope {
    /// go's `OpenStream`: one stream on the stream's own limit, then on its peer's scope,
    /// transient and system.
    pub(crate) fn open(
        root: &Arc<Root>,
        peer: PeerId,
        direction: Direction,
    ) -> Result<Self, Error> {
        let _operation = root.observer.operation();
        let id = root.ids.next_stream();
        if let Some(tracer) = root.observer.tracer() {
            tracer.created(|| (ScopeName::Stream(id), root.stream_limit.get()));
        }
        let opened = match StreamNode::open(root, &peer, id, direction, thread_slot()) {
            Ok((node, found)) => {
                if root.observer.tracer().is_some() {
                    if found == Found::Created {
                        notify::created(root, ScopeRef::Peer(&node.peer));
                    }
                    let change = notify::streams_change(Streams::one(direction));
                    let scopes = (0..3)
                        .map(|index| ScopeRef::Stream(&node).path_at(stream::TRANSIENT, index));
                    notify::changed(root, scopes, change, true);
                    notify::changed(root, [ScopeRef::Stream(&node)], change, true);
                }
                Ok(StreamScope { node })
            }
            Err((node, fault)) => {
                let asked = Asked::Streams(Streams::one(direction));
                let refusal = ScopeRef::Stream(&node).open_refusal(fault, asked);
                let err =
                    notify::error_after(root, ScopeName::Stream(id), refusal, false, |index| {
                        // The parents that took the stream before one refused: the peer, then
                        // transient.
                        match index {
                            0 => {
                                let held = root.peers.stat_of(&peer).unwrap_or_default();
                                (ScopeName::Peer(peer), held)
                            }
                            _ => notify::traced(ScopeRef::Fixed(root, Fixed::Transient)),
                        }
                    });
                notify::destroyed(root, || ScopeName::Stream(id));
                Err(err)
            }
        };
        if let Some(metrics) = root.observer.metrics() {
            match &opened {
                Ok(_) => metrics.allow_stream(&peer, direction),
                Err(_) => metrics.block_stream(&peer, direction),
            }
        }
        opened
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
        self.node.direction
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
        self.node.peer.id
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
        PeerScope::of(&self.node.peer)
    }

    /// Attaches the stream to its negotiated protocol: everything it holds moves from the
    /// transient scope to the protocol's scope and the protocol's scope for this peer (go's
    /// `SetProtocol`). If either refuses, the stream stays in transient, still usable, and the
    /// error names the refusing scope (`protocol:/p.peer:<id>: cannot reserve inbound stream:
    /// resource limit exceeded`); the caller usually resets it. Neither a refused call nor
    /// any call with a new name leaves a scope that is never collected: a protocol's scopes
    /// that nothing uses are collected (see [`ResourceManager::gc`](crate::ResourceManager::gc)).
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
        // A closed stream keeps its stage, so the misuse is named first, as go does.
        if self.node.state().stage() != stream::TRANSIENT {
            return Err(Error::StreamAlreadyAttachedToProtocol);
        }
        self.attach(GroupKind::Protocol, protocol)
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
        // A closed stream keeps its stage, so the misuse is named first, as go does.
        match self.node.state().stage() {
            stream::TRANSIENT => Err(Error::StreamNotAttachedToProtocol),
            stream::SERVICE => Err(Error::StreamAlreadyAttachedToService),
            _ => self.attach(GroupKind::Service, service),
        }
    }

    /// `set_protocol` and `set_service`: the move, its trace and its metrics. (Always
    /// inlined: each caller's kind is a constant, so the kind's matches fold.)
    #[inline(always)]
    fn attach(&mut self, kind: GroupKind, name: &str) -> Result<(), Error> {
        let node = &self.node;
        let root = node.root();
        let _operation = root.observer.operation();
        let exclusive = is_exclusive(node);
        let attached = node.attach(exclusive, kind, name, thread_slot());
        let metrics = root.observer.metrics();
        match attached {
            Ok(attachment) => {
                trace_attach(node, kind, attachment);
                if let Some(metrics) = metrics {
                    match kind {
                        GroupKind::Protocol => metrics.allow_protocol(name),
                        GroupKind::Service => metrics.allow_service(name),
                    }
                }
                Ok(())
            }
            Err(refused) => {
                let refusal = scope::attach_refusal(node, kind, refused);
                let refused = match refusal.by {
                    RefusedBy::Other(_) => Some(refusal.at),
                    RefusedBy::Itself => None,
                };
                let err = notify::error_after(root, self.name(), refusal, true, |_| {
                    // Only the group can have taken its part before its member refused.
                    match root.groups(kind).find(name) {
                        Some(group) => notify::traced(ScopeRef::Group(root, kind, group.slot)),
                        None => notify::traced(ScopeRef::Fixed(root, Fixed::System)),
                    }
                });
                if let (Some(metrics), Some(at)) = (metrics, refused)
                    && err.is_resource_limit_exceeded()
                {
                    report_refusal(metrics, kind, at, name, &node.peer.id);
                }
                Err(err)
            }
        }
    }

    fn name(&self) -> ScopeName {
        ScopeName::Stream(self.node.id)
    }

    /// The protocol's scope, once [`set_protocol`](Self::set_protocol) has succeeded and
    /// until the stream is closed (a closed stream reports to no scope: its protocol's scope
    /// may have been collected since).
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
        self.group_view(GroupKind::Protocol).map(ProtocolScope::new)
    }

    /// The service's scope, once [`set_service`](Self::set_service) has succeeded and until
    /// the stream is closed.
    pub fn service_scope(&self) -> Option<ServiceScope> {
        self.group_view(GroupKind::Service).map(ServiceScope::new)
    }

    fn group_view(&self, kind: GroupKind) -> Option<GroupView> {
        let state = self.node.state();
        if state.is_closed() {
            return None;
        }
        let at = self.node.attached(kind)?;
        GroupView::of(&self.node.peer.root, kind, at.group)
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
        let node = &self.node;
        let root = node.root();
        let _operation = root.observer.operation();
        let exclusive = is_exclusive(node);
        if let Some(state) = node.close(exclusive, thread_slot())
            && root.observer.tracer().is_some()
        {
            let change = notify::usage_change(node.usage(state.bytes()));
            let stage = state.stage();
            let len = node.with_path(stage, Len);
            notify::changed(
                root,
                (0..len).map(|i| ScopeRef::Stream(node).path_at(stage, i)),
                change,
                false,
            );
            notify::destroyed(root, || self.name());
        }
    }

    /// Whether [`done`](Self::done) has run.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
    /// assert!(!stream.is_done());
    /// stream.done();
    /// assert!(stream.is_done());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn is_done(&self) -> bool {
        self.node.state().is_closed()
    }
}

/// The metrics callback of a refused attachment: by the group (`at` 0) or its member.
fn report_refusal(
    metrics: &dyn MetricsReporter,
    kind: GroupKind,
    at: usize,
    name: &str,
    peer: &PeerId,
) {
    match (kind, at) {
        (GroupKind::Protocol, 0) => metrics.block_protocol(name),
        (GroupKind::Protocol, _) => metrics.block_protocol_peer(name, peer),
        (GroupKind::Service, 0) => metrics.block_service(name),
        (GroupKind::Service, _) => metrics.block_service_peer(name, peer),
    }
}

/// The trace of an attachment, in go's order: the new scopes made, the stream's usage taken
/// by the group and its member, given back by transient (for a protocol).
fn trace_attach(node: &StreamNode, kind: GroupKind, attachment: Attachment) {
    let root = node.root();
    if root.observer.tracer().is_none() {
        return;
    }
    let group = ScopeRef::Group(root, kind, attachment.at.group);
    let member = ScopeRef::Member(&node.peer, kind, attachment.at.group, attachment.at.member);
    if attachment.created_group {
        notify::created(root, group);
    }
    if attachment.created_member {
        notify::created(root, member);
    }
    let change = notify::usage_change(node.usage(node.state().bytes()));
    notify::changed(root, [group, member], change, true);
    if kind == GroupKind::Protocol {
        notify::changed(
            root,
            [ScopeRef::Fixed(root, Fixed::Transient)],
            change,
            false,
        );
    }
}

impl Reach for StreamScope {
    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Stream(&self.node)
    }

    #[inline(always)]
    fn reach<O: Op>(&self, op: O) -> O::Output {
        op.run(self)
    }
}

impl Walks for &StreamScope {
    type Fault = Fault;

    #[inline(always)]
    fn root(&self) -> &Root {
        self.node.root()
    }

    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Stream(&self.node)
    }

    #[inline(always)]
    fn reserve(&self, memory: Memory, slot: Slot) -> Result<Moved, Fault> {
        self.node
            .reserve_memory(memory, slot)
            .map(|_| Moved::bytes(memory.bytes))
    }

    #[inline(always)]
    fn release(&self, bytes: u64, slot: Slot) -> Moved {
        self.node
            .release_memory(bytes, slot)
            .map_or_else(Moved::default, |released| Moved::bytes(released.taken))
    }

    #[inline(always)]
    fn refusal(&self, fault: Fault, memory: Memory) -> Refusal {
        scope::memory_refusal(AnchorRef::Stream(&self.node), fault, memory)
    }
}

impl Drop for StreamScope {
    fn drop(&mut self) {
        self.done();
    }
}

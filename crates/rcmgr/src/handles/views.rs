//! Views of the scopes that exist independently of any one connection or stream: system,
//! transient, and the keyed peer, protocol and service scopes.

use std::sync::Arc as NameArc;

use libp2p_identity::PeerId;

use super::Handle;
use crate::{
    graph::{
        Fixed, Root,
        peers::{PeerNode, member_key},
        span::{Anchor, AnchorRef, GroupView, PeerView},
    },
    sync::Arc,
    types::ScopeStat,
};

/// The system scope: everything the node holds. Every reservation reaches it.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.system().name().to_string(), "system");
/// ```
#[derive(Clone, Debug)]
pub struct SystemScope {
    scope: Anchor,
}

impl SystemScope {
    pub(crate) fn new(root: Arc<Root>) -> Self {
        SystemScope {
            scope: Anchor::Fixed(root, Fixed::System),
        }
    }
}

/// The transient scope: connections whose peer is not known yet and streams whose protocol
/// is not known yet.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.transient().name().to_string(), "transient");
/// ```
#[derive(Clone, Debug)]
pub struct TransientScope {
    scope: Anchor,
}

impl TransientScope {
    pub(crate) fn new(root: Arc<Root>) -> Self {
        TransientScope {
            scope: Anchor::Fixed(root, Fixed::Transient),
        }
    }
}

/// A peer's scope: every connection and stream of the peer.
///
/// Holding this view keeps the scope from being collected.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let id = rcmgr::PeerId::random();
/// assert_eq!(rm.peer(&id).peer(), id);
/// ```
#[derive(Clone, Debug)]
pub struct PeerScope {
    scope: Anchor,
    peer: PeerId,
}

impl PeerScope {
    pub(crate) fn new(view: PeerView) -> Self {
        let peer = view.node().id;
        PeerScope {
            scope: Anchor::Peer(view),
            peer,
        }
    }

    /// A view of a peer scope the caller holds usage in (a connection's or stream's).
    pub(crate) fn of(node: &Arc<PeerNode>) -> Self {
        PeerScope::new(PeerView::of(node))
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

/// A protocol's scope: every stream of the protocol, from every peer.
///
/// Holding this view keeps the scope from being collected.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.protocol("/ipfs/ping/1.0.0").protocol(), "/ipfs/ping/1.0.0");
/// ```
#[derive(Clone, Debug)]
pub struct ProtocolScope {
    scope: Anchor,
    protocol: NameArc<str>,
}

impl ProtocolScope {
    pub(crate) fn new(view: GroupView) -> Self {
        let protocol = view.root().groups(view.kind()).name_of(view.slot());
        ProtocolScope {
            scope: Anchor::Group(view),
            protocol,
        }
    }

    /// The protocol ID.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// What `peer`'s scope within this protocol holds (the protocol-peer scope, go's
    /// `protocol:<p>.peer:<id>`), if the peer has one now.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
    /// stream.set_protocol("/x")?;
    /// assert_eq!(rm.protocol("/x").peer_stat(&peer).unwrap().streams_inbound, 1);
    /// assert_eq!(rm.protocol("/x").peer_stat(&rcmgr::PeerId::random()), None);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn peer_stat(&self, peer: &PeerId) -> Option<ScopeStat> {
        member_stat(&self.scope, peer)
    }
}

/// A service's scope: every stream of the service, from every peer.
///
/// Holding this view keeps the scope from being collected.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.service("libp2p.ping").service(), "libp2p.ping");
/// ```
#[derive(Clone, Debug)]
pub struct ServiceScope {
    scope: Anchor,
    service: NameArc<str>,
}

impl ServiceScope {
    pub(crate) fn new(view: GroupView) -> Self {
        let service = view.root().groups(view.kind()).name_of(view.slot());
        ServiceScope {
            scope: Anchor::Group(view),
            service,
        }
    }

    /// The service name (go's `ServiceScope.Name()`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What `peer`'s scope within this service holds (the service-peer scope, go's
    /// `service:<s>.peer:<id>`), if the peer has one now.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let mut stream = rm.open_stream(peer, Direction::Outbound)?;
    /// stream.set_protocol("/x")?;
    /// stream.set_service("s")?;
    /// assert_eq!(rm.service("s").peer_stat(&peer).unwrap().streams_outbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn peer_stat(&self, peer: &PeerId) -> Option<ScopeStat> {
        member_stat(&self.scope, peer)
    }
}

/// What `peer`'s scope within the group a view names holds, if it has one.
fn member_stat(view: &Anchor, peer: &PeerId) -> Option<ScopeStat> {
    let Anchor::Group(view) = view else {
        return None;
    };
    let group = view.group()?;
    let key = member_key(view.kind(), group.current(view.slot()));
    let node = view.root().peers.get(peer)?;
    node.members.stat_of(key)
}

macro_rules! impl_handle {
    ($($handle:ty),*) => {$(
        impl Handle for $handle {
            #[inline(always)]
            fn anchor(&self) -> AnchorRef<'_> {
                self.scope.as_ref()
            }
        }
    )*};
}

impl_handle!(
    SystemScope,
    TransientScope,
    PeerScope,
    ProtocolScope,
    ServiceScope
);

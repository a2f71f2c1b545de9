//! Views of the scopes that exist independently of any one connection or stream: system,
//! transient, and the keyed peer, protocol and service scopes.

use std::sync::Arc as NameArc;

use libp2p_identity::PeerId;

use super::Handle;
use crate::{
    groups::Group,
    scope::{Fixed, Kind, Node, Root, ScopeCtx, ScopeRef},
    sync::Arc,
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
    scope: ScopeRef,
}

impl SystemScope {
    pub(crate) fn new(root: Arc<Root>) -> Self {
        SystemScope {
            scope: ScopeRef::Fixed(root, Fixed::System),
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
    scope: ScopeRef,
}

impl TransientScope {
    pub(crate) fn new(root: Arc<Root>) -> Self {
        TransientScope {
            scope: ScopeRef::Fixed(root, Fixed::Transient),
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
    scope: ScopeRef,
    peer: PeerId,
}

impl PeerScope {
    pub(crate) fn new(node: Arc<Node>, peer: PeerId) -> Self {
        PeerScope {
            scope: ScopeRef::Node(node),
            peer,
        }
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

/// A protocol's scope: every stream of the protocol, from every peer.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.protocol("/ipfs/ping/1.0.0").protocol(), "/ipfs/ping/1.0.0");
/// ```
#[derive(Clone, Debug)]
pub struct ProtocolScope {
    scope: ScopeRef,
    protocol: NameArc<str>,
}

impl ProtocolScope {
    pub(crate) fn new(root: Arc<Root>, group: Arc<Group>) -> Self {
        let protocol = match &group.scope.kind {
            Kind::Protocol(name, _) => NameArc::clone(name),
            _ => NameArc::from(""),
        };
        ProtocolScope {
            scope: ScopeRef::Group(root, group),
            protocol,
        }
    }

    /// The protocol ID.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

/// A service's scope: every stream of the service, from every peer.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// assert_eq!(rm.service("libp2p.ping").service(), "libp2p.ping");
/// ```
#[derive(Clone, Debug)]
pub struct ServiceScope {
    scope: ScopeRef,
    service: NameArc<str>,
}

impl ServiceScope {
    pub(crate) fn new(root: Arc<Root>, group: Arc<Group>) -> Self {
        let service = match &group.scope.kind {
            Kind::Service(name, _) => NameArc::clone(name),
            _ => NameArc::from(""),
        };
        ServiceScope {
            scope: ScopeRef::Group(root, group),
            service,
        }
    }

    /// The service name (go's `ServiceScope.Name()`).
    pub fn service(&self) -> &str {
        &self.service
    }
}

macro_rules! impl_handle {
    ($($handle:ty),*) => {$(
        impl Handle for $handle {
            fn ctx(&self) -> ScopeCtx<'_> {
                self.scope.ctx()
            }
            fn to_ref(&self) -> ScopeRef {
                self.scope.clone()
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

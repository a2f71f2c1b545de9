//! [`ConcreteLimitConfig`]: every scope's limit, resolved.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use super::BaseLimit;
use super::IpLimits;

/// The limits of every scope, fully resolved: what a [`ResourceManager`](crate::ResourceManager)
/// enforces.
///
/// Service, protocol and peer scopes take the limit of their key from the map when it has one
/// and the matching `*_default` otherwise. Build one by scaling a `ScalingLimitConfig`, or
/// start from [`infinite`](Self::infinite) and set what you need; the struct is
/// `#[non_exhaustive]` so that new kinds of limits can be added without breaking callers.
///
/// ```
/// use rcmgr::{BaseLimit, ConcreteLimitConfig};
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.peer_default = BaseLimit { streams: 16, streams_inbound: 8, streams_outbound: 8, ..BaseLimit::unlimited() };
/// limits.protocol.insert("/ipfs/ping/1.0.0".into(), BaseLimit { streams: 2, ..BaseLimit::unlimited() });
/// assert_eq!(limits.protocol_limits("/ipfs/ping/1.0.0").streams, 2);
/// assert_eq!(limits.protocol_limits("/other").streams, BaseLimit::UNLIMITED);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcreteLimitConfig {
    /// The whole node.
    pub system: BaseLimit,
    /// Connections before their peer is known and streams before their protocol is known.
    pub transient: BaseLimit,
    /// The whole node, for connections admitted only because their address is allowlisted.
    pub allowlisted_system: BaseLimit,
    /// Allowlisted connections before their peer is known.
    pub allowlisted_transient: BaseLimit,
    /// Each service without an entry in [`service`](Self::service).
    pub service_default: BaseLimit,
    /// Per-service limits.
    pub service: BTreeMap<String, BaseLimit>,
    /// Each peer within a service without an entry in [`service_peer`](Self::service_peer).
    pub service_peer_default: BaseLimit,
    /// Per-service limits for each peer within that service.
    pub service_peer: BTreeMap<String, BaseLimit>,
    /// Each protocol without an entry in [`protocol`](Self::protocol).
    pub protocol_default: BaseLimit,
    /// Per-protocol limits.
    pub protocol: BTreeMap<String, BaseLimit>,
    /// Each peer within a protocol without an entry in [`protocol_peer`](Self::protocol_peer).
    pub protocol_peer_default: BaseLimit,
    /// Per-protocol limits for each peer within that protocol.
    pub protocol_peer: BTreeMap<String, BaseLimit>,
    /// Each peer without an entry in [`peer`](Self::peer).
    pub peer_default: BaseLimit,
    /// Per-peer limits.
    pub peer: BTreeMap<PeerId, BaseLimit>,
    /// Each connection.
    pub conn: BaseLimit,
    /// Each stream.
    pub stream: BaseLimit,
    /// Address-based limits: connections per IP, subnet and network prefix, and connection
    /// rate limits. Not part of go's limit files (go configures them with options), so not
    /// serialized.
    pub ip: IpLimits,
}

impl ConcreteLimitConfig {
    /// Every scope unlimited and no per-key entries: go's `InfiniteLimits`, and no
    /// address-based limits either ([`IpLimits::disabled`]; go keeps its per-IP and rate
    /// limits under `InfiniteLimits`, go-libp2p#3431).
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// assert!(limits.system.is_unlimited() && limits.stream.is_unlimited());
    /// assert_eq!(limits.ip, rcmgr::IpLimits::disabled());
    /// ```
    pub fn infinite() -> Self {
        let u = BaseLimit::unlimited();
        ConcreteLimitConfig {
            system: u,
            transient: u,
            allowlisted_system: u,
            allowlisted_transient: u,
            service_default: u,
            service: BTreeMap::new(),
            service_peer_default: u,
            service_peer: BTreeMap::new(),
            protocol_default: u,
            protocol: BTreeMap::new(),
            protocol_peer_default: u,
            protocol_peer: BTreeMap::new(),
            peer_default: u,
            peer: BTreeMap::new(),
            conn: u,
            stream: u,
            ip: IpLimits::disabled(),
        }
    }

    /// The limit of the service scope `service`.
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// assert_eq!(limits.service_limits("libp2p.ping"), limits.service_default);
    /// ```
    pub fn service_limits(&self, service: &str) -> BaseLimit {
        *self.service.get(service).unwrap_or(&self.service_default)
    }

    /// The limit of each peer's scope within the service `service`.
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// assert_eq!(limits.service_peer_limits("libp2p.ping"), limits.service_peer_default);
    /// ```
    pub fn service_peer_limits(&self, service: &str) -> BaseLimit {
        *self
            .service_peer
            .get(service)
            .unwrap_or(&self.service_peer_default)
    }

    /// The limit of the protocol scope `protocol`.
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// assert_eq!(limits.protocol_limits("/ipfs/id/1.0.0"), limits.protocol_default);
    /// ```
    pub fn protocol_limits(&self, protocol: &str) -> BaseLimit {
        *self
            .protocol
            .get(protocol)
            .unwrap_or(&self.protocol_default)
    }

    /// The limit of each peer's scope within the protocol `protocol`.
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// assert_eq!(limits.protocol_peer_limits("/ipfs/id/1.0.0"), limits.protocol_peer_default);
    /// ```
    pub fn protocol_peer_limits(&self, protocol: &str) -> BaseLimit {
        *self
            .protocol_peer
            .get(protocol)
            .unwrap_or(&self.protocol_peer_default)
    }

    /// The limit of the peer scope of `peer`.
    ///
    /// ```
    /// let limits = rcmgr::ConcreteLimitConfig::infinite();
    /// let peer = rcmgr::PeerId::random();
    /// assert_eq!(limits.peer_limits(&peer), limits.peer_default);
    /// ```
    pub fn peer_limits(&self, peer: &PeerId) -> BaseLimit {
        *self.peer.get(peer).unwrap_or(&self.peer_default)
    }
}

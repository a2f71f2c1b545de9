//! Usage snapshots: [`ScopeStat`] for one scope, [`ResourceManagerStat`] for the manager.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

/// What one scope holds. Serializes with go's field names (`NumStreamsInbound`, ...,
/// `Memory`), so tools written for go's `ScopeStat` JSON read it unchanged.
///
/// ```
/// let stat = rcmgr::ScopeStat { streams_inbound: 2, memory: 4096, ..Default::default() };
/// assert_eq!(stat.streams(), 2);
/// assert_eq!(
///     serde_json::to_string(&stat).unwrap(),
///     r#"{"NumStreamsInbound":2,"NumStreamsOutbound":0,"NumConnsInbound":0,"NumConnsOutbound":0,"NumFD":0,"Memory":4096}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeStat {
    /// Inbound streams.
    #[serde(rename = "NumStreamsInbound")]
    pub streams_inbound: u32,
    /// Outbound streams.
    #[serde(rename = "NumStreamsOutbound")]
    pub streams_outbound: u32,
    /// Inbound connections.
    #[serde(rename = "NumConnsInbound")]
    pub conns_inbound: u32,
    /// Outbound connections.
    #[serde(rename = "NumConnsOutbound")]
    pub conns_outbound: u32,
    /// File descriptors.
    #[serde(rename = "NumFD")]
    pub fd: u32,
    /// Memory in bytes.
    #[serde(rename = "Memory")]
    pub memory: u64,
}

impl ScopeStat {
    /// Streams in both directions.
    ///
    /// ```
    /// let stat = rcmgr::ScopeStat { streams_inbound: 1, streams_outbound: 2, ..Default::default() };
    /// assert_eq!(stat.streams(), 3);
    /// ```
    pub fn streams(&self) -> u64 {
        u64::from(self.streams_inbound) + u64::from(self.streams_outbound)
    }

    /// Connections in both directions.
    ///
    /// ```
    /// let stat = rcmgr::ScopeStat { conns_inbound: 4, ..Default::default() };
    /// assert_eq!(stat.conns(), 4);
    /// ```
    pub fn conns(&self) -> u64 {
        u64::from(self.conns_inbound) + u64::from(self.conns_outbound)
    }

    /// Whether nothing at all is held, memory included.
    ///
    /// ```
    /// assert!(rcmgr::ScopeStat::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == ScopeStat::default()
    }
}

/// A snapshot of the whole manager: the system and transient scopes and every service,
/// protocol and peer scope that currently exists.
///
/// Each scope is read on its own while others keep changing, so the parts need not add up
/// exactly (go's `Stat` behaves the same way).
///
/// ```
/// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
/// let stat = rm.stat();
/// assert!(stat.system.is_empty() && stat.peers.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResourceManagerStat {
    /// The system scope.
    #[serde(rename = "System")]
    pub system: ScopeStat,
    /// The transient scope.
    #[serde(rename = "Transient")]
    pub transient: ScopeStat,
    /// Each service scope, by name.
    #[serde(rename = "Services")]
    pub services: BTreeMap<String, ScopeStat>,
    /// Each protocol scope, by protocol ID.
    #[serde(rename = "Protocols")]
    pub protocols: BTreeMap<String, ScopeStat>,
    /// Each peer scope, by peer ID.
    #[serde(rename = "Peers", serialize_with = "peers_by_base58")]
    pub peers: BTreeMap<PeerId, ScopeStat>,
}

/// Writes peer keys in base58, the form go and every libp2p tool print.
fn peers_by_base58<S: serde::Serializer>(
    peers: &BTreeMap<PeerId, ScopeStat>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(peers.iter().map(|(peer, stat)| (peer.to_base58(), stat)))
}

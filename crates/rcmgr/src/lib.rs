//! rcmgr: a resource manager for libp2p nodes.
//!
//! rcmgr accounts every connection, stream, file descriptor and byte of buffer memory of a
//! node in a graph of scopes (system, transient, service, protocol, peer, their per-peer
//! scopes, connections, streams and spans) and refuses, with an error that says which scope
//! and which limit, anything that would take a scope past its limit. It does what
//! go-libp2p's Network Resource Manager does, number for number and with the same error texts
//! and limit files, without a lock shared by the whole node: each scope is a block of atomic
//! counters, and a reservation walks the scopes it must pass with compare-and-swap, undoing
//! its steps if one refuses.
//!
//! # Example
//!
//! ```
//! use rcmgr::{BaseLimit, ConcreteLimitConfig, Direction, Priority, ResourceManager, ResourceScope};
//!
//! let mut limits = ConcreteLimitConfig::infinite();
//! limits.peer_default = BaseLimit { streams_inbound: 2, ..BaseLimit::unlimited() };
//! let rm = ResourceManager::new(limits);
//!
//! let peer = rcmgr::PeerId::random();
//! let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/192.0.2.7/tcp/4001".parse()?)?;
//! conn.set_peer(peer)?;
//!
//! let mut streams = Vec::new();
//! for _ in 0..2 {
//!     let mut stream = rm.open_stream(peer, Direction::Inbound)?;
//!     stream.set_protocol("/ipfs/ping/1.0.0")?;
//!     stream.reserve_memory(64 * 1024, Priority::HIGH)?;
//!     streams.push(stream);
//! }
//! let refused = rm.open_stream(peer, Direction::Inbound).unwrap_err();
//! assert!(refused.is_resource_limit_exceeded());
//! assert_eq!(refused.limit_exceeded().unwrap().refused_by().to_string(), format!("peer:{peer}"));
//!
//! drop(streams);
//! drop(conn);
//! assert!(rm.system().stat().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Scopes
//!
//! | scope | reports to | holds |
//! |---|---|---|
//! | system | — | everything |
//! | transient | system | connections before their peer is known, streams before their protocol is |
//! | service / protocol / peer | system | what their streams and connections hold |
//! | service-peer / protocol-peer | — (counted beside their service or protocol) | one peer's share |
//! | connection | transient, then peer; system | one connection |
//! | stream | peer; transient, then protocol-peer and protocol, plus service-peer and service; system | one stream |
//! | span | its owner | memory reserved through it |
//!
//! Handles release what they hold when dropped, exactly once.

#![forbid(unsafe_code)]

// The layers, each importing only those above it in this list (`.ci/run` checks that the
// module graph has no cycle; docs/ARCHITECTURE.md has the map).
mod account;
mod error;
mod gate;
mod graph;
mod handles;
pub mod limits;
mod manager;
mod observe;
mod sync;
mod types;

pub use error::{
    AddressRange, AllowlistEntryProblem, ConfigError, ConfigErrorKind, Error,
    InvalidAllowlistEntry, InvalidIpLimits, IpLimitExceeded, LimitExceeded, RateLimited,
    ScopeClosed, TraceError,
};
pub use gate::{Allowlist, Clock};
pub use handles::{
    ConnectionScope, MemoryGuard, PeerScope, ProtocolScope, ResourceScope, ServiceScope, Span,
    StreamScope, SystemScope, TransientScope,
};
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use libp2p_identity::PeerId;
pub use limits::{
    BaseLimit, BaseLimitIncrease, ConcreteLimitConfig, ConnLimitPerSubnet, ConnRateLimits,
    IpLimits, LimitVal, NetworkPrefixLimit, PartialLimitConfig, PrefixRateLimit, ResourceLimits,
    ScalingLimit, ScalingLimitConfig, SubnetRateLimit,
};
pub use manager::{
    DEFAULT_GC_INTERVAL, DEFAULT_TRACE_QUEUE, ResourceManager, ResourceManagerBuilder, ScopeUsage,
    UsageReport, WeakResourceManager,
};
pub use multiaddr::Multiaddr;
pub use observe::{
    MetricsReporter, TraceEvent, TraceEventType, TraceLimit, TraceReporter, UnknownTraceEventType,
};
pub use types::{
    Direction, InvalidScopeName, Priority, RateLimit, Resource, ResourceManagerStat, ScopeName,
    ScopeStat, SpanName,
};

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

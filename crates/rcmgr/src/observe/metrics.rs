//! [`MetricsReporter`]: callbacks for every allowed and blocked reservation, as go's
//! `rcmgr.MetricsReporter`, plus the two rcmgr needs to export go's Prometheus metrics without
//! counting anything twice.

use libp2p_identity::PeerId;

use crate::{
    error::LimitExceeded,
    types::{Direction, ScopeStat},
};

/// Callbacks for what the manager allows and refuses (go's `MetricsReporter`), for counters
/// of your own or for an exporter such as `rcmgr-prometheus`. Install one with
/// [`ResourceManagerBuilder::metrics`](crate::ResourceManagerBuilder::metrics).
///
/// Each callback is called once per event, on the thread that made the reservation, after
/// the decision; it must be cheap and must not block (an atomic increment is the model).
/// Every method has an empty default, so a reporter implements only what it counts.
///
/// Unlike go, memory callbacks fire once per public `reserve_memory` call, not once per span
/// level (go's quirk 8), and a refusal by a limit reaches [`limit_exceeded`] exactly once
/// with the scope and resource that refused.
///
/// [`limit_exceeded`]: Self::limit_exceeded
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use rcmgr::{ConcreteLimitConfig, Direction, MetricsReporter, ResourceManager};
///
/// #[derive(Debug, Default)]
/// struct Streams { allowed: AtomicU64, blocked: AtomicU64 }
///
/// impl MetricsReporter for Streams {
///     fn allow_stream(&self, _peer: &rcmgr::PeerId, _direction: Direction) {
///         self.allowed.fetch_add(1, Ordering::Relaxed);
///     }
///     fn block_stream(&self, _peer: &rcmgr::PeerId, _direction: Direction) {
///         self.blocked.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.system.streams_inbound = 1;
/// let counts = Arc::new(Streams::default());
/// let rm = ResourceManager::builder(limits).metrics(counts.clone()).build()?;
/// let peer = rcmgr::PeerId::random();
/// let _open = rm.open_stream(peer, Direction::Inbound)?;
/// assert!(rm.open_stream(peer, Direction::Inbound).is_err());
/// assert_eq!(counts.allowed.load(Ordering::Relaxed), 1);
/// assert_eq!(counts.blocked.load(Ordering::Relaxed), 1);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[allow(unused_variables)]
pub trait MetricsReporter: Send + Sync + 'static {
    /// `open_connection` succeeded.
    fn allow_conn(&self, direction: Direction, use_fd: bool) {}
    /// `open_connection` was refused: by a scope limit, a per-IP limit or a rate limit.
    fn block_conn(&self, direction: Direction, use_fd: bool) {}
    /// `open_stream` succeeded.
    fn allow_stream(&self, peer: &PeerId, direction: Direction) {}
    /// `open_stream` was refused.
    fn block_stream(&self, peer: &PeerId, direction: Direction) {}
    /// `set_peer` moved a connection into its peer's scope.
    fn allow_peer(&self, peer: &PeerId) {}
    /// `set_peer` was refused by the peer's scope.
    fn block_peer(&self, peer: &PeerId) {}
    /// `set_protocol` moved a stream into its protocol's scopes.
    fn allow_protocol(&self, protocol: &str) {}
    /// `set_protocol` was refused by the protocol's scope.
    fn block_protocol(&self, protocol: &str) {}
    /// `set_protocol` was refused by the protocol's scope for this peer.
    fn block_protocol_peer(&self, protocol: &str, peer: &PeerId) {}
    /// `set_service` added a stream to its service's scopes.
    fn allow_service(&self, service: &str) {}
    /// `set_service` was refused by the service's scope.
    fn block_service(&self, service: &str) {}
    /// `set_service` was refused by the service's scope for this peer.
    fn block_service_peer(&self, service: &str, peer: &PeerId) {}
    /// A `reserve_memory` (or `reserve_memory_guard`) call succeeded: once per call, whatever
    /// the number of span levels it passed.
    fn allow_memory(&self, size: usize) {}
    /// A `reserve_memory` (or `reserve_memory_guard`) call was refused.
    fn block_memory(&self, size: usize) {}
    /// A limit refused a reservation: once per refusal, with the scope that asked, the scope
    /// whose limit refused ([`LimitExceeded::refused_by`]), the resource and the numbers. This
    /// is what the refusal counters of an exporter (go's `blocked_resources`) count.
    fn limit_exceeded(&self, refusal: &LimitExceeded) {}
    /// The same refusal as [`limit_exceeded`](Self::limit_exceeded), called right after it,
    /// with what the refused reservation asked of the scope that refused, as go's `block_*`
    /// trace event carries it: `memory` for a memory refusal; `streams_inbound` and
    /// `streams_outbound` for a stream refusal; `conns_inbound`, `conns_outbound` and `fd` for
    /// a connection refusal (a connection that wanted a file descriptor asks for one, whichever
    /// limit refused it); every other field 0. go's `blocked_resources` adds these amounts,
    /// so an exporter with go's values counts here.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use rcmgr::{ConcreteLimitConfig, Direction, LimitExceeded, MetricsReporter, ResourceManager, ScopeStat};
    ///
    /// #[derive(Debug, Default)]
    /// struct Asked(Mutex<Vec<ScopeStat>>);
    /// impl MetricsReporter for Asked {
    ///     fn refused_amount(&self, _refusal: &LimitExceeded, asked: &ScopeStat) {
    ///         self.0.lock().unwrap().push(*asked);
    ///     }
    /// }
    ///
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.system.conns_inbound = 0;
    /// let asked = Arc::new(Asked::default());
    /// let rm = ResourceManager::builder(limits).metrics(asked.clone()).build()?;
    /// assert!(rm.open_connection(Direction::Inbound, true, &"/ip4/10.0.0.1/tcp/1".parse()?).is_err());
    /// let asked = asked.0.lock().unwrap();
    /// assert_eq!((asked[0].conns_inbound, asked[0].conns_outbound, asked[0].fd), (1, 0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn refused_amount(&self, refusal: &LimitExceeded, asked: &ScopeStat) {}
    /// A connection scope's own memory changed from `old` to `new` bytes (a reservation or
    /// release on the connection or one of its spans, or its close). go exports the
    /// distribution of connection memory from these changes; connections cannot be listed at
    /// scrape time, so an exporter must follow them here.
    fn conn_memory(&self, old: u64, new: u64) {}
}

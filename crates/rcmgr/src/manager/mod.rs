//! [`ResourceManager`]: the entry point.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc as StdArc, Weak as StdWeak},
    time::Duration,
};

use ipnet::IpNet;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

mod report;

pub use report::{ScopeUsage, UsageReport};

use crate::{
    error::Error,
    gate::{Allowlist, Clock, Gate, TimeSource},
    graph::{
        Fixed, Root,
        groups::{GroupKind, Groups},
        peers::member_key,
        scope::ScopeRef,
        span::{GroupView, PeerView},
    },
    handles::{
        ConnectionScope, PeerScope, ProtocolScope, ServiceScope, StreamScope, SystemScope,
        TransientScope, notify,
    },
    limits::{ConcreteLimitConfig, ConnLimitPerSubnet, ConnRateLimits, NetworkPrefixLimit},
    observe::{self, MetricsReporter, Observer, TraceReporter},
    sync::Arc,
    types::{Direction, ResourceManagerStat, ScopeName, ScopeStat},
};

/// How often the background collector runs unless [`ResourceManagerBuilder::gc_interval`]
/// says otherwise: go's one minute.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(60);

/// How many batches of trace events may wait for the trace writer unless
/// [`ResourceManagerBuilder::trace_queue`] says otherwise. A batch holds the events of one
/// operation (up to 64); when the queue is full, batches are dropped and counted
/// ([`ResourceManager::trace_dropped`]).
pub const DEFAULT_TRACE_QUEUE: usize = 4096;

/// Accounts every connection, stream, file descriptor and byte of buffer memory of a libp2p
/// node in a graph of scopes, and refuses what would take any scope past its limit.
///
/// It is a cheap handle (`Clone` shares one manager) and every method takes `&self`: nothing
/// on the reservation path takes a lock shared by the whole node.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, Priority, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let peer = rcmgr::PeerId::random();
///
/// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/10.0.0.1/tcp/4001".parse()?)?;
/// conn.set_peer(peer)?;
///
/// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
/// stream.set_protocol("/ipfs/ping/1.0.0")?;
/// stream.reserve_memory(4096, Priority::HIGH)?;
///
/// let stat = rm.stat();
/// assert_eq!(stat.peers[&peer].conns_inbound, 1);
/// assert_eq!(stat.protocols["/ipfs/ping/1.0.0"].memory, 4096);
/// drop((stream, conn));
/// assert!(rm.system().stat().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ResourceManager {
    core: StdArc<Core>,
}

/// A handle to a [`ResourceManager`] that does not keep it alive: for exporters and other
/// observers that the manager itself refers to (its metrics reporter), which would otherwise
/// form a cycle.
///
/// ```
/// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
/// let weak = rm.downgrade();
/// assert!(weak.upgrade().is_some());
/// drop(rm);
/// assert!(weak.upgrade().is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct WeakResourceManager {
    core: StdWeak<Core>,
}

impl WeakResourceManager {
    /// The manager, if a handle to it is still alive somewhere.
    pub fn upgrade(&self) -> Option<ResourceManager> {
        self.core.upgrade().map(|core| ResourceManager { core })
    }
}

/// What the manager handles share. Dropping the last handle stops the collector, finishes the
/// trace and empties the registries, which breaks the reference cycle between them and the
/// root (handles still alive keep working: their scopes stay valid, they are just no longer
/// listed).
struct Core {
    root: Arc<Root>,
    #[cfg(not(rcmgr_loom))]
    collector: Option<collector::Collector>,
    #[cfg(not(rcmgr_loom))]
    trace_writer: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        #[cfg(not(rcmgr_loom))]
        {
            drop(self.collector.take());
            if let Some(writer) = self.trace_writer.take() {
                if let Some(tracer) = self.root.observer.tracer() {
                    tracer.stop();
                }
                let _ = writer.join();
            }
        }
        // The peer scopes refer back to the root; emptying the registry that holds them breaks
        // the cycle (protocol and service scopes hold no reference to it).
        self.root.peers.clear();
    }
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManager")
            .field("system", &self.core.root.fixed(Fixed::System).stat())
            .field("transient", &self.core.root.fixed(Fixed::Transient).stat())
            .field("peers", &self.core.root.peers.len())
            .finish_non_exhaustive()
    }
}

/// The manager go-libp2p builds by default (go's `DefaultResourceManager`): go's default
/// limits plus go-libp2p's limits for its own services and protocols, scaled to this machine
/// (see [`ScalingLimitConfig::autoscale`](crate::ScalingLimitConfig::autoscale)).
///
/// ```
/// let rm = rcmgr::ResourceManager::default();
/// assert!(rm.list_peers().is_empty());
/// ```
impl Default for ResourceManager {
    fn default() -> Self {
        let limits = crate::limits::ScalingLimitConfig::default()
            .with_libp2p_defaults()
            .autoscale();
        ResourceManager::new(limits)
    }
}

impl ResourceManager {
    /// A manager that enforces `limits`, with the default options (a collector every
    /// [`DEFAULT_GC_INTERVAL`]).
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert!(rm.list_peers().is_empty());
    /// ```
    pub fn new(limits: ConcreteLimitConfig) -> Self {
        observe::log_start(&limits);
        let gate = Gate::new(&limits, Allowlist::new(), TimeSource::monotonic());
        let root = Arc::new(Root::new(limits, gate, Observer::default()));
        ResourceManager::from_root(root, Some(DEFAULT_GC_INTERVAL))
    }

    /// A builder for a manager with options.
    ///
    /// ```
    /// use std::time::Duration;
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .gc_interval(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn builder(limits: ConcreteLimitConfig) -> ResourceManagerBuilder {
        ResourceManagerBuilder {
            limits,
            gc_interval: Some(DEFAULT_GC_INTERVAL),
            allowlist: Vec::new(),
            clock: None,
            metrics: None,
            trace_target: None,
            trace_reporters: Vec::new(),
            trace_queue: DEFAULT_TRACE_QUEUE,
        }
    }

    fn from_root(root: Arc<Root>, gc_interval: Option<Duration>) -> Self {
        #[cfg(not(rcmgr_loom))]
        let collector = gc_interval.map(|every| collector::Collector::start(&root, every));
        #[cfg(rcmgr_loom)]
        let _ = gc_interval;
        ResourceManager {
            core: StdArc::new(Core {
                root,
                #[cfg(not(rcmgr_loom))]
                collector,
                #[cfg(not(rcmgr_loom))]
                trace_writer: None,
            }),
        }
    }

    /// A handle that does not keep the manager alive (see [`WeakResourceManager`]).
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert!(rm.downgrade().upgrade().is_some());
    /// ```
    pub fn downgrade(&self) -> WeakResourceManager {
        WeakResourceManager {
            core: StdArc::downgrade(&self.core),
        }
    }

    /// Trace events dropped so far because the trace's queue was full (a reservation never
    /// waits for the trace; see [`ResourceManagerBuilder::trace_queue`]). Always 0 without a
    /// trace.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .trace(std::io::sink())
    ///     .build()?;
    /// assert_eq!(rm.trace_dropped(), 0);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn trace_dropped(&self) -> u64 {
        #[cfg(not(rcmgr_loom))]
        if let Some(tracer) = self.root().observer.tracer() {
            return tracer.dropped();
        }
        0
    }

    /// Waits until every trace event recorded before this call (on any thread: each hands its
    /// events on when its operation returns) is written to the trace output, flushed, and
    /// given to the trace reporters. Does nothing without a trace. Dropping the last manager
    /// handle does this too, and closes the output.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let path = std::env::temp_dir().join(format!("rcmgr-doc-trace-{}.json", std::process::id()));
    /// let rm = ResourceManager::builder(ConcreteLimitConfig::infinite()).trace_file(&path).build()?;
    /// drop(rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?);
    /// rm.flush_trace();
    /// let text = std::fs::read_to_string(&path)?;
    /// assert!(text.lines().next().unwrap().contains(r#""Type":"start""#));
    /// assert!(text.contains(r#""Type":"add_stream""#));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush_trace(&self) {
        #[cfg(not(rcmgr_loom))]
        if let Some(tracer) = self.root().observer.tracer() {
            tracer.flush();
        }
    }

    pub(crate) fn root(&self) -> &Arc<Root> {
        &self.core.root
    }

    /// Opens a connection scope (go's `OpenConnection`): one connection in `direction`, and a
    /// file descriptor if `use_fd`, reserved on the transient and system scopes. `endpoint`
    /// is the remote address.
    ///
    /// Before the scopes, the address-based limits of [`IpLimits`](crate::IpLimits) apply, in
    /// both directions: the connection rate limits take a token
    /// ([`Error::RateLimited`]), then the connection is counted against its IP's subnets or
    /// network ([`Error::IpLimitExceeded`]). If the transient or system scope refuses and the
    /// endpoint is [allowlisted](Self::allowlist), or some peer is trusted
    /// ([`Allowlist::add_peer`](crate::Allowlist::add_peer)), the connection is opened in the
    /// allowlisted scopes instead (`set_peer` sends it back to the normal ones unless its peer
    /// is allowed). Endpoints that do not start with an `/ip4` or `/ip6` component (`/dns…`,
    /// `/unix`, `/memory`, relayed addresses without the relay's IP) are not counted per IP,
    /// match no allowlisted network, and are rate limited by the global limit only.
    ///
    /// The connection is released when the returned scope is dropped, its per-IP count
    /// included. On error nothing was reserved.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.transient.conns_inbound = 1;
    /// let rm = ResourceManager::new(limits);
    /// let endpoint = "/ip4/10.0.0.1/tcp/4001".parse()?;
    /// let _first = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// let err = rm.open_connection(Direction::Inbound, true, &endpoint).unwrap_err();
    /// assert_eq!(err.to_string(), "conn-2: transient: cannot reserve inbound connection: resource limit exceeded");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_connection(
        &self,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
    ) -> Result<ConnectionScope, Error> {
        ConnectionScope::open(self.root(), direction, use_fd, endpoint)
    }

    /// The allowlist (go's `GetAllowlist`): change it at any time, also while connections
    /// are being opened.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// rm.allowlist().add(&"/ip4/192.0.2.0/ipcidr/24".parse()?)?;
    /// assert!(rm.allowlist().allowed(&"/ip4/192.0.2.1/tcp/1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowlist(&self) -> &Allowlist {
        self.root().gate.allowlist()
    }

    /// Whether a connection attempt from `source` should first prove it owns its address
    /// (a QUIC Retry), go's `VerifySourceAddress`: true once the source's subnet or network
    /// has used up a small budget of unverified attempts, derived from its connection limit
    /// (a burst of half the limit, refilled at 0.1 per second). Always false when the
    /// per-IP limits are off.
    ///
    /// ```
    /// use rcmgr::{ConnLimitPerSubnet, ResourceManager};
    /// let rm = ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .limit_per_subnet(Some(vec![ConnLimitPerSubnet { prefix_length: 32, conn_count: 4 }]), None)
    ///     .build()?;
    /// let source = "192.0.2.1:4001".parse()?;
    /// assert!(!rm.verify_source_address(&source));
    /// assert!(!rm.verify_source_address(&source));
    /// assert!(rm.verify_source_address(&source)); // a burst of 4 / 2
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify_source_address(&self, source: &SocketAddr) -> bool {
        self.root().gate.verify_source_address(source)
    }

    /// How many connections each subnet and network holds now, as the per-IP limits count
    /// them. Subnets and networks without connections are not listed (they are not kept).
    ///
    /// ```
    /// use rcmgr::{Direction, ResourceManager};
    /// let rm = ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .limit_per_subnet(Some(rcmgr::IpLimits::default().subnet_v4), None)
    ///     .build()?;
    /// let conn = rm.open_connection(Direction::Inbound, true, &"/ip4/192.0.2.1/tcp/1".parse()?)?;
    /// assert_eq!(rm.ip_conn_counts()[&"192.0.2.1/32".parse()?], 1);
    /// drop(conn);
    /// assert!(rm.ip_conn_counts().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ip_conn_counts(&self) -> BTreeMap<IpNet, u64> {
        let mut counts = BTreeMap::new();
        for (network, count) in self.root().gate.conn_counts() {
            *counts.entry(network).or_insert(0) += count;
        }
        counts
    }

    /// Opens a stream scope for `peer` (go's `OpenStream`): one stream in `direction`,
    /// reserved on the peer, transient and system scopes until its protocol is set.
    ///
    /// The stream is released when the returned scope is dropped. On error nothing was
    /// reserved.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let _stream = rm.open_stream(peer, Direction::Outbound)?;
    /// assert_eq!(rm.peer(&peer).stat().streams_outbound, 1);
    /// assert_eq!(rm.transient().stat().streams_outbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn open_stream(&self, peer: PeerId, direction: Direction) -> Result<StreamScope, Error> {
        StreamScope::open(self.root(), peer, direction)
    }

    /// The system scope.
    ///
    /// ```
    /// # use rcmgr::ResourceScope;
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert!(rm.system().stat().is_empty());
    /// ```
    pub fn system(&self) -> SystemScope {
        SystemScope::new(Arc::clone(self.root()))
    }

    /// The transient scope.
    ///
    /// ```
    /// # use rcmgr::ResourceScope;
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert!(rm.transient().stat().is_empty());
    /// ```
    pub fn transient(&self) -> TransientScope {
        TransientScope::new(Arc::clone(self.root()))
    }

    /// The scope of `peer`, created if it does not exist (as go's `ViewPeer` does). The view
    /// keeps the scope from being collected while it is held.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let id = rcmgr::PeerId::random();
    /// let _view = rm.peer(&id);
    /// assert_eq!(rm.list_peers(), vec![id]);
    /// ```
    pub fn peer(&self, peer: &PeerId) -> PeerScope {
        let root = self.root();
        let _operation = root.observer.operation();
        let (view, created) = PeerView::new(root, peer);
        if created {
            notify::created(root, ScopeRef::Peer(view.node()));
        }
        PeerScope::new(view)
    }

    /// The scope of `protocol`, created if it does not exist.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert_eq!(rm.protocol("/x").protocol(), "/x");
    /// ```
    pub fn protocol(&self, protocol: &str) -> ProtocolScope {
        ProtocolScope::new(self.group_view(GroupKind::Protocol, protocol))
    }

    /// The scope of `service`, created if it does not exist.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert_eq!(rm.service("s").service(), "s");
    /// ```
    pub fn service(&self, service: &str) -> ServiceScope {
        ServiceScope::new(self.group_view(GroupKind::Service, service))
    }

    /// A view of the protocol or service scope `name`, made (and traced) if needed.
    fn group_view(&self, kind: GroupKind, name: &str) -> GroupView {
        let root = self.root();
        let _operation = root.observer.operation();
        let (view, created) = GroupView::new(root, kind, name);
        if created {
            notify::created(root, ScopeRef::Group(root, kind, view.slot()));
        }
        view
    }

    /// What `peer`'s scope within `protocol` holds (go's `protocol:<p>.peer:<id>`), if both
    /// exist now. Nothing is made.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
    /// stream.set_protocol("/x")?;
    /// assert_eq!(rm.protocol_peer_stat("/x", &peer).unwrap().streams_inbound, 1);
    /// assert_eq!(rm.protocol_peer_stat("/y", &peer), None);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn protocol_peer_stat(&self, protocol: &str, peer: &PeerId) -> Option<ScopeStat> {
        self.member_stat(GroupKind::Protocol, protocol, peer)
    }

    /// What `peer`'s scope within `service` holds (go's `service:<s>.peer:<id>`), if both
    /// exist now. Nothing is made.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
    /// stream.set_protocol("/x")?;
    /// stream.set_service("s")?;
    /// assert_eq!(rm.service_peer_stat("s", &peer).unwrap().streams_inbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn service_peer_stat(&self, service: &str, peer: &PeerId) -> Option<ScopeStat> {
        self.member_stat(GroupKind::Service, service, peer)
    }

    fn member_stat(&self, kind: GroupKind, name: &str, peer: &PeerId) -> Option<ScopeStat> {
        let root = self.root();
        let groups = root.groups(kind);
        let found = groups.find(name)?;
        let group = groups.get(found.slot).filter(|g| g.is(found.incarnation))?;
        let key = member_key(kind, group.current(found.slot));
        root.peers.get(peer)?.members.stat_of(key)
    }

    /// Bytes callers released so far beyond what the scope they released on held (each such
    /// release is clamped there, logged at debug level with go's "BUG: too much memory
    /// released", and never takes another scope's usage away from the scopes above).
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let (a, b) = (rm.peer(&rcmgr::PeerId::random()), rm.peer(&rcmgr::PeerId::random()));
    /// a.reserve_memory(100, Priority::ALWAYS)?;
    /// b.reserve_memory(500, Priority::ALWAYS)?;
    /// a.release_memory(1_000);
    /// assert_eq!(rm.system().stat().memory, 500, "b's bytes stay counted");
    /// assert_eq!(rm.over_released(), 900);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn over_released(&self) -> u64 {
        self.root().over_released()
    }

    /// A snapshot of every scope's usage (go's `ResourceManagerState.Stat`). Each scope is
    /// read on its own, so the parts need not add up exactly while the node is busy.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let _stream = rm.open_stream(peer, Direction::Inbound)?;
    /// let stat = rm.stat();
    /// assert_eq!(stat.transient.streams_inbound, 1);
    /// assert_eq!(stat.peers[&peer].streams_inbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn stat(&self) -> ResourceManagerStat {
        let root = self.root();
        let mut stat = ResourceManagerStat::default();
        root.peers.for_each(|peer, node| {
            stat.peers.insert(*peer, node.scope.stat());
        });
        root.protocols.for_each(|name, _, group| {
            stat.protocols.insert(name.to_string(), group.scope.stat());
        });
        root.services.for_each(|name, _, group| {
            stat.services.insert(name.to_string(), group.scope.stat());
        });
        stat.transient = root.fixed(Fixed::Transient).stat();
        stat.system = root.fixed(Fixed::System).stat();
        stat
    }

    /// Usage against limits for people to read: the fixed scopes and the busiest peers,
    /// protocols and services, each with the limit in force for it (go has no such report:
    /// go-libp2p#3193, #3197). Print it, or read its fields.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// println!("{}", rm.report());
    /// ```
    pub fn report(&self) -> UsageReport {
        let root = self.root();
        let scopes = Fixed::ALL
            .into_iter()
            .map(|which| usage(ScopeRef::Fixed(root, which)))
            .collect();
        let mut peers = Vec::new();
        root.peers
            .for_each(|_, node| peers.push(usage(ScopeRef::Peer(node))));
        let (protocol_count, protocols) = busiest_groups(root, &root.protocols);
        let (service_count, services) = busiest_groups(root, &root.services);
        UsageReport {
            scopes,
            peer_count: peers.len(),
            peers: UsageReport::busiest(peers),
            protocols,
            services,
            protocol_count,
            service_count,
        }
    }

    /// Every peer that has a scope now, ordered by the bytes of the peer ID (as go orders
    /// them).
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let (a, b) = (rcmgr::PeerId::random(), rcmgr::PeerId::random());
    /// let _views = (rm.peer(&a), rm.peer(&b));
    /// let mut expected = vec![a, b];
    /// expected.sort_by_key(|p| p.to_bytes());
    /// assert_eq!(rm.list_peers(), expected);
    /// ```
    pub fn list_peers(&self) -> Vec<PeerId> {
        let mut peers = BTreeMap::new();
        self.root().peers.for_each(|peer, _| {
            peers.insert(peer.to_bytes(), *peer);
        });
        peers.into_values().collect()
    }

    /// Every protocol that has a scope now, sorted.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let _views = (rm.protocol("/b"), rm.protocol("/a"));
    /// assert_eq!(rm.list_protocols(), ["/a", "/b"]);
    /// ```
    pub fn list_protocols(&self) -> Vec<String> {
        sorted_names(&self.root().protocols)
    }

    /// Every service that has a scope now, sorted.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let _view = rm.service("libp2p.ping");
    /// assert_eq!(rm.list_services(), ["libp2p.ping"]);
    /// ```
    pub fn list_services(&self) -> Vec<String> {
        sorted_names(&self.root().services)
    }

    /// The limits in force.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert_eq!(rm.limits(), rcmgr::ConcreteLimitConfig::infinite());
    /// ```
    pub fn limits(&self) -> ConcreteLimitConfig {
        (*self.root().limits()).clone()
    }

    /// Replaces the limits of every scope at once. The next reservation on each scope uses
    /// the new limits; nothing already reserved is evicted, so a scope already above a
    /// lowered limit refuses new reservations until its usage falls below it. Limits pinned
    /// with [`ResourceScope::set_limit`](crate::ResourceScope::set_limit) stay pinned.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let _held = rm.open_stream(peer, Direction::Inbound)?;
    /// let mut lower = ConcreteLimitConfig::infinite();
    /// lower.system.streams = 1;
    /// rm.set_limits(lower);
    /// assert!(rm.open_stream(peer, Direction::Inbound).is_err());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn set_limits(&self, limits: ConcreteLimitConfig) {
        self.root().set_limits(limits);
    }

    /// Runs one collection pass now (one also runs in the background). A peer, protocol or
    /// service scope, or a per-peer scope within a protocol or service, is removed once two
    /// passes in a row have found it without a view and holding nothing (memory included); a
    /// scope pinned with `set_limit` is kept. Call it twice to remove everything that is idle
    /// now. Address counters at zero and full rate-limit buckets are forgotten too.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// drop(rm.peer(&rcmgr::PeerId::random()));
    /// rm.gc();
    /// assert_eq!(rm.list_peers().len(), 1);
    /// rm.gc();
    /// assert!(rm.list_peers().is_empty());
    /// ```
    pub fn gc(&self) {
        collect(self.root());
    }
}

/// One collection pass over the graph and the gate, with the trace of what was removed.
fn collect(root: &Root) {
    let _operation = root.observer.operation();
    let collected = root.collect();
    root.gate.collect();
    if root.observer.tracer().is_some() {
        for peer in collected.peers {
            notify::destroyed(root, || ScopeName::Peer(peer));
        }
        for protocol in collected.protocols {
            notify::destroyed(root, || ScopeName::Protocol(protocol));
        }
        for service in collected.services {
            notify::destroyed(root, || ScopeName::Service(service));
        }
    }
}

/// One scope's stat and limit for a report.
fn usage(scope: ScopeRef<'_>) -> ScopeUsage {
    ScopeUsage {
        name: scope.name(),
        stat: scope.stat(),
        limit: scope.limit(),
    }
}

/// How many protocol (or service) scopes there are, and the busiest of them.
fn busiest_groups(root: &Root, groups: &Groups) -> (usize, Vec<ScopeUsage>) {
    let mut all = Vec::new();
    groups.for_each(|_, found, _| all.push(usage(ScopeRef::Group(root, groups.kind, found.slot))));
    (all.len(), UsageReport::busiest(all))
}

fn sorted_names(groups: &Groups) -> Vec<String> {
    let mut names = Vec::new();
    groups.for_each(|name, _, _| names.push(name.to_string()));
    names.sort();
    names
}

/// Where the trace's lines go. (Under loom there is no trace: the target is kept, unused.)
#[cfg_attr(rcmgr_loom, allow(dead_code))]
enum TraceTarget {
    Writer(Box<dyn Write + Send>),
    File(PathBuf),
}

/// Options for a [`ResourceManager`]; see [`ResourceManager::builder`].
#[must_use = "call build() to get the manager"]
pub struct ResourceManagerBuilder {
    limits: ConcreteLimitConfig,
    gc_interval: Option<Duration>,
    allowlist: Vec<Multiaddr>,
    clock: Option<Box<dyn Clock>>,
    metrics: Option<StdArc<dyn MetricsReporter>>,
    trace_target: Option<TraceTarget>,
    trace_reporters: Vec<StdArc<dyn TraceReporter>>,
    trace_queue: usize,
}

impl fmt::Debug for ResourceManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trace = match &self.trace_target {
            Some(TraceTarget::File(path)) => Some(path.display().to_string()),
            Some(TraceTarget::Writer(_)) => Some("a writer".to_owned()),
            None => None,
        };
        f.debug_struct("ResourceManagerBuilder")
            .field("limits", &self.limits)
            .field("gc_interval", &self.gc_interval)
            .field("allowlist", &self.allowlist)
            .field("clock", &self.clock)
            .field("metrics", &self.metrics.is_some())
            .field("trace", &trace)
            .field("trace_reporters", &self.trace_reporters.len())
            .field("trace_queue", &self.trace_queue)
            .finish()
    }
}

impl ResourceManagerBuilder {
    /// Reports allowed and refused reservations to `reporter` (go's `WithMetrics`); see
    /// [`MetricsReporter`]. The `rcmgr-prometheus` crate has one that exports go's metrics.
    /// Calling it again replaces the reporter.
    ///
    /// ```
    /// #[derive(Debug)]
    /// struct Quiet;
    /// impl rcmgr::MetricsReporter for Quiet {}
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .metrics(std::sync::Arc::new(Quiet))
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn metrics(mut self, reporter: StdArc<dyn MetricsReporter>) -> Self {
        self.metrics = Some(reporter);
        self
    }

    /// Writes a trace of every accounting event to `writer`, one JSON object per line in
    /// go's schema (see [`TraceEvent`](crate::TraceEvent)), from a thread of its own (go's
    /// `WithTrace`, without its gzip: use [`trace_file`](Self::trace_file) with a `.gz` path
    /// for that). Replaces an earlier `trace` or `trace_file`.
    ///
    /// ```
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .trace(std::io::sink())
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn trace(mut self, writer: impl Write + Send + 'static) -> Self {
        self.trace_target = Some(TraceTarget::Writer(Box::new(writer)));
        self
    }

    /// Writes the trace (see [`trace`](Self::trace)) to a file, created or truncated when the
    /// manager is built, gzip-compressed when the path ends in `.gz` (as go's trace files
    /// are). [`build`](Self::build) fails with [`Error::Trace`] if the file cannot be created.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("rcmgr-doc-{}.jsonl.gz", std::process::id()));
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .trace_file(&path)
    ///     .build()?;
    /// drop(rm); // writes the last events and finishes the gzip stream
    /// assert!(std::fs::metadata(&path)?.len() > 0);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace_file(mut self, path: impl AsRef<Path>) -> Self {
        self.trace_target = Some(TraceTarget::File(path.as_ref().to_path_buf()));
        self
    }

    /// Hands every trace event to `reporter` as well (go's `WithTraceReporter`), on the
    /// trace's thread; see [`TraceReporter`]. A trace runs with reporters alone too. Calling
    /// it again adds another.
    ///
    /// ```
    /// #[derive(Debug)]
    /// struct Ignore;
    /// impl rcmgr::TraceReporter for Ignore {
    ///     fn consume(&self, _event: &rcmgr::TraceEvent) {}
    /// }
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .trace_reporter(std::sync::Arc::new(Ignore))
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn trace_reporter(mut self, reporter: StdArc<dyn TraceReporter>) -> Self {
        self.trace_reporters.push(reporter);
        self
    }

    /// How many batches of trace events (one operation's events each, at most 64) may wait
    /// for the trace's thread; [`DEFAULT_TRACE_QUEUE`] unless set. When it is full, new
    /// batches are dropped and counted ([`ResourceManager::trace_dropped`]). At least 1.
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .trace(std::io::sink())
    ///     .trace_queue(64)
    ///     .build()?;
    /// # drop(rm);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn trace_queue(mut self, batches: usize) -> Self {
        self.trace_queue = batches.max(1);
        self
    }

    /// How often the background collector runs. `Duration::ZERO` turns it off (call
    /// [`ResourceManager::gc`] yourself then).
    ///
    /// ```
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .gc_interval(std::time::Duration::ZERO)
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn gc_interval(mut self, every: Duration) -> Self {
        self.gc_interval = (!every.is_zero()).then_some(every);
        self
    }

    /// Allowlists these entries (go's `WithAllowlistedMultiaddrs`); see
    /// [`Allowlist`](crate::Allowlist) for what an entry may be. [`build`](Self::build) fails
    /// if one is invalid. Calling it again adds more.
    ///
    /// ```
    /// let peer = rcmgr::PeerId::random();
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .allowlist(["/ip4/10.0.0.0/ipcidr/8".parse()?, format!("/ip6/2001:db8::1/p2p/{peer}").parse()?])
    ///     .build()?;
    /// assert!(rm.allowlist().allowed(&"/ip4/10.9.9.9/tcp/1".parse()?));
    /// assert!(rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .allowlist(["/dns4/example.com".parse()?])
    ///     .build()
    ///     .is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowlist(mut self, entries: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.allowlist.extend(entries);
        self
    }

    /// Replaces the per-subnet connection limits of each family given (go's
    /// `WithLimitPerSubnet`): `None` keeps that family's limits from the configuration,
    /// `Some(vec![])` turns them off.
    ///
    /// ```
    /// use rcmgr::ConnLimitPerSubnet;
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .limit_per_subnet(Some(vec![ConnLimitPerSubnet { prefix_length: 24, conn_count: 100 }]), None)
    ///     .build()?;
    /// assert_eq!(rm.limits().ip.subnet_v4[0].prefix_length, 24);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn limit_per_subnet(
        mut self,
        v4: Option<Vec<ConnLimitPerSubnet>>,
        v6: Option<Vec<ConnLimitPerSubnet>>,
    ) -> Self {
        replace_some(&mut self.limits.ip.subnet_v4, v4);
        replace_some(&mut self.limits.ip.subnet_v6, v6);
        self
    }

    /// Replaces the network-prefix connection limits of each family given (go's
    /// `WithNetworkPrefixLimit`): `None` keeps that family's limits from the configuration,
    /// `Some(vec![])` removes them (loopback's exemption included).
    ///
    /// ```
    /// use rcmgr::NetworkPrefixLimit;
    /// let office = NetworkPrefixLimit { network: "203.0.113.0/24".parse()?, conn_count: 500 };
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .network_prefix_limits(Some(vec![office]), None)
    ///     .build()?;
    /// assert_eq!(rm.limits().ip.network_prefix_v4, [office]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn network_prefix_limits(
        mut self,
        v4: Option<Vec<NetworkPrefixLimit>>,
        v6: Option<Vec<NetworkPrefixLimit>>,
    ) -> Self {
        replace_some(&mut self.limits.ip.network_prefix_v4, v4);
        replace_some(&mut self.limits.ip.network_prefix_v6, v6);
        self
    }

    /// Replaces the connection rate limits (go's `WithConnRateLimiters`).
    ///
    /// ```
    /// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .conn_rate_limits(rcmgr::ConnRateLimits::default())
    ///     .build()?;
    /// assert_eq!(rm.limits().ip.rate, rcmgr::ConnRateLimits::default());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn conn_rate_limits(mut self, limits: ConnRateLimits) -> Self {
        self.limits.ip.rate = limits;
        self
    }

    /// The clock the rate limiters read (a monotonic clock by default); for tests that move
    /// time by hand. See [`Clock`](crate::Clock).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// #[derive(Debug)]
    /// struct Frozen;
    /// impl rcmgr::Clock for Frozen {
    ///     fn now(&self) -> Duration { Duration::from_secs(42) }
    /// }
    ///
    /// let _rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
    ///     .clock(Frozen)
    ///     .build()?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Builds the manager. Fails with [`Error::InvalidAllowlistEntry`] for an allowlist entry
    /// without an IP or with a bad `/ipcidr`, and with [`Error::InvalidIpLimits`] for
    /// address limits that [`IpLimits::validate`](crate::IpLimits::validate) refuses.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, ConnLimitPerSubnet, ResourceManager};
    /// let too_long = ConnLimitPerSubnet { prefix_length: 40, conn_count: 8 };
    /// let err = ResourceManager::builder(ConcreteLimitConfig::infinite())
    ///     .limit_per_subnet(Some(vec![too_long]), None)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, rcmgr::Error::InvalidIpLimits(_)));
    /// ```
    pub fn build(self) -> Result<ResourceManager, Error> {
        self.limits.ip.validate()?;
        let allowlist = Allowlist::new();
        allowlist.add_all(&self.allowlist)?;
        let time = match self.clock {
            Some(clock) => TimeSource::Custom(clock),
            None => TimeSource::monotonic(),
        };
        observe::log_start(&self.limits);
        #[cfg(not(rcmgr_loom))]
        let trace = trace_setup(
            &self.limits,
            self.trace_target,
            self.trace_reporters,
            self.trace_queue,
        )?;
        let gate = Gate::new(&self.limits, allowlist, time);
        let observer = Observer {
            metrics: self.metrics,
            tracer: None,
        };
        #[cfg(not(rcmgr_loom))]
        {
            let Some((tracer, setup)) = trace else {
                let root = Root::new(self.limits, gate, observer);
                return Ok(ResourceManager::from_root(Arc::new(root), self.gc_interval));
            };
            let observer = Observer {
                tracer: Some(tracer),
                ..observer
            };
            let root = Arc::new(Root::new(self.limits, gate, observer));
            let writer = observe::writer::spawn(setup)
                .map_err(|err| Error::Trace(Box::new(crate::error::TraceError::new(None, &err))))?;
            let mut rm = ResourceManager::from_root(root, self.gc_interval);
            if let Some(core) = StdArc::get_mut(&mut rm.core) {
                core.trace_writer = Some(writer);
            }
            Ok(rm)
        }
        #[cfg(rcmgr_loom)]
        {
            let _ = (self.trace_target, self.trace_reporters, self.trace_queue);
            let root = Root::new(self.limits, gate, observer);
            Ok(ResourceManager::from_root(Arc::new(root), self.gc_interval))
        }
    }
}

/// The tracer and the writer thread's setup for a trace to `target` and `reporters`, or
/// `None` when neither is given.
#[cfg(not(rcmgr_loom))]
fn trace_setup(
    limits: &ConcreteLimitConfig,
    target: Option<TraceTarget>,
    reporters: Vec<StdArc<dyn TraceReporter>>,
    queue: usize,
) -> Result<Option<(observe::Tracer, observe::writer::WriterSetup)>, Error> {
    use observe::writer::{Output, WriterSetup, wall_clock_ns};
    let output = match target {
        None if reporters.is_empty() => return Ok(None),
        None => None,
        Some(TraceTarget::Writer(writer)) => Some(Output::plain(writer)),
        Some(TraceTarget::File(path)) => {
            let file = std::fs::File::create(&path).map_err(|err| {
                Error::Trace(Box::new(crate::error::TraceError::new(
                    Some(path.clone()),
                    &err,
                )))
            })?;
            let gzip = path.extension().is_some_and(|ext| ext == "gz");
            Some(if gzip {
                Output::gzip(Box::new(file))
            } else {
                Output::plain(Box::new(file))
            })
        }
    };
    let (sender, receiver) = std::sync::mpsc::sync_channel(queue);
    let now_ns = wall_clock_ns();
    let clock = StdArc::new(crate::sync::AtomicU64::new(now_ns));
    let congested = StdArc::new(crate::sync::AtomicBool::new(false));
    let unreported = StdArc::new(crate::sync::AtomicU64::new(0));
    let first_drop = StdArc::new(crate::sync::AtomicU64::new(0));
    let tracer = observe::Tracer::new(
        sender,
        StdArc::clone(&clock),
        StdArc::clone(&congested),
        StdArc::clone(&unreported),
        StdArc::clone(&first_drop),
    );
    let start_time = std::time::UNIX_EPOCH + Duration::from_nanos(now_ns);
    let setup = WriterSetup {
        output,
        reporters,
        queue: receiver,
        clock,
        congested,
        unreported,
        first_drop,
        preamble: observe::trace_preamble(start_time, limits),
    };
    Ok(Some((tracer, setup)))
}

/// Replaces `target` with `value` if there is one.
fn replace_some<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

#[cfg(not(rcmgr_loom))]
mod collector {
    //! The background collector: a thread that runs a collection pass every interval and
    //! stops as soon as the manager is dropped.

    use std::{
        sync::{Arc, Condvar, Mutex, Weak},
        thread::JoinHandle,
        time::Duration,
    };

    use crate::graph::Root;

    pub(super) struct Collector {
        stop: Arc<(Mutex<bool>, Condvar)>,
        thread: Option<JoinHandle<()>>,
    }

    impl Collector {
        pub(super) fn start(root: &Arc<Root>, every: Duration) -> Self {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let root: Weak<Root> = Arc::downgrade(root);
            let signal = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("rcmgr-gc".into())
                .spawn(move || run(&root, &signal, every))
                .ok();
            Collector { stop, thread }
        }
    }

    fn run(root: &Weak<Root>, stop: &(Mutex<bool>, Condvar), every: Duration) {
        let (stopped, wake) = stop;
        loop {
            let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
            // The flag is checked under the lock before waiting, so a stop signalled before
            // this thread first waits is not missed.
            let (guard, _) = wake
                .wait_timeout_while(guard, every, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            drop(guard);
            let Some(root) = root.upgrade() else { return };
            super::collect(&root);
        }
    }

    impl Drop for Collector {
        fn drop(&mut self) {
            let (stopped, wake) = &*self.stop;
            *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

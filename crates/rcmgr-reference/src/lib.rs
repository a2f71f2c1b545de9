//! A lock-based reference resource manager, for tests and benchmarks only.
//!
//! [`ReferenceManager`] does what [`ResourceManager`](rcmgr::ResourceManager) does in the
//! plainest way there is: the whole state sits in ordinary maps and integers behind **one**
//! `std::sync::Mutex`, and every operation holds that lock from start to end, as go-libp2p's
//! manager serializes its work on its mutexes. It exists for two reasons:
//!
//! * it is the oracle of rcmgr's model-based test, which applies random operation sequences
//!   to both managers and compares every result, error text and statistic after each step;
//! * it is the "simple global mutex" baseline that the benchmarks compare the lock-free
//!   engine with.
//!
//! It shares no accounting code with the engine. The walks (a scope first, then its owner
//! chain or its constraining edges in go's order), the limit checks (go's check order and
//! memory threshold), the transfers behind `set_peer`, `set_protocol` and `set_service`, the
//! construction of errors and the collection rule are written again here from go's behaviour
//! and rcmgr's documented differences, so that a mistake in either implementation shows up as
//! a disagreement. What it does share is vocabulary: the limit types, [`ScopeStat`],
//! [`ScopeName`] and the [`Error`] values it returns, which are the same values, with the same
//! `Display` text, that the engine returns in a sequential run.
//!
//! Where rcmgr deliberately differs from go, the reference follows rcmgr:
//!
//! * handles release what they hold exactly once, when dropped or on `done()`; after `done()`
//!   reservations, spans and transfers fail with [`Error::ScopeClosed`] and releases do
//!   nothing;
//! * a scope's limit is looked up in the current configuration at every reservation, so
//!   [`ReferenceManager::set_limits`] applies everywhere at once, and a span follows its
//!   owner's limit; [`Scope::set_limit`] pins a scope's limit (and keeps a peer scope from
//!   being collected);
//! * a peer, protocol or service scope is referenced while a view, or a span or guard begun
//!   through one, reaches it; connections and streams hold usage, not references;
//! * [`ReferenceManager::gc`] removes a peer, protocol or service scope, or a per-peer scope
//!   inside a protocol or service, once two passes in a row found it unreferenced, unpinned
//!   and holding nothing, memory included;
//! * a memory release takes at most what the scope it is made on holds itself (a
//!   connection's, stream's or span's own bytes; the bytes reserved on a view's scope
//!   through views and their guards, not its spans', which are the spans' own) and gives
//!   back exactly that further up, so an over-release never takes another scope's usage.
//!
//! Not modelled: the allowlisted scopes, per-IP limits, counter field capacities (irrelevant
//! below 2^21 connections or 2^53 bytes), metrics, tracing and go's "BUG: ..." warnings on
//! over-release (releases clamp at zero silently).
//!
//! Not for production: the one lock serializes the whole node.
//!
//! # Example
//!
//! ```
//! use rcmgr_reference::{ReferenceManager, Scope};
//! use rcmgr::{ConcreteLimitConfig, Direction, Priority};
//!
//! let mut limits = ConcreteLimitConfig::infinite();
//! limits.peer_default.streams_inbound = 1;
//! let rm = ReferenceManager::new(limits);
//! let peer = rcmgr::PeerId::random();
//!
//! let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/10.0.0.1/tcp/1".parse()?)?;
//! conn.set_peer(peer)?;
//! let mut stream = rm.open_stream(peer, Direction::Inbound)?;
//! stream.set_protocol("/ipfs/ping/1.0.0")?;
//! stream.reserve_memory(4096, Priority::HIGH)?;
//! assert_eq!(rm.stat().protocols["/ipfs/ping/1.0.0"].memory, 4096);
//!
//! let refused = rm.open_stream(peer, Direction::Inbound).unwrap_err();
//! assert_eq!(
//!     refused.to_string(),
//!     format!("stream-2: peer:{peer}: cannot reserve inbound stream: resource limit exceeded")
//! );
//! drop((stream, conn));
//! assert!(rm.system().stat().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Error, LimitExceeded, Priority, Resource,
    ResourceManagerStat, ScopeClosed, ScopeName, ScopeStat,
};

/// Collection passes in a row that must find a scope idle before it is removed.
const IDLE_PASSES_TO_COLLECT: u8 = 2;

/// The state every handle shares, behind the one lock.
type Shared = Arc<Mutex<State>>;

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while the lock was held (in a test assertion, say) leaves plain data behind;
    // keep going with it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lock-based reference manager; see the [module docs](self).
///
/// It is a cheap handle: clones share one manager.
///
/// ```
/// use rcmgr_reference::{ReferenceManager, Scope};
/// use rcmgr::{ConcreteLimitConfig, Priority};
/// let rm = ReferenceManager::new(ConcreteLimitConfig::infinite());
/// rm.transient().reserve_memory(10, Priority::LOW)?;
/// assert_eq!(rm.stat().system.memory, 10);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Clone)]
pub struct ReferenceManager {
    shared: Shared,
}

impl fmt::Debug for ReferenceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceManager")
            .field("stat", &self.stat())
            .finish_non_exhaustive()
    }
}

impl ReferenceManager {
    /// A manager that enforces `limits`. It collects nothing by itself: call
    /// [`gc`](Self::gc).
    ///
    /// ```
    /// let rm = rcmgr_reference::ReferenceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert!(rm.list_peers().is_empty());
    /// ```
    pub fn new(limits: ConcreteLimitConfig) -> Self {
        ReferenceManager {
            shared: Arc::new(Mutex::new(State::new(limits))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A handle to `at`, which the caller has just acquired under the lock.
    fn handle(&self, at: At, on_drop: OnDrop) -> Handle {
        Handle::new(&self.shared, at, on_drop)
    }

    /// Opens a connection scope in the transient scope: one connection in `direction`, and a
    /// file descriptor if `use_fd` (go's `OpenConnection`). The endpoint is kept but not
    /// checked: per-IP limits are not modelled. On error nothing was reserved, but the
    /// connection number was used.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.transient.conns = 0;
    /// let rm = rcmgr_reference::ReferenceManager::new(limits);
    /// let err = rm.open_connection(Direction::Outbound, false, &"/ip4/1.2.3.4/tcp/1".parse()?).unwrap_err();
    /// assert_eq!(err.to_string(), "conn-1: transient: cannot reserve connection: resource limit exceeded");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_connection(
        &self,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
    ) -> Result<Connection, Error> {
        let mut state = self.lock();
        state.next_conn += 1;
        let number = state.next_conn;
        let kind = NodeKind::Conn { peer: None };
        let at = state.open_node(
            kind,
            ScopeName::Conn(number),
            Amount::conn(direction, use_fd),
        )?;
        Ok(Connection {
            handle: self.handle(at, OnDrop::Close),
            direction,
            use_fd,
            endpoint: endpoint.clone(),
        })
    }

    /// Opens a stream scope for `peer` in the peer and transient scopes (go's `OpenStream`).
    /// The peer's scope is created if needed, even if the stream is refused.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction};
    /// let rm = rcmgr_reference::ReferenceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let _stream = rm.open_stream(peer, Direction::Outbound)?;
    /// assert_eq!(rm.stat().peers[&peer].streams_outbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn open_stream(&self, peer: PeerId, direction: Direction) -> Result<Stream, Error> {
        let mut state = self.lock();
        state.look_up(&At::Peer(peer));
        state.next_stream += 1;
        let number = state.next_stream;
        let kind = NodeKind::Stream {
            peer,
            protocol: None,
            service: None,
        };
        let amount = Amount::stream(direction);
        let at = state.open_node(kind, ScopeName::Stream(number), amount)?;
        Ok(Stream {
            handle: self.handle(at, OnDrop::Close),
            peer,
            direction,
        })
    }

    /// A view of the system scope.
    ///
    /// ```
    /// use rcmgr_reference::Scope;
    /// let rm = rcmgr_reference::ReferenceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// assert_eq!(rm.system().name().to_string(), "system");
    /// ```
    pub fn system(&self) -> View {
        self.view(At::System)
    }

    /// A view of the transient scope.
    pub fn transient(&self) -> View {
        self.view(At::Transient)
    }

    /// A view of `peer`'s scope, created if needed. The view keeps the scope from being
    /// collected while it is held.
    ///
    /// ```
    /// let rm = rcmgr_reference::ReferenceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let view = rm.peer(&peer);
    /// rm.gc();
    /// rm.gc();
    /// assert_eq!(rm.list_peers(), [peer]);
    /// drop(view);
    /// rm.gc();
    /// rm.gc();
    /// assert!(rm.list_peers().is_empty());
    /// ```
    pub fn peer(&self, peer: &PeerId) -> View {
        self.view(At::Peer(*peer))
    }

    /// A view of `protocol`'s scope, created if needed.
    pub fn protocol(&self, protocol: &str) -> View {
        self.view(At::Protocol(protocol.into()))
    }

    /// A view of `service`'s scope, created if needed.
    pub fn service(&self, service: &str) -> View {
        self.view(At::Service(service.into()))
    }

    fn view(&self, at: At) -> View {
        let mut state = self.lock();
        state.look_up(&at);
        state.acquire(&at);
        View {
            handle: self.handle(at, OnDrop::Nothing),
        }
    }

    /// What every scope holds now: the system and transient scopes and every peer, protocol
    /// and service scope that exists.
    pub fn stat(&self) -> ResourceManagerStat {
        let state = self.lock();
        let keyed = |scope: &Keyed| scope.account.usage.to_stat();
        ResourceManagerStat {
            system: state.system.usage.to_stat(),
            transient: state.transient.usage.to_stat(),
            services: state
                .services
                .iter()
                .map(|(name, group)| (name.to_string(), keyed(&group.scope)))
                .collect(),
            protocols: state
                .protocols
                .iter()
                .map(|(name, group)| (name.to_string(), keyed(&group.scope)))
                .collect(),
            peers: state
                .peers
                .iter()
                .map(|(peer, scope)| (*peer, keyed(scope)))
                .collect(),
        }
    }

    /// What `peer`'s scope within `protocol` holds, if that scope exists.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction};
    /// let rm = rcmgr_reference::ReferenceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let mut stream = rm.open_stream(peer, Direction::Inbound)?;
    /// stream.set_protocol("/x")?;
    /// assert_eq!(rm.protocol_peer_stat("/x", &peer).unwrap().streams_inbound, 1);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn protocol_peer_stat(&self, protocol: &str, peer: &PeerId) -> Option<ScopeStat> {
        self.lock()
            .account(&At::ProtocolPeer(protocol.into(), *peer))
            .map(|account| account.usage.to_stat())
    }

    /// What `peer`'s scope within `service` holds, if that scope exists.
    pub fn service_peer_stat(&self, service: &str, peer: &PeerId) -> Option<ScopeStat> {
        self.lock()
            .account(&At::ServicePeer(service.into(), *peer))
            .map(|account| account.usage.to_stat())
    }

    /// Every peer that has a scope now, ordered by the bytes of the peer ID.
    pub fn list_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.lock().peers.keys().copied().collect();
        peers.sort_by_key(|peer| peer.to_bytes());
        peers
    }

    /// Every protocol that has a scope now, sorted.
    pub fn list_protocols(&self) -> Vec<String> {
        self.lock()
            .protocols
            .keys()
            .map(|p| p.to_string())
            .collect()
    }

    /// Every service that has a scope now, sorted.
    pub fn list_services(&self) -> Vec<String> {
        self.lock().services.keys().map(|s| s.to_string()).collect()
    }

    /// The limits in force.
    pub fn limits(&self) -> ConcreteLimitConfig {
        self.lock().limits.clone()
    }

    /// Replaces the limits of every scope that has not pinned its own. Nothing reserved is
    /// evicted.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction};
    /// let rm = rcmgr_reference::ReferenceManager::new(ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// let _held = rm.open_stream(peer, Direction::Inbound)?;
    /// let mut lower = ConcreteLimitConfig::infinite();
    /// lower.system.streams = 1;
    /// rm.set_limits(lower);
    /// assert!(rm.open_stream(peer, Direction::Inbound).is_err());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn set_limits(&self, limits: ConcreteLimitConfig) {
        self.lock().limits = limits;
    }

    /// One collection pass: see the [module docs](self) for the rule. Call it twice to remove
    /// everything that is idle now.
    pub fn gc(&self) {
        self.lock().collect();
    }
}

/// What every reference scope handle can do; the reference's counterpart of
/// [`ResourceScope`](rcmgr::ResourceScope).
pub trait Scope: Send + Sync {
    /// Reserves `size` bytes at `priority` on this scope and everything it reports to. On
    /// error nothing was reserved.
    fn reserve_memory(&self, size: usize, priority: Priority) -> Result<(), Error>;

    /// Releases `size` bytes; counts clamp at zero, and a closed scope ignores it.
    fn release_memory(&self, size: usize);

    /// Reserves memory released when the returned guard is dropped.
    ///
    /// ```
    /// use rcmgr_reference::{ReferenceManager, Scope};
    /// use rcmgr::{ConcreteLimitConfig, Priority};
    /// let rm = ReferenceManager::new(ConcreteLimitConfig::infinite());
    /// let guard = rm.system().reserve_memory_guard(64, Priority::HIGH)?;
    /// assert_eq!(rm.stat().system.memory, 64);
    /// drop(guard);
    /// assert_eq!(rm.stat().system.memory, 0);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    fn reserve_memory_guard(&self, size: usize, priority: Priority) -> Result<MemoryGuard, Error>;

    /// Begins a span on this scope: a child scope named `<this>.span-<k>` whose reservations
    /// also count here, released when dropped or done.
    ///
    /// ```
    /// use rcmgr_reference::{ReferenceManager, Scope};
    /// use rcmgr::{ConcreteLimitConfig, Priority};
    /// let rm = ReferenceManager::new(ConcreteLimitConfig::infinite());
    /// let span = rm.transient().begin_span()?;
    /// let inner = span.begin_span()?;
    /// inner.reserve_memory(5, Priority::LOW)?;
    /// assert_eq!(inner.name().to_string(), "transient.span-1.span-1");
    /// assert_eq!(rm.stat().transient.memory, 5);
    /// drop(span);
    /// assert_eq!(rm.stat().transient.memory, 0);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    fn begin_span(&self) -> Result<Span, Error>;

    /// What this scope holds now (zero once it is closed).
    fn stat(&self) -> ScopeStat;

    /// The scope's name, as go prints it.
    fn name(&self) -> ScopeName;

    /// The limit in force for this scope.
    fn limit(&self) -> BaseLimit;

    /// Pins this scope's limit: limit swaps no longer change it, and a pinned peer scope is
    /// never collected.
    fn set_limit(&self, limit: BaseLimit);
}

/// A handle's reference to one scope, released when the handle is dropped.
struct Handle {
    shared: Shared,
    at: At,
    on_drop: OnDrop,
}

/// What dropping a handle does before it lets go of its scope.
#[derive(Clone, Copy, Debug)]
enum OnDrop {
    /// A view: nothing.
    Nothing,
    /// A connection, stream or span: close the scope (idempotent).
    Close,
    /// A memory guard: release its bytes.
    ReleaseMemory(u64),
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("at", &self.at)
            .field("on_drop", &self.on_drop)
            .finish_non_exhaustive()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::Close => state.close(&self.at),
            OnDrop::ReleaseMemory(size) => state.release_memory(&self.at, size),
        }
        state.let_go(&self.at);
    }
}

impl Handle {
    /// A handle to `at`; the caller has acquired `at` for it under the lock.
    fn new(shared: &Shared, at: At, on_drop: OnDrop) -> Handle {
        Handle {
            shared: Arc::clone(shared),
            at,
            on_drop,
        }
    }

    fn reserve_memory(&self, size: usize, priority: Priority) -> Result<(), Error> {
        lock(&self.shared).reserve_memory(&self.at, size, priority)
    }

    fn release_memory(&self, size: usize) {
        lock(&self.shared).release_memory(&self.at, size as u64);
    }

    fn reserve_memory_guard(&self, size: usize, priority: Priority) -> Result<MemoryGuard, Error> {
        let mut state = lock(&self.shared);
        state.reserve_memory(&self.at, size, priority)?;
        state.acquire(&self.at);
        let on_drop = OnDrop::ReleaseMemory(size as u64);
        Ok(MemoryGuard {
            _handle: Handle::new(&self.shared, self.at.clone(), on_drop),
            size,
        })
    }

    fn begin_span(&self) -> Result<Span, Error> {
        let mut state = lock(&self.shared);
        let name = state.name(&self.at);
        let index = match state.account_mut(&self.at) {
            Some(owner) if !owner.closed => {
                owner.spans_begun += 1;
                owner.spans_begun
            }
            _ => return Err(Error::ScopeClosed(Box::new(ScopeClosed::new(name, None)))),
        };
        let name = ScopeName::span(name, index);
        let at = state.insert_node(NodeKind::Span(self.at.clone()), name);
        state.acquire(&self.at);
        state.acquire(&at);
        Ok(Span {
            handle: Handle::new(&self.shared, at, OnDrop::Close),
        })
    }

    fn stat(&self) -> ScopeStat {
        let state = lock(&self.shared);
        let account = state.account(&self.at);
        account.map_or_else(ScopeStat::default, |account| account.usage.to_stat())
    }

    fn name(&self) -> ScopeName {
        lock(&self.shared).name(&self.at)
    }

    fn limit(&self) -> BaseLimit {
        lock(&self.shared).limit(&self.at)
    }

    fn set_limit(&self, limit: BaseLimit) {
        if let Some(account) = lock(&self.shared).account_mut(&self.at) {
            account.pinned = Some(limit);
        }
    }

    fn close(&self) {
        lock(&self.shared).close(&self.at);
    }

    fn is_closed(&self) -> bool {
        let state = lock(&self.shared);
        state.account(&self.at).is_none_or(|account| account.closed)
    }
}

/// Implements [`Scope`] for handle types by delegating to their `handle` field.
macro_rules! impl_scope {
    ($($handle:ty),* $(,)?) => {$(
        impl Scope for $handle {
            fn reserve_memory(&self, size: usize, priority: Priority) -> Result<(), Error> {
                self.handle.reserve_memory(size, priority)
            }
            fn release_memory(&self, size: usize) {
                self.handle.release_memory(size)
            }
            fn reserve_memory_guard(
                &self,
                size: usize,
                priority: Priority,
            ) -> Result<MemoryGuard, Error> {
                self.handle.reserve_memory_guard(size, priority)
            }
            fn begin_span(&self) -> Result<Span, Error> {
                self.handle.begin_span()
            }
            fn stat(&self) -> ScopeStat {
                self.handle.stat()
            }
            fn name(&self) -> ScopeName {
                self.handle.name()
            }
            fn limit(&self) -> BaseLimit {
                self.handle.limit()
            }
            fn set_limit(&self, limit: BaseLimit) {
                self.handle.set_limit(limit)
            }
        }
    )*};
}

impl_scope!(View, Connection, Stream, Span);

/// A view of the system, transient, a peer, a protocol or a service scope. It keeps a keyed
/// scope from being collected while it is held.
#[derive(Debug)]
pub struct View {
    handle: Handle,
}

/// A connection's scope; the reference's [`ConnectionScope`](rcmgr::ConnectionScope).
/// Dropping it, or [`done`](Self::done), releases everything it holds, exactly once.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, Error};
/// let rm = rcmgr_reference::ReferenceManager::new(ConcreteLimitConfig::infinite());
/// let peer = rcmgr::PeerId::random();
/// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/10.0.0.1/tcp/1".parse()?)?;
/// conn.set_peer(peer)?;
/// assert_eq!(conn.peer(), Some(peer));
/// assert_eq!(conn.set_peer(peer), Err(Error::ConnAlreadyAttached));
/// conn.done();
/// assert!(conn.is_done() && rm.stat().system.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    handle: Handle,
    direction: Direction,
    use_fd: bool,
    endpoint: Multiaddr,
}

impl Connection {
    /// Moves everything the connection holds from the transient scope to `peer`'s scope (go's
    /// `SetPeer`). If the peer's scope refuses, the connection stays where it was.
    ///
    /// Errors with [`Error::ConnAlreadyAttached`] once a peer is set, and
    /// [`Error::ScopeClosed`] after [`done`](Self::done).
    pub fn set_peer(&mut self, peer: PeerId) -> Result<(), Error> {
        lock(&self.handle.shared).set_peer(&self.handle.at, peer)
    }

    /// The connection's peer, once [`set_peer`](Self::set_peer) has succeeded.
    pub fn peer(&self) -> Option<PeerId> {
        match lock(&self.handle.shared).node(&self.handle.at)?.kind {
            NodeKind::Conn { peer } => peer,
            _ => None,
        }
    }

    /// The connection's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the connection holds a file descriptor.
    pub fn uses_fd(&self) -> bool {
        self.use_fd
    }

    /// The remote endpoint it was opened with.
    pub fn endpoint(&self) -> &Multiaddr {
        &self.endpoint
    }

    /// Releases everything the connection holds; idempotent.
    pub fn done(&mut self) {
        self.handle.close();
    }

    /// Whether [`done`](Self::done) has run.
    pub fn is_done(&self) -> bool {
        self.handle.is_closed()
    }
}

/// A stream's scope; the reference's [`StreamScope`](rcmgr::StreamScope). Dropping it, or
/// [`done`](Self::done), releases everything it holds, exactly once.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, Error};
/// let rm = rcmgr_reference::ReferenceManager::new(ConcreteLimitConfig::infinite());
/// let mut stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
/// assert_eq!(stream.set_service("libp2p.ping"), Err(Error::StreamNotAttachedToProtocol));
/// stream.set_protocol("/ipfs/ping/1.0.0")?;
/// stream.set_service("libp2p.ping")?;
/// assert_eq!(stream.service().as_deref(), Some("libp2p.ping"));
/// assert_eq!(rm.stat().services["libp2p.ping"].streams_inbound, 1);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Debug)]
pub struct Stream {
    handle: Handle,
    peer: PeerId,
    direction: Direction,
}

impl Stream {
    /// Moves everything the stream holds from the transient scope to `protocol`'s scope and
    /// the protocol's scope for this peer (go's `SetProtocol`).
    ///
    /// Errors with [`Error::StreamAlreadyAttachedToProtocol`] once a protocol is set, and
    /// [`Error::ScopeClosed`] after [`done`](Self::done).
    pub fn set_protocol(&mut self, protocol: &str) -> Result<(), Error> {
        lock(&self.handle.shared).set_protocol(&self.handle.at, protocol)
    }

    /// Also reserves everything the stream holds on `service`'s scope and the service's scope
    /// for this peer (go's `SetService`).
    ///
    /// Errors with [`Error::StreamAlreadyAttachedToService`],
    /// [`Error::StreamNotAttachedToProtocol`] or [`Error::ScopeClosed`].
    pub fn set_service(&mut self, service: &str) -> Result<(), Error> {
        lock(&self.handle.shared).set_service(&self.handle.at, service)
    }

    /// The stream's peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The stream's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The stream's protocol, once set, until the stream is closed.
    pub fn protocol(&self) -> Option<String> {
        let state = lock(&self.handle.shared);
        let node = state
            .node(&self.handle.at)
            .filter(|node| !node.account.closed)?;
        match &node.kind {
            NodeKind::Stream { protocol, .. } => protocol.as_deref().map(str::to_owned),
            _ => None,
        }
    }

    /// The stream's service, once set, until the stream is closed.
    pub fn service(&self) -> Option<String> {
        let state = lock(&self.handle.shared);
        let node = state
            .node(&self.handle.at)
            .filter(|node| !node.account.closed)?;
        match &node.kind {
            NodeKind::Stream { service, .. } => service.as_deref().map(str::to_owned),
            _ => None,
        }
    }

    /// Releases everything the stream holds; idempotent.
    pub fn done(&mut self) {
        self.handle.close();
    }

    /// Whether [`done`](Self::done) has run.
    pub fn is_done(&self) -> bool {
        self.handle.is_closed()
    }
}

/// A span: a child scope of the scope it was begun on (its owner). Dropping it, or
/// [`done`](Self::done), releases what it holds from its owner, exactly once; once the
/// owner is closed, reservations on it are refused and releases stop at the owner.
#[derive(Debug)]
pub struct Span {
    handle: Handle,
}

impl Span {
    /// Releases everything the span holds; idempotent.
    pub fn done(&mut self) {
        self.handle.close();
    }
}

/// Memory reserved on a scope and released when this guard is dropped.
#[derive(Debug)]
#[must_use = "the memory is released as soon as the guard is dropped"]
pub struct MemoryGuard {
    /// Releases the memory, then the scope, when dropped.
    _handle: Handle,
    size: usize,
}

impl MemoryGuard {
    /// The bytes the guard holds.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Which scope: the address of an account in [`State`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum At {
    System,
    Transient,
    Peer(PeerId),
    Protocol(Arc<str>),
    ProtocolPeer(Arc<str>, PeerId),
    Service(Arc<str>),
    ServicePeer(Arc<str>, PeerId),
    /// A connection, stream or span, by its key in [`State::nodes`].
    Node(u64),
}

/// One scope's counters, as go's plain integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    memory: u64,
    streams_inbound: u64,
    streams_outbound: u64,
    conns_inbound: u64,
    conns_outbound: u64,
    fd: u64,
}

impl Usage {
    fn fields_mut(&mut self) -> [&mut u64; 6] {
        [
            &mut self.memory,
            &mut self.streams_inbound,
            &mut self.streams_outbound,
            &mut self.conns_inbound,
            &mut self.conns_outbound,
            &mut self.fd,
        ]
    }

    fn add(&mut self, mut delta: Usage) {
        for (field, add) in self.fields_mut().into_iter().zip(delta.fields_mut()) {
            *field += *add;
        }
    }

    /// Subtracts, clamping each counter at zero as go does.
    fn subtract(&mut self, mut delta: Usage) {
        for (field, sub) in self.fields_mut().into_iter().zip(delta.fields_mut()) {
            *field = field.saturating_sub(*sub);
        }
    }

    fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    fn to_stat(self) -> ScopeStat {
        let narrow = |count: u64| u32::try_from(count).unwrap_or(u32::MAX);
        ScopeStat {
            streams_inbound: narrow(self.streams_inbound),
            streams_outbound: narrow(self.streams_outbound),
            conns_inbound: narrow(self.conns_inbound),
            conns_outbound: narrow(self.conns_outbound),
            fd: narrow(self.fd),
            memory: self.memory,
        }
    }
}

/// What one reservation or release moves.
#[derive(Clone, Copy, Debug)]
enum Amount {
    Memory {
        size: u64,
        priority: Priority,
    },
    Streams {
        inbound: u64,
        outbound: u64,
    },
    Conns {
        inbound: u64,
        outbound: u64,
        fd: u64,
    },
    /// Everything a scope holds, moved by a transfer or released by a close (go's
    /// `ReserveForChild` / `ReleaseForChild`).
    Everything(Usage),
}

impl Amount {
    /// The direction of the streams or connections asked for, if they all go one way.
    fn direction(self) -> Option<Direction> {
        let delta = self.delta();
        let inbound = delta.streams_inbound + delta.conns_inbound;
        let outbound = delta.streams_outbound + delta.conns_outbound;
        match (inbound, outbound) {
            (0, 0) => None,
            (_, 0) => Some(Direction::Inbound),
            (0, _) => Some(Direction::Outbound),
            _ => None,
        }
    }

    /// A memory amount for a release (the priority plays no part there).
    fn memory(size: u64) -> Self {
        Amount::Memory {
            size,
            priority: Priority::ALWAYS,
        }
    }

    /// go's direction rule: (inbound, outbound) counts for one stream or connection.
    fn one(direction: Direction) -> (u64, u64) {
        match direction {
            Direction::Inbound => (1, 0),
            Direction::Outbound => (0, 1),
        }
    }

    fn stream(direction: Direction) -> Self {
        let (inbound, outbound) = Amount::one(direction);
        Amount::Streams { inbound, outbound }
    }

    fn conn(direction: Direction, use_fd: bool) -> Self {
        let (inbound, outbound) = Amount::one(direction);
        Amount::Conns {
            inbound,
            outbound,
            fd: u64::from(use_fd),
        }
    }

    fn delta(self) -> Usage {
        match self {
            Amount::Memory { size, .. } => Usage {
                memory: size,
                ..Usage::default()
            },
            Amount::Streams { inbound, outbound } => Usage {
                streams_inbound: inbound,
                streams_outbound: outbound,
                ..Usage::default()
            },
            Amount::Conns {
                inbound,
                outbound,
                fd,
            } => Usage {
                conns_inbound: inbound,
                conns_outbound: outbound,
                fd,
                ..Usage::default()
            },
            Amount::Everything(usage) => usage,
        }
    }
}

/// A limit that refused: the resource, what was held, what was asked, the limit.
#[derive(Clone, Copy, Debug)]
struct Hit {
    resource: Resource,
    current: u64,
    attempted: u64,
    limit: u64,
}

/// Refuses when `current + attempted` passes `limit`.
fn within(resource: Resource, current: u64, attempted: u64, limit: u64) -> Result<(), Hit> {
    if current.saturating_add(attempted) > limit {
        return Err(Hit {
            resource,
            current,
            attempted,
            limit,
        });
    }
    Ok(())
}

/// go's `checkMemory`: an unlimited limit is never checked; otherwise the usage after the
/// reservation may be at most `floor((priority + 1) * limit / 256)`.
fn check_memory(used: u64, size: u64, priority: Priority, limit: u64) -> Result<(), Hit> {
    if limit >= BaseLimit::UNLIMITED {
        return Ok(());
    }
    let threshold = (u128::from(priority.0) + 1) * u128::from(limit) / 256;
    if u128::from(used) + u128::from(size) > threshold {
        return Err(Hit {
            resource: Resource::Memory { priority },
            current: used,
            attempted: size,
            limit,
        });
    }
    Ok(())
}

/// go's `addStreams` checks: inbound if any, outbound if any, then the total, always.
fn check_streams(used: &Usage, inbound: u64, outbound: u64, limit: &BaseLimit) -> Result<(), Hit> {
    if inbound > 0 {
        let (held, max) = (used.streams_inbound, limit.streams_inbound);
        within(Resource::StreamsInbound, held, inbound, max)?;
    }
    if outbound > 0 {
        let (held, max) = (used.streams_outbound, limit.streams_outbound);
        within(Resource::StreamsOutbound, held, outbound, max)?;
    }
    let held = used.streams_inbound + used.streams_outbound;
    within(Resource::Streams, held, inbound + outbound, limit.streams)
}

/// go's `addConns` checks: inbound, outbound, the total (always), then file descriptors.
fn check_conns(
    used: &Usage,
    (inbound, outbound, fd): (u64, u64, u64),
    limit: &BaseLimit,
) -> Result<(), Hit> {
    if inbound > 0 {
        let (held, max) = (used.conns_inbound, limit.conns_inbound);
        within(Resource::ConnsInbound, held, inbound, max)?;
    }
    if outbound > 0 {
        let (held, max) = (used.conns_outbound, limit.conns_outbound);
        within(Resource::ConnsOutbound, held, outbound, max)?;
    }
    let held = used.conns_inbound + used.conns_outbound;
    within(Resource::Conns, held, inbound + outbound, limit.conns)?;
    if fd > 0 {
        within(Resource::FileDescriptors, used.fd, fd, limit.fd)?;
    }
    Ok(())
}

/// Checks `amount` against one scope's limit. A bulk amount is checked like go's
/// `ReserveForChild`: its memory at priority ALWAYS, then its streams, then its connections,
/// each check made even when that part is zero (so a lowered limit refuses the move).
fn check(used: &Usage, amount: Amount, limit: &BaseLimit) -> Result<(), Hit> {
    match amount {
        Amount::Memory { size, priority } => {
            check_memory(used.memory, size, priority, limit.memory)
        }
        Amount::Streams { inbound, outbound } => check_streams(used, inbound, outbound, limit),
        Amount::Conns {
            inbound,
            outbound,
            fd,
        } => check_conns(used, (inbound, outbound, fd), limit),
        Amount::Everything(moving) => {
            check_memory(used.memory, moving.memory, Priority::ALWAYS, limit.memory)?;
            let (inbound, outbound) = (moving.streams_inbound, moving.streams_outbound);
            check_streams(used, inbound, outbound, limit)?;
            let conns = (moving.conns_inbound, moving.conns_outbound, moving.fd);
            check_conns(used, conns, limit)
        }
    }
}

/// Why a scope refused, and which one (boxed where returned: refusals are the rare path).
#[derive(Debug)]
struct Refusal {
    by: At,
    why: Why,
}

#[derive(Clone, Copy, Debug)]
enum Why {
    Limit(Hit, Amount),
    Closed,
}

/// One scope's accounting: counters, pinned limit, closed flag, span numbering.
#[derive(Debug, Default)]
struct Account {
    usage: Usage,
    /// Bytes reserved directly on a scope that views reach (through a view or its guards; a
    /// span's bytes are its own): where a caller's release through a view is clamped.
    direct: u64,
    pinned: Option<BaseLimit>,
    closed: bool,
    spans_begun: u64,
}

/// A peer, protocol or service scope, or a per-peer scope inside a protocol or service.
#[derive(Debug, Default)]
struct Keyed {
    account: Account,
    /// Views, and the spans and guards begun through them, on this scope (connections and
    /// streams hold usage, not references: a closed one keeps nothing).
    refs: usize,
    /// Collection passes in a row that found this scope idle.
    idle_passes: u8,
}

/// A protocol or service scope with its per-peer scopes.
#[derive(Debug, Default)]
struct Group {
    scope: Keyed,
    members: BTreeMap<PeerId, Keyed>,
}

/// What a connection, stream or span node is attached to.
#[derive(Debug)]
enum NodeKind {
    Conn {
        peer: Option<PeerId>,
    },
    Stream {
        peer: PeerId,
        protocol: Option<Arc<str>>,
        service: Option<Arc<str>>,
    },
    /// A span, and the scope it was begun on.
    Span(At),
}

/// A connection, stream or span.
#[derive(Debug)]
struct Node {
    account: Account,
    kind: NodeKind,
    name: ScopeName,
    /// Its own handle, spans begun on it and guards on it.
    holders: usize,
}

/// Everything, behind the one lock.
#[derive(Debug)]
struct State {
    limits: ConcreteLimitConfig,
    system: Account,
    transient: Account,
    peers: BTreeMap<PeerId, Keyed>,
    protocols: BTreeMap<Arc<str>, Group>,
    services: BTreeMap<Arc<str>, Group>,
    nodes: HashMap<u64, Node>,
    next_conn: u64,
    next_stream: u64,
    next_node: u64,
}

impl State {
    fn new(limits: ConcreteLimitConfig) -> Self {
        State {
            limits,
            system: Account::default(),
            transient: Account::default(),
            peers: BTreeMap::new(),
            protocols: BTreeMap::new(),
            services: BTreeMap::new(),
            nodes: HashMap::new(),
            next_conn: 0,
            next_stream: 0,
            next_node: 0,
        }
    }

    fn node(&self, at: &At) -> Option<&Node> {
        match at {
            At::Node(key) => self.nodes.get(key),
            _ => None,
        }
    }

    fn keyed(&self, at: &At) -> Option<&Keyed> {
        fn member<'a>(
            groups: &'a BTreeMap<Arc<str>, Group>,
            name: &str,
            peer: &PeerId,
        ) -> Option<&'a Keyed> {
            groups.get(name).and_then(|g| g.members.get(peer))
        }
        match at {
            At::Peer(peer) => self.peers.get(peer),
            At::Protocol(name) => self.protocols.get(name).map(|g| &g.scope),
            At::Service(name) => self.services.get(name).map(|g| &g.scope),
            At::ProtocolPeer(name, peer) => member(&self.protocols, name, peer),
            At::ServicePeer(name, peer) => member(&self.services, name, peer),
            At::System | At::Transient | At::Node(_) => None,
        }
    }

    fn keyed_mut(&mut self, at: &At) -> Option<&mut Keyed> {
        fn member<'a>(
            groups: &'a mut BTreeMap<Arc<str>, Group>,
            name: &str,
            peer: &PeerId,
        ) -> Option<&'a mut Keyed> {
            groups.get_mut(name).and_then(|g| g.members.get_mut(peer))
        }
        match at {
            At::Peer(peer) => self.peers.get_mut(peer),
            At::Protocol(name) => self.protocols.get_mut(name).map(|g| &mut g.scope),
            At::Service(name) => self.services.get_mut(name).map(|g| &mut g.scope),
            At::ProtocolPeer(name, peer) => member(&mut self.protocols, name, peer),
            At::ServicePeer(name, peer) => member(&mut self.services, name, peer),
            At::System | At::Transient | At::Node(_) => None,
        }
    }

    fn account(&self, at: &At) -> Option<&Account> {
        match at {
            At::System => Some(&self.system),
            At::Transient => Some(&self.transient),
            At::Node(key) => self.nodes.get(key).map(|node| &node.account),
            _ => self.keyed(at).map(|keyed| &keyed.account),
        }
    }

    fn account_mut(&mut self, at: &At) -> Option<&mut Account> {
        match at {
            At::System => Some(&mut self.system),
            At::Transient => Some(&mut self.transient),
            At::Node(key) => self.nodes.get_mut(key).map(|node| &mut node.account),
            _ => self.keyed_mut(at).map(|keyed| &mut keyed.account),
        }
    }

    /// Finds a keyed scope, creating it (and a per-peer scope's group) if needed, and
    /// restarts its idle count: a lookup is a use.
    fn look_up(&mut self, at: &At) {
        let group = |groups: &mut BTreeMap<Arc<str>, Group>, name: &Arc<str>| {
            groups.entry(Arc::clone(name)).or_default();
        };
        let member = |groups: &mut BTreeMap<Arc<str>, Group>, name: &Arc<str>, peer: &PeerId| {
            let group = groups.entry(Arc::clone(name)).or_default();
            group.members.entry(*peer).or_default();
        };
        match at {
            At::Peer(peer) => {
                self.peers.entry(*peer).or_default();
            }
            At::Protocol(name) => group(&mut self.protocols, name),
            At::Service(name) => group(&mut self.services, name),
            At::ProtocolPeer(name, peer) => member(&mut self.protocols, name, peer),
            At::ServicePeer(name, peer) => member(&mut self.services, name, peer),
            At::System | At::Transient | At::Node(_) => return,
        }
        if let Some(keyed) = self.keyed_mut(at) {
            keyed.idle_passes = 0;
        }
    }

    /// One more holder of `at` (a handle, a span on it, a guard, a child's link).
    fn acquire(&mut self, at: &At) {
        if let At::Node(key) = at {
            if let Some(node) = self.nodes.get_mut(key) {
                node.holders += 1;
            }
        } else if let Some(keyed) = self.keyed_mut(at) {
            keyed.refs += 1;
        }
    }

    /// One holder of `at` fewer. A node nobody holds any more is forgotten, and lets go of
    /// the scopes it was attached to.
    fn let_go(&mut self, at: &At) {
        let At::Node(key) = at else {
            if let Some(keyed) = self.keyed_mut(at) {
                keyed.refs = keyed.refs.saturating_sub(1);
            }
            return;
        };
        let Some(node) = self.nodes.get_mut(key) else {
            return;
        };
        node.holders = node.holders.saturating_sub(1);
        if node.holders > 0 {
            return;
        }
        if let Some(Node {
            kind: NodeKind::Span(owner),
            ..
        }) = self.nodes.remove(key)
        {
            self.let_go(&owner);
        }
    }

    fn insert_node(&mut self, kind: NodeKind, name: ScopeName) -> At {
        self.next_node += 1;
        let key = self.next_node;
        let node = Node {
            account: Account::default(),
            kind,
            name,
            holders: 0,
        };
        self.nodes.insert(key, node);
        At::Node(key)
    }

    /// Creates a connection or stream node and reserves `amount` on it; on success the node
    /// is held by the caller's new handle.
    fn open_node(&mut self, kind: NodeKind, name: ScopeName, amount: Amount) -> Result<At, Error> {
        let at = self.insert_node(kind, name);
        if let Err(refusal) = self.reserve(&at, amount) {
            let error = self.error(&refusal, &at);
            if let At::Node(key) = at {
                self.nodes.remove(&key);
            }
            return Err(error);
        }
        self.acquire(&at);
        Ok(at)
    }

    fn name(&self, at: &At) -> ScopeName {
        match at {
            At::System => ScopeName::System,
            At::Transient => ScopeName::Transient,
            At::Peer(peer) => ScopeName::Peer(*peer),
            At::Protocol(name) => ScopeName::Protocol(Arc::clone(name)),
            At::Service(name) => ScopeName::Service(Arc::clone(name)),
            At::ProtocolPeer(protocol, peer) => ScopeName::ProtocolPeer {
                protocol: Arc::clone(protocol),
                peer: *peer,
            },
            At::ServicePeer(service, peer) => ScopeName::ServicePeer {
                service: Arc::clone(service),
                peer: *peer,
            },
            // Every handle holds its node, so a node that is asked for is there; the
            // fallback keeps this total.
            At::Node(key) => {
                let node = self.nodes.get(key);
                node.map_or(ScopeName::Conn(0), |node| node.name.clone())
            }
        }
    }

    /// The limit in force for `at`: its pinned limit, else its entry in the current
    /// configuration (a span: its owner's limit).
    fn limit(&self, at: &At) -> BaseLimit {
        if let Some(pinned) = self.account(at).and_then(|account| account.pinned) {
            return pinned;
        }
        let limits = &self.limits;
        match at {
            At::System => limits.system,
            At::Transient => limits.transient,
            At::Peer(peer) => limits.peer_limits(peer),
            At::Protocol(name) => limits.protocol_limits(name),
            At::ProtocolPeer(name, _) => limits.protocol_peer_limits(name),
            At::Service(name) => limits.service_limits(name),
            At::ServicePeer(name, _) => limits.service_peer_limits(name),
            At::Node(_) => match self.node(at).map(|node| &node.kind) {
                Some(NodeKind::Conn { .. }) => limits.conn,
                Some(NodeKind::Stream { .. }) => limits.stream,
                Some(NodeKind::Span(owner)) => self.limit(owner),
                None => BaseLimit::block_all(),
            },
        }
    }

    /// The owner of a span.
    fn owner(&self, at: &At) -> Option<At> {
        match &self.node(at)?.kind {
            NodeKind::Span(owner) => Some(owner.clone()),
            _ => None,
        }
    }

    /// The constraining edges of a scope in go's walk order (none for spans, which go
    /// through their owner).
    fn edges(&self, at: &At) -> Vec<At> {
        match at {
            At::System | At::ProtocolPeer(..) | At::ServicePeer(..) => Vec::new(),
            At::Transient | At::Peer(_) | At::Protocol(_) | At::Service(_) => vec![At::System],
            At::Node(_) => match self.node(at).map(|node| &node.kind) {
                Some(NodeKind::Conn { peer: None }) => vec![At::Transient, At::System],
                Some(NodeKind::Conn { peer: Some(peer) }) => vec![At::Peer(*peer), At::System],
                Some(NodeKind::Stream {
                    peer,
                    protocol,
                    service,
                }) => {
                    let peer = *peer;
                    match (protocol, service) {
                        (None, _) => vec![At::Peer(peer), At::Transient, At::System],
                        (Some(p), None) => vec![
                            At::Peer(peer),
                            At::ProtocolPeer(Arc::clone(p), peer),
                            At::Protocol(Arc::clone(p)),
                            At::System,
                        ],
                        (Some(p), Some(s)) => vec![
                            At::Peer(peer),
                            At::ProtocolPeer(Arc::clone(p), peer),
                            At::ServicePeer(Arc::clone(s), peer),
                            At::Protocol(Arc::clone(p)),
                            At::Service(Arc::clone(s)),
                            At::System,
                        ],
                    }
                }
                Some(NodeKind::Span(_)) | None => Vec::new(),
            },
        }
    }

    /// Checks `amount` against `at`'s own limit and adds it there, nowhere else (go's
    /// `*ForChild` methods).
    fn reserve_here(&mut self, at: &At, amount: Amount) -> Result<(), Box<Refusal>> {
        let limit = self.limit(at);
        let refuse = |why| {
            Box::new(Refusal {
                by: at.clone(),
                why,
            })
        };
        let account = self.account_mut(at).ok_or_else(|| refuse(Why::Closed))?;
        if account.closed {
            return Err(refuse(Why::Closed));
        }
        check(&account.usage, amount, &limit).map_err(|hit| refuse(Why::Limit(hit, amount)))?;
        account.usage.add(amount.delta());
        Ok(())
    }

    /// A memory reservation the caller made on `at`, with its public error. On a view's
    /// scope the bytes are then *direct* there: what a later release through a view of it may
    /// take back (a span's bytes are the span's, never the view's).
    fn reserve_memory(&mut self, at: &At, size: usize, priority: Priority) -> Result<(), Error> {
        let amount = Amount::Memory {
            size: size as u64,
            priority,
        };
        self.reserve(at, amount)
            .map_err(|refusal| self.error(&refusal, at))?;
        if !matches!(at, At::Node(_))
            && let Some(account) = self.account_mut(at)
        {
            account.direct += size as u64;
        }
        Ok(())
    }

    /// Subtracts `amount` from `at` alone, clamping at zero; nothing if `at` is closed.
    fn release_here(&mut self, at: &At, amount: Amount) {
        if let Some(account) = self.account_mut(at).filter(|a| !a.closed) {
            account.usage.subtract(amount.delta());
        }
    }

    /// go's reservation walk: the scope itself, then its owner's full walk (a span) or each
    /// of its edges (anything else); a refusal undoes what was taken.
    fn reserve(&mut self, at: &At, amount: Amount) -> Result<(), Box<Refusal>> {
        self.reserve_here(at, amount)?;
        let passed = match self.owner(at) {
            Some(owner) => self.reserve(&owner, amount),
            None => self.take_all(&self.edges(at), amount),
        };
        if passed.is_err() {
            self.release_here(at, amount);
        }
        passed
    }

    /// Reserves `amount` on each of `parents` alone, in order; all or nothing.
    fn take_all(&mut self, parents: &[At], amount: Amount) -> Result<(), Box<Refusal>> {
        for (taken, parent) in parents.iter().enumerate() {
            if let Err(refusal) = self.reserve_here(parent, amount) {
                for parent in &parents[..taken] {
                    self.release_here(parent, amount);
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// A memory release the caller made on `at`: it takes at most what `at` itself holds (a
    /// connection's, stream's or span's own bytes; a view's scope's direct bytes), then gives
    /// exactly that back through the owner's walk or each edge, so it never takes another
    /// scope's usage from the scopes above. Stops at a closed scope, whose close released
    /// everything.
    fn release_memory(&mut self, at: &At, size: u64) {
        let is_node = matches!(at, At::Node(_));
        let Some(account) = self.account_mut(at).filter(|account| !account.closed) else {
            return;
        };
        let held = if is_node {
            account.usage.memory
        } else {
            account.direct
        };
        let taken = size.min(held);
        if taken == 0 {
            return;
        }
        if !is_node {
            account.direct -= taken;
        }
        self.give_back(at, taken);
    }

    /// Gives back `taken` bytes, which `at` holds, from `at` and what it reports to: through
    /// its owner (where a span's owner clamps at what it holds itself, and stops if closed)
    /// or from each edge.
    fn give_back(&mut self, at: &At, taken: u64) {
        let Some(account) = self.account_mut(at).filter(|account| !account.closed) else {
            return;
        };
        let taken = taken.min(account.usage.memory);
        account.usage.memory -= taken;
        match self.owner(at) {
            Some(owner) => self.give_back(&owner, taken),
            None => {
                for edge in self.edges(at) {
                    self.release_here(&edge, Amount::memory(taken));
                }
            }
        }
    }

    /// go's `Done`: marks the scope closed, zeroes it and releases what it held from its
    /// owner or edges. Idempotent.
    fn close(&mut self, at: &At) {
        let held = match self.account_mut(at) {
            Some(account) if !account.closed => {
                account.closed = true;
                std::mem::take(&mut account.usage)
            }
            _ => return,
        };
        match self.owner(at) {
            Some(owner) => self.give_back(&owner, held.memory),
            None => {
                for edge in self.edges(at) {
                    self.release_here(&edge, Amount::Everything(held));
                }
            }
        }
    }

    /// Moves everything `moving` holds onto `to` (all or nothing), then off `from`.
    fn transfer(&mut self, moving: &At, to: &[At], from: Option<&At>) -> Result<(), Error> {
        let held = self.account(moving).map(|account| account.usage);
        let amount = Amount::Everything(held.unwrap_or_default());
        if let Err(refusal) = self.take_all(to, amount) {
            return Err(self.transfer_error(&refusal, moving));
        }
        if let Some(from) = from {
            self.release_here(from, amount);
        }
        Ok(())
    }

    /// The closed-scope error of a transfer on a closed connection or stream, if it is.
    fn refuse_if_closed(&self, at: &At) -> Result<(), Error> {
        if self.account(at).is_none_or(|account| account.closed) {
            let closed = ScopeClosed::new(self.name(at), None);
            return Err(Error::ScopeClosed(Box::new(closed)));
        }
        Ok(())
    }

    /// go's `SetPeer`.
    fn set_peer(&mut self, conn: &At, peer: PeerId) -> Result<(), Error> {
        if let Some(NodeKind::Conn { peer: Some(_) }) = self.node(conn).map(|n| &n.kind) {
            return Err(Error::ConnAlreadyAttached);
        }
        self.refuse_if_closed(conn)?;
        let target = At::Peer(peer);
        self.look_up(&target);
        self.transfer(conn, std::slice::from_ref(&target), Some(&At::Transient))?;
        if let Some(Node {
            kind: NodeKind::Conn { peer: slot },
            ..
        }) = self.node_mut(conn)
        {
            *slot = Some(peer);
        }
        Ok(())
    }

    /// go's `SetProtocol`.
    fn set_protocol(&mut self, stream: &At, protocol: &str) -> Result<(), Error> {
        let peer = match self.node(stream).map(|n| &n.kind) {
            Some(NodeKind::Stream {
                protocol: Some(_), ..
            }) => return Err(Error::StreamAlreadyAttachedToProtocol),
            Some(NodeKind::Stream { peer, .. }) => *peer,
            _ => return Err(Error::StreamAlreadyAttachedToProtocol),
        };
        self.refuse_if_closed(stream)?;
        let name: Arc<str> = protocol.into();
        let group = At::Protocol(Arc::clone(&name));
        let member = At::ProtocolPeer(Arc::clone(&name), peer);
        self.attach(stream, [group, member], Some(&At::Transient))?;
        if let Some(Node {
            kind: NodeKind::Stream { protocol, .. },
            ..
        }) = self.node_mut(stream)
        {
            *protocol = Some(name);
        }
        Ok(())
    }

    /// go's `SetService`.
    fn set_service(&mut self, stream: &At, service: &str) -> Result<(), Error> {
        let peer = match self.node(stream).map(|n| &n.kind) {
            Some(NodeKind::Stream {
                service: Some(_), ..
            }) => return Err(Error::StreamAlreadyAttachedToService),
            Some(NodeKind::Stream { protocol: None, .. }) => {
                return Err(Error::StreamNotAttachedToProtocol);
            }
            Some(NodeKind::Stream { peer, .. }) => *peer,
            _ => return Err(Error::StreamAlreadyAttachedToService),
        };
        self.refuse_if_closed(stream)?;
        let name: Arc<str> = service.into();
        let group = At::Service(Arc::clone(&name));
        let member = At::ServicePeer(Arc::clone(&name), peer);
        self.attach(stream, [group, member], None)?;
        if let Some(Node {
            kind: NodeKind::Stream { service, .. },
            ..
        }) = self.node_mut(stream)
        {
            *service = Some(name);
        }
        Ok(())
    }

    /// Moves a stream's usage onto a protocol or service scope and that group's scope for
    /// the stream's peer (looking both up first, as rcmgr does), then off `from`.
    fn attach(&mut self, stream: &At, parents: [At; 2], from: Option<&At>) -> Result<(), Error> {
        for parent in &parents {
            self.look_up(parent);
        }
        self.transfer(stream, &parents, from)?;
        Ok(())
    }

    fn node_mut(&mut self, at: &At) -> Option<&mut Node> {
        match at {
            At::Node(key) => self.nodes.get_mut(key),
            _ => None,
        }
    }

    /// The error for a refusal met by a reservation the caller made on `asked`.
    fn error(&self, refusal: &Refusal, asked: &At) -> Error {
        let by = (refusal.by != *asked).then(|| self.name(&refusal.by));
        match refusal.why {
            Why::Limit(hit, amount) => {
                let numbers = (hit.current, hit.attempted, hit.limit);
                let exceeded = LimitExceeded::new(self.name(asked), by, hit.resource, numbers)
                    .asked(amount.direction());
                Error::LimitExceeded(Box::new(exceeded))
            }
            Why::Closed => Error::ScopeClosed(Box::new(ScopeClosed::new(self.name(asked), by))),
        }
    }

    /// The error for a transfer of `moving` refused by a new parent: worded with the
    /// parent's name alone, as go words it.
    fn transfer_error(&self, refusal: &Refusal, moving: &At) -> Error {
        match refusal.why {
            Why::Limit(hit, amount) => {
                let numbers = (hit.current, hit.attempted, hit.limit);
                let by = Some(self.name(&refusal.by));
                let exceeded = LimitExceeded::new(self.name(moving), by, hit.resource, numbers)
                    .asked(amount.direction());
                Error::LimitExceeded(Box::new(exceeded.in_transfer()))
            }
            Why::Closed => self.error(refusal, moving),
        }
    }

    /// One collection pass: the per-peer scopes of every service and protocol, then the
    /// peers, then the protocols and services themselves.
    fn collect(&mut self) {
        for group in self.services.values_mut() {
            sweep(&mut group.members);
        }
        for group in self.protocols.values_mut() {
            sweep(&mut group.members);
        }
        sweep(&mut self.peers);
        sweep(&mut self.protocols);
        sweep(&mut self.services);
    }
}

/// A registry entry the collector may remove.
trait Collectable {
    /// Unreferenced, unpinned and holding nothing.
    fn is_idle(&self) -> bool;
    fn idle_passes(&mut self) -> &mut u8;
}

impl Collectable for Keyed {
    fn is_idle(&self) -> bool {
        self.refs == 0 && self.account.pinned.is_none() && self.account.usage.is_zero()
    }

    fn idle_passes(&mut self) -> &mut u8 {
        &mut self.idle_passes
    }
}

/// A protocol or service scope goes with its per-peer scopes, once they are gone.
impl Collectable for Group {
    fn is_idle(&self) -> bool {
        self.scope.is_idle()
    }

    fn idle_passes(&mut self) -> &mut u8 {
        &mut self.scope.idle_passes
    }
}

/// Counts one more idle pass for every idle entry (restarting the count of the others) and
/// removes those idle [`IDLE_PASSES_TO_COLLECT`] passes in a row.
fn sweep<K: Ord, V: Collectable>(entries: &mut BTreeMap<K, V>) {
    entries.retain(|_, entry| {
        let idle = entry.is_idle();
        let passes = entry.idle_passes();
        *passes = if idle {
            passes.saturating_add(1).min(IDLE_PASSES_TO_COLLECT)
        } else {
            0
        };
        *passes < IDLE_PASSES_TO_COLLECT
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference is shared across threads by the benchmarks: handles dropped anywhere
    /// take the one lock and leave nothing behind.
    #[test]
    fn threads_share_it_and_leave_nothing_behind() {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default.streams = 3;
        let rm = ReferenceManager::new(limits);
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        std::thread::scope(|s| {
            for worker in 0..4 {
                let (rm, peers) = (&rm, &peers);
                s.spawn(move || {
                    for round in 0..500 {
                        let peer = peers[(worker + round) % peers.len()];
                        let Ok(mut stream) = rm.open_stream(peer, Direction::Inbound) else {
                            continue;
                        };
                        let _ = stream.set_protocol("/x");
                        if let Ok(span) = stream.begin_span() {
                            let _ = span.reserve_memory(64, Priority::HIGH);
                            let _guard = rm.peer(&peer).reserve_memory_guard(8, Priority::LOW);
                        }
                    }
                });
            }
        });
        let stat = rm.stat();
        assert!(stat.system.is_empty() && stat.peers.values().all(ScopeStat::is_empty));
        rm.gc();
        rm.gc();
        assert!(rm.list_peers().is_empty());
        assert!(
            rm.list_protocols().is_empty(),
            "idle protocol scopes are collected"
        );
    }
}

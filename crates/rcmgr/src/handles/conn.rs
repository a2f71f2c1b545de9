//! [`ConnectionScope`]: one connection, from `open_connection` to drop.

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use super::{Op, PeerScope, Reach, Walks, notify};
use crate::{
    account::{Conns, Len, Memory},
    error::Error,
    gate::{IpCount, endpoint_ip},
    graph::{
        Fixed, Root,
        conn::{self, ConnNode},
        fault::{Asked, Fault, Refusal, RefusedBy},
        peers::Found,
        scope::{self, ScopeRef},
        span::{AnchorRef, Moved},
        staged::Staged,
    },
    sync::{Arc, Slot, fence, thread_slot},
    types::{Direction, ScopeName},
};

/// A connection's scope (go's `ConnManagementScope`), returned by
/// [`ResourceManager::open_connection`](crate::ResourceManager::open_connection).
///
/// It starts in the transient scope; [`set_peer`](Self::set_peer) moves it to its peer's
/// scope once the peer is known. Dropping it, or [`done`](Self::done), releases everything it
/// holds, exactly once.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let endpoint = "/ip4/10.0.0.1/tcp/4001".parse()?;
/// let mut conn = rm.open_connection(Direction::Inbound, true, &endpoint)?;
/// assert_eq!(rm.transient().stat().conns_inbound, 1);
/// let peer = rcmgr::PeerId::random();
/// conn.set_peer(peer)?;
/// assert_eq!(rm.transient().stat().conns_inbound, 0);
/// assert_eq!(rm.peer(&peer).stat().fd, 1);
/// drop(conn);
/// assert!(rm.system().stat().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ConnectionScope {
    node: Arc<ConnNode>,
    endpoint: Multiaddr,
    /// What the connection was counted against by the per-IP limits; released by `done`.
    ip_count: Option<IpCount>,
}

/// Whether a handle's node is referenced by nothing else (no span or guard): then the handle,
/// borrowed mutably, is the only one who can reach it.
pub(crate) fn is_exclusive<T>(node: &Arc<T>) -> bool {
    if Arc::strong_count(node) != 1 {
        return false;
    }
    // Ordering: Acquire fence — pairs with the Release decrement of the last other reference
    // (a span or guard that was dropped), so what it did to the node happens-before the plain
    // reads and writes that follow.
    fence(crate::sync::Ordering::Acquire);
    true
}

impl ConnectionScope {
    /// go's `OpenConnection`: the gate's admission (rate limits, then the per-IP count), then
    /// the normal scopes, then, if they refuse and the endpoint is allowlisted (or some peer
    /// is trusted), the allowlisted scopes.
    pub(crate) fn open(
        root: &Arc<Root>,
        direction: Direction,
        use_fd: bool,
        endpoint: &Multiaddr,
    ) -> Result<Self, Error> {
        let _operation = root.observer.operation();
        let ip = endpoint_ip(endpoint);
        let opened = root.gate.admit(ip, endpoint).and_then(|admission| {
            let slot = thread_slot();
            let node = open_in(root, false, direction, use_fd, slot).or_else(|refused| {
                let address_allowed = ip.is_some_and(|ip| root.gate.is_allowlisted(ip));
                // A connection from any address may belong to a trusted peer, known only at
                // `set_peer`, which sends the others back to the normal scopes.
                if !address_allowed && !root.gate.allowlist().has_trusted_peers() {
                    return Err(refused);
                }
                // The allowlisted scopes' refusal is the one to report only when the
                // address itself is allowlisted; else the normal scopes' is.
                open_in(root, true, direction, use_fd, slot).map_err(|allowlisted| {
                    if address_allowed {
                        allowlisted
                    } else {
                        refused
                    }
                })
            })?;
            Ok(ConnectionScope {
                node,
                endpoint: endpoint.clone(),
                ip_count: admission.into_count(),
            })
        });
        if let Some(metrics) = root.observer.metrics() {
            match &opened {
                Ok(_) => metrics.allow_conn(direction, use_fd),
                Err(_) => metrics.block_conn(direction, use_fd),
            }
        }
        opened
    }

    /// The connection's direction.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let conn = rm.open_connection(Direction::Outbound, false, &"/ip4/1.2.3.4/udp/1/quic-v1".parse()?)?;
    /// assert_eq!(conn.direction(), Direction::Outbound);
    /// assert!(!conn.uses_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn direction(&self) -> Direction {
        self.node.direction
    }

    /// Whether the connection holds a file descriptor.
    pub fn uses_fd(&self) -> bool {
        self.node.use_fd
    }

    /// The remote endpoint the connection was opened with.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let endpoint: rcmgr::Multiaddr = "/ip4/1.2.3.4/tcp/1".parse()?;
    /// let conn = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// assert_eq!(conn.endpoint(), &endpoint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoint(&self) -> &Multiaddr {
        &self.endpoint
    }

    /// Attaches the connection to its peer: everything it holds moves from the transient
    /// scope to the peer's scope (go's `SetPeer`). If the peer's scope refuses, the
    /// connection stays where it was, still usable, and the error names the peer scope
    /// (`peer:<id>: cannot reserve inbound connection: resource limit exceeded`).
    ///
    /// Errors with [`Error::ConnAlreadyAttached`] if a peer was set before, and with
    /// [`Error::ScopeClosed`] after [`done`](Self::done).
    ///
    /// A connection opened in the allowlisted scopes (see
    /// [`is_allowlisted`](Self::is_allowlisted)) whose peer is allowed by neither a general
    /// allowlist entry nor one of that peer's entries, and is not a trusted peer
    /// ([`Allowlist::add_peer`](crate::Allowlist::add_peer)), moves to the normal system and
    /// transient scopes, as go does; if they refuse, the error names the refusing scope. Any
    /// refusal leaves the connection exactly as it was before the call: in its scopes, with
    /// no peer, so that it can be closed, or the call made again.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.peer_default.conns_inbound = 1;
    /// let rm = ResourceManager::new(limits);
    /// let peer = rcmgr::PeerId::random();
    /// let endpoint = "/ip4/10.0.0.1/tcp/4001".parse()?;
    /// let mut first = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// first.set_peer(peer)?;
    /// let mut second = rm.open_connection(Direction::Inbound, true, &endpoint)?;
    /// let err = second.set_peer(peer).unwrap_err();
    /// assert_eq!(err.to_string(), format!("peer:{peer}: cannot reserve inbound connection: resource limit exceeded"));
    /// assert!(matches!(first.set_peer(peer), Err(rcmgr::Error::ConnAlreadyAttached)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_peer(&mut self, peer: PeerId) -> Result<(), Error> {
        if self.node.peer().is_some() {
            return Err(Error::ConnAlreadyAttached);
        }
        let node = &self.node;
        let root = &node.root;
        let _operation = root.observer.operation();
        let exclusive = is_exclusive(node);
        let allowlist = root.gate.allowlist();
        let allowlisted_peer = node.state().stage() == conn::ALLOWLISTED
            && (allowlist.allowed_peer(&peer)
                || allowlist.allowed_peer_and_multiaddr(peer, &self.endpoint));
        let moved = node.set_peer(exclusive, &peer, allowlisted_peer, thread_slot());
        match moved {
            Ok((from, to, found)) => {
                trace_set_peer(node, from, to, found);
                if let Some(metrics) = root.observer.metrics() {
                    metrics.allow_peer(&peer);
                }
                Ok(())
            }
            Err(refused) => {
                let refusal = scope::peer_refusal(root, refused);
                let by_peer = matches!(&refusal.by, RefusedBy::Other(ScopeName::Peer(_)));
                let moving_to_standard =
                    !allowlisted_peer && node.state().stage() == conn::ALLOWLISTED;
                let err = notify::error_after(root, self.name(), refusal, true, |index| {
                    notify::traced(match (moving_to_standard, index) {
                        (true, 0) => ScopeRef::Fixed(root, Fixed::System),
                        _ => ScopeRef::Fixed(root, Fixed::Transient),
                    })
                });
                if by_peer && let Some(metrics) = root.observer.metrics() {
                    metrics.block_peer(&peer);
                }
                Err(err)
            }
        }
    }

    fn name(&self) -> ScopeName {
        ScopeName::Conn(self.node.id)
    }

    /// Whether the connection was opened in the allowlisted scopes (its normal reservation
    /// was refused, and its endpoint is allowlisted or some peer is trusted) and is still
    /// there. The allowlisted scopes are not part of
    /// [`ResourceManager::stat`](crate::ResourceManager::stat), as in go.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.system.conns_inbound = 0;
    /// let rm = ResourceManager::builder(limits).allowlist(["/ip4/10.0.0.0/ipcidr/8".parse()?]).build()?;
    /// let conn = rm.open_connection(Direction::Inbound, true, &"/ip4/10.1.2.3/tcp/1".parse()?)?;
    /// assert!(conn.is_allowlisted());
    /// assert!(rm.open_connection(Direction::Inbound, true, &"/ip4/192.0.2.1/tcp/1".parse()?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_allowlisted(&self) -> bool {
        let state = self.node.state();
        !state.is_closed() && matches!(state.stage(), conn::ALLOWLISTED | conn::PEER_ALLOWLISTED)
    }

    /// The peer's scope, once [`set_peer`](Self::set_peer) has succeeded.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/1.2.3.4/tcp/1".parse()?)?;
    /// assert!(conn.peer_scope().is_none());
    /// let peer = rcmgr::PeerId::random();
    /// conn.set_peer(peer)?;
    /// assert_eq!(conn.peer_scope().unwrap().peer(), peer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_scope(&self) -> Option<PeerScope> {
        self.node.peer().map(PeerScope::of)
    }

    /// Releases everything the connection holds; later reservations and transfers fail with
    /// [`Error::ScopeClosed`]. Calling it again does nothing; dropping the handle calls it.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, ResourceScope, Priority};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/1.2.3.4/tcp/1".parse()?)?;
    /// conn.done();
    /// assert!(rm.system().stat().is_empty());
    /// assert!(conn.reserve_memory(1, Priority::LOW).unwrap_err().scope_closed().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn done(&mut self) {
        let node = &self.node;
        let root = &node.root;
        let _operation = root.observer.operation();
        let exclusive = is_exclusive(node);
        if let Some(state) = node.close(exclusive, thread_slot()) {
            if root.observer.tracer().is_some() {
                let change = notify::usage_change(node.usage(state.bytes()));
                let stage = state.stage();
                let len = node.with_path(stage, Len);
                notify::changed(
                    root,
                    (0..len).map(|i| ScopeRef::Conn(node).path_at(stage, i)),
                    change,
                    false,
                );
                notify::destroyed(root, || self.name());
            }
            notify::conn_memory(root, Some((state.bytes(), 0)));
        }
        if let Some(count) = self.ip_count.take() {
            root.gate.release(count);
        }
    }

    /// Whether [`done`](Self::done) has run.
    pub fn is_done(&self) -> bool {
        self.node.state().is_closed()
    }
}

/// Opens the connection scope in the normal (or the allowlisted) scopes, with its trace.
fn open_in(
    root: &Arc<Root>,
    allowlisted: bool,
    direction: Direction,
    use_fd: bool,
    slot: Slot,
) -> Result<Arc<ConnNode>, Error> {
    let id = root.ids.next_conn();
    if let Some(tracer) = root.observer.tracer() {
        tracer.created(|| (ScopeName::Conn(id), root.conn_limit.get()));
    }
    let (transient, system) = if allowlisted {
        (Fixed::AllowlistedTransient, Fixed::AllowlistedSystem)
    } else {
        (Fixed::Transient, Fixed::System)
    };
    let change = notify::conns_change(Conns::one(direction, use_fd));
    match ConnNode::open(root, id, allowlisted, direction, use_fd, slot) {
        Ok(node) => {
            notify::changed(
                root,
                [
                    ScopeRef::Fixed(root, transient),
                    ScopeRef::Fixed(root, system),
                    ScopeRef::Conn(&node),
                ],
                change,
                true,
            );
            Ok(node)
        }
        Err((node, fault)) => {
            let refusal = ScopeRef::Conn(&node).open_refusal(fault, Asked::Conns(node.conns()));
            let err = notify::error_after(root, ScopeName::Conn(id), refusal, false, |index| {
                notify::traced(ScopeRef::Fixed(
                    root,
                    if index == 0 { transient } else { system },
                ))
            });
            notify::destroyed(root, || ScopeName::Conn(id));
            Err(err)
        }
    }
}

/// The trace of a `set_peer`, in go's order.
fn trace_set_peer(node: &ConnNode, from: u8, to: u8, found: Found) {
    let root = &*node.root;
    if root.observer.tracer().is_none() {
        return;
    }
    let Some(peer) = node.peer() else {
        return;
    };
    if found == Found::Created {
        notify::created(root, ScopeRef::Peer(peer));
    }
    let change = notify::usage_change(node.usage(node.state().bytes()));
    let fixed = |which| ScopeRef::Fixed(root, which);
    if from == conn::ALLOWLISTED && to == conn::PEER {
        // go's `transferAllowedToStandard` first: out of the allowlisted pair, into system
        // and transient.
        let allowlisted = [
            fixed(Fixed::AllowlistedTransient),
            fixed(Fixed::AllowlistedSystem),
        ];
        notify::changed(root, allowlisted, change, false);
        notify::changed(
            root,
            [fixed(Fixed::System), fixed(Fixed::Transient)],
            change,
            true,
        );
    }
    notify::changed(root, [ScopeRef::Peer(peer)], change, true);
    let left = if to == conn::PEER_ALLOWLISTED {
        Fixed::AllowlistedTransient
    } else {
        Fixed::Transient
    };
    notify::changed(root, [fixed(left)], change, false);
}

impl Reach for ConnectionScope {
    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Conn(&self.node)
    }

    #[inline(always)]
    fn reach<O: Op>(&self, op: O) -> O::Output {
        op.run(self)
    }
}

impl Walks for &ConnectionScope {
    type Fault = Fault;

    #[inline(always)]
    fn root(&self) -> &Root {
        &self.node.root
    }

    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Conn(&self.node)
    }

    #[inline(always)]
    fn reserve(&self, memory: Memory, slot: Slot) -> Result<Moved, Fault> {
        self.node.reserve_memory(memory, slot).map(|before| Moved {
            bytes: memory.bytes,
            conn: Some((before, before + memory.bytes)),
        })
    }

    #[inline(always)]
    fn release(&self, bytes: u64, slot: Slot) -> Moved {
        self.node
            .release_memory(bytes, slot)
            .map_or_else(Moved::default, |released| Moved {
                bytes: released.taken,
                conn: Some((released.before, released.before - released.taken)),
            })
    }

    #[inline(always)]
    fn refusal(&self, fault: Fault, memory: Memory) -> Refusal {
        scope::memory_refusal(AnchorRef::Conn(&self.node), fault, memory)
    }
}

impl Drop for ConnectionScope {
    fn drop(&mut self) {
        self.done();
    }
}

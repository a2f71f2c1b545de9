//! The handles users hold: [`ConnectionScope`], [`StreamScope`], [`Span`], the views of the
//! system, transient, peer, protocol and service scopes, and [`MemoryGuard`]. All of them
//! implement [`ResourceScope`].

mod conn;
mod stream;
mod views;

pub use conn::ConnectionScope;
pub(crate) use conn::Placement;
pub use stream::StreamScope;
pub use views::{PeerScope, ProtocolScope, ServiceScope, SystemScope, TransientScope};

use crate::{
    edges::EdgeSet,
    error::{Error, ScopeClosed},
    limits::BaseLimit,
    name::ScopeName,
    observe,
    resource::Priority,
    scope::{Kind, Links, Node, ScopeCtx, ScopeRef},
    stat::ScopeStat,
    sync::{Arc, Ordering},
    walk,
};

/// What every scope can do: reserve and release memory, begin spans, report its usage and
/// its limit.
///
/// # Memory ordering
///
/// Reservations and releases are lock-free. A successful reservation has passed every limit
/// on its path at the moment it was applied there; a refused one has left nothing behind.
/// Other threads may briefly see part of a reservation that is still walking its path, or
/// that is being undone; no scope is ever seen above its limit, and every count returns to
/// zero when every handle is gone. [`stat`](Self::stat) reads each counter on its own, so
/// it is exact per counter but not a consistent cut across counters or scopes.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let peer = rm.peer(&rcmgr::PeerId::random());
/// peer.reserve_memory(1024, Priority::HIGH)?;
/// assert_eq!(peer.stat().memory, 1024);
/// assert_eq!(rm.system().stat().memory, 1024);
/// peer.release_memory(1024);
/// assert_eq!(rm.system().stat().memory, 0);
/// # Ok::<(), rcmgr::Error>(())
/// ```
pub trait ResourceScope: Send + Sync {
    /// Reserves `size` bytes at `priority` on this scope and everything it reports to. On
    /// error nothing was reserved.
    fn reserve_memory(&self, size: usize, priority: Priority) -> Result<(), Error>;

    /// Releases `size` bytes reserved earlier. Releasing more than is held clamps at zero and
    /// logs go's "BUG: too much memory released" warning; releasing on a closed scope does
    /// nothing (its close released everything).
    fn release_memory(&self, size: usize);

    /// Reserves memory that is released when the returned guard is dropped.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let system = rm.system();
    /// {
    ///     let _buffer = system.reserve_memory_guard(4096, Priority::MEDIUM)?;
    ///     assert_eq!(system.stat().memory, 4096);
    /// }
    /// assert_eq!(system.stat().memory, 0);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    fn reserve_memory_guard(&self, size: usize, priority: Priority) -> Result<MemoryGuard, Error>;

    /// Begins a span: a child scope whose reservations also count here, and which releases
    /// everything it holds when dropped or [`done`](Span::done).
    fn begin_span(&self) -> Result<Span, Error>;

    /// What this scope holds now.
    fn stat(&self) -> ScopeStat;

    /// The scope's name, in go's form (`peer:<id>`, `stream-9`, ...).
    fn name(&self) -> ScopeName;

    /// The limit in force for this scope.
    fn limit(&self) -> BaseLimit;

    /// Pins this scope's limit to `limit` (go's `ResourceScopeLimiter.SetLimit`): later limit
    /// swaps no longer change it, and a pinned peer, protocol or service scope is never
    /// collected. Usage already above the new limit is kept; new reservations are refused
    /// until usage falls below it.
    fn set_limit(&self, limit: BaseLimit);
}

/// The scope behind a handle, for the shared implementation below.
trait Handle {
    /// The scope, as the accounting walks take it.
    fn ctx(&self) -> ScopeCtx<'_>;
    /// A shared reference to the scope, for guards and spans that keep it alive.
    fn to_ref(&self) -> ScopeRef;
}

/// Implements [`ResourceScope`] for handles by delegating to the functions below.
macro_rules! impl_resource_scope {
    ($($handle:ty),* $(,)?) => {$(
        impl crate::handles::ResourceScope for $handle {
            fn reserve_memory(
                &self,
                size: usize,
                priority: crate::resource::Priority,
            ) -> Result<(), crate::error::Error> {
                crate::handles::reserve_memory(crate::handles::Handle::ctx(self), size, priority)
            }
            fn release_memory(&self, size: usize) {
                crate::handles::release_memory(crate::handles::Handle::ctx(self), size)
            }
            fn reserve_memory_guard(
                &self,
                size: usize,
                priority: crate::resource::Priority,
            ) -> Result<crate::handles::MemoryGuard, crate::error::Error> {
                crate::handles::MemoryGuard::reserve(self, size, priority)
            }
            fn begin_span(&self) -> Result<crate::handles::Span, crate::error::Error> {
                crate::handles::Span::begin(self)
            }
            fn stat(&self) -> crate::stat::ScopeStat {
                crate::handles::Handle::ctx(self).scope.stat()
            }
            fn name(&self) -> crate::name::ScopeName {
                crate::handles::Handle::ctx(self).name()
            }
            fn limit(&self) -> crate::limits::BaseLimit {
                crate::handles::Handle::ctx(self).limit()
            }
            fn set_limit(&self, limit: crate::limits::BaseLimit) {
                crate::handles::set_limit(crate::handles::Handle::ctx(self), limit)
            }
        }
    )*};
}
/// Implements [`Handle`] for handles built around their own node (`self.node`).
macro_rules! impl_node_handle {
    ($($handle:ty),*) => {$(
        impl crate::handles::Handle for $handle {
            fn ctx(&self) -> crate::scope::ScopeCtx<'_> {
                self.node.ctx()
            }
            fn to_ref(&self) -> crate::scope::ScopeRef {
                crate::scope::ScopeRef::Node(crate::sync::Arc::clone(&self.node))
            }
        }
    )*};
}
pub(crate) use impl_node_handle;

impl_resource_scope!(Span, ConnectionScope, StreamScope);
impl_resource_scope!(
    SystemScope,
    TransientScope,
    PeerScope,
    ProtocolScope,
    ServiceScope
);

/// A caller's reservation: one public operation, reported once to the metrics whatever the
/// number of span levels it passes (go reports each level: quirk 8).
fn reserve_memory(at: ScopeCtx<'_>, size: usize, priority: Priority) -> Result<(), Error> {
    let observer = &at.root.observer;
    let _operation = observer.operation();
    let reserved =
        walk::reserve_memory(at, size as u64, priority).map_err(|refusal| refusal.into_error(at));
    if let Some(metrics) = observer.metrics() {
        match &reserved {
            Ok(()) => metrics.allow_memory(size),
            Err(_) => metrics.block_memory(size),
        }
    }
    reserved
}

/// A caller's release: it may give back more than it reserved, which each scope clamps.
fn release_memory(at: ScopeCtx<'_>, size: usize) {
    let _operation = at.root.observer.operation();
    walk::release_memory(at, size as u64, false);
}

fn set_limit(at: ScopeCtx<'_>, limit: BaseLimit) {
    at.scope.limit.pin(limit);
    // Ordering: Relaxed — read by the collector, which also needs the scope unreferenced
    // before it could act; this handle is a reference.
    at.scope.sticky.store(true, Ordering::Relaxed);
}

/// Memory reserved on a scope and released when this guard is dropped.
///
/// The guard keeps the scope alive; if the scope is closed first, its close releases the
/// memory and the guard's release does nothing.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let guard = rm.transient().reserve_memory_guard(100, Priority::LOW)?;
/// assert_eq!(guard.size(), 100);
/// drop(guard);
/// assert_eq!(rm.transient().stat().memory, 0);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the memory is released as soon as the guard is dropped"]
pub struct MemoryGuard {
    scope: ScopeRef,
    size: usize,
}

impl MemoryGuard {
    fn reserve(on: &impl Handle, size: usize, priority: Priority) -> Result<Self, Error> {
        reserve_memory(on.ctx(), size, priority)?;
        Ok(MemoryGuard {
            scope: on.to_ref(),
            size,
        })
    }

    /// The bytes this guard holds.
    ///
    /// ```
    /// # use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
    /// # let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let guard = rm.system().reserve_memory_guard(7, Priority::ALWAYS)?;
    /// assert_eq!(guard.size(), 7);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        let at = self.scope.ctx();
        let _operation = at.root.observer.operation();
        // Exactly what the guard reserved.
        walk::release_memory(at, self.size as u64, true);
    }
}

/// A child scope begun with [`ResourceScope::begin_span`]: reservations on it also count on
/// the scope it was begun on (its owner) and on everything the owner reports to. Dropping it,
/// or calling [`done`](Self::done), releases everything it holds, exactly once.
///
/// A span may outlive its owner: once the owner is closed, the owner's close has released the
/// span's memory too, reservations on the span are refused and its release does nothing.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let peer = rm.peer(&rcmgr::PeerId::random());
/// let span = peer.begin_span()?;
/// span.reserve_memory(512, Priority::LOW)?;
/// assert_eq!(peer.stat().memory, 512);
/// assert_eq!(span.name().to_string(), format!("{}.span-1", peer.name()));
/// drop(span);
/// assert_eq!(peer.stat().memory, 0);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Debug)]
pub struct Span {
    node: Arc<Node>,
}

impl Span {
    fn begin(owner: &impl Handle) -> Result<Self, Error> {
        let at = owner.ctx();
        // Ordering: Acquire — a closed flag seen here is acted on at once. A close racing this
        // check is harmless: the span then finds its owner closed on first use.
        let word = crate::counters::MemoryWord(at.scope.counters.memory.load(Ordering::Acquire));
        if word.is_closed() {
            return Err(Error::ScopeClosed(Box::new(ScopeClosed::new(
                at.name(),
                None,
            ))));
        }
        let index = at.scope.next_span_index();
        // A span's own cell is used only once `set_limit` pins it; until then the span follows
        // its owner's limit, pins and swaps included (see ScopeCtx::limit).
        let node = Node::new(
            Kind::Span(index),
            EdgeSet::NONE,
            Links::Span {
                owner: owner.to_ref(),
            },
        );
        let _operation = at.root.observer.operation();
        observe::trace_created(node.ctx());
        Ok(Span {
            node: Arc::new(node),
        })
    }

    /// Releases everything the span holds; later reservations on it are refused. Calling it
    /// again does nothing.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    /// let mut span = rm.system().begin_span()?;
    /// span.reserve_memory(10, Priority::LOW)?;
    /// span.done();
    /// assert_eq!(rm.system().stat().memory, 0);
    /// assert!(span.reserve_memory(1, Priority::LOW).is_err());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn done(&mut self) {
        let at = self.node.ctx();
        let _operation = at.root.observer.operation();
        walk::close(at);
    }
}

impl_node_handle!(Span);

impl Drop for Span {
    fn drop(&mut self) {
        self.done();
    }
}

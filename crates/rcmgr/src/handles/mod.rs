//! The handles users hold: [`ConnectionScope`], [`StreamScope`], [`Span`], the views of the
//! system, transient, peer, protocol and service scopes, and [`MemoryGuard`]. All of them
//! implement [`ResourceScope`].
//!
//! A handle borrows its scope from the graph as an [`AnchorRef`] and runs the graph's walk on
//! it; then, and only then, it tells: the metrics reporter (once per public call), the trace
//! (each scope's change, in go's order), and on a refusal the public error, built on the cold
//! path from the compact [`Refusal`](crate::graph::scope::Refusal) the graph returned
//! ([`notify`]).

mod conn;
pub(crate) mod notify;
mod stream;
mod views;

pub use conn::ConnectionScope;
pub use stream::StreamScope;
pub use views::{PeerScope, ProtocolScope, ServiceScope, SystemScope, TransientScope};

use crate::{
    account::Memory,
    error::{Error, ScopeClosed},
    graph::span::{Anchor, AnchorRef, SpanNode},
    limits::BaseLimit,
    sync::{Arc, thread_slot},
    types::{Priority, ScopeName, ScopeStat},
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

    /// Releases `size` bytes reserved earlier on this scope. A release takes at most what was
    /// reserved on this scope (on a view: directly through the view or its guards, not by
    /// its spans, which hold their own; on a connection, stream or span: by it and its
    /// spans), so it never takes another
    /// scope's usage from the scopes above; any excess is reported (a debug log with go's
    /// "BUG: too much memory released", and
    /// [`ResourceManager::over_released`](crate::ResourceManager::over_released)). Releasing
    /// on a closed scope does nothing (its close released everything).
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
    fn anchor(&self) -> AnchorRef<'_>;
}

/// Implements [`ResourceScope`] for handles by delegating to the functions below.
macro_rules! impl_resource_scope {
    ($($handle:ty),* $(,)?) => {$(
        impl crate::handles::ResourceScope for $handle {
            fn reserve_memory(
                &self,
                size: usize,
                priority: crate::types::Priority,
            ) -> Result<(), crate::error::Error> {
                crate::handles::reserve_memory(crate::handles::Handle::anchor(self), size, priority)
            }
            fn release_memory(&self, size: usize) {
                crate::handles::release_memory(crate::handles::Handle::anchor(self), size)
            }
            fn reserve_memory_guard(
                &self,
                size: usize,
                priority: crate::types::Priority,
            ) -> Result<crate::handles::MemoryGuard, crate::error::Error> {
                crate::handles::MemoryGuard::reserve(crate::handles::Handle::anchor(self), size, priority)
            }
            fn begin_span(&self) -> Result<crate::handles::Span, crate::error::Error> {
                crate::handles::Span::begin(crate::handles::Handle::anchor(self))
            }
            fn stat(&self) -> crate::types::ScopeStat {
                crate::handles::Handle::anchor(self).stat()
            }
            fn name(&self) -> crate::types::ScopeName {
                crate::handles::Handle::anchor(self).scope().name()
            }
            fn limit(&self) -> crate::limits::BaseLimit {
                crate::handles::Handle::anchor(self).limit()
            }
            fn set_limit(&self, limit: crate::limits::BaseLimit) {
                crate::handles::Handle::anchor(self).set_limit(limit)
            }
        }
    )*};
}

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
#[inline(always)]
fn reserve_memory(at: AnchorRef<'_>, size: usize, priority: Priority) -> Result<(), Error> {
    let root = at.root();
    let _operation = root.observer.operation();
    let memory = Memory::new(size as u64, priority);
    let reserved = match at.reserve_memory(memory, thread_slot()) {
        Ok(moved) => {
            if root.observer.tracer().is_some() {
                let (owning, parents) = at.trace_scopes();
                let change = notify::memory_change(memory);
                notify::changed(root, parents, change, true);
                notify::changed(root, owning.into_iter().rev(), change, true);
            }
            notify::conn_memory(root, moved.conn);
            Ok(())
        }
        Err(refusal) => Err(notify::error_after(
            root,
            at.scope().name(),
            refusal,
            false,
            |index| {
                let (_, parents) = at.trace_scopes();
                notify::traced(parents.get(index).copied().unwrap_or(at.scope()))
            },
        )),
    };
    if let Some(metrics) = root.observer.metrics() {
        match &reserved {
            Ok(()) => metrics.allow_memory(size),
            Err(_) => metrics.block_memory(size),
        }
    }
    reserved
}

/// A caller's release (or a guard's): clamped at the scope it names; an excess is reported.
#[inline(always)]
fn release_memory(at: AnchorRef<'_>, size: usize) {
    let root = at.root();
    let _operation = root.observer.operation();
    let moved = at.release_memory(size as u64, thread_slot());
    if moved.bytes > 0 && root.observer.tracer().is_some() {
        let (owning, parents) = at.trace_scopes();
        let change = notify::memory_change(Memory::new(moved.bytes, Priority::ALWAYS));
        notify::changed(root, owning, change, false);
        notify::changed(root, parents, change, false);
    }
    notify::conn_memory(root, moved.conn);
    if moved.bytes < size as u64 && !at.is_closed() {
        over_released(at, size as u64, moved.bytes);
    }
}

/// Reports a release of more than the scope held: go's warning text, with the numbers, at
/// debug level, and the manager's count of bytes released too many.
#[cold]
fn over_released(at: AnchorRef<'_>, released: u64, held: u64) {
    let excess = released - held;
    at.root().count_over_release(excess);
    tracing::debug!(
        target: "rcmgr",
        scope = %at.scope().name(),
        released,
        held,
        excess,
        "BUG: too much memory released"
    );
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
    scope: Anchor,
    size: usize,
}

impl MemoryGuard {
    fn reserve(on: AnchorRef<'_>, size: usize, priority: Priority) -> Result<Self, Error> {
        reserve_memory(on, size, priority)?;
        Ok(MemoryGuard {
            scope: on.to_owned(),
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
        release_memory(self.scope.as_ref(), self.size);
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
    node: Arc<SpanNode>,
}

impl Span {
    fn begin(owner: AnchorRef<'_>) -> Result<Self, Error> {
        let root = owner.root();
        let _operation = root.observer.operation();
        let node = SpanNode::begin(owner).map_err(|_| {
            Error::ScopeClosed(Box::new(ScopeClosed::new(owner.scope().name(), None)))
        })?;
        let span = Span { node };
        notify::created(root, span.anchor().scope());
        Ok(span)
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
        let at = self.anchor();
        let root = at.root();
        let _operation = root.observer.operation();
        let Some(moved) = self.node.close(thread_slot()) else {
            return;
        };
        if root.observer.tracer().is_some() {
            if moved.bytes > 0 {
                let (owning, parents) = at.trace_scopes();
                let change = notify::memory_change(Memory::new(moved.bytes, Priority::ALWAYS));
                notify::changed(root, owning.into_iter().skip(1), change, false);
                notify::changed(root, parents, change, false);
            }
            notify::destroyed(root, || at.scope().name());
        }
        notify::conn_memory(root, moved.conn);
    }
}

impl Handle for Span {
    #[inline(always)]
    fn anchor(&self) -> AnchorRef<'_> {
        AnchorRef::Span(&self.node)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.done();
    }
}

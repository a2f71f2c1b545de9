//! The handles users hold: [`ConnectionScope`], [`StreamScope`], [`Span`], the views of the
//! system, transient, peer, protocol and service scopes, and [`MemoryGuard`]. All of them
//! implement [`ResourceScope`].
//!
//! A handle runs the graph's walk on its scope ([`Walks`]): spans, connections and streams
//! call their node's walk, written for that kind of node, and views and guards borrow their
//! scope as an [`AnchorRef`], which dispatches on its kind. Then, and only then, it tells: the
//! metrics reporter (once per public call), the trace (each scope's change, in go's order),
//! and on a refusal the public error, built on the cold path from the compact fault the walk
//! returned, which [`scope`] names ([`Refusal`]) and [`notify`] turns into the error.

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
    graph::{
        Root,
        fault::Refusal,
        scope::{self, ScopeRef},
        span::{Anchor, AnchorFault, AnchorRef, Base, Moved, OnSpan, SpanFault, SpanNode, SpanOn},
    },
    limits::BaseLimit,
    sync::{Arc, Slot, thread_slot},
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

/// The scope behind a view, for the shared implementation below.
trait Handle {
    fn anchor(&self) -> AnchorRef<'_>;
}

/// How a handle's memory operations run: the walk on its scope, a compact fault when it is
/// refused, and the [`Refusal`] that fault stands for (the cold path). Spans, connections and
/// streams run their node's walk; views and guards the one [`AnchorRef`] dispatches to. A
/// small `Copy` value, passed by value, so that the walks keep it in registers.
trait Walks: Copy {
    /// What a refused walk reports.
    type Fault;
    /// The graph the scope belongs to.
    fn root(&self) -> &Root;
    /// The scope, borrowed as any anchor (for names, limits, spans and the trace).
    fn at(&self) -> AnchorRef<'_>;
    /// Reserves `memory` on the scope and everything it reports to.
    fn reserve(&self, memory: Memory, slot: Slot) -> Result<Moved, Self::Fault>;
    /// Releases up to `bytes` (clamped at the scope), and what it took further up.
    fn release(&self, bytes: u64, slot: Slot) -> Moved;
    /// The refusal `fault`, reported for a reservation of `memory`, stands for (always
    /// inlined, calling the cold function of [`scope`] that names it: the walks themselves
    /// never escape to it).
    fn refusal(&self, fault: Self::Fault, memory: Memory) -> Refusal;
}

impl Walks for AnchorRef<'_> {
    type Fault = AnchorFault;

    #[inline(always)]
    fn root(&self) -> &Root {
        AnchorRef::root(*self)
    }

    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        *self
    }

    #[inline(always)]
    fn reserve(&self, memory: Memory, slot: Slot) -> Result<Moved, AnchorFault> {
        self.reserve_memory(memory, slot)
    }

    #[inline(always)]
    fn release(&self, bytes: u64, slot: Slot) -> Moved {
        self.release_memory(bytes, slot)
    }

    #[inline(always)]
    fn refusal(&self, fault: AnchorFault, memory: Memory) -> Refusal {
        scope::anchor_refusal(*self, fault, memory)
    }
}

/// An operation a handle runs on the walks of its scope, whatever they are.
trait Op {
    type Output;
    fn run<W: Walks>(self, on: W) -> Self::Output;
}

/// How a handle reaches the walks of its scope: connections and streams are their own
/// [`Walks`], views borrow theirs as an [`AnchorRef`], and a span reaches those of its
/// owner's kind, dispatching once ([`SpanNode::dispatch`]).
trait Reach {
    /// The scope, borrowed as any anchor.
    fn at(&self) -> AnchorRef<'_>;
    /// Runs `op` on the scope's walks.
    fn reach<O: Op>(&self, op: O) -> O::Output;
}

/// [`ResourceScope::reserve_memory`].
struct ReserveOp(usize, Priority);

impl Op for ReserveOp {
    type Output = Result<(), Error>;

    #[inline(always)]
    fn run<W: Walks>(self, on: W) -> Result<(), Error> {
        reserve_memory(on, self.0, self.1)
    }
}

/// [`ResourceScope::release_memory`].
struct ReleaseOp(usize);

impl Op for ReleaseOp {
    type Output = ();

    #[inline(always)]
    fn run<W: Walks>(self, on: W) {
        release_memory(on, self.0);
    }
}

/// [`ResourceScope::reserve_memory_guard`].
struct GuardOp(usize, Priority);

impl Op for GuardOp {
    type Output = Result<MemoryGuard, Error>;

    fn run<W: Walks>(self, on: W) -> Result<MemoryGuard, Error> {
        reserve_memory(on, self.0, self.1)?;
        Ok(MemoryGuard {
            scope: on.at().to_owned(),
            size: self.0,
        })
    }
}

/// Implements [`ResourceScope`] for handles by delegating to [`Reach`].
macro_rules! impl_resource_scope {
    ($($handle:ty),* $(,)?) => {$(
        impl crate::handles::ResourceScope for $handle {
            fn reserve_memory(
                &self,
                size: usize,
                priority: crate::types::Priority,
            ) -> Result<(), crate::error::Error> {
                crate::handles::Reach::reach(self, crate::handles::ReserveOp(size, priority))
            }
            fn release_memory(&self, size: usize) {
                crate::handles::Reach::reach(self, crate::handles::ReleaseOp(size))
            }
            fn reserve_memory_guard(
                &self,
                size: usize,
                priority: crate::types::Priority,
            ) -> Result<crate::handles::MemoryGuard, crate::error::Error> {
                crate::handles::Reach::reach(self, crate::handles::GuardOp(size, priority))
            }
            fn begin_span(&self) -> Result<crate::handles::Span, crate::error::Error> {
                crate::handles::Span::begin(crate::handles::Reach::at(self))
            }
            fn stat(&self) -> crate::types::ScopeStat {
                crate::graph::scope::ScopeRef::from(crate::handles::Reach::at(self)).stat()
            }
            fn name(&self) -> crate::types::ScopeName {
                crate::graph::scope::ScopeRef::from(crate::handles::Reach::at(self)).name()
            }
            fn limit(&self) -> crate::limits::BaseLimit {
                crate::graph::scope::ScopeRef::from(crate::handles::Reach::at(self)).limit()
            }
            fn set_limit(&self, limit: crate::limits::BaseLimit) {
                crate::handles::Reach::at(self).set_limit(limit)
            }
        }
    )*};
}

/// Implements [`Reach`] for views through their [`Handle`].
macro_rules! reach_through_anchor {
    ($($handle:ty),* $(,)?) => {$(
        impl Reach for $handle {
            #[inline(always)]
            fn at(&self) -> AnchorRef<'_> {
                Handle::anchor(self)
            }

            #[inline(always)]
            fn reach<O: Op>(&self, op: O) -> O::Output {
                op.run(Handle::anchor(self))
            }
        }
    )*};
}

impl_resource_scope!(
    Span,
    ConnectionScope,
    StreamScope,
    SystemScope,
    TransientScope,
    PeerScope,
    ProtocolScope,
    ServiceScope
);
reach_through_anchor!(
    SystemScope,
    TransientScope,
    PeerScope,
    ProtocolScope,
    ServiceScope
);

/// Whether nothing observes the manager (no metrics reporter, no trace): then an operation
/// tells no one and runs its walk alone.
#[inline(always)]
fn is_quiet(root: &Root) -> bool {
    root.observer.tracer().is_none() && root.observer.metrics().is_none()
}

/// A caller's reservation: one public operation, reported once to the metrics whatever the
/// number of span levels it passes (go reports each level: quirk 8).
#[inline(always)]
fn reserve_memory<W: Walks>(on: W, size: usize, priority: Priority) -> Result<(), Error> {
    let memory = Memory::new(size as u64, priority);
    if is_quiet(on.root()) {
        return match on.reserve(memory, thread_slot()) {
            Ok(_) => Ok(()),
            Err(fault) => Err(reserve_error(on.at(), on.refusal(fault, memory))),
        };
    }
    reserve_observed(on, memory)
}

/// [`reserve_memory`] with its metrics and trace.
#[inline(never)]
fn reserve_observed<W: Walks>(on: W, memory: Memory) -> Result<(), Error> {
    let root = on.root();
    let _operation = root.observer.operation();
    let reserved = match on.reserve(memory, thread_slot()) {
        Ok(moved) => {
            if root.observer.tracer().is_some() {
                trace_reserved(on.at(), memory);
            }
            notify::conn_memory(root, moved.conn);
            Ok(())
        }
        Err(fault) => Err(reserve_error(on.at(), on.refusal(fault, memory))),
    };
    if let Some(metrics) = root.observer.metrics() {
        let size = memory.bytes as usize;
        match &reserved {
            Ok(()) => metrics.allow_memory(size),
            Err(_) => metrics.block_memory(size),
        }
    }
    reserved
}

/// The trace of a reservation of `memory` on `at`: the parents, then the owning scopes from
/// the outside in.
#[cold]
fn trace_reserved(at: AnchorRef<'_>, memory: Memory) {
    let root = at.root();
    let (owning, parents) = scope::trace_scopes(at);
    let change = notify::memory_change(memory);
    notify::changed(root, parents, change, true);
    notify::changed(root, owning.into_iter().rev(), change, true);
}

/// The public error of a reservation on `at` that was refused as `refusal`.
#[cold]
fn reserve_error(at: AnchorRef<'_>, refusal: Refusal) -> Error {
    notify::error_after(
        at.root(),
        ScopeRef::from(at).name(),
        refusal,
        false,
        |index| {
            let (_, parents) = scope::trace_scopes(at);
            notify::traced(parents.get(index).copied().unwrap_or(ScopeRef::from(at)))
        },
    )
}

/// A caller's release (or a guard's): clamped at the scope it names; an excess is reported.
#[inline(always)]
fn release_memory<W: Walks>(on: W, size: usize) {
    if is_quiet(on.root()) {
        let moved = on.release(size as u64, thread_slot());
        if moved.bytes < size as u64 {
            released_less(on.at(), size as u64, moved.bytes);
        }
        return;
    }
    release_observed(on, size);
}

/// [`release_memory`] with its metrics and trace.
#[inline(never)]
fn release_observed<W: Walks>(on: W, size: usize) {
    let root = on.root();
    let _operation = root.observer.operation();
    let moved = on.release(size as u64, thread_slot());
    if moved.bytes > 0 && root.observer.tracer().is_some() {
        trace_released(on.at(), moved.bytes);
    }
    notify::conn_memory(root, moved.conn);
    if moved.bytes < size as u64 {
        released_less(on.at(), size as u64, moved.bytes);
    }
}

/// A release that took less than asked: an over-release unless the scope is closed (its
/// close gave everything back).
#[cold]
fn released_less(at: AnchorRef<'_>, released: u64, held: u64) {
    if !at.is_closed() {
        over_released(at, released, held);
    }
}

/// The trace of a release of `bytes` from `at`: the owning scopes from the inside out, then
/// the parents.
#[cold]
fn trace_released(at: AnchorRef<'_>, bytes: u64) {
    let root = at.root();
    let (owning, parents) = scope::trace_scopes(at);
    let change = notify::memory_change(Memory::new(bytes, Priority::ALWAYS));
    notify::changed(root, owning, change, false);
    notify::changed(root, parents, change, false);
}

/// Reports a release of more than the scope held: go's warning text, with the numbers, at
/// debug level, and the manager's count of bytes released too many.
#[cold]
fn over_released(at: AnchorRef<'_>, released: u64, held: u64) {
    let excess = released - held;
    at.root().count_over_release(excess);
    tracing::debug!(
        target: "rcmgr",
        scope = %ScopeRef::from(at).name(),
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
            Error::ScopeClosed(Box::new(ScopeClosed::new(
                ScopeRef::from(owner).name(),
                None,
            )))
        })?;
        let span = Span { node };
        notify::created(root, ScopeRef::from(span.at()));
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
        let at = self.at();
        let root = at.root();
        let _operation = root.observer.operation();
        let Some(moved) = self.node.close(thread_slot()) else {
            return;
        };
        if root.observer.tracer().is_some() {
            if moved.bytes > 0 {
                let (owning, parents) = scope::trace_scopes(at);
                let change = notify::memory_change(Memory::new(moved.bytes, Priority::ALWAYS));
                notify::changed(root, owning.into_iter().skip(1), change, false);
                notify::changed(root, parents, change, false);
            }
            notify::destroyed(root, || ScopeRef::from(at).name());
        }
        notify::conn_memory(root, moved.conn);
    }
}

impl Reach for Span {
    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Span(&self.node)
    }

    #[inline(always)]
    fn reach<O: Op>(&self, op: O) -> O::Output {
        self.node.dispatch(SpanOp {
            node: &self.node,
            op,
        })
    }
}

/// An operation on a span, run once the span has dispatched on its owner's kind.
struct SpanOp<'a, O> {
    node: &'a Arc<SpanNode>,
    op: O,
}

impl<O: Op> OnSpan for SpanOp<'_, O> {
    type Output = O::Output;

    #[inline(always)]
    fn run<B: Base>(self, span: SpanOn<'_, B>) -> O::Output {
        self.op.run(SpanWalks {
            node: self.node,
            span,
        })
    }
}

/// A span's walks, on an owner of a known kind.
#[derive(Clone, Copy)]
struct SpanWalks<'a, B> {
    node: &'a Arc<SpanNode>,
    span: SpanOn<'a, B>,
}

impl<B: Base> Walks for SpanWalks<'_, B> {
    type Fault = SpanFault;

    #[inline(always)]
    fn root(&self) -> &Root {
        self.span.root()
    }

    #[inline(always)]
    fn at(&self) -> AnchorRef<'_> {
        AnchorRef::Span(self.node)
    }

    #[inline(always)]
    fn reserve(&self, memory: Memory, slot: Slot) -> Result<Moved, SpanFault> {
        self.span.reserve_memory(memory, slot)
    }

    #[inline(always)]
    fn release(&self, bytes: u64, slot: Slot) -> Moved {
        self.span.release_memory(bytes, slot)
    }

    #[inline(always)]
    fn refusal(&self, fault: SpanFault, memory: Memory) -> Refusal {
        scope::span_refusal(self.node, fault, memory)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.done();
    }
}

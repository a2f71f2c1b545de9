//! The stream's scope for application code: [`stream_scope`] finds it behind a
//! `libp2p::Stream`, [`StreamHandle`] reserves on it.

use std::{
    cell::RefCell,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{AsyncRead, task::noop_waker_ref};
use rcmgr::{
    BaseLimit, Direction, MemoryGuard, PeerId, Priority, ResourceScope, ScopeName, ScopeStat, Span,
};

use crate::{
    ReservedBuffer,
    connection::{Slot, lock},
};

thread_local! {
    /// `Some` while [`stream_scope`] asks: the slot the first [`LimitedSubstream`] below
    /// offers.
    ///
    /// [`LimitedSubstream`]: crate::LimitedSubstream
    static ASKED: RefCell<Option<Option<Arc<Slot>>>> = const { RefCell::new(None) };
}

/// Called by a substream on an empty read: gives its slot to [`stream_scope`] if it is asking
/// on this thread, and says whether it did (the read then ends there).
pub(crate) fn offer(slot: &Arc<Slot>) -> bool {
    ASKED.with(|asked| match &mut *asked.borrow_mut() {
        Some(found @ None) => {
            *found = Some(Arc::clone(slot));
            true
        }
        _ => false,
    })
}

/// The scope of a stream of a limited transport, from the stream as the application holds it
/// (`libp2p::Stream` from libp2p-stream's `IncomingStreams` or `Control::open_stream`, the
/// `io` a request-response codec reads and writes, or a [`LimitedSubstream`] itself); `None`
/// for a stream that no [`LimitedMuxer`] accounts.
///
/// Reserve a stream's buffers on it: a reservation on the stream's scope counts in the
/// stream, its peer, its protocol's scope for that peer, the protocol and the system
/// together, so one peer can take no more of a protocol's memory than its protocol-peer
/// limit allows.
///
/// How it finds the scope: it reads zero bytes from `stream`, which every wrapper of a
/// libp2p stream passes down, and the [`LimitedSubstream`] at the bottom answers at once with
/// its scope (on this thread, synchronously) instead of reading. Call it on the stream
/// itself, not through a buffering reader, and after the stream's negotiation: a stream
/// opened with multistream-select's `V1Lazy` whose confirmation has not been read yet answers
/// `None`.
///
/// ```no_run
/// use futures::StreamExt;
/// use rcmgr::Priority;
/// # async fn serve(mut incoming: libp2p_stream::IncomingStreams) {
/// while let Some((peer, mut stream)) = incoming.next().await {
///     let Some(scope) = rcmgr_libp2p::stream_scope(&mut stream) else { continue };
///     match scope.buffer(64 * 1024, Priority::LOW) {
///         Ok(buffer) => { /* serve `stream` with `buffer` */ }
///         Err(refused) => println!("no memory for {peer}'s stream: {refused}"),
///     }
/// }
/// # }
/// ```
///
/// [`LimitedSubstream`]: crate::LimitedSubstream
/// [`LimitedMuxer`]: crate::LimitedMuxer
pub fn stream_scope<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Option<StreamHandle> {
    let previous = ASKED.with(|asked| asked.borrow_mut().replace(None));
    let mut cx = Context::from_waker(noop_waker_ref());
    let answered = Pin::new(stream).poll_read(&mut cx, &mut []);
    let found = ASKED.with(|asked| {
        let mut asked = asked.borrow_mut();
        let found = asked.take().flatten();
        *asked = previous;
        found
    });
    match answered {
        Poll::Ready(Ok(0)) => found.map(|slot| StreamHandle { slot }),
        _ => None,
    }
}

/// The scope of one stream of a limited transport, for application code: from
/// [`stream_scope`]. A cheap `Clone`; it keeps nothing alive but the stream's accounting.
///
/// Once the stream has ended (dropped, or its connection closed) the scope is closed:
/// everything reserved on it, also through this handle, has been released, and reservations
/// fail with [`rcmgr::Error::ScopeClosed`]. Guards taken before then may be dropped at any
/// time; they release nothing twice.
///
/// It is a [`ResourceScope`], so [`ReservedBuffer::new`] and spans take it like any scope.
#[derive(Clone)]
pub struct StreamHandle {
    slot: Arc<Slot>,
}

impl fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHandle")
            .field("stream", &self.slot)
            .finish()
    }
}

impl StreamHandle {
    /// The peer at the other end.
    pub fn peer(&self) -> PeerId {
        self.slot.peer
    }

    /// Who opened the stream.
    pub fn direction(&self) -> Direction {
        self.slot.direction
    }

    /// The protocol the stream is accounted in.
    pub fn protocol(&self) -> Option<String> {
        self.slot.protocol()
    }

    /// Whether the stream has ended: dropped, reset, or its connection closed.
    pub fn is_closed(&self) -> bool {
        self.slot.is_closed()
    }

    /// A zeroed buffer of `len` bytes, reserved on the stream's scope at `priority` before it
    /// is allocated and released when it is dropped ([`ReservedBuffer::new`] on this scope).
    pub fn buffer(&self, len: usize, priority: Priority) -> Result<ReservedBuffer, rcmgr::Error> {
        ReservedBuffer::new(self, len, priority)
    }
}

impl ResourceScope for StreamHandle {
    fn reserve_memory(&self, size: usize, priority: Priority) -> Result<(), rcmgr::Error> {
        lock(&self.slot.held).scope.reserve_memory(size, priority)
    }

    fn release_memory(&self, size: usize) {
        lock(&self.slot.held).scope.release_memory(size);
    }

    fn reserve_memory_guard(
        &self,
        size: usize,
        priority: Priority,
    ) -> Result<MemoryGuard, rcmgr::Error> {
        lock(&self.slot.held)
            .scope
            .reserve_memory_guard(size, priority)
    }

    fn begin_span(&self) -> Result<Span, rcmgr::Error> {
        lock(&self.slot.held).scope.begin_span()
    }

    fn stat(&self) -> ScopeStat {
        lock(&self.slot.held).scope.stat()
    }

    fn name(&self) -> ScopeName {
        lock(&self.slot.held).scope.name()
    }

    fn limit(&self) -> BaseLimit {
        lock(&self.slot.held).scope.limit()
    }

    fn set_limit(&self, limit: BaseLimit) {
        lock(&self.slot.held).scope.set_limit(limit);
    }
}

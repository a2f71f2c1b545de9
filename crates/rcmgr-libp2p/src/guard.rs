//! Accounting in application code: stream guards for streams the muxer wrapper does not see,
//! and buffers whose memory is reserved before it is allocated.

use std::{
    fmt, io,
    ops::{Deref, DerefMut},
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use pin_project::pin_project;
use rcmgr::{
    Direction, MemoryGuard, PeerId, Priority, ResourceManager, ResourceScope, StreamScope,
};

use crate::services::attach_protocol;

/// A stream scope held by application code beside a stream: go's `OpenStream` and
/// `SetProtocol` in one call, released when the guard is dropped.
///
/// This is for nodes whose transport is not limited (for example one built with the
/// `SwarmBuilder`'s `with_tcp` phase, which cannot be wrapped), typically with
/// `libp2p-stream`: take a guard for each stream `IncomingStreams` yields or `open_stream`
/// returns, and drop the stream when the guard is refused. On a limited transport
/// ([`Transports`](crate::Transports), [`wrap_transport`](crate::wrap_transport)) every
/// stream already has a scope; a guard there would count the stream twice, so reserve on the
/// stream's own scope instead ([`stream_scope`](crate::stream_scope)).
///
/// ```
/// use rcmgr::{BaseLimit, ConcreteLimitConfig, Direction, ResourceManager};
/// use rcmgr_libp2p::StreamGuard;
///
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.protocol.insert("/echo/1.0.0".into(), BaseLimit { streams_inbound: 1, ..BaseLimit::unlimited() });
/// let rm = ResourceManager::new(limits);
/// let peer = rcmgr::PeerId::random();
///
/// let first = StreamGuard::open(&rm, peer, Direction::Inbound, "/echo/1.0.0")?;
/// let refused = StreamGuard::open(&rm, peer, Direction::Inbound, "/echo/1.0.0").unwrap_err();
/// assert_eq!(refused.limit_exceeded().unwrap().refused_by().to_string(), "protocol:/echo/1.0.0");
/// drop(first);
/// let _again = StreamGuard::open(&rm, peer, Direction::Inbound, "/echo/1.0.0")?;
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the stream is released as soon as the guard is dropped"]
pub struct StreamGuard {
    scope: StreamScope,
}

impl StreamGuard {
    /// Reserves a stream of `peer` in `direction` and moves it into `protocol`'s scopes (and
    /// its go-libp2p service's, see [`service_of_protocol`](crate::service_of_protocol)). On
    /// error nothing is held.
    ///
    /// ```
    /// use rcmgr::{Direction, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), Direction::Outbound, "/ipfs/ping/1.0.0")?;
    /// assert_eq!(rm.service("libp2p.ping").stat().streams_outbound, 1);
    /// drop(guard);
    /// assert!(rm.system().stat().is_empty());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn open(
        rm: &ResourceManager,
        peer: PeerId,
        direction: Direction,
        protocol: &str,
    ) -> Result<Self, rcmgr::Error> {
        let mut scope = rm.open_stream(peer, direction)?;
        attach_protocol(&mut scope, protocol)?;
        Ok(StreamGuard { scope })
    }

    /// The stream's scope: reserve the stream's buffers on it.
    ///
    /// ```
    /// use rcmgr::{Direction, Priority, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), Direction::Inbound, "/echo/1.0.0")?;
    /// let buffer = rcmgr_libp2p::ReservedBuffer::new(guard.scope(), 4096, Priority::LOW)?;
    /// assert_eq!(rm.protocol("/echo/1.0.0").stat().memory, 4096);
    /// # drop(buffer);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn scope(&self) -> &StreamScope {
        &self.scope
    }

    /// Binds the guard to `stream`, so that they are dropped together.
    ///
    /// ```no_run
    /// use futures::{AsyncReadExt, AsyncWriteExt};
    /// use rcmgr::Direction;
    /// # async fn serve(rm: rcmgr::ResourceManager, peer: rcmgr::PeerId, stream: impl futures::AsyncRead + futures::AsyncWrite + Unpin) -> std::io::Result<()> {
    /// let Ok(guard) = rcmgr_libp2p::StreamGuard::open(&rm, peer, Direction::Inbound, "/echo/1.0.0") else {
    ///     return Ok(()); // refused: dropping the stream resets it
    /// };
    /// let mut stream = guard.bind(stream);
    /// let mut byte = [0u8; 1];
    /// stream.read_exact(&mut byte).await?;
    /// stream.write_all(&byte).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind<S>(self, stream: S) -> Guarded<S> {
        Guarded {
            stream,
            guard: self,
        }
    }
}

/// A stream and its [`StreamGuard`], dropped together; reads and writes go to the stream.
/// Made by [`StreamGuard::bind`].
///
/// ```
/// use futures::{AsyncReadExt, executor::block_on, io::Cursor};
/// use rcmgr::ResourceScope;
/// let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
/// let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), rcmgr::Direction::Inbound, "/p")?;
/// let mut guarded = guard.bind(Cursor::new(b"hi".to_vec()));
/// let mut text = String::new();
/// block_on(guarded.read_to_string(&mut text))?;
/// assert_eq!(text, "hi");
/// drop(guarded);
/// assert_eq!(rm.protocol("/p").stat().streams_inbound, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[pin_project]
pub struct Guarded<S> {
    #[pin]
    stream: S,
    guard: StreamGuard,
}

impl<S> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S> Guarded<S> {
    /// The guard.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), rcmgr::Direction::Inbound, "/p")?;
    /// let guarded = guard.bind(futures::io::Cursor::new(Vec::<u8>::new()));
    /// assert_eq!(guarded.guard().scope().direction(), rcmgr::Direction::Inbound);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn guard(&self) -> &StreamGuard {
        &self.guard
    }

    /// The stream.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// # let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), rcmgr::Direction::Inbound, "/p")?;
    /// let guarded = guard.bind(futures::io::Cursor::new(vec![1u8, 2]));
    /// assert_eq!(guarded.get_ref().get_ref().len(), 2);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// # let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), rcmgr::Direction::Inbound, "/p")?;
    /// let mut guarded = guard.bind(futures::io::Cursor::new(vec![1u8, 2]));
    /// guarded.get_mut().get_mut().push(3);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Takes the stream and its guard apart.
    ///
    /// ```
    /// # use rcmgr::ResourceScope;
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// # let guard = rcmgr_libp2p::StreamGuard::open(&rm, rcmgr::PeerId::random(), rcmgr::Direction::Inbound, "/p")?;
    /// let guarded = guard.bind(futures::io::Cursor::new(Vec::<u8>::new()));
    /// let (_stream, guard) = guarded.into_parts();
    /// drop(guard);
    /// assert!(rm.system().stat().is_empty());
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn into_parts(self) -> (S, StreamGuard) {
        (self.stream, self.guard)
    }
}

impl<S: AsyncRead> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_read_vectored(cx, bufs)
    }
}

impl<S: AsyncWrite> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_close(cx)
    }
}

/// A zeroed byte buffer whose memory is reserved on a scope before it is allocated, and
/// released when it is dropped: an application's read or write buffer, counted where the
/// resource manager can refuse it.
///
/// Reserve on the narrowest scope that fits: the stream's own
/// ([`StreamHandle`](crate::StreamHandle) from [`stream_scope`](crate::stream_scope), or a
/// [`StreamGuard`]'s scope), a connection's
/// ([`Behaviour::connection_scope`](crate::Behaviour::connection_scope)), a peer's
/// (`rm.peer(..)`), or a protocol's (`rm.protocol(..)`). The reservation counts there and on
/// every scope above it, so the limits of all of them hold; a stream's scope counts in its
/// protocol's scope for its peer too, so a peer can take no more of a protocol's memory than
/// that per-peer limit, where a reservation on the protocol's scope itself lets one peer take
/// all of it.
/// `priority` is go's: a reservation at priority `p` succeeds only while the scope would
/// stay at or below `(p + 1) / 256` of its memory limit.
///
/// ```
/// use rcmgr::{BaseLimit, ConcreteLimitConfig, Priority, ResourceManager, ResourceScope};
/// use rcmgr_libp2p::ReservedBuffer;
///
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.protocol.insert("/echo/1.0.0".into(), BaseLimit { memory: 1 << 20, ..BaseLimit::unlimited() });
/// let rm = ResourceManager::new(limits);
/// let echo = rm.protocol("/echo/1.0.0");
///
/// let mut buffer = ReservedBuffer::new(&echo, 64 * 1024, Priority::HIGH)?;
/// buffer[0] = 7;
/// assert_eq!(buffer.len(), 64 * 1024);
/// assert_eq!(echo.stat().memory, 64 * 1024);
/// assert!(ReservedBuffer::new(&echo, 1 << 20, Priority::HIGH).is_err());
/// drop(buffer);
/// assert_eq!(echo.stat().memory, 0);
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[must_use = "the memory is released as soon as the buffer is dropped"]
pub struct ReservedBuffer {
    bytes: Vec<u8>,
    reservation: MemoryGuard,
}

impl fmt::Debug for ReservedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReservedBuffer")
            .field("len", &self.bytes.len())
            .field("reservation", &self.reservation)
            .finish()
    }
}

impl ReservedBuffer {
    /// Reserves `len` bytes at `priority` on `scope`, then allocates them. On error nothing
    /// was reserved or allocated.
    ///
    /// ```
    /// use rcmgr::{Priority, ResourceManager, ResourceScope};
    /// let rm = ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rm.peer(&rcmgr::PeerId::random());
    /// let buffer = rcmgr_libp2p::ReservedBuffer::new(&peer, 1500, Priority::MEDIUM)?;
    /// assert_eq!(peer.stat().memory, 1500);
    /// # drop(buffer);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn new(
        scope: &impl ResourceScope,
        len: usize,
        priority: Priority,
    ) -> Result<Self, rcmgr::Error> {
        let reservation = scope.reserve_memory_guard(len, priority)?;
        Ok(ReservedBuffer {
            bytes: vec![0; len],
            reservation,
        })
    }

    /// The reservation behind the buffer.
    ///
    /// ```
    /// # use rcmgr::{Priority, ResourceManager};
    /// # let rm = ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let buffer = rcmgr_libp2p::ReservedBuffer::new(&rm.system(), 10, Priority::LOW)?;
    /// assert_eq!(buffer.reservation().size(), 10);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn reservation(&self) -> &MemoryGuard {
        &self.reservation
    }
}

impl Deref for ReservedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for ReservedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for ReservedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for ReservedBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

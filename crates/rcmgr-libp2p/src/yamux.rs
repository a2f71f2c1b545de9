//! A yamux multiplexer whose windows are what rcmgr-libp2p reserves.
//!
//! libp2p's own `libp2p::yamux::Config` can only set the number of streams: its connection
//! window stays at yamux's default of 1 GiB, within which each stream's window grows by
//! itself, with no way for the resource manager to be asked first. This one is the same
//! muxer (yamux 0.14, protocol `/yamux/1.0.0`, wire-compatible with every yamux peer) with
//! the connection window set to exactly `max_streams × 256 KiB`: no stream can grow past the
//! 256 KiB it starts with, which is what [`Buffers`](crate::Buffers) reserves for it.

use std::{
    collections::VecDeque,
    fmt, io, iter,
    pin::Pin,
    task::{Context, Poll, Waker, ready},
};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p_core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

use crate::buffers::YAMUX_STREAM_WINDOW;

/// How many inbound streams the muxer keeps for the swarm before it resets new ones (the
/// acknowledgement backlog of rust-yamux, as in libp2p-yamux). [`LimitedMuxer`] takes them
/// as they come, so this is rarely reached.
///
/// [`LimitedMuxer`]: crate::LimitedMuxer
const MAX_BUFFERED_INBOUND_STREAMS: usize = 256;

/// The yamux upgrade of [`Buffers::yamux`](crate::Buffers::yamux): a multiplexer for
/// `upgrade(..).authenticate(..).multiplex(..)` whose windows do not grow.
///
/// ```
/// let config = rcmgr_libp2p::Buffers::default().with_max_streams(64).yamux();
/// assert_eq!(config.max_streams(), 64);
/// assert_eq!(config.connection_window(), 64 * 256 * 1024);
/// ```
#[derive(Clone)]
pub struct Config {
    inner: ::yamux::Config,
    max_streams: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_streams", &self.max_streams)
            .field("connection_window", &self.connection_window())
            .finish()
    }
}

impl Config {
    /// At most `max_streams` streams (at least 1), each with a window of 256 KiB that does not
    /// grow.
    pub(crate) fn new(max_streams: usize) -> Self {
        let max_streams = max_streams.max(1);
        let mut inner = ::yamux::Config::default();
        // yamux checks, at each step, that the window holds 256 KiB for each stream: lift the
        // window first so that no order of the two can fail that check.
        inner.set_max_connection_receive_window(None);
        inner.set_max_num_streams(max_streams);
        inner.set_max_connection_receive_window(Some(
            max_streams.saturating_mul(YAMUX_STREAM_WINDOW),
        ));
        Config { inner, max_streams }
    }

    /// How many streams a connection may hold at once.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// The receive window of the whole connection: 256 KiB for each stream, no more.
    pub fn connection_window(&self) -> usize {
        self.max_streams.saturating_mul(YAMUX_STREAM_WINDOW)
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(::yamux::Connection::new(
            io,
            self.inner,
            ::yamux::Mode::Server,
        ))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(::yamux::Connection::new(
            io,
            self.inner,
            ::yamux::Mode::Client,
        ))))
    }
}

/// A yamux connection as a [`StreamMuxer`].
pub struct Muxer<C> {
    connection: ::yamux::Connection<C>,
    /// Inbound streams that arrived while [`StreamMuxer::poll`] drove the connection.
    inbound: VecDeque<Stream>,
    /// The task waiting in [`StreamMuxer::poll_inbound`].
    inbound_waker: Option<Waker>,
}

impl<C> fmt::Debug for Muxer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Muxer")
            .field("buffered_inbound", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl<C> Muxer<C> {
    fn new(connection: ::yamux::Connection<C>) -> Self {
        Muxer {
            connection,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(Ok(stream)) => Poll::Ready(Ok(Stream(stream))),
            Some(Err(error)) => Poll::Ready(Err(Error(error))),
            None => Poll::Ready(Err(Error(::yamux::ConnectionError::Closed))),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(next) = this.poll_next_inbound(cx) {
            return Poll::Ready(next);
        }
        this.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let stream = ready!(self.get_mut().connection.poll_new_outbound(cx)).map_err(Error)?;
        Poll::Ready(Ok(Stream(stream)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx).map_err(Error)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_next_inbound(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND_STREAMS {
            tracing::debug!(stream = %stream.0, "dropping an inbound stream: too many waiting");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Let the caller run, then come back for more.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A yamux stream.
#[derive(Debug)]
pub struct Stream(::yamux::Stream);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// A yamux connection failed.
#[derive(Debug)]
pub struct Error(::yamux::ConnectionError);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        match error.0 {
            ::yamux::ConnectionError::Io(error) => error,
            other => io::Error::other(other),
        }
    }
}

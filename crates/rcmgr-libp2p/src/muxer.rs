//! Stream limits: a [`StreamMuxer`] wrapper that gives every substream a stream scope.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::{
    Transport,
    connection::ConnectedPoint,
    muxing::{StreamMuxer, StreamMuxerEvent},
    transport::map::Map,
};
use pin_project::{pin_project, pinned_drop};
use rcmgr::{Direction, PeerId, ResourceManager};

use crate::{
    buffers::Buffers,
    connection::{Connection, Slot},
    substream::{LimitedSubstream, refuse_inbound},
};

/// How many inbound substreams one poll refuses before it yields, so that a peer that opens
/// streams faster than they are refused cannot keep its connection's task busy.
const REFUSALS_PER_POLL: usize = 32;

/// How many accounted inbound substreams wait for the swarm at most (the swarm takes them as
/// long as it negotiates fewer than its limit, 128 by default).
const MAX_WAITING_INBOUND: usize = 32;

/// Wraps a transport's muxer in a [`LimitedMuxer`], so that every substream of every
/// connection it makes is accounted in `rm`, with [`Buffers::default`]'s stream windows.
/// [`Transports`](crate::Transports) builds whole transports with it; this is for a
/// transport built by hand.
///
/// `transport` is a transport that is already authenticated and multiplexed (its output is a
/// peer and a [`StreamMuxer`]: TCP or the memory transport after `upgrade`, `authenticate` and
/// `multiplex`, or a QUIC transport as it is). The result is a transport of the same kind,
/// ready for `SwarmBuilder::with_other_transport` or `Swarm::new`.
///
/// ```
/// use libp2p::{
///     core::{Transport, transport::MemoryTransport, upgrade::Version},
///     identity, noise,
/// };
///
/// let key = identity::Keypair::generate_ed25519();
/// let rm = rcmgr::ResourceManager::default();
/// let muxed = MemoryTransport::default()
///     .upgrade(Version::V1)
///     .authenticate(noise::Config::new(&key)?)
///     .multiplex(rcmgr_libp2p::Buffers::default().yamux());
/// let _transport = rcmgr_libp2p::wrap_transport(muxed, rm).boxed();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(
    clippy::type_complexity,
    reason = "libp2p's own Map type, so that the result stays Send, Unpin and composable exactly when the transport is"
)]
pub fn wrap_transport<T, M>(
    transport: T,
    rm: ResourceManager,
) -> Map<T, impl FnOnce((PeerId, M), ConnectedPoint) -> (PeerId, LimitedMuxer<M>) + Clone>
where
    T: Transport<Output = (PeerId, M)>,
    M: StreamMuxer,
{
    wrap_transport_with(transport, rm, Buffers::default())
}

/// [`wrap_transport`] with the stream windows of `buffers`: give the same [`Buffers`] the
/// transport's muxer was configured from ([`Buffers::yamux`], [`Buffers::quic`]).
///
/// ```
/// use libp2p::core::Transport;
/// let key = libp2p::identity::Keypair::generate_ed25519();
/// let buffers = rcmgr_libp2p::Buffers::default().with_stream_window(1 << 20);
/// let quic = libp2p::quic::tokio::Transport::new(buffers.quic(&key));
/// let _transport = rcmgr_libp2p::wrap_transport_with(quic, rcmgr::ResourceManager::default(), buffers).boxed();
/// ```
#[allow(
    clippy::type_complexity,
    reason = "libp2p's own Map type, as for wrap_transport"
)]
pub fn wrap_transport_with<T, M>(
    transport: T,
    rm: ResourceManager,
    buffers: Buffers,
) -> Map<T, impl FnOnce((PeerId, M), ConnectedPoint) -> (PeerId, LimitedMuxer<M>) + Clone>
where
    T: Transport<Output = (PeerId, M)>,
    M: StreamMuxer,
{
    transport.map(move |(peer, muxer), _endpoint| {
        let limited = LimitedMuxer::with_buffers(muxer, peer, rm, buffers);
        (peer, limited)
    })
}

/// A [`StreamMuxer`] that accounts every substream of a connection to `peer`, inbound and
/// outbound, in a stream scope (go's `OpenStream`) holding the stream's receive window
/// ([`Buffers`]), moves it into its protocol (go's `SetProtocol`) during its
/// multistream-select negotiation, and releases it when the substream is dropped or the
/// connection closes.
///
/// **When.** An inbound substream is accounted as soon as the inner muxer hands it out,
/// before the swarm sees it, and moved into its protocol just before the local side confirms
/// the protocol. An outbound substream is accounted before the inner muxer is asked for it,
/// and moved into the protocol the local side proposes before the proposal is written; when
/// the remote rejects that proposal and the local side proposes another, the stream gets a
/// new scope in the new protocol. An outbound stream accepts only the confirmation of the
/// protocol it proposed: a listener that confirms anything else commits a protocol violation,
/// and the substream is reset with an [`InvalidData`](std::io::ErrorKind::InvalidData) error
/// (no scope is ever made for a name the remote chose).
///
/// **Refusals are final, and cheap.** They reset the one substream, never the connection, and
/// they look like an unsupported protocol on both sides, which rust-libp2p's handlers take as
/// final for that protocol on that connection rather than as an I/O error to retry at once
/// (libp2p-ping stops pinging over the connection; request-response fails the request with
/// `UnsupportedProtocols`; identify reports the error and tries again at its next interval):
///
/// * **Inbound, refused when accounted** (peer, transient or system scope full, or no memory
///   for its window): the remote's dialer is answered `na` (after the header) and the
///   substream closed, then dropped; the next one is polled.
/// * **Inbound, refused at its protocol**: the local listener's confirmation is replaced by
///   `na` and the substream closed; the local listener fails with an I/O error holding
///   rcmgr's error (the swarm logs it at debug level; no handler sees the stream).
/// * **Outbound, refused when accounted or at its proposal**: nothing goes on the wire. The
///   substream takes the local dialer's writes and reads as ended, so the handler's upgrade
///   fails with `StreamUpgradeError::NegotiationFailed`. An inner substream opened for it
///   and never written to is kept for the next outbound stream.
///
/// Refusals are logged at debug level with rcmgr's error, and rcmgr's metrics count them.
///
/// **Closing.** When the connection closes (`poll_close`, an error of the inner muxer, or the
/// muxer dropped: a local close or a remote one, graceful or not), every stream's scope is
/// ended at once, whether or not the application still holds the stream; the substreams then
/// fail every read and write with [`ConnectionAborted`](std::io::ErrorKind::ConnectionAborted),
/// and tasks blocked in one are woken.
///
/// ```
/// use libp2p_core::muxing::StreamMuxerBox;
/// # fn install(muxer: StreamMuxerBox) {
/// let rm = rcmgr::ResourceManager::default();
/// let peer = rcmgr::PeerId::random();
/// let limited = rcmgr_libp2p::LimitedMuxer::new(muxer, peer, rm);
/// let _boxed = StreamMuxerBox::new(limited);
/// # }
/// ```
#[pin_project(PinnedDrop)]
pub struct LimitedMuxer<M: StreamMuxer> {
    #[pin]
    inner: M,
    conn: Arc<Connection<M::Substream>>,
    /// An outbound stream accounted while the inner muxer had no substream ready.
    waiting_outbound: Option<Arc<Slot>>,
    /// Inbound substreams accounted and not yet taken by the swarm.
    accepted: VecDeque<LimitedSubstream<M::Substream>>,
}

impl<M: StreamMuxer> fmt::Debug for LimitedMuxer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedMuxer")
            .field("connection", &self.conn)
            .field("waiting_outbound", &self.waiting_outbound.is_some())
            .field("accepted", &self.accepted.len())
            .finish_non_exhaustive()
    }
}

impl<M: StreamMuxer> LimitedMuxer<M> {
    /// Wraps `inner`, the muxer of a connection to `peer`, accounting its substreams in `rm`
    /// with [`Buffers::default`]'s windows. [`wrap_transport`] does this for every connection
    /// of a transport.
    ///
    /// ```
    /// use libp2p_core::muxing::StreamMuxerBox;
    /// # fn install(muxer: StreamMuxerBox, peer: rcmgr::PeerId, rm: rcmgr::ResourceManager) -> StreamMuxerBox {
    /// // In a transport's output, for the connection to `peer`:
    /// StreamMuxerBox::new(rcmgr_libp2p::LimitedMuxer::new(muxer, peer, rm))
    /// # }
    /// ```
    pub fn new(inner: M, peer: PeerId, rm: ResourceManager) -> Self {
        Self::with_buffers(inner, peer, rm, Buffers::default())
    }

    /// [`new`](Self::new) with the windows of `buffers`.
    ///
    /// ```
    /// use libp2p_core::muxing::StreamMuxerBox;
    /// # fn install(muxer: StreamMuxerBox, peer: rcmgr::PeerId, rm: rcmgr::ResourceManager) {
    /// let buffers = rcmgr_libp2p::Buffers::default().with_stream_window(512 << 10);
    /// let _limited = rcmgr_libp2p::LimitedMuxer::with_buffers(muxer, peer, rm, buffers);
    /// # }
    /// ```
    pub fn with_buffers(inner: M, peer: PeerId, rm: ResourceManager, buffers: Buffers) -> Self {
        LimitedMuxer {
            inner,
            conn: Arc::new(Connection::new(peer, rm, buffers)),
            waiting_outbound: None,
            accepted: VecDeque::new(),
        }
    }

    /// The peer at the other end of the connection.
    ///
    /// ```
    /// # use libp2p_core::muxing::StreamMuxerBox;
    /// # fn install(muxer: StreamMuxerBox) {
    /// let peer = rcmgr::PeerId::random();
    /// let limited = rcmgr_libp2p::LimitedMuxer::new(muxer, peer, rcmgr::ResourceManager::default());
    /// assert_eq!(limited.peer(), peer);
    /// # }
    /// ```
    pub fn peer(&self) -> PeerId {
        self.conn.peer
    }
}

#[pinned_drop]
impl<M: StreamMuxer> PinnedDrop for LimitedMuxer<M> {
    fn drop(self: Pin<&mut Self>) {
        self.conn.close();
    }
}

/// Accounts a new inbound substream, or refuses it. `None` when it was refused or the
/// connection has closed.
fn accept<S: AsyncWrite + Unpin>(
    conn: &Arc<Connection<S>>,
    substream: S,
    cx: &mut Context<'_>,
) -> Option<LimitedSubstream<S>> {
    match conn.open(Direction::Inbound) {
        Ok(Some(slot)) => Some(LimitedSubstream::inbound(substream, Arc::clone(conn), slot)),
        Ok(None) => None,
        Err(error) => {
            tracing::debug!(peer = %conn.peer, %error, "inbound stream refused");
            refuse_inbound(substream, cx);
            None
        }
    }
}

impl<M> StreamMuxer for LimitedMuxer<M>
where
    M: StreamMuxer,
    M::Substream: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = LimitedSubstream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let mut this = self.project();
        if let Some(substream) = this.accepted.pop_front() {
            return Poll::Ready(Ok(substream));
        }
        for _ in 0..REFUSALS_PER_POLL {
            match this.inner.as_mut().poll_inbound(cx) {
                Poll::Ready(Ok(substream)) => {
                    if let Some(accounted) = accept(this.conn, substream, cx) {
                        return Poll::Ready(Ok(accounted));
                    }
                }
                Poll::Ready(Err(error)) => {
                    this.conn.close();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.project();
        let slot = match this.waiting_outbound.take() {
            Some(slot) => slot,
            None => match this.conn.open(Direction::Outbound) {
                Ok(Some(slot)) => slot,
                Ok(None) => return Poll::Ready(Ok(LimitedSubstream::refused())),
                Err(error) => {
                    tracing::debug!(peer = %this.conn.peer, %error, "outbound stream refused");
                    return Poll::Ready(Ok(LimitedSubstream::refused()));
                }
            },
        };
        let substream = match this.conn.take_spare() {
            Some(spare) => spare,
            None => match this.inner.poll_outbound(cx) {
                Poll::Ready(Ok(substream)) => substream,
                Poll::Ready(Err(error)) => {
                    this.conn.close();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    *this.waiting_outbound = Some(slot);
                    return Poll::Pending;
                }
            },
        };
        Poll::Ready(Ok(LimitedSubstream::outbound(
            substream,
            Arc::clone(this.conn),
            slot,
        )))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        // The connection closes: every stream ends now, however long the close itself takes.
        this.conn.close();
        this.accepted.clear();
        *this.waiting_outbound = None;
        this.inner.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let mut this = self.project();
        match this.inner.as_mut().poll(cx) {
            Poll::Ready(Ok(event)) => return Poll::Ready(Ok(event)),
            Poll::Ready(Err(error)) => {
                this.conn.close();
                return Poll::Ready(Err(error));
            }
            Poll::Pending => {}
        }
        // Account the inbound substreams the muxer now holds at once, so that none waits
        // unaccounted for the swarm to ask.
        let mut refused = 0;
        while this.accepted.len() < MAX_WAITING_INBOUND && refused < REFUSALS_PER_POLL {
            match this.inner.as_mut().poll_inbound(cx) {
                Poll::Ready(Ok(substream)) => match accept(this.conn, substream, cx) {
                    Some(accounted) => this.accepted.push_back(accounted),
                    None => refused += 1,
                },
                Poll::Ready(Err(error)) => {
                    this.conn.close();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => break,
            }
        }
        if refused == REFUSALS_PER_POLL {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

//! Stream limits: a [`StreamMuxer`] wrapper that gives every substream a stream scope.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::{
    Transport,
    connection::ConnectedPoint,
    muxing::{StreamMuxer, StreamMuxerEvent},
    transport::map::Map,
};
use pin_project::pin_project;
use rcmgr::{Direction, PeerId, ResourceManager, StreamScope};

use crate::{
    negotiation::{ListenerReplies, Outcome},
    services::attach_protocol,
};

/// How many refused inbound substreams one call of
/// [`poll_inbound`](LimitedMuxer::poll_inbound) drops before it yields, so that a peer that
/// opens streams faster than they are refused cannot keep its connection's task busy.
const REFUSALS_PER_POLL: usize = 32;

/// Wraps a transport's muxer in a [`LimitedMuxer`], so that every substream of every
/// connection it makes is accounted in `rm`: the whole recipe for stream limits.
///
/// `transport` is a transport that is already authenticated and multiplexed (its output is a
/// peer and a [`StreamMuxer`]: TCP or the memory transport after `upgrade`, `authenticate` and
/// `multiplex`, or a QUIC transport as it is). The result is a transport of the same kind,
/// ready for `SwarmBuilder::with_other_transport` or `Swarm::new`.
///
/// ```
/// use libp2p::{
///     core::{Transport, transport::MemoryTransport, upgrade::Version},
///     identity, noise, yamux,
/// };
///
/// let key = identity::Keypair::generate_ed25519();
/// let rm = rcmgr::ResourceManager::default();
/// let muxed = MemoryTransport::default()
///     .upgrade(Version::V1)
///     .authenticate(noise::Config::new(&key)?)
///     .multiplex(yamux::Config::default());
/// let _transport = rcmgr_libp2p::wrap_transport(muxed, rm).boxed();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The crate documentation shows the same with the `SwarmBuilder`, for TCP and QUIC.
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
    transport.map(move |(peer, muxer), _endpoint| {
        let limited = LimitedMuxer::new(muxer, peer, rm);
        (peer, limited)
    })
}

/// A [`StreamMuxer`] that opens a stream scope (go's `OpenStream`) for every substream of a
/// connection to `peer`, inbound and outbound, learns each substream's protocol from its
/// multistream-select negotiation and moves the scope into that protocol (go's
/// `SetProtocol`), and releases the scope when the substream is dropped.
///
/// Refusals reset the one substream and never the connection:
///
/// * **Inbound, peer or transient scope full**: the substream is dropped (the muxer resets
///   it) before it is handed to the swarm, and the next one is polled. The remote sees its
///   stream fail to negotiate.
/// * **Protocol or service scope full** (inbound or outbound): the substream fails with an
///   I/O error at the moment the protocol is learned, before an inbound confirmation is
///   written. The swarm drops it, which resets it.
/// * **Outbound, peer or transient scope full**: the muxer has no way to refuse (an error from
///   `poll_outbound` would close the whole connection), so it hands out a substream that was
///   never opened on the wire and fails its first read or write. The handler sees the
///   stream's upgrade fail with [`StreamUpgradeError::Io`] carrying rcmgr's error
///   ([`refusal_of`](crate::refusal_of) finds it); the remote sees nothing.
///
/// The outbound scope is reserved before the inner muxer is asked for a substream, and kept
/// while the muxer cannot give one yet (for example at yamux's stream limit); it is released
/// when the connection closes, so at most one such reservation waits per connection.
///
/// [`StreamUpgradeError::Io`]: libp2p_swarm::StreamUpgradeError::Io
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
#[pin_project]
pub struct LimitedMuxer<M> {
    #[pin]
    inner: M,
    peer: PeerId,
    rm: ResourceManager,
    /// An outbound scope reserved while the inner muxer had no substream ready.
    waiting_outbound: Option<StreamScope>,
}

impl<M> fmt::Debug for LimitedMuxer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedMuxer")
            .field("peer", &self.peer)
            .field("waiting_outbound", &self.waiting_outbound)
            .finish_non_exhaustive()
    }
}

impl<M> LimitedMuxer<M> {
    /// Wraps `inner`, the muxer of a connection to `peer`, accounting its substreams in `rm`.
    /// [`wrap_transport`] does this for every connection of a transport.
    ///
    /// ```
    /// use libp2p_core::muxing::StreamMuxerBox;
    /// # fn install(muxer: StreamMuxerBox, peer: rcmgr::PeerId, rm: rcmgr::ResourceManager) -> StreamMuxerBox {
    /// // In a transport's output, for the connection to `peer`:
    /// StreamMuxerBox::new(rcmgr_libp2p::LimitedMuxer::new(muxer, peer, rm))
    /// # }
    /// ```
    pub fn new(inner: M, peer: PeerId, rm: ResourceManager) -> Self {
        LimitedMuxer {
            inner,
            peer,
            rm,
            waiting_outbound: None,
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
        self.peer
    }
}

impl<M: StreamMuxer> StreamMuxer for LimitedMuxer<M> {
    type Substream = LimitedSubstream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let mut this = self.project();
        for _ in 0..REFUSALS_PER_POLL {
            let substream = ready!(this.inner.as_mut().poll_inbound(cx))?;
            match this.rm.open_stream(*this.peer, Direction::Inbound) {
                Ok(scope) => return Poll::Ready(Ok(LimitedSubstream::accounted(substream, scope))),
                Err(error) => {
                    tracing::debug!(peer = %this.peer, %error, "inbound stream refused");
                    // Dropping the substream resets it; the connection carries on.
                    drop(substream);
                }
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
        let scope = match this.waiting_outbound.take() {
            Some(scope) => scope,
            None => match this.rm.open_stream(*this.peer, Direction::Outbound) {
                Ok(scope) => scope,
                Err(error) => {
                    tracing::debug!(peer = %this.peer, %error, "outbound stream refused");
                    return Poll::Ready(Ok(LimitedSubstream::refused(error)));
                }
            },
        };
        match this.inner.poll_outbound(cx) {
            Poll::Ready(Ok(substream)) => {
                Poll::Ready(Ok(LimitedSubstream::accounted(substream, scope)))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                *this.waiting_outbound = Some(scope);
                Poll::Pending
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        *this.waiting_outbound = None;
        this.inner.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        self.project().inner.poll(cx)
    }
}

/// A substream of a [`LimitedMuxer`]: the inner muxer's substream with its stream scope,
/// which is released when this is dropped. Reads and writes go to the inner substream; a
/// substream rcmgr refused fails them with an error that [`refusal_of`] recognises.
///
/// ```
/// use futures::AsyncWriteExt;
/// # async fn send(mut substream: rcmgr_libp2p::LimitedSubstream<libp2p_core::muxing::SubstreamBox>) {
/// if let Err(error) = substream.write_all(b"hello").await {
///     if let Some(refusal) = rcmgr_libp2p::refusal_of(&error) {
///         println!("rcmgr refused the stream: {refusal}");
///     }
/// }
/// # }
/// ```
#[pin_project]
pub struct LimitedSubstream<S> {
    #[pin]
    state: SubstreamState<S>,
}

#[pin_project(project = SubstreamStateProj)]
enum SubstreamState<S> {
    /// A substream with its scope.
    Accounted {
        #[pin]
        substream: S,
        scope: StreamScope,
        /// Follows the negotiation until the protocol is known; `None` after that.
        negotiation: Option<ListenerReplies>,
    },
    /// Refused by rcmgr: every operation fails with this error. Nothing is held.
    Refused { error: rcmgr::Error },
}

impl<S> fmt::Debug for LimitedSubstream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            SubstreamState::Accounted { scope, .. } => f
                .debug_struct("LimitedSubstream")
                .field("scope", scope)
                .finish_non_exhaustive(),
            SubstreamState::Refused { error } => f
                .debug_struct("LimitedSubstream")
                .field("refused", error)
                .finish(),
        }
    }
}

impl<S> LimitedSubstream<S> {
    fn accounted(substream: S, scope: StreamScope) -> Self {
        LimitedSubstream {
            state: SubstreamState::Accounted {
                substream,
                scope,
                negotiation: Some(ListenerReplies::default()),
            },
        }
    }

    fn refused(error: rcmgr::Error) -> Self {
        LimitedSubstream {
            state: SubstreamState::Refused { error },
        }
    }

    /// The substream's scope; `None` once rcmgr has refused it.
    ///
    /// ```
    /// # fn check(substream: &rcmgr_libp2p::LimitedSubstream<libp2p_core::muxing::SubstreamBox>) {
    /// if let Some(scope) = substream.scope() {
    ///     println!("{} is {:?}", scope.peer(), scope.direction());
    /// }
    /// # }
    /// ```
    pub fn scope(&self) -> Option<&StreamScope> {
        match &self.state {
            SubstreamState::Accounted { scope, .. } => Some(scope),
            SubstreamState::Refused { .. } => None,
        }
    }

    /// Resets the substream after a refusal: drops the inner substream (the muxer resets it)
    /// and the scope, and returns the error to give the caller.
    fn refuse(mut self: Pin<&mut Self>, error: rcmgr::Error) -> io::Error {
        tracing::debug!(%error, "stream refused at protocol negotiation");
        let refusal = refusal_error(&error);
        self.as_mut()
            .project()
            .state
            .set(SubstreamState::Refused { error });
        refusal
    }
}

/// The I/O error a refused substream fails with: rcmgr's error inside.
fn refusal_error(error: &rcmgr::Error) -> io::Error {
    io::Error::other(error.clone())
}

/// rcmgr's refusal inside an I/O error from a stream of a [`LimitedMuxer`], for handlers and
/// applications that want to tell a refusal by the local resource manager from other
/// failures (as `StreamUpgradeError::Io` or `libp2p_stream::OpenStreamError::Io`).
///
/// ```
/// use std::io;
/// let error = io::Error::other("connection reset");
/// assert!(rcmgr_libp2p::refusal_of(&error).is_none());
/// ```
pub fn refusal_of(error: &io::Error) -> Option<&rcmgr::Error> {
    error.get_ref()?.downcast_ref::<rcmgr::Error>()
}

/// Follows `bytes` of the listener's side of the negotiation, and moves the scope into the
/// protocol once the listener has confirmed it. Stops following at the outcome.
fn follow_negotiation(
    negotiation: &mut Option<ListenerReplies>,
    scope: &mut StreamScope,
    bytes: &[u8],
) -> Result<(), rcmgr::Error> {
    let Some(replies) = negotiation else {
        return Ok(());
    };
    let Some(outcome) = replies.feed(bytes) else {
        return Ok(());
    };
    *negotiation = None;
    match outcome {
        Outcome::Confirmed(protocol) => attach_protocol(scope, &protocol),
        Outcome::NotMultistream => Ok(()),
    }
}

impl<S: AsyncRead> AsyncRead for LimitedSubstream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let refusal = match self.as_mut().project().state.project() {
            SubstreamStateProj::Refused { error } => return Poll::Ready(Err(refusal_error(error))),
            SubstreamStateProj::Accounted {
                substream,
                scope,
                negotiation,
            } => {
                let read = ready!(substream.poll_read(cx, buf))?;
                // On an outbound substream we are the dialer: the listener's side is read.
                if scope.direction() == Direction::Inbound {
                    return Poll::Ready(Ok(read));
                }
                match follow_negotiation(negotiation, scope, &buf[..read]) {
                    Ok(()) => return Poll::Ready(Ok(read)),
                    Err(error) => error,
                }
            }
        };
        Poll::Ready(Err(self.refuse(refusal)))
    }
}

impl<S: AsyncWrite> AsyncWrite for LimitedSubstream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let refusal = match self.as_mut().project().state.project() {
            SubstreamStateProj::Refused { error } => return Poll::Ready(Err(refusal_error(error))),
            SubstreamStateProj::Accounted {
                substream,
                scope,
                negotiation,
            } => {
                // On an inbound substream we are the listener: the listener's side is written.
                // Follow these bytes before they are written, so that the confirmation of a
                // refused protocol never leaves; then follow only what was really written.
                let listening = scope.direction() == Direction::Inbound;
                let lookahead = match negotiation {
                    Some(replies) if listening => {
                        let mut ahead = Some(replies.clone());
                        follow_negotiation(&mut ahead, scope, buf).map(|()| ahead.is_some())
                    }
                    _ => Ok(true),
                };
                match lookahead {
                    Err(error) => error,
                    Ok(still_negotiating) => {
                        if !still_negotiating {
                            *negotiation = None;
                        }
                        let written = ready!(substream.poll_write(cx, buf))?;
                        if let (true, Some(replies)) = (listening, negotiation) {
                            // A prefix of bytes that reached no outcome reaches none either.
                            let _ = replies.feed(&buf[..written]);
                        }
                        return Poll::Ready(Ok(written));
                    }
                }
            }
        };
        Poll::Ready(Err(self.refuse(refusal)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project().state.project() {
            SubstreamStateProj::Refused { error } => Poll::Ready(Err(refusal_error(error))),
            SubstreamStateProj::Accounted { substream, .. } => substream.poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project().state.project() {
            SubstreamStateProj::Refused { error } => Poll::Ready(Err(refusal_error(error))),
            SubstreamStateProj::Accounted { substream, .. } => substream.poll_close(cx),
        }
    }
}

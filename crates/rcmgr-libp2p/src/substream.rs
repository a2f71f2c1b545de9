//! [`LimitedSubstream`]: a substream with its stream scope, which follows the substream's
//! multistream-select negotiation to move the scope into the negotiated protocol.

use std::{
    fmt, io, mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};

use crate::{
    connection::{Connection, Slot, lock},
    handle,
    negotiation::{FRAMED_NOT_AVAILABLE, Frames, Message, REFUSAL, Step},
};

/// A substream of a [`LimitedMuxer`](crate::LimitedMuxer): the inner muxer's substream with
/// its stream scope and its receive window's reservation, which are released when this is
/// dropped or when its connection closes, whichever comes first. Reads and writes go to the
/// inner substream.
///
/// * After its connection has closed, every read and write fails with
///   [`io::ErrorKind::ConnectionAborted`], also for a task blocked in one (it is woken).
/// * An outbound substream refused by rcmgr before anything went on the wire (see
///   [`LimitedMuxer`](crate::LimitedMuxer)) takes every write and reads as ended, so that the
///   local multistream-select dialer fails its negotiation as "protocol not supported".
/// * A substream reset for a protocol violation, or an inbound one refused at its protocol,
///   fails every operation.
///
/// Application code reaches the scope with [`stream_scope`](crate::stream_scope).
pub struct LimitedSubstream<S> {
    state: State<S>,
}

enum State<S> {
    /// Accounted and open.
    Open(Open<S>),
    /// Refused by rcmgr before anything was written: reads see the end of the stream, writes
    /// are taken and dropped.
    Refused,
    /// Reset: every operation fails with this.
    Failed { kind: io::ErrorKind, reason: String },
}

struct Open<S> {
    inner: S,
    conn: Arc<Connection<S>>,
    slot: Arc<Slot>,
    negotiation: Negotiation,
    /// Bytes of the local dialer's negotiation that are cleared to go, before anything else.
    unsent: Vec<u8>,
    /// Whether anything was written to `inner`.
    wrote: bool,
}

/// Where the negotiation of a substream is, as far as its scope is concerned.
enum Negotiation {
    /// Inbound (the local side listens): what the local listener writes is followed, and the
    /// scope moves into the protocol just before its confirmation is written.
    Listening { frames: Frames, attached: bool },
    /// Outbound (the local side dials), before a proposal: what the local dialer writes is
    /// held back until its proposal is complete, and the scope moves into the proposed
    /// protocol before the proposal is written.
    Proposing {
        writes: Frames,
        replies: Frames,
        held: Vec<u8>,
    },
    /// Outbound, `proposal` sent: what the listener answers is followed. A confirmation of
    /// anything else is a protocol violation.
    Awaiting {
        proposal: String,
        writes: Frames,
        replies: Frames,
    },
    /// Negotiated, or not multistream-select: nothing more is followed.
    Done,
}

/// The most the local dialer's negotiation is held back: a header and the longest message,
/// with their length prefixes.
const MAX_HELD: usize = 1 + 19 + 2 + 16383;

/// What a write of the local dialer's negotiation came to.
enum Proposed {
    /// These many bytes were taken.
    Took(usize),
    /// The proposal was refused; these many bytes were taken.
    Refused(usize, rcmgr::Error),
}

impl<S> fmt::Debug for LimitedSubstream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("LimitedSubstream");
        match &self.state {
            State::Open(open) => out.field("stream", &open.slot),
            State::Refused => out.field("refused", &true),
            State::Failed { reason, .. } => out.field("failed", reason),
        };
        out.finish_non_exhaustive()
    }
}

/// The error of every operation on a substream whose connection has closed.
fn connection_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the connection of this stream has closed",
    )
}

/// Writes `bytes` and closes `substream` if it can without waiting, then drops it: the
/// remote's dialer reads a rejection instead of a reset when the muxer has room, and a reset
/// otherwise.
pub(crate) fn reject_and_drop<S: AsyncWrite + Unpin>(
    mut substream: S,
    bytes: &[u8],
    cx: &mut Context<'_>,
) {
    if let Poll::Ready(Ok(written)) = Pin::new(&mut substream).poll_write(cx, bytes)
        && written == bytes.len()
    {
        let _ = Pin::new(&mut substream).poll_close(cx);
    }
}

impl<S> LimitedSubstream<S> {
    /// An inbound substream with its scope.
    pub(crate) fn inbound(inner: S, conn: Arc<Connection<S>>, slot: Arc<Slot>) -> Self {
        Self::open(
            inner,
            conn,
            slot,
            Negotiation::Listening {
                frames: Frames::default(),
                attached: false,
            },
        )
    }

    /// An outbound substream with its scope.
    pub(crate) fn outbound(inner: S, conn: Arc<Connection<S>>, slot: Arc<Slot>) -> Self {
        Self::open(
            inner,
            conn,
            slot,
            Negotiation::Proposing {
                writes: Frames::default(),
                replies: Frames::default(),
                held: Vec::new(),
            },
        )
    }

    fn open(inner: S, conn: Arc<Connection<S>>, slot: Arc<Slot>, negotiation: Negotiation) -> Self {
        LimitedSubstream {
            state: State::Open(Open {
                inner,
                conn,
                slot,
                negotiation,
                unsent: Vec::new(),
                wrote: false,
            }),
        }
    }

    /// An outbound substream refused before it was opened.
    pub(crate) fn refused() -> Self {
        LimitedSubstream {
            state: State::Refused,
        }
    }

    /// The protocol the substream's scope is in: the one negotiated (inbound) or proposed
    /// (outbound). `None` before that, or once the substream was refused or reset.
    ///
    /// ```
    /// # fn check(substream: &rcmgr_libp2p::LimitedSubstream<libp2p_core::muxing::SubstreamBox>) {
    /// if let Some(protocol) = substream.protocol() {
    ///     println!("a stream of {protocol}");
    /// }
    /// # }
    /// ```
    pub fn protocol(&self) -> Option<String> {
        match &self.state {
            State::Open(open) => open.slot.protocol(),
            _ => None,
        }
    }

    /// Whether the substream is accounted and its connection still open: `false` once it was
    /// refused, reset or its connection closed.
    ///
    /// ```
    /// # fn check(substream: &rcmgr_libp2p::LimitedSubstream<libp2p_core::muxing::SubstreamBox>) {
    /// if !substream.is_open() {
    ///     println!("ended");
    /// }
    /// # }
    /// ```
    pub fn is_open(&self) -> bool {
        matches!(&self.state, State::Open(open) if !open.slot.is_closed())
    }

    /// Ends the substream: its scope is released and it moves to `next`. Returns the inner
    /// substream, and whether anything was written to it, for the caller to keep or drop
    /// (which resets it).
    fn retire(&mut self, next: State<S>) -> Option<(S, bool)> {
        match mem::replace(&mut self.state, next) {
            State::Open(open) => {
                open.slot.close();
                open.conn.forget(&open.slot);
                Some((open.inner, open.wrote))
            }
            _ => None,
        }
    }

    /// Resets the substream with `error`, which every later operation also returns.
    fn fail(&mut self, kind: io::ErrorKind, reason: String) -> io::Error {
        let error = io::Error::new(kind, reason.clone());
        // Dropping the inner substream resets it.
        drop(self.retire(State::Failed { kind, reason }));
        error
    }
}

impl<S> Drop for LimitedSubstream<S> {
    fn drop(&mut self) {
        drop(self.retire(State::Refused));
    }
}

impl<S: AsyncWrite + Unpin> Open<S> {
    /// Writes the cleared bytes of the dialer's negotiation.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        while sent < self.unsent.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.unsent[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    sent += written;
                    self.wrote = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.unsent.drain(..sent);
                    return Poll::Pending;
                }
            }
        }
        self.unsent.clear();
        Poll::Ready(Ok(()))
    }

    /// Clears whatever the dialer's negotiation holds back: it is flushing, so it waits for
    /// an answer to what it wrote.
    fn release_held(&mut self) {
        if let Negotiation::Proposing { held, .. } = &mut self.negotiation {
            self.unsent.append(held);
        }
    }

    /// Takes bytes of the local dialer's negotiation, up to the end of its next message.
    fn propose(&mut self, buf: &[u8]) -> Proposed {
        let Negotiation::Proposing { writes, held, .. } = &mut self.negotiation else {
            return Proposed::Took(0);
        };
        let (taken, step) = writes.feed(buf);
        held.extend_from_slice(&buf[..taken]);
        match step {
            // The header waits for the proposal; a message in pieces waits for its end. A
            // dialer holds back no more than a header and one message: anything longer is not
            // a negotiation this can follow.
            None | Some(Step::Message(Message::Header)) if held.len() <= MAX_HELD => {}
            None | Some(Step::Message(Message::Header)) => {
                self.release_held();
                self.negotiation = Negotiation::Done;
            }
            Some(Step::Message(Message::Protocol(protocol))) => {
                let attached = match self.slot.protocol() {
                    None => self.slot.attach(&protocol),
                    // Its first proposal was rejected: a new scope for the next.
                    Some(_) => lock(&self.slot.held).reopen_in(&self.conn, &protocol),
                };
                if let Err(error) = attached {
                    return Proposed::Refused(taken, error);
                }
                let Negotiation::Proposing {
                    writes,
                    replies,
                    mut held,
                } = mem::replace(&mut self.negotiation, Negotiation::Done)
                else {
                    return Proposed::Took(taken);
                };
                self.unsent.append(&mut held);
                self.negotiation = Negotiation::Awaiting {
                    proposal: protocol,
                    writes,
                    replies,
                };
            }
            // `ls`, or something a dialer does not send: the dialer waits for an answer.
            Some(Step::Message(_)) => self.release_held(),
            Some(Step::NotMultistream) => {
                self.release_held();
                self.negotiation = Negotiation::Done;
            }
        }
        Proposed::Took(taken)
    }
}

impl<S> Open<S> {
    /// Follows what the listener answered the local dialer. Errors with the reason of a
    /// protocol violation.
    fn answered(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            let replies = match &mut self.negotiation {
                Negotiation::Proposing { replies, .. } | Negotiation::Awaiting { replies, .. } => {
                    replies
                }
                Negotiation::Listening { .. } | Negotiation::Done => return Ok(()),
            };
            let (taken, step) = replies.feed(bytes);
            bytes = &bytes[taken..];
            match step {
                None => return Ok(()),
                Some(Step::NotMultistream) => {
                    // Nothing more can be learned; what is held goes as it is.
                    if let Negotiation::Proposing { held, .. } = &mut self.negotiation {
                        self.unsent.append(held);
                    }
                    self.negotiation = Negotiation::Done;
                    return Ok(());
                }
                Some(Step::Message(Message::NotAvailable)) => {
                    if let Negotiation::Awaiting {
                        writes, replies, ..
                    } = mem::replace(&mut self.negotiation, Negotiation::Done)
                    {
                        // The dialer proposes its next protocol, if it has one.
                        self.negotiation = Negotiation::Proposing {
                            writes,
                            replies,
                            held: Vec::new(),
                        };
                    }
                }
                Some(Step::Message(Message::Protocol(confirmed))) => {
                    return match &self.negotiation {
                        Negotiation::Awaiting { proposal, .. } if *proposal == confirmed => {
                            self.negotiation = Negotiation::Done;
                            Ok(())
                        }
                        Negotiation::Awaiting { proposal, .. } => Err(format!(
                            "protocol violation: the listener confirmed {confirmed}, the dialer proposed {proposal}"
                        )),
                        _ => Err(format!(
                            "protocol violation: the listener confirmed {confirmed} before any proposal"
                        )),
                    };
                }
                Some(Step::Message(_)) => {}
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedSubstream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let open = match &mut this.state {
            State::Refused => return Poll::Ready(Ok(0)),
            State::Failed { kind, reason } => {
                return Poll::Ready(Err(io::Error::new(*kind, reason.clone())));
            }
            State::Open(open) => open,
        };
        if buf.is_empty() && handle::offer(&open.slot) {
            return Poll::Ready(Ok(0));
        }
        open.slot.reader.register(cx.waker());
        if open.slot.is_closed() {
            return Poll::Ready(Err(connection_closed()));
        }
        let read = ready!(Pin::new(&mut open.inner).poll_read(cx, buf))?;
        match open.answered(&buf[..read]) {
            Ok(()) => Poll::Ready(Ok(read)),
            Err(violation) => {
                tracing::debug!(peer = %open.slot.peer, %violation, "stream reset");
                Poll::Ready(Err(this.fail(io::ErrorKind::InvalidData, violation)))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedSubstream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let open = match &mut this.state {
            State::Refused => return Poll::Ready(Ok(buf.len())),
            State::Failed { kind, reason } => {
                return Poll::Ready(Err(io::Error::new(*kind, reason.clone())));
            }
            State::Open(open) => open,
        };
        open.slot.writer.register(cx.waker());
        if open.slot.is_closed() {
            return Poll::Ready(Err(connection_closed()));
        }
        ready!(open.drain(cx))?;
        match &mut open.negotiation {
            Negotiation::Proposing { .. } => match open.propose(buf) {
                Proposed::Took(taken) => Poll::Ready(Ok(taken)),
                Proposed::Refused(taken, error) => {
                    tracing::debug!(peer = %open.slot.peer, %error, "outbound stream refused at its proposal");
                    let conn = Arc::clone(&open.conn);
                    if let Some((unused, false)) = this.retire(State::Refused) {
                        // Nothing reached the wire: the next outbound stream uses it.
                        conn.keep_spare(unused);
                    }
                    Poll::Ready(Ok(taken))
                }
            },
            Negotiation::Listening { frames, attached } => {
                // Look ahead for the confirmation, to move the scope before it is written.
                let mut ahead = frames.clone();
                let mut rest = buf;
                let mut confirmation = None;
                while !rest.is_empty() {
                    let before = buf.len() - rest.len();
                    let (taken, step) = ahead.feed(rest);
                    rest = &rest[taken..];
                    match step {
                        Some(Step::Message(Message::Protocol(protocol))) => {
                            confirmation = Some((before, protocol));
                            break;
                        }
                        Some(Step::NotMultistream) | None => break,
                        Some(Step::Message(_)) => {}
                    }
                }
                if let Some((start, protocol)) = confirmation
                    && !*attached
                {
                    if let Err(error) = open.slot.attach(&protocol) {
                        tracing::debug!(peer = %open.slot.peer, %protocol, %error, "inbound stream refused at its protocol");
                        // Unless part of a message already went out, what precedes the
                        // confirmation goes, then a rejection instead of it.
                        let mut rejection = None;
                        if frames.at_boundary() {
                            let mut bytes = buf[..start].to_vec();
                            bytes.extend_from_slice(FRAMED_NOT_AVAILABLE);
                            rejection = Some(bytes);
                        }
                        let failed = State::Failed {
                            kind: io::ErrorKind::Other,
                            reason: error.to_string(),
                        };
                        if let (Some((inner, _)), Some(rejection)) =
                            (this.retire(failed), rejection)
                        {
                            reject_and_drop(inner, &rejection, cx);
                        }
                        return Poll::Ready(Err(io::Error::other(error)));
                    }
                    *attached = true;
                }
                let written = ready!(Pin::new(&mut open.inner).poll_write(cx, buf))?;
                open.wrote = true;
                // Follow what was really written.
                let mut rest = &buf[..written];
                while !rest.is_empty() {
                    let (taken, step) = frames.feed(rest);
                    rest = &rest[taken..];
                    match step {
                        Some(Step::Message(Message::Protocol(_)) | Step::NotMultistream) => {
                            open.negotiation = Negotiation::Done;
                            break;
                        }
                        Some(Step::Message(_)) | None => {}
                    }
                }
                Poll::Ready(Ok(written))
            }
            Negotiation::Awaiting { .. } | Negotiation::Done => {
                let written = ready!(Pin::new(&mut open.inner).poll_write(cx, buf))?;
                open.wrote |= written > 0;
                Poll::Ready(Ok(written))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Refused => Poll::Ready(Ok(())),
            State::Failed { kind, reason } => {
                Poll::Ready(Err(io::Error::new(*kind, reason.clone())))
            }
            State::Open(open) => {
                open.slot.writer.register(cx.waker());
                if open.slot.is_closed() {
                    return Poll::Ready(Err(connection_closed()));
                }
                open.release_held();
                ready!(open.drain(cx))?;
                Pin::new(&mut open.inner).poll_flush(cx)
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Refused => Poll::Ready(Ok(())),
            State::Failed { kind, reason } => {
                Poll::Ready(Err(io::Error::new(*kind, reason.clone())))
            }
            State::Open(open) => {
                open.slot.writer.register(cx.waker());
                if open.slot.is_closed() {
                    return Poll::Ready(Err(connection_closed()));
                }
                open.release_held();
                ready!(open.drain(cx))?;
                Pin::new(&mut open.inner).poll_close(cx)
            }
        }
    }
}

/// Refuses an inbound substream before its negotiation: the remote's dialer reads a
/// rejection of its proposal (or a reset if the muxer has no room to write it).
pub(crate) fn refuse_inbound<S: AsyncWrite + Unpin>(substream: S, cx: &mut Context<'_>) {
    reject_and_drop(substream, REFUSAL, cx);
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
    };

    use futures::{AsyncReadExt, AsyncWriteExt, executor::block_on};
    use rcmgr::{
        BaseLimit, ConcreteLimitConfig, Direction, PeerId, ResourceManager, ResourceScope,
    };

    use super::*;
    use crate::buffers::Buffers;

    /// An inner substream: what is written to it is kept; reads come from `incoming`, then the
    /// end of the stream.
    #[derive(Default)]
    struct Wire {
        written: Arc<Mutex<Vec<u8>>>,
        incoming: VecDeque<u8>,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.incoming.len());
            for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
                *slot = byte;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written
                .lock()
                .expect("not poisoned")
                .extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut framed = vec![u8::try_from(body.len()).expect("a short message")];
        framed.extend_from_slice(body);
        framed
    }

    const HEADER: &[u8] = b"/multistream/1.0.0\n";

    struct Setup {
        rm: ResourceManager,
        conn: Arc<Connection<Wire>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    fn setup(limits: ConcreteLimitConfig) -> Setup {
        let rm = ResourceManager::new(limits);
        let conn = Arc::new(Connection::new(
            PeerId::random(),
            rm.clone(),
            Buffers::default(),
        ));
        Setup {
            rm,
            conn,
            written: Arc::default(),
        }
    }

    impl Setup {
        fn substream(&self, direction: Direction, incoming: &[u8]) -> LimitedSubstream<Wire> {
            let wire = Wire {
                written: Arc::clone(&self.written),
                incoming: incoming.iter().copied().collect(),
            };
            let slot = self.conn.open(direction).expect("accounted").expect("open");
            match direction {
                Direction::Inbound => LimitedSubstream::inbound(wire, Arc::clone(&self.conn), slot),
                Direction::Outbound => {
                    LimitedSubstream::outbound(wire, Arc::clone(&self.conn), slot)
                }
            }
        }

        fn written(&self) -> Vec<u8> {
            self.written.lock().expect("not poisoned").clone()
        }
    }

    fn one_stream_of(protocol: &str) -> ConcreteLimitConfig {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.protocol.insert(
            protocol.into(),
            BaseLimit {
                streams: 1,
                ..BaseLimit::unlimited()
            },
        );
        limits
    }

    #[test]
    fn a_dialer_writes_nothing_before_its_proposal_is_complete_and_attached() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut stream = setup.substream(Direction::Outbound, &[]);
        let mut negotiation = frame(HEADER);
        negotiation.extend(frame(b"/a/1\n"));
        let (first, rest) = negotiation.split_at(25);
        block_on(stream.write_all(first)).expect("taken");
        assert!(
            setup.written().is_empty(),
            "held until the proposal is complete"
        );
        block_on(stream.write_all(rest)).expect("taken");
        assert_eq!(stream.protocol().as_deref(), Some("/a/1"));
        block_on(stream.flush()).expect("flushed");
        assert_eq!(setup.written(), negotiation);
        assert_eq!(setup.rm.protocol("/a/1").stat().streams_outbound, 1);
        // The window is on the stream's scope, so on its protocol too.
        assert_eq!(
            setup.rm.protocol("/a/1").stat().memory,
            Buffers::default().stream_window() as u64
        );
    }

    #[test]
    fn a_refused_proposal_sends_nothing_reads_as_ended_and_leaves_its_substream_spare() {
        let setup = setup(one_stream_of("/a/1"));
        let mut held = setup
            .rm
            .open_stream(PeerId::random(), Direction::Outbound)
            .expect("room");
        held.set_protocol("/a/1").expect("the one stream of /a/1");

        let mut stream = setup.substream(Direction::Outbound, b"ignored");
        let mut negotiation = frame(HEADER);
        negotiation.extend(frame(b"/a/1\n"));
        block_on(stream.write_all(&negotiation)).expect("taken and dropped");
        block_on(stream.flush()).expect("nothing to flush");
        let mut read = Vec::new();
        assert_eq!(block_on(stream.read_to_end(&mut read)).expect("the end"), 0);
        assert!(setup.written().is_empty());
        assert!(!stream.is_open());
        assert!(
            setup.conn.take_spare().is_some(),
            "the unused substream is kept"
        );
        assert!(setup.rm.peer(&setup.conn.peer).stat().is_empty());
    }

    #[test]
    fn a_confirmation_of_another_protocol_is_a_violation() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut replies = frame(HEADER);
        replies.extend(frame(b"/evil/1\n"));
        let mut stream = setup.substream(Direction::Outbound, &replies);
        let mut negotiation = frame(HEADER);
        negotiation.extend(frame(b"/a/1\n"));
        block_on(stream.write_all(&negotiation)).expect("taken");
        let mut buf = [0u8; 64];
        let error = block_on(stream.read(&mut buf)).expect_err("a violation");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("/evil/1"), "{error}");
        assert!(!stream.is_open());
        assert!(!setup.rm.list_protocols().contains(&"/evil/1".to_owned()));
        assert!(setup.rm.system().stat().streams_outbound == 0);
    }

    #[test]
    fn a_rejected_proposal_followed_by_another_moves_to_a_new_scope() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut replies = frame(HEADER);
        replies.extend(frame(b"na\n"));
        let mut stream = setup.substream(Direction::Outbound, &replies);
        let mut negotiation = frame(HEADER);
        negotiation.extend(frame(b"/a/2\n"));
        block_on(stream.write_all(&negotiation)).expect("taken");
        let mut buf = vec![0u8; replies.len()];
        block_on(stream.read_exact(&mut buf)).expect("the rejection");
        assert_eq!(setup.rm.protocol("/a/2").stat().streams_outbound, 1);
        block_on(stream.write_all(&frame(b"/a/1\n"))).expect("taken");
        assert_eq!(stream.protocol().as_deref(), Some("/a/1"));
        assert_eq!(setup.rm.protocol("/a/2").stat().streams_outbound, 0);
        assert_eq!(setup.rm.protocol("/a/1").stat().streams_outbound, 1);
        assert_eq!(setup.rm.system().stat().streams_outbound, 1);
    }

    #[test]
    fn a_listener_confirms_only_what_rcmgr_admits_and_says_na_otherwise() {
        let setup = setup(one_stream_of("/a/1"));
        let mut held = setup
            .rm
            .open_stream(PeerId::random(), Direction::Inbound)
            .expect("room");
        held.set_protocol("/a/1").expect("the one stream of /a/1");

        let mut stream = setup.substream(Direction::Inbound, &[]);
        block_on(stream.write_all(&frame(HEADER))).expect("the header goes");
        let error = block_on(stream.write_all(&frame(b"/a/1\n"))).expect_err("refused");
        assert!(crate::refusal_of(&error).is_some(), "{error}");
        let mut expected = frame(HEADER);
        expected.extend(frame(b"na\n"));
        assert_eq!(setup.written(), expected, "na instead of the confirmation");
        assert!(!stream.is_open());
        assert_eq!(setup.rm.system().stat().streams_inbound, 1);
    }

    #[test]
    fn a_confirmation_in_pieces_attaches_once() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut stream = setup.substream(Direction::Inbound, &[]);
        let mut confirmation = frame(HEADER);
        confirmation.extend(frame(b"/a/1\n"));
        for byte in &confirmation {
            block_on(stream.write_all(std::slice::from_ref(byte))).expect("written");
        }
        assert_eq!(setup.written(), confirmation);
        assert_eq!(setup.rm.protocol("/a/1").stat().streams_inbound, 1);
    }

    #[test]
    fn a_dialer_that_never_proposes_is_not_held_back_for_ever() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut stream = setup.substream(Direction::Outbound, &[]);
        let headers: Vec<u8> = std::iter::repeat_n(frame(HEADER), 1000).flatten().collect();
        block_on(stream.write_all(&headers)).expect("taken");
        assert!(!setup.written().is_empty());
        assert!(setup.written().len() + MAX_HELD >= headers.len());
    }

    #[test]
    fn a_closed_connection_ends_its_streams_whoever_holds_them() {
        let setup = setup(ConcreteLimitConfig::infinite());
        let mut stream = setup.substream(Direction::Inbound, b"data");
        let handle = crate::stream_scope(&mut stream).expect("an accounted stream");
        let guard = handle
            .reserve_memory_guard(1000, rcmgr::Priority::HIGH)
            .expect("room");
        setup.conn.close();
        assert!(setup.rm.system().stat().is_empty(), "released at once");
        assert!(handle.is_closed());
        let mut buf = [0u8; 4];
        let error = block_on(stream.read(&mut buf)).expect_err("ended");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        let error = block_on(stream.write(b"x")).expect_err("ended");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        drop(guard);
        assert!(
            setup.rm.system().stat().is_empty(),
            "nothing released twice"
        );
        assert!(
            handle
                .reserve_memory_guard(1, rcmgr::Priority::HIGH)
                .is_err()
        );
        assert!(
            setup
                .conn
                .open(Direction::Inbound)
                .expect("no refusal")
                .is_none()
        );
    }
}

//! What a connection's muxer shares with its substreams: the scope of every live stream, so
//! that closing the connection ends them all at once, whoever holds the streams.
//!
//! # Synchronization
//!
//! Two mutexes, never held together by this crate's code and never held across a call that
//! could block: the connection's table of live streams (`None` once the connection has
//! closed, so that nothing registers after the close), and each stream's [`Held`] (its scope,
//! its window reservation, its protocol). A stream's `closed` flag is stored (Release) after
//! its scope was ended, and read (Acquire) by the substream before each read and write after
//! it registered its waker, so a substream either sees the flag or is woken by the close.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::task::AtomicWaker;
use rcmgr::{Direction, MemoryGuard, PeerId, ResourceManager, ResourceScope, StreamScope};

use crate::{buffers::Buffers, services::attach_protocol};

/// Locks `mutex`, also after a panic elsewhere (what it guards stays consistent: every
/// change under these locks is a single assignment or map operation).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection, as its muxer and substreams see it.
pub(crate) struct Connection<S> {
    pub(crate) peer: PeerId,
    pub(crate) rm: ResourceManager,
    pub(crate) buffers: Buffers,
    /// Every live stream by id; `None` once the connection has closed.
    streams: Mutex<Option<HashMap<u64, Arc<Slot>>>>,
    next_id: AtomicU64,
    /// An outbound substream the muxer opened and that nothing was ever written to (its
    /// stream was refused before its negotiation went out), for the next outbound stream.
    spare: Mutex<Option<S>>,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("streams", &lock(&self.streams).as_ref().map(HashMap::len))
            .finish_non_exhaustive()
    }
}

impl<S> Connection<S> {
    pub(crate) fn new(peer: PeerId, rm: ResourceManager, buffers: Buffers) -> Self {
        Connection {
            peer,
            rm,
            buffers,
            streams: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(0),
            spare: Mutex::new(None),
        }
    }

    /// Opens a stream scope for a new stream in `direction` (go's `OpenStream`) and reserves
    /// its receive window on it. `Ok(None)` if the connection has closed.
    pub(crate) fn open(&self, direction: Direction) -> Result<Option<Arc<Slot>>, rcmgr::Error> {
        let held = Held::open(self, direction)?;
        // Ordering: Relaxed — the id only names the stream; nothing is published through it.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            peer: self.peer,
            direction,
            held: Mutex::new(held),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        let mut streams = lock(&self.streams);
        let Some(streams) = streams.as_mut() else {
            // Closed meanwhile: the scope is released as the slot drops.
            return Ok(None);
        };
        streams.insert(id, Arc::clone(&slot));
        Ok(Some(slot))
    }

    /// Forgets a stream that has ended (its slot is closed by its owner).
    pub(crate) fn forget(&self, slot: &Slot) {
        if let Some(streams) = lock(&self.streams).as_mut() {
            streams.remove(&slot.id);
        }
    }

    /// Ends every stream of the connection: their scopes are released at once and their
    /// substreams fail from now on. Nothing registers after this. Calling it again does
    /// nothing.
    pub(crate) fn close(&self) {
        let streams = lock(&self.streams).take();
        drop(lock(&self.spare).take());
        for slot in streams.into_iter().flat_map(HashMap::into_values) {
            slot.close();
        }
    }

    /// Whether the connection has closed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.streams).is_none()
    }

    /// Keeps `substream`, never written to, for the next outbound stream (one at most; a
    /// second is dropped, which resets it).
    pub(crate) fn keep_spare(&self, substream: S) {
        if self.is_closed() {
            return;
        }
        let mut spare = lock(&self.spare);
        if spare.is_none() {
            *spare = Some(substream);
        }
    }

    /// The spare outbound substream, if there is one.
    pub(crate) fn take_spare(&self) -> Option<S> {
        lock(&self.spare).take()
    }
}

/// One live stream's accounting, shared by its substream and the application's
/// [`StreamHandle`](crate::StreamHandle)s.
pub(crate) struct Slot {
    id: u64,
    pub(crate) peer: PeerId,
    pub(crate) direction: Direction,
    pub(crate) held: Mutex<Held>,
    closed: AtomicBool,
    /// The tasks last blocked reading and writing the stream: woken when it closes.
    pub(crate) reader: AtomicWaker,
    pub(crate) writer: AtomicWaker,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("peer", &self.peer)
            .field("direction", &self.direction)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Whether the stream has ended, by its own close or its connection's.
    pub(crate) fn is_closed(&self) -> bool {
        // Ordering: Acquire — pairs with the Release store in `close`: a substream that sees
        // the flag sees the scope ended.
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the stream's scope (everything reserved on it is released, by this crate or by
    /// the application) and wakes its readers and writers. Calling it again does nothing.
    pub(crate) fn close(&self) {
        lock(&self.held).end();
        // Ordering: Release — see `is_closed`.
        self.closed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    /// Moves the stream into `protocol` (and its go-libp2p service), once.
    pub(crate) fn attach(&self, protocol: &str) -> Result<(), rcmgr::Error> {
        lock(&self.held).attach(protocol)
    }

    /// The protocol the stream is attached to.
    pub(crate) fn protocol(&self) -> Option<String> {
        lock(&self.held).protocol.clone()
    }
}

/// A stream's scope with what this crate reserved on it.
pub(crate) struct Held {
    /// The stream's receive window; released before the scope.
    window: Option<MemoryGuard>,
    pub(crate) scope: StreamScope,
    protocol: Option<String>,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("scope", &self.scope)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Held {
    fn open<S>(conn: &Connection<S>, direction: Direction) -> Result<Held, rcmgr::Error> {
        let scope = conn.rm.open_stream(conn.peer, direction)?;
        // On refusal the scope is dropped here, which releases the stream.
        let window =
            scope.reserve_memory_guard(conn.buffers.stream_window(), conn.buffers.priority())?;
        Ok(Held {
            window: Some(window),
            scope,
            protocol: None,
        })
    }

    fn attach(&mut self, protocol: &str) -> Result<(), rcmgr::Error> {
        attach_protocol(&mut self.scope, protocol)?;
        self.protocol = Some(protocol.to_owned());
        Ok(())
    }

    fn end(&mut self) {
        self.window = None;
        self.scope.done();
    }

    /// Ends this stream's scope and gives the stream a new one in `protocol`, as a stream that
    /// proposes another protocol after its first was rejected. On error the stream is left
    /// with its old scope, ended.
    pub(crate) fn reopen_in<S>(
        &mut self,
        conn: &Connection<S>,
        protocol: &str,
    ) -> Result<(), rcmgr::Error> {
        let direction = self.scope.direction();
        // The old scope goes first, so that the new one is not refused for the stream itself.
        self.end();
        let mut fresh = Held::open(conn, direction)?;
        fresh.attach(protocol)?;
        *self = fresh;
        Ok(())
    }
}

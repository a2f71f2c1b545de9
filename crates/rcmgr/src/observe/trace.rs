//! The trace's hot half: events recorded where counters change, kept in a buffer of the
//! calling thread and handed to the writer thread ([`super::writer`]) through a bounded queue
//! at the end of every public operation.
//!
//! Recording an event costs the scope's name (a protocol's or service's name is an `Arc<str>`
//! clone; a span's name is built), the deltas, and the scope's totals after the change (which
//! for a sharded scope sums its pools). Nothing is formatted here.
//!
//! # Where events wait
//!
//! In the calling thread's buffer until the public operation that recorded them returns (an
//! [`Operation`] guard flushes it), or until it holds [`BATCH`] events; then in the queue
//! until the writer takes them. So no event lingers in a thread that stops calling the
//! manager. A batch that finds the queue full is dropped and counted
//! ([`Tracer::dropped`]): a reservation never waits for the trace.
//!
//! # Shedding load
//!
//! Once a batch finds the queue full, the tracer is *congested*: events are then counted as
//! dropped without being recorded, until the writer has emptied the queue. Recording an event
//! costs more than the counter change it describes, and while the writer is behind every
//! recorded batch would be thrown away anyway; skipping them leaves the reservation path
//! nearly as fast as without a trace, and the writer catches up sooner. The trace keeps whole
//! operations (the flag changes between them almost always) and the count stays exact: written
//! plus dropped is every event.
//!
//! # Synchronization
//!
//! The queue (`std::sync::mpsc::sync_channel`) orders each batch after the events in it. The
//! drop counter, the congestion flag and the coarse clock are statistics: Relaxed (a stale
//! flag records a batch that is dropped, or skips one the queue had room for; both are
//! counted).

use std::{
    cell::{Cell, RefCell},
    sync::{
        Arc as StdArc,
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
};

use super::{
    Change,
    event::{TraceEvent, TraceEventType},
};
use crate::{
    limits::BaseLimit,
    sync::{AtomicBool, AtomicU64, Ordering},
    types::{Resource, ScopeName, ScopeStat},
};

/// Receives every trace event, on the trace's writer thread, in the order they were written
/// (go's `TraceReporter`). Install one with
/// [`ResourceManagerBuilder::trace_reporter`](crate::ResourceManagerBuilder::trace_reporter).
///
/// It runs off the reservation path: a slow reporter delays the trace file and, once the
/// queue is full, makes the manager drop events (see
/// [`ResourceManager::trace_dropped`](crate::ResourceManager::trace_dropped)), but never slows
/// a reservation.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager, TraceEvent, TraceEventType, TraceReporter};
///
/// #[derive(Debug, Default)]
/// struct Kinds(Mutex<Vec<TraceEventType>>);
///
/// impl TraceReporter for Kinds {
///     fn consume(&self, event: &TraceEvent) {
///         self.0.lock().unwrap().push(event.kind);
///     }
/// }
///
/// let kinds = Arc::new(Kinds::default());
/// let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
///     .trace_reporter(kinds.clone())
///     .build()?;
/// drop(rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?);
/// rm.flush_trace();
/// let kinds = kinds.0.lock().unwrap();
/// assert_eq!(kinds[0], TraceEventType::Start);
/// assert!(kinds.contains(&TraceEventType::AddStream));
/// assert_eq!(kinds.last(), Some(&TraceEventType::DestroyScope));
/// # Ok::<(), rcmgr::Error>(())
/// ```
pub trait TraceReporter: Send + Sync + 'static {
    /// Called once for every event.
    fn consume(&self, event: &TraceEvent);
}

/// Events a thread collects before it hands them on even within one operation.
pub(crate) const BATCH: usize = 64;

/// What an event carries besides its type and scope.
#[derive(Clone, Debug)]
pub(crate) enum Detail {
    Counts {
        priority: u8,
        delta: i64,
        delta_in: i64,
        delta_out: i64,
        totals: ScopeStat,
    },
    Limit(BaseLimit),
    Nothing,
}

/// An event as recorded on the reservation path.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) kind: TraceEventType,
    pub(crate) scope: ScopeName,
    pub(crate) detail: Detail,
}

/// Events recorded together, with the coarse time at which they were handed on, and the
/// events dropped since the batch before it got through.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) stamp_ns: u64,
    pub(crate) records: Vec<Record>,
    /// Events dropped before this batch (and after the one before it that got through).
    pub(crate) dropped_before: u64,
    /// The trace clock when the first of them was dropped (0 when none were).
    pub(crate) first_drop_ns: u64,
}

/// What the writer thread is told.
#[derive(Debug)]
pub(crate) enum Message {
    Batch(Batch),
    /// Write and flush everything received so far, then answer.
    Flush(SyncSender<()>),
    /// Write everything received so far, close the output and stop.
    Stop,
}

/// The events the calling thread recorded and has not handed on yet, and the tracer they
/// belong to.
struct Pending {
    owner: usize,
    records: Vec<Record>,
}

thread_local! {
    static PENDING: RefCell<Pending> = const {
        RefCell::new(Pending { owner: 0, records: Vec::new() })
    };
    /// The tracer (by [`Tracer::id`]) whose events the calling thread skipped while it was
    /// congested, and how many it has not counted yet. Apart from `PENDING` so that skipping,
    /// the path taken while the writer is behind, is a plain read and write.
    static SKIPPED: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

/// A manager's end of the trace: the queue to its writer thread, the events dropped, and the
/// clock the writer keeps.
#[derive(Debug)]
pub(crate) struct Tracer {
    queue: SyncSender<Message>,
    /// Events dropped so far.
    dropped: AtomicU64,
    /// Events dropped and not reported in the trace yet: the next batch handed on carries
    /// them, and the writer writes a `dropped_events` record before it (or at a flush or the
    /// stop, for what no batch carried). Shared with the writer.
    unreported: StdArc<AtomicU64>,
    /// The trace clock when the first of [`unreported`](Self::unreported) was dropped (0:
    /// none): the record's time, where the gap begins. Shared with the writer.
    first_drop: StdArc<AtomicU64>,
    /// Set when a batch finds the queue full, cleared by the writer when it has emptied the
    /// queue (see the module docs). Shared with the writer.
    congested: StdArc<AtomicBool>,
    /// Nanoseconds since the Unix epoch, refreshed by the writer thread (see
    /// [`super::writer`]).
    clock: StdArc<AtomicU64>,
}

impl Tracer {
    pub(crate) fn new(
        queue: SyncSender<Message>,
        clock: StdArc<AtomicU64>,
        congested: StdArc<AtomicBool>,
        unreported: StdArc<AtomicU64>,
        first_drop: StdArc<AtomicU64>,
    ) -> Self {
        Tracer {
            queue,
            dropped: AtomicU64::new(0),
            unreported,
            first_drop,
            congested,
            clock,
        }
    }

    /// Whether events are being skipped (see the module docs).
    #[inline]
    fn is_congested(&self) -> bool {
        // Ordering: Relaxed — a hint; see the module docs.
        self.congested.load(Ordering::Relaxed)
    }

    /// This tracer's identity in the threads' buffers.
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Events dropped so far because the queue was full (or the writer had stopped).
    pub(crate) fn dropped(&self) -> u64 {
        // Ordering: Relaxed — a statistic.
        self.dropped.load(Ordering::Relaxed)
    }

    fn count_dropped(&self, events: u64) {
        // Ordering: Relaxed — a statistic.
        self.dropped.fetch_add(events, Ordering::Relaxed);
        // Ordering: Relaxed — a count the queue orders: a batch that carries it is sent after
        // the swap that took it, and the writer reads the rest after the flush or stop message.
        self.unreported.fetch_add(events, Ordering::Relaxed);
        // Ordering: Relaxed — a timestamp.
        self.note_first_drop(self.clock.load(Ordering::Relaxed).max(1));
    }

    /// Keeps `at` as the time of the first unreported drop if it is earlier than the one kept.
    fn note_first_drop(&self, at: u64) {
        // Ordering: Relaxed (all) — a timestamp; nothing is read through it.
        let kept = self.first_drop.load(Ordering::Relaxed);
        if kept == 0 || at < kept {
            let _ = self
                .first_drop
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                    (kept == 0 || at < kept).then_some(at)
                });
        }
    }

    /// Records the event `build` makes; while the tracer is congested, counts it as dropped
    /// without building it.
    fn record(&self, build: impl FnOnce() -> Record) {
        if self.is_congested() {
            self.skip(1);
        } else {
            self.push(build());
        }
    }

    /// Appends `record` to the calling thread's buffer, handing the buffer on when it is full.
    /// The caller has checked that the tracer is not congested.
    fn push(&self, record: Record) {
        let me = self.id();
        let kept = PENDING.try_with(|cell| {
            let Ok(mut pending) = cell.try_borrow_mut() else {
                return false;
            };
            if pending.owner != me {
                // Events of another manager are left only by an operation that panicked
                // before its end: they are dropped.
                pending.records.clear();
                pending.owner = me;
            }
            pending.records.push(record);
            if pending.records.len() >= BATCH {
                self.hand_on(&mut pending.records);
            }
            true
        });
        if kept != Ok(true) {
            self.count_dropped(1);
        }
    }

    /// Counts `events` skipped while congested, in the calling thread's tally.
    fn skip(&self, events: u64) {
        let me = self.id();
        let counted = SKIPPED.try_with(|cell| {
            // A tally of another manager is left only by an operation that panicked before
            // its end: it is lost, as its recorded events are.
            let (owner, tally) = cell.get();
            let tally = if owner == me { tally + events } else { events };
            if tally >= BATCH as u64 {
                self.count_dropped(tally);
                cell.set((me, 0));
            } else {
                cell.set((me, tally));
            }
        });
        if counted.is_err() {
            self.count_dropped(events);
        }
    }

    /// Hands the calling thread's events on to the writer and counts those it skipped (the
    /// end of a public operation).
    pub(crate) fn flush_pending(&self) {
        let me = self.id();
        let _ = PENDING.try_with(|cell| {
            if let Ok(mut pending) = cell.try_borrow_mut()
                && pending.owner == me
                && !pending.records.is_empty()
            {
                self.hand_on(&mut pending.records);
            }
        });
        let _ = SKIPPED.try_with(|cell| {
            if let (owner, tally @ 1..) = cell.get()
                && owner == me
            {
                self.count_dropped(tally);
                cell.set((me, 0));
            }
        });
    }

    fn hand_on(&self, records: &mut Vec<Record>) {
        // The drops since the last batch that got through travel with this one. A load first:
        // without drops, the hot path reads the shared words and writes neither.
        // Ordering: Relaxed (all) — see `count_dropped`.
        let (dropped_before, first_drop_ns) = if self.unreported.load(Ordering::Relaxed) == 0 {
            (0, 0)
        } else {
            (
                self.unreported.swap(0, Ordering::Relaxed),
                self.first_drop.swap(0, Ordering::Relaxed),
            )
        };
        let batch = Batch {
            // Ordering: Relaxed — a timestamp; nothing is read through it.
            stamp_ns: self.clock.load(Ordering::Relaxed),
            records: std::mem::replace(records, Vec::with_capacity(BATCH / 4)),
            dropped_before,
            first_drop_ns,
        };
        match self.queue.try_send(Message::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Batch(mut batch)))
            | Err(TrySendError::Disconnected(Message::Batch(mut batch))) => {
                // Ordering: Relaxed — a hint; see the module docs.
                self.congested.store(true, Ordering::Relaxed);
                // What it carried waits for the next batch again.
                if batch.dropped_before > 0 {
                    // Ordering: Relaxed — see `count_dropped`.
                    self.unreported
                        .fetch_add(batch.dropped_before, Ordering::Relaxed);
                }
                if batch.first_drop_ns > 0 {
                    self.note_first_drop(batch.first_drop_ns);
                }
                self.count_dropped(batch.records.len() as u64);
                batch.records.clear();
                *records = batch.records;
            }
            Err(_) => {}
        }
    }

    /// Hands on this thread's events and waits until the writer has written and flushed
    /// everything it was sent before.
    pub(crate) fn flush(&self) {
        self.flush_pending();
        let (answer, answered) = sync_channel(1);
        if self.queue.send(Message::Flush(answer)).is_ok() {
            let _ = answered.recv();
        }
    }

    /// Hands on this thread's events and tells the writer to finish.
    pub(crate) fn stop(&self) {
        self.flush_pending();
        let _ = self.queue.send(Message::Stop);
    }

    /// Records the creation of a scope, with its limit.
    pub(crate) fn created(&self, scope: impl FnOnce() -> (ScopeName, BaseLimit)) {
        self.record(|| {
            let (scope, limit) = scope();
            Record {
                kind: TraceEventType::CreateScope,
                scope,
                detail: Detail::Limit(limit),
            }
        });
    }

    /// Records the end of a scope (closed or collected).
    pub(crate) fn destroyed(&self, scope: impl FnOnce() -> ScopeName) {
        self.record(|| Record {
            kind: TraceEventType::DestroyScope,
            scope: scope(),
            detail: Detail::Nothing,
        });
    }

    /// Records `change` taken by a scope (`taken`) or given back, one event per kind of
    /// resource it changes (go skips the kinds that do not change), with the scope's totals
    /// after. `scope` gives the scope's name and totals, read only if the event is recorded.
    pub(crate) fn changed(
        &self,
        scope: impl FnOnce() -> (ScopeName, ScopeStat),
        change: Change,
        taken: bool,
    ) {
        if self.is_congested() {
            self.skip(change.kinds());
            return;
        }
        let (name, totals) = scope();
        self.record_change(name, totals, change, taken);
    }

    #[inline(never)]
    fn record_change(&self, name: ScopeName, totals: ScopeStat, change: Change, taken: bool) {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let sign = if taken { 1 } else { -1 };
        let (streams_in, streams_out) = (signed(change.streams.0), signed(change.streams.1));
        let (conns_in, conns_out, fd) = (
            signed(change.conns.0),
            signed(change.conns.1),
            signed(change.conns.2),
        );
        let event = |kind, priority, delta, delta_in, delta_out| {
            self.push(Record {
                kind,
                scope: name.clone(),
                detail: Detail::Counts {
                    priority,
                    delta,
                    delta_in,
                    delta_out,
                    totals,
                },
            });
        };
        if change.memory != 0 {
            let (kind, priority) = if taken {
                (TraceEventType::ReserveMemory, change.priority.0)
            } else {
                (TraceEventType::ReleaseMemory, 0)
            };
            event(kind, priority, sign * signed(change.memory), 0, 0);
        }
        if streams_in | streams_out != 0 {
            let kind = if taken {
                TraceEventType::AddStream
            } else {
                TraceEventType::RemoveStream
            };
            event(kind, 0, 0, sign * streams_in, sign * streams_out);
        }
        if conns_in | conns_out | fd != 0 {
            let kind = if taken {
                TraceEventType::AddConn
            } else {
                TraceEventType::RemoveConn
            };
            event(kind, 0, sign * fd, sign * conns_in, sign * conns_out);
        }
    }

    /// Records a refusal of `resource` by a scope's limit: one `block_*` event for that kind
    /// of resource, with what was asked of it and what the scope held.
    pub(crate) fn blocked(
        &self,
        scope: impl FnOnce() -> (ScopeName, ScopeStat),
        change: Change,
        resource: Resource,
    ) {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (kind, priority, delta, delta_in, delta_out) = match resource {
            Resource::Memory { priority } => (
                TraceEventType::BlockReserveMemory,
                priority.0,
                signed(change.memory),
                0,
                0,
            ),
            Resource::StreamsInbound | Resource::StreamsOutbound | Resource::Streams => (
                TraceEventType::BlockAddStream,
                0,
                0,
                signed(change.streams.0),
                signed(change.streams.1),
            ),
            _ => (
                TraceEventType::BlockAddConn,
                0,
                signed(change.conns.2),
                signed(change.conns.0),
                signed(change.conns.1),
            ),
        };
        self.record(|| {
            let (scope, totals) = scope();
            Record {
                kind,
                scope,
                detail: Detail::Counts {
                    priority,
                    delta,
                    delta_in,
                    delta_out,
                    totals,
                },
            }
        });
    }
}

/// Hands the calling thread's events on when a public operation ends (also by an early
/// return or a panic).
#[derive(Debug)]
pub(crate) struct Operation<'a>(Option<&'a Tracer>);

impl<'a> Operation<'a> {
    pub(crate) fn new(tracer: Option<&'a Tracer>) -> Self {
        Operation(tracer)
    }
}

impl Drop for Operation<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(tracer) = self.0 {
            tracer.flush_pending();
        }
    }
}

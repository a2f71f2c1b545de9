//! The trace's writer thread: it turns recorded events into [`TraceEvent`]s, writes them as
//! JSON lines (gzip-compressed if asked), hands them to the [`TraceReporter`]s, and keeps the
//! coarse clock the recording threads stamp their batches with.
//!
//! # The clock
//!
//! Reading the time on every operation would cost more than recording its events, so the
//! writer keeps the time in an atomic: it stores the wall-clock time each time it wakes, which
//! is at least every [`TICK`] while events flow. A batch is stamped with that value when it is
//! handed on, so its events are at most about a tick early. When the writer has been idle (a
//! tick without events), a batch stamped before it went idle was in fact handed on during the
//! wait, and gets the time at which it arrived instead. The stamp is therefore within about a
//! millisecond of the operation, coarser only while the writer itself is stalled (a blocked
//! output).
//!
//! # Congestion
//!
//! Each time the writer finds the queue empty, and on every flush, it clears the tracer's
//! congestion flag, so the recording threads, which skip events while a full queue has set it,
//! record again (see [`super::trace`]).
//!
//! # What the file says first, and what it says about drops
//!
//! The writer begins with the trace's preamble: the `start` event with the limits, then a
//! `create_scope` for each fixed scope (system, transient, allowlistedSystem,
//! allowlistedTransient) with its limit, as go's trace begins (go creates those scopes right
//! after it starts its trace).
//!
//! Events dropped since the last batch that got through travel with the next batch handed on
//! (see [`super::trace`]), so the writer writes a `dropped_events` record with their number
//! just before that batch's events: in the file's order, where they were lost. What no batch
//! carried is recorded before a flush completes and when the trace stops. The record's time
//! is when the first of them was dropped (the trace clock when it was counted; never before
//! the line above it nor after the batch below it): the gap runs from the record to the next
//! event. So the file itself says how many events are missing and where: its `Dropped`
//! numbers add up to [`ResourceManager::trace_dropped`](crate::ResourceManager::trace_dropped)
//! as it was at the last flush or the stop (exactly, when no operation runs beside them: the
//! count not carried is read after the message, which every operation that returned before it
//! was sent happens before).
//!
//! # Output
//!
//! Lines are buffered and flushed at least every [`FLUSH_EVERY`], on [`Message::Flush`], and
//! when the trace stops (then a gzip stream is finished too). A write error stops the output
//! (logged once as a warning) but not the reporters.

use std::{
    io::{self, BufWriter, Write},
    sync::{
        Arc as StdArc,
        mpsc::{Receiver, RecvTimeoutError, TryRecvError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flate2::{Compression, write::GzEncoder};

use super::{
    event::{TraceEvent, TraceEventType, TraceLimit},
    trace::{Batch, Detail, Message, Record, TraceReporter},
};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// How long the writer waits for events before it counts as idle; the clock's resolution
/// while events flow.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// How often written lines are flushed to the output at least.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where trace lines go.
pub(crate) enum Output {
    Plain(BufWriter<Box<dyn Write + Send>>),
    Gzip(GzEncoder<BufWriter<Box<dyn Write + Send>>>),
}

impl Output {
    pub(crate) fn plain(writer: Box<dyn Write + Send>) -> Self {
        Output::Plain(BufWriter::new(writer))
    }

    pub(crate) fn gzip(writer: Box<dyn Write + Send>) -> Self {
        Output::Gzip(GzEncoder::new(BufWriter::new(writer), Compression::fast()))
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Plain(out) => out,
            Output::Gzip(out) => out,
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Output::Plain(mut out) => out.flush(),
            Output::Gzip(out) => out.finish()?.flush(),
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Output::Plain(_) => "Output::Plain",
            Output::Gzip(_) => "Output::Gzip",
        })
    }
}

/// The current wall-clock time in nanoseconds since the Unix epoch.
pub(crate) fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

fn time_of(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The writer thread's state.
struct Writer {
    output: Option<Output>,
    reporters: Vec<StdArc<dyn TraceReporter>>,
    line: Vec<u8>,
    /// The tracer's count of drops no batch has carried yet, and the time of the first.
    unreported: StdArc<AtomicU64>,
    first_drop: StdArc<AtomicU64>,
    /// The time of the last line written, in nanoseconds since the Unix epoch.
    written_ns: u64,
}

impl Writer {
    fn emit(&mut self, event: &TraceEvent) {
        for reporter in &self.reporters {
            reporter.consume(event);
        }
        let Some(output) = &mut self.output else {
            return;
        };
        self.line.clear();
        let written = serde_json::to_writer(&mut self.line, event)
            .map_err(io::Error::from)
            .and_then(|()| {
                self.line.push(b'\n');
                output.writer().write_all(&self.line)
            });
        if let Err(err) = written {
            self.fail(&err);
        }
    }

    fn fail(&mut self, err: &io::Error) {
        tracing::warn!(error = %err, "rcmgr trace: cannot write the trace; it stops here");
        self.output = None;
    }

    fn flush(&mut self) {
        if let Some(output) = &mut self.output
            && let Err(err) = output.writer().flush()
        {
            self.fail(&err);
        }
    }

    /// Writes a `dropped_events` event for `dropped` events, the first dropped at
    /// `first_drop_ns` (0: unknown), placed between the last line written and `until_ns` (the
    /// time of what follows).
    fn report_dropped(&mut self, dropped: u64, first_drop_ns: u64, until_ns: u64) {
        if dropped == 0 {
            return;
        }
        let at = if first_drop_ns == 0 {
            until_ns
        } else {
            first_drop_ns
        };
        let at = at.min(until_ns).max(self.written_ns);
        self.written_ns = at;
        self.emit(&TraceEvent::dropped_events(time_of(at), dropped));
    }

    /// Writes a record for the drops no batch carried (at a flush or the stop).
    fn report_unreported(&mut self, until_ns: u64) {
        // Ordering: Relaxed (both) — the message this follows orders the count (module
        // docs); the time is a timestamp.
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        let first_drop_ns = self.first_drop.swap(0, Ordering::Relaxed);
        self.report_dropped(dropped, first_drop_ns, until_ns);
    }

    fn write(&mut self, batch: Batch, stamp_ns: u64) {
        self.report_dropped(batch.dropped_before, batch.first_drop_ns, stamp_ns);
        self.written_ns = self.written_ns.max(stamp_ns);
        let time = time_of(stamp_ns);
        for record in batch.records {
            let event = self.event(record, time);
            self.emit(&event);
        }
    }

    fn event(&mut self, record: Record, time: SystemTime) -> TraceEvent {
        let mut event = TraceEvent::new(time, record.kind);
        event.scope = Some(record.scope);
        match record.detail {
            Detail::Counts {
                priority,
                delta,
                delta_in,
                delta_out,
                totals,
            } => {
                event.priority = priority;
                event.delta = delta;
                event.delta_in = delta_in;
                event.delta_out = delta_out;
                match record.kind {
                    TraceEventType::ReserveMemory
                    | TraceEventType::ReleaseMemory
                    | TraceEventType::BlockReserveMemory => {
                        event.memory = i64::try_from(totals.memory).unwrap_or(i64::MAX);
                    }
                    TraceEventType::AddStream
                    | TraceEventType::RemoveStream
                    | TraceEventType::BlockAddStream => {
                        event.streams_in = totals.streams_inbound.into();
                        event.streams_out = totals.streams_outbound.into();
                    }
                    _ => {
                        event.conns_in = totals.conns_inbound.into();
                        event.conns_out = totals.conns_outbound.into();
                        event.fd = totals.fd.into();
                    }
                }
            }
            Detail::Limit(limit) => event.limit = Some(TraceLimit::Scope(limit)),
            Detail::Nothing => {}
        }
        event
    }

    fn finish(mut self) {
        if let Some(output) = self.output.take()
            && let Err(err) = output.finish()
        {
            self.fail(&err);
        }
    }
}

/// What the writer thread is started with.
pub(crate) struct WriterSetup {
    pub(crate) output: Option<Output>,
    pub(crate) reporters: Vec<StdArc<dyn TraceReporter>>,
    pub(crate) queue: Receiver<Message>,
    pub(crate) clock: StdArc<AtomicU64>,
    /// The tracer's congestion flag, cleared here whenever the queue is empty.
    pub(crate) congested: StdArc<AtomicBool>,
    /// The tracer's count of drops no batch has carried yet (see the module docs).
    pub(crate) unreported: StdArc<AtomicU64>,
    /// The tracer's time of the first of them.
    pub(crate) first_drop: StdArc<AtomicU64>,
    /// The first events: `start` with the limits in force, then the fixed scopes'
    /// `create_scope`s.
    pub(crate) preamble: Vec<TraceEvent>,
}

/// Starts the writer thread of a manager.
pub(crate) fn spawn(setup: WriterSetup) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rcmgr-trace".into())
        .spawn(move || run(setup))
}

fn run(setup: WriterSetup) {
    let WriterSetup {
        output,
        reporters,
        queue,
        clock,
        congested,
        unreported,
        first_drop,
        preamble,
    } = setup;
    let mut writer = Writer {
        output,
        reporters,
        line: Vec::with_capacity(256),
        unreported,
        first_drop,
        written_ns: 0,
    };
    for event in &preamble {
        writer.emit(event);
    }
    // Whether the writer is idle, and the clock value stored when it last went idle: a batch
    // stamped with it or earlier was handed on during that wait.
    let (mut idle, mut idle_mark) = (false, 0);
    // The time given to the last batch: times never go backwards in the output.
    let mut last_ns = 0;
    let mut last_flush = Instant::now();
    loop {
        let wait = if idle {
            FLUSH_EVERY.saturating_sub(last_flush.elapsed()).max(TICK)
        } else {
            TICK
        };
        let message = match queue.try_recv() {
            Ok(message) => Ok(message),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {
                // The queue is empty: the recording threads may record again.
                // Ordering: Relaxed — a hint; see `trace`'s module docs.
                if congested.load(Ordering::Relaxed) {
                    congested.store(false, Ordering::Relaxed);
                }
                queue.recv_timeout(wait)
            }
        };
        let now_ns = wall_clock_ns();
        // Ordering: Relaxed — a timestamp; nothing is read through it.
        clock.store(now_ns, Ordering::Relaxed);
        match message {
            Ok(Message::Batch(batch)) => {
                idle = false;
                let stamp = if batch.stamp_ns <= idle_mark {
                    now_ns
                } else {
                    batch.stamp_ns
                };
                last_ns = stamp.max(last_ns);
                writer.write(batch, last_ns);
            }
            Ok(Message::Flush(answer)) => {
                last_ns = last_ns.max(now_ns);
                writer.report_unreported(last_ns);
                writer.flush();
                last_flush = Instant::now();
                // Everything sent before the flush is written: whoever waits for it records
                // again from here (another thread's batch still queued sets the flag again if
                // the queue fills).
                // Ordering: Relaxed — a hint; see `trace`'s module docs.
                congested.store(false, Ordering::Relaxed);
                let _ = answer.send(());
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if !idle {
                    (idle, idle_mark) = (true, now_ns);
                }
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            writer.flush();
            last_flush = Instant::now();
        }
    }
    // What was sent before the stop is all in the queue now: write it too.
    while let Ok(message) = queue.try_recv() {
        if let Message::Batch(batch) = message {
            last_ns = batch.stamp_ns.max(last_ns);
            writer.write(batch, last_ns);
        }
    }
    // The events dropped since the last batch, the stop's own included.
    writer.report_unreported(last_ns.max(wall_clock_ns()));
    writer.finish();
}

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

    fn write(&mut self, batch: Batch, stamp_ns: u64) {
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
    /// The first event: the limits in force.
    pub(crate) start: TraceEvent,
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
        start,
    } = setup;
    let mut writer = Writer {
        output,
        reporters,
        line: Vec::with_capacity(256),
    };
    writer.emit(&start);
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
    writer.finish();
}

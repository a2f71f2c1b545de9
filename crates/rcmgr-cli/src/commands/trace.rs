//! `rcmgr trace FILE [--plot OUT.svg]`: what a trace says. The trace is read line by line
//! (JSON lines in go's schema, gzip-compressed or not: rcmgr's traces and go-libp2p's alike)
//! into:
//!
//! - the events by type and the time they span;
//! - the refusals (`block_*` events) by scope and resource: the fixed scopes, protocols and
//!   services by name, the other scopes by class (`peer`, `conn`, `stream`, ...);
//! - the peak usage of each top-level scope (system, transient and the allowlisted pair)
//!   against the limits in the trace's `start` event;
//! - the events the trace dropped, from its `dropped_events` records: a partial trace says so
//!   first, and its counts and peaks are lower bounds;
//! - with `--plot`, the top-level scopes' streams, connections, file descriptors and memory
//!   over time, drawn as an SVG: usage as steps (it holds between events), each scope's limit
//!   as a dashed line, refusals as marks along the bottom, and the stretches where events were
//!   dropped as grey bands, across which no usage is drawn.
//!
//! Reading is bounded whatever the file holds: a line longer than [`MAX_LINE`] is skipped
//! without being held (no event is that long), the plotted series and the refusal and gap
//! records keep at most [`MAX_POINTS`] points each (merged at a coarser resolution as the
//! trace goes on), and at most [`MAX_GROUPS`] scopes are counted by name.
//!
//! Exit status: 0 for a complete trace; 1 when the summary comes with warnings (the trace
//! dropped events, lines that are not events or are too long, a file that ends early); 2 when
//! there is nothing to summarize (the file cannot be read, or holds no trace event).

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    time::SystemTime,
};

use plotters::prelude::*;
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ScopeName, ScopeStat, ScopeUsage, TraceEvent, TraceEventType,
    TraceLimit,
};

use crate::{
    cli::TraceArgs,
    error::{CliError, Status},
    units::{ByteSize, Count},
};

/// The longest line read as an event: longer ones are skipped, unread (a `start` event with
/// the limits of thousands of scopes is a few hundred KiB).
pub const MAX_LINE: usize = 4 << 20;

/// The most points a plotted series, the refusal marks of a panel or the gaps keep.
pub const MAX_POINTS: usize = 4096;

/// The most scopes refusals are counted for by name; the rest are counted together.
pub const MAX_GROUPS: usize = 1000;

/// The top-level scopes, in the order they are reported.
const TOP_LEVEL: [ScopeName; 4] = [
    ScopeName::System,
    ScopeName::Transient,
    ScopeName::AllowlistedSystem,
    ScopeName::AllowlistedTransient,
];

/// Runs `rcmgr trace`.
///
/// # Errors
///
/// [`CliError::Trace`] if the file cannot be opened or holds no trace event,
/// [`CliError::Plot`] if the plot cannot be written, and [`CliError::Output`] when `out`
/// cannot be written.
pub fn run(args: &TraceArgs, out: &mut dyn Write) -> Result<Status, CliError> {
    let summary = Summary::read(&args.file)?;
    write!(out, "{}", summary.render(&args.file))?;
    if let Some(plot) = &args.plot {
        summary.plot(plot)?;
        writeln!(out, "\nUsage over time drawn in {}.", plot.display())?;
    }
    Ok(if summary.has_warnings() {
        Status::Warnings
    } else {
        Status::Ok
    })
}

/// One resource of the top-level scopes, as plotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Plotted {
    Streams,
    Connections,
    FileDescriptors,
    Memory,
}

impl Plotted {
    const ALL: [Plotted; 4] = [
        Plotted::Streams,
        Plotted::Connections,
        Plotted::FileDescriptors,
        Plotted::Memory,
    ];

    fn title(self) -> &'static str {
        match self {
            Plotted::Streams => "streams",
            Plotted::Connections => "connections",
            Plotted::FileDescriptors => "file descriptors",
            Plotted::Memory => "memory (MiB)",
        }
    }

    fn of(self, stat: &ScopeStat) -> f64 {
        match self {
            Plotted::Streams => stat.streams() as f64,
            Plotted::Connections => stat.conns() as f64,
            Plotted::FileDescriptors => f64::from(stat.fd),
            Plotted::Memory => stat.memory as f64 / f64::from(1 << 20),
        }
    }

    fn limit(self, limit: &BaseLimit) -> Option<f64> {
        let value = match self {
            Plotted::Streams => limit.streams,
            Plotted::Connections => limit.conns,
            Plotted::FileDescriptors => limit.fd,
            Plotted::Memory => limit.memory,
        };
        (value < BaseLimit::UNLIMITED).then(|| match self {
            Plotted::Memory => value as f64 / f64::from(1 << 20),
            _ => value as f64,
        })
    }
}

/// How a [`Timeline`] merges two points that fall together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    /// The higher value (usage: the peak is what matters).
    Max,
    /// The sum (counts of refusals).
    Sum,
}

/// One point of a [`Timeline`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    /// Seconds since the first event.
    at: f64,
    value: f64,
    /// When events were dropped between the point before and this one: the time the first
    /// gap since then began. The line is not drawn across it.
    gap_before: Option<f64>,
}

/// Points over time, at most [`MAX_POINTS`]: when there would be more, neighbours closer than
/// a resolution that doubles each time are merged.
#[derive(Clone, Debug)]
struct Timeline {
    points: Vec<Point>,
    merge: Merge,
    /// Points closer than this (seconds) are merged.
    resolution: f64,
    /// A gap that began after the last point: the next point comes after it.
    gap_pending: Option<f64>,
}

impl Timeline {
    fn new(merge: Merge) -> Self {
        Timeline {
            points: Vec::new(),
            merge,
            resolution: 1e-3,
            gap_pending: None,
        }
    }

    fn combine(&self, a: Point, b: Point) -> Point {
        Point {
            at: a.at,
            value: match self.merge {
                Merge::Max => a.value.max(b.value),
                Merge::Sum => a.value + b.value,
            },
            // A gap inside a merged point breaks the line before it.
            gap_before: a.gap_before.or(b.gap_before),
        }
    }

    /// Events were dropped from `at` on: the next point comes after a gap.
    fn gap(&mut self, at: f64) {
        self.gap_pending.get_or_insert(at);
    }

    fn push(&mut self, at: f64, value: f64) {
        let point = Point {
            at,
            value,
            gap_before: self.gap_pending.take(),
        };
        match self.points.last().copied() {
            Some(last) if at - last.at < self.resolution => {
                let merged = self.combine(last, point);
                if let Some(slot) = self.points.last_mut() {
                    *slot = merged;
                }
            }
            _ => self.points.push(point),
        }
        if self.points.len() > MAX_POINTS {
            self.coarsen();
        }
    }

    /// Doubles the resolution (at least) and merges the points again.
    fn coarsen(&mut self) {
        let span = match (self.points.first(), self.points.last()) {
            (Some(first), Some(last)) => last.at - first.at,
            _ => 0.0,
        };
        self.resolution = (self.resolution * 2.0).max(2.0 * span / MAX_POINTS as f64);
        let mut kept: Vec<Point> = Vec::with_capacity(MAX_POINTS / 2 + 1);
        for &point in &self.points {
            match kept.last().copied() {
                Some(last) if point.at - last.at < self.resolution => {
                    let merged = self.combine(last, point);
                    if let Some(slot) = kept.last_mut() {
                        *slot = merged;
                    }
                }
                _ => kept.push(point),
            }
        }
        // Equal times cannot merge by resolution: pair them up.
        while kept.len() > MAX_POINTS {
            let paired: Vec<Point> = kept
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => self.combine(*a, *b),
                    [a] => *a,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            kept = paired;
        }
        self.points = kept;
    }

    /// The points as (time, value) pairs.
    fn values(&self) -> Vec<(f64, f64)> {
        self.points.iter().map(|p| (p.at, p.value)).collect()
    }

    /// The line to draw: steps (a value holds until the next event), cut where events were
    /// dropped (each segment holds its last value until the gap begins; after it the value
    /// is unknown until the scope's next event); the last segment holds until `end`.
    fn segments(&self, end: f64) -> Steps {
        let mut all = Vec::new();
        let mut current: Vec<(f64, f64)> = Vec::new();
        for point in &self.points {
            if let Some(&(last_at, last)) = current.last() {
                match point.gap_before {
                    Some(start) => {
                        current.push((start.clamp(last_at, point.at), last));
                        all.push(std::mem::take(&mut current));
                    }
                    None => current.push((point.at, last)),
                }
            }
            current.push((point.at, point.value));
        }
        if let Some(&(last_at, last)) = current.last() {
            let hold_to = self.gap_pending.map_or(end, |start| start.min(end));
            current.push((hold_to.max(last_at), last));
            all.push(current);
        }
        all
    }
}

/// A stretch of the trace where events were dropped: from its record (the time the first was
/// lost) to the next event, in seconds since the first event, and how many were dropped.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Gap {
    start: f64,
    end: f64,
    dropped: u64,
}

/// What a trace says; see the module docs.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines that are trace events (`dropped_events` records included).
    events: u64,
    bad_lines: u64,
    first_bad: Option<(u64, String)>,
    long_lines: u64,
    /// The first line too long to read: its number and (at least) its length.
    first_long: Option<(u64, u64)>,
    /// Where reading stopped early, and why.
    cut_short: Option<(u64, String)>,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
    /// Seconds since the first event of the last event read (kept from going backwards).
    last_at: f64,
    by_type: BTreeMap<TraceEventType, u64>,
    refusals: BTreeMap<(String, String), u64>,
    /// Refusals by scopes past [`MAX_GROUPS`], by resource.
    other_refusals: BTreeMap<String, u64>,
    limits: Option<ConcreteLimitConfig>,
    /// The current totals of each top-level scope seen.
    current: [Option<ScopeStat>; 4],
    /// Each resource of each top-level scope at its highest.
    peaks: [ScopeStat; 4],
    /// Usage over time by (top-level scope, resource).
    series: BTreeMap<(usize, Plotted), Timeline>,
    /// Refusals over time, by the panel their resource is drawn in.
    refused_at: BTreeMap<Plotted, Timeline>,
    /// Events dropped, from the trace's own records.
    dropped: u64,
    gaps: Vec<Gap>,
    /// A gap whose record has been read but not the event that ends it: its start and count.
    open_gap: Option<(f64, u64)>,
}

impl Summary {
    /// Reads the trace at `path`.
    ///
    /// # Errors
    ///
    /// [`CliError::Trace`] if the file cannot be opened, or holds no trace event.
    pub fn read(path: &Path) -> Result<Self, CliError> {
        let failed = |reason: String| CliError::Trace {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|err| failed(err.to_string()))?;
        Summary::from_reader(file).map_err(failed)
    }

    /// Reads a trace from `reader`: gzip-compressed (by its magic bytes) or not. Memory stays
    /// bounded whatever the input (see the module docs).
    ///
    /// # Errors
    ///
    /// Why there is nothing to summarize: the input cannot be read from its start, or holds
    /// no trace event.
    ///
    /// ```
    /// use rcmgr_cli::commands::trace::Summary;
    /// let line = br#"{"Time":"2024-05-01T12:00:00Z","Type":"add_stream","Name":"system","DeltaIn":1,"StreamsIn":1}"#;
    /// let summary = Summary::from_reader(&line[..])?;
    /// assert!(!summary.has_warnings());
    /// assert!(Summary::from_reader(&b"not a trace\n"[..]).unwrap_err().contains("no trace event"));
    /// # Ok::<(), String>(())
    /// ```
    pub fn from_reader(reader: impl Read) -> Result<Self, String> {
        let mut buffered = BufReader::new(reader);
        let head = buffered.fill_buf().map_err(|err| err.to_string())?;
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let mut lines: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(
                buffered,
            )))
        } else {
            Box::new(buffered)
        };
        let mut summary = Summary::default();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            number += 1;
            match read_line(&mut lines, &mut line, MAX_LINE) {
                Ok(Line::End) => break,
                Ok(Line::TooLong(length)) => {
                    summary.long_lines += 1;
                    summary.first_long.get_or_insert((number, length));
                }
                Ok(Line::Read) => summary.line(number, &line),
                Err(err) => {
                    summary.cut_short = Some((number, err.to_string()));
                    break;
                }
            }
        }
        if let Some((start, dropped)) = summary.open_gap.take() {
            summary.gap(start, summary.last_at, dropped);
        }
        if summary.events == 0 {
            let mut why = format!("no trace event in it ({} lines read", Count(number - 1));
            if let Some((line, err)) = &summary.cut_short {
                why.push_str(&format!("; reading stopped at line {line}: {err}"));
            }
            why.push(')');
            return Err(why);
        }
        Ok(summary)
    }

    /// Takes one line: an event, or a line that is not one.
    fn line(&mut self, number: u64, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<TraceEvent>(line) {
            Ok(event) => self.add(&event),
            Err(err) => {
                self.bad_lines += 1;
                self.first_bad.get_or_insert((number, err.to_string()));
            }
        }
    }

    /// Whether the summary comes with warnings: the trace dropped events, or lines were not
    /// events, too long, or the file ended early.
    pub fn has_warnings(&self) -> bool {
        self.dropped > 0 || self.bad_lines > 0 || self.long_lines > 0 || self.cut_short.is_some()
    }

    /// Events the trace says it dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Seconds since the first event, never before the last event read.
    fn at(&mut self, time: SystemTime) -> f64 {
        let first = *self.first.get_or_insert(time);
        let seconds = time
            .duration_since(first)
            .map_or(0.0, |since| since.as_secs_f64());
        self.last = Some(self.last.map_or(time, |last| last.max(time)));
        self.last_at = self.last_at.max(seconds);
        self.last_at
    }

    fn add(&mut self, event: &TraceEvent) {
        self.events += 1;
        *self.by_type.entry(event.kind).or_default() += 1;
        let at = self.at(event.time);
        if event.kind == TraceEventType::DroppedEvents {
            // The gap begins at the record (when the first event was lost) and ends at the
            // next event.
            self.dropped = self.dropped.saturating_add(event.dropped);
            let (_, dropped) = self.open_gap.get_or_insert((at, 0));
            *dropped = dropped.saturating_add(event.dropped);
            for series in self.series.values_mut() {
                series.gap(at);
            }
            return;
        }
        if let Some((start, dropped)) = self.open_gap.take() {
            self.gap(start, at, dropped);
        }
        if let Some(TraceLimit::Config(config)) = &event.limit {
            self.limits = Some(config.build(&ConcreteLimitConfig::infinite()));
        }
        let Some(scope) = &event.scope else {
            return;
        };
        if event.kind.is_block() {
            let (resource, panel) = match event.kind {
                TraceEventType::BlockReserveMemory => ("memory".to_owned(), Plotted::Memory),
                TraceEventType::BlockAddStream => (directed("streams", event), Plotted::Streams),
                _ => (directed("connections", event), Plotted::Connections),
            };
            let group = group_of(scope);
            let key = (group, resource);
            if self.refusals.contains_key(&key) || self.refusals.len() < MAX_GROUPS {
                *self.refusals.entry(key).or_default() += 1;
            } else {
                *self.other_refusals.entry(key.1).or_default() += 1;
            }
            self.refused_at
                .entry(panel)
                .or_insert_with(|| Timeline::new(Merge::Sum))
                .push(at, 1.0);
            return;
        }
        let Some(top) = TOP_LEVEL.iter().position(|name| name == scope) else {
            return;
        };
        let usage = matches!(
            event.kind,
            TraceEventType::ReserveMemory
                | TraceEventType::ReleaseMemory
                | TraceEventType::AddStream
                | TraceEventType::RemoveStream
                | TraceEventType::AddConn
                | TraceEventType::RemoveConn
        );
        if !usage {
            return;
        }
        let totals = event.totals();
        let stat = self.current[top].get_or_insert_with(ScopeStat::default);
        match event.kind {
            TraceEventType::ReserveMemory | TraceEventType::ReleaseMemory => {
                stat.memory = totals.memory;
            }
            TraceEventType::AddStream | TraceEventType::RemoveStream => {
                stat.streams_inbound = totals.streams_inbound;
                stat.streams_outbound = totals.streams_outbound;
            }
            TraceEventType::AddConn | TraceEventType::RemoveConn => {
                stat.conns_inbound = totals.conns_inbound;
                stat.conns_outbound = totals.conns_outbound;
                stat.fd = totals.fd;
            }
            _ => return,
        }
        let stat = *stat;
        self.peaks[top] = highest(&self.peaks[top], &stat);
        // Only what the event tells: after a gap, the other resources are unknown until an
        // event of theirs.
        let changed: &[Plotted] = match event.kind {
            TraceEventType::ReserveMemory | TraceEventType::ReleaseMemory => &[Plotted::Memory],
            TraceEventType::AddStream | TraceEventType::RemoveStream => &[Plotted::Streams],
            _ => &[Plotted::Connections, Plotted::FileDescriptors],
        };
        for &plotted in changed {
            self.series
                .entry((top, plotted))
                .or_insert_with(|| Timeline::new(Merge::Max))
                .push(at, plotted.of(&stat));
        }
    }

    /// Records a stretch where `dropped` events were lost.
    fn gap(&mut self, start: f64, end: f64, dropped: u64) {
        match self.gaps.last_mut() {
            // Overlapping gaps are one (records with no event between them are one already).
            Some(last) if start < last.end => {
                last.end = last.end.max(end);
                last.dropped = last.dropped.saturating_add(dropped);
            }
            _ => self.gaps.push(Gap {
                start,
                end,
                dropped,
            }),
        }
        if self.gaps.len() > MAX_POINTS {
            // Merge neighbours: the bands get wider, the count stays exact.
            self.gaps = self
                .gaps
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => Gap {
                        start: a.start,
                        end: b.end,
                        dropped: a.dropped.saturating_add(b.dropped),
                    },
                    [a] => *a,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
        }
    }

    /// The summary as text.
    pub fn render(&self, path: &Path) -> String {
        let mut text = format!("Trace {}: {} events", path.display(), Count(self.events));
        if let (Some(first), Some(last)) = (self.first, self.last) {
            let span = last.duration_since(first).unwrap_or_default();
            text.push_str(&format!(" over {:.3} s", span.as_secs_f64()));
        }
        text.push_str(".\n");
        let partial = self.dropped > 0;
        if partial {
            let longest = self
                .gaps
                .iter()
                .max_by_key(|gap| gap.dropped)
                .copied()
                .unwrap_or(Gap {
                    start: 0.0,
                    end: 0.0,
                    dropped: 0,
                });
            let when = if longest.end - longest.start < 5e-4 {
                format!("at {:.3} s", longest.start)
            } else {
                format!("between {:.3} s and {:.3} s", longest.start, longest.end)
            };
            text.push_str(&format!(
                "\nWarning: the trace is partial: it dropped {} events because it could not keep \
                 up (its dropped_events records say so), in {} gap{}, the largest {} events \
                 {when}. Counts, refusals and peaks below are at least what they say.\n",
                Count(self.dropped),
                Count(self.gaps.len() as u64),
                if self.gaps.len() == 1 { "" } else { "s" },
                Count(longest.dropped),
            ));
        }
        text.push_str("\nEvents by type\n");
        for (kind, count) in &self.by_type {
            let note = if *kind == TraceEventType::DroppedEvents {
                "  (records of dropped events)"
            } else {
                ""
            };
            text.push_str(&format!(
                "  {:<22} {:>12}{note}\n",
                kind.as_str(),
                Count(*count)
            ));
        }
        text.push_str("\nRefusals by scope and resource");
        if partial {
            text.push_str(" (at least)");
        }
        text.push('\n');
        if self.refusals.is_empty() {
            text.push_str("  none\n");
        }
        let mut refusals: Vec<_> = self.refusals.iter().collect();
        refusals.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for ((scope, resource), count) in refusals {
            text.push_str(&format!(
                "  {:<32} {resource:<22} {:>12}\n",
                short(scope),
                Count(*count)
            ));
        }
        for (resource, count) in &self.other_refusals {
            text.push_str(&format!(
                "  {:<32} {resource:<22} {:>12}\n",
                format!("(other scopes, past {MAX_GROUPS})"),
                Count(*count)
            ));
        }
        text.push_str("\nPeak usage of the top-level scopes");
        if partial {
            text.push_str(" (at least)");
        }
        if self.limits.is_none() {
            text.push_str(" (the trace has no start event: limits unknown)");
        }
        text.push('\n');
        if self.current.iter().all(Option::is_none) {
            text.push_str("  no usage recorded\n");
        }
        for (index, name) in TOP_LEVEL.iter().enumerate() {
            if self.current[index].is_some() {
                let usage = ScopeUsage {
                    name: name.clone(),
                    stat: self.peaks[index],
                    limit: self.top_limit(index),
                };
                text.push_str(&format!("  {}\n", usage_line(&usage)));
            }
        }
        if let Some((line, error)) = &self.first_bad {
            text.push_str(&match self.bad_lines {
                1 => format!("\nWarning: 1 line is not a trace event (line {line}: {error}).\n"),
                n => format!(
                    "\nWarning: {} lines are not trace events (the first, line {line}: {error}).\n",
                    Count(n)
                ),
            });
        }
        if let Some((line, length)) = &self.first_long {
            let (lines, first) = match self.long_lines {
                1 => ("1 line is".to_owned(), format!("line {line}")),
                n => (
                    format!("{} lines are", Count(n)),
                    format!("the first, line {line}"),
                ),
            };
            text.push_str(&format!(
                "\nWarning: {lines} longer than {} and skipped unread ({first}, is at least {} \
                 long): no trace event is that long.\n",
                ByteSize::new(MAX_LINE as u64),
                ByteSize::new(*length)
            ));
        }
        if let Some((line, error)) = &self.cut_short {
            text.push_str(&format!(
                "\nWarning: the file ends early: reading stopped at line {line} ({error}); the \
                 summary covers what came before.\n"
            ));
        }
        text
    }

    /// The limit of a top-level scope, by its index in [`TOP_LEVEL`], if the trace has them.
    fn top_limit(&self, index: usize) -> BaseLimit {
        match &self.limits {
            None => BaseLimit::unlimited(),
            Some(limits) => match index {
                0 => limits.system,
                1 => limits.transient,
                2 => limits.allowlisted_system,
                _ => limits.allowlisted_transient,
            },
        }
    }

    /// Draws the top-level scopes' usage over time into an SVG at `path`.
    ///
    /// # Errors
    ///
    /// [`CliError::Plot`] if drawing or writing fails.
    pub fn plot(&self, path: &Path) -> Result<(), CliError> {
        let failed = |reason: String| CliError::Plot {
            path: path.to_path_buf(),
            reason,
        };
        let end = self.last_at.max(1e-3);
        let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(|err| failed(err.to_string()))?;
        let mut title = "rcmgr: usage of the top-level scopes over time".to_owned();
        if self.dropped > 0 {
            title.push_str(&format!(
                " (partial: {} events dropped, grey)",
                Count(self.dropped)
            ));
        }
        let root = root
            .titled(&title, ("sans-serif", 22))
            .map_err(|err| failed(err.to_string()))?;
        for (area, plotted) in root.split_evenly((2, 2)).iter().zip(Plotted::ALL) {
            let panel = self.panel(plotted);
            match plotted {
                Plotted::Memory => draw_panel(area, &panel, end, Axis::Real),
                _ => draw_panel(area, &panel, end, Axis::Counts),
            }
            .map_err(failed)?;
        }
        root.present().map_err(|err| failed(err.to_string()))
    }

    /// What one panel shows.
    fn panel(&self, plotted: Plotted) -> Panel {
        let mut lines = Vec::new();
        let mut limits = Vec::new();
        for (index, name) in TOP_LEVEL.iter().enumerate() {
            let Some(series) = self.series.get(&(index, plotted)) else {
                continue;
            };
            let segments = series.segments(self.last_at);
            lines.push((name.to_string(), index, segments));
            if let Some(limit) = plotted.limit(&self.top_limit(index)) {
                limits.push((format!("{name} limit"), index, limit));
            }
        }
        let refusals = self
            .refused_at
            .get(&plotted)
            .map(Timeline::values)
            .unwrap_or_default();
        Panel {
            title: plotted.title(),
            lines,
            limits,
            refusals,
            gaps: self.gaps.iter().map(|gap| (gap.start, gap.end)).collect(),
        }
    }
}

/// Each resource at the higher of the two.
fn highest(a: &ScopeStat, b: &ScopeStat) -> ScopeStat {
    ScopeStat {
        streams_inbound: a.streams_inbound.max(b.streams_inbound),
        streams_outbound: a.streams_outbound.max(b.streams_outbound),
        conns_inbound: a.conns_inbound.max(b.conns_inbound),
        conns_outbound: a.conns_outbound.max(b.conns_outbound),
        fd: a.fd.max(b.fd),
        memory: a.memory.max(b.memory),
    }
}

/// A line drawn in segments of (time, value) points.
type Steps = Vec<Vec<(f64, f64)>>;

/// What one panel of the plot draws.
#[derive(Debug)]
struct Panel {
    title: &'static str,
    /// (label, colour index, step segments) per top-level scope.
    lines: Vec<(String, usize, Steps)>,
    /// (label, colour index, limit) per top-level scope with a finite limit.
    limits: Vec<(String, usize, f64)>,
    /// (time, refusals) marks.
    refusals: Vec<(f64, f64)>,
    /// (start, end) of each stretch where events were dropped.
    gaps: Vec<(f64, f64)>,
}

/// The y axis of a panel: whole numbers (counts: integer ticks only) or real numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    Counts,
    Real,
}

const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];
const REFUSAL: RGBColor = RGBColor(200, 0, 0);

/// Draws a panel's gaps, usage steps, limits and refusal marks on `chart`, whose y values
/// come from `y` (up to `top`, from `zero`), and its legend.
macro_rules! draw_content {
    ($chart:ident, $panel:ident, $y:ident, $top:expr, $zero:expr) => {{
        let width = ($chart.x_range().end - $chart.x_range().start).abs();
        let mut gaps_labelled = false;
        for &(start, gap_end) in &$panel.gaps {
            // A gap shorter than a pixel or so is still shown.
            let gap_end = gap_end.max(start + width * 0.002);
            let band = $chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, $top), (gap_end, $zero)],
                    BLACK.mix(0.15).filled(),
                )))
                .map_err(|err| err.to_string())?;
            if !gaps_labelled {
                gaps_labelled = true;
                band.label("events dropped").legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 16, y + 5)], BLACK.mix(0.15).filled())
                });
            }
        }
        for (label, index, segments) in &$panel.lines {
            let color = COLORS[*index % COLORS.len()];
            let mut labelled = false;
            for segment in segments {
                let drawn = $chart
                    .draw_series(LineSeries::new(
                        segment.iter().map(|&(at, value)| (at, $y(value))),
                        color.stroke_width(2),
                    ))
                    .map_err(|err| err.to_string())?;
                if !labelled {
                    labelled = true;
                    drawn.label(label.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                }
            }
        }
        for (label, index, limit) in &$panel.limits {
            let color = COLORS[*index % COLORS.len()];
            let end = $chart.x_range().end;
            $chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, $y(*limit)), (end, $y(*limit))],
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(|err| err.to_string())?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y)], color));
        }
        if !$panel.refusals.is_empty() {
            $chart
                .draw_series(
                    $panel
                        .refusals
                        .iter()
                        .map(|&(at, _)| TriangleMarker::new((at, $zero), 5, REFUSAL.filled())),
                )
                .map_err(|err| err.to_string())?
                .label(format!(
                    "refusals ({})",
                    Count($panel.refusals.iter().map(|(_, n)| *n as u64).sum())
                ))
                .legend(|(x, y)| TriangleMarker::new((x + 8, y), 5, REFUSAL.filled()));
        }
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|err| err.to_string())
    }};
}

/// Draws `panel` on `area` over `0..end` seconds.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    end: f64,
    axis: Axis,
) -> Result<(), String> {
    let top = panel
        .lines
        .iter()
        .flat_map(|(_, _, segments)| segments.iter().flatten().map(|(_, v)| *v))
        .chain(panel.limits.iter().map(|(_, _, limit)| *limit))
        .fold(0.0_f64, f64::max);
    match axis {
        Axis::Counts => {
            // Integer coordinates: plotters then only puts ticks on whole numbers.
            let top = (top * 1.1).ceil().max(1.0) as u64 + 1;
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..end, 0u64..top)
                .map_err(|err| err.to_string())?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_labels(top.min(10) as usize + 1)
                .draw()
                .map_err(|err| err.to_string())?;
            let y = |v: f64| v.round().max(0.0) as u64;
            draw_content!(chart, panel, y, top, 0u64)
        }
        Axis::Real => {
            let top = (top * 1.1).max(1.0);
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..end, 0.0..top)
                .map_err(|err| err.to_string())?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .draw()
                .map_err(|err| err.to_string())?;
            let y = |v: f64| v;
            draw_content!(chart, panel, y, top, 0.0)
        }
    }
}

/// How a line ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The line is in the buffer (without its newline).
    Read,
    /// The line was longer than the limit: skipped to its end, unread; at least this long.
    TooLong(u64),
    /// The input ended.
    End,
}

/// Reads one line of `reader` into `line` if it is at most `max` bytes long; skips it to its
/// end otherwise, holding no more than `max` bytes of it.
fn read_line(reader: &mut dyn BufRead, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    line.clear();
    let mut length = 0u64;
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(match (started, length > max as u64) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong(length),
                (true, false) => Line::Read,
            });
        }
        started = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(newline) => (&available[..newline], Some(newline + 1)),
            None => (available, None),
        };
        length += chunk.len() as u64;
        if length <= max as u64 {
            line.extend_from_slice(chunk);
        } else if !line.is_empty() {
            // Too long: what was kept is let go.
            line.clear();
            line.shrink_to(max.min(1 << 16));
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(if length > max as u64 {
                Line::TooLong(length)
            } else {
                Line::Read
            });
        }
    }
}

/// A resource name with the direction asked for, when the event has one.
fn directed(resource: &str, event: &TraceEvent) -> String {
    match (event.delta_in != 0, event.delta_out != 0) {
        (true, false) => format!("{resource} (inbound)"),
        (false, true) => format!("{resource} (outbound)"),
        _ => resource.to_owned(),
    }
}

/// The group a refusal is counted under: fixed scopes, protocols and services by name, the
/// rest by class, spans as the group of the scope at the root of their chain with `.span` (a
/// span's name holds that scope flat, so a name nested any depth costs no stack).
fn group_of(scope: &ScopeName) -> String {
    let (owner, span) = match scope {
        ScopeName::Span(name) => (name.base(), true),
        other => (other, false),
    };
    let group = match owner {
        ScopeName::Peer(_) => "peer".to_owned(),
        ScopeName::Conn(_) => "conn".to_owned(),
        ScopeName::Stream(_) => "stream".to_owned(),
        ScopeName::ProtocolPeer { protocol, .. } => format!("protocol:{protocol}.peer"),
        ScopeName::ServicePeer { service, .. } => format!("service:{service}.peer"),
        // Fixed scopes, protocols and services, by name.
        other => other.to_string(),
    };
    if span { format!("{group}.span") } else { group }
}

/// `text` for a report, cut to at most 64 characters.
fn short(text: &str) -> String {
    const MOST: usize = 64;
    match text.char_indices().nth(MOST) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// One scope's peak line: each resource as peak/limit.
fn usage_line(usage: &ScopeUsage) -> String {
    let (s, l) = (&usage.stat, &usage.limit);
    let of = |used: u64, limit: u64| {
        if limit >= BaseLimit::UNLIMITED {
            format!("{}", Count(used))
        } else {
            format!("{}/{}", Count(used), Count(limit))
        }
    };
    format!(
        "{:<22} streams in {:<14} out {:<14} conns in {:<12} out {:<12} fd {:<12} memory {}",
        usage.name.to_string(),
        of(s.streams_inbound.into(), l.streams_inbound),
        of(s.streams_outbound.into(), l.streams_outbound),
        of(s.conns_inbound.into(), l.conns_inbound),
        of(s.conns_outbound.into(), l.conns_outbound),
        of(s.fd.into(), l.fd),
        ByteSize::new(s.memory),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_without_being_held() {
        let mut input = vec![b'a'; 10_000];
        input.extend_from_slice(b"\nshort\n\nlast");
        let mut reader = BufReader::with_capacity(64, &input[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut line, 100).expect("reads"),
            Line::TooLong(10_000)
        );
        assert!(line.capacity() <= 1 << 16);
        assert_eq!(
            read_line(&mut reader, &mut line, 100).expect("reads"),
            Line::Read
        );
        assert_eq!(line, b"short");
        assert_eq!(
            read_line(&mut reader, &mut line, 100).expect("reads"),
            Line::Read
        );
        assert!(line.is_empty());
        assert_eq!(
            read_line(&mut reader, &mut line, 100).expect("reads"),
            Line::Read
        );
        assert_eq!(line, b"last");
        assert_eq!(
            read_line(&mut reader, &mut line, 100).expect("reads"),
            Line::End
        );
    }

    #[test]
    fn timelines_stay_bounded_and_keep_the_peak() {
        let mut usage = Timeline::new(Merge::Max);
        let mut refusals = Timeline::new(Merge::Sum);
        for i in 0..100_000u32 {
            let at = f64::from(i) * 1e-3;
            usage.push(at, if i == 54_321 { 1e6 } else { f64::from(i % 7) });
            refusals.push(at, 1.0);
        }
        assert!(usage.points.len() <= MAX_POINTS);
        assert!(refusals.points.len() <= MAX_POINTS);
        assert_eq!(usage.values().iter().map(|p| p.1).fold(0.0, f64::max), 1e6);
        assert_eq!(
            refusals.values().iter().map(|p| p.1).sum::<f64>(),
            100_000.0
        );
        // Equal times cannot be told apart by resolution and still stay bounded.
        let mut same = Timeline::new(Merge::Sum);
        for _ in 0..10_000 {
            same.push(5.0, 1.0);
        }
        assert_eq!(same.values(), [(5.0, 10_000.0)]);
    }

    #[test]
    fn usage_is_drawn_in_steps_and_not_across_gaps() {
        let mut series = Timeline::new(Merge::Max);
        series.push(0.0, 1.0);
        series.push(1.0, 3.0);
        series.gap(2.0);
        series.push(4.0, 2.0);
        assert_eq!(
            series.segments(5.0),
            [
                vec![(0.0, 1.0), (1.0, 1.0), (1.0, 3.0), (2.0, 3.0)],
                vec![(4.0, 2.0), (5.0, 2.0)],
            ]
        );
        // A gap that begins at the time of the point before it (the trace clock is coarse)
        // still cuts the line there; one after the last point ends the line.
        let mut series = Timeline::new(Merge::Max);
        series.push(0.0, 1.0);
        series.push(1.0, 3.0);
        series.gap(1.0);
        series.push(4.0, 2.0);
        series.gap(4.5);
        assert_eq!(
            series.segments(5.0),
            [
                vec![(0.0, 1.0), (1.0, 1.0), (1.0, 3.0), (1.0, 3.0)],
                vec![(4.0, 2.0), (4.5, 2.0)],
            ]
        );
        let mut plain = Timeline::new(Merge::Max);
        for (at, value) in [(0.0, 1.0), (1.0, 3.0), (4.0, 2.0)] {
            plain.push(at, value);
        }
        assert_eq!(
            plain.segments(5.0),
            [vec![
                (0.0, 1.0),
                (1.0, 1.0),
                (1.0, 3.0),
                (4.0, 3.0),
                (4.0, 2.0),
                (5.0, 2.0)
            ]]
        );
    }

    #[test]
    fn deep_spans_group_without_recursion() {
        let mut name = ScopeName::Conn(3);
        for index in 0..100_000 {
            name = ScopeName::span(name, index);
        }
        assert_eq!(group_of(&name), "conn.span");
    }
}

//! `rcmgr trace FILE [--plot OUT.svg]`: what a trace says. The trace is read line by line
//! (JSON lines in go's schema, gzip-compressed or not: rcmgr's traces and go-libp2p's alike)
//! into:
//!
//! - the events by type and the time they span;
//! - the refusals (`block_*` events) by scope and resource: the fixed scopes, protocols and
//!   services by name, the other scopes by class (`peer`, `conn`, `stream`, ...);
//! - the peak usage of each top-level scope (system, transient and the allowlisted pair)
//!   against the limits in the trace's `start` event, as `rcmgr simulate` shows its peaks;
//! - with `--plot`, their streams, connections, file descriptors and memory over time, drawn
//!   as an SVG.
//!
//! A line that is not an event is skipped and counted: the summary then ends with a warning
//! (exit status 1).

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use plotters::prelude::*;
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ScopeName, ScopeStat, ScopeUsage, TraceEvent, TraceEventType,
    TraceLimit, UsageReport,
};

use crate::{
    cli::TraceArgs,
    error::{CliError, Status},
    simulate::Peaks,
    units::Count,
};

/// The top-level scopes, in the order they are reported.
const TOP_LEVEL: [ScopeName; 4] = [
    ScopeName::System,
    ScopeName::Transient,
    ScopeName::AllowlistedSystem,
    ScopeName::AllowlistedTransient,
];

/// How often (in trace time) the peaks are sampled at most.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Runs `rcmgr trace`.
///
/// # Errors
///
/// [`CliError::Trace`] if the file cannot be opened or read, [`CliError::Plot`] if the plot
/// cannot be written, and [`CliError::Output`] when `out` cannot be written.
pub fn run(args: &TraceArgs, out: &mut dyn Write) -> Result<Status, CliError> {
    let summary = Summary::read(&args.file)?;
    write!(out, "{}", summary.render(&args.file))?;
    if let Some(plot) = &args.plot {
        summary.plot(plot)?;
        writeln!(out, "\nUsage over time drawn in {}.", plot.display())?;
    }
    Ok(if summary.bad_lines > 0 {
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
}

/// What a trace says; see the module docs.
#[derive(Debug, Default)]
pub struct Summary {
    events: u64,
    bad_lines: u64,
    first_bad: Option<(u64, String)>,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
    by_type: BTreeMap<TraceEventType, u64>,
    refusals: BTreeMap<(String, String), u64>,
    limits: Option<ConcreteLimitConfig>,
    /// The current totals of each top-level scope seen.
    current: BTreeMap<usize, ScopeStat>,
    peaks: Peaks,
    last_sample: Option<SystemTime>,
    /// (seconds since the first event, value) by (top-level scope, resource).
    series: BTreeMap<(usize, Plotted), Vec<(f64, f64)>>,
}

impl Summary {
    /// Reads the trace at `path`.
    ///
    /// # Errors
    ///
    /// [`CliError::Trace`] if the file cannot be opened or read.
    pub fn read(path: &Path) -> Result<Self, CliError> {
        let failed = |reason: String| CliError::Trace {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|err| failed(err.to_string()))?;
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let file = File::open(path).map_err(|err| failed(err.to_string()))?;
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut summary = Summary::default();
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|err| failed(err.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<TraceEvent>(&line) {
                Ok(event) => summary.add(&event),
                Err(err) => {
                    summary.bad_lines += 1;
                    summary
                        .first_bad
                        .get_or_insert((index as u64 + 1, err.to_string()));
                }
            }
        }
        summary.sample(true);
        Ok(summary)
    }

    fn add(&mut self, event: &TraceEvent) {
        self.events += 1;
        *self.by_type.entry(event.kind).or_default() += 1;
        self.first.get_or_insert(event.time);
        self.last = Some(event.time);
        if let Some(TraceLimit::Config(config)) = &event.limit {
            self.limits = Some(config.build(&ConcreteLimitConfig::infinite()));
        }
        let Some(scope) = &event.scope else {
            return;
        };
        if event.kind.is_block() {
            let resource = match event.kind {
                TraceEventType::BlockReserveMemory => "memory".to_owned(),
                TraceEventType::BlockAddStream => directed("streams", event),
                _ => directed("connections", event),
            };
            *self
                .refusals
                .entry((group_of(scope), resource))
                .or_default() += 1;
            return;
        }
        let Some(top) = TOP_LEVEL.iter().position(|name| name == scope) else {
            return;
        };
        let totals = event.totals();
        let stat = self.current.entry(top).or_default();
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
        let at = self.seconds(event.time);
        for plotted in Plotted::ALL {
            let points = self.series.entry((top, plotted)).or_default();
            let value = plotted.of(&stat);
            match points.last_mut() {
                // One point per millisecond: the highest.
                Some((last_at, last)) if at - *last_at < 1e-3 => *last = last.max(value),
                _ => points.push((at, value)),
            }
        }
        self.sample(false);
    }

    fn seconds(&self, time: SystemTime) -> f64 {
        self.first
            .and_then(|first| time.duration_since(first).ok())
            .map_or(0.0, |since| since.as_secs_f64())
    }

    /// Takes the current totals into the peaks, at most every [`SAMPLE_EVERY`] of trace
    /// time (or now, when `last`).
    fn sample(&mut self, last: bool) {
        let now = self.last;
        let due = match (self.last_sample, now) {
            (Some(sampled), Some(now)) => {
                now.duration_since(sampled).unwrap_or_default() >= SAMPLE_EVERY
            }
            _ => true,
        };
        if !(due || last) || self.current.is_empty() {
            return;
        }
        self.last_sample = now;
        let limits = self.limits.as_ref();
        let scopes = TOP_LEVEL
            .iter()
            .enumerate()
            .map(|(index, name)| ScopeUsage {
                name: name.clone(),
                stat: self.current.get(&index).copied().unwrap_or_default(),
                limit: limits.map_or(BaseLimit::unlimited(), |limits| top_limit(limits, index)),
            })
            .collect();
        self.peaks.record(UsageReport {
            scopes,
            peers: Vec::new(),
            protocols: Vec::new(),
            services: Vec::new(),
            peer_count: 0,
            protocol_count: 0,
            service_count: 0,
        });
    }

    /// The summary as text.
    pub fn render(&self, path: &Path) -> String {
        let mut text = format!("Trace {}: {} events", path.display(), Count(self.events));
        if let (Some(first), Some(last)) = (self.first, self.last) {
            let span = last.duration_since(first).unwrap_or_default();
            text.push_str(&format!(" over {:.3} s", span.as_secs_f64()));
        }
        text.push_str(".\n\nEvents by type\n");
        for (kind, count) in &self.by_type {
            text.push_str(&format!("  {:<22} {:>12}\n", kind.as_str(), Count(*count)));
        }
        text.push_str("\nRefusals by scope and resource\n");
        if self.refusals.is_empty() {
            text.push_str("  none\n");
        }
        let mut refusals: Vec<_> = self.refusals.iter().collect();
        refusals.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for ((scope, resource), count) in refusals {
            text.push_str(&format!(
                "  {scope:<32} {resource:<22} {:>12}\n",
                Count(*count)
            ));
        }
        text.push_str("\nPeak usage of the top-level scopes");
        if self.limits.is_none() {
            text.push_str(" (the trace has no start event: limits unknown)");
        }
        text.push('\n');
        if self.current.is_empty() {
            text.push_str("  no usage recorded\n");
        } else {
            let report = self.peaks.report();
            for usage in &report.scopes {
                let index = TOP_LEVEL.iter().position(|name| *name == usage.name);
                if index.is_some_and(|index| self.current.contains_key(&index)) {
                    text.push_str(&format!("  {}\n", usage_line(usage)));
                }
            }
        }
        if let Some((line, error)) = &self.first_bad {
            text.push_str(&format!(
                "\nWarning: {} lines are not trace events (the first, line {line}: {error}).\n",
                Count(self.bad_lines)
            ));
        }
        text
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
        let end = self.last.map_or(0.0, |last| self.seconds(last)).max(1e-3);
        let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(|err| failed(err.to_string()))?;
        let root = root
            .titled(
                "rcmgr: usage of the top-level scopes over time",
                ("sans-serif", 22),
            )
            .map_err(|err| failed(err.to_string()))?;
        let colors = [BLUE, RED, GREEN, MAGENTA];
        for (area, plotted) in root.split_evenly((2, 2)).iter().zip(Plotted::ALL) {
            let top = self
                .series
                .iter()
                .filter(|((_, p), _)| *p == plotted)
                .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
                .fold(0.0_f64, f64::max)
                .max(1.0)
                * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(plotted.title(), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..end, 0.0..top)
                .map_err(|err| failed(err.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .draw()
                .map_err(|err| failed(err.to_string()))?;
            for ((scope, p), points) in &self.series {
                if *p != plotted {
                    continue;
                }
                let color = colors[*scope % colors.len()];
                chart
                    .draw_series(LineSeries::new(thin(points), color))
                    .map_err(|err| failed(err.to_string()))?
                    .label(TOP_LEVEL[*scope].to_string())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|err| failed(err.to_string()))?;
        }
        root.present().map_err(|err| failed(err.to_string()))
    }
}

/// At most about 2,000 points of a series: the highest of each run of consecutive points.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    const MOST: usize = 2000;
    let step = points.len().div_ceil(MOST).max(1);
    points
        .chunks(step)
        .filter_map(|chunk| {
            let (at, _) = *chunk.first()?;
            let highest = chunk.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
            Some((at, highest))
        })
        .collect()
}

/// The limit of a top-level scope, by its index in [`TOP_LEVEL`].
fn top_limit(limits: &ConcreteLimitConfig, index: usize) -> BaseLimit {
    match index {
        0 => limits.system,
        1 => limits.transient,
        2 => limits.allowlisted_system,
        _ => limits.allowlisted_transient,
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
/// rest by class, spans as their owner's group with `.span`.
fn group_of(scope: &ScopeName) -> String {
    match scope {
        ScopeName::Span(span) => format!("{}.span", group_of(span.base())),
        ScopeName::Peer(_) => "peer".to_owned(),
        ScopeName::Conn(_) => "conn".to_owned(),
        ScopeName::Stream(_) => "stream".to_owned(),
        ScopeName::ProtocolPeer { protocol, .. } => format!("protocol:{protocol}.peer"),
        ScopeName::ServicePeer { service, .. } => format!("service:{service}.peer"),
        other => other.to_string(),
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
        crate::units::ByteSize::new(s.memory),
    )
}

//! `rcmgr simulate`: the resource manager driven on every core by honest peers and an
//! attacker, watched while it runs, and a report at the end.
//!
//! One thread per core runs the honest peers (module `honest`), each keeping a connection and
//! opening streams with memory on the node's protocols; one more thread runs the attack
//! (module `attack`). Every thread counts in a [`Tally`] of its own, merged at the end, and
//! publishes running totals in a padded slot of its own for the progress line. The calling
//! thread samples usage against limits ([`Peaks`]) while the peers run.
//!
//! # Where observability plugs in
//!
//! - `--metrics 127.0.0.1:PORT`: a Prometheus reporter (`rcmgr-prometheus`) is attached to the
//!   manager in `build_manager`, and its loopback server ([`MetricsServer`]) is started in
//!   [`Simulation::run`] before the peers and stopped after them.
//! - `--trace FILE`: the manager writes a trace to FILE (`build_manager`); it is flushed once
//!   the peers stop, and the events it had to drop are reported.
//!
//! Both are options of [`Simulation`], next to the others.

mod attack;
mod honest;
mod peaks;
mod report;
mod serve;
mod tally;

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    num::NonZeroUsize,
    path::PathBuf,
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use crossbeam_utils::CachePadded;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};

use self::{attack::Attacker, honest::HonestPeer};
pub use self::{
    peaks::Peaks,
    report::{HONEST_SERVICE_PERCENT, Outcome, Verdict},
    serve::MetricsServer,
    tally::{LiveSlot, LiveTotals, Op, RefusalKey, Refused, RefusedBy, Role, Tally},
};
use crate::{
    cli::{Attack, SimulateArgs},
    error::{CliError, Status},
    sizing::{LimitsSource, Sizing},
    units::{Count, Percent, Rate},
};

/// How often usage is sampled and the progress line redrawn.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the manager collects idle peer scopes during a simulation (the conn-flood
/// attacker leaves one behind per connection).
const GC_EVERY: Duration = Duration::from_secs(1);

/// Runs `rcmgr simulate` and prints the report to `out`.
///
/// # Errors
///
/// [`CliError::Limits`] for a limits file that cannot be read, the simulation's errors (see
/// [`Simulation::run`]), and [`CliError::Output`] when `out` cannot be written.
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<Status, CliError> {
    let sizing = Sizing::resolve(args.sizing.memory, args.sizing.fds);
    let limits = LimitsSource::load(sizing, args.config.as_deref()).map_err(CliError::Limits)?;
    let threads = args.threads.map_or_else(
        || thread::available_parallelism().map_or(1, NonZeroUsize::get),
        NonZeroUsize::get,
    );
    let built = limits.build();
    let simulation = Simulation {
        peers: args.peers.unwrap_or_else(|| default_peers(&built)),
        duration: args.duration.duration(),
        attack: args.attack,
        threads,
        limits: built,
        limits_description: limits.describe(),
        progress: true,
        metrics: args.metrics,
        trace: args.trace.clone(),
    };
    let outcome = simulation.run_reporting(out)?;
    write!(out, "{outcome}")?;
    if let (Some(path), Some(dropped)) = (&simulation.trace, outcome.trace_dropped) {
        writeln!(
            out,
            "\nTrace written to {}; {} events dropped because the trace could not keep up \
             (the trace records where: `rcmgr trace` reports the gaps).",
            path.display(),
            Count(dropped)
        )?;
    }
    Ok(outcome.status())
}

/// A simulation to run.
#[derive(Debug)]
pub struct Simulation {
    /// Honest peers.
    pub peers: usize,
    /// How long the peers run.
    pub duration: Duration,
    /// The attack beside them.
    pub attack: Attack,
    /// Threads for the honest peers (at least one is used).
    pub threads: usize,
    /// The limits.
    pub limits: ConcreteLimitConfig,
    /// Where the limits come from, for the report.
    pub limits_description: String,
    /// Whether to draw the live progress line (only ever drawn on a terminal).
    pub progress: bool,
    /// Where to serve Prometheus metrics while the peers run (a loopback address).
    pub metrics: Option<SocketAddr>,
    /// Where to write the trace.
    pub trace: Option<PathBuf>,
}

impl Simulation {
    /// Runs the simulation and returns what it found.
    ///
    /// # Errors
    ///
    /// [`CliError::Manager`] if the manager refuses the limits, [`CliError::Setup`] if a
    /// peer cannot be made, [`CliError::Thread`] if a thread cannot be started and
    /// [`CliError::ThreadPanicked`] if one stops unexpectedly.
    pub fn run(&self) -> Result<Outcome, CliError> {
        self.run_reporting(&mut std::io::sink())
    }

    /// [`run`](Self::run), writing to `out` where the metrics are served before the peers
    /// start.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run), and [`CliError::Metrics`] if the metrics cannot be served.
    pub fn run_reporting(&self, out: &mut dyn Write) -> Result<Outcome, CliError> {
        // A thread without peers would only spin.
        let threads = self.threads.clamp(1, self.peers.max(1));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = self.metrics.map(|_| &mut registry);
        let rm = build_manager(self.limits.clone(), metrics, self.trace.as_deref())?;
        let start = Instant::now();
        let mut per_thread: Vec<Vec<HonestPeer>> = (0..threads).map(|_| Vec::new()).collect();
        for index in 0..self.peers {
            per_thread[index % threads].push(HonestPeer::new(index as u64, start)?);
        }
        let attacker = match self.attack {
            Attack::None => None,
            attack => Some(Attacker::new(attack)?),
        };
        // One slot per honest thread, then the attacker's.
        let slots: Vec<CachePadded<LiveSlot>> = (0..=threads).map(|_| Default::default()).collect();
        let stop = AtomicBool::new(false);
        let progress = self.progress_bar();
        let mut peaks = Peaks::default();

        // The metrics server runs while the peers do.
        let server = match self.metrics {
            Some(addr) => {
                let server = MetricsServer::start(addr, Arc::new(registry))?;
                writeln!(out, "Serving metrics at http://{}/metrics", server.addr())?;
                out.flush()?;
                Some(server)
            }
            None => None,
        };
        let (tally, elapsed) = thread::scope(|scope| {
            let mut running = Vec::new();
            let stop_all = |error| {
                // Ordering: Relaxed, as for every use of the flag.
                stop.store(true, Ordering::Relaxed);
                Err(error)
            };
            for (index, peers) in per_thread.into_iter().enumerate() {
                if peers.is_empty() {
                    continue;
                }
                let (rm, stop, slot) = (&rm, &stop, &*slots[index]);
                let name = format!("honest peers {index}");
                match thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || honest::run_worker(rm, peers, stop, slot))
                {
                    Ok(handle) => running.push((name, handle)),
                    Err(source) => return stop_all(CliError::Thread { what: name, source }),
                }
            }
            if let Some(attacker) = &attacker {
                let (rm, stop, slot) = (&rm, &stop, &*slots[threads]);
                let name = "attacker".to_owned();
                match thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || attacker.run(rm, stop, slot))
                {
                    Ok(handle) => running.push((name, handle)),
                    Err(source) => return stop_all(CliError::Thread { what: name, source }),
                }
            }

            let started = Instant::now();
            self.watch(&rm, &slots, &progress, &mut peaks, started);
            // Ordering: Relaxed. The flag carries no data; the counts travel through the joins.
            stop.store(true, Ordering::Relaxed);
            let results: Vec<_> = running
                .into_iter()
                .map(|(name, handle)| (name, handle.join()))
                .collect();
            let elapsed = started.elapsed();
            let mut total = Tally::default();
            for (name, result) in results {
                total.merge(result.map_err(|_| CliError::ThreadPanicked(name))?);
            }
            Ok((total, elapsed))
        })?;
        progress.finish_and_clear();
        drop(server);
        // Everything the peers did is in the trace once it is flushed.
        rm.flush_trace();
        let trace_dropped = self.trace.as_ref().map(|_| rm.trace_dropped());

        let released = rm.system().stat().is_empty() && rm.transient().stat().is_empty();
        Ok(Outcome {
            peers: self.peers,
            threads: if self.peers == 0 { 0 } else { threads },
            attack: self.attack,
            attacker: attacker.as_ref().map(Attacker::id),
            elapsed,
            limits: self.limits_description.clone(),
            tally,
            peaks: peaks.report(),
            samples: peaks.samples(),
            sample_every: SAMPLE_EVERY,
            released,
            trace_dropped,
        })
    }

    /// Samples usage and redraws the progress line until the run's time is up.
    fn watch(
        &self,
        rm: &ResourceManager,
        slots: &[CachePadded<LiveSlot>],
        progress: &ProgressBar,
        peaks: &mut Peaks,
        started: Instant,
    ) {
        let deadline = started + self.duration;
        let (mut last_at, mut last_attempts, mut rate) = (started, 0, Rate(0.0));
        loop {
            peaks.record(rm.report());
            let now = Instant::now();
            let totals = LiveTotals::sum(slots.iter().map(|slot| &**slot));
            let window = now.duration_since(last_at);
            // A rate over less than half a sampling period says more about timing than load.
            if window >= SAMPLE_EVERY / 2 {
                let count = totals.attempts.saturating_sub(last_attempts);
                rate = Rate(count as f64 / window.as_secs_f64());
                (last_at, last_attempts) = (now, totals.attempts);
            }
            progress.set_position(millis(now.duration_since(started)));
            progress.set_message(progress_message(self.attack, rate, &totals));
            if now >= deadline {
                return;
            }
            thread::sleep(SAMPLE_EVERY.min(deadline - now));
        }
    }

    /// The live progress line: drawn on standard error when it is a terminal, hidden
    /// otherwise (under tests, in pipes and in CI logs).
    fn progress_bar(&self) -> ProgressBar {
        let target = if self.progress && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(millis(self.duration)), target);
        if let Ok(style) = ProgressStyle::with_template("{elapsed:>3} [{bar:12}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }
}

/// Honest peers when none are asked for.
pub const DEFAULT_PEERS: usize = 300;

/// The number of honest peers a run has by default: [`DEFAULT_PEERS`], or fewer where their
/// connections (two in three inbound, one in three outbound, one each) would take more than
/// 3/4 of the system scope's connection limits, so that the honest peers alone never fill
/// the node.
///
/// ```
/// use rcmgr::ScalingLimitConfig;
/// use rcmgr_cli::simulate::{default_peers, DEFAULT_PEERS};
/// let roomy = ScalingLimitConfig::default().scale(8 << 30, 16384);
/// assert_eq!(default_peers(&roomy), DEFAULT_PEERS);
/// let base = ScalingLimitConfig::default().scale(128 << 20, 256);
/// assert_eq!(default_peers(&base), 72); // 3/4 of 64 inbound connections, for 2 in 3 peers
/// ```
pub fn default_peers(limits: &ConcreteLimitConfig) -> usize {
    let room = |limit: u64| limit.saturating_mul(3) / 4;
    let system = &limits.system;
    let by_inbound = room(system.conns_inbound).saturating_mul(3) / 2;
    let by_outbound = room(system.conns_outbound).saturating_mul(3);
    let by_total = room(system.conns.min(system.fd));
    let fitting = by_inbound.min(by_outbound).min(by_total);
    usize::try_from(fitting).map_or(DEFAULT_PEERS, |n| n.clamp(1, DEFAULT_PEERS))
}

/// The progress line's text: throughput, the honest peers' success rate and the refusals of
/// the attacker.
fn progress_message(attack: Attack, rate: Rate, totals: &LiveTotals) -> String {
    let served = Percent::of(totals.honest_successes, totals.honest_attempts, 2);
    let mut message = format!("{rate} · honest ok {served}");
    if attack != Attack::None {
        message.push_str(&format!(
            " · attacker refused {}",
            Count(totals.attacker_refused)
        ));
    }
    message
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The manager the peers run against: `limits`, with idle peer scopes collected every
/// [`GC_EVERY`].
///
/// `--metrics` installs go's Prometheus metrics on `metrics` (the registry the server
/// serves), and `--trace` the trace file.
fn build_manager(
    limits: ConcreteLimitConfig,
    metrics: Option<&mut prometheus_client::registry::Registry>,
    trace: Option<&std::path::Path>,
) -> Result<ResourceManager, CliError> {
    let mut builder = ResourceManager::builder(limits).gc_interval(GC_EVERY);
    if let Some(path) = trace {
        builder = builder.trace_file(path);
    }
    match metrics {
        Some(registry) => rcmgr_prometheus::PrometheusReporter::install(builder, registry),
        None => builder.build(),
    }
    .map_err(CliError::Manager)
}

//! The command line: `rcmgr limits`, `rcmgr check`, `rcmgr simulate` and `rcmgr trace`.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::{ByteSize, Seconds};

/// rcmgr: see the limits a libp2p node gets, check a limits file before a restart, and watch
/// the resource manager hold off an attack.
#[derive(Debug, Parser)]
#[command(name = "rcmgr", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the limits a node gets: go-libp2p's defaults and service limits, scaled to this
    /// machine (or to --memory and --fds), with a limits file over them.
    Limits(LimitsArgs),
    /// Check a go-libp2p or kubo limits file: exit 0 if it is fine, 1 with warnings about
    /// limits that cannot work as written, 2 if it cannot be read.
    Check(CheckArgs),
    /// Run the resource manager on every core with honest peers and an attacker, then report
    /// throughput, refusals, peak usage and two verdicts: were the honest peers served, was
    /// the attacker contained. Exit 0 when no verdict is no, 1 when one is, 2 for bad usage.
    Simulate(SimulateArgs),
    /// Summarize a trace file (written by `rcmgr simulate --trace`, by a node, or by
    /// go-libp2p): refusals by scope and resource, peak usage of the top-level scopes, and the
    /// events the trace says it dropped; optionally draw their usage over time as an SVG.
    /// Exit 0 for a complete trace, 1 with warnings (events dropped, lines that are not
    /// events or are over 4 MiB, a file cut short), 2 if it holds no trace event.
    Trace(TraceArgs),
}

/// `rcmgr trace`.
#[derive(Clone, Debug, Args)]
pub struct TraceArgs {
    /// The trace: JSON lines, gzip-compressed or not.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Draw the usage of the top-level scopes over time into this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
}

/// What the default limits are scaled for. Without these, autoscaling: 1/8 of this machine's
/// memory and 1/2 of its soft file descriptor limit, as go-libp2p does.
#[derive(Clone, Debug, Default, Args)]
pub struct SizingArgs {
    /// Memory for the node, for example 8GiB, 512MiB, 1.5G or a number of bytes (binary
    /// units: K, M, G and T are KiB, MiB, GiB and TiB; KB, MB, GB and TB are decimal).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<ByteSize>,
    /// File descriptors for the node.
    #[arg(long, value_name = "N")]
    pub fds: Option<u64>,
}

/// `rcmgr limits`.
#[derive(Clone, Debug, Args)]
pub struct LimitsArgs {
    /// The sizes to scale the defaults for.
    #[command(flatten)]
    pub sizing: SizingArgs,
    /// A go-libp2p or kubo limits file (JSON) applied over the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How to print the limits: a table to read, or go-compatible JSON (a limits file that
    /// go-libp2p, kubo and rcmgr load unchanged).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How `rcmgr limits` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, memory in binary units.
    Table,
    /// go's JSON limit format.
    Json,
}

/// `rcmgr check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The limits file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The sizes to scale the defaults for, which the file is built on.
    #[command(flatten)]
    pub sizing: SizingArgs,
}

/// `rcmgr simulate`.
#[derive(Clone, Debug, Args)]
pub struct SimulateArgs {
    /// Honest peers, each with its own address, connecting and opening streams, at most
    /// 100,000 [default: 300, or fewer if their connections would take more than 3/4 of the
    /// system scope's connection limits]
    #[arg(long, value_name = "N", value_parser = parse_peers)]
    pub peers: Option<usize>,
    /// How long to run: seconds, or with a unit (2.5s, 500ms, 1m); at most 24 hours.
    #[arg(long, default_value = "10", value_name = "S", value_parser = parse_run_time)]
    pub duration: Seconds,
    /// The attack to run beside the honest peers.
    #[arg(long, value_enum, default_value_t = Attack::StreamFlood)]
    pub attack: Attack,
    /// A go-libp2p or kubo limits file (JSON) applied over the default limits.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Threads for the honest peers, 1 to 1,024 (default: one per core). The attacker has a
    /// thread of its own.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<NonZeroUsize>,
    /// The sizes to scale the defaults for.
    #[command(flatten)]
    pub sizing: SizingArgs,
    /// Serve the manager's Prometheus metrics (go-libp2p's names) at
    /// http://ADDR/metrics while the simulation runs; a loopback address only. Port 0 picks a
    /// free port, printed before the run.
    #[arg(long, value_name = "127.0.0.1:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Write a trace of every accounting event to FILE (JSON lines in go's schema,
    /// gzip-compressed if FILE ends in .gz); read it with `rcmgr trace`. Events the trace
    /// cannot keep up with are dropped and counted, never slowing the peers.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// The most honest peers `rcmgr simulate` runs: each keeps its state, a connection and a
/// few streams in memory, and far fewer already fill go's default limits.
pub const MAX_PEERS: usize = 100_000;

/// The most threads `rcmgr simulate` runs its honest peers on.
pub const MAX_THREADS: usize = 1024;

/// The longest `rcmgr simulate` runs.
pub const MAX_RUN_TIME: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// `--peers`: a count up to [`MAX_PEERS`].
///
/// ```
/// use rcmgr_cli::cli::parse_peers;
/// assert_eq!(parse_peers("300"), Ok(300));
/// assert!(parse_peers("1000000000").unwrap_err().contains("at most 100,000"));
/// assert!(parse_peers("-1").is_err());
/// ```
///
/// # Errors
///
/// What is wrong with `text`, for clap to show.
pub fn parse_peers(text: &str) -> Result<usize, String> {
    let peers: u64 = text
        .trim()
        .parse()
        .map_err(|err| format!("not a number of peers: {err}"))?;
    match usize::try_from(peers) {
        Ok(peers) if peers <= MAX_PEERS => Ok(peers),
        _ => Err(format!(
            "{peers} honest peers are too many: rcmgr simulate runs at most {} (each keeps its \
             state, a connection and its streams in memory, and a few hundred already fill go's \
             default limits)",
            crate::units::Count(MAX_PEERS as u64)
        )),
    }
}

/// `--threads`: 1 to [`MAX_THREADS`].
///
/// ```
/// use rcmgr_cli::cli::parse_threads;
/// assert_eq!(parse_threads("4").map(|n| n.get()), Ok(4));
/// assert!(parse_threads("0").is_err());
/// assert!(parse_threads("100000").unwrap_err().contains("at most 1,024"));
/// ```
///
/// # Errors
///
/// What is wrong with `text`, for clap to show.
pub fn parse_threads(text: &str) -> Result<NonZeroUsize, String> {
    let threads: u64 = text
        .trim()
        .parse()
        .map_err(|err| format!("not a number of threads: {err}"))?;
    if threads == 0 {
        return Err("at least 1 thread".to_owned());
    }
    usize::try_from(threads)
        .ok()
        .filter(|n| *n <= MAX_THREADS)
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| {
            format!(
                "{threads} threads are too many: at most {}",
                crate::units::Count(MAX_THREADS as u64)
            )
        })
}

/// `--duration`: a [`Seconds`] up to [`MAX_RUN_TIME`].
///
/// ```
/// use rcmgr_cli::cli::parse_run_time;
/// assert_eq!(parse_run_time("2.5s").map(|s| s.duration().as_millis()), Ok(2500));
/// assert!(parse_run_time("100000000m").unwrap_err().contains("at most 24 hours"));
/// assert!(parse_run_time("soon").unwrap_err().contains("invalid duration"));
/// ```
///
/// # Errors
///
/// What is wrong with `text`, for clap to show.
pub fn parse_run_time(text: &str) -> Result<Seconds, String> {
    let run_time: Seconds = text.parse().map_err(|err| format!("{err}"))?;
    if run_time.duration() > MAX_RUN_TIME {
        return Err(format!(
            "{run_time} is too long: rcmgr simulate runs at most 24 hours"
        ));
    }
    Ok(run_time)
}

/// The attacks `rcmgr simulate` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attack {
    /// No attacker: the honest peers alone.
    None,
    /// One peer opens inbound streams on the node's protocols as fast as it can and keeps
    /// them open, closing a few only when refused.
    StreamFlood,
    /// One host opens inbound connections as fast as it can from one IPv4 address and from
    /// addresses all over one IPv6 /56, each under a fresh peer ID, and keeps them open.
    ConnFlood,
    /// One peer reserves memory greedily on its connections and on streams of every
    /// protocol, at the highest priority, and never gives it back.
    Memory,
}

impl Attack {
    /// The attack's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::StreamFlood => "stream-flood",
            Attack::ConnFlood => "conn-flood",
            Attack::Memory => "memory",
        }
    }
}

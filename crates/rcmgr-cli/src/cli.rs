//! The command line: `rcmgr limits` and `rcmgr check`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::ByteSize;

/// rcmgr: see the limits a libp2p node gets, and check a limits file before a restart.
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

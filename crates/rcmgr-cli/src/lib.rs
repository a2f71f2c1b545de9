//! The `rcmgr` command line, as a library: each command writes its output to a writer and
//! returns its exit [`Status`], so that tests can run it without a process.
//!
//! - `rcmgr limits` prints the concrete limits a node gets ([`commands::limits`]);
//! - `rcmgr check FILE` checks a go-libp2p or kubo limits file ([`commands::check`]);
//! - `rcmgr simulate` runs the resource manager under attack and reports ([`simulate`]);
//! - `rcmgr trace FILE` summarizes a trace and plots it ([`commands::trace`]).

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod error;
pub mod scopes;
pub mod simulate;
pub mod sizing;
pub mod table;
pub mod units;

use std::io::Write;

pub use cli::{Cli, Command};
pub use error::{CliError, Status};

/// Runs the command of `cli`, writing its output to `out`.
///
/// # Errors
///
/// What the command could not do; see [`CliError`].
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<Status, CliError> {
    let status = match &cli.command {
        Command::Limits(args) => commands::limits::run(args, out)?,
        Command::Check(args) => commands::check::run(args, out)?,
        Command::Simulate(args) => simulate::run(args, out)?,
        Command::Trace(args) => commands::trace::run(args, out)?,
    };
    out.flush()?;
    Ok(status)
}

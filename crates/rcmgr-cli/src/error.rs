//! What can stop a command, and the exit status it ends with.

use std::{io, process::ExitCode};

/// How a command ended, as its exit status: 0 for success, 1 when the result needs attention
/// (warnings from `check` and `trace`, a verdict of no from `simulate`), 2 for errors (clap's
/// own status for a bad command line is 2 as well).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done, nothing to report.
    Ok,
    /// Done, with warnings the user should read (for `simulate`: a verdict of no).
    Warnings,
    /// Not done: the input was wrong or something failed.
    Errors,
}

impl Status {
    /// The exit status number.
    pub const fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warnings => 1,
            Status::Errors => 2,
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status.code())
    }
}

/// A failure that stops a command. Each says what could not be done and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A limits file could not be read or is not a limits file.
    #[error("{0}")]
    Limits(rcmgr::Error),
    /// The resource manager refused its configuration.
    #[error("cannot build the resource manager: {0}")]
    Manager(rcmgr::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// The simulation could not be set up.
    #[error("cannot set up the simulation: {0}")]
    Setup(String),
    /// A thread of the simulation could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// A thread of the simulation panicked; its counts are lost.
    #[error("the {0} thread stopped unexpectedly")]
    ThreadPanicked(String),
    /// The metrics server could not be started.
    #[error("cannot serve metrics at {addr}: {reason}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// A trace file could not be read.
    #[error("cannot read the trace {path}: {reason}")]
    Trace {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The plot could not be drawn or written.
    #[error("cannot draw the plot {path}: {reason}")]
    Plot {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

impl CliError {
    /// Whether the output was closed early (`rcmgr limits | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(err) if err.kind() == io::ErrorKind::BrokenPipe)
    }
}

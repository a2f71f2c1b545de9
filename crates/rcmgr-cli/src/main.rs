//! `rcmgr`: the command line of the rcmgr resource manager. Everything happens in the
//! `rcmgr_cli` library; this only parses the arguments and reports errors.

use std::{
    io::{self, Write},
    process::ExitCode,
};

use clap::Parser;
use rcmgr_cli::{Cli, Status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match rcmgr_cli::run(&cli, &mut out) {
        Ok(status) => status.into(),
        // Whoever read the output stopped early (`rcmgr limits | head`): nothing to say.
        Err(err) if err.is_broken_pipe() => Status::Ok.into(),
        Err(err) => {
            drop(out);
            let _ = writeln!(io::stderr(), "rcmgr: error: {err}");
            Status::Errors.into()
        }
    }
}

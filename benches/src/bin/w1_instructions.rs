//! `w1-instructions`: W1 (the stream lifecycle) a fixed number of times, plain or observed
//! (go's Prometheus metrics and a trace to `std::io::sink()`), for instruction counts that the
//! load of other processes cannot disturb:
//!
//! ```text
//! cargo build --release -p rcmgr-benches --bin w1-instructions
//! valgrind --tool=callgrind --separate-threads=yes target/release/w1-instructions plain 100000
//! valgrind --tool=callgrind --separate-threads=yes target/release/w1-instructions observed 100000
//! ```
//!
//! Divide the calling thread's count by the iterations (after subtracting a run with 0
//! iterations, which is the setup). With `observed`, the trace writer's thread is counted on
//! its own; the program prints how many trace events it dropped.

#![allow(
    clippy::print_stdout,
    reason = "printing the drop count is part of this program's job"
)]

use std::hint::black_box;

use rcmgr::ConcreteLimitConfig;
use rcmgr_benches::{connected_peer, manager, observed_manager, stream_lifecycle};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "plain".to_owned());
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let (rm, _registry) = match mode.as_str() {
        "observed" => {
            let (rm, registry) = observed_manager(ConcreteLimitConfig::infinite(), std::io::sink());
            (rm, Some(registry))
        }
        _ => (manager(ConcreteLimitConfig::infinite()), None),
    };
    let peer = connected_peer(&rm, 0);
    for _ in 0..iterations {
        stream_lifecycle(black_box(&rm), black_box(peer.peer));
    }
    println!(
        "{mode}: {iterations} iterations, {} trace events dropped",
        rm.trace_dropped()
    );
}

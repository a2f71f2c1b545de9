//! `instructions`: one workload a fixed number of times, for instruction counts that the load
//! of other processes cannot disturb. `benches/callgrind` runs it under valgrind's callgrind
//! twice (N and 2N iterations) and prints the instructions of one operation on the calling
//! thread, setup subtracted:
//!
//! ```text
//! benches/callgrind                  # every workload, 20,000 iterations and 40,000
//! benches/callgrind w1 w5-stream     # some of them
//! ```
//!
//! By hand: `valgrind --tool=callgrind --separate-threads=yes
//! target/release/instructions <workload> <iterations>`, then subtract a run with half the
//! iterations and divide by the difference. The workloads:
//!
//! | name | one operation |
//! |---|---|
//! | `w1` | W1: open_stream, set_protocol, set_service, reserve and release 4 KiB, drop |
//! | `w1-observed` | W1 with go's Prometheus metrics and a trace to `std::io::sink()` |
//! | `w2` | W2: open_connection (per-IP limits and rate limiter on), set_peer, drop |
//! | `w5-stream` | W5 in go's definition: reserve and release 1 KiB on a span of a stream with protocol and service set |
//! | `w5-peer` | W5 on a span of a peer scope |
//! | `w8` | W8: an open_stream refused because the system scope is full |

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "printing what ran is part of this program's job"
)]

use std::hint::black_box;

use rcmgr::ConcreteLimitConfig;
use rcmgr_benches::{
    ConnectionChurn, connected_peer, connection_lifecycle, full_system, gated_limits, manager,
    observed_manager, peer_span, refused_open_stream, span_memory, stream_lifecycle, stream_span,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "w1".to_owned());
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    match workload.as_str() {
        "w1" | "w1-observed" => {
            let (rm, _registry) = if workload == "w1" {
                (manager(ConcreteLimitConfig::infinite()), None)
            } else {
                let (rm, registry) =
                    observed_manager(ConcreteLimitConfig::infinite(), std::io::sink());
                (rm, Some(registry))
            };
            let peer = connected_peer(&rm, 0);
            for _ in 0..iterations {
                stream_lifecycle(black_box(&rm), black_box(peer.peer));
            }
            println!(
                "{workload}: {iterations} iterations, {} trace events dropped",
                rm.trace_dropped()
            );
        }
        "w2" => {
            let rm = manager(gated_limits());
            let mut churn = ConnectionChurn::new();
            for _ in 0..iterations {
                let (endpoint, peer) = churn.next_connection();
                connection_lifecycle(black_box(&rm), endpoint, peer);
            }
            println!("{workload}: {iterations} iterations");
        }
        "w5-stream" | "w5-peer" => {
            let rm = manager(ConcreteLimitConfig::infinite());
            let peer = connected_peer(&rm, 0);
            let (span, _stream) = if workload == "w5-stream" {
                let (span, stream) = stream_span(&rm, peer.peer);
                (span, Some(stream))
            } else {
                (peer_span(&rm, &peer.peer), None)
            };
            for _ in 0..iterations {
                span_memory(black_box(&span));
            }
            println!("{workload}: {iterations} iterations");
        }
        "w8" => {
            let peer = rcmgr::PeerId::random();
            let (rm, _held) = full_system(peer);
            for _ in 0..iterations {
                black_box(refused_open_stream(black_box(&rm), peer));
            }
            println!("{workload}: {iterations} iterations");
        }
        other => {
            eprintln!("unknown workload {other:?}: w1, w1-observed, w2, w5-stream, w5-peer, w8");
            std::process::exit(2);
        }
    }
}

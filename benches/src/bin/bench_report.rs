//! `bench-report`: a short run of every workload of docs/performance.md, printed as one table
//! with the median time per operation, the target, whether it holds, and the heap
//! allocations per operation (counted by a wrapping global allocator).
//!
//! ```text
//! cargo run --release -p rcmgr-benches --bin bench-report            # about a minute
//! cargo run --release -p rcmgr-benches --bin bench-report -- --quick # a few seconds
//! cargo run --release -p rcmgr-benches --bin bench-report -- --threads 1,2,4,8,16
//! ```
//!
//! Medians are over several rounds of a fixed duration each; the criterion benches
//! (`cargo bench -p rcmgr-benches`) are the careful measurement, this is the overview.

#![allow(
    clippy::print_stdout,
    reason = "printing the report is this program's job"
)]

use std::{
    alloc::System,
    hint::black_box,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rcmgr::ConcreteLimitConfig;
use rcmgr_benches::{
    ConnectionChurn, connected_peer, connection_lifecycle, disjoint_peers, fresh_peers,
    full_system, gated_limits, manager, metrics_manager, observed_manager, reference_peers,
    reference_stream_lifecycle, refused_open_stream, resident_memory, run_on_threads, span_memory,
    stream_lifecycle, swap_limits_every_millisecond, thread_levels,
};
use rcmgr_reference::ReferenceManager;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// How long to measure.
#[derive(Clone, Copy, Debug)]
struct Budget {
    rounds: usize,
    round: Duration,
    churn_peers: usize,
}

impl Budget {
    fn full() -> Self {
        Budget {
            rounds: 7,
            round: Duration::from_millis(300),
            churn_peers: 1_000_000,
        }
    }

    fn quick() -> Self {
        Budget {
            rounds: 3,
            round: Duration::from_millis(60),
            churn_peers: 100_000,
        }
    }
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    workload: String,
    threads: usize,
    ns_per_op: f64,
    target: String,
    pass: Option<bool>,
    allocations: Option<f64>,
}

impl Row {
    fn print(&self) {
        let verdict = match self.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "",
        };
        let allocations = self
            .allocations
            .map_or(String::new(), |a| format!("{a:.2}"));
        let ops_per_second = 1e9 / self.ns_per_op * self.threads as f64;
        println!(
            "{:<38} {:>7} {:>11.1} {:>12.0} {:<34} {:>6} {:>9}",
            self.workload,
            self.threads,
            self.ns_per_op,
            ops_per_second,
            self.target,
            verdict,
            allocations
        );
    }
}

/// The median of `rounds` measurements of `op(thread, iteration)` (ns per operation on each
/// thread, i.e. wall time of a round divided by the operations each thread did).
fn median_ns(budget: Budget, threads: usize, op: &(impl Fn(usize, u64) + Sync)) -> f64 {
    // Calibrate: how many operations fill one round?
    let mut per_round = 1_000u64;
    loop {
        let took = run_on_threads(threads, per_round * threads as u64, |t, n| {
            (0..n).for_each(|i| op(t, i))
        });
        if took >= budget.round / 4 || per_round > 1 << 30 {
            let scale = budget.round.as_secs_f64() / took.as_secs_f64().max(1e-9);
            per_round = ((per_round as f64 * scale) as u64).max(1);
            break;
        }
        per_round *= 4;
    }
    let mut samples: Vec<f64> = (0..budget.rounds)
        .map(|_| {
            let took = run_on_threads(threads, per_round * threads as u64, |t, n| {
                (0..n).for_each(|i| op(t, i))
            });
            took.as_nanos() as f64 / per_round as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Heap allocations per operation, counted on one thread over `count` operations.
fn allocations_per_op(count: u64, op: impl Fn(u64)) -> f64 {
    let region = Region::new(ALLOCATOR);
    for i in 0..count {
        op(i);
    }
    region.change().allocations as f64 / count as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget = if args.iter().any(|a| a == "--quick") {
        Budget::quick()
    } else {
        Budget::full()
    };
    let levels = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(thread_levels);

    println!(
        "{:<38} {:>7} {:>11} {:>12} {:<34} {:>6} {:>9}",
        "workload", "threads", "median ns", "ops/s", "target", "result", "allocs/op"
    );
    let mut rows = Vec::new();

    // W1 and its reference baseline.
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = connected_peer(&rm, 0).peer;
    let w1 = median_ns(budget, 1, &|_, _| stream_lifecycle(&rm, peer));
    let w1_allocs = allocations_per_op(10_000, |_| stream_lifecycle(&rm, peer));
    print_row(
        &mut rows,
        Row {
            workload: "W1 stream lifecycle".into(),
            threads: 1,
            ns_per_op: w1,
            target: "<= 150 ns, <= 1 allocation".into(),
            pass: Some(w1 <= 150.0 && w1_allocs <= 1.0),
            allocations: Some(w1_allocs),
        },
    );
    // W1 with observability: go's Prometheus metrics, then metrics and a discarded trace.
    let (metered, _metered_registry) = metrics_manager(ConcreteLimitConfig::infinite());
    let (observed, _observed_registry) =
        observed_manager(ConcreteLimitConfig::infinite(), std::io::sink());
    for (workload, observed_rm) in [
        ("W1 with Prometheus metrics", &metered),
        ("W1 with metrics and a trace", &observed),
    ] {
        let observed_peer = connected_peer(observed_rm, 0).peer;
        let ns = median_ns(budget, 1, &|_, _| {
            stream_lifecycle(observed_rm, observed_peer)
        });
        print_row(
            &mut rows,
            Row {
                workload: workload.into(),
                threads: 1,
                ns_per_op: ns,
                target: format!("<= 1.25 x W1 ({:.2} x)", ns / w1),
                pass: Some(ns <= 1.25 * w1),
                allocations: Some(allocations_per_op(10_000, |_| {
                    stream_lifecycle(observed_rm, observed_peer)
                })),
            },
        );
    }
    let reference = ReferenceManager::new(ConcreteLimitConfig::infinite());
    let reference_peer = reference_peers(&reference, 1)[0].0;
    let reference_w1 = |_| reference_stream_lifecycle(&reference, reference_peer);
    print_row(
        &mut rows,
        Row {
            workload: "W1 stream lifecycle, reference (mutex)".into(),
            threads: 1,
            ns_per_op: median_ns(budget, 1, &|_, i| reference_w1(i)),
            target: "baseline".into(),
            pass: None,
            allocations: Some(allocations_per_op(10_000, reference_w1)),
        },
    );

    // W2: gated connection lifecycle over 1,000 addresses and peers in turn.
    let gated = manager(gated_limits());
    let churn = ConnectionChurn::new();
    let connection = |i: u64| {
        let (endpoint, peer) = churn.connection(i as usize);
        connection_lifecycle(&gated, endpoint, peer);
    };
    let w2 = median_ns(budget, 1, &|_, i| connection(i));
    print_row(
        &mut rows,
        Row {
            workload: "W2 connection lifecycle (gated)".into(),
            threads: 1,
            ns_per_op: w2,
            target: "<= 300 ns".into(),
            pass: Some(w2 <= 300.0),
            allocations: Some(allocations_per_op(10_000, connection)),
        },
    );

    // W3, W4 and W7 at each thread count, with the reference beside W3 and W4.
    let shared = manager(ConcreteLimitConfig::infinite());
    let most = levels.iter().copied().max().unwrap_or(1);
    let peers = disjoint_peers(&shared, most);
    let reference = ReferenceManager::new(ConcreteLimitConfig::infinite());
    let reference_peer_list = reference_peers(&reference, most);
    let (mut w3_one, mut w4_one) = (None, None);
    for &threads in &levels {
        let w3 = median_ns(budget, threads, &|t, _| {
            stream_lifecycle(&shared, peers[t].peer)
        });
        let w3_one = *w3_one.get_or_insert(w3);
        let speedup = w3_one / w3 * threads as f64;
        print_row(
            &mut rows,
            Row {
                workload: format!("W3 disjoint peers ({speedup:.2}x of 1 thread)"),
                threads,
                ns_per_op: w3,
                target: if threads == 2 {
                    ">= 1.9x at 2 threads".into()
                } else {
                    String::new()
                },
                pass: (threads == 2).then_some(speedup >= 1.9),
                allocations: None,
            },
        );
        let w4 = median_ns(budget, threads, &|_, _| {
            stream_lifecycle(&shared, peers[0].peer)
        });
        let w4_one = *w4_one.get_or_insert(w4);
        let ratio = w4_one / w4 * threads as f64;
        print_row(
            &mut rows,
            Row {
                workload: format!("W4 same peer ({ratio:.2}x of 1 thread)"),
                threads,
                ns_per_op: w4,
                target: if threads == 2 {
                    ">= 1.0x at 2 threads".into()
                } else {
                    String::new()
                },
                pass: (threads == 2).then_some(ratio >= 1.0),
                allocations: None,
            },
        );
        let stop = AtomicBool::new(false);
        let w7 = std::thread::scope(|scope| {
            let swapper = scope.spawn(|| swap_limits_every_millisecond(&shared, &stop));
            let w7 = median_ns(budget, threads, &|t, _| {
                stream_lifecycle(&shared, peers[t].peer)
            });
            stop.store(true, Ordering::Relaxed);
            let _swaps = swapper.join();
            w7
        });
        let slower = w7 / w3 - 1.0;
        print_row(
            &mut rows,
            Row {
                workload: format!("W7 W3 + limit swaps ({:+.1}%)", slower * 100.0),
                threads,
                ns_per_op: w7,
                target: "within 5% of W3".into(),
                pass: Some(slower <= 0.05),
                allocations: None,
            },
        );
        for (name, same_peer) in [("W3", false), ("W4", true)] {
            let ns = median_ns(budget, threads, &|t, _| {
                let index = if same_peer { 0 } else { t };
                reference_stream_lifecycle(&reference, reference_peer_list[index].0)
            });
            print_row(
                &mut rows,
                Row {
                    workload: format!("{name} reference (mutex)"),
                    threads,
                    ns_per_op: ns,
                    target: "baseline".into(),
                    pass: None,
                    allocations: None,
                },
            );
        }
    }

    // W5: a span on a peer scope, and in go's definition, a span on a stream with its
    // protocol and service set (the stream's own word and six parents).
    let peer_span = rcmgr_benches::peer_span(&rm, &peer);
    let (stream_span, _stream) = rcmgr_benches::stream_span(&rm, peer);
    for (workload, span, limit) in [
        ("W5 span reserve/release 1 KiB (peer)", &peer_span, 20.0),
        (
            "W5 span reserve/release 1 KiB (stream with protocol and service, go's W5)",
            &stream_span,
            40.0,
        ),
    ] {
        let ns = median_ns(budget, 1, &|_, _| span_memory(span));
        let allocations = allocations_per_op(100_000, |_| span_memory(span));
        print_row(
            &mut rows,
            Row {
                workload: workload.into(),
                threads: 1,
                ns_per_op: ns,
                target: format!("<= {limit} ns, no allocation"),
                pass: Some(ns <= limit && allocations == 0.0),
                allocations: Some(allocations),
            },
        );
    }

    // W6: peer churn. Three figures: the process's resident memory as the OS sees it; the same
    // after asking the allocator to hand its free lists back (glibc keeps freed memory cached,
    // which says nothing about rcmgr); and the live heap, counted by the allocator wrapper,
    // which is exactly what rcmgr still holds.
    let churn_rm = manager(ConcreteLimitConfig::infinite());
    let endpoint = rcmgr_benches::address(1);
    let peers = fresh_peers(budget.churn_peers);
    return_free_memory_to_the_os();
    let before = resident_memory();
    let heap = Region::new(ALLOCATOR);
    let began = Instant::now();
    for peer in &peers {
        connection_lifecycle(&churn_rm, &endpoint, *peer);
    }
    let took = began.elapsed();
    let during = resident_memory();
    churn_rm.gc();
    churn_rm.gc();
    let change = heap.change();
    let live = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let after_raw = resident_memory();
    return_free_memory_to_the_os();
    let after = resident_memory();
    let (growth, pass) = match (before, after) {
        (Some(before), Some(after)) => {
            let growth = after as f64 / before as f64 - 1.0;
            (format!("{:+.1}%", growth * 100.0), Some(growth <= 0.10))
        }
        _ => ("unknown".into(), None),
    };
    print_row(
        &mut rows,
        Row {
            workload: format!(
                "W6 {}k new peers, RSS {growth} after gc",
                budget.churn_peers / 1000
            ),
            threads: 1,
            ns_per_op: took.as_nanos() as f64 / budget.churn_peers as f64,
            target: "RSS within 10% after collection".into(),
            pass,
            allocations: None,
        },
    );
    println!(
        "    W6 resident memory: before {} MiB, after the churn {} MiB, after two collection passes {} MiB ({} MiB once the allocator returns its free lists); live heap still held: {live} bytes; {} peers listed",
        mib(before),
        mib(during),
        mib(after_raw),
        mib(after),
        churn_rm.list_peers().len()
    );
    drop(black_box(peers));

    // W8: a refused open_stream.
    let refused_peer = rcmgr::PeerId::random();
    let (full, _held) = full_system(refused_peer);
    let w8 = median_ns(budget, 1, &|_, _| {
        black_box(refused_open_stream(&full, refused_peer));
    });
    print_row(
        &mut rows,
        Row {
            workload: "W8 refused open_stream (system full)".into(),
            threads: 1,
            ns_per_op: w8,
            target: format!("<= W1 ({w1:.0} ns)"),
            pass: Some(w8 <= w1),
            allocations: Some(allocations_per_op(10_000, |_| {
                black_box(refused_open_stream(&full, refused_peer));
            })),
        },
    );

    let failed = rows.iter().filter(|r| r.pass == Some(false)).count();
    let checked = rows.iter().filter(|r| r.pass.is_some()).count();
    println!("{} of {checked} targets hold.", checked - failed);
}

fn print_row(rows: &mut Vec<Row>, row: Row) {
    row.print();
    rows.push(row);
}

/// Asks glibc's allocator to return the memory on its free lists to the OS (`malloc_trim`), so
/// that resident memory shows what the program holds rather than what the allocator caches.
#[cfg(target_os = "linux")]
fn return_free_memory_to_the_os() {
    // SAFETY: `malloc_trim` takes no pointers and only releases free memory the allocator
    // owns; it may be called at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_os = "linux"))]
fn return_free_memory_to_the_os() {}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| {
        format!("{:.1}", b as f64 / (1 << 20) as f64)
    })
}

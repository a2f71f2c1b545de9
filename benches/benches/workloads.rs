//! Criterion benchmarks of rcmgr's workloads W1-W8; docs/performance.md defines each one and
//! gives the figures measured here.
//!
//! Groups are named for the regime: `uncontended` (one thread) and `threads/N` (N threads
//! started together on a barrier, timed with `iter_custom` over the contended section only).
//! The lock-based reference manager runs beside rcmgr on W1, W3 and W4 as the baseline.
//!
//! Run with `cargo bench -p rcmgr-benches --bench workloads [-- <filter>]`.

use std::{
    hint::black_box,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rcmgr::{ConcreteLimitConfig, Direction, ResourceScope};
use rcmgr_benches::{
    ConnectionChurn, allowlist_workload, connected_peer, connection_lifecycle, disjoint_peers,
    fresh_peers, full_system, gated_limits, manager, metrics_manager, observed_manager,
    reference_peers, reference_stream_lifecycle, refused_open_stream, run_on_threads, span_memory,
    stream_lifecycle, swap_limits_every_millisecond, thread_levels,
};
use rcmgr_reference::ReferenceManager;

/// W1: the stream lifecycle on one thread, on a peer that holds an open connection; and the
/// same on the lock-based reference manager.
fn w1_stream_lifecycle(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = connected_peer(&rm, 0);
    let reference = ReferenceManager::new(ConcreteLimitConfig::infinite());
    let reference_peer = reference_peers(&reference, 1);
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("W1/stream-lifecycle", |b| {
        b.iter(|| stream_lifecycle(black_box(&rm), black_box(peer.peer)))
    });
    group.bench_function("W1/stream-lifecycle/reference", |b| {
        b.iter(|| reference_stream_lifecycle(black_box(&reference), reference_peer[0].0))
    });
    // The same with go's Prometheus metrics, then with metrics and a trace whose lines are
    // discarded: what observability costs the reservation path (the trace's writer thread
    // runs beside it).
    let (metered, _metered_registry) = metrics_manager(ConcreteLimitConfig::infinite());
    let metered_peer = connected_peer(&metered, 0);
    group.bench_function("W1/stream-lifecycle/metrics", |b| {
        b.iter(|| stream_lifecycle(black_box(&metered), black_box(metered_peer.peer)))
    });
    let (observed, _registry) = observed_manager(ConcreteLimitConfig::infinite(), std::io::sink());
    let observed_peer = connected_peer(&observed, 0);
    group.bench_function("W1/stream-lifecycle/observed", |b| {
        b.iter(|| stream_lifecycle(black_box(&observed), black_box(observed_peer.peer)))
    });
    group.finish();
}

/// W2: the connection lifecycle (open_connection, set_peer to one of 1,000 peers, drop) from
/// 1,000 addresses in turn, with go's per-IP limits and rate-limit rules on; and without any
/// address limit, to show what the gate costs.
fn w2_connection_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    for (name, limits) in [
        ("W2/connection-lifecycle", gated_limits()),
        (
            "W2/connection-lifecycle-ungated",
            ConcreteLimitConfig::infinite(),
        ),
    ] {
        let rm = manager(limits);
        let mut churn = ConnectionChurn::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let (endpoint, peer) = churn.next_connection();
                connection_lifecycle(black_box(&rm), black_box(endpoint), black_box(peer));
            })
        });
    }
    group.finish();
}

/// W3 (disjoint peers), W4 (one shared peer and protocol) and W7 (W3 while another thread
/// swaps the limits every millisecond) on 1, 2, 4, ... threads; W3 and W4 also on the
/// reference manager.
fn contended(c: &mut Criterion) {
    for threads in thread_levels() {
        let mut group = c.benchmark_group(format!("threads/{threads}"));
        group.throughput(Throughput::Elements(1));

        let rm = manager(ConcreteLimitConfig::infinite());
        let peers = disjoint_peers(&rm, threads);
        group.bench_function(BenchmarkId::new("W3/disjoint-peers", threads), |b| {
            b.iter_custom(|iters| {
                run_on_threads(threads, iters, |t, n| {
                    (0..n).for_each(|_| stream_lifecycle(&rm, peers[t].peer))
                })
            })
        });
        group.bench_function(BenchmarkId::new("W4/same-peer", threads), |b| {
            b.iter_custom(|iters| {
                run_on_threads(threads, iters, |_, n| {
                    (0..n).for_each(|_| stream_lifecycle(&rm, peers[0].peer))
                })
            })
        });
        group.bench_function(
            BenchmarkId::new("W7/disjoint-peers-with-limit-swaps", threads),
            |b| {
                b.iter_custom(|iters| {
                    let stop = AtomicBool::new(false);
                    std::thread::scope(|scope| {
                        let swapper = scope.spawn(|| swap_limits_every_millisecond(&rm, &stop));
                        let elapsed = run_on_threads(threads, iters, |t, n| {
                            (0..n).for_each(|_| stream_lifecycle(&rm, peers[t].peer))
                        });
                        stop.store(true, Ordering::Relaxed);
                        let _swaps = swapper.join();
                        elapsed
                    })
                })
            },
        );

        let reference = ReferenceManager::new(ConcreteLimitConfig::infinite());
        let reference_peers = reference_peers(&reference, threads);
        group.bench_function(
            BenchmarkId::new("W3/disjoint-peers/reference", threads),
            |b| {
                b.iter_custom(|iters| {
                    run_on_threads(threads, iters, |t, n| {
                        (0..n).for_each(|_| {
                            reference_stream_lifecycle(&reference, reference_peers[t].0)
                        })
                    })
                })
            },
        );
        group.bench_function(BenchmarkId::new("W4/same-peer/reference", threads), |b| {
            b.iter_custom(|iters| {
                run_on_threads(threads, iters, |_, n| {
                    (0..n)
                        .for_each(|_| reference_stream_lifecycle(&reference, reference_peers[0].0))
                })
            })
        });
        group.finish();
    }
}

/// W5: reserve and release 1 KiB on a span. go's W5 is a span on a stream with its protocol
/// and service set (the stream's own word and six parents); the span on a peer scope is how a
/// muxer's buffers are held (yamux begins its spans on the peer); spans on the system scope
/// and on a stream with a protocol only show how the cost follows the length of the path.
fn w5_span_memory(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = connected_peer(&rm, 0);
    let mut stream = rm
        .open_stream(peer.peer, Direction::Inbound)
        .unwrap_or_else(|err| panic!("W5 stream: {err}"));
    stream
        .set_protocol(rcmgr_benches::PROTOCOL)
        .unwrap_or_else(|err| panic!("W5 set_protocol: {err}"));
    let (served, _served_stream) = rcmgr_benches::stream_span(&rm, peer.peer);
    let spans = [
        ("W5/span-on-stream-with-service", Ok(served)),
        ("W5/span-on-peer", rm.peer(&peer.peer).begin_span()),
        ("W5/span-on-system", rm.system().begin_span()),
        ("W5/span-on-stream", stream.begin_span()),
    ];
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    for (name, span) in spans {
        let span = span.unwrap_or_else(|err| panic!("{name}: {err}"));
        group.bench_function(name, |b| b.iter(|| span_memory(black_box(&span))));
    }
    group.finish();
}

/// W6: peer churn. Every iteration is a peer never seen before opening and closing one
/// connection; a collection pass runs outside the timed section every 100,000 peers, as the
/// background collector would. (bench-report runs the full 1,000,000 peers and compares the
/// resident memory before and after.)
fn w6_peer_churn(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let endpoint = rcmgr_benches::address(1);
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("W6/peer-churn", |b| {
        b.iter_custom(|iters| {
            let peers = fresh_peers(iters as usize);
            let mut elapsed = Duration::ZERO;
            for batch in peers.chunks(100_000) {
                let began = Instant::now();
                for peer in batch {
                    connection_lifecycle(&rm, &endpoint, *peer);
                }
                elapsed += began.elapsed();
                rm.gc();
                rm.gc();
            }
            elapsed
        })
    });
    group.finish();
}

/// W8: an `open_stream` refused because the system scope is full: what saying no to an
/// attacker costs.
fn w8_refused_open_stream(c: &mut Criterion) {
    let peer = rcmgr::PeerId::random();
    let (rm, _held) = full_system(peer);
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("W8/refused-open-stream", |b| {
        b.iter(|| refused_open_stream(black_box(&rm), black_box(peer)))
    });
    group.finish();
}

/// The gate alone: a gated open_connection and its drop (rate limit, per-IP count, transient
/// and system), with no peer.
fn gated_open_connection(c: &mut Criterion) {
    let rm = manager(gated_limits());
    let mut churn = ConnectionChurn::new();
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("gate/open-connection", |b| {
        b.iter(|| {
            let (endpoint, _) = churn.next_connection();
            let conn = rm
                .open_connection(Direction::Inbound, true, black_box(endpoint))
                .unwrap_or_else(|err| panic!("gate/open-connection: {err}"));
            drop(black_box(conn));
        })
    });
    group.finish();
}

/// go's BenchmarkAllowlistCheck: `allowed` on 100,000 addresses in turn against an allowlist
/// of 1,000 of them.
fn allowlist_check(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let addresses = allowlist_workload(&rm);
    let mut next = 0;
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("allowlist/allowed-1000-entries", |b| {
        b.iter(|| {
            next = (next + 1) % addresses.len();
            black_box(rm.allowlist().allowed(black_box(&addresses[next])))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    w1_stream_lifecycle,
    w2_connection_lifecycle,
    contended,
    w5_span_memory,
    w6_peer_churn,
    w8_refused_open_stream,
    gated_open_connection,
    allowlist_check
);
criterion_main!(benches);

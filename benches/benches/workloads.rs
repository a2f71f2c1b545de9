//! Criterion benchmarks of rcmgr's workloads; docs/performance.md defines each one.
//!
//! Run with `cargo bench -p rcmgr-benches --bench workloads`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcmgr::{ConcreteLimitConfig, Direction, ResourceScope};
use rcmgr_benches::{
    ConnectionChurn, allowlist_workload, connected_peer, connection_lifecycle, gated_limits,
    manager, span_memory, stream_lifecycle,
};

/// W1: the stream lifecycle on one thread, on a peer that holds an open connection.
fn w1_stream_lifecycle(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = connected_peer(&rm, 0);
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("W1/stream-lifecycle", |b| {
        b.iter(|| stream_lifecycle(black_box(&rm), black_box(peer.peer)))
    });
    group.finish();
}

/// W5: reserve and release 1 KiB on a span. The span lives on a peer scope, as a muxer's
/// buffers do (yamux begins its spans on the peer); spans on the system scope and on a
/// negotiated stream show how the cost follows the length of the path.
fn w5_span_memory(c: &mut Criterion) {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = connected_peer(&rm, 0);
    let mut stream = rm
        .open_stream(peer.peer, rcmgr::Direction::Inbound)
        .unwrap_or_else(|err| panic!("W5 stream: {err}"));
    stream
        .set_protocol(rcmgr_benches::PROTOCOL)
        .unwrap_or_else(|err| panic!("W5 set_protocol: {err}"));
    let spans = [
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
    gated_open_connection,
    allowlist_check,
    w5_span_memory
);
criterion_main!(benches);

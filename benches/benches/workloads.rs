//! Criterion benchmarks of rcmgr's workloads; docs/performance.md defines each one.
//!
//! Run with `cargo bench -p rcmgr-benches --bench workloads`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcmgr::{ConcreteLimitConfig, ResourceScope};
use rcmgr_benches::{connected_peer, manager, span_memory, stream_lifecycle};

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

criterion_group!(benches, w1_stream_lifecycle, w5_span_memory);
criterion_main!(benches);

//! Shared setup for rcmgr's benchmarks: the workloads of docs/performance.md, written once so
//! that the criterion benches and the `bench-report` summary measure the same operations.

#![forbid(unsafe_code)]

use std::{
    sync::{
        Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rcmgr::{
    ConcreteLimitConfig, ConnRateLimits, ConnectionScope, Direction, Error, IpLimits, Multiaddr,
    PeerId, Priority, RateLimit, ResourceManager, ResourceScope, Span,
};
use rcmgr_reference::{Connection as ReferenceConnection, ReferenceManager};

/// The protocol every W1 stream negotiates.
pub const PROTOCOL: &str = "/ipfs/ping/1.0.0";
/// The service every W1 stream joins.
pub const SERVICE: &str = "libp2p.ping";

/// A manager for benchmarks: the given limits, no background collector (a pass in the
/// middle of a measurement would be noise).
pub fn manager(limits: ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits)
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .unwrap_or_else(|err| panic!("benchmark manager: {err}"))
}

/// A manager for the metrics variant of W1: [`manager`]'s options plus go's Prometheus
/// metrics (`rcmgr-prometheus`, registered on the returned registry, which a scrape would
/// encode). The reporter's callbacks run on the calling thread; its gauges are read at scrape
/// time.
pub fn metrics_manager(
    limits: ConcreteLimitConfig,
) -> (ResourceManager, prometheus_client::registry::Registry) {
    with_prometheus(ResourceManager::builder(limits))
}

/// A manager for the observed variant of W1: [`metrics_manager`]'s options plus a trace whose
/// lines go to `trace` (`std::io::sink()` to measure the recording alone). Every operation
/// then also records its trace events and hands them to the trace's thread.
pub fn observed_manager(
    limits: ConcreteLimitConfig,
    trace: impl std::io::Write + Send + 'static,
) -> (ResourceManager, prometheus_client::registry::Registry) {
    with_prometheus(ResourceManager::builder(limits).trace(trace))
}

fn with_prometheus(
    builder: rcmgr::ResourceManagerBuilder,
) -> (ResourceManager, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::default();
    let rm = rcmgr_prometheus::PrometheusReporter::install(
        builder.gc_interval(std::time::Duration::ZERO),
        &mut registry,
    )
    .unwrap_or_else(|err| panic!("benchmark manager: {err}"));
    (rm, registry)
}

/// A peer with an open, attached inbound connection, as W1 and W3 require.
#[derive(Debug)]
pub struct ConnectedPeer {
    /// The peer.
    pub peer: PeerId,
    /// Its connection, held for the whole benchmark.
    pub conn: ConnectionScope,
}

/// `/ip4/10.0.x.y/tcp/4001`, a distinct address for each `index` below 62,500.
pub fn address(index: u32) -> Multiaddr {
    format!("/ip4/10.0.{}.{}/tcp/4001", index / 250, index % 250 + 1)
        .parse()
        .unwrap_or_else(|err| panic!("benchmark address: {err}"))
}

/// Opens an inbound connection from a fresh peer and attaches it.
pub fn connected_peer(rm: &ResourceManager, index: u32) -> ConnectedPeer {
    let peer = PeerId::random();
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &address(index))
        .unwrap_or_else(|err| panic!("benchmark connection: {err}"));
    conn.set_peer(peer)
        .unwrap_or_else(|err| panic!("benchmark set_peer: {err}"));
    ConnectedPeer { peer, conn }
}

/// W1's body, written once for the engine and for the lock-based reference manager (whose
/// API mirrors the engine's): open an inbound stream, negotiate its protocol and service,
/// reserve and release a 4 KiB buffer, drop the stream.
macro_rules! stream_lifecycle_body {
    ($rm:expr, $peer:expr) => {{
        let mut stream = $rm
            .open_stream($peer, Direction::Inbound)
            .unwrap_or_else(|err| panic!("W1 open_stream: {err}"));
        stream
            .set_protocol(PROTOCOL)
            .unwrap_or_else(|err| panic!("W1 set_protocol: {err}"));
        stream
            .set_service(SERVICE)
            .unwrap_or_else(|err| panic!("W1 set_service: {err}"));
        stream
            .reserve_memory(4096, Priority::HIGH)
            .unwrap_or_else(|err| panic!("W1 reserve_memory: {err}"));
        stream.release_memory(4096);
        drop(stream);
    }};
}

/// W1, one iteration, on rcmgr.
#[inline]
pub fn stream_lifecycle(rm: &ResourceManager, peer: PeerId) {
    stream_lifecycle_body!(rm, peer)
}

/// W1, one iteration, on the lock-based reference manager: the "one global mutex" baseline.
#[inline]
pub fn reference_stream_lifecycle(rm: &ReferenceManager, peer: PeerId) {
    use rcmgr_reference::Scope as _;
    stream_lifecycle_body!(rm, peer)
}

/// A reference manager with a peer holding an open, attached connection per thread, for the
/// baseline runs of W1, W3 and W4.
pub fn reference_peers(rm: &ReferenceManager, count: usize) -> Vec<(PeerId, ReferenceConnection)> {
    (0..count)
        .map(|index| {
            let peer = PeerId::random();
            let mut conn = rm
                .open_connection(Direction::Inbound, true, &address(index as u32))
                .unwrap_or_else(|err| panic!("reference connection: {err}"));
            conn.set_peer(peer)
                .unwrap_or_else(|err| panic!("reference set_peer: {err}"));
            (peer, conn)
        })
        .collect()
}

/// W5's span in go's definition: a span on a stream whose protocol and service are set, so
/// that a reservation passes the span, the stream and the stream's six parents (peer,
/// protocol-peer, service-peer, protocol, service, system). Returns the span and the stream
/// (which must outlive the measurement; the span keeps it alive anyway).
pub fn stream_span(rm: &ResourceManager, peer: PeerId) -> (Span, rcmgr::StreamScope) {
    let mut stream = rm
        .open_stream(peer, Direction::Inbound)
        .unwrap_or_else(|err| panic!("W5 open_stream: {err}"));
    stream
        .set_protocol(PROTOCOL)
        .unwrap_or_else(|err| panic!("W5 set_protocol: {err}"));
    stream
        .set_service(SERVICE)
        .unwrap_or_else(|err| panic!("W5 set_service: {err}"));
    let span = stream
        .begin_span()
        .unwrap_or_else(|err| panic!("W5 span: {err}"));
    (span, stream)
}

/// W5's span on a peer scope (its parents: the peer and system).
pub fn peer_span(rm: &ResourceManager, peer: &PeerId) -> Span {
    rm.peer(peer)
        .begin_span()
        .unwrap_or_else(|err| panic!("W5 span: {err}"))
}

/// W5, one iteration: reserve and release 1 KiB on a span.
#[inline]
pub fn span_memory(span: &Span) {
    span.reserve_memory(1024, Priority::MEDIUM)
        .unwrap_or_else(|err| panic!("W5 reserve_memory: {err}"));
    span.release_memory(1024);
}

/// The limits of the gated workloads (W2): unlimited scopes, go's per-IP limits (8 per IPv4
/// address, ...) and go's connection rate-limit rules (loopback exempt, one bucket per IPv4
/// address, two per IPv6 address) at a rate no benchmark reaches. Every iteration pays for
/// the counters and the buckets exactly as with go's numbers, and none is refused.
pub fn gated_limits() -> ConcreteLimitConfig {
    let never_reached = RateLimit {
        rps: 1e9,
        burst: 1 << 20,
    };
    let mut rate = ConnRateLimits::default();
    for rule in rate.subnet_v4.iter_mut().chain(rate.subnet_v6.iter_mut()) {
        rule.limit = never_reached;
    }
    let mut limits = ConcreteLimitConfig::infinite();
    limits.ip = IpLimits::default();
    limits.ip.rate = rate;
    limits
}

/// W2's inputs: 1,000 remote addresses `/ip4/10.x.y.z/tcp/4001` and 1,000 peers, taken in
/// turn.
#[derive(Debug)]
pub struct ConnectionChurn {
    endpoints: Vec<Multiaddr>,
    peers: Vec<PeerId>,
    next: usize,
}

impl ConnectionChurn {
    /// The addresses and peers W2 cycles through.
    pub const SIZE: usize = 1_000;

    /// Fresh addresses and peers.
    pub fn new() -> Self {
        let endpoints = (0..Self::SIZE)
            .map(|i| {
                format!(
                    "/ip4/10.{}.{}.{}/tcp/4001",
                    i / 62_500,
                    i / 250 % 250,
                    i % 250 + 1
                )
                .parse()
                .unwrap_or_else(|err| panic!("W2 address: {err}"))
            })
            .collect();
        let peers = (0..Self::SIZE).map(|_| PeerId::random()).collect();
        ConnectionChurn {
            endpoints,
            peers,
            next: 0,
        }
    }

    /// The next address and peer.
    #[inline]
    pub fn next_connection(&mut self) -> (&Multiaddr, PeerId) {
        let i = self.next;
        self.next = (i + 1) % Self::SIZE;
        self.connection(i)
    }

    /// The address and peer of the `i`-th connection (taken in turn, modulo [`Self::SIZE`]).
    #[inline]
    pub fn connection(&self, i: usize) -> (&Multiaddr, PeerId) {
        let i = i % Self::SIZE;
        (&self.endpoints[i], self.peers[i])
    }
}

impl Default for ConnectionChurn {
    fn default() -> Self {
        Self::new()
    }
}

/// W2, one iteration: open an inbound connection with a file descriptor, attach it to its
/// peer, drop it.
#[inline]
pub fn connection_lifecycle(rm: &ResourceManager, endpoint: &Multiaddr, peer: PeerId) {
    let mut conn = rm
        .open_connection(Direction::Inbound, true, endpoint)
        .unwrap_or_else(|err| panic!("W2 open_connection: {err}"));
    conn.set_peer(peer)
        .unwrap_or_else(|err| panic!("W2 set_peer: {err}"));
    drop(conn);
}

/// A small deterministic generator (splitmix64), so that benchmark inputs are the same on
/// every run without a dependency.
#[derive(Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// go's `BenchmarkAllowlistCheck` inputs: 100,000 random addresses (one in twenty IPv6, one in
/// ten with a `/p2p` peer), of which every hundredth, 1,000 in all, is added to the manager's
/// allowlist; looking the addresses up in turn hits one time in a hundred.
pub fn allowlist_workload(rm: &ResourceManager) -> Vec<Multiaddr> {
    const ADDRESSES: usize = 100_000;
    let mut random = SplitMix::new(0x5eed);
    let addresses: Vec<Multiaddr> = (0..ADDRESSES)
        .map(|i| {
            let ip = if i % 20 == 0 {
                let bits = u128::from(random.next_u64()) << 64 | u128::from(random.next_u64());
                format!("/ip6/{}", std::net::Ipv6Addr::from(bits))
            } else {
                format!(
                    "/ip4/{}",
                    std::net::Ipv4Addr::from(random.next_u64() as u32)
                )
            };
            let address = if i % 10 == 0 {
                format!("{ip}/p2p/{}", PeerId::random())
            } else {
                ip
            };
            address
                .parse()
                .unwrap_or_else(|err| panic!("allowlist address {address}: {err}"))
        })
        .collect();
    for entry in addresses.iter().step_by(100) {
        rm.allowlist()
            .add(entry)
            .unwrap_or_else(|err| panic!("allowlist entry: {err}"));
    }
    addresses
}

/// Runs `work(thread, iterations)` on `threads` threads started together on a barrier, and
/// returns the wall time from the barrier's release until the last thread finished: the
/// contended section only, as criterion's `iter_custom` wants it. `iterations` are shared
/// out as evenly as possible.
pub fn run_on_threads(
    threads: usize,
    iterations: u64,
    work: impl Fn(usize, u64) + Sync,
) -> Duration {
    let threads = threads.max(1);
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let (start, work) = (&start, &work);
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share = iterations / threads as u64
                    + u64::from((thread as u64) < iterations % threads as u64);
                scope.spawn(move || {
                    start.wait();
                    work(thread, share);
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for handle in handles {
            assert!(handle.join().is_ok(), "a benchmark thread panicked");
        }
        began.elapsed()
    })
}

/// The thread counts of the contended workloads: 1, 2, 4, ... up to the machine's
/// parallelism (which is included even when it is not a power of two).
pub fn thread_levels() -> Vec<usize> {
    let most = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut levels: Vec<usize> = std::iter::successors(Some(1), |n| Some(n * 2))
        .take_while(|n| *n <= most)
        .collect();
    if levels.last() != Some(&most) {
        levels.push(most);
    }
    levels
}

/// W3's setup: one connected peer per thread (the peers are disjoint).
pub fn disjoint_peers(rm: &ResourceManager, threads: usize) -> Vec<ConnectedPeer> {
    (0..threads).map(|t| connected_peer(rm, t as u32)).collect()
}

/// W7's background: swaps the manager's limits between two equivalent configurations every
/// millisecond until `stop` is set, so that every scope keeps refreshing its cached limit.
pub fn swap_limits_every_millisecond(rm: &ResourceManager, stop: &AtomicBool) -> u64 {
    let mut a = ConcreteLimitConfig::infinite();
    let mut b = ConcreteLimitConfig::infinite();
    a.system.streams = u64::from(u32::MAX);
    b.system.streams = u64::from(u32::MAX) - 1;
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        rm.set_limits(if swaps % 2 == 0 { a.clone() } else { b.clone() });
        swaps += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    swaps
}

/// W8's setup: a manager whose system scope is full (it admits one inbound stream, and one is
/// held), and the stream that fills it; every further `open_stream` is refused at the system
/// scope, after the peer and transient scopes took it and had to give it back.
pub fn full_system(peer: PeerId) -> (ResourceManager, rcmgr::StreamScope) {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.streams_inbound = 1;
    let rm = manager(limits);
    let held = rm
        .open_stream(peer, Direction::Inbound)
        .unwrap_or_else(|err| panic!("W8 setup: {err}"));
    (rm, held)
}

/// W8, one iteration: an `open_stream` the full system scope refuses.
#[inline]
pub fn refused_open_stream(rm: &ResourceManager, peer: PeerId) -> Error {
    match rm.open_stream(peer, Direction::Inbound) {
        Ok(_) => panic!("W8: the system scope should be full"),
        Err(err) => err,
    }
}

/// W6's inputs: `count` distinct peers, each to open and close one connection.
pub fn fresh_peers(count: usize) -> Vec<PeerId> {
    (0..count).map(|_| PeerId::random()).collect()
}

/// The process's resident memory in bytes (Linux: `VmRSS` in /proc/self/status), or `None`
/// where that cannot be read.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

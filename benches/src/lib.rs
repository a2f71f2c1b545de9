//! Shared setup for rcmgr's benchmarks: the workloads of docs/performance.md, written once so
//! that the criterion benches and the `bench-report` summary measure the same operations.

use rcmgr::{
    ConcreteLimitConfig, ConnRateLimits, ConnectionScope, Direction, IpLimits, Multiaddr, PeerId,
    Priority, RateLimit, ResourceManager, ResourceScope, Span,
};

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

/// A peer with an open, attached inbound connection, as W1 and W3 require.
#[derive(Debug)]
pub struct ConnectedPeer {
    /// The peer.
    pub peer: PeerId,
    /// Its connection, held for the whole benchmark.
    pub conn: ConnectionScope,
}

/// Opens an inbound connection from a fresh peer and attaches it.
pub fn connected_peer(rm: &ResourceManager, index: u32) -> ConnectedPeer {
    let peer = PeerId::random();
    let addr: Multiaddr = format!("/ip4/10.0.{}.{}/tcp/4001", index / 250, index % 250 + 1)
        .parse()
        .unwrap_or_else(|err| panic!("benchmark address: {err}"));
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr)
        .unwrap_or_else(|err| panic!("benchmark connection: {err}"));
    conn.set_peer(peer)
        .unwrap_or_else(|err| panic!("benchmark set_peer: {err}"));
    ConnectedPeer { peer, conn }
}

/// W1, one iteration: open an inbound stream, negotiate its protocol and service, reserve
/// and release a 4 KiB buffer, drop the stream.
#[inline]
pub fn stream_lifecycle(rm: &ResourceManager, peer: PeerId) {
    let mut stream = rm
        .open_stream(peer, Direction::Inbound)
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

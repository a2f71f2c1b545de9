//! Shared setup for rcmgr's benchmarks: the workloads of docs/performance.md, written once so
//! that the criterion benches and the `bench-report` summary measure the same operations.

use rcmgr::{
    ConcreteLimitConfig, ConnectionScope, Direction, Multiaddr, PeerId, Priority, ResourceManager,
    ResourceScope, Span,
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

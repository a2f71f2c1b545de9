//! Stream limits on real swarms: per-protocol and per-peer inbound limits refuse the extra
//! stream while the connection and the other protocols keep working, dropping a stream frees
//! its slot, outbound refusals carry rcmgr's error, and the stream guard API does the same
//! for applications whose transport is not wrapped.

mod common;

use common::{
    Net, Protocols, Running, assert_all_released, eventually, hold_inbound, open, show,
    unwrapped_swarm,
};
use futures::{AsyncReadExt, StreamExt};
use libp2p::StreamProtocol;
use libp2p_stream::OpenStreamError;
use rcmgr::{BaseLimit, ConcreteLimitConfig, Direction, ResourceManager, ResourceScope};

const HOLD: &str = "/hold/1.0.0";
const OTHER: &str = "/other/1.0.0";

fn unlimited() -> ResourceManager {
    ResourceManager::new(ConcreteLimitConfig::infinite())
}

fn inbound_streams(limit: u64) -> BaseLimit {
    BaseLimit {
        streams_inbound: limit,
        ..BaseLimit::unlimited()
    }
}

/// A server with `limits` that holds every stream of [`HOLD`] and [`OTHER`], and a client
/// connected to it.
async fn server_and_client(net: Net, limits: ConcreteLimitConfig) -> (Running, Running) {
    let server = Running::server(net, &ResourceManager::new(limits), Protocols::NONE).await;
    hold_inbound(&server, HOLD);
    hold_inbound(&server, OTHER);
    let mut client = Running::client(net, &unlimited(), Protocols::NONE);
    client.connect(server.address(), server.peer).await;
    (server, client)
}

/// The per-protocol test on `net`.
async fn per_protocol_limit_refuses_only_that_protocol(net: Net) {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.protocol.insert(HOLD.into(), inbound_streams(2));
    let (server, client) = server_and_client(net, limits).await;
    let rm = server.rm.clone();

    let mut held = vec![
        open(&client, server.peer, HOLD)
            .await
            .expect("the first stream"),
        open(&client, server.peer, HOLD)
            .await
            .expect("the second stream"),
    ];
    let refused = open(&client, server.peer, HOLD).await;
    assert!(
        refused.is_err(),
        "the third stream should be refused, got {}",
        show(&refused)
    );
    assert_eq!(rm.protocol(HOLD).stat().streams_inbound, 2);

    // The connection and the other protocols keep working.
    let other = open(&client, server.peer, OTHER)
        .await
        .expect("another protocol");
    let other_too = open(&client, server.peer, OTHER)
        .await
        .expect("another protocol again");
    assert_eq!(rm.protocol(OTHER).stat().streams_inbound, 2);
    assert_eq!(rm.peer(&client.peer).stat().streams_inbound, 4);
    let client_peer = client.peer;
    assert!(
        server
            .call(move |swarm| swarm.is_connected(&client_peer))
            .await
    );

    // Dropping a stream frees its slot.
    drop(held.pop());
    eventually("the dropped stream to be released", || {
        rm.protocol(HOLD).stat().streams_inbound == 1
    })
    .await;
    held.push(
        open(&client, server.peer, HOLD)
            .await
            .expect("a stream in the freed slot"),
    );
    assert_eq!(rm.protocol(HOLD).stat().streams_inbound, 2);
    // Everything the server holds went through a protocol: nothing is stuck in transient.
    assert!(rm.transient().stat().is_empty());

    let client_rm = client.rm.clone();
    drop((held, other, other_too));
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&rm, &client_rm]).await;
}

#[tokio::test]
async fn a_per_protocol_inbound_limit_refuses_the_extra_stream_of_that_protocol_only() {
    per_protocol_limit_refuses_only_that_protocol(Net::Memory).await;
}

#[tokio::test]
async fn a_per_protocol_inbound_limit_holds_on_quic() {
    per_protocol_limit_refuses_only_that_protocol(Net::Quic).await;
}

#[tokio::test]
async fn a_per_peer_inbound_limit_refuses_the_extra_stream_while_other_peers_keep_working() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default = inbound_streams(3);
    let (server, client) = server_and_client(Net::Tcp, limits).await;
    let rm = server.rm.clone();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            open(&client, server.peer, HOLD)
                .await
                .expect("a stream within the limit"),
        );
    }
    for protocol in [HOLD, OTHER] {
        let refused = open(&client, server.peer, protocol).await;
        assert!(
            refused.is_err(),
            "a fourth stream should be refused, got {}",
            show(&refused)
        );
    }
    assert_eq!(rm.peer(&client.peer).stat().streams_inbound, 3);
    let client_peer = client.peer;
    assert!(
        server
            .call(move |swarm| swarm.is_connected(&client_peer))
            .await
    );

    // Another peer has a scope of its own.
    let mut neighbour = Running::client(Net::Tcp, &unlimited(), Protocols::NONE);
    neighbour.connect(server.address(), server.peer).await;
    let theirs = open(&neighbour, server.peer, HOLD)
        .await
        .expect("another peer's stream");
    assert_eq!(rm.peer(&neighbour.peer).stat().streams_inbound, 1);

    drop(held.pop());
    eventually("the dropped stream to be released", || {
        rm.peer(&client_peer).stat().streams_inbound == 2
    })
    .await;
    held.push(
        open(&client, server.peer, OTHER)
            .await
            .expect("a stream in the freed slot"),
    );

    let managers = [rm.clone(), client.rm.clone(), neighbour.rm.clone()];
    drop((held, theirs));
    for node in [server, client, neighbour] {
        node.shutdown().await;
    }
    assert_all_released(&managers.iter().collect::<Vec<_>>()).await;
}

/// Counts the streams a manager opened and refused, through its metrics callbacks.
#[derive(Debug, Default)]
struct StreamCounts {
    allowed: std::sync::atomic::AtomicU64,
    blocked: std::sync::atomic::AtomicU64,
}

impl rcmgr::MetricsReporter for StreamCounts {
    fn allow_stream(&self, _peer: &rcmgr::PeerId, _direction: Direction) {
        self.allowed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn block_stream(&self, _peer: &rcmgr::PeerId, _direction: Direction) {
        self.blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl StreamCounts {
    fn allowed(&self) -> u64 {
        self.allowed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The failure a local refusal gives libp2p-stream: the protocol is "not supported".
fn assert_unsupported(result: Result<libp2p::Stream, OpenStreamError>) {
    match result {
        Err(OpenStreamError::UnsupportedProtocol(_)) => {}
        other => panic!("expected the stream to be refused as unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn outbound_refusals_are_final_and_send_nothing() {
    let counts = std::sync::Arc::new(StreamCounts::default());
    let server_rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
        .metrics(std::sync::Arc::clone(&counts) as std::sync::Arc<dyn rcmgr::MetricsReporter>)
        .build()
        .expect("valid options");
    let server = Running::server(Net::Memory, &server_rm, Protocols::NONE).await;
    hold_inbound(&server, HOLD);
    hold_inbound(&server, OTHER);
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default.streams_outbound = 2;
    limits.protocol.insert(
        HOLD.into(),
        BaseLimit {
            streams_outbound: 1,
            ..BaseLimit::unlimited()
        },
    );
    let client_rm = ResourceManager::new(limits);
    let mut client = Running::client(Net::Memory, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;

    // The dialer's scope moves into the protocol it proposes.
    let first = open(&client, server.peer, HOLD)
        .await
        .expect("the first stream");
    assert_eq!(client_rm.protocol(HOLD).stat().streams_outbound, 1);
    eventually("the server to account the first stream", || {
        counts.allowed() == 1
    })
    .await;

    // The protocol scope refuses the proposal before it is written: the server never hears
    // of the stream, and the handler is told the protocol is not supported.
    assert_unsupported(open(&client, server.peer, HOLD).await);
    assert_eq!(client_rm.protocol(HOLD).stat().streams_outbound, 1);

    // The peer scope refuses before anything is opened.
    let second = open(&client, server.peer, OTHER)
        .await
        .expect("a stream of another protocol");
    eventually("the server to account the second stream", || {
        counts.allowed() == 2
    })
    .await;
    assert_unsupported(open(&client, server.peer, OTHER).await);
    assert_eq!(client_rm.peer(&server.peer).stat().streams_outbound, 2);

    // A freed slot takes the next stream, which may go out on the substream the refused
    // proposal left unused.
    drop(first);
    eventually("the freed slot", || {
        client_rm.protocol(HOLD).stat().streams_outbound == 0
    })
    .await;
    let again = open(&client, server.peer, HOLD)
        .await
        .expect("a stream in the freed slot");
    eventually("the server to account it", || counts.allowed() == 3).await;
    // The server saw exactly the three streams that were allowed, no more.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(counts.allowed(), 3);
    assert_eq!(counts.blocked.load(std::sync::atomic::Ordering::Relaxed), 0);

    drop((second, again));
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

#[tokio::test]
async fn the_stream_guard_limits_libp2p_stream_protocols_on_a_transport_that_is_not_wrapped() {
    const GUARDED: &str = "/guarded/1.0.0";
    let mut limits = ConcreteLimitConfig::infinite();
    limits.protocol.insert(GUARDED.into(), inbound_streams(1));
    let server_rm = ResourceManager::new(limits);
    let swarm = unwrapped_swarm(Net::Memory, &server_rm, Protocols::NONE);
    let server = Running::listening(swarm, Net::Memory, &server_rm).await;

    // The application guards each stream it accepts and drops the ones rcmgr refuses.
    let mut incoming = server
        .control
        .clone()
        .accept(StreamProtocol::new(GUARDED))
        .expect("not yet accepted");
    let rm = server_rm.clone();
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let Ok(guard) = rcmgr_libp2p::StreamGuard::open(&rm, peer, Direction::Inbound, GUARDED)
            else {
                continue;
            };
            let mut stream = guard.bind(stream);
            tokio::spawn(async move {
                let mut sink = [0u8; 16];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });

    let client_rm = unlimited();
    let mut client = Running::client(Net::Memory, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;
    assert_eq!(server_rm.peer(&client.peer).stat().conns_inbound, 1);

    let kept = open(&client, server.peer, GUARDED).await.expect("a stream");
    eventually("the guard to be taken", || {
        server_rm.protocol(GUARDED).stat().streams_inbound == 1
    })
    .await;
    // Without the wrapper the stream opens, and the application's refusal resets it.
    let mut dropped = open(&client, server.peer, GUARDED).await.expect("a stream");
    let mut byte = [0u8; 1];
    let read = common::within("the refused stream to end", dropped.read(&mut byte)).await;
    assert!(
        !matches!(read, Ok(1)),
        "the refused stream should end, got {read:?}"
    );
    assert_eq!(server_rm.protocol(GUARDED).stat().streams_inbound, 1);

    drop(kept);
    eventually("the guard to be released", || {
        server_rm.protocol(GUARDED).stat().streams_inbound == 0
    })
    .await;

    drop(dropped);
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

//! A closing connection ends the scopes of all its streams at once, whether or not the
//! application still holds the streams, and the application's streams then report the end:
//! a local close (`disconnect_peer_id`), the remote's close, and a remote that vanishes.

#![allow(
    clippy::print_stdout,
    reason = "the measured numbers are printed for whoever runs the test"
)]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Net, Protocols, Running, assert_all_released, nothing_held, open};
use futures::{AsyncReadExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol, swarm::SwarmEvent};
use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};

const HOLD: &str = "/hold/1.0.0";
/// Streams the client opens and both sides hold.
const STREAMS: usize = 8;
/// How soon after the close every count must be back to zero.
const AT_ONCE: Duration = Duration::from_secs(1);

type Held = Arc<Mutex<Vec<Stream>>>;

/// Accepts `HOLD` on `node` and keeps every stream without reading it, as an application
/// that holds its streams and is not looking at them.
fn keep_inbound(node: &Running) -> Held {
    let held: Held = Arc::default();
    let mut incoming = node
        .control
        .clone()
        .accept(StreamProtocol::new(HOLD))
        .expect("not yet accepted");
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Some((_peer, stream)) = incoming.next().await {
            keep.lock().expect("not poisoned").push(stream);
        }
    });
    held
}

/// A server and a client connected over `net`, both with unlimited limits, the client holding
/// [`STREAMS`] streams to the server and the server holding their other ends.
async fn connected_with_streams(net: Net) -> (Running, Running, Vec<Stream>, Held) {
    let server_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let server = Running::server(net, &server_rm, Protocols::NONE).await;
    let server_held = keep_inbound(&server);
    let client_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut client = Running::client(net, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;
    let mut client_held = Vec::new();
    for _ in 0..STREAMS {
        client_held.push(open(&client, server.peer, HOLD).await.expect("a stream"));
    }
    common::eventually("the server to hold every stream", || {
        server_held.lock().expect("not poisoned").len() == STREAMS
    })
    .await;
    assert_eq!(
        server_rm.peer(&client.peer).stat().streams_inbound as usize,
        STREAMS
    );
    assert_eq!(
        client_rm.peer(&server.peer).stat().streams_outbound as usize,
        STREAMS
    );
    (server, client, client_held, server_held)
}

/// Waits up to [`AT_ONCE`] for every count of `rm` to be zero; panics with the counts
/// otherwise. Returns how long it took.
async fn zero_at_once(rm: &ResourceManager, whose: &str) -> Duration {
    let start = Instant::now();
    while !nothing_held(&rm.stat()) {
        assert!(
            start.elapsed() < AT_ONCE,
            "{whose} still holds after {AT_ONCE:?}: {:#?}",
            rm.stat()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Every one of `streams` reports that it has ended: its scope is closed, and a read fails
/// at once instead of waiting.
async fn assert_ended(streams: &mut [Stream]) {
    for stream in streams {
        let scope = rcmgr_libp2p::stream_scope(stream).expect("an accounted stream");
        assert!(scope.is_closed());
        let mut byte = [0u8; 1];
        let read = common::within("a read of an ended stream", stream.read(&mut byte)).await;
        assert!(
            !matches!(read, Ok(1)),
            "an ended stream read a byte: {read:?}"
        );
    }
}

async fn disconnect(node: &Running, peer: PeerId) {
    node.call(move |swarm| swarm.disconnect_peer_id(peer))
        .await
        .expect("connected");
}

#[tokio::test]
async fn a_local_close_ends_every_stream_the_application_still_holds() {
    for net in [Net::Tcp, Net::Quic, Net::Memory] {
        let (mut server, client, mut client_held, server_held) = connected_with_streams(net).await;
        let (server_rm, client_rm) = (server.rm.clone(), client.rm.clone());
        let client_peer = client.peer;

        disconnect(&server, client_peer).await;
        let local = zero_at_once(&server_rm, "the server").await;
        let remote = zero_at_once(&client_rm, "the client").await;
        println!("{net:?}: the closing side at zero after {local:?}, the other after {remote:?}");
        server
            .expect("the connection to close", |event| match event {
                SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == client_peer => Some(()),
                _ => None,
            })
            .await;

        // Both applications still hold every stream; each reports its end.
        let mut server_streams = std::mem::take(&mut *server_held.lock().expect("not poisoned"));
        assert_eq!(server_streams.len(), STREAMS);
        assert_ended(&mut server_streams).await;
        assert_ended(&mut client_held).await;

        drop((server_streams, client_held));
        server.shutdown().await;
        client.shutdown().await;
        assert_all_released(&[&server_rm, &client_rm]).await;
    }
}

#[tokio::test]
async fn a_remote_close_ends_every_stream_too() {
    let (server, client, client_held, server_held) = connected_with_streams(Net::Tcp).await;
    let (server_rm, client_rm) = (server.rm.clone(), client.rm.clone());
    // The client closes; the server learns it from the wire.
    disconnect(&client, server.peer).await;
    zero_at_once(&client_rm, "the client").await;
    zero_at_once(&server_rm, "the server").await;
    let mut server_streams = std::mem::take(&mut *server_held.lock().expect("not poisoned"));
    assert_ended(&mut server_streams).await;
    drop((server_streams, client_held));
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_remote_that_vanishes_ends_every_stream() {
    let (server, client, client_held, server_held) = connected_with_streams(Net::Tcp).await;
    let server_rm = server.rm.clone();
    // The client's process is gone: its swarm and connections dropped, its sockets closed,
    // nothing said.
    client.shutdown().await;
    drop(client_held);
    zero_at_once(&server_rm, "the server").await;
    let mut server_streams = std::mem::take(&mut *server_held.lock().expect("not poisoned"));
    assert_ended(&mut server_streams).await;
    drop(server_streams);
    server.shutdown().await;
}

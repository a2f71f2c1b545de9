//! Every transport's streams are limited: TCP, QUIC, websocket and the memory transport through
//! `Transports` (the per-protocol limit refuses the extra stream of that protocol only), and
//! relayed connections (circuit relay v2), whose streams are limited like any others while the
//! circuit itself is a stream of the relay's connection.

mod common;

use std::time::Duration;

use common::{Net, Protocols, Running, assert_all_released, hold_inbound, open, show, within};
use futures::StreamExt;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm,
    core::{Transport, muxing::StreamMuxerBox, transport::MemoryTransport, upgrade::Version},
    identity,
    multiaddr::Protocol,
    noise, relay,
    swarm::{self, NetworkBehaviour, SwarmEvent},
    yamux,
};
use libp2p_stream::OpenStreamError;
use rcmgr::{BaseLimit, ConcreteLimitConfig, ResourceManager, ResourceScope};

const HOLD: &str = "/hold/1.0.0";
const OTHER: &str = "/other/1.0.0";

fn one_inbound_stream_of_hold() -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.protocol.insert(
        HOLD.into(),
        BaseLimit {
            streams_inbound: 1,
            ..BaseLimit::unlimited()
        },
    );
    limits
}

fn assert_unsupported(result: Result<libp2p::Stream, OpenStreamError>) {
    match result {
        Err(OpenStreamError::UnsupportedProtocol(_)) => {}
        other => panic!("expected the stream to be refused, got {}", show(&other)),
    }
}

async fn streams_are_limited_on(net: Net) {
    let server_rm = ResourceManager::new(one_inbound_stream_of_hold());
    let server = Running::server(net, &server_rm, Protocols::NONE).await;
    hold_inbound(&server, HOLD);
    hold_inbound(&server, OTHER);
    let client_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut client = Running::client(net, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;

    let held = open(&client, server.peer, HOLD).await.expect("the first");
    assert_unsupported(open(&client, server.peer, HOLD).await);
    let other = open(&client, server.peer, OTHER)
        .await
        .expect("another protocol");
    common::eventually("the server to account both", || {
        server_rm.peer(&client.peer).stat().streams_inbound == 2
    })
    .await;
    assert_eq!(server_rm.protocol(HOLD).stat().streams_inbound, 1);
    // Each stream holds its window, on either side.
    let window = rcmgr_libp2p::Buffers::default().stream_window() as u64;
    assert_eq!(server_rm.protocol(HOLD).stat().memory, window);
    assert_eq!(client_rm.protocol(OTHER).stat().memory, window);

    drop((held, other));
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

#[tokio::test]
async fn tcp_streams_are_limited() {
    streams_are_limited_on(Net::Tcp).await;
}

#[tokio::test]
async fn quic_streams_are_limited() {
    streams_are_limited_on(Net::Quic).await;
}

#[tokio::test]
async fn websocket_streams_are_limited() {
    streams_are_limited_on(Net::Websocket).await;
}

#[tokio::test]
async fn memory_transport_streams_are_limited() {
    streams_are_limited_on(Net::Memory).await;
}

/// A relay client node: rcmgr first, the relay client, libp2p-stream.
#[derive(NetworkBehaviour)]
struct Client {
    rcmgr: rcmgr_libp2p::Behaviour,
    relay: relay::client::Behaviour,
    streams: libp2p_stream::Behaviour,
}

/// A node whose direct connections are memory-transport ones and who can use relays, both
/// limited by `rm`.
fn relay_client(rm: &ResourceManager) -> Swarm<Client> {
    let key = identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let (relay_transport, relay) = relay::client::new(peer);
    let limited = rcmgr_libp2p::Transports::new(rm);
    // The relay transport first: the memory transport would take circuit addresses for its own.
    let transport = limited
        .relay(&key, relay_transport)
        .expect("a relay transport")
        .or_transport(limited.memory(&key).expect("a memory transport"))
        .map(|either, _| either.into_inner())
        .boxed();
    Swarm::new(
        transport,
        Client {
            rcmgr: limited.behaviour(),
            relay,
            streams: libp2p_stream::Behaviour::new(),
        },
        peer,
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

/// The relay: circuit relay v2 over the memory transport, not limited.
fn relay_server() -> Swarm<relay::Behaviour> {
    let key = identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).expect("noise"))
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Swarm::new(
        transport,
        relay::Behaviour::new(peer, relay::Config::default()),
        peer,
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

/// Drives `swarm` until `done` picks an event.
async fn until<B: NetworkBehaviour, T>(
    swarm: &mut Swarm<B>,
    what: &str,
    mut done: impl FnMut(&SwarmEvent<B::ToSwarm>) -> Option<T>,
) -> T
where
    B::ToSwarm: std::fmt::Debug,
{
    within(what, async {
        loop {
            let event = swarm.select_next_some().await;
            if let Some(found) = done(&event) {
                return found;
            }
        }
    })
    .await
}

/// Drives `swarm` in a task of its own until the test ends.
fn run<B: NetworkBehaviour + Send + 'static>(mut swarm: Swarm<B>) -> tokio::task::JoinHandle<()>
where
    B::ToSwarm: Send,
{
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })
}

#[tokio::test]
async fn relayed_connections_have_their_streams_limited() {
    let mut relay = relay_server();
    let relay_peer = *relay.local_peer_id();
    let relay_address: Multiaddr = format!("/memory/{}", rand_port())
        .parse()
        .expect("an address");
    relay.listen_on(relay_address.clone()).expect("listening");
    relay.add_external_address(relay_address.clone());
    let relay_task = run(relay);

    // The listener, behind the relay, with a limit of one inbound `/hold` stream.
    let listener_rm = ResourceManager::new(one_inbound_stream_of_hold());
    let mut listener = relay_client(&listener_rm);
    let listener_peer = *listener.local_peer_id();
    let circuit = relay_address
        .clone()
        .with(Protocol::P2p(relay_peer))
        .with(Protocol::P2pCircuit);
    listener
        .listen_on(circuit.clone())
        .expect("listening through the relay");
    until(&mut listener, "the reservation", |event| match event {
        SwarmEvent::Behaviour(ClientEvent::Relay(
            relay::client::Event::ReservationReqAccepted { .. },
        )) => Some(()),
        _ => None,
    })
    .await;
    let mut holder = listener.behaviour().streams.new_control();
    let mut incoming = holder
        .accept(StreamProtocol::new(HOLD))
        .expect("not yet accepted");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            held.push(stream);
        }
    });
    let listener_task = run(listener);

    // The dialer reaches it through the relay.
    let dialer_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut dialer = relay_client(&dialer_rm);
    let mut control = dialer.behaviour().streams.new_control();
    dialer
        .dial(circuit.with(Protocol::P2p(listener_peer)))
        .expect("the dial starts");
    until(&mut dialer, "the relayed connection", |event| match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } if *peer_id == listener_peer && endpoint.is_relayed() => Some(()),
        _ => None,
    })
    .await;
    let dialer_peer = *dialer.local_peer_id();
    let dialer_task = run(dialer);

    let first = within(
        "a relayed stream",
        control.open_stream(listener_peer, StreamProtocol::new(HOLD)),
    )
    .await
    .expect("the first relayed stream");
    let second = within(
        "another",
        control.open_stream(listener_peer, StreamProtocol::new(HOLD)),
    )
    .await;
    assert_unsupported(second);

    // The relayed connection is accounted as the dialer's (no file descriptor), its stream in
    // the protocol's scope; the circuit is a stream of the relay's connection.
    common::eventually("the listener to account the stream", || {
        listener_rm.protocol(HOLD).stat().streams_inbound == 1
    })
    .await;
    let dialer_scope = listener_rm.peer(&dialer_peer).stat();
    assert_eq!(dialer_scope.conns_inbound, 1);
    assert_eq!(dialer_scope.fd, 0);
    assert_eq!(dialer_scope.streams_inbound, 1);
    assert_eq!(
        listener_rm
            .protocol("/libp2p/circuit/relay/0.2.0/stop")
            .stat()
            .streams_inbound,
        1
    );
    assert_eq!(listener_rm.peer(&relay_peer).stat().conns_outbound, 1);

    drop(first);
    for task in [dialer_task, listener_task, relay_task] {
        task.abort();
        let _ = task.await;
    }
    assert_all_released(&[&listener_rm, &dialer_rm]).await;
}

/// A memory-transport port no other test of this process uses.
fn rand_port() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Far from the ports `/memory/0` hands out.
    (1 << 40) + u64::from(std::process::id()) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

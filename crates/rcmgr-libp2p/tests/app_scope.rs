//! The stream's scope from application code: `stream_scope` on a libp2p-stream stream and on
//! the `io` of a request-response codec, where a buffer reservation counts in the stream, its
//! peer, its protocol for that peer, the protocol and the system together; so one peer that
//! floods a protocol takes no more of its memory than the protocol's per-peer limit.

mod common;

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Net, Protocols, Running, assert_all_released, within};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    PeerId, StreamProtocol, Swarm,
    request_response::{self, ProtocolSupport},
    swarm::{self, NetworkBehaviour, SwarmEvent},
};
use rcmgr::{BaseLimit, ConcreteLimitConfig, Direction, Priority, ResourceManager, ResourceScope};

const ECHO: &str = "/echo/1.0.0";
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// What the echo server reserves for each stream's buffer, on the stream's scope.
const ECHO_BUFFER: u64 = 512 * KIB;

fn window() -> u64 {
    rcmgr_libp2p::Buffers::default().stream_window() as u64
}

/// The peers of the streams served, or refused, so far.
type Peers = Arc<Mutex<Vec<PeerId>>>;

/// Serves `ECHO` on `node`: each stream gets a buffer reserved on its own scope, or is dropped
/// when there is no room. Every stream served or refused is counted.
fn serve_echo(node: &Running) -> (Peers, Peers) {
    let (served, refused) = (Peers::default(), Peers::default());
    let mut incoming = node
        .control
        .clone()
        .accept(StreamProtocol::new(ECHO))
        .expect("not yet accepted");
    let (on_served, on_refused) = (Arc::clone(&served), Arc::clone(&refused));
    tokio::spawn(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let scope = rcmgr_libp2p::stream_scope(&mut stream).expect("an accounted stream");
            assert_eq!(scope.peer(), peer);
            assert_eq!(scope.direction(), Direction::Inbound);
            assert_eq!(scope.protocol().as_deref(), Some(ECHO));
            let Ok(mut buffer) = scope.buffer(ECHO_BUFFER as usize, Priority::ALWAYS) else {
                on_refused.lock().expect("not poisoned").push(peer);
                continue; // dropping the stream resets it
            };
            on_served.lock().expect("not poisoned").push(peer);
            tokio::spawn(async move {
                // Echo until the remote closes, holding the buffer (and the stream) as long.
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (served, refused)
}

/// Opens an echo stream to `peer` and checks an echo; the stream is returned open, or `None`
/// if it was refused or reset.
async fn echo_once(node: &Running, peer: PeerId) -> Option<libp2p::Stream> {
    let mut control = node.control.clone();
    let mut stream = within(
        "a stream",
        control.open_stream(peer, StreamProtocol::new(ECHO)),
    )
    .await
    .ok()?;
    stream.write_all(b"ping").await.ok()?;
    let mut answer = [0u8; 4];
    match within("an echo", stream.read_exact(&mut answer)).await {
        Ok(()) if &answer == b"ping" => Some(stream),
        _ => None,
    }
}

#[tokio::test]
async fn a_buffer_reserved_on_the_stream_counts_in_its_peer_protocol_and_system() {
    let server_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    let (served, _) = serve_echo(&server);
    let client_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut client = Running::client(Net::Tcp, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;

    let stream = echo_once(&client, server.peer).await.expect("served");
    assert_eq!(served.lock().expect("not poisoned").len(), 1);
    let per_stream = window() + ECHO_BUFFER;
    assert_eq!(server_rm.protocol(ECHO).stat().memory, per_stream);
    let connection = rcmgr_libp2p::Buffers::default()
        .connection_memory(&"/ip4/127.0.0.1/tcp/1".parse().expect("an address"))
        as u64;
    assert_eq!(
        server_rm.peer(&client.peer).stat().memory,
        connection + per_stream
    );
    assert_eq!(server_rm.system().stat().memory, connection + per_stream);

    // The client reaches its side's scope the same way.
    let mut stream = stream;
    let scope = rcmgr_libp2p::stream_scope(&mut stream).expect("an accounted stream");
    assert_eq!(scope.direction(), Direction::Outbound);
    assert_eq!(scope.stat().memory, window());

    // The stream ends: everything it held goes, the buffer's reservation too.
    drop(stream);
    common::eventually("the stream's memory to be released", || {
        server_rm.protocol(ECHO).stat().memory == 0
    })
    .await;
    assert!(scope.is_closed());
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

#[tokio::test]
async fn one_peer_cannot_take_a_protocols_memory() {
    // The protocol may hold 16 MiB; each peer 4 MiB of it. A stream holds its window and the
    // echo buffer: 768 KiB.
    let mut limits = ConcreteLimitConfig::infinite();
    let memory = |bytes| BaseLimit {
        memory: bytes,
        ..BaseLimit::unlimited()
    };
    limits.protocol.insert(ECHO.into(), memory(16 * MIB));
    limits.protocol_peer.insert(ECHO.into(), memory(4 * MIB));
    let server_rm = ResourceManager::new(limits);
    let server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    let (served, refused) = serve_echo(&server);

    let flooder_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut flooder = Running::client(Net::Tcp, &flooder_rm, Protocols::NONE);
    flooder.connect(server.address(), server.peer).await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        if let Some(stream) = echo_once(&flooder, server.peer).await {
            flood.push(stream);
        }
    }
    // 4 MiB hold five whole streams (3.75 MiB); the rest find no room for a window or a
    // buffer.
    assert_eq!(flood.len(), 5);
    let held = server_rm.protocol(ECHO).stat().memory;
    assert!(
        held <= 4 * MIB,
        "the flooder holds {held} bytes of the protocol"
    );

    // An honest peer is served in full from the rest of the protocol's memory.
    let honest_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut honest = Running::client(Net::Tcp, &honest_rm, Protocols::NONE);
    honest.connect(server.address(), server.peer).await;
    let mut served_honest = Vec::new();
    for _ in 0..4 {
        served_honest.push(
            echo_once(&honest, server.peer)
                .await
                .expect("the honest peer is served"),
        );
    }
    let honest_peer = honest.peer;
    assert!(
        !refused.lock().expect("not poisoned").contains(&honest_peer),
        "the honest peer was refused"
    );
    assert_eq!(
        served
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|peer| **peer == honest_peer)
            .count(),
        4
    );

    drop((flood, served_honest));
    for node in [server, flooder, honest] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &flooder_rm, &honest_rm]).await;
}

/// What a request-response codec saw of its stream's scope.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    direction: Direction,
    protocol: Option<String>,
    /// The stream scope's memory with the codec's buffer reserved: window + buffer.
    memory: u64,
}

/// A codec of length-less messages (read to the end) that reads each into a buffer reserved on
/// its stream's scope.
#[derive(Clone, Default)]
struct Reserving {
    seen: Arc<Mutex<Vec<Seen>>>,
}

const MESSAGE_BUFFER: usize = 64 << 10;

impl Reserving {
    async fn read<T: futures::AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let scope = rcmgr_libp2p::stream_scope(io)
            .ok_or_else(|| io::Error::other("a stream rcmgr does not account"))?;
        let mut buffer = scope
            .buffer(MESSAGE_BUFFER, Priority::HIGH)
            .map_err(io::Error::other)?;
        self.seen.lock().expect("not poisoned").push(Seen {
            direction: scope.direction(),
            protocol: scope.protocol(),
            memory: scope.stat().memory,
        });
        let mut filled = 0;
        loop {
            let read = io.read(&mut buffer[filled..]).await?;
            if read == 0 {
                return Ok(buffer[..filled].to_vec());
            }
            filled += read;
            if filled == buffer.len() {
                return Err(io::Error::other("message too long"));
            }
        }
    }
}

impl request_response::Codec for Reserving {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&response).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct RequestNode {
    rcmgr: rcmgr_libp2p::Behaviour,
    requests: request_response::Behaviour<Reserving>,
}

const REQUESTS: &str = "/requests/1.0.0";

fn request_node(rm: &ResourceManager, codec: Reserving) -> Swarm<RequestNode> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let limited = rcmgr_libp2p::Transports::new(rm);
    Swarm::new(
        limited.memory(&key).expect("a transport"),
        RequestNode {
            rcmgr: limited.behaviour(),
            requests: request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(REQUESTS), ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        },
        peer,
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

#[tokio::test]
async fn a_request_response_codec_reserves_on_its_streams_scope() {
    let (server_codec, client_codec) = (Reserving::default(), Reserving::default());
    let server_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let client_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut server = request_node(&server_rm, server_codec.clone());
    let mut client = request_node(&client_rm, client_codec.clone());
    server
        .listen_on("/memory/0".parse().expect("an address"))
        .expect("listening");
    let server_peer = *server.local_peer_id();
    let address = within("a listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    client.dial(address).expect("the dial starts");

    let mut sent = false;
    let response = within("the response", async {
        loop {
            tokio::select! {
                event = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(RequestNodeEvent::Requests(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. }, ..
                    })) = event {
                        let mut answer = request.clone();
                        answer.reverse();
                        server.behaviour_mut().requests.send_response(channel, answer).expect("the channel is open");
                    }
                }
                event = client.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } if !sent => {
                        sent = true;
                        client.behaviour_mut().requests.send_request(&server_peer, b"abc".to_vec());
                    }
                    SwarmEvent::Behaviour(RequestNodeEvent::Requests(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. }, ..
                    })) => return response,
                    _ => {}
                },
            }
        }
    })
    .await;
    assert_eq!(response, b"cba");

    let expected = |direction| Seen {
        direction,
        protocol: Some(REQUESTS.into()),
        memory: window() + MESSAGE_BUFFER as u64,
    };
    assert_eq!(
        *server_codec.seen.lock().expect("not poisoned"),
        vec![expected(Direction::Inbound)]
    );
    assert_eq!(
        *client_codec.seen.lock().expect("not poisoned"),
        vec![expected(Direction::Outbound)]
    );
    drop((server, client));
    assert_all_released(&[&server_rm, &client_rm]).await;
}

//! Refused outbound streams are final for rust-libp2p's handlers, not I/O errors to retry at
//! once: request-response fails the request as unsupported, identify reports one error and
//! waits for its next interval, kad fails the query's request and finishes the query. In each
//! case rcmgr refuses once per attempt the application (or the handler's own schedule) makes,
//! and the refusals stop when the attempts do. (Ping is `tests/ping.rs`.)

#![allow(
    clippy::print_stdout,
    reason = "the measured numbers are printed for whoever runs the test"
)]

mod common;

use std::{io, time::Duration};

use common::{Refusals, counted, within};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    PeerId, StreamProtocol, Swarm, identify, kad,
    request_response::{self, OutboundFailure, ProtocolSupport},
    swarm::{self, NetworkBehaviour, SwarmEvent},
};
use rcmgr::{BaseLimit, ConcreteLimitConfig, ResourceManager};

const REQUESTS: &str = "/requests/1.0.0";
const IDENTIFY: &str = "/ipfs/id/1.0.0";
const KAD: &str = "/ipfs/kad/1.0.0";

/// Messages read to the end of the stream.
#[derive(Clone, Default)]
struct Bytes;

impl request_response::Codec for Bytes {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut message = Vec::new();
        io.take(1024).read_to_end(&mut message).await?;
        Ok(message)
    }

    async fn read_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_request(protocol, io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        message: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&message).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        message: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_request(protocol, io, message).await
    }
}

#[derive(NetworkBehaviour)]
struct Peer {
    rcmgr: rcmgr_libp2p::Behaviour,
    identify: identify::Behaviour,
    requests: request_response::Behaviour<Bytes>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

fn peer(rm: &ResourceManager) -> Swarm<Peer> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let limited = rcmgr_libp2p::Transports::new(rm);
    let mut kad = kad::Behaviour::new(id, kad::store::MemoryStore::new(id));
    kad.set_mode(Some(kad::Mode::Server));
    Swarm::new(
        limited.memory(&key).expect("a transport"),
        Peer {
            rcmgr: limited.behaviour(),
            identify: identify::Behaviour::new(identify::Config::new(
                "/test/1.0.0".into(),
                key.public(),
            )),
            requests: request_response::Behaviour::with_codec(
                Bytes,
                [(StreamProtocol::new(REQUESTS), ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
            kad,
        },
        id,
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

/// Limits that refuse every outbound stream of the three protocols.
fn no_outbound_streams() -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    for protocol in [REQUESTS, IDENTIFY, KAD] {
        limits.protocol.insert(
            protocol.into(),
            BaseLimit {
                streams_outbound: 0,
                ..BaseLimit::unlimited()
            },
        );
    }
    limits
}

/// Drives both swarms for `time`, handing each of the client's events to `on_event`.
async fn drive(
    server: &mut Swarm<Peer>,
    client: &mut Swarm<Peer>,
    time: Duration,
    mut on_event: impl FnMut(&mut Swarm<Peer>, SwarmEvent<PeerEvent>),
) {
    let deadline = tokio::time::sleep(time);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = server.select_next_some() => {}
            event = client.select_next_some() => on_event(client, event),
            () = &mut deadline => return,
        }
    }
}

#[tokio::test]
async fn request_response_identify_and_kad_take_a_refusal_as_final() {
    let server_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut server = peer(&server_rm);
    let server_peer = *server.local_peer_id();
    server
        .listen_on("/memory/0".parse().expect("an address"))
        .expect("listening");
    let address = within("a listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    let (client_rm, refusals): (ResourceManager, std::sync::Arc<Refusals>) =
        counted(no_outbound_streams());
    let mut client = peer(&client_rm);
    client
        .behaviour_mut()
        .kad
        .add_address(&server_peer, address.clone());
    client.dial(address).expect("the dial starts");

    // Three requests, one kad query; identify runs on its own.
    let (mut unsupported, mut identify_errors, mut query_done, mut connected) =
        (0, 0, false, false);
    drive(
        &mut server,
        &mut client,
        Duration::from_secs(3),
        |client, event| match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. }
                if peer_id == server_peer && !connected =>
            {
                connected = true;
                for _ in 0..3 {
                    client
                        .behaviour_mut()
                        .requests
                        .send_request(&server_peer, b"hi".to_vec());
                }
                client
                    .behaviour_mut()
                    .kad
                    .get_closest_peers(PeerId::random());
            }
            SwarmEvent::Behaviour(PeerEvent::Requests(
                request_response::Event::OutboundFailure {
                    error: OutboundFailure::UnsupportedProtocols,
                    ..
                },
            )) => unsupported += 1,
            SwarmEvent::Behaviour(PeerEvent::Identify(identify::Event::Error { .. })) => {
                identify_errors += 1
            }
            SwarmEvent::Behaviour(PeerEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(_),
                step,
                ..
            })) if step.last => query_done = true,
            _ => {}
        },
    )
    .await;
    assert!(connected);
    assert_eq!(unsupported, 3, "each request fails as unsupported");
    assert_eq!(
        identify_errors, 1,
        "identify reports once and waits for its interval"
    );
    assert!(query_done, "the kad query finishes");
    let refused = refusals.count();
    println!("{refused} refusals for 3 requests, identify and one kad query");
    // One per request, one for identify, one or two for kad's query: no retries.
    assert!((5..=8).contains(&refused), "{refused} refusals");

    // Quiet: no more attempts, no more refusals.
    drive(&mut server, &mut client, Duration::from_secs(2), |_, _| {}).await;
    assert_eq!(
        refusals.count(),
        refused,
        "refusals went on without attempts"
    );

    drop((server, client));
    common::assert_all_released(&[&server_rm, &client_rm]).await;
}

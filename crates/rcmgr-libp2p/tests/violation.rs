//! An outbound stream accepts only the confirmation of the protocol the local side proposed.
//! A listener that confirms another protocol commits a protocol violation: the stream is
//! reset, and no scope is ever made for the name the remote chose.

mod common;

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use common::{Net, Protocols, Running, assert_all_released, open, swarm_with_transport, unwrapped};
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::{
    StreamProtocol,
    core::{
        Transport,
        muxing::{StreamMuxer, StreamMuxerEvent},
        transport::MemoryTransport,
        upgrade::Version,
    },
    identity, noise, yamux,
};
use libp2p_stream::OpenStreamError;
use rcmgr::{ConcreteLimitConfig, ResourceManager, ResourceScope};

const ASKED: &[u8] = b"/hold/1.0.0\n";
/// What the misbehaving listener confirms instead: as long, so the framing stays right.
const CONFIRMED: &[u8] = b"/evil/1.0.0\n";
/// Streams the client tries.
const ATTEMPTS: usize = 200;

/// A muxer whose substreams replace [`ASKED`] with [`CONFIRMED`] in what they write: on a
/// listener, its confirmation.
struct Lying<M>(M);

struct LyingStream<S>(S);

impl<M: StreamMuxer + Unpin> StreamMuxer for Lying<M>
where
    M::Substream: Unpin,
{
    type Substream = LyingStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0).poll_inbound(cx).map_ok(LyingStream)
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0).poll_outbound(cx).map_ok(LyingStream)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LyingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LyingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut lie = buf.to_vec();
        if let Some(at) = lie.windows(ASKED.len()).position(|w| w == ASKED) {
            lie[at..at + ASKED.len()].copy_from_slice(CONFIRMED);
        }
        Pin::new(&mut self.0).poll_write(cx, &lie)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[tokio::test]
async fn a_listener_confirming_another_protocol_gets_the_stream_reset_and_no_scope() {
    // The server accepts `/hold/1.0.0` and lies about it on the wire.
    let key = identity::Keypair::generate_ed25519();
    let lying = unwrapped(
        MemoryTransport::default()
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(&key).expect("noise"))
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, Lying(muxer))),
    );
    let server_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let swarm = swarm_with_transport(key, lying, &server_rm, Protocols::NONE);
    let server = Running::listening(swarm, Net::Memory, &server_rm).await;
    let mut incoming = server
        .control
        .clone()
        .accept(StreamProtocol::new("/hold/1.0.0"))
        .expect("not yet accepted");
    tokio::spawn(async move { while incoming.next().await.is_some() {} });

    let client_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut client = Running::client(Net::Memory, &client_rm, Protocols::NONE);
    client.connect(server.address(), server.peer).await;

    for _ in 0..ATTEMPTS {
        match open(&client, server.peer, "/hold/1.0.0").await {
            Err(OpenStreamError::Io(error)) => {
                assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
                assert!(error.to_string().contains("protocol violation"), "{error}");
            }
            other => panic!("the stream should be reset, got {other:?}"),
        }
    }
    // No scope of the remote's choosing, and nothing left in the proposed protocol's.
    let protocols = client_rm.list_protocols();
    assert!(
        !protocols
            .iter()
            .any(|p| p.as_bytes() == &CONFIRMED[..CONFIRMED.len() - 1]),
        "a scope for the remote's name: {protocols:?}"
    );
    assert!(client_rm.protocol("/hold/1.0.0").stat().is_empty());
    assert!(client_rm.peer(&server.peer).stat().streams_outbound == 0);
    // The connection survives the violations.
    let server_peer = server.peer;
    assert!(
        client
            .call(move |swarm| swarm.is_connected(&server_peer))
            .await
    );

    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

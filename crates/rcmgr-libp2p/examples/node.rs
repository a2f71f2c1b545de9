//! A rust-libp2p node protected by rcmgr: identify, ping and an echo protocol (libp2p-stream)
//! over TCP and QUIC on 127.0.0.1, with go-libp2p's default limits, printing the resource
//! manager's report every few seconds.
//!
//! ```sh
//! # one node; it prints its addresses
//! cargo run -p rcmgr-libp2p --example node -- --seconds 30
//! # another, dialling the first: they identify, ping and echo
//! cargo run -p rcmgr-libp2p --example node -- --dial /ip4/127.0.0.1/tcp/PORT --seconds 10
//! ```
//!
//! Options: `--dial ADDR` (repeatable), `--listen ADDR` (repeatable; default TCP and QUIC on
//! 127.0.0.1, any port), `--seconds N` (stop after N seconds; default: run until Ctrl-C),
//! `--report-every N` (seconds between reports; default 5).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example that talks to the person running it"
)]

use std::{error::Error, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder,
    core::{Transport, upgrade::Version},
    identify, noise, ping, quic,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use rcmgr::{Priority, ResourceManager, ResourceScope};
use rcmgr_libp2p::ReservedBuffer;

const ECHO: StreamProtocol = StreamProtocol::new("/rcmgr-example/echo/1.0.0");
/// The largest message the echo service answers.
const ECHO_BUFFER: usize = 4096;

#[derive(NetworkBehaviour)]
struct Node {
    // First, so that a connection rcmgr refuses reaches no other behaviour.
    rcmgr: rcmgr_libp2p::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    echo: libp2p_stream::Behaviour,
}

/// What the command line asked for.
struct Options {
    dial: Vec<Multiaddr>,
    listen: Vec<Multiaddr>,
    seconds: Option<u64>,
    report_every: Duration,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        dial: Vec::new(),
        listen: Vec::new(),
        seconds: None,
        report_every: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dial" => options.dial.push(value()?.parse()?),
            "--listen" => options.listen.push(value()?.parse()?),
            "--seconds" => options.seconds = Some(value()?.parse()?),
            "--report-every" => options.report_every = Duration::from_secs(value()?.parse()?),
            other => return Err(format!("unknown option {other}; see the example's docs").into()),
        }
    }
    if options.listen.is_empty() {
        options.listen = vec![
            "/ip4/127.0.0.1/tcp/0".parse()?,
            "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
        ];
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    let rm = ResourceManager::default();

    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let tcp = tcp::tokio::Transport::new(tcp::Config::default())
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default());
            Ok::<_, Box<dyn Error + Send + Sync>>(rcmgr_libp2p::wrap_transport(tcp, rm.clone()))
        })?
        .with_other_transport(|key| {
            let quic = quic::tokio::Transport::new(quic::Config::new(key));
            rcmgr_libp2p::wrap_transport(quic, rm.clone())
        })?
        .with_behaviour(|key| Node {
            rcmgr: rcmgr_libp2p::Behaviour::new(rm.clone()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/rcmgr-example/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(2))),
            echo: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    println!("peer id {}", swarm.local_peer_id());

    let mut control = swarm.behaviour().echo.new_control();
    let incoming = control.accept(ECHO)?;
    tokio::spawn(serve_echo(incoming, rm.clone()));

    for address in options.listen {
        swarm.listen_on(address)?;
    }
    for address in options.dial {
        swarm.dial(address)?;
    }

    let mut report = tokio::time::interval(options.report_every);
    let seconds = options.seconds;
    let stop = async move {
        match seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => {
                // Without a signal handler there is nothing to wait for: run forever.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => println!("listening on {address}"),
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    println!("connected to {peer_id} ({})", endpoint.get_remote_address());
                    if endpoint.is_dialer() {
                        tokio::spawn(say_hello(control.clone(), peer_id));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } => println!("disconnected from {peer_id}"),
                SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                    println!("refused {send_back_addr}: {error}");
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                    println!("ping {peer}: {} ms", rtt.as_millis());
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    println!("identified {peer_id}: {} ({} protocols)", info.agent_version, info.protocols.len());
                }
                _ => {}
            },
            _ = report.tick() => println!("{}", rm.report()),
            () = &mut stop => break,
        }
    }
    // Dropping the swarm closes its connections; their tasks end, and release their streams,
    // a moment later.
    drop(swarm);
    for _ in 0..100 {
        if rm.system().stat().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("stopped; final usage:\n{}", rm.report());
    Ok(())
}

/// Answers each echo stream with what it sent, in a buffer reserved on the echo protocol's
/// scope first: when the protocol's memory is spent, the stream is dropped instead.
async fn serve_echo(mut incoming: libp2p_stream::IncomingStreams, rm: ResourceManager) {
    while let Some((peer, stream)) = incoming.next().await {
        match ReservedBuffer::new(&rm.protocol(ECHO.as_ref()), ECHO_BUFFER, Priority::LOW) {
            Ok(buffer) => {
                tokio::spawn(async move {
                    if let Err(error) = echo(stream, buffer).await {
                        eprintln!("echo to {peer} failed: {error}");
                    }
                });
            }
            Err(error) => eprintln!("echo to {peer} refused: {error}"),
        }
    }
}

async fn echo(mut stream: Stream, mut buffer: ReservedBuffer) -> std::io::Result<()> {
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return stream.close().await;
        }
        stream.write_all(&buffer[..read]).await?;
    }
}

/// Sends a greeting on a new echo stream and prints the answer.
async fn say_hello(mut control: libp2p_stream::Control, peer: PeerId) {
    let result = async {
        let mut stream = control.open_stream(peer, ECHO).await?;
        stream.write_all(b"hello through rcmgr").await?;
        stream.close().await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, Box<dyn Error>>(answer)
    }
    .await;
    match result {
        Ok(answer) => println!("echo from {peer}: {answer:?}"),
        Err(error) => eprintln!("echo with {peer} failed: {error}"),
    }
}

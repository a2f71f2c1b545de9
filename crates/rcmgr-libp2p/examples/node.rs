//! A rust-libp2p node protected by rcmgr: identify, ping and an echo protocol (libp2p-stream)
//! over TCP and QUIC on 127.0.0.1, with rcmgr-libp2p's default limits, printing the resource
//! manager's report every few seconds. Each echo stream gets its buffer from the stream's own
//! scope, so a peer can take no more of the echo protocol's memory than its per-peer share.
//!
//! ```sh
//! # one node; it prints its addresses
//! cargo run -p rcmgr-libp2p --example node -- --seconds 60
//! # an honest peer: it identifies, pings, and echoes every 100 ms
//! cargo run -p rcmgr-libp2p --example node -- --dial /ip4/127.0.0.1/tcp/PORT --echo-every 100
//! # a flooder: it opens echo streams as fast as it can and keeps every one it gets
//! cargo run -p rcmgr-libp2p --example node -- --dial /ip4/127.0.0.1/tcp/PORT --flood
//! ```
//!
//! Options: `--dial ADDR` (repeatable), `--listen ADDR` (repeatable; default TCP and QUIC on
//! 127.0.0.1, any port), `--seconds N` (stop after N seconds; default: run until Ctrl-C),
//! `--report-every N` (seconds between reports; default 5), `--ping-every N` (seconds; default
//! 15), `--echo-every MS` (echo to each peer dialled every MS milliseconds), `--flood` (open
//! echo streams to each peer dialled as fast as possible and hold them).
//!
//! `tests/example.rs` runs this node with a flooder and two honest peers.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example that talks to the person running it"
)]

use std::{
    error::Error,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder, identify, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use rcmgr_libp2p::{
    ReservedBuffer,
    rcmgr::{self, ResourceScope},
};

const ECHO: StreamProtocol = StreamProtocol::new("/rcmgr-example/echo/1.0.0");
/// The largest message the echo service answers, and what it reserves for each stream.
const ECHO_BUFFER: usize = 4096;
/// How many echo streams a flooder keeps at most, so that it ends on its own.
const FLOOD_HOLD: usize = 10_000;
/// How many streams a flooder tries to open at once.
const FLOOD_WORKERS: usize = 8;

#[derive(NetworkBehaviour)]
struct Node {
    // First, so that a connection rcmgr refuses reaches no other behaviour.
    rcmgr: rcmgr_libp2p::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    echo: libp2p_stream::Behaviour,
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) dial: Vec<Multiaddr>,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) seconds: Option<u64>,
    pub(crate) report_every: Duration,
    pub(crate) ping_every: Duration,
    pub(crate) echo_every: Option<Duration>,
    pub(crate) flood: bool,
    /// Print reports and events (the test turns this off).
    pub(crate) verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dial: Vec::new(),
            listen: Vec::new(),
            seconds: None,
            report_every: Duration::from_secs(5),
            ping_every: Duration::from_secs(15),
            echo_every: None,
            flood: false,
            verbose: true,
        }
    }
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dial" => options.dial.push(value()?.parse()?),
            "--listen" => options.listen.push(value()?.parse()?),
            "--seconds" => options.seconds = Some(value()?.parse()?),
            "--report-every" => options.report_every = Duration::from_secs(value()?.parse()?),
            "--ping-every" => options.ping_every = Duration::from_secs(value()?.parse()?),
            "--echo-every" => {
                options.echo_every = Some(Duration::from_millis(value()?.parse()?));
            }
            "--flood" => options.flood = true,
            other => return Err(format!("unknown option {other}; see the example's docs").into()),
        }
    }
    Ok(options)
}

/// What a node did, for its final words (and for the test).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) echoes_served: AtomicU64,
    pub(crate) echoes_refused: AtomicU64,
    pub(crate) echoes_ok: AtomicU64,
    pub(crate) echoes_failed: AtomicU64,
    /// Echo streams that failed after they were opened and were tried once more.
    pub(crate) echoes_retried: AtomicU64,
    pub(crate) pings_ok: AtomicU64,
    pub(crate) identified: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) flood_opened: AtomicU64,
    pub(crate) flood_refused: AtomicU64,
}

impl Counts {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running node's handles, for whoever started it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) rm: rcmgr::ResourceManager,
    pub(crate) counts: Arc<Counts>,
    /// Set to stop the node early.
    pub(crate) stop: Arc<AtomicBool>,
    /// The node's peer id, once it has one.
    pub(crate) peer: Arc<std::sync::OnceLock<PeerId>>,
}

impl Running {
    /// A node on `rm`, not started.
    pub(crate) fn new(rm: rcmgr::ResourceManager) -> Self {
        Running {
            rm,
            counts: Arc::default(),
            stop: Arc::default(),
            peer: Arc::default(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut options = options()?;
    if options.listen.is_empty() && options.dial.is_empty() {
        options.listen = vec![
            "/ip4/127.0.0.1/tcp/0".parse()?,
            "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
        ];
    }
    let running = Running::new(rcmgr_libp2p::resource_manager());
    run(options, running.clone(), |peer, address| {
        println!("listening on {address}/p2p/{peer}");
    })
    .await
    .map_err(|error| error as Box<dyn Error>)?;
    let counts = &running.counts;
    println!(
        "echoes served {}, refused {}; echoes answered {}, failed {}, retried {}; pings {}; flood opened {}, refused {}",
        Counts::get(&counts.echoes_served),
        Counts::get(&counts.echoes_refused),
        Counts::get(&counts.echoes_ok),
        Counts::get(&counts.echoes_failed),
        Counts::get(&counts.echoes_retried),
        Counts::get(&counts.pings_ok),
        Counts::get(&counts.flood_opened),
        Counts::get(&counts.flood_refused),
    );
    Ok(())
}

/// Runs a node with `options` on `running`'s resource manager until its time is up or it is
/// stopped, calling `listening` with each address it listens on; returns once its connections
/// are gone.
pub(crate) async fn run(
    options: Options,
    running: Running,
    mut listening: impl FnMut(PeerId, &Multiaddr),
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let rm = running.rm.clone();
    let limited = rcmgr_libp2p::Transports::new(&rm);
    let ping_every = options.ping_every;
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| limited.tcp(key))?
        .with_other_transport(|key| limited.quic(key))?
        .with_behaviour(|key| Node {
            rcmgr: limited.behaviour(),
            identify: identify::Behaviour::new(identify::Config::new(
                "/rcmgr-example/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(ping_every)),
            echo: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let local = *swarm.local_peer_id();
    let _ = running.peer.set(local);
    let verbose = options.verbose;
    if verbose {
        println!("peer id {local}");
    }

    let mut control = swarm.behaviour().echo.new_control();
    let incoming = control.accept(ECHO)?;
    tokio::spawn(serve_echo(incoming, Arc::clone(&running.counts)));

    for address in options.listen {
        swarm.listen_on(address)?;
    }
    for address in options.dial {
        swarm.dial(address)?;
    }

    let mut report = tokio::time::interval(options.report_every);
    let deadline = options
        .seconds
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let stop = Arc::clone(&running.stop);
    let mut watch_stop = tokio::time::interval(Duration::from_millis(50));
    let counts = &running.counts;
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => listening(local, &address),
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                    if verbose {
                        println!("connected to {peer_id} ({})", endpoint.get_remote_address());
                    }
                    // One worker per peer dialled.
                    if endpoint.is_dialer() && num_established.get() == 1 {
                        if let Some(every) = options.echo_every {
                            tokio::spawn(echo_every(control.clone(), peer_id, every, Arc::clone(counts), Arc::clone(&stop)));
                        }
                        if options.flood {
                            tokio::spawn(flood(control.clone(), peer_id, Arc::clone(counts), Arc::clone(&stop)));
                        }
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } if verbose => println!("disconnected from {peer_id}"),
                SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                    Counts::add(&counts.connections_refused);
                    // rcmgr says which scope refused and which limit.
                    match rcmgr_libp2p::refusal_of(&error) {
                        Some(refusal) => println!("rcmgr refused {send_back_addr}: {refusal}"),
                        None if verbose => println!("{send_back_addr} failed: {error}"),
                        None => {}
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, peer_id, .. } => {
                    match rcmgr_libp2p::refusal_of(&error) {
                        Some(refusal) => println!("rcmgr refused the dial to {peer_id:?}: {refusal}"),
                        None => println!("the dial to {peer_id:?} failed: {error}"),
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                    Counts::add(&counts.pings_ok);
                    if verbose {
                        println!("ping {peer}: {} ms", rtt.as_millis());
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    Counts::add(&counts.identified);
                    if verbose {
                        println!("identified {peer_id}: {} ({} protocols)", info.agent_version, info.protocols.len());
                    }
                }
                _ => {}
            },
            _ = report.tick(), if verbose => {
                println!(
                    "{}echo streams served {}, refused {}",
                    rm.report(),
                    Counts::get(&counts.echoes_served),
                    Counts::get(&counts.echoes_refused),
                );
            }
            _ = watch_stop.tick() => {
                let late = deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
                if late || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            // Without a signal handler there is nothing to wait for but the time.
            Ok(()) = tokio::signal::ctrl_c(), if options.seconds.is_none() => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Dropping the swarm closes its connections, and their streams' scopes with them.
    drop(swarm);
    for _ in 0..200 {
        if rm.system().stat().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if verbose {
        println!("stopped; final usage:\n{}", rm.report());
    }
    Ok(())
}

/// Answers each echo stream with what it sent, in a buffer reserved on the stream's own scope
/// first: the reservation counts in the stream, its peer, the echo protocol for that peer, the
/// protocol and the system. When there is no room, the stream is dropped instead.
async fn serve_echo(mut incoming: libp2p_stream::IncomingStreams, counts: Arc<Counts>) {
    use rcmgr::Priority;
    while let Some((_peer, mut stream)) = incoming.next().await {
        let Some(scope) = rcmgr_libp2p::stream_scope(&mut stream) else {
            continue; // not a stream of a limited transport
        };
        match scope.buffer(ECHO_BUFFER, Priority::LOW) {
            Ok(buffer) => {
                Counts::add(&counts.echoes_served);
                tokio::spawn(echo(stream, buffer));
            }
            Err(_refusal) => Counts::add(&counts.echoes_refused),
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

/// Echoes a message to `peer` every `every`, counting answers and failures.
///
/// An echo whose stream opened but then failed is tried once more: libp2p-stream hands the
/// application one inbound stream per protocol at a time and resets the next one if it arrives
/// before the first was taken (two peers' streams in one poll of the swarm are enough), so the
/// retry waits a moment first. A stream that fails to open is not retried: rcmgr's refusals
/// are final, and look like an unsupported protocol.
async fn echo_every(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    every: Duration,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut answered = echo_once(&mut control, peer).await;
        if matches!(answered, Err(EchoFailure::AfterOpen)) {
            Counts::add(&counts.echoes_retried);
            tokio::time::sleep(every / 4).await;
            answered = echo_once(&mut control, peer).await;
        }
        match answered {
            Ok(true) => Counts::add(&counts.echoes_ok),
            _ => Counts::add(&counts.echoes_failed),
        }
    }
}

/// Why an echo got no answer.
#[derive(Debug)]
enum EchoFailure {
    /// The stream did not open (refused, or the connection is gone).
    Open,
    /// The stream opened, then failed (reset by the other side, say).
    AfterOpen,
    /// No answer within five seconds.
    TimedOut,
}

/// One echo on a new stream: whether the answer was what was sent.
async fn echo_once(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
) -> Result<bool, EchoFailure> {
    let exchange = async {
        let mut stream = control
            .open_stream(peer, ECHO)
            .await
            .map_err(|_| EchoFailure::Open)?;
        let mut answer = Vec::new();
        let talked: std::io::Result<()> = async {
            stream.write_all(b"hello through rcmgr").await?;
            stream.close().await?;
            stream.read_to_end(&mut answer).await?;
            Ok(())
        }
        .await;
        talked.map_err(|_| EchoFailure::AfterOpen)?;
        Ok(answer == b"hello through rcmgr")
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or(Err(EchoFailure::TimedOut))
}

/// Opens echo streams to `peer` as fast as it can, with several at once, and keeps every one it
/// gets (up to [`FLOOD_HOLD`]).
async fn flood(
    control: libp2p_stream::Control,
    peer: PeerId,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..FLOOD_WORKERS)
        .map(|_| {
            let (mut control, counts, stop, held) = (
                control.clone(),
                Arc::clone(&counts),
                Arc::clone(&stop),
                Arc::clone(&held),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match control.open_stream(peer, ECHO).await {
                        Ok(stream) => {
                            Counts::add(&counts.flood_opened);
                            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                            if held.len() < FLOOD_HOLD {
                                held.push(stream);
                            }
                        }
                        Err(_) => Counts::add(&counts.flood_refused),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

//! Real swarms for the integration tests: TCP, QUIC or websocket on 127.0.0.1, or the memory
//! transport, built with rcmgr-libp2p's `Transports` (or, unwrapped, with libp2p's noise and
//! yamux), the rcmgr behaviour first, and identify, ping and libp2p-stream behind it. Each swarm runs in its own task;
//! the test talks to it through calls and watches its events.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a part of the harness"
)]

use std::{fmt::Debug, future::Future, time::Duration};

use futures::{AsyncReadExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    core::{
        StreamMuxer, Transport, muxing::StreamMuxerBox, transport::MemoryTransport,
        upgrade::Version,
    },
    identify, identity, noise, ping, quic,
    swarm::{self, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use rcmgr::{ResourceManager, ResourceManagerStat};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// How long any awaited event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The behaviour of every test node: rcmgr first.
#[derive(NetworkBehaviour)]
pub struct Node {
    pub rcmgr: rcmgr_libp2p::Behaviour,
    pub identify: Toggle<identify::Behaviour>,
    pub ping: Toggle<ping::Behaviour>,
    pub streams: libp2p_stream::Behaviour,
}

/// Which transport a node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Memory,
    Tcp,
    Quic,
    Websocket,
}

impl Net {
    fn listen_address(self) -> Multiaddr {
        let text = match self {
            Net::Memory => "/memory/0",
            Net::Tcp => "/ip4/127.0.0.1/tcp/0",
            Net::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
            Net::Websocket => "/ip4/127.0.0.1/tcp/0/ws",
        };
        text.parse().expect("a valid multiaddr")
    }
}

/// Which protocols besides rcmgr and libp2p-stream a node runs.
#[derive(Clone, Copy, Debug)]
pub struct Protocols {
    pub identify: bool,
    pub ping: bool,
    /// How often ping pings (libp2p-ping's default: 15 s).
    pub ping_interval: Duration,
}

impl Protocols {
    pub const NONE: Protocols = Protocols {
        identify: false,
        ping: false,
        ping_interval: Duration::from_secs(15),
    };
    pub const ALL: Protocols = Protocols {
        identify: true,
        ping: true,
        ping_interval: Duration::from_secs(15),
    };
    /// Ping alone, every `interval`.
    pub const fn ping_every(interval: Duration) -> Protocols {
        Protocols {
            identify: false,
            ping: true,
            ping_interval: interval,
        }
    }
}

/// The transport of `net`: rcmgr-libp2p's ready-made one for `rm` when it is given, else the
/// same transport, secured and multiplexed with libp2p's yamux, not wrapped.
fn transport(
    net: Net,
    key: &identity::Keypair,
    rm: Option<&ResourceManager>,
) -> libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)> {
    if let Some(rm) = rm {
        let limited = rcmgr_libp2p::Transports::new(rm);
        let transport = match net {
            Net::Memory => limited.memory(key),
            Net::Tcp => limited.tcp(key),
            Net::Quic => limited.quic(key),
            Net::Websocket => limited.websocket(key),
        };
        return transport.expect("a transport");
    }
    let noise = || noise::Config::new(key).expect("a noise config");
    match net {
        Net::Memory => unwrapped(
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise())
                .multiplex(yamux::Config::default()),
        ),
        Net::Tcp => unwrapped(
            tcp::tokio::Transport::new(tcp::Config::default())
                .upgrade(Version::V1)
                .authenticate(noise())
                .multiplex(yamux::Config::default()),
        ),
        Net::Quic => unwrapped(quic::tokio::Transport::new(quic::Config::new(key))),
        Net::Websocket => unwrapped(
            libp2p::websocket::Config::new(tcp::tokio::Transport::new(tcp::Config::default()))
                .upgrade(Version::V1)
                .authenticate(noise())
                .multiplex(yamux::Config::default()),
        ),
    }
}

/// `transport`, not wrapped, boxed.
pub fn unwrapped<T, M>(transport: T) -> libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>
where
    T: Transport<Output = (PeerId, M)> + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
    M: StreamMuxer + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: Send + Sync + 'static,
{
    transport
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}

/// A swarm with rcmgr on `net`.
pub fn swarm(net: Net, rm: &ResourceManager, protocols: Protocols) -> Swarm<Node> {
    build_swarm(net, rm, protocols, true)
}

/// A swarm with the rcmgr behaviour but a transport that is not wrapped: connections are
/// accounted, streams are not (unless the application uses `StreamGuard`).
pub fn unwrapped_swarm(net: Net, rm: &ResourceManager, protocols: Protocols) -> Swarm<Node> {
    build_swarm(net, rm, protocols, false)
}

fn build_swarm(net: Net, rm: &ResourceManager, protocols: Protocols, wrap: bool) -> Swarm<Node> {
    let key = identity::Keypair::generate_ed25519();
    let transport = transport(net, &key, wrap.then_some(rm));
    swarm_with_transport(key, transport, rm, protocols)
}

/// A swarm of the test behaviour over `transport`.
pub fn swarm_with_transport(
    key: identity::Keypair,
    transport: libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>,
    rm: &ResourceManager,
    protocols: Protocols,
) -> Swarm<Node> {
    let peer = key.public().to_peer_id();
    let identify = protocols.identify.then(|| {
        identify::Behaviour::new(identify::Config::new(
            "/rcmgr-test/1.0.0".into(),
            key.public(),
        ))
    });
    let ping = protocols
        .ping
        .then(|| ping::Behaviour::new(ping::Config::new().with_interval(protocols.ping_interval)));
    let behaviour = Node {
        rcmgr: rcmgr_libp2p::Transports::new(rm).behaviour(),
        identify: identify.into(),
        ping: ping.into(),
        streams: libp2p_stream::Behaviour::new(),
    };
    Swarm::new(
        transport,
        behaviour,
        peer,
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

type Call = Box<dyn FnOnce(&mut Swarm<Node>) + Send>;

/// A swarm running in its own task.
pub struct Running {
    pub peer: PeerId,
    pub rm: ResourceManager,
    /// Where it listens, if it does.
    pub address: Option<Multiaddr>,
    pub control: libp2p_stream::Control,
    events: mpsc::UnboundedReceiver<SwarmEvent<NodeEvent>>,
    calls: mpsc::UnboundedSender<Call>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts a node that only dials.
    pub fn client(net: Net, rm: &ResourceManager, protocols: Protocols) -> Running {
        Running::spawn(swarm(net, rm, protocols), rm)
    }

    /// Starts a node that listens on 127.0.0.1 (or a memory address) and waits until it does.
    pub async fn server(net: Net, rm: &ResourceManager, protocols: Protocols) -> Running {
        Running::listening(swarm(net, rm, protocols), net, rm).await
    }

    /// Starts `swarm` listening on `net`'s loopback address and waits until it does.
    pub async fn listening(swarm: Swarm<Node>, net: Net, rm: &ResourceManager) -> Running {
        let mut node = Running::spawn(swarm, rm);
        let listen = net.listen_address();
        node.call(move |swarm| swarm.listen_on(listen))
            .await
            .expect("listening");
        let address = node
            .expect("a listen address", |event| match event {
                SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
                _ => None,
            })
            .await;
        node.address = Some(address);
        node
    }

    fn spawn(mut swarm: Swarm<Node>, rm: &ResourceManager) -> Running {
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().streams.new_control();
        let (event_sender, events) = mpsc::unbounded_channel();
        let (calls, mut call_receiver) = mpsc::unbounded_channel::<Call>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        // The test may have stopped listening; the swarm keeps running.
                        let _ = event_sender.send(event);
                    }
                    call = call_receiver.recv() => match call {
                        Some(call) => call(&mut swarm),
                        None => break,
                    },
                }
            }
        });
        Running {
            peer,
            rm: rm.clone(),
            address: None,
            control,
            events,
            calls,
            task,
        }
    }

    /// Runs `f` on the swarm, in its task, and returns what it returns.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Node>) -> R + Send + 'static,
    ) -> R {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |swarm| {
            let _ = reply.send(f(swarm));
        });
        self.calls.send(call).expect("the swarm task is running");
        within("a call on the swarm", answer)
            .await
            .expect("the swarm task answers")
    }

    /// The listen address.
    pub fn address(&self) -> Multiaddr {
        self.address.clone().expect("a listening node")
    }

    /// Waits for the first event `pick` accepts, skipping the others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&SwarmEvent<NodeEvent>) -> Option<T>,
    ) -> T {
        let events = &mut self.events;
        within(what, async move {
            loop {
                let event = events.recv().await.expect("the swarm task is running");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        })
        .await
    }

    /// The next event, or `None` once `deadline` has passed.
    pub async fn next_event_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<SwarmEvent<NodeEvent>> {
        tokio::time::timeout_at(deadline, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Dials `address` and waits until the connection to `peer` is established.
    pub async fn connect(&mut self, address: Multiaddr, peer: PeerId) {
        self.call(move |swarm| swarm.dial(address))
            .await
            .expect("the dial starts");
        self.expect("the connection", |event| match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == peer => Some(()),
            _ => None,
        })
        .await;
    }

    /// Stops the swarm and drops it, with its connections.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// `future`, or a panic naming `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until `condition` holds, checking every few milliseconds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Whether nothing at all is held anywhere in `stat`.
pub fn nothing_held(stat: &ResourceManagerStat) -> bool {
    stat.system.is_empty()
        && stat.transient.is_empty()
        && stat.peers.values().all(|s| s.is_empty())
        && stat.protocols.values().all(|s| s.is_empty())
        && stat.services.values().all(|s| s.is_empty())
}

/// Asserts that every count of every manager returns to zero (the swarms are gone; their
/// connection tasks end on their own shortly after).
pub async fn assert_all_released(managers: &[&ResourceManager]) {
    for rm in managers {
        let watched = (*rm).clone();
        let waited = tokio::time::timeout(PATIENCE, async {
            while !nothing_held(&watched.stat()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "counts left after shutdown: {:#?}",
            rm.stat()
        );
    }
}

/// Accepts `protocol` on `node` and holds each stream until its remote closes or resets it,
/// so that each inbound stream keeps its scope exactly as long as the dialer keeps it.
pub fn hold_inbound(node: &Running, protocol: &'static str) -> JoinHandle<()> {
    let mut incoming = node
        .control
        .clone()
        .accept(StreamProtocol::new(protocol))
        .expect("not yet accepted");
    tokio::spawn(async move {
        while let Some((_peer, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 64];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    })
}

/// Opens a `protocol` stream to `peer`.
pub async fn open(
    node: &Running,
    peer: PeerId,
    protocol: &'static str,
) -> Result<libp2p::Stream, libp2p_stream::OpenStreamError> {
    let mut control = node.control.clone();
    within(
        "a stream to open or fail",
        control.open_stream(peer, StreamProtocol::new(protocol)),
    )
    .await
}

/// Shows a value in a failure message.
pub fn show(value: &impl Debug) -> String {
    format!("{value:?}")
}

/// The CPU time this process has used so far, user and system, all threads (Linux:
/// `/proc/self/stat`, in clock ticks of 1/100 s).
pub fn process_cpu_time() -> Duration {
    cpu_time("/proc/self/stat")
}

/// The CPU time the calling thread has used so far, user and system (Linux:
/// `/proc/thread-self/stat`).
pub fn thread_cpu_time() -> Duration {
    cpu_time("/proc/thread-self/stat")
}

fn cpu_time(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    // The command name may hold spaces: the fields that follow come after its ')'.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), utime and stime; `fields[0]` is field 3.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// Counts the limit refusals a manager reports (every refusal by any scope's limit).
#[derive(Debug, Default)]
pub struct Refusals {
    count: std::sync::atomic::AtomicU64,
    memory: std::sync::atomic::AtomicU64,
}

impl Refusals {
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of them refused memory.
    pub fn memory(&self) -> u64 {
        self.memory.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl rcmgr::MetricsReporter for Refusals {
    fn limit_exceeded(&self, refusal: &rcmgr::LimitExceeded) {
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if matches!(refusal.resource(), rcmgr::Resource::Memory { .. }) {
            self.memory
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A manager with `limits` whose refusals are counted.
pub fn counted(limits: rcmgr::ConcreteLimitConfig) -> (ResourceManager, std::sync::Arc<Refusals>) {
    let refusals = std::sync::Arc::new(Refusals::default());
    let rm = ResourceManager::builder(limits)
        .metrics(std::sync::Arc::clone(&refusals) as std::sync::Arc<dyn rcmgr::MetricsReporter>)
        .build()
        .expect("valid options");
    (rm, refusals)
}

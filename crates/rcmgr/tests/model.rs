//! Model-based test: random operation sequences are applied to the lock-free engine
//! ([`ResourceManager`]) and to the lock-based reference ([`ReferenceManager`]), and after every
//! step the two must agree on the outcome (the same `Error`, with the same text) and on every
//! statistic: the system and transient scopes, every peer, protocol and service scope, and
//! every connection, stream and span handle still held.
//!
//! The universe is small (four peers, three protocols, two services) and each case draws its
//! own small limits, with per-key entries, so that refusals at every level are common. Memory
//! releases stay within what the sequence reserved on that scope, except in the over-release
//! test, which checks that both clamp alike.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default), as for every proptest.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::LazyLock,
    time::Duration,
};

use proptest::{prelude::*, test_runner::TestCaseError};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ConnectionScope, Direction, Error, MemoryGuard, PeerId,
    Priority, ResourceManager, ResourceScope, Span, StreamScope,
};
use rcmgr_reference::{self as reference, ReferenceManager};

const PROTOCOLS: [&str; 3] = ["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/x/echo/1"];
const SERVICES: [&str; 2] = ["libp2p.ping", "libp2p.identify"];
const PEER_COUNT: usize = 4;

/// Fixed peers, so that failures reproduce with the same names.
static PEERS: LazyLock<Vec<PeerId>> = LazyLock::new(|| {
    (1..=PEER_COUNT as u8)
        .map(|seed| {
            let key = libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
                .expect("32 bytes are a valid ed25519 secret key");
            key.public().to_peer_id()
        })
        .collect()
});

/// Which of the held handles of one kind an operation uses: the `n`-th, modulo how many are
/// held. Shrinks towards the oldest.
#[derive(Clone, Copy, Debug)]
struct Pick(usize);

/// A scope reached through a view (created if needed, like go's `View*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Viewed {
    System,
    Transient,
    Peer(usize),
    Protocol(usize),
    Service(usize),
}

/// A scope an operation acts on. Handles are picked among those held, by index.
#[derive(Clone, Debug)]
enum Target {
    View(Viewed),
    Conn(Pick),
    Stream(Pick),
    Span(Pick),
}

/// How a connection, stream or span is let go of.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// `done()`, keeping the handle (later uses must fail alike).
    Done,
    /// Drop the handle.
    Drop,
}

#[derive(Clone, Debug)]
enum Op {
    /// Nothing: the first alternative, so that shrinking turns the steps a failure does not
    /// need into this and the minimal sequence shows only the ones it does.
    Nothing,
    OpenConn {
        direction: Direction,
        use_fd: bool,
    },
    SetPeer {
        conn: Pick,
        peer: usize,
    },
    CloseConn {
        conn: Pick,
        how: Close,
    },
    OpenStream {
        peer: usize,
        direction: Direction,
    },
    /// Opens a stream and, if that succeeds, sets its protocol and then maybe its service,
    /// as a node does once negotiation ends.
    OpenStreamFor {
        peer: usize,
        direction: Direction,
        protocol: usize,
        service: Option<usize>,
    },
    SetProtocol {
        stream: Pick,
        protocol: usize,
    },
    SetService {
        stream: Pick,
        service: usize,
    },
    CloseStream {
        stream: Pick,
        how: Close,
    },
    Reserve {
        target: Target,
        size: usize,
        priority: Priority,
    },
    /// Releases `percent` % of what the sequence reserved on the target and still holds.
    Release {
        target: Target,
        percent: usize,
    },
    /// Releases `extra` bytes more than the sequence reserved on the target.
    OverRelease {
        target: Target,
        extra: usize,
    },
    ReserveGuard {
        target: Target,
        size: usize,
        priority: Priority,
    },
    DropGuard {
        guard: Pick,
    },
    BeginSpan {
        target: Target,
    },
    CloseSpan {
        span: Pick,
        how: Close,
    },
    SetLimits(Box<ConcreteLimitConfig>),
    /// Divides every current limit by `divisor`.
    LowerLimits {
        divisor: u64,
    },
    SetLimit {
        target: Target,
        limit: BaseLimit,
    },
    Gc,
}

fn count() -> BoxedStrategy<u64> {
    prop_oneof![1 => Just(0), 12 => 1..=4u64, 3 => Just(BaseLimit::UNLIMITED)].boxed()
}

fn bytes() -> BoxedStrategy<u64> {
    prop_oneof![1 => Just(0), 12 => 256..=8192u64, 3 => Just(BaseLimit::UNLIMITED)].boxed()
}

fn base_limit(counts: BoxedStrategy<u64>, memory: BoxedStrategy<u64>) -> BoxedStrategy<BaseLimit> {
    let c = || counts.clone();
    (c(), c(), c(), c(), c(), c(), c(), memory)
        .prop_map(
            |(streams, s_in, s_out, conns, c_in, c_out, fd, memory)| BaseLimit {
                streams,
                streams_inbound: s_in,
                streams_outbound: s_out,
                conns,
                conns_inbound: c_in,
                conns_outbound: c_out,
                fd,
                memory,
            },
        )
        .boxed()
}

fn tight() -> BoxedStrategy<BaseLimit> {
    base_limit(count(), bytes())
}

/// The system scope gets more room, so that the scopes below it refuse too.
fn roomy() -> BoxedStrategy<BaseLimit> {
    let counts = prop_oneof![6 => 2..=10u64, 1 => Just(BaseLimit::UNLIMITED)].boxed();
    let memory = prop_oneof![6 => 2048..=32768u64, 1 => Just(BaseLimit::UNLIMITED)].boxed();
    base_limit(counts, memory)
}

fn named(names: &'static [&'static str]) -> BoxedStrategy<BTreeMap<String, BaseLimit>> {
    let name = prop::sample::select(names).prop_map(str::to_owned);
    prop::collection::btree_map(name, tight(), 0..=2).boxed()
}

fn limits() -> BoxedStrategy<ConcreteLimitConfig> {
    let peers = prop::collection::btree_map(0..PEER_COUNT, tight(), 0..=2);
    let fixed = (roomy(), tight(), tight(), tight());
    let services = (tight(), named(&SERVICES), tight(), named(&SERVICES));
    let protocols = (tight(), named(&PROTOCOLS), tight(), named(&PROTOCOLS));
    (fixed, services, protocols, tight(), peers)
        .prop_map(|(fixed, services, protocols, peer_default, peers)| {
            let mut limits = ConcreteLimitConfig::infinite();
            (limits.system, limits.transient, limits.conn, limits.stream) = fixed;
            (
                limits.service_default,
                limits.service,
                limits.service_peer_default,
                limits.service_peer,
            ) = services;
            (
                limits.protocol_default,
                limits.protocol,
                limits.protocol_peer_default,
                limits.protocol_peer,
            ) = protocols;
            limits.peer_default = peer_default;
            limits.peer = peers.into_iter().map(|(i, l)| (PEERS[i], l)).collect();
            limits
        })
        .boxed()
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Inbound), Just(Direction::Outbound)]
}

fn close() -> impl Strategy<Value = Close> {
    prop_oneof![Just(Close::Done), Just(Close::Drop)]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::LOW),
        Just(Priority::MEDIUM),
        Just(Priority::HIGH),
        Just(Priority::ALWAYS),
        any::<u8>().prop_map(Priority),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => 1..=2048usize, 1 => 2049..=9000usize]
}

fn pick_any() -> impl Strategy<Value = Pick> {
    any::<usize>().prop_map(Pick)
}

fn viewed() -> impl Strategy<Value = Viewed> {
    prop_oneof![
        1 => Just(Viewed::System),
        1 => Just(Viewed::Transient),
        2 => (0..PEER_COUNT).prop_map(Viewed::Peer),
        1 => (0..PROTOCOLS.len()).prop_map(Viewed::Protocol),
        1 => (0..SERVICES.len()).prop_map(Viewed::Service),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => viewed().prop_map(Target::View),
        3 => pick_any().prop_map(Target::Conn),
        4 => pick_any().prop_map(Target::Stream),
        4 => pick_any().prop_map(Target::Span),
    ]
}

/// Pinning targets: mostly peer and protocol scopes, whose pin also stops collection.
fn pin_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => (0..PEER_COUNT).prop_map(|i| Target::View(Viewed::Peer(i))),
        3 => (0..PROTOCOLS.len()).prop_map(|i| Target::View(Viewed::Protocol(i))),
        1 => target(),
    ]
}

fn op(over_release: bool) -> BoxedStrategy<Op> {
    let release = if over_release {
        prop_oneof![
            (target(), 0..=100usize).prop_map(|(target, percent)| Op::Release { target, percent }),
            (target(), 1..=4096usize).prop_map(|(target, extra)| Op::OverRelease { target, extra }),
        ]
        .boxed()
    } else {
        (target(), 0..=100usize)
            .prop_map(|(target, percent)| Op::Release { target, percent })
            .boxed()
    };
    prop_oneof![
        1 => Just(Op::Nothing),
        4 => (direction(), any::<bool>())
            .prop_map(|(direction, use_fd)| Op::OpenConn { direction, use_fd }),
        3 => (pick_any(), 0..PEER_COUNT).prop_map(|(conn, peer)| Op::SetPeer { conn, peer }),
        2 => (pick_any(), close()).prop_map(|(conn, how)| Op::CloseConn { conn, how }),
        5 => (0..PEER_COUNT, direction())
            .prop_map(|(peer, direction)| Op::OpenStream { peer, direction }),
        4 => (0..PEER_COUNT, direction(), 0..PROTOCOLS.len(), prop::option::of(0..SERVICES.len()))
            .prop_map(|(peer, direction, protocol, service)| Op::OpenStreamFor {
                peer,
                direction,
                protocol,
                service,
            }),
        4 => (pick_any(), 0..PROTOCOLS.len())
            .prop_map(|(stream, protocol)| Op::SetProtocol { stream, protocol }),
        3 => (pick_any(), 0..SERVICES.len())
            .prop_map(|(stream, service)| Op::SetService { stream, service }),
        2 => (pick_any(), close()).prop_map(|(stream, how)| Op::CloseStream { stream, how }),
        8 => (target(), size(), priority())
            .prop_map(|(target, size, priority)| Op::Reserve { target, size, priority }),
        5 => release,
        2 => (target(), size(), priority())
            .prop_map(|(target, size, priority)| Op::ReserveGuard { target, size, priority }),
        1 => pick_any().prop_map(|guard| Op::DropGuard { guard }),
        3 => target().prop_map(|target| Op::BeginSpan { target }),
        2 => (pick_any(), close()).prop_map(|(span, how)| Op::CloseSpan { span, how }),
        1 => limits().prop_map(|limits| Op::SetLimits(Box::new(limits))),
        1 => (2..=4u64).prop_map(|divisor| Op::LowerLimits { divisor }),
        1 => (pin_target(), tight()).prop_map(|(target, limit)| Op::SetLimit { target, limit }),
        2 => Just(Op::Gc),
    ]
    .boxed()
}

/// A handle of the engine and the matching handle of the reference, with the bytes the
/// sequence reserved directly on it and has not released.
struct Pair<E, R> {
    engine: E,
    reference: R,
    outstanding: usize,
}

impl<E, R> Pair<E, R> {
    fn new(engine: E, reference: R) -> Self {
        Pair {
            engine,
            reference,
            outstanding: 0,
        }
    }
}

/// The held item `which` designates, if any is held.
fn pick<T>(items: &mut [T], which: Pick) -> Option<&mut T> {
    let held = items.len();
    items.get_mut(which.0.checked_rem(held)?)
}

/// Removes the held item `which` designates, if any is held.
fn take<T>(items: &mut Vec<T>, which: Pick) -> Option<T> {
    let held = items.len();
    Some(items.remove(which.0.checked_rem(held)?))
}

/// Checks that both managers answered alike: both succeeded, or both failed with equal
/// errors that print the same.
fn agree<A, B>(
    what: &str,
    engine: &Result<A, Error>,
    reference: &Result<B, Error>,
) -> Result<(), TestCaseError> {
    let engine = engine.as_ref().err();
    let reference = reference.as_ref().err();
    prop_assert_eq!(
        engine.map(ToString::to_string),
        reference.map(ToString::to_string),
        "{}: outcomes differ",
        what
    );
    prop_assert_eq!(engine, reference, "{}: error values differ", what);
    Ok(())
}

/// A view of the same scope in each manager.
type Views = (Box<dyn ResourceScope>, Box<dyn reference::Scope>);

/// Both managers, every handle held in both, and what the sequence reserved on each view.
struct World {
    engine: ResourceManager,
    reference: ReferenceManager,
    conns: Vec<Pair<ConnectionScope, reference::Connection>>,
    streams: Vec<Pair<StreamScope, reference::Stream>>,
    spans: Vec<Pair<Span, reference::Span>>,
    guards: Vec<(MemoryGuard, reference::MemoryGuard)>,
    /// Bytes the sequence reserved directly on each viewed scope and has not released.
    on_views: HashMap<Viewed, usize>,
    /// Peers and protocols whose limit was pinned: collection keeps them.
    pinned: BTreeSet<Viewed>,
}

impl World {
    fn new(limits: ConcreteLimitConfig) -> Self {
        let engine = ResourceManager::builder(limits.clone())
            .gc_interval(Duration::ZERO)
            .build()
            .expect("a manager without background collection builds");
        World {
            engine,
            reference: ReferenceManager::new(limits),
            conns: Vec::new(),
            streams: Vec::new(),
            spans: Vec::new(),
            guards: Vec::new(),
            on_views: HashMap::new(),
            pinned: BTreeSet::new(),
        }
    }

    /// Fresh views of a fixed or keyed scope in both managers (created there if needed).
    fn views(&self, viewed: Viewed) -> Views {
        let (engine, reference) = (&self.engine, &self.reference);
        match viewed {
            Viewed::System => (Box::new(engine.system()), Box::new(reference.system())),
            Viewed::Transient => (
                Box::new(engine.transient()),
                Box::new(reference.transient()),
            ),
            Viewed::Peer(i) => (
                Box::new(engine.peer(&PEERS[i])),
                Box::new(reference.peer(&PEERS[i])),
            ),
            Viewed::Protocol(i) => (
                Box::new(engine.protocol(PROTOCOLS[i])),
                Box::new(reference.protocol(PROTOCOLS[i])),
            ),
            Viewed::Service(i) => (
                Box::new(engine.service(SERVICES[i])),
                Box::new(reference.service(SERVICES[i])),
            ),
        }
    }

    /// Runs `act` on the target in both managers, with the bytes the sequence holds there.
    /// Does nothing when the target is a handle and none of its kind is held.
    fn on<T>(
        &mut self,
        target: &Target,
        act: impl FnOnce(&dyn ResourceScope, &dyn reference::Scope, &mut usize) -> T,
    ) -> Option<T> {
        match target {
            Target::Conn(i) => {
                pick(&mut self.conns, *i).map(|p| act(&p.engine, &p.reference, &mut p.outstanding))
            }
            Target::Stream(i) => pick(&mut self.streams, *i)
                .map(|p| act(&p.engine, &p.reference, &mut p.outstanding)),
            Target::Span(i) => {
                pick(&mut self.spans, *i).map(|p| act(&p.engine, &p.reference, &mut p.outstanding))
            }
            Target::View(viewed) => {
                let (engine, reference) = self.views(*viewed);
                let outstanding = self.on_views.entry(*viewed).or_default();
                Some(act(&*engine, &*reference, outstanding))
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Nothing => {}
            Op::OpenConn { direction, use_fd } => {
                let endpoint = "/ip4/192.0.2.1/tcp/4001".parse().expect("valid multiaddr");
                let engine = self.engine.open_connection(*direction, *use_fd, &endpoint);
                let reference = self
                    .reference
                    .open_connection(*direction, *use_fd, &endpoint);
                agree("open_connection", &engine, &reference)?;
                if let (Ok(engine), Ok(reference)) = (engine, reference) {
                    self.conns.push(Pair::new(engine, reference));
                }
            }
            Op::SetPeer { conn, peer } => {
                if let Some(pair) = pick(&mut self.conns, *conn) {
                    let engine = pair.engine.set_peer(PEERS[*peer]);
                    let reference = pair.reference.set_peer(PEERS[*peer]);
                    agree("set_peer", &engine, &reference)?;
                }
            }
            Op::CloseConn { conn, how } => match how {
                Close::Done => {
                    if let Some(pair) = pick(&mut self.conns, *conn) {
                        pair.engine.done();
                        pair.reference.done();
                    }
                }
                Close::Drop => drop(take(&mut self.conns, *conn)),
            },
            Op::OpenStream { peer, direction } => {
                let engine = self.engine.open_stream(PEERS[*peer], *direction);
                let reference = self.reference.open_stream(PEERS[*peer], *direction);
                agree("open_stream", &engine, &reference)?;
                if let (Ok(engine), Ok(reference)) = (engine, reference) {
                    self.streams.push(Pair::new(engine, reference));
                }
            }
            Op::OpenStreamFor {
                peer,
                direction,
                protocol,
                service,
            } => {
                let open = Op::OpenStream {
                    peer: *peer,
                    direction: *direction,
                };
                let held = self.streams.len();
                self.apply(&open)?;
                if self.streams.len() > held {
                    let stream = Pick(held);
                    self.set_protocol(stream, *protocol)?;
                    if let Some(service) = service {
                        self.set_service(stream, *service)?;
                    }
                }
            }
            Op::SetProtocol { stream, protocol } => self.set_protocol(*stream, *protocol)?,
            Op::SetService { stream, service } => self.set_service(*stream, *service)?,
            Op::CloseStream { stream, how } => match how {
                Close::Done => {
                    if let Some(pair) = pick(&mut self.streams, *stream) {
                        pair.engine.done();
                        pair.reference.done();
                    }
                }
                Close::Drop => drop(take(&mut self.streams, *stream)),
            },
            Op::Reserve {
                target,
                size,
                priority,
            } => {
                let outcome = self.on(target, |engine, reference, outstanding| {
                    let results = (
                        engine.reserve_memory(*size, *priority),
                        reference.reserve_memory(*size, *priority),
                    );
                    if results.0.is_ok() {
                        *outstanding += size;
                    }
                    results
                });
                if let Some((engine, reference)) = outcome {
                    agree("reserve_memory", &engine, &reference)?;
                }
            }
            Op::Release { target, percent } => {
                self.on(target, |engine, reference, outstanding| {
                    let size = *outstanding * percent / 100;
                    engine.release_memory(size);
                    reference.release_memory(size);
                    *outstanding -= size;
                });
            }
            Op::OverRelease { target, extra } => {
                self.on(target, |engine, reference, outstanding| {
                    let size = *outstanding + extra;
                    engine.release_memory(size);
                    reference.release_memory(size);
                    *outstanding = 0;
                });
            }
            Op::ReserveGuard {
                target,
                size,
                priority,
            } => {
                let outcome = self.on(target, |engine, reference, _| {
                    (
                        engine.reserve_memory_guard(*size, *priority),
                        reference.reserve_memory_guard(*size, *priority),
                    )
                });
                if let Some((engine, reference)) = outcome {
                    agree("reserve_memory_guard", &engine, &reference)?;
                    if let (Ok(engine), Ok(reference)) = (engine, reference) {
                        prop_assert_eq!(engine.size(), reference.size());
                        self.guards.push((engine, reference));
                    }
                }
            }
            Op::DropGuard { guard } => drop(take(&mut self.guards, *guard)),
            Op::BeginSpan { target } => {
                let outcome = self.on(target, |engine, reference, _| {
                    (engine.begin_span(), reference.begin_span())
                });
                if let Some((engine, reference)) = outcome {
                    agree("begin_span", &engine, &reference)?;
                    if let (Ok(engine), Ok(reference)) = (engine, reference) {
                        self.spans.push(Pair::new(engine, reference));
                    }
                }
            }
            Op::CloseSpan { span, how } => match how {
                Close::Done => {
                    if let Some(pair) = pick(&mut self.spans, *span) {
                        pair.engine.done();
                        pair.reference.done();
                    }
                }
                Close::Drop => drop(take(&mut self.spans, *span)),
            },
            Op::SetLimits(limits) => {
                self.engine.set_limits((**limits).clone());
                self.reference.set_limits((**limits).clone());
            }
            Op::LowerLimits { divisor } => {
                let lowered = lowered(&self.engine.limits(), *divisor);
                self.engine.set_limits(lowered.clone());
                self.reference.set_limits(lowered);
            }
            Op::SetLimit { target, limit } => {
                if let Target::View(
                    viewed @ (Viewed::Peer(_) | Viewed::Protocol(_) | Viewed::Service(_)),
                ) = target
                {
                    self.pinned.insert(*viewed);
                }
                self.on(target, |engine, reference, _| {
                    engine.set_limit(*limit);
                    reference.set_limit(*limit);
                });
            }
            Op::Gc => {
                self.engine.gc();
                self.reference.gc();
            }
        }
        Ok(())
    }

    fn set_protocol(&mut self, stream: Pick, protocol: usize) -> Result<(), TestCaseError> {
        if let Some(pair) = pick(&mut self.streams, stream) {
            let engine = pair.engine.set_protocol(PROTOCOLS[protocol]);
            let reference = pair.reference.set_protocol(PROTOCOLS[protocol]);
            agree("set_protocol", &engine, &reference)?;
        }
        Ok(())
    }

    fn set_service(&mut self, stream: Pick, service: usize) -> Result<(), TestCaseError> {
        if let Some(pair) = pick(&mut self.streams, stream) {
            let engine = pair.engine.set_service(SERVICES[service]);
            let reference = pair.reference.set_service(SERVICES[service]);
            agree("set_service", &engine, &reference)?;
        }
        Ok(())
    }

    /// Compares everything both managers can report.
    fn check(&self) -> Result<(), TestCaseError> {
        let (engine, reference) = (&self.engine, &self.reference);
        prop_assert_eq!(engine.stat(), reference.stat(), "manager stat");
        prop_assert_eq!(engine.list_peers(), reference.list_peers());
        prop_assert_eq!(engine.list_protocols(), reference.list_protocols());
        prop_assert_eq!(engine.list_services(), reference.list_services());
        prop_assert_eq!(engine.limits(), reference.limits());
        same_scope(&engine.system(), &reference.system())?;
        same_scope(&engine.transient(), &reference.transient())?;
        // Each peer's scopes within every protocol and service, looked up without making them.
        for peer in PEERS.iter() {
            for protocol in PROTOCOLS {
                prop_assert_eq!(
                    engine.protocol_peer_stat(protocol, peer),
                    reference.protocol_peer_stat(protocol, peer),
                    "protocol:{}.peer:{}",
                    protocol,
                    peer
                );
            }
            for service in SERVICES {
                prop_assert_eq!(
                    engine.service_peer_stat(service, peer),
                    reference.service_peer_stat(service, peer),
                    "service:{}.peer:{}",
                    service,
                    peer
                );
            }
        }
        for conn in &self.conns {
            same_scope(&conn.engine, &conn.reference)?;
            let peer = conn.engine.peer_scope().map(|scope| scope.peer());
            prop_assert_eq!(peer, conn.reference.peer());
            prop_assert_eq!(conn.engine.is_done(), conn.reference.is_done());
        }
        for stream in &self.streams {
            same_scope(&stream.engine, &stream.reference)?;
            let protocol = stream
                .engine
                .protocol_scope()
                .map(|s| s.protocol().to_owned());
            prop_assert_eq!(protocol, stream.reference.protocol());
            let service = stream
                .engine
                .service_scope()
                .map(|s| s.service().to_owned());
            prop_assert_eq!(service, stream.reference.service());
        }
        for span in &self.spans {
            same_scope(&span.engine, &span.reference)?;
        }
        Ok(())
    }

    /// Lets go of every handle and every byte the sequence still holds on a view, then
    /// checks that everything is back to zero and that two collection passes leave only the
    /// pinned scopes.
    fn tear_down(mut self) -> Result<(), TestCaseError> {
        self.guards.clear();
        self.check()?;
        self.spans.clear();
        self.check()?;
        self.streams.clear();
        self.check()?;
        self.conns.clear();
        self.check()?;
        let held: Vec<(Viewed, usize)> = self.on_views.drain().collect();
        for (viewed, size) in held {
            let (engine, reference) = self.views(viewed);
            engine.release_memory(size);
            reference.release_memory(size);
        }
        self.check()?;
        let stat = self.engine.stat();
        prop_assert!(
            stat.system.is_empty() && stat.transient.is_empty(),
            "{:?}",
            stat
        );
        let keyed = stat
            .peers
            .values()
            .chain(stat.protocols.values())
            .chain(stat.services.values());
        for scope in keyed {
            prop_assert!(scope.is_empty(), "left over: {:?}", stat);
        }
        for _ in 0..2 {
            self.engine.gc();
            self.reference.gc();
            self.check()?;
        }
        let kept = |viewed: &Viewed| match viewed {
            Viewed::Peer(i) => Some(PEERS[*i]),
            _ => None,
        };
        let mut pinned_peers: Vec<PeerId> = self.pinned.iter().filter_map(kept).collect();
        pinned_peers.sort_by_key(|peer| peer.to_bytes());
        prop_assert_eq!(self.engine.list_peers(), pinned_peers);
        // Only pinned protocol scopes are left; nothing is held anywhere.
        let mut pinned_protocols: Vec<String> = self
            .pinned
            .iter()
            .filter_map(|viewed| match viewed {
                Viewed::Protocol(i) => Some(PROTOCOLS[*i].to_owned()),
                _ => None,
            })
            .collect();
        pinned_protocols.sort();
        prop_assert_eq!(self.engine.list_protocols(), pinned_protocols);
        let mut pinned_services: Vec<String> = self
            .pinned
            .iter()
            .filter_map(|viewed| match viewed {
                Viewed::Service(i) => Some(SERVICES[*i].to_owned()),
                _ => None,
            })
            .collect();
        pinned_services.sort();
        prop_assert_eq!(self.engine.list_services(), pinned_services);
        let stat = self.engine.stat();
        prop_assert!(
            stat.protocols.values().all(|s| s.is_empty()),
            "{:?}",
            stat.protocols
        );
        Ok(())
    }
}

/// Compares one scope as both managers see it: usage, name and limit.
fn same_scope(
    engine: &dyn ResourceScope,
    reference: &dyn reference::Scope,
) -> Result<(), TestCaseError> {
    let name = engine.name().to_string();
    prop_assert_eq!(&name, &reference.name().to_string());
    prop_assert_eq!(engine.stat(), reference.stat(), "stat of {}", name);
    prop_assert_eq!(engine.limit(), reference.limit(), "limit of {}", name);
    Ok(())
}

/// Every limit of `limits` divided by `divisor` (unlimited stays unlimited).
fn lowered(limits: &ConcreteLimitConfig, divisor: u64) -> ConcreteLimitConfig {
    let lower = |limit: &BaseLimit| {
        let field = |v: u64| {
            if v >= BaseLimit::UNLIMITED {
                v
            } else {
                v / divisor
            }
        };
        BaseLimit {
            streams: field(limit.streams),
            streams_inbound: field(limit.streams_inbound),
            streams_outbound: field(limit.streams_outbound),
            conns: field(limit.conns),
            conns_inbound: field(limit.conns_inbound),
            conns_outbound: field(limit.conns_outbound),
            fd: field(limit.fd),
            memory: field(limit.memory),
        }
    };
    let lower_all = |map: &BTreeMap<String, BaseLimit>| {
        map.iter().map(|(k, v)| (k.clone(), lower(v))).collect()
    };
    let mut out = limits.clone();
    out.system = lower(&limits.system);
    out.transient = lower(&limits.transient);
    out.service_default = lower(&limits.service_default);
    out.service = lower_all(&limits.service);
    out.service_peer_default = lower(&limits.service_peer_default);
    out.service_peer = lower_all(&limits.service_peer);
    out.protocol_default = lower(&limits.protocol_default);
    out.protocol = lower_all(&limits.protocol);
    out.protocol_peer_default = lower(&limits.protocol_peer_default);
    out.protocol_peer = lower_all(&limits.protocol_peer);
    out.peer_default = lower(&limits.peer_default);
    out.peer = limits.peer.iter().map(|(k, v)| (*k, lower(v))).collect();
    out.conn = lower(&limits.conn);
    out.stream = lower(&limits.stream);
    out
}

/// Applies `ops` to both managers, comparing after every step, then tears down.
fn run(limits: ConcreteLimitConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut world = World::new(limits);
    world.check()?;
    for (step, op) in ops.iter().enumerate() {
        let at_step = |e: TestCaseError| {
            let steps = ops[..=step].iter().filter(|op| !matches!(op, Op::Nothing));
            TestCaseError::fail(format!(
                "{e}\nat step {step}, after: {:#?}",
                steps.collect::<Vec<_>>()
            ))
        };
        world.apply(op).map_err(at_step)?;
        world.check().map_err(at_step)?;
    }
    world.tear_down().map_err(|e| {
        let steps = ops.iter().filter(|op| !matches!(op, Op::Nothing));
        TestCaseError::fail(format!(
            "{e}\nat tear-down, after: {:#?}",
            steps.collect::<Vec<_>>()
        ))
    })
}

fn case(over_release: bool) -> impl Strategy<Value = (ConcreteLimitConfig, Vec<Op>)> {
    (limits(), prop::collection::vec(op(over_release), 50..=100))
}

proptest! {
    /// The engine and the reference agree at every step of random sequences.
    #[test]
    fn engine_matches_reference((limits, ops) in case(false)) {
        run(limits, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases / 4,
        ..ProptestConfig::default()
    })]

    /// Releasing more than was reserved clamps every counter at zero in both alike.
    #[test]
    fn over_releases_clamp_alike((limits, ops) in case(true)) {
        run(limits, &ops)?;
    }
}

/// A protocol scope whose only stream is gone, and the protocol's scope for that stream's
/// peer with it, is idle: two collection passes remove both.
#[test]
fn two_passes_collect_the_per_peer_scopes_of_a_protocol() {
    let ops = [
        Op::OpenStream {
            peer: 0,
            direction: Direction::Inbound,
        },
        Op::SetProtocol {
            stream: Pick(0),
            protocol: 0,
        },
        Op::CloseStream {
            stream: Pick(0),
            how: Close::Drop,
        },
        Op::Gc,
        Op::Gc,
    ];
    let outcome = run(ConcreteLimitConfig::infinite(), &ops);
    assert!(outcome.is_ok(), "{outcome:?}");
}

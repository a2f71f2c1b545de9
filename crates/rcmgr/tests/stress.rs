//! Stress test: worker threads open and close connections and streams, attach them to
//! peers, protocols and services, reserve and release memory on every kind of scope, begin and
//! end spans and run collection passes, all at once on shared peers and protocols with tight
//! limits. Meanwhile a monitor thread samples `ResourceManager::stat()` and checks that no
//! counter of any scope is ever above its limit. At the end, with every handle dropped, every
//! counter must be zero and two collection passes must empty the peer and protocol
//! registries.
//!
//! A second test pairs threads so that the races the handles' API allows actually happen: one
//! thread lends a span begun on its stream or connection to its partner, which reserves and
//! releases through it while the owner moves the stream or connection to its protocol or peer
//! and closes it.
//!
//! Runs are reproducible per thread: each worker draws from its own generator seeded from
//! `RCMGR_STRESS_SEED` (default below) and its index. `RCMGR_STRESS_OPS` sets the operations
//! per worker, `RCMGR_STRESS_ROUNDS` the rounds per pair.

use std::{
    sync::{
        Barrier, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ConnectionScope, Direction, Error, MemoryGuard, PeerId,
    Priority, ResourceManager, ResourceScope, ScopeStat, Span, StreamScope,
};

const DEFAULT_SEED: u64 = 0x5eed_cafe_f00d_0001;
const DEFAULT_OPS_PER_WORKER: usize = 60_000;
const DEFAULT_ROUNDS_PER_PAIR: usize = 8_000;
const PROTOCOLS: [&str; 3] = ["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/x/echo/1"];
const SERVICES: [&str; 2] = ["libp2p.ping", "libp2p.identify"];
const PEER_COUNT: usize = 6;
/// Handles of each kind one worker holds at most; past that it drops one first.
const HELD_PER_KIND: usize = 6;

/// SplitMix64: small, fast and good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True once in `n` draws.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn direction(&mut self) -> Direction {
        if self.one_in(2) {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }

    fn priority(&mut self) -> Priority {
        [
            Priority::LOW,
            Priority::MEDIUM,
            Priority::HIGH,
            Priority::ALWAYS,
        ][self.below(4)]
    }

    fn size(&mut self) -> usize {
        256 + self.below(6 * 1024)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn limit(streams: (u64, u64, u64), conns: (u64, u64, u64), fd: u64, memory: u64) -> BaseLimit {
    BaseLimit {
        streams: streams.2,
        streams_inbound: streams.0,
        streams_outbound: streams.1,
        conns: conns.2,
        conns_inbound: conns.0,
        conns_outbound: conns.1,
        fd,
        memory,
    }
}

/// Tight limits: the workers together want far more than any scope allows.
fn tight_limits(peers: &[PeerId]) -> ConcreteLimitConfig {
    const KIB: u64 = 1024;
    let mut limits = ConcreteLimitConfig::infinite();
    // Direction limits well below the totals, so that each check gets its turn.
    limits.system = limit((14, 14, 24), (8, 8, 12), 10, 512 * KIB);
    limits.transient = limit((4, 4, 6), (4, 4, 6), 4, 96 * KIB);
    limits.peer_default = limit((3, 3, 5), (2, 2, 3), 2, 96 * KIB);
    limits
        .peer
        .insert(peers[0], limit((1, 1, 2), (1, 1, 1), 1, 32 * KIB));
    limits.protocol_default = limit((5, 5, 8), (0, 0, 0), 0, 128 * KIB);
    let scarce = limit((2, 2, 3), (0, 0, 0), 0, 48 * KIB);
    limits.protocol.insert(PROTOCOLS[0].into(), scarce);
    limits.protocol_peer_default = limit((2, 2, 3), (0, 0, 0), 0, 32 * KIB);
    limits.service_default = limit((4, 4, 6), (0, 0, 0), 0, 96 * KIB);
    limits.service_peer_default = limit((1, 1, 2), (0, 0, 0), 0, 24 * KIB);
    limits.conn = limit((0, 0, 0), (1, 1, 1), 1, 24 * KIB);
    limits.stream = limit((1, 1, 1), (0, 0, 0), 0, 24 * KIB);
    limits
}

/// Checks every counter of `stat` against `limit`, naming the scope if one is over.
fn within_limit(scope: &str, stat: &ScopeStat, limit: &BaseLimit) {
    let checks = [
        (
            "inbound streams",
            u64::from(stat.streams_inbound),
            limit.streams_inbound,
        ),
        (
            "outbound streams",
            u64::from(stat.streams_outbound),
            limit.streams_outbound,
        ),
        ("streams", stat.streams(), limit.streams),
        (
            "inbound conns",
            u64::from(stat.conns_inbound),
            limit.conns_inbound,
        ),
        (
            "outbound conns",
            u64::from(stat.conns_outbound),
            limit.conns_outbound,
        ),
        ("conns", stat.conns(), limit.conns),
        ("fds", u64::from(stat.fd), limit.fd),
        ("memory", stat.memory, limit.memory),
    ];
    for (what, held, max) in checks {
        assert!(
            held <= max,
            "{scope} holds {held} {what}, above its limit {max}: {stat:?}"
        );
    }
}

/// Samples the whole manager until `stop`, checking every scope against its limit.
fn monitor(rm: &ResourceManager, limits: &ConcreteLimitConfig, stop: &AtomicBool) -> u64 {
    let mut samples = 0;
    // Ordering: Relaxed — a stop flag; the join that follows orders everything else.
    while !stop.load(Ordering::Relaxed) {
        let stat = rm.stat();
        within_limit("system", &stat.system, &limits.system);
        within_limit("transient", &stat.transient, &limits.transient);
        for (peer, scope) in &stat.peers {
            within_limit(&format!("peer:{peer}"), scope, &limits.peer_limits(peer));
        }
        for (protocol, scope) in &stat.protocols {
            let limit = limits.protocol_limits(protocol);
            within_limit(&format!("protocol:{protocol}"), scope, &limit);
        }
        for (service, scope) in &stat.services {
            let limit = limits.service_limits(service);
            within_limit(&format!("service:{service}"), scope, &limit);
        }
        samples += 1;
        thread::yield_now();
    }
    samples
}

/// What one worker did.
#[derive(Default)]
struct Tally {
    granted: u64,
    refused: u64,
}

impl Tally {
    /// Counts an outcome. A refusal must be a limit refusal, or come from a scope this
    /// worker closed (a stream it called `done()` on, or a span's closed owner).
    fn count<T>(&mut self, outcome: Result<T, Error>) -> Option<T> {
        match outcome {
            Ok(value) => {
                self.granted += 1;
                Some(value)
            }
            Err(error) => {
                let limit = error.is_resource_limit_exceeded();
                let closed = error.scope_closed().is_some();
                assert!(limit || closed, "unexpected error: {error}");
                self.refused += u64::from(limit);
                None
            }
        }
    }
}

/// A handle with the bytes this worker reserved on it and has not released.
struct Held<H> {
    handle: H,
    reserved: usize,
}

/// Everything one worker holds.
#[derive(Default)]
struct Hand {
    conns: Vec<Held<ConnectionScope>>,
    streams: Vec<Held<StreamScope>>,
    spans: Vec<Held<Span>>,
    guards: Vec<MemoryGuard>,
}

/// Reserves on `scope` and remembers how much, or counts the refusal.
fn reserve_on(scope: &dyn ResourceScope, reserved: &mut usize, rng: &mut Rng, tally: &mut Tally) {
    let size = rng.size();
    if tally
        .count(scope.reserve_memory(size, rng.priority()))
        .is_some()
    {
        *reserved += size;
    }
}

/// Releases part of what was reserved on `scope`.
fn release_on(scope: &dyn ResourceScope, reserved: &mut usize, rng: &mut Rng) {
    let size = rng.below(*reserved + 1);
    scope.release_memory(size);
    *reserved -= size;
}

/// Drops one held item at random once `items` is full.
fn make_room<T>(items: &mut Vec<T>, rng: &mut Rng) {
    if items.len() >= HELD_PER_KIND {
        let at = rng.below(items.len());
        drop(items.swap_remove(at));
    }
}

/// One worker: `ops` random operations on shared peers, protocols and services, checking its
/// own handles against their limits after each.
fn work(rm: &ResourceManager, peers: &[PeerId], seed: u64, ops: usize) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let mut hand = Hand::default();
    let endpoint = "/ip4/198.51.100.7/tcp/4001"
        .parse()
        .expect("valid multiaddr");
    for _ in 0..ops {
        let peer = peers[rng.below(peers.len())];
        match rng.below(14) {
            0 | 1 => {
                make_room(&mut hand.conns, &mut rng);
                let conn = rm.open_connection(rng.direction(), rng.one_in(2), &endpoint);
                if let Some(mut conn) = tally.count(conn) {
                    if !rng.one_in(4) {
                        tally.count(conn.set_peer(peer));
                    }
                    let mut held = Held {
                        handle: conn,
                        reserved: 0,
                    };
                    reserve_on(&held.handle, &mut held.reserved, &mut rng, &mut tally);
                    hand.conns.push(held);
                }
            }
            2..=4 => {
                make_room(&mut hand.streams, &mut rng);
                if let Some(mut stream) = tally.count(rm.open_stream(peer, rng.direction())) {
                    let protocol = PROTOCOLS[rng.below(PROTOCOLS.len())];
                    let attached = tally.count(stream.set_protocol(protocol)).is_some();
                    if attached && rng.one_in(2) {
                        tally.count(stream.set_service(SERVICES[rng.below(SERVICES.len())]));
                    }
                    let mut held = Held {
                        handle: stream,
                        reserved: 0,
                    };
                    reserve_on(&held.handle, &mut held.reserved, &mut rng, &mut tally);
                    hand.streams.push(held);
                }
            }
            5 | 6 => {
                // Reserve or release on a held handle of any kind.
                let reserve = rng.one_in(2);
                let held: Option<(&dyn ResourceScope, &mut usize)> = match rng.below(3) {
                    0 if !hand.conns.is_empty() => {
                        let at = rng.below(hand.conns.len());
                        let h = &mut hand.conns[at];
                        Some((&h.handle, &mut h.reserved))
                    }
                    1 if !hand.streams.is_empty() => {
                        let at = rng.below(hand.streams.len());
                        let h = &mut hand.streams[at];
                        Some((&h.handle, &mut h.reserved))
                    }
                    _ if !hand.spans.is_empty() => {
                        let at = rng.below(hand.spans.len());
                        let h = &mut hand.spans[at];
                        Some((&h.handle, &mut h.reserved))
                    }
                    _ => None,
                };
                if let Some((scope, reserved)) = held {
                    if reserve {
                        reserve_on(scope, reserved, &mut rng, &mut tally);
                    } else {
                        release_on(scope, reserved, &mut rng);
                    }
                }
            }
            7 => {
                // A span on a held handle, a span, or a peer or protocol view.
                make_room(&mut hand.spans, &mut rng);
                let span = match rng.below(4) {
                    0 if !hand.streams.is_empty() => hand.streams[rng.below(hand.streams.len())]
                        .handle
                        .begin_span(),
                    1 if !hand.spans.is_empty() => {
                        hand.spans[rng.below(hand.spans.len())].handle.begin_span()
                    }
                    2 => rm
                        .protocol(PROTOCOLS[rng.below(PROTOCOLS.len())])
                        .begin_span(),
                    _ => rm.peer(&peer).begin_span(),
                };
                // A span's owner may be closed already: then beginning it is refused.
                if let Ok(span) = span {
                    let mut held = Held {
                        handle: span,
                        reserved: 0,
                    };
                    reserve_on(&held.handle, &mut held.reserved, &mut rng, &mut tally);
                    hand.spans.push(held);
                }
            }
            8 => {
                make_room(&mut hand.guards, &mut rng);
                let guard = match rng.below(3) {
                    0 => rm
                        .peer(&peer)
                        .reserve_memory_guard(rng.size(), rng.priority()),
                    1 => rm
                        .transient()
                        .reserve_memory_guard(rng.size(), rng.priority()),
                    _ => {
                        let service = rm.service(SERVICES[rng.below(SERVICES.len())]);
                        service.reserve_memory_guard(rng.size(), rng.priority())
                    }
                };
                if let Some(guard) = tally.count(guard) {
                    hand.guards.push(guard);
                }
            }
            9 => {
                // Close a handle but keep it: it must refuse from now on.
                if !hand.streams.is_empty() {
                    let at = rng.below(hand.streams.len());
                    let stream = &mut hand.streams[at].handle;
                    stream.done();
                    let refused = stream.reserve_memory(1, Priority::ALWAYS);
                    assert!(refused.is_err_and(|e| e.scope_closed().is_some()));
                }
            }
            10 | 11 => {
                // Drop something.
                match rng.below(4) {
                    0 if !hand.conns.is_empty() => drop(hand.conns.swap_remove(0)),
                    1 if !hand.streams.is_empty() => drop(hand.streams.swap_remove(0)),
                    2 if !hand.spans.is_empty() => drop(hand.spans.swap_remove(0)),
                    _ if !hand.guards.is_empty() => drop(hand.guards.swap_remove(0)),
                    _ => {}
                }
            }
            12 => {
                // Memory reserved and released directly on a peer view.
                let view = rm.peer(&peer);
                let size = rng.size();
                if tally
                    .count(view.reserve_memory(size, rng.priority()))
                    .is_some()
                {
                    thread::yield_now();
                    view.release_memory(size);
                }
            }
            _ => {
                if rng.one_in(20) {
                    rm.gc();
                }
            }
        }
        check_handles(rm, &hand);
    }
    tally
}

/// Every handle a worker holds is within its own limit too.
fn check_handles(rm: &ResourceManager, hand: &Hand) {
    let limits = rm.limits();
    for conn in &hand.conns {
        within_limit("conn", &conn.handle.stat(), &limits.conn);
    }
    for stream in &hand.streams {
        within_limit("stream", &stream.handle.stat(), &limits.stream);
    }
}

/// Fixed peers, so that runs name the same scopes.
fn peers() -> Vec<PeerId> {
    (1..=PEER_COUNT as u8)
        .map(|seed| {
            let key = libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
                .expect("32 bytes are a valid ed25519 secret key");
            key.public().to_peer_id()
        })
        .collect()
}

/// A manager with `limits` whose background collector runs every few milliseconds, racing
/// the workers' lookups.
fn manager(limits: &ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits.clone())
        .gc_interval(Duration::from_millis(5))
        .build()
        .expect("builds")
}

/// Runs `workers` threads of `work(index)` while the monitor samples; returns the summed
/// tallies and the number of samples. A panic in any thread fails the test.
fn with_monitor(
    rm: &ResourceManager,
    limits: &ConcreteLimitConfig,
    workers: usize,
    work: impl Fn(usize) -> Tally + Sync,
) -> (Tally, u64) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let sampler = s.spawn(|| monitor(rm, limits, &stop));
        let work = &work;
        let handles: Vec<_> = (0..workers).map(|i| s.spawn(move || work(i))).collect();
        let mut total = Tally::default();
        for handle in handles {
            match handle.join() {
                Ok(tally) => {
                    total.granted += tally.granted;
                    total.refused += tally.refused;
                }
                Err(panic) => {
                    // Ordering: Relaxed — see the monitor loop.
                    stop.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(panic);
                }
            }
        }
        // Ordering: Relaxed — see the monitor loop.
        stop.store(true, Ordering::Relaxed);
        let samples = (sampler.join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (total, samples)
    })
}

/// With every handle gone: every counter of every scope is zero, and two collection passes
/// empty the peer and protocol registries (service scopes are never collected).
fn assert_all_released(rm: &ResourceManager) {
    let stat = rm.stat();
    assert!(
        stat.system.is_empty() && stat.transient.is_empty(),
        "left over: {stat:?}"
    );
    let keyed = stat.peers.values().chain(stat.protocols.values());
    for scope in keyed.chain(stat.services.values()) {
        assert!(scope.is_empty(), "left over: {stat:?}");
    }
    rm.gc();
    rm.gc();
    assert!(
        rm.list_peers().is_empty(),
        "peers left: {:?}",
        rm.list_peers()
    );
    // Protocol and service scopes live as long as the manager; they hold nothing (checked
    // above).
}

/// The number of worker threads: enough to contend on any machine, few enough for a
/// 2-core one.
fn worker_count() -> usize {
    let cores = thread::available_parallelism().map_or(2, usize::from);
    (cores * 4).clamp(4, 8)
}

#[test]
fn no_scope_is_ever_seen_above_its_limit_and_everything_returns_to_zero() {
    let seed = env_or("RCMGR_STRESS_SEED", DEFAULT_SEED);
    let ops = env_or("RCMGR_STRESS_OPS", DEFAULT_OPS_PER_WORKER);
    let peers = peers();
    let limits = tight_limits(&peers);
    let rm = manager(&limits);
    let (tally, samples) = with_monitor(&rm, &limits, worker_count(), |index| {
        work(
            &rm,
            &peers,
            seed ^ (index as u64).wrapping_mul(0x9e37_79b9),
            ops,
        )
    });
    assert!(samples > 0, "the monitor never sampled");
    let (granted, refused) = (tally.granted, tally.refused);
    assert!(
        granted > 0 && refused > 0,
        "limits too loose or too tight: {granted} granted, {refused} refused"
    );
    assert_all_released(&rm);
}

/// What a lender and its borrower share: the span being lent, a barrier for the rounds and
/// a flag that is up while the owner is still being moved and closed.
struct Pairing {
    lent: Mutex<Option<Span>>,
    turn: Barrier,
    owner_busy: AtomicBool,
}

impl Pairing {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Span>> {
        self.lent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The owner's side of a round: opens a stream or a connection, lends a span on it (or on a
/// span of it, which it then closes), then attaches, uses and closes the owner while the
/// borrower reserves through the span.
fn lend(rm: &ResourceManager, peers: &[PeerId], pairing: &Pairing, rng: &mut Rng) -> Tally {
    let mut tally = Tally::default();
    let endpoint = "/ip4/203.0.113.9/udp/4001/quic-v1"
        .parse()
        .expect("valid multiaddr");
    let peer = peers[rng.below(peers.len())];
    let (stream, conn) = if rng.one_in(2) {
        (tally.count(rm.open_stream(peer, rng.direction())), None)
    } else {
        let conn = rm.open_connection(rng.direction(), rng.one_in(2), &endpoint);
        (None, tally.count(conn))
    };
    let owner: Option<&dyn ResourceScope> = match (&stream, &conn) {
        (Some(stream), _) => Some(stream),
        (_, Some(conn)) => Some(conn),
        _ => None,
    };
    let outer = owner.and_then(|owner| tally.count(owner.begin_span()));
    let middle = outer.as_ref().filter(|_| rng.one_in(3));
    let lent = match middle {
        Some(middle) => tally.count(middle.begin_span()),
        None => None,
    };
    let (lent, mut outer) = match lent {
        Some(inner) => (Some(inner), outer),
        None => (outer, None),
    };
    *pairing.slot() = lent;
    // Ordering: Relaxed — a hint that keeps the borrower busy; the barriers order the rest.
    pairing.owner_busy.store(true, Ordering::Relaxed);
    pairing.turn.wait();
    // Move the owner, close the span between it and the lent one, then use and close the
    // owner, all while the borrower reserves and releases through the lent span.
    if let Some(mut stream) = stream {
        let protocol = PROTOCOLS[rng.below(PROTOCOLS.len())];
        if tally.count(stream.set_protocol(protocol)).is_some() && rng.one_in(2) {
            tally.count(stream.set_service(SERVICES[rng.below(SERVICES.len())]));
        }
        close_middle(outer.as_mut());
        let mut reserved = 0;
        reserve_on(&stream, &mut reserved, rng, &mut tally);
        stream.done();
    }
    if let Some(mut conn) = conn {
        tally.count(conn.set_peer(peer));
        close_middle(outer.as_mut());
        let mut reserved = 0;
        reserve_on(&conn, &mut reserved, rng, &mut tally);
        conn.done();
    }
    // Ordering: Relaxed — see above.
    pairing.owner_busy.store(false, Ordering::Relaxed);
    pairing.turn.wait();
    tally
}

/// Closes the span between an owner and the span lent on it, if there is one.
fn close_middle(middle: Option<&mut Span>) {
    if let Some(middle) = middle {
        middle.done();
    }
}

/// The borrower's side of a round: reserves and releases through the lent span while its
/// owner moves and closes, then drops it.
fn borrow(pairing: &Pairing, rng: &mut Rng) -> Tally {
    let mut tally = Tally::default();
    pairing.turn.wait();
    let lent = pairing.slot().take();
    if let Some(span) = lent {
        let mut reserved = 0;
        // Keep reserving and releasing for as long as the owner is being moved and closed.
        // Ordering: Relaxed — see `lend`.
        for round in 0.. {
            if round >= 4 && !pairing.owner_busy.load(Ordering::Relaxed) {
                break;
            }
            reserve_on(&span, &mut reserved, rng, &mut tally);
            release_on(&span, &mut reserved, rng);
        }
        if let Some(inner) = tally.count(span.begin_span()) {
            let mut inner_reserved = 0;
            reserve_on(&inner, &mut inner_reserved, rng, &mut tally);
        }
    }
    pairing.turn.wait();
    tally
}

#[test]
fn transfers_and_closes_race_reservations_through_lent_spans() {
    let seed = env_or("RCMGR_STRESS_SEED", DEFAULT_SEED);
    let rounds = env_or("RCMGR_STRESS_ROUNDS", DEFAULT_ROUNDS_PER_PAIR);
    let peers = peers();
    let limits = tight_limits(&peers);
    let rm = manager(&limits);
    let workers = worker_count() / 2 * 2;
    let pairings: Vec<Pairing> = (0..workers / 2)
        .map(|_| Pairing {
            lent: Mutex::new(None),
            turn: Barrier::new(2),
            owner_busy: AtomicBool::new(false),
        })
        .collect();
    let (tally, _) = with_monitor(&rm, &limits, workers, |index| {
        let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
        let pairing = &pairings[index / 2];
        let mut tally = Tally::default();
        for _ in 0..rounds {
            let round = if index % 2 == 0 {
                lend(&rm, &peers, pairing, &mut rng)
            } else {
                borrow(pairing, &mut rng)
            };
            tally.granted += round.granted;
            tally.refused += round.refused;
        }
        tally
    });
    assert!(tally.granted > 0, "nothing was granted");
    assert_all_released(&rm);
}

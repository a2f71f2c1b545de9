//! The attacker: one thread that pushes one kind of attack as fast as it can until told to
//! stop, then lets go of everything it holds.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicBool, Ordering},
};

use rcmgr::{
    ConnectionScope, Direction, Multiaddr, PeerId, Priority, ResourceManager, ResourceScope,
    StreamScope,
};

use super::{
    honest::{IdSpace, PROTOCOLS, Rng, parse_address, peer_id},
    tally::{LiveSlot, Op, Role, Tally},
};
use crate::{cli::Attack, error::CliError};

/// The attacking host's IPv4 address (in TEST-NET-3: documentation only, never routed).
pub(crate) const ATTACKER_IPV4: &str = "203.0.113.66";
/// The attacker's IPv6 /56 (in the documentation prefix 2001:db8::/32).
pub(crate) const ATTACKER_IPV6_56: &str = "2001:db8:66:6600::/56";

/// How many handles the attacker keeps at most, so that a run on limits that never refuse
/// does not grow without bound.
const MAX_HELD: usize = 50_000;
/// The stream flooder closes its oldest stream after this many refusals: it closes slowly.
const CLOSE_ONE_EVERY: u64 = 8;
/// How often (in operations) the attacker checks for the end and publishes its counts.
const CHECK_EVERY: u64 = 256;
/// The memory attacker's reservations.
const MEMORY_CHUNK: usize = 256 * 1024;
/// How many connections the memory attacker opens (go's default per-address limit).
const MEMORY_ATTACK_CONNS: usize = 8;

/// What the attacker needs before it starts: its peer ID and addresses.
#[derive(Debug)]
pub(crate) struct Attacker {
    kind: Attack,
    id: PeerId,
    ipv4: Multiaddr,
    /// Addresses spread over the attacker's IPv6 /56.
    ipv6: Vec<Multiaddr>,
}

impl Attacker {
    /// Prepares an attack of `kind`.
    pub(crate) fn new(kind: Attack) -> Result<Self, CliError> {
        let mut rng = Rng::new(0x0A77_AC4E);
        let ipv6 = (0..64)
            .map(|_| {
                let (subnet, host) = (rng.below(256), rng.next_u64());
                parse_address(&format!(
                    "/ip6/2001:db8:66:66{subnet:02x}:{:x}:{:x}:{:x}:{:x}/udp/4001/quic-v1",
                    host >> 48,
                    (host >> 32) & 0xffff,
                    (host >> 16) & 0xffff,
                    host & 0xffff,
                ))
            })
            .collect::<Result<_, _>>()?;
        Ok(Attacker {
            kind,
            id: peer_id(IdSpace::Attacker, 0)?,
            ipv4: parse_address(&format!("/ip4/{ATTACKER_IPV4}/tcp/4001"))?,
            ipv6,
        })
    }

    /// The attacker's peer ID (the conn-flood attacker also makes up others).
    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    /// Runs the attack until `stop`, then releases everything and returns the counts.
    pub(crate) fn run(&self, rm: &ResourceManager, stop: &AtomicBool, live: &LiveSlot) -> Tally {
        let mut run = Run {
            rm,
            stop,
            live,
            tally: Tally::default(),
            operations: 0,
            stopped: false,
        };
        match self.kind {
            Attack::None => {}
            Attack::StreamFlood => self.stream_flood(&mut run),
            Attack::ConnFlood => self.conn_flood(&mut run),
            Attack::Memory => self.memory(&mut run),
        }
        run.tally.publish(live);
        run.tally
    }

    /// Opens a connection from the attacker's IPv4 address under its own peer ID.
    fn connect(&self, run: &mut Run<'_>) -> Option<ConnectionScope> {
        let (rm, endpoint, id) = (run.rm, &self.ipv4, self.id);
        let mut conn = run.tally.call(Role::Attacker, Op::OpenConnection, || {
            rm.open_connection(Direction::Inbound, true, endpoint)
        })?;
        run.tally
            .call(Role::Attacker, Op::SetPeer, || conn.set_peer(id))?;
        Some(conn)
    }

    /// Opens an inbound stream on `protocol` (and its service), or `None` if refused.
    fn open_stream(&self, run: &mut Run<'_>, protocol: usize) -> Option<StreamScope> {
        let (rm, id) = (run.rm, self.id);
        let protocol = PROTOCOLS[protocol % PROTOCOLS.len()];
        let mut stream = run.tally.call(Role::Attacker, Op::OpenStream, || {
            rm.open_stream(id, Direction::Inbound)
        })?;
        run.tally.call(Role::Attacker, Op::SetProtocol, || {
            stream.set_protocol(protocol.id)
        })?;
        if let Some(service) = protocol.service {
            run.tally.call(Role::Attacker, Op::SetService, || {
                stream.set_service(service)
            })?;
        }
        Some(stream)
    }

    /// One peer opens inbound streams on the node's protocols as fast as it can and keeps
    /// them, closing its oldest one only every few refusals.
    fn stream_flood(&self, run: &mut Run<'_>) {
        let _conn = self.connect(run);
        let mut held = VecDeque::new();
        let mut refusals = 0u64;
        let mut protocol = 0;
        while run.go_on() {
            protocol += 1;
            match self.open_stream(run, protocol) {
                Some(stream) => hold(&mut held, stream),
                None => {
                    refusals += 1;
                    if refusals.is_multiple_of(CLOSE_ONE_EVERY) {
                        held.pop_front();
                    }
                }
            }
        }
    }

    /// One host opens inbound connections as fast as it can, from its IPv4 address and from
    /// all over its IPv6 /56, each under a fresh peer ID, and keeps every one it gets.
    fn conn_flood(&self, run: &mut Run<'_>) {
        let mut held = VecDeque::new();
        let mut attempt = 0u64;
        while run.go_on() {
            attempt += 1;
            let endpoint = if attempt.is_multiple_of(2) {
                &self.ipv4
            } else {
                &self.ipv6[(attempt / 2) as usize % self.ipv6.len()]
            };
            let rm = run.rm;
            let Some(mut conn) = run.tally.call(Role::Attacker, Op::OpenConnection, || {
                rm.open_connection(Direction::Inbound, true, endpoint)
            }) else {
                continue;
            };
            // A fresh identity for every connection: sybils cost the attacker nothing.
            let Ok(sybil) = peer_id(IdSpace::Attacker, attempt) else {
                continue;
            };
            if run
                .tally
                .call(Role::Attacker, Op::SetPeer, || conn.set_peer(sybil))
                .is_some()
            {
                hold(&mut held, conn);
            }
        }
    }

    /// One peer reserves memory greedily, at the highest priority, on its connections (as a
    /// muxer's buffers would) and on streams of every protocol, and never releases any.
    fn memory(&self, run: &mut Run<'_>) {
        let conns: Vec<ConnectionScope> = (0..MEMORY_ATTACK_CONNS)
            .filter_map(|_| self.connect(run))
            .collect();
        for conn in &conns {
            while run.go_on() && self.reserve(run, conn) {}
        }
        let mut streams = VecDeque::new();
        let mut protocol = 0;
        while run.go_on() {
            protocol += 1;
            let Some(stream) = self.open_stream(run, protocol) else {
                continue;
            };
            while run.go_on() && self.reserve(run, &stream) {}
            hold(&mut streams, stream);
        }
    }

    /// Reserves one chunk of memory on `scope` at the highest priority; false if refused.
    fn reserve(&self, run: &mut Run<'_>, scope: &impl ResourceScope) -> bool {
        run.tally
            .call(Role::Attacker, Op::ReserveMemory, || {
                scope.reserve_memory(MEMORY_CHUNK, Priority::ALWAYS)
            })
            .is_some()
    }
}

/// Keeps `handle`, letting go of the oldest once [`MAX_HELD`] are kept.
fn hold<T>(held: &mut VecDeque<T>, handle: T) {
    if held.len() >= MAX_HELD {
        held.pop_front();
    }
    held.push_back(handle);
}

/// An attack in progress.
struct Run<'a> {
    rm: &'a ResourceManager,
    stop: &'a AtomicBool,
    live: &'a LiveSlot,
    tally: Tally,
    operations: u64,
    stopped: bool,
}

impl Run<'_> {
    /// Whether to go on (once told to stop, never again); every [`CHECK_EVERY`] calls it
    /// also publishes the counts.
    fn go_on(&mut self) -> bool {
        self.operations += 1;
        if !self.stopped && self.operations.is_multiple_of(CHECK_EVERY) {
            self.tally.publish(self.live);
            // Ordering: Relaxed. The flag carries no data; the results travel through the join.
            self.stopped = self.stop.load(Ordering::Relaxed);
        }
        !self.stopped
    }
}

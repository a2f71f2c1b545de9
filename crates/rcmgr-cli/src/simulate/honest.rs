//! The honest peers: each has its own address, keeps one connection (reconnecting every few
//! seconds, well within go's default rate limits), and at every visit closes the streams of
//! its last visit and opens one to three new ones on the node's protocols, each with a
//! realistic memory reservation.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rcmgr::{
    ConnectionScope, Direction, Multiaddr, PeerId, Priority, ResourceManager, ResourceScope,
    StreamScope,
};

use super::tally::{LiveSlot, Op, Role, Tally};
use crate::error::CliError;

/// A protocol the simulated node serves, as its honest peers use it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Protocol {
    /// The protocol ID.
    pub(crate) id: &'static str,
    /// The service that handles it, if any.
    pub(crate) service: Option<&'static str>,
    /// The smallest and largest memory an honest stream of it reserves.
    pub(crate) memory: (usize, usize),
}

const KIB: usize = 1024;

/// The node's protocols: identify and ping with go-libp2p's own limits, kademlia on the
/// protocol defaults, bitswap in a service of its own on the service defaults.
pub(crate) const PROTOCOLS: [Protocol; 4] = [
    Protocol {
        id: "/ipfs/id/1.0.0",
        service: Some("libp2p.identify"),
        memory: (4 * KIB, 16 * KIB),
    },
    Protocol {
        id: "/ipfs/ping/1.0.0",
        service: Some("libp2p.ping"),
        memory: (KIB, KIB),
    },
    Protocol {
        id: "/ipfs/kad/1.0.0",
        service: None,
        memory: (16 * KIB, 64 * KIB),
    },
    Protocol {
        id: "/ipfs/bitswap/1.2.0",
        service: Some("bitswap"),
        memory: (64 * KIB, 256 * KIB),
    },
];

/// How long an honest peer keeps its connection before it reconnects (plus up to
/// [`RECONNECT_JITTER`]): often enough to exercise connections, rarely enough to stay within
/// go's default rate limit of 0.2 new connections per second per address after a burst of 16.
const RECONNECT_EVERY: Duration = Duration::from_secs(3);
const RECONNECT_JITTER: Duration = Duration::from_secs(2);
/// How long an honest peer waits after a refused connection before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A small, fast pseudo-random generator (SplitMix64): the simulation needs variety, not
/// secrecy.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` at least 1).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, (low, high): (usize, usize)) -> usize {
        let span = high.saturating_sub(low) as u64 + 1;
        low + self.below(span) as usize
    }

    /// A duration in `0..max`.
    fn duration_below(&mut self, max: Duration) -> Duration {
        let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.below(millis))
    }
}

/// Who a generated peer ID belongs to, so that honest and attacking IDs never collide.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IdSpace {
    Honest = 1,
    Attacker = 2,
}

/// A peer ID made from `index`: a SHA-256 multihash whose digest is derived from the space
/// and the index (no key pair is needed to account for a peer).
///
/// # Errors
///
/// None in practice (a SHA-256 multihash is always a valid peer ID); the error is passed on
/// rather than assumed away.
pub(crate) fn peer_id(space: IdSpace, index: u64) -> Result<PeerId, CliError> {
    const SHA2_256: u8 = 0x12;
    const DIGEST_LEN: u8 = 32;
    let mut rng = Rng::new(((space as u64) << 56) ^ index);
    let mut bytes = vec![SHA2_256, DIGEST_LEN];
    for _ in 0..4 {
        bytes.extend_from_slice(&rng.next_u64().to_be_bytes());
    }
    PeerId::from_bytes(&bytes)
        .map_err(|err| CliError::Setup(format!("cannot make peer ID {index}: {err}")))
}

/// `address` as a multiaddr.
pub(crate) fn parse_address(address: &str) -> Result<Multiaddr, CliError> {
    address
        .parse()
        .map_err(|err| CliError::Setup(format!("cannot read address {address}: {err}")))
}

/// One honest peer.
#[derive(Debug)]
pub(crate) struct HonestPeer {
    id: PeerId,
    endpoint: Multiaddr,
    direction: Direction,
    conn: Option<ConnectionScope>,
    /// The streams opened at the last visit, closed at the next.
    streams: Vec<StreamScope>,
    reconnect_at: Instant,
    rng: Rng,
}

impl HonestPeer {
    /// Honest peer number `index`, at its own address in 10.0.0.0/8; two in three connect
    /// inbound.
    pub(crate) fn new(index: u64, start: Instant) -> Result<Self, CliError> {
        let n = index + 1;
        let address = format!(
            "/ip4/10.{}.{}.{}/tcp/4001",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        );
        let endpoint = parse_address(&address)?;
        Ok(HonestPeer {
            id: peer_id(IdSpace::Honest, index)?,
            endpoint,
            direction: if index % 3 == 2 {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            conn: None,
            streams: Vec::new(),
            reconnect_at: start,
            rng: Rng::new(index.wrapping_mul(0x2545_F491_4F6C_DD1D)),
        })
    }

    /// One visit: close the last visit's streams, reconnect if it is time, then open new
    /// streams.
    fn visit(&mut self, rm: &ResourceManager, tally: &mut Tally, now: Instant) {
        self.streams.clear();
        if self.conn.is_none() || now >= self.reconnect_at {
            self.reconnect(rm, tally, now);
        }
        if self.conn.is_none() {
            return;
        }
        let count = 1 + self.rng.below(3) as usize;
        let first = self.rng.below(PROTOCOLS.len() as u64) as usize;
        for k in 0..count {
            let protocol = PROTOCOLS[(first + k) % PROTOCOLS.len()];
            if let Some(stream) = self.open_stream(rm, tally, protocol) {
                self.streams.push(stream);
            }
        }
    }

    fn reconnect(&mut self, rm: &ResourceManager, tally: &mut Tally, now: Instant) {
        self.conn = None;
        self.reconnect_at = now + RETRY_AFTER;
        let (direction, endpoint) = (self.direction, &self.endpoint);
        let Some(mut conn) = tally.call(Role::Honest, Op::OpenConnection, || {
            rm.open_connection(direction, true, endpoint)
        }) else {
            return;
        };
        let id = self.id;
        if tally
            .call(Role::Honest, Op::SetPeer, || conn.set_peer(id))
            .is_some()
        {
            self.conn = Some(conn);
            self.reconnect_at = now + RECONNECT_EVERY + self.rng.duration_below(RECONNECT_JITTER);
        }
    }

    fn open_stream(
        &mut self,
        rm: &ResourceManager,
        tally: &mut Tally,
        protocol: Protocol,
    ) -> Option<StreamScope> {
        let direction = if self.rng.below(10) < 6 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let id = self.id;
        let mut stream = tally.call(Role::Honest, Op::OpenStream, || {
            rm.open_stream(id, direction)
        })?;
        tally.call(Role::Honest, Op::SetProtocol, || {
            stream.set_protocol(protocol.id)
        })?;
        if let Some(service) = protocol.service {
            tally.call(Role::Honest, Op::SetService, || stream.set_service(service))?;
        }
        let size = self.rng.between(protocol.memory);
        tally.call(Role::Honest, Op::ReserveMemory, || {
            stream.reserve_memory(size, Priority::HIGH)
        })?;
        Some(stream)
    }
}

/// A worker thread's loop: visit each of `peers` in turn until `stop`, then release
/// everything and return the counts.
pub(crate) fn run_worker(
    rm: &ResourceManager,
    mut peers: Vec<HonestPeer>,
    stop: &AtomicBool,
    live: &LiveSlot,
) -> Tally {
    let mut tally = Tally::default();
    // Ordering: Relaxed. The flag carries no data; the results travel through the join.
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for peer in &mut peers {
            peer.visit(rm, &mut tally, now);
        }
        tally.publish(live);
    }
    drop(peers);
    tally
}

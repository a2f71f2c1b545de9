//! What one thread of the simulation counts: attempts and successes of each operation, the
//! refusals by scope and resource, and a sample of operation latencies. Each thread keeps its
//! own [`Tally`] (nothing shared, nothing contended) and the tallies are merged at the end;
//! a [`LiveSlot`] per thread carries running totals to the progress line.

use std::{
    collections::BTreeMap,
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use rcmgr::{AddressRange, Error, Resource, ScopeName};

/// Who performed an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// One of the honest peers.
    Honest,
    /// The attacker.
    Attacker,
}

impl Role {
    const ALL: [Role; 2] = [Role::Honest, Role::Attacker];

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Role::Honest => "honest",
            Role::Attacker => "attacker",
        })
    }
}

/// An operation on the resource manager that may be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `open_connection`.
    OpenConnection,
    /// `ConnectionScope::set_peer`.
    SetPeer,
    /// `open_stream`.
    OpenStream,
    /// `StreamScope::set_protocol`.
    SetProtocol,
    /// `StreamScope::set_service`.
    SetService,
    /// `reserve_memory` on a connection or stream.
    ReserveMemory,
}

impl Op {
    /// Every operation, in the order of a connection's and a stream's life.
    pub const ALL: [Op; 6] = [
        Op::OpenConnection,
        Op::SetPeer,
        Op::OpenStream,
        Op::SetProtocol,
        Op::SetService,
        Op::ReserveMemory,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    /// The operation's name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Op::OpenConnection => "open connection",
            Op::SetPeer => "set peer",
            Op::OpenStream => "open stream",
            Op::SetProtocol => "set protocol",
            Op::SetService => "set service",
            Op::ReserveMemory => "reserve memory",
        }
    }
}

/// The kind of limit that refused: the class of the scope whose limit it was, or one of the
/// address-based limits that come before any scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusedBy {
    /// The system scope.
    System,
    /// The transient scope.
    Transient,
    /// The allowlisted system scope.
    AllowlistedSystem,
    /// The allowlisted transient scope.
    AllowlistedTransient,
    /// A service scope.
    Service,
    /// A protocol scope.
    Protocol,
    /// A peer's scope within a service.
    ServicePeer,
    /// A peer's scope within a protocol.
    ProtocolPeer,
    /// A peer scope.
    Peer,
    /// A connection's own scope.
    Conn,
    /// A stream's own scope.
    Stream,
    /// A span's own scope.
    Span,
    /// A per-IP, subnet or network-prefix connection limit.
    AddressLimit,
    /// A connection rate limit.
    RateLimit,
}

impl RefusedBy {
    /// Whether every peer's reservations meet this limit (the system, transient, allowlisted,
    /// service and protocol scopes), as opposed to limits that only the asking peer, its
    /// connections, streams and addresses reach. An attack is contained when it is refused
    /// by the second kind.
    pub const fn is_shared(self) -> bool {
        matches!(
            self,
            RefusedBy::System
                | RefusedBy::Transient
                | RefusedBy::AllowlistedSystem
                | RefusedBy::AllowlistedTransient
                | RefusedBy::Service
                | RefusedBy::Protocol
        )
    }

    /// The kind of limit that refused `error`, with the resource, or `None` for an error that
    /// is not a refusal.
    pub fn of(error: &Error) -> Option<(RefusedBy, Refused)> {
        if let Some(refusal) = error.limit_exceeded() {
            let by = match refusal.refused_by() {
                ScopeName::System => RefusedBy::System,
                ScopeName::Transient => RefusedBy::Transient,
                ScopeName::AllowlistedSystem => RefusedBy::AllowlistedSystem,
                ScopeName::AllowlistedTransient => RefusedBy::AllowlistedTransient,
                ScopeName::Service(_) => RefusedBy::Service,
                ScopeName::ServicePeer { .. } => RefusedBy::ServicePeer,
                ScopeName::Protocol(_) => RefusedBy::Protocol,
                ScopeName::ProtocolPeer { .. } => RefusedBy::ProtocolPeer,
                ScopeName::Peer(_) => RefusedBy::Peer,
                ScopeName::Conn(_) => RefusedBy::Conn,
                ScopeName::Stream(_) => RefusedBy::Stream,
                // Spans, and any scope kind added later: the asker's own.
                _ => RefusedBy::Span,
            };
            return Some((by, Refused::of(refusal.resource())));
        }
        if let Some(refusal) = error.ip_limit_exceeded() {
            let what = match refusal.range() {
                AddressRange::Subnet(_) => Refused::ConnsPerSubnet,
                _ => Refused::ConnsPerNetwork,
            };
            return Some((RefusedBy::AddressLimit, what));
        }
        error
            .rate_limited()
            .map(|_| (RefusedBy::RateLimit, Refused::ConnRate))
    }
}

impl fmt::Display for RefusedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            RefusedBy::System => "system",
            RefusedBy::Transient => "transient",
            RefusedBy::AllowlistedSystem => "allowlisted system",
            RefusedBy::AllowlistedTransient => "allowlisted transient",
            RefusedBy::Service => "service",
            RefusedBy::Protocol => "protocol",
            RefusedBy::ServicePeer => "service-peer",
            RefusedBy::ProtocolPeer => "protocol-peer",
            RefusedBy::Peer => "peer",
            RefusedBy::Conn => "connection",
            RefusedBy::Stream => "stream",
            RefusedBy::Span => "span",
            RefusedBy::AddressLimit => "address limits",
            RefusedBy::RateLimit => "rate limits",
        })
    }
}

/// What a limit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// An inbound stream.
    StreamsInbound,
    /// An outbound stream.
    StreamsOutbound,
    /// A stream, by the total.
    Streams,
    /// An inbound connection.
    ConnsInbound,
    /// An outbound connection.
    ConnsOutbound,
    /// A connection, by the total.
    Conns,
    /// A file descriptor.
    Fd,
    /// Memory.
    Memory,
    /// A connection, by a subnet's count.
    ConnsPerSubnet,
    /// A connection, by a network prefix's count.
    ConnsPerNetwork,
    /// A connection, by a rate limit.
    ConnRate,
    /// A resource this tool does not know yet.
    Other,
}

impl Refused {
    fn of(resource: Resource) -> Refused {
        match resource {
            Resource::Memory { .. } => Refused::Memory,
            Resource::StreamsInbound => Refused::StreamsInbound,
            Resource::StreamsOutbound => Refused::StreamsOutbound,
            Resource::Streams => Refused::Streams,
            Resource::ConnsInbound => Refused::ConnsInbound,
            Resource::ConnsOutbound => Refused::ConnsOutbound,
            Resource::Conns => Refused::Conns,
            Resource::FileDescriptors => Refused::Fd,
            _ => Refused::Other,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Refused::StreamsInbound => "inbound stream",
            Refused::StreamsOutbound => "outbound stream",
            Refused::Streams => "stream",
            Refused::ConnsInbound => "inbound connection",
            Refused::ConnsOutbound => "outbound connection",
            Refused::Conns => "connection",
            Refused::Fd => "file descriptor",
            Refused::Memory => "memory",
            Refused::ConnsPerSubnet => "connections per subnet",
            Refused::ConnsPerNetwork => "connections per network",
            Refused::ConnRate => "connection rate",
            Refused::Other => "other",
        })
    }
}

/// Where refusals are counted: who was refused, by what, for what.
pub type RefusalKey = (Role, RefusedBy, Refused);

/// How many distinct unexpected errors a tally keeps by their text.
const MAX_ERROR_TEXTS: usize = 16;

/// One thread's counts.
#[derive(Debug, Default)]
pub struct Tally {
    attempts: [[u64; Op::ALL.len()]; Role::ALL.len()],
    successes: [[u64; Op::ALL.len()]; Role::ALL.len()],
    refusals: BTreeMap<RefusalKey, u64>,
    errors: BTreeMap<String, u64>,
    latency: LatencySample,
}

impl Tally {
    /// Runs one operation for `role`, counts it, and gives back its result on success. A
    /// refusal is counted by scope and resource; any other error by its text.
    pub fn call<T>(
        &mut self,
        role: Role,
        op: Op,
        operation: impl FnOnce() -> Result<T, Error>,
    ) -> Option<T> {
        let result = if role == Role::Honest && self.latency.due() {
            let start = Instant::now();
            let result = operation();
            self.latency.push(start.elapsed());
            result
        } else {
            operation()
        };
        self.attempts[role.index()][op.index()] += 1;
        match result {
            Ok(value) => {
                self.successes[role.index()][op.index()] += 1;
                Some(value)
            }
            Err(error) => {
                self.count_error(role, &error);
                None
            }
        }
    }

    fn count_error(&mut self, role: Role, error: &Error) {
        match RefusedBy::of(error) {
            Some((by, what)) => *self.refusals.entry((role, by, what)).or_default() += 1,
            None => {
                let text = error.to_string();
                if self.errors.len() < MAX_ERROR_TEXTS || self.errors.contains_key(&text) {
                    *self.errors.entry(text).or_default() += 1;
                }
            }
        }
    }

    /// Attempts of `op` by `role`.
    pub fn attempts(&self, role: Role, op: Op) -> u64 {
        self.attempts[role.index()][op.index()]
    }

    /// Successes of `op` by `role`.
    pub fn successes(&self, role: Role, op: Op) -> u64 {
        self.successes[role.index()][op.index()]
    }

    /// Every attempt by `role`.
    pub fn total_attempts(&self, role: Role) -> u64 {
        self.attempts[role.index()].iter().sum()
    }

    /// Every success by `role`.
    pub fn total_successes(&self, role: Role) -> u64 {
        self.successes[role.index()].iter().sum()
    }

    /// Refusals, by who, what refused and what was refused.
    pub fn refusals(&self) -> &BTreeMap<RefusalKey, u64> {
        &self.refusals
    }

    /// Errors that were not refusals (none are expected), by their text.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Refusals of `role`'s operations by shared limits and by limits of its own.
    pub fn refusals_by_reach(&self, role: Role) -> (u64, u64) {
        let mut shared_and_own = (0, 0);
        for ((who, by, _), count) in &self.refusals {
            if *who == role {
                if by.is_shared() {
                    shared_and_own.0 += count;
                } else {
                    shared_and_own.1 += count;
                }
            }
        }
        shared_and_own
    }

    /// The sampled latencies of honest operations, in nanoseconds, sorted.
    pub fn latencies(&self) -> Vec<u64> {
        let mut sorted = self.latency.nanos.clone();
        sorted.sort_unstable();
        sorted
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Tally) {
        for role in Role::ALL {
            for op in Op::ALL {
                let (r, o) = (role.index(), op.index());
                self.attempts[r][o] += other.attempts[r][o];
                self.successes[r][o] += other.successes[r][o];
            }
        }
        for (key, count) in other.refusals {
            *self.refusals.entry(key).or_default() += count;
        }
        for (text, count) in other.errors {
            *self.errors.entry(text).or_default() += count;
        }
        self.latency.nanos.extend(other.latency.nanos);
    }

    /// Publishes the running totals to the progress line.
    pub fn publish(&self, slot: &LiveSlot) {
        // Ordering: Relaxed. The counts are read for display only; nothing else is published
        // through them.
        slot.attempts.store(
            self.total_attempts(Role::Honest) + self.total_attempts(Role::Attacker),
            Ordering::Relaxed,
        );
        slot.honest_attempts
            .store(self.total_attempts(Role::Honest), Ordering::Relaxed);
        slot.honest_successes
            .store(self.total_successes(Role::Honest), Ordering::Relaxed);
        let attacker_refused =
            self.total_attempts(Role::Attacker) - self.total_successes(Role::Attacker);
        slot.attacker_refused
            .store(attacker_refused, Ordering::Relaxed);
    }
}

/// How many latency samples a thread keeps at most; past that it keeps every other one and
/// samples half as often, so the sample stays spread over the whole run.
const LATENCY_SAMPLES: usize = 1 << 16;

/// A thinned-out sample of operation latencies.
#[derive(Debug)]
struct LatencySample {
    /// Sample one operation in this many (a power of two).
    every: u64,
    /// Operations seen.
    seen: u64,
    nanos: Vec<u64>,
}

impl Default for LatencySample {
    fn default() -> Self {
        LatencySample {
            every: 64,
            seen: 0,
            nanos: Vec::new(),
        }
    }
}

impl LatencySample {
    /// Whether the next operation should be timed.
    fn due(&mut self) -> bool {
        self.seen += 1;
        self.seen & (self.every - 1) == 0
    }

    fn push(&mut self, elapsed: Duration) {
        if self.nanos.len() >= LATENCY_SAMPLES {
            let mut index = 0;
            self.nanos.retain(|_| {
                index += 1;
                index % 2 == 0
            });
            self.every *= 2;
        }
        self.nanos
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// One thread's running totals, for the progress line: written by that thread alone, read by
/// the monitor. Padded so that threads never share a cache line.
#[derive(Debug, Default)]
pub struct LiveSlot {
    attempts: AtomicU64,
    honest_attempts: AtomicU64,
    honest_successes: AtomicU64,
    attacker_refused: AtomicU64,
}

/// The sums of every thread's [`LiveSlot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveTotals {
    /// Operations by everyone.
    pub attempts: u64,
    /// Operations by honest peers.
    pub honest_attempts: u64,
    /// Honest operations that succeeded.
    pub honest_successes: u64,
    /// Attacker operations that were refused.
    pub attacker_refused: u64,
}

impl LiveTotals {
    /// The sums over `slots`.
    pub fn sum<'a>(slots: impl IntoIterator<Item = &'a LiveSlot>) -> Self {
        let mut totals = LiveTotals::default();
        for slot in slots {
            // Ordering: Relaxed, see `Tally::publish`.
            totals.attempts += slot.attempts.load(Ordering::Relaxed);
            totals.honest_attempts += slot.honest_attempts.load(Ordering::Relaxed);
            totals.honest_successes += slot.honest_successes.load(Ordering::Relaxed);
            totals.attacker_refused += slot.attacker_refused.load(Ordering::Relaxed);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};

    use super::*;

    #[test]
    fn refusals_are_counted_by_scope_class_and_resource() {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default.streams_inbound = 1;
        let rm = ResourceManager::new(limits);
        let peer = crate::simulate::honest::peer_id(crate::simulate::honest::IdSpace::Honest, 7)
            .expect("a peer ID");
        let mut tally = Tally::default();
        let first = tally.call(Role::Attacker, Op::OpenStream, || {
            rm.open_stream(peer, Direction::Inbound)
        });
        assert!(first.is_some());
        let second = tally.call(Role::Attacker, Op::OpenStream, || {
            rm.open_stream(peer, Direction::Inbound)
        });
        assert!(second.is_none());
        assert_eq!(tally.attempts(Role::Attacker, Op::OpenStream), 2);
        assert_eq!(tally.successes(Role::Attacker, Op::OpenStream), 1);
        let key = (Role::Attacker, RefusedBy::Peer, Refused::StreamsInbound);
        assert_eq!(tally.refusals().get(&key), Some(&1));
        assert_eq!(tally.refusals_by_reach(Role::Attacker), (0, 1));
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        let _ = a.call(Role::Honest, Op::SetPeer, || Ok::<_, Error>(()));
        let _ = b.call(Role::Honest, Op::SetPeer, || {
            Err::<(), _>(Error::ConnAlreadyAttached)
        });
        a.merge(b);
        assert_eq!(a.attempts(Role::Honest, Op::SetPeer), 2);
        assert_eq!(a.total_successes(Role::Honest), 1);
        assert_eq!(a.errors().values().sum::<u64>(), 1);
    }

    #[test]
    fn the_latency_sample_stays_bounded_and_spread() {
        let mut sample = LatencySample::default();
        for _ in 0..(3 * LATENCY_SAMPLES) {
            sample.push(Duration::from_nanos(1));
        }
        assert!(sample.nanos.len() <= LATENCY_SAMPLES);
        assert!(sample.every > 64);
    }
}

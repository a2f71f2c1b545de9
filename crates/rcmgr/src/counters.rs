//! A scope's counters: three packed 64-bit words and the one check-and-add loop that updates
//! all of them.
//!
//! * The **memory word** holds the bytes in use (53 bits) and, above them, the scope's
//!   structural state: its edge set (which parents it reports to), a "transfer in progress"
//!   flag and a "closed" flag. Keeping the state in the same word as the usage is what lets a
//!   reservation commit to a scope and check, in the same compare-and-swap, that the scope is
//!   still open and still has the parents the reservation was charged to.
//! * The **streams word** holds inbound and outbound stream counts (32 bits each), so one
//!   compare-and-swap checks the inbound, outbound and total limits together.
//! * The **conns word** holds inbound and outbound connections and file descriptors (21 bits
//!   each, up to 2,097,151), checked together the same way.
//!
//! A field never grows past its capacity: a reservation that would is refused as if the
//! capacity were the limit, so no configuration can make a counter wrap.
//!
//! # Synchronization
//!
//! Counters publish no data: each limit is checked against one word's own modification order,
//! which every compare-and-swap sees whatever its ordering. Orderings therefore matter only
//! where one word's update must be seen to precede another's; each call site names its
//! ordering and says why, and docs/memory-ordering.md has the whole argument.

use crate::{
    edges::EdgeSet,
    limits::BaseLimit,
    resource::{Direction, Priority, Resource},
    stat::ScopeStat,
    sync::{AtomicU64, Backoff, Ordering},
};

/// The one check-and-add loop: applies `next` to the word's current value and stores the
/// result with a compare-and-swap, retrying when another thread got there first. `next` may
/// refuse, which leaves the word untouched. Returns the value the successful swap replaced.
///
/// `success` is the ordering of the successful swap; loads use its acquire half.
#[inline]
pub(crate) fn update<E>(
    word: &AtomicU64,
    success: Ordering,
    mut next: impl FnMut(u64) -> Result<u64, E>,
) -> Result<u64, E> {
    let load = match success {
        Ordering::AcqRel | Ordering::Acquire | Ordering::SeqCst => Ordering::Acquire,
        _ => Ordering::Relaxed,
    };
    let backoff = Backoff::new();
    let mut current = word.load(load);
    loop {
        let new = next(current)?;
        match word.compare_exchange_weak(current, new, success, load) {
            Ok(previous) => return Ok(previous),
            Err(actual) => {
                current = actual;
                backoff.spin();
            }
        }
    }
}

/// A limit that refused: which resource, how much was in use, how much was asked for, and
/// the limit it would have passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) resource: Resource,
    pub(crate) current: u64,
    pub(crate) attempted: u64,
    pub(crate) limit: u64,
}

/// The memory word: `[closed:1 | transferring:1 | edges:9 | used:53]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemoryWord(pub(crate) u64);

impl MemoryWord {
    /// The most bytes one scope can count: 2^53 - 1, about 9 PiB.
    pub(crate) const CAPACITY: u64 = (1 << 53) - 1;
    const EDGES_SHIFT: u32 = 53;
    const EDGES_MASK: u64 = (1 << EdgeSet::BITS) - 1;
    const TRANSFERRING: u64 = 1 << 62;
    const CLOSED: u64 = 1 << 63;

    pub(crate) const fn new(edges: EdgeSet) -> Self {
        MemoryWord((edges.bits() as u64) << Self::EDGES_SHIFT)
    }

    pub(crate) const fn used(self) -> u64 {
        self.0 & Self::CAPACITY
    }

    pub(crate) const fn edges(self) -> EdgeSet {
        EdgeSet::from_bits(((self.0 >> Self::EDGES_SHIFT) & Self::EDGES_MASK) as u16)
    }

    pub(crate) const fn is_closed(self) -> bool {
        self.0 & Self::CLOSED != 0
    }

    pub(crate) const fn is_transferring(self) -> bool {
        self.0 & Self::TRANSFERRING != 0
    }

    pub(crate) const fn with_used(self, used: u64) -> Self {
        MemoryWord((self.0 & !Self::CAPACITY) | (used & Self::CAPACITY))
    }

    pub(crate) const fn with_edges(self, edges: EdgeSet) -> Self {
        let cleared = self.0 & !(Self::EDGES_MASK << Self::EDGES_SHIFT);
        MemoryWord(cleared | (edges.bits() as u64) << Self::EDGES_SHIFT)
    }

    pub(crate) const fn with_transferring(self, on: bool) -> Self {
        if on {
            MemoryWord(self.0 | Self::TRANSFERRING)
        } else {
            MemoryWord(self.0 & !Self::TRANSFERRING)
        }
    }

    /// The word of a closed scope: nothing in use, no parents.
    pub(crate) const fn closed() -> Self {
        MemoryWord(Self::CLOSED)
    }
}

/// The streams word: `[outbound:32 | inbound:32]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamsWord(pub(crate) u64);

impl StreamsWord {
    /// The most streams of one direction one scope can count.
    pub(crate) const CAPACITY: u64 = u32::MAX as u64;

    pub(crate) const fn new(inbound: u64, outbound: u64) -> Self {
        StreamsWord((outbound << 32) | inbound)
    }

    pub(crate) const fn inbound(self) -> u64 {
        self.0 & Self::CAPACITY
    }

    pub(crate) const fn outbound(self) -> u64 {
        self.0 >> 32
    }
}

/// The conns word: `[unused:1 | fd:21 | outbound:21 | inbound:21]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnsWord(pub(crate) u64);

impl ConnsWord {
    /// The most connections of one direction, or file descriptors, one scope can count.
    pub(crate) const CAPACITY: u64 = (1 << 21) - 1;

    pub(crate) const fn new(inbound: u64, outbound: u64, fd: u64) -> Self {
        ConnsWord((fd << 42) | (outbound << 21) | inbound)
    }

    pub(crate) const fn inbound(self) -> u64 {
        self.0 & Self::CAPACITY
    }

    pub(crate) const fn outbound(self) -> u64 {
        (self.0 >> 21) & Self::CAPACITY
    }

    pub(crate) const fn fd(self) -> u64 {
        (self.0 >> 42) & Self::CAPACITY
    }
}

/// Adds `size` bytes to `used` if go's priority rule allows it:
/// `used + size <= floor((prio + 1) * limit / 256)`. An unlimited limit is never checked, but
/// no scope counts past [`MemoryWord::CAPACITY`].
pub(crate) fn add_memory(used: u64, size: u64, priority: Priority, limit: u64) -> Result<u64, Hit> {
    let ceiling = if limit >= BaseLimit::UNLIMITED {
        MemoryWord::CAPACITY
    } else {
        priority.threshold(limit).min(MemoryWord::CAPACITY)
    };
    match used.checked_add(size) {
        Some(new) if new <= ceiling => Ok(new),
        _ => Err(Hit {
            resource: Resource::Memory { priority },
            current: used,
            attempted: size,
            limit,
        }),
    }
}

/// Adds streams in go's check order: inbound (if any), outbound (if any), then the total,
/// which is checked even when nothing is added.
pub(crate) fn add_streams(
    word: StreamsWord,
    inbound: u64,
    outbound: u64,
    limit: &BaseLimit,
) -> Result<StreamsWord, Hit> {
    let (cur_in, cur_out) = (word.inbound(), word.outbound());
    let refuse = |resource, current, attempted, limit| {
        Err(Hit {
            resource,
            current,
            attempted,
            limit,
        })
    };
    if inbound > 0
        && exceeds(
            cur_in,
            inbound,
            limit.streams_inbound,
            StreamsWord::CAPACITY,
        )
    {
        return refuse(
            Resource::StreamsInbound,
            cur_in,
            inbound,
            limit.streams_inbound,
        );
    }
    if outbound > 0
        && exceeds(
            cur_out,
            outbound,
            limit.streams_outbound,
            StreamsWord::CAPACITY,
        )
    {
        return refuse(
            Resource::StreamsOutbound,
            cur_out,
            outbound,
            limit.streams_outbound,
        );
    }
    let (total, adding) = (cur_in + cur_out, inbound.saturating_add(outbound));
    if total.saturating_add(adding) > limit.streams {
        return refuse(Resource::Streams, total, adding, limit.streams);
    }
    Ok(StreamsWord::new(cur_in + inbound, cur_out + outbound))
}

/// Adds connections in go's check order: inbound (if any), outbound (if any), the total
/// (always), then file descriptors (if any).
pub(crate) fn add_conns(
    word: ConnsWord,
    inbound: u64,
    outbound: u64,
    fd: u64,
    limit: &BaseLimit,
) -> Result<ConnsWord, Hit> {
    let (cur_in, cur_out, cur_fd) = (word.inbound(), word.outbound(), word.fd());
    let refuse = |resource, current, attempted, limit| {
        Err(Hit {
            resource,
            current,
            attempted,
            limit,
        })
    };
    if inbound > 0 && exceeds(cur_in, inbound, limit.conns_inbound, ConnsWord::CAPACITY) {
        return refuse(Resource::ConnsInbound, cur_in, inbound, limit.conns_inbound);
    }
    if outbound > 0 && exceeds(cur_out, outbound, limit.conns_outbound, ConnsWord::CAPACITY) {
        return refuse(
            Resource::ConnsOutbound,
            cur_out,
            outbound,
            limit.conns_outbound,
        );
    }
    let (total, adding) = (cur_in + cur_out, inbound.saturating_add(outbound));
    if total.saturating_add(adding) > limit.conns {
        return refuse(Resource::Conns, total, adding, limit.conns);
    }
    if fd > 0 && exceeds(cur_fd, fd, limit.fd, ConnsWord::CAPACITY) {
        return refuse(Resource::FileDescriptors, cur_fd, fd, limit.fd);
    }
    Ok(ConnsWord::new(
        cur_in + inbound,
        cur_out + outbound,
        cur_fd + fd,
    ))
}

/// Whether `current + adding` passes `limit` or the field's `capacity`.
fn exceeds(current: u64, adding: u64, limit: u64, capacity: u64) -> bool {
    let new = current.saturating_add(adding);
    new > limit || new > capacity
}

/// Which counters a release would have taken below zero. Releases clamp at zero, as go's do,
/// and the caller logs go's "BUG: ..." warning once the swap has succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Underflow {
    pub(crate) memory: bool,
    pub(crate) streams_inbound: bool,
    pub(crate) streams_outbound: bool,
    pub(crate) conns_inbound: bool,
    pub(crate) conns_outbound: bool,
    pub(crate) fd: bool,
}

impl Underflow {
    /// Whether any counter was clamped.
    #[inline]
    pub(crate) fn any(self) -> bool {
        self != Underflow::default()
    }

    /// Logs one warning per counter that was clamped, with go's messages.
    pub(crate) fn report(self, scope: &dyn std::fmt::Display) {
        let messages = [
            (self.memory, "BUG: too much memory released"),
            (
                self.streams_inbound,
                "BUG: too many inbound streams released",
            ),
            (
                self.streams_outbound,
                "BUG: too many outbound streams released",
            ),
            (
                self.conns_inbound,
                "BUG: too many inbound connections released",
            ),
            (
                self.conns_outbound,
                "BUG: too many outbound connections released",
            ),
            (self.fd, "BUG: too many file descriptors released"),
        ];
        for (clamped, message) in messages {
            if clamped {
                tracing::warn!(target: "rcmgr", scope = %scope, "{message}");
            }
        }
    }
}

/// `current - amount`, clamped at zero; the flag says whether it had to clamp.
fn clamped_sub(current: u64, amount: u64) -> (u64, bool) {
    match current.checked_sub(amount) {
        Some(left) => (left, false),
        None => (0, true),
    }
}

pub(crate) fn sub_memory(used: u64, size: u64, underflow: &mut Underflow) -> u64 {
    let (left, clamped) = clamped_sub(used, size);
    underflow.memory = clamped;
    left
}

pub(crate) fn sub_streams(
    word: StreamsWord,
    inbound: u64,
    outbound: u64,
    underflow: &mut Underflow,
) -> StreamsWord {
    let (cur_in, clamped_in) = clamped_sub(word.inbound(), inbound);
    let (cur_out, clamped_out) = clamped_sub(word.outbound(), outbound);
    underflow.streams_inbound = clamped_in;
    underflow.streams_outbound = clamped_out;
    StreamsWord::new(cur_in, cur_out)
}

pub(crate) fn sub_conns(
    word: ConnsWord,
    inbound: u64,
    outbound: u64,
    fd: u64,
    underflow: &mut Underflow,
) -> ConnsWord {
    let (cur_in, clamped_in) = clamped_sub(word.inbound(), inbound);
    let (cur_out, clamped_out) = clamped_sub(word.outbound(), outbound);
    let (cur_fd, clamped_fd) = clamped_sub(word.fd(), fd);
    underflow.conns_inbound = clamped_in;
    underflow.conns_outbound = clamped_out;
    underflow.fd = clamped_fd;
    ConnsWord::new(cur_in, cur_out, cur_fd)
}

/// One scope's three counter words, together on their own cache line(s).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) memory: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) conns: AtomicU64,
}

impl Counters {
    pub(crate) fn new(edges: EdgeSet) -> Self {
        Counters {
            memory: AtomicU64::new(MemoryWord::new(edges).0),
            streams: AtomicU64::new(0),
            conns: AtomicU64::new(0),
        }
    }

    /// The counts, each read on its own: exact for each word at the moment it was read, not a
    /// consistent cut across words.
    pub(crate) fn stat(&self) -> ScopeStat {
        // Ordering: Relaxed — a statistic reads one word at a time and publishes nothing.
        let memory = MemoryWord(self.memory.load(Ordering::Relaxed));
        let streams = StreamsWord(self.streams.load(Ordering::Relaxed));
        let conns = ConnsWord(self.conns.load(Ordering::Relaxed));
        ScopeStat {
            memory: memory.used(),
            streams_inbound: streams.inbound() as u32,
            streams_outbound: streams.outbound() as u32,
            conns_inbound: conns.inbound() as u32,
            conns_outbound: conns.outbound() as u32,
            fd: conns.fd() as u32,
        }
    }

    /// The direction's (inbound, outbound) stream counts for one stream.
    pub(crate) fn one_stream(direction: Direction) -> (u64, u64) {
        match direction {
            Direction::Inbound => (1, 0),
            Direction::Outbound => (0, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(streams: (u64, u64, u64), conns: (u64, u64, u64), fd: u64) -> BaseLimit {
        BaseLimit {
            streams: streams.2,
            streams_inbound: streams.0,
            streams_outbound: streams.1,
            conns: conns.2,
            conns_inbound: conns.0,
            conns_outbound: conns.1,
            fd,
            memory: 0,
        }
    }

    #[test]
    fn memory_threshold_follows_go_vectors() {
        // floor((p+1)*L/256) for the vectors of go-rcmgr-behaviour.md section 3.2.
        let cases: [(u64, u8, u64); 8] = [
            (4096, 0, 16),
            (4096, 101, 1632),
            (4096, 203, 3264),
            (100, 152, 59),
            (1_048_576, 127, 524_288),
            (134_217_728, 254, 133_693_440),
            ((1 << 63) - 2, 0, 36_028_797_018_963_967),
            ((1 << 63) - 2, 203, 7_349_874_591_868_649_470),
        ];
        for (limit, prio, threshold) in cases {
            assert_eq!(
                Priority(prio).threshold(limit),
                threshold,
                "L={limit} p={prio}"
            );
        }
    }

    #[test]
    fn memory_check_is_inclusive_and_refuses_above() {
        assert_eq!(add_memory(0, 3264, Priority::HIGH, 4096), Ok(3264));
        let hit = add_memory(1, 3264, Priority::HIGH, 4096).unwrap_err();
        assert_eq!((hit.current, hit.attempted, hit.limit), (1, 3264, 4096));
        // A zero-byte reservation succeeds only at or below the threshold.
        assert!(add_memory(1632, 0, Priority::LOW, 4096).is_ok());
        assert!(add_memory(1633, 0, Priority::LOW, 4096).is_err());
        // A limit of zero allows only zero-byte reservations.
        assert!(add_memory(0, 0, Priority::ALWAYS, 0).is_ok());
        assert!(add_memory(0, 1, Priority::ALWAYS, 0).is_err());
    }

    #[test]
    fn unlimited_memory_is_bounded_only_by_capacity() {
        let max = MemoryWord::CAPACITY;
        assert_eq!(
            add_memory(0, max, Priority(0), BaseLimit::UNLIMITED),
            Ok(max)
        );
        assert!(add_memory(1, max, Priority(0), u64::MAX).is_err());
        assert!(add_memory(u64::MAX, u64::MAX, Priority::ALWAYS, u64::MAX).is_err());
    }

    #[test]
    fn stream_checks_run_in_go_order() {
        let l = limit((1, 1, 1), (0, 0, 0), 0);
        let one_in = add_streams(StreamsWord::new(0, 0), 1, 0, &l).unwrap();
        assert_eq!((one_in.inbound(), one_in.outbound()), (1, 0));
        assert_eq!(
            add_streams(one_in, 1, 0, &l).unwrap_err().resource,
            Resource::StreamsInbound
        );
        let hit = add_streams(one_in, 0, 1, &l).unwrap_err();
        assert_eq!(hit.resource, Resource::Streams);
        assert_eq!((hit.current, hit.attempted, hit.limit), (1, 1, 1));
        // The total is checked even when nothing is added (a lowered limit).
        let lowered = limit((5, 5, 0), (0, 0, 0), 0);
        assert_eq!(
            add_streams(one_in, 0, 0, &lowered).unwrap_err().resource,
            Resource::Streams
        );
    }

    #[test]
    fn conn_checks_run_in_go_order_with_fd_last() {
        let l = limit((0, 0, 0), (2, 2, 3), 1);
        let w = add_conns(ConnsWord::new(0, 0, 0), 1, 0, 1, &l).unwrap();
        assert_eq!((w.inbound(), w.outbound(), w.fd()), (1, 0, 1));
        assert_eq!(
            add_conns(w, 0, 1, 1, &l).unwrap_err().resource,
            Resource::FileDescriptors
        );
        let w = add_conns(w, 0, 1, 0, &l).unwrap();
        let w = add_conns(w, 1, 0, 0, &l).unwrap();
        assert_eq!(
            add_conns(w, 1, 0, 0, &l).unwrap_err().resource,
            Resource::ConnsInbound
        );
        assert_eq!(
            add_conns(w, 0, 1, 0, &l).unwrap_err().resource,
            Resource::Conns
        );
    }

    #[test]
    fn fields_never_pass_their_capacity() {
        let unlimited = BaseLimit::unlimited();
        let full = ConnsWord::new(ConnsWord::CAPACITY, 0, 0);
        assert_eq!(
            add_conns(full, 1, 0, 0, &unlimited).unwrap_err().resource,
            Resource::ConnsInbound
        );
        let full = StreamsWord::new(0, StreamsWord::CAPACITY);
        assert_eq!(
            add_streams(full, 0, 1, &unlimited).unwrap_err().resource,
            Resource::StreamsOutbound
        );
    }

    #[test]
    fn releases_clamp_and_say_so() {
        let mut underflow = Underflow::default();
        let w = sub_streams(StreamsWord::new(1, 0), 2, 0, &mut underflow);
        assert_eq!(w, StreamsWord::new(0, 0));
        assert!(underflow.streams_inbound && !underflow.streams_outbound);
        let mut underflow = Underflow::default();
        assert_eq!(sub_memory(10, 4, &mut underflow), 6);
        assert_eq!(underflow, Underflow::default());
    }

    #[test]
    fn memory_word_keeps_state_apart_from_usage() {
        let edges = EdgeSet::from_bits(0b1_0110_0001);
        let w = MemoryWord::new(edges).with_used(MemoryWord::CAPACITY);
        assert_eq!(w.edges(), edges);
        assert_eq!(w.used(), MemoryWord::CAPACITY);
        let w = w.with_transferring(true);
        assert!(w.is_transferring() && !w.is_closed());
        assert_eq!(w.with_transferring(false).with_used(5).used(), 5);
        assert!(MemoryWord::closed().is_closed());
        assert_eq!(MemoryWord::closed().used(), 0);
    }
}

//! Counter words and the three kinds of counter that live in them.
//!
//! Every scope counts in three 64-bit words: memory, streams and connections. The low bits
//! of a word count; its top two bits are the scope's state, whose meaning depends on the
//! word's owner (see [`STOP`] and [`MODE`]). A word's count is packed so that one
//! compare-and-swap checks and updates every field a limit covers together: inbound,
//! outbound and total streams; inbound, outbound and total connections and file descriptors.
//!
//! [`Counter`] is the one description of a kind of counter: how its amount packs into a word,
//! go's checks in go's order, and what the leased pools of a sharded scope need (how much to
//! lease beyond a reservation, when a pool holds too much). Everything that updates a word,
//! in [`super::plain`], [`super::lease`] and [`super::own`], is written once over this trait.
//!
//! No field ever passes its capacity: a reservation that would is refused as if the capacity
//! were the limit (and says so: the refusal's limit is the capacity), so no configuration can
//! make a count wrap into its neighbour or into the state bits.

use std::fmt::Debug;

use super::limit_cell::LimitCell;
use crate::{
    limits::BaseLimit,
    sync::AtomicU64,
    types::{Direction, Priority, Resource, ScopeStat},
};

/// The top state bit. A closed connection, stream or span (its own memory word); a dead
/// (collected) keyed scope (every word); a closed pool of a sharded scope. Reservations never
/// pass a word with this bit set.
pub(crate) const STOP: u64 = 1 << 63;
/// The second state bit. A transfer in progress (a connection's or stream's own memory word);
/// pressure on a sharded scope's budget word (its pools are closed, every reservation goes to
/// the budget: see [`super::lease`]).
pub(crate) const MODE: u64 = 1 << 62;
/// Both state bits.
pub(crate) const STATE: u64 = STOP | MODE;

/// A limit that refused: which resource, how much was held, how much was asked for, and the
/// limit that would have been passed (the field's capacity, when that is what binds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) resource: Resource,
    pub(crate) current: u64,
    pub(crate) attempted: u64,
    pub(crate) limit: u64,
}

/// One scope's three counter words (for a sharded scope: its budget, or one pool).
#[derive(Debug, Default)]
pub(crate) struct Words {
    pub(crate) memory: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) conns: AtomicU64,
}

/// A kind of counter: its amount, packed into one word, and go's arithmetic on it.
///
/// Packing is additive: `(a + b).pack() == a.pack() + b.pack()` whenever no field passes its
/// capacity, which [`check`](Self::check) guarantees before any addition, and
/// `(a - b).pack() == a.pack() - b.pack()` whenever `a` [`covers`](Self::covers) `b`. So a
/// reservation adds the packed amount to the word and a release subtracts it.
pub(crate) trait Counter: Copy + Debug + PartialEq {
    /// The fields of a limit this kind is checked against.
    type Limit: Copy + Debug;

    /// Reads this kind's part of a scope's limit.
    fn read_limit(cell: &LimitCell) -> Self::Limit;
    /// The word of `words` this kind counts in.
    fn word(words: &Words) -> &AtomicU64;
    /// The amount, in a word's count bits.
    fn pack(self) -> u64;
    /// The count of a word (state bits ignored). A memory count reads at priority ALWAYS.
    fn unpack(word: u64) -> Self;
    /// Whether nothing is counted (a reservation of nothing only checks).
    fn is_zero(self) -> bool;
    /// go's checks, in go's order, for adding `self` to `held`; fields stay within capacity.
    fn check(self, held: Self, limit: Self::Limit) -> Result<(), Hit>;
    /// Whether `held` itself is within `limit` (at `self`'s priority, for memory): the test a
    /// sharded scope applies to its budget before handing out quota it already leased.
    fn within(self, held: Self, limit: Self::Limit) -> bool;
    /// Whether `self` has at least `other` in every field.
    fn covers(self, other: Self) -> bool;
    /// The part of `self` that `held` covers, field by field: what a release of `self` can
    /// take from a scope that holds `held`.
    fn clamped_to(self, held: Self) -> Self;
    /// What a lease adds to `self` for the pool of a sharded scope that holds `held`, under
    /// `limit`, shared by `slots` pools: a chunk while the budget stays under half of every
    /// limit it touches, less on the way there, nothing above.
    fn spare(self, held: Self, limit: Self::Limit, slots: u64) -> Self;
    /// Whether `held` is under a quarter of every limit: a sharded scope under pressure opens
    /// its pools again.
    fn is_relaxed(held: Self, limit: Self::Limit) -> bool;
    /// What a pool holding `self` gives back to the budget: its amount above one chunk, once
    /// it holds more than two.
    fn excess(self) -> Self;
}

/// Adds `amount` to `word` if its limit allows (the word's state bits are kept).
#[inline(always)]
pub(crate) fn add<K: Counter>(word: u64, amount: K, limit: K::Limit) -> Result<u64, Hit> {
    amount.check(K::unpack(word), limit)?;
    Ok(word + amount.pack())
}

/// Whether `current + adding` passes `limit` or `capacity`; the limit reported is the one
/// that binds.
#[inline(always)]
fn passes(current: u64, adding: u64, limit: u64, capacity: u64) -> Option<u64> {
    let new = current.saturating_add(adding);
    if new > limit.min(capacity) {
        Some(if limit <= capacity { limit } else { capacity })
    } else {
        None
    }
}

/// One field of a lease's spare: nothing unless the field is asked for; else up to `chunk`,
/// keeping what the limit counts (`after`, the held and asked total it covers) under half
/// the limit, split among `slots` pools, and the field itself (`field_after`) within its
/// capacity. An unlimited limit is bounded by the capacity alone.
#[inline(always)]
fn spare_field(
    asked: u64,
    after: u64,
    field_after: u64,
    limit: u64,
    capacity: u64,
    chunk: u64,
    slots: u64,
) -> u64 {
    if asked == 0 {
        return 0;
    }
    let room = if limit >= BaseLimit::UNLIMITED {
        capacity.saturating_sub(field_after)
    } else {
        (limit.min(capacity) / 2).saturating_sub(after) / slots.max(1)
    };
    chunk.min(room).min(capacity.saturating_sub(field_after))
}

/// Bytes, reserved at a priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Memory {
    pub(crate) bytes: u64,
    pub(crate) priority: Priority,
}

impl Memory {
    /// The most bytes one scope can count: 2^62 - 1, about 4.6 EiB.
    pub(crate) const CAPACITY: u64 = (1 << 62) - 1;
    /// The largest chunk a pool leases at once.
    const CHUNK: u64 = 1 << 20;

    pub(crate) const fn new(bytes: u64, priority: Priority) -> Self {
        Memory { bytes, priority }
    }

    /// The most that may be held after a reservation at `priority` under `limit` in a word of
    /// `capacity` bytes, and the limit a refusal reports.
    #[inline(always)]
    pub(crate) fn ceiling(priority: Priority, limit: u64, capacity: u64) -> (u64, u64) {
        if limit >= BaseLimit::UNLIMITED {
            return (capacity, capacity);
        }
        let threshold = priority.threshold(limit);
        if threshold <= capacity {
            (threshold, limit)
        } else {
            (capacity, capacity)
        }
    }

    /// go's memory check against `capacity`: `held + bytes <= floor((prio + 1) * limit / 256)`.
    #[inline(always)]
    pub(crate) fn check_within(self, held: u64, limit: u64, capacity: u64) -> Result<(), Hit> {
        let (ceiling, reported) = Memory::ceiling(self.priority, limit, capacity);
        match held.checked_add(self.bytes) {
            Some(new) if new <= ceiling => Ok(()),
            _ => Err(Hit {
                resource: Resource::Memory {
                    priority: self.priority,
                },
                current: held,
                attempted: self.bytes,
                limit: reported,
            }),
        }
    }
}

impl Counter for Memory {
    type Limit = u64;

    #[inline(always)]
    fn read_limit(cell: &LimitCell) -> u64 {
        cell.memory()
    }

    #[inline(always)]
    fn word(words: &Words) -> &AtomicU64 {
        &words.memory
    }

    #[inline(always)]
    fn pack(self) -> u64 {
        self.bytes
    }

    #[inline(always)]
    fn unpack(word: u64) -> Self {
        Memory::new(word & !STATE, Priority::ALWAYS)
    }

    #[inline(always)]
    fn is_zero(self) -> bool {
        self.bytes == 0
    }

    #[inline(always)]
    fn check(self, held: Self, limit: u64) -> Result<(), Hit> {
        self.check_within(held.bytes, limit, Memory::CAPACITY)
    }

    #[inline(always)]
    fn within(self, held: Self, limit: u64) -> bool {
        held.bytes <= Memory::ceiling(self.priority, limit, Memory::CAPACITY).0
    }

    #[inline(always)]
    fn covers(self, other: Self) -> bool {
        self.bytes >= other.bytes
    }

    #[inline(always)]
    fn clamped_to(self, held: Self) -> Self {
        Memory::new(self.bytes.min(held.bytes), self.priority)
    }

    #[inline(always)]
    fn spare(self, held: Self, limit: u64, slots: u64) -> Self {
        let after = held.bytes.saturating_add(self.bytes);
        let bytes = spare_field(
            self.bytes,
            after,
            after,
            limit,
            Memory::CAPACITY,
            Memory::CHUNK,
            slots,
        );
        Memory::new(bytes, Priority::ALWAYS)
    }

    #[inline(always)]
    fn is_relaxed(held: Self, limit: u64) -> bool {
        limit >= BaseLimit::UNLIMITED || held.bytes <= limit / 4
    }

    #[inline(always)]
    fn excess(self) -> Self {
        let bytes = if self.bytes > 2 * Memory::CHUNK {
            self.bytes - Memory::CHUNK
        } else {
            0
        };
        Memory::new(bytes, Priority::ALWAYS)
    }
}

/// Streams of each direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Streams {
    pub(crate) inbound: u64,
    pub(crate) outbound: u64,
}

impl Streams {
    /// The most streams of one direction one scope can count.
    pub(crate) const CAPACITY: u64 = (1 << 31) - 1;
    const SHIFT: u32 = 31;
    /// The largest chunk of one direction a pool leases at once.
    const CHUNK: u64 = 16;
    pub(crate) const ZERO: Streams = Streams {
        inbound: 0,
        outbound: 0,
    };

    /// One stream in `direction`.
    #[inline(always)]
    pub(crate) fn one(direction: Direction) -> Self {
        match direction {
            Direction::Inbound => Streams {
                inbound: 1,
                outbound: 0,
            },
            Direction::Outbound => Streams {
                inbound: 0,
                outbound: 1,
            },
        }
    }

    fn total(self) -> u64 {
        self.inbound + self.outbound
    }
}

impl Counter for Streams {
    /// Inbound, outbound and total.
    type Limit = [u64; 3];

    #[inline(always)]
    fn read_limit(cell: &LimitCell) -> [u64; 3] {
        cell.streams()
    }

    #[inline(always)]
    fn word(words: &Words) -> &AtomicU64 {
        &words.streams
    }

    #[inline(always)]
    fn pack(self) -> u64 {
        self.inbound | self.outbound << Streams::SHIFT
    }

    #[inline(always)]
    fn unpack(word: u64) -> Self {
        Streams {
            inbound: word & Streams::CAPACITY,
            outbound: (word >> Streams::SHIFT) & Streams::CAPACITY,
        }
    }

    #[inline(always)]
    fn is_zero(self) -> bool {
        self.inbound | self.outbound == 0
    }

    /// go's `addStreams`: inbound (if any), outbound (if any), then the total, which is
    /// checked even when nothing is added.
    #[inline(always)]
    fn check(self, held: Self, [inbound, outbound, total]: [u64; 3]) -> Result<(), Hit> {
        let refuse = |resource, current, attempted, limit| {
            Err(Hit {
                resource,
                current,
                attempted,
                limit,
            })
        };
        if self.inbound > 0
            && let Some(limit) = passes(held.inbound, self.inbound, inbound, Streams::CAPACITY)
        {
            return refuse(Resource::StreamsInbound, held.inbound, self.inbound, limit);
        }
        if self.outbound > 0
            && let Some(limit) = passes(held.outbound, self.outbound, outbound, Streams::CAPACITY)
        {
            return refuse(
                Resource::StreamsOutbound,
                held.outbound,
                self.outbound,
                limit,
            );
        }
        if held.total() + self.total() > total {
            return refuse(Resource::Streams, held.total(), self.total(), total);
        }
        Ok(())
    }

    #[inline(always)]
    fn within(self, held: Self, [inbound, outbound, total]: [u64; 3]) -> bool {
        held.inbound <= inbound && held.outbound <= outbound && held.total() <= total
    }

    #[inline(always)]
    fn covers(self, other: Self) -> bool {
        self.inbound >= other.inbound && self.outbound >= other.outbound
    }

    #[inline(always)]
    fn clamped_to(self, held: Self) -> Self {
        Streams {
            inbound: self.inbound.min(held.inbound),
            outbound: self.outbound.min(held.outbound),
        }
    }

    #[inline(always)]
    fn spare(self, held: Self, [inbound, outbound, total]: [u64; 3], slots: u64) -> Self {
        let after = held.total() + self.total();
        let spare = |asked: u64, field_after: u64, limit: u64| {
            let (capacity, chunk) = (Streams::CAPACITY, Streams::CHUNK);
            spare_field(
                asked,
                after,
                field_after,
                limit.min(total),
                capacity,
                chunk,
                slots,
            )
        };
        Streams {
            inbound: spare(self.inbound, held.inbound + self.inbound, inbound),
            outbound: spare(self.outbound, held.outbound + self.outbound, outbound),
        }
    }

    #[inline(always)]
    fn is_relaxed(held: Self, [inbound, outbound, total]: [u64; 3]) -> bool {
        let quarter = |held: u64, limit: u64| limit >= BaseLimit::UNLIMITED || held <= limit / 4;
        quarter(held.inbound, inbound)
            && quarter(held.outbound, outbound)
            && quarter(held.total(), total)
    }

    #[inline(always)]
    fn excess(self) -> Self {
        let over = |n: u64| {
            if n > 2 * Streams::CHUNK {
                n - Streams::CHUNK
            } else {
                0
            }
        };
        Streams {
            inbound: over(self.inbound),
            outbound: over(self.outbound),
        }
    }
}

/// Connections of each direction, and the file descriptors they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Conns {
    pub(crate) inbound: u64,
    pub(crate) outbound: u64,
    pub(crate) fd: u64,
}

impl Conns {
    /// The most connections of one direction, or file descriptors, one scope can count:
    /// 2^20 - 1.
    pub(crate) const CAPACITY: u64 = (1 << 20) - 1;
    const SHIFT: u32 = 20;
    /// The largest chunk of one field a pool leases at once.
    const CHUNK: u64 = 16;
    pub(crate) const ZERO: Conns = Conns {
        inbound: 0,
        outbound: 0,
        fd: 0,
    };

    /// One connection in `direction`, holding a file descriptor if `use_fd`.
    #[inline(always)]
    pub(crate) fn one(direction: Direction, use_fd: bool) -> Self {
        let (inbound, outbound) = match direction {
            Direction::Inbound => (1, 0),
            Direction::Outbound => (0, 1),
        };
        Conns {
            inbound,
            outbound,
            fd: u64::from(use_fd),
        }
    }

    fn total(self) -> u64 {
        self.inbound + self.outbound
    }
}

impl Counter for Conns {
    /// Inbound, outbound, total and file descriptors.
    type Limit = [u64; 4];

    #[inline(always)]
    fn read_limit(cell: &LimitCell) -> [u64; 4] {
        cell.conns()
    }

    #[inline(always)]
    fn word(words: &Words) -> &AtomicU64 {
        &words.conns
    }

    #[inline(always)]
    fn pack(self) -> u64 {
        self.inbound | self.outbound << Conns::SHIFT | self.fd << (2 * Conns::SHIFT)
    }

    #[inline(always)]
    fn unpack(word: u64) -> Self {
        Conns {
            inbound: word & Conns::CAPACITY,
            outbound: (word >> Conns::SHIFT) & Conns::CAPACITY,
            fd: (word >> (2 * Conns::SHIFT)) & Conns::CAPACITY,
        }
    }

    #[inline(always)]
    fn is_zero(self) -> bool {
        self.inbound | self.outbound | self.fd == 0
    }

    /// go's `addConns`: inbound (if any), outbound (if any), the total (always), then file
    /// descriptors (if any).
    #[inline(always)]
    fn check(self, held: Self, [inbound, outbound, total, fd]: [u64; 4]) -> Result<(), Hit> {
        let refuse = |resource, current, attempted, limit| {
            Err(Hit {
                resource,
                current,
                attempted,
                limit,
            })
        };
        if self.inbound > 0
            && let Some(limit) = passes(held.inbound, self.inbound, inbound, Conns::CAPACITY)
        {
            return refuse(Resource::ConnsInbound, held.inbound, self.inbound, limit);
        }
        if self.outbound > 0
            && let Some(limit) = passes(held.outbound, self.outbound, outbound, Conns::CAPACITY)
        {
            return refuse(Resource::ConnsOutbound, held.outbound, self.outbound, limit);
        }
        if held.total() + self.total() > total {
            return refuse(Resource::Conns, held.total(), self.total(), total);
        }
        if self.fd > 0
            && let Some(limit) = passes(held.fd, self.fd, fd, Conns::CAPACITY)
        {
            return refuse(Resource::FileDescriptors, held.fd, self.fd, limit);
        }
        Ok(())
    }

    #[inline(always)]
    fn within(self, held: Self, [inbound, outbound, total, fd]: [u64; 4]) -> bool {
        held.inbound <= inbound
            && held.outbound <= outbound
            && held.total() <= total
            && held.fd <= fd
    }

    #[inline(always)]
    fn covers(self, other: Self) -> bool {
        self.inbound >= other.inbound && self.outbound >= other.outbound && self.fd >= other.fd
    }

    #[inline(always)]
    fn clamped_to(self, held: Self) -> Self {
        Conns {
            inbound: self.inbound.min(held.inbound),
            outbound: self.outbound.min(held.outbound),
            fd: self.fd.min(held.fd),
        }
    }

    #[inline(always)]
    fn spare(self, held: Self, [inbound, outbound, total, fd]: [u64; 4], slots: u64) -> Self {
        let after = held.total() + self.total();
        let spare = |asked: u64, after: u64, field_after: u64, limit: u64| {
            spare_field(
                asked,
                after,
                field_after,
                limit,
                Conns::CAPACITY,
                Conns::CHUNK,
                slots,
            )
        };
        let (fd_after, inbound_after) = (held.fd + self.fd, held.inbound + self.inbound);
        Conns {
            inbound: spare(self.inbound, after, inbound_after, inbound.min(total)),
            outbound: spare(
                self.outbound,
                after,
                held.outbound + self.outbound,
                outbound.min(total),
            ),
            fd: spare(self.fd, fd_after, fd_after, fd),
        }
    }

    #[inline(always)]
    fn is_relaxed(held: Self, [inbound, outbound, total, fd]: [u64; 4]) -> bool {
        let quarter = |held: u64, limit: u64| limit >= BaseLimit::UNLIMITED || held <= limit / 4;
        quarter(held.inbound, inbound)
            && quarter(held.outbound, outbound)
            && quarter(held.total(), total)
            && quarter(held.fd, fd)
    }

    #[inline(always)]
    fn excess(self) -> Self {
        let over = |n: u64| {
            if n > 2 * Conns::CHUNK {
                n - Conns::CHUNK
            } else {
                0
            }
        };
        Conns {
            inbound: over(self.inbound),
            outbound: over(self.outbound),
            fd: over(self.fd),
        }
    }
}

/// Reads a scope's three words into a stat (each word on its own: exact per word, not a
/// consistent cut across them).
pub(crate) fn stat_of(memory: Memory, streams: Streams, conns: Conns) -> ScopeStat {
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    ScopeStat {
        memory: memory.bytes,
        streams_inbound: narrow(streams.inbound),
        streams_outbound: narrow(streams.outbound),
        conns_inbound: narrow(conns.inbound),
        conns_outbound: narrow(conns.outbound),
        fd: narrow(conns.fd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream limits (inbound, outbound, total) a cell holding them reads back.
    fn streams_limit(inbound: u64, outbound: u64, total: u64) -> [u64; 3] {
        let limit = BaseLimit {
            streams: total,
            streams_inbound: inbound,
            streams_outbound: outbound,
            ..BaseLimit::block_all()
        };
        Streams::read_limit(&LimitCell::new(limit))
    }

    /// The connection limits (inbound, outbound, total, fds) a cell holding them reads back.
    fn conns_limit(inbound: u64, outbound: u64, total: u64, fd: u64) -> [u64; 4] {
        let limit = BaseLimit {
            conns: total,
            conns_inbound: inbound,
            conns_outbound: outbound,
            fd,
            ..BaseLimit::block_all()
        };
        Conns::read_limit(&LimitCell::new(limit))
    }

    fn memory(bytes: u64, priority: Priority) -> Memory {
        Memory::new(bytes, priority)
    }

    #[test]
    fn memory_check_is_inclusive_and_refuses_above() {
        let held = |bytes| Memory::new(bytes, Priority::ALWAYS);
        assert!(memory(3264, Priority::HIGH).check(held(0), 4096).is_ok());
        let hit = memory(3264, Priority::HIGH)
            .check(held(1), 4096)
            .unwrap_err();
        assert_eq!((hit.current, hit.attempted, hit.limit), (1, 3264, 4096));
        // A zero-byte reservation succeeds only at or below the threshold.
        assert!(memory(0, Priority::LOW).check(held(1632), 4096).is_ok());
        assert!(memory(0, Priority::LOW).check(held(1633), 4096).is_err());
        // A limit of zero allows only zero-byte reservations.
        assert!(memory(0, Priority::ALWAYS).check(held(0), 0).is_ok());
        assert!(memory(1, Priority::ALWAYS).check(held(0), 0).is_err());
    }

    #[test]
    fn memory_at_capacity_is_refused_and_says_so() {
        let held = Memory::new(Memory::CAPACITY, Priority::ALWAYS);
        let hit = memory(1, Priority::ALWAYS)
            .check(held, BaseLimit::UNLIMITED)
            .unwrap_err();
        assert_eq!(hit.limit, Memory::CAPACITY);
        // go's largest limit is counted up to the capacity.
        let word = add(
            0,
            memory((1 << 53) - 1001, Priority::ALWAYS),
            BaseLimit::UNLIMITED,
        )
        .expect("far below the capacity");
        assert_eq!(Memory::unpack(word).bytes, (1 << 53) - 1001);
        let word = add(
            word | STOP,
            memory(1 << 61, Priority::ALWAYS),
            BaseLimit::UNLIMITED,
        )
        .expect("still below the capacity");
        assert_eq!(word & STATE, STOP, "the state bits are kept");
        assert_eq!(Memory::unpack(word).bytes, (1 << 53) - 1001 + (1 << 61));
    }

    #[test]
    fn stream_checks_run_in_go_order() {
        let l = streams_limit(1, 1, 1);
        let word = add(0, Streams::one(Direction::Inbound), l).expect("room");
        assert_eq!(
            Streams::unpack(word),
            Streams {
                inbound: 1,
                outbound: 0
            }
        );
        let held = Streams::unpack(word);
        assert_eq!(
            Streams::one(Direction::Inbound)
                .check(held, l)
                .unwrap_err()
                .resource,
            Resource::StreamsInbound
        );
        let hit = Streams::one(Direction::Outbound)
            .check(held, l)
            .unwrap_err();
        assert_eq!(hit.resource, Resource::Streams);
        assert_eq!((hit.current, hit.attempted, hit.limit), (1, 1, 1));
        // The total is checked even when nothing is added (a lowered limit).
        let lowered = streams_limit(5, 5, 0);
        assert_eq!(
            Streams::ZERO.check(held, lowered).unwrap_err().resource,
            Resource::Streams
        );
    }

    #[test]
    fn conn_checks_run_in_go_order_with_fd_last() {
        let l = conns_limit(2, 2, 3, 1);
        let one_in_fd = Conns::one(Direction::Inbound, true);
        let word = add(0, one_in_fd, l).expect("room");
        assert_eq!(Conns::unpack(word), one_in_fd);
        let held = Conns::unpack(word);
        assert_eq!(
            Conns::one(Direction::Outbound, true)
                .check(held, l)
                .unwrap_err()
                .resource,
            Resource::FileDescriptors
        );
        let word = add(word, Conns::one(Direction::Outbound, false), l).expect("room");
        let word = add(word, Conns::one(Direction::Inbound, false), l).expect("room");
        let held = Conns::unpack(word);
        assert_eq!(
            Conns::one(Direction::Inbound, false)
                .check(held, l)
                .unwrap_err()
                .resource,
            Resource::ConnsInbound
        );
        assert_eq!(
            Conns::one(Direction::Outbound, false)
                .check(held, l)
                .unwrap_err()
                .resource,
            Resource::Conns
        );
    }

    #[test]
    fn fields_never_pass_their_capacity_even_unlimited() {
        let unlimited = Conns::read_limit(&LimitCell::new(BaseLimit::unlimited()));
        let full = Conns {
            inbound: Conns::CAPACITY,
            ..Conns::ZERO
        };
        let hit = Conns::one(Direction::Inbound, false)
            .check(full, unlimited)
            .unwrap_err();
        assert_eq!(
            (hit.resource, hit.limit),
            (Resource::ConnsInbound, Conns::CAPACITY)
        );
        let full = Streams {
            outbound: Streams::CAPACITY,
            ..Streams::ZERO
        };
        assert_eq!(
            Streams::one(Direction::Outbound)
                .check(
                    full,
                    Streams::read_limit(&LimitCell::new(BaseLimit::unlimited()))
                )
                .unwrap_err()
                .resource,
            Resource::StreamsOutbound
        );
    }

    #[test]
    fn leases_take_a_chunk_only_far_from_the_limit() {
        let asked = memory(100, Priority::HIGH);
        let nothing = Memory::new(0, Priority::ALWAYS);
        assert_eq!(
            asked.spare(nothing, BaseLimit::UNLIMITED, 2).bytes,
            Memory::CHUNK
        );
        assert_eq!(asked.spare(nothing, 64 << 20, 2).bytes, Memory::CHUNK);
        let near = Memory::new(32 << 20, Priority::ALWAYS);
        assert_eq!(asked.spare(near, 64 << 20, 2).bytes, 0);
        assert!(Memory::is_relaxed(
            Memory::new(16 << 20, Priority::ALWAYS),
            64 << 20
        ));
        assert!(!Memory::is_relaxed(near, 64 << 20));
        assert_eq!(
            Memory::new(3 << 20, Priority::ALWAYS).excess().bytes,
            2 << 20
        );
    }
}

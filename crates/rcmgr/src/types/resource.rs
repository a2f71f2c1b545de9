//! The vocabulary of accounting: directions, memory priorities and the resource kinds a limit
//! can refuse.

use std::fmt;

/// Which side opened a connection or stream.
///
/// go-libp2p also has `DirUnknown`, which its resource manager counts as outbound; Rust callers
/// say which one they mean.
///
/// ```
/// use rcmgr::Direction;
/// assert_eq!(Direction::Inbound.to_string(), "inbound");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Opened by the remote peer.
    Inbound,
    /// Opened by this node.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// How much of a scope's memory limit a reservation may fill.
///
/// A reservation of `size` bytes at priority `p` succeeds when
/// `used + size <= floor((p + 1) * limit / 256)`, exactly as in go-libp2p: [`LOW`](Self::LOW)
/// may fill 102/256 (39.8 %) of the limit, [`MEDIUM`](Self::MEDIUM) 153/256,
/// [`HIGH`](Self::HIGH) 204/256 and [`ALWAYS`](Self::ALWAYS) all of it. The same priority is
/// applied at every scope the reservation reaches.
///
/// ```
/// use rcmgr::Priority;
/// assert_eq!(Priority::HIGH.threshold(4096), 3264);
/// assert_eq!(Priority::ALWAYS.threshold(4096), 4096);
/// assert_eq!(Priority(0).threshold(100), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(pub u8);

impl Priority {
    /// go's `ReservationPriorityLow` (101): about 40 % of the limit.
    pub const LOW: Priority = Priority(101);
    /// go's `ReservationPriorityMedium` (152): about 60 % of the limit.
    pub const MEDIUM: Priority = Priority(152);
    /// go's `ReservationPriorityHigh` (203): about 80 % of the limit.
    pub const HIGH: Priority = Priority(203);
    /// go's `ReservationPriorityAlways` (255): the whole limit.
    pub const ALWAYS: Priority = Priority(255);

    /// The most memory that may be in use after a reservation at this priority under `limit`:
    /// `floor((p + 1) * limit / 256)`, computed without overflow for every `limit`.
    pub const fn threshold(self, limit: u64) -> u64 {
        // (p + 1) <= 256, so the product fits in 72 bits; the shift brings it back under
        // `limit`, which fits in u64.
        (((self.0 as u128 + 1) * limit as u128) >> 8) as u64
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The resource a limit refused.
///
/// ```
/// use rcmgr::{Resource, Priority};
/// assert_eq!(Resource::StreamsInbound.to_string(), "inbound stream");
/// assert_eq!(Resource::Memory { priority: Priority::LOW }.to_string(), "memory");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// Memory, reserved at this priority.
    Memory {
        /// The priority of the refused reservation.
        priority: Priority,
    },
    /// The inbound stream count.
    StreamsInbound,
    /// The outbound stream count.
    StreamsOutbound,
    /// The total stream count.
    Streams,
    /// The inbound connection count.
    ConnsInbound,
    /// The outbound connection count.
    ConnsOutbound,
    /// The total connection count.
    Conns,
    /// The file descriptor count.
    FileDescriptors,
}

impl Resource {
    /// go's words for the resource in "cannot reserve <what>", or `None` for memory, whose
    /// refusal go words as plain "resource limit exceeded".
    pub(crate) fn reserve_phrase(self) -> Option<&'static str> {
        match self {
            Resource::Memory { .. } => None,
            Resource::StreamsInbound => Some("inbound stream"),
            Resource::StreamsOutbound => Some("outbound stream"),
            Resource::Streams => Some("stream"),
            Resource::ConnsInbound => Some("inbound connection"),
            Resource::ConnsOutbound => Some("outbound connection"),
            Resource::Conns => Some("connection"),
            Resource::FileDescriptors => Some("file descriptor"),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reserve_phrase().unwrap_or("memory"))
    }
}

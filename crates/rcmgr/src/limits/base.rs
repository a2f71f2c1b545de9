//! [`BaseLimit`]: the limits of one scope.

use crate::types::Direction;

/// The limits of one scope: stream and connection counts, file descriptors and memory.
///
/// In a concrete limit `0` means "nothing allowed" (go's `blockAll`) and any value at or above
/// [`BaseLimit::UNLIMITED`] (`i64::MAX`, go's `math.MaxInt`) means "never checked". The fields
/// are in go's JSON order.
///
/// ```
/// use rcmgr::BaseLimit;
/// let peer = BaseLimit { streams: 512, streams_inbound: 256, streams_outbound: 512, ..BaseLimit::unlimited() };
/// assert_eq!(peer.memory, BaseLimit::UNLIMITED);
/// assert_eq!(BaseLimit::default(), BaseLimit::block_all());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BaseLimit {
    /// Streams in both directions together.
    pub streams: u64,
    /// Inbound streams.
    pub streams_inbound: u64,
    /// Outbound streams.
    pub streams_outbound: u64,
    /// Connections in both directions together.
    pub conns: u64,
    /// Inbound connections.
    pub conns_inbound: u64,
    /// Outbound connections.
    pub conns_outbound: u64,
    /// File descriptors.
    pub fd: u64,
    /// Memory in bytes.
    pub memory: u64,
}

impl BaseLimit {
    /// The value that means "no limit": `i64::MAX`, go's `math.MaxInt` and `math.MaxInt64`, so
    /// limit files and scaled numbers mean the same thing in both implementations. Every value
    /// at or above it is treated as unlimited.
    pub const UNLIMITED: u64 = i64::MAX as u64;

    /// Every field [`UNLIMITED`](Self::UNLIMITED).
    ///
    /// ```
    /// assert!(rcmgr::BaseLimit::unlimited().is_unlimited());
    /// ```
    pub const fn unlimited() -> Self {
        let u = Self::UNLIMITED;
        BaseLimit {
            streams: u,
            streams_inbound: u,
            streams_outbound: u,
            conns: u,
            conns_inbound: u,
            conns_outbound: u,
            fd: u,
            memory: u,
        }
    }

    /// Every field zero: nothing may be reserved.
    ///
    /// ```
    /// assert_eq!(rcmgr::BaseLimit::block_all().memory, 0);
    /// ```
    pub const fn block_all() -> Self {
        BaseLimit {
            streams: 0,
            streams_inbound: 0,
            streams_outbound: 0,
            conns: 0,
            conns_inbound: 0,
            conns_outbound: 0,
            fd: 0,
            memory: 0,
        }
    }

    /// Whether every field is unlimited.
    ///
    /// ```
    /// assert!(!rcmgr::BaseLimit::block_all().is_unlimited());
    /// ```
    pub fn is_unlimited(&self) -> bool {
        self.as_array().iter().all(|&v| v >= Self::UNLIMITED)
    }

    /// The stream limit for one direction.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, Direction};
    /// let l = BaseLimit { streams_inbound: 3, ..BaseLimit::block_all() };
    /// assert_eq!(l.stream_limit(Direction::Inbound), 3);
    /// ```
    pub fn stream_limit(&self, direction: Direction) -> u64 {
        match direction {
            Direction::Inbound => self.streams_inbound,
            Direction::Outbound => self.streams_outbound,
        }
    }

    /// The connection limit for one direction.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, Direction};
    /// let l = BaseLimit { conns_outbound: 7, ..BaseLimit::block_all() };
    /// assert_eq!(l.conn_limit(Direction::Outbound), 7);
    /// ```
    pub fn conn_limit(&self, direction: Direction) -> u64 {
        match direction {
            Direction::Inbound => self.conns_inbound,
            Direction::Outbound => self.conns_outbound,
        }
    }

    /// The fields in go's order, for code that treats them alike.
    pub(crate) const fn as_array(&self) -> [u64; 8] {
        [
            self.streams,
            self.streams_inbound,
            self.streams_outbound,
            self.conns,
            self.conns_inbound,
            self.conns_outbound,
            self.fd,
            self.memory,
        ]
    }

    /// The inverse of [`as_array`](Self::as_array).
    pub(crate) const fn from_array(v: [u64; 8]) -> Self {
        BaseLimit {
            streams: v[0],
            streams_inbound: v[1],
            streams_outbound: v[2],
            conns: v[3],
            conns_inbound: v[4],
            conns_outbound: v[5],
            fd: v[6],
            memory: v[7],
        }
    }
}

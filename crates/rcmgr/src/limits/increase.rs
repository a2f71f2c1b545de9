//! [`BaseLimitIncrease`]: how much a scope's limit grows with the machine.

/// How much one scope's limit grows with the machine: the stream, connection and memory
/// increases are per GiB of memory given to the node (pro-rated per MiB), and the file
/// descriptor limit is a fraction of the descriptors given to it.
///
/// It is go's `BaseLimitIncrease`, field for field, except that the increases are unsigned:
/// a limit never shrinks as the machine grows. [`ScalingLimit::scale`](crate::ScalingLimit::scale)
/// says exactly how the numbers are combined.
///
/// ```
/// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimit};
/// // 64 more inbound streams and 1 GiB more memory for every GiB, every descriptor allowed.
/// let increase = BaseLimitIncrease {
///     streams_inbound: 64,
///     memory: 1 << 30,
///     fd_fraction: 1.0,
///     ..BaseLimitIncrease::default()
/// };
/// let base = BaseLimit { streams_inbound: 16, memory: 64 << 20, fd: 32, ..BaseLimit::block_all() };
/// let scaled = ScalingLimit { base, increase }.scale(4 << 30, 1024);
/// assert_eq!(scaled.streams_inbound, 16 + 4 * 64);
/// assert_eq!(scaled.memory, (64 << 20) + (4 << 30));
/// assert_eq!(scaled.fd, 1024);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BaseLimitIncrease {
    /// More streams in both directions together, per GiB.
    pub streams: u64,
    /// More inbound streams, per GiB.
    pub streams_inbound: u64,
    /// More outbound streams, per GiB.
    pub streams_outbound: u64,
    /// More connections in both directions together, per GiB.
    pub conns: u64,
    /// More inbound connections, per GiB.
    pub conns_inbound: u64,
    /// More outbound connections, per GiB.
    pub conns_outbound: u64,
    /// More bytes of memory, per GiB.
    pub memory: u64,
    /// The share of the node's file descriptors this scope may use, from 0 to 1. The scaled
    /// limit is never below the base limit's `fd`; 0 (or anything not above 0) leaves the
    /// base limit as it is.
    pub fd_fraction: f64,
}

impl BaseLimitIncrease {
    /// No increase at all: the scope keeps its base limit on every machine.
    ///
    /// ```
    /// assert_eq!(rcmgr::BaseLimitIncrease::none(), rcmgr::BaseLimitIncrease::default());
    /// ```
    pub const fn none() -> Self {
        BaseLimitIncrease {
            streams: 0,
            streams_inbound: 0,
            streams_outbound: 0,
            conns: 0,
            conns_inbound: 0,
            conns_outbound: 0,
            memory: 0,
            fd_fraction: 0.0,
        }
    }

    /// The per-GiB increases in the order of [`BaseLimit`](crate::BaseLimit)'s fields, with
    /// `None` where `BaseLimit` has its file descriptor field (that one scales by fraction).
    pub(crate) const fn per_gib_as_array(&self) -> [Option<u64>; 8] {
        [
            Some(self.streams),
            Some(self.streams_inbound),
            Some(self.streams_outbound),
            Some(self.conns),
            Some(self.conns_inbound),
            Some(self.conns_outbound),
            None,
            Some(self.memory),
        ]
    }
}

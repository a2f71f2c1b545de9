//! [`ScalingLimit`] and [`ScalingLimitConfig`]: limits that grow with the machine.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use super::{BaseLimit, BaseLimitIncrease, ConcreteLimitConfig, autoscale};

/// Memory at or below this (128 MiB) gets the base limits alone; above it, every MiB counts.
const SCALING_THRESHOLD_BYTES: u64 = 128 << 20;

/// One scope's limit on the smallest machine and how it grows with the machine (go's
/// `baseLimitConfig`).
///
/// ```
/// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimit};
/// let peer = ScalingLimit {
///     base: BaseLimit { streams: 512, fd: 4, ..BaseLimit::block_all() },
///     increase: BaseLimitIncrease { streams: 256, fd_fraction: 1.0 / 64.0, ..BaseLimitIncrease::none() },
/// };
/// let scaled = peer.scale(2 << 30, 8192);
/// assert_eq!(scaled.streams, 512 + 2 * 256);
/// assert_eq!(scaled.fd, 8192 / 64);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScalingLimit {
    /// The limit on a machine with 128 MiB or less for the node.
    pub base: BaseLimit,
    /// How the limit grows with memory and file descriptors.
    pub increase: BaseLimitIncrease,
}

impl ScalingLimit {
    /// A scope that keeps `base` on every machine.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, ScalingLimit};
    /// let fixed = ScalingLimit::fixed(BaseLimit { conns: 1, ..BaseLimit::block_all() });
    /// assert_eq!(fixed.scale(64 << 30, 1 << 20).conns, 1);
    /// ```
    pub const fn fixed(base: BaseLimit) -> Self {
        ScalingLimit {
            base,
            increase: BaseLimitIncrease::none(),
        }
    }

    /// The limit for a node given `memory_bytes` of memory and `fd_count` file descriptors,
    /// with go's arithmetic:
    ///
    /// - `MiB` is `memory_bytes >> 20` when `memory_bytes` is strictly above 128 MiB, and 0
    ///   otherwise: the **whole** memory counts once it passes the threshold, not the part
    ///   above it.
    /// - Streams, connections and memory are `base + floor(increase × MiB / 1024)`: the
    ///   increase per GiB, pro-rated per MiB and rounded down.
    /// - File descriptors are `max(trunc(fd_fraction × fd_count), base.fd)` when
    ///   `fd_fraction > 0` and `fd_count > 0`, and `base.fd` otherwise; memory plays no part.
    ///
    /// It never panics and never overflows: where go's 64-bit arithmetic would wrap on absurd
    /// inputs, the result saturates at [`BaseLimit::UNLIMITED`] (and a base already above that
    /// is kept). The result never decreases as `memory_bytes` or `fd_count` grows.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimit};
    /// let limit = ScalingLimit {
    ///     base: BaseLimit { memory: 1 << 20, ..BaseLimit::block_all() },
    ///     increase: BaseLimitIncrease { memory: 1 << 30, ..BaseLimitIncrease::none() },
    /// };
    /// assert_eq!(limit.scale(128 << 20, 0).memory, 1 << 20); // not above the threshold
    /// assert_eq!(limit.scale((128 << 20) + (1 << 20), 0).memory, (1 << 20) + (129 << 20));
    /// assert_eq!(limit.scale(u64::MAX, 0).memory, BaseLimit::UNLIMITED);
    /// ```
    pub fn scale(&self, memory_bytes: u64, fd_count: u64) -> BaseLimit {
        let mib = counted_mib(memory_bytes);
        let mut scaled = self.base.as_array();
        for (value, per_gib) in scaled.iter_mut().zip(self.increase.per_gib_as_array()) {
            *value = match per_gib {
                Some(per_gib) => grown(*value, per_gib, mib),
                None => fd_share(*value, self.increase.fd_fraction, fd_count),
            };
        }
        BaseLimit::from_array(scaled)
    }
}

/// The MiB count go scales by: all of `memory_bytes` in whole MiB once it is strictly above
/// the threshold, else nothing.
const fn counted_mib(memory_bytes: u64) -> u64 {
    if memory_bytes > SCALING_THRESHOLD_BYTES {
        memory_bytes >> 20
    } else {
        0
    }
}

/// `base + floor(per_gib × mib / 1024)`, saturating at [`BaseLimit::UNLIMITED`] (or at `base`
/// when that is already higher). The product is taken in 128 bits, where it cannot overflow.
fn grown(base: u64, per_gib: u64, mib: u64) -> u64 {
    let increment = (u128::from(per_gib) * u128::from(mib)) >> 10;
    let increment = u64::try_from(increment).unwrap_or(u64::MAX);
    base.saturating_add(increment)
        .min(BaseLimit::UNLIMITED)
        .max(base)
}

/// `max(trunc(fraction × fd_count), base)` when both are positive, else `base`; the share is
/// capped at [`BaseLimit::UNLIMITED`]. A float-to-integer `as` truncates toward zero and
/// saturates, so no fraction (infinite included) can overflow.
fn fd_share(base: u64, fraction: f64, fd_count: u64) -> u64 {
    if fraction > 0.0 && fd_count > 0 {
        let share = (fraction * fd_count as f64) as u64;
        share.min(BaseLimit::UNLIMITED).max(base)
    } else {
        base
    }
}

/// Every scope's [`ScalingLimit`]: limits that grow with the machine (go's
/// `ScalingLimitConfig`). [`scale`](Self::scale) or [`autoscale`](Self::autoscale) turns it
/// into the [`ConcreteLimitConfig`] a [`ResourceManager`](crate::ResourceManager) enforces.
///
/// [`ScalingLimitConfig::default`] is go's `DefaultLimits`, number for number, and
/// [`with_libp2p_defaults`](Self::with_libp2p_defaults) adds go-libp2p's limits for its own
/// services and protocols. The struct is `#[non_exhaustive]`: start from `default()` and change
/// fields, or use the `add_*_limit` methods.
///
/// ```
/// use rcmgr::{BaseLimit, BaseLimitIncrease, ResourceManager, ScalingLimitConfig};
/// let mut scaling = ScalingLimitConfig::default().with_libp2p_defaults();
/// scaling.add_protocol_limit(
///     "/my/app/1.0.0",
///     BaseLimit { streams: 128, streams_inbound: 64, streams_outbound: 64, memory: 16 << 20, ..BaseLimit::block_all() },
///     BaseLimitIncrease { streams: 128, streams_inbound: 64, streams_outbound: 64, memory: 16 << 20, ..BaseLimitIncrease::none() },
/// );
/// let limits = scaling.scale(4 << 30, 8192);
/// assert_eq!(limits.protocol_limits("/my/app/1.0.0").streams, 128 + 4 * 128);
/// let rm = ResourceManager::new(limits);
/// # drop(rm);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScalingLimitConfig {
    /// The whole node.
    pub system: ScalingLimit,
    /// Connections before their peer is known and streams before their protocol is known.
    pub transient: ScalingLimit,
    /// The whole node, for allowlisted connections.
    pub allowlisted_system: ScalingLimit,
    /// Allowlisted connections before their peer is known.
    pub allowlisted_transient: ScalingLimit,
    /// Each service without an entry in [`service`](Self::service).
    pub service_default: ScalingLimit,
    /// Per-service limits.
    pub service: BTreeMap<String, ScalingLimit>,
    /// Each peer within a service without an entry in [`service_peer`](Self::service_peer).
    pub service_peer_default: ScalingLimit,
    /// Per-service limits for each peer within that service.
    pub service_peer: BTreeMap<String, ScalingLimit>,
    /// Each protocol without an entry in [`protocol`](Self::protocol).
    pub protocol_default: ScalingLimit,
    /// Per-protocol limits.
    pub protocol: BTreeMap<String, ScalingLimit>,
    /// Each peer within a protocol without an entry in [`protocol_peer`](Self::protocol_peer).
    pub protocol_peer_default: ScalingLimit,
    /// Per-protocol limits for each peer within that protocol.
    pub protocol_peer: BTreeMap<String, ScalingLimit>,
    /// Each peer without an entry in [`peer`](Self::peer).
    pub peer_default: ScalingLimit,
    /// Per-peer limits.
    pub peer: BTreeMap<PeerId, ScalingLimit>,
    /// Each connection.
    pub conn: ScalingLimit,
    /// Each stream. It grows with its own increase; go grows it with the connection's
    /// increase instead (see `docs/compatibility.md`), which makes no difference with the
    /// defaults, where both are zero.
    pub stream: ScalingLimit,
}

impl ScalingLimitConfig {
    /// Sets the limit of the service `service` (go's `AddServiceLimit`), replacing any earlier
    /// one.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimitConfig};
    /// let mut scaling = ScalingLimitConfig::default();
    /// scaling.add_service_limit("my.service", BaseLimit { streams: 8, ..BaseLimit::block_all() }, BaseLimitIncrease::none());
    /// assert_eq!(scaling.scale(1 << 30, 1024).service_limits("my.service").streams, 8);
    /// ```
    pub fn add_service_limit(
        &mut self,
        service: impl Into<String>,
        base: BaseLimit,
        increase: BaseLimitIncrease,
    ) -> &mut Self {
        self.service
            .insert(service.into(), ScalingLimit { base, increase });
        self
    }

    /// Sets the limit of each peer's scope within the service `service` (go's
    /// `AddServicePeerLimit`), replacing any earlier one.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimitConfig};
    /// let mut scaling = ScalingLimitConfig::default();
    /// scaling.add_service_peer_limit("my.service", BaseLimit { streams: 2, ..BaseLimit::block_all() }, BaseLimitIncrease::none());
    /// assert_eq!(scaling.scale(1 << 30, 1024).service_peer_limits("my.service").streams, 2);
    /// ```
    pub fn add_service_peer_limit(
        &mut self,
        service: impl Into<String>,
        base: BaseLimit,
        increase: BaseLimitIncrease,
    ) -> &mut Self {
        self.service_peer
            .insert(service.into(), ScalingLimit { base, increase });
        self
    }

    /// Sets the limit of the protocol `protocol` (go's `AddProtocolLimit`), replacing any
    /// earlier one.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimitConfig};
    /// let mut scaling = ScalingLimitConfig::default();
    /// scaling.add_protocol_limit("/my/proto", BaseLimit { streams: 8, ..BaseLimit::block_all() }, BaseLimitIncrease::none());
    /// assert_eq!(scaling.scale(1 << 30, 1024).protocol_limits("/my/proto").streams, 8);
    /// ```
    pub fn add_protocol_limit(
        &mut self,
        protocol: impl Into<String>,
        base: BaseLimit,
        increase: BaseLimitIncrease,
    ) -> &mut Self {
        self.protocol
            .insert(protocol.into(), ScalingLimit { base, increase });
        self
    }

    /// Sets the limit of each peer's scope within the protocol `protocol` (go's
    /// `AddProtocolPeerLimit`), replacing any earlier one.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimitConfig};
    /// let mut scaling = ScalingLimitConfig::default();
    /// scaling.add_protocol_peer_limit("/my/proto", BaseLimit { streams: 2, ..BaseLimit::block_all() }, BaseLimitIncrease::none());
    /// assert_eq!(scaling.scale(1 << 30, 1024).protocol_peer_limits("/my/proto").streams, 2);
    /// ```
    pub fn add_protocol_peer_limit(
        &mut self,
        protocol: impl Into<String>,
        base: BaseLimit,
        increase: BaseLimitIncrease,
    ) -> &mut Self {
        self.protocol_peer
            .insert(protocol.into(), ScalingLimit { base, increase });
        self
    }

    /// Sets the limit of the peer `peer` (go's `AddPeerLimit`), replacing any earlier one.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, BaseLimitIncrease, ScalingLimitConfig};
    /// let peer = rcmgr::PeerId::random();
    /// let mut scaling = ScalingLimitConfig::default();
    /// scaling.add_peer_limit(peer, BaseLimit { conns: 1, ..BaseLimit::block_all() }, BaseLimitIncrease::none());
    /// assert_eq!(scaling.scale(1 << 30, 1024).peer_limits(&peer).conns, 1);
    /// ```
    pub fn add_peer_limit(
        &mut self,
        peer: PeerId,
        base: BaseLimit,
        increase: BaseLimitIncrease,
    ) -> &mut Self {
        self.peer.insert(peer, ScalingLimit { base, increase });
        self
    }

    /// Every scope's limit for a node given `memory_bytes` of memory and `fd_count` file
    /// descriptors (go's `Scale`); [`ScalingLimit::scale`] gives the arithmetic.
    ///
    /// ```
    /// use rcmgr::ScalingLimitConfig;
    /// let limits = ScalingLimitConfig::default().scale(8 << 30, 16384);
    /// assert_eq!(limits.system.conns_inbound, 576);
    /// assert_eq!(limits.system.memory, 8724152320);
    /// assert_eq!(limits.peer_default.fd, 256);
    /// ```
    pub fn scale(&self, memory_bytes: u64, fd_count: u64) -> ConcreteLimitConfig {
        let scale = |limit: &ScalingLimit| limit.scale(memory_bytes, fd_count);
        ConcreteLimitConfig {
            system: scale(&self.system),
            transient: scale(&self.transient),
            allowlisted_system: scale(&self.allowlisted_system),
            allowlisted_transient: scale(&self.allowlisted_transient),
            service_default: scale(&self.service_default),
            service: scale_each(&self.service, scale),
            service_peer_default: scale(&self.service_peer_default),
            service_peer: scale_each(&self.service_peer, scale),
            protocol_default: scale(&self.protocol_default),
            protocol: scale_each(&self.protocol, scale),
            protocol_peer_default: scale(&self.protocol_peer_default),
            protocol_peer: scale_each(&self.protocol_peer, scale),
            peer_default: scale(&self.peer_default),
            peer: scale_each(&self.peer, scale),
            conn: scale(&self.conn),
            stream: scale(&self.stream),
            // Address-based limits do not scale with the machine: go's per-IP, subnet and
            // rate-limit defaults.
            ip: super::IpLimits::default(),
        }
    }

    /// Every scope's limit for this machine (go's `AutoScale`): [`scale`](Self::scale) with
    /// 1/8 of the machine's memory and 1/2 of the process's soft file descriptor limit
    /// (`RLIMIT_NOFILE`).
    ///
    /// - Memory is the physical memory, or the cgroup memory limit (`memory.max` for cgroup v2,
    ///   `memory/memory.limit_in_bytes` for v1, under `/sys/fs/cgroup`) when that is lower, so a
    ///   node in a container is sized by its container. go sizes by physical memory alone.
    ///   Memory that cannot be read counts as 0, which gives the base limits, as in go.
    /// - File descriptors: on Unix the soft `RLIMIT_NOFILE`; an infinite soft limit counts as
    ///   [`BaseLimit::UNLIMITED`] descriptors (go turns it into -1, hence the base limits). On
    ///   Windows, which has no such limit, also [`BaseLimit::UNLIMITED`], as in go. Elsewhere,
    ///   or when the limit cannot be read, 0: the base limits, as in go.
    ///
    /// ```
    /// let limits = rcmgr::ScalingLimitConfig::default().autoscale();
    /// assert!(limits.system.memory >= 128 << 20);
    /// ```
    pub fn autoscale(&self) -> ConcreteLimitConfig {
        let machine = autoscale::Machine::detect();
        let (memory_bytes, fd_count) = machine.scale_inputs();
        tracing::debug!(
            physical_memory = machine.physical_memory,
            cgroup_memory_limit = machine.cgroup_memory_limit,
            fd_soft_limit = ?machine.fd_soft_limit,
            memory_bytes,
            fd_count,
            "autoscaling resource limits"
        );
        self.scale(memory_bytes, fd_count)
    }
}

/// Each entry of a per-key map scaled.
fn scale_each<K: Ord + Clone>(
    limits: &BTreeMap<K, ScalingLimit>,
    scale: impl Fn(&ScalingLimit) -> BaseLimit,
) -> BTreeMap<K, BaseLimit> {
    limits
        .iter()
        .map(|(key, limit)| (key.clone(), scale(limit)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_strictly_above_128_mib_and_counts_all_of_it() {
        assert_eq!(counted_mib(0), 0);
        assert_eq!(counted_mib(128 << 20), 0);
        assert_eq!(counted_mib((128 << 20) + 1), 128);
        assert_eq!(counted_mib(u64::MAX), u64::MAX >> 20);
    }

    #[test]
    fn growth_floors_and_saturates() {
        // 4 bytes per GiB over 8192 MiB: 4 × 8192 / 1024 = 32.
        assert_eq!(grown(16, 4, 8192), 48);
        // 1 per GiB over 1535 MiB: floor(1535 / 1024) = 1.
        assert_eq!(grown(0, 1, 1535), 1);
        assert_eq!(grown(5, u64::MAX, u64::MAX >> 20), BaseLimit::UNLIMITED);
        assert_eq!(grown(u64::MAX, 1, 1 << 30), u64::MAX);
    }

    #[test]
    fn fd_share_uses_base_as_floor_and_ignores_non_positive_inputs() {
        assert_eq!(fd_share(256, 1.0, 100), 256);
        assert_eq!(fd_share(256, 1.0, 1000), 1000);
        assert_eq!(fd_share(4, 1.0 / 64.0, 16384), 256);
        assert_eq!(fd_share(4, 0.0, 16384), 4);
        assert_eq!(fd_share(4, -1.0, 16384), 4);
        assert_eq!(fd_share(4, f64::NAN, 16384), 4);
        assert_eq!(fd_share(4, 1.0, 0), 4);
        assert_eq!(fd_share(4, f64::INFINITY, 1), BaseLimit::UNLIMITED);
    }
}

//! The default limits: go's `DefaultLimits` and go-libp2p's limits for its own services and
//! protocols (`libp2p.SetDefaultServiceLimits`), number for number.

use std::collections::BTreeMap;

use super::{BaseLimit, BaseLimitIncrease, ScalingLimit, ScalingLimitConfig};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A base limit in the order the reference tables give it: streams and connections each as
/// `[inbound, outbound, total]`.
const fn base(streams: [u64; 3], conns: [u64; 3], fd: u64, memory: u64) -> BaseLimit {
    BaseLimit {
        streams: streams[2],
        streams_inbound: streams[0],
        streams_outbound: streams[1],
        conns: conns[2],
        conns_inbound: conns[0],
        conns_outbound: conns[1],
        fd,
        memory,
    }
}

/// An increase per GiB in the same order as [`base`].
const fn per_gib(
    streams: [u64; 3],
    conns: [u64; 3],
    memory: u64,
    fd_fraction: f64,
) -> BaseLimitIncrease {
    BaseLimitIncrease {
        streams: streams[2],
        streams_inbound: streams[0],
        streams_outbound: streams[1],
        conns: conns[2],
        conns_inbound: conns[0],
        conns_outbound: conns[1],
        memory,
        fd_fraction,
    }
}

const NONE: [u64; 3] = [0, 0, 0];

const SYSTEM: ScalingLimit = ScalingLimit {
    base: base([1024, 2048, 2048], [64, 128, 128], 256, 128 * MIB),
    increase: per_gib([1024, 2048, 2048], [64, 128, 128], GIB, 1.0),
};

const TRANSIENT: ScalingLimit = ScalingLimit {
    base: base([128, 256, 256], [32, 64, 64], 64, 32 * MIB),
    increase: per_gib([128, 256, 256], [16, 32, 32], 128 * MIB, 0.25),
};

impl Default for ScalingLimitConfig {
    /// go's `DefaultLimits`: the limits of a node that runs go-libp2p with its defaults, before
    /// scaling. Allowlisted scopes get the same limits as their ordinary counterparts.
    ///
    /// | scope | base streams in/out/total | base conns in/out/total | base FD | base memory | per GiB: streams, conns, memory | FD fraction |
    /// |---|---|---|---|---|---|---|
    /// | system | 1024/2048/2048 | 64/128/128 | 256 | 128 MiB | 1024/2048/2048, 64/128/128, 1 GiB | 1 |
    /// | transient | 128/256/256 | 32/64/64 | 64 | 32 MiB | 128/256/256, 16/32/32, 128 MiB | 1/4 |
    /// | service | 1024/4096/4096 | 0 | 0 | 64 MiB | 512/2048/2048, 0, 128 MiB | 0 |
    /// | service-peer | 128/256/256 | 0 | 0 | 16 MiB | 4/8/8, 0, 4 MiB | 0 |
    /// | protocol | 512/2048/2048 | 0 | 0 | 64 MiB | 256/512/512, 0, 164 MiB | 0 |
    /// | protocol-peer | 64/128/256 | 0 | 0 | 16 MiB | 4/8/16, 0, 4 bytes (sic, as in go) | 0 |
    /// | peer | 256/512/512 | 8/8/8 | 4 | 64 MiB | 128/256/256, 0, 128 MiB | 1/64 |
    /// | conn | 0 | 1/1/1 | 1 | 32 MiB | none | 0 |
    /// | stream | 1/1/1 | 0 | 0 | 16 MiB | none | 0 |
    ///
    /// A zero in a base limit blocks that resource: a service scope never holds a connection and
    /// a connection scope never holds a stream, so the zeros are never met.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, ScalingLimitConfig};
    /// let defaults = ScalingLimitConfig::default();
    /// assert_eq!(defaults.system.base.conns_inbound, 64);
    /// assert_eq!(defaults.protocol_peer_default.increase.memory, 4);
    /// assert!(defaults.service.is_empty());
    /// ```
    fn default() -> Self {
        ScalingLimitConfig {
            system: SYSTEM,
            transient: TRANSIENT,
            allowlisted_system: SYSTEM,
            allowlisted_transient: TRANSIENT,
            service_default: ScalingLimit {
                base: base([1024, 4096, 4096], NONE, 0, 64 * MIB),
                increase: per_gib([512, 2048, 2048], NONE, 128 * MIB, 0.0),
            },
            service: BTreeMap::new(),
            service_peer_default: ScalingLimit {
                base: base([128, 256, 256], NONE, 0, 16 * MIB),
                increase: per_gib([4, 8, 8], NONE, 4 * MIB, 0.0),
            },
            service_peer: BTreeMap::new(),
            protocol_default: ScalingLimit {
                base: base([512, 2048, 2048], NONE, 0, 64 * MIB),
                increase: per_gib([256, 512, 512], NONE, 164 * MIB, 0.0),
            },
            protocol: BTreeMap::new(),
            protocol_peer_default: ScalingLimit {
                base: base([64, 128, 256], NONE, 0, 16 * MIB),
                increase: per_gib([4, 8, 16], NONE, 4, 0.0),
            },
            protocol_peer: BTreeMap::new(),
            peer_default: ScalingLimit {
                base: base([256, 512, 512], [8, 8, 8], 4, 64 * MIB),
                increase: per_gib([128, 256, 256], NONE, 128 * MIB, 1.0 / 64.0),
            },
            peer: BTreeMap::new(),
            conn: ScalingLimit::fixed(base(NONE, [1, 1, 1], 1, 32 * MIB)),
            stream: ScalingLimit::fixed(base([1, 1, 1], NONE, 0, 16 * MIB)),
        }
    }
}

/// The per-peer memory go-libp2p gives identify and ping: 32 × (256 MiB + 16 KiB), about
/// 8 GiB (go quirk 3, kept so that the numbers match).
const LIBP2P_GENEROUS_PEER_MEMORY: u64 = 32 * (256 * MIB + 16 * KIB);

/// One line of go-libp2p's own limits: these services and protocols each get `scope`, and
/// each peer within them `per_peer` (which does not grow).
struct Libp2pLimit {
    services: &'static [&'static str],
    protocols: &'static [&'static str],
    scope: ScalingLimit,
    per_peer: BaseLimit,
}

/// go-libp2p's `SetDefaultServiceLimits`, line for line. Streams are `[inbound, outbound,
/// total]`; these scopes hold no connections and no file descriptors.
const LIBP2P_LIMITS: [Libp2pLimit; 7] = [
    // identify, the service
    Libp2pLimit {
        services: &["libp2p.identify"],
        protocols: &[],
        scope: ScalingLimit {
            base: base([64, 64, 128], NONE, 0, 4 * MIB),
            increase: per_gib([64, 64, 128], NONE, 4 * MIB, 0.0),
        },
        per_peer: base([16, 16, 32], NONE, 0, MIB),
    },
    // identify and identify push, the protocols
    Libp2pLimit {
        services: &[],
        protocols: &["/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0"],
        scope: ScalingLimit {
            base: base([64, 64, 128], NONE, 0, 4 * MIB),
            increase: per_gib([64, 64, 128], NONE, 4 * MIB, 0.0),
        },
        per_peer: base([16, 16, 32], NONE, 0, LIBP2P_GENEROUS_PEER_MEMORY),
    },
    // ping
    Libp2pLimit {
        services: &["libp2p.ping"],
        protocols: &["/ipfs/ping/1.0.0"],
        scope: ScalingLimit {
            base: base([64, 64, 64], NONE, 0, 4 * MIB),
            increase: per_gib([64, 64, 64], NONE, 4 * MIB, 0.0),
        },
        per_peer: base([2, 3, 4], NONE, 0, LIBP2P_GENEROUS_PEER_MEMORY),
    },
    // autonat
    Libp2pLimit {
        services: &["libp2p.autonat"],
        protocols: &["/libp2p/autonat/1.0.0"],
        scope: ScalingLimit {
            base: base([64, 64, 64], NONE, 0, 4 * MIB),
            increase: per_gib([4, 4, 4], NONE, 2 * MIB, 0.0),
        },
        per_peer: base([2, 2, 2], NONE, 0, MIB),
    },
    // hole punching
    Libp2pLimit {
        services: &["libp2p.holepunch"],
        protocols: &["/libp2p/dcutr"],
        scope: ScalingLimit {
            base: base([32, 32, 64], NONE, 0, 4 * MIB),
            increase: per_gib([8, 8, 16], NONE, 4 * MIB, 0.0),
        },
        per_peer: base([2, 2, 2], NONE, 0, MIB),
    },
    // relay v2, the service
    Libp2pLimit {
        services: &["libp2p.relay/v2"],
        protocols: &[],
        scope: ScalingLimit {
            base: base([256, 256, 256], NONE, 0, 16 * MIB),
            increase: per_gib([256, 256, 256], NONE, 16 * MIB, 0.0),
        },
        per_peer: base([64, 64, 64], NONE, 0, MIB),
    },
    // circuit v2, the hop and stop protocols
    Libp2pLimit {
        services: &[],
        protocols: &[
            "/libp2p/circuit/relay/0.2.0/hop",
            "/libp2p/circuit/relay/0.2.0/stop",
        ],
        scope: ScalingLimit {
            base: base([640, 640, 640], NONE, 0, 16 * MIB),
            increase: per_gib([640, 640, 640], NONE, 16 * MIB, 0.0),
        },
        per_peer: base([128, 128, 128], NONE, 0, 32 * MIB),
    },
];

impl ScalingLimitConfig {
    /// Adds go-libp2p's limits for its own services and protocols (go's
    /// `libp2p.SetDefaultServiceLimits`), replacing entries with the same names:
    ///
    /// | services and protocols | streams in/out/total, memory | per GiB | each peer |
    /// |---|---|---|---|
    /// | `libp2p.identify` | 64/64/128, 4 MiB | 64/64/128, 4 MiB | 16/16/32, 1 MiB |
    /// | `/ipfs/id/1.0.0`, `/ipfs/id/push/1.0.0` | 64/64/128, 4 MiB | 64/64/128, 4 MiB | 16/16/32, 8590458880 B |
    /// | `libp2p.ping`, `/ipfs/ping/1.0.0` | 64/64/64, 4 MiB | 64/64/64, 4 MiB | 2/3/4, 8590458880 B |
    /// | `libp2p.autonat`, `/libp2p/autonat/1.0.0` | 64/64/64, 4 MiB | 4/4/4, 2 MiB | 2/2/2, 1 MiB |
    /// | `libp2p.holepunch`, `/libp2p/dcutr` | 32/32/64, 4 MiB | 8/8/16, 4 MiB | 2/2/2, 1 MiB |
    /// | `libp2p.relay/v2` | 256/256/256, 16 MiB | 256/256/256, 16 MiB | 64/64/64, 1 MiB |
    /// | `/libp2p/circuit/relay/0.2.0/hop`, `…/stop` | 640/640/640, 16 MiB | 640/640/640, 16 MiB | 128/128/128, 32 MiB |
    ///
    /// ```
    /// use rcmgr::ScalingLimitConfig;
    /// let limits = ScalingLimitConfig::default().with_libp2p_defaults().scale(128 << 20, 256);
    /// let ping_per_peer = limits.protocol_peer_limits("/ipfs/ping/1.0.0");
    /// assert_eq!((ping_per_peer.streams_inbound, ping_per_peer.streams_outbound), (2, 3));
    /// assert_eq!(limits.service_limits("libp2p.identify").streams, 128);
    /// ```
    pub fn with_libp2p_defaults(mut self) -> Self {
        for line in &LIBP2P_LIMITS {
            let per_peer = BaseLimitIncrease::none();
            for service in line.services {
                self.add_service_limit(*service, line.scope.base, line.scope.increase);
                self.add_service_peer_limit(*service, line.per_peer, per_peer);
            }
            for protocol in line.protocols {
                self.add_protocol_limit(*protocol, line.scope.base, line.scope.increase);
                self.add_protocol_peer_limit(*protocol, line.per_peer, per_peer);
            }
        }
        self
    }
}

//! Scaling: go's `DefaultLimits`, `SetDefaultServiceLimits` and the `Scale` arithmetic, number
//! for number.

use rcmgr::{
    BaseLimit, BaseLimitIncrease, ConcreteLimitConfig, ResourceManager, ScalingLimit,
    ScalingLimitConfig,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// go's golden file `limit_config_test_default.json`: `DefaultLimits` scaled to 8 GiB and
/// 16384 file descriptors, written as a partial configuration with two-space indentation.
/// The numbers are the reference's table for `Scale(8 GiB, 16384)` (section 9.4).
const GOLDEN_DEFAULT_8_GIB: &str = r#"{
  "System": {
    "Streams": 18432,
    "StreamsInbound": 9216,
    "StreamsOutbound": 18432,
    "Conns": 1152,
    "ConnsInbound": 576,
    "ConnsOutbound": 1152,
    "FD": 16384,
    "Memory": "8724152320"
  },
  "Transient": {
    "Streams": 2304,
    "StreamsInbound": 1152,
    "StreamsOutbound": 2304,
    "Conns": 320,
    "ConnsInbound": 160,
    "ConnsOutbound": 320,
    "FD": 4096,
    "Memory": "1107296256"
  },
  "AllowlistedSystem": {
    "Streams": 18432,
    "StreamsInbound": 9216,
    "StreamsOutbound": 18432,
    "Conns": 1152,
    "ConnsInbound": 576,
    "ConnsOutbound": 1152,
    "FD": 16384,
    "Memory": "8724152320"
  },
  "AllowlistedTransient": {
    "Streams": 2304,
    "StreamsInbound": 1152,
    "StreamsOutbound": 2304,
    "Conns": 320,
    "ConnsInbound": 160,
    "ConnsOutbound": 320,
    "FD": 4096,
    "Memory": "1107296256"
  },
  "ServiceDefault": {
    "Streams": 20480,
    "StreamsInbound": 5120,
    "StreamsOutbound": 20480,
    "Conns": "blockAll",
    "ConnsInbound": "blockAll",
    "ConnsOutbound": "blockAll",
    "FD": "blockAll",
    "Memory": "1140850688"
  },
  "ServicePeerDefault": {
    "Streams": 320,
    "StreamsInbound": 160,
    "StreamsOutbound": 320,
    "Conns": "blockAll",
    "ConnsInbound": "blockAll",
    "ConnsOutbound": "blockAll",
    "FD": "blockAll",
    "Memory": "50331648"
  },
  "ProtocolDefault": {
    "Streams": 6144,
    "StreamsInbound": 2560,
    "StreamsOutbound": 6144,
    "Conns": "blockAll",
    "ConnsInbound": "blockAll",
    "ConnsOutbound": "blockAll",
    "FD": "blockAll",
    "Memory": "1442840576"
  },
  "ProtocolPeerDefault": {
    "Streams": 384,
    "StreamsInbound": 96,
    "StreamsOutbound": 192,
    "Conns": "blockAll",
    "ConnsInbound": "blockAll",
    "ConnsOutbound": "blockAll",
    "FD": "blockAll",
    "Memory": "16777248"
  },
  "PeerDefault": {
    "Streams": 2560,
    "StreamsInbound": 1280,
    "StreamsOutbound": 2560,
    "Conns": 8,
    "ConnsInbound": 8,
    "ConnsOutbound": 8,
    "FD": 256,
    "Memory": "1140850688"
  },
  "Conn": {
    "Streams": "blockAll",
    "StreamsInbound": "blockAll",
    "StreamsOutbound": "blockAll",
    "Conns": 1,
    "ConnsInbound": 1,
    "ConnsOutbound": 1,
    "FD": 1,
    "Memory": "33554432"
  },
  "Stream": {
    "Streams": 1,
    "StreamsInbound": 1,
    "StreamsOutbound": 1,
    "Conns": "blockAll",
    "ConnsInbound": "blockAll",
    "ConnsOutbound": "blockAll",
    "FD": "blockAll",
    "Memory": "16777216"
  }
}"#;

/// A limit written as the reference tables give it: streams and conns `[inbound, outbound,
/// total]`.
fn limit(streams: [u64; 3], conns: [u64; 3], fd: u64, memory: u64) -> BaseLimit {
    let mut limit = BaseLimit::block_all();
    [limit.streams_inbound, limit.streams_outbound, limit.streams] = streams;
    [limit.conns_inbound, limit.conns_outbound, limit.conns] = conns;
    limit.fd = fd;
    limit.memory = memory;
    limit
}

const NONE: [u64; 3] = [0, 0, 0];

fn fields(limit: &BaseLimit) -> [u64; 8] {
    [
        limit.streams,
        limit.streams_inbound,
        limit.streams_outbound,
        limit.conns,
        limit.conns_inbound,
        limit.conns_outbound,
        limit.fd,
        limit.memory,
    ]
}

#[test]
fn default_limits_at_8_gib_and_16384_fds_equal_gos_golden_file_byte_for_byte() {
    let limits = ScalingLimitConfig::default().scale(8 * GIB, 16384);
    assert_eq!(limits.to_partial().to_json_pretty(), GOLDEN_DEFAULT_8_GIB);
}

#[test]
#[allow(clippy::print_stderr, reason = "a skipped check says why")]
fn gos_own_golden_file_matches_when_it_is_beside_the_checkout() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/go-limit-files/limit_config_test_default.json");
    let Ok(expected) = std::fs::read_to_string(&golden) else {
        eprintln!("skipped: {} is not here", golden.display());
        return;
    };
    let limits = ScalingLimitConfig::default().scale(8 * GIB, 16384);
    assert_eq!(limits.to_partial().to_json_pretty(), expected);
}

#[test]
fn at_128_mib_and_256_fds_every_scope_has_its_base_limit() {
    let scaling = ScalingLimitConfig::default().with_libp2p_defaults();
    let limits = scaling.scale(128 * MIB, 256);
    let fixed = [
        (limits.system, scaling.system.base),
        (limits.transient, scaling.transient.base),
        (limits.allowlisted_system, scaling.allowlisted_system.base),
        (
            limits.allowlisted_transient,
            scaling.allowlisted_transient.base,
        ),
        (limits.service_default, scaling.service_default.base),
        (
            limits.service_peer_default,
            scaling.service_peer_default.base,
        ),
        (limits.protocol_default, scaling.protocol_default.base),
        (
            limits.protocol_peer_default,
            scaling.protocol_peer_default.base,
        ),
        (limits.peer_default, scaling.peer_default.base),
        (limits.conn, scaling.conn.base),
        (limits.stream, scaling.stream.base),
    ];
    for (scaled, base) in fixed {
        assert_eq!(scaled, base);
    }
    for (name, scaled) in &limits.service {
        assert_eq!(*scaled, scaling.service[name].base, "service {name}");
    }
    for (name, scaled) in &limits.protocol_peer {
        assert_eq!(
            *scaled, scaling.protocol_peer[name].base,
            "protocol-peer {name}"
        );
    }
    // The FD bases the reference names.
    assert_eq!(
        (
            limits.system.fd,
            limits.transient.fd,
            limits.peer_default.fd
        ),
        (256, 64, 4)
    );
}

#[test]
fn scale_256_mib_1024_fds_by_hand() {
    // 256 MiB is above 128 MiB, so MiB = 256 and every increase counts 256/1024 = 1/4.
    let limits = ScalingLimitConfig::default().scale(256 * MIB, 1024);
    // system: streams 2048 + 2048/4, in 1024 + 1024/4; conns 128 + 128/4, in 64 + 64/4;
    // memory 128 MiB + 1 GiB/4 = 384 MiB; FD max(1.0 × 1024, 256).
    assert_eq!(
        limits.system,
        limit([1280, 2560, 2560], [80, 160, 160], 1024, 384 * MIB)
    );
    // transient: streams 256 + 64, in 128 + 32; conns 64 + 8, in 32 + 4;
    // memory 32 MiB + 128 MiB/4 = 64 MiB; FD max(0.25 × 1024, 64) = 256.
    assert_eq!(
        limits.transient,
        limit([160, 320, 320], [36, 72, 72], 256, 64 * MIB)
    );
    // service: streams 4096 + 2048/4, in 1024 + 512/4; memory 64 + 128/4 = 96 MiB.
    assert_eq!(
        limits.service_default,
        limit([1152, 4608, 4608], NONE, 0, 96 * MIB)
    );
    // service-peer: streams 256 + 8/4, in 128 + 4/4; memory 16 + 4/4 = 17 MiB.
    assert_eq!(
        limits.service_peer_default,
        limit([129, 258, 258], NONE, 0, 17 * MIB)
    );
    // protocol: streams 2048 + 512/4, in 512 + 256/4; memory 64 + 164/4 = 105 MiB.
    assert_eq!(
        limits.protocol_default,
        limit([576, 2176, 2176], NONE, 0, 105 * MIB)
    );
    // protocol-peer: in 64 + 4/4, out 128 + 8/4, total 256 + 16/4;
    // memory 16 MiB + 4 B × 256/1024 = 16 MiB + 1 B.
    assert_eq!(
        limits.protocol_peer_default,
        limit([65, 130, 260], NONE, 0, 16 * MIB + 1)
    );
    // peer: streams 512 + 256/4, in 256 + 128/4; conns fixed at 8; FD max(1024/64, 4) = 16;
    // memory 64 + 128/4 = 96 MiB.
    assert_eq!(
        limits.peer_default,
        limit([288, 576, 576], [8, 8, 8], 16, 96 * MIB)
    );
    assert_eq!(limits.conn, limit(NONE, [1, 1, 1], 1, 32 * MIB));
    assert_eq!(limits.stream, limit([1, 1, 1], NONE, 0, 16 * MIB));
}

#[test]
fn scale_1_gib_4096_fds_by_hand() {
    // MiB = 1024: every scope gets exactly one increase.
    let limits = ScalingLimitConfig::default().scale(GIB, 4096);
    // system: 1024 + 1024, 2048 + 2048; 64 + 64, 128 + 128; 128 MiB + 1 GiB; FD 4096.
    assert_eq!(
        limits.system,
        limit([2048, 4096, 4096], [128, 256, 256], 4096, 128 * MIB + GIB)
    );
    // transient: FD max(4096/4, 64) = 1024; memory 32 + 128 = 160 MiB.
    assert_eq!(
        limits.transient,
        limit([256, 512, 512], [48, 96, 96], 1024, 160 * MIB)
    );
    // peer: FD 4096/64 = 64; memory 64 + 128 = 192 MiB.
    assert_eq!(
        limits.peer_default,
        limit([384, 768, 768], [8, 8, 8], 64, 192 * MIB)
    );
    // protocol-peer memory grows by 4 bytes per GiB (go quirk 2).
    assert_eq!(limits.protocol_peer_default.memory, 16 * MIB + 4);
    assert_eq!(limits.allowlisted_system, limits.system);
    assert_eq!(limits.allowlisted_transient, limits.transient);
}

#[test]
fn scale_one_and_a_half_gib_plus_7_bytes_and_1000_fds_by_hand() {
    // 1.5 GiB + 7 B = 1610612743 B; MiB = 1610612743 >> 20 = 1536 (the 7 bytes drop out),
    // so every increase counts 1536/1024 = 1.5 times, rounded down.
    let limits = ScalingLimitConfig::default().scale(3 * GIB / 2 + 7, 1000);
    // system: 1024 + 1536, 2048 + 3072; 64 + 96, 128 + 192; 128 MiB + 1536 MiB;
    // FD max(1.0 × 1000, 256) = 1000.
    assert_eq!(
        limits.system,
        limit([2560, 5120, 5120], [160, 320, 320], 1000, 1664 * MIB)
    );
    // transient: 128 + 192, 256 + 384; 32 + 24, 64 + 48; 32 + 192 MiB;
    // FD max(trunc(0.25 × 1000), 64) = 250.
    assert_eq!(
        limits.transient,
        limit([320, 640, 640], [56, 112, 112], 250, 224 * MIB)
    );
    // service-peer: 128 + 6, 256 + 12; memory 16 + 6 = 22 MiB.
    assert_eq!(
        limits.service_peer_default,
        limit([134, 268, 268], NONE, 0, 22 * MIB)
    );
    // protocol: 512 + 384, 2048 + 768; memory 64 + 246 = 310 MiB.
    assert_eq!(
        limits.protocol_default,
        limit([896, 2816, 2816], NONE, 0, 310 * MIB)
    );
    // protocol-peer: 64 + 6, 128 + 12, 256 + 24; memory 16 MiB + floor(4 × 1536 / 1024) = + 6 B.
    assert_eq!(
        limits.protocol_peer_default,
        limit([70, 140, 280], NONE, 0, 16 * MIB + 6)
    );
    // peer: 256 + 192, 512 + 384; FD max(trunc(1000 / 64 = 15.625), 4) = 15;
    // memory 64 + 192 = 256 MiB.
    assert_eq!(
        limits.peer_default,
        limit([448, 896, 896], [8, 8, 8], 15, 256 * MIB)
    );
}

#[test]
fn increases_are_rounded_down_per_mib() {
    // 300 MiB: increases count 300/1024 of a GiB.
    let limits = ScalingLimitConfig::default().scale(300 * MIB, 0);
    // protocol-peer memory: 4 × 300 / 1024 = 1.17 -> 1 byte.
    assert_eq!(limits.protocol_peer_default.memory, 16 * MIB + 1);
    // service-peer inbound streams: 4 × 300 / 1024 = 1.17 -> 1.
    assert_eq!(limits.service_peer_default.streams_inbound, 129);
    // transient inbound conns: 16 × 300 / 1024 = 4.69 -> 4.
    assert_eq!(limits.transient.conns_inbound, 36);
    // no descriptors given: the FD limits stay at their base.
    assert_eq!(
        (
            limits.system.fd,
            limits.transient.fd,
            limits.peer_default.fd
        ),
        (256, 64, 4)
    );
}

#[test]
fn the_threshold_is_strictly_above_128_mib_and_then_all_memory_counts() {
    let scaling = ScalingLimitConfig::default();
    assert_eq!(scaling.scale(128 * MIB, 0).system.streams, 2048);
    // One byte more and the whole 128 MiB counts: 2048 + 2048 × 128 / 1024.
    assert_eq!(scaling.scale(128 * MIB + 1, 0).system.streams, 2048 + 256);
    assert_eq!(scaling.scale(0, 0), scaling.scale(128 * MIB, 0));
}

#[test]
fn libp2p_defaults_match_gos_service_limits() {
    let scaling = ScalingLimitConfig::default().with_libp2p_defaults();
    let base = scaling.scale(128 * MIB, 256);
    let generous = 32 * (256 * MIB + 16 * 1024);
    assert_eq!(generous, 8_590_458_880);
    let expected_base = [
        ("libp2p.identify", limit([64, 64, 128], NONE, 0, 4 * MIB)),
        ("libp2p.ping", limit([64, 64, 64], NONE, 0, 4 * MIB)),
        ("libp2p.autonat", limit([64, 64, 64], NONE, 0, 4 * MIB)),
        ("libp2p.holepunch", limit([32, 32, 64], NONE, 0, 4 * MIB)),
        ("libp2p.relay/v2", limit([256, 256, 256], NONE, 0, 16 * MIB)),
    ];
    for (service, expected) in expected_base {
        assert_eq!(base.service[service], expected, "service {service}");
    }
    let expected_service_peer = [
        ("libp2p.identify", limit([16, 16, 32], NONE, 0, MIB)),
        ("libp2p.ping", limit([2, 3, 4], NONE, 0, generous)),
        ("libp2p.autonat", limit([2, 2, 2], NONE, 0, MIB)),
        ("libp2p.holepunch", limit([2, 2, 2], NONE, 0, MIB)),
        ("libp2p.relay/v2", limit([64, 64, 64], NONE, 0, MIB)),
    ];
    for (service, expected) in expected_service_peer {
        assert_eq!(
            base.service_peer[service], expected,
            "service-peer {service}"
        );
    }
    let expected_protocol = [
        ("/ipfs/id/1.0.0", limit([64, 64, 128], NONE, 0, 4 * MIB)),
        (
            "/ipfs/id/push/1.0.0",
            limit([64, 64, 128], NONE, 0, 4 * MIB),
        ),
        ("/ipfs/ping/1.0.0", limit([64, 64, 64], NONE, 0, 4 * MIB)),
        (
            "/libp2p/autonat/1.0.0",
            limit([64, 64, 64], NONE, 0, 4 * MIB),
        ),
        ("/libp2p/dcutr", limit([32, 32, 64], NONE, 0, 4 * MIB)),
        (
            "/libp2p/circuit/relay/0.2.0/hop",
            limit([640, 640, 640], NONE, 0, 16 * MIB),
        ),
        (
            "/libp2p/circuit/relay/0.2.0/stop",
            limit([640, 640, 640], NONE, 0, 16 * MIB),
        ),
    ];
    for (protocol, expected) in expected_protocol {
        assert_eq!(base.protocol[protocol], expected, "protocol {protocol}");
    }
    let expected_protocol_peer = [
        ("/ipfs/id/1.0.0", limit([16, 16, 32], NONE, 0, generous)),
        (
            "/ipfs/id/push/1.0.0",
            limit([16, 16, 32], NONE, 0, generous),
        ),
        ("/ipfs/ping/1.0.0", limit([2, 3, 4], NONE, 0, generous)),
        ("/libp2p/autonat/1.0.0", limit([2, 2, 2], NONE, 0, MIB)),
        ("/libp2p/dcutr", limit([2, 2, 2], NONE, 0, MIB)),
        (
            "/libp2p/circuit/relay/0.2.0/hop",
            limit([128, 128, 128], NONE, 0, 32 * MIB),
        ),
        (
            "/libp2p/circuit/relay/0.2.0/stop",
            limit([128, 128, 128], NONE, 0, 32 * MIB),
        ),
    ];
    for (protocol, expected) in expected_protocol_peer {
        assert_eq!(
            base.protocol_peer[protocol], expected,
            "protocol-peer {protocol}"
        );
    }
    assert_eq!(base.service.len(), 5);
    assert_eq!(base.service_peer.len(), 5);
    assert_eq!(base.protocol.len(), 7);
    assert_eq!(base.protocol_peer.len(), 7);
    assert!(base.peer.is_empty());

    // At 1 GiB the services and protocols grow by one increase; the per-peer limits do not.
    let one_gib = scaling.scale(GIB, 256);
    assert_eq!(
        one_gib.service["libp2p.identify"],
        limit([128, 128, 256], NONE, 0, 8 * MIB)
    );
    assert_eq!(
        one_gib.protocol["/libp2p/autonat/1.0.0"],
        limit([68, 68, 68], NONE, 0, 6 * MIB)
    );
    assert_eq!(
        one_gib.service["libp2p.holepunch"],
        limit([40, 40, 80], NONE, 0, 8 * MIB)
    );
    assert_eq!(
        one_gib.protocol["/libp2p/circuit/relay/0.2.0/hop"],
        limit([1280, 1280, 1280], NONE, 0, 32 * MIB)
    );
    assert_eq!(one_gib.service_peer, base.service_peer);
    assert_eq!(one_gib.protocol_peer, base.protocol_peer);
}

#[test]
fn the_stream_scope_grows_with_its_own_increase() {
    // go grows the stream scope with the connection's increase (quirk 1); rcmgr uses the
    // stream's own.
    let mut scaling = ScalingLimitConfig::default();
    scaling.stream.increase = BaseLimitIncrease {
        streams: 2,
        memory: MIB,
        ..BaseLimitIncrease::none()
    };
    scaling.conn.increase = BaseLimitIncrease {
        streams: 1000,
        ..BaseLimitIncrease::none()
    };
    let limits = scaling.scale(4 * GIB, 0);
    assert_eq!(limits.stream.streams, 1 + 4 * 2);
    assert_eq!(limits.stream.memory, 16 * MIB + 4 * MIB);
}

#[test]
fn added_limits_replace_earlier_ones_and_scale_with_their_own_increase() {
    let peer = rcmgr::PeerId::random();
    let mut scaling = ScalingLimitConfig::default();
    let base = limit([1, 1, 2], [1, 1, 1], 2, MIB);
    let increase = BaseLimitIncrease {
        streams: 10,
        conns: 10,
        memory: MIB,
        fd_fraction: 0.5,
        ..BaseLimitIncrease::none()
    };
    scaling
        .add_service_limit("s", BaseLimit::unlimited(), increase)
        .add_service_limit("s", base, increase)
        .add_service_peer_limit("s", base, increase)
        .add_protocol_limit("/p", base, increase)
        .add_protocol_peer_limit("/p", base, increase)
        .add_peer_limit(peer, base, increase);
    let limits = scaling.scale(2 * GIB, 100);
    let expected = limit([1, 1, 22], [1, 1, 21], 50, 3 * MIB);
    assert_eq!(limits.service["s"], expected);
    assert_eq!(limits.service_peer["s"], expected);
    assert_eq!(limits.protocol["/p"], expected);
    assert_eq!(limits.protocol_peer["/p"], expected);
    assert_eq!(limits.peer[&peer], expected);
    assert_eq!(limits.peer_limits(&peer), expected);
}

#[test]
fn absurd_inputs_saturate_instead_of_overflowing() {
    let huge = ScalingLimit {
        base: BaseLimit {
            streams: 5,
            memory: u64::MAX,
            ..BaseLimit::block_all()
        },
        increase: BaseLimitIncrease {
            streams: u64::MAX,
            conns: u64::MAX,
            memory: u64::MAX,
            fd_fraction: f64::MAX,
            ..BaseLimitIncrease::none()
        },
    };
    let scaled = huge.scale(u64::MAX, u64::MAX);
    assert_eq!(scaled.streams, BaseLimit::UNLIMITED);
    assert_eq!(scaled.conns, BaseLimit::UNLIMITED);
    assert_eq!(scaled.fd, BaseLimit::UNLIMITED);
    // A base already above UNLIMITED is kept: it already means "unlimited".
    assert_eq!(scaled.memory, u64::MAX);
    assert_eq!(scaled.streams_inbound, 0);

    let everything = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(u64::MAX, u64::MAX);
    for value in fields(&everything.system) {
        assert!(value <= BaseLimit::UNLIMITED);
    }
}

#[test]
fn infinite_limits_are_unlimited_everywhere() {
    let infinite = ConcreteLimitConfig::infinite();
    assert!(infinite.system.is_unlimited() && infinite.peer_default.is_unlimited());
    assert!(infinite.service.is_empty() && infinite.peer.is_empty());
}

#[test]
fn the_default_manager_is_autoscaled_defaults_with_libp2p_limits() {
    let rm = ResourceManager::default();
    assert!(rm.list_peers().is_empty());
    let autoscaled = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .autoscale();
    let base = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(0, 0);
    assert!(autoscaled.system.memory >= base.system.memory);
    assert!(autoscaled.system.fd >= base.system.fd);
    assert!(autoscaled.protocol.contains_key("/ipfs/ping/1.0.0"));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn every_scope(limits: &ConcreteLimitConfig) -> Vec<BaseLimit> {
        let mut all = vec![
            limits.system,
            limits.transient,
            limits.allowlisted_system,
            limits.allowlisted_transient,
            limits.service_default,
            limits.service_peer_default,
            limits.protocol_default,
            limits.protocol_peer_default,
            limits.peer_default,
            limits.conn,
            limits.stream,
        ];
        all.extend(limits.service.values());
        all.extend(limits.service_peer.values());
        all.extend(limits.protocol.values());
        all.extend(limits.protocol_peer.values());
        all
    }

    proptest! {
        #[test]
        fn scaling_never_decreases_as_memory_or_descriptors_grow(
            a in any::<u64>(), b in any::<u64>(), fd_a in any::<u64>(), fd_b in any::<u64>()
        ) {
            let scaling = ScalingLimitConfig::default().with_libp2p_defaults();
            let (low, high) = (a.min(b), a.max(b));
            let (few, many) = (fd_a.min(fd_b), fd_a.max(fd_b));
            let small = every_scope(&scaling.scale(low, few));
            let large = every_scope(&scaling.scale(high, many));
            for (small, large) in small.iter().zip(&large) {
                for (s, l) in fields(small).into_iter().zip(fields(large)) {
                    prop_assert!(s <= l);
                    prop_assert!(l <= BaseLimit::UNLIMITED);
                }
            }
        }
    }
}

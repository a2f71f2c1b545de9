//! Limit scaling over arbitrary memory sizes, descriptor counts and limits: never a panic or an
//! overflow, never below the base, never past `BaseLimit::UNLIMITED` unless the base already
//! was, and monotone: more memory or more descriptors never lowers a limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rcmgr::{BaseLimit, BaseLimitIncrease, ConcreteLimitConfig, ScalingLimit, ScalingLimitConfig};

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
    all.extend(limits.peer.values());
    all
}

/// Every field of `small` is at most the same field of `large`.
fn at_most(small: &BaseLimit, large: &BaseLimit) -> bool {
    fields(small)
        .iter()
        .zip(fields(large))
        .all(|(s, l)| *s <= l)
}

fuzz_target!(|input: ([u64; 4], [u64; 8], [u64; 7], f64)| {
    let ([memory_a, memory_b, fds_a, fds_b], base, per_gib, fd_fraction) = input;
    let (less_memory, more_memory) = (memory_a.min(memory_b), memory_a.max(memory_b));
    let (fewer_fds, more_fds) = (fds_a.min(fds_b), fds_a.max(fds_b));

    let limit = ScalingLimit {
        base: BaseLimit {
            streams: base[0],
            streams_inbound: base[1],
            streams_outbound: base[2],
            conns: base[3],
            conns_inbound: base[4],
            conns_outbound: base[5],
            fd: base[6],
            memory: base[7],
        },
        increase: BaseLimitIncrease {
            streams: per_gib[0],
            streams_inbound: per_gib[1],
            streams_outbound: per_gib[2],
            conns: per_gib[3],
            conns_inbound: per_gib[4],
            conns_outbound: per_gib[5],
            memory: per_gib[6],
            fd_fraction,
        },
    };
    let small = limit.scale(less_memory, fewer_fds);
    let large = limit.scale(more_memory, more_fds);
    assert!(
        at_most(&small, &large),
        "not monotone: {small:?} then {large:?}"
    );
    assert!(at_most(&limit.base, &small), "below the base: {small:?}");
    for (scaled, base) in fields(&large).into_iter().zip(base) {
        assert!(
            scaled <= BaseLimit::UNLIMITED.max(base),
            "past UNLIMITED: {large:?}"
        );
    }
    // File descriptors do not depend on memory.
    assert_eq!(limit.scale(less_memory, more_fds).fd, large.fd);

    // The real tables behave the same.
    let defaults = ScalingLimitConfig::default().with_libp2p_defaults();
    let small = every_scope(&defaults.scale(less_memory, fewer_fds));
    let large = every_scope(&defaults.scale(more_memory, more_fds));
    for (small, large) in small.iter().zip(&large) {
        assert!(
            at_most(small, large),
            "defaults not monotone: {small:?} then {large:?}"
        );
        assert!(fields(large).iter().all(|v| *v <= BaseLimit::UNLIMITED));
    }
});

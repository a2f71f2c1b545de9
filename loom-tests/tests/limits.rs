//! Limit swaps racing reservations: `set_limits` installs a new snapshot and bumps the
//! generation while another thread reserves; each scope re-resolves its cached limit
//! (`LimitCell`) when it sees the new generation.
#![cfg(rcmgr_loom)]

use loom::thread;
use loom_tests::{Outcomes, assert_all_released, assert_within, check, manager, peer};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ConnLimitPerSubnet, ConnRateLimits, Direction, Error, IpLimits,
    Multiaddr, Priority, ResourceScope, ScopeName,
};

/// The system limit before the swap: one stream in all (inbound unlimited), 100 bytes.
fn old_system_limit() -> BaseLimit {
    BaseLimit {
        streams: 1,
        memory: 100,
        ..BaseLimit::unlimited()
    }
}

/// The system limit after the swap: one inbound stream (streams in all unlimited), 50 bytes.
///
/// A limit torn between the two snapshots, with the unlimited total of this one and the
/// unlimited inbound count of the old one, would admit a second inbound stream that both
/// refuse.
fn new_system_limit() -> BaseLimit {
    BaseLimit {
        streams_inbound: 1,
        memory: 50,
        ..BaseLimit::unlimited()
    }
}

fn limits_with_system(system: BaseLimit) -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = system;
    limits
}

/// One inbound stream is open when `set_limits` swaps the system limit on one thread while
/// the other opens a second inbound stream and reserves 80 bytes on the first.
///
/// * The second inbound stream is refused by the system whichever limit it sees (the old
///   one allows one stream in all, the new one one inbound stream); only a torn mix of the
///   two could admit it.
/// * The 80 bytes fit the old limit (100) and not the new one (50): the reservation may
///   go either way, but the system never holds more than the limit it was checked against.
/// * After the swap, reservations follow the new limit: an outbound stream (refused by the
///   old total of one, admitted by the new limit) opens, and memory is admitted up to 50
///   bytes in all and no further (80 bytes held under the old limit stay held but block
///   any more).
#[test]
fn set_limits_during_a_reservation_applies_the_old_or_the_new_limit_never_a_mix() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(limits_with_system(old_system_limit()));
        let id = peer(1);
        let first = rm
            .open_stream(id, Direction::Inbound)
            .expect("the system admits one stream");
        let system = rm.system();

        let swapper = {
            let rm = rm.clone();
            thread::spawn(move || rm.set_limits(limits_with_system(new_system_limit())))
        };
        let refused = rm
            .open_stream(id, Direction::Inbound)
            .expect_err("both limits refuse a second inbound stream");
        let refusal = refused
            .limit_exceeded()
            .expect("a limit refused, not a closed scope");
        assert_eq!(refusal.refused_by(), &ScopeName::System);
        let reserved = first.reserve_memory(80, Priority::ALWAYS).is_ok();
        assert_within(system.stat(), old_system_limit(), "system");
        swapper.join().expect("the swapping thread finished");

        assert_eq!(system.limit(), new_system_limit());
        assert_eq!(system.stat().streams_inbound, 1, "system");
        assert!(
            rm.open_stream(id, Direction::Inbound).is_err(),
            "the new limit admits one inbound stream"
        );
        let second = rm
            .open_stream(id, Direction::Outbound)
            .expect("the new limit admits outbound streams without a total");
        if reserved {
            record.record("reserved under the old limit");
            assert_eq!(system.stat().memory, 80);
            assert!(
                first.reserve_memory(1, Priority::ALWAYS).is_err(),
                "80 bytes held are above the new limit of 50"
            );
        } else {
            record.record("refused under the new limit");
            assert_eq!(system.stat().memory, 0);
            first
                .reserve_memory(50, Priority::ALWAYS)
                .expect("the new limit admits 50 bytes");
            assert!(
                second.reserve_memory(1, Priority::ALWAYS).is_err(),
                "the new limit admits no more than 50 bytes"
            );
            assert_within(system.stat(), new_system_limit(), "system");
        }

        drop((first, second));
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "refused under the new limit",
        "reserved under the old limit",
    ]);
}

/// `set_limit` pins a peer scope's limit to 50 bytes while a reservation of 60 bytes on the
/// same scope re-resolves the scope's cached limit (a `set_limits` just bumped the
/// generation), writing the unlimited limit of the new snapshot into the same cache.
///
/// Once `set_limit` has returned, the scope's limit is the pinned one, whatever the refresh
/// did: the reservation either got in before the pin (60 bytes held, and nothing more
/// admitted) or is refused by it.
#[test]
fn set_limit_racing_a_cache_refresh_keeps_the_pinned_limit() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let view = rm.peer(&id);
        assert_eq!(
            view.limit(),
            BaseLimit::unlimited(),
            "the cache holds generation 1"
        );
        // A new snapshot: the next limit check on the peer scope refreshes its cache.
        rm.set_limits(ConcreteLimitConfig::infinite());
        let pinned = BaseLimit {
            memory: 50,
            ..BaseLimit::unlimited()
        };

        let reserver = {
            let view = view.clone();
            thread::spawn(move || view.reserve_memory(60, Priority::ALWAYS).is_ok())
        };
        view.set_limit(pinned);
        assert_eq!(view.limit(), pinned, "right after the pin");
        let reserved = reserver.join().expect("the reserving thread finished");

        assert_eq!(view.limit(), pinned, "after the race");
        if reserved {
            record.record("reserved before the pin");
            assert_eq!(view.stat().memory, 60);
            assert!(view.reserve_memory(1, Priority::ALWAYS).is_err());
            view.release_memory(60);
        } else {
            record.record("refused by the pin");
            assert_eq!(view.stat().memory, 0);
            view.reserve_memory(50, Priority::ALWAYS)
                .expect("the pinned limit admits 50 bytes");
            assert!(view.reserve_memory(1, Priority::ALWAYS).is_err());
            view.release_memory(50);
        }
        drop(view);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&["refused by the pin", "reserved before the pin"]);
}

/// Limits that count connections per IPv4 address (at most `conns` each) and nothing else.
fn per_address(conns: u64) -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.ip = IpLimits::default();
    limits.ip.rate = ConnRateLimits::disabled();
    limits.ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 32,
        conn_count: conns,
    }];
    limits
}

/// One connection from an address is open, which left this thread with a cached copy of the
/// gate's policy (one connection per address), when `set_limits` raises the limit to two on
/// another thread while this one opens a second connection from the same address.
///
/// The second connection is admitted under the new limit or refused under the old one, and
/// once `set_limits` has returned the new limit applies here too, cached copy or not: a
/// connection refused during the swap is admitted after it, and a third one is refused.
#[test]
fn set_limits_reaches_a_thread_that_cached_the_old_gate_policy() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(per_address(1));
        let endpoint: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().expect("a valid address");
        let open = || rm.open_connection(Direction::Inbound, false, &endpoint);
        let first = open().expect("the old limit admits one connection");

        let swapper = {
            let rm = rm.clone();
            thread::spawn(move || rm.set_limits(per_address(2)))
        };
        let during = open();
        swapper.join().expect("the swapping thread finished");

        let second = match during {
            Ok(second) => {
                record.record("admitted under the new limit");
                second
            }
            Err(refused) => {
                record.record("refused under the old limit");
                assert!(matches!(refused, Error::IpLimitExceeded(_)), "{refused}");
                open().expect("after the swap, the new limit admits a second connection")
            }
        };
        assert!(
            matches!(open(), Err(Error::IpLimitExceeded(_))),
            "the new limit admits two connections, no more"
        );
        drop((first, second));
        assert!(rm.ip_conn_counts().is_empty(), "every count released");
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "admitted under the new limit",
        "refused under the old limit",
    ]);
}

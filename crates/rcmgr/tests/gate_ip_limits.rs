//! Per-IP, subnet and network-prefix connection limits: go's defaults, precedence, release
//! exactly once (also across limit swaps and from many threads), `infinite()` turning them off
//! (go-libp2p#3431) and allowlist entries lifting them (go-libp2p#3238).

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use rcmgr::{
    AddressRange, ConcreteLimitConfig, ConnLimitPerSubnet, ConnectionScope, Direction, Error,
    IpLimits, IpNet, Multiaddr, NetworkPrefixLimit, PeerId, ResourceManager, ResourceScope,
};

fn addr(s: &str) -> Multiaddr {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid multiaddr: {err}"))
}

fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid network: {err}"))
}

/// Unlimited scopes, go's per-IP limits, no rate limits (they have tests of their own).
fn counting_only() -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.ip = IpLimits::default();
    limits.ip.rate = rcmgr::ConnRateLimits::disabled();
    limits
}

fn manager(limits: ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits)
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("a manager with valid options")
}

fn open(rm: &ResourceManager, endpoint: &str) -> Result<ConnectionScope, Error> {
    rm.open_connection(Direction::Inbound, true, &addr(endpoint))
}

/// Opens connections from `endpoint` until one is refused; returns them and the refusal.
fn fill(rm: &ResourceManager, endpoint: &str) -> (Vec<ConnectionScope>, Error) {
    let mut held = Vec::new();
    loop {
        match open(rm, endpoint) {
            Ok(conn) => held.push(conn),
            Err(err) => return (held, err),
        }
        assert!(held.len() <= 10_000, "{endpoint} is never refused");
    }
}

#[test]
fn ipv4_addresses_hold_eight_connections_each_by_default() {
    let rm = manager(counting_only());
    let (held, err) = fill(&rm, "/ip4/192.0.2.7/tcp/4001");
    assert_eq!(held.len(), 8);
    assert!(err.is_resource_limit_exceeded() && err.is_temporary());
    let refused = err.ip_limit_exceeded().expect("a per-ip refusal");
    assert_eq!(refused.ip(), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    assert_eq!(refused.range(), AddressRange::Subnet(net("192.0.2.7/32")));
    assert_eq!(refused.prefix(), Some(net("192.0.2.7/32")));
    assert_eq!((refused.current(), refused.limit()), (8, 8));
    assert_eq!(refused.endpoint(), &addr("/ip4/192.0.2.7/tcp/4001"));
    assert_eq!(
        err.to_string(),
        "connections per ip limit exceeded for /ip4/192.0.2.7/tcp/4001 \
         (ip 192.0.2.7, subnet 192.0.2.7/32: 8 of 8 connections)"
    );
    // Nothing was reserved for the refused connection, and other addresses are unaffected.
    assert_eq!(rm.system().stat().conns_inbound, 8);
    let neighbour = open(&rm, "/ip4/192.0.2.8/tcp/4001").expect("another address");
    // Both directions count.
    let outbound = rm.open_connection(
        Direction::Outbound,
        false,
        &addr("/ip4/192.0.2.7/udp/1/quic-v1"),
    );
    assert!(outbound.unwrap_err().ip_limit_exceeded().is_some());
    // One closes: one more may open.
    let mut held = held;
    held.pop();
    held.push(open(&rm, "/ip4/192.0.2.7/tcp/4001").expect("a slot was released"));
    drop((held, neighbour));
    assert!(rm.ip_conn_counts().is_empty());
    assert!(rm.system().stat().is_empty());
}

#[test]
fn ipv6_subnets_hold_eight_per_slash_56_and_sixty_four_per_slash_48() {
    let rm = manager(counting_only());
    // Eight from anywhere in one /56.
    let (in_one_56, err) = fill(&rm, "/ip6/2001:db8:1:1::1/tcp/1");
    assert_eq!(in_one_56.len(), 8);
    assert_eq!(
        err.ip_limit_exceeded().expect("per-ip").range(),
        AddressRange::Subnet(net("2001:db8:1::/56"))
    );
    assert!(open(&rm, "/ip6/2001:db8:1:ff::9/tcp/1").is_err());
    // Sixty-four across the /56s of one /48.
    let mut held = in_one_56;
    for subnet in 1..8 {
        for host in 0..8 {
            let endpoint = format!("/ip6/2001:db8:1:{:x}00::{:x}/tcp/1", subnet, host + 1);
            held.push(open(&rm, &endpoint).expect("room in the /48"));
        }
    }
    assert_eq!(held.len(), 64);
    let err = open(&rm, "/ip6/2001:db8:1:900::1/tcp/1").unwrap_err();
    let refused = err.ip_limit_exceeded().expect("per-ip");
    assert_eq!(
        refused.range(),
        AddressRange::Subnet(net("2001:db8:1::/48"))
    );
    assert_eq!((refused.current(), refused.limit()), (64, 64));
    // All or nothing: the refused connection left no count in its /56.
    assert!(
        !rm.ip_conn_counts()
            .contains_key(&net("2001:db8:1:900::/56"))
    );
    assert_eq!(rm.ip_conn_counts()[&net("2001:db8:1::/48")], 64);
    drop(held);
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn loopback_is_unlimited_and_not_even_counted() {
    let rm = manager(counting_only());
    let held: Vec<_> = (0..100)
        .map(|i| {
            let endpoint = if i % 2 == 0 {
                "/ip4/127.0.0.1/tcp/1"
            } else {
                "/ip6/::1/tcp/1"
            };
            open(&rm, endpoint).expect("loopback is unlimited")
        })
        .collect();
    assert!(rm.ip_conn_counts().is_empty());
    assert_eq!(rm.system().stat().conns_inbound, 100);
    drop(held);
}

#[test]
fn network_prefix_limits_take_precedence_and_the_most_specific_wins() {
    let rm = ResourceManager::builder(counting_only())
        .network_prefix_limits(
            Some(vec![
                NetworkPrefixLimit {
                    network: net("10.0.0.0/8"),
                    conn_count: 3,
                },
                NetworkPrefixLimit {
                    network: net("10.1.0.0/16"),
                    conn_count: 20,
                },
            ]),
            None,
        )
        .build()
        .expect("valid");
    // One address in 10.1/16 may hold more than the per-address 8: the /16 decides alone.
    let (in_16, err) = fill(&rm, "/ip4/10.1.2.3/tcp/1");
    assert_eq!(in_16.len(), 20);
    assert_eq!(
        err.ip_limit_exceeded().expect("per-ip").range(),
        AddressRange::NetworkPrefix(net("10.1.0.0/16"))
    );
    // The rest of 10/8 shares three.
    let held: Vec<_> = (1..=3)
        .map(|i| open(&rm, &format!("/ip4/10.2.0.{i}/tcp/1")).expect("room in 10/8"))
        .collect();
    let err = open(&rm, "/ip4/10.200.0.1/tcp/1").unwrap_err();
    assert_eq!(
        err.ip_limit_exceeded().expect("per-ip").range(),
        AddressRange::NetworkPrefix(net("10.0.0.0/8"))
    );
    // Replacing the IPv4 prefix limits removed loopback's exemption for IPv4 only.
    let (loopback, _) = fill(&rm, "/ip4/127.0.0.1/tcp/1");
    assert_eq!(loopback.len(), 8);
    drop((in_16, held, loopback));
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn infinite_limits_turn_per_ip_counting_off() {
    // go-libp2p#3431: go keeps its per-IP limits under InfiniteLimits.
    let rm = manager(ConcreteLimitConfig::infinite());
    let held: Vec<_> = (0..200)
        .map(|_| open(&rm, "/ip4/192.0.2.7/tcp/1").expect("no per-ip limit"))
        .collect();
    assert!(rm.ip_conn_counts().is_empty());
    drop(held);
    // And swapping to infinite limits at runtime turns them off for new connections.
    let rm = manager(counting_only());
    let (held, _) = fill(&rm, "/ip4/192.0.2.7/tcp/1");
    rm.set_limits(ConcreteLimitConfig::infinite());
    let more = open(&rm, "/ip4/192.0.2.7/tcp/1").expect("limits are off now");
    drop((held, more));
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn counts_survive_a_limit_swap_and_are_released_as_taken() {
    let rm = ResourceManager::builder(counting_only())
        .limit_per_subnet(
            Some(vec![ConnLimitPerSubnet {
                prefix_length: 32,
                conn_count: 1,
            }]),
            None,
        )
        .build()
        .expect("valid");
    let first = open(&rm, "/ip4/192.0.2.7/tcp/1").expect("room");
    let mut limits = counting_only();
    limits.ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 24,
        conn_count: 2,
    }];
    rm.set_limits(limits);
    // The new limit counts from zero for its /24 (the /32 count belongs to the old limit).
    let second = open(&rm, "/ip4/192.0.2.7/tcp/1").expect("the /24 has room");
    let third = open(&rm, "/ip4/192.0.2.8/tcp/1").expect("the /24 has room");
    assert!(open(&rm, "/ip4/192.0.2.9/tcp/1").is_err());
    assert_eq!(rm.ip_conn_counts()[&net("192.0.2.7/32")], 1);
    assert_eq!(rm.ip_conn_counts()[&net("192.0.2.0/24")], 2);
    // The first connection releases the /32 it was counted against, not the /24.
    drop(first);
    assert!(!rm.ip_conn_counts().contains_key(&net("192.0.2.7/32")));
    assert!(open(&rm, "/ip4/192.0.2.9/tcp/1").is_err());
    drop((second, third));
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn done_releases_the_count_once() {
    let rm = ResourceManager::builder(counting_only())
        .limit_per_subnet(
            Some(vec![ConnLimitPerSubnet {
                prefix_length: 32,
                conn_count: 2,
            }]),
            None,
        )
        .build()
        .expect("valid");
    let keep = open(&rm, "/ip4/192.0.2.7/tcp/1").expect("room");
    let mut twice = open(&rm, "/ip4/192.0.2.7/tcp/1").expect("room");
    twice.done();
    twice.done();
    drop(twice);
    assert_eq!(rm.ip_conn_counts()[&net("192.0.2.7/32")], 1);
    drop(keep);
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn endpoints_without_an_ip_are_not_counted() {
    let mut limits = counting_only();
    limits.ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 0,
        conn_count: 1,
    }];
    limits.ip.subnet_v6 = vec![ConnLimitPerSubnet {
        prefix_length: 0,
        conn_count: 1,
    }];
    let rm = manager(limits);
    let relay = PeerId::random();
    let endpoints = [
        "/dns4/example.com/tcp/1".to_owned(),
        "/unix/socket".to_owned(),
        "/memory/9".to_owned(),
        format!("/p2p/{relay}/p2p-circuit"),
    ];
    let held: Vec<_> = endpoints
        .iter()
        .chain(endpoints.iter())
        .map(|endpoint| open(&rm, endpoint).expect("not counted per ip"))
        .collect();
    assert!(rm.ip_conn_counts().is_empty());
    // A relayed address that starts with the relay's IP counts as the relay's, as in go.
    let relayed = format!("/ip4/198.51.100.1/tcp/1/p2p/{relay}/p2p-circuit");
    let through_relay = open(&rm, &relayed).expect("the first from everywhere");
    assert_eq!(rm.ip_conn_counts()[&net("0.0.0.0/0")], 1);
    assert!(open(&rm, "/ip4/203.0.113.1/tcp/1").is_err());
    drop((held, through_relay));
}

#[test]
fn allowlisted_networks_lift_the_per_ip_limit_general_and_peer_specific_alike() {
    // go-libp2p#3238: go only lifts it for general entries given at construction.
    let peer = PeerId::random();
    let mut limits = counting_only();
    limits.allowlisted_system.conns = 12;
    let rm = ResourceManager::builder(limits)
        .allowlist([
            addr("/ip4/192.0.2.0/ipcidr/24"),
            addr(&format!("/ip4/198.51.100.7/p2p/{peer}")),
        ])
        .build()
        .expect("valid");
    for (endpoint, network) in [
        ("/ip4/192.0.2.7/tcp/1", "192.0.2.0/24"),
        ("/ip4/198.51.100.7/tcp/1", "198.51.100.7/32"),
    ] {
        let (held, err) = fill(&rm, endpoint);
        // The allowlisted system scope's connection limit, not the per-address 8.
        assert_eq!(held.len(), 12, "{endpoint}");
        let refused = err.ip_limit_exceeded().expect("per-ip");
        assert_eq!(
            refused.range(),
            AddressRange::AllowlistedNetwork(net(network))
        );
        assert_eq!(refused.limit(), 12);
        drop(held);
    }
    // An entry added at runtime lifts it too, from the next connection on.
    let (held, _) = fill(&rm, "/ip4/203.0.113.5/tcp/1");
    assert_eq!(held.len(), 8);
    rm.allowlist()
        .add(&addr(&format!("/ip4/203.0.113.0/ipcidr/24/p2p/{peer}")))
        .expect("valid");
    let (more, _) = fill(&rm, "/ip4/203.0.113.5/tcp/1");
    assert_eq!(more.len(), 12);
    // Each connection releases what it was counted against, even after the entry is gone.
    assert!(
        rm.allowlist()
            .remove(&addr(&format!("/ip4/203.0.113.0/ipcidr/24/p2p/{peer}")))
            .expect("valid")
    );
    drop((held, more));
    assert!(rm.ip_conn_counts().is_empty());
}

#[test]
fn per_ip_limits_hold_under_concurrent_open_and_close_and_counts_return_to_zero() {
    const LIMIT: u64 = 2;
    const THREADS: usize = 4;
    const ROUNDS: usize = 3_000;
    let rm = ResourceManager::builder(counting_only())
        .limit_per_subnet(
            Some(vec![ConnLimitPerSubnet {
                prefix_length: 32,
                conn_count: LIMIT,
            }]),
            Some(vec![
                ConnLimitPerSubnet {
                    prefix_length: 64,
                    conn_count: LIMIT,
                },
                ConnLimitPerSubnet {
                    prefix_length: 48,
                    conn_count: LIMIT + 1,
                },
            ]),
        )
        .build()
        .expect("valid");
    let endpoints = [
        "/ip4/192.0.2.1/tcp/1",
        "/ip4/192.0.2.2/tcp/1",
        "/ip6/2001:db8:1:1::1/tcp/1",
        "/ip6/2001:db8:1:2::1/tcp/1",
    ]
    .map(addr);
    // What the test itself saw open per endpoint (the two IPv6 ones share a /48 of three).
    let open_now: [AtomicU64; 4] = Default::default();
    let refusals = AtomicU64::new(0);
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (rm, endpoints, open_now, refusals) = (&rm, &endpoints, &open_now, &refusals);
            s.spawn(move || {
                let mut held: Vec<(usize, ConnectionScope)> = Vec::new();
                for round in 0..ROUNDS {
                    let which = (thread + round) % endpoints.len();
                    match rm.open_connection(Direction::Inbound, true, &endpoints[which]) {
                        Ok(conn) => {
                            let now = open_now[which].fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= LIMIT, "{} open from one address", now);
                            held.push((which, conn));
                        }
                        Err(err) => {
                            assert!(err.ip_limit_exceeded().is_some(), "{err}");
                            refusals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Hold up to three, closing the oldest (or the newest, every third round).
                    if !held.is_empty() && (held.len() > 3 || round % 3 == 0) {
                        let index = if round % 2 == 0 { 0 } else { held.len() - 1 };
                        let (which, conn) = held.remove(index);
                        open_now[which].fetch_sub(1, Ordering::SeqCst);
                        drop(conn);
                    }
                }
                for (which, conn) in held {
                    open_now[which].fetch_sub(1, Ordering::SeqCst);
                    drop(conn);
                }
            });
        }
    });
    assert!(
        refusals.load(Ordering::Relaxed) > 0,
        "the limits were never reached"
    );
    assert!(rm.ip_conn_counts().is_empty(), "{:?}", rm.ip_conn_counts());
    assert!(rm.system().stat().is_empty());
    assert!(rm.transient().stat().is_empty());
}

#[test]
fn limits_that_cannot_be_enforced_are_refused_by_the_builder_and_skipped_at_runtime() {
    let mut limits = counting_only();
    limits.ip.subnet_v4 = vec![
        ConnLimitPerSubnet {
            prefix_length: 40,
            conn_count: 1,
        },
        ConnLimitPerSubnet {
            prefix_length: 32,
            conn_count: 2,
        },
    ];
    limits.ip.rate = rcmgr::ConnRateLimits::default();
    limits.ip.rate.subnet_v4[0].limit.rps = f64::NAN;
    let err = ResourceManager::builder(limits.clone())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidIpLimits(_)), "{err}");
    assert!(!err.is_resource_limit_exceeded());
    // `new` and `set_limits` cannot fail: they skip the bad entries and keep the others.
    let rm = ResourceManager::new(limits.clone());
    let (held, err) = fill(&rm, "/ip4/192.0.2.7/tcp/1");
    assert_eq!(held.len(), 2);
    assert_eq!(
        err.ip_limit_exceeded().expect("per-ip").range(),
        AddressRange::Subnet(net("192.0.2.7/32"))
    );
    let rm = manager(ConcreteLimitConfig::infinite());
    rm.set_limits(limits);
    let (held, _) = fill(&rm, "/ip4/192.0.2.7/tcp/1");
    assert_eq!(held.len(), 2);
}

//! Trusted peers (the allowlist by peer id, `Allowlist::add_peer`) through the public API: the
//! specification of what trusting a peer lifts and what it does not.
//!
//! In short: while a peer is trusted, a connection the normal system and transient scopes
//! refuse is opened in the allowlisted scopes whatever its address (its peer is not known yet);
//! `set_peer` keeps it there for a trusted peer and sends anyone else back to the normal
//! scopes, which refuse it. The allowlisted scopes' limits bound trusted peers; their own peer
//! scope, the per-IP limits and the normal scopes' accounting are unchanged.

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ConnLimitPerSubnet, Direction, IpLimits, Multiaddr, PeerId,
    Resource, ResourceManager, ResourceScope,
};

fn addr(s: &str) -> Multiaddr {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid multiaddr: {err}"))
}

/// A manager whose normal scopes admit `normal_inbound` inbound connections and whose
/// allowlisted scopes admit `allowlisted_inbound`.
fn manager(normal_inbound: u64, allowlisted_inbound: u64) -> ResourceManager {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_inbound = normal_inbound;
    limits.allowlisted_system.conns_inbound = allowlisted_inbound;
    ResourceManager::builder(limits)
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("valid options")
}

/// Fills the normal scopes with one connection of a random peer and returns it.
fn fill(rm: &ResourceManager) -> rcmgr::ConnectionScope {
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/198.51.100.1/tcp/1"))
        .expect("room in the normal scopes");
    conn.set_peer(PeerId::random()).expect("room in a peer");
    conn
}

#[test]
fn a_trusted_peer_is_admitted_in_the_allowlisted_scopes_when_the_normal_ones_are_full() {
    let rm = manager(1, 8);
    let _full = fill(&rm);
    let trusted = PeerId::random();
    assert!(rm.allowlist().add_peer(trusted));

    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/4001"))
        .expect("admitted in the allowlisted scopes");
    assert!(conn.is_allowlisted());
    conn.set_peer(trusted).expect("a trusted peer stays");
    assert!(conn.is_allowlisted());
    // Counted in its own peer scope, not in the normal system scope.
    assert_eq!(rm.peer(&trusted).stat().conns_inbound, 1);
    assert_eq!(rm.peer(&trusted).stat().fd, 1);
    assert_eq!(rm.system().stat().conns_inbound, 1);

    drop(conn);
    assert!(rm.peer(&trusted).stat().is_empty());
    assert_eq!(rm.system().stat().conns_inbound, 1);
}

#[test]
fn any_other_peer_is_refused_at_set_peer_by_the_full_normal_scopes() {
    let rm = manager(1, 1);
    let _full = fill(&rm);
    rm.allowlist().add_peer(PeerId::random());

    // The handshake is not done: the connection may be a trusted peer's.
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/4001"))
        .expect("admitted in the allowlisted scopes until its peer is known");
    let stranger = PeerId::random();
    let err = conn.set_peer(stranger).expect_err("not trusted");
    let limit = err.limit_exceeded().expect("a limit refused");
    assert_eq!(limit.refused_by().to_string(), "system");
    assert_eq!(limit.resource(), Resource::ConnsInbound);
    assert!(rm.peer(&stranger).stat().is_empty());
    drop(conn);

    // Its place in the allowlisted scopes was given back: the one allowlisted slot is free.
    let trusted = rm.allowlist().peers()[0];
    let mut again = rm
        .open_connection(
            Direction::Inbound,
            true,
            &addr("/ip4/203.0.113.10/tcp/4001"),
        )
        .expect("the allowlisted slot is free again");
    again.set_peer(trusted).expect("trusted");
}

#[test]
fn without_trusted_peers_a_full_system_refuses_as_before() {
    let rm = manager(1, 8);
    let _full = fill(&rm);
    let err = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/4001"))
        .expect_err("the normal scopes are full");
    assert_eq!(
        err.limit_exceeded()
            .expect("a limit refused")
            .refused_by()
            .to_string(),
        "system"
    );

    // Trusting and then removing the only trusted peer comes back to the same.
    let peer = PeerId::random();
    assert!(rm.allowlist().add_peer(peer));
    assert!(rm.allowlist().remove_peer(&peer));
    assert!(
        rm.open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/4001"))
            .is_err()
    );
}

#[test]
fn trusted_peers_are_held_to_the_allowlisted_limits_and_a_refusal_names_the_normal_scope() {
    let rm = manager(1, 1);
    let _full = fill(&rm);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);

    let mut first = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/1"))
        .expect("the allowlisted slot");
    first.set_peer(trusted).expect("trusted");
    let err = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/2"))
        .expect_err("the allowlisted scopes are full too");
    // The address is not allowlisted: the error is the normal scopes' refusal.
    let limit = err.limit_exceeded().expect("a limit refused");
    assert_eq!(limit.refused_by().to_string(), "system");
    assert_eq!(limit.resource(), Resource::ConnsInbound);
}

#[test]
fn an_allowlisted_address_keeps_the_allowlisted_scopes_error() {
    let rm = manager(1, 0);
    let _full = fill(&rm);
    rm.allowlist().add_peer(PeerId::random());
    rm.allowlist()
        .add(&addr("/ip4/203.0.113.0/ipcidr/24"))
        .expect("a valid entry");
    let err = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/1"))
        .expect_err("both full");
    let refused_by = err
        .limit_exceeded()
        .expect("a limit refused")
        .refused_by()
        .to_string();
    assert!(
        refused_by.starts_with("allowlisted"),
        "an allowlisted address reports the allowlisted scope, got {refused_by}"
    );
}

#[test]
fn trust_works_for_endpoints_without_an_ip_and_for_outbound_connections() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns = 0;
    let rm = ResourceManager::new(limits);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);

    let mut over_memory = rm
        .open_connection(Direction::Inbound, false, &addr("/memory/7"))
        .expect("a trusted peer may be behind any address");
    over_memory.set_peer(trusted).expect("trusted");
    let mut dialled = rm
        .open_connection(Direction::Outbound, false, &Multiaddr::empty())
        .expect("outbound too");
    dialled.set_peer(trusted).expect("trusted");
    assert!(over_memory.is_allowlisted() && dialled.is_allowlisted());
    assert_eq!(rm.peer(&trusted).stat().conns_inbound, 1);
    assert_eq!(rm.peer(&trusted).stat().conns_outbound, 1);
    assert!(rm.system().stat().is_empty());
}

#[test]
fn a_connection_the_normal_scopes_admit_stays_in_them_trusted_or_not() {
    let rm = manager(8, 8);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/1"))
        .expect("room");
    assert!(!conn.is_allowlisted());
    conn.set_peer(trusted).expect("room in its peer");
    assert!(!conn.is_allowlisted());
    assert_eq!(rm.system().stat().conns_inbound, 1);
}

#[test]
fn a_trusted_peer_is_still_held_to_its_own_peer_scope() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_inbound = 0;
    limits.peer_default = BaseLimit {
        conns_inbound: 1,
        ..BaseLimit::unlimited()
    };
    let rm = ResourceManager::new(limits);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);

    let mut first = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/1"))
        .expect("allowlisted");
    first
        .set_peer(trusted)
        .expect("the first fits its peer scope");
    let mut second = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/2"))
        .expect("allowlisted");
    let err = second
        .set_peer(trusted)
        .expect_err("its peer scope is full");
    assert_eq!(
        err.limit_exceeded()
            .expect("a limit refused")
            .refused_by()
            .to_string(),
        format!("peer:{trusted}")
    );
}

#[test]
fn trust_does_not_lift_per_ip_limits() {
    let mut limits = ConcreteLimitConfig::infinite();
    let mut ip = IpLimits::disabled();
    ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 32,
        conn_count: 1,
    }];
    limits.ip = ip;
    let rm = ResourceManager::new(limits);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);
    let endpoint = addr("/ip4/203.0.113.9/tcp/1");
    let mut first = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("the first from this IP");
    first.set_peer(trusted).expect("trusted");
    // The peer of the next connection is not known when its IP is counted.
    let err = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect_err("the IP is at its limit");
    assert!(err.ip_limit_exceeded().is_some());
}

#[test]
fn adding_removing_and_listing_trusted_peers() {
    let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let allowlist = rm.allowlist();
    let (a, b) = (PeerId::random(), PeerId::random());
    assert!(allowlist.peers().is_empty());
    assert!(allowlist.add_peer(a));
    assert!(!allowlist.add_peer(a), "a peer is trusted once");
    assert!(allowlist.add_peer(b));
    let mut peers = allowlist.peers();
    peers.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(peers, expected);
    assert!(allowlist.allowed_peer(&a));
    assert!(!allowlist.allowed_peer(&PeerId::random()));

    assert!(allowlist.remove_peer(&a));
    assert!(!allowlist.remove_peer(&a));
    assert!(!allowlist.allowed_peer(&a));
    assert_eq!(allowlist.peers(), vec![b]);

    // Address entries and trusted peers are separate: a peer's address entry does not trust
    // it, and trusting it allows no address.
    allowlist
        .add(&addr(&format!("/ip4/192.0.2.1/p2p/{a}")))
        .expect("a valid entry");
    assert!(!allowlist.allowed_peer(&a));
    assert!(!allowlist.allowed(&addr("/ip4/192.0.2.2/tcp/1")));
    assert!(allowlist.allowed_peer_and_multiaddr(a, &addr("/ip4/192.0.2.1/tcp/1")));
    assert!(!allowlist.allowed_peer_and_multiaddr(b, &addr("/ip4/192.0.2.9/tcp/1")));
}

#[test]
fn a_peer_removed_while_its_connection_is_open_keeps_that_connection() {
    let rm = manager(1, 8);
    let _full = fill(&rm);
    let trusted = PeerId::random();
    rm.allowlist().add_peer(trusted);
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/1"))
        .expect("allowlisted");
    conn.set_peer(trusted).expect("trusted");
    rm.allowlist().remove_peer(&trusted);
    assert!(conn.is_allowlisted());
    assert_eq!(rm.peer(&trusted).stat().conns_inbound, 1);
    // Its next connection is refused like anyone's.
    assert!(
        rm.open_connection(Direction::Inbound, true, &addr("/ip4/203.0.113.9/tcp/2"))
            .is_err()
    );
}

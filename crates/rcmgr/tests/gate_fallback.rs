//! The allowlisted scopes: used exactly when go uses them (the normal reservation refused and
//! the endpoint allowlisted), kept by a matching peer, and left by a peer that does not match.

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Multiaddr, PeerId, ResourceManager, ResourceScope,
    ScopeName,
};

fn addr(s: &str) -> Multiaddr {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid multiaddr: {err}"))
}

/// A manager whose system scope holds `system_conns` inbound connections and whose
/// allowlisted system scope holds `allowlisted_conns`, allowlisting `entries`.
fn manager(system_conns: u64, allowlisted_conns: u64, entries: &[String]) -> ResourceManager {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = BaseLimit {
        conns_inbound: system_conns,
        ..BaseLimit::unlimited()
    };
    limits.allowlisted_system = BaseLimit {
        conns_inbound: allowlisted_conns,
        ..BaseLimit::unlimited()
    };
    ResourceManager::builder(limits)
        .allowlist(entries.iter().map(|entry| addr(entry)))
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("a manager with valid options")
}

const TRUSTED: &str = "/ip4/10.0.0.7/tcp/4001";
const STRANGER: &str = "/ip4/192.0.2.1/tcp/4001";

#[test]
fn allowlisted_connections_are_accepted_when_the_system_scope_is_full() {
    let rm = manager(1, 1, &["/ip4/10.0.0.0/ipcidr/8".into()]);
    // While there is room, an allowlisted address uses the normal scopes, as in go.
    let normal = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("room in the system scope");
    assert!(!normal.is_allowlisted());
    assert_eq!(rm.system().stat().conns_inbound, 1);

    let refused = rm
        .open_connection(Direction::Inbound, true, &addr(STRANGER))
        .unwrap_err();
    let refusal = refused.limit_exceeded().expect("a scope refusal");
    assert_eq!(refusal.refused_by(), &ScopeName::System);

    let allowlisted = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("the allowlisted scopes take it");
    assert!(allowlisted.is_allowlisted());
    // It got a fresh number: go opens conn-<n+1> after the refused conn-<n>.
    assert_eq!(allowlisted.name(), ScopeName::Conn(4));
    assert_eq!(rm.system().stat().conns_inbound, 1);
    assert_eq!(rm.transient().stat().conns_inbound, 1);

    // The allowlisted scopes have limits of their own.
    let err = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .unwrap_err();
    assert_eq!(
        err.limit_exceeded().expect("a scope refusal").refused_by(),
        &ScopeName::AllowlistedSystem
    );

    // Closing gives the allowlisted slot back.
    drop(allowlisted);
    let again = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("the allowlisted slot is free again");
    assert!(again.is_allowlisted());
    drop((again, normal));
    assert!(rm.system().stat().is_empty());
    assert!(rm.transient().stat().is_empty());
}

#[test]
fn a_matching_peer_keeps_the_connection_in_the_allowlisted_scopes() {
    let peer = PeerId::random();
    let rm = manager(0, 1, &[format!("/ip4/10.0.0.7/p2p/{peer}")]);
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("allowlisted");
    assert!(conn.is_allowlisted());
    conn.set_peer(peer).expect("the peer matches its entry");
    assert!(conn.is_allowlisted());
    assert_eq!(rm.peer(&peer).stat().conns_inbound, 1);
    assert!(rm.system().stat().is_empty());
    assert!(rm.transient().stat().is_empty());
    drop(conn);
    assert!(rm.peer(&peer).stat().is_empty());
}

#[test]
fn a_peer_that_does_not_match_is_refused_again_when_the_normal_scopes_are_full() {
    let (trusted, other) = (PeerId::random(), PeerId::random());
    let rm = manager(1, 4, &[format!("/ip4/10.0.0.7/p2p/{trusted}")]);
    let filler = rm
        .open_connection(Direction::Inbound, true, &addr(STRANGER))
        .expect("room for one");
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("the endpoint is allowlisted for some peer");
    assert!(conn.is_allowlisted());

    let err = conn.set_peer(other).unwrap_err();
    assert!(err.is_resource_limit_exceeded());
    let refusal = err.limit_exceeded().expect("a scope refusal");
    assert_eq!(refusal.refused_by(), &ScopeName::System);
    // Worded by the refusing scope alone, as go words transfer refusals.
    assert!(err.to_string().starts_with("system: "), "{err}");
    // A refused set_peer leaves the connection exactly where it was (go leaves it attached
    // to no scope at all): still in the allowlisted scopes, with no peer.
    assert!(conn.is_allowlisted());
    assert!(conn.peer_scope().is_none());
    assert!(rm.peer(&other).stat().is_empty());
    assert_eq!(rm.system().stat().conns_inbound, 1, "the filler alone");
    assert_eq!(rm.transient().stat().conns_inbound, 1, "the filler alone");
    // So the call can be made again, and fails the same way, changing nothing.
    let again = conn.set_peer(other).unwrap_err();
    assert_eq!(again, err);
    assert!(conn.is_allowlisted() && conn.peer_scope().is_none());
    assert_eq!(rm.system().stat().conns_inbound, 1);

    // Closing it gives back everything, including its allowlisted slot (four of them: the
    // filler's peer is not allowlisted).
    drop(conn);
    let mut held = Vec::new();
    for _ in 0..4 {
        let conn = rm
            .open_connection(Direction::Inbound, true, &addr(TRUSTED))
            .expect("allowlisted slots are free");
        assert!(conn.is_allowlisted());
        held.push(conn);
    }
    drop((held, filler));
    assert!(rm.system().stat().is_empty());
    assert!(rm.transient().stat().is_empty());
}

#[test]
fn a_peer_that_does_not_match_moves_to_the_normal_scopes_when_they_have_room() {
    let (trusted, other) = (PeerId::random(), PeerId::random());
    let rm = manager(1, 1, &[format!("/ip4/10.0.0.7/p2p/{trusted}")]);
    let filler = rm
        .open_connection(Direction::Inbound, true, &addr(STRANGER))
        .expect("room for one");
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("allowlisted");
    assert!(conn.is_allowlisted());
    drop(filler);

    conn.set_peer(other)
        .expect("the normal scopes have room again");
    assert!(!conn.is_allowlisted());
    assert_eq!(rm.system().stat().conns_inbound, 1);
    assert_eq!(rm.peer(&other).stat().conns_inbound, 1);
    assert!(rm.transient().stat().is_empty());
    // The allowlisted slot was given back when it moved.
    let freed = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("the system is full again, but the allowlisted slot is free");
    assert!(freed.is_allowlisted());
    drop((conn, freed));
    assert!(rm.system().stat().is_empty());
}

#[test]
fn a_peer_refused_by_its_own_scope_after_the_move_leaves_the_connection_where_it_was() {
    let (trusted, other) = (PeerId::random(), PeerId::random());
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_inbound = 1;
    limits.allowlisted_system.conns_inbound = 1;
    limits.peer_default.conns_inbound = 0;
    let rm = ResourceManager::builder(limits)
        .allowlist([addr(&format!("/ip4/10.0.0.7/p2p/{trusted}"))])
        .build()
        .expect("valid");
    let filler = rm
        .open_connection(Direction::Inbound, true, &addr(STRANGER))
        .expect("room for one");
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &addr(TRUSTED))
        .expect("allowlisted");
    drop(filler);
    let err = conn.set_peer(other).unwrap_err();
    assert_eq!(
        err.limit_exceeded().expect("a scope refusal").refused_by(),
        &ScopeName::Peer(other)
    );
    // The move to the normal scopes was undone with the refused attachment: the connection
    // is still in the allowlisted scopes, and the normal ones hold nothing of it.
    assert!(conn.is_allowlisted());
    assert!(rm.transient().stat().is_empty());
    assert!(rm.system().stat().is_empty());
    // A retry is refused the same way and changes nothing either (defect 4 of issue 12: it
    // returned Ok, zeroed another connection's transient count and left no system edge).
    let again = conn.set_peer(other).unwrap_err();
    assert_eq!(
        again
            .limit_exceeded()
            .expect("a scope refusal")
            .refused_by(),
        &ScopeName::Peer(other)
    );
    assert!(conn.is_allowlisted());
    assert!(rm.transient().stat().is_empty());
    assert!(rm.system().stat().is_empty());
    drop(conn);
    assert!(rm.system().stat().is_empty());
    assert!(rm.transient().stat().is_empty());
}

#[test]
fn the_fallback_needs_an_allowlisted_ip() {
    let rm = manager(0, 10, &["/ip4/0.0.0.0/ipcidr/0".into()]);
    for endpoint in ["/dns4/example.com/tcp/1", "/ip6/2001:db8::1/tcp/1"] {
        let err = rm
            .open_connection(Direction::Inbound, true, &addr(endpoint))
            .unwrap_err();
        assert_eq!(
            err.limit_exceeded().expect("a scope refusal").refused_by(),
            &ScopeName::System,
            "{endpoint}"
        );
    }
    // Outbound connections fall back too (go does not look at the direction).
    let outbound_full = {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.system.conns_outbound = 0;
        ResourceManager::builder(limits)
            .allowlist([addr("/ip4/198.51.100.0/ipcidr/24")])
            .build()
            .expect("valid")
    };
    let conn = outbound_full
        .open_connection(Direction::Outbound, false, &addr("/ip4/198.51.100.9/tcp/1"))
        .expect("allowlisted");
    assert!(conn.is_allowlisted());
}

#[test]
fn entries_added_at_runtime_open_the_fallback_and_removed_ones_close_it() {
    let rm = manager(0, 10, &[]);
    let endpoint = addr(TRUSTED);
    assert!(
        rm.open_connection(Direction::Inbound, true, &endpoint)
            .is_err()
    );
    rm.allowlist().add(&addr("/ip4/10.0.0.7")).expect("valid");
    let conn = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("allowlisted now");
    assert!(conn.is_allowlisted());
    assert!(
        rm.allowlist()
            .remove(&addr("/ip4/10.0.0.7"))
            .expect("valid")
    );
    assert!(
        rm.open_connection(Direction::Inbound, true, &endpoint)
            .is_err()
    );
}

//! A manager-level state machine: a scripted life of a node (connections, peers, streams,
//! protocols, services, memory, spans, refusals, limit swaps) with the stat of every scope
//! written out by hand after each step.

use std::collections::BTreeMap;

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Multiaddr, PeerId, Priority, ResourceManager,
    ResourceScope, ScopeStat,
};

/// A stat written as `stat(streams_in, streams_out, conns_in, conns_out, fd, memory)`.
fn stat(si: u32, so: u32, ci: u32, co: u32, fd: u32, memory: u64) -> ScopeStat {
    ScopeStat {
        streams_inbound: si,
        streams_outbound: so,
        conns_inbound: ci,
        conns_outbound: co,
        fd,
        memory,
    }
}

const EMPTY: ScopeStat = ScopeStat {
    streams_inbound: 0,
    streams_outbound: 0,
    conns_inbound: 0,
    conns_outbound: 0,
    fd: 0,
    memory: 0,
};

/// What every scope should hold after a step. Scopes not named must hold nothing.
#[derive(Default)]
struct Expected {
    system: Option<ScopeStat>,
    transient: Option<ScopeStat>,
    peers: Vec<(PeerId, ScopeStat)>,
    protocols: Vec<(&'static str, ScopeStat)>,
    services: Vec<(&'static str, ScopeStat)>,
}

fn check(rm: &ResourceManager, step: &str, expected: Expected) {
    let actual = rm.stat();
    assert_eq!(
        actual.system,
        expected.system.unwrap_or(EMPTY),
        "{step}: system"
    );
    assert_eq!(
        actual.transient,
        expected.transient.unwrap_or(EMPTY),
        "{step}: transient"
    );
    let busy = |map: BTreeMap<String, ScopeStat>| -> BTreeMap<String, ScopeStat> {
        map.into_iter().filter(|(_, s)| !s.is_empty()).collect()
    };
    let peers: BTreeMap<_, _> = actual
        .peers
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let want_peers: BTreeMap<_, _> = expected.peers.into_iter().collect();
    assert_eq!(peers, want_peers, "{step}: peers");
    let named = |list: Vec<(&str, ScopeStat)>| -> BTreeMap<String, ScopeStat> {
        list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    assert_eq!(
        busy(actual.protocols),
        named(expected.protocols),
        "{step}: protocols"
    );
    assert_eq!(
        busy(actual.services),
        named(expected.services),
        "{step}: services"
    );
}

#[test]
fn a_node_lifecycle_keeps_every_scope_exact() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.protocol.insert(
        "/chat/1".into(),
        BaseLimit {
            streams: 1,
            ..BaseLimit::unlimited()
        },
    );
    limits.peer_default.memory = 8192;
    let rm = ResourceManager::builder(limits.clone())
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("manager");
    let (alice, bob) = (PeerId::random(), PeerId::random());
    let addr: Multiaddr = "/ip4/198.51.100.4/tcp/4001".parse().expect("addr");

    check(&rm, "start", Expected::default());

    let mut conn_a = rm
        .open_connection(Direction::Inbound, true, &addr)
        .expect("conn a");
    check(
        &rm,
        "inbound connection opened",
        Expected {
            system: Some(stat(0, 0, 1, 0, 1, 0)),
            transient: Some(stat(0, 0, 1, 0, 1, 0)),
            ..Expected::default()
        },
    );

    conn_a
        .reserve_memory(1000, Priority::HIGH)
        .expect("handshake memory");
    conn_a.set_peer(alice).expect("alice");
    check(
        &rm,
        "connection attached to alice with its memory",
        Expected {
            system: Some(stat(0, 0, 1, 0, 1, 1000)),
            peers: vec![(alice, stat(0, 0, 1, 0, 1, 1000))],
            ..Expected::default()
        },
    );
    conn_a.release_memory(1000);

    let mut conn_b = rm
        .open_connection(Direction::Outbound, false, &addr)
        .expect("conn b");
    conn_b.set_peer(bob).expect("bob");
    check(
        &rm,
        "outbound connection to bob without fd",
        Expected {
            system: Some(stat(0, 0, 1, 1, 1, 0)),
            peers: vec![
                (alice, stat(0, 0, 1, 0, 1, 0)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            ..Expected::default()
        },
    );

    let mut chat = rm.open_stream(alice, Direction::Inbound).expect("chat");
    check(
        &rm,
        "stream opened, not negotiated",
        Expected {
            system: Some(stat(1, 0, 1, 1, 1, 0)),
            transient: Some(stat(1, 0, 0, 0, 0, 0)),
            peers: vec![
                (alice, stat(1, 0, 1, 0, 1, 0)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            ..Expected::default()
        },
    );

    chat.set_protocol("/chat/1").expect("protocol");
    chat.set_service("chat").expect("service");
    chat.reserve_memory(4096, Priority::HIGH).expect("buffer");
    check(
        &rm,
        "stream negotiated with service and buffer",
        Expected {
            system: Some(stat(1, 0, 1, 1, 1, 4096)),
            peers: vec![
                (alice, stat(1, 0, 1, 0, 1, 4096)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            protocols: vec![("/chat/1", stat(1, 0, 0, 0, 0, 4096))],
            services: vec![("chat", stat(1, 0, 0, 0, 0, 4096))],
            ..Expected::default()
        },
    );

    // The protocol admits one stream: bob's is refused and stays in transient.
    let mut second = rm.open_stream(bob, Direction::Outbound).expect("second");
    let err = second.set_protocol("/chat/1").expect_err("protocol full");
    assert_eq!(
        err.to_string(),
        "protocol:/chat/1: cannot reserve stream: resource limit exceeded"
    );
    check(
        &rm,
        "refused set_protocol changes nothing",
        Expected {
            system: Some(stat(1, 1, 1, 1, 1, 4096)),
            transient: Some(stat(0, 1, 0, 0, 0, 0)),
            peers: vec![
                (alice, stat(1, 0, 1, 0, 1, 4096)),
                (bob, stat(0, 1, 0, 1, 0, 0)),
            ],
            protocols: vec![("/chat/1", stat(1, 0, 0, 0, 0, 4096))],
            services: vec![("chat", stat(1, 0, 0, 0, 0, 4096))],
        },
    );
    drop(second);

    // A muxer-style span on alice's scope: 8192 * 204/256 = 6528 at HIGH, 4096 in use.
    let span = rm.peer(&alice).begin_span().expect("span");
    span.reserve_memory(2432, Priority::HIGH)
        .expect("up to alice's HIGH threshold");
    let err = span
        .reserve_memory(1, Priority::HIGH)
        .expect_err("alice is at her threshold");
    assert_eq!(
        err.to_string(),
        format!("{}: peer:{alice}: resource limit exceeded", span.name())
    );
    check(
        &rm,
        "span on alice near her memory limit",
        Expected {
            system: Some(stat(1, 0, 1, 1, 1, 6528)),
            peers: vec![
                (alice, stat(1, 0, 1, 0, 1, 6528)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            protocols: vec![("/chat/1", stat(1, 0, 0, 0, 0, 4096))],
            services: vec![("chat", stat(1, 0, 0, 0, 0, 4096))],
            ..Expected::default()
        },
    );

    // Lower alice's memory below her usage: nothing is evicted, more is refused.
    limits.peer_default.memory = 4096;
    rm.set_limits(limits);
    assert!(chat.reserve_memory(1, Priority::ALWAYS).is_err());
    drop(span);
    check(
        &rm,
        "span dropped under lowered limits",
        Expected {
            system: Some(stat(1, 0, 1, 1, 1, 4096)),
            peers: vec![
                (alice, stat(1, 0, 1, 0, 1, 4096)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            protocols: vec![("/chat/1", stat(1, 0, 0, 0, 0, 4096))],
            services: vec![("chat", stat(1, 0, 0, 0, 0, 4096))],
            ..Expected::default()
        },
    );

    chat.done();
    check(
        &rm,
        "stream done",
        Expected {
            system: Some(stat(0, 0, 1, 1, 1, 0)),
            peers: vec![
                (alice, stat(0, 0, 1, 0, 1, 0)),
                (bob, stat(0, 0, 0, 1, 0, 0)),
            ],
            ..Expected::default()
        },
    );

    drop(conn_a);
    drop(conn_b);
    drop(chat);
    check(&rm, "everything closed", Expected::default());
    rm.gc();
    rm.gc();
    assert!(rm.list_peers().is_empty());
    assert!(
        rm.list_protocols().is_empty(),
        "idle protocol scopes are collected too"
    );
    assert!(
        rm.list_services().is_empty(),
        "idle service scopes are collected too"
    );
}

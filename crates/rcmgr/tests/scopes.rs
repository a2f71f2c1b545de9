//! go-libp2p's scope semantics, checked through the public API: memory priority thresholds,
//! the stream and connection check order, the edge walk order, a diamond in the scope graph,
//! span trees and spans outliving their owners, and the transfers with their rollback.

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Error, Multiaddr, PeerId, Priority, Resource,
    ResourceManager, ResourceScope, ScopeName, ScopeStat,
};

fn manager(limits: ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits)
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("a manager with valid options")
}

fn endpoint() -> Multiaddr {
    "/ip4/192.0.2.1/tcp/4001"
        .parse()
        .expect("a valid multiaddr")
}

fn memory(bytes: u64) -> ScopeStat {
    ScopeStat {
        memory: bytes,
        ..ScopeStat::default()
    }
}

/// The refusal inside `err`, or a test failure naming what came instead.
fn refusal(err: &Error) -> &rcmgr::LimitExceeded {
    err.limit_exceeded()
        .unwrap_or_else(|| panic!("expected a limit refusal, got {err}"))
}

#[test]
fn memory_priorities_use_gos_exact_thresholds() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.memory = 4096;
    let rm = manager(limits);
    let system = rm.system();
    // floor((p + 1) * 4096 / 256) for each named priority.
    for (priority, threshold) in [
        (Priority::LOW, 1632),
        (Priority::MEDIUM, 2448),
        (Priority::HIGH, 3264),
        (Priority::ALWAYS, 4096),
    ] {
        system
            .reserve_memory(threshold, priority)
            .expect("up to the threshold");
        let err = system.reserve_memory(1, priority).unwrap_err();
        let refused = refusal(&err);
        assert_eq!(refused.resource(), Resource::Memory { priority });
        assert_eq!(
            (refused.current(), refused.attempted(), refused.limit()),
            (threshold as u64, 1, 4096)
        );
        assert_eq!(refused.priority(), Some(priority));
        assert_eq!(err.to_string(), "system: resource limit exceeded");
        // A zero-byte reservation passes exactly at the threshold.
        system
            .reserve_memory(0, priority)
            .expect("zero bytes at the threshold");
        system.release_memory(threshold);
    }
    assert_eq!(system.stat(), ScopeStat::default());
}

#[test]
fn every_scope_on_the_path_applies_the_same_priority() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default.memory = 1 << 20;
    limits.system.memory = 1000;
    let rm = manager(limits);
    let peer = rm.peer(&PeerId::random());
    // LOW on the system: floor(102 * 1000 / 256) = 398.
    peer.reserve_memory(398, Priority::LOW)
        .expect("at the system's LOW threshold");
    let err = peer.reserve_memory(1, Priority::LOW).unwrap_err();
    assert_eq!(refusal(&err).refused_by(), &ScopeName::System);
    assert_eq!(
        err.to_string(),
        format!("{}: system: resource limit exceeded", peer.name())
    );
    // The refused byte left nothing behind on the peer.
    assert_eq!(peer.stat(), memory(398));
    peer.reserve_memory(1, Priority::HIGH)
        .expect("HIGH allows more");
    peer.release_memory(399);
    assert_eq!(rm.system().stat(), ScopeStat::default());
}

#[test]
fn the_scope_itself_is_checked_before_its_edges() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.stream.streams_inbound = 0;
    limits.peer_default.streams_inbound = 0;
    let rm = manager(limits);
    let err = rm
        .open_stream(PeerId::random(), Direction::Inbound)
        .unwrap_err();
    let refused = refusal(&err);
    assert!(matches!(refused.scope(), ScopeName::Stream(_)));
    assert_eq!(refused.edge(), None, "the stream's own limit refuses first");
    assert_eq!(refused.resource(), Resource::StreamsInbound);
    assert!(
        err.to_string()
            .ends_with(": cannot reserve inbound stream: resource limit exceeded")
    );
    assert_eq!(rm.stat().transient, ScopeStat::default());
}

#[test]
fn edges_are_walked_in_gos_order_peer_then_transient_then_system() {
    let peer = PeerId::random();
    let blocked = BaseLimit {
        streams_outbound: 0,
        ..BaseLimit::unlimited()
    };
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default = blocked;
    limits.transient = blocked;
    limits.system = blocked;
    let rm = manager(limits.clone());
    let refused_by = |rm: &ResourceManager| {
        let err = rm.open_stream(peer, Direction::Outbound).unwrap_err();
        refusal(&err).refused_by().clone()
    };
    assert_eq!(refused_by(&rm), ScopeName::Peer(peer));
    limits.peer_default = BaseLimit::unlimited();
    rm.set_limits(limits.clone());
    assert_eq!(refused_by(&rm), ScopeName::Transient);
    limits.transient = BaseLimit::unlimited();
    rm.set_limits(limits);
    assert_eq!(refused_by(&rm), ScopeName::System);
    // Every refusal rolled back the edges taken before it.
    let stat = rm.stat();
    assert_eq!(stat.peers[&peer], ScopeStat::default());
    assert_eq!(stat.transient, ScopeStat::default());
    assert_eq!(stat.system, ScopeStat::default());
}

#[test]
fn stream_and_connection_checks_follow_gos_order() {
    let mut limits = ConcreteLimitConfig::infinite();
    // Both the inbound and the total limit would refuse: go reports the inbound one.
    limits.transient.streams_inbound = 1;
    limits.transient.streams = 1;
    limits.transient.conns_inbound = 4;
    limits.transient.conns = 2;
    limits.transient.fd = 1;
    let rm = manager(limits);
    let peer = PeerId::random();
    let _held = rm
        .open_stream(peer, Direction::Inbound)
        .expect("one stream");
    let err = rm.open_stream(peer, Direction::Inbound).unwrap_err();
    assert_eq!(refusal(&err).resource(), Resource::StreamsInbound);
    let err = rm.open_stream(peer, Direction::Outbound).unwrap_err();
    assert_eq!(refusal(&err).resource(), Resource::Streams);
    assert!(
        err.to_string()
            .ends_with("transient: cannot reserve stream: resource limit exceeded")
    );

    let _with_fd = rm
        .open_connection(Direction::Inbound, true, &endpoint())
        .expect("one");
    // The connection counts pass, the file descriptor is checked last and refuses.
    let err = rm
        .open_connection(Direction::Inbound, true, &endpoint())
        .unwrap_err();
    assert_eq!(refusal(&err).resource(), Resource::FileDescriptors);
    assert!(
        err.to_string()
            .ends_with("cannot reserve file descriptor: resource limit exceeded")
    );
    let _without_fd = rm
        .open_connection(Direction::Inbound, false, &endpoint())
        .expect("two");
    let err = rm
        .open_connection(Direction::Outbound, false, &endpoint())
        .unwrap_err();
    assert_eq!(refusal(&err).resource(), Resource::Conns);
    assert_eq!(
        (
            refusal(&err).current(),
            refusal(&err).attempted(),
            refusal(&err).limit()
        ),
        (2, 1, 2)
    );
}

/// A stream with a protocol and a service reports to six scopes; the system scope is reached
/// through the peer, the protocol and the service alike, but counted once.
#[test]
fn a_diamond_counts_each_scope_once() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let mut stream = rm.open_stream(peer, Direction::Inbound).expect("open");
    stream.set_protocol("/p/1").expect("protocol");
    stream.set_service("svc").expect("service");
    stream.reserve_memory(100, Priority::LOW).expect("memory");
    let one = ScopeStat {
        streams_inbound: 1,
        memory: 100,
        ..ScopeStat::default()
    };
    let stat = rm.stat();
    assert_eq!(stat.system, one);
    assert_eq!(stat.peers[&peer], one);
    assert_eq!(stat.protocols["/p/1"], one);
    assert_eq!(stat.services["svc"], one);
    assert_eq!(stat.transient, ScopeStat::default());
    assert_eq!(stream.stat(), one);
    drop(stream);
    let stat = rm.stat();
    for scope in [
        stat.system,
        stat.peers[&peer],
        stat.protocols["/p/1"],
        stat.services["svc"],
    ] {
        assert_eq!(scope, ScopeStat::default());
    }
}

#[test]
fn span_trees_report_through_every_owner() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let mut stream = rm.open_stream(peer, Direction::Outbound).expect("open");
    stream.set_protocol("/p").expect("protocol");
    let outer = stream.begin_span().expect("outer");
    let inner = outer.begin_span().expect("inner");
    let sibling = stream.begin_span().expect("sibling");
    assert!(outer.name().to_string().ends_with(".span-1"));
    assert!(inner.name().to_string().ends_with(".span-1.span-1"));
    assert!(sibling.name().to_string().ends_with(".span-2"));

    inner.reserve_memory(30, Priority::LOW).expect("inner");
    outer.reserve_memory(20, Priority::LOW).expect("outer");
    sibling.reserve_memory(5, Priority::LOW).expect("sibling");
    assert_eq!(inner.stat(), memory(30));
    assert_eq!(outer.stat(), memory(50));
    assert_eq!(stream.stat().memory, 55);
    assert_eq!(rm.peer(&peer).stat().memory, 55);
    assert_eq!(rm.protocol("/p").stat().memory, 55);
    assert_eq!(rm.system().stat().memory, 55);

    // Ending the outer span releases the inner span's memory with it; the inner span is then
    // a zombie whose own release does nothing more.
    drop(outer);
    assert_eq!(stream.stat().memory, 5);
    assert_eq!(inner.stat(), memory(30));
    inner.release_memory(30);
    assert_eq!(stream.stat().memory, 5);
    let err = inner.reserve_memory(1, Priority::LOW).unwrap_err();
    let closed = err.scope_closed().expect("the owner is closed");
    assert!(closed.closed().is_span());
    drop(inner);
    drop(sibling);
    assert_eq!(rm.system().stat().memory, 0);
}

#[test]
fn a_span_outliving_its_owner_releases_nothing_twice() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &endpoint())
        .expect("open");
    let span = conn.begin_span().expect("span");
    span.reserve_memory(64, Priority::MEDIUM).expect("reserve");
    assert_eq!(rm.transient().stat().memory, 64);
    conn.done();
    assert_eq!(rm.transient().stat(), ScopeStat::default());
    assert_eq!(rm.system().stat(), ScopeStat::default());
    let err = span.reserve_memory(1, Priority::LOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: {}: resource scope closed", span.name(), conn.name())
    );
    span.release_memory(64);
    drop(span);
    drop(conn);
    assert_eq!(rm.system().stat(), ScopeStat::default());
}

#[test]
fn set_peer_moves_everything_and_a_refusal_leaves_the_connection_usable() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default.memory = 1000;
    let rm = manager(limits);
    let (alice, bob) = (PeerId::random(), PeerId::random());
    let _hog = rm
        .peer(&alice)
        .reserve_memory_guard(900, Priority::ALWAYS)
        .expect("hog");

    let mut conn = rm
        .open_connection(Direction::Inbound, true, &endpoint())
        .expect("open");
    conn.reserve_memory(200, Priority::HIGH)
        .expect("handshake buffers");
    let in_transient = ScopeStat {
        conns_inbound: 1,
        fd: 1,
        memory: 200,
        ..ScopeStat::default()
    };
    assert_eq!(rm.transient().stat(), in_transient);

    // The memory moves at priority ALWAYS and alice's scope has 100 bytes left: refused.
    let err = conn.set_peer(alice).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("peer:{alice}: resource limit exceeded"),
        "transfers are worded by the refusing scope alone"
    );
    assert_eq!(refusal(&err).scope(), &conn.name());
    assert!(conn.peer_scope().is_none());
    assert_eq!(rm.transient().stat(), in_transient);
    assert_eq!(rm.peer(&alice).stat(), memory(900));

    conn.set_peer(bob).expect("bob has room");
    assert_eq!(rm.transient().stat(), ScopeStat::default());
    assert_eq!(rm.peer(&bob).stat(), in_transient);
    assert_eq!(rm.system().stat().memory, 1100);
    assert!(matches!(
        conn.set_peer(alice),
        Err(Error::ConnAlreadyAttached)
    ));
    conn.release_memory(200);
    assert_eq!(rm.peer(&bob).stat().memory, 0);
    drop(conn);
    assert_eq!(rm.peer(&bob).stat(), ScopeStat::default());
}

#[test]
fn set_protocol_rolls_back_the_protocol_when_its_peer_share_refuses() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.protocol_peer.insert(
        "/ping".into(),
        BaseLimit {
            streams_inbound: 1,
            ..BaseLimit::unlimited()
        },
    );
    let rm = manager(limits);
    let peer = PeerId::random();
    let mut first = rm.open_stream(peer, Direction::Inbound).expect("first");
    first.set_protocol("/ping").expect("first fits");
    let mut second = rm.open_stream(peer, Direction::Inbound).expect("second");
    second.reserve_memory(10, Priority::LOW).expect("memory");
    let err = second.set_protocol("/ping").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "protocol:/ping.peer:{peer}: cannot reserve inbound stream: resource limit exceeded"
        )
    );
    // The protocol scope took the stream and gave it back; it stays in transient.
    assert_eq!(rm.protocol("/ping").stat().streams_inbound, 1);
    assert_eq!(rm.protocol("/ping").stat().memory, 0);
    assert_eq!(rm.transient().stat().streams_inbound, 1);
    assert_eq!(rm.transient().stat().memory, 10);
    // The stream is still usable: it can go to another protocol.
    second
        .set_protocol("/other")
        .expect("another protocol has room");
    assert_eq!(rm.transient().stat(), ScopeStat::default());
    assert_eq!(rm.protocol("/other").stat().memory, 10);
}

#[test]
fn set_service_adds_constraints_and_rolls_back_on_refusal() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.service_peer_default.streams_outbound = 0;
    limits.service.insert("open".into(), BaseLimit::unlimited());
    limits
        .service_peer
        .insert("open".into(), BaseLimit::unlimited());
    let rm = manager(limits);
    let peer = PeerId::random();
    let mut stream = rm.open_stream(peer, Direction::Outbound).expect("open");
    assert!(matches!(
        stream.set_service("svc"),
        Err(Error::StreamNotAttachedToProtocol)
    ));
    stream.set_protocol("/p").expect("protocol");
    let err = stream.set_service("svc").unwrap_err();
    assert_eq!(
        refusal(&err).refused_by().to_string(),
        format!("service:svc.peer:{peer}")
    );
    assert_eq!(
        rm.service("svc").stat(),
        ScopeStat::default(),
        "rolled back"
    );
    assert!(stream.service_scope().is_none());
    stream
        .set_service("open")
        .expect("a service without the limit");
    // A service adds constraints without releasing anything.
    assert_eq!(rm.protocol("/p").stat().streams_outbound, 1);
    assert_eq!(rm.service("open").stat().streams_outbound, 1);
    assert!(matches!(
        stream.set_service("open"),
        Err(Error::StreamAlreadyAttachedToService)
    ));
    assert!(matches!(
        stream.set_protocol("/q"),
        Err(Error::StreamAlreadyAttachedToProtocol)
    ));
}

#[test]
fn handles_refuse_use_after_done() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let mut stream = rm.open_stream(peer, Direction::Inbound).expect("stream");
    stream.done();
    stream.done();
    assert!(
        stream
            .set_protocol("/p")
            .unwrap_err()
            .scope_closed()
            .is_some()
    );
    assert!(stream.begin_span().unwrap_err().scope_closed().is_some());
    let err = stream.reserve_memory(1, Priority::LOW).unwrap_err();
    assert!(!err.is_temporary() && !err.is_resource_limit_exceeded());
    assert_eq!(
        err.to_string(),
        format!("{}: resource scope closed", stream.name())
    );
    let mut conn = rm
        .open_connection(Direction::Outbound, false, &endpoint())
        .expect("conn");
    conn.done();
    assert!(conn.set_peer(peer).unwrap_err().scope_closed().is_some());
    assert!(conn.is_done());
    assert_eq!(rm.system().stat(), ScopeStat::default());
}

#[test]
fn lowering_limits_evicts_nothing_and_refuses_until_usage_falls() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let held: Vec<_> = (0..3)
        .map(|_| rm.open_stream(peer, Direction::Inbound).expect("open"))
        .collect();
    let mut lower = ConcreteLimitConfig::infinite();
    lower.peer_default.streams_inbound = 2;
    rm.set_limits(lower);
    assert_eq!(rm.peer(&peer).stat().streams_inbound, 3, "nothing evicted");
    assert_eq!(rm.peer(&peer).limit().streams_inbound, 2);
    assert!(rm.open_stream(peer, Direction::Inbound).is_err());
    drop(held);
    let _fits = rm
        .open_stream(peer, Direction::Inbound)
        .expect("usage fell below the limit");
}

#[test]
fn a_pinned_limit_survives_limit_swaps() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let view = rm.peer(&peer);
    view.set_limit(BaseLimit {
        streams_outbound: 1,
        ..BaseLimit::unlimited()
    });
    let _one = rm.open_stream(peer, Direction::Outbound).expect("one");
    rm.set_limits(ConcreteLimitConfig::infinite());
    assert!(
        rm.open_stream(peer, Direction::Outbound).is_err(),
        "the pin holds"
    );
    drop(view);
    rm.gc();
    rm.gc();
    assert_eq!(rm.list_peers(), vec![peer], "a pinned scope is kept");
}

#[test]
fn collection_keeps_referenced_and_busy_scopes_and_reaps_idle_ones() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let (busy, held, idle) = (PeerId::random(), PeerId::random(), PeerId::random());
    // Memory reserved on a peer scope and the view dropped: go would collect the scope and
    // release the memory silently (its quirk 6); rcmgr keeps both.
    rm.peer(&busy)
        .reserve_memory(10, Priority::LOW)
        .expect("memory");
    let view = rm.peer(&held);
    drop(rm.peer(&idle));
    rm.gc();
    rm.gc();
    let mut expected = vec![busy, held];
    expected.sort_by_key(|p| p.to_bytes());
    assert_eq!(rm.list_peers(), expected);
    assert_eq!(rm.system().stat().memory, 10);
    rm.peer(&busy).release_memory(10);
    drop(view);
    rm.gc();
    // A lookup between two passes starts the count again.
    drop(rm.peer(&held));
    rm.gc();
    assert_eq!(rm.list_peers(), vec![held]);
    rm.gc();
    assert!(rm.list_peers().is_empty());
}

#[test]
fn idle_peer_protocol_and_service_scopes_are_collected_in_two_passes() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let peer = PeerId::random();
    let mut stream = rm.open_stream(peer, Direction::Inbound).expect("open");
    stream.set_protocol("/p").expect("protocol");
    stream.set_service("s").expect("service");
    rm.gc();
    rm.gc();
    assert_eq!(rm.list_peers(), vec![peer], "in use");
    assert_eq!(rm.list_protocols(), ["/p"], "in use");
    assert_eq!(rm.list_services(), ["s"], "in use");
    drop(stream);
    rm.gc();
    assert_eq!(rm.list_protocols(), ["/p"], "one idle pass is not enough");
    rm.gc();
    assert!(rm.list_peers().is_empty());
    assert!(rm.list_protocols().is_empty());
    assert!(rm.list_services().is_empty());
    // A view keeps a scope, whatever it holds; a name used again gets a fresh scope.
    let view = rm.protocol("/p");
    rm.gc();
    rm.gc();
    assert_eq!(rm.list_protocols(), ["/p"]);
    drop(view);
    let mut again = rm.open_stream(peer, Direction::Inbound).expect("open");
    again.set_protocol("/p").expect("protocol");
    assert_eq!(rm.protocol("/p").stat().streams_inbound, 1);
    drop(again);
    rm.gc();
    rm.gc();
    assert!(rm.list_protocols().is_empty());
}

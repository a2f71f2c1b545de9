//! Collection racing lookups: `gc` removes a peer scope only after two idle passes in a row,
//! only under the registry's exclusive guard, and only if nothing references it and it holds
//! nothing, while `rm.peer(..)` and `open_stream` take their reference under the same guard.
//! So there is never more than one scope for a peer, and no scope that still holds something
//! is ever dropped from the registry (which would leave its usage counted in the system
//! scope with no peer scope to show or release it).
#![cfg(rcmgr_loom)]

use loom::thread;
use loom_tests::{Outcomes, assert_all_released, check, manager, peer};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, PeerId, Priority, ResourceManager, ResourceScope,
    ScopeName, ScopeStat,
};

/// A manager whose registry holds an idle scope for `id` that one collection pass has already
/// seen idle: the next pass would remove it. One span was begun (and ended) on that scope, so
/// it numbers its next span 2, where a scope made later would number it 1 (see
/// [`which_scope`]).
fn manager_with_a_ripe_peer(id: &PeerId) -> ResourceManager {
    let rm = manager(ConcreteLimitConfig::infinite());
    let view = rm.peer(id);
    drop(view.begin_span().expect("a peer scope is never closed"));
    drop(view);
    rm.gc();
    assert_eq!(rm.list_peers(), [*id], "one idle pass does not collect");
    rm
}

/// Whether the registry's scope for `id` is the one [`manager_with_a_ripe_peer`] made, or a
/// new one made after collection removed it, told by the number of its next span.
fn which_scope(rm: &ResourceManager, id: &PeerId) -> &'static str {
    let span = rm
        .peer(id)
        .begin_span()
        .expect("a peer scope is never closed");
    match span.name() {
        ScopeName::Span(span) if span.index() == 2 => "the old scope was kept",
        ScopeName::Span(span) if span.index() == 1 => {
            "the old scope was collected and a new one made"
        }
        other => panic!("unexpected span name {other}"),
    }
}

/// What the registry says about `id`: the one scope it lists for the peer, if any.
fn listed(rm: &ResourceManager, id: &PeerId) -> Option<ScopeStat> {
    let stat = rm.stat();
    assert!(
        stat.peers.keys().all(|listed| listed == id),
        "only {id} ever had a scope: {:?}",
        stat.peers
    );
    stat.peers.get(id).copied()
}

/// A collection pass that would remove an idle peer scope races a lookup of that peer that
/// reserves 10 bytes through the view and drops the view, leaving the memory held by the
/// scope alone.
///
/// Whether the lookup found the old scope or, after collection removed it, made a new one,
/// the registry must end up listing one scope for the peer holding the 10 bytes the system
/// holds, and further collection passes must keep it until the memory is released.
#[test]
fn collection_racing_a_lookup_never_drops_a_scope_that_holds_memory() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let id = peer(1);
        let rm = manager_with_a_ripe_peer(&id);

        let collector = {
            let rm = rm.clone();
            thread::spawn(move || rm.gc())
        };
        let view = rm.peer(&id);
        view.reserve_memory(10, Priority::ALWAYS)
            .expect("memory is unlimited");
        drop(view);
        // While the collector may still be running: the system's memory is always on a
        // listed peer scope (nothing else holds any).
        if let Some(held) = listed(&rm, &id) {
            assert_eq!(held.memory, 10, "the listed peer scope");
        }
        collector.join().expect("the collecting thread finished");

        record.record(which_scope(&rm, &id));
        let held = listed(&rm, &id).expect("a scope that holds memory stays listed");
        assert_eq!(held.memory, 10, "peer");
        assert_eq!(rm.system().stat().memory, 10, "system");
        rm.gc();
        rm.gc();
        assert_eq!(
            listed(&rm, &id).map(|held| held.memory),
            Some(10),
            "collection keeps a scope that holds memory"
        );

        rm.peer(&id).release_memory(10);
        assert_all_released(&rm);
        rm.gc();
        rm.gc();
        assert!(
            rm.list_peers().is_empty(),
            "an idle, unreferenced scope is collected"
        );
    });
    outcomes.assert_exactly(&[
        "the old scope was collected and a new one made",
        "the old scope was kept",
    ]);
}

/// A collection pass that would remove an idle peer scope races `open_stream` for that peer.
/// The stream must count on the one scope the registry lists for the peer (never on a scope
/// collection removed), so the peer's stream count seen through the registry matches the
/// system's, and collection keeps the scope while the stream is open.
#[test]
fn collection_racing_open_stream_keeps_one_scope_per_peer() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let id = peer(1);
        let rm = manager_with_a_ripe_peer(&id);

        let collector = {
            let rm = rm.clone();
            thread::spawn(move || rm.gc())
        };
        let stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        collector.join().expect("the collecting thread finished");
        record.record(which_scope(&rm, &id));

        let one_stream = ScopeStat {
            streams_inbound: 1,
            ..ScopeStat::default()
        };
        assert_eq!(
            listed(&rm, &id),
            Some(one_stream),
            "the registry's peer scope"
        );
        assert_eq!(
            stream.peer_scope().stat(),
            one_stream,
            "the stream's peer scope"
        );
        assert_eq!(rm.system().stat(), one_stream, "system");
        rm.gc();
        rm.gc();
        assert_eq!(
            listed(&rm, &id),
            Some(one_stream),
            "a referenced scope is kept"
        );

        drop(stream);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "the old scope was collected and a new one made",
        "the old scope was kept",
    ]);
}

/// Two lookups race to create the scope of a peer that has none yet (two `open_stream`s):
/// both streams must count on the one scope the registry keeps.
///
/// A stream of another peer, opened and collected first, fills the limit caches of the
/// stream, transient and system scopes, so that the race is about the registry and the new
/// peer scope (whose cache both threads then fill at once) rather than every cache at once,
/// which multiplies the executions by almost two hundred without checking anything more.
#[test]
fn two_lookups_racing_to_create_a_peer_scope_share_one() {
    check(|| {
        let rm = manager(ConcreteLimitConfig::infinite());
        drop(
            rm.open_stream(peer(2), Direction::Inbound)
                .expect("streams are unlimited"),
        );
        rm.gc();
        rm.gc();
        assert!(rm.list_peers().is_empty(), "the warm-up peer was collected");
        let id = peer(1);
        let opener = {
            let rm = rm.clone();
            thread::spawn(move || {
                rm.open_stream(id, Direction::Inbound)
                    .expect("streams are unlimited")
            })
        };
        let outbound = rm
            .open_stream(id, Direction::Outbound)
            .expect("streams are unlimited");
        let inbound = opener.join().expect("the opening thread finished");

        let both = ScopeStat {
            streams_inbound: 1,
            streams_outbound: 1,
            ..ScopeStat::default()
        };
        assert_eq!(listed(&rm, &id), Some(both), "the registry's peer scope");
        assert_eq!(
            inbound.peer_scope().stat(),
            both,
            "the inbound stream's peer"
        );
        assert_eq!(
            outbound.peer_scope().stat(),
            both,
            "the outbound stream's peer"
        );
        drop((inbound, outbound));
        assert_all_released(&rm);
    });
}

/// A collection pass that would remove an idle protocol-peer scope races `set_protocol`
/// attaching a stream of that peer to the protocol. The protocol admits one inbound stream
/// per peer, so whichever scope the stream was attached to, it must be the one the registry
/// keeps: a second stream of the peer is refused by it.
#[test]
fn collection_racing_set_protocol_keeps_the_protocol_peer_scope_in_use() {
    const PROTOCOL: &str = "/loom/1.0.0";
    check(|| {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.protocol_peer.insert(
            PROTOCOL.to_owned(),
            BaseLimit {
                streams_inbound: 1,
                ..BaseLimit::unlimited()
            },
        );
        let rm = manager(limits);
        let id = peer(1);
        // Create the protocol and protocol-peer scopes, leave them idle, and let one pass
        // see the protocol-peer scope idle: the next pass would remove it.
        let mut earlier = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        earlier
            .set_protocol(PROTOCOL)
            .expect("the protocol admits one stream per peer");
        drop(earlier);
        let mut stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        rm.gc();

        let collector = {
            let rm = rm.clone();
            thread::spawn(move || rm.gc())
        };
        stream
            .set_protocol(PROTOCOL)
            .expect("no other stream of the peer is attached");
        collector.join().expect("the collecting thread finished");

        let mut second = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        let refused = second
            .set_protocol(PROTOCOL)
            .expect_err("the protocol-peer scope already holds the first stream");
        let refusal = refused
            .limit_exceeded()
            .expect("a limit refused, not a closed scope");
        assert_eq!(
            refusal.refused_by(),
            &ScopeName::ProtocolPeer {
                protocol: PROTOCOL.into(),
                peer: id
            }
        );
        assert_eq!(rm.protocol(PROTOCOL).stat().streams_inbound, 1, "protocol");
        drop((second, stream));
        assert_all_released(&rm);
    });
}

/// A collection pass that would remove an idle protocol scope (the group itself, found by
/// the stream through its thread's cache of protocols) races `set_protocol` on it from a
/// stream of another peer. The protocol admits one inbound stream in all, so whichever
/// scope the stream was attached to, it must be the one the table keeps: a stream of a third
/// peer is refused by it, and the protocol is listed once.
#[test]
fn collection_racing_set_protocol_keeps_one_protocol_scope() {
    const PROTOCOL: &str = "/loom/group/1.0.0";
    check(|| {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.protocol.insert(
            PROTOCOL.to_owned(),
            BaseLimit {
                streams_inbound: 1,
                ..BaseLimit::unlimited()
            },
        );
        let rm = manager(limits);
        // Make the protocol scope (and cache it on this thread), leave it idle, and let one
        // pass see it idle: the next pass would remove it.
        let mut earlier = rm
            .open_stream(peer(1), Direction::Inbound)
            .expect("streams are unlimited");
        earlier
            .set_protocol(PROTOCOL)
            .expect("the protocol admits one stream");
        drop(earlier);
        let mut stream = rm
            .open_stream(peer(2), Direction::Inbound)
            .expect("streams are unlimited");
        rm.gc();

        let collector = {
            let rm = rm.clone();
            thread::spawn(move || rm.gc())
        };
        stream
            .set_protocol(PROTOCOL)
            .expect("no other stream is attached to the protocol");
        collector.join().expect("the collecting thread finished");

        let mut third = rm
            .open_stream(peer(3), Direction::Inbound)
            .expect("streams are unlimited");
        let refused = third
            .set_protocol(PROTOCOL)
            .expect_err("the protocol scope already holds the stream");
        let refusal = refused
            .limit_exceeded()
            .expect("a limit refused, not a closed scope");
        assert_eq!(refusal.refused_by(), &ScopeName::Protocol(PROTOCOL.into()));
        assert_eq!(rm.list_protocols(), [PROTOCOL.to_owned()], "listed once");
        assert_eq!(rm.protocol(PROTOCOL).stat().streams_inbound, 1, "protocol");
        drop((third, stream));
        assert_all_released(&rm);
    });
}

/// A lookup that finds the peer in this thread's cache races the collection pass that
/// removes that peer's scope. The cache holds the node itself, with no registry guard, so
/// the stream may be opened on a node collection has just stopped: its first reservation is
/// refused as stopped, and it must forget the cached node and count on the scope the
/// registry lists instead. Either way one scope is listed for the peer and it holds the
/// stream, as the system does; and both ways happen.
#[test]
fn a_cached_peer_lookup_racing_collection_counts_on_the_listed_scope() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let id = peer(1);
        let rm = manager(ConcreteLimitConfig::infinite());
        // A stream opened and dropped on this thread leaves the peer's node in this
        // thread's cache; a span begun and ended on the scope numbers its next span 2 (see
        // `which_scope`); one pass sees the scope idle, so the next one removes it.
        drop(
            rm.open_stream(id, Direction::Inbound)
                .expect("streams are unlimited"),
        );
        drop(
            rm.peer(&id)
                .begin_span()
                .expect("a peer scope is never closed"),
        );
        rm.gc();
        assert_eq!(rm.list_peers(), [id], "one idle pass does not collect");

        let collector = {
            let rm = rm.clone();
            thread::spawn(move || rm.gc())
        };
        let stream = rm
            .open_stream(id, Direction::Outbound)
            .expect("streams are unlimited");
        collector.join().expect("the collecting thread finished");
        record.record(which_scope(&rm, &id));

        let one_stream = ScopeStat {
            streams_outbound: 1,
            ..ScopeStat::default()
        };
        assert_eq!(listed(&rm, &id), Some(one_stream), "the listed peer scope");
        assert_eq!(stream.peer_scope().stat(), one_stream, "the stream's peer");
        assert_eq!(rm.system().stat().streams_outbound, 1, "system");
        drop(stream);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "the old scope was collected and a new one made",
        "the old scope was kept",
    ]);
}

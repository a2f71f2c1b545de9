//! Transfers racing reservations: `set_peer` on a connection and `set_protocol` on a stream
//! move everything the scope holds to new parents while a span of that same connection or
//! stream reserves and releases memory on another thread (the `Transfer` protocol of the
//! engine's `walk` module).
//!
//! Whichever way the race goes, the span's memory must end up on exactly the parents the
//! scope reports to after the transfer, and nowhere else.
#![cfg(rcmgr_loom)]

use loom::thread;
use loom_tests::{
    Outcomes, assert_all_released, assert_within, check, endpoint, manager, memory_only, peer,
};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Priority, ResourceScope, ScopeName, ScopeStat,
};

/// What the span reserves, and how much of it it releases again while the transfer runs.
const RESERVED: usize = 10;
const RELEASED: usize = 4;
const KEPT: u64 = (RESERVED - RELEASED) as u64;

/// `set_peer` moves a connection from the transient scope to its peer's scope while a span
/// of the connection reserves 10 bytes and releases 4 of them on another thread. Afterwards
/// the peer and system scopes hold the connection, its file descriptor and the 6 bytes, the
/// transient scope nothing; dropping the span and then the connection releases everything.
#[test]
fn set_peer_racing_a_reservation_through_a_span_of_the_connection() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let mut conn = rm
            .open_connection(Direction::Inbound, true, &endpoint())
            .expect("connections are unlimited");
        let span = conn.begin_span().expect("the connection is open");

        let racer = {
            let transient = rm.transient();
            let record = record.clone();
            thread::spawn(move || {
                span.reserve_memory(RESERVED, Priority::ALWAYS)
                    .expect("limits are infinite and the connection stays open");
                // Whether the memory went to the transient scope (before the transfer) or
                // only to the peer (after it) is the race.
                record.record(if transient.stat().memory == 0 {
                    "reserved after the transfer"
                } else {
                    "reserved before the transfer"
                });
                span.release_memory(RELEASED);
                span
            })
        };
        conn.set_peer(id).expect("the peer scope is unlimited");
        let span = racer.join().expect("the racing thread finished");

        let connection = ScopeStat {
            conns_inbound: 1,
            fd: 1,
            memory: KEPT,
            ..ScopeStat::default()
        };
        assert_eq!(span.stat(), memory_only(KEPT), "span");
        assert_eq!(conn.stat(), connection, "connection");
        assert_eq!(rm.peer(&id).stat(), connection, "peer");
        assert_eq!(rm.transient().stat(), ScopeStat::default(), "transient");
        assert_eq!(rm.system().stat(), connection, "system");

        drop(span);
        let without_memory = ScopeStat {
            memory: 0,
            ..connection
        };
        assert_eq!(rm.peer(&id).stat(), without_memory, "peer after the span");
        assert_eq!(rm.system().stat(), without_memory, "system after the span");

        drop(conn);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "reserved after the transfer",
        "reserved before the transfer",
    ]);
}

/// `set_protocol` moves a stream from the transient scope to its protocol's scopes while a
/// span of the stream reserves 10 bytes and releases 4 of them on another thread. Afterwards
/// the peer, protocol and system scopes hold the stream and the 6 bytes, the transient scope
/// nothing; dropping the span and then the stream releases everything.
#[test]
fn set_protocol_racing_a_reservation_through_a_span_of_the_stream() {
    const PROTOCOL: &str = "/loom/1.0.0";
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let mut stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        let span = stream.begin_span().expect("the stream is open");

        let racer = {
            let transient = rm.transient();
            let record = record.clone();
            thread::spawn(move || {
                span.reserve_memory(RESERVED, Priority::ALWAYS)
                    .expect("limits are infinite and the stream stays open");
                record.record(if transient.stat().memory == 0 {
                    "reserved after the transfer"
                } else {
                    "reserved before the transfer"
                });
                span.release_memory(RELEASED);
                span
            })
        };
        stream
            .set_protocol(PROTOCOL)
            .expect("the protocol scopes are unlimited");
        let span = racer.join().expect("the racing thread finished");

        let one_stream = ScopeStat {
            streams_inbound: 1,
            memory: KEPT,
            ..ScopeStat::default()
        };
        assert_eq!(span.stat(), memory_only(KEPT), "span");
        assert_eq!(stream.stat(), one_stream, "stream");
        assert_eq!(rm.peer(&id).stat(), one_stream, "peer");
        assert_eq!(rm.protocol(PROTOCOL).stat(), one_stream, "protocol");
        assert_eq!(rm.transient().stat(), ScopeStat::default(), "transient");
        assert_eq!(rm.system().stat(), one_stream, "system");

        drop(span);
        let without_memory = ScopeStat {
            memory: 0,
            ..one_stream
        };
        assert_eq!(
            rm.protocol(PROTOCOL).stat(),
            without_memory,
            "protocol after the span"
        );
        assert_eq!(rm.system().stat(), without_memory, "system after the span");

        drop(stream);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "reserved after the transfer",
        "reserved before the transfer",
    ]);
}

/// A `set_peer` that the peer's scope refuses (it admits no inbound connection) races a span
/// reservation of 10 bytes and a release of 4: the transfer takes the connection's memory on
/// the peer, is refused at the connection count, gives the memory back and restores the old
/// edges. Afterwards the connection and its 6 bytes are still in the transient scope, the
/// peer holds nothing and was never above its limit, and the connection still works.
#[test]
fn a_refused_set_peer_racing_a_reservation_leaves_the_connection_in_transient() {
    check(|| {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default = BaseLimit {
            conns_inbound: 0,
            ..BaseLimit::unlimited()
        };
        let rm = manager(limits);
        let id = peer(1);
        let peer_view = rm.peer(&id);
        let peer_limit = peer_view.limit();
        let mut conn = rm
            .open_connection(Direction::Inbound, true, &endpoint())
            .expect("the transient and system scopes are unlimited");
        let span = conn.begin_span().expect("the connection is open");

        let racer = {
            let peer_view = peer_view.clone();
            thread::spawn(move || {
                span.reserve_memory(RESERVED, Priority::ALWAYS)
                    .expect("memory is unlimited and the connection stays open");
                assert_within(peer_view.stat(), peer_limit, "peer");
                span.release_memory(RELEASED);
                span
            })
        };
        let refused = conn
            .set_peer(id)
            .expect_err("the peer scope admits no inbound connection");
        let refusal = refused
            .limit_exceeded()
            .expect("a limit refused, not a closed scope");
        assert_eq!(refusal.refused_by(), &ScopeName::Peer(id));
        assert_within(peer_view.stat(), peer_limit, "peer");
        let span = racer.join().expect("the racing thread finished");

        let connection = ScopeStat {
            conns_inbound: 1,
            fd: 1,
            memory: KEPT,
            ..ScopeStat::default()
        };
        assert!(
            conn.peer_scope().is_none(),
            "the refused peer was not attached"
        );
        assert_eq!(span.stat(), memory_only(KEPT), "span");
        assert_eq!(conn.stat(), connection, "connection");
        assert_eq!(peer_view.stat(), ScopeStat::default(), "peer");
        assert_eq!(rm.transient().stat(), connection, "transient");
        assert_eq!(rm.system().stat(), connection, "system");

        // The connection still reports to the transient scope.
        conn.reserve_memory(1, Priority::ALWAYS)
            .expect("the connection is open and memory is unlimited");
        assert_eq!(rm.transient().stat().memory, KEPT + 1, "transient");
        drop((span, conn, peer_view));
        assert_all_released(&rm);
    });
}

/// `set_service` adds a stream's service scopes (a transfer that keeps the old edges and
/// adds two) while a span of the stream reserves 10 bytes and releases 4 on another thread.
/// Afterwards the service holds the stream and the 6 bytes, like every other scope above
/// the stream; dropping the span and then the stream releases everything.
#[test]
fn set_service_racing_a_reservation_through_a_span_of_the_stream() {
    const PROTOCOL: &str = "/loom/1.0.0";
    const SERVICE: &str = "loom.service";
    check(|| {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let mut stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        stream
            .set_protocol(PROTOCOL)
            .expect("the protocol scopes are unlimited");
        let span = stream.begin_span().expect("the stream is open");

        let racer = thread::spawn(move || {
            span.reserve_memory(RESERVED, Priority::ALWAYS)
                .expect("limits are infinite and the stream stays open");
            span.release_memory(RELEASED);
            span
        });
        stream
            .set_service(SERVICE)
            .expect("the service scopes are unlimited");
        let span = racer.join().expect("the racing thread finished");

        let one_stream = ScopeStat {
            streams_inbound: 1,
            memory: KEPT,
            ..ScopeStat::default()
        };
        for (scope, held) in [
            ("stream", stream.stat()),
            ("peer", rm.peer(&id).stat()),
            ("protocol", rm.protocol(PROTOCOL).stat()),
            ("service", rm.service(SERVICE).stat()),
            ("system", rm.system().stat()),
        ] {
            assert_eq!(held, one_stream, "{scope}");
        }
        assert_eq!(rm.transient().stat(), ScopeStat::default(), "transient");

        drop(span);
        assert_eq!(
            rm.service(SERVICE).stat().memory,
            0,
            "service after the span"
        );
        drop(stream);
        assert_all_released(&rm);
    });
}

/// A stream's last span, holding memory, is dropped on another thread while `set_protocol`
/// runs: the transfer takes the exclusive path (plain loads and stores on the stream's own
/// word) only if it sees the stream's handle as its only holder, which it may only once the
/// span's close is complete. Either way, the span's bytes leave every scope exactly once and
/// the stream's own bytes end up in its protocol.
#[test]
fn an_exclusive_set_protocol_racing_the_drop_of_the_last_span() {
    const PROTOCOL: &str = "/loom/exclusive/1.0.0";
    check(|| {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let mut stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        stream
            .reserve_memory(KEPT as usize, Priority::ALWAYS)
            .expect("limits are infinite");
        let span = stream.begin_span().expect("the stream is open");
        span.reserve_memory(RESERVED, Priority::ALWAYS)
            .expect("limits are infinite");

        let racer = thread::spawn(move || {
            span.release_memory(RELEASED);
            drop(span);
        });
        stream
            .set_protocol(PROTOCOL)
            .expect("the protocol scopes are unlimited");
        racer.join().expect("the racing thread finished");

        let one_stream = ScopeStat {
            streams_inbound: 1,
            memory: KEPT,
            ..ScopeStat::default()
        };
        assert_eq!(stream.stat(), one_stream, "stream");
        assert_eq!(rm.peer(&id).stat(), one_stream, "peer");
        assert_eq!(rm.protocol(PROTOCOL).stat(), one_stream, "protocol");
        assert_eq!(rm.transient().stat(), ScopeStat::default(), "transient");
        assert_eq!(rm.system().stat(), one_stream, "system");
        drop(stream);
        assert_all_released(&rm);
    });
}

//! Spans outliving their owners: the owner (a stream, or a span) is dropped on one thread
//! while a span begun on it reserves, releases and is dropped on another.
//!
//! The owner's close releases everything the owner holds, its spans' memory included; a
//! span's own release then stops at the closed owner. Nothing may be released twice: each
//! model keeps a reservation of its own alive on the same scopes meanwhile, so a double
//! release would show as those scopes falling below it.
#![cfg(rcmgr_loom)]

use loom::thread;
use loom_tests::{Outcomes, assert_all_released, check, manager, peer};
use rcmgr::{
    ConcreteLimitConfig, Direction, PeerId, Priority, ResourceManager, ResourceScope, ScopeStat,
};

/// The bytes held throughout by a reservation that no thread of the race touches.
const BACKGROUND: u64 = 7;

/// Asserts that the system, the transient scope and the peer scope hold at least the
/// background reservation (a double release would take them below it).
#[track_caller]
fn assert_background_held(rm: &ResourceManager, id: &PeerId) {
    for (scope, held) in [
        ("system", rm.system().stat().memory),
        ("transient", rm.transient().stat().memory),
        ("peer", rm.peer(id).stat().memory),
    ] {
        assert!(
            held >= BACKGROUND,
            "{scope} holds {held} bytes, less than the {BACKGROUND} held in the background"
        );
    }
}

/// A stream is dropped on one thread while a span of it, already holding 10 bytes, reserves
/// 5 more, releases 3 and is dropped on the other. Another stream of the same peer holds 7
/// bytes throughout. Afterwards every scope holds exactly those 7 bytes.
#[test]
fn a_span_used_and_dropped_while_its_stream_is_dropped_releases_nothing_twice() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let background = rm
            .open_stream(id, Direction::Outbound)
            .expect("streams are unlimited");
        background
            .reserve_memory(BACKGROUND as usize, Priority::ALWAYS)
            .expect("memory is unlimited");
        let owner = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        let span = owner.begin_span().expect("the stream is open");
        span.reserve_memory(10, Priority::ALWAYS)
            .expect("memory is unlimited");

        let dropper = thread::spawn(move || drop(owner));
        match span.reserve_memory(5, Priority::ALWAYS) {
            Ok(()) => record.record("reserved before the owner closed"),
            Err(refused) => {
                assert!(
                    refused.scope_closed().is_some(),
                    "only the owner's close can refuse: {refused}"
                );
                record.record("refused: the owner had closed");
            }
        }
        assert_background_held(&rm, &id);
        span.release_memory(3);
        assert_background_held(&rm, &id);
        drop(span);
        assert_background_held(&rm, &id);
        dropper.join().expect("the dropping thread finished");

        let held = ScopeStat {
            streams_outbound: 1,
            memory: BACKGROUND,
            ..ScopeStat::default()
        };
        assert_eq!(rm.system().stat(), held, "system");
        assert_eq!(rm.transient().stat(), held, "transient");
        assert_eq!(rm.peer(&id).stat(), held, "peer");
        drop(background);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "refused: the owner had closed",
        "reserved before the owner closed",
    ]);
}

/// A span of a span: the outer span is dropped on one thread while the inner span, holding 10
/// bytes, reserves 5 more, releases 3 and is dropped on the other. The stream they belong to
/// holds 7 bytes of its own throughout and stays open; afterwards it, and every scope above
/// it, holds exactly those 7 bytes.
#[test]
fn a_span_used_and_dropped_while_its_owner_span_is_dropped_releases_nothing_twice() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let rm = manager(ConcreteLimitConfig::infinite());
        let id = peer(1);
        let stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        stream
            .reserve_memory(BACKGROUND as usize, Priority::ALWAYS)
            .expect("memory is unlimited");
        let outer = stream.begin_span().expect("the stream is open");
        let inner = outer.begin_span().expect("the outer span is open");
        inner
            .reserve_memory(10, Priority::ALWAYS)
            .expect("memory is unlimited");

        let dropper = thread::spawn(move || drop(outer));
        match inner.reserve_memory(5, Priority::ALWAYS) {
            Ok(()) => record.record("reserved before the owner closed"),
            Err(refused) => {
                assert!(
                    refused.scope_closed().is_some(),
                    "only the owner's close can refuse: {refused}"
                );
                record.record("refused: the owner had closed");
            }
        }
        assert_background_held(&rm, &id);
        assert!(stream.stat().memory >= BACKGROUND, "stream");
        inner.release_memory(3);
        assert_background_held(&rm, &id);
        drop(inner);
        assert_background_held(&rm, &id);
        dropper.join().expect("the dropping thread finished");

        assert_eq!(stream.stat().memory, BACKGROUND, "stream");
        for (scope, held) in [
            ("system", rm.system().stat().memory),
            ("transient", rm.transient().stat().memory),
            ("peer", rm.peer(&id).stat().memory),
        ] {
            assert_eq!(held, BACKGROUND, "{scope}");
        }
        drop(stream);
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "refused: the owner had closed",
        "reserved before the owner closed",
    ]);
}

//! Reservations racing on shared parents: the check-and-add on each edge, and the rollback
//! of the edges already taken when a later edge refuses.
#![cfg(rcmgr_loom)]

use loom::thread;
use loom_tests::{
    Outcomes, assert_all_released, assert_within, check, manager, memory_limit, peer,
};
use rcmgr::{ConcreteLimitConfig, Direction, Priority, ResourceScope, ScopeName};

/// Two streams of one peer each reserve `each` bytes at once, the system allowing
/// `system_memory`. Records which succeeded, after checking that every scope on the path
/// holds exactly what the successful ones reserved, and that dropping the streams releases
/// everything.
fn race_two_reservations(system_memory: u64, each: usize, outcomes: &Outcomes) {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = memory_limit(system_memory);
    let rm = manager(limits);
    let id = peer(1);
    let first = rm
        .open_stream(id, Direction::Inbound)
        .expect("streams are unlimited");
    let second = rm
        .open_stream(id, Direction::Outbound)
        .expect("streams are unlimited");
    let system = rm.system();
    let system_limit = system.limit();

    let racer = {
        let system = system.clone();
        thread::spawn(move || {
            let reserved = first.reserve_memory(each, Priority::ALWAYS).is_ok();
            assert_within(system.stat(), system_limit, "system");
            (first, reserved)
        })
    };
    let second_reserved = second.reserve_memory(each, Priority::ALWAYS).is_ok();
    assert_within(system.stat(), system_limit, "system");
    let (first, first_reserved) = racer.join().expect("the racing thread finished");

    let succeeded = usize::from(first_reserved) + usize::from(second_reserved);
    let held = (succeeded * each) as u64;
    assert_eq!(system.stat().memory, held, "system");
    assert_eq!(rm.transient().stat().memory, held, "transient");
    assert_eq!(rm.peer(&id).stat().memory, held, "peer");
    assert_eq!(
        first.stat().memory,
        if first_reserved { each as u64 } else { 0 }
    );
    assert_eq!(
        second.stat().memory,
        if second_reserved { each as u64 } else { 0 }
    );

    drop((first, second));
    assert_all_released(&rm);
    outcomes.record(match (first_reserved, second_reserved) {
        (true, true) => "both",
        (true, false) => "first only",
        (false, true) => "second only",
        (false, false) => "neither",
    });
}

/// The system has room for one reservation of 60 bytes but not two: whichever commits first
/// wins, the other is refused by the system and leaves nothing behind on the peer and
/// transient scopes it passed first.
#[test]
fn two_reservations_racing_on_a_nearly_full_parent_admit_exactly_one() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || race_two_reservations(100, 60, &record));
    outcomes.assert_exactly(&["first only", "second only"]);
}

/// The system has room for both: neither race outcome may refuse one of them.
#[test]
fn two_reservations_racing_on_a_parent_with_room_for_both_both_succeed() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || race_two_reservations(120, 60, &record));
    outcomes.assert_exactly(&["both"]);
}

/// A stream reservation walks `[peer, transient, system]`. Here it can never fit: the
/// system allows 50 bytes and it asks for 60. A reservation of 50 bytes made through a view of
/// the stream's peer races with it (its walk is `[peer, system]`), so the stream is refused by
/// its peer (when the 50 bytes got there first: 110 > 100) or by the system: either way after
/// the peer (and, refused by the system, the transient scope) took its 60 bytes, which must be
/// rolled back.
///
/// The peer reservation is refused when it sees the stream's partial 60 bytes in the peer
/// (the contract allows that), but nothing may stay behind: afterwards every scope holds
/// exactly what the peer reservation got, and the stream nothing.
#[test]
fn a_refusal_at_a_later_edge_rolls_back_the_earlier_edges() {
    let outcomes = Outcomes::new();
    let record = outcomes.clone();
    check(move || {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default = memory_limit(100);
        limits.transient = memory_limit(100);
        limits.system = memory_limit(50);
        let rm = manager(limits);
        let id = peer(1);
        let stream = rm
            .open_stream(id, Direction::Inbound)
            .expect("streams are unlimited");
        let peer_view = rm.peer(&id);
        let transient = rm.transient();
        let system = rm.system();
        let (peer_limit, transient_limit) = (peer_view.limit(), transient.limit());
        let system_limit = system.limit();

        let racer = {
            let peer_view = peer_view.clone();
            let record = record.clone();
            thread::spawn(move || {
                let refused = stream
                    .reserve_memory(60, Priority::ALWAYS)
                    .expect_err("60 bytes never fit in a system limit of 50");
                let refusal = refused
                    .limit_exceeded()
                    .expect("a limit refused, not a closed scope");
                let by_peer = matches!(refusal.refused_by(), ScopeName::Peer(_));
                assert!(
                    by_peer || refusal.refused_by() == &ScopeName::System,
                    "refused by {}, not by the peer or the system",
                    refusal.refused_by()
                );
                record.record(if by_peer {
                    "stream refused by peer"
                } else {
                    "stream refused by system"
                });
                assert_within(peer_view.stat(), peer_limit, "peer");
                stream
            })
        };
        let peer_reserved = match peer_view.reserve_memory(50, Priority::ALWAYS) {
            Ok(()) => true,
            Err(refused) => {
                // Only the stream's partial 60 bytes can refuse 50 bytes here.
                let refusal = refused
                    .limit_exceeded()
                    .expect("a limit refused, not a closed scope");
                assert!(matches!(refusal.refused_by(), ScopeName::Peer(_)));
                false
            }
        };
        assert_within(peer_view.stat(), peer_limit, "peer");
        assert_within(transient.stat(), transient_limit, "transient");
        assert_within(system.stat(), system_limit, "system");
        let stream = racer.join().expect("the racing thread finished");

        record.record(if peer_reserved {
            "peer reserved"
        } else {
            "peer refused"
        });
        let held = if peer_reserved { 50 } else { 0 };
        assert_eq!(stream.stat().memory, 0, "stream");
        assert_eq!(peer_view.stat().memory, held, "peer");
        assert_eq!(transient.stat().memory, 0, "transient");
        assert_eq!(system.stat().memory, held, "system");

        if peer_reserved {
            peer_view.release_memory(50);
        }
        drop((stream, peer_view));
        assert_all_released(&rm);
    });
    outcomes.assert_exactly(&[
        "peer refused",
        "peer reserved",
        "stream refused by peer",
        "stream refused by system",
    ]);
}

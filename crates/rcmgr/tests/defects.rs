//! The defects the accounting core's redesign fixed, one test each, through the public API
//! only. Each failed on the engine before the redesign (see docs/performance.md and the
//! commit that added this file for what each one showed then).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, Error, PeerId, Priority, ResourceManager,
    ResourceScope, ScopeName,
};

fn memory_only(memory: u64) -> BaseLimit {
    BaseLimit {
        memory,
        ..BaseLimit::unlimited()
    }
}

/// A manager that collects only when asked ([`ResourceManager::gc`]).
fn manager(limits: ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits)
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("valid options")
}

/// Defect 1: protocol and service scopes were never collected, so any caller (and through
/// rcmgr-libp2p any remote peer) could grow them without bound, refused or not.
#[test]
fn protocol_and_service_names_leave_no_scope_behind_refused_or_not() {
    let mut limits = ConcreteLimitConfig::infinite();
    // Every protocol whose name starts with "/refused" refuses its first stream.
    limits.protocol_default.streams = 0;
    limits.protocol_default.streams_inbound = 0;
    let rm = manager(limits);
    let peer = PeerId::random();
    const NAMES: usize = 20_000;
    for index in 0..NAMES {
        let mut stream = rm
            .open_stream(peer, Direction::Inbound)
            .expect("streams are unlimited");
        let refused = stream.set_protocol(&format!("/refused/{index}"));
        assert!(
            matches!(refused, Err(Error::LimitExceeded(_))),
            "{refused:?}"
        );
        let _service = rm.service(&format!("service-{index}"));
        let _protocol = rm.protocol(&format!("/viewed/{index}"));
    }
    assert!(rm.list_protocols().len() >= NAMES, "the views were made");
    rm.gc();
    rm.gc();
    assert_eq!(rm.list_protocols(), Vec::<String>::new());
    assert_eq!(rm.list_services(), Vec::<String>::new());
    assert_eq!(rm.list_peers(), Vec::<PeerId>::new());
    let stat = rm.stat();
    assert!(stat.protocols.is_empty() && stat.services.is_empty());
}

/// Defect 2: sharded memory leases computed their extra chunk from a stale budget (so the
/// system scope was seen above its limit) and refused while the budget was free. Here a
/// thread reserving 512 KiB and one reserving 63 MiB always fit together in 64 MiB: neither
/// may ever be refused, and a sampler thread may never see the system scope above 64 MiB.
#[test]
fn memory_leases_never_pass_the_limit_and_never_refuse_what_fits() {
    const MIB: u64 = 1 << 20;
    const ROUNDS: u64 = 100_000;
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = memory_only(64 * MIB);
    let rm = manager(limits);
    let done = Arc::new(AtomicBool::new(false));
    let refusals = Arc::new(AtomicU64::new(0));
    let worker = |size: u64| {
        let system = rm.system();
        let refusals = Arc::clone(&refusals);
        move || {
            for _ in 0..ROUNDS {
                match system.reserve_memory(size as usize, Priority::ALWAYS) {
                    Ok(()) => system.release_memory(size as usize),
                    Err(_) => {
                        refusals.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let sampler = {
        let system = rm.system();
        let done = Arc::clone(&done);
        move || {
            let mut samples = 0u64;
            let mut above = 0u64;
            while !done.load(Ordering::Relaxed) {
                samples += 1;
                above += u64::from(system.stat().memory > 64 * MIB);
            }
            (samples, above)
        }
    };
    let (small, large, sampler) = (
        thread::spawn(worker(512 << 10)),
        thread::spawn(worker(63 * MIB)),
        thread::spawn(sampler),
    );
    small.join().expect("the small worker finished");
    large.join().expect("the large worker finished");
    done.store(true, Ordering::Relaxed);
    let (samples, above) = sampler.join().expect("the sampler finished");
    assert!(samples > 0);
    assert_eq!(above, 0, "samples above the limit, of {samples}");
    assert_eq!(refusals.load(Ordering::Relaxed), 0, "refused while it fit");
    assert_eq!(rm.stat().system.memory, 0);
}

/// Defect 3: releasing more than a scope held took the whole amount from every parent,
/// erasing other scopes' usage (peer A holds 100, peer B 500, A releases 1,000: system showed
/// 0). A release takes at most what the releasing scope held; the excess is counted.
#[test]
fn an_over_release_never_takes_another_scopes_usage() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let (a, b) = (rm.peer(&PeerId::random()), rm.peer(&PeerId::random()));
    a.reserve_memory(100, Priority::ALWAYS).expect("fits");
    b.reserve_memory(500, Priority::ALWAYS).expect("fits");
    a.release_memory(1_000);
    assert_eq!(a.stat().memory, 0);
    assert_eq!(b.stat().memory, 500);
    assert_eq!(rm.system().stat().memory, 500);
    assert_eq!(rm.over_released(), 900);

    // The same through a stream and a span: each gives back only what it held.
    let mut stream = rm
        .open_stream(PeerId::random(), Direction::Outbound)
        .expect("unlimited");
    stream.set_protocol("/p").expect("unlimited");
    stream.reserve_memory(10, Priority::ALWAYS).expect("fits");
    let span = stream.begin_span().expect("open");
    span.reserve_memory(5, Priority::ALWAYS).expect("fits");
    span.release_memory(50);
    assert_eq!((span.stat().memory, stream.stat().memory), (0, 10));
    stream.release_memory(50);
    assert_eq!(stream.stat().memory, 0);
    assert_eq!(rm.protocol("/p").stat().memory, 0);
    assert_eq!(rm.system().stat().memory, 500);
    assert_eq!(rm.over_released(), 900 + 45 + 40);
}

/// Defect 5: spans cost O(depth^3) and 10,000 nested spans never finished; names and drops
/// recursed over the depth. Reservations, refusals, names and drops at depth 10,000 now
/// finish (each is linear in the depth) and take no stack per level.
#[test]
fn ten_thousand_nested_spans_reserve_refuse_name_and_drop() {
    const DEPTH: usize = 10_000;
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = memory_only(1 << 20);
    let rm = manager(limits);
    let mut conn = rm
        .open_connection(
            Direction::Inbound,
            true,
            &"/ip4/10.0.0.1/tcp/1".parse().expect("ok"),
        )
        .expect("unlimited");
    conn.set_peer(PeerId::random()).expect("unlimited");
    let mut spans = vec![conn.begin_span().expect("open")];
    for _ in 1..DEPTH {
        let next = spans.last().expect("one").begin_span().expect("open");
        spans.push(next);
    }
    let deepest = spans.last().expect("one");
    assert!(
        deepest.reserve_memory(4096, Priority::ALWAYS).is_ok(),
        "fits"
    );
    assert_eq!(spans[0].stat().memory, 4096);
    assert_eq!(conn.stat().memory, 4096);
    let refused = deepest
        .reserve_memory(1 << 20, Priority::ALWAYS)
        .expect_err("the system scope is full");
    let Error::LimitExceeded(refusal) = &refused else {
        panic!("a limit refused: {refused}");
    };
    assert_eq!(refusal.refused_by(), &ScopeName::System);
    let name = deepest.name();
    let ScopeName::Span(span) = &name else {
        panic!("a span's name: {name}");
    };
    assert_eq!(span.indices().len(), DEPTH);
    assert!(name.to_string().ends_with(".span-1"));
    deepest.release_memory(4096);
    assert_eq!(rm.system().stat().memory, 0);
    // Dropping the handles from the outermost closes each level while the ones inside it
    // still hold it: the inner ones are closed with it, and nothing recurses.
    drop(spans);
    assert_eq!(conn.stat().memory, 0);
    drop(conn);
    assert!(rm.stat().system.is_empty());
}

/// Defect 6: in a sharded scope with an unlimited limit, 2^53 - 1001 bytes made the system
/// scope report 0 (the packed word wrapped). Large amounts are counted exactly, and one
/// beyond the counter's capacity is refused with nothing changed.
#[test]
fn counters_near_capacity_count_exactly_or_refuse_cleanly() {
    let rm = manager(ConcreteLimitConfig::infinite());
    let system = rm.system();
    let large = (1u64 << 53) - 1001;
    system
        .reserve_memory(large as usize, Priority::ALWAYS)
        .expect("an unlimited scope takes it");
    assert_eq!(system.stat().memory, large);
    let peer = rm.peer(&PeerId::random());
    peer.reserve_memory(large as usize, Priority::ALWAYS)
        .expect("still fits the counters");
    assert_eq!(system.stat().memory, 2 * large);
    let huge = u64::MAX >> 1;
    let refused = system
        .reserve_memory(huge as usize, Priority::ALWAYS)
        .expect_err("beyond the counter's capacity");
    assert!(matches!(refused, Error::LimitExceeded(_)), "{refused}");
    assert_eq!(
        system.stat().memory,
        2 * large,
        "the refusal changed nothing"
    );
    peer.release_memory(large as usize);
    system.release_memory(large as usize);
    assert_eq!(system.stat().memory, 0);
}

//! Loom models of rcmgr's public API.
//!
//! Each test in `tests/` builds a tiny [`ResourceManager`], starts two threads that race on
//! one part of the accounting engine, and lets [loom] run every interleaving of their atomic
//! operations (up to a preemption bound), checking in each one the two invariants of the
//! engine's contract:
//!
//! * no scope is ever observed above its limit;
//! * every counter (system, transient, and every peer, protocol and service scope that
//!   [`ResourceManager::stat`] lists) is back to zero once every handle has been dropped.
//!
//! The models, one `#[test]` each:
//!
//! | file | races |
//! |---|---|
//! | `tests/reservations.rs` | two reservations on a shared parent near its limit (one fits, or both); a refusal at a later edge, and the rollback of the edges before it, against a reservation on one of those edges |
//! | `tests/transfers.rs` | `set_peer`, a refused `set_peer`, `set_protocol` and `set_service` against a reservation and release made through a span of the same connection or stream |
//! | `tests/limits.rs` | `set_limits` during a reservation; `set_limit` (a pin) against the refresh of the same scope's limit cache |
//! | `tests/collection.rs` | `gc` against a lookup that reserves through the peer's view, against `open_stream`, and against `set_protocol`; two lookups creating the same peer's scope |
//! | `tests/spans.rs` | a span reserving, releasing and dropped while its owner (a stream, or another span) is dropped |
//!
//! The seqlock that caches each scope's limit has its own models next to it, in
//! `crates/rcmgr/src/limit_cell.rs` (`mod loom_tests`).
//!
//! # Running the models
//!
//! The engine maps its atomics to loom only under the `rcmgr_loom` cfg, and every file in
//! `tests/` is `#![cfg(rcmgr_loom)]` (its first attribute, right after its doc comment: an
//! attribute after a false crate-level `cfg` is dropped with the crate, so a doc comment
//! placed after it would leave the empty crate undocumented and warn), so a normal
//! `cargo test --workspace` compiles them to nothing. Run them with the cfg set, in release
//! mode (loom is slow in debug), and in a target directory of their own so the cfg change does
//! not rebuild the normal one:
//!
//! ```text
//! RUSTFLAGS="--cfg rcmgr_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p loom-tests --release
//! RUSTFLAGS="--cfg rcmgr_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p rcmgr --release --lib loom_tests
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` bounds how many times loom may preempt a thread in one execution;
//! it defaults to 2 here (see [`preemption_bound`]). On a 2-core machine every model here
//! takes well under a second at 2 except the span models (about 5 s for the larger); all of
//! them together take about 6 s at 2, 30 s at 3 and a little over 3 minutes at 4, where the
//! span of a stream alone takes three. The seqlock models take about 1 s at 2, 11 s at 3 and
//! 4.5 minutes at 4. A test-name filter runs one model, which is how CI can split them into
//! jobs:
//!
//! ```text
//! RUSTFLAGS="--cfg rcmgr_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p loom-tests --release --test transfers -- set_peer
//! ```
//!
//! When a model fails, loom prints the failing assertion; `LOOM_LOG=trace` and
//! `LOOM_LOCATION=1` make it print the interleaving, and `LOOM_CHECKPOINT_FILE` lets a run be
//! replayed (see loom's documentation).
//!
//! [loom]: https://docs.rs/loom

#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use rcmgr::{BaseLimit, ConcreteLimitConfig, Multiaddr, PeerId, ResourceManager, ScopeStat};

/// The preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
pub const DEFAULT_PREEMPTION_BOUND: usize = 2;

/// The most branch points (atomic operations, lock acquisitions, thread switches) one
/// execution may pass before loom gives up on it, when `LOOM_MAX_BRANCHES` is not set.
///
/// loom's own default (1,000) is meant to catch spin loops that never let another thread
/// run; a model here is a few public calls, but each one is dozens of atomic operations
/// (every limit check reads a seqlock of ten words), and a model that checks every counter
/// at the end passes 1,000 without spinning anywhere.
pub const DEFAULT_MAX_BRANCHES: usize = 10_000;

/// The preemption bound for this run: `LOOM_MAX_PREEMPTIONS`, or
/// [`DEFAULT_PREEMPTION_BOUND`].
///
/// # Panics
///
/// If `LOOM_MAX_PREEMPTIONS` is set to something that is not a number.
pub fn preemption_bound() -> usize {
    match std::env::var("LOOM_MAX_PREEMPTIONS") {
        Ok(value) => value
            .trim()
            .parse()
            .expect("LOOM_MAX_PREEMPTIONS must be a whole number"),
        Err(_) => DEFAULT_PREEMPTION_BOUND,
    }
}

/// Runs `model` under loom with the [`preemption_bound`] of this run and, unless
/// `LOOM_MAX_BRANCHES` says otherwise, [`DEFAULT_MAX_BRANCHES`] (every other loom setting
/// comes from its usual environment variables) and returns how many executions
/// loom explored. The count goes to the test's output too (`--nocapture` shows it).
///
/// # Panics
///
/// If an execution of the model panics (a violated invariant), or if loom explored only
/// one execution: then the model raced nothing, which is a broken model, not a pass.
#[cfg(rcmgr_loom)]
pub fn check(model: impl Fn() + Sync + Send + 'static) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let bound = preemption_bound();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = DEFAULT_MAX_BRANCHES;
    }
    builder.check(move || {
        // Ordering: Relaxed — a std counter outside the model, read after `check` returns
        // on this same thread; loom runs every execution on it.
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    });
    // Ordering: Relaxed — see above: same thread.
    let explored = executions.load(Ordering::Relaxed);
    #[allow(
        clippy::print_stderr,
        reason = "the execution count is the model's report"
    )]
    {
        eprintln!("loom explored {explored} executions at preemption bound {bound}");
    }
    assert!(
        explored > 1,
        "loom explored a single execution: the model has no race in it"
    );
    explored
}

/// A manager that enforces `limits`, with no background collector (the models call
/// [`ResourceManager::gc`] themselves where they need it).
///
/// # Panics
///
/// If the manager cannot be built (model setup).
pub fn manager(limits: ConcreteLimitConfig) -> ResourceManager {
    ResourceManager::builder(limits)
        .gc_interval(Duration::ZERO)
        .build()
        .expect("a manager with valid limits builds")
}

/// A peer ID fixed by `n`: an identity multihash over a few bytes, so that every loom
/// execution sees the same peers (and nothing random enters the model).
///
/// # Panics
///
/// Never for these bytes; the `expect` documents it.
pub fn peer(n: u8) -> PeerId {
    // Multihash bytes: code 0x00 (identity), digest length 4, digest.
    PeerId::from_bytes(&[0x00, 0x04, b'p', b'e', b'e', n])
        .expect("an identity multihash of 4 bytes is a valid peer ID")
}

/// The remote address the models open their connections with.
///
/// # Panics
///
/// Never for this constant address.
pub fn endpoint() -> Multiaddr {
    "/ip4/192.0.2.1/tcp/4001"
        .parse()
        .expect("a valid multiaddr")
}

/// A limit of `memory` bytes with every other field unlimited.
pub fn memory_limit(memory: u64) -> BaseLimit {
    BaseLimit {
        memory,
        ..BaseLimit::unlimited()
    }
}

/// Asserts that `stat` is within every field of `limit`; `scope` names it in the message.
///
/// # Panics
///
/// If any counter is above its limit.
#[track_caller]
pub fn assert_within(stat: ScopeStat, limit: BaseLimit, scope: &str) {
    let checks = [
        ("memory", stat.memory, limit.memory),
        (
            "inbound streams",
            stat.streams_inbound.into(),
            limit.streams_inbound,
        ),
        (
            "outbound streams",
            stat.streams_outbound.into(),
            limit.streams_outbound,
        ),
        ("streams", stat.streams(), limit.streams),
        (
            "inbound conns",
            stat.conns_inbound.into(),
            limit.conns_inbound,
        ),
        (
            "outbound conns",
            stat.conns_outbound.into(),
            limit.conns_outbound,
        ),
        ("conns", stat.conns(), limit.conns),
        ("fds", stat.fd.into(), limit.fd),
    ];
    for (what, used, allowed) in checks {
        assert!(
            used <= allowed,
            "{scope} holds {used} {what}, above its limit of {allowed}: {stat:?}"
        );
    }
}

/// Asserts that nothing at all is held: the system and transient scopes and every peer,
/// protocol and service scope the manager lists are empty.
///
/// # Panics
///
/// If any of them holds anything.
#[track_caller]
pub fn assert_all_released(rm: &ResourceManager) {
    let stat = rm.stat();
    assert!(
        stat.system.is_empty(),
        "system still holds {:?}",
        stat.system
    );
    assert!(
        stat.transient.is_empty(),
        "transient still holds {:?}",
        stat.transient
    );
    for (peer, held) in &stat.peers {
        assert!(held.is_empty(), "peer:{peer} still holds {held:?}");
    }
    for (protocol, held) in &stat.protocols {
        assert!(held.is_empty(), "protocol:{protocol} still holds {held:?}");
    }
    for (service, held) in &stat.services {
        assert!(held.is_empty(), "service:{service} still holds {held:?}");
    }
}

/// A [`ScopeStat`] holding only `memory` bytes.
pub fn memory_only(memory: u64) -> ScopeStat {
    ScopeStat {
        memory,
        ..ScopeStat::default()
    }
}

/// The outcomes a model's executions reached, collected across all of them, so that a test
/// can check that loom really drove the race both ways (a model whose race always ends the
/// same way checks less than it seems to).
///
/// It lives outside the model (a std mutex that loom does not see): recording is not part
/// of the interleavings explored, and loom runs one thread at a time, so the lock is never
/// contended.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    seen: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl Outcomes {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that an execution reached `outcome`.
    pub fn record(&self, outcome: &'static str) {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(outcome);
    }

    /// Asserts that exactly the outcomes in `expected` were reached, each at least once.
    ///
    /// # Panics
    ///
    /// If an expected outcome never happened, or an unexpected one did.
    #[track_caller]
    pub fn assert_exactly(&self, expected: &[&'static str]) {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let expected: BTreeSet<&'static str> = expected.iter().copied().collect();
        assert_eq!(seen, expected, "the outcomes the model reached");
    }
}

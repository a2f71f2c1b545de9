//! go's `libp2p_rcmgr_blocked_resources`: refusals by scope class, resource and direction, as
//! a fixed table of atomic counters (no lookup, no lock on the refusal path).
//!
//! # Synchronization
//!
//! Each counter is a Relaxed statistic.

use std::sync::atomic::{AtomicU64, Ordering};

use rcmgr::{LimitExceeded, Resource, ScopeName, ScopeStat};

/// go's `scope` label values for refusals: a scope's name cut at the first `:` and then at
/// the first `-` (so `conn-5` is `conn`, `peer:Qm…` is `peer`, `system.span-1` is
/// `system.span`).
pub(crate) const CLASSES: [&str; 13] = [
    "system",
    "transient",
    "allowlistedSystem",
    "allowlistedTransient",
    "service",
    "protocol",
    "peer",
    "conn",
    "stream",
    "system.span",
    "transient.span",
    "allowlistedSystem.span",
    "allowlistedTransient.span",
];

/// The (dir, resource) label pairs go's refusals add to: streams and connections under the
/// direction asked for, file descriptors and memory without one (go's `blocked_resources`
/// labels).
pub(crate) const KINDS: [(&str, &str); 6] = [
    ("", "memory"),
    ("inbound", "stream"),
    ("outbound", "stream"),
    ("inbound", "connection"),
    ("outbound", "connection"),
    ("", "fd"),
];

const MEMORY: usize = 0;
const STREAMS_INBOUND: usize = 1;
const STREAMS_OUTBOUND: usize = 2;
const CONNS_INBOUND: usize = 3;
const CONNS_OUTBOUND: usize = 4;
const FD: usize = 5;

/// The refusal counters.
#[derive(Debug)]
pub(crate) struct Blocked {
    counts: Box<[AtomicU64]>,
}

impl Blocked {
    pub(crate) fn new() -> Self {
        Blocked {
            counts: (0..CLASSES.len() * KINDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Counts one refusal under the class of the scope that refused, as go's
    /// `StatsTraceReporter` counts the `block_*` event of that scope: each direction's streams
    /// or connections asked for, the file descriptors a refused connection asked for, and 1
    /// for a memory reservation (go adds its bytes: see the crate docs).
    pub(crate) fn count(&self, refusal: &LimitExceeded, asked: &ScopeStat) {
        let class = class_of(refusal.refused_by());
        let amounts: [(usize, u64); 6] = match refusal.resource() {
            Resource::Memory { .. } => [(MEMORY, 1), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)],
            _ => [
                (MEMORY, 0),
                (STREAMS_INBOUND, asked.streams_inbound.into()),
                (STREAMS_OUTBOUND, asked.streams_outbound.into()),
                (CONNS_INBOUND, asked.conns_inbound.into()),
                (CONNS_OUTBOUND, asked.conns_outbound.into()),
                (FD, asked.fd.into()),
            ],
        };
        for (kind, amount) in amounts {
            if amount != 0 {
                // Ordering: Relaxed — a statistic.
                self.counts[class * KINDS.len() + kind].fetch_add(amount, Ordering::Relaxed);
            }
        }
    }

    /// Every counter that is not zero, as ((dir, scope, resource), count).
    pub(crate) fn nonzero(&self) -> Vec<((&'static str, &'static str, &'static str), u64)> {
        let mut all = Vec::new();
        for (class_index, class) in CLASSES.iter().enumerate() {
            for (kind_index, (dir, resource)) in KINDS.iter().enumerate() {
                // Ordering: Relaxed — a statistic.
                let count =
                    self.counts[class_index * KINDS.len() + kind_index].load(Ordering::Relaxed);
                if count != 0 {
                    all.push(((*dir, *class, *resource), count));
                }
            }
        }
        all
    }
}

/// The index in [`CLASSES`] of a scope's class, by go's cutting rule.
pub(crate) fn class_of(name: &ScopeName) -> usize {
    let fixed = |name: &ScopeName| match name {
        ScopeName::System => Some(0),
        ScopeName::Transient => Some(1),
        ScopeName::AllowlistedSystem => Some(2),
        ScopeName::AllowlistedTransient => Some(3),
        _ => None,
    };
    if let Some(class) = fixed(name) {
        return class;
    }
    let root = name.base();
    if let Some(class) = fixed(root) {
        // A span of a fixed scope: `system.span-1` is cut to `system.span`.
        return class + 9;
    }
    match root {
        ScopeName::Service(_) | ScopeName::ServicePeer { .. } => 4,
        ScopeName::Protocol(_) | ScopeName::ProtocolPeer { .. } => 5,
        ScopeName::Peer(_) => 6,
        ScopeName::Conn(_) => 7,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> &'static str {
        CLASSES[class_of(&name.parse().expect("a scope name"))]
    }

    #[test]
    fn classes_follow_go_cutting_rule() {
        let peer = libp2p_identity::PeerId::random();
        assert_eq!(class("system"), "system");
        assert_eq!(class("system.span-1.span-2"), "system.span");
        assert_eq!(
            class("allowlistedTransient.span-3"),
            "allowlistedTransient.span"
        );
        assert_eq!(class("conn-5"), "conn");
        assert_eq!(class("conn-5.span-1"), "conn");
        assert_eq!(class("stream-9"), "stream");
        assert_eq!(class(&format!("peer:{peer}")), "peer");
        assert_eq!(class(&format!("protocol:/x.peer:{peer}")), "protocol");
        assert_eq!(class(&format!("service:s.peer:{peer}.span-1")), "service");
    }
}

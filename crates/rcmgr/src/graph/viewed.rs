//! What a scope that spans and views reach keeps for them, embedded in every node that can
//! have spans (fixed scopes, peers, protocols and services). A leaf of the graph: the nodes
//! embed it and [`super::scope`] reads it, so it names none of them.

use crate::{
    account::Direct,
    sync::{AtomicU64, Ordering},
};

/// What a scope that views reach keeps for them: the bytes reserved on it directly (where a
/// caller's release is clamped, see [`Direct`]) and the numbers of its spans.
#[derive(Debug)]
pub(crate) struct Viewed {
    pub(crate) direct: Direct,
    next_span: AtomicU64,
}

impl Viewed {
    pub(crate) fn new() -> Self {
        Viewed {
            direct: Direct::default(),
            next_span: AtomicU64::new(1),
        }
    }

    /// Starts over for a reused slot (a new scope): its spans are numbered from 1 again.
    /// The slot holds nothing (it was stopped), so its direct count is zero already.
    pub(crate) fn reset(&self) {
        // Ordering: Relaxed — published with the slot's reset (a Release store).
        self.next_span.store(1, Ordering::Relaxed);
    }

    /// The number the next span begun on the scope gets.
    pub(crate) fn next_span(&self) -> u64 {
        // Ordering: Relaxed — a unique number is all that is needed.
        self.next_span.fetch_add(1, Ordering::Relaxed)
    }
}

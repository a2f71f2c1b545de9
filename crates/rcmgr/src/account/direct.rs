//! [`Direct`]: the bytes callers reserved directly on a scope that views reach (a peer, a
//! protocol or service, a fixed scope), through the view itself or its guards. (A span begun
//! on a view holds its bytes in its own word, as every span does; its releases are exact.)
//!
//! A caller's release on such a scope is clamped here, not at the scope's whole usage: the
//! rest of the usage belongs to the scope's children (streams, connections), which give it
//! back themselves. So an over-release, a release on a scope that never reserved, or a
//! guard dropped after an over-release, never takes another scope's usage away from the
//! parents (go lets it: it clamps at the whole usage, and the child's own release then
//! under-counts every parent).
//!
//! # Synchronization
//!
//! A count that publishes nothing: Relaxed. Its bytes are reserved on the scope's words
//! before they are added here, and taken from here before they are given back there, so the
//! words never hold less than this count.

use crate::sync::{AtomicU64, Ordering};

/// Bytes reserved directly on a scope; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Direct {
    bytes: AtomicU64,
}

impl Direct {
    /// Counts `bytes` reserved directly (after the scope's words took them).
    #[inline]
    pub(crate) fn add(&self, bytes: u64) {
        if bytes > 0 {
            // Ordering: Relaxed — a count; see the module docs.
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Takes up to `bytes` of what was reserved directly; returns what it took (what the
    /// scope's words then give back).
    #[inline]
    pub(crate) fn take(&self, bytes: u64) -> u64 {
        if bytes == 0 {
            return 0;
        }
        // Ordering: Relaxed — a count; see the module docs.
        let mut current = self.bytes.load(Ordering::Relaxed);
        loop {
            let taken = bytes.min(current);
            if taken == 0 {
                return 0;
            }
            // Ordering: Relaxed — as above.
            match self.bytes.compare_exchange_weak(
                current,
                current - taken,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return taken,
                Err(actual) => current = actual,
            }
        }
    }
}

//! [`Groups`]: the protocol and service scopes, kept for the manager's whole life and reached
//! without a lock or a reference count.
//!
//! Every stream of a protocol (or service) touches its scope, so on a busy node every thread
//! does. A lookup in a sharded map takes the shard's lock, and holding the scope through an
//! `Arc` writes its reference count: two cache lines every thread would fight over. Instead
//! the scopes live in an append-only table, found by name through a copy-on-write map, and a
//! stream keeps a [`GroupId`]: looking one up writes nothing shared.
//!
//! The price is that protocol and service scopes are never collected (go collects idle
//! protocol scopes after a minute). Their number is bounded by the protocols the node speaks
//! (streams get their protocol after negotiation) and the services its code names, so the
//! table stays small; the per-peer scopes inside them, whose number peers drive, are still
//! collected (see [`crate::registries`]).
//!
//! # Synchronization
//!
//! Inserts are serialized by a mutex. An insert sets the new entry's [`OnceSlot`] (which
//! publishes it with Release) before it stores the new name map (which arc-swap publishes),
//! and before it raises the length (Release). A reader that found the id in the map, or read
//! the length, therefore finds the slot set.

use std::{collections::HashMap, sync::Arc as NameArc};

use libp2p_identity::PeerId;

use crate::{
    scope::{Node, Scope},
    sync::{Arc, AtomicU64, LimitSlot, Mutex, OnceSlot, Ordering, Registry},
};

/// Where a protocol or service scope sits in [`Groups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GroupId(u64);

/// A protocol or service scope and the per-peer scopes inside it.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) scope: Scope,
    pub(crate) members: Registry<PeerId, Arc<Node>>,
}

/// Entries of the first segment; each next segment is twice as large.
const FIRST_SEGMENT: u64 = 64;
/// Enough segments for every `u64` id: the table never fills (each entry costs kilobytes, so
/// memory runs out long before the ids do).
const SEGMENTS: usize = 59;

type Names = HashMap<NameArc<str>, GroupId, foldhash::quality::RandomState>;

/// One segment of the table: allocated whole the first time an id falls in it, each entry
/// written once.
type Segment = OnceSlot<Box<[OnceSlot<Arc<Group>>]>>;

/// The protocol (or service) scopes of one manager.
#[derive(Debug)]
pub(crate) struct Groups {
    /// Tells this table apart from every other one of the process, for the per-thread cache.
    instance: u64,
    names: LimitSlot<Names>,
    segments: [Segment; SEGMENTS],
    len: AtomicU64,
    inserting: Mutex<()>,
}

impl Groups {
    pub(crate) fn new() -> Self {
        Groups {
            instance: recent::new_table(),
            names: LimitSlot::new(Arc::new(Names::default())),
            segments: std::array::from_fn(|_| OnceSlot::new()),
            len: AtomicU64::new(0),
            inserting: Mutex::new(()),
        }
    }

    /// The scope named `name`, created with `make` if there is none: its id, and the scope
    /// (`None` only if the slot an id names were not written, which the insert protocol rules
    /// out: the slot is written, under the insert lock, before its id is published).
    pub(crate) fn find_or_insert(
        &self,
        name: &str,
        make: impl FnOnce(NameArc<str>, GroupId) -> Group,
    ) -> (GroupId, Option<&Arc<Group>>) {
        if let Some(id) = self.find(name) {
            return (id, self.get(id));
        }
        let _inserting = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = self.find(name) {
            return (id, self.get(id));
        }
        // Ordering: Relaxed — inserts are serialized by the mutex held here.
        let next = self.len.load(Ordering::Relaxed);
        let (segment, offset) = locate(next);
        let slots = &self.segments[segment];
        if slots.get().is_none() {
            let size = (FIRST_SEGMENT << segment) as usize;
            let _ = slots.set((0..size).map(|_| OnceSlot::new()).collect());
        }
        let key: NameArc<str> = NameArc::from(name);
        let id = GroupId(next);
        if let Some(slot) = slots.get().and_then(|slots| slots.get(offset)) {
            let _ = slot.set(Arc::new(make(NameArc::clone(&key), id)));
        }
        let mut names = (*self.names.load_full()).clone();
        names.insert(key, id);
        self.names.store(Arc::new(names));
        // Ordering: Release — a reader that sees the new length finds the slot set above.
        self.len.store(next + 1, Ordering::Release);
        (id, self.get(id))
    }

    /// The id of the scope named `name`, if it exists: from this thread's cache of recent
    /// names when it is there (an id never changes meaning: scopes are never removed), else
    /// from the name map.
    #[inline]
    pub(crate) fn find(&self, name: &str) -> Option<GroupId> {
        if let Some(id) = recent::get(self.instance, name) {
            return Some(GroupId(id));
        }
        let id = self.names.with(|names| names.get(name).copied())?;
        recent::put(self.instance, name, id.0);
        Some(id)
    }

    /// The scope with id `id` (every id this table handed out has one).
    #[inline]
    pub(crate) fn get(&self, id: GroupId) -> Option<&Arc<Group>> {
        let (segment, offset) = locate(id.0);
        self.segments[segment].get()?.get(offset)?.get()
    }

    /// Every scope, in the order they were created.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&Arc<Group>)) {
        // Ordering: Acquire — pairs with the Release in `find_or_insert`: every slot below the
        // length read is set.
        let len = self.len.load(Ordering::Acquire);
        for id in (0..len).map(GroupId) {
            if let Some(group) = self.get(id) {
                visit(group);
            }
        }
    }
}

/// The segment and offset of `index`: segment `k` holds `FIRST_SEGMENT << k` entries, so
/// segment `k` starts at `FIRST_SEGMENT * (2^k - 1)`.
fn locate(index: u64) -> (usize, usize) {
    let shifted = u128::from(index) + u128::from(FIRST_SEGMENT);
    let segment = (127 - shifted.leading_zeros() - FIRST_SEGMENT.trailing_zeros()) as usize;
    let start = u128::from(FIRST_SEGMENT) << segment;
    (segment, (shifted - start) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_segments_without_gaps() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        let (segment, offset) = locate(u64::MAX);
        assert!(segment < SEGMENTS && (offset as u128) < u128::from(FIRST_SEGMENT) << segment);
    }
}

mod recent {
    //! Each thread remembers the last few names it looked up in each table, so that the
    //! streams of a busy protocol find its scope without touching the name map.

    /// A number no other table of this process has.
    pub(super) fn new_table() -> u64 {
        #[cfg(not(rcmgr_loom))]
        {
            use crate::sync::{AtomicU64, Ordering};
            static TABLES: AtomicU64 = AtomicU64::new(1);
            // Ordering: Relaxed — only distinct numbers are needed.
            TABLES.fetch_add(1, Ordering::Relaxed)
        }
        #[cfg(rcmgr_loom)]
        {
            0
        }
    }

    #[cfg(not(rcmgr_loom))]
    mod cache {
        use std::cell::RefCell;

        /// How many (table, name) pairs a thread remembers.
        const ENTRIES: usize = 8;

        /// (table, name, id), most recent last.
        type Recent = RefCell<Vec<(u64, Box<str>, u64)>>;

        thread_local! {
            static RECENT: Recent = const { RefCell::new(Vec::new()) };
        }

        pub(in super::super) fn get(table: u64, name: &str) -> Option<u64> {
            RECENT
                .try_with(|recent| {
                    let recent = recent.try_borrow().ok()?;
                    recent
                        .iter()
                        .rev()
                        .find(|(t, n, _)| *t == table && &**n == name)
                        .map(|(_, _, id)| *id)
                })
                .ok()
                .flatten()
        }

        pub(in super::super) fn put(table: u64, name: &str, id: u64) {
            let _ = RECENT.try_with(|recent| {
                if let Ok(mut recent) = recent.try_borrow_mut() {
                    if recent.len() == ENTRIES {
                        recent.remove(0);
                    }
                    recent.push((table, name.into(), id));
                }
            });
        }
    }

    #[cfg(not(rcmgr_loom))]
    pub(super) use cache::{get, put};

    /// Under loom every lookup goes to the name map, which the models then cover.
    #[cfg(rcmgr_loom)]
    pub(super) fn get(_table: u64, _name: &str) -> Option<u64> {
        None
    }

    #[cfg(rcmgr_loom)]
    pub(super) fn put(_table: u64, _name: &str, _id: u64) {}
}

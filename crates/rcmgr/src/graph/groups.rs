//! [`Groups`]: the protocol (or service) scopes of one manager, reached by slot, collected
//! when idle.
//!
//! Every stream of a protocol touches that protocol's scope, so on a busy node every thread
//! does. Holding the scope through a reference count would write one cache line that every
//! thread shares; instead the scopes live in [`Segments`] slots and a stream keeps a
//! [`GroupRef`]: its slot and the slot's *incarnation*. A name is found through a sharded map
//! (inserting is amortized O(1)) and, on the hot path, through a per-thread cache of recent
//! names, so that finding a busy protocol's scope touches no shared line at all.
//!
//! # Collection and reuse
//!
//! A scope that two collection passes in a row found holding nothing, not pinned by
//! `set_limit` and with no view on it, is *stopped* ([`Sharded::try_stop`]), its name removed
//! from the map, its incarnation advanced and its slot put on a free list; the next new name
//! reuses the slot. A stream that looked a name up (from the map or its thread's cache) and
//! then reserves on the slot either finds it stopped (and looks again), or reserves on it and
//! then checks that the slot's incarnation is still the one it looked up: if the slot was
//! reused in between, it gives back what it took and looks again. Only the first reservation
//! after a lookup needs the check: a scope that holds a stream's reservation is not idle, so
//! it is not collected while the stream holds it.
//!
//! # Synchronization
//!
//! Inserts, reuse and collection are serialized by one mutex (which also holds the free
//! list), taken before any map shard guard. A view counts itself on the scope while the map's
//! shard guard is held, so collection, which decides under the exclusive guard, never misses
//! a view that is being made. The reuse protocol's orderings are in [`crate::account::plain`]
//! (a reset is a Release store after the new name and incarnation, a reservation is Acquire).

use std::sync::Arc as NameArc;

use super::{segments::Segments, viewed::Viewed};
use crate::{
    account::Sharded,
    limits::BaseLimit,
    sync::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Mutex, OnceSlot, Ordering, Registry},
};

/// Append-only storage at stable indices whose first `HEAD` slots live inline: the tables a
/// stream's walks index on every reservation (the protocol and service scopes, a peer's
/// scopes within them), where most indices are small. Reaching a slot of the head is a
/// compare and two loads, which the walks inline; later slots live in [`Segments`] (index
/// `HEAD` is its first).
///
/// # Synchronization
///
/// As in [`Segments`]: appends are serialized by the caller's lock; an append to the head
/// writes the slot (a [`OnceSlot`], which publishes with Release) before it raises the head's
/// length with Release, so a reader that read the length with Acquire finds every slot below
/// it written.
pub(crate) struct Slots<T, const HEAD: usize, const FIRST: usize> {
    head: [OnceSlot<T>; HEAD],
    head_len: AtomicU32,
    tail: Segments<T, FIRST>,
}

impl<T, const HEAD: usize, const FIRST: usize> Slots<T, HEAD, FIRST> {
    pub(crate) fn new() -> Self {
        Slots {
            head: std::array::from_fn(|_| OnceSlot::new()),
            head_len: AtomicU32::new(0),
            tail: Segments::new(),
        }
    }

    /// The slot at `index`, if one was appended there.
    #[inline(always)]
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        match self.head.get(index as usize) {
            Some(slot) => slot.get(),
            None => self.tail.get(index - HEAD as u32),
        }
    }

    /// How many slots were appended.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        // Ordering: Acquire — pairs with the Release in `push`: every head slot below is
        // written (the tail's own length says the same of its slots).
        let head = self.head_len.load(Ordering::Acquire);
        if (head as usize) < HEAD {
            head
        } else {
            HEAD as u32 + self.tail.len()
        }
    }

    /// Every slot appended so far, with its index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        (0..self.len()).filter_map(move |index| Some((index, self.get(index)?)))
    }

    /// The first of the first `count` slots, in index order, for which `found` holds (a
    /// bounded scan: past it, a caller looks its key up in an index of its own).
    #[inline(always)]
    pub(crate) fn find_within(
        &self,
        count: usize,
        found: impl Fn(&T) -> bool,
    ) -> Option<(u32, &T)> {
        // Ordering: Acquire — as in `len`.
        let head = self.head_len.load(Ordering::Acquire) as usize;
        for (index, slot) in self.head[..head.min(count)].iter().enumerate() {
            if let Some(value) = slot.get()
                && found(value)
            {
                return Some((index as u32, value));
            }
        }
        if head < HEAD || count <= HEAD {
            return None;
        }
        self.tail
            .iter()
            .take(count - HEAD)
            .find(|(_, value)| found(value))
            .map(|(index, value)| (index.saturating_add(HEAD as u32), value))
    }

    /// Appends `value`; returns its index, or gives it back if the storage is full. The caller
    /// holds the lock that serializes appends.
    pub(crate) fn push(&self, value: T) -> Result<u32, T> {
        // Ordering: Relaxed — appends are serialized by the caller's lock.
        let index = self.head_len.load(Ordering::Relaxed);
        let Some(slot) = self.head.get(index as usize) else {
            let index = self.tail.push(value)?;
            return Ok(index.saturating_add(HEAD as u32));
        };
        slot.set(value)?;
        // Ordering: Release — a reader that sees the new length finds the slot set above.
        self.head_len.store(index + 1, Ordering::Release);
        Ok(index)
    }
}

impl<T, const HEAD: usize, const FIRST: usize> std::fmt::Debug for Slots<T, HEAD, FIRST> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Whether a table holds protocol or service scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GroupKind {
    Protocol,
    Service,
}

/// A protocol or service scope as a handle keeps it: the slot, and the incarnation of the
/// slot it looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupRef {
    pub(crate) slot: u32,
    pub(crate) incarnation: u32,
}

/// The passes in a row a scope must be found idle before it is collected.
pub(crate) const IDLE_PASSES_TO_COLLECT: u8 = 2;

/// One protocol or service scope.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) scope: Sharded,
    /// The scope's name; it changes only when a stopped slot is reused.
    name: Mutex<NameArc<str>>,
    /// Advanced each time the slot is collected.
    incarnation: AtomicU32,
    /// What views keep on the scope.
    pub(crate) viewed: Viewed,
    /// Views (and spans and guards begun through views) on the scope.
    views: AtomicU64,
    /// Set by `set_limit`: collection keeps the scope forever (go's "sticky").
    sticky: AtomicBool,
    /// Collection passes that found the scope idle in a row.
    idle_passes: AtomicU8,
}

impl Group {
    /// Whether `incarnation` is this slot's current one (compared on 31 bits, as members
    /// keep it: telling two apart that far away would take 2^31 reuses of one slot while a
    /// lookup is in flight).
    #[inline]
    pub(crate) fn is(&self, incarnation: u32) -> bool {
        const BITS: u32 = 0x7fff_ffff;
        // Ordering: Relaxed — read after a reservation whose Acquire ordered it after the
        // reset that published a new incarnation (see the module docs).
        self.incarnation.load(Ordering::Relaxed) & BITS == incarnation & BITS
    }

    /// A reference to this scope as it is now, in `slot`.
    pub(crate) fn current(&self, slot: u32) -> GroupRef {
        GroupRef {
            slot,
            // Ordering: Relaxed — the caller holds a view or usage, so the slot is not reused.
            incarnation: self.incarnation.load(Ordering::Relaxed),
        }
    }

    /// Marks the scope as used, for collection.
    #[inline]
    pub(crate) fn touch(&self) {
        touch(&self.idle_passes);
    }

    /// Counts one more view (or span or guard begun through a view). The caller holds a view
    /// already, or the map's shard guard.
    pub(crate) fn add_view(&self) {
        // Ordering: Relaxed — a reference count taken under the guard, or from a live view.
        self.views.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops one view.
    pub(crate) fn drop_view(&self) {
        // Ordering: Release — the view's releases happen-before the collector's Acquire read
        // of the count (see `is_idle`).
        self.views.fetch_sub(1, Ordering::Release);
    }

    /// Pins the scope: collection keeps it.
    pub(crate) fn make_sticky(&self) {
        // Ordering: Relaxed — only ever set, through a live view, which already keeps the
        // scope from being collected.
        self.sticky.store(true, Ordering::Relaxed);
    }

    /// Whether the scope can be collected: no view, not pinned, holding nothing.
    fn is_idle(&self) -> bool {
        // Ordering: Acquire — pairs with the Release of the last view's drop, so what it
        // released is visible to the stat read below.
        if self.views.load(Ordering::Acquire) != 0 {
            return false;
        }
        // Ordering: Relaxed — set through a view, which the check above has seen gone.
        !self.sticky.load(Ordering::Relaxed) && self.scope.stat().is_empty()
    }
}

/// Marks a scope as used for the collector: a lookup restarts its idle count.
#[inline]
pub(crate) fn touch(idle_passes: &AtomicU8) {
    // Ordering: Relaxed — a hint for the collector, which re-checks what it relies on.
    if idle_passes.load(Ordering::Relaxed) != 0 {
        idle_passes.store(0, Ordering::Relaxed);
    }
}

/// Counts an idle pass on a scope found idle (or restarts the count); true once the scope
/// has been idle for [`IDLE_PASSES_TO_COLLECT`] passes.
pub(crate) fn count_idle_pass(idle_passes: &AtomicU8, idle: bool) -> bool {
    // Ordering: Relaxed (both) — a hint, re-checked where it matters.
    if !idle {
        idle_passes.store(0, Ordering::Relaxed);
        return false;
    }
    let seen = idle_passes
        .load(Ordering::Relaxed)
        .saturating_add(1)
        .min(IDLE_PASSES_TO_COLLECT);
    idle_passes.store(seen, Ordering::Relaxed);
    seen >= IDLE_PASSES_TO_COLLECT
}

/// The protocol or service scopes of one manager.
#[derive(Debug)]
pub(crate) struct Groups {
    pub(crate) kind: GroupKind,
    /// Tells this table apart from every other one of the process, for the per-thread cache.
    instance: u64,
    names: Registry<NameArc<str>, GroupRef>,
    slots: Slots<Group, 8, 8>,
    /// Serializes inserts, reuse and collection; the slots free for reuse.
    free: Mutex<Vec<u32>>,
}

impl Groups {
    pub(crate) fn new(kind: GroupKind) -> Self {
        Groups {
            kind,
            instance: recent::new_table(),
            names: Registry::new(),
            slots: Slots::new(),
            free: Mutex::new(Vec::new()),
        }
    }

    /// The scope in `slot`.
    #[inline(always)]
    pub(crate) fn get(&self, slot: u32) -> Option<&Group> {
        self.slots.get(slot)
    }

    /// The name of the scope in `slot` (one the caller keeps in use).
    pub(crate) fn name_of(&self, slot: u32) -> NameArc<str> {
        match self.get(slot) {
            Some(group) => NameArc::clone(&group.name.lock().unwrap_or_else(|e| e.into_inner())),
            None => NameArc::from(""),
        }
    }

    /// The scope named `name`, as last seen: from this thread's cache of recent names, else
    /// from the map. The caller validates it at its first reservation (see the module docs).
    #[inline]
    pub(crate) fn find(&self, name: &str) -> Option<GroupRef> {
        if let Some(found) = recent::get(self.instance, name) {
            return Some(found);
        }
        let found = self.names.get(name)?;
        recent::put(self.instance, name, found);
        Some(found)
    }

    /// Forgets what this thread's cache says of `name` (it named a collected scope).
    pub(crate) fn forget(&self, name: &str) {
        recent::forget(self.instance, name);
    }

    /// The scope named `name`, created with the limit `limit_of` gives for it if there is
    /// none, and whether it was created. `limit_of` runs under the table's lock, which limit
    /// swaps also take, so a new scope never keeps a limit older than the last swap.
    #[inline(always)]
    pub(crate) fn find_or_insert(
        &self,
        name: &str,
        limit_of: impl FnOnce(&str) -> BaseLimit,
    ) -> (GroupRef, bool) {
        if let Some(found) = recent::get(self.instance, name) {
            return (found, false);
        }
        self.find_or_insert_in_map(name, limit_of)
    }

    /// [`find_or_insert`](Self::find_or_insert) past this thread's cache.
    #[inline(never)]
    fn find_or_insert_in_map(
        &self,
        name: &str,
        limit_of: impl FnOnce(&str) -> BaseLimit,
    ) -> (GroupRef, bool) {
        let (found, created) = match self.names.get(name) {
            Some(found) => (found, false),
            None => self.insert(name, limit_of, false),
        };
        recent::put(self.instance, name, found);
        (found, created)
    }

    /// A view of the scope named `name` (created if needed): counted on the scope while the
    /// map's guard is held, so collection keeps the scope until the view is dropped.
    pub(crate) fn view(
        &self,
        name: &str,
        limit_of: impl FnOnce(&str) -> BaseLimit,
    ) -> (GroupRef, bool) {
        let viewed = self.names.with(name, |found| {
            if let Some(group) = self.get(found.slot) {
                group.add_view();
                group.touch();
            }
            *found
        });
        match viewed {
            Some(found) => (found, false),
            None => self.insert(name, limit_of, true),
        }
    }

    /// Inserts `name` (or finds it, inserted meanwhile), counting a view on it if `view`.
    fn insert(
        &self,
        name: &str,
        limit_of: impl FnOnce(&str) -> BaseLimit,
        view: bool,
    ) -> (GroupRef, bool) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let key: NameArc<str> = NameArc::from(name);
        let make = || {
            let limit = limit_of(name);
            let reused = free.pop().and_then(|slot| Some((slot, self.get(slot)?)));
            match reused {
                Some((slot, group)) => {
                    *group.name.lock().unwrap_or_else(|e| e.into_inner()) = NameArc::clone(&key);
                    // Ordering: Relaxed (all three) — published by the reset below.
                    let incarnation = group.incarnation.load(Ordering::Relaxed);
                    group.idle_passes.store(0, Ordering::Relaxed);
                    group.sticky.store(false, Ordering::Relaxed);
                    group.viewed.reset();
                    // A Release store: publishes the name and incarnation written above.
                    group.scope.reset(limit);
                    GroupRef { slot, incarnation }
                }
                None => {
                    let group = Group {
                        scope: Sharded::new(limit),
                        name: Mutex::new(NameArc::clone(&key)),
                        incarnation: AtomicU32::new(1),
                        viewed: Viewed::new(),
                        views: AtomicU64::new(0),
                        sticky: AtomicBool::new(false),
                        idle_passes: AtomicU8::new(0),
                    };
                    // Four billion live scopes cannot be: memory runs out long before. A slot
                    // past the table is one that every lookup finds empty.
                    let slot = self.slots.push(group).unwrap_or(u32::MAX);
                    GroupRef {
                        slot,
                        incarnation: 1,
                    }
                }
            }
        };
        self.names.with_or_insert(&key, make, |found| {
            if let Some(group) = self.get(found.slot) {
                if view {
                    group.add_view();
                }
                group.touch();
            }
            *found
        })
    }

    /// Every scope that has a name now, with its name.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&NameArc<str>, GroupRef, &Group)) {
        self.names.for_each(|name, found| {
            if let Some(group) = self.get(found.slot) {
                visit(name, *found, group);
            }
        });
    }

    /// Writes new limits into every scope (a limit swap), under the table's lock.
    pub(crate) fn set_limits(&self, limit_of: impl Fn(&str) -> BaseLimit) {
        let _free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        self.names.for_each(|name, found| {
            if let Some(group) = self.get(found.slot) {
                group.scope.limit().set(limit_of(name));
            }
        });
    }

    /// One collection pass: counts idle passes, then stops and frees the scopes idle long
    /// enough, deciding again under the exclusive guard. Returns the names collected.
    pub(crate) fn collect(&self) -> Vec<NameArc<str>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut ripe = Vec::new();
        self.for_each(|name, _, group| {
            if count_idle_pass(&group.idle_passes, group.is_idle()) {
                ripe.push(NameArc::clone(name));
            }
        });
        let mut collected = Vec::new();
        for name in ripe {
            let mut freed = None;
            let removed = self.names.remove_if(&*name, |found| {
                let Some(group) = self.get(found.slot) else {
                    return false;
                };
                // Ordering: Relaxed — as in `count_idle_pass`; a lookup since the scan reset it.
                let ripe = group.idle_passes.load(Ordering::Relaxed) >= IDLE_PASSES_TO_COLLECT;
                if ripe && group.is_idle() && group.scope.try_stop() {
                    // Ordering: Relaxed — published by the reset that reuses the slot.
                    group.incarnation.fetch_add(1, Ordering::Relaxed);
                    freed = Some(found.slot);
                    true
                } else {
                    false
                }
            });
            if removed {
                if let Some(slot) = freed {
                    free.push(slot);
                }
                recent::forget(self.instance, &name);
                collected.push(name);
            }
        }
        if !collected.is_empty() {
            self.names.shrink_if_sparse();
        }
        collected
    }
}

mod recent {
    //! Each thread remembers the last few names it looked up in each table, so that the
    //! streams of a busy protocol find its scope without touching the name map. A name the
    //! cache remembers may have been collected since: the caller's first reservation tells
    //! (see the module docs), and [`forget`] drops it. Under loom the cache is loom's
    //! thread-local, so the models race cached lookups too.

    use std::cell::RefCell;

    use super::GroupRef;
    use crate::sync::per_thread;

    /// A number no other table of this process has.
    pub(super) fn new_table() -> u64 {
        crate::sync::unique_number()
    }

    /// How many (table, name) pairs a thread remembers.
    const ENTRIES: usize = 8;
    /// Names longer than this are not cached (nor compared byte by byte on every lookup).
    const LONGEST: usize = 128;

    /// (table, name, scope), most recent last.
    type Recent = RefCell<Vec<(u64, Box<str>, GroupRef)>>;

    per_thread! {
        static RECENT: Recent = RefCell::new(Vec::new());
    }

    #[inline(always)]
    pub(super) fn get(table: u64, name: &str) -> Option<GroupRef> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                recent
                    .iter()
                    .rev()
                    .find(|(t, n, _)| *t == table && &**n == name)
                    .map(|(_, _, found)| *found)
            })
            .ok()
            .flatten()
    }

    pub(super) fn put(table: u64, name: &str, found: GroupRef) {
        if name.len() > LONGEST {
            return;
        }
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent.retain(|(t, n, _)| !(*t == table && &**n == name));
                if recent.len() == ENTRIES {
                    recent.remove(0);
                }
                recent.push((table, name.into(), found));
            }
        });
    }

    pub(super) fn forget(table: u64, name: &str) {
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent.retain(|(t, n, _)| !(*t == table && &**n == name));
            }
        });
    }
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::Slots;

    #[test]
    fn slots_fill_the_head_then_the_tail_at_stable_indices() {
        let slots: Slots<u32, 2, 4> = Slots::new();
        assert_eq!(slots.get(0), None);
        for value in 0..20 {
            assert_eq!(slots.push(value), Ok(value));
        }
        assert_eq!(slots.len(), 20);
        assert!((0..20).all(|index| slots.get(index) == Some(&index)));
        assert_eq!(slots.get(20), None);
        let listed: Vec<_> = slots.iter().map(|(index, value)| (index, *value)).collect();
        assert_eq!(
            listed,
            (0..20).map(|index| (index, index)).collect::<Vec<_>>()
        );
    }
}

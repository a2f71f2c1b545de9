//! Peers: [`PeerNode`] (a peer's scope, and its scopes within protocols and services), the
//! registry that finds one by [`PeerId`], and their collection.
//!
//! # Finding a peer
//!
//! The registry is a sharded map whose hash is seeded per map (peers choose their IDs) and
//! covers only the ID's digest. On the stream path a per-thread cache of recently used peers
//! comes first, so opening a stream on a busy peer touches no map. A cached node may have
//! been collected since: collection *stops* a node before it removes it (every word of its
//! counters is swapped to a stopped state, see [`crate::account::plain`]), so the stream's
//! first reservation on it is refused as stopped and the stream looks the peer up again in
//! the registry. A cached `Arc` keeps only the node's memory; it is not a reference that
//! keeps the scope from being collected.
//!
//! # A peer's scopes within protocols and services
//!
//! They live in the peer's node ([`Members`]), in slots found by a scan of the peer's first
//! few members (and past those, an index by key, so a peer with many stays O(1)), so a
//! stream reaches its protocol-peer and service-peer scopes from its peer without hashing the
//! peer's ID again. Slots are reused after collection, with the same
//! stop-then-check protocol as protocol scopes ([`super::groups`]): a member is keyed by the
//! group's slot and incarnation, and a stream checks the key after its first reservation.
//!
//! # Collection
//!
//! A peer is collected when two passes in a row found it holding nothing (memory included),
//! with no view on it and not pinned by `set_limit`; the decision is taken again, and the node
//! stopped, under the registry's exclusive shard guard. Views are counted while a shard guard
//! is held, so collection never misses one. A member is collected likewise under its peer's
//! member lock; a peer that holds nothing has members that hold nothing (every stream counted
//! by a member is counted by its peer).

use std::hash::{Hash, Hasher};

use libp2p_identity::PeerId;

use super::{
    Root,
    groups::{self, GroupKind, GroupRef, Slots},
    viewed::Viewed,
};
use crate::{
    account::Plain,
    limits::BaseLimit,
    sync::{Arc, AtomicBool, AtomicU8, AtomicU32, AtomicU64, LimitSlot, Mutex, Ordering, Registry},
};

/// A peer's key in the registry: hashed on its digest alone (the public key or its hash),
/// which is what tells peers apart; equality still compares the whole ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerKey(pub(crate) PeerId);

impl Hash for PeerKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_ref().digest());
    }
}

/// A peer's scope and its scopes within protocols and services.
#[derive(Debug)]
pub(crate) struct PeerNode {
    pub(crate) scope: Plain,
    pub(crate) id: PeerId,
    pub(crate) members: Members,
    /// The graph this peer belongs to (a stream reaches the fixed scopes and the protocol
    /// tables through it).
    pub(crate) root: Arc<Root>,
    /// What views keep on the scope.
    pub(crate) viewed: Viewed,
    /// Views, and spans and guards begun through views.
    views: AtomicU64,
    /// Set by `set_limit`: collection keeps the scope forever (go's "sticky").
    sticky: AtomicBool,
    idle_passes: AtomicU8,
}

impl PeerNode {
    fn new(root: Arc<Root>, id: PeerId, limit: BaseLimit) -> Self {
        PeerNode {
            scope: Plain::new(limit),
            id,
            members: Members::new(),
            root,
            viewed: Viewed::new(),
            views: AtomicU64::new(0),
            sticky: AtomicBool::new(false),
            idle_passes: AtomicU8::new(0),
        }
    }

    /// Counts one more view. The caller holds a view already, or the registry's shard guard.
    pub(crate) fn add_view(&self) {
        // Ordering: Relaxed — a reference count taken under the guard or from a live view.
        self.views.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops one view.
    pub(crate) fn drop_view(&self) {
        // Ordering: Release — the view's releases happen-before the collector's Acquire read
        // of the count.
        self.views.fetch_sub(1, Ordering::Release);
    }

    /// Pins the scope: collection keeps it.
    pub(crate) fn make_sticky(&self) {
        // Ordering: Relaxed — only ever set, through a live view.
        self.sticky.store(true, Ordering::Relaxed);
    }

    #[inline]
    fn touch(&self) {
        groups::touch(&self.idle_passes);
    }

    /// Whether the peer can be collected: no view, not pinned, holding nothing.
    fn is_idle(&self) -> bool {
        // Ordering: Acquire — pairs with the Release of the last view's drop.
        if self.views.load(Ordering::Acquire) != 0 {
            return false;
        }
        // Ordering: Relaxed — set through a view, which the check above has seen gone.
        !self.sticky.load(Ordering::Relaxed) && self.scope.stat().is_empty()
    }
}

/// What a member is keyed by: the group's kind, slot and incarnation (never 0: incarnations
/// start at 1).
pub(crate) fn member_key(kind: GroupKind, group: GroupRef) -> u64 {
    let kind = match kind {
        GroupKind::Protocol => 0,
        GroupKind::Service => 1 << 63,
    };
    kind | (u64::from(group.incarnation) & 0x7fff_ffff) << 32 | u64::from(group.slot)
}

/// The group a member key names (its incarnation modulo 2^31, as [`member_key`] keeps it).
fn key_group(key: u64) -> (GroupKind, GroupRef) {
    let kind = if key >> 63 == 0 {
        GroupKind::Protocol
    } else {
        GroupKind::Service
    };
    let group = GroupRef {
        slot: key as u32,
        incarnation: ((key >> 32) as u32) & !(1 << 31),
    };
    (kind, group)
}

/// A peer's scope within one protocol or service.
#[derive(Debug)]
pub(crate) struct Member {
    /// The member's key ([`member_key`]); 0 while the slot is free.
    key: AtomicU64,
    pub(crate) scope: Plain,
    idle_passes: AtomicU8,
}

impl Member {
    /// Whether the slot is still keyed `key` (checked after the first reservation on it).
    #[inline]
    pub(crate) fn is(&self, key: u64) -> bool {
        // Ordering: Relaxed — read after a reservation whose Acquire ordered it after the
        // reset that published a new key (see the module docs).
        self.key.load(Ordering::Relaxed) == key
    }
}

/// Members a lookup scans before it asks the index: a peer uses a handful of protocols and
/// services, and a scan of a few slots is cheaper than a hash.
const SCANNED: usize = 8;

/// A peer's members; see the module docs.
#[derive(Debug)]
pub(crate) struct Members {
    slots: Slots<Member, 2, 4>,
    /// The members past the first [`SCANNED`] slots by key, so that a peer with many of them
    /// (a caller naming many protocols) is still found in O(1); replaced, under the lock,
    /// when it is half full.
    index: LimitSlot<MemberIndex>,
    /// Serializes inserts, reuse, collection and limit swaps of the members; holds the slots
    /// that collection freed, for reuse.
    lock: Mutex<Vec<u32>>,
}

/// An open-addressing table of member slots by key. Entries are `slot + 1` (0: empty); a
/// lookup probes until an empty entry and checks each slot's key itself, so entries left
/// pointing at a slot that was freed or keyed anew only cost a probe until the next rebuild.
#[derive(Debug, Default)]
struct MemberIndex {
    entries: Box<[AtomicU32]>,
    /// Entries written, live or stale (written under the members' lock only).
    used: AtomicU32,
}

impl MemberIndex {
    fn with_capacity(entries: usize) -> MemberIndex {
        MemberIndex {
            entries: (0..entries).map(|_| AtomicU32::new(0)).collect(),
            used: AtomicU32::new(0),
        }
    }

    /// Where a probe for `key` starts (Fibonacci hashing of the key).
    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (self.entries.len() - 1)
    }

    /// The slot keyed `key`, if the table has it.
    fn find(&self, key: u64, slots: &Slots<Member, 2, 4>) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mut at = self.home(key);
        for _ in 0..self.entries.len() {
            // Ordering: Acquire — pairs with the Release store of the entry, which the key
            // store of its member precedes.
            let entry = self.entries[at].load(Ordering::Acquire);
            let slot = entry.checked_sub(1)?;
            if slots.get(slot).is_some_and(|member| member.is(key)) {
                return Some(slot);
            }
            at = (at + 1) & (self.entries.len() - 1);
        }
        None
    }

    /// Adds `slot` under `key`; false if the table is too full (the caller rebuilds it).
    /// Under the members' lock.
    fn insert(&self, key: u64, slot: u32) -> bool {
        // Ordering: Relaxed — `used` is read and written under the members' lock only.
        let used = self.used.load(Ordering::Relaxed) as usize;
        if (used + 1) * 2 > self.entries.len() {
            return false;
        }
        let mut at = self.home(key);
        // Ordering: Relaxed — entries are written under the lock, so this thread wrote the
        // last value of each.
        while self.entries[at].load(Ordering::Relaxed) != 0 {
            at = (at + 1) & (self.entries.len() - 1);
        }
        // Ordering: Release — publishes the member's key (stored before) to lookups that
        // Acquire-load the entry.
        self.entries[at].store(slot + 1, Ordering::Release);
        // Ordering: Relaxed — see above.
        self.used.store(used as u32 + 1, Ordering::Relaxed);
        true
    }
}

impl Members {
    fn new() -> Self {
        Members {
            slots: Slots::new(),
            index: LimitSlot::new(Arc::new(MemberIndex::default())),
            lock: Mutex::new(Vec::new()),
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, slot: u32) -> Option<&Member> {
        self.slots.get(slot)
    }

    /// What the member keyed `key` holds, if there is one.
    pub(crate) fn stat_of(&self, key: u64) -> Option<crate::types::ScopeStat> {
        Some(self.get(self.slot_of(key)?)?.scope.stat())
    }

    /// The slot keyed `key`, if any: a scan of the first slots, then the index.
    #[inline(always)]
    fn slot_of(&self, key: u64) -> Option<u32> {
        let scanned = self.slots.find_within(SCANNED, |member| member.is(key));
        match scanned {
            Some((slot, _)) => Some(slot),
            None if self.slots.len() as usize > SCANNED => {
                self.index.with(|index| index.find(key, &self.slots))
            }
            None => None,
        }
    }

    /// The slot keyed `key`, if any, counted as a use.
    #[inline(always)]
    fn find(&self, key: u64) -> Option<u32> {
        let slot = self.slot_of(key)?;
        if let Some(member) = self.get(slot) {
            groups::touch(&member.idle_passes);
        }
        Some(slot)
    }

    /// The slot keyed `key`, made with the limit `limit` gives (under the members' lock,
    /// which limit swaps also take) if there is none; and whether it was made. Amortised
    /// O(1) however many members the peer has.
    #[inline(always)]
    pub(crate) fn find_or_insert(
        &self,
        key: u64,
        limit: impl FnOnce() -> BaseLimit,
    ) -> (u32, bool) {
        if let Some(slot) = self.find(key) {
            return (slot, false);
        }
        self.insert(key, limit)
    }

    /// [`find_or_insert`](Self::find_or_insert) of a key not found: under the lock.
    #[inline(never)]
    fn insert(&self, key: u64, limit: impl FnOnce() -> BaseLimit) -> (u32, bool) {
        let mut free = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = self.find(key) {
            return (slot, false);
        }
        let limit = limit();
        let reused = free
            .pop()
            .and_then(|slot| Some((slot, self.slots.get(slot)?)));
        let slot = if let Some((slot, member)) = reused {
            debug_assert!(member.is(0) && member.scope.is_stopped(), "a freed slot");
            // Ordering: Relaxed (both) — published by the reset's Release store.
            member.key.store(key, Ordering::Relaxed);
            member.idle_passes.store(0, Ordering::Relaxed);
            member.scope.reset(limit);
            slot
        } else {
            let member = Member {
                key: AtomicU64::new(key),
                scope: Plain::new(limit),
                idle_passes: AtomicU8::new(0),
            };
            // Four billion members of one peer cannot be; a slot past the table is one that
            // every lookup finds empty.
            match self.slots.push(member) {
                Ok(slot) => slot,
                Err(_) => return (u32::MAX, true),
            }
        };
        if slot as usize >= SCANNED {
            self.index_slot(key, slot);
        }
        (slot, true)
    }

    /// Adds `slot` to the index under `key`, replacing the index by one twice the size of
    /// the live members when it is half full (dropping entries of freed slots). Under the
    /// members' lock.
    fn index_slot(&self, key: u64, slot: u32) {
        let index = self.index.load_full();
        if index.insert(key, slot) {
            return;
        }
        let live: Vec<(u64, u32)> = self
            .slots
            .iter()
            .skip(SCANNED)
            // Ordering: Relaxed — keys change only under the lock held here.
            .map(|(slot, member)| (member.key.load(Ordering::Relaxed), slot))
            .filter(|&(key, _)| key != 0)
            .collect();
        let rebuilt = MemberIndex::with_capacity((live.len() * 4).next_power_of_two().max(16));
        for (key, slot) in live {
            let fits = rebuilt.insert(key, slot);
            debug_assert!(
                fits,
                "a table four times the live members has room for them"
            );
        }
        self.index.store(Arc::new(rebuilt));
    }

    /// Every member in use, with its key.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(u32, GroupKind, GroupRef, &Member)) {
        for (slot, member) in self.slots.iter() {
            // Ordering: Relaxed — a listing.
            let key = member.key.load(Ordering::Relaxed);
            if key != 0 {
                let (kind, group) = key_group(key);
                visit(slot, kind, group, member);
            }
        }
    }

    /// Writes new limits into every member (a limit swap), under the members' lock.
    fn set_limits(&self, limit_of: impl Fn(GroupKind, GroupRef) -> Option<BaseLimit>) {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.for_each(|_, kind, group, member| {
            if let Some(limit) = limit_of(kind, group) {
                member.scope.limit().set(limit);
            }
        });
    }

    /// One collection pass over the members: frees those idle for long enough, and at once
    /// those whose group was collected (`live` says whether a group is). Returns how many.
    fn collect(&self, live: impl Fn(GroupKind, GroupRef) -> bool) -> usize {
        let mut free = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut collected = 0;
        for (slot, member) in self.slots.iter() {
            // Ordering: Relaxed — keys change only under the lock held here.
            let key = member.key.load(Ordering::Relaxed);
            if key == 0 {
                continue;
            }
            let (kind, group) = key_group(key);
            let idle = member.scope.stat().is_empty();
            let ripe =
                groups::count_idle_pass(&member.idle_passes, idle) || (idle && !live(kind, group));
            if ripe && member.scope.try_stop() {
                // Ordering: Relaxed — the slot is stopped; a reuse publishes its new key.
                member.key.store(0, Ordering::Relaxed);
                free.push(slot);
                collected += 1;
            }
        }
        collected
    }
}

/// The peers of one graph.
#[derive(Debug)]
pub(crate) struct Peers {
    map: Registry<PeerKey, Arc<PeerNode>>,
}

/// Where a lookup found a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// This thread's cache: the node may have been collected since (see the module docs).
    Cached,
    /// The registry.
    Registered,
    /// The registry, where the lookup made the scope.
    Created,
}

impl Peers {
    pub(crate) fn new() -> Self {
        Peers {
            map: Registry::new(),
        }
    }

    /// The scope of `id`, from this thread's cache if it is there, else from the registry
    /// (made if needed). A cached node is confirmed by the caller's first reservation.
    #[inline]
    pub(crate) fn find(root: &Arc<Root>, id: &PeerId) -> (Arc<PeerNode>, Found) {
        if let Some(node) = recent::get(root, id) {
            node.touch();
            return (node, Found::Cached);
        }
        let (node, found) = Peers::lookup(root, id);
        recent::put(root, &node);
        (node, found)
    }

    /// The scope of `id` from the registry, made if needed (with the peer's limit read under
    /// the shard guard, so a new scope never keeps a limit older than the last swap).
    pub(crate) fn lookup(root: &Arc<Root>, id: &PeerId) -> (Arc<PeerNode>, Found) {
        let make = || {
            Arc::new(PeerNode::new(
                Arc::clone(root),
                *id,
                root.limit_of(|l| l.peer_limits(id)),
            ))
        };
        let (node, created) = root.peers.map.with_or_insert(&PeerKey(*id), make, |node| {
            node.touch();
            Arc::clone(node)
        });
        (
            node,
            if created {
                Found::Created
            } else {
                Found::Registered
            },
        )
    }

    /// A view of the scope of `id` (made if needed), counted while the shard guard is held.
    pub(crate) fn view(root: &Arc<Root>, id: &PeerId) -> (Arc<PeerNode>, bool) {
        let make = || {
            Arc::new(PeerNode::new(
                Arc::clone(root),
                *id,
                root.limit_of(|l| l.peer_limits(id)),
            ))
        };
        root.peers.map.with_or_insert(&PeerKey(*id), make, |node| {
            node.add_view();
            node.touch();
            Arc::clone(node)
        })
    }

    /// What the scope of `id` holds, if it has one (looked up without making it).
    pub(crate) fn stat_of(&self, id: &PeerId) -> Option<crate::types::ScopeStat> {
        self.map.with(&PeerKey(*id), |node| node.scope.stat())
    }

    /// The registered scope of `id`, if it has one (looked up without making it).
    pub(crate) fn get(&self, id: &PeerId) -> Option<Arc<PeerNode>> {
        self.map.get(&PeerKey(*id))
    }

    /// Makes sure `id` has a scope in the registry when an operation that found it in this
    /// thread's cache is refused before its first reservation on it could tell that the
    /// cached node was collected: go makes the peer's scope even for a refused stream or
    /// connection.
    pub(crate) fn keep_registered(root: &Arc<Root>, id: &PeerId, node: &PeerNode, found: Found) {
        if found == Found::Cached && node.scope.is_stopped() {
            Peers::forget(root, id);
            let _ = Peers::lookup(root, id);
        }
    }

    /// Forgets this thread's cached node for `id` (it was stopped).
    pub(crate) fn forget(root: &Root, id: &PeerId) {
        recent::forget(root, id);
    }

    /// Every registered peer.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&PeerId, &Arc<PeerNode>)) {
        self.map.for_each(|key, node| visit(&key.0, node));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Empties the registry (the manager is gone: this breaks the cycle between the nodes and
    /// the root; handles still alive keep their nodes).
    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    /// Writes new limits into every peer and member (a limit swap).
    pub(crate) fn set_limits(
        &self,
        peer_limit: impl Fn(&PeerId) -> BaseLimit,
        member_limit: impl Fn(GroupKind, GroupRef) -> Option<BaseLimit>,
    ) {
        self.for_each(|id, node| {
            node.scope.limit().set(peer_limit(id));
            node.members.set_limits(&member_limit);
        });
    }

    /// One collection pass: members of every peer, then the peers idle for long enough.
    /// Returns the peers collected.
    pub(crate) fn collect(&self, live_group: impl Fn(GroupKind, GroupRef) -> bool) -> Vec<PeerId> {
        let mut ripe = Vec::new();
        self.for_each(|id, node| {
            node.members.collect(&live_group);
            if groups::count_idle_pass(&node.idle_passes, node.is_idle()) {
                ripe.push(*id);
            }
        });
        let mut collected = Vec::new();
        for id in ripe {
            let removed = self.map.remove_if(&PeerKey(id), |node| {
                // Ordering: Relaxed — as in `count_idle_pass`; a lookup since the scan reset it.
                let ripe =
                    node.idle_passes.load(Ordering::Relaxed) >= groups::IDLE_PASSES_TO_COLLECT;
                ripe && node.is_idle() && node.scope.try_stop()
            });
            if removed {
                collected.push(id);
            }
        }
        if !collected.is_empty() {
            self.map.shrink_if_sparse();
        }
        collected
    }
}

mod recent {
    //! Each thread remembers the peers it used last, in a small direct-mapped cache (a slot
    //! per last byte of the digest). An entry holds the node's memory, nothing more: the
    //! node may have been collected since, which the caller's first reservation tells. Under
    //! loom the cache is loom's thread-local, so the models race cached lookups too.

    use std::cell::RefCell;

    use libp2p_identity::PeerId;

    use super::{PeerNode, Root};
    use crate::sync::{Arc, per_thread};

    /// Slots per thread.
    const SLOTS: usize = 8;

    per_thread! {
        static RECENT: RefCell<[Option<Arc<PeerNode>>; SLOTS]> =
            RefCell::new([const { None }; SLOTS]);
    }

    #[inline]
    fn slot(id: &PeerId) -> usize {
        usize::from(id.as_ref().digest().last().copied().unwrap_or(0)) % SLOTS
    }

    #[inline]
    pub(super) fn get(root: &Arc<Root>, id: &PeerId) -> Option<Arc<PeerNode>> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let node = recent[slot(id)].as_ref()?;
                (node.id == *id && Arc::ptr_eq(&node.root, root)).then(|| Arc::clone(node))
            })
            .ok()
            .flatten()
    }

    pub(super) fn put(_root: &Arc<Root>, node: &Arc<PeerNode>) {
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent[slot(&node.id)] = Some(Arc::clone(node));
            }
        });
    }

    pub(super) fn forget(root: &Root, id: &PeerId) {
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                let entry = &mut recent[slot(id)];
                if entry
                    .as_ref()
                    .is_some_and(|node| node.id == *id && std::ptr::eq(&*node.root, root))
                {
                    *entry = None;
                }
            }
        });
    }
}

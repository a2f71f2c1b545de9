//! The one door through which atomics, shared pointers and the concurrent containers enter the
//! engine.
//!
//! Normal builds use `std`, `portable-atomic` (64-bit atomics on every target, lock-free where
//! the hardware allows), `arc-swap` and `dashmap`. Under `RUSTFLAGS="--cfg rcmgr_loom"` every
//! item here maps to a [loom] type instead, so the model checker sees each atomic access. loom
//! cannot see inside `arc-swap` or `dashmap`, so those two are replaced by loom-visible stand-ins
//! with the same small API ([`LimitSlot`], [`Registry`]); [`OnceSlot`] likewise stands in for
//! `std::sync::OnceLock`.
//!
//! No other module names `std::sync::atomic`, `portable_atomic`, `arc_swap` or `dashmap`.
//!
//! [loom]: https://docs.rs/loom

use std::{borrow::Borrow, fmt, hash::Hash};

#[cfg(not(rcmgr_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(rcmgr_loom))]
pub(crate) use std::sync::atomic::{Ordering, fence};

#[cfg(not(rcmgr_loom))]
pub(crate) use portable_atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(rcmgr_loom))]
pub(crate) use std::sync::Mutex;

#[cfg(rcmgr_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(rcmgr_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(rcmgr_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

pub(crate) use crossbeam_utils::CachePadded;

/// The value of `arc` if this was its last reference (std's `Arc::into_inner`, which loom's
/// `Arc` lacks; there `try_unwrap`, which under loom's scheduler is what the models check).
#[inline]
pub(crate) fn arc_into_inner<T>(arc: Arc<T>) -> Option<T> {
    #[cfg(not(rcmgr_loom))]
    {
        Arc::into_inner(arc)
    }
    #[cfg(rcmgr_loom)]
    {
        Arc::try_unwrap(arc).ok()
    }
}

/// Waits politely in a retry loop: spins, then yields. Under loom it yields to the scheduler so
/// the model explores the other threads.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    #[cfg(not(rcmgr_loom))]
    inner: crossbeam_utils::Backoff,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Backs off after a lost compare-and-swap: the other thread made progress.
    #[inline]
    pub(crate) fn spin(&self) {
        #[cfg(not(rcmgr_loom))]
        self.inner.spin();
        #[cfg(rcmgr_loom)]
        loom::thread::yield_now();
    }

    /// Waits for another thread to finish a short critical step (a transfer in progress).
    #[inline]
    pub(crate) fn snooze(&self) {
        #[cfg(not(rcmgr_loom))]
        self.inner.snooze();
        #[cfg(rcmgr_loom)]
        loom::thread::yield_now();
    }
}

/// The one compare-and-swap loop for words whose next value is computed from the current
/// one: applies `next` to the word's value and stores the result, retrying (with a short
/// backoff) when another thread got there first. `next` may refuse, which leaves the word
/// untouched. Returns the value the successful swap replaced.
///
/// `success` is the ordering of the successful swap; the loads that feed `next` use its
/// acquire half, and a failed swap reads nothing more.
#[inline]
pub(crate) fn update<E>(
    word: &AtomicU64,
    success: Ordering,
    mut next: impl FnMut(u64) -> Result<u64, E>,
) -> Result<u64, E> {
    let load = match success {
        Ordering::AcqRel | Ordering::Acquire | Ordering::SeqCst => Ordering::Acquire,
        _ => Ordering::Relaxed,
    };
    let backoff = Backoff::new();
    // Ordering: `load` — see above.
    let mut current = word.load(load);
    loop {
        let new = next(current)?;
        // Ordering: `success` on success, `load` on failure — see above.
        match word.compare_exchange_weak(current, new, success, load) {
            Ok(previous) => return Ok(previous),
            Err(actual) => {
                current = actual;
                backoff.spin();
            }
        }
    }
}

/// The calling thread's slot among the pools of a sharded scope: one read of a thread-local
/// per public operation, passed down to every sharded scope the operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(usize);

impl Slot {
    /// The slot numbered `index`, for tests that play several threads on one.
    #[cfg(test)]
    pub(crate) fn numbered(index: usize) -> Slot {
        Slot(index)
    }

    /// The slot's number; a scope with `n` pools (a power of two) uses `index & (n - 1)`.
    #[inline]
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// The calling thread's slot, handed out round-robin the first time a thread asks. Under
/// loom a loom-visible counter and thread-local hand them out, so that every execution of a
/// model assigns the same slots in the same schedule.
#[inline]
pub(crate) fn thread_slot() -> Slot {
    #[cfg(not(rcmgr_loom))]
    {
        use std::cell::Cell;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        Slot(SLOT.with(|slot| {
            let mut index = slot.get();
            if index == usize::MAX {
                // Ordering: Relaxed — only distinct-enough numbers are needed.
                index = NEXT.fetch_add(1, Ordering::Relaxed);
                slot.set(index);
            }
            index
        }))
    }
    #[cfg(rcmgr_loom)]
    {
        use std::cell::Cell;
        loom::lazy_static! {
            static ref NEXT: AtomicUsize = AtomicUsize::new(0);
        }
        loom::thread_local! {
            static SLOT: Cell<usize> = Cell::new(usize::MAX);
        }
        Slot(SLOT.with(|slot| {
            let mut index = slot.get();
            if index == usize::MAX {
                // Ordering: Relaxed — only distinct numbers are needed.
                index = NEXT.fetch_add(1, Ordering::Relaxed);
                slot.set(index);
            }
            index
        }))
    }
}

/// Declares per-thread storage with a constant initializer: std's `thread_local!` (its const
/// form, with no lazy-initialization check on access), or loom's under loom, where every
/// modelled thread gets its own (loom runs them all on one OS thread, which would share
/// std's) and drops it when it ends.
macro_rules! per_thread {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(rcmgr_loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(rcmgr_loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use per_thread;

/// A number no earlier call in this process returned (to tell tables apart in a cache that
/// outlives them). Process-wide and outside any loom model: nothing synchronizes through it.
pub(crate) fn unique_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Ordering: Relaxed — only distinct numbers are needed.
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How many pools a sharded scope has: the machine's parallelism rounded up to a power of
/// two, at most 64 (two under loom, so that models exercise leasing across pools).
pub(crate) fn shard_count() -> usize {
    #[cfg(not(rcmgr_loom))]
    {
        static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *COUNT.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .next_power_of_two()
                .min(64)
        })
    }
    #[cfg(rcmgr_loom)]
    {
        2
    }
}

/// Runs a loom model of the crate's internals, bounded by `LOOM_MAX_PREEMPTIONS` (2 when
/// unset), as the `loom-tests` crate runs the public ones.
#[cfg(all(test, rcmgr_loom))]
pub(crate) fn loom_check(model: impl Fn() + Sync + Send + 'static) {
    let bound = match std::env::var("LOOM_MAX_PREEMPTIONS") {
        Ok(value) => value
            .trim()
            .parse()
            .expect("LOOM_MAX_PREEMPTIONS must be a whole number"),
        Err(_) => 2,
    };
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    // A seqlock writer stores eight fields and its readers retry while it does, so a model
    // of three threads takes more branches than loom's default of 1,000 (the same bound as
    // the loom-tests crate's; `LOOM_MAX_BRANCHES` overrides both).
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 10_000;
    }
    builder.check(model);
}

/// The slot that holds the active limit snapshot: an `ArcSwap` in normal builds, a loom
/// `RwLock<Arc<T>>` under loom.
pub(crate) struct LimitSlot<T> {
    #[cfg(not(rcmgr_loom))]
    inner: arc_swap::ArcSwap<T>,
    #[cfg(rcmgr_loom)]
    inner: loom::sync::RwLock<Arc<T>>,
}

impl<T> LimitSlot<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            #[cfg(not(rcmgr_loom))]
            inner: arc_swap::ArcSwap::new(value),
            #[cfg(rcmgr_loom)]
            inner: loom::sync::RwLock::new(value),
        }
    }

    /// Runs `f` on the current value without taking a reference count in normal builds
    /// (arc-swap's thread-local debt slots), so concurrent readers do not contend.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        #[cfg(not(rcmgr_loom))]
        {
            f(&self.inner.load())
        }
        #[cfg(rcmgr_loom)]
        {
            let current = Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()));
            f(&current)
        }
    }

    pub(crate) fn load_full(&self) -> Arc<T> {
        #[cfg(not(rcmgr_loom))]
        {
            self.inner.load_full()
        }
        #[cfg(rcmgr_loom)]
        {
            Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
        }
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        #[cfg(not(rcmgr_loom))]
        self.inner.store(value);
        #[cfg(rcmgr_loom)]
        {
            *self.inner.write().unwrap_or_else(|e| e.into_inner()) = value;
        }
    }
}

impl<T> fmt::Debug for LimitSlot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitSlot").finish_non_exhaustive()
    }
}

/// A value written at most once and read without locking: `std::sync::OnceLock` in normal
/// builds. Under loom a loom-visible flag publishes the value so the model sees the
/// release/acquire pair (the std cell behind it is never contended there: loom runs one thread
/// at a time).
pub(crate) struct OnceSlot<T> {
    value: std::sync::OnceLock<T>,
    #[cfg(rcmgr_loom)]
    published: AtomicBool,
}

impl<T> OnceSlot<T> {
    pub(crate) fn new() -> Self {
        Self {
            value: std::sync::OnceLock::new(),
            #[cfg(rcmgr_loom)]
            published: AtomicBool::new(false),
        }
    }

    /// The value, once [`set`](Self::set) has returned on some thread that happens-before this
    /// call.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        #[cfg(rcmgr_loom)]
        {
            // Ordering: Acquire pairs with the Release in `set`, as OnceLock's own get does.
            if !self.published.load(Ordering::Acquire) {
                return None;
            }
        }
        self.value.get()
    }

    /// Stores the value; gives it back if the slot was already written.
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        self.value.set(value)?;
        #[cfg(rcmgr_loom)]
        {
            // Ordering: Release publishes the value written just above to `get`'s Acquire.
            self.published.store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceSlot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OnceSlot").field(&self.get()).finish()
    }
}

/// A concurrent map from keys to shared scopes: a sharded `DashMap` in normal builds, a loom
/// `Mutex<HashMap>` under loom (with a fixed hasher: loom replays executions, which must
/// iterate the map in the same order each time).
///
/// Peers choose their own IDs, so the hash must not be predictable: the map uses foldhash's
/// quality hasher with a seed drawn at random per process and per map. An attacker who cannot
/// observe hashes cannot aim keys at one bucket, and a peer ID costs a key pair and a
/// handshake to use. foldhash is several times cheaper than std's SipHash on the 38-byte IDs
/// every stream looks up, which is why it replaced it (docs/performance.md).
///
/// Every access runs while the shard guard is held, so a value visited in
/// [`with_or_insert`](Self::with_or_insert) is a reference taken under that guard, and
/// [`remove_if`](Self::remove_if) decides under the exclusive guard: the two cannot interleave.
pub(crate) struct Registry<K, V> {
    #[cfg(not(rcmgr_loom))]
    map: dashmap::DashMap<K, V, foldhash::quality::RandomState>,
    #[cfg(rcmgr_loom)]
    map: loom::sync::Mutex<std::collections::HashMap<K, V, LoomHasher>>,
}

/// The loom build's hasher: std's, with its fixed default keys.
#[cfg(rcmgr_loom)]
type LoomHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

impl<K: Hash + Eq, V> Registry<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(rcmgr_loom))]
            map: dashmap::DashMap::with_hasher(foldhash::quality::RandomState::default()),
            #[cfg(rcmgr_loom)]
            map: loom::sync::Mutex::new(std::collections::HashMap::default()),
        }
    }

    /// A clone of the value under `key`, taken while the shard guard is held.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        #[cfg(not(rcmgr_loom))]
        {
            self.map.get(key).map(|entry| entry.value().clone())
        }
        #[cfg(rcmgr_loom)]
        {
            self.lock().get(key).cloned()
        }
    }

    /// Runs `visit` on the value under `key` while the shard guard is held (shared), if there
    /// is one. A [`remove_if`](Self::remove_if) of that entry cannot interleave with `visit`.
    pub(crate) fn with<Q, R>(&self, key: &Q, visit: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        #[cfg(not(rcmgr_loom))]
        {
            self.map.get(key).map(|entry| visit(entry.value()))
        }
        #[cfg(rcmgr_loom)]
        {
            self.lock().get(key).map(visit)
        }
    }

    /// Runs `visit` on the value under `key` while the shard guard is held, inserting `make()`
    /// first (under the exclusive guard, where `visit` then runs too) if there is none. So a
    /// value that `visit` updates cannot be removed by [`remove_if`](Self::remove_if) between
    /// the lookup and the update. Also says whether the value was inserted.
    pub(crate) fn with_or_insert<R>(
        &self,
        key: &K,
        make: impl FnOnce() -> V,
        visit: impl Fn(&V) -> R,
    ) -> (R, bool)
    where
        K: Clone,
    {
        if let Some(found) = self.with(key, &visit) {
            return (found, false);
        }
        #[cfg(not(rcmgr_loom))]
        {
            match self.map.entry(key.clone()) {
                dashmap::Entry::Occupied(found) => (visit(found.get()), false),
                dashmap::Entry::Vacant(vacant) => (visit(vacant.insert(make()).value()), true),
            }
        }
        #[cfg(rcmgr_loom)]
        {
            match self.lock().entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(found) => (visit(found.get()), false),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    (visit(vacant.insert(make())), true)
                }
            }
        }
    }

    /// Removes the entry under `key` if `condition` holds for it, deciding under the exclusive
    /// shard guard. Returns whether it was removed.
    pub(crate) fn remove_if<Q>(&self, key: &Q, condition: impl FnOnce(&V) -> bool) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        #[cfg(not(rcmgr_loom))]
        {
            self.map
                .remove_if(key, |_, value| condition(value))
                .is_some()
        }
        #[cfg(rcmgr_loom)]
        {
            let mut map = self.lock();
            match map.get(key) {
                Some(value) if condition(value) => map.remove(key).is_some(),
                _ => false,
            }
        }
    }

    /// Calls `visit` on every entry, one shard at a time under its shared guard (lookups of
    /// existing entries go on meanwhile).
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&K, &V)) {
        #[cfg(not(rcmgr_loom))]
        for entry in self.map.iter() {
            visit(entry.key(), entry.value());
        }
        #[cfg(rcmgr_loom)]
        for (key, value) in self.lock().iter() {
            visit(key, value);
        }
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        #[cfg(not(rcmgr_loom))]
        self.map.clear();
        #[cfg(rcmgr_loom)]
        self.lock().clear();
    }

    /// Gives memory back when the map has become sparse (under a quarter of its capacity
    /// used), so that a burst of keys, once collected, does not keep its table forever. Each
    /// shard is rehashed under its exclusive guard, briefly.
    pub(crate) fn shrink_if_sparse(&self) {
        #[cfg(not(rcmgr_loom))]
        if self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to_fit();
        }
        #[cfg(rcmgr_loom)]
        {
            let mut map = self.lock();
            if map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        #[cfg(not(rcmgr_loom))]
        {
            self.map.len()
        }
        #[cfg(rcmgr_loom)]
        {
            self.lock().len()
        }
    }

    #[cfg(rcmgr_loom)]
    fn lock(&self) -> loom::sync::MutexGuard<'_, std::collections::HashMap<K, V, LoomHasher>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K, V> fmt::Debug for Registry<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

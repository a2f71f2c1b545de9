//! Connections at once per subnet and per network: the counters of the per-IP limits, and
//! the [`IpCount`] a connection keeps of what it was counted against. The entry of a subnet
//! also holds that subnet's connection rate-limit bucket, so that a connection whose rate
//! limit and count name the same subnet (an IPv4 address under go's defaults) finds both in
//! one lookup.
//!
//! # Synchronization
//!
//! Each counter is an atomic in a [`SweptMap`]. A count is taken and checked against its limit
//! by one compare-and-swap, made while the map's shard guard is held (shared for an existing
//! counter, exclusive when the counter is created), and an entry is removed by a sweep under
//! the exclusive guard only if it still reads zero connections and a full bucket there. So an
//! increment can never land on a counter that has just been removed, and the map holds the
//! addresses with connections or recent connection attempts plus those that had some since
//! the last sweep. The counts publish nothing: Relaxed; the shard locks order creation and
//! removal.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    bucket::{Bucket, Expiry},
    swept::{Forgettable, SweptMap},
    table::{LengthSet, hash_network, subnet_of},
};
use crate::{
    error::AddressRange,
    sync::{self, AtomicU64, Ordering},
};

/// Which counter: one per subnet of a subnet limit, one per network with its own limit (a
/// network-prefix limit or an allowlisted network; one counter if both name the same network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CountKey {
    Subnet(IpNet),
    Network(IpNet),
}

impl std::hash::Hash for CountKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            CountKey::Subnet(subnet) => hash_network(subnet, 0, state),
            CountKey::Network(network) => hash_network(network, 1, state),
        }
    }
}

/// What one connection was counted against; the same counters are released when it closes,
/// whatever the limits are by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpCount {
    /// One network's counter.
    Network(IpNet),
    /// One counter per subnet length in `lengths`, each the subnet of `ip`.
    Subnets { ip: IpAddr, lengths: LengthSet },
}

/// A refusal: the range that was full, with its count and limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) range: AddressRange,
    pub(crate) current: u64,
    pub(crate) limit: u64,
}

/// One subnet's or network's connections, and the subnet's connection rate-limit bucket
/// (full, and unused, for a network and for a subnet length without a rate limit).
#[derive(Debug)]
pub(crate) struct AddressState {
    conns: AtomicU64,
    bucket: Bucket,
}

impl AddressState {
    fn new() -> Self {
        AddressState {
            conns: AtomicU64::new(0),
            bucket: Bucket::new(),
        }
    }

    /// The subnet's connection rate-limit bucket.
    #[inline]
    pub(crate) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Adds one connection if that keeps the count within `limit`; the count found otherwise
    /// (0 for a limit of 0, which allows nothing). Called under the shard guard.
    #[inline]
    pub(crate) fn add_conn(&self, limit: u64) -> Result<(), u64> {
        if limit == 0 {
            return Err(0);
        }
        // Ordering: Relaxed — a count checked on its own word; the shard guard held here
        // orders it against the entry's removal.
        sync::update(&self.conns, Ordering::Relaxed, |current| {
            if current.saturating_add(1) > limit {
                Err(current)
            } else {
                Ok(current + 1)
            }
        })
        .map(drop)
    }
}

impl Forgettable for AddressState {
    type At = Expiry;

    /// No connections and a bucket that a fresh one would equal.
    fn is_idle(&self, at: Expiry) -> bool {
        // Ordering: Relaxed — checked under the exclusive shard guard, which every update of
        // this counter is made under too (shared).
        self.conns.load(Ordering::Relaxed) == 0 && self.bucket.is_idle(at)
    }
}

/// The connection counters of every subnet and network that holds connections (and, until
/// the next sweep, of those that held some).
#[derive(Debug)]
pub(crate) struct ConnCounts {
    counters: SweptMap<CountKey, AddressState>,
}

impl ConnCounts {
    pub(crate) fn new() -> Self {
        ConnCounts {
            counters: SweptMap::new(),
        }
    }

    /// Forgets the entries at zero connections whose bucket is idle at `at`.
    pub(crate) fn sweep(&self, at: Expiry) {
        self.counters.sweep(at);
    }

    /// Runs `visit` on the entry of `subnet` under its shard guard, creating it (no
    /// connections, a full bucket) if there is none; `at` is when a sweep that the insertion
    /// triggers judges buckets idle.
    #[inline]
    pub(crate) fn with_subnet<R>(
        &self,
        subnet: IpNet,
        at: Expiry,
        visit: impl Fn(&AddressState) -> R,
    ) -> R {
        self.counters
            .with_or_insert(&CountKey::Subnet(subnet), AddressState::new, visit, at)
    }

    /// Counts one connection against `network`, whose limit is `limit`.
    pub(crate) fn add_to_network(
        &self,
        network: IpNet,
        range: AddressRange,
        limit: u64,
        at: Expiry,
    ) -> Result<IpCount, Full> {
        self.add(CountKey::Network(network), limit, at)
            .map_err(|current| Full {
                range,
                current,
                limit,
            })?;
        Ok(IpCount::Network(network))
    }

    /// Counts one connection from `ip` against the subnet of each `(length, limit)`, all or
    /// nothing: if one subnet is full, the counts already taken are given back, those of
    /// `taken` (counted by the caller) included.
    pub(crate) fn add_to_subnets(
        &self,
        ip: IpAddr,
        limits: &[(u8, u64)],
        taken: LengthSet,
        at: Expiry,
    ) -> Result<Option<IpCount>, Full> {
        let mut taken = Taken {
            counts: self,
            ip,
            lengths: taken,
        };
        for &(length, limit) in limits {
            let subnet = subnet_of(ip, length);
            self.add(CountKey::Subnet(subnet), limit, at)
                .map_err(|current| Full {
                    range: AddressRange::Subnet(subnet),
                    current,
                    limit,
                })?;
            taken.lengths.insert(length);
        }
        let lengths = std::mem::replace(&mut taken.lengths, LengthSet::EMPTY);
        Ok(subnets_count(ip, lengths))
    }

    /// Releases what `count` took, once.
    pub(crate) fn release(&self, count: IpCount) {
        match count {
            IpCount::Network(network) => self.sub(CountKey::Network(network)),
            IpCount::Subnets { ip, lengths } => {
                for length in lengths.longest_first() {
                    self.sub(CountKey::Subnet(subnet_of(ip, length)));
                }
            }
        }
    }

    /// Every subnet and network that holds connections, with how many.
    pub(crate) fn snapshot(&self) -> Vec<(IpNet, u64)> {
        let mut counts = Vec::new();
        self.counters.for_each(|key, count| {
            let (CountKey::Subnet(net) | CountKey::Network(net)) = key;
            // Ordering: Relaxed — a reading for display; nothing is read through it.
            let conns = count.conns.load(Ordering::Relaxed);
            if conns > 0 {
                counts.push((*net, conns));
            }
        });
        counts
    }

    /// Adds one to a counter if that keeps it within `limit`; the count found otherwise.
    fn add(&self, key: CountKey, limit: u64, at: Expiry) -> Result<(), u64> {
        if limit == 0 {
            // What `add_conn` answers, without creating an entry for a refusal.
            return Err(0);
        }
        self.counters
            .with_or_insert(&key, AddressState::new, |state| state.add_conn(limit), at)
    }

    /// Takes one from a counter (a sweep removes its entry once it is idle).
    fn sub(&self, key: CountKey) {
        let released = self.counters.with(&key, |count| {
            // Ordering: Relaxed — as in `AddressState::add_conn`.
            sync::update(&count.conns, Ordering::Relaxed, |current| {
                current.checked_sub(1).ok_or(())
            })
        });
        if !matches!(released, Some(Ok(_))) {
            // Released more than was counted: a bug that the `IpCount` is there to prevent.
            tracing::error!(?key, "BUG: released a per-ip connection count not held");
        }
    }
}

/// The count of the subnets of `ip` in `lengths`, if there are any.
#[inline]
pub(crate) fn subnets_count(ip: IpAddr, lengths: LengthSet) -> Option<IpCount> {
    (!lengths.is_empty()).then_some(IpCount::Subnets { ip, lengths })
}

/// The subnet counts taken so far by one `add_to_subnets`, given back if it does not finish.
struct Taken<'a> {
    counts: &'a ConnCounts,
    ip: IpAddr,
    lengths: LengthSet,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.lengths.is_empty() {
            self.counts.release(IpCount::Subnets {
                ip: self.ip,
                lengths: self.lengths,
            });
        }
    }
}

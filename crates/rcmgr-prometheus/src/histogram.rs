//! A histogram of atomics: what an observation costs is two increments and an add, no lock
//! (prometheus-client's own histogram takes a mutex on every observation).
//!
//! # Synchronization
//!
//! Every counter is a Relaxed statistic: a scrape reads each on its own, so sum, count and
//! buckets may be one observation apart, as in any lock-free histogram.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// go's buckets for connection and stream counts per peer.
pub(crate) const COUNT_BUCKETS: [f64; 15] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 16.0, 32.0, 64.0, 128.0, 256.0,
];

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * KIB;
const GIB: f64 = 1024.0 * MIB;

/// go's buckets for memory per peer and per connection: 1K, 4K, 32K, 1M, 32M, 256M, 512M,
/// 1G, 2G, 4G.
pub(crate) const MEMORY_BUCKETS: [f64; 10] = [
    KIB,
    4.0 * KIB,
    32.0 * KIB,
    MIB,
    32.0 * MIB,
    256.0 * MIB,
    512.0 * MIB,
    GIB,
    2.0 * GIB,
    4.0 * GIB,
];

/// Observations counted into fixed buckets, plus one for everything above the last bound.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow bucket (+Inf).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: u64) {
        let bucket = bucket_of(self.bounds, value);
        // Ordering: Relaxed (all three) — statistics; see the module docs.
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn encode(&self, encoder: &mut MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Ordering: Relaxed — statistics; see the module docs.
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let sum = self.sum.load(Ordering::Relaxed) as f64;
        let count = self.count.load(Ordering::Relaxed);
        encode_buckets(encoder, self.bounds, &counts, sum, count)
    }
}

/// The bucket `value` falls in: the first whose bound is at least `value`, else the overflow.
pub(crate) fn bucket_of(bounds: &[f64], value: u64) -> usize {
    let value = value as f64;
    bounds
        .iter()
        .position(|bound| value <= *bound)
        .unwrap_or(bounds.len())
}

/// Encodes a histogram from per-bucket (not cumulative) counts, the last for +Inf.
pub(crate) fn encode_buckets(
    encoder: &mut MetricEncoder<'_>,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
    count: u64,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect();
    encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// A histogram computed at scrape time from the values in hand.
pub(crate) struct Snapshot {
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Snapshot {
    /// The histogram of `values` over `bounds`.
    pub(crate) fn of(bounds: &[f64], values: impl IntoIterator<Item = u64>) -> Self {
        let mut snapshot = Snapshot {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        };
        for value in values {
            snapshot.counts[bucket_of(bounds, value)] += 1;
            snapshot.sum += value as f64;
            snapshot.count += 1;
        }
        snapshot
    }
}

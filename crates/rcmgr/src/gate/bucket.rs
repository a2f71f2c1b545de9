//! Token buckets: the cells that the connection rate limiter and the source-address
//! verification limiter take tokens from.
//!
//! A bucket is one atomic word holding its "theoretical arrival time" (the generic cell rate
//! algorithm, which is a token bucket written as a single timestamp): the time, in
//! nanoseconds of the gate's clock, at which the bucket will be full again. Taking a token
//! moves it one interval (`1 / rps`) later, and is refused if that would put it more than
//! `burst` intervals ahead of now. A bucket whose time is in the past is full; one whose time
//! is more than the grace period in the past can be forgotten, which is how idle subnets'
//! buckets are collected.
//!
//! # Synchronization
//!
//! A bucket is updated by one compare-and-swap loop on its word, Relaxed: it publishes
//! nothing and each decision reads the word's latest value. Where buckets live, and how their
//! removal is ordered against their updates, is [`super::rate`]'s and [`super::subnet`]'s.

use super::swept::Forgettable;
use crate::{
    sync::{self, AtomicU64, Ordering},
    types::RateLimit,
};

/// Nanoseconds per second.
const NANOS_PER_SECOND: f64 = 1e9;

/// The longest a bucket's arrival time may run ahead of now (about 146 years), so that the
/// arithmetic never overflows whatever the rate and burst.
const MAX_AHEAD_NS: u64 = 1 << 62;

/// A limit in the units the bucket works in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rule {
    /// Nanoseconds per token; at least 1.
    interval_ns: u64,
    /// How far ahead of now the arrival time may run: `burst` intervals.
    tolerance_ns: u64,
    /// The limit as configured, for errors.
    limit: RateLimit,
}

impl Rule {
    /// The rule for `limit`, or `None` if it never refuses. A rate that is not positive (which
    /// validation refuses, and the limiter leaves out) would be taken as one token every
    /// [`MAX_AHEAD_NS`]: `burst` connections, then practically none.
    pub(crate) fn new(limit: RateLimit) -> Option<Rule> {
        if limit.is_unlimited() {
            return None;
        }
        let interval = NANOS_PER_SECOND / limit.rps;
        let interval_ns = if interval.is_finite() && interval > 0.0 {
            // Saturating float-to-int conversion; at least one nanosecond.
            (interval.ceil() as u64).clamp(1, MAX_AHEAD_NS)
        } else {
            MAX_AHEAD_NS
        };
        Some(Rule {
            interval_ns,
            tolerance_ns: interval_ns
                .saturating_mul(u64::from(limit.burst))
                .min(MAX_AHEAD_NS),
            limit,
        })
    }

    /// The limit as configured, for errors.
    #[inline]
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }
}

/// One token bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    /// When the bucket is full again, in nanoseconds of the gate's clock; 0: full since the
    /// start.
    full_at_ns: AtomicU64,
}

impl Bucket {
    pub(crate) fn new() -> Self {
        Bucket {
            full_at_ns: AtomicU64::new(0),
        }
    }

    /// Takes a token if there is one at time `now_ns`.
    #[inline]
    pub(crate) fn try_take(&self, rule: &Rule, now_ns: u64) -> bool {
        // Ordering: Relaxed — the bucket publishes nothing; its word alone decides.
        sync::update(&self.full_at_ns, Ordering::Relaxed, |full_at| {
            let next = full_at.max(now_ns).saturating_add(rule.interval_ns);
            if next - now_ns > rule.tolerance_ns {
                Err(())
            } else {
                Ok(next)
            }
        })
        .is_ok()
    }
}

/// A point in time and a grace period: a bucket full for longer than that can be forgotten.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expiry {
    pub(crate) now_ns: u64,
    pub(crate) grace_ns: u64,
}

impl Forgettable for Bucket {
    type At = Expiry;

    /// Whether the bucket is one a fresh bucket would equal at `at`: never used (or full
    /// since the start), or full for longer than the grace period. A time earlier than now
    /// only keeps more buckets.
    #[inline]
    fn is_idle(&self, at: Expiry) -> bool {
        // Ordering: Relaxed — see `try_take`; a sweep calls it under the exclusive guard.
        let full_at = self.full_at_ns.load(Ordering::Relaxed);
        full_at == 0 || full_at.saturating_add(at.grace_ns) < at.now_ns
    }
}

/// A duration in nanoseconds, saturating (in 64-bit arithmetic: the gate reads the clock
/// through it on every connection).
#[inline]
pub(crate) fn duration_ns(duration: std::time::Duration) -> u64 {
    duration
        .as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(u64::from(duration.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rule = Rule::new(RateLimit {
            rps: 0.2,
            burst: 16,
        })
        .expect("a finite rule");
        let bucket = Bucket::new();
        let start = 100 * SECOND;
        assert_eq!(
            (0..20).filter(|_| bucket.try_take(&rule, start)).count(),
            16
        );
        // 0.2 per second: one token every five seconds.
        assert!(!bucket.try_take(&rule, start + 4 * SECOND));
        assert!(bucket.try_take(&rule, start + 5 * SECOND));
        assert!(!bucket.try_take(&rule, start + 5 * SECOND));
        // Full again after 16 intervals; then a whole burst again.
        let full = start + 5 * SECOND + 16 * 5 * SECOND;
        assert_eq!((0..20).filter(|_| bucket.try_take(&rule, full)).count(), 16);
    }

    #[test]
    fn zero_burst_refuses_everything_and_unlimited_nothing() {
        let rule = Rule::new(RateLimit {
            rps: 1e12,
            burst: 0,
        })
        .expect("a finite rule");
        assert!(!Bucket::new().try_take(&rule, SECOND));
        assert!(Rule::new(RateLimit::UNLIMITED).is_none());
    }

    #[test]
    fn absurd_rates_do_not_overflow() {
        for rps in [0.0, -1.0, f64::NAN, 1e-30, f64::MIN_POSITIVE] {
            let rule = Rule::new(RateLimit {
                rps,
                burst: u32::MAX,
            })
            .expect("a rule");
            let bucket = Bucket::new();
            assert!(bucket.try_take(&rule, u64::MAX / 2));
        }
    }

    #[test]
    fn durations_saturate_at_the_largest_count_of_nanoseconds() {
        use std::time::Duration;
        assert_eq!(duration_ns(Duration::new(3, 7)), 3 * SECOND + 7);
        assert_eq!(duration_ns(Duration::from_nanos(u64::MAX)), u64::MAX);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
        assert_eq!(
            duration_ns(Duration::new(u64::MAX / SECOND, 999_999_999)),
            u64::MAX
        );
    }
}

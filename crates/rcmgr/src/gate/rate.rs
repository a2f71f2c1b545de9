//! Token buckets for connection rate limits, and the limiter that checks them in go's order.
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
//! nothing and each decision reads the word's latest value. Subnet buckets live in a
//! [`SweptMap`] (the connection rate limiter's in the entries of the connection counts,
//! [`ConnCounts`]; the verification limiter's in a [`SubnetBuckets`]) and are updated while the
//! shard guard is held, so a sweep, which removes them under the exclusive guard, never removes
//! one between its lookup and its update.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    subnet::{ConnCounts, Full},
    swept::{Forgettable, SweptMap},
    table::{NetKey, subnet_of, truncated_contains},
};
use crate::{
    error::AddressRange,
    limits::{ConnRateLimits, Family, SubnetRateLimit},
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

impl Bucket {
    /// Whether the bucket is one a fresh bucket would equal at `at`: never used (or full
    /// since the start), or full for longer than the grace period. A time earlier than now
    /// only keeps more buckets.
    #[inline]
    pub(crate) fn is_idle(&self, at: Expiry) -> bool {
        // Ordering: Relaxed — see `try_take`; a sweep calls it under the exclusive guard.
        let full_at = self.full_at_ns.load(Ordering::Relaxed);
        full_at == 0 || full_at.saturating_add(at.grace_ns) < at.now_ns
    }
}

impl Forgettable for Bucket {
    type At = Expiry;

    fn is_idle(&self, at: Expiry) -> bool {
        Bucket::is_idle(self, at)
    }
}

/// A network prefix with a bucket of its own.
#[derive(Debug)]
struct PrefixBucket {
    /// The prefix, truncated.
    network: IpNet,
    rule: Option<Rule>,
    bucket: Bucket,
}

/// A compiled [`ConnRateLimits`]. The network-prefix and global buckets live here (a limit
/// swap that changes the rate limits starts them full); subnet buckets live in the entries of
/// [`ConnCounts`], which outlast swaps.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    prefixes: Vec<PrefixBucket>,
    subnets_v4: Vec<(u8, Rule)>,
    subnets_v6: Vec<(u8, Rule)>,
    global: Option<(Rule, Bucket)>,
    grace_ns: u64,
}

impl RateLimiter {
    /// Compiles `limits`, leaving out the entries that
    /// [`IpLimits::validate`](crate::IpLimits::validate) refuses (a refused global limit is no
    /// limit).
    pub(crate) fn new(limits: &ConnRateLimits) -> Self {
        let subnet_rules = |family: Family, rules: &[SubnetRateLimit]| {
            let mut compiled: Vec<(u8, Rule)> = Vec::new();
            let valid = |rule: &&SubnetRateLimit| {
                rule.limit.is_valid() && family.has_length(rule.prefix_length)
            };
            for rule in rules.iter().filter(valid) {
                let duplicate = compiled
                    .iter()
                    .any(|(length, _)| *length == rule.prefix_length);
                if let (false, Some(compiled_rule)) = (duplicate, Rule::new(rule.limit)) {
                    compiled.push((rule.prefix_length, compiled_rule));
                }
            }
            // go checks the most specific subnet first.
            compiled.sort_by_key(|(length, _)| std::cmp::Reverse(*length));
            compiled
        };
        RateLimiter {
            prefixes: limits
                .network_prefixes
                .iter()
                .filter(|prefix| prefix.limit.is_valid())
                .map(|prefix| PrefixBucket {
                    network: prefix.prefix.trunc(),
                    rule: Rule::new(prefix.limit),
                    bucket: Bucket::new(),
                })
                .collect(),
            subnets_v4: subnet_rules(Family::V4, &limits.subnet_v4),
            subnets_v6: subnet_rules(Family::V6, &limits.subnet_v6),
            global: Some(limits.global)
                .filter(RateLimit::is_valid)
                .and_then(Rule::new)
                .map(|rule| (rule, Bucket::new())),
            grace_ns: duration_ns(limits.grace_period),
        }
    }

    /// Whether any bucket can refuse.
    pub(crate) fn is_active(&self) -> bool {
        self.prefixes.iter().any(|prefix| prefix.rule.is_some())
            || !self.subnets_v4.is_empty()
            || !self.subnets_v6.is_empty()
            || self.global.is_some()
    }

    pub(crate) fn grace_ns(&self) -> u64 {
        self.grace_ns
    }

    /// The time `now_ns` with this limiter's grace period.
    pub(crate) fn expiry(&self, now_ns: u64) -> Expiry {
        Expiry {
            now_ns,
            grace_ns: self.grace_ns,
        }
    }

    /// Takes a token for a connection from `ip` (or from an endpoint without an IP) at
    /// `now_ns`, in go's order; the refusing range and its limit otherwise. Tokens taken
    /// before a refusal stay taken, as in go: the attempt was made.
    ///
    /// With `fused`, the connection's first subnet count `(length, limit)`: if the last
    /// subnet bucket checked is that subnet's, the count is taken there too, in the same
    /// lookup, right after the global bucket (which is where it would come next). Returns
    /// whether it was.
    pub(crate) fn check(
        &self,
        ip: Option<IpAddr>,
        states: &ConnCounts,
        now_ns: u64,
        fused: Option<(u8, u64)>,
    ) -> Result<bool, Refusal> {
        if let Some(ip) = ip {
            let mut matched = false;
            for prefix in self
                .prefixes
                .iter()
                .filter(|p| truncated_contains(&p.network, ip))
            {
                matched = true;
                if let Some(rule) = &prefix.rule
                    && !prefix.bucket.try_take(rule, now_ns)
                {
                    return Err(Refusal::Rate(
                        AddressRange::NetworkPrefix(prefix.network),
                        rule.limit,
                    ));
                }
            }
            if matched {
                return Ok(false);
            }
            let rules = match ip {
                IpAddr::V4(_) => &self.subnets_v4[..],
                IpAddr::V6(_) => &self.subnets_v6[..],
            };
            let at = self.expiry(now_ns);
            for (index, (length, rule)) in rules.iter().enumerate() {
                let subnet = subnet_of(ip, *length);
                let counted = fused
                    .filter(|(count_length, _)| index + 1 == rules.len() && count_length == length);
                let taken = states.with_subnet(subnet, at, |state| {
                    if !state.bucket().try_take(rule, now_ns) {
                        return Err(Refusal::Rate(AddressRange::Subnet(subnet), rule.limit));
                    }
                    let Some((_, limit)) = counted else {
                        return Ok(false);
                    };
                    self.take_global(now_ns)?;
                    state.add_conn(limit).map_err(|current| {
                        Refusal::Full(
                            ip,
                            Full {
                                range: AddressRange::Subnet(subnet),
                                current,
                                limit,
                            },
                        )
                    })?;
                    Ok(true)
                })?;
                if taken {
                    return Ok(true);
                }
            }
        }
        self.take_global(now_ns)?;
        Ok(false)
    }

    /// Takes a token from the global bucket, if there is one.
    #[inline]
    fn take_global(&self, now_ns: u64) -> Result<(), Refusal> {
        match &self.global {
            Some((rule, bucket)) if !bucket.try_take(rule, now_ns) => {
                Err(Refusal::Rate(AddressRange::All, rule.limit))
            }
            _ => Ok(()),
        }
    }
}

/// Why an admission was refused: a rate limit (the range and its limit), or the full subnet
/// of an IP, counted together with its token (see [`RateLimiter::check`]).
#[derive(Debug)]
pub(crate) enum Refusal {
    Rate(AddressRange, RateLimit),
    Full(IpAddr, Full),
}

/// The buckets of the subnets (or networks) seen recently, apart from any counts (the source
/// verification limiter's).
#[derive(Debug)]
pub(crate) struct SubnetBuckets {
    buckets: SweptMap<NetKey, Bucket>,
}

impl SubnetBuckets {
    pub(crate) fn new() -> Self {
        SubnetBuckets {
            buckets: SweptMap::new(),
        }
    }

    /// Takes a token from the bucket of `subnet` at `at.now_ns`, creating it full if there is
    /// none.
    #[inline]
    pub(crate) fn try_take(&self, subnet: IpNet, rule: &Rule, at: Expiry) -> bool {
        self.buckets.with_or_insert(
            &NetKey(subnet),
            Bucket::new,
            |bucket| bucket.try_take(rule, at.now_ns),
            at,
        )
    }

    /// Forgets the buckets that have been full for longer than the grace period: a new one
    /// would start full too, so nothing changes but the memory.
    pub(crate) fn sweep(&self, at: Expiry) -> usize {
        self.buckets.sweep(at)
    }

    /// How many buckets exist.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
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

    #[test]
    fn buckets_expire_after_the_grace_period() {
        let rule = Rule::new(RateLimit { rps: 1.0, burst: 2 }).expect("a finite rule");
        let buckets = SubnetBuckets::new();
        let subnet: IpNet = "192.0.2.1/32".parse().expect("net");
        let at = |now_ns| Expiry {
            now_ns,
            grace_ns: 5 * SECOND,
        };
        assert!(buckets.try_take(subnet, &rule, at(10 * SECOND)));
        // Full again at 11 s; kept until 11 s + grace.
        assert_eq!(buckets.sweep(at(12 * SECOND)), 0);
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets.sweep(at(17 * SECOND)), 1);
        assert_eq!(buckets.len(), 0);
    }
}

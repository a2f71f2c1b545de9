//! The connection rate limiter: go's order of network-prefix, subnet and global buckets
//! (the buckets themselves are [`super::bucket`]'s).
//!
//! # Synchronization
//!
//! Subnet buckets live in a [`SweptMap`] (the connection rate limiter's in the entries of the
//! connection counts, [`ConnCounts`]; the verification limiter's in a [`SubnetBuckets`]) and
//! are updated while the shard guard is held, so a sweep, which removes them under the
//! exclusive guard, never removes one between its lookup and its update. The prefix and
//! global buckets live in the compiled limiter itself.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    bucket::{Bucket, Expiry, Rule, duration_ns},
    subnet::{ConnCounts, Full},
    swept::SweptMap,
    table::{NetKey, subnet_of, truncated_contains},
};
use crate::{
    error::AddressRange,
    limits::{ConnRateLimits, Family, SubnetRateLimit},
    types::RateLimit,
};

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
    /// `at.now_ns` (`at` is also when an insertion's sweep judges entries idle), in go's order; the refusing range and its limit otherwise. Tokens taken
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
        at: Expiry,
        fused: Option<(u8, u64)>,
    ) -> Result<bool, Refusal> {
        let now_ns = at.now_ns;
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
                        rule.limit(),
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
            for (index, (length, rule)) in rules.iter().enumerate() {
                let subnet = subnet_of(ip, *length);
                let counted = fused
                    .filter(|(count_length, _)| index + 1 == rules.len() && count_length == length);
                let taken = states.with_subnet(subnet, at, |state| {
                    if !state.bucket().try_take(rule, now_ns) {
                        return Err(Refusal::Rate(AddressRange::Subnet(subnet), rule.limit()));
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
                Err(Refusal::Rate(AddressRange::All, rule.limit()))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

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

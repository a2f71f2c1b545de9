//! The address-based part of the limit configuration: per-IP and subnet connection limits,
//! network-prefix limits and connection rate limits ([`IpLimits`], the `ip` field of
//! [`ConcreteLimitConfig`](crate::ConcreteLimitConfig)).

use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::types::RateLimit;
use crate::{
    error::{Error, InvalidIpLimits},
    limits::BaseLimit,
};

/// At most `conn_count` connections at once from each subnet of `prefix_length` bits (go's
/// `ConnLimitPerSubnet`).
///
/// `prefix_length` is at most 32 in an IPv4 list and at most 128 in an IPv6 list. A
/// `conn_count` at or above [`BaseLimit::UNLIMITED`] never refuses.
///
/// ```
/// use rcmgr::ConnLimitPerSubnet;
/// // Eight connections per IPv4 address: go's default.
/// let per_address = ConnLimitPerSubnet { prefix_length: 32, conn_count: 8 };
/// assert_eq!(rcmgr::IpLimits::default().subnet_v4, [per_address]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnLimitPerSubnet {
    /// The length of the subnet prefix, in bits.
    pub prefix_length: u8,
    /// The most connections the subnet may hold at once.
    pub conn_count: u64,
}

/// At most `conn_count` connections at once from all of `network` together (go's
/// `NetworkPrefixLimit`). An address inside a network with such a limit is counted against it
/// alone: the subnet limits do not apply to it. The most specific network decides.
///
/// ```
/// use rcmgr::{BaseLimit, NetworkPrefixLimit};
/// // go's default: loopback is not limited.
/// let loopback = NetworkPrefixLimit { network: "127.0.0.0/8".parse()?, conn_count: BaseLimit::UNLIMITED };
/// assert_eq!(rcmgr::IpLimits::default().network_prefix_v4, [loopback]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetworkPrefixLimit {
    /// The network. Host bits are ignored (`10.1.2.3/8` means `10.0.0.0/8`).
    pub network: IpNet,
    /// The most connections the whole network may hold at once.
    pub conn_count: u64,
}

/// A rate limit on each subnet of `prefix_length` bits (go's `rate.SubnetLimit`).
///
/// ```
/// use rcmgr::{RateLimit, SubnetRateLimit};
/// let per_address = SubnetRateLimit { prefix_length: 32, limit: RateLimit { rps: 0.2, burst: 16 } };
/// assert_eq!(rcmgr::IpLimits::default().rate.subnet_v4, [per_address]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetRateLimit {
    /// The length of the subnet prefix, in bits.
    pub prefix_length: u8,
    /// The bucket each such subnet gets.
    pub limit: RateLimit,
}

/// A rate limit on a whole network (go's `rate.PrefixLimit`): one bucket shared by every
/// address in `prefix`.
///
/// ```
/// use rcmgr::{PrefixRateLimit, RateLimit};
/// let loopback = PrefixRateLimit { prefix: "::1/128".parse()?, limit: RateLimit::UNLIMITED };
/// assert!(rcmgr::IpLimits::default().rate.network_prefixes.contains(&loopback));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixRateLimit {
    /// The network. Host bits are ignored.
    pub prefix: IpNet,
    /// The network's bucket.
    pub limit: RateLimit,
}

/// How fast new connections may come (go's `rate.Limiter` as `WithConnRateLimiters` takes
/// it), checked by every `open_connection`, in both directions, before anything is counted.
///
/// The check, for an endpoint with an IP:
/// 1. every network prefix that contains the IP takes a token from its bucket; if any of them
///    matched, the connection is let through (or refused if a bucket was empty) without
///    looking further;
/// 2. otherwise each subnet limit of the IP's family, longest prefix first, takes a token from
///    the bucket of the IP's subnet;
/// 3. then the global bucket.
///
/// An endpoint without an IP (`/dns4/…`, `/unix/…`, `/memory/…`, a relayed address without a
/// leading IP) is checked against the global bucket only. go gives all of them one shared
/// IPv6 subnet bucket, so one such source could starve every other; see
/// docs/compatibility.md.
///
/// A subnet's bucket is forgotten once it has been full for [`grace_period`](Self::grace_period)
/// (by the collection pass), so the buckets do not grow with every address ever seen.
///
/// ```
/// use rcmgr::{ConnRateLimits, RateLimit};
/// let mut rate = ConnRateLimits::default();
/// rate.global = RateLimit { rps: 100.0, burst: 200 };
/// assert_eq!(rate.grace_period, std::time::Duration::from_secs(60));
/// assert!(ConnRateLimits::disabled().subnet_v6.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnRateLimits {
    /// Per-network buckets, which take precedence over the subnet buckets.
    pub network_prefixes: Vec<PrefixRateLimit>,
    /// Per-subnet buckets for IPv4 addresses.
    pub subnet_v4: Vec<SubnetRateLimit>,
    /// Per-subnet buckets for IPv6 addresses (IPv4-mapped IPv6 addresses included, as in go).
    pub subnet_v6: Vec<SubnetRateLimit>,
    /// One bucket for every connection that no network prefix matched.
    pub global: RateLimit,
    /// How long a subnet's bucket is kept after it has filled up again.
    pub grace_period: Duration,
}

impl ConnRateLimits {
    /// No rate limiting at all.
    ///
    /// ```
    /// let off = rcmgr::ConnRateLimits::disabled();
    /// assert!(off.network_prefixes.is_empty() && off.global.is_unlimited());
    /// ```
    pub fn disabled() -> Self {
        ConnRateLimits {
            network_prefixes: Vec::new(),
            subnet_v4: Vec::new(),
            subnet_v6: Vec::new(),
            global: RateLimit::UNLIMITED,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

/// go's `rate.Limiter` defaults (v0.42): loopback unlimited, no global limit, IPv4 /32 at 0.2
/// connections per second with a burst of 16, IPv6 /56 at 0.2 with 16 and /48 at 0.5 with 80,
/// buckets kept one minute after they fill up.
impl Default for ConnRateLimits {
    fn default() -> Self {
        let unlimited = |prefix| PrefixRateLimit {
            prefix,
            limit: RateLimit::UNLIMITED,
        };
        let subnet = |prefix_length, rps, burst| SubnetRateLimit {
            prefix_length,
            limit: RateLimit { rps, burst },
        };
        ConnRateLimits {
            network_prefixes: vec![unlimited(loopback_v4()), unlimited(loopback_v6())],
            subnet_v4: vec![subnet(32, 0.2, 16)],
            subnet_v6: vec![subnet(56, 0.2, 16), subnet(48, 0.5, 80)],
            global: RateLimit::UNLIMITED,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

/// go's `GracePeriod` default.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60);

fn loopback_v4() -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    ))
}

fn loopback_v6() -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128))
}

/// The address-based limits: connections at once per IP, subnet and network prefix, and
/// connection rate limits. They are the `ip` field of
/// [`ConcreteLimitConfig`](crate::ConcreteLimitConfig), so
/// [`ConcreteLimitConfig::infinite`](crate::ConcreteLimitConfig::infinite) turns them off
/// ([`IpLimits::disabled`]) and `set_limits` swaps them with the rest.
///
/// Every `open_connection` whose endpoint starts with an IP is counted, in both directions,
/// before any scope is asked:
/// - if the IP is in a network with a [`NetworkPrefixLimit`] (the most specific one wins), or
///   in an allowlisted network (general or peer-specific, see
///   [`Allowlist`](crate::Allowlist)), it is counted against that network alone: an allowlisted
///   network allows as many connections as the allowlisted system scope does;
/// - otherwise it is counted against every subnet limit of its family, all or nothing.
///
/// The count is released exactly once, when the connection scope is closed.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, IpLimits};
/// let defaults = IpLimits::default();
/// assert_eq!(defaults.subnet_v6.len(), 2);
/// assert_eq!(ConcreteLimitConfig::infinite().ip, IpLimits::disabled());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IpLimits {
    /// Limits on each IPv4 subnet. Empty: IPv4 addresses are not counted per subnet.
    pub subnet_v4: Vec<ConnLimitPerSubnet>,
    /// Limits on each IPv6 subnet. Empty: IPv6 addresses are not counted per subnet.
    pub subnet_v6: Vec<ConnLimitPerSubnet>,
    /// Limits on IPv4 networks, which take precedence over the subnet limits.
    pub network_prefix_v4: Vec<NetworkPrefixLimit>,
    /// Limits on IPv6 networks, which take precedence over the subnet limits.
    pub network_prefix_v6: Vec<NetworkPrefixLimit>,
    /// Connection rate limits.
    pub rate: ConnRateLimits,
}

/// go's defaults: 8 connections per IPv4 address, 8 per IPv6 /56 and 64 per IPv6 /48,
/// loopback (`127.0.0.0/8`, `::1/128`) unlimited, and go v0.42's rate limits
/// ([`ConnRateLimits::default`]).
impl Default for IpLimits {
    fn default() -> Self {
        let subnet = |prefix_length, conn_count| ConnLimitPerSubnet {
            prefix_length,
            conn_count,
        };
        let unlimited = |network| NetworkPrefixLimit {
            network,
            conn_count: BaseLimit::UNLIMITED,
        };
        IpLimits {
            subnet_v4: vec![subnet(32, 8)],
            subnet_v6: vec![subnet(56, 8), subnet(48, 64)],
            network_prefix_v4: vec![unlimited(loopback_v4())],
            network_prefix_v6: vec![unlimited(loopback_v6())],
            rate: ConnRateLimits::default(),
        }
    }
}

impl IpLimits {
    /// No address-based limit at all: nothing is counted per IP and no rate is limited.
    ///
    /// ```
    /// let off = rcmgr::IpLimits::disabled();
    /// assert!(off.subnet_v4.is_empty() && off.network_prefix_v6.is_empty());
    /// ```
    pub fn disabled() -> Self {
        IpLimits {
            subnet_v4: Vec::new(),
            subnet_v6: Vec::new(),
            network_prefix_v4: Vec::new(),
            network_prefix_v6: Vec::new(),
            rate: ConnRateLimits::disabled(),
        }
    }

    /// Whether connections are counted per IP at all.
    pub(crate) fn counts_connections(&self) -> bool {
        !(self.subnet_v4.is_empty()
            && self.subnet_v6.is_empty()
            && self.network_prefix_v4.is_empty()
            && self.network_prefix_v6.is_empty())
    }

    /// Checks that every entry can be enforced as written: prefix lengths within their
    /// family, networks in the list of their family, rates positive (or
    /// [`RateLimit::UNLIMITED`]), one rate limit per subnet length.
    /// [`ResourceManagerBuilder::build`](crate::ResourceManagerBuilder::build) runs it;
    /// [`ResourceManager::new`](crate::ResourceManager::new) and
    /// [`ResourceManager::set_limits`](crate::ResourceManager::set_limits), which cannot fail,
    /// skip the entries that fail it, with a warning.
    ///
    /// ```
    /// use rcmgr::{ConnLimitPerSubnet, IpLimits};
    /// let mut limits = IpLimits::default();
    /// assert!(limits.validate().is_ok());
    /// limits.subnet_v4.push(ConnLimitPerSubnet { prefix_length: 33, conn_count: 1 });
    /// let err = limits.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid ip limits: ipv4 subnet limit: prefix length 33 is longer than 32 bits");
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        match self.problems().next() {
            Some(problem) => Err(Error::InvalidIpLimits(Box::new(problem))),
            None => Ok(()),
        }
    }

    /// Every entry that cannot be enforced, described.
    pub(crate) fn problems(&self) -> impl Iterator<Item = InvalidIpLimits> + '_ {
        let families = [(Family::V4, &self.subnet_v4), (Family::V6, &self.subnet_v6)];
        let subnet_lengths = families.into_iter().flat_map(|(family, limits)| {
            limits.iter().filter_map(move |limit| {
                family
                    .check_length(limit.prefix_length)
                    .map(|why| InvalidIpLimits::new(format!("{family} subnet limit: {why}")))
            })
        });
        let networks = [
            (Family::V4, &self.network_prefix_v4),
            (Family::V6, &self.network_prefix_v6),
        ];
        let network_families = networks.into_iter().flat_map(|(family, limits)| {
            limits
                .iter()
                .filter(move |limit| Family::of(&limit.network) != family)
                .map(move |limit| {
                    InvalidIpLimits::new(format!(
                        "network prefix limit {} is in the {family} list",
                        limit.network
                    ))
                })
        });
        subnet_lengths
            .chain(network_families)
            .chain(self.rate.problems())
    }
}

impl ConnRateLimits {
    fn problems(&self) -> impl Iterator<Item = InvalidIpLimits> + '_ {
        let rates = self
            .network_prefixes
            .iter()
            .map(|prefix| (format!("rate limit of {}", prefix.prefix), prefix.limit))
            .chain(std::iter::once(("global rate limit".to_owned(), self.global)))
            .chain(self.subnet_rules().map(|(family, rule)| {
                (
                    format!("{family} /{} rate limit", rule.prefix_length),
                    rule.limit,
                )
            }))
            .filter_map(|(what, limit)| {
                (!limit.is_valid()).then(|| {
                    InvalidIpLimits::new(format!(
                        "{what}: {} connections per second is not a positive rate (use RateLimit::UNLIMITED for none)",
                        limit.rps
                    ))
                })
            });
        let lengths = self.subnet_rules().filter_map(|(family, rule)| {
            family
                .check_length(rule.prefix_length)
                .map(|why| InvalidIpLimits::new(format!("{family} subnet rate limit: {why}")))
        });
        let duplicates = self
            .subnet_rules()
            .enumerate()
            .filter(|(index, (family, rule))| {
                self.subnet_rules()
                    .take(*index)
                    .any(|(other_family, other)| {
                        other_family == *family && other.prefix_length == rule.prefix_length
                    })
            })
            .map(|(_, (family, rule))| {
                InvalidIpLimits::new(format!(
                    "{family} subnet rate limit: two limits for /{}",
                    rule.prefix_length
                ))
            });
        rates.chain(lengths).chain(duplicates)
    }

    fn subnet_rules(&self) -> impl Iterator<Item = (Family, &SubnetRateLimit)> + '_ {
        let v4 = self.subnet_v4.iter().map(|rule| (Family::V4, rule));
        v4.chain(self.subnet_v6.iter().map(|rule| (Family::V6, rule)))
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(network: &IpNet) -> Family {
        match network {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub(crate) const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Whether `length` can be a prefix length of this family.
    pub(crate) fn has_length(self, length: u8) -> bool {
        length <= self.bits()
    }

    /// Why `length` cannot be a prefix length of this family, if it cannot.
    fn check_length(self, length: u8) -> Option<String> {
        (!self.has_length(length))
            .then(|| format!("prefix length {length} is longer than {} bits", self.bits()))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

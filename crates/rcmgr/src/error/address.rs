//! The payloads of the gate's errors: which address, which range of addresses, which limit.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use multiaddr::Multiaddr;

use crate::types::RateLimit;

/// The addresses a limit covers.
///
/// ```
/// use rcmgr::AddressRange;
/// let subnet = AddressRange::Subnet("192.0.2.7/32".parse()?);
/// assert_eq!(subnet.to_string(), "subnet 192.0.2.7/32");
/// assert_eq!(AddressRange::All.network(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressRange {
    /// One subnet of a per-subnet limit (`/32` is one IPv4 address).
    Subnet(IpNet),
    /// A network with a limit of its own ([`NetworkPrefixLimit`](crate::NetworkPrefixLimit) or
    /// [`PrefixRateLimit`](crate::PrefixRateLimit)).
    NetworkPrefix(IpNet),
    /// An allowlisted network, which allows as many connections as the allowlisted system
    /// scope.
    AllowlistedNetwork(IpNet),
    /// Every address (the global rate limit).
    All,
}

impl AddressRange {
    /// The network, unless the range is every address.
    ///
    /// ```
    /// let net: rcmgr::IpNet = "10.0.0.0/8".parse()?;
    /// assert_eq!(rcmgr::AddressRange::NetworkPrefix(net).network(), Some(net));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn network(&self) -> Option<IpNet> {
        match self {
            AddressRange::Subnet(net)
            | AddressRange::NetworkPrefix(net)
            | AddressRange::AllowlistedNetwork(net) => Some(*net),
            AddressRange::All => None,
        }
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressRange::Subnet(net) => write!(f, "subnet {net}"),
            AddressRange::NetworkPrefix(net) => write!(f, "network prefix {net}"),
            AddressRange::AllowlistedNetwork(net) => write!(f, "allowlisted network {net}"),
            AddressRange::All => f.write_str("all addresses"),
        }
    }
}

/// A connection refused because its address range already holds as many connections as its
/// limit allows (go's "connections per ip limit exceeded"). Nothing was reserved.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ConnLimitPerSubnet, Direction, ResourceManager};
/// let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
///     .limit_per_subnet(Some(vec![ConnLimitPerSubnet { prefix_length: 32, conn_count: 1 }]), None)
///     .build()?;
/// let endpoint = "/ip4/192.0.2.7/tcp/4001".parse()?;
/// let _held = rm.open_connection(Direction::Inbound, true, &endpoint)?;
/// let err = rm.open_connection(Direction::Inbound, true, &endpoint).unwrap_err();
/// assert!(err.is_resource_limit_exceeded());
/// let refused = err.ip_limit_exceeded().unwrap();
/// assert_eq!(refused.ip(), "192.0.2.7".parse::<std::net::IpAddr>()?);
/// assert_eq!((refused.current(), refused.limit()), (1, 1));
/// assert_eq!(
///     err.to_string(),
///     "connections per ip limit exceeded for /ip4/192.0.2.7/tcp/4001 (ip 192.0.2.7, subnet 192.0.2.7/32: 1 of 1 connections)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLimitExceeded {
    endpoint: Multiaddr,
    ip: IpAddr,
    range: AddressRange,
    current: u64,
    limit: u64,
}

impl IpLimitExceeded {
    pub(crate) fn new(
        endpoint: Multiaddr,
        ip: IpAddr,
        range: AddressRange,
        (current, limit): (u64, u64),
    ) -> Self {
        IpLimitExceeded {
            endpoint,
            ip,
            range,
            current,
            limit,
        }
    }

    /// The endpoint the connection was opened with.
    pub fn endpoint(&self) -> &Multiaddr {
        &self.endpoint
    }

    /// The endpoint's IP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The range whose limit refused.
    pub fn range(&self) -> AddressRange {
        self.range
    }

    /// The range's prefix: the subnet or network counted.
    pub fn prefix(&self) -> Option<IpNet> {
        self.range.network()
    }

    /// The connections the range held.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// The range's limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl fmt::Display for IpLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections per ip limit exceeded for {} (ip {}, {}: {} of {} connections)",
            self.endpoint, self.ip, self.range, self.current, self.limit
        )
    }
}

impl std::error::Error for IpLimitExceeded {}

/// A connection refused because its address range opened connections faster than its rate
/// limit allows (go's "rate limit exceeded"). Nothing was reserved; the token bucket refills
/// with time.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ConnRateLimits, Direction, RateLimit, ResourceManager};
/// let mut rate = ConnRateLimits::disabled();
/// rate.global = RateLimit { rps: 1.0, burst: 1 };
/// let rm = ResourceManager::builder(ConcreteLimitConfig::infinite()).conn_rate_limits(rate).build()?;
/// let endpoint = "/ip4/192.0.2.7/tcp/4001".parse()?;
/// let _first = rm.open_connection(Direction::Inbound, true, &endpoint)?;
/// let err = rm.open_connection(Direction::Inbound, true, &endpoint).unwrap_err();
/// let refused = err.rate_limited().unwrap();
/// assert_eq!(refused.range(), rcmgr::AddressRange::All);
/// assert_eq!(refused.limit().burst, 1);
/// assert_eq!(
///     err.to_string(),
///     "rate limit exceeded for /ip4/192.0.2.7/tcp/4001 (ip 192.0.2.7, all addresses: burst 1, 1 per second)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    endpoint: Multiaddr,
    ip: Option<IpAddr>,
    range: AddressRange,
    limit: RateLimit,
}

impl RateLimited {
    pub(crate) fn new(
        endpoint: Multiaddr,
        ip: Option<IpAddr>,
        range: AddressRange,
        limit: RateLimit,
    ) -> Self {
        RateLimited {
            endpoint,
            ip,
            range,
            limit,
        }
    }

    /// The endpoint the connection was opened with.
    pub fn endpoint(&self) -> &Multiaddr {
        &self.endpoint
    }

    /// The endpoint's IP, if it has one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The range whose bucket was empty.
    pub fn range(&self) -> AddressRange {
        self.range
    }

    /// The range's prefix, unless the global bucket refused.
    pub fn prefix(&self) -> Option<IpNet> {
        self.range.network()
    }

    /// The limit of the bucket that was empty.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit exceeded for {} (", self.endpoint)?;
        match self.ip {
            Some(ip) => write!(f, "ip {ip}, ")?,
            None => f.write_str("no ip, ")?,
        }
        write!(
            f,
            "{}: burst {}, {} per second)",
            self.range, self.limit.burst, self.limit.rps
        )
    }
}

impl std::error::Error for RateLimited {}

/// Why an allowlist entry was refused.
///
/// ```
/// use rcmgr::AllowlistEntryProblem;
/// assert_eq!(AllowlistEntryProblem::MissingIp.to_string(), "missing ip address");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowlistEntryProblem {
    /// No `/ip4` or `/ip6` component (go: "missing ip address").
    MissingIp,
    /// An `/ipcidr` longer than the address (go: "invalid CIDR address").
    PrefixTooLong {
        /// The `/ipcidr` value.
        length: u8,
        /// The address's bits: 32 or 128.
        max: u8,
    },
}

impl fmt::Display for AllowlistEntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistEntryProblem::MissingIp => f.write_str("missing ip address"),
            AllowlistEntryProblem::PrefixTooLong { length, max } => {
                write!(
                    f,
                    "invalid CIDR address: /ipcidr/{length} is longer than {max} bits"
                )
            }
        }
    }
}

/// An allowlist entry that names no network.
///
/// ```
/// use rcmgr::{AllowlistEntryProblem, ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let err = rm.allowlist().add(&"/ip4/10.0.0.0/ipcidr/40".parse()?).unwrap_err();
/// let bad = err.invalid_allowlist_entry().unwrap();
/// assert_eq!(bad.problem(), AllowlistEntryProblem::PrefixTooLong { length: 40, max: 32 });
/// assert_eq!(err.to_string(), "invalid allowlist entry /ip4/10.0.0.0/ipcidr/40: invalid CIDR address: /ipcidr/40 is longer than 32 bits");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAllowlistEntry {
    entry: Multiaddr,
    problem: AllowlistEntryProblem,
}

impl InvalidAllowlistEntry {
    pub(crate) fn new(entry: Multiaddr, problem: AllowlistEntryProblem) -> Self {
        InvalidAllowlistEntry { entry, problem }
    }

    /// The entry as given.
    pub fn entry(&self) -> &Multiaddr {
        &self.entry
    }

    /// What is wrong with it.
    pub fn problem(&self) -> AllowlistEntryProblem {
        self.problem
    }
}

impl fmt::Display for InvalidAllowlistEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid allowlist entry {}: {}",
            self.entry, self.problem
        )
    }
}

impl std::error::Error for InvalidAllowlistEntry {}

/// [`IpLimits`](crate::IpLimits) with an entry that cannot be enforced; see
/// [`IpLimits::validate`](crate::IpLimits::validate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidIpLimits {
    problem: String,
}

impl InvalidIpLimits {
    pub(crate) fn new(problem: String) -> Self {
        InvalidIpLimits { problem }
    }

    /// What is wrong, in words.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for InvalidIpLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid ip limits: {}", self.problem)
    }
}

impl std::error::Error for InvalidIpLimits {}

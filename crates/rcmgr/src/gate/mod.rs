//! The connection gate: what `open_connection` checks before, and instead of, the scopes.
//!
//! For every `open_connection` (go's `OpenConnection`, sections 6-8 of the behavioural
//! reference):
//! 1. the endpoint's IP is read (the first `/ip4` or `/ip6` component, after any `/ip6zone`:
//!    [`endpoint_ip`]);
//! 2. the connection rate limits take a token ([`rate`]);
//! 3. the connection is counted against its network or its subnets ([`subnet`]), which gives
//!    an [`IpCount`] that the connection scope keeps and releases exactly once when it closes;
//! 4. the normal scopes (transient, system) are asked; if they refuse and the IP is
//!    allowlisted ([`allowlist`]), the allowlisted scopes are asked instead (by the handles:
//!    the gate decides admissions, it opens no scope).
//!
//! The limits come from the `ip` part of the limit configuration, compiled into a [`Policy`]
//! that is swapped with the rest of the limits.
//!
//! # Endpoints without an IP
//!
//! `/dns…`, `/unix`, `/memory`, and relayed addresses that do not start with the relay's IP
//! are not counted per IP, match no allowlisted network (only a trusted peer, at `set_peer`,
//! keeps such a connection in the allowlisted scopes), and take a rate-limit token from the
//! global bucket only. A relayed address that starts with the relay's IP
//! (`/ip4/R/tcp/…/p2p/…/p2p-circuit`) is counted as the relay's, as in go.

mod allowlist;
mod bucket;
mod rate;
mod subnet;
mod swept;
mod table;

use std::{
    cell::RefCell,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use multiaddr::Multiaddr;

pub use allowlist::Allowlist;
pub(crate) use subnet::IpCount;

use self::{
    bucket::{Expiry, Rule, duration_ns},
    rate::{RateLimiter, Refusal, SubnetBuckets},
    subnet::{ConnCounts, Full, subnets_count},
    table::{LengthSet, NetTable, subnet_of},
};
use crate::{
    error::{AddressRange, Error, IpLimitExceeded, RateLimited},
    limits::{BaseLimit, ConcreteLimitConfig, ConnLimitPerSubnet, Family, IpLimits},
    sync::{Arc, AtomicU64, LimitSlot, Ordering, per_thread, unique_number},
    types::RateLimit,
};

/// The IP a connection from `endpoint` is counted under: the first component if it is
/// `/ip4` or `/ip6`, after any `/ip6zone` (go's `manet.ToIP`). `None` for endpoints that do
/// not start with an IP.
///
/// IPv4-mapped IPv6 addresses stay IPv6, as in go.
///
/// Read from the address's bytes rather than through `Multiaddr::iter`, which decodes a
/// whole [`Protocol`](multiaddr::Protocol) to look at its code: this runs on every `open_connection`. A
/// `Multiaddr` holds only valid, minimally encoded components (its constructors check), so
/// a first byte below 0x80 is the whole protocol code and the three codes read here are
/// exactly the components the iterator would yield.
#[inline]
pub(crate) fn endpoint_ip(endpoint: &Multiaddr) -> Option<IpAddr> {
    /// The multicodec codes of `/ip4`, `/ip6` and `/ip6zone`.
    const IP4: u8 = 4;
    const IP6: u8 = 41;
    const IP6ZONE: u8 = 42;
    let mut rest: &[u8] = endpoint.as_ref();
    loop {
        let (&code, after) = rest.split_first()?;
        match code {
            IP4 => {
                let octets: [u8; 4] = after.get(..4)?.try_into().ok()?;
                return Some(IpAddr::V4(Ipv4Addr::from(octets)));
            }
            IP6 => {
                let octets: [u8; 16] = after.get(..16)?.try_into().ok()?;
                return Some(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            IP6ZONE => {
                let (length, zone) = read_varint(after)?;
                rest = zone.get(length..)?;
            }
            _ => return None,
        }
    }
}

/// An unsigned LEB128 varint (a multiaddr length prefix) and the bytes after it; `None` if
/// the input ends first or the value does not fit a `usize`.
fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value: usize = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let shift = u32::try_from(7 * i).ok()?;
        let bits = usize::from(byte & 0x7f).checked_shl(shift)?;
        if bits >> shift != usize::from(byte & 0x7f) {
            return None;
        }
        value |= bits;
        if byte & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// A monotonic clock for the rate limiters, which a test can replace to move time by hand
/// (see [`ResourceManagerBuilder::clock`](crate::ResourceManagerBuilder::clock)).
///
/// ```
/// use std::{sync::{Arc, atomic::{AtomicU64, Ordering}}, time::Duration};
/// use rcmgr::Clock;
///
/// #[derive(Debug, Default)]
/// struct ManualClock(AtomicU64);
///
/// impl Clock for ManualClock {
///     fn now(&self) -> Duration {
///         Duration::from_millis(self.0.load(Ordering::Relaxed))
///     }
/// }
///
/// let clock = Arc::new(ManualClock::default());
/// let rm = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
///     .clock(Arc::clone(&clock))
///     .build()?;
/// clock.0.fetch_add(1_000, Ordering::Relaxed); // one second later
/// # drop(rm);
/// # Ok::<(), rcmgr::Error>(())
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The time since some fixed origin. It must never go backwards.
    fn now(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Duration {
        C::now(self)
    }
}

/// Where the gate reads the time.
#[derive(Debug)]
pub(crate) enum TimeSource {
    /// `Instant::now()` since the manager was built.
    Monotonic(Instant),
    Custom(Box<dyn Clock>),
}

impl TimeSource {
    pub(crate) fn monotonic() -> Self {
        TimeSource::Monotonic(Instant::now())
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        let elapsed = match self {
            TimeSource::Monotonic(origin) => origin.elapsed(),
            TimeSource::Custom(clock) => clock.now(),
        };
        duration_ns(elapsed)
    }
}

/// The rate of the source-address verification limiter (go: one token per two five-second
/// handshakes).
const VERIFY_RPS: f64 = 0.1;

/// How long the verification limiter keeps a full bucket (go: one minute).
const VERIFY_GRACE: Duration = Duration::from_secs(60);

/// The `ip` part of the limit configuration, compiled for lookups.
#[derive(Debug)]
struct Policy {
    /// What this was compiled from: a limit swap that leaves both unchanged keeps it (and its
    /// network-prefix and global rate buckets).
    source: (IpLimits, u64),
    /// Whether connections are counted per IP at all.
    counting: bool,
    /// The allowlisted system scope's connection limit: an allowlisted network's limit.
    allowlisted_conns: u64,
    /// The network-prefix limits of both families.
    networks: NetTable<u64>,
    /// `(prefix length, limit)` per family, one per length, unlimited ones left out.
    subnets_v4: Vec<(u8, u64)>,
    subnets_v6: Vec<(u8, u64)>,
    rate: RateLimiter,
}

/// What an IP is counted against.
enum Target<'a> {
    /// A network with its own limit.
    Network {
        network: IpNet,
        range: AddressRange,
        limit: u64,
    },
    /// Each subnet of these `(length, limit)`s.
    Subnets(&'a [(u8, u64)]),
}

impl Policy {
    fn compile(limits: &ConcreteLimitConfig) -> Policy {
        let ip = &limits.ip;
        let problems: Vec<String> = ip.problems().map(|p| p.problem().to_owned()).collect();
        if !problems.is_empty() {
            tracing::warn!(
                ?problems,
                "ip limits: entries that cannot be enforced are ignored"
            );
        }
        let mut networks = NetTable::new();
        for (family, list) in [
            (Family::V4, &ip.network_prefix_v4),
            (Family::V6, &ip.network_prefix_v6),
        ] {
            for limit in list.iter().filter(|l| Family::of(&l.network) == family) {
                // The first limit configured for a network wins.
                networks.get_or_insert(limit.network, || limit.conn_count);
            }
        }
        let subnets = |family: Family, list: &[ConnLimitPerSubnet]| {
            let mut compiled: Vec<(u8, u64)> = Vec::new();
            for limit in list.iter().filter(|l| family.has_length(l.prefix_length)) {
                // Two limits on one length are one limit: the smaller (their counts are
                // always equal).
                match compiled.iter_mut().find(|(l, _)| *l == limit.prefix_length) {
                    Some((_, count)) => *count = (*count).min(limit.conn_count),
                    None => compiled.push((limit.prefix_length, limit.conn_count)),
                }
            }
            compiled.retain(|(_, count)| *count < BaseLimit::UNLIMITED);
            compiled
        };
        Policy {
            source: (ip.clone(), limits.allowlisted_system.conns),
            counting: ip.counts_connections(),
            allowlisted_conns: limits.allowlisted_system.conns,
            networks,
            subnets_v4: subnets(Family::V4, &ip.subnet_v4),
            subnets_v6: subnets(Family::V6, &ip.subnet_v6),
            rate: RateLimiter::new(&ip.rate),
        }
    }

    fn is_compiled_from(&self, limits: &ConcreteLimitConfig) -> bool {
        self.source.0 == limits.ip && self.source.1 == limits.allowlisted_system.conns
    }

    /// What `ip` is counted against: the most specific of its network-prefix limit and its
    /// allowlisted network (the configured limit on a tie, as go adds an allowlisted network
    /// only when no limit names it), else its subnets.
    #[inline]
    fn target(&self, ip: IpAddr, allowlist: &Allowlist) -> Target<'_> {
        let configured = self.networks.longest_match(ip);
        let allowlisted = allowlist.network_of(ip);
        match (configured, allowlisted) {
            (Some((configured, _)), Some(allowlisted))
                if allowlisted.prefix_len() > configured.prefix_len() =>
            {
                self.allowlisted(allowlisted)
            }
            (Some((network, limit)), _) => Target::Network {
                network,
                range: AddressRange::NetworkPrefix(network),
                limit: *limit,
            },
            (None, Some(allowlisted)) => self.allowlisted(allowlisted),
            (None, None) => Target::Subnets(match ip {
                IpAddr::V4(_) => &self.subnets_v4,
                IpAddr::V6(_) => &self.subnets_v6,
            }),
        }
    }

    fn allowlisted(&self, network: IpNet) -> Target<'_> {
        Target::Network {
            network,
            range: AddressRange::AllowlistedNetwork(network),
            limit: self.allowlisted_conns,
        }
    }
}

per_thread! {
    /// The policy this thread's last admission used: (gate id, generation, policy).
    static RECENT_POLICY: RefCell<Option<(u64, u64, Arc<Policy>)>> = RefCell::new(None);
}

/// The gate of one manager: its compiled address limits, allowlist, counters and buckets.
#[derive(Debug)]
pub(crate) struct Gate {
    policy: LimitSlot<Policy>,
    /// How many times `policy` has been replaced: what a thread's cached copy of it is
    /// checked against ([`Gate::with_policy`]).
    generation: AtomicU64,
    /// This gate among every gate of the process, for the per-thread policy cache.
    id: u64,
    allowlist: Allowlist,
    /// The connection counts, and the connection rate limiter's subnet buckets.
    counts: ConnCounts,
    /// The source-address verification limiter's buckets.
    verify_buckets: SubnetBuckets,
    time: TimeSource,
}

impl Gate {
    pub(crate) fn new(
        limits: &ConcreteLimitConfig,
        allowlist: Allowlist,
        time: TimeSource,
    ) -> Self {
        Gate {
            policy: LimitSlot::new(Arc::new(Policy::compile(limits))),
            generation: AtomicU64::new(0),
            id: unique_number(),
            allowlist,
            counts: ConnCounts::new(),
            verify_buckets: SubnetBuckets::new(),
            time,
        }
    }

    pub(crate) fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Applies the `ip` part of new limits to the connections opened from now on. Counts
    /// already taken stay and are released as taken; subnet buckets are kept.
    pub(crate) fn set_limits(&self, limits: &ConcreteLimitConfig) {
        if !self.policy.with(|policy| policy.is_compiled_from(limits)) {
            self.policy.store(Arc::new(Policy::compile(limits)));
            // Ordering: Release — publishes the store above to `with_policy`'s Acquire load of
            // the generation: a thread that sees the new generation loads the new policy.
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Runs `f` on the current policy: on this thread's cached copy if it is this gate's and
    /// no swap was published since it was loaded, else on a fresh load, which is then cached.
    /// The cache costs a thread-local read and a compare where the `ArcSwap` load costs its
    /// debt-slot protocol; it holds one policy per thread (of the last gate that thread
    /// admitted through) until that thread's next miss or its end.
    #[inline]
    fn with_policy<R>(&self, f: impl Fn(&Policy) -> R) -> R {
        // Ordering: Acquire — pairs with the Release increment in `set_limits`: once this
        // reads a generation, the policy loaded below is at least the one stored before it.
        let generation = self.generation.load(Ordering::Acquire);
        let hit = RECENT_POLICY
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let (gate, loaded_at, policy) = recent.as_ref()?;
                (*gate == self.id && *loaded_at == generation).then(|| f(policy))
            })
            .ok()
            .flatten();
        match hit {
            Some(result) => result,
            None => self.with_loaded_policy(generation, &f),
        }
    }

    /// `with_policy`'s miss: loads the policy, runs `f` on it and caches it as loaded at
    /// `generation`. Out of line (and `f` behind a vtable) so that the hit path inlines `f`.
    #[cold]
    #[inline(never)]
    fn with_loaded_policy<R>(&self, generation: u64, f: &dyn Fn(&Policy) -> R) -> R {
        let policy = self.policy.load_full();
        let result = f(&policy);
        let _ = RECENT_POLICY.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                *recent = Some((self.id, generation, policy));
            }
        });
        result
    }

    /// Steps 2 and 3 of the module docs for a connection from `endpoint` (whose IP is `ip`):
    /// the rate limit, then the count. The admission releases the count if it is dropped
    /// before the connection takes it.
    ///
    /// The clock is read once, and only if a rate limit is on. When the last subnet bucket
    /// checked and the first subnet counted are the same subnet's, one lookup of its entry
    /// takes both, in go's order (see [`RateLimiter::check`]).
    #[inline]
    pub(crate) fn admit(
        &self,
        ip: Option<IpAddr>,
        endpoint: &Multiaddr,
    ) -> Result<Admission<'_>, Error> {
        let full = |ip: IpAddr, full: Full| {
            Error::IpLimitExceeded(Box::new(IpLimitExceeded::new(
                endpoint.clone(),
                ip,
                full.range,
                (full.current, full.limit),
            )))
        };
        self.with_policy(|policy| {
            let target = match ip {
                Some(ip) if policy.counting => Some((ip, policy.target(ip, &self.allowlist))),
                _ => None,
            };
            let first_subnet = match &target {
                Some((_, Target::Subnets(limits))) => limits.first().copied(),
                _ => None,
            };
            let (fused, at) = if policy.rate.is_active() {
                let at = policy.rate.expiry(self.time.now_ns());
                let fused = policy
                    .rate
                    .check(ip, &self.counts, at, first_subnet)
                    .map_err(|refusal| match refusal {
                        Refusal::Rate(range, limit) => Error::RateLimited(Box::new(
                            RateLimited::new(endpoint.clone(), ip, range, limit),
                        )),
                        Refusal::Full(ip, refused) => full(ip, refused),
                    })?;
                (fused, at)
            } else {
                // No clock read: an insertion's sweep judges buckets at time 0, which only
                // keeps more of them (no new ones take tokens meanwhile).
                (false, policy.rate.expiry(0))
            };
            let count = match target {
                Some((ip, target)) => self
                    .count(ip, target, fused, at)
                    .map_err(|refused| full(ip, refused))?,
                None => None,
            };
            Ok(Admission { gate: self, count })
        })
    }

    /// Counts a connection from `ip` against `target`; with `fused`, the first of its subnets
    /// has been counted already (by the rate check).
    #[inline]
    fn count(
        &self,
        ip: IpAddr,
        target: Target<'_>,
        fused: bool,
        at: Expiry,
    ) -> Result<Option<IpCount>, Full> {
        match target {
            Target::Network { limit, .. } if limit >= BaseLimit::UNLIMITED => Ok(None),
            Target::Network {
                network,
                range,
                limit,
            } => self
                .counts
                .add_to_network(network, range, limit, at)
                .map(Some),
            Target::Subnets(limits) => {
                let mut taken = LengthSet::EMPTY;
                let rest = match limits.split_first() {
                    Some((&(length, _), rest)) if fused => {
                        taken.insert(length);
                        rest
                    }
                    _ => limits,
                };
                if rest.is_empty() {
                    // Nothing more to take (and nothing to give back on a refusal).
                    return Ok(subnets_count(ip, taken));
                }
                self.counts.add_to_subnets(ip, rest, taken, at)
            }
        }
    }

    pub(crate) fn release(&self, count: IpCount) {
        self.counts.release(count);
    }

    /// Whether `ip` is in an allowlisted network (any entry, general or peer-specific): a
    /// connection the normal scopes refuse is then tried in the allowlisted ones.
    #[inline]
    pub(crate) fn is_allowlisted(&self, ip: IpAddr) -> bool {
        self.allowlist.network_of(ip).is_some()
    }

    /// go's `VerifySourceAddress`: whether a source should prove it owns its address (a
    /// QUIC Retry) before a connection is accepted.
    pub(crate) fn verify_source_address(&self, source: &SocketAddr) -> bool {
        let ip = source.ip();
        self.policy.with(|policy| {
            if !policy.counting {
                return false;
            }
            let at = Expiry {
                now_ns: self.time.now_ns(),
                grace_ns: duration_ns(VERIFY_GRACE),
            };
            let allows = |key: IpNet, conn_count: u64| {
                // go: 0.1 tokens per second, a burst of half the connection limit.
                let burst = u32::try_from(conn_count / 2).unwrap_or(u32::MAX);
                let limit = RateLimit {
                    rps: VERIFY_RPS,
                    burst,
                };
                match Rule::new(limit) {
                    Some(rule) if conn_count < BaseLimit::UNLIMITED => {
                        self.verify_buckets.try_take(key, &rule, at)
                    }
                    _ => true,
                }
            };
            let allowed = match policy.target(ip, &self.allowlist) {
                Target::Network { network, limit, .. } => allows(network, limit),
                Target::Subnets(limits) => limits
                    .iter()
                    .all(|&(length, limit)| allows(subnet_of(ip, length), limit)),
            };
            !allowed
        })
    }

    /// Forgets counters at zero and rate-limit buckets that have been full for their grace
    /// period (called by the collection pass).
    pub(crate) fn collect(&self) {
        let now_ns = self.time.now_ns();
        let grace_ns = self.policy.with(|policy| policy.rate.grace_ns());
        self.counts.sweep(Expiry { now_ns, grace_ns });
        self.verify_buckets.sweep(Expiry {
            now_ns,
            grace_ns: duration_ns(VERIFY_GRACE),
        });
    }

    /// Every subnet and network that holds connections, with how many.
    pub(crate) fn conn_counts(&self) -> Vec<(IpNet, u64)> {
        self.counts.snapshot()
    }
}

/// The count taken for a connection being opened: released if the connection is not opened,
/// handed to its scope otherwise.
#[derive(Debug)]
pub(crate) struct Admission<'g> {
    gate: &'g Gate,
    count: Option<IpCount>,
}

impl Admission<'_> {
    /// The count, for the connection scope to release when it closes.
    pub(crate) fn into_count(mut self) -> Option<IpCount> {
        self.count.take()
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.count.take() {
            self.gate.release(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_of(endpoint: &str) -> Option<IpAddr> {
        endpoint_ip(&endpoint.parse().expect("a valid multiaddr"))
    }

    #[test]
    fn the_ip_is_the_leading_component_as_in_go() {
        assert_eq!(
            ip_of("/ip4/1.2.3.4/tcp/1"),
            Some("1.2.3.4".parse().expect("ip"))
        );
        assert_eq!(
            ip_of("/ip6zone/eth0/ip6/fe80::1/udp/1/quic-v1"),
            Some("fe80::1".parse().expect("ip"))
        );
        assert_eq!(
            ip_of("/ip6/::ffff:1.2.3.4/tcp/1"),
            Some("::ffff:1.2.3.4".parse().expect("ip"))
        );
        let relay = format!(
            "/ip4/5.6.7.8/tcp/1/p2p/{}/p2p-circuit",
            libp2p_identity::PeerId::random()
        );
        assert_eq!(ip_of(&relay), Some("5.6.7.8".parse().expect("ip")));
        assert_eq!(ip_of("/dns4/example.com/tcp/1"), None);
        assert_eq!(ip_of("/tcp/1/ip4/1.2.3.4"), None);
        assert_eq!(ip_of("/memory/7"), None);
        assert_eq!(ip_of(""), None);
    }

    fn per_address(conns: u64) -> ConcreteLimitConfig {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.ip = IpLimits::default();
        limits.ip.subnet_v4 = vec![ConnLimitPerSubnet {
            prefix_length: 32,
            conn_count: conns,
        }];
        limits
    }

    #[test]
    fn a_swap_reaches_threads_that_cached_the_old_policy_and_gates_do_not_share_it() {
        let endpoint: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().expect("a valid multiaddr");
        let ip = endpoint_ip(&endpoint);
        let one = Gate::new(&per_address(1), Allowlist::new(), TimeSource::monotonic());
        let two = Gate::new(&per_address(2), Allowlist::new(), TimeSource::monotonic());
        let first = one.admit(ip, &endpoint).expect("the first connection");
        assert!(matches!(
            one.admit(ip, &endpoint),
            Err(Error::IpLimitExceeded(_))
        ));
        // Another gate on this thread uses its own policy, not the one cached for `one`.
        let kept: Vec<_> = (0..2)
            .map(|_| {
                two.admit(ip, &endpoint)
                    .expect("within the other gate's limit")
            })
            .collect();
        assert!(two.admit(ip, &endpoint).is_err());
        // Back to `one`, whose policy is replaced: the next admission sees the new limit.
        assert!(one.admit(ip, &endpoint).is_err());
        one.set_limits(&per_address(2));
        let second = one.admit(ip, &endpoint).expect("within the new limit");
        assert!(one.admit(ip, &endpoint).is_err());
        drop((first, second, kept));
        assert!(one.conn_counts().is_empty() && two.conn_counts().is_empty());
    }

    /// What `endpoint_ip` reads from the bytes, read through the multiaddr's own decoder.
    fn ip_through_iter(endpoint: &Multiaddr) -> Option<IpAddr> {
        use multiaddr::Protocol;
        for component in endpoint.iter() {
            match component {
                Protocol::Ip6zone(_) => continue,
                Protocol::Ip4(ip) => return Some(IpAddr::V4(ip)),
                Protocol::Ip6(ip) => return Some(IpAddr::V6(ip)),
                _ => return None,
            }
        }
        None
    }

    #[test]
    fn the_bytes_give_the_ip_the_decoder_gives() {
        let long_zone = "z".repeat(300);
        let endpoints = [
            "/ip4/0.0.0.0".to_owned(),
            "/ip4/255.255.255.255/udp/1/quic-v1".to_owned(),
            "/ip6/::/tcp/1".to_owned(),
            "/ip6/2001:db8::ff/tcp/1".to_owned(),
            "/ip6zone/a/ip6zone/b/ip6/fe80::2".to_owned(),
            format!("/ip6zone/{long_zone}/ip6/fe80::3/tcp/1"),
            format!("/ip6zone/{long_zone}/ip4/1.2.3.4"),
            format!("/ip6zone/{long_zone}/tcp/1"),
            "/ip6zone/eth0".to_owned(),
            "/dns6/example.com/tcp/1".to_owned(),
            "/unix/tmp%2Fsock".to_owned(),
            "/p2p-circuit".to_owned(),
            "/tcp/4001".to_owned(),
            "/udp/1/ip6/::1".to_owned(),
        ];
        for endpoint in endpoints {
            let endpoint: Multiaddr = endpoint.parse().expect("a valid multiaddr");
            assert_eq!(
                endpoint_ip(&endpoint),
                ip_through_iter(&endpoint),
                "{endpoint}"
            );
        }
        assert_eq!(read_varint(&[0xac, 0x02, 7]), Some((300, &[7][..])));
        assert_eq!(read_varint(&[0x80]), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
    }
}

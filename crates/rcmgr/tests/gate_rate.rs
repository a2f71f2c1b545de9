//! Connection rate limits and source-address verification, with time moved by hand: go v0.42's
//! defaults, network-prefix exemptions, the global bucket, endpoints without an IP, and the
//! verification limiter's vectors from go's `TestNewVerifySourceAddressRateLimiter`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rcmgr::{
    AddressRange, Clock, ConcreteLimitConfig, ConnLimitPerSubnet, ConnRateLimits, Direction, Error,
    IpLimits, IpNet, Multiaddr, PrefixRateLimit, RateLimit, ResourceManager, ResourceScope,
};

/// A clock that moves only when told to.
#[derive(Debug, Default)]
struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        let millis = u64::try_from(by.as_millis()).expect("a short step");
        self.millis.fetch_add(millis, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

fn addr(s: &str) -> Multiaddr {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid multiaddr: {err}"))
}

fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid network: {err}"))
}

/// Unlimited scopes with `ip` limits, on a clock the test moves.
fn manager(ip: IpLimits) -> (ResourceManager, Arc<ManualClock>) {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.ip = ip;
    let clock = Arc::new(ManualClock::default());
    let rm = ResourceManager::builder(limits)
        .clock(Arc::clone(&clock))
        .gc_interval(Duration::ZERO)
        .build()
        .expect("a manager with valid options");
    (rm, clock)
}

/// go's default rate limits, and no per-IP counting (so that only the rate limiter refuses).
fn rate_only(rate: ConnRateLimits) -> IpLimits {
    let mut ip = IpLimits::disabled();
    ip.rate = rate;
    ip
}

/// Opens and immediately closes connections from `endpoint` until one is refused; returns how
/// many opened and the refusal.
fn burst(rm: &ResourceManager, endpoint: &str) -> (usize, Error) {
    let endpoint = addr(endpoint);
    for opened in 0..10_000 {
        if let Err(err) = rm.open_connection(Direction::Inbound, true, &endpoint) {
            return (opened, err);
        }
    }
    panic!("{endpoint} was never rate limited")
}

#[test]
fn an_ipv4_address_gets_a_burst_of_sixteen_then_one_every_five_seconds() {
    let (rm, clock) = manager(rate_only(ConnRateLimits::default()));
    let (opened, err) = burst(&rm, "/ip4/192.0.2.7/tcp/1");
    assert_eq!(opened, 16);
    assert!(err.is_resource_limit_exceeded() && err.is_temporary());
    let refused = err.rate_limited().expect("a rate refusal");
    assert_eq!(refused.range(), AddressRange::Subnet(net("192.0.2.7/32")));
    assert_eq!(refused.prefix(), Some(net("192.0.2.7/32")));
    assert_eq!(
        refused.limit(),
        RateLimit {
            rps: 0.2,
            burst: 16
        }
    );
    assert_eq!(refused.ip(), Some("192.0.2.7".parse().expect("ip")));
    assert_eq!(
        err.to_string(),
        "rate limit exceeded for /ip4/192.0.2.7/tcp/1 (ip 192.0.2.7, subnet 192.0.2.7/32: burst 16, 0.2 per second)"
    );
    // Nothing was reserved for the refusal.
    assert!(rm.system().stat().is_empty());
    // Another address has its own bucket.
    assert_eq!(burst(&rm, "/ip4/192.0.2.8/tcp/1").0, 16);
    // 0.2 per second: a token every five seconds.
    clock.advance(Duration::from_millis(4_999));
    assert!(
        rm.open_connection(Direction::Inbound, true, &addr("/ip4/192.0.2.7/tcp/1"))
            .is_err()
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(burst(&rm, "/ip4/192.0.2.7/tcp/1").0, 1);
    // Outbound connections take tokens too.
    clock.advance(Duration::from_secs(5));
    let outbound = rm.open_connection(Direction::Outbound, false, &addr("/ip4/192.0.2.7/tcp/1"));
    assert!(outbound.is_ok());
    assert!(
        rm.open_connection(Direction::Outbound, false, &addr("/ip4/192.0.2.7/tcp/1"))
            .is_err()
    );
    // Full again after sixteen intervals.
    clock.advance(Duration::from_secs(80));
    assert_eq!(burst(&rm, "/ip4/192.0.2.7/tcp/1").0, 16);
}

#[test]
fn ipv6_subnets_have_a_slash_56_bucket_inside_a_slash_48_bucket() {
    let (rm, _clock) = manager(rate_only(ConnRateLimits::default()));
    // Sixteen per /56, from any address inside it.
    let (opened, err) = burst(&rm, "/ip6/2001:db8:1:1::1/tcp/1");
    assert_eq!(opened, 16);
    assert_eq!(
        err.rate_limited().expect("rate").range(),
        AddressRange::Subnet(net("2001:db8:1::/56"))
    );
    // Eighty per /48 across its /56s: 16 were used above, four more /56s use 64.
    let mut total = opened;
    for subnet in 1..=4 {
        total += burst(&rm, &format!("/ip6/2001:db8:1:{subnet:x}00::1/tcp/1")).0;
    }
    assert_eq!(total, 80);
    let err = burst(&rm, "/ip6/2001:db8:1:900::1/tcp/1").1;
    assert_eq!(
        err.rate_limited().expect("rate").range(),
        AddressRange::Subnet(net("2001:db8:1::/48"))
    );
}

#[test]
fn loopback_is_exempt_and_network_prefixes_bypass_the_subnet_and_global_buckets() {
    let mut rate = ConnRateLimits::default();
    rate.global = RateLimit {
        rps: 1.0,
        burst: 20,
    };
    rate.network_prefixes.push(PrefixRateLimit {
        prefix: net("10.0.0.0/8"),
        limit: RateLimit { rps: 1.0, burst: 3 },
    });
    let (rm, clock) = manager(rate_only(rate));
    for _ in 0..100 {
        drop(
            rm.open_connection(Direction::Inbound, true, &addr("/ip4/127.0.0.1/tcp/1"))
                .expect("loopback is unlimited"),
        );
    }
    // The whole /8 shares one bucket of three, and does not touch the global bucket.
    assert_eq!(burst(&rm, "/ip4/10.1.1.1/tcp/1").0, 3);
    let err = burst(&rm, "/ip4/10.2.2.2/tcp/1").1;
    assert_eq!(
        err.rate_limited().expect("rate").range(),
        AddressRange::NetworkPrefix(net("10.0.0.0/8"))
    );
    // Everyone else shares the global bucket of twenty after their own subnets' buckets.
    let mut opened = 0;
    for host in 1..=10 {
        opened += burst(&rm, &format!("/ip4/192.0.2.{host}/tcp/1")).0;
    }
    assert_eq!(opened, 20);
    let err = burst(&rm, "/ip4/198.51.100.1/tcp/1").1;
    assert_eq!(err.rate_limited().expect("rate").range(), AddressRange::All);
    clock.advance(Duration::from_secs(1));
    assert_eq!(burst(&rm, "/ip4/198.51.100.1/tcp/1").0, 1);
}

#[test]
fn endpoints_without_an_ip_use_only_the_global_bucket() {
    // go gives them all one IPv6 subnet bucket (burst 16), shared with nobody else; here they
    // are limited by the global limit only, like everyone.
    let (rm, _clock) = manager(rate_only(ConnRateLimits::default()));
    for i in 0..100 {
        let endpoint = if i % 2 == 0 {
            "/dns4/example.com/tcp/1"
        } else {
            "/unix/socket"
        };
        drop(
            rm.open_connection(Direction::Inbound, true, &addr(endpoint))
                .expect("no global limit by default"),
        );
    }
    let mut rate = ConnRateLimits::default();
    rate.global = RateLimit { rps: 1.0, burst: 5 };
    let (rm, _clock) = manager(rate_only(rate));
    let (opened, err) = burst(&rm, "/dns4/example.com/tcp/1");
    assert_eq!(opened, 5);
    let refused = err.rate_limited().expect("rate");
    assert_eq!((refused.ip(), refused.range()), (None, AddressRange::All));
    assert_eq!(
        err.to_string(),
        "rate limit exceeded for /dns4/example.com/tcp/1 (no ip, all addresses: burst 5, 1 per second)"
    );
}

#[test]
fn infinite_limits_turn_rate_limiting_off() {
    let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    for _ in 0..1_000 {
        drop(
            rm.open_connection(Direction::Inbound, true, &addr("/ip4/192.0.2.7/tcp/1"))
                .expect("no rate limit"),
        );
    }
    assert!(!rm.verify_source_address(&"192.0.2.7:1".parse().expect("socket address")));
}

#[test]
fn a_token_is_spent_even_when_the_per_ip_limit_then_refuses() {
    // As in go: the rate limiter counts attempts.
    let mut ip = IpLimits::default();
    ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 32,
        conn_count: 1,
    }];
    let (rm, _clock) = manager(ip);
    let endpoint = addr("/ip4/192.0.2.7/tcp/1");
    let held = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("first");
    for _ in 0..15 {
        let err = rm
            .open_connection(Direction::Inbound, true, &endpoint)
            .unwrap_err();
        assert!(err.ip_limit_exceeded().is_some(), "{err}");
    }
    drop(held);
    let err = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .unwrap_err();
    assert!(err.rate_limited().is_some(), "{err}");
}

#[test]
fn limits_are_validated_when_built() {
    let mut rate = ConnRateLimits::default();
    rate.subnet_v4[0].limit.rps = 0.0;
    let mut limits = ConcreteLimitConfig::infinite();
    limits.ip.rate = rate;
    let err = ResourceManager::builder(limits).build().unwrap_err();
    assert!(matches!(err, Error::InvalidIpLimits(_)), "{err}");
    assert!(err.to_string().contains("not a positive rate"), "{err}");
}

/// go's `TestNewVerifySourceAddressRateLimiter` vectors: the burst is half the connection
/// limit, rounded down.
#[test]
fn verification_allows_half_the_connection_limit_before_asking() {
    for (conn_count, burst) in [(10, 5), (20, 10), (5, 2), (8, 4)] {
        let mut ip = IpLimits::disabled();
        ip.subnet_v4 = vec![ConnLimitPerSubnet {
            prefix_length: 32,
            conn_count,
        }];
        let (rm, clock) = manager(ip);
        let source = "192.0.2.7:4001".parse().expect("socket address");
        let unverified = (0..conn_count)
            .take_while(|_| !rm.verify_source_address(&source))
            .count();
        assert_eq!(unverified, burst, "conn_count {conn_count}");
        assert!(rm.verify_source_address(&source));
        // Another address has its own budget; 0.1 per second refills this one.
        assert!(!rm.verify_source_address(&"192.0.2.8:4001".parse().expect("socket address")));
        clock.advance(Duration::from_secs(10));
        assert!(!rm.verify_source_address(&source));
        assert!(rm.verify_source_address(&source));
    }
}

#[test]
fn verification_follows_the_default_limits() {
    let (rm, _clock) = manager(IpLimits::default());
    let ask = |source: &str| rm.verify_source_address(&source.parse().expect("socket address"));
    // IPv4 /32 of 8: four unverified attempts.
    assert_eq!((0..10).take_while(|_| !ask("192.0.2.1:1")).count(), 4);
    // IPv6: the /56 of 8 (burst 4) is the tighter.
    assert_eq!((0..10).take_while(|_| !ask("[2001:db8::1]:1")).count(), 4);
    // Loopback is unlimited: never asked.
    assert!((0..1_000).all(|_| !ask("127.0.0.1:1") && !ask("[::1]:1")));
}

#[test]
fn a_subnet_counted_with_its_token_keeps_go_order_and_gives_counts_back() {
    // The /32 bucket and the /32 count share one entry, taken in one lookup: go's order
    // (subnet bucket, global bucket, then the counts) and all-or-nothing counting still hold.
    let mut ip = IpLimits::default();
    ip.subnet_v4 = vec![
        ConnLimitPerSubnet {
            prefix_length: 32,
            conn_count: 2,
        },
        ConnLimitPerSubnet {
            prefix_length: 24,
            conn_count: 1,
        },
    ];
    ip.rate.global = RateLimit { rps: 1.0, burst: 3 };
    let (rm, _clock) = manager(ip);
    let endpoint = addr("/ip4/192.0.2.7/tcp/1");
    let held = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("first");
    // The /24 is full: the /32 count taken with the token is given back.
    let err = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .unwrap_err();
    let refused = err.ip_limit_exceeded().expect("ip limit");
    assert_eq!(refused.range(), AddressRange::Subnet(net("192.0.2.0/24")));
    assert_eq!(rm.ip_conn_counts()[&net("192.0.2.7/32")], 1);
    // The global bucket (burst 3) refuses the fourth attempt after the /32 token: nothing is
    // counted for it.
    drop(held);
    let third = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("third");
    let err = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .unwrap_err();
    let refused = err.rate_limited().expect("rate");
    assert_eq!(refused.range(), AddressRange::All);
    assert_eq!(rm.ip_conn_counts()[&net("192.0.2.7/32")], 1);
    drop(third);
    assert!(rm.ip_conn_counts().is_empty());
}

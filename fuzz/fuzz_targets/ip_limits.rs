//! Address-based limits and rate limits: any IpLimits (prefix lengths of any size, networks
//! in either list, rates that are NaN, infinite, negative or zero, any burst and grace period)
//! is accepted by `validate` or refused with the problem named, and the builder agrees with
//! it; `ResourceManager::new`, which cannot refuse, skips what `validate` would refuse, and
//! connections from any address are counted and given back, never a panic.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rcmgr::{
    ConcreteLimitConfig, ConnLimitPerSubnet, ConnRateLimits, Direction, Error, IpLimits, IpNet,
    NetworkPrefixLimit, PrefixRateLimit, RateLimit, ResourceManager, SubnetRateLimit,
};

fn ip(input: &mut Unstructured<'_>) -> Option<std::net::IpAddr> {
    Some(if input.arbitrary::<bool>().ok()? {
        std::net::IpAddr::V6(input.arbitrary::<[u16; 8]>().ok()?.into())
    } else {
        std::net::IpAddr::V4(input.arbitrary::<[u8; 4]>().ok()?.into())
    })
}

fn network(input: &mut Unstructured<'_>) -> Option<IpNet> {
    let address = ip(input)?;
    let length = input.int_in_range(0u8..=128).ok()?;
    IpNet::new(address, length).ok()
}

fn rate(input: &mut Unstructured<'_>) -> Option<RateLimit> {
    let rps = match input.int_in_range(0u8..=5).ok()? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -1.0,
        3 => 0.0,
        _ => input.arbitrary::<f64>().ok()?,
    };
    Some(RateLimit {
        rps,
        burst: input.arbitrary().ok()?,
    })
}

fn limits(input: &mut Unstructured<'_>) -> Option<IpLimits> {
    let mut limits = IpLimits::disabled();
    let mut rate_limits = ConnRateLimits::disabled();
    for _ in 0..input.int_in_range(0u8..=12).ok()? {
        match input.int_in_range(0u8..=6).ok()? {
            0 | 1 => {
                let limit = ConnLimitPerSubnet {
                    prefix_length: input.arbitrary().ok()?,
                    conn_count: input.arbitrary().ok()?,
                };
                if input.arbitrary::<bool>().ok()? {
                    limits.subnet_v4.push(limit);
                } else {
                    limits.subnet_v6.push(limit);
                }
            }
            2 => {
                let limit = NetworkPrefixLimit {
                    network: network(input)?,
                    conn_count: input.arbitrary().ok()?,
                };
                // Either list, whatever the family: validate says which is wrong.
                if input.arbitrary::<bool>().ok()? {
                    limits.network_prefix_v4.push(limit);
                } else {
                    limits.network_prefix_v6.push(limit);
                }
            }
            3 => rate_limits.network_prefixes.push(PrefixRateLimit {
                prefix: network(input)?,
                limit: rate(input)?,
            }),
            4 | 5 => {
                let limit = SubnetRateLimit {
                    prefix_length: input.arbitrary().ok()?,
                    limit: rate(input)?,
                };
                if input.arbitrary::<bool>().ok()? {
                    rate_limits.subnet_v4.push(limit);
                } else {
                    rate_limits.subnet_v6.push(limit);
                }
            }
            _ => rate_limits.global = rate(input)?,
        }
    }
    rate_limits.grace_period = Duration::from_millis(input.arbitrary::<u32>().ok()?.into());
    limits.rate = rate_limits;
    Some(limits)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Some(ip_limits) = limits(&mut input) else {
        return;
    };
    let valid = ip_limits.validate();
    if let Err(err) = &valid {
        assert!(matches!(err, Error::InvalidIpLimits(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid ip limits: "), "{err}");
    }
    let mut config = ConcreteLimitConfig::infinite();
    config.ip = ip_limits;
    let built = ResourceManager::builder(config.clone())
        .gc_interval(Duration::ZERO)
        .build();
    assert_eq!(built.is_ok(), valid.is_ok(), "the builder runs validate");
    // `new` cannot fail: it skips the entries validate refuses.
    let rm = ResourceManager::new(config);
    let mut open = Vec::new();
    for _ in 0..8 {
        let Some(address) = ip(&mut input) else {
            break;
        };
        let endpoint = match address {
            std::net::IpAddr::V4(v4) => format!("/ip4/{v4}/tcp/1"),
            std::net::IpAddr::V6(v6) => format!("/ip6/{v6}/udp/1/quic-v1"),
        };
        let endpoint = endpoint.parse().expect("a multiaddr");
        match rm.open_connection(Direction::Inbound, true, &endpoint) {
            Ok(conn) => open.push(conn),
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }
    drop(open);
    assert!(
        rm.ip_conn_counts().values().all(|n| *n == 0),
        "{:?}",
        rm.ip_conn_counts()
    );
    rm.gc();
});

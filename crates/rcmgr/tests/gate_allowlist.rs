//! The allowlist through the public API: the cases go's allowlist tests cover (one address, a
//! CIDR, peer-specific entries that match and that do not, 0.0.0.0/0, duplicates, removal),
//! IPv6, malformed entries, many entries, and changes while lookups run on other threads.

use rcmgr::{AllowlistEntryProblem, ConcreteLimitConfig, Multiaddr, PeerId, ResourceManager};

fn manager() -> ResourceManager {
    ResourceManager::builder(ConcreteLimitConfig::infinite())
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("a manager with valid options")
}

fn addr(s: &str) -> Multiaddr {
    s.parse()
        .unwrap_or_else(|err| panic!("{s} is a valid multiaddr: {err}"))
}

#[test]
fn a_single_address_is_allowed_on_any_transport() {
    let rm = manager();
    let allowlist = rm.allowlist();
    allowlist
        .add(&addr("/ip4/1.2.3.4/tcp/1234"))
        .expect("a valid entry");
    assert!(allowlist.allowed(&addr("/ip4/1.2.3.4/tcp/1234")));
    assert!(allowlist.allowed(&addr("/ip4/1.2.3.4/udp/9/quic-v1")));
    assert!(!allowlist.allowed(&addr("/ip4/1.2.3.5/tcp/1234")));
    // A general entry allows every peer.
    assert!(allowlist.allowed_peer_and_multiaddr(PeerId::random(), &addr("/ip4/1.2.3.4/tcp/1")));
}

/// One case of go's `TestAllowedWithPeer` shape: entries, the endpoint, the peer, and the two
/// answers (before the peer is known, and with it).
struct Case {
    name: &'static str,
    entries: Vec<String>,
    endpoint: &'static str,
    allowed: bool,
    allowed_with_peer: bool,
}

#[test]
fn peer_specific_entries_match_only_their_peer() {
    let (a, b) = (PeerId::random(), PeerId::random());
    let at_a = "/ip4/1.2.3.4/tcp/1234";
    let at_b = "/ip4/2.2.3.4/tcp/1234";
    let cases = [
        Case {
            name: "another address",
            entries: vec!["/ip4/1.2.3.1".into()],
            endpoint: at_a,
            allowed: false,
            allowed_with_peer: false,
        },
        Case {
            name: "the address, reserved for another peer",
            entries: vec![format!("/ip4/1.2.3.4/p2p/{b}")],
            endpoint: at_a,
            allowed: true,
            allowed_with_peer: false,
        },
        Case {
            name: "the network, no peer",
            entries: vec!["/ip4/1.2.3.0/ipcidr/24".into()],
            endpoint: at_a,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "the peer, on another network",
            entries: vec![format!("/ip4/1.2.3.0/ipcidr/24/p2p/{a}")],
            endpoint: at_b,
            allowed: false,
            allowed_with_peer: false,
        },
        Case {
            name: "the network and the peer",
            entries: vec![format!("/ip4/1.2.3.0/ipcidr/24/p2p/{a}")],
            endpoint: at_a,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "the network, reserved for another peer",
            entries: vec![format!("/ip4/1.2.3.0/ipcidr/24/p2p/{b}")],
            endpoint: at_a,
            allowed: true,
            allowed_with_peer: false,
        },
        Case {
            name: "the peer from anywhere",
            entries: vec![format!("/ip4/0.0.0.0/ipcidr/0/p2p/{a}")],
            endpoint: at_b,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "everyone from anywhere",
            entries: vec!["/ip4/0.0.0.0/ipcidr/0".into()],
            endpoint: at_b,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "the peer at two addresses",
            entries: vec![
                format!("/ip4/1.2.3.4/p2p/{a}"),
                format!("/ip4/2.2.3.4/p2p/{a}"),
            ],
            endpoint: at_b,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "the same entry twice",
            entries: vec![
                format!("/ip4/1.2.3.4/p2p/{a}"),
                format!("/ip4/1.2.3.4/p2p/{a}"),
            ],
            endpoint: at_a,
            allowed: true,
            allowed_with_peer: true,
        },
        Case {
            name: "two peers, the endpoint is the other's",
            entries: vec![
                format!("/ip4/1.2.3.4/p2p/{a}"),
                format!("/ip4/2.2.3.4/p2p/{b}"),
            ],
            endpoint: at_b,
            allowed: true,
            allowed_with_peer: false,
        },
    ];
    for case in cases {
        let rm = manager();
        for entry in &case.entries {
            rm.allowlist().add(&addr(entry)).expect("a valid entry");
        }
        let endpoint = addr(case.endpoint);
        assert_eq!(
            rm.allowlist().allowed(&endpoint),
            case.allowed,
            "{}: allowed",
            case.name
        );
        assert_eq!(
            rm.allowlist().allowed_peer_and_multiaddr(a, &endpoint),
            case.allowed_with_peer,
            "{}: allowed for the peer",
            case.name
        );
    }
}

#[test]
fn removal_takes_one_entry_of_each_form() {
    let rm = manager();
    let allowlist = rm.allowlist();
    let peer = PeerId::random();
    let entries = [
        ("/ip4/1.2.3.4", "/ip4/1.2.3.4/tcp/1"),
        ("/ip4/10.0.0.0/ipcidr/8", "/ip4/10.9.8.7/tcp/1"),
        ("/ip6/2001:db8::/ipcidr/32", "/ip6/2001:db8:ffff::1/tcp/1"),
        ("/ip6/2001:db9::7", "/ip6/2001:db9::7/udp/1/quic-v1"),
    ];
    for (entry, inside) in entries {
        let with_peer = format!("{entry}/p2p/{peer}");
        allowlist.add(&addr(entry)).expect("a valid entry");
        allowlist.add(&addr(&with_peer)).expect("a valid entry");
        assert!(allowlist.allowed(&addr(inside)), "{entry}");
        assert!(allowlist.remove(&addr(entry)).expect("valid"), "{entry}");
        // The peer's entry still allows the address, but only for the peer.
        assert!(allowlist.allowed(&addr(inside)), "{entry}");
        assert!(!allowlist.allowed_peer_and_multiaddr(PeerId::random(), &addr(inside)));
        assert!(allowlist.allowed_peer_and_multiaddr(peer, &addr(inside)));
        assert!(allowlist.remove(&addr(&with_peer)).expect("valid"));
        assert!(!allowlist.allowed(&addr(inside)), "{entry}");
        // Removing what is not there succeeds and says so.
        assert!(!allowlist.remove(&addr(&with_peer)).expect("valid"));
    }
}

#[test]
fn duplicates_need_as_many_removals_and_host_bits_are_masked() {
    let rm = manager();
    let allowlist = rm.allowlist();
    allowlist
        .add(&addr("/ip4/1.2.3.4/ipcidr/24"))
        .expect("valid");
    allowlist
        .add(&addr("/ip4/1.2.3.0/ipcidr/24"))
        .expect("valid");
    let inside = addr("/ip4/1.2.3.200/tcp/1");
    assert!(
        allowlist
            .remove(&addr("/ip4/1.2.3.9/ipcidr/24"))
            .expect("valid")
    );
    assert!(allowlist.allowed(&inside));
    assert!(
        allowlist
            .remove(&addr("/ip4/1.2.3.0/ipcidr/24"))
            .expect("valid")
    );
    assert!(!allowlist.allowed(&inside));
    // A different mask is a different entry.
    allowlist
        .add(&addr("/ip4/1.2.3.0/ipcidr/24"))
        .expect("valid");
    assert!(
        !allowlist
            .remove(&addr("/ip4/1.2.3.0/ipcidr/25"))
            .expect("valid")
    );
    assert!(allowlist.allowed(&inside));
}

#[test]
fn ipv6_entries_match_ipv6_endpoints_only() {
    let rm = manager();
    let allowlist = rm.allowlist();
    allowlist
        .add(&addr("/ip6/2001:db8:1::/ipcidr/48"))
        .expect("valid");
    assert!(allowlist.allowed(&addr("/ip6/2001:db8:1:ffff::1/tcp/1")));
    assert!(!allowlist.allowed(&addr("/ip6/2001:db8:2::1/tcp/1")));
    // An IPv4-mapped IPv6 address is IPv6, as in go: an IPv4 entry does not cover it.
    allowlist.add(&addr("/ip4/192.0.2.1")).expect("valid");
    assert!(allowlist.allowed(&addr("/ip4/192.0.2.1/tcp/1")));
    assert!(!allowlist.allowed(&addr("/ip6/::ffff:192.0.2.1/tcp/1")));
    // ::/0 covers every IPv6 address and no IPv4 one.
    allowlist.add(&addr("/ip6/::/ipcidr/0")).expect("valid");
    assert!(allowlist.allowed(&addr("/ip6/fe80::1/tcp/1")));
    assert!(!allowlist.allowed(&addr("/ip4/198.51.100.1/tcp/1")));
    // A zone before the address is skipped, as go's manet.ToIP does.
    assert!(allowlist.allowed(&addr("/ip6zone/eth0/ip6/fe80::1/tcp/1")));
}

#[test]
fn malformed_entries_are_refused_and_change_nothing() {
    let rm = manager();
    let allowlist = rm.allowlist();
    let peer = PeerId::random();
    let problems = [
        (format!("/p2p/{peer}"), AllowlistEntryProblem::MissingIp),
        (
            "/dns4/example.com/tcp/1".to_owned(),
            AllowlistEntryProblem::MissingIp,
        ),
        ("/ipcidr/8".to_owned(), AllowlistEntryProblem::MissingIp),
        (
            "/ip4/1.2.3.4/ipcidr/33".to_owned(),
            AllowlistEntryProblem::PrefixTooLong {
                length: 33,
                max: 32,
            },
        ),
        (
            "/ip6/::1/ipcidr/129".to_owned(),
            AllowlistEntryProblem::PrefixTooLong {
                length: 129,
                max: 128,
            },
        ),
    ];
    for (entry, problem) in &problems {
        let entry = addr(entry);
        let err = allowlist.add(&entry).unwrap_err();
        let invalid = err
            .invalid_allowlist_entry()
            .unwrap_or_else(|| panic!("{entry}: expected an invalid entry, got {err}"));
        assert_eq!(invalid.problem(), *problem, "{entry}");
        assert_eq!(invalid.entry(), &entry);
        assert!(!err.is_resource_limit_exceeded());
        assert!(allowlist.remove(&entry).is_err(), "{entry}");
    }
    assert!(!allowlist.allowed(&addr("/ip4/1.2.3.4/tcp/1")));
    // Text that is not a multiaddr at all never reaches the allowlist: the parser refuses it.
    assert!("/ip4/1.2.3.256".parse::<Multiaddr>().is_err());
    assert!("/ip4/1.2.3.4/ipcidr/x".parse::<Multiaddr>().is_err());
    // The builder refuses the whole set if one entry is bad.
    let built = ResourceManager::builder(ConcreteLimitConfig::infinite())
        .allowlist([addr("/ip4/1.2.3.4"), addr("/ip4/1.2.3.4/ipcidr/40")])
        .build();
    assert!(built.is_err());
    // Endpoints without an IP are never allowed, whatever the allowlist holds.
    allowlist
        .add(&addr("/ip4/0.0.0.0/ipcidr/0"))
        .expect("valid");
    allowlist.add(&addr("/ip6/::/ipcidr/0")).expect("valid");
    for endpoint in [
        "/dns4/example.com/tcp/1",
        "/unix/socket",
        "/memory/3",
        "/tcp/1/ip4/1.2.3.4",
    ] {
        assert!(!allowlist.allowed(&addr(endpoint)), "{endpoint}");
    }
}

#[test]
fn thousands_of_entries_of_mixed_lengths_answer_by_longest_match() {
    let rm = manager();
    let allowlist = rm.allowlist();
    let peer = PeerId::random();
    for i in 0..3000u32 {
        let [_, b, c, d] = (i * 7919).to_be_bytes();
        let entry = match i % 3 {
            0 => format!("/ip4/10.{b}.{c}.{d}"),
            1 => format!("/ip4/172.{c}.{d}.0/ipcidr/24"),
            _ => format!("/ip6/2001:db8:{i:x}::/ipcidr/48/p2p/{peer}"),
        };
        allowlist.add(&addr(&entry)).expect("valid");
    }
    let [_, b, c, d] = (3 * 7919u32).to_be_bytes();
    assert!(allowlist.allowed(&addr(&format!("/ip4/10.{b}.{c}.{d}/tcp/1"))));
    let [_, _, c, d] = 7919u32.to_be_bytes();
    assert!(allowlist.allowed(&addr(&format!("/ip4/172.{c}.{d}.77/tcp/1"))));
    assert!(!allowlist.allowed(&addr("/ip4/11.0.0.1/tcp/1")));
    let v6 = addr("/ip6/2001:db8:5::9/tcp/1");
    assert!(allowlist.allowed(&v6));
    assert!(allowlist.allowed_peer_and_multiaddr(peer, &v6));
    assert!(!allowlist.allowed_peer_and_multiaddr(PeerId::random(), &v6));
}

#[test]
fn lookups_on_other_threads_see_whole_tables_while_entries_change() {
    let rm = manager();
    let stable = addr("/ip4/192.0.2.1/tcp/1");
    rm.allowlist()
        .add(&addr("/ip4/192.0.2.0/ipcidr/24"))
        .expect("valid");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    assert!(rm.allowlist().allowed(&stable));
                }
            });
        }
        for i in 0..500u32 {
            let [_, _, c, d] = i.to_be_bytes();
            let entry = addr(&format!("/ip4/10.0.{c}.{d}"));
            rm.allowlist().add(&entry).expect("valid");
            if i % 2 == 0 {
                assert!(rm.allowlist().remove(&entry).expect("valid"));
            }
        }
    });
    assert!(rm.allowlist().allowed(&addr("/ip4/10.0.0.1/tcp/1")));
    assert!(!rm.allowlist().allowed(&addr("/ip4/10.0.0.2/tcp/1")));
}

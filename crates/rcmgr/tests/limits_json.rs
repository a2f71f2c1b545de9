//! go's JSON limit format in both directions: what go writes, rcmgr writes byte for byte, and
//! what go reads, rcmgr reads to the same limits.

use std::collections::BTreeMap;

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, LimitVal, PartialLimitConfig, PeerId, ResourceLimits,
    ScalingLimitConfig,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const README_PEER: &str = "QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf";

fn value(n: u64) -> LimitVal {
    LimitVal::Value(n)
}

/// go's README example, as go's `TestReadmeLimitConfigSerialization` builds it.
fn readme_example() -> Result<PartialLimitConfig, Box<dyn std::error::Error>> {
    let mut partial = PartialLimitConfig::default();
    partial.system.streams_outbound = LimitVal::Unlimited;
    partial.peer.insert(
        README_PEER.parse()?,
        ResourceLimits {
            streams_inbound: LimitVal::BlockAll,
            streams_outbound: LimitVal::Unlimited,
            conns_inbound: LimitVal::BlockAll,
            ..ResourceLimits::default()
        },
    );
    Ok(partial)
}

#[test]
fn gos_readme_example_serializes_to_exactly_the_string_gos_test_expects() -> TestResult {
    let expected = r#"{"Peer":{"QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf":{"StreamsInbound":"blockAll","StreamsOutbound":"unlimited","ConnsInbound":"blockAll"}},"System":{"StreamsOutbound":"unlimited"}}"#;
    let partial = readme_example()?;
    assert_eq!(partial.to_json_string(), expected);
    assert_eq!(PartialLimitConfig::from_json_str(expected)?, partial);
    Ok(())
}

/// A configuration that uses every kind of value in every place.
fn everything() -> Result<PartialLimitConfig, Box<dyn std::error::Error>> {
    let mut partial = readme_example()?;
    partial.transient = ResourceLimits {
        streams: value(1),
        conns: LimitVal::BlockAll,
        fd: LimitVal::Unlimited,
        memory: value(i64::MAX as u64),
        ..ResourceLimits::default()
    };
    partial.allowlisted_system.memory = LimitVal::Unlimited;
    partial.allowlisted_transient.memory = LimitVal::BlockAll;
    partial.service_default.streams_inbound = value(7);
    partial.service_peer_default.conns_outbound = value(3);
    partial.protocol_default.fd = value(1);
    partial.protocol_peer_default.memory = value(1 << 20);
    partial.peer_default.conns = value(9);
    partial.conn.memory = value(12345);
    partial.stream.streams_outbound = LimitVal::Unlimited;
    partial
        .service
        .insert("libp2p.identify".into(), ResourceLimits::default());
    partial.service.insert(
        "b<&>".into(),
        ResourceLimits {
            memory: LimitVal::Unlimited,
            ..ResourceLimits::default()
        },
    );
    partial.service_peer.insert(
        "libp2p.ping".into(),
        ResourceLimits {
            streams: value(4),
            ..ResourceLimits::default()
        },
    );
    partial.protocol.insert(
        "/ipfs/id/1.0.0".into(),
        ResourceLimits {
            memory: value(99),
            ..ResourceLimits::default()
        },
    );
    partial.protocol_peer.insert(
        "/ipfs/ping/1.0.0".into(),
        ResourceLimits {
            streams_inbound: value(2),
            ..ResourceLimits::default()
        },
    );
    partial
        .peer
        .insert(PeerId::random(), ResourceLimits::default());
    Ok(partial)
}

#[test]
fn partial_to_json_to_partial_is_the_identity() -> TestResult {
    let partial = everything()?;
    let compact = partial.to_json_string();
    assert_eq!(PartialLimitConfig::from_json_str(&compact)?, partial);
    let pretty = partial.to_json_pretty();
    assert_eq!(PartialLimitConfig::from_json_str(&pretty)?, partial);
    assert_eq!(
        PartialLimitConfig::from_json_str("{}")?,
        PartialLimitConfig::default()
    );
    assert_eq!(PartialLimitConfig::default().to_json_string(), "{}");
    assert_eq!(PartialLimitConfig::default().to_json_pretty(), "{}");
    Ok(())
}

#[test]
fn concrete_to_partial_to_concrete_is_the_identity() {
    let mut limits = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(12 << 30, 65536);
    limits.peer.insert(
        PeerId::random(),
        BaseLimit {
            conns: 3,
            ..BaseLimit::unlimited()
        },
    );
    limits.conn.fd = 0;
    let partial = limits.to_partial();
    assert!(partial.service.values().all(|l| !l.is_default()));
    let infinite = ConcreteLimitConfig::infinite();
    // go's limit format has no address-based limits: a build takes them from its defaults,
    // and every other field comes back exactly.
    let mut expected = limits.clone();
    expected.ip = infinite.ip.clone();
    assert_eq!(partial.build(&infinite), expected);
    // ... also through JSON.
    let reread = PartialLimitConfig::from_json_str(&partial.to_json_pretty());
    assert_eq!(reread.map(|p| p.build(&infinite)).ok(), Some(expected));
    // Building on anything else gives the same scopes: nothing is left to the defaults.
    let other = ScalingLimitConfig::default().scale(0, 0);
    let mut on_other = partial.build(&other);
    assert_eq!(on_other.ip, other.ip);
    on_other.ip = infinite.ip.clone();
    assert_eq!(on_other, partial.build(&infinite));
}

#[test]
fn serialization_leaves_defaults_out_and_orders_keys_as_go_does() -> TestResult {
    let mut partial = PartialLimitConfig::default();
    partial.stream.memory = value(1);
    partial.system.fd = value(2);
    partial.peer_default.streams = value(3);
    partial
        .protocol_peer
        .insert("/z".into(), ResourceLimits::default());
    partial.protocol_peer.insert(
        "/a".into(),
        ResourceLimits {
            memory: value(4),
            conns: value(5),
            ..ResourceLimits::default()
        },
    );
    partial
        .service
        .insert("svc".into(), ResourceLimits::default());
    assert_eq!(
        partial.to_json_string(),
        concat!(
            r#"{"Service":{"svc":{}},"#,
            r#""ProtocolPeer":{"/a":{"Conns":5,"Memory":"4"},"/z":{}},"#,
            r#""System":{"FD":2},"PeerDefault":{"Streams":3},"Stream":{"Memory":"1"}}"#,
        )
    );
    assert_eq!(
        partial.to_json_pretty(),
        r#"{
  "Service": {
    "svc": {}
  },
  "ProtocolPeer": {
    "/a": {
      "Conns": 5,
      "Memory": "4"
    },
    "/z": {}
  },
  "System": {
    "FD": 2
  },
  "PeerDefault": {
    "Streams": 3
  },
  "Stream": {
    "Memory": "1"
  }
}"#
    );
    Ok(())
}

#[test]
fn peers_are_written_in_base58_order_and_names_escaped_as_go_does() -> TestResult {
    let mut partial = PartialLimitConfig::default();
    let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
    for peer in &peers {
        partial.peer.insert(*peer, ResourceLimits::default());
    }
    let mut names: Vec<String> = peers.iter().map(|p| p.to_base58()).collect();
    names.sort();
    let expected_peers: Vec<String> = names.iter().map(|n| format!(r#""{n}":{{}}"#)).collect();
    assert_eq!(
        partial.to_json_string(),
        format!(r#"{{"Peer":{{{}}}}}"#, expected_peers.join(","))
    );

    let mut escaped = PartialLimitConfig::default();
    escaped
        .protocol
        .insert("/a<b>&c\u{2028}\"\n".into(), ResourceLimits::default());
    let json = escaped.to_json_string();
    assert_eq!(
        json,
        r#"{"Protocol":{"/a\u003cb\u003e\u0026c\u2028\"\n":{}}}"#
    );
    assert_eq!(PartialLimitConfig::from_json_str(&json)?, escaped);
    Ok(())
}

#[test]
fn edge_values_are_written_as_markers() -> TestResult {
    let mut partial = PartialLimitConfig::default();
    partial.system.conns = value(0);
    partial.system.memory = value(0);
    partial.system.fd = value(u64::MAX);
    partial.system.streams = value(i64::MAX as u64);
    assert_eq!(
        partial.to_json_string(),
        r#"{"System":{"Streams":9223372036854775807,"Conns":"blockAll","FD":"unlimited","Memory":"blockAll"}}"#
    );
    // They read back as the markers, which mean the same limits.
    let reread = PartialLimitConfig::from_json_str(&partial.to_json_string())?;
    let mut expected = partial.clone();
    expected.system.conns = LimitVal::BlockAll;
    expected.system.memory = LimitVal::BlockAll;
    expected.system.fd = LimitVal::Unlimited;
    assert_eq!(reread, expected);
    Ok(())
}

/// rcmgr's own user file, shaped like go's `limit_config_test.json`: memory as bare integers,
/// a service entry left empty, per-service, per-protocol and per-peer entries.
const USER_FILE: &str = r#"{
    "System": {
        "Memory": 131072,
        "Conns": 32,
        "ConnsInbound": 16,
        "ConnsOutbound": 32,
        "FD": 64
    },
    "ServiceDefault": {
        "Memory": 4321
    },
    "Service": {
        "kad": {
            "Memory": 16384
        },
        "empty": {}
    },
    "ServicePeerDefault": {
        "Memory": 1024
    },
    "ServicePeer": {
        "kad": {
            "Memory": 2048
        }
    },
    "ProtocolDefault": {
        "Memory": 4096
    },
    "ProtocolPeerDefault": {
        "Memory": 512
    },
    "Protocol": {
        "/kad/1.0.0": {
            "Memory": 16384
        }
    },
    "PeerDefault": {
        "Memory": 8192
    },
    "Peer": {
        "12D3KooWSJcRGtn1PxcVurHrjtT7EoUnn4w2y8e7MK2cnjSGEwwM": {
            "Memory": 8193
        }
    }
}"#;

#[test]
fn a_user_file_builds_on_the_defaults_as_go_builds_it() -> TestResult {
    let defaults = ScalingLimitConfig::default().scale(4 << 30, 4096);
    let partial = PartialLimitConfig::from_json_str(USER_FILE)?;
    let limits = partial.build(&defaults);

    assert_eq!(limits.system.memory, 131072);
    assert_eq!(
        (
            limits.system.conns,
            limits.system.conns_inbound,
            limits.system.fd
        ),
        (32, 16, 64)
    );
    assert_eq!(limits.system.streams, defaults.system.streams);
    assert_eq!(limits.transient, defaults.transient);

    assert_eq!(limits.service_default.memory, 4321);
    assert_eq!(
        limits.service_default.streams,
        defaults.service_default.streams
    );
    assert_eq!(limits.service["kad"].memory, 16384);
    assert_eq!(
        limits.service["kad"].streams,
        limits.service_default.streams
    );
    // An empty entry is the built default of its kind.
    assert_eq!(limits.service["empty"], limits.service_default);
    assert_eq!(limits.service_peer_default.memory, 1024);
    assert_eq!(limits.service_peer["kad"].memory, 2048);
    assert_eq!(limits.protocol_default.memory, 4096);
    assert_eq!(limits.protocol["/kad/1.0.0"].memory, 16384);
    assert_eq!(limits.protocol_peer_default.memory, 512);
    assert_eq!(limits.peer_default.memory, 8192);
    let peer: PeerId = "12D3KooWSJcRGtn1PxcVurHrjtT7EoUnn4w2y8e7MK2cnjSGEwwM".parse()?;
    assert_eq!(limits.peer[&peer].memory, 8193);
    assert_eq!(limits.peer[&peer].conns, limits.peer_default.conns);
    Ok(())
}

#[test]
#[allow(clippy::print_stderr, reason = "a skipped check says why")]
fn gos_user_files_load_when_they_are_beside_the_checkout() -> TestResult {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/go-limit-files");
    for name in [
        "limit_config_test.json",
        "limit_config_test.backwards-compat.json",
    ] {
        let path = dir.join(name);
        if !path.exists() {
            eprintln!("skipped: {} is not here", path.display());
            continue;
        }
        let limits = PartialLimitConfig::from_json_file(&path)?
            .build(&ScalingLimitConfig::default().scale(8 << 30, 16384));
        assert_eq!(limits.system.memory, 65536);
        assert_eq!(limits.service["A"].memory, 8192);
        assert_eq!(limits.service["B"], limits.service_default);
        assert_eq!(limits.service_default.memory, 8765);
        let peer: PeerId = "12D3KooWPFH2Bx2tPfw6RLxN8k2wh47GRXgkt9yrAHU37zFwHWzS".parse()?;
        assert_eq!(limits.peer[&peer].memory, 4097);
    }
    Ok(())
}

#[test]
fn field_names_match_in_any_case_and_unknown_fields_are_skipped() -> TestResult {
    let partial = PartialLimitConfig::from_json_str(
        r#"{
            "system": {"conns": 5, "MEMORY": "6", "Fd": 7, "conns_inbound": 99, "Extra": {"x": [1, {"y": null}]}},
            "SERVICE": {"Svc": {"streamsINBOUND": 8, "unknown": true}},
            "peerdefault": {"StreamsOutbound": 9},
            "NotAScope": {"Memory": "oops"},
            "Version": 3
        }"#,
    )?;
    assert_eq!(partial.system.conns, value(5));
    assert_eq!(partial.system.memory, value(6));
    assert_eq!(partial.system.fd, value(7));
    assert_eq!(partial.system.conns_inbound, LimitVal::Default);
    // Map keys are names, matched exactly.
    assert_eq!(partial.service["Svc"].streams_inbound, value(8));
    assert!(!partial.service.contains_key("svc"));
    assert_eq!(partial.peer_default.streams_outbound, value(9));
    Ok(())
}

#[test]
fn values_read_as_go_reads_them() -> TestResult {
    let partial = PartialLimitConfig::from_json_str(
        r#"{"System": {
            "Streams": 0, "StreamsInbound": -1, "StreamsOutbound": -2,
            "Conns": "unlimited", "ConnsInbound": "blockAll", "ConnsOutbound": "default",
            "FD": 9223372036854775807, "Memory": "0"
        }, "Transient": {"Memory": 0}, "Conn": {"Memory": "-1"}, "Stream": {"Memory": -2},
        "PeerDefault": {"Memory": "+4096"}, "ProtocolDefault": {"Memory": "default"}}"#,
    )?;
    let system = partial.system;
    assert_eq!(system.streams, LimitVal::BlockAll, "an explicit 0 blocks");
    assert_eq!(system.streams_inbound, LimitVal::Unlimited);
    assert_eq!(system.streams_outbound, LimitVal::BlockAll);
    assert_eq!(system.conns, LimitVal::Unlimited);
    assert_eq!(system.conns_inbound, LimitVal::BlockAll);
    assert_eq!(system.conns_outbound, LimitVal::Default);
    assert_eq!(system.fd, value(i64::MAX as u64));
    assert_eq!(system.memory, LimitVal::BlockAll);
    assert_eq!(partial.transient.memory, LimitVal::BlockAll);
    assert_eq!(partial.conn.memory, LimitVal::Unlimited);
    assert_eq!(partial.stream.memory, LimitVal::BlockAll);
    assert_eq!(partial.peer_default.memory, value(4096));
    assert_eq!(partial.protocol_default.memory, LimitVal::Default);
    Ok(())
}

#[test]
fn null_scopes_and_maps_read_as_go_reads_them() -> TestResult {
    assert_eq!(
        PartialLimitConfig::from_json_str("null")?,
        PartialLimitConfig::default()
    );
    let partial = PartialLimitConfig::from_json_str(
        r#"{"System": null, "Service": {"a": {}}, "service": null, "Protocol": {"/p": null}}"#,
    )?;
    assert!(partial.system.is_default());
    assert!(partial.service.is_empty(), "null empties a map, as in go");
    assert!(partial.protocol["/p"].is_default());
    Ok(())
}

#[test]
fn repeated_keys_decode_into_the_same_place_as_in_go() -> TestResult {
    // Fields of a scope merge; a map entry is replaced whole.
    let partial = PartialLimitConfig::from_json_str(
        r#"{
            "System": {"Conns": 1, "FD": 2},
            "system": {"FD": 3},
            "Service": {"s": {"Conns": 4}},
            "Service": {"s": {"FD": 5}, "t": {}}
        }"#,
    )?;
    assert_eq!(
        (partial.system.conns, partial.system.fd),
        (value(1), value(3))
    );
    assert_eq!(partial.service["s"].conns, LimitVal::Default);
    assert_eq!(partial.service["s"].fd, value(5));
    assert!(partial.service.contains_key("t"));
    Ok(())
}

#[test]
fn readers_and_files_work_like_strings() -> TestResult {
    let partial = everything()?;
    let json = partial.to_json_pretty();
    assert_eq!(
        PartialLimitConfig::from_json_reader(json.as_bytes())?,
        partial
    );

    let dir = std::env::temp_dir().join(format!("rcmgr-limits-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("limits.json");
    partial.write_json_file(&file)?;
    assert_eq!(std::fs::read_to_string(&file)?, json);
    assert_eq!(PartialLimitConfig::from_json_file(&file)?, partial);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn apply_layers_a_user_file_over_written_out_defaults() -> TestResult {
    let defaults = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(2 << 30, 2048);
    let mut user = PartialLimitConfig::from_json_str(USER_FILE)?;
    user.apply(&defaults.to_partial());
    // Nothing is left to a default now: building on anything gives the same limits.
    let on_infinite = user.build(&ConcreteLimitConfig::infinite());
    assert_eq!(on_infinite.system.memory, 131072);
    assert_eq!(on_infinite.system.streams, defaults.system.streams);
    assert_eq!(on_infinite.service["kad"].memory, 16384);
    assert_eq!(
        on_infinite.service["kad"].streams,
        defaults.service_default.streams
    );
    assert_eq!(
        on_infinite.service["libp2p.identify"],
        defaults.service["libp2p.identify"]
    );
    Ok(())
}

#[test]
fn limits_embed_in_other_serde_configurations() -> TestResult {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct NodeConfig {
        name: String,
        limits: PartialLimitConfig,
        extra: BTreeMap<String, ResourceLimits>,
        one: LimitVal,
    }
    let text = r#"{"name":"n","limits":{"System":{"Conns":3}},"extra":{"x":{"Memory":"5"}},"one":"unlimited"}"#;
    let config: NodeConfig = serde_json::from_str(text)?;
    assert_eq!(config.limits.system.conns, value(3));
    assert_eq!(config.extra["x"].memory, value(5));
    assert_eq!(config.one, LimitVal::Unlimited);
    assert_eq!(serde_json::to_string(&config)?, text);
    Ok(())
}

#[test]
fn a_built_file_drives_a_manager_and_a_bad_one_changes_nothing() -> TestResult {
    let defaults = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(1 << 30, 1024);
    let rm = rcmgr::ResourceManager::new(defaults.clone());
    let good = PartialLimitConfig::from_json_str(r#"{"System": {"ConnsInbound": 3}}"#)?;
    rm.set_limits(good.build(&defaults));
    assert_eq!(rm.limits().system.conns_inbound, 3);

    let before = rm.limits();
    let bad = PartialLimitConfig::from_json_str(r#"{"System": {"ConnsInbound": 4, "FD": -9}}"#);
    match bad {
        Ok(partial) => rm.set_limits(partial.build(&defaults)),
        Err(error) => assert_eq!(error.config().map(|c| c.path()), Some("System.FD")),
    }
    assert_eq!(rm.limits(), before);
    Ok(())
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn limit_val() -> impl Strategy<Value = LimitVal> {
        prop_oneof![
            Just(LimitVal::Default),
            Just(LimitVal::Unlimited),
            Just(LimitVal::BlockAll),
            (1..=i64::MAX as u64).prop_map(LimitVal::Value),
        ]
    }

    fn resource_limits() -> impl Strategy<Value = ResourceLimits> {
        proptest::array::uniform8(limit_val()).prop_map(|[a, b, c, d, e, f, g, h]| ResourceLimits {
            streams: a,
            streams_inbound: b,
            streams_outbound: c,
            conns: d,
            conns_inbound: e,
            conns_outbound: f,
            fd: g,
            memory: h,
        })
    }

    fn base_limit() -> impl Strategy<Value = BaseLimit> {
        proptest::array::uniform8(0..=BaseLimit::UNLIMITED).prop_map(|v| BaseLimit {
            streams: v[0],
            streams_inbound: v[1],
            streams_outbound: v[2],
            conns: v[3],
            conns_inbound: v[4],
            conns_outbound: v[5],
            fd: v[6],
            memory: v[7],
        })
    }

    proptest! {
        #[test]
        fn any_partial_survives_json(
            system in resource_limits(),
            conn in resource_limits(),
            services in proptest::collection::btree_map("\\PC{0,12}", resource_limits(), 0..4),
        ) {
            let mut partial = PartialLimitConfig::default();
            partial.system = system;
            partial.conn = conn;
            partial.service = services;
            let reread = PartialLimitConfig::from_json_str(&partial.to_json_string());
            prop_assert_eq!(reread.ok(), Some(partial));
        }

        #[test]
        fn any_concrete_survives_partial_and_json(
            system in base_limit(),
            peer_default in base_limit(),
            protocols in proptest::collection::btree_map("/[a-z<>&]{1,6}", base_limit(), 0..4),
        ) {
            let mut limits = ConcreteLimitConfig::infinite();
            limits.system = system;
            limits.peer_default = peer_default;
            limits.protocol = protocols;
            let infinite = ConcreteLimitConfig::infinite();
            prop_assert_eq!(&limits.to_partial().build(&infinite), &limits);
            let reread = PartialLimitConfig::from_json_str(&limits.to_partial().to_json_pretty());
            prop_assert_eq!(reread.ok().map(|p| p.build(&infinite)), Some(limits));
        }
    }
}

//! A scripted workload, then the registry encoded with prometheus-client's text encoder: every
//! exported metric has the value the workload implies.

use std::{collections::BTreeMap, sync::Arc};

use prometheus_client::{encoding::text::encode, registry::Registry};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, PeerId, Priority, ResourceManager, ResourceScope,
};
use rcmgr_prometheus::PrometheusReporter;

/// Every sample line of the text format, by name and labels.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect()
}

fn limits() -> ConcreteLimitConfig {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = BaseLimit {
        streams: 100,
        streams_inbound: 60,
        streams_outbound: 50,
        conns: 20,
        conns_inbound: 10,
        conns_outbound: 12,
        fd: 15,
        memory: 1 << 20,
    };
    limits.transient.conns_inbound = 1;
    limits.peer_default.streams_inbound = 2;
    limits
}

#[test]
fn every_metric_has_the_value_the_workload_implies() {
    let mut registry = Registry::default();
    let metrics = PrometheusReporter::new(&mut registry);
    let rm = ResourceManager::builder(limits())
        .metrics(Arc::<PrometheusReporter>::clone(&metrics))
        .build()
        .expect("the manager builds");
    metrics.bind(&rm);

    let ip = |n: u8| {
        format!("/ip4/10.0.0.{n}/tcp/1")
            .parse()
            .expect("a multiaddr")
    };
    let (a, b) = (PeerId::random(), PeerId::random());
    let mut conn_a = rm
        .open_connection(Direction::Inbound, true, &ip(1))
        .expect("fits");
    conn_a.set_peer(a).expect("fits");
    let mut conn_b = rm
        .open_connection(Direction::Outbound, false, &ip(2))
        .expect("fits");
    conn_b.set_peer(b).expect("fits");
    let _transient_conn = rm
        .open_connection(Direction::Inbound, true, &ip(3))
        .expect("fits");
    assert!(
        rm.open_connection(Direction::Inbound, true, &ip(4))
            .is_err(),
        "transient holds one"
    );

    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = rm.open_stream(a, Direction::Inbound).expect("fits");
        stream.set_protocol("/a").expect("fits");
        streams.push(stream);
    }
    streams[0]
        .reserve_memory(2000, Priority::HIGH)
        .expect("fits");
    assert!(
        rm.open_stream(a, Direction::Inbound).is_err(),
        "the peer holds two"
    );
    let outbound = rm.open_stream(b, Direction::Outbound).expect("fits");
    outbound.reserve_memory(100, Priority::HIGH).expect("fits");
    conn_a.reserve_memory(5000, Priority::HIGH).expect("fits");
    conn_a.release_memory(1000);
    assert!(rm.system().reserve_memory(1 << 20, Priority::HIGH).is_err());

    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    let got = samples(&text);
    let expected: Vec<(&str, &str)> = vec![
        (
            r#"libp2p_rcmgr_connections{dir="inbound",scope="system"}"#,
            "2",
        ),
        (
            r#"libp2p_rcmgr_connections{dir="outbound",scope="system"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_connections{dir="inbound",scope="transient"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_connections{dir="outbound",scope="transient"}"#,
            "0",
        ),
        (r#"libp2p_rcmgr_fds{scope="system"}"#, "2"),
        (r#"libp2p_rcmgr_fds{scope="transient"}"#, "1"),
        (
            r#"libp2p_rcmgr_streams{dir="inbound",scope="system",protocol=""}"#,
            "2",
        ),
        (
            r#"libp2p_rcmgr_streams{dir="outbound",scope="system",protocol=""}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_streams{dir="inbound",scope="transient",protocol=""}"#,
            "0",
        ),
        (
            r#"libp2p_rcmgr_streams{dir="outbound",scope="transient",protocol=""}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_streams{dir="inbound",scope="protocol",protocol="/a"}"#,
            "2",
        ),
        (
            r#"libp2p_rcmgr_streams{dir="outbound",scope="protocol",protocol="/a"}"#,
            "0",
        ),
        (r#"libp2p_rcmgr_memory{scope="system",protocol=""}"#, "6100"),
        (
            r#"libp2p_rcmgr_memory{scope="transient",protocol=""}"#,
            "100",
        ),
        (
            r#"libp2p_rcmgr_memory{scope="protocol",protocol="/a"}"#,
            "2000",
        ),
        (
            r#"libp2p_rcmgr_blocked_resources{dir="inbound",scope="transient",resource="connections"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_blocked_resources{dir="inbound",scope="peer",resource="streams"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_blocked_resources{dir="",scope="system",resource="memory"}"#,
            "1",
        ),
        // Peer A: one inbound connection, two inbound streams, 6000 bytes; B: one outbound
        // connection, one outbound stream, 100 bytes.
        (r#"libp2p_rcmgr_peer_connections_count{dir="inbound"}"#, "1"),
        (r#"libp2p_rcmgr_peer_connections_sum{dir="inbound"}"#, "1.0"),
        (
            r#"libp2p_rcmgr_peer_connections_bucket{le="1.0",dir="inbound"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_peer_connections_count{dir="outbound"}"#,
            "1",
        ),
        (r#"libp2p_rcmgr_peer_streams_count{dir="inbound"}"#, "1"),
        (r#"libp2p_rcmgr_peer_streams_sum{dir="inbound"}"#, "2.0"),
        (
            r#"libp2p_rcmgr_peer_streams_bucket{le="1.0",dir="inbound"}"#,
            "0",
        ),
        (
            r#"libp2p_rcmgr_peer_streams_bucket{le="2.0",dir="inbound"}"#,
            "1",
        ),
        (r#"libp2p_rcmgr_peer_streams_count{dir="outbound"}"#, "1"),
        (
            r#"libp2p_rcmgr_previous_peer_connections_count{dir="inbound"}"#,
            "0",
        ),
        (
            r#"libp2p_rcmgr_previous_peer_streams_count{dir="outbound"}"#,
            "0",
        ),
        (r#"libp2p_rcmgr_peer_memory_count"#, "2"),
        (r#"libp2p_rcmgr_peer_memory_sum"#, "6100.0"),
        (r#"libp2p_rcmgr_peer_memory_bucket{le="1024.0"}"#, "1"),
        (r#"libp2p_rcmgr_peer_memory_bucket{le="4096.0"}"#, "1"),
        (r#"libp2p_rcmgr_peer_memory_bucket{le="32768.0"}"#, "2"),
        (r#"libp2p_rcmgr_peer_memory_bucket{le="+Inf"}"#, "2"),
        (r#"libp2p_rcmgr_previous_peer_memory_count"#, "0"),
        // conn A's memory went 0 -> 5000 -> 4000.
        (r#"libp2p_rcmgr_conn_memory_count"#, "2"),
        (r#"libp2p_rcmgr_conn_memory_sum"#, "9000.0"),
        (r#"libp2p_rcmgr_conn_memory_bucket{le="4096.0"}"#, "1"),
        (r#"libp2p_rcmgr_conn_memory_bucket{le="32768.0"}"#, "2"),
        (r#"libp2p_rcmgr_previous_conn_memory_count"#, "1"),
        (r#"libp2p_rcmgr_previous_conn_memory_sum"#, "5000.0"),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="memory"}"#,
            "1048576",
        ),
        (r#"libp2p_rcmgr_limit{scope="system",resource="fd"}"#, "15"),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="conns"}"#,
            "20",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="conns_inbound"}"#,
            "10",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="conns_outbound"}"#,
            "12",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="streams"}"#,
            "100",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="streams_inbound"}"#,
            "60",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="system",resource="streams_outbound"}"#,
            "50",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="transient",resource="conns_inbound"}"#,
            "1",
        ),
        (
            r#"libp2p_rcmgr_limit{scope="transient",resource="memory"}"#,
            "9223372036854775807",
        ),
    ];
    for (series, value) in expected {
        assert_eq!(
            got.get(series).map(String::as_str),
            Some(value),
            "{series} in\n{text}"
        );
    }
    let blocked = got
        .keys()
        .filter(|series| series.starts_with("libp2p_rcmgr_blocked_resources{"))
        .count();
    assert_eq!(
        blocked, 3,
        "one series per kind of refusal, nothing else:\n{text}"
    );
    drop(streams);
}

#[test]
fn a_dropped_manager_leaves_only_the_event_metrics() {
    let mut registry = Registry::default();
    let metrics = PrometheusReporter::new(&mut registry);
    let rm = ResourceManager::builder(limits())
        .metrics(Arc::<PrometheusReporter>::clone(&metrics))
        .build()
        .expect("the manager builds");
    metrics.bind(&rm);
    drop(rm);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    assert!(!text.contains("libp2p_rcmgr_connections"), "{text}");
    assert!(text.contains("libp2p_rcmgr_conn_memory_count 0"), "{text}");
}

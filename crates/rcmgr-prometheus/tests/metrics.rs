//! Every series the reporter exports, compared with what go-libp2p's `StatsTraceReporter`
//! exports for the same workload.
//!
//! go computes its metrics from trace events (`stats.go`, `consumeEventWithLabelSlice`). The
//! [`GoStats`] model below does what that function does, written from its description in
//! go's source, and is fed the trace of the very manager whose Prometheus reporter is scraped:
//! one scripted workload, with refusals of every kind, gives both sets of series. Each test
//! compares one metric family: names, labels, label values and values, with the differences
//! the crate documents (peer histograms computed at scrape time, memory refusals counted, not
//! summed in bytes, series present at 0 before go would create them) checked as such.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use prometheus_client::{encoding::text::encode, registry::Registry};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, PeerId, Priority, ResourceManager, ResourceScope,
    TraceEvent, TraceEventType, TraceLimit, TraceReporter,
};
use rcmgr_prometheus::PrometheusReporter;

/// go's buckets for counts per peer (`oneTenThenExpDistributionBuckets`).
const COUNT_BUCKETS: [f64; 15] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 16.0, 32.0, 64.0, 128.0, 256.0,
];
/// go's buckets for memory (`memDistribution`).
const MEMORY_BUCKETS: [f64; 10] = [
    1024.0,
    4096.0,
    32768.0,
    1048576.0,
    33554432.0,
    268435456.0,
    536870912.0,
    1073741824.0,
    2147483648.0,
    4294967296.0,
];

/// What go's `StatsTraceReporter` would hold after the events it was given: gauge values by
/// series, histogram observations by (metric, `dir` label), and the refused memory
/// reservations by scope label (go sums their bytes; rcmgr counts them).
#[derive(Debug, Default)]
struct GoState {
    gauges: BTreeMap<String, f64>,
    observed: BTreeMap<(String, String), Vec<f64>>,
    memory_refusals: BTreeMap<String, f64>,
}

/// go's metrics, computed from trace events as go computes them.
#[derive(Debug, Default)]
struct GoStats(Mutex<GoState>);

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if labels.is_empty() {
        format!("libp2p_rcmgr_{name}")
    } else {
        format!("libp2p_rcmgr_{name}{{{}}}", labels.join(","))
    }
}

/// go's `PeerStrInScopeName` is not empty: a peer scope, not a span.
fn is_peer(name: &str) -> bool {
    name.starts_with("peer:") && !name.contains(".span-")
}

/// go's `IsConnScope`.
fn is_conn(name: &str) -> bool {
    name.starts_with("conn-") && !name.contains(".span-")
}

/// go's `ParseProtocolScopeName`: the protocol of a protocol scope (not a span, not a
/// per-peer scope), or `None`.
fn protocol_of(name: &str) -> Option<&str> {
    let protocol = name.strip_prefix("protocol:")?;
    (!name.contains(".span-") && !name.contains("peer:")).then_some(protocol)
}

/// go's `blocked_resources` scope label: the name cut at the first `:`, then at the first `-`.
fn cut(name: &str) -> &str {
    let name = name.split(':').next().unwrap_or(name);
    name.split('-').next().unwrap_or(name)
}

impl GoState {
    fn new() -> Self {
        let mut state = GoState::default();
        // go creates these children when its package loads.
        for dir in ["inbound", "outbound"] {
            for scope in ["system", "transient"] {
                state.gauges.insert(
                    series("connections", &[("dir", dir), ("scope", scope)]),
                    0.0,
                );
            }
        }
        for scope in ["system", "transient"] {
            state.gauges.insert(series("fds", &[("scope", scope)]), 0.0);
        }
        state
    }

    /// go's two-histogram update: the new value (if not 0) into `name`, the old one (if not 0)
    /// into `previous_name`, when they differ.
    fn observe_change(&mut self, name: &str, dir: &str, new: i64, delta: i64) {
        let old = new - delta;
        if old == new {
            return;
        }
        if old != 0 {
            self.observed
                .entry((format!("previous_{name}"), dir.to_owned()))
                .or_default()
                .push(old as f64);
        }
        if new != 0 {
            self.observed
                .entry((name.to_owned(), dir.to_owned()))
                .or_default()
                .push(new as f64);
        }
    }

    fn set(&mut self, key: String, value: i64) {
        self.gauges.insert(key, value as f64);
    }

    fn add(&mut self, key: String, value: i64) {
        *self.gauges.entry(key).or_default() += value as f64;
    }

    fn consume(&mut self, event: &TraceEvent) {
        if event.kind == TraceEventType::Start {
            // go v0.47's ReportSystemLimits at construction.
            if let Some(TraceLimit::Config(config)) = &event.limit {
                let limits = config.build(&ConcreteLimitConfig::infinite());
                for (scope, limit) in [("system", limits.system), ("transient", limits.transient)] {
                    for (resource, value) in [
                        ("memory", limit.memory),
                        ("fd", limit.fd),
                        ("conns", limit.conns),
                        ("conns_inbound", limit.conns_inbound),
                        ("conns_outbound", limit.conns_outbound),
                        ("streams", limit.streams),
                        ("streams_inbound", limit.streams_inbound),
                        ("streams_outbound", limit.streams_outbound),
                    ] {
                        let key = series("limit", &[("scope", scope), ("resource", resource)]);
                        self.gauges.insert(key, value as f64);
                    }
                }
            }
            return;
        }
        let Some(scope) = &event.scope else { return };
        let name = scope.to_string();
        let fixed = name == "system" || name == "transient";
        match event.kind {
            TraceEventType::AddStream | TraceEventType::RemoveStream => {
                if is_peer(&name) {
                    self.observe_change(
                        "peer_streams",
                        "outbound",
                        event.streams_out,
                        event.delta_out,
                    );
                    self.observe_change(
                        "peer_streams",
                        "inbound",
                        event.streams_in,
                        event.delta_in,
                    );
                    return;
                }
                for (dir, delta, total) in [
                    ("outbound", event.delta_out, event.streams_out),
                    ("inbound", event.delta_in, event.streams_in),
                ] {
                    if delta == 0 {
                        continue;
                    }
                    if fixed {
                        let key = series(
                            "streams",
                            &[("dir", dir), ("scope", &name), ("protocol", "")],
                        );
                        self.set(key, total);
                    } else if let Some(protocol) = protocol_of(&name) {
                        let key = series(
                            "streams",
                            &[("dir", dir), ("scope", "protocol"), ("protocol", protocol)],
                        );
                        self.set(key, total);
                    }
                }
            }
            TraceEventType::AddConn | TraceEventType::RemoveConn => {
                if is_peer(&name) {
                    self.observe_change(
                        "peer_connections",
                        "outbound",
                        event.conns_out,
                        event.delta_out,
                    );
                    self.observe_change(
                        "peer_connections",
                        "inbound",
                        event.conns_in,
                        event.delta_in,
                    );
                    return;
                }
                if is_conn(&name) || !fixed {
                    return;
                }
                for (dir, total) in [("inbound", event.conns_in), ("outbound", event.conns_out)] {
                    self.set(
                        series("connections", &[("dir", dir), ("scope", &name)]),
                        total,
                    );
                }
                if event.delta != 0 {
                    self.set(series("fds", &[("scope", &name)]), event.fd);
                }
            }
            TraceEventType::ReserveMemory | TraceEventType::ReleaseMemory => {
                if is_peer(&name) {
                    self.observe_change("peer_memory", "", event.memory, event.delta);
                } else if is_conn(&name) {
                    self.observe_change("conn_memory", "", event.memory, event.delta);
                } else if fixed {
                    self.set(
                        series("memory", &[("scope", &name), ("protocol", "")]),
                        event.memory,
                    );
                } else if let Some(protocol) = protocol_of(&name) {
                    let key = series("memory", &[("scope", "protocol"), ("protocol", protocol)]);
                    self.set(key, event.memory);
                }
            }
            kind if kind.is_block() => {
                let resource = match kind {
                    TraceEventType::BlockAddConn => "connection",
                    TraceEventType::BlockAddStream => "stream",
                    _ => "memory",
                };
                let scope = cut(&name);
                let key = |dir: &str, resource: &str| {
                    series(
                        "blocked_resources",
                        &[("dir", dir), ("scope", scope), ("resource", resource)],
                    )
                };
                if event.delta_in != 0 {
                    self.add(key("inbound", resource), event.delta_in);
                }
                if event.delta_out != 0 {
                    self.add(key("outbound", resource), event.delta_out);
                }
                if event.delta != 0 && resource == "connection" {
                    self.add(key("", "fd"), event.delta);
                } else if event.delta != 0 {
                    self.add(key("", resource), event.delta);
                    *self.memory_refusals.entry(key("", resource)).or_default() += 1.0;
                }
            }
            _ => {}
        }
    }

    /// Every series go exports: the gauges, and each histogram as Prometheus buckets.
    fn export(&self) -> BTreeMap<String, f64> {
        let mut all = self.gauges.clone();
        let histograms: [(&str, &[f64], &[&str]); 8] = [
            ("peer_connections", &COUNT_BUCKETS, &["inbound", "outbound"]),
            (
                "previous_peer_connections",
                &COUNT_BUCKETS,
                &["inbound", "outbound"],
            ),
            ("peer_streams", &COUNT_BUCKETS, &["inbound", "outbound"]),
            (
                "previous_peer_streams",
                &COUNT_BUCKETS,
                &["inbound", "outbound"],
            ),
            ("peer_memory", &MEMORY_BUCKETS, &[""]),
            ("previous_peer_memory", &MEMORY_BUCKETS, &[""]),
            ("conn_memory", &MEMORY_BUCKETS, &[""]),
            ("previous_conn_memory", &MEMORY_BUCKETS, &[""]),
        ];
        for (name, bounds, dirs) in histograms {
            for dir in dirs {
                let values = self
                    .observed
                    .get(&(name.to_owned(), (*dir).to_owned()))
                    .cloned()
                    .unwrap_or_default();
                all.extend(histogram(name, dir, bounds, &values));
            }
        }
        all
    }
}

/// A histogram's series as prometheus-client writes them: cumulative buckets (`le` first),
/// `_sum` and `_count`.
fn histogram(name: &str, dir: &str, bounds: &[f64], values: &[f64]) -> BTreeMap<String, f64> {
    let labels = |le: Option<String>| {
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(le) = le {
            labels.push(("le".to_owned(), le));
        }
        if !dir.is_empty() {
            labels.push(("dir".to_owned(), dir.to_owned()));
        }
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        if text.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", text.join(","))
        }
    };
    let mut out = BTreeMap::new();
    for bound in bounds {
        let count = values.iter().filter(|v| **v <= *bound).count();
        out.insert(
            format!(
                "libp2p_rcmgr_{name}_bucket{}",
                labels(Some(format!("{bound:?}")))
            ),
            count as f64,
        );
    }
    out.insert(
        format!(
            "libp2p_rcmgr_{name}_bucket{}",
            labels(Some("+Inf".to_owned()))
        ),
        values.len() as f64,
    );
    out.insert(
        format!("libp2p_rcmgr_{name}_sum{}", labels(None)),
        values.iter().sum(),
    );
    out.insert(
        format!("libp2p_rcmgr_{name}_count{}", labels(None)),
        values.len() as f64,
    );
    out
}

impl TraceReporter for GoStats {
    fn consume(&self, event: &TraceEvent) {
        self.0.lock().expect("not poisoned").consume(event);
    }
}

/// Every sample of the text format, by series, as a number.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| {
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("a number: {value}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The two scrapes of one scripted workload.
struct Scrapes {
    /// The reporter's text encoding.
    text: String,
    /// The reporter's series.
    ours: BTreeMap<String, f64>,
    /// go's series for the same events.
    go: BTreeMap<String, f64>,
    /// go's `blocked_resources{resource="memory"}` series with the number of refusals each
    /// summed (go's value is their bytes).
    go_memory_refusals: BTreeMap<String, f64>,
}

impl Scrapes {
    /// The series of one family (`name` is the metric name without the namespace, `_bucket`,
    /// `_sum` or `_count`), in both exports.
    fn family(&self, name: &str) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
        let of = |all: &BTreeMap<String, f64>| {
            all.iter()
                .filter(|(series, _)| {
                    let bare = series.split('{').next().unwrap_or(series);
                    let metric = format!("libp2p_rcmgr_{name}");
                    bare == metric
                        || [
                            format!("{metric}_bucket"),
                            format!("{metric}_sum"),
                            format!("{metric}_count"),
                        ]
                        .iter()
                        .any(|suffixed| bare == suffixed)
                })
                .map(|(series, value)| (series.clone(), *value))
                .collect::<BTreeMap<_, _>>()
        };
        (of(&self.ours), of(&self.go))
    }
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
        fd: 3,
        memory: 1 << 20,
    };
    limits.transient.conns_inbound = 2;
    limits.peer_default.streams_inbound = 3;
    limits.protocol_peer_default.streams_outbound = 1;
    limits.service_default.streams_inbound = 1;
    limits
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("encodes");
    text
}

/// The scripted workload, run once and shared by the tests: connections in both directions,
/// with and without file descriptors, refused by the transient scope's count and by the system
/// scope's file descriptors; streams in both directions on three protocols and a service,
/// refused by a peer, a protocol's per-peer scope and a service; memory on streams, a
/// connection and a span of it, on a stream still in the transient scope, refused by the
/// system scope; a protocol whose streams all close after a scrape saw it.
fn scripted() -> &'static Scrapes {
    static SCRAPES: OnceLock<Scrapes> = OnceLock::new();
    SCRAPES.get_or_init(run_workload)
}

fn run_workload() -> Scrapes {
    let go = Arc::new(GoStats(Mutex::new(GoState::new())));
    let mut registry = Registry::default();
    let builder = ResourceManager::builder(limits())
        .gc_interval(Duration::ZERO)
        .trace_reporter(Arc::<GoStats>::clone(&go))
        .trace_queue(1 << 16);
    let rm = PrometheusReporter::install(builder, &mut registry).expect("the manager builds");

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
    let transient_1 = rm
        .open_connection(Direction::Inbound, true, &ip(3))
        .expect("fits");
    let transient_2 = rm
        .open_connection(Direction::Inbound, false, &ip(4))
        .expect("fits");
    // Refused by the transient scope's inbound count: it asked for a descriptor too.
    assert!(
        rm.open_connection(Direction::Inbound, true, &ip(5))
            .is_err()
    );
    drop(transient_2);
    // Three descriptors are held (a, transient_1, this one); the next is refused by the
    // system scope's descriptors.
    let mut conn_c = rm
        .open_connection(Direction::Outbound, true, &ip(6))
        .expect("fits");
    assert!(
        rm.open_connection(Direction::Outbound, true, &ip(7))
            .is_err()
    );
    conn_c.set_peer(b).expect("fits");

    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = rm.open_stream(a, Direction::Inbound).expect("fits");
        stream.set_protocol("/a").expect("fits");
        streams.push(stream);
    }
    assert!(
        rm.open_stream(a, Direction::Inbound).is_err(),
        "peer a holds three"
    );
    streams[0]
        .reserve_memory(2000, Priority::HIGH)
        .expect("fits");
    let mut out_b = rm.open_stream(b, Direction::Outbound).expect("fits");
    out_b
        .reserve_memory(100, Priority::HIGH)
        .expect("fits, in the transient scope");
    out_b.set_protocol("/b").expect("fits");
    let mut out_b2 = rm.open_stream(b, Direction::Outbound).expect("fits");
    assert!(
        out_b2.set_protocol("/b").is_err(),
        "b's /b scope holds one outbound"
    );
    let mut served = rm.open_stream(b, Direction::Inbound).expect("fits");
    served.set_protocol("/s").expect("fits");
    served.set_service("svc").expect("fits");
    let mut second = rm.open_stream(a, Direction::Outbound).expect("fits");
    second.set_protocol("/s").expect("fits");
    second.set_service("svc").expect("fits: outbound");
    assert!(
        rm.open_stream(a, Direction::Inbound).is_err(),
        "peer a still holds three inbound"
    );
    drop(streams.pop());
    let mut third = rm.open_stream(a, Direction::Inbound).expect("fits again");
    third.set_protocol("/s").expect("fits");
    assert!(
        third.set_service("svc").is_err(),
        "the service holds one inbound"
    );

    conn_a.reserve_memory(5000, Priority::HIGH).expect("fits");
    conn_a.release_memory(1000);
    let span = conn_a.begin_span().expect("open");
    span.reserve_memory(300, Priority::LOW).expect("fits");
    assert!(rm.system().reserve_memory(1 << 20, Priority::HIGH).is_err());
    assert!(streams[0].reserve_memory(1 << 20, Priority::HIGH).is_err());

    // A protocol the reporter sees at a scrape, then closed (and collected where the
    // manager collects protocol scopes).
    let mut gone = rm.open_stream(b, Direction::Inbound).expect("fits");
    gone.set_protocol("/gone").expect("fits");
    gone.reserve_memory(10, Priority::HIGH).expect("fits");
    let _seen = scrape(&registry);
    drop(gone);
    rm.gc();
    rm.gc();
    drop(span);

    rm.flush_trace();
    assert_eq!(rm.trace_dropped(), 0, "the model saw every event");
    let text = scrape(&registry);
    let state = go.0.lock().expect("not poisoned");
    let scrapes = Scrapes {
        ours: samples(&text),
        text,
        go: state.export(),
        go_memory_refusals: state.memory_refusals.clone(),
    };
    drop(state);
    drop((streams, out_b, out_b2, served, second, third));
    drop((conn_a, conn_b, conn_c, transient_1));
    scrapes
}

/// Asserts that two families are the same series with the same values.
fn assert_same(ours: &BTreeMap<String, f64>, go: &BTreeMap<String, f64>, text: &str) {
    assert!(!go.is_empty(), "the workload gives go series:\n{text}");
    assert_eq!(ours, go, "ours (left) and go's (right) differ:\n{text}");
}

/// Asserts that every series of go's is ours with go's value, and that ours has others only
/// at 0 (series go creates at their first event and rcmgr exports from the start).
fn assert_go_series_and_zeros(
    ours: &BTreeMap<String, f64>,
    go: &BTreeMap<String, f64>,
    text: &str,
) {
    assert!(!go.is_empty(), "the workload gives go series:\n{text}");
    for (series, value) in go {
        assert_eq!(ours.get(series), Some(value), "{series} in\n{text}");
    }
    for (series, value) in ours {
        if !go.contains_key(series) {
            assert_eq!(*value, 0.0, "{series} is only ours, so at 0:\n{text}");
        }
    }
}

#[test]
fn connections_are_gos() {
    let s = scripted();
    let (ours, go) = s.family("connections");
    assert_same(&ours, &go, &s.text);
    assert_eq!(
        go[r#"libp2p_rcmgr_connections{dir="inbound",scope="system"}"#],
        2.0
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_connections{dir="outbound",scope="system"}"#],
        2.0
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_connections{dir="inbound",scope="transient"}"#],
        1.0
    );
    assert_eq!(ours.len(), 4);
}

#[test]
fn fds_are_gos() {
    let s = scripted();
    let (ours, go) = s.family("fds");
    assert_same(&ours, &go, &s.text);
    assert_eq!(go[r#"libp2p_rcmgr_fds{scope="system"}"#], 3.0);
    assert_eq!(go[r#"libp2p_rcmgr_fds{scope="transient"}"#], 1.0);
}

#[test]
fn streams_are_gos() {
    let s = scripted();
    let (ours, go) = s.family("streams");
    assert_go_series_and_zeros(&ours, &go, &s.text);
    let fixed = |all: &BTreeMap<String, f64>| {
        all.iter()
            .filter(|(k, _)| k.contains(r#"protocol="""#))
            .map(|(k, v)| (k.clone(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        fixed(&ours),
        fixed(&go),
        "system and transient: the same series"
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_streams{dir="inbound",scope="protocol",protocol="/a"}"#],
        2.0
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_streams{dir="inbound",scope="protocol",protocol="/gone"}"#], 0.0,
        "go keeps a protocol's series"
    );
    assert!(
        ours.contains_key(
            r#"libp2p_rcmgr_streams{dir="inbound",scope="protocol",protocol="/gone"}"#
        ),
        "and so does the reporter, for a protocol a scrape saw"
    );
}

#[test]
fn memory_is_gos() {
    let s = scripted();
    let (ours, go) = s.family("memory");
    assert_go_series_and_zeros(&ours, &go, &s.text);
    assert_eq!(
        go[r#"libp2p_rcmgr_memory{scope="transient",protocol=""}"#],
        0.0
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_memory{scope="system",protocol=""}"#],
        2000.0 + 100.0 + 4000.0,
        "the span's 300 bytes are released"
    );
    assert_eq!(
        go[r#"libp2p_rcmgr_memory{scope="protocol",protocol="/a"}"#],
        2000.0
    );
}

#[test]
fn blocked_resources_are_gos_with_memory_refusals_counted() {
    let s = scripted();
    let (ours, go) = s.family("blocked_resources");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        go.keys().collect::<Vec<_>>(),
        "the same series:\n{}",
        s.text
    );
    for (series, value) in &go {
        let expected = s.go_memory_refusals.get(series).unwrap_or(value);
        assert_eq!(ours[series], *expected, "{series}");
    }
    let blocked = |dir: &str, scope: &str, resource: &str| {
        ours.get(&format!(
            r#"libp2p_rcmgr_blocked_resources{{dir="{dir}",scope="{scope}",resource="{resource}"}}"#
        ))
        .copied()
    };
    assert_eq!(blocked("inbound", "transient", "connection"), Some(1.0));
    assert_eq!(blocked("", "transient", "fd"), Some(1.0));
    assert_eq!(blocked("outbound", "system", "connection"), Some(1.0));
    assert_eq!(blocked("", "system", "fd"), Some(1.0));
    assert_eq!(blocked("inbound", "peer", "stream"), Some(2.0));
    assert_eq!(blocked("outbound", "protocol", "stream"), Some(1.0));
    assert_eq!(blocked("inbound", "service", "stream"), Some(1.0));
    assert_eq!(blocked("", "system", "memory"), Some(2.0), "two refusals");
    assert_eq!(
        go[r#"libp2p_rcmgr_blocked_resources{dir="",scope="system",resource="memory"}"#],
        2.0 * f64::from(1 << 20),
        "go adds the bytes"
    );
    let resources: std::collections::BTreeSet<&str> = ours
        .keys()
        .filter_map(|series| series.split("resource=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        resources.into_iter().collect::<Vec<_>>(),
        ["connection", "fd", "memory", "stream"],
        "go's resource values"
    );
}

/// Checks a go histogram pair against the reporter's: the reporter's `name` is go's `name`
/// minus `previous_name`, bucket by bucket, with its sum and count; its `previous_name` is 0.
fn assert_scrape_time_histogram(name: &str) {
    let s = scripted();
    let (ours, go) = s.family(name);
    let (ours_previous, go_previous) = s.family(&format!("previous_{name}"));
    assert!(!go.is_empty());
    let previous_key = |series: &str| series.replacen(name, &format!("previous_{name}"), 1);
    let mut nonzero = 0;
    for (series, value) in &go {
        let current = value - go_previous[&previous_key(series)];
        assert_eq!(ours.get(series), Some(&current), "{series} in\n{}", s.text);
        nonzero += usize::from(current != 0.0);
    }
    assert_eq!(ours.len(), go.len(), "{}", s.text);
    assert!(nonzero > 0, "the workload has peers with {name}");
    assert_eq!(
        ours_previous.keys().collect::<Vec<_>>(),
        go_previous.keys().collect::<Vec<_>>()
    );
    assert!(ours_previous.values().all(|v| *v == 0.0), "{}", s.text);
}

#[test]
fn peer_connections_are_gos_current_distribution() {
    assert_scrape_time_histogram("peer_connections");
    let s = scripted();
    // a: one inbound; b: two outbound.
    assert_eq!(
        s.ours[r#"libp2p_rcmgr_peer_connections_sum{dir="outbound"}"#],
        2.0
    );
    assert_eq!(
        s.ours[r#"libp2p_rcmgr_peer_connections_bucket{le="1.0",dir="outbound"}"#],
        0.0
    );
}

#[test]
fn peer_streams_are_gos_current_distribution() {
    assert_scrape_time_histogram("peer_streams");
}

#[test]
fn peer_memory_is_gos_current_distribution() {
    assert_scrape_time_histogram("peer_memory");
}

#[test]
fn conn_memory_is_gos() {
    let s = scripted();
    for name in ["conn_memory", "previous_conn_memory"] {
        let (ours, go) = s.family(name);
        assert_same(&ours, &go, &s.text);
    }
    // conn a went 0 -> 5000 -> 4000 -> 4300 -> 4000.
    assert_eq!(s.ours["libp2p_rcmgr_conn_memory_count"], 4.0);
    assert_eq!(s.ours["libp2p_rcmgr_previous_conn_memory_count"], 3.0);
}

#[test]
fn limits_are_gos() {
    let s = scripted();
    let (ours, go) = s.family("limit");
    assert_same(&ours, &go, &s.text);
    assert_eq!(ours.len(), 16);
    assert_eq!(
        ours[r#"libp2p_rcmgr_limit{scope="system",resource="fd"}"#],
        3.0
    );
    assert_eq!(
        ours[r#"libp2p_rcmgr_limit{scope="transient",resource="memory"}"#],
        BaseLimit::UNLIMITED as f64
    );
}

#[test]
fn every_family_has_gos_type_and_help() {
    let s = scripted();
    let families = [
        ("connections", "gauge", "Number of Connections"),
        (
            "peer_connections",
            "histogram",
            "Number of connections this peer has",
        ),
        (
            "previous_peer_connections",
            "histogram",
            "Number of connections this peer previously had. This is used to get the current connection number per peer histogram by subtracting this from the peer_connections histogram",
        ),
        ("streams", "gauge", "Number of Streams"),
        (
            "peer_streams",
            "histogram",
            "Number of streams this peer has",
        ),
        (
            "previous_peer_streams",
            "histogram",
            "Number of streams this peer has",
        ),
        (
            "memory",
            "gauge",
            "Amount of memory reserved as reported to the Resource Manager",
        ),
        (
            "peer_memory",
            "histogram",
            "How many peers have reserved this bucket of memory, as reported to the Resource Manager",
        ),
        (
            "previous_peer_memory",
            "histogram",
            "How many peers have previously reserved this bucket of memory, as reported to the Resource Manager",
        ),
        (
            "conn_memory",
            "histogram",
            "How many conns have reserved this bucket of memory, as reported to the Resource Manager",
        ),
        (
            "previous_conn_memory",
            "histogram",
            "How many conns have previously reserved this bucket of memory, as reported to the Resource Manager",
        ),
        (
            "fds",
            "gauge",
            "Number of file descriptors reserved as reported to the Resource Manager",
        ),
        ("blocked_resources", "gauge", "Number of blocked resources"),
        ("limit", "gauge", "Resource manager limits"),
    ];
    for (name, kind, help) in families {
        let metric = format!("libp2p_rcmgr_{name}");
        assert!(
            s.text.contains(&format!("# TYPE {metric} {kind}\n")),
            "{metric} is a {kind}:\n{}",
            s.text
        );
        assert!(
            s.text.contains(&format!("# HELP {metric} {help}.\n"))
                || s.text.contains(&format!("# HELP {metric} {help}\n")),
            "{metric}'s help is go's:\n{}",
            s.text
        );
    }
    let exported = s
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .count();
    assert_eq!(exported, families.len(), "no family but go's:\n{}", s.text);
}

#[test]
fn a_dropped_manager_leaves_only_the_event_metrics() {
    let mut registry = Registry::default();
    let rm = PrometheusReporter::install(ResourceManager::builder(limits()), &mut registry)
        .expect("the manager builds");
    drop(rm);
    let text = scrape(&registry);
    assert!(!text.contains("libp2p_rcmgr_connections"), "{text}");
    assert!(text.contains("libp2p_rcmgr_conn_memory_count 0"), "{text}");
}

//! Prometheus metrics for [rcmgr](https://docs.rs/rcmgr), with go-libp2p's names, labels and
//! label values, so that go's Grafana dashboards and alerts (and `docs/grafana-dashboard.json`
//! in this repository) read them unchanged.
//!
//! [`PrometheusReporter::install`] does everything in one call: it builds the manager a
//! [`ResourceManagerBuilder`] describes with the reporter installed, binds the reporter to it
//! (the usage gauges are read from the manager at scrape time) and registers the metrics on a
//! prometheus-client [`Registry`] (the crate and version libp2p-metrics uses, so a node exports
//! rcmgr's metrics beside libp2p's from one registry). There is no reporter to forget to bind
//! and no half-installed state: if the build fails, the registry is left untouched.
//!
//! ```
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//! use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
//! use rcmgr_prometheus::PrometheusReporter;
//!
//! let mut registry = Registry::default();
//! let rm = PrometheusReporter::install(
//!     ResourceManager::builder(ConcreteLimitConfig::infinite()),
//!     &mut registry,
//! )?;
//!
//! let _stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
//! let mut text = String::new();
//! encode(&mut text, &registry)?;
//! assert!(text.contains(r#"libp2p_rcmgr_streams{dir="inbound",scope="system",protocol=""} 1"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is exported
//!
//! | metric | type | labels | how |
//! |---|---|---|---|
//! | `libp2p_rcmgr_connections` | gauge | dir, scope (system, transient) | read at scrape time |
//! | `libp2p_rcmgr_streams` | gauge | dir, scope (system, transient, protocol), protocol | read at scrape time |
//! | `libp2p_rcmgr_memory` | gauge | scope (system, transient, protocol), protocol | read at scrape time |
//! | `libp2p_rcmgr_fds` | gauge | scope (system, transient) | read at scrape time |
//! | `libp2p_rcmgr_blocked_resources` | gauge, only ever increased | dir (inbound, outbound, ""), scope (go's cut name: system, transient, peer, protocol, service, conn, stream, system.span, ...), resource (connection, stream, memory, fd) | what each refusal asked, as go adds it |
//! | `libp2p_rcmgr_peer_connections`, `_peer_streams` (+ `previous_`) | histogram | dir | the live peers at scrape time |
//! | `libp2p_rcmgr_peer_memory` (+ `previous_`) | histogram | — | the live peers at scrape time |
//! | `libp2p_rcmgr_conn_memory` (+ `previous_`) | histogram | — | every change of a connection's memory |
//! | `libp2p_rcmgr_limit` | gauge | scope (system, transient), resource (memory, fd, conns, conns_inbound, conns_outbound, streams, streams_inbound, streams_outbound) | the limits in force at scrape time |
//!
//! Names, label names, label values, buckets and help texts are go's (go-libp2p's
//! `p2p/host/resource-manager/stats.go`). Everything that describes the manager's state is
//! read from it when Prometheus scrapes: nothing is updated on the reservation path but the
//! refusal counters and the connection memory histograms, each an atomic increment.
//!
//! # Differences from go
//!
//! - **Peer histograms.** go observes every change of a peer's counts: `peer_X` counts the
//!   new values, `previous_peer_X` the old ones, and the distribution of the peers alive now
//!   is `peer_X - previous_peer_X`, which is what go's dashboard plots. Here `peer_X` is that
//!   distribution itself, computed from the live peer scopes at each scrape, and
//!   `previous_peer_X` is exported with every bucket at zero, so the dashboard's expression
//!   gives the same answer. (A `rate()` over `peer_X` alone means nothing here; it did not
//!   in go either.)
//! - **Memory refusals count refusals.** `blocked_resources{resource="memory"}` adds 1 per
//!   refused reservation; go adds the bytes refused (its quirk 9, fixed on purpose: see
//!   `docs/observability.md`). Streams, connections and file descriptors add what go adds: a
//!   refused connection counts under `connection` with its direction and, if it wanted a file
//!   descriptor, under `fd` as well.
//! - **Series exist from the start.** go creates the stream and memory series of the system
//!   and transient scopes, and of a protocol in each direction, at their first event; here the
//!   system and transient series are there from the first scrape and a protocol's from the
//!   first scrape that finds its scope, in both directions, at 0 until used. A protocol seen
//!   at a scrape keeps its series after its scope is collected, at 0, as go keeps them.
//! - **Limits follow `set_limits`**: `libp2p_rcmgr_limit` is read at scrape time, not only at
//!   construction.
//!
//! Pass the registry itself (or a sub-registry without a prefix) to get go's names; a prefixed
//! sub-registry prefixes them.

#![forbid(unsafe_code)]

mod blocked;
mod histogram;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, OnceLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
    registry::Registry,
};
use rcmgr::{
    BaseLimit, LimitExceeded, MetricsReporter, ResourceManager, ResourceManagerBuilder,
    ResourceManagerStat, ScopeStat, WeakResourceManager,
};

use self::{
    blocked::Blocked,
    histogram::{AtomicHistogram, COUNT_BUCKETS, MEMORY_BUCKETS, Snapshot, encode_buckets},
};

/// The prefix of every metric: go's namespace.
pub const NAMESPACE: &str = "libp2p_rcmgr";

/// go-libp2p's Prometheus metrics for a resource manager (see the crate docs for the list),
/// installed with [`install`](Self::install).
#[derive(Debug)]
pub struct PrometheusReporter {
    shared: Arc<Shared>,
}

/// What the reporter and its collector share.
#[derive(Debug)]
struct Shared {
    blocked: Blocked,
    conn_memory: AtomicHistogram,
    previous_conn_memory: AtomicHistogram,
    manager: OnceLock<WeakResourceManager>,
    /// Protocols found at a scrape: their series stay, at 0, once their scope is gone (go
    /// never removes a series). Touched at scrape time only.
    protocols_seen: Mutex<BTreeSet<String>>,
}

/// How many protocols [`Shared::protocols_seen`] remembers at most (a node serves a handful;
/// the bound only keeps memory bounded whatever happens).
const MAX_PROTOCOLS_SEEN: usize = 4096;

impl PrometheusReporter {
    /// Builds the manager `builder` describes with go's Prometheus metrics: the reporter is
    /// installed as its [`MetricsReporter`] (replacing one set with
    /// [`metrics`](ResourceManagerBuilder::metrics)), bound to the manager it builds (the
    /// usage gauges, peer histograms and limits are read from it at scrape time; the reporter
    /// holds it weakly, so the metrics of a dropped manager simply stop) and registered on
    /// `registry` under [`NAMESPACE`].
    ///
    /// # Errors
    ///
    /// What [`ResourceManagerBuilder::build`] fails with; then nothing is registered.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, ResourceManager};
    /// use rcmgr_prometheus::PrometheusReporter;
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let builder = ResourceManager::builder(ConcreteLimitConfig::infinite())
    ///     .allowlist(["/dns4/example.com".parse()?]);
    /// assert!(PrometheusReporter::install(builder, &mut registry).is_err());
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(!text.contains("libp2p_rcmgr"), "nothing registered: {text}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install(
        builder: ResourceManagerBuilder,
        registry: &mut Registry,
    ) -> Result<ResourceManager, rcmgr::Error> {
        let shared = Arc::new(Shared {
            blocked: Blocked::new(),
            conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
            previous_conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
            manager: OnceLock::new(),
            protocols_seen: Mutex::new(BTreeSet::new()),
        });
        let reporter = Arc::new(PrometheusReporter {
            shared: Arc::clone(&shared),
        });
        let manager = builder.metrics(reporter).build()?;
        let _ = shared.manager.set(manager.downgrade());
        registry
            .sub_registry_with_prefix(NAMESPACE)
            .register_collector(Box::new(StateCollector { shared }));
        Ok(manager)
    }
}

impl MetricsReporter for PrometheusReporter {
    fn refused_amount(&self, refusal: &LimitExceeded, asked: &ScopeStat) {
        self.shared.blocked.count(refusal, asked);
    }

    fn conn_memory(&self, old: u64, new: u64) {
        if new != 0 {
            self.shared.conn_memory.observe(new);
        }
        if old != 0 {
            self.shared.previous_conn_memory.observe(old);
        }
    }
}

/// Encodes everything at scrape time.
#[derive(Debug)]
struct StateCollector {
    shared: Arc<Shared>,
}

/// One gauge value with its labels.
type Series = (Vec<(&'static str, String)>, i64);

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[Series],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// A count as a gauge value.
fn value(n: impl Into<u64>) -> i64 {
    i64::try_from(n.into()).unwrap_or(i64::MAX)
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl StateCollector {
    /// The protocols to export, with their usage: those with a scope now and those seen at
    /// an earlier scrape (at zero), in name order. Remembers the ones seen now.
    fn protocols(&self, stat: &ResourceManagerStat) -> Vec<(String, ScopeStat)> {
        let mut seen = self
            .shared
            .protocols_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for protocol in stat.protocols.keys() {
            if seen.len() < MAX_PROTOCOLS_SEEN && !seen.contains(protocol) {
                seen.insert(protocol.clone());
            }
        }
        let mut all: Vec<(String, ScopeStat)> = seen
            .iter()
            .map(|name| {
                let usage = stat.protocols.get(name).copied().unwrap_or_default();
                (name.clone(), usage)
            })
            .collect();
        // Past the bound, the protocols not remembered are still exported while they live.
        all.extend(
            stat.protocols
                .iter()
                .filter(|(name, _)| !seen.contains(*name))
                .map(|(name, usage)| (name.clone(), *usage)),
        );
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn encode_state(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        stat: &ResourceManagerStat,
        limits: &rcmgr::ConcreteLimitConfig,
    ) -> Result<(), std::fmt::Error> {
        let fixed = [("system", &stat.system), ("transient", &stat.transient)];
        let mut connections = Vec::new();
        let mut streams = Vec::new();
        let mut memory = Vec::new();
        let mut fds = Vec::new();
        for (scope, s) in fixed {
            for (dir, conns, count) in [
                ("inbound", s.conns_inbound, s.streams_inbound),
                ("outbound", s.conns_outbound, s.streams_outbound),
            ] {
                connections.push((labels([("dir", dir), ("scope", scope)]), value(conns)));
                streams.push((
                    labels([("dir", dir), ("scope", scope), ("protocol", "")]),
                    value(count),
                ));
            }
            memory.push((
                labels([("scope", scope), ("protocol", "")]),
                value(s.memory),
            ));
            fds.push((labels([("scope", scope)]), value(s.fd)));
        }
        for (protocol, s) in self.protocols(stat) {
            for (dir, count) in [
                ("inbound", s.streams_inbound),
                ("outbound", s.streams_outbound),
            ] {
                streams.push((
                    labels([("dir", dir), ("scope", "protocol"), ("protocol", &protocol)]),
                    value(count),
                ));
            }
            memory.push((
                labels([("scope", "protocol"), ("protocol", &protocol)]),
                value(s.memory),
            ));
        }
        gauge(
            encoder,
            "connections",
            "Number of Connections",
            &connections,
        )?;
        gauge(encoder, "streams", "Number of Streams", &streams)?;
        gauge(
            encoder,
            "memory",
            "Amount of memory reserved as reported to the Resource Manager",
            &memory,
        )?;
        gauge(
            encoder,
            "fds",
            "Number of file descriptors reserved as reported to the Resource Manager",
            &fds,
        )?;
        self.encode_peer_histograms(encoder, stat)?;
        let mut limit_series = Vec::new();
        for (scope, limit) in [("system", &limits.system), ("transient", &limits.transient)] {
            for (resource, amount) in limit_resources(limit) {
                limit_series.push((
                    labels([("scope", scope), ("resource", resource)]),
                    value(amount),
                ));
            }
        }
        gauge(encoder, "limit", "Resource manager limits", &limit_series)
    }

    fn encode_peer_histograms(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        stat: &ResourceManagerStat,
    ) -> Result<(), std::fmt::Error> {
        let peers: Vec<&ScopeStat> = stat.peers.values().collect();
        type Count = fn(&ScopeStat) -> u32;
        // (name, help, previous_name's help, inbound, outbound): go's texts.
        let by_direction: [(&str, &str, &str, Count, Count); 2] = [
            (
                "peer_connections",
                "Number of connections this peer has",
                "Number of connections this peer previously had. This is used to get the \
                 current connection number per peer histogram by subtracting this from the \
                 peer_connections histogram",
                |s| s.conns_inbound,
                |s| s.conns_outbound,
            ),
            (
                "peer_streams",
                "Number of streams this peer has",
                "Number of streams this peer has",
                |s| s.streams_inbound,
                |s| s.streams_outbound,
            ),
        ];
        for (name, help, previous_help, inbound, outbound) in by_direction {
            for previous in [false, true] {
                let (name, help) = if previous {
                    (format!("previous_{name}"), previous_help)
                } else {
                    (name.to_owned(), help)
                };
                let mut metric =
                    encoder.encode_descriptor(&name, help, None, MetricType::Histogram)?;
                for (dir, count) in [("inbound", inbound), ("outbound", outbound)] {
                    let values = peers
                        .iter()
                        .map(|s| u64::from(count(s)))
                        .filter(|&n| n != 0);
                    let snapshot = if previous {
                        Snapshot::of(&COUNT_BUCKETS, [])
                    } else {
                        Snapshot::of(&COUNT_BUCKETS, values)
                    };
                    let dir_labels = labels([("dir", dir)]);
                    let mut family = metric.encode_family(&dir_labels)?;
                    encode_buckets(
                        &mut family,
                        &COUNT_BUCKETS,
                        &snapshot.counts,
                        snapshot.sum,
                        snapshot.count,
                    )?;
                }
            }
        }
        for previous in [false, true] {
            let (name, help) = if previous {
                (
                    "previous_peer_memory",
                    "How many peers have previously reserved this bucket of memory, as \
                     reported to the Resource Manager",
                )
            } else {
                (
                    "peer_memory",
                    "How many peers have reserved this bucket of memory, as reported to the \
                     Resource Manager",
                )
            };
            let values = peers.iter().map(|s| s.memory).filter(|&n| n != 0);
            let snapshot = if previous {
                Snapshot::of(&MEMORY_BUCKETS, [])
            } else {
                Snapshot::of(&MEMORY_BUCKETS, values)
            };
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            encode_buckets(
                &mut metric,
                &MEMORY_BUCKETS,
                &snapshot.counts,
                snapshot.sum,
                snapshot.count,
            )?;
        }
        Ok(())
    }
}

/// A limit's resources with go's label values.
fn limit_resources(limit: &BaseLimit) -> [(&'static str, u64); 8] {
    [
        ("memory", limit.memory),
        ("fd", limit.fd),
        ("conns", limit.conns),
        ("conns_inbound", limit.conns_inbound),
        ("conns_outbound", limit.conns_outbound),
        ("streams", limit.streams),
        ("streams_inbound", limit.streams_inbound),
        ("streams_outbound", limit.streams_outbound),
    ]
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let manager = self
            .shared
            .manager
            .get()
            .and_then(WeakResourceManager::upgrade);
        if let Some(rm) = &manager {
            self.encode_state(&mut encoder, &rm.stat(), &rm.limits())?;
        }
        let blocked: Vec<Series> = self
            .shared
            .blocked
            .nonzero()
            .into_iter()
            .map(|((dir, scope, resource), count)| {
                (
                    labels([("dir", dir), ("scope", scope), ("resource", resource)]),
                    value(count),
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "blocked_resources",
            "Number of blocked resources",
            &blocked,
        )?;
        for (name, help, histogram) in [
            (
                "conn_memory",
                "How many conns have reserved this bucket of memory, as reported to the \
                 Resource Manager",
                &self.shared.conn_memory,
            ),
            (
                "previous_conn_memory",
                "How many conns have previously reserved this bucket of memory, as reported \
                 to the Resource Manager",
                &self.shared.previous_conn_memory,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            histogram.encode(&mut metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_seen_at_a_scrape_keeps_its_series_at_zero() {
        let collector = StateCollector {
            shared: Arc::new(Shared {
                blocked: Blocked::new(),
                conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
                previous_conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
                manager: OnceLock::new(),
                protocols_seen: Mutex::new(BTreeSet::new()),
            }),
        };
        let busy = ScopeStat {
            streams_inbound: 2,
            memory: 64,
            ..ScopeStat::default()
        };
        let mut stat = ResourceManagerStat::default();
        stat.protocols.insert("/b".to_owned(), busy);
        stat.protocols.insert("/a".to_owned(), ScopeStat::default());
        let names = |all: &[(String, ScopeStat)]| {
            all.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>()
        };
        let first = collector.protocols(&stat);
        assert_eq!(names(&first), ["/a", "/b"]);
        assert_eq!(first[1].1, busy);
        // "/b" is collected; "/c" appears.
        stat.protocols.remove("/b");
        stat.protocols.insert("/c".to_owned(), busy);
        let second = collector.protocols(&stat);
        assert_eq!(names(&second), ["/a", "/b", "/c"]);
        assert_eq!(
            second[1].1,
            ScopeStat::default(),
            "a collected protocol reads 0"
        );
        assert_eq!(second[2].1, busy);
    }
}

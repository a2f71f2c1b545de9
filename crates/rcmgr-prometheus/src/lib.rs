//! Prometheus metrics for [rcmgr](https://docs.rs/rcmgr), with go-libp2p's names and labels,
//! so that go's Grafana dashboards (and `docs/grafana-dashboard.json` in this repository) read
//! them unchanged.
//!
//! [`PrometheusReporter`] registers its metrics on a prometheus-client [`Registry`] (the crate
//! and version libp2p-metrics uses, so a node exports rcmgr's metrics beside libp2p's from one
//! registry) and is installed as the manager's
//! [`MetricsReporter`]:
//!
//! ```
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//! use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
//! use rcmgr_prometheus::PrometheusReporter;
//!
//! let mut registry = Registry::default();
//! let metrics = PrometheusReporter::new(&mut registry);
//! let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
//!     .metrics(metrics.clone())
//!     .build()?;
//! metrics.bind(&rm);
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
//! | `libp2p_rcmgr_memory` | gauge | scope, protocol | read at scrape time |
//! | `libp2p_rcmgr_fds` | gauge | scope | read at scrape time |
//! | `libp2p_rcmgr_blocked_resources` | gauge, only ever increased | dir, scope, resource | one per refusal |
//! | `libp2p_rcmgr_peer_connections`, `_peer_streams` (+ `previous_`) | histogram | dir | the live peers at scrape time |
//! | `libp2p_rcmgr_peer_memory` (+ `previous_`) | histogram | — | the live peers at scrape time |
//! | `libp2p_rcmgr_conn_memory` (+ `previous_`) | histogram | — | every change of a connection's memory |
//! | `libp2p_rcmgr_limit` | gauge | scope (system, transient), resource | the limits in force at scrape time |
//!
//! Everything that describes the manager's state is read from it when Prometheus scrapes:
//! nothing is updated on the reservation path but the refusal counters and the connection
//! memory histograms, each an atomic increment.
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
//! - **Refusals count events.** `blocked_resources` adds 1 per refusal, memory included (go
//!   adds the bytes refused: its quirk 9), under the resource whose limit refused: a
//!   connection refused for its file descriptor counts under `fd`, one refused by a count
//!   under `connections` with its direction (go counts both for every connection).
//! - **Limits follow `set_limits`**: `libp2p_rcmgr_limit` is read at scrape time, not only at
//!   construction.
//!
//! Pass the registry itself (or a sub-registry without a prefix) to get go's names; a prefixed
//! sub-registry prefixes them.

#![forbid(unsafe_code)]

mod blocked;
mod histogram;

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
    registry::Registry,
};
use rcmgr::{
    BaseLimit, LimitExceeded, MetricsReporter, ResourceManager, ResourceManagerStat, ScopeStat,
    WeakResourceManager,
};

use self::{
    blocked::Blocked,
    histogram::{AtomicHistogram, COUNT_BUCKETS, MEMORY_BUCKETS, Snapshot, encode_buckets},
};

/// The prefix of every metric: go's namespace.
pub const NAMESPACE: &str = "libp2p_rcmgr";

/// Exports a resource manager's metrics to Prometheus under go-libp2p's names (see the crate
/// docs for the list).
///
/// Create it with [`new`](Self::new), install it with
/// [`ResourceManagerBuilder::metrics`](rcmgr::ResourceManagerBuilder::metrics), then
/// [`bind`](Self::bind) it to the manager built, whose state it reads at scrape time.
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
}

impl PrometheusReporter {
    /// Registers the metrics on `registry`, under the prefix [`NAMESPACE`], and returns the
    /// reporter to install on a manager.
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let reporter = rcmgr_prometheus::PrometheusReporter::new(&mut registry);
    /// # drop(reporter);
    /// ```
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let shared = Arc::new(Shared {
            blocked: Blocked::new(),
            conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
            previous_conn_memory: AtomicHistogram::new(&MEMORY_BUCKETS),
            manager: OnceLock::new(),
        });
        registry
            .sub_registry_with_prefix(NAMESPACE)
            .register_collector(Box::new(StateCollector {
                shared: Arc::clone(&shared),
            }));
        Arc::new(PrometheusReporter { shared })
    }

    /// Reads `manager`'s state at every scrape from now on: the usage gauges, the peer
    /// histograms and the limits. The reporter holds the manager weakly (the manager holds
    /// the reporter), so metrics of a dropped manager simply stop. Binding again does nothing.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, ResourceManager};
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let metrics = rcmgr_prometheus::PrometheusReporter::new(&mut registry);
    /// let rm = ResourceManager::builder(ConcreteLimitConfig::infinite()).metrics(metrics.clone()).build()?;
    /// metrics.bind(&rm);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn bind(&self, manager: &ResourceManager) {
        let _ = self.shared.manager.set(manager.downgrade());
    }
}

impl MetricsReporter for PrometheusReporter {
    fn limit_exceeded(&self, refusal: &LimitExceeded) {
        self.shared.blocked.count(refusal);
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
        for (protocol, s) in &stat.protocols {
            for (dir, count) in [
                ("inbound", s.streams_inbound),
                ("outbound", s.streams_outbound),
            ] {
                streams.push((
                    labels([("dir", dir), ("scope", "protocol"), ("protocol", protocol)]),
                    value(count),
                ));
            }
            memory.push((
                labels([("scope", "protocol"), ("protocol", protocol)]),
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
        gauge(encoder, "limit", "Limit for resource", &limit_series)
    }

    fn encode_peer_histograms(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        stat: &ResourceManagerStat,
    ) -> Result<(), std::fmt::Error> {
        let peers: Vec<&ScopeStat> = stat.peers.values().collect();
        type Count = fn(&ScopeStat) -> u32;
        let by_direction: [(&str, &str, Count, Count); 2] = [
            (
                "peer_connections",
                "Number of connections this peer has",
                |s| s.conns_inbound,
                |s| s.conns_outbound,
            ),
            (
                "peer_streams",
                "Number of streams this peer has",
                |s| s.streams_inbound,
                |s| s.streams_outbound,
            ),
        ];
        for (name, help, inbound, outbound) in by_direction {
            for previous in [false, true] {
                let name = if previous {
                    format!("previous_{name}")
                } else {
                    name.to_owned()
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
            let name = if previous {
                "previous_peer_memory"
            } else {
                "peer_memory"
            };
            let values = peers.iter().map(|s| s.memory).filter(|&n| n != 0);
            let snapshot = if previous {
                Snapshot::of(&MEMORY_BUCKETS, [])
            } else {
                Snapshot::of(&MEMORY_BUCKETS, values)
            };
            let mut metric = encoder.encode_descriptor(
                name,
                "How many peers have reserved this bucket of memory, as reported to the Resource Manager",
                None,
                MetricType::Histogram,
            )?;
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
        for (name, histogram) in [
            ("conn_memory", &self.shared.conn_memory),
            ("previous_conn_memory", &self.shared.previous_conn_memory),
        ] {
            let mut metric = encoder.encode_descriptor(
                name,
                "How many conns have reserved this bucket of memory, as reported to the Resource Manager",
                None,
                MetricType::Histogram,
            )?;
            histogram.encode(&mut metric)?;
        }
        Ok(())
    }
}

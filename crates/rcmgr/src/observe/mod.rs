//! Observability: the [`MetricsReporter`] callbacks, the trace ([`TraceEvent`]s written as
//! JSON lines by a thread of their own, and [`TraceReporter`]s), and `tracing` logs of every
//! refusal.
//!
//! Everything here is optional and costs one well-predicted branch per hook when it is not
//! installed: the [`Observer`] in the root holds what is.
//!
//! # Where the hooks are
//!
//! - Metrics callbacks are called once per public operation, by the handles and the manager
//!   (`allow_*`/`block_*`), where a refusal's public error is built (`limit_exceeded`), and
//!   where a connection scope's own memory changes (`conn_memory`).
//! - Trace events are recorded by the handles after each operation, one per counter change
//!   of every scope on its path (in go's order), when scopes are created and destroyed, and
//!   where a refusal's error is built (`block_*`); see [`trace`] for how they reach the
//!   writer. This layer knows nothing of the scope graph: it is told names and totals.
//! - A refusal's debug log is written where its error is built; the limits are logged at
//!   info level when a manager is built.
//!
//! docs/observability.md describes what is exported and how it differs from go.

mod event;
mod metrics;
mod time;
#[cfg(not(rcmgr_loom))]
pub(crate) mod trace;
#[cfg(not(rcmgr_loom))]
pub(crate) mod writer;

use std::sync::Arc as StdArc;

pub use event::{TraceEvent, TraceEventType, TraceLimit, UnknownTraceEventType};
pub use metrics::MetricsReporter;
#[cfg(not(rcmgr_loom))]
pub use trace::TraceReporter;
#[cfg(not(rcmgr_loom))]
pub(crate) use trace::{Operation, Tracer};

use crate::{
    error::LimitExceeded,
    limits::ConcreteLimitConfig,
    types::{Priority, Resource, ScopeStat},
};
#[cfg(rcmgr_loom)]
use crate::{limits::BaseLimit, types::ScopeName};

/// A change of one scope's counts, as its events record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) memory: u64,
    /// The priority of a memory reservation (a transfer's is ALWAYS).
    pub(crate) priority: Priority,
    /// Inbound and outbound streams.
    pub(crate) streams: (u64, u64),
    /// Inbound and outbound connections, and file descriptors.
    pub(crate) conns: (u64, u64, u64),
}

impl Change {
    /// No change.
    pub(crate) const NONE: Change = Change {
        memory: 0,
        priority: Priority::ALWAYS,
        streams: (0, 0),
        conns: (0, 0, 0),
    };

    /// What this change asks of the kind of resource `resource` belongs to, as go's
    /// `block_*` trace event carries it (see [`MetricsReporter::refused_amount`]): the bytes
    /// for memory, both stream directions for streams, both connection directions and the
    /// file descriptors for connections; every other field 0.
    pub(crate) fn asked_of(self, resource: Resource) -> ScopeStat {
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut asked = ScopeStat::default();
        match resource {
            Resource::Memory { .. } => asked.memory = self.memory,
            Resource::StreamsInbound | Resource::StreamsOutbound | Resource::Streams => {
                asked.streams_inbound = count(self.streams.0);
                asked.streams_outbound = count(self.streams.1);
            }
            _ => {
                asked.conns_inbound = count(self.conns.0);
                asked.conns_outbound = count(self.conns.1);
                asked.fd = count(self.conns.2);
            }
        }
        asked
    }

    /// How many kinds of resource (memory, streams, connections) change: the number of
    /// events the change makes at one scope (for the trace, which loom builds leave out).
    #[cfg_attr(rcmgr_loom, allow(dead_code))]
    #[inline]
    pub(crate) fn kinds(self) -> u64 {
        let (streams_in, streams_out) = self.streams;
        let (conns_in, conns_out, fd) = self.conns;
        u64::from(self.memory != 0)
            + u64::from(streams_in | streams_out != 0)
            + u64::from(conns_in | conns_out | fd != 0)
    }
}

/// Receives every trace event (see the normal build's documentation); under loom there is no
/// trace.
#[cfg(rcmgr_loom)]
pub trait TraceReporter: Send + Sync + 'static {
    /// Called once for every event.
    fn consume(&self, event: &TraceEvent);
}

/// Under loom there is no trace: the tracer cannot be built.
#[cfg(rcmgr_loom)]
#[derive(Debug)]
pub(crate) enum Tracer {}

#[cfg(rcmgr_loom)]
impl Tracer {
    pub(crate) fn created(&self, _: impl FnOnce() -> (ScopeName, BaseLimit)) {
        match *self {}
    }
    pub(crate) fn destroyed(&self, _: impl FnOnce() -> ScopeName) {
        match *self {}
    }
    pub(crate) fn changed(&self, _: impl FnOnce() -> (ScopeName, ScopeStat), _: Change, _: bool) {
        match *self {}
    }
    pub(crate) fn blocked(
        &self,
        _: impl FnOnce() -> (ScopeName, ScopeStat),
        _: Change,
        _: Resource,
    ) {
        match *self {}
    }
}

/// Under loom there is no trace: the guard does nothing.
#[cfg(rcmgr_loom)]
#[derive(Debug)]
pub(crate) struct Operation<'a>(std::marker::PhantomData<&'a Tracer>);

#[cfg(rcmgr_loom)]
impl<'a> Operation<'a> {
    pub(crate) fn new(_: Option<&'a Tracer>) -> Self {
        Operation(std::marker::PhantomData)
    }
}

/// What a manager reports to: each part is optional.
#[derive(Default)]
pub(crate) struct Observer {
    pub(crate) metrics: Option<StdArc<dyn MetricsReporter>>,
    pub(crate) tracer: Option<Tracer>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("metrics", &self.metrics.is_some())
            .field("tracer", &self.tracer)
            .finish()
    }
}

impl Observer {
    /// The metrics reporter, if one is installed.
    #[inline]
    pub(crate) fn metrics(&self) -> Option<&dyn MetricsReporter> {
        self.metrics.as_deref()
    }

    /// The trace, if one is on.
    #[inline]
    pub(crate) fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// A guard that hands this thread's trace events on when the public operation that
    /// created it ends.
    #[inline]
    pub(crate) fn operation(&self) -> Operation<'_> {
        Operation::new(self.tracer())
    }

    /// Reports a refusal by a limit, whose public error is `refusal`: the `block_*` trace
    /// event at the refusing scope (which held `held`; `change` is what was asked of it), the
    /// metrics reporter's `limit_exceeded`, and go's debug log. Called once per refusal,
    /// where its error is built.
    #[cold]
    pub(crate) fn refused(&self, refusal: &LimitExceeded, change: Change, held: ScopeStat) {
        if let Some(tracer) = self.tracer() {
            tracer.blocked(
                || (refusal.refused_by().clone(), held),
                change,
                refusal.resource(),
            );
        }
        if let Some(metrics) = self.metrics() {
            metrics.limit_exceeded(refusal);
            metrics.refused_amount(refusal, &change.asked_of(refusal.resource()));
        }
        if tracing::enabled!(target: "rcmgr", tracing::Level::DEBUG) {
            log_refusal(refusal, held, change.conns.2 > 0);
        }
    }
}

/// The first events of every trace, as go's begins: `start` with the limits in force, then a
/// `create_scope` with its limit for each fixed scope, in the order go creates them right
/// after starting its trace (system, transient, allowlistedSystem, allowlistedTransient), all
/// at `time`.
#[cfg(not(rcmgr_loom))]
pub(crate) fn trace_preamble(
    time: std::time::SystemTime,
    limits: &ConcreteLimitConfig,
) -> Vec<TraceEvent> {
    use crate::types::ScopeName;
    let mut start = TraceEvent::new(time, TraceEventType::Start);
    start.limit = Some(TraceLimit::Config(Box::new(limits.to_partial())));
    let fixed = [
        (ScopeName::System, limits.system),
        (ScopeName::Transient, limits.transient),
        (ScopeName::AllowlistedSystem, limits.allowlisted_system),
        (
            ScopeName::AllowlistedTransient,
            limits.allowlisted_transient,
        ),
    ];
    let mut preamble = vec![start];
    preamble.extend(fixed.into_iter().map(|(name, limit)| {
        let mut created = TraceEvent::new(time, TraceEventType::CreateScope);
        created.scope = Some(name);
        created.limit = Some(TraceLimit::Scope(limit));
        created
    }));
    preamble
}

/// go's debug log of a refusal: its message and keys.
#[cold]
fn log_refusal(refusal: &LimitExceeded, stat: ScopeStat, usefd: bool) {
    let scope = refusal.scope().to_string();
    let edge = refusal.edge().map(ToString::to_string);
    let direction = refusal.direction().map(|d| d.to_string());
    let (current, attempted, limit) = (refusal.current(), refusal.attempted(), refusal.limit());
    let from_edge = edge.is_some();
    match refusal.resource() {
        Resource::Memory { priority } => {
            let priority = priority.0;
            if from_edge {
                tracing::debug!(target: "rcmgr", scope, edge, current, attempted, limit, priority, ?stat, error = %refusal, "blocked memory reservation from constraining edge");
            } else {
                tracing::debug!(target: "rcmgr", scope, current, attempted, limit, priority, ?stat, error = %refusal, "blocked memory reservation");
            }
        }
        Resource::StreamsInbound | Resource::StreamsOutbound | Resource::Streams => {
            if from_edge {
                tracing::debug!(target: "rcmgr", scope, edge, direction, current, attempted, limit, ?stat, error = %refusal, "blocked stream from constraining edge");
            } else {
                tracing::debug!(target: "rcmgr", scope, direction, current, attempted, limit, ?stat, error = %refusal, "blocked stream");
            }
        }
        _ => {
            if from_edge {
                tracing::debug!(target: "rcmgr", scope, edge, direction, usefd, current, attempted, limit, ?stat, error = %refusal, "blocked connection from constraining edge");
            } else {
                tracing::debug!(target: "rcmgr", scope, direction, usefd, current, attempted, limit, ?stat, error = %refusal, "blocked connection");
            }
        }
    }
}

/// The info log of a new manager: the limits it enforces.
pub(crate) fn log_start(limits: &ConcreteLimitConfig) {
    let (system, transient) = (&limits.system, &limits.transient);
    tracing::info!(
        target: "rcmgr",
        system = ?system,
        transient = ?transient,
        address_limits = limits.ip.counts_connections(),
        rate_limits = limits.ip.rate != crate::limits::ConnRateLimits::disabled(),
        "resource manager started with these limits"
    );
}

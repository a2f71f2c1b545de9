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
//!   where a connection scope's own memory word changes (`conn_memory`, in the walks).
//! - Trace events are recorded by the walks at every counter change of every scope, by the
//!   handles and registries when scopes are created and destroyed, and where a refusal's error
//!   is built (`block_*`); see [`trace`] for how they reach the writer.
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
    resource::Resource,
    scope::{Kind, ScopeCtx},
    walk::Amount,
};

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
    pub(crate) fn created(&self, _: ScopeCtx<'_>) {
        match *self {}
    }
    pub(crate) fn destroyed(&self, _: ScopeCtx<'_>) {
        match *self {}
    }
    pub(crate) fn changed(&self, _: ScopeCtx<'_>, _: Amount, _: bool) {
        match *self {}
    }
    pub(crate) fn blocked(&self, _: ScopeCtx<'_>, _: Amount, _: Resource) {
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
}

/// Records `amount` taken by or given back from `at` in the trace, if one is on.
#[inline]
pub(crate) fn trace_change(at: ScopeCtx<'_>, amount: Amount, taken: bool) {
    if let Some(tracer) = at.root.observer.tracer() {
        tracer.changed(at, amount, taken);
    }
}

/// Records the creation of `at` in the trace, if one is on.
#[inline]
pub(crate) fn trace_created(at: ScopeCtx<'_>) {
    if let Some(tracer) = at.root.observer.tracer() {
        tracer.created(at);
    }
}

/// Records the end of `at` in the trace, if one is on.
#[inline]
pub(crate) fn trace_destroyed(at: ScopeCtx<'_>) {
    if let Some(tracer) = at.root.observer.tracer() {
        tracer.destroyed(at);
    }
}

/// Tells the metrics reporter that a connection scope's own memory went from `old` to `new`.
#[inline]
pub(crate) fn conn_memory(at: ScopeCtx<'_>, old: u64, new: u64) {
    if let Some(metrics) = at.root.observer.metrics()
        && matches!(at.scope.kind, Kind::Conn(_))
        && old != new
    {
        metrics.conn_memory(old, new);
    }
}

/// Reports a refusal by `by`'s limit, whose public error is `refusal`: the `block_*` trace
/// event at `by`, the metrics reporter's `limit_exceeded`, and go's debug log. Called once
/// per refusal, where its error is built.
pub(crate) fn refused(by: ScopeCtx<'_>, amount: Amount, refusal: &LimitExceeded) {
    let observer = &by.root.observer;
    if let Some(tracer) = observer.tracer() {
        tracer.blocked(by, amount, refusal.resource());
    }
    if let Some(metrics) = observer.metrics() {
        metrics.limit_exceeded(refusal);
        metrics.refused_amount(refusal, &asked(amount, refusal.resource()));
    }
    if tracing::enabled!(target: "rcmgr", tracing::Level::DEBUG) {
        log_refusal(by, amount, refusal);
    }
}

/// What a refused `amount` asked of the kind of resource `resource` belongs to, as go's
/// `block_*` trace event carries it (see [`MetricsReporter::refused_amount`]).
fn asked(amount: Amount, resource: Resource) -> crate::stat::ScopeStat {
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let all = match amount {
        Amount::Memory { size, .. } => crate::stat::ScopeStat {
            memory: size,
            ..Default::default()
        },
        Amount::Streams { inbound, outbound } => crate::stat::ScopeStat {
            streams_inbound: count(inbound),
            streams_outbound: count(outbound),
            ..Default::default()
        },
        Amount::Conns {
            inbound,
            outbound,
            fd,
        } => crate::stat::ScopeStat {
            conns_inbound: count(inbound),
            conns_outbound: count(outbound),
            fd: count(fd),
            ..Default::default()
        },
        Amount::Stat(stat) => stat,
    };
    let mut asked = crate::stat::ScopeStat::default();
    match resource {
        Resource::Memory { .. } => asked.memory = all.memory,
        Resource::StreamsInbound | Resource::StreamsOutbound | Resource::Streams => {
            asked.streams_inbound = all.streams_inbound;
            asked.streams_outbound = all.streams_outbound;
        }
        _ => {
            asked.conns_inbound = all.conns_inbound;
            asked.conns_outbound = all.conns_outbound;
            asked.fd = all.fd;
        }
    }
    asked
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
    use crate::name::ScopeName;
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
fn log_refusal(by: ScopeCtx<'_>, amount: Amount, refusal: &LimitExceeded) {
    let scope = refusal.scope().to_string();
    let edge = refusal.edge().map(ToString::to_string);
    let direction = refusal.direction().map(|d| d.to_string());
    let stat = by.scope.stat();
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
            let usefd = match amount {
                Amount::Conns { fd, .. } => fd > 0,
                Amount::Stat(stat) => stat.fd > 0,
                _ => false,
            };
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
        rate_limits = limits.ip.rate != crate::gate::ConnRateLimits::disabled(),
        "resource manager started with these limits"
    );
}

//! What the handles tell: the public error of a refusal, and the trace events of an
//! operation, built from what the graph reports. All of it is the cold path or behind a
//! check that a tracer is installed.

use crate::{
    account::{Conns, Memory, Streams, Usage},
    error::{Error, LimitExceeded, ScopeClosed},
    graph::{
        Root,
        fault::{Asked, Refusal, RefusedBy, Why},
        scope::ScopeRef,
    },
    observe::Change,
    types::{Priority, ScopeName, ScopeStat},
};

/// A change of memory, as the trace records it.
pub(crate) fn memory_change(memory: Memory) -> Change {
    Change {
        memory: memory.bytes,
        priority: memory.priority,
        ..Change::NONE
    }
}

pub(crate) fn streams_change(streams: Streams) -> Change {
    Change {
        streams: (streams.inbound, streams.outbound),
        ..Change::NONE
    }
}

pub(crate) fn conns_change(conns: Conns) -> Change {
    Change {
        conns: (conns.inbound, conns.outbound, conns.fd),
        ..Change::NONE
    }
}

/// A transfer's whole usage, at go's `ReserveForChild` priority (ALWAYS).
pub(crate) fn usage_change(usage: Usage) -> Change {
    let (streams, conns) = (usage.streams(), usage.conns());
    Change {
        memory: usage.memory().bytes,
        priority: Priority::ALWAYS,
        streams: (streams.inbound, streams.outbound),
        conns: (conns.inbound, conns.outbound, conns.fd),
    }
}

fn change_of(asked: Asked) -> Change {
    match asked {
        Asked::Memory(memory) => memory_change(memory),
        Asked::Streams(streams) => streams_change(streams),
        Asked::Conns(conns) => conns_change(conns),
        Asked::Usage(usage) => usage_change(usage),
    }
}

/// The public error of a refusal of an operation on `asked` (`transfer`: a `set_peer`,
/// `set_protocol` or `set_service`, which go words with the refusing scope alone). A refusal
/// by a limit is reported here, once: the `block_*` event, `limit_exceeded`, the debug log.
#[cold]
pub(crate) fn error(root: &Root, asked: ScopeName, refusal: Refusal, transfer: bool) -> Error {
    let by = match refusal.by {
        RefusedBy::Itself => None,
        RefusedBy::Other(name) => Some(name),
    };
    match refusal.why {
        Why::Limit(hit, what) => {
            let mut exceeded = LimitExceeded::new(
                asked,
                by,
                hit.resource,
                (hit.current, hit.attempted, hit.limit),
            )
            .asked(what.direction());
            if transfer {
                exceeded = exceeded.in_transfer();
            }
            root.observer
                .refused(&exceeded, change_of(what), refusal.held);
            Error::LimitExceeded(Box::new(exceeded))
        }
        Why::Closed => Error::ScopeClosed(Box::new(ScopeClosed::new(asked, by))),
    }
}

/// [`error`], with go's trace of the parents that took their part before the refusal and
/// gave it back: a reservation event on each (`took` names each, in walk order, with what it
/// holds now, after the rollback: the event records what it held with the part taken), the
/// refusal's block event, a release event on each (in reverse).
#[cold]
pub(crate) fn error_after(
    root: &Root,
    asked: ScopeName,
    refusal: Refusal,
    transfer: bool,
    took: impl Fn(usize) -> (ScopeName, ScopeStat),
) -> Error {
    let rolled_back = match (&refusal.by, refusal.why, root.observer.tracer()) {
        (RefusedBy::Other(_), Why::Limit(_, what), Some(tracer)) if refusal.at > 0 => {
            Some((tracer, refusal.at, change_of(what)))
        }
        _ => None,
    };
    if let Some((tracer, count, change)) = rolled_back {
        for index in 0..count {
            tracer.changed(
                || {
                    let (name, held) = took(index);
                    (name, with_change(held, change))
                },
                change,
                true,
            );
        }
    }
    let err = error(root, asked, refusal, transfer);
    if let Some((tracer, count, change)) = rolled_back {
        for index in (0..count).rev() {
            tracer.changed(|| took(index), change, false);
        }
    }
    err
}

/// What a scope holding `held` held with `change` taken too.
fn with_change(held: ScopeStat, change: Change) -> ScopeStat {
    let count = |held: u32, more: u64| {
        u32::try_from(u64::from(held).saturating_add(more)).unwrap_or(u32::MAX)
    };
    ScopeStat {
        streams_inbound: count(held.streams_inbound, change.streams.0),
        streams_outbound: count(held.streams_outbound, change.streams.1),
        conns_inbound: count(held.conns_inbound, change.conns.0),
        conns_outbound: count(held.conns_outbound, change.conns.1),
        fd: count(held.fd, change.conns.2),
        memory: held.memory.saturating_add(change.memory),
    }
}

/// A scope as the trace records it: its name and what it holds.
pub(crate) fn traced(scope: ScopeRef<'_>) -> (ScopeName, ScopeStat) {
    (scope.name(), scope.stat())
}

/// Records `change` taken by (or given back from) each of `scopes`, in order, if a trace is
/// on.
#[inline]
pub(crate) fn changed<'a>(
    root: &Root,
    scopes: impl IntoIterator<Item = ScopeRef<'a>>,
    change: Change,
    taken: bool,
) {
    if let Some(tracer) = root.observer.tracer() {
        for scope in scopes {
            tracer.changed(|| (scope.name(), scope.stat()), change, taken);
        }
    }
}

/// Records the creation of `scope`, if a trace is on.
#[inline]
pub(crate) fn created(root: &Root, scope: ScopeRef<'_>) {
    if let Some(tracer) = root.observer.tracer() {
        tracer.created(|| (scope.name(), scope.limit()));
    }
}

/// Records the end of the scope named `name`, if a trace is on.
#[inline]
pub(crate) fn destroyed(root: &Root, name: impl FnOnce() -> ScopeName) {
    if let Some(tracer) = root.observer.tracer() {
        tracer.destroyed(name);
    }
}

/// Tells the metrics reporter how a connection's own memory changed, if it did.
#[inline]
pub(crate) fn conn_memory(root: &Root, change: Option<(u64, u64)>) {
    if let (Some(metrics), Some((old, new))) = (root.observer.metrics(), change)
        && old != new
    {
        metrics.conn_memory(old, new);
    }
}

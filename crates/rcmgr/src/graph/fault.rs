//! What a refusal says, as plain data that names no node: [`Fault`] (and [`OpenFault`]) as
//! the hot paths return it, [`Refusal`] once the layer above has named it.
//!
//! A leaf of the graph: the nodes ([`super::conn`], [`super::stream`], [`super::span`],
//! [`super::staged`]) report their refusals in these types, and [`super::scope`], above
//! every node, names them (which scope refused, what it held) on the cold path.

use crate::{
    account::{Conns, Hit, Memory, PathRefusal, Streams, Usage},
    types::{Direction, ScopeName, ScopeStat},
};

/// What a refused step asked of the refusing scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    Memory(Memory),
    Streams(Streams),
    Conns(Conns),
    /// A transfer's whole usage (go's `ReserveForChild`).
    Usage(Usage),
}

impl Asked {
    /// The direction of the streams or connections asked for, when they go one way.
    pub(crate) fn direction(self) -> Option<Direction> {
        let (inbound, outbound) = match self {
            Asked::Memory(_) => (0, 0),
            Asked::Streams(streams) => (streams.inbound, streams.outbound),
            Asked::Conns(conns) => (conns.inbound, conns.outbound),
            Asked::Usage(usage) => {
                let (streams, conns) = (usage.streams(), usage.conns());
                (
                    streams.inbound + conns.inbound,
                    streams.outbound + conns.outbound,
                )
            }
        };
        match (inbound, outbound) {
            (0, 0) => None,
            (_, 0) => Some(Direction::Inbound),
            (0, _) => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// Which scope refused, relative to the scope the caller asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefusedBy {
    /// The scope the caller asked.
    Itself,
    /// Another scope: a constraining edge, a span's owner, a transfer's new parent.
    Other(ScopeName),
}

/// Why a scope refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A limit refused `asked`.
    Limit(Hit, Asked),
    /// The scope, or one the reservation had to pass through, is closed.
    Closed,
}

/// A refusal of a memory reservation through a connection or stream, or on a view's scope,
/// as the hot path returns it: where and why, small and `Copy`, naming no scope.
/// [`super::scope`] turns it into a [`Refusal`] on the cold path, so that a successful
/// reservation never carries names or usage snapshots through its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The scope is closed.
    Closed,
    /// The scope's own limit refused.
    Own(Hit),
    /// A parent on the path at `stage` refused (`refused.at` says which, in walk order);
    /// `limit` is the scope's own memory limit the walk used (go checks it first, so if it
    /// refuses too, the scope itself is named).
    Path {
        stage: u8,
        refused: PathRefusal,
        limit: u64,
    },
}

/// A refused open of a connection or stream, as the node reports it: its own limit refused,
/// or the parent at `at` of the path of the stage it opens in. [`super::scope`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenFault {
    /// The scope's own limit refused.
    Own(Hit),
    /// A parent on the path of the scope's first stage refused.
    Path(PathRefusal),
}

/// A refusal, as the graph reports it; the handles turn it into the public error (and the
/// trace and metrics report it) on the cold path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) by: RefusedBy,
    pub(crate) why: Why,
    /// What the refusing scope held when it refused (for the trace and the debug log).
    pub(crate) held: ScopeStat,
    /// Where on the path the refusing parent is: how many parents before it had taken the
    /// amount and gave it back (for the trace, which records go's events, and to tell which
    /// of a transfer's new parents refused).
    pub(crate) at: usize,
}

impl Refusal {
    /// A refusal because the asked scope itself is closed (a closed scope that is another
    /// one is named by [`ScopeRef::closed_refusal`](super::scope::ScopeRef::closed_refusal)).
    #[cold]
    pub(crate) fn closed() -> Refusal {
        Refusal {
            by: RefusedBy::Itself,
            why: Why::Closed,
            held: ScopeStat::default(),
            at: 0,
        }
    }

    /// The same refusal, by the parent at `at` on the path.
    pub(crate) fn at(mut self, at: usize) -> Refusal {
        self.at = at;
        self
    }
}

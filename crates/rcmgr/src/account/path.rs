//! Paths: the parents a scope reports to, in go's walk order, and the walks over them.
//!
//! A handle resolves its path when it is opened and at each transfer (the graph layer knows
//! which parents a connection, stream or span has at each stage) and passes it here as a
//! slice of [`Parent`]s. A reservation takes its amount from each parent in order; if one
//! refuses, a guard gives back what the earlier ones took, in reverse order, also if anything
//! panics in between. A release gives back from each parent. A transfer moves a scope's whole
//! [`Usage`] (go's `ReserveForChild`/`ReleaseForChild`).

use super::{
    counter::{Conns, Counter, Memory, Streams},
    lease::Sharded,
    limit_cell::LimitCell,
    plain::{Plain, Refused},
};
use crate::{sync::Slot, types::ScopeStat};

/// One parent on a path: a plain scope (peer, protocol-peer, service-peer) or a sharded one
/// (system, transient, the allowlisted pair, protocol, service).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Parent<'a> {
    Plain(&'a Plain),
    Sharded(&'a Sharded),
}

impl<'a> Parent<'a> {
    #[inline]
    pub(crate) fn reserve<K: Counter>(self, amount: K, slot: Slot) -> Result<(), Refused> {
        match self {
            Parent::Plain(scope) => scope.reserve(amount),
            Parent::Sharded(scope) => scope.reserve(amount, slot),
        }
    }

    /// Gives back what a child reserved here.
    #[inline]
    pub(crate) fn release<K: Counter>(self, amount: K, slot: Slot) {
        match self {
            Parent::Plain(scope) => scope.release(amount),
            Parent::Sharded(scope) => scope.release(amount, slot),
        }
    }

    pub(crate) fn limit(self) -> &'a LimitCell {
        match self {
            Parent::Plain(scope) => scope.limit(),
            Parent::Sharded(scope) => scope.limit(),
        }
    }

    pub(crate) fn stat(self) -> ScopeStat {
        match self {
            Parent::Plain(scope) => scope.stat(),
            Parent::Sharded(scope) => scope.stat(),
        }
    }

    /// go's `ReserveForChild`: memory at priority ALWAYS, then streams, then connections,
    /// each checked even when nothing of it moves (a lowered limit then refuses the move),
    /// the earlier ones given back if a later one refuses.
    pub(crate) fn reserve_usage(self, usage: Usage, slot: Slot) -> Result<(), Refused> {
        self.reserve(usage.memory(), slot)?;
        if let Err(refused) = self.reserve(usage.streams(), slot) {
            self.release(usage.memory(), slot);
            return Err(refused);
        }
        if let Usage::Conn { conns, .. } = usage
            && let Err(refused) = self.reserve(conns, slot)
        {
            self.release(usage.memory(), slot);
            return Err(refused);
        }
        Ok(())
    }

    /// go's `ReleaseForChild`.
    pub(crate) fn release_usage(self, usage: Usage, slot: Slot) {
        self.release(usage.memory(), slot);
        self.release(usage.streams(), slot);
        if let Usage::Conn { conns, .. } = usage {
            self.release(conns, slot);
        }
    }
}

/// Everything a connection or stream holds, moved at once by a transfer or given back by a
/// close. A stream's parents hold no connections and a connection holds no streams, so a
/// stream's usage checks no connection count (which could never refuse there); a
/// connection's checks the stream total as go does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    Stream { bytes: u64, streams: Streams },
    Conn { bytes: u64, conns: Conns },
}

impl Usage {
    /// The bytes, at the priority a transfer moves them with (go's ALWAYS).
    #[inline]
    pub(crate) fn memory(self) -> Memory {
        let (Usage::Stream { bytes, .. } | Usage::Conn { bytes, .. }) = self;
        Memory::new(bytes, crate::types::Priority::ALWAYS)
    }

    #[inline]
    pub(crate) fn streams(self) -> Streams {
        match self {
            Usage::Stream { streams, .. } => streams,
            Usage::Conn { .. } => Streams::ZERO,
        }
    }

    #[inline]
    pub(crate) fn conns(self) -> Conns {
        match self {
            Usage::Stream { .. } => Conns::ZERO,
            Usage::Conn { conns, .. } => conns,
        }
    }
}

/// Where on a path a reservation was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathRefusal {
    /// The index of the refusing parent.
    pub(crate) at: usize,
    pub(crate) why: Refused,
}

/// Gives back, in reverse order, what the first `taken` parents of a path took, unless
/// [`keep`](Self::keep) is called: on a refusal, an early return or a panic alike.
struct Taken<'p, 'a, T: Copy, F: Fn(Parent<'a>, T, Slot)> {
    path: &'p [Parent<'a>],
    amount: T,
    slot: Slot,
    taken: usize,
    give_back: F,
}

impl<'a, T: Copy, F: Fn(Parent<'a>, T, Slot)> Taken<'_, 'a, T, F> {
    fn keep(mut self) {
        self.taken = 0;
    }
}

impl<'a, T: Copy, F: Fn(Parent<'a>, T, Slot)> Drop for Taken<'_, 'a, T, F> {
    fn drop(&mut self) {
        for parent in self.path[..self.taken].iter().rev() {
            (self.give_back)(*parent, self.amount, self.slot);
        }
    }
}

/// Reserves `amount` on every parent of `path`, in order; if one refuses, gives back what the
/// earlier ones took and says which refused.
#[inline]
pub(crate) fn reserve<K: Counter>(
    path: &[Parent<'_>],
    amount: K,
    slot: Slot,
) -> Result<(), PathRefusal> {
    let mut taken = Taken {
        path,
        amount,
        slot,
        taken: 0,
        give_back: |parent: Parent<'_>, amount: K, slot| parent.release(amount, slot),
    };
    for (at, parent) in path.iter().enumerate() {
        parent
            .reserve(amount, slot)
            .map_err(|why| PathRefusal { at, why })?;
        taken.taken += 1;
    }
    taken.keep();
    Ok(())
}

/// Gives back `amount`, which a child reserved, from every parent of `path`.
#[inline]
pub(crate) fn release<K: Counter>(path: &[Parent<'_>], amount: K, slot: Slot) {
    if amount.is_zero() {
        return;
    }
    for parent in path {
        parent.release(amount, slot);
    }
}

/// Moves `usage` onto every parent of `path`, in order (go's `ReserveForChild` on each); if
/// one refuses, gives back what the earlier ones took.
pub(crate) fn reserve_usage(
    path: &[Parent<'_>],
    usage: Usage,
    slot: Slot,
) -> Result<(), PathRefusal> {
    let mut taken = Taken {
        path,
        amount: usage,
        slot,
        taken: 0,
        give_back: |parent: Parent<'_>, usage, slot| parent.release_usage(usage, slot),
    };
    for (at, parent) in path.iter().enumerate() {
        parent
            .reserve_usage(usage, slot)
            .map_err(|why| PathRefusal { at, why })?;
        taken.taken += 1;
    }
    taken.keep();
    Ok(())
}

/// Gives back `usage` from every parent of `path`.
pub(crate) fn release_usage(path: &[Parent<'_>], usage: Usage, slot: Slot) {
    for parent in path {
        parent.release_usage(usage, slot);
    }
}

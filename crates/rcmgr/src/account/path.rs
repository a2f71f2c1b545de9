//! Paths: the parents a scope reports to, in go's walk order, and the walks over them.
//!
//! go's walk order always puts the scopes of one peer first (the peer, its protocol-peer and
//! service-peer scopes) and the shared ones after (protocol, service, transient, system, the
//! allowlisted pair), so a [`Path`] is two slices: its [`Plain`] parents, then its [`Sharded`]
//! ones. A walk is then two loops with no dispatch per step. A handle resolves its path when
//! it is opened and at each transfer (the graph layer knows which parents a connection,
//! stream or span has at each stage) and builds it on the stack for each walk, which it
//! runs there: the walk is a [`Walk`], always inlined into each stage's arm of the builder, so
//! every stage's walk is compiled for that stage's parents (loops of known length, unrolled,
//! no call per step).
//!
//! A reservation takes its amount from each parent in order; if one refuses, what the
//! earlier ones took is given back, in reverse order, on the cold path. A release gives back
//! from each parent. A transfer moves a scope's whole [`Usage`] (go's
//! `ReserveForChild`/`ReleaseForChild`).

use super::{
    counter::{Conns, Counter, Memory, Streams},
    lease::Sharded,
    limit_cell::LimitCell,
    plain::{Plain, Refused},
};
use crate::{sync::Slot, types::ScopeStat};

/// The parents of a scope at one stage: the plain ones, then the sharded ones, each in go's
/// walk order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path<'a> {
    pub(crate) plain: &'a [&'a Plain],
    pub(crate) sharded: &'a [&'a Sharded],
}

impl<'a> Path<'a> {
    /// How many parents.
    #[inline(always)]
    pub(crate) fn len(self) -> usize {
        self.plain.len() + self.sharded.len()
    }
}

/// What runs on a path where it is built: [`Reserve`], [`Release`], [`ReleaseUsage`],
/// [`Len`], or (on the cold paths) any closure taking the path.
pub(crate) trait Walk {
    type Output;
    fn on(self, path: Path<'_>) -> Self::Output;
}

impl<R, F: FnOnce(Path<'_>) -> R> Walk for F {
    type Output = R;

    #[inline(always)]
    fn on(self, path: Path<'_>) -> R {
        self(path)
    }
}

/// [`reserve`] as a [`Walk`]: the amount, and the calling thread's slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reserve<K>(pub(crate) K, pub(crate) Slot);

impl<K: Counter> Walk for Reserve<K> {
    type Output = Result<(), PathRefusal>;

    #[inline(always)]
    fn on(self, path: Path<'_>) -> Result<(), PathRefusal> {
        reserve(path, self.0, self.1)
    }
}

/// [`release`] as a [`Walk`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Release<K>(pub(crate) K, pub(crate) Slot);

impl<K: Counter> Walk for Release<K> {
    type Output = ();

    #[inline(always)]
    fn on(self, path: Path<'_>) {
        release(path, self.0, self.1);
    }
}

/// [`release_usage`] as a [`Walk`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReleaseUsage(pub(crate) Usage, pub(crate) Slot);

impl Walk for ReleaseUsage {
    type Output = ();

    #[inline(always)]
    fn on(self, path: Path<'_>) {
        release_usage(path, self.0, self.1);
    }
}

/// How many parents a path has, as a [`Walk`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Len;

impl Walk for Len {
    type Output = usize;

    #[inline(always)]
    fn on(self, path: Path<'_>) -> usize {
        path.len()
    }
}

/// One parent, for what is asked of a single scope (its limit, its usage).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Parent<'a> {
    Plain(&'a Plain),
    Sharded(&'a Sharded),
}

impl<'a> Parent<'a> {
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

    /// Moves `usage` onto this parent (go's `ReserveForChild`, see [`Usage`]'s step).
    #[inline(always)]
    pub(crate) fn take_usage(self, usage: Usage, slot: Slot) -> Result<(), Refused> {
        match self {
            Parent::Plain(scope) => usage.take(scope, slot),
            Parent::Sharded(scope) => usage.take(scope, slot),
        }
    }

    /// Gives back `usage` from this parent (go's `ReleaseForChild`).
    #[inline(always)]
    pub(crate) fn give_usage(self, usage: Usage, slot: Slot) {
        match self {
            Parent::Plain(scope) => usage.give(scope, slot),
            Parent::Sharded(scope) => usage.give(scope, slot),
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
    #[inline(always)]
    pub(crate) fn memory(self) -> Memory {
        let (Usage::Stream { bytes, .. } | Usage::Conn { bytes, .. }) = self;
        Memory::new(bytes, crate::types::Priority::ALWAYS)
    }

    #[inline(always)]
    pub(crate) fn streams(self) -> Streams {
        match self {
            Usage::Stream { streams, .. } => streams,
            Usage::Conn { .. } => Streams::ZERO,
        }
    }

    #[inline(always)]
    pub(crate) fn conns(self) -> Conns {
        match self {
            Usage::Stream { .. } => Conns::ZERO,
            Usage::Conn { conns, .. } => conns,
        }
    }
}

/// A scope a walk takes from and gives back to: a plain or a sharded one. (A plain scope's
/// words are shared by every thread, so it ignores the slot.)
pub(crate) trait ParentScope {
    fn reserve<K: Counter>(&self, amount: K, slot: Slot) -> Result<(), Refused>;
    fn release<K: Counter>(&self, amount: K, slot: Slot);
}

impl ParentScope for Plain {
    #[inline(always)]
    fn reserve<K: Counter>(&self, amount: K, _: Slot) -> Result<(), Refused> {
        Plain::reserve(self, amount)
    }

    #[inline(always)]
    fn release<K: Counter>(&self, amount: K, _: Slot) {
        Plain::release(self, amount);
    }
}

impl ParentScope for Sharded {
    #[inline(always)]
    fn reserve<K: Counter>(&self, amount: K, slot: Slot) -> Result<(), Refused> {
        Sharded::reserve(self, amount, slot)
    }

    #[inline(always)]
    fn release<K: Counter>(&self, amount: K, slot: Slot) {
        Sharded::release(self, amount, slot);
    }
}

/// What a walk does at one scope: take an amount (go's `*ForChild` reservations), or give it
/// back. Written once for every kind of amount and both kinds of parent.
trait Step: Copy {
    fn take<S: ParentScope>(self, scope: &S, slot: Slot) -> Result<(), Refused>;
    fn give<S: ParentScope>(self, scope: &S, slot: Slot);
}

/// One kind of counter's amount.
#[derive(Clone, Copy)]
struct Amount<K>(K);

impl<K: Counter> Step for Amount<K> {
    #[inline(always)]
    fn take<S: ParentScope>(self, scope: &S, slot: Slot) -> Result<(), Refused> {
        scope.reserve(self.0, slot)
    }

    #[inline(always)]
    fn give<S: ParentScope>(self, scope: &S, slot: Slot) {
        scope.release(self.0, slot);
    }
}

/// go's `ReserveForChild`: memory at priority ALWAYS, then streams, then connections, each
/// checked even when nothing of it moves (a lowered limit then refuses the move), the earlier
/// ones given back if a later one refuses. (`ReleaseForChild` gives all back.)
impl Step for Usage {
    #[inline(always)]
    fn take<S: ParentScope>(self, scope: &S, slot: Slot) -> Result<(), Refused> {
        scope.reserve(self.memory(), slot)?;
        if let Err(refused) = scope.reserve(self.streams(), slot) {
            scope.release(self.memory(), slot);
            return Err(refused);
        }
        if let Usage::Conn { conns, .. } = self
            && let Err(refused) = scope.reserve(conns, slot)
        {
            scope.release(self.memory(), slot);
            return Err(refused);
        }
        Ok(())
    }

    #[inline(always)]
    fn give<S: ParentScope>(self, scope: &S, slot: Slot) {
        scope.release(self.memory(), slot);
        scope.release(self.streams(), slot);
        scope.release(self.conns(), slot);
    }
}

/// Where on a path a reservation was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathRefusal {
    /// The index of the refusing parent in walk order.
    pub(crate) at: usize,
    pub(crate) why: Refused,
}

/// Takes `step` on every parent of `path`, in order; if one refuses, gives back what the
/// earlier ones took (in reverse order) and says which refused. (A step is arithmetic on
/// words and never panics, so there is nothing to unwind between the steps.) The rollback is
/// written out where the refusal is found, on the cold path: where the path's length is known
/// it is a fixed sequence of steps, and the path itself never has to be kept in memory for
/// it.
#[inline(always)]
fn take_all<S: Step>(path: Path<'_>, step: S, slot: Slot) -> Result<(), PathRefusal> {
    for (at, scope) in path.plain.iter().enumerate() {
        if let Err(why) = step.take(*scope, slot) {
            cold();
            give_back(&path.plain[..at], &[], step, slot);
            return Err(PathRefusal { at, why });
        }
    }
    for (taken, scope) in path.sharded.iter().enumerate() {
        if let Err(why) = step.take(*scope, slot) {
            cold();
            give_back(path.plain, &path.sharded[..taken], step, slot);
            return Err(PathRefusal {
                at: path.plain.len() + taken,
                why,
            });
        }
    }
    Ok(())
}

/// Marks the path that calls it as cold (`std::hint::cold_path`, which is newer than the
/// crate's minimum Rust version): a branch that leads here is laid out as the unlikely one.
#[cold]
#[inline(never)]
pub(crate) fn cold() {}

/// The rollback of a walk: gives `step` back to `sharded`, then to `plain`, each in reverse
/// order (the parents that took it before one refused).
#[inline(always)]
fn give_back<S: Step>(plain: &[&Plain], sharded: &[&Sharded], step: S, slot: Slot) {
    for scope in sharded.iter().rev() {
        step.give(*scope, slot);
    }
    for scope in plain.iter().rev() {
        step.give(*scope, slot);
    }
}

/// Gives `step` back to every parent of `path`.
#[inline(always)]
fn give_all<S: Step>(path: Path<'_>, step: S, slot: Slot) {
    for scope in path.plain {
        step.give(*scope, slot);
    }
    for scope in path.sharded {
        step.give(*scope, slot);
    }
}

/// Reserves `amount` on every parent of `path`, in order; if one refuses, gives back what the
/// earlier ones took and says which refused.
#[inline(always)]
pub(crate) fn reserve<K: Counter>(
    path: Path<'_>,
    amount: K,
    slot: Slot,
) -> Result<(), PathRefusal> {
    take_all(path, Amount(amount), slot)
}

/// Gives back `amount`, which a child reserved, from every parent of `path`.
#[inline(always)]
pub(crate) fn release<K: Counter>(path: Path<'_>, amount: K, slot: Slot) {
    if !amount.is_zero() {
        give_all(path, Amount(amount), slot);
    }
}

/// Gives back `usage` from every parent of `path`.
#[inline(always)]
pub(crate) fn release_usage(path: Path<'_>, usage: Usage, slot: Slot) {
    give_all(path, usage, slot);
}

/// Moves `usage` onto `parents` in the order given (a transfer's new parents come in go's
/// order for the transfer, which need not put the plain ones first); if one refuses, gives
/// back what the earlier ones took. (Always inlined: the parents of a transfer are a fixed
/// list at each call, so the matches fold and the loop unrolls.)
#[inline(always)]
pub(crate) fn reserve_usage_in_order(
    parents: &[Parent<'_>],
    usage: Usage,
    slot: Slot,
) -> Result<(), PathRefusal> {
    for (at, parent) in parents.iter().enumerate() {
        if let Err(why) = parent.take_usage(usage, slot) {
            release_usage_in_order(&parents[..at], usage, slot);
            return Err(PathRefusal { at, why });
        }
    }
    Ok(())
}

/// Gives back `usage` from `parents`, in reverse order.
#[inline(always)]
pub(crate) fn release_usage_in_order(parents: &[Parent<'_>], usage: Usage, slot: Slot) {
    for parent in parents.iter().rev() {
        parent.give_usage(usage, slot);
    }
}

//! The accounting layer: counter words and the arithmetic on them, with no idea of what a
//! peer or a protocol is.
//!
//! | module | what it is |
//! |---|---|
//! | [`counter`] | the three kinds of counter (memory, streams, connections) behind one [`Counter`](counter::Counter) trait: packing, go's checks in go's order, capacities, the state bits of a word |
//! | [`limit_cell`] | a scope's limit, written in place on a limit swap or pinned |
//! | [`plain`] | a parent scope that is not sharded: check-and-add, exact releases, stopping for collection |
//! | [`lease`] | a sharded parent scope: a budget, per-slot pools of leased quota, pressure |
//! | [`direct`] | the bytes callers reserved directly on a scope views reach, where their releases are clamped |
//! | [`own`] | the memory word of a connection, stream or span: bytes, stage, moving, closed |
//! | [`path`] | a path of parents and the walks over it: reserve with rollback, release, move a usage |
//!
//! Everything above this layer (the scope graph, the handles) decides *which* words a
//! reservation touches; everything here decides *whether* it may and does it.

pub(crate) mod counter;
pub(crate) mod direct;
pub(crate) mod lease;
pub(crate) mod limit_cell;
pub(crate) mod own;
pub(crate) mod path;
pub(crate) mod plain;

pub(crate) use counter::{Conns, Counter, Hit, Memory, Streams};
pub(crate) use direct::Direct;
pub(crate) use lease::Sharded;
pub(crate) use limit_cell::{LimitCell, Pin};
pub(crate) use own::{Own, OwnRefusal, OwnState, Released};
pub(crate) use path::{
    Len, Parent, Path, PathRefusal, Release, ReleaseUsage, Reserve, Usage, Walk,
};
pub(crate) use plain::{Plain, Refused};

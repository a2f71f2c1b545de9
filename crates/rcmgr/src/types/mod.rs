//! The vocabulary every layer shares: directions, memory priorities and the resources a limit
//! can refuse ([`resource`]), usage snapshots ([`stat`]), scope names in go's scheme
//! ([`name`]) and token-bucket rates ([`rate`]). Plain values: nothing here refers to the
//! engine above it.

pub(crate) mod name;
pub(crate) mod rate;
pub(crate) mod resource;
pub(crate) mod stat;

pub use name::{InvalidScopeName, ScopeName, SpanName};
pub use rate::RateLimit;
pub use resource::{Direction, Priority, Resource};
pub use stat::{ResourceManagerStat, ScopeStat};

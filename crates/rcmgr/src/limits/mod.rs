//! Limits: what each scope may hold.
//!
//! [`BaseLimit`] is one scope's limit; [`ConcreteLimitConfig`] holds the limit of every scope a
//! [`ResourceManager`](crate::ResourceManager) enforces.

mod base;
mod concrete;

pub use base::BaseLimit;
pub use concrete::ConcreteLimitConfig;
pub(crate) use concrete::LimitKey;

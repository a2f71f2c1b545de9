//! Limits: what each scope may hold and how limits grow with the machine.
//!
//! - [`BaseLimit`] is one scope's limit; [`ConcreteLimitConfig`] holds the limit of every scope
//!   a [`ResourceManager`](crate::ResourceManager) enforces.
//! - [`ScalingLimitConfig`] gives each scope a base and a [`BaseLimitIncrease`];
//!   [`scale`](ScalingLimitConfig::scale) and [`autoscale`](ScalingLimitConfig::autoscale) turn
//!   it into a `ConcreteLimitConfig` with go-libp2p's arithmetic. Its `default()` is go's
//!   `DefaultLimits` and [`with_libp2p_defaults`](ScalingLimitConfig::with_libp2p_defaults)
//!   adds go-libp2p's limits for its own protocols.
//!
//! ```
//! use rcmgr::{ResourceManager, ScalingLimitConfig};
//! let limits = ScalingLimitConfig::default().with_libp2p_defaults().scale(4 << 30, 8192);
//! assert_eq!(limits.system.conns_inbound, 64 + 4 * 64);
//! let rm = ResourceManager::new(limits);
//! # drop(rm);
//! ```

mod autoscale;
mod base;
mod concrete;
mod defaults;
mod increase;
mod scaling;

pub use base::BaseLimit;
pub use concrete::ConcreteLimitConfig;
pub(crate) use concrete::LimitKey;
pub use increase::BaseLimitIncrease;
pub use scaling::{ScalingLimit, ScalingLimitConfig};

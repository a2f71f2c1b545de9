//! Limits: what each scope may hold, how limits grow with the machine, and go's JSON limit
//! files.
//!
//! - [`BaseLimit`] is one scope's limit; [`ConcreteLimitConfig`] holds the limit of every scope
//!   a [`ResourceManager`](crate::ResourceManager) enforces.
//! - [`ScalingLimitConfig`] gives each scope a base and a [`BaseLimitIncrease`];
//!   [`scale`](ScalingLimitConfig::scale) and [`autoscale`](ScalingLimitConfig::autoscale) turn
//!   it into a `ConcreteLimitConfig` with go-libp2p's arithmetic. Its `default()` is go's
//!   `DefaultLimits` and [`with_libp2p_defaults`](ScalingLimitConfig::with_libp2p_defaults)
//!   adds go-libp2p's limits for its own protocols;
//!   [`with_rust_libp2p_defaults`](ScalingLimitConfig::with_rust_libp2p_defaults) sizes ping
//!   for rust-libp2p, which pings on every connection, and
//!   [`with_stream_memory`](ScalingLimitConfig::with_stream_memory) makes room in memory
//!   limits for a receive window per stream.
//! - [`IpLimits`] are the address-based limits (connections per IP, subnet and network, and
//!   connection rates) that the connection gate enforces.
//! - [`PartialLimitConfig`] is what a limits file holds: [`ResourceLimits`] of [`LimitVal`]s
//!   that may be left to defaults. It reads and writes go-libp2p's and kubo's JSON files
//!   unchanged and [`build`](PartialLimitConfig::build)s on any defaults.
//!
//! ```
//! use rcmgr::{PartialLimitConfig, ResourceManager, ScalingLimitConfig};
//! let defaults = ScalingLimitConfig::default().with_libp2p_defaults().scale(4 << 30, 8192);
//! let from_file = PartialLimitConfig::from_json_str(r#"{"System": {"ConnsInbound": 256}}"#)?;
//! let limits = from_file.build(&defaults);
//! assert_eq!(limits.system.conns_inbound, 256);
//! let rm = ResourceManager::new(limits);
//! # drop(rm);
//! # Ok::<(), rcmgr::Error>(())
//! ```

mod autoscale;
mod base;
mod concrete;
mod defaults;
mod increase;
mod ip;
mod json;
mod partial;
mod rust_libp2p;
mod scaling;

pub use base::BaseLimit;
pub use concrete::ConcreteLimitConfig;
pub use increase::BaseLimitIncrease;
pub(crate) use ip::Family;
pub use ip::{
    ConnLimitPerSubnet, ConnRateLimits, IpLimits, NetworkPrefixLimit, PrefixRateLimit,
    SubnetRateLimit,
};
pub use json::{json_text, names_field};
pub use partial::{LimitVal, PartialLimitConfig, ResourceLimits};
pub use scaling::{ScalingLimit, ScalingLimitConfig};

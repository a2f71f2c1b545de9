//! rcmgr for rust-libp2p: go-libp2p's resource manager protection for a rust-libp2p node, by
//! adding one behaviour and building its transports with [`Transports`].
//!
//! * [`Behaviour`] accounts every connection: it opens a connection scope when a connection
//!   is pending (per-IP and subnet limits, the allowlist, the transient and system scopes) and
//!   reserves what its transport may buffer, moves it into the peer's scope when the
//!   connection is established, and releases it when the connection closes or fails.
//! * [`Transports`] builds TCP, QUIC, websocket, relayed and memory transports whose muxers
//!   are wrapped in a [`LimitedMuxer`], which accounts every substream, inbound and outbound:
//!   a stream scope holding the stream's receive window, moved into its protocol during
//!   multistream-select, released when the substream is dropped or its connection closes. It
//!   works for every protocol (identify, ping, kad, request-response, libp2p-stream, ...)
//!   without their knowing.
//! * [`stream_scope`] gives application code the scope of a stream it holds, to reserve the
//!   stream's buffers on ([`StreamHandle::buffer`]): the reservation counts in the stream, its
//!   peer, its protocol for that peer, the protocol and the system together.
//! * [`refusal_of`] finds rcmgr's reason in the errors the swarm reports.
//!
//! All of them share one [`rcmgr::ResourceManager`] (a cheap `Clone`, re-exported here as
//! [`rcmgr`]), whose [`report`](rcmgr::ResourceManager::report) and
//! [`stat`](rcmgr::ResourceManager::stat) show what the node holds.
//!
//! # Adopting it: the `SwarmBuilder`
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use libp2p::{SwarmBuilder, identify, ping, swarm::NetworkBehaviour};
//!
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     rcmgr: rcmgr_libp2p::Behaviour, // first: see "Order in a derived behaviour"
//!     identify: identify::Behaviour,
//!     ping: ping::Behaviour,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rm = rcmgr_libp2p::resource_manager(); // limits for rust-libp2p, scaled to this machine
//! let limited = rcmgr_libp2p::Transports::new(&rm);
//! let mut swarm = SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_other_transport(|key| limited.tcp(key))?
//!     .with_other_transport(|key| limited.quic(key))?
//!     .with_behaviour(|key| Node {
//!         rcmgr: limited.behaviour(),
//!         identify: identify::Behaviour::new(identify::Config::new("/my-app/1.0.0".into(), key.public())),
//!         ping: ping::Behaviour::default(),
//!     })?
//!     .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
//!     .build();
//! swarm.listen_on("/ip4/0.0.0.0/tcp/4001".parse()?)?;
//! swarm.listen_on("/ip4/0.0.0.0/udp/4001/quic-v1".parse()?)?;
//! println!("{}", rm.report());
//! # Ok(())
//! # }
//! ```
//!
//! Those are the lines a node adds: the manager, the `rcmgr` field, and one
//! `with_other_transport` per transport in place of the builder's `with_tcp`, `with_quic`,
//! `with_websocket` and `with_relay_client` (which cannot be wrapped). `with_dns` after them
//! resolves `/dns` addresses for all. A transport built by hand is wrapped with
//! [`Transports::wrap`] (or [`wrap_transport`]); a `Swarm::new` takes the same transports.
//! Connections of a transport that is not wrapped still get connection limits from the
//! behaviour, and their streams can be accounted by the application with [`StreamGuard`].
//!
//! # Limits that fit rust-libp2p
//!
//! [`resource_manager`] uses [`Buffers::limits`]: go-libp2p's default limits and service
//! limits, with two differences, both because of what rust-libp2p does differently:
//!
//! * **ping**: rust-libp2p's ping keeps a ping stream open on every connection, each way,
//!   where go pings a peer over one stream at a time. go's per-peer ping limit (2 inbound,
//!   3 outbound, 4 in all) would refuse ping on a peer's third connection; here it is one
//!   stream each way for each of the peer's 8 connections
//!   ([`with_rust_libp2p_defaults`](rcmgr::ScalingLimitConfig::with_rust_libp2p_defaults)).
//! * **memory**: each stream reserves its receive window on its own scope, so every scope that
//!   holds streams has room for one window per stream its stream limit allows
//!   ([`with_stream_memory`](rcmgr::ScalingLimitConfig::with_stream_memory)); go's memory
//!   limits, sized for application buffers alone, would refuse identify's fifth concurrent
//!   stream to a peer. The system scope's memory, the node's budget, is go's.
//!
//! go's numbers stay available: `rcmgr::ResourceManager::default()` is go-libp2p's
//! `DefaultResourceManager`, limit for limit.
//!
//! # What a refusal looks like
//!
//! | refused | locally | the remote peer (rust-libp2p) sees |
//! |---|---|---|
//! | inbound connection | `SwarmEvent::IncomingConnectionError` with `ListenError::Denied` | its dial fails (`OutgoingConnectionError`), or the connection closes right after it was established when the peer scope refused |
//! | outbound connection | `Swarm::dial` returns `DialError::Denied` | nothing |
//! | inbound stream | logged at debug level; the connection carries on | its proposal is answered `na`: "protocol not supported" |
//! | outbound stream | the handler's upgrade fails with `StreamUpgradeError::NegotiationFailed` ("protocol not supported"); logged at debug level | nothing: nothing went on the wire |
//!
//! [`refusal_of`] finds rcmgr's error (which scope refused, which limit) in
//! `ListenError::Denied` and `DialError::Denied`. A refused stream looks like an unsupported
//! protocol on both sides on purpose: rust-libp2p's handlers treat that as final (libp2p-ping
//! stops pinging over that connection; request-response fails the request with
//! `UnsupportedProtocols`; identify and kad report the failure and go on), where an I/O error
//! would be retried at once, in a loop that costs both nodes CPU for as long as the limit is
//! reached.
//!
//! # Order in a derived behaviour
//!
//! **Put [`Behaviour`] first** in a `#[derive(NetworkBehaviour)]` struct. The derived
//! behaviour asks its fields in declaration order whether to accept a connection, and stops
//! at the first that refuses. Every field before the one that refuses has already accepted the
//! connection and may have recorded it; rust-libp2p then reports the failure, but behaviours
//! that keep per-connection state on the accepting call have been seen to keep phantom
//! connections or panic (rust-libp2p issues #4773 and #4870, with request-response). With the
//! resource manager first, a refused connection reaches no other behaviour. This behaviour
//! itself is safe in any position: its scopes are keyed by connection id, released on every
//! close and failure report, and releasing twice or releasing a connection it never saw does
//! nothing.
//!
//! # How the protocol of a stream is learned
//!
//! Every libp2p substream begins with a multistream-select negotiation. An inbound substream
//! (the local side listens) follows what the local listener writes and moves its scope into
//! the protocol just before the listener's confirmation is written, so that a refused
//! protocol is never confirmed. An outbound substream (the local side dials) holds back what
//! the local dialer writes until its proposal is complete and moves its scope into the
//! proposed protocol before anything goes out; it then accepts only the confirmation of that
//! protocol. Parsing ends at the confirmation: the rest of the stream passes through
//! untouched. The protocol names of scopes are therefore always chosen by the local side.
//!
//! For go-libp2p's own protocols (identify, ping, autonat, dcutr, relay) the stream is also
//! moved into go's service scope for that protocol ([`service_of_protocol`]), so go's default
//! service limits apply as they do in go.
//!
//! # Memory
//!
//! [`Buffers`] says what is reserved, where, and what is not counted. In short: each stream's
//! receive window (256 KiB by default) on its stream scope, from the moment the muxer hands it
//! out, and each connection's noise and yamux buffers on its connection scope, from the moment
//! it is pending; the muxers are configured from the same numbers, so yamux windows never grow
//! past what is reserved. On a busy node `libp2p_rcmgr_memory` (rcmgr-prometheus) shows them,
//! and the system scope's memory limit bounds them.
//!
//! # Trusted peers
//!
//! `rm.allowlist().add_peer(peer)` ([`rcmgr::Allowlist::add_peer`]) lets a peer's
//! connections use the allowlisted system and transient scopes when the normal ones are full,
//! whatever its address (rust-libp2p#5605); address entries
//! (`rm.allowlist().add(&"/ip4/…/p2p/…".parse()?)`) do the same for known addresses and also
//! lift the per-IP limits.
//!
//! # File descriptors
//!
//! Whether a connection takes a file descriptor is read from its address ([`uses_fd`]):
//! TCP-based transports do, QUIC, WebRTC, the memory transport and relayed connections do
//! not. The swarm asks behaviours about an inbound connection after the socket is accepted,
//! so the descriptor is already in use then; a refusal closes it at once.

#![forbid(unsafe_code)]

mod behaviour;
mod buffers;
mod connection;
mod endpoint;
mod guard;
mod handle;
mod muxer;
mod negotiation;
mod refusal;
mod services;
mod substream;
#[cfg(feature = "transports")]
mod transports;
pub mod yamux;

pub use behaviour::Behaviour;
pub use buffers::{Buffers, WEBSOCKET_MESSAGE, YAMUX_STREAM_WINDOW};
pub use endpoint::uses_fd;
pub use guard::{Guarded, ReservedBuffer, StreamGuard};
pub use handle::{StreamHandle, stream_scope};
pub use muxer::{LimitedMuxer, wrap_transport, wrap_transport_with};
/// The resource manager itself, so that a node needs no other import.
pub use rcmgr;
pub use refusal::{Refusal, refusal_of};
pub use services::service_of_protocol;
pub use substream::LimitedSubstream;
#[cfg(feature = "transports")]
pub use transports::{LimitedTransport, Transports};

/// A resource manager with limits for rust-libp2p ([`Buffers::limits`] of the default
/// [`Buffers`]), autoscaled to this machine: what a node built with [`Transports::new`]
/// should use.
///
/// ```
/// let rm = rcmgr_libp2p::resource_manager();
/// let ping = rm.limits().protocol_peer_limits("/ipfs/ping/1.0.0");
/// assert_eq!((ping.streams_inbound, ping.streams_outbound), (8, 8));
/// ```
pub fn resource_manager() -> rcmgr::ResourceManager {
    resource_manager_for(Buffers::default())
}

/// [`resource_manager`] for streams that reserve the windows of `buffers`.
///
/// ```
/// let buffers = rcmgr_libp2p::Buffers::default().with_stream_window(1 << 20);
/// let rm = rcmgr_libp2p::resource_manager_for(buffers);
/// let identify = rm.limits().service_peer_limits("libp2p.identify");
/// assert!(identify.memory >= identify.streams << 20);
/// ```
pub fn resource_manager_for(buffers: Buffers) -> rcmgr::ResourceManager {
    rcmgr::ResourceManager::new(buffers.limits().autoscale())
}

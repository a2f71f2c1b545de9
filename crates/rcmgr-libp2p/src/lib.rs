//! rcmgr for rust-libp2p: go-libp2p's resource manager protection for a rust-libp2p node, by
//! adding one behaviour and wrapping the transport.
//!
//! * [`Behaviour`] accounts every connection: it opens a connection scope when a connection
//!   is pending (per-IP and subnet limits, the allowlist, the transient and system scopes),
//!   moves it into the peer's scope when the connection is established, and releases it when
//!   the connection closes or fails.
//! * [`wrap_transport`] installs a [`LimitedMuxer`] that accounts every substream, inbound and
//!   outbound: a stream scope per substream, moved into its protocol's scope once
//!   multistream-select has agreed on one, released when the substream is dropped. It works
//!   for every protocol (identify, ping, kad, request-response, libp2p-stream, ...) without
//!   their knowing.
//! * [`StreamGuard`] and [`ReservedBuffer`] are for application code: accounting streams the
//!   wrapper cannot see, and reserving memory for buffers before allocating them.
//!
//! All of them share one [`rcmgr::ResourceManager`] (a cheap `Clone`), whose
//! [`report`](rcmgr::ResourceManager::report) and [`stat`](rcmgr::ResourceManager::stat)
//! show what the node holds.
//!
//! # Recipe: the `SwarmBuilder`
//!
//! The builder cannot wrap the transports of its `with_tcp` and `with_quic` phases, so build
//! the transport in `with_other_transport` (which may be called once per transport) and wrap
//! it there. QUIC's connection is a stream muxer too, so the same wrapper applies to it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use libp2p::{
//!     SwarmBuilder, core::{Transport, upgrade::Version}, identify, noise, ping, quic,
//!     swarm::NetworkBehaviour, tcp, yamux,
//! };
//!
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     rcmgr: rcmgr_libp2p::Behaviour, // first: see "Order in a derived behaviour"
//!     identify: identify::Behaviour,
//!     ping: ping::Behaviour,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rm = rcmgr::ResourceManager::default(); // go-libp2p's default limits, scaled to this machine
//! let mut swarm = SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_other_transport(|key| {
//!         let tcp = tcp::tokio::Transport::new(tcp::Config::default())
//!             .upgrade(Version::V1)
//!             .authenticate(noise::Config::new(key)?)
//!             .multiplex(yamux::Config::default());
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(rcmgr_libp2p::wrap_transport(tcp, rm.clone()))
//!     })?
//!     .with_other_transport(|key| {
//!         let quic = quic::tokio::Transport::new(quic::Config::new(key));
//!         rcmgr_libp2p::wrap_transport(quic, rm.clone())
//!     })?
//!     .with_behaviour(|key| Node {
//!         rcmgr: rcmgr_libp2p::Behaviour::new(rm.clone()),
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
//! Those are the two lines a node adds: the `rcmgr` field and `wrap_transport` around each
//! transport. A hand-built transport given to `Swarm::new` is wrapped the same way.
//! `with_dns` and `with_websocket` layers added after `with_other_transport` sit outside the
//! wrapper and need nothing more. Connections of transports that cannot be wrapped (the
//! builder's own TCP and QUIC phases, the relay client) still get connection limits from the
//! behaviour; their streams can be accounted with [`StreamGuard`].
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
//! # What a refusal looks like
//!
//! | refused | locally | the remote peer (rust-libp2p) sees |
//! |---|---|---|
//! | inbound connection | `SwarmEvent::IncomingConnectionError` with `ListenError::Denied` | its dial fails (`OutgoingConnectionError`), or the connection closes right after it was established when the peer scope refused |
//! | outbound connection | `Swarm::dial` returns `DialError::Denied` | nothing |
//! | inbound stream | logged at debug level; the connection carries on | the stream fails to negotiate: "protocol not supported" |
//! | outbound stream | the handler's stream upgrade fails with an I/O error that holds rcmgr's error ([`refusal_of`]) | nothing, or a reset stream when its protocol was refused |
//!
//! The causes of `ListenError::Denied` and `DialError::Denied` downcast to [`rcmgr::Error`],
//! which says which scope refused and which limit. Because a refused stream looks like an
//! unsupported protocol to the remote, some handlers give up on that protocol for the rest
//! of the connection (ping, for one); protocol limits are meant to be reached under attack,
//! not in normal operation.
//!
//! # How the protocol of a stream is learned
//!
//! Every libp2p substream begins with a multistream-select negotiation, whose listener
//! confirms the agreed protocol by echoing it. An inbound substream (we are the listener)
//! finds the confirmation in what it writes, and sets the protocol just before the
//! confirmation is written, so that a refused protocol is never confirmed. An outbound
//! substream (we are the dialer) finds it in what it reads. Parsing ends there: the rest of
//! the stream passes through untouched. rust-libp2p's swarm negotiates with
//! `Version::V1`, which reads the confirmation before the handler gets the stream; with
//! `Version::V1Lazy`, an outbound stream that is only written to and never read stays in
//! the transient scope until it is dropped.
//!
//! For go-libp2p's own protocols (identify, ping, autonat, dcutr, relay) the stream is also
//! moved into go's service scope for that protocol ([`service_of_protocol`]), so go's default
//! service limits apply as they do in go.
//!
//! # File descriptors
//!
//! Whether a connection takes a file descriptor is read from its address ([`uses_fd`]):
//! TCP-based transports do, QUIC, WebRTC, the memory transport and relayed connections do
//! not. The swarm asks behaviours about an inbound connection after the socket is accepted,
//! so the descriptor is already in use then; a refusal closes it at once.

mod behaviour;
mod endpoint;
mod guard;
mod muxer;
mod negotiation;
mod services;

pub use behaviour::Behaviour;
pub use endpoint::uses_fd;
pub use guard::{Guarded, ReservedBuffer, StreamGuard};
pub use muxer::{LimitedMuxer, LimitedSubstream, refusal_of, wrap_transport};
pub use services::service_of_protocol;

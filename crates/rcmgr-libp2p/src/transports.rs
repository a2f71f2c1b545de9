//! Ready-made limited transports for the `SwarmBuilder`: TCP, QUIC, websocket, relayed and
//! memory connections, each secured, multiplexed and wrapped, with muxer windows and
//! reservations from one [`Buffers`].

use std::error::Error;

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::{
    StreamMuxer, Transport,
    muxing::StreamMuxerBox,
    transport::{Boxed, MemoryTransport},
    upgrade::Version,
};
use rcmgr::{PeerId, ResourceManager};

use crate::{Behaviour, buffers::Buffers, muxer::wrap_transport_with};

/// What every constructor returns: a boxed transport of limited connections, or why it
/// could not be built. `SwarmBuilder::with_other_transport` takes it as it is.
pub type LimitedTransport = Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn Error + Send + Sync>>;

/// Limited transports for one resource manager and one [`Buffers`], and the
/// [`Behaviour`] to go with them: each transport is secured with noise (QUIC with its own
/// TLS), multiplexed with [`Buffers::yamux`] (QUIC configured with [`Buffers::quic`]) and
/// wrapped in a [`LimitedMuxer`](crate::LimitedMuxer) that reserves exactly those windows.
///
/// With the `SwarmBuilder`, one `with_other_transport` per transport keeps the builder's
/// brevity (its own `with_tcp`, `with_quic`, `with_websocket` and `with_relay_client` phases
/// cannot be wrapped):
///
/// ```no_run
/// use libp2p::{SwarmBuilder, ping, swarm::NetworkBehaviour};
///
/// #[derive(NetworkBehaviour)]
/// struct Node {
///     rcmgr: rcmgr_libp2p::Behaviour, // first
///     ping: ping::Behaviour,
/// }
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
/// let swarm = SwarmBuilder::with_new_identity()
///     .with_tokio()
///     .with_other_transport(|key| limited.tcp(key))?
///     .with_other_transport(|key| limited.quic(key))?
///     .with_other_transport(|key| limited.websocket(key))?
///     .with_dns()?
///     .with_behaviour(|_| Node { rcmgr: limited.behaviour(), ping: ping::Behaviour::default() })?
///     .build();
/// # drop(swarm);
/// # Ok(())
/// # }
/// ```
///
/// `with_dns` after them resolves `/dns` addresses for all of them. For a relay client, see
/// [`relay`](Self::relay).
#[derive(Clone, Debug)]
pub struct Transports {
    rm: ResourceManager,
    buffers: Buffers,
}

impl Transports {
    /// Transports for `rm`, with [`Buffers::default`].
    ///
    /// ```
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// assert_eq!(limited.buffers(), rcmgr_libp2p::Buffers::default());
    /// ```
    pub fn new(rm: &ResourceManager) -> Self {
        Transports {
            rm: rm.clone(),
            buffers: Buffers::default(),
        }
    }

    /// The same with `buffers`: the transports and the behaviour built from here on use them.
    ///
    /// ```
    /// use rcmgr_libp2p::{Buffers, Transports};
    /// let buffers = Buffers::default().with_max_streams(64);
    /// let limited = Transports::new(&rcmgr_libp2p::resource_manager_for(buffers)).with_buffers(buffers);
    /// assert_eq!(limited.behaviour().buffers(), buffers);
    /// ```
    pub fn with_buffers(mut self, buffers: Buffers) -> Self {
        self.buffers = buffers;
        self
    }

    /// The buffers of these transports.
    pub fn buffers(&self) -> Buffers {
        self.buffers
    }

    /// The resource manager.
    pub fn resource_manager(&self) -> &ResourceManager {
        &self.rm
    }

    /// The connection [`Behaviour`] for the same manager and buffers: put it first in the
    /// node's `#[derive(NetworkBehaviour)]` struct.
    pub fn behaviour(&self) -> Behaviour {
        Behaviour::with_buffers(self.rm.clone(), self.buffers)
    }

    /// Wraps any authenticated and multiplexed transport built by hand, and boxes it
    /// ([`wrap_transport_with`] with these buffers). Configure its muxer from
    /// [`buffers`](Self::buffers) so that what is reserved is what it may buffer.
    ///
    /// ```
    /// use libp2p::core::{Transport, transport::MemoryTransport, upgrade::Version};
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let _transport = limited.wrap(
    ///     MemoryTransport::default()
    ///         .upgrade(Version::V1)
    ///         .authenticate(libp2p::noise::Config::new(&key)?)
    ///         .multiplex(limited.buffers().yamux()),
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wrap<T, M>(&self, transport: T) -> Boxed<(PeerId, StreamMuxerBox)>
    where
        T: Transport<Output = (PeerId, M)> + Send + Unpin + 'static,
        T::Error: Send + Sync + 'static,
        T::Dial: Send + 'static,
        T::ListenerUpgrade: Send + 'static,
        M: StreamMuxer + Send + 'static,
        M::Substream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        M::Error: Send + Sync + 'static,
    {
        wrap_transport_with(transport, self.rm.clone(), self.buffers)
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed()
    }

    /// Secures `transport` with noise, multiplexes it with these buffers' yamux and wraps it.
    fn noise_and_yamux<T>(&self, key: &libp2p::identity::Keypair, transport: T) -> LimitedTransport
    where
        T: Transport + Send + Unpin + 'static,
        T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T::Error: Send + Sync + 'static,
        T::Dial: Send + 'static,
        T::ListenerUpgrade: Send + 'static,
    {
        Ok(self.wrap(
            transport
                .upgrade(Version::V1Lazy)
                .authenticate(libp2p::noise::Config::new(key)?)
                .multiplex(self.buffers.yamux()),
        ))
    }

    /// TCP (tokio), with noise and yamux: listen on `/ip4/…/tcp/…` or `/ip6/…/tcp/…`.
    ///
    /// ```
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let _tcp = limited.tcp(&key)?;
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    #[cfg(feature = "tcp")]
    pub fn tcp(&self, key: &libp2p::identity::Keypair) -> LimitedTransport {
        self.tcp_with(key, libp2p::tcp::Config::default())
    }

    /// [`tcp`](Self::tcp) with a TCP configuration of your own.
    #[cfg(feature = "tcp")]
    pub fn tcp_with(
        &self,
        key: &libp2p::identity::Keypair,
        config: libp2p::tcp::Config,
    ) -> LimitedTransport {
        self.noise_and_yamux(key, libp2p::tcp::tokio::Transport::new(config))
    }

    /// QUIC (tokio), configured with [`Buffers::quic`]: listen on `/ip4/…/udp/…/quic-v1`.
    ///
    /// ```
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let _quic = limited.quic(&key)?;
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    #[cfg(feature = "quic")]
    pub fn quic(&self, key: &libp2p::identity::Keypair) -> LimitedTransport {
        Ok(self.wrap(libp2p::quic::tokio::Transport::new(self.buffers.quic(key))))
    }

    /// Websocket over TCP (tokio), with noise and yamux: listen on `/ip4/…/tcp/…/ws`. A
    /// websocket message may be at most [`WEBSOCKET_MESSAGE`](crate::WEBSOCKET_MESSAGE) long
    /// (libp2p-websocket would take 256 MiB), and two of them are reserved per connection.
    /// Secure websockets (`/wss`) need a TLS configuration: build that transport by hand and
    /// [`wrap`](Self::wrap) it.
    ///
    /// ```
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let _ws = limited.websocket(&key)?;
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    #[cfg(feature = "websocket")]
    pub fn websocket(&self, key: &libp2p::identity::Keypair) -> LimitedTransport {
        let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default());
        let mut websocket = libp2p::websocket::Config::new(tcp);
        websocket.set_max_data_size(crate::buffers::WEBSOCKET_MESSAGE);
        self.noise_and_yamux(key, websocket)
    }

    /// Relayed connections (circuit relay v2), with noise and yamux: `transport` is the
    /// transport half of `libp2p::relay::client::new(peer_id)`, whose behaviour half goes in
    /// the node's behaviour. Listen on `<relay address>/p2p-circuit`; dial
    /// `<relay address>/p2p-circuit/p2p/<peer>`.
    ///
    /// The relay's own connection is one of the node's other connections; the circuit is a
    /// stream of it (`/libp2p/circuit/relay/0.2.0/stop` or `…/hop`), accounted there like
    /// any stream, and the relayed connection is accounted on its own.
    ///
    /// Put it before the [memory](Self::memory) transport when a node has both (with the
    /// `SwarmBuilder`: the earlier `with_other_transport`): the memory transport takes a
    /// circuit address over `/memory/…` for its own and fails to listen on it.
    ///
    /// ```no_run
    /// use libp2p::{SwarmBuilder, identity, relay, swarm::NetworkBehaviour};
    ///
    /// #[derive(NetworkBehaviour)]
    /// struct Node {
    ///     rcmgr: rcmgr_libp2p::Behaviour,
    ///     relay: relay::client::Behaviour,
    /// }
    ///
    /// # fn build() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = identity::Keypair::generate_ed25519();
    /// let (relay_transport, relay_client) = relay::client::new(key.public().to_peer_id());
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let swarm = SwarmBuilder::with_existing_identity(key)
    ///     .with_tokio()
    ///     .with_other_transport(|key| limited.tcp(key))?
    ///     .with_other_transport(|key| limited.relay(key, relay_transport))?
    ///     .with_behaviour(|_| Node { rcmgr: limited.behaviour(), relay: relay_client })?
    ///     .build();
    /// # drop(swarm);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "relay")]
    pub fn relay(
        &self,
        key: &libp2p::identity::Keypair,
        transport: libp2p::relay::client::Transport,
    ) -> LimitedTransport {
        self.noise_and_yamux(key, transport)
    }

    /// The in-process memory transport, with noise and yamux: listen on `/memory/<n>`.
    ///
    /// ```
    /// let limited = rcmgr_libp2p::Transports::new(&rcmgr_libp2p::resource_manager());
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let _memory = limited.memory(&key)?;
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    pub fn memory(&self, key: &libp2p::identity::Keypair) -> LimitedTransport {
        self.noise_and_yamux(key, MemoryTransport::default())
    }
}

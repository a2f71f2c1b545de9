//! What a connection and its streams may buffer, as reserved in rcmgr and as configured in the
//! muxers, from the same numbers.

use libp2p_core::multiaddr::Protocol;
use rcmgr::{Multiaddr, Priority, ScalingLimitConfig};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The receive window a yamux stream starts with and, as configured here, keeps: 256 KiB
/// (fixed by the yamux specification: a remote may send that much on a new stream before
/// hearing anything).
pub const YAMUX_STREAM_WINDOW: usize = 256 * KIB;

/// An upper bound of what libp2p-noise 0.47 buffers for one connection: the framed reader's
/// and writer's buffers, the encryption and decryption buffers and the plaintext send and
/// receive buffers, each at most one noise frame (65535 bytes) or, for the framed writer,
/// twice that: 512 KiB.
const NOISE_BUFFERS: usize = 512 * KIB;

/// yamux 0.14 reads a data frame's whole body (at most 1 MiB) before it checks it against the
/// stream's window.
const YAMUX_FRAME: usize = MIB;

/// The largest websocket message the websocket transport of [`Transports`] accepts
/// (libp2p-websocket's default is 256 MiB). libp2p senders put one noise frame, at most
/// 64 KiB, in each message.
///
/// [`Transports`]: crate::Transports
pub const WEBSOCKET_MESSAGE: usize = 256 * KIB;

/// How much memory the muxers of a node may buffer for each stream and each connection, and
/// what rcmgr-libp2p reserves for them: the same numbers configure the muxers
/// ([`yamux`](Self::yamux), [`quic`](Self::quic)) and size the reservations, so that the
/// accounting is true.
///
/// | what | reserved on | when | how much |
/// |---|---|---|---|
/// | a stream's receive window | the stream's scope (so also its peer, protocol, protocol-peer, service, service-peer, transient while it has no protocol, and system scopes) | when the muxer hands out the stream, before the swarm sees it; an inbound stream that does not fit is refused | [`stream_window`](Self::stream_window): 256 KiB by default, the yamux window, which the yamux configuration here keeps from growing |
/// | a connection's transport buffers | the connection's scope | when the connection is pending, before its handshake | [`connection_memory`](Self::connection_memory) of its address: noise and yamux buffers for TCP, websocket, relayed and memory connections; nothing for QUIC |
///
/// Not counted: data a stream's owner has read out of the muxer (the application's own
/// buffers, which it reserves itself, for example with
/// [`StreamHandle::buffer`](crate::StreamHandle::buffer)); what the node sends (bounded by the
/// remote's windows and by what the application writes); the kernel's socket buffers; the
/// per-connection state of libp2p-swarm, its handlers and quinn (connection state, packet
/// tracking, crypto); a stream between the moment the muxer creates it and the moment the
/// swarm next polls the connection.
///
/// Window growth: yamux grows a stream's window by itself, with no hook to ask first; the
/// yamux configuration here gives it no room to grow (the connection's window is exactly
/// `max_streams × 256 KiB`), so the reservation is exact. QUIC windows do not grow; the
/// QUIC configuration here sets them to [`stream_window`](Self::stream_window). A transport
/// configured elsewhere (libp2p's own `yamux::Config`, whose windows grow up to 1 GiB per
/// connection) buffers more than is reserved.
///
/// ```
/// let buffers = rcmgr_libp2p::Buffers::default();
/// assert_eq!(buffers.stream_window(), 256 * 1024);
/// assert_eq!(buffers.connection_memory(&"/ip4/127.0.0.1/udp/1/quic-v1".parse()?), 0);
/// assert!(buffers.connection_memory(&"/ip4/127.0.0.1/tcp/1".parse()?) > 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    stream_window: usize,
    max_streams: usize,
    priority: Priority,
}

impl Default for Buffers {
    /// 256 KiB per stream, at most 512 streams per connection (libp2p-yamux's number), reserved
    /// at [`Priority::ALWAYS`].
    fn default() -> Self {
        Buffers {
            stream_window: YAMUX_STREAM_WINDOW,
            max_streams: 512,
            priority: Priority::ALWAYS,
        }
    }
}

impl Buffers {
    /// The receive window of each stream, reserved on its scope.
    pub fn stream_window(&self) -> usize {
        self.stream_window
    }

    /// Sets the receive window of each QUIC stream (yamux keeps 256 KiB whatever this is, and
    /// the reservation for a yamux stream is then this larger number: it stays an upper
    /// bound). Values below 256 KiB are raised to it.
    ///
    /// ```
    /// let buffers = rcmgr_libp2p::Buffers::default().with_stream_window(1 << 20);
    /// assert_eq!(buffers.stream_window(), 1 << 20);
    /// assert_eq!(rcmgr_libp2p::Buffers::default().with_stream_window(1).stream_window(), 256 * 1024);
    /// ```
    pub fn with_stream_window(mut self, bytes: usize) -> Self {
        self.stream_window = bytes.max(YAMUX_STREAM_WINDOW);
        self
    }

    /// How many streams a connection may hold at once (yamux's and QUIC's own limit, beside
    /// rcmgr's). yamux fails the whole connection when the local side opens a stream past it,
    /// as libp2p-yamux does, and when the remote does.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Sets how many streams a connection may hold at once, at least 1.
    ///
    /// ```
    /// let buffers = rcmgr_libp2p::Buffers::default().with_max_streams(64);
    /// assert_eq!(buffers.max_streams(), 64);
    /// ```
    pub fn with_max_streams(mut self, streams: usize) -> Self {
        self.max_streams = streams.max(1);
        self
    }

    /// The priority of the reservations (go's: a reservation at priority `p` succeeds while
    /// the scope stays at or below `(p + 1) / 256` of its memory limit).
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Sets the priority of the reservations. [`Priority::ALWAYS`], the default, lets the
    /// muxers' buffers use a scope's whole memory limit; application reservations at lower
    /// priorities are refused before them.
    ///
    /// ```
    /// let buffers = rcmgr_libp2p::Buffers::default().with_priority(rcmgr::Priority::HIGH);
    /// assert_eq!(buffers.priority(), rcmgr::Priority::HIGH);
    /// ```
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// What a connection with this address may buffer in its transport, reserved on its
    /// connection scope:
    ///
    /// | address | reserved |
    /// |---|---|
    /// | relayed (`…/p2p-circuit…`), whatever carries the relay | noise (at most 512 KiB) and one yamux frame (at most 1 MiB), over a stream of the relay's connection |
    /// | `/quic-v1`, `/quic`, `/webtransport`, `/webrtc`, `/webrtc-direct` | nothing: quinn's receive buffers are its streams' windows |
    /// | `/ws`, `/wss`, `/tls/ws` | noise and yamux, as TCP, and two websocket messages |
    /// | anything else (TCP, memory, unknown) | noise (at most 512 KiB) and one yamux frame (at most 1 MiB) |
    ///
    /// ```
    /// let buffers = rcmgr_libp2p::Buffers::default();
    /// let tcp = buffers.connection_memory(&"/ip4/127.0.0.1/tcp/1".parse()?);
    /// let ws = buffers.connection_memory(&"/ip4/127.0.0.1/tcp/1/ws".parse()?);
    /// assert_eq!(tcp, 1536 * 1024);
    /// assert_eq!(ws, tcp + 2 * rcmgr_libp2p::WEBSOCKET_MESSAGE);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connection_memory(&self, address: &Multiaddr) -> usize {
        let secured_and_muxed = NOISE_BUFFERS + YAMUX_FRAME;
        // A relayed connection is secured and muxed over a stream of the relay's connection,
        // whatever that connection is.
        if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return secured_and_muxed;
        }
        let mut websocket = false;
        for component in address.iter() {
            match component {
                Protocol::QuicV1
                | Protocol::Quic
                | Protocol::WebTransport
                | Protocol::WebRTC
                | Protocol::WebRTCDirect => return 0,
                Protocol::Ws(_) | Protocol::Wss(_) => websocket = true,
                _ => {}
            }
        }
        if websocket {
            secured_and_muxed + 2 * WEBSOCKET_MESSAGE
        } else {
            secured_and_muxed
        }
    }

    /// The largest [`connection_memory`](Self::connection_memory) of these addresses (an
    /// outbound connection is reserved before the swarm knows which one it will use).
    pub(crate) fn connection_memory_of_any(&self, addresses: &[Multiaddr]) -> usize {
        addresses
            .iter()
            .map(|address| self.connection_memory(address))
            .max()
            .unwrap_or_else(|| self.connection_memory(&Multiaddr::empty()))
    }

    /// A yamux configuration whose windows are what is reserved: at most
    /// [`max_streams`](Self::max_streams) streams, each with a 256 KiB window that does not
    /// grow. Give it to the transport as its multiplexer ([`Transports`](crate::Transports)
    /// does).
    ///
    /// ```
    /// use libp2p::core::{Transport, transport::MemoryTransport, upgrade::Version};
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let buffers = rcmgr_libp2p::Buffers::default();
    /// let _muxed = MemoryTransport::default()
    ///     .upgrade(Version::V1)
    ///     .authenticate(libp2p::noise::Config::new(&key)?)
    ///     .multiplex(buffers.yamux());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn yamux(&self) -> crate::yamux::Config {
        crate::yamux::Config::new(self.max_streams)
    }

    /// A QUIC configuration whose windows are what is reserved: each stream's receive window
    /// is [`stream_window`](Self::stream_window), at most [`max_streams`](Self::max_streams)
    /// streams, and the connection's window their sum, so that it never binds first.
    ///
    /// ```
    /// let key = libp2p::identity::Keypair::generate_ed25519();
    /// let config = rcmgr_libp2p::Buffers::default().quic(&key);
    /// assert_eq!(config.max_stream_data, 256 * 1024);
    /// ```
    #[cfg(feature = "quic")]
    pub fn quic(&self, key: &libp2p::identity::Keypair) -> libp2p::quic::Config {
        let mut config = libp2p::quic::Config::new(key);
        let window = u32::try_from(self.stream_window).unwrap_or(u32::MAX);
        let streams = u32::try_from(self.max_streams).unwrap_or(u32::MAX);
        config.max_stream_data = window;
        config.max_connection_data = window.saturating_mul(streams);
        config.max_concurrent_stream_limit = streams;
        config
    }

    /// Limits for a rust-libp2p node whose streams reserve these windows: go's default limits
    /// with go-libp2p's service limits, ping sized for rust-libp2p
    /// ([`with_rust_libp2p_defaults`](ScalingLimitConfig::with_rust_libp2p_defaults)) and room
    /// in every stream-holding scope for a window per stream
    /// ([`with_stream_memory`](ScalingLimitConfig::with_stream_memory)). Scale them with
    /// `autoscale()` or `scale(..)`.
    ///
    /// ```
    /// let limits = rcmgr_libp2p::Buffers::default().limits().scale(128 << 20, 256);
    /// let identify = limits.service_peer_limits("libp2p.identify");
    /// assert!(identify.memory >= identify.streams * 256 * 1024);
    /// ```
    pub fn limits(&self) -> ScalingLimitConfig {
        ScalingLimitConfig::default()
            .with_rust_libp2p_defaults()
            .with_stream_memory(self.stream_window as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_connections_are_secured_and_muxed_whatever_carries_the_relay() {
        let buffers = Buffers::default();
        let relay = rcmgr::PeerId::random();
        let over_ws: Multiaddr = format!("/ip4/192.0.2.1/tcp/1/ws/p2p/{relay}/p2p-circuit")
            .parse()
            .expect("a multiaddr");
        let over_quic: Multiaddr = format!("/ip4/192.0.2.1/udp/1/quic-v1/p2p/{relay}/p2p-circuit")
            .parse()
            .expect("a multiaddr");
        let expected = NOISE_BUFFERS + YAMUX_FRAME;
        assert_eq!(buffers.connection_memory(&over_ws), expected);
        assert_eq!(buffers.connection_memory(&over_quic), expected);
        assert_eq!(buffers.connection_memory(&Multiaddr::empty()), expected);
        assert_eq!(buffers.connection_memory_of_any(&[]), expected);
    }
}

//! Defaults that fit rust-libp2p: go-libp2p's service limits with ping sized for rust-libp2p's
//! ping on every connection, and memory limits that can hold the receive windows a muxer
//! reserves for each stream.
//!
//! go-libp2p pings a peer over one stream at a time; rust-libp2p's `libp2p-ping` keeps one
//! outbound ping stream open on **every** connection, and so does the remote, so a peer with
//! `n` connections holds `n` inbound and `n` outbound ping streams. go's per-peer ping limit
//! (2 inbound, 3 outbound, 4 in all) therefore refuses ping on the third connection to a
//! rust-libp2p peer. The numbers here give ping one stream each way on each connection a peer
//! may hold, and the ping service and protocol one stream each way on each connection the
//! system may hold.
//!
//! go's memory limits count what applications reserve; a rust-libp2p node under
//! `rcmgr-libp2p` also reserves each stream's receive window on the stream's scope, and so on
//! its protocol, service and peer scopes. [`ScalingLimitConfig::with_stream_memory`] raises
//! memory limits where they could not hold a window for every stream their stream limit
//! allows, so that the stream limits, not memory, bound an honest node.

use super::{BaseLimit, BaseLimitIncrease, ScalingLimit, ScalingLimitConfig};

/// The ping service and protocol of rust-libp2p.
const PING_SERVICE: &str = "libp2p.ping";
const PING_PROTOCOL: &str = "/ipfs/ping/1.0.0";

/// Connections a peer may hold with go's `DefaultLimits` (`PeerDefault` conns, which do not
/// grow with the machine): each carries one ping stream each way.
const PEER_CONNS: u64 = 8;

/// Connections the system may hold with go's `DefaultLimits` (`System` conns): base and per
/// GiB. Each carries one ping stream each way.
const SYSTEM_CONNS: u64 = 128;
const SYSTEM_CONNS_PER_GIB: u64 = 128;

impl ScalingLimitConfig {
    /// [`with_libp2p_defaults`](Self::with_libp2p_defaults) (go-libp2p's limits for its own
    /// services and protocols), with ping's limits sized for rust-libp2p, which pings on every
    /// connection rather than once per peer:
    ///
    /// | scope | go (`with_libp2p_defaults`) | here |
    /// |---|---|---|
    /// | `libp2p.ping` service-peer and `/ipfs/ping/1.0.0` protocol-peer, streams in/out/total | 2/3/4 | 8/8/16: one each way on each of the 8 connections go's `PeerDefault` allows |
    /// | `libp2p.ping` service and `/ipfs/ping/1.0.0` protocol, streams in/out/total | 64/64/64, +64/64/64 per GiB | 128/128/256, +128/128/256 per GiB: one each way on each connection go's `System` scope allows |
    ///
    /// Memory limits and every other line are go's. go's numbers stay available under
    /// [`with_libp2p_defaults`](Self::with_libp2p_defaults); a go-libp2p peer, which opens at
    /// most one ping stream at a time, is served the same under both.
    ///
    /// ```
    /// use rcmgr::ScalingLimitConfig;
    /// let limits = ScalingLimitConfig::default().with_rust_libp2p_defaults().scale(128 << 20, 256);
    /// let ping = limits.protocol_peer_limits("/ipfs/ping/1.0.0");
    /// assert_eq!((ping.streams_inbound, ping.streams_outbound, ping.streams), (8, 8, 16));
    /// assert_eq!(limits.service_limits("libp2p.ping").streams, 256);
    /// // Everything else is go's.
    /// assert_eq!(limits.protocol_peer_limits("/ipfs/id/1.0.0").streams, 32);
    /// ```
    pub fn with_rust_libp2p_defaults(mut self) -> Self {
        self = self.with_libp2p_defaults();
        let per_peer = BaseLimit {
            streams: 2 * PEER_CONNS,
            streams_inbound: PEER_CONNS,
            streams_outbound: PEER_CONNS,
            ..self.limit_of_ping_peer()
        };
        let scope = |old: ScalingLimit| ScalingLimit {
            base: BaseLimit {
                streams: 2 * SYSTEM_CONNS,
                streams_inbound: SYSTEM_CONNS,
                streams_outbound: SYSTEM_CONNS,
                ..old.base
            },
            increase: BaseLimitIncrease {
                streams: 2 * SYSTEM_CONNS_PER_GIB,
                streams_inbound: SYSTEM_CONNS_PER_GIB,
                streams_outbound: SYSTEM_CONNS_PER_GIB,
                ..old.increase
            },
        };
        let service = scope(
            self.service
                .get(PING_SERVICE)
                .copied()
                .unwrap_or(self.service_default),
        );
        let protocol = scope(
            self.protocol
                .get(PING_PROTOCOL)
                .copied()
                .unwrap_or(self.protocol_default),
        );
        self.add_service_limit(PING_SERVICE, service.base, service.increase);
        self.add_protocol_limit(PING_PROTOCOL, protocol.base, protocol.increase);
        self.add_service_peer_limit(PING_SERVICE, per_peer, BaseLimitIncrease::none());
        self.add_protocol_peer_limit(PING_PROTOCOL, per_peer, BaseLimitIncrease::none());
        self
    }

    /// The per-peer ping limit `with_libp2p_defaults` set (go's), for its memory.
    fn limit_of_ping_peer(&self) -> BaseLimit {
        self.protocol_peer
            .get(PING_PROTOCOL)
            .map(|limit| limit.base)
            .unwrap_or(self.protocol_peer_default.base)
    }

    /// Raises memory limits so that every scope that holds streams can hold `per_stream`
    /// bytes for each stream its stream limit allows: for the base and for the increase per
    /// GiB alike, `memory = max(memory, streams × per_stream)`, with `streams` the scope's
    /// total stream limit. No limit is lowered.
    ///
    /// This is for nodes whose muxers reserve each stream's receive window on the stream's
    /// scope (as `rcmgr-libp2p` does): the window is then also counted in the stream's peer,
    /// protocol, protocol-peer, service and service-peer scopes, and go's memory limits,
    /// which were sized for application buffers alone, would refuse streams well before
    /// their stream limits do (go's 1 MiB for each peer's identify streams holds four 256 KiB
    /// windows).
    ///
    /// Scopes raised: transient, allowlisted transient, service, service-peer, protocol,
    /// protocol-peer and peer (their defaults and every named entry) and the stream scope
    /// (to at least `per_stream`). Left alone: the system and allowlisted system scopes,
    /// whose memory is the node's budget (autoscaling gives it 1/8 of the machine) and which
    /// go on bounding everything, and the connection scope, which holds no streams.
    ///
    /// ```
    /// use rcmgr::ScalingLimitConfig;
    /// let window = 256 << 10;
    /// let limits = ScalingLimitConfig::default().with_rust_libp2p_defaults().with_stream_memory(window);
    /// let scaled = limits.scale(128 << 20, 256);
    /// let identify = scaled.service_peer_limits("libp2p.identify");
    /// assert_eq!(identify.memory, identify.streams * window); // go's 1 MiB would hold 4
    /// assert_eq!(scaled.system.memory, 128 << 20); // the budget is unchanged
    /// ```
    pub fn with_stream_memory(mut self, per_stream: u64) -> Self {
        let fit = |limit: &mut ScalingLimit| {
            limit.base.memory = limit
                .base
                .memory
                .max(windows(limit.base.streams, per_stream));
            limit.increase.memory = limit
                .increase
                .memory
                .max(windows(limit.increase.streams, per_stream));
        };
        for limit in [
            &mut self.transient,
            &mut self.allowlisted_transient,
            &mut self.service_default,
            &mut self.service_peer_default,
            &mut self.protocol_default,
            &mut self.protocol_peer_default,
            &mut self.peer_default,
        ] {
            fit(limit);
        }
        for limit in self
            .service
            .values_mut()
            .chain(self.service_peer.values_mut())
            .chain(self.protocol.values_mut())
            .chain(self.protocol_peer.values_mut())
            .chain(self.peer.values_mut())
        {
            fit(limit);
        }
        self.stream.base.memory = self.stream.base.memory.max(per_stream);
        self
    }
}

/// `streams × per_stream` bytes, at most [`BaseLimit::UNLIMITED`] (an unlimited stream count
/// gives unlimited memory).
fn windows(streams: u64, per_stream: u64) -> u64 {
    streams.saturating_mul(per_stream).min(BaseLimit::UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ConcreteLimitConfig;

    const WINDOW: u64 = 256 << 10;

    fn scales() -> [ConcreteLimitConfig; 3] {
        let config = ScalingLimitConfig::default()
            .with_rust_libp2p_defaults()
            .with_stream_memory(WINDOW);
        [
            config.scale(128 << 20, 256),
            config.scale(3 << 30, 4096),
            config.scale(64 << 30, 1 << 20),
        ]
    }

    #[test]
    fn ping_fits_one_stream_each_way_on_every_connection() {
        for limits in scales() {
            let peer_conns = limits.peer_default.conns;
            for per_peer in [
                limits.protocol_peer_limits(PING_PROTOCOL),
                limits.service_peer_limits(PING_SERVICE),
            ] {
                assert!(per_peer.streams_inbound >= peer_conns);
                assert!(per_peer.streams_outbound >= peer_conns);
                assert!(per_peer.streams >= 2 * peer_conns);
            }
            let system_conns = limits.system.conns;
            for scope in [
                limits.protocol_limits(PING_PROTOCOL),
                limits.service_limits(PING_SERVICE),
            ] {
                assert!(scope.streams_inbound >= system_conns);
                assert!(scope.streams_outbound >= system_conns);
                assert!(scope.streams >= 2 * system_conns);
            }
        }
    }

    #[test]
    fn go_numbers_stay_everywhere_but_ping() {
        let go = ScalingLimitConfig::default().with_libp2p_defaults();
        let rust = ScalingLimitConfig::default().with_rust_libp2p_defaults();
        let without_ping = |mut config: ScalingLimitConfig| {
            config.service.remove(PING_SERVICE);
            config.service_peer.remove(PING_SERVICE);
            config.protocol.remove(PING_PROTOCOL);
            config.protocol_peer.remove(PING_PROTOCOL);
            config
        };
        assert_eq!(without_ping(go.clone()), without_ping(rust.clone()));
        // Ping's memory is go's too.
        assert_eq!(
            go.protocol_peer[PING_PROTOCOL].base.memory,
            rust.protocol_peer[PING_PROTOCOL].base.memory
        );
        // go's per-peer ping limit is unchanged where it was asked for.
        let go_ping = go.scale(128 << 20, 256).protocol_peer_limits(PING_PROTOCOL);
        assert_eq!(
            (
                go_ping.streams_inbound,
                go_ping.streams_outbound,
                go_ping.streams
            ),
            (2, 3, 4)
        );
    }

    #[test]
    fn every_stream_scope_can_hold_a_window_per_stream_and_nothing_is_lowered() {
        let before = ScalingLimitConfig::default()
            .with_rust_libp2p_defaults()
            .scale(3 << 30, 4096);
        let [_, after, _] = scales();
        let pairs = [
            (before.transient, after.transient),
            (before.service_default, after.service_default),
            (before.service_peer_default, after.service_peer_default),
            (before.protocol_default, after.protocol_default),
            (before.protocol_peer_default, after.protocol_peer_default),
            (before.peer_default, after.peer_default),
        ]
        .into_iter()
        .chain(
            before
                .service
                .iter()
                .map(|(name, limit)| (*limit, after.service[name])),
        )
        .chain(
            before
                .protocol_peer
                .iter()
                .map(|(name, limit)| (*limit, after.protocol_peer[name])),
        );
        for (old, new) in pairs {
            assert!(new.memory >= old.memory);
            assert!(new.memory >= old.streams.saturating_mul(WINDOW).min(BaseLimit::UNLIMITED));
            assert_eq!(
                BaseLimit { memory: 0, ..old },
                BaseLimit { memory: 0, ..new }
            );
        }
        assert_eq!(before.system, after.system);
        assert_eq!(before.conn, after.conn);
        assert!(after.stream.memory >= WINDOW);
    }

    #[test]
    fn unlimited_streams_give_unlimited_memory_without_overflow() {
        let mut config = ScalingLimitConfig::default();
        config.protocol_default.base.streams = BaseLimit::UNLIMITED;
        config.protocol_default.increase.streams = u64::MAX;
        let fitted = config.with_stream_memory(u64::MAX);
        assert_eq!(fitted.protocol_default.base.memory, BaseLimit::UNLIMITED);
        let scaled = fitted.scale(u64::MAX, u64::MAX);
        assert_eq!(scaled.protocol_default.memory, BaseLimit::UNLIMITED);
    }
}

//! The services of go-libp2p's built-in protocols, so that go's default service limits apply
//! to the same protocols when rust-libp2p speaks them.

/// The go-libp2p service that speaks `protocol`, for the protocols go-libp2p's default limits
/// name a service for (`libp2p.SetDefaultServiceLimits`); `None` for every other protocol.
///
/// In go, each of these services calls `SetService` on its own streams. rust-libp2p's
/// behaviours know nothing of rcmgr, so the stream wrapper of this crate does it for them
/// once the protocol is negotiated: a stream of `/ipfs/ping/1.0.0` is then also counted in
/// the `libp2p.ping` service scope, and [`ScalingLimitConfig::with_libp2p_defaults`]'s service
/// limits hold as they do in go.
///
/// [`ScalingLimitConfig::with_libp2p_defaults`]: rcmgr::ScalingLimitConfig::with_libp2p_defaults
///
/// ```
/// use rcmgr_libp2p::service_of_protocol;
/// assert_eq!(service_of_protocol("/ipfs/id/push/1.0.0"), Some("libp2p.identify"));
/// assert_eq!(service_of_protocol("/ipfs/ping/1.0.0"), Some("libp2p.ping"));
/// assert_eq!(service_of_protocol("/my-app/1.0.0"), None);
/// ```
pub fn service_of_protocol(protocol: &str) -> Option<&'static str> {
    Some(match protocol {
        "/ipfs/id/1.0.0" | "/ipfs/id/push/1.0.0" => "libp2p.identify",
        "/ipfs/ping/1.0.0" => "libp2p.ping",
        "/libp2p/autonat/1.0.0" => "libp2p.autonat",
        "/libp2p/dcutr" => "libp2p.holepunch",
        "/libp2p/circuit/relay/0.2.0/hop" => "libp2p.relay/v2",
        _ => return None,
    })
}

/// Moves `stream` from the transient scope to `protocol`'s scopes and, for go-libp2p's
/// built-in protocols, into their service's scopes ([`service_of_protocol`]).
pub(crate) fn attach_protocol(
    stream: &mut rcmgr::StreamScope,
    protocol: &str,
) -> Result<(), rcmgr::Error> {
    stream.set_protocol(protocol)?;
    if let Some(service) = service_of_protocol(protocol) {
        stream.set_service(service)?;
    }
    Ok(())
}

//! What a connection's address says about its cost: whether it takes a file descriptor, and
//! which address an outbound connection is reserved under.

use libp2p_core::multiaddr::Protocol;
use rcmgr::Multiaddr;

/// Whether a connection with this address takes a file descriptor of its own, as go-libp2p's
/// transports tell rcmgr (the `usefd` argument of `OpenConnection`).
///
/// | address | file descriptor |
/// |---|---|
/// | `/tcp` (and so `/ws`, `/wss`, `/tls/ws` over it), `/unix` | yes: one socket per connection |
/// | `/quic-v1`, `/webtransport`, `/webrtc-direct`, `/webrtc`, `/udp` | no: one UDP socket carries every connection |
/// | `/memory` | no |
/// | relayed (`…/p2p-circuit…`) | no: the connection is a stream of the relay connection |
/// | empty (not known yet) | yes, to be safe (go assumes the same of an unknown address) |
///
/// ```
/// use rcmgr_libp2p::uses_fd;
/// assert!(uses_fd(&"/ip4/127.0.0.1/tcp/4001".parse()?));
/// assert!(uses_fd(&"/dns4/example.com/tcp/443/wss".parse()?));
/// assert!(!uses_fd(&"/ip4/127.0.0.1/udp/4001/quic-v1".parse()?));
/// assert!(!uses_fd(&"/memory/7".parse()?));
/// let relayed = format!("/ip4/192.0.2.1/tcp/4001/p2p/{}/p2p-circuit", rcmgr::PeerId::random());
/// assert!(!uses_fd(&relayed.parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn uses_fd(address: &Multiaddr) -> bool {
    if address.is_empty() {
        return true;
    }
    if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return false;
    }
    address
        .iter()
        .any(|p| matches!(p, Protocol::Tcp(_) | Protocol::Unix(_)))
}

/// The endpoint and file-descriptor use an outbound connection is reserved with, from the
/// addresses the dial names: the address itself when there is exactly one, otherwise the
/// empty multiaddr (no IP, so no per-IP limit and no allowlist) with a file descriptor
/// unless every address is known to need none.
pub(crate) fn outbound_endpoint(addresses: &[Multiaddr]) -> (Multiaddr, bool) {
    match addresses {
        [only] => (only.clone(), uses_fd(only)),
        _ => (
            Multiaddr::empty(),
            addresses.is_empty() || addresses.iter().any(uses_fd),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().expect("a valid multiaddr")
    }

    #[test]
    fn a_single_address_is_the_endpoint() {
        let tcp = addr("/ip4/192.0.2.1/tcp/1");
        assert_eq!(outbound_endpoint(std::slice::from_ref(&tcp)), (tcp, true));
        let quic = addr("/ip4/192.0.2.1/udp/1/quic-v1");
        assert_eq!(
            outbound_endpoint(std::slice::from_ref(&quic)),
            (quic, false)
        );
    }

    #[test]
    fn several_or_no_addresses_reserve_under_the_empty_address() {
        assert_eq!(outbound_endpoint(&[]), (Multiaddr::empty(), true));
        let quic = [addr("/ip4/192.0.2.1/udp/1/quic-v1"), addr("/memory/3")];
        assert_eq!(outbound_endpoint(&quic), (Multiaddr::empty(), false));
        let mixed = [
            addr("/ip4/192.0.2.1/udp/1/quic-v1"),
            addr("/ip4/192.0.2.1/tcp/1"),
        ];
        assert_eq!(outbound_endpoint(&mixed), (Multiaddr::empty(), true));
    }
}

//! Allowlist entries: any multiaddr is added or refused with an error, never a panic; lookups
//! of any endpoint answer; and an allowlist from which every entry added is removed again
//! allows nothing, as an empty one.

#![no_main]

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rcmgr::{ConcreteLimitConfig, Multiaddr, PeerId, ResourceManager};

/// A multiaddr from the input: raw bytes, text, or an IP with an optional `/ipcidr` and
/// `/p2p` (the shapes allowlist entries take).
fn multiaddr(input: &mut Unstructured<'_>) -> Option<Multiaddr> {
    match input.int_in_range(0u8..=2).ok()? {
        0 => {
            let len = input.int_in_range(0usize..=48).ok()?;
            Multiaddr::try_from(input.bytes(len).ok()?.to_vec()).ok()
        }
        1 => {
            let len = input.int_in_range(0usize..=96).ok()?;
            std::str::from_utf8(input.bytes(len).ok()?)
                .ok()?
                .parse()
                .ok()
        }
        _ => {
            let v6: bool = input.arbitrary().ok()?;
            let mut text = if v6 {
                let ip: [u16; 8] = input.arbitrary().ok()?;
                format!("/ip6/{}", std::net::Ipv6Addr::from(ip))
            } else {
                let ip: [u8; 4] = input.arbitrary().ok()?;
                format!("/ip4/{}", std::net::Ipv4Addr::from(ip))
            };
            if input.arbitrary::<bool>().ok()? {
                text.push_str(&format!("/ipcidr/{}", input.int_in_range(0u8..=140).ok()?));
            }
            if input.arbitrary::<bool>().ok()? {
                text.push_str("/tcp/4001");
            }
            if input.arbitrary::<bool>().ok()? {
                text.push_str(&format!("/p2p/{}", peer(input)?));
            }
            text.parse().ok()
        }
    }
}

fn peer(input: &mut Unstructured<'_>) -> Option<PeerId> {
    let seed: [u8; 4] = input.arbitrary().ok()?;
    let mut bytes = vec![0x00, 4];
    bytes.extend_from_slice(&seed);
    PeerId::from_bytes(&bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
        .gc_interval(std::time::Duration::ZERO)
        .build()
        .expect("the manager builds");
    let allowlist = rm.allowlist();
    let mut added: Vec<Multiaddr> = Vec::new();
    let mut seen: Vec<(Multiaddr, Option<PeerId>)> = Vec::new();
    for _ in 0..32 {
        let Ok(op) = input.int_in_range(0u8..=3) else {
            break;
        };
        let Some(address) = multiaddr(&mut input) else {
            break;
        };
        match op {
            0 => match allowlist.add(&address) {
                Ok(()) => added.push(address.clone()),
                Err(err) => {
                    let _ = err.to_string();
                }
            },
            1 => {
                // An entry may be removed by an equivalent one (`/ipcidr` host bits differ):
                // what is left is emptied below, whatever this removed.
                let _ = allowlist.remove(&address);
            }
            2 => {
                let _ = allowlist.allowed(&address);
            }
            _ => {
                let peer = peer(&mut input);
                if let Some(peer) = peer {
                    let _ = allowlist.allowed_peer_and_multiaddr(peer, &address);
                }
            }
        }
        seen.push((address, peer(&mut input)));
    }
    // Every entry still in the list comes out (each add made one entry).
    let bound = added.len() + 1;
    for address in &added {
        let mut removals = 0;
        while allowlist.remove(address).ok() == Some(true) {
            removals += 1;
            assert!(
                removals <= bound,
                "{address} removed more often than anything was added"
            );
        }
    }
    for (address, peer) in &seen {
        assert!(
            !allowlist.allowed(address),
            "{address} is allowed by an empty list"
        );
        if let Some(peer) = peer {
            assert!(!allowlist.allowed_peer_and_multiaddr(*peer, address));
        }
    }
});

//! Endpoints given to `open_connection`: any multiaddr, from bytes or from text, is admitted
//! or refused with an error (never a panic), on go's default per-IP and rate limits; whatever
//! the connection does next, everything it took is given back when it is dropped.

#![no_main]

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rcmgr::{
    Clock, Direction, Multiaddr, PeerId, Priority, ResourceManager, ResourceScope,
    ScalingLimitConfig,
};

/// A clock the target moves by an hour per input, so that the rate limiters' buckets refill
/// between inputs and each input meets the same limits.
#[derive(Debug)]
struct Steps;

static NOW: AtomicU64 = AtomicU64::new(0);

impl Clock for Steps {
    fn now(&self) -> Duration {
        Duration::from_secs(NOW.load(Ordering::Relaxed))
    }
}

fn manager() -> &'static ResourceManager {
    static MANAGER: OnceLock<ResourceManager> = OnceLock::new();
    MANAGER.get_or_init(|| {
        // go's defaults at their base, per-IP and rate limits included.
        let limits = ScalingLimitConfig::default()
            .with_libp2p_defaults()
            .scale(128 << 20, 256);
        ResourceManager::builder(limits)
            .clock(Steps)
            .gc_interval(Duration::ZERO)
            .allowlist(["/ip4/192.0.2.0/ipcidr/24".parse().expect("a multiaddr")])
            .build()
            .expect("the manager builds")
    })
}

fuzz_target!(|data: &[u8]| {
    NOW.fetch_add(3600, Ordering::Relaxed);
    let mut input = Unstructured::new(data);
    let (Ok(from_text), Ok(inbound), Ok(use_fd), Ok(peer_seed), Ok(memory)) = (
        input.arbitrary::<bool>(),
        input.arbitrary::<bool>(),
        input.arbitrary::<bool>(),
        input.arbitrary::<[u8; 8]>(),
        input.arbitrary::<u32>(),
    ) else {
        return;
    };
    let rest = input.take_rest();
    let endpoint: Multiaddr = if from_text {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match text.parse() {
            Ok(endpoint) => endpoint,
            Err(_) => return,
        }
    } else {
        match Multiaddr::try_from(rest.to_vec()) {
            Ok(endpoint) => endpoint,
            Err(_) => return,
        }
    };
    let rm = manager();
    let direction = if inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    let _ = rm.allowlist().allowed(&endpoint);
    match rm.open_connection(direction, use_fd, &endpoint) {
        Ok(mut conn) => {
            let _ = conn.name().to_string();
            // An identity-multihash peer ID from the input.
            let mut bytes = vec![0x00, 8];
            bytes.extend_from_slice(&peer_seed);
            if let Ok(peer) = PeerId::from_bytes(&bytes) {
                let _ = rm.allowlist().allowed_peer_and_multiaddr(peer, &endpoint);
                if peer_seed[0] & 1 == 1 {
                    let _ = conn.set_peer(peer);
                }
            }
            let _ = conn.reserve_memory(memory as usize, Priority(peer_seed[1]));
            let _ = conn.stat();
        }
        Err(err) => {
            let _ = err.to_string();
            let _ = err.is_resource_limit_exceeded();
        }
    }
    // The connection is gone: nothing it took is left anywhere.
    assert!(rm.system().stat().is_empty(), "{:?}", rm.system().stat());
    assert!(
        rm.transient().stat().is_empty(),
        "{:?}",
        rm.transient().stat()
    );
    assert!(
        rm.ip_conn_counts().values().all(|n| *n == 0),
        "{:?}",
        rm.ip_conn_counts()
    );
    rm.gc();
});

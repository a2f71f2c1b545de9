//! A peer that opens streams as fast as it can cannot stop another peer's ping and identify:
//! its own peer scope fills up and the rest of its streams are refused, while the honest
//! peer's streams go through their own scope.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Net, NodeEvent, Protocols, Running, assert_all_released, eventually, hold_inbound};
use libp2p::{StreamProtocol, identify, ping, swarm::SwarmEvent};
use rcmgr::{BaseLimit, ConcreteLimitConfig, ResourceManager, ResourceScope};

const FLOOD: &str = "/flood/1.0.0";
/// The flooder's streams the server will hold at once.
const PER_PEER_STREAMS: u64 = 8;
/// The most streams the flooder tries to open, so that the loop ends on its own.
const MAX_ATTEMPTS: u64 = 200_000;

/// What the flood has done so far.
#[derive(Default)]
struct FloodCounts {
    opened: AtomicU64,
    refused: AtomicU64,
    stop: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_cannot_stop_another_peers_ping_and_identify() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default = BaseLimit {
        streams_inbound: PER_PEER_STREAMS,
        ..BaseLimit::unlimited()
    };
    // Streams wait in the transient scope until their protocol is known; the flooder can take
    // at most its peer limit of it.
    limits.transient = BaseLimit {
        streams_inbound: 4 * PER_PEER_STREAMS,
        ..BaseLimit::unlimited()
    };
    let server_rm = ResourceManager::new(limits);
    let server = Running::server(Net::Tcp, &server_rm, Protocols::ALL).await;
    hold_inbound(&server, FLOOD);

    let flooder_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut flooder = Running::client(Net::Tcp, &flooder_rm, Protocols::NONE);
    flooder.connect(server.address(), server.peer).await;

    // Open streams back to back and keep every one that opens.
    let counts = Arc::new(FloodCounts::default());
    let flood = {
        let counts = Arc::clone(&counts);
        let mut control = flooder.control.clone();
        let target = server.peer;
        tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..MAX_ATTEMPTS {
                if counts.stop.load(Ordering::Relaxed) {
                    break;
                }
                match control
                    .open_stream(target, StreamProtocol::new(FLOOD))
                    .await
                {
                    Ok(stream) => {
                        held.push(stream);
                        counts.opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            held
        })
    };
    // Watch the flooder's peer scope on the server for as long as the flood lasts.
    let most_held = {
        let counts = Arc::clone(&counts);
        let (rm, flooder_peer) = (server_rm.clone(), flooder.peer);
        tokio::spawn(async move {
            let mut most = 0;
            while !counts.stop.load(Ordering::Relaxed) {
                most = most.max(u64::from(rm.peer(&flooder_peer).stat().streams_inbound));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    eventually("the flood to be refused", || {
        counts.refused.load(Ordering::Relaxed) >= 100
    })
    .await;

    // The honest peer connects in the middle of the flood.
    let honest_rm = ResourceManager::new(ConcreteLimitConfig::infinite());
    let mut honest = Running::client(Net::Tcp, &honest_rm, Protocols::ALL);
    let refused_before = counts.refused.load(Ordering::Relaxed);
    honest.connect(server.address(), server.peer).await;
    let server_peer = server.peer;
    let (mut pinged, mut identified) = (false, false);
    while !(pinged && identified) {
        let event = honest
            .expect("ping and identify to complete", |event| match event {
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if *peer == server_peer => Some("ping"),
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received {
                    peer_id,
                    ..
                })) if *peer_id == server_peer => Some("identify"),
                _ => None,
            })
            .await;
        pinged |= event == "ping";
        identified |= event == "identify";
    }
    // The flood went on all along.
    assert!(counts.refused.load(Ordering::Relaxed) > refused_before);
    assert!(counts.opened.load(Ordering::Relaxed) >= PER_PEER_STREAMS);
    let flooder_peer = flooder.peer;
    assert!(
        server
            .call(move |swarm| swarm.is_connected(&flooder_peer))
            .await
    );
    let honest_peer = honest.peer;
    assert!(
        server
            .call(move |swarm| swarm.is_connected(&honest_peer))
            .await
    );

    counts.stop.store(true, Ordering::Relaxed);
    let held = common::within("the flood to stop", flood)
        .await
        .expect("the flood task");
    // It filled its peer scope and never got past it. (It may have opened more streams than
    // that in all: libp2p-stream drops inbound streams its application has not taken yet,
    // which frees their slots.)
    let most_held = common::within("the watcher to stop", most_held)
        .await
        .expect("the watcher task");
    assert_eq!(most_held, PER_PEER_STREAMS);
    drop(held);
    for node in [server, flooder, honest] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &flooder_rm, &honest_rm]).await;
}

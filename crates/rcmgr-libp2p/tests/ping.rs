//! rust-libp2p pings on every connection, both ways. A node with several connections to one
//! peer stays quiet on default limits: ping goes on where the limits allow it, refusals do not
//! repeat, and the process uses next to no CPU. The CPU time is the whole test process's (both
//! nodes), measured from `/proc/self/stat`; the two tests run one after the other.

#![allow(
    clippy::print_stdout,
    reason = "the measured numbers are printed for whoever runs the test"
)]

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Net, NodeEvent, Protocols, Running, assert_all_released, counted, process_cpu_time};
use libp2p::{ping, swarm::SwarmEvent};
use rcmgr::ConcreteLimitConfig;

/// Connections the client opens to the server.
const CONNECTIONS: usize = 4;
/// How long the nodes are watched once they are connected.
const WATCHED: Duration = Duration::from_secs(10);
/// How often each ping handler pings.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Refusals per second the two nodes may make together while watched.
const MAX_REFUSALS_PER_SECOND: f64 = 10.0;
/// CPU time the process may use while watched: 10 % of one core. Idle, the two nodes take a
/// few tens of milliseconds in 10 s; a ping retried in a loop takes most of a core per node.
const MAX_CPU: Duration = Duration::from_secs(1);

/// The tests measure the process's CPU time: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the watched seconds showed.
#[derive(Debug)]
struct Watched {
    /// The client's connections on which a ping succeeded while watched.
    pinging: usize,
    /// Limit refusals of both nodes, per second, while watched.
    refusals_per_second: f64,
    /// Refusals of both nodes before they were watched (while the connections came up).
    refusals_before: u64,
    /// CPU time of the process while watched.
    cpu: Duration,
}

/// Connects a client to a server over [`CONNECTIONS`] TCP connections, both with `limits`
/// and pinging every [`PING_EVERY`], and watches them for [`WATCHED`].
async fn watch(limits: ConcreteLimitConfig) -> Watched {
    let (server_rm, server_refusals) = counted(limits.clone());
    let (client_rm, client_refusals) = counted(limits);
    let server = Running::server(Net::Tcp, &server_rm, Protocols::ping_every(PING_EVERY)).await;
    let mut client = Running::client(Net::Tcp, &client_rm, Protocols::ping_every(PING_EVERY));
    for _ in 0..CONNECTIONS {
        client.connect(server.address(), server.peer).await;
    }
    // Let every connection's first pings (and refusals) happen.
    tokio::time::sleep(3 * PING_EVERY).await;
    let established = client
        .call(|swarm| swarm.network_info().connection_counters().num_established())
        .await;
    assert_eq!(established as usize, CONNECTIONS);

    let refusals = || server_refusals.count() + client_refusals.count();
    let refusals_before = refusals();
    let cpu_before = process_cpu_time();
    let deadline = tokio::time::Instant::now() + WATCHED;
    let mut pings: HashMap<_, u32> = HashMap::new();
    while let Some(event) = client.next_event_before(deadline).await {
        if let SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
            connection,
            result: Ok(_),
            ..
        })) = event
        {
            *pings.entry(connection).or_default() += 1;
        }
    }
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let refused = refusals() - refusals_before;

    // Still connected, all of them.
    let established = client
        .call(|swarm| swarm.network_info().connection_counters().num_established())
        .await;
    assert_eq!(established as usize, CONNECTIONS);
    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
    Watched {
        pinging: pings.len(),
        refusals_per_second: refused as f64 / WATCHED.as_secs_f64(),
        refusals_before,
        cpu,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_default_limits_every_connection_pings_and_the_node_stays_quiet() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = rcmgr_libp2p::resource_manager().limits();
    let watched = watch(limits).await;
    println!("default limits, {CONNECTIONS} connections: {watched:?}");
    assert_eq!(watched.pinging, CONNECTIONS, "{watched:?}");
    assert_eq!(watched.refusals_before, 0, "{watched:?}");
    assert!(watched.refusals_per_second == 0.0, "{watched:?}");
    assert!(watched.cpu < MAX_CPU, "{watched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_gos_ping_limits_refused_pings_stop_instead_of_retrying() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // go-libp2p's numbers: 2 inbound, 3 outbound, 4 ping streams in all per peer, with room in
    // memory for the streams' windows.
    let limits = rcmgr::ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .with_stream_memory(rcmgr_libp2p::Buffers::default().stream_window() as u64)
        .autoscale();
    let watched = watch(limits).await;
    println!("go's ping limits, {CONNECTIONS} connections: {watched:?}");
    // Each side holds at most 4 ping streams for the peer: some connections stop pinging, at
    // least one goes on.
    assert!(watched.pinging >= 1, "{watched:?}");
    assert!(watched.pinging < CONNECTIONS, "{watched:?}");
    // The pings refused were refused once each, while the connections came up.
    assert!(watched.refusals_before >= 1, "{watched:?}");
    assert!(
        watched.refusals_before <= 2 * CONNECTIONS as u64,
        "{watched:?}"
    );
    assert!(
        watched.refusals_per_second < MAX_REFUSALS_PER_SECOND,
        "{watched:?}"
    );
    assert!(watched.cpu < MAX_CPU, "{watched:?}");
}

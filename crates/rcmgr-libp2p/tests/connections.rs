//! Connection limits on real swarms: system, per-peer and per-IP inbound limits refuse the
//! extra connection with rcmgr's error and recover when a connection closes; outbound limits
//! refuse the dial itself; the SwarmBuilder recipe of the crate docs works as written.

mod common;

use std::time::Duration;

use common::{Net, Protocols, Running, assert_all_released};
use libp2p::{
    PeerId, SwarmBuilder, ping,
    swarm::{ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent},
};
use rcmgr::{
    BaseLimit, ConcreteLimitConfig, ConnLimitPerSubnet, IpLimits, Resource, ResourceManager,
    ResourceScope,
};

fn unlimited() -> ResourceManager {
    ResourceManager::new(ConcreteLimitConfig::infinite())
}

/// Waits for the server to deny an inbound connection and returns the denial.
async fn next_denial(server: &mut Running) -> rcmgr::Error {
    server
        .expect("an inbound connection to be denied", |event| match event {
            SwarmEvent::IncomingConnectionError {
                error: error @ ListenError::Denied { .. },
                ..
            } => Some(
                rcmgr_libp2p::refusal_of(error)
                    .expect("the denial carries rcmgr's error")
                    .clone(),
            ),
            _ => None,
        })
        .await
}

/// Waits for the server to see a connection from `peer` established.
async fn established_from(server: &mut Running, peer: PeerId) -> ConnectionId {
    server
        .expect("a connection to be established", |event| match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } if *peer_id == peer => Some(*connection_id),
            _ => None,
        })
        .await
}

/// Waits for the server to see a connection from `peer` closed.
async fn closed_from(server: &mut Running, peer: PeerId) {
    server
        .expect("a connection to close", |event| match event {
            SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == peer => Some(()),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn the_system_inbound_limit_refuses_the_extra_dial_and_recovers_after_a_close() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_inbound = 2;
    let server_rm = ResourceManager::new(limits);
    let mut server = Running::server(Net::Memory, &server_rm, Protocols::NONE).await;

    let (rm_a, rm_b, rm_c) = (unlimited(), unlimited(), unlimited());
    let mut a = Running::client(Net::Memory, &rm_a, Protocols::NONE);
    let mut b = Running::client(Net::Memory, &rm_b, Protocols::NONE);
    let c = Running::client(Net::Memory, &rm_c, Protocols::NONE);
    a.connect(server.address(), server.peer).await;
    established_from(&mut server, a.peer).await;
    b.connect(server.address(), server.peer).await;
    established_from(&mut server, b.peer).await;
    assert_eq!(server_rm.system().stat().conns_inbound, 2);

    let address = server.address();
    c.call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    let refused = next_denial(&mut server).await;
    let limit = refused.limit_exceeded().expect("a limit refused");
    assert_eq!(limit.refused_by().to_string(), "system");
    assert_eq!(limit.resource(), Resource::ConnsInbound);
    assert_eq!(server_rm.system().stat().conns_inbound, 2);
    assert_eq!(server_rm.transient().stat().conns_inbound, 0);

    let a_peer = a.peer;
    a.shutdown().await;
    closed_from(&mut server, a_peer).await;
    assert_eq!(server_rm.system().stat().conns_inbound, 1);
    let mut c = c;
    c.connect(server.address(), server.peer).await;
    established_from(&mut server, c.peer).await;
    assert_eq!(server_rm.system().stat().conns_inbound, 2);
    assert_eq!(server_rm.peer(&c.peer).stat().conns_inbound, 1);

    for node in [server, b, c] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &rm_a, &rm_b, &rm_c]).await;
}

#[tokio::test]
async fn the_per_peer_inbound_limit_refuses_a_second_connection_and_recovers_after_a_close() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default.conns_inbound = 1;
    let server_rm = ResourceManager::new(limits);
    let mut server = Running::server(Net::Memory, &server_rm, Protocols::NONE).await;
    let client_rm = unlimited();
    let mut client = Running::client(Net::Memory, &client_rm, Protocols::NONE);

    client.connect(server.address(), server.peer).await;
    let first = established_from(&mut server, client.peer).await;

    // Dialling the address again opens a second connection to the same peer.
    let address = server.address();
    client
        .call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    let refused = next_denial(&mut server).await;
    let limit = refused.limit_exceeded().expect("a limit refused");
    assert_eq!(
        limit.refused_by().to_string(),
        format!("peer:{}", client.peer)
    );
    assert_eq!(limit.resource(), Resource::ConnsInbound);
    // The refused connection released what it had taken in the transient scope.
    assert_eq!(server_rm.peer(&client.peer).stat().conns_inbound, 1);
    assert_eq!(server_rm.system().stat().conns_inbound, 1);
    assert!(server_rm.transient().stat().is_empty());

    assert!(
        server
            .call(move |swarm| swarm.close_connection(first))
            .await
    );
    closed_from(&mut server, client.peer).await;
    let address = server.address();
    client
        .call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    established_from(&mut server, client.peer).await;
    assert_eq!(server_rm.peer(&client.peer).stat().conns_inbound, 1);

    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

/// A manager that lets each IPv4 address hold one connection, loopback included (go's
/// defaults exempt loopback), optionally with loopback allowlisted.
fn one_connection_per_ip(allowlist_loopback: bool) -> ResourceManager {
    let mut limits = ConcreteLimitConfig::infinite();
    let mut ip = IpLimits::disabled();
    ip.subnet_v4 = vec![ConnLimitPerSubnet {
        prefix_length: 32,
        conn_count: 1,
    }];
    limits.ip = ip;
    let allowlist =
        allowlist_loopback.then(|| "/ip4/127.0.0.1/ipcidr/32".parse().expect("a multiaddr"));
    ResourceManager::builder(limits)
        .allowlist(allowlist)
        .build()
        .expect("valid options")
}

#[tokio::test]
async fn the_per_ip_limit_refuses_a_second_loopback_connection_until_the_first_closes() {
    let server_rm = one_connection_per_ip(false);
    let mut server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    let (rm_a, rm_b) = (unlimited(), unlimited());
    let a = Running::client(Net::Tcp, &rm_a, Protocols::NONE);
    let b = Running::client(Net::Tcp, &rm_b, Protocols::NONE);
    let mut a = a;
    a.connect(server.address(), server.peer).await;
    established_from(&mut server, a.peer).await;

    let address = server.address();
    b.call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    let refused = next_denial(&mut server).await;
    let per_ip = refused
        .ip_limit_exceeded()
        .expect("the per-IP limit refused");
    assert_eq!(per_ip.ip().to_string(), "127.0.0.1");
    assert_eq!(per_ip.limit(), 1);
    assert_eq!(server_rm.system().stat().conns_inbound, 1);

    let a_peer = a.peer;
    a.shutdown().await;
    closed_from(&mut server, a_peer).await;
    let mut b = b;
    b.connect(server.address(), server.peer).await;
    established_from(&mut server, b.peer).await;

    server.shutdown().await;
    b.shutdown().await;
    assert_all_released(&[&server_rm, &rm_a, &rm_b]).await;
    assert!(server_rm.ip_conn_counts().values().all(|count| *count == 0));
}

#[tokio::test]
async fn an_allowlisted_loopback_is_not_held_to_the_per_ip_limit() {
    let server_rm = one_connection_per_ip(true);
    let mut server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    let (rm_a, rm_b) = (unlimited(), unlimited());
    let mut a = Running::client(Net::Tcp, &rm_a, Protocols::NONE);
    let mut b = Running::client(Net::Tcp, &rm_b, Protocols::NONE);
    a.connect(server.address(), server.peer).await;
    established_from(&mut server, a.peer).await;
    b.connect(server.address(), server.peer).await;
    established_from(&mut server, b.peer).await;
    assert_eq!(server_rm.system().stat().conns_inbound, 2);

    for node in [server, a, b] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &rm_a, &rm_b]).await;
}

#[tokio::test]
async fn an_outbound_limit_refuses_the_dial_before_anything_is_dialled() {
    let server_rm = unlimited();
    let mut server = Running::server(Net::Memory, &server_rm, Protocols::NONE).await;
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_outbound = 0;
    let client_rm = ResourceManager::new(limits);
    let mut client = Running::client(Net::Memory, &client_rm, Protocols::NONE);

    let address = server.address();
    let dialled = client.call(move |swarm| swarm.dial(address)).await;
    let Err(error @ DialError::Denied { .. }) = dialled else {
        panic!("the dial should be denied, got {dialled:?}");
    };
    let limit = rcmgr_libp2p::refusal_of(&error)
        .expect("the denial carries rcmgr's error")
        .limit_exceeded()
        .expect("a limit refused");
    assert_eq!(limit.refused_by().to_string(), "system");
    assert_eq!(limit.resource(), Resource::ConnsOutbound);
    assert!(client_rm.system().stat().is_empty());

    // Limits change at runtime; the next dial goes through.
    client_rm.set_limits(ConcreteLimitConfig::infinite());
    client.connect(server.address(), server.peer).await;
    established_from(&mut server, client.peer).await;
    assert_eq!(client_rm.peer(&server.peer).stat().conns_outbound, 1);
    assert_eq!(server_rm.peer(&client.peer).stat().conns_inbound, 1);
    // The memory transport takes no file descriptor.
    assert_eq!(client_rm.system().stat().fd, 0);

    server.shutdown().await;
    client.shutdown().await;
    assert_all_released(&[&server_rm, &client_rm]).await;
}

#[tokio::test]
async fn tcp_connections_take_a_file_descriptor_each() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system = BaseLimit {
        fd: 1,
        ..BaseLimit::unlimited()
    };
    let server_rm = ResourceManager::new(limits);
    let mut server = Running::server(Net::Tcp, &server_rm, Protocols::NONE).await;
    let (rm_a, rm_b) = (unlimited(), unlimited());
    let mut a = Running::client(Net::Tcp, &rm_a, Protocols::NONE);
    let b = Running::client(Net::Tcp, &rm_b, Protocols::NONE);
    a.connect(server.address(), server.peer).await;
    established_from(&mut server, a.peer).await;
    assert_eq!(server_rm.system().stat().fd, 1);
    assert_eq!(rm_a.system().stat().fd, 1);

    let address = server.address();
    b.call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    let refused = next_denial(&mut server).await;
    let limit = refused.limit_exceeded().expect("a limit refused");
    assert_eq!(limit.resource(), Resource::FileDescriptors);

    for node in [server, a, b] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &rm_a, &rm_b]).await;
}

/// The crate docs' recipe, word for word where it matters: `Transports`' TCP and QUIC in
/// `with_other_transport`; the rcmgr behaviour first.
#[derive(NetworkBehaviour)]
struct RecipeNode {
    rcmgr: rcmgr_libp2p::Behaviour,
    ping: ping::Behaviour,
}

fn recipe_swarm(rm: &ResourceManager) -> libp2p::Swarm<RecipeNode> {
    let limited = rcmgr_libp2p::Transports::new(rm);
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| limited.tcp(key))
        .expect("a transport")
        .with_other_transport(|key| limited.quic(key))
        .expect("a transport")
        .with_behaviour(|_| RecipeNode {
            rcmgr: limited.behaviour(),
            ping: ping::Behaviour::default(),
        })
        .expect("a behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test]
async fn the_swarm_builder_recipe_accounts_connections_and_streams_on_both_sides() {
    use futures::StreamExt;

    let (server_rm, client_rm) = (unlimited(), unlimited());
    let mut server = recipe_swarm(&server_rm);
    let mut client = recipe_swarm(&client_rm);
    let (server_peer, client_peer) = (*server.local_peer_id(), *client.local_peer_id());
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr"))
        .expect("listening");
    let address = common::within("a listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    client.dial(address).expect("the dial starts");

    // Drive both until the client's first ping succeeds.
    common::within("a ping", async {
        loop {
            tokio::select! {
                _ = server.select_next_some() => {}
                event = client.select_next_some() => {
                    if let SwarmEvent::Behaviour(RecipeNodeEvent::Ping(ping::Event { result: Ok(_), .. })) = event {
                        return;
                    }
                }
            }
        }
    })
    .await;

    let ping = "/ipfs/ping/1.0.0";
    // ping keeps its stream open, so each side holds exactly one, in the protocol's scope,
    // go's service scope for it, and the peer's.
    assert_eq!(server_rm.protocol(ping).stat().streams_inbound, 1);
    assert_eq!(server_rm.service("libp2p.ping").stat().streams_inbound, 1);
    assert_eq!(server_rm.peer(&client_peer).stat().streams_inbound, 1);
    assert_eq!(client_rm.protocol(ping).stat().streams_outbound, 1);
    assert_eq!(client_rm.peer(&server_peer).stat().streams_outbound, 1);
    assert_eq!(server_rm.peer(&client_peer).stat().conns_inbound, 1);
    assert_eq!(client_rm.peer(&server_peer).stat().conns_outbound, 1);
    assert!(server_rm.transient().stat().is_empty() && client_rm.transient().stat().is_empty());
    assert_eq!(server.behaviour().rcmgr.connection_count(), 1);

    drop(server);
    drop(client);
    assert_all_released(&[&server_rm, &client_rm]).await;
}

#[tokio::test]
async fn a_trusted_peer_connects_while_the_system_is_full_and_others_are_refused() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.conns_inbound = 1;
    let server_rm = ResourceManager::new(limits);
    let mut server = Running::server(Net::Memory, &server_rm, Protocols::NONE).await;
    let (rm_a, rm_trusted, rm_other) = (unlimited(), unlimited(), unlimited());
    let mut a = Running::client(Net::Memory, &rm_a, Protocols::NONE);
    let mut trusted = Running::client(Net::Memory, &rm_trusted, Protocols::NONE);
    let other = Running::client(Net::Memory, &rm_other, Protocols::NONE);
    a.connect(server.address(), server.peer).await;
    established_from(&mut server, a.peer).await;
    assert!(server_rm.allowlist().add_peer(trusted.peer));

    // The system is full; the trusted peer is admitted, in the allowlisted scopes.
    trusted.connect(server.address(), server.peer).await;
    established_from(&mut server, trusted.peer).await;
    assert_eq!(server_rm.peer(&trusted.peer).stat().conns_inbound, 1);
    assert_eq!(server_rm.system().stat().conns_inbound, 1);

    // Anyone else is refused once its peer is known.
    let address = server.address();
    other
        .call(move |swarm| swarm.dial(address))
        .await
        .expect("the dial starts");
    let refused = next_denial(&mut server).await;
    let limit = refused.limit_exceeded().expect("a limit refused");
    assert_eq!(limit.refused_by().to_string(), "system");
    assert!(server_rm.peer(&other.peer).stat().is_empty());

    for node in [server, a, trusted, other] {
        node.shutdown().await;
    }
    assert_all_released(&[&server_rm, &rm_a, &rm_trusted, &rm_other]).await;
}
